package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

// findingKind sorts what compare finds in a row by what it does to the
// verdict.
type findingKind int

const (
	// decision: what was decided differs (outcome, rule, action, a
	// record only one enforcer makes). Only this may be expected.
	decision findingKind = iota
	// identity: the same decision is recorded differently (op, hook,
	// mode, process, file, or the record's text). Never expected.
	identity
	// unexpected: an enforcer did not do what the scenario says.
	unexpected
	// documented: a difference docs/ipe-differences.md lists for every
	// record; shown, not counted.
	documented
)

type finding struct {
	kind findingKind
	text string
}

// side is one enforcer's run of one operation, as compare reads it.
type side struct{ opResult }

func compare(p *played) scenario.Report {
	r := scenario.Report{Scenario: p.Scenario.Name, Policy: p.Policy}
	for i, op := range p.Scenario.Ops {
		r.Rows = append(r.Rows, compareOp(i+1, op, side{p.IPE[i]}, side{p.BPF[i]})...)
	}
	for _, row := range r.Rows {
		switch row.Verdict {
		case scenario.VerdictAgree:
			r.Agreements++
		case scenario.VerdictExpected:
			r.Expected++
		case scenario.VerdictUnexpectedAgreement:
			r.UnexpectedAgreements++
		case scenario.VerdictUnexpected:
			r.Unexpected++
		default:
			r.Disagreements++
		}
	}
	return r
}

// compareOp pairs the records of one operation in order and gives each
// pair a row and a verdict.
func compareOp(num int, op scenario.Op, ipe, bpf side) []scenario.Row {
	n := max(len(ipe.Records), len(bpf.Records), 1)
	rows := make([]scenario.Row, n)
	anyDecision := false
	for j := range rows {
		row := &rows[j]
		row.Op, row.Operation = num, op.String()
		var found []finding
		if j == 0 {
			row.IPE, row.Bpfipe = ipe.Result, bpf.Result
			found = append(found, outcomeFindings(op, ipe, bpf)...)
		}
		a, textA := ipe.record(j)
		b, textB := bpf.record(j)
		found = append(found, recordDiff(a, b, textA, textB, ipe, bpf)...)
		describe(row, a, b)
		row.IPERecord, row.BpfipeRecord = textA, textB

		kinds := map[findingKind]bool{}
		for _, f := range found {
			kinds[f.kind] = true
			if f.kind == documented {
				row.Documented = append(row.Documented, f.text)
			} else {
				row.Notes = append(row.Notes, f.text)
			}
		}
		anyDecision = anyDecision || kinds[decision]
		switch {
		case kinds[identity], kinds[decision] && op.ExpectDifference == "":
			row.Verdict = scenario.VerdictDisagree
		case kinds[unexpected]:
			row.Verdict = scenario.VerdictUnexpected
		case kinds[decision]:
			row.Verdict = scenario.VerdictExpected
			row.Reason = op.ExpectDifference
		default:
			row.Verdict = scenario.VerdictAgree
		}
	}
	if op.ExpectDifference != "" && !anyDecision && rows[0].Verdict != scenario.VerdictDisagree {
		rows[0].Verdict = scenario.VerdictUnexpectedAgreement
		rows[0].Reason = op.ExpectDifference
		rows[0].Notes = append(rows[0].Notes, "the scenario expects a difference, and both enforcers decided alike")
	}
	return rows
}

// record returns the enforcer's j-th record and its text, or nil.
func (s side) record(j int) (*loader.AccessRecord, string) {
	if j >= len(s.Records) {
		return nil, ""
	}
	return &s.Records[j], s.Texts[j]
}

// outcomeFindings compares the operation's outcomes with each other and
// with what the scenario expects of each enforcer.
func outcomeFindings(op scenario.Op, ipe, bpf side) []finding {
	var found []finding
	if ipe.Result != bpf.Result {
		found = append(found, finding{decision, fmt.Sprintf("result: IPE %s, bpfipe %s", ipe.Result, bpf.Result)})
	}
	wantIPE, wantBpf := op.Expected()
	for _, c := range []struct {
		name, want string
		s          side
	}{{"IPE", wantIPE, ipe}, {"bpfipe", wantBpf, bpf}} {
		if c.want != "" && c.s.Result != c.want {
			found = append(found, finding{unexpected, fmt.Sprintf("%s: %s, the scenario expects %s", c.name, c.s.Result, c.want)})
		}
		if op.ExpectHooks != nil {
			if got := hooks(c.s.Records); !slices.Equal(got, op.ExpectHooks) {
				found = append(found, finding{unexpected, fmt.Sprintf("%s recorded hooks %v, the scenario expects %v", c.name, got, op.ExpectHooks)})
			}
		}
	}
	return found
}

func hooks(recs []loader.AccessRecord) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Hook)
	}
	return out
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

// role names a record's process relative to the operation: the runner
// itself, the process the operation forked, or another one. Process ids
// differ between the two runs; their roles must not.
func (s side) role(pid uint32) string {
	switch {
	case pid == uint32(os.Getpid()):
		return "runner"
	case s.ChildPID != 0 && pid == uint32(s.ChildPID):
		return "child"
	case s.ChildPID == 0 && int(pid) > s.PIDsBefore && int(pid) <= s.PIDsAfter:
		// An exec that failed: the process forked for it.
		return "child"
	}
	return "other"
}

// inode names the inode of the shmem file behind the operation's shared
// anonymous mapping, which is new in each run; other inodes are the same
// files in both runs and stay numbers.
func (s side) inode(ino uint64) string {
	if s.MapIno != 0 && ino == s.MapIno {
		return "<shared anonymous mapping>"
	}
	return strconv.FormatUint(ino, 10)
}

// recordDiff compares two records of the same position: every field of
// IPE's access record, then, when the fields agree, the text each
// enforcer printed, which also covers quoting and hex encoding. textA is
// the kernel's audit text, textB bpfipe's rendering. A record only one
// enforcer made is a difference in what was decided.
func recordDiff(a, b *loader.AccessRecord, textA, textB string, sa, sb side) []finding {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		return []finding{{decision, "record only from bpfipe: " + textB}}
	case b == nil:
		return []finding{{decision, "record only from IPE: " + textA}}
	}
	var found []finding
	field := func(kind findingKind, name string, x, y any) {
		if x != y {
			found = append(found, finding{kind, fmt.Sprintf("%s: IPE %v, bpfipe %v", name, x, y)})
		}
	}
	field(identity, "ipe_op", a.Op, b.Op)
	field(identity, "ipe_hook", a.Hook, b.Hook)
	field(identity, "enforcing", a.Enforcing, b.Enforcing)
	field(identity, "pid", sa.role(a.PID), sb.role(b.PID))
	field(identity, "comm", a.Comm, b.Comm)
	field(identity, "has_file", a.HasFile, b.HasFile)
	truncated := false
	if b.PathTruncated && cutPath(a.Path, b.Path) {
		truncated = true
		found = append(found, finding{documented, fmt.Sprintf("path: bpfipe prints the last %d of IPE's %d bytes (path_truncated)", len(b.Path), len(a.Path))})
	} else {
		field(identity, "path", a.Path, b.Path)
	}
	field(identity, "dev", a.Dev, b.Dev)
	field(identity, "ino", sa.inode(a.Ino), sb.inode(b.Ino))
	field(decision, "rule", a.Rule, b.Rule)
	field(decision, "action", a.Action, b.Action)
	if len(found) == 0 || (truncated && len(found) == 1) {
		if truncated {
			return found
		}
		ta, tb := normalized(textA, a, sa), normalized(textB, b, sb)
		if ta != tb {
			found = append(found, finding{identity, fmt.Sprintf("record text: IPE %s; bpfipe %s", ta, tb)})
		}
	}
	return found
}

// cutPath says bpfipe's path is IPE's cut as docs/ipe-differences.md
// (Records) describes: at most 255 bytes, built from the file up, so the
// last whole components of IPE's path.
func cutPath(ipe, bpfipe string) bool {
	return len(bpfipe) < len(ipe) && len(bpfipe) <= 255 &&
		strings.HasPrefix(bpfipe, "/") && strings.HasSuffix(ipe, bpfipe)
}

// normalized replaces the pid in a record's text with its role, and a
// shared anonymous mapping's inode with its role: the only parts of the
// text that differ between the runs by necessity.
func normalized(text string, rec *loader.AccessRecord, s side) string {
	text = strings.Replace(text, " pid="+strconv.FormatUint(uint64(rec.PID), 10)+" ", " pid=<"+s.role(rec.PID)+"> ", 1)
	return strings.Replace(text, " ino="+strconv.FormatUint(rec.Ino, 10)+" ", " ino="+s.inode(rec.Ino)+" ", 1)
}

// longHex is a digest in a rule; the table shortens it, the JSON report
// keeps it whole.
var longHex = regexp.MustCompile(`([0-9A-Fa-f]{8})[0-9A-Fa-f]{16,}`)

func shortRule(rule string) string { return longHex.ReplaceAllString(rule, "$1…") }

// shortText keeps a long operation from widening the whole table: its
// first and last 30 characters.
func shortText(s string) string {
	r := []rune(s)
	if len(r) <= 64 {
		return s
	}
	return string(r[:30]) + "…" + string(r[len(r)-30:])
}

// printTable writes the side-by-side table, then what each row found.
func printTable(w io.Writer, r scenario.Report) {
	fmt.Fprintf(w, "\n=== scenario %s: %d rows: %d agree, %d expected differences, %d disagreements, %d unexpected agreements, %d unexpected outcomes\n",
		r.Scenario, len(r.Rows), r.Agreements, r.Expected, r.Disagreements, r.UnexpectedAgreements, r.Unexpected)
	for _, line := range strings.Split(strings.TrimSpace(r.Policy), "\n") {
		fmt.Fprintf(w, "    | %s\n", line)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\toperation\tIPE\tbpfipe\thook\tIPE rule=\tbpfipe rule=\tverdict")
	for i, row := range r.Rows {
		first := i == 0 || r.Rows[i-1].Op != row.Op
		num, operation := "", ""
		if first {
			num, operation = fmt.Sprint(row.Op), row.Operation
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", num, shortText(operation), row.IPE, row.Bpfipe, row.Hook, shortRule(row.IPERule), shortRule(row.BpfRule), row.Verdict)
	}
	tw.Flush()
	reasonShown := map[int]bool{}
	for _, row := range r.Rows {
		if row.Reason != "" && !reasonShown[row.Op] {
			reasonShown[row.Op] = true
			fmt.Fprintf(w, "    op %d: %s: %s\n", row.Op, row.Verdict, row.Reason)
		}
		for _, n := range row.Notes {
			fmt.Fprintf(w, "    op %d %s: %s\n", row.Op, row.Hook, n)
		}
		for _, n := range row.Documented {
			fmt.Fprintf(w, "    op %d %s: documented difference: %s\n", row.Op, row.Hook, n)
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
