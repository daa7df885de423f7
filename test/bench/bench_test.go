package bench

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

func TestTinyELFExitsWithItsStatus(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("the program is x86-64 Linux code; this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	for _, status := range []uint8{0, 7} {
		prog := filepath.Join(t.TempDir(), "exit")
		if err := os.WriteFile(prog, TinyELF(status), 0o755); err != nil {
			t.Fatal(err)
		}
		err := exec.Command(prog).Run()
		got := 0
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			got = exitErr.ExitCode()
		case err != nil:
			t.Fatalf("run TinyELF(%d): %v", status, err)
		}
		if got != int(status) {
			t.Errorf("TinyELF(%d) exited with %d", status, got)
		}
	}
}

func TestPolicyTextWalksEveryRuleBeforeAllowing(t *testing.T) {
	for _, rules := range []int{1, 2, 1000} {
		text := PolicyText("bench", "1.2.3", rules)
		p, err := policy.Parse("bench.pol", text)
		if err != nil {
			t.Fatalf("%d rules: %v", rules, err)
		}
		if len(p.Rules) != rules {
			t.Fatalf("%d rules: parsed %d", rules, len(p.Rules))
		}
		if last := p.Rules[rules-1]; len(last.Props) != 1 || last.Props[0].Kind != policy.PropBootVerified {
			t.Errorf("%d rules: the last rule is %+v, want boot_verified", rules, last)
		}
		tables, err := maps.Compile(p, 1)
		if err != nil {
			t.Fatal(err)
		}
		// A BASE row per op and one row per root hash: distinct digests.
		if s := tables.Summary(); s.RowsPerKind[maps.KindDV] != rules-1 {
			t.Errorf("%d rules compile to %d DV rows, want %d (distinct root hashes)", rules, s.RowsPerKind[maps.KindDV], rules-1)
		}
		inInitramfs := policy.Subject{HasFile: true, BootVerified: true}
		if v := tables.Lookup(policy.OpExecute, inInitramfs, policy.AllObservable); v.Action != policy.Allow || v.RuleIndex != uint32(rules-1) {
			t.Errorf("%d rules: a boot_verified file gets %+v, want ALLOW by the last rule", rules, v)
		}
		elsewhere := policy.Subject{HasFile: true}
		if v := tables.Lookup(policy.OpExecute, elsewhere, policy.AllObservable); v.Action != policy.Deny || v.Scope != policy.ScopeOpDefault {
			t.Errorf("%d rules: another file gets %+v, want DENY by the op's DEFAULT", rules, v)
		}
	}
}

func TestIdlePolicyAllowsWithoutRules(t *testing.T) {
	p, err := policy.Parse("idle.pol", IdlePolicyText("idle", "1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 0 || p.GlobalDefault == nil || *p.GlobalDefault != policy.Allow {
		t.Errorf("idle policy: %d rules, global default %v", len(p.Rules), p.GlobalDefault)
	}
}

func TestOrderPutsEveryVariantInEveryPosition(t *testing.T) {
	variants := []string{"a", "b", "c", "d", "e"}
	positions := map[string][]int{}
	for round := range len(variants) {
		order := Order(variants, round)
		sorted := slices.Clone(order)
		slices.Sort(sorted)
		if !slices.Equal(sorted, variants) {
			t.Fatalf("round %d runs %v, not each variant once", round, order)
		}
		for i, v := range order {
			positions[v] = append(positions[v], i)
		}
	}
	for v, pos := range positions {
		slices.Sort(pos)
		if !slices.Equal(pos, []int{0, 1, 2, 3, 4}) {
			t.Errorf("over %d rounds %s took positions %v", len(variants), v, pos)
		}
	}
}

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3, 1, 2}, Spread{N: 3, Median: 2, Min: 1, Max: 3}},
		{[]float64{4, 1, 3, 2}, Spread{N: 4, Median: 2.5, Min: 1, Max: 4}},
	} {
		if got := SpreadOf(c.in); got != c.want {
			t.Errorf("SpreadOf(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// sample is a Sample of 10 operations at nsPerOp each.
func sample(round int, variant, workload string, nsPerOp int64) Record {
	return Record{Sample: &Sample{Round: round, Variant: variant, Workload: workload, Ops: 10, Nanos: 10 * nsPerOp}}
}

func TestSummarizeTakesRatiosWithinEachRound(t *testing.T) {
	records := []Record{
		{Plan: &Plan{Kernel: "6.1.0-test", Variants: []string{Baseline, "bpfipe/1", "ipe/100000"}, Rounds: 2}},
		{Skip: &Skip{Variant: "ipe/100000", Reason: "new_policy refused", Errno: "ENOMEM"}},
		// The machine is twice as slow in round 1: the ratios do not care.
		sample(0, Baseline, ExecStatic, 100),
		sample(0, "bpfipe/1", ExecStatic, 110),
		sample(1, Baseline, ExecStatic, 200),
		sample(1, "bpfipe/1", ExecStatic, 180),
		{Load: &Load{Enforcer: Bpfipe, Rules: 1, Step: StepStart, Nanos: 2e6}},
		{Load: &Load{Enforcer: Bpfipe, Rules: 1, Step: StepStart, Nanos: 4e6}},
		{Load: &Load{Enforcer: IPE, Rules: 100000, Step: StepNew, Errno: "ENOMEM", Error: "load policy: ENOMEM"}},
		{Done: &Summary{Seconds: 12}},
	}
	res, err := Summarize("debian-6.1", records)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Finished || res.Seconds != 12 {
		t.Errorf("finished %v after %v s", res.Finished, res.Seconds)
	}
	row, ok := res.Row("bpfipe/1")
	if !ok {
		t.Fatal("no row for bpfipe/1")
	}
	got := row.Cells[ExecStatic]
	want := Spread{N: 2, Median: 1.0, Min: 0.9, Max: 1.1}
	if !closeSpread(got.Ratio, want) {
		t.Errorf("ratio %+v, want %+v", got.Ratio, want)
	}
	if !closeSpread(got.NsPerOp, Spread{N: 2, Median: 145, Min: 110, Max: 180}) {
		t.Errorf("ns/op %+v", got.NsPerOp)
	}
	skipped, _ := res.Row("ipe/100000")
	if skipped.Cells != nil || skipped.Skip == nil || skipped.Skip.Errno != "ENOMEM" {
		t.Errorf("skipped row %+v", skipped)
	}
	var start, refused *LoadRow
	for i := range res.Loads {
		switch l := &res.Loads[i]; l.Step {
		case StepStart:
			start = l
		case StepNew:
			refused = l
		}
	}
	if start == nil || !closeSpread(start.Millis, Spread{N: 2, Median: 3, Min: 2, Max: 4}) {
		t.Errorf("start times %+v", start)
	}
	if refused == nil || refused.Failed != 1 || refused.Errno != "ENOMEM" || refused.Millis.N != 0 {
		t.Errorf("refused load %+v", refused)
	}
}

// bpfipe's rows are also taken against the empty programs on its hooks,
// round by round; no other enforcer's are.
func TestSummarizeTakesBpfipeAboveTheFloor(t *testing.T) {
	records := []Record{
		{Plan: &Plan{Kernel: "6.1.0-test", Variants: []string{Baseline, EmptyLSM, "bpfipe/1", "ipe/1"}, Rounds: 2}},
		sample(0, Baseline, MmapExec, 100),
		sample(0, EmptyLSM, MmapExec, 102),
		sample(0, "bpfipe/1", MmapExec, 107),
		sample(0, "ipe/1", MmapExec, 120),
		// Round 1 has no floor: it counts toward the ratio to the
		// baseline, not toward the ratio to the floor.
		sample(1, Baseline, MmapExec, 200),
		sample(1, "bpfipe/1", MmapExec, 230),
		sample(1, "ipe/1", MmapExec, 240),
	}
	res, err := Summarize("debian-6.1", records)
	if err != nil {
		t.Fatal(err)
	}
	bpfipe, _ := res.Row("bpfipe/1")
	c := bpfipe.Cells[MmapExec]
	if !closeSpread(c.AboveFloor, Spread{N: 1, Median: 107.0 / 102, Min: 107.0 / 102, Max: 107.0 / 102}) {
		t.Errorf("bpfipe above the floor %+v", c.AboveFloor)
	}
	if !closeSpread(c.Ratio, Spread{N: 2, Median: 1.11, Min: 1.07, Max: 1.15}) {
		t.Errorf("bpfipe ratio %+v", c.Ratio)
	}
	for _, v := range []string{Baseline, EmptyLSM, "ipe/1"} {
		if row, _ := res.Row(v); row.Cells[MmapExec].AboveFloor.N != 0 {
			t.Errorf("%s has a ratio to the floor: %+v", v, row.Cells[MmapExec].AboveFloor)
		}
	}
	var b strings.Builder
	WriteMarkdown(&b, res)
	if want := "| bpfipe/1 | – | – | 1.049 [1.049–1.049] | – | – |"; !strings.Contains(b.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, b.String())
	}
}

func TestSummarizeWantsAPlan(t *testing.T) {
	if _, err := Summarize("debian-6.1", []Record{sample(0, Baseline, ExecStatic, 1)}); err == nil {
		t.Error("records without a plan summarised")
	}
}

func closeSpread(a, b Spread) bool {
	near := func(x, y float64) bool { return x-y < 1e-9 && y-x < 1e-9 }
	return a.N == b.N && near(a.Median, b.Median) && near(a.Min, b.Min) && near(a.Max, b.Max)
}

func TestParseOutputKeepsOtherLines(t *testing.T) {
	var out bytes.Buffer
	out.WriteString("kernel says hello\n")
	if err := WriteRecord(&out, Record{Note: "a note"}); err != nil {
		t.Fatal(err)
	}
	out.WriteString("go test noise " + Prefix + `{"skip":{"variant":"fapolicyd","reason":"r"}}` + "\r\n")
	records, other, err := ParseOutput(&out)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 2 || records[0].Note != "a note" || records[1].Skip == nil || records[1].Skip.Variant != "fapolicyd" {
		t.Errorf("records %+v", records)
	}
	if !slices.Equal(other, []string{"kernel says hello"}) {
		t.Errorf("other lines %q", other)
	}
	if _, _, err := ParseOutput(strings.NewReader(Prefix + "{broken\n")); err == nil {
		t.Error("a broken record parsed")
	}
}

func TestWriteMarkdownShowsEveryVariant(t *testing.T) {
	res := &Result{Kernel: "debian-6.12", Finished: true, Plan: Plan{Kernel: "6.12.0-test", Rounds: 1},
		Rows: []Row{
			{Variant: Baseline, Cells: map[string]Cell{ExecStatic: {Ratio: Spread{N: 1, Median: 1}, NsPerOp: Spread{N: 1, Median: 2500e3}}}},
			{Variant: "bpfipe/1000", Cells: map[string]Cell{ExecStatic: {Ratio: Spread{N: 1, Median: 1.004, Min: 1.004, Max: 1.004}, NsPerOp: Spread{N: 1, Median: 2510e3}}}},
			{Variant: "ipe/100000", Skip: &Skip{Variant: "ipe/100000", Reason: "new_policy refused the signed 100000-rule policy", Errno: "ENOMEM"}},
		},
		Memory: []Memory{{Rules: 1000, Rows: 1001, RowsBytes: 386000, TotalBytes: 2 << 20}},
	}
	var b strings.Builder
	WriteMarkdown(&b, res)
	doc := b.String()
	for _, want := range []string{
		"| none | 1.00 (2500 µs) |",
		"| bpfipe/1000 | 1.004 [1.004–1.004] |",
		"| ipe/100000 | not measured, see below |",
		"- `ipe/100000` was not measured: new_policy refused the signed 100000-rule policy (ENOMEM)",
		"| 1000 | 1001 | 377.0 KiB | 386 B | 2.0 MiB |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("markdown lacks %q:\n%s", want, doc)
		}
	}
}

// The cost table has a line per workload and program, in workload order,
// with the time per run under each policy size side by side.
func TestWriteMarkdownCostsSideBySide(t *testing.T) {
	res := &Result{Kernel: "debian-6.12", Finished: true, Icount: true, Plan: Plan{Kernel: "6.12.0-test", Rounds: 1},
		Costs: []Cost{
			{Variant: "bpfipe/1", Workload: MmapExec, Program: "mmap_file", Ops: 100, Runs: 100, Nanos: 60000},
			{Variant: "bpfipe/1", Workload: ExecStatic, Program: "mmap_file", Ops: 10, Runs: 10, Nanos: 6100},
			{Variant: "bpfipe/1", Workload: ExecStatic, Program: "bprm_check_security", Ops: 10, Runs: 10, Nanos: 6200},
			{Variant: "bpfipe/100000", Workload: ExecStatic, Program: "bprm_check_security", Ops: 10, Runs: 10, Nanos: 6300},
		},
	}
	var b strings.Builder
	WriteMarkdown(&b, res)
	doc := b.String()
	want := []string{
		"| workload | program | runs per operation | bpfipe/1 | bpfipe/100000 |",
		"| exec, static | `bprm_check_security` | 1.00 | 620 | 630 |",
		"| exec, static | `mmap_file` | 1.00 | 610 | – |",
		"| mmap PROT_EXEC | `mmap_file` | 1.00 | 600 | – |",
	}
	at := 0
	for _, w := range want {
		i := strings.Index(doc[at:], w)
		if i < 0 {
			t.Fatalf("markdown lacks %q after the lines before it:\n%s", w, doc)
		}
		at += i + len(w)
	}
}

func TestSharedLibrariesOfADynamicProgram(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skipf("needs ldd: %v", err)
	}
	if _, err := os.Stat(hostDynamic); err != nil {
		t.Skipf("needs %s: %v", hostDynamic, err)
	}
	libs, err := sharedLibraries(t.Context(), hostDynamic, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range libs {
		names = append(names, l.name)
		if info, err := os.Lstat(l.file); err != nil || !info.Mode().IsRegular() {
			t.Errorf("%s resolves to %s, not a regular file (%v)", l.name, l.file, err)
		}
	}
	if !slices.Contains(names, "libc.so.6") {
		t.Errorf("%s loads %v, no libc.so.6", hostDynamic, names)
	}
}
