package maps

import (
	"encoding/binary"
	"strings"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// DigestKey encodes d the way the BPF programs encode a file's digest, so
// that equal digests give byte-identical keys. It reports false when d has
// no encoding that a kernel digest could ever equal: such a policy digest
// can never match, and such a file digest cannot be looked up.
func DigestKey(d policy.Digest) (bpf.Digest, bool) {
	enc, why := encodeDigest(d)
	return enc, why == ""
}

// encodeDigest is DigestKey that also says why a digest cannot match, for
// the dead-rule report.
func encodeDigest(d policy.Digest) (bpf.Digest, string) {
	var enc bpf.Digest
	switch {
	case len(d.Alg) > bpf.AlgLen:
		return enc, "digest algorithm name longer than 32 bytes"
	case strings.IndexByte(d.Alg, 0) >= 0:
		// The kernel compares algorithm names with strcmp, so a name
		// with a NUL in it can never equal one; and NUL padding would
		// make "a\x00" and "a" share a key.
		return enc, "digest algorithm name contains a NUL byte"
	case len(d.Bytes) > bpf.DigestMax:
		return enc, "digest longer than 64 bytes"
	case len(d.Bytes) == 0:
		// No kernel digest is empty, and Len 0 means "no digest".
		return enc, "empty digest"
	}
	enc.Len = uint32(len(d.Bytes))
	copy(enc.Alg[:], d.Alg)
	copy(enc.Bytes[:], d.Bytes)
	return enc, ""
}

// Fold is a digest's part of a row key, as the BPF programs compute it
// (ipe_fold in decide.h): the XOR of the 32-bit words of the whole Digest
// (length, algorithm name and bytes, in its memory layout), the
// even-numbered words into the first half and the odd-numbered into the
// second. A decision hashes a 20-byte key instead of a 204-byte one (the
// hashing is most of a lookup's cost) and compares the whole digest, which
// the row carries.
func Fold(d bpf.Digest) [2]uint32 {
	var raw [4 + bpf.AlgLen + bpf.DigestMax]byte
	binary.NativeEndian.PutUint32(raw[:], d.Len)
	copy(raw[4:], d.Alg[:])
	copy(raw[4+bpf.AlgLen:], d.Bytes[:])
	var fold [2]uint32
	for i := 0; i < len(raw); i += 4 {
		fold[i/4%2] ^= binary.NativeEndian.Uint32(raw[i:])
	}
	return fold
}
