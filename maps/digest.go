package maps

import (
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
