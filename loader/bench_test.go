package loader

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// allowlistText is a policy of n dmverity_roothash rules with distinct
// digests, the shape of an image allowlist.
func allowlistText(n int, version string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy_name=bench policy_version=%s\nDEFAULT action=DENY\n", version)
	var index [8]byte
	for i := range n {
		binary.BigEndian.PutUint64(index[:], uint64(i))
		sum := sha256.Sum256(index[:])
		fmt.Fprintf(&b, "op=EXECUTE dmverity_roothash=sha256:%s action=ALLOW\n", hex.EncodeToString(sum[:]))
	}
	return b.String()
}

// BenchmarkUpdate measures Running.Update natively, which the guests can
// only time under emulation: from a decoded policy of n rules to its rows
// in force (compile, the rows and state maps, the swap, the pins). The
// programs are left out (this host cannot load them); an update does not
// touch them. Needs root.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p := privateBPFFS(b)
			fakeVerity(b)
			installWithoutPrograms(b, p, Options{Policy: testPolicy(b, allowlistText(1, "0.0.1")), Enforcing: true})
			r, err := openRunning(p)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			for i := range b.N {
				b.StopTimer()
				// Every update must name a newer version.
				next := testPolicy(b, allowlistText(n, fmt.Sprintf("1.0.%d", i)))
				b.StartTimer()
				if _, _, err := r.Update(next, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
