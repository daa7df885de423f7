package maps

import (
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

func TestRowBytesMatchesHeaderLayout(t *testing.T) {
	// Its key: kind, op, link, pad (4) and two folds (16). Then the
	// verdicts, generation, needs, buckets, slots, and two digests of len
	// (4), alg and bytes.
	if want := 4 + 16 + 4*bpf.NumStates + 16 + 2*(4+bpf.AlgLen+bpf.DigestMax); RowBytes != want {
		t.Errorf("RowBytes = %d, want %d", RowBytes, want)
	}
}

// Each observable property sets its own IPE_OBSERVE_* bit, the one
// bpf/abi_test.go holds to the header.
func TestObservableBitsUseHeaderBits(t *testing.T) {
	for _, tc := range []struct {
		name string
		obs  policy.Observability
		want uint32
	}{
		{"none", policy.Observability{}, 0},
		{"dmverity_roothash", policy.Observability{DMVerityRootHash: true}, bpf.ObserveDMVerityRootHash},
		{"dmverity_signature", policy.Observability{DMVeritySignature: true}, bpf.ObserveDMVeritySignature},
		{"fsverity_digest", policy.Observability{FSVerityDigest: true}, bpf.ObserveFSVerityDigest},
		{"fsverity_signature", policy.Observability{FSVeritySignature: true}, bpf.ObserveFSVeritySignature},
	} {
		if got := ObservableBits(tc.obs); got != tc.want {
			t.Errorf("%s: observable bits %#x, want %#x", tc.name, got, tc.want)
		}
	}
}
