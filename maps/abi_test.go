package maps

import (
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

func TestRowBytesMatchesHeaderLayout(t *testing.T) {
	// kind, op, pad (4) + two digests of len (4) + alg + bytes; value: the verdicts.
	if want := 4 + 2*(4+bpf.AlgLen+bpf.DigestMax) + 4*bpf.NumStates; RowBytes != want {
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
