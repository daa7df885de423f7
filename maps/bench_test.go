package maps

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
)

var benchSizes = []int{1, 1000, 100000}

// digestPolicy is n rules `op=EXECUTE <kind>=sha256:<distinct hex>
// action=ALLOW`, the shape of an allowlist of images or files.
func digestPolicy(n int, kind policy.PropKind) *policy.Policy {
	rules := make([]policy.Rule, n)
	for i := range rules {
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b[24:], uint64(i))
		rules[i] = rule(policy.OpExecute, policy.Allow, policy.Property{Kind: kind, Digest: policy.Digest{Alg: "sha256", Bytes: b}})
	}
	return newPolicy(action(policy.Deny), rules...)
}

func benchKinds(b *testing.B, run func(b *testing.B, p *policy.Policy, kind policy.PropKind)) {
	for _, kind := range []policy.PropKind{policy.PropDMVerityRootHash, policy.PropFSVerityDigest} {
		for _, n := range benchSizes {
			p := digestPolicy(n, kind)
			b.Run(fmt.Sprintf("%s/rules=%d", kind, n), func(b *testing.B) { run(b, p, kind) })
		}
	}
}

func BenchmarkCompile(b *testing.B) {
	benchKinds(b, func(b *testing.B, p *policy.Policy, _ policy.PropKind) {
		b.ReportAllocs()
		var tables *Tables
		for b.Loop() {
			var err error
			if tables, err = Compile(p, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(tables.Summary().KernelBytes)/float64(len(p.Rules)), "bytes/rule")
	})
}

func BenchmarkLookup(b *testing.B) {
	benchKinds(b, func(b *testing.B, p *policy.Policy, kind policy.PropKind) {
		tables, err := Compile(p, 1)
		if err != nil {
			b.Fatal(err)
		}
		// The last rule, so a linear walk would be at its slowest.
		last := p.Rules[len(p.Rules)-1].Props[0].Digest
		subj := policy.Subject{HasFile: true, FSVerityDigest: &hashA, DMVerityRootHash: &hashB}
		if kind == policy.PropDMVerityRootHash {
			subj.DMVerityRootHash = &last
		} else {
			subj.FSVerityDigest = &last
		}
		want := Verdict{Action: policy.Allow, Scope: policy.ScopeRule, RuleIndex: uint32(len(p.Rules) - 1)}
		b.ReportAllocs()
		for b.Loop() {
			if got := tables.Lookup(policy.OpExecute, subj, policy.AllObservable); got != want {
				b.Fatalf("Lookup = %+v, want %+v", got, want)
			}
		}
	})
}
