package bench

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
)

var workloadTitles = map[string]string{
	ExecStatic:   "exec, static",
	ExecDynamic:  "exec, dynamic",
	MmapExec:     "mmap PROT_EXEC",
	MprotectExec: "mprotect +PROT_EXEC",
	OpenClose:    "open+close (no IPE hook)",
}

// WriteMarkdown prints a result as the tables of docs/benchmarks.md.
func WriteMarkdown(w io.Writer, r *Result) {
	p := r.Plan
	fmt.Fprintf(w, "### %s (Linux %s)\n\n", r.Kernel, p.Kernel)
	fmt.Fprintf(w, "%d rounds; per round and variant %d fork+execs of the static program, %d of the dynamic one, %d each of the other operations.",
		p.Rounds, p.Iters.Exec, p.Iters.Dynamic, p.Iters.Mmap)
	clock := "wall-clock time under qemu's software emulation"
	if r.Icount {
		clock = "instructions executed (qemu -icount: 1 instruction = 1 virtual ns)"
	}
	fmt.Fprintf(w, " Time is %s.", clock)
	if r.Finished {
		fmt.Fprintf(w, " The guest ran for %.0f s of that time.", r.Seconds)
	} else {
		fmt.Fprint(w, " **The guest did not finish: the tables are partial.**")
	}
	fmt.Fprint(w, "\n\n")

	fmt.Fprintln(w, "Time per operation as a ratio to no enforcement in the same round: median [min–max] over the rounds.")
	fmt.Fprintln(w)
	header(w, append([]string{"variant"}, titles()...)...)
	var skipped []Row
	for _, row := range r.Rows {
		cells := []string{row.Variant}
		if row.Cells == nil {
			skipped = append(skipped, row)
			cells = append(cells, "not measured, see below")
			for range Workloads[1:] {
				cells = append(cells, "–")
			}
			line(w, cells...)
			continue
		}
		for _, wl := range Workloads {
			cells = append(cells, ratioCell(row, wl))
		}
		line(w, cells...)
	}
	fmt.Fprintln(w)
	for _, row := range skipped {
		fmt.Fprintf(w, "- `%s` was not measured: %s\n", row.Variant, skipText(row.Skip))
	}
	for _, row := range r.Rows {
		if row.Cells != nil && row.Skip != nil {
			fmt.Fprintf(w, "- `%s` stopped early: %s\n", row.Variant, skipText(row.Skip))
		}
	}
	if len(skipped) > 0 {
		fmt.Fprintln(w)
	}
	writeAboveFloor(w, r)
	fmt.Fprintln(w, "Median time per operation, µs (under emulation: compare within a column, not with hardware).")
	fmt.Fprintln(w)
	header(w, append([]string{"variant"}, titles()...)...)
	for _, row := range r.Rows {
		if row.Cells == nil {
			continue
		}
		cells := []string{row.Variant}
		for _, wl := range Workloads {
			c, ok := row.Cells[wl]
			if !ok {
				cells = append(cells, "–")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.0f", c.NsPerOp.Median/1e3))
		}
		line(w, cells...)
	}
	fmt.Fprintln(w)
	writeLoads(w, r)
	writeMemory(w, r)
	writeEvents(w, r)
	writeCosts(w, r)
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "Notes from the guest:")
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
		fmt.Fprintln(w)
	}
}

// writeAboveFloor prints bpfipe's variants against EmptyLSM rather than
// the baseline, when both were measured.
func writeAboveFloor(w io.Writer, r *Result) {
	var rows []Row
	for _, row := range r.Rows {
		for _, c := range row.Cells {
			if c.AboveFloor.N > 0 {
				rows = append(rows, row)
				break
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "bpfipe's decisions alone: time per operation as a ratio to `%s` (a program that returns 0 at each of bpfipe's hooks) in the same round, median [min–max].\n\n", EmptyLSM)
	header(w, append([]string{"variant"}, titles()...)...)
	for _, row := range rows {
		cells := []string{row.Variant}
		for _, wl := range Workloads {
			c, ok := row.Cells[wl]
			if !ok || c.AboveFloor.N == 0 {
				cells = append(cells, "–")
				continue
			}
			cells = append(cells, spreadRatio(c.AboveFloor))
		}
		line(w, cells...)
	}
	fmt.Fprintln(w)
}

func spreadRatio(s Spread) string {
	return fmt.Sprintf("%.3f [%.3f–%.3f]", s.Median, s.Min, s.Max)
}

func titles() []string {
	var t []string
	for _, wl := range Workloads {
		t = append(t, workloadTitles[wl])
	}
	return t
}

func ratioCell(row Row, workload string) string {
	c, ok := row.Cells[workload]
	if !ok || c.Ratio.N == 0 {
		return "–"
	}
	if row.Variant == Baseline {
		return fmt.Sprintf("1.00 (%.0f µs)", c.NsPerOp.Median/1e3)
	}
	return spreadRatio(c.Ratio)
}

func skipText(s *Skip) string {
	if s == nil {
		return "the guest gave no reason"
	}
	if s.Errno != "" {
		return fmt.Sprintf("%s (%s)", s.Reason, s.Errno)
	}
	return s.Reason
}

// loadColumns are the steps the load table shows, in order.
var loadColumns = []struct{ enforcer, step, title string }{
	{Bpfipe, StepParse, "bpfipe parse"},
	{Bpfipe, StepCompile, "bpfipe compile"},
	{Bpfipe, StepStart, "bpfipe load (start)"},
	{Bpfipe, StepUpdate, "bpfipe update"},
	{IPE, StepNew, "IPE new_policy"},
	{IPE, StepActivate, "IPE activate"},
	{IPE, StepUpdate, "IPE update"},
}

func writeLoads(w io.Writer, r *Result) {
	if len(r.Loads) == 0 {
		return
	}
	var sizes []int
	bytes := map[int]int{}
	find := map[string]LoadRow{}
	for _, l := range r.Loads {
		if !slices.Contains(sizes, l.Rules) {
			sizes = append(sizes, l.Rules)
		}
		bytes[l.Rules] = max(bytes[l.Rules], l.Bytes)
		find[fmt.Sprintf("%s/%d/%s", l.Enforcer, l.Rules, l.Step)] = l
	}
	slices.Sort(sizes)
	var cols []string
	for _, c := range loadColumns {
		for _, l := range r.Loads {
			if l.Enforcer == c.enforcer && l.Step == c.step {
				cols = append(cols, c.title)
				break
			}
		}
	}
	fmt.Fprintln(w, "Policy load and update, ms: median [min–max] over the attempts (in the guest, under emulation).")
	fmt.Fprintln(w)
	header(w, append([]string{"rules", "policy text"}, cols...)...)
	for _, n := range sizes {
		cells := []string{fmt.Sprint(n), sizeText(bytes[n])}
		for _, c := range loadColumns {
			if !slices.Contains(cols, c.title) {
				continue
			}
			l, ok := find[fmt.Sprintf("%s/%d/%s", c.enforcer, n, c.step)]
			switch {
			case !ok:
				cells = append(cells, "–")
			case l.Millis.N == 0:
				cells = append(cells, "refused: "+cmp.Or(l.Errno, l.Error))
			default:
				cells = append(cells, spreadText(l.Millis))
			}
		}
		line(w, cells...)
	}
	fmt.Fprintln(w)
}

func writeMemory(w io.Writer, r *Result) {
	if len(r.Memory) == 0 {
		return
	}
	fmt.Fprintln(w, "Kernel memory charged to bpfipe's maps (memlock in fdinfo).")
	fmt.Fprintln(w)
	header(w, "rules", "table rows", "policy table", "per rule", "all maps of the load")
	for _, m := range r.Memory {
		if m.RowsBytes == 0 {
			line(w, fmt.Sprint(m.Rules), "–", "–", "–", "error: "+cmp.Or(m.Error, "no policy map"))
			continue
		}
		line(w, fmt.Sprint(m.Rules), fmt.Sprint(m.Rows), sizeText(int(m.RowsBytes)),
			fmt.Sprintf("%.0f B", float64(m.RowsBytes)/float64(m.Rules)), sizeText(int(m.TotalBytes)))
	}
	fmt.Fprintln(w)
}

func writeEvents(w io.Writer, r *Result) {
	if len(r.Events) == 0 {
		return
	}
	fmt.Fprintln(w, "Exec loop with success auditing on: every decision makes an event (bpfipe) or audit record (IPE).")
	fmt.Fprintln(w)
	header(w, "enforcer", "read during the loop", "execs", "decisions", "read", "dropped", "µs per exec", "events read per s")
	for _, e := range r.Events {
		if e.Error != "" {
			line(w, e.Enforcer, yesNo(e.Reader), fmt.Sprint(e.Execs), "–", "–", "–", "–", "error: "+e.Error)
			continue
		}
		decisions := "not counted"
		if e.Decisions > 0 {
			decisions = fmt.Sprint(e.Decisions)
		}
		rate := float64(e.Read) / (float64(e.Nanos) / 1e9)
		line(w, e.Enforcer, yesNo(e.Reader), fmt.Sprint(e.Execs), decisions, fmt.Sprint(e.Read), fmt.Sprint(e.Dropped),
			fmt.Sprintf("%.0f", float64(e.Nanos)/float64(e.Execs)/1e3), fmt.Sprintf("%.0f", rate))
	}
	fmt.Fprintln(w)
}

// writeCosts prints one line per workload and program, with the time per
// run under each policy size side by side.
func writeCosts(w io.Writer, r *Result) {
	if len(r.Costs) == 0 {
		return
	}
	type costKey struct{ workload, program string }
	perRun := map[costKey]map[string]float64{}
	runsPerOp := map[costKey]float64{}
	var keys []costKey
	var variants []string
	for _, c := range r.Costs {
		l := costKey{c.Workload, c.Program}
		if perRun[l] == nil {
			perRun[l] = map[string]float64{}
			runsPerOp[l] = float64(c.Runs) / float64(c.Ops)
			keys = append(keys, l)
		}
		perRun[l][c.Variant] = float64(c.Nanos) / float64(c.Runs)
		if !slices.Contains(variants, c.Variant) {
			variants = append(variants, c.Variant)
		}
	}
	slices.SortFunc(keys, func(a, b costKey) int {
		return cmp.Or(cmp.Compare(slices.Index(Workloads, a.workload), slices.Index(Workloads, b.workload)), strings.Compare(a.program, b.program))
	})
	unit := "ns"
	if r.Icount {
		unit = "instructions"
	}
	fmt.Fprintf(w, "Where bpfipe's cost goes: the programs each workload ran, from the kernel's BPF statistics in a pass after the rounds: runs per operation, and %s per run under each policy size (the statistics' own clock reads, about 70 instructions, included; the trampoline that calls a program is not; the guard's programs on the bpf() hooks, which run here for the statistics' reads, are left out).\n\n", unit)
	header(w, append([]string{"workload", "program", "runs per operation"}, variants...)...)
	for _, l := range keys {
		cells := []string{workloadTitles[l.workload], "`" + l.program + "`", fmt.Sprintf("%.2f", runsPerOp[l])}
		for _, v := range variants {
			if n, ok := perRun[l][v]; ok {
				cells = append(cells, fmt.Sprintf("%.0f", n))
			} else {
				cells = append(cells, "–")
			}
		}
		line(w, cells...)
	}
	fmt.Fprintln(w)
}

func spreadText(s Spread) string {
	if s.N == 1 {
		return fmt.Sprintf("%.1f", s.Median)
	}
	return fmt.Sprintf("%.1f [%.1f–%.1f]", s.Median, s.Min, s.Max)
}

func sizeText(b int) string {
	switch {
	case b == 0:
		return "–"
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no (after)"
}

func header(w io.Writer, cells ...string) {
	line(w, cells...)
	seps := make([]string, len(cells))
	for i := range seps {
		seps[i] = "---"
	}
	line(w, seps...)
}

func line(w io.Writer, cells ...string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
}
