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

// Each observable property lets through the needs it serves, and only
// those; boot_verified is always served, and the rows keyed by both digests
// only when both are observable.
func TestUsableNeeds(t *testing.T) {
	bv := bpf.NeedBootVerified
	for _, tc := range []struct {
		name string
		obs  policy.Observability
		want uint32
	}{
		{"none", policy.Observability{}, bv},
		{"dmverity_roothash", policy.Observability{DMVerityRootHash: true}, bv | bpf.NeedDVRows},
		{"dmverity_signature", policy.Observability{DMVeritySignature: true}, bv | bpf.NeedDMVeritySignature},
		{"fsverity_digest", policy.Observability{FSVerityDigest: true}, bv | bpf.NeedFVRows},
		{"fsverity_signature", policy.Observability{FSVeritySignature: true}, bv | bpf.NeedFSVeritySignature},
		{"both digests", policy.Observability{DMVerityRootHash: true, FSVerityDigest: true}, bv | bpf.NeedDVRows | bpf.NeedFVRows | bpf.NeedDVFVRows},
		{"everything", policy.AllObservable, bv | bpf.NeedDMVeritySignature | bpf.NeedFSVeritySignature | bpf.NeedDVRows | bpf.NeedFVRows | bpf.NeedDVFVRows},
	} {
		if got := UsableNeeds(tc.obs); got != tc.want {
			t.Errorf("%s: usable needs %#x, want %#x", tc.name, got, tc.want)
		}
	}
}
