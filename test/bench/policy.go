package bench

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// PolicyText is a policy of rules rules for the EXECUTE operation: rules-1
// dmverity_roothash rules with distinct digests, none of which any file in
// the guest matches, then `boot_verified=TRUE`, which allows the
// benchmark's programs (they sit in the initramfs). The allowing rule is
// last so that in-tree IPE, which walks the rules in order, walks them all
// on every decision; anything else to execute is denied by the op's
// DEFAULT, which proves the rules were consulted.
func PolicyText(name, version string, rules int) []byte {
	if rules < 1 {
		panic("bench: a policy needs at least its allowing rule")
	}
	var b strings.Builder
	b.Grow(rules * 115)
	fmt.Fprintf(&b, "policy_name=%s policy_version=%s\n", name, version)
	b.WriteString("DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n")
	var index [8]byte
	for i := range rules - 1 {
		binary.BigEndian.PutUint64(index[:], uint64(i))
		sum := sha256.Sum256(index[:])
		b.WriteString("op=EXECUTE dmverity_roothash=sha256:")
		b.WriteString(hex.EncodeToString(sum[:]))
		b.WriteString(" action=ALLOW\n")
	}
	b.WriteString("op=EXECUTE boot_verified=TRUE action=ALLOW\n")
	return []byte(b.String())
}

// IdlePolicyText allows everything and has no rules: what in-tree IPE
// holds while another variant is measured, since IPE cannot go back to
// having no policy once one was activated.
func IdlePolicyText(name, version string) []byte {
	return fmt.Appendf(nil, "policy_name=%s policy_version=%s\nDEFAULT action=ALLOW\n", name, version)
}

// Order is the order variants run in round round: the list rotated by the
// round number, so that over len(variants) rounds every variant takes every
// position once and a drift in the machine's speed weighs on all alike.
func Order(variants []string, round int) []string {
	n := len(variants)
	out := make([]string, n)
	for i := range variants {
		out[i] = variants[(i+round)%n]
	}
	return out
}

// TinyELF is a complete static x86-64 Linux program that exits with
// status at once: an ELF header, one loadable segment and three
// instructions. It is the smallest thing to fork+exec, so the exec path
// and its hooks are most of what a run of it costs.
func TinyELF(status uint8) []byte {
	const (
		base      = 0x400000
		ehdrSize  = 64
		phdrSize  = 56
		codeStart = ehdrSize + phdrSize
	)
	code := []byte{
		0xb8, 60, 0, 0, 0, // mov eax, 60 (exit)
		0xbf, status, 0, 0, 0, // mov edi, status
		0x0f, 0x05, // syscall
	}
	size := uint64(codeStart + len(code))
	le := binary.LittleEndian
	b := make([]byte, size)
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */})
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)  // EV_CURRENT
	le.PutUint64(b[24:], base+codeStart)
	le.PutUint64(b[32:], ehdrSize) // program headers follow the ELF header
	le.PutUint16(b[52:], ehdrSize)
	le.PutUint16(b[54:], phdrSize)
	le.PutUint16(b[56:], 1) // one program header
	ph := b[ehdrSize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // PF_R|PF_X
	le.PutUint64(ph[8:], 0) // from the start of the file
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], size)
	le.PutUint64(ph[40:], size)
	le.PutUint64(ph[48:], 0x1000)
	copy(b[codeStart:], code)
	return b
}

// FormatSizes writes policy sizes as the flags of the benchmark's commands
// take them: 1,1000,100000.
func FormatSizes(sizes []int) string {
	s := make([]string, len(sizes))
	for i, n := range sizes {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// ParseSizes reads what FormatSizes writes: positive rule counts.
func ParseSizes(list string) ([]int, error) {
	var sizes []int
	for _, field := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("sizes %q: %q is not a positive number of rules", list, field)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}
