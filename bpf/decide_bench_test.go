package bpf_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
	"github.com/bpfipe/bpfipe/test/bench"
)

// BenchmarkKernelDecision is what one decision of decide.h costs in the
// kernel, natively, under the policies of `make bench`: the program's own
// run time from the kernel's BPF statistics, without the system call that
// drives it. The test program adds a map lookup and a copy of the subject
// to what an LSM program does, and no trampoline; the numbers are for
// comparing versions of the decision and policy sizes, on one machine.
func BenchmarkKernelDecision(b *testing.B) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Skipf("enable BPF statistics (needs root): %v", err)
	}
	defer stats.Close()
	all := policy.Observability{DMVerityRootHash: true, DMVeritySignature: true, FSVerityDigest: true, FSVeritySignature: true}
	// A file from the initramfs, as the guest's benchmark programs are.
	subject := bpf.TestSubject{HasFile: true, BootVerified: true}
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p, err := policy.Parse("bench", bench.PolicyText("bench", "0.0.1", n))
			if err != nil {
				b.Fatal(err)
			}
			tables, err := maps.Compile(p, 1)
			if err != nil {
				b.Fatal(err)
			}
			rows := make(map[bpf.RowKey]bpf.Row, len(tables.Rows))
			for _, e := range tables.Rows {
				rows[e.Key] = e.Row
			}
			h := bpf.NewDecideHarness(b, 0)
			h.SetPolicy(rows)
			h.SetSettings(bpf.Settings{Enforcing: 1, UsableNeeds: maps.UsableNeeds(all)})
			before := h.ProgramStats()
			b.ResetTimer()
			for range b.N {
				if got := h.Run(uint8(policy.OpExecute), bpf.HookMmap, subject); got.RC != 0 || !got.Decided {
					b.Fatalf("decision %+v, want the policy's last rule to allow", got)
				}
			}
			after := h.ProgramStats()
			if runs := after.RunCount - before.RunCount; runs > 0 {
				b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(runs), "prog-ns/decision")
			}
		})
	}
}
