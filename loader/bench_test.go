package loader

import (
	"fmt"
	"testing"

	"github.com/bpfipe/bpfipe/test/bench"
)

// BenchmarkUpdate measures Running.Update natively, which the guests can
// only time under emulation: from a decoded policy of n rules (the
// benchmark's policy, bench.PolicyText) to its rows in force (compile, the
// rows and state maps, the swap, the pins). The programs are left out
// (this host cannot load them); an update does not touch them. Needs root.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p := privateBPFFS(b)
			fakeVerity(b)
			installWithoutPrograms(b, p, Options{Policy: testPolicy(b, string(bench.PolicyText("bench", "0.0.1", 1))), Enforcing: true})
			r, err := openRunning(p)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			for i := range b.N {
				b.StopTimer()
				// Every update must name a newer version.
				next := testPolicy(b, string(bench.PolicyText("bench", fmt.Sprintf("1.0.%d", i), n)))
				b.StartTimer()
				if _, _, err := r.Update(next, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
