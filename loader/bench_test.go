package loader

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// allowlistText is a policy of n dmverity_roothash rules with distinct
// digests, the shape of an image allowlist.
func allowlistText(n int) []byte {
	var b strings.Builder
	b.WriteString("policy_name=bench policy_version=0.0.1\nDEFAULT action=DENY\n")
	var index [8]byte
	for i := range n {
		binary.BigEndian.PutUint64(index[:], uint64(i))
		sum := sha256.Sum256(index[:])
		fmt.Fprintf(&b, "op=EXECUTE dmverity_roothash=sha256:%s action=ALLOW\n", hex.EncodeToString(sum[:]))
	}
	return []byte(b.String())
}

// BenchmarkPolicyMaps measures, natively, the kernel side of a policy
// change that the guests can only time under emulation: creating and
// filling the policy's rows map and its state map (which keeps the policy
// text), and freezing both. Attaching and the swap are not included: the
// swap is one map update, attaching happens once per load. Needs root.
func BenchmarkPolicyMaps(b *testing.B) {
	spec, err := bpf.LoadSpec()
	if err != nil {
		b.Fatal(err)
	}
	template := spec.Maps[mapPolicy].InnerMap
	for _, n := range []int{1, 1000, 100000} {
		text := allowlistText(n)
		p, err := policy.Parse("bench.pol", text)
		if err != nil {
			b.Fatal(err)
		}
		tables, err := maps.Compile(p, 1)
		if err != nil {
			b.Fatal(err)
		}
		state := &State{Format: stateFormat, Active: ActivePolicy{Name: p.Name, Version: p.Version.String(), Generation: 1, Text: string(text)}}
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				rows, err := newPolicyRows(template, tables.Rows)
				if err != nil {
					b.Fatal(err)
				}
				stateMap, err := newStateMap(state)
				if err != nil {
					b.Fatal(err)
				}
				rows.Close()
				stateMap.Close()
			}
			b.ReportMetric(float64(len(tables.Rows)), "rows")
		})
	}
}
