package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/vmtest"
)

// kernelsWithIPE are the stock kernels with in-tree IPE built in and
// active, where the benchmark measures it beside bpfipe.
var kernelsWithIPE = map[string]bool{"debian-6.12": true}

// TestBenchSmoke boots every stock kernel with the benchmark in its short
// form and checks that the tables came out whole: every variant has a row
// with a number in every column, or says why it was not measured. It
// asserts nothing about the numbers, which under emulation and a few
// operations mean little.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	cert, _ := vmtest.TestCertificate(t, "bpfipe bench smoke")
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			vmtest.Require(t, kernel, vmtest.WithUEFICert(cert))
			res, raw, err := Run(context.Background(), kernel, SmokeParams(), nil)
			if err != nil {
				t.Fatalf("%v\nguest output:\n%s", err, raw)
			}
			var doc strings.Builder
			WriteMarkdown(&doc, res)
			t.Log("\n" + doc.String())
			checkComplete(t, res, doc.String(), kernelsWithIPE[kernel])
		})
	}
}

func checkComplete(t *testing.T, res *Result, doc string, withIPE bool) {
	t.Helper()
	if !res.Finished {
		t.Error("the guest did not finish")
	}
	want := []string{Baseline, EmptyLSM}
	enforcers := []string{Bpfipe}
	if withIPE {
		enforcers = append(enforcers, IPE)
	}
	for _, e := range enforcers {
		for _, n := range Sizes {
			want = append(want, VariantName(e, n))
		}
	}
	want = append(want, Fapolicyd)
	for _, v := range want {
		row, ok := res.Row(v)
		if !ok {
			t.Errorf("no row for %s", v)
			continue
		}
		if !strings.Contains(doc, "| "+v+" | ") {
			t.Errorf("the table has no line for %s", v)
		}
		if row.Cells == nil {
			if row.Skip == nil || row.Skip.Reason == "" {
				t.Errorf("%s: neither measured nor a reason why not", v)
			}
			continue
		}
		for _, w := range Workloads {
			if c, ok := row.Cells[w]; !ok || c.NsPerOp.N == 0 || (v != Baseline && c.Ratio.N == 0) {
				t.Errorf("%s: no %s numbers", v, w)
			}
			if strings.HasPrefix(v, Bpfipe+"/") && row.Cells[w].AboveFloor.N == 0 {
				t.Errorf("%s: no %s numbers against %s", v, w, EmptyLSM)
			}
		}
	}
	if base, _ := res.Row(Baseline); base.Cells == nil {
		t.Fatal("the baseline was not measured")
	}
	// bpfipe loads small policies everywhere: their load time and kernel
	// memory must be in the tables.
	for _, n := range Sizes[:2] {
		if !hasLoad(res, Bpfipe, n, StepStart) || !hasLoad(res, Bpfipe, n, StepUpdate) {
			t.Errorf("no bpfipe load or update time for %d rules", n)
		}
		if !hasMemory(res, n) {
			t.Errorf("no kernel memory for %d rules", n)
		}
	}
	// The statistics pass must have seen each hook run as often as its
	// workload reaches it: once per exec, once per mmap, and twice per
	// mprotect round trip (taking PROT_EXEC away runs the program too,
	// which lets it through without a decision). The Go runtime's own
	// mappings may add a few runs, never take any away.
	for _, c := range []struct {
		workload, program string
		perOp             uint64
	}{
		{ExecStatic, "bprm_check_security", 1},
		{MmapExec, "mmap_file", 1},
		{MprotectExec, "file_mprotect", 2},
	} {
		variant := VariantName(Bpfipe, Sizes[0])
		got, ok := costOf(res, variant, c.workload, c.program)
		if want := c.perOp * uint64(got.Ops); !ok || got.Runs < want || got.Runs > want+uint64(got.Ops)/10+5 {
			t.Errorf("%s %s: program %s ran %d times in %d operations, want %d per operation", variant, c.workload, c.program, got.Runs, got.Ops, c.perOp)
		}
	}
	if withIPE && !hasLoad(res, IPE, 1, StepNew) {
		t.Error("no in-tree IPE load time for one rule")
	}
	events := map[string]int{}
	for _, e := range res.Events {
		if e.Error != "" {
			t.Errorf("event loop of %s: %s", e.Enforcer, e.Error)
		}
		events[e.Enforcer]++
	}
	if events[Bpfipe] != 2 || (withIPE && events[IPE] != 1) {
		t.Errorf("event loops run: %v", events)
	}
}

func hasLoad(res *Result, enforcer string, rules int, step string) bool {
	for _, l := range res.Loads {
		if l.Enforcer == enforcer && l.Rules == rules && l.Step == step && l.Millis.N > 0 {
			return true
		}
	}
	return false
}

func hasMemory(res *Result, rules int) bool {
	for _, m := range res.Memory {
		if m.Rules == rules && m.RowsBytes > 0 {
			return true
		}
	}
	return false
}

func costOf(res *Result, variant, workload, program string) (Cost, bool) {
	for _, c := range res.Costs {
		if c.Variant == variant && c.Workload == workload && c.Program == program {
			return c, true
		}
	}
	return Cost{}, false
}
