package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

// bootVerifiedReason is why a row that involves boot_verified may differ:
// IPE marks the initramfs as the kernel unpacks it, bpfipe designates a
// boot filesystem after the fact.
const bootVerifiedReason = "expected: boot_verified is designated by the loader (docs/ipe-differences.md)"

func compare(p *played) scenario.Report {
	r := scenario.Report{Scenario: p.Scenario.Name, Policy: p.Policy}
	for i, op := range p.Scenario.Ops {
		ipe, bpf := p.IPE[i], p.BPF[i]
		n := max(len(ipe.Records), len(bpf.Records), 1)
		for j := 0; j < n; j++ {
			row := scenario.Row{Op: i + 1, Operation: op.String()}
			var a, b *loader.AccessRecord
			if j < len(ipe.Records) {
				a = &ipe.Records[j]
			}
			if j < len(bpf.Records) {
				b = &bpf.Records[j]
			}
			if j == 0 {
				row.IPE, row.Bpfipe = ipe.Result, bpf.Result
				if ipe.Result != bpf.Result {
					row.Notes = append(row.Notes, fmt.Sprintf("result: IPE %s, bpfipe %s", ipe.Result, bpf.Result))
				}
				if op.Expect != "" {
					for name, got := range map[string]string{"IPE": ipe.Result, "bpfipe": bpf.Result} {
						if got != op.Expect {
							row.Notes = append(row.Notes, fmt.Sprintf("%s: %s, the scenario expects %s", name, got, op.Expect))
						}
					}
				}
			}
			row.Notes = append(row.Notes, recordDiff(a, b, pidClasser(ipe.outcome), pidClasser(bpf.outcome))...)
			describe(&row, a, b)
			switch {
			case len(row.Notes) == 0:
				row.Verdict = scenario.VerdictAgree
			case involvesBootVerified(a, b):
				row.Verdict = bootVerifiedReason
				r.Expected++
			default:
				row.Verdict = scenario.VerdictDisagree
				r.Disagreements++
			}
			r.Rows = append(r.Rows, row)
		}
	}
	return r
}

func describe(row *scenario.Row, a, b *loader.AccessRecord) {
	row.IPERule, row.BpfRule = "-", "-"
	for _, rec := range []*loader.AccessRecord{b, a} {
		if rec != nil {
			row.Hook = rec.Hook
			row.Path = rec.Path
			if !rec.HasFile {
				row.Path = "(no file)"
			}
		}
	}
	if a != nil {
		row.IPERule = a.Rule
	}
	if b != nil {
		row.BpfRule = b.Rule
	}
}

func involvesBootVerified(recs ...*loader.AccessRecord) bool {
	for _, r := range recs {
		if r != nil && strings.Contains(r.Rule, "boot_verified") {
			return true
		}
	}
	return false
}

// pidClasser names a record's process relative to the operation: the
// runner itself, the operation's child, or another process. Process ids
// differ between the two runs; their roles must not.
func pidClasser(o outcome) func(uint32) string {
	self := uint32(os.Getpid())
	return func(pid uint32) string {
		switch {
		case pid == self:
			return "runner"
		case o.ChildPID != 0 && pid == uint32(o.ChildPID):
			return "child"
		}
		return "other"
	}
}

// recordDiff lists the fields in which two records of the same position
// differ; a missing record is one difference.
func recordDiff(a, b *loader.AccessRecord, pidA, pidB func(uint32) string) []string {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		return []string{"record only from bpfipe: " + b.String()}
	case b == nil:
		return []string{"record only from IPE: " + a.String()}
	}
	var diffs []string
	field := func(name string, x, y any) {
		if x != y {
			diffs = append(diffs, fmt.Sprintf("%s: IPE %v, bpfipe %v", name, x, y))
		}
	}
	field("ipe_op", a.Op, b.Op)
	field("ipe_hook", a.Hook, b.Hook)
	field("enforcing", a.Enforcing, b.Enforcing)
	field("pid", pidA(a.PID), pidB(b.PID))
	field("comm", a.Comm, b.Comm)
	field("has_file", a.HasFile, b.HasFile)
	if b.PathTruncated {
		if !strings.HasPrefix(a.Path, b.Path) {
			field("path", a.Path, b.Path+"...")
		}
	} else {
		field("path", a.Path, b.Path)
	}
	field("dev", a.Dev, b.Dev)
	field("ino", a.Ino, b.Ino)
	field("rule", a.Rule, b.Rule)
	field("action", a.Action, b.Action)
	return diffs
}

// printTable writes the side-by-side table.
func printTable(w io.Writer, r scenario.Report) {
	fmt.Fprintf(w, "\n=== scenario %s: %d rows, %d disagreements, %d expected differences\n", r.Scenario, len(r.Rows), r.Disagreements, r.Expected)
	for _, line := range strings.Split(strings.TrimSpace(r.Policy), "\n") {
		fmt.Fprintf(w, "    | %s\n", line)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\toperation\tIPE\tbpfipe\thook\tIPE rule=\tbpfipe rule=\tagree")
	for i, row := range r.Rows {
		first := i == 0 || r.Rows[i-1].Op != row.Op
		num, operation := "", ""
		if first {
			num, operation = fmt.Sprint(row.Op), row.Operation
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", num, operation, row.IPE, row.Bpfipe, row.Hook, row.IPERule, row.BpfRule, row.Verdict)
	}
	tw.Flush()
	for _, row := range r.Rows {
		for _, n := range row.Notes {
			fmt.Fprintf(w, "    op %d %s: %s\n", row.Op, row.Hook, n)
		}
	}
}

func printJSON(w io.Writer, r scenario.Report) {
	data, err := json.Marshal(r)
	if err != nil {
		panic(err) // strings, ints and slices of them only
	}
	fmt.Fprintf(w, "%s%s\n", scenario.ReportPrefix, data)
}
