package policy

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// roothashPolicy is a policy of n `op=EXECUTE dmverity_roothash=sha256:…
// action=ALLOW` rules with distinct digests, the shape of a large allowlist.
func roothashPolicy(n int) []byte {
	var b strings.Builder
	b.WriteString("policy_name=bench policy_version=1.0.0\nDEFAULT action=DENY\n")
	for i := range n {
		fmt.Fprintf(&b, "op=EXECUTE dmverity_roothash=sha256:%064x action=ALLOW\n", uint64(i)*0x9e3779b97f4a7c15)
	}
	return []byte(b.String())
}

func BenchmarkParse(b *testing.B) {
	for _, rules := range []int{1, 1000, 100000} {
		text := roothashPolicy(rules)
		b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				p, err := Parse("bench.pol", text)
				if err != nil || len(p.Rules) != rules {
					b.Fatalf("Parse: %v", err)
				}
			}
			runtime.ReadMemStats(&after)
			perRule := float64(after.TotalAlloc-before.TotalAlloc) / float64(b.N) / float64(rules)
			b.ReportMetric(perRule, "alloc-B/rule")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rules), "ns/rule")
		})
	}
}
