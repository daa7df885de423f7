// Package compare_test plays the comparison suite in a guest booting
// Debian's 6.12 kernel, whose in-tree IPE is the reference: every scenario
// runs under IPE and under bpfipe with the same signed policy. A difference
// in outcomes or records fails the test unless the operation declares it
// as one bpfipe has by design (docs/ipe-differences.md), and so does a
// declared difference that does not happen. docs/compare.md has the rules.
package compare_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/compare/scenario"
	"github.com/bpfipe/bpfipe/test/vmtest"
)

const vmTimeout = 15 * time.Minute

// reportEnv names a file to write the guest's reports to, one JSON object
// per scenario with both records of every row, as CI artifacts.
const reportEnv = "BPFIPE_COMPARE_REPORT"

func TestCompareWithInTreeIPE(t *testing.T) {
	files, err := filepath.Glob("scenarios/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	g := newGuest(t)
	var scenarios []*scenario.Scenario
	argv := []string{guestRunner, "play", "--manifest", guestManifest}
	for _, f := range files {
		s, err := scenario.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		scenarios = append(scenarios, s)
		argv = append(argv, guestDir+"/scenarios/"+filepath.Base(f))
	}
	g.opts = append(g.opts, vmtest.WithAdd("scenarios", guestDir+"/scenarios"))
	g.addImages(scenarios)

	status, output := g.run(argv...)
	reports, table := prefixedLines(output, scenario.ReportPrefix)
	t.Logf("guest output:\n%s", strings.Join(table, "\n"))
	if path := os.Getenv(reportEnv); path != "" {
		if err := os.WriteFile(path, []byte(strings.Join(reports, "\n")+"\n"), 0o644); err != nil {
			t.Errorf("write reports: %v", err)
		}
	}

	seen := map[string]bool{}
	var total scenario.Report
	for _, line := range reports {
		var r scenario.Report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("read report %q: %v", line, err)
		}
		seen[r.Scenario] = true
		if r.Error != "" {
			t.Errorf("scenario %s could not be played: %s", r.Scenario, r.Error)
			continue
		}
		for _, problem := range reportProblems(scenarioNamed(scenarios, r.Scenario), &r) {
			t.Error(problem)
		}
		total.Rows = append(total.Rows, r.Rows...)
		total.Agreements += r.Agreements
		total.Expected += r.Expected
		total.Disagreements += r.Disagreements
		total.UnexpectedAgreements += r.UnexpectedAgreements
		total.Unexpected += r.Unexpected
	}
	for _, s := range scenarios {
		if !seen[s.Name] {
			t.Errorf("scenario %s: no report from the guest", s.Name)
		}
	}
	t.Logf("totals: %d scenarios, %d rows: %d agree, %d expected differences, %d disagreements, %d unexpected agreements, %d unexpected outcomes",
		len(seen), len(total.Rows), total.Agreements, total.Expected, total.Disagreements, total.UnexpectedAgreements, total.Unexpected)
	if status != 0 && !t.Failed() {
		t.Errorf("guest runner exited with status %d", status)
	}
}

// reportProblems lists every row the suite does not accept, and checks
// the guest's verdicts against the scenario itself: an expected difference
// only where the operation declares one, with its reason, and at least one
// on every such operation; and the report's counts against its rows.
func reportProblems(s *scenario.Scenario, r *scenario.Report) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(r.Rows) < len(s.Ops) {
		add("scenario %s: %d rows for %d operations", r.Scenario, len(r.Rows), len(s.Ops))
	}
	counts := map[string]int{}
	expectedRows := map[int]int{}
	for _, row := range r.Rows {
		counts[row.Verdict]++
		if row.Op < 1 || row.Op > len(s.Ops) {
			add("scenario %s: a row for operation %d, which it does not have", r.Scenario, row.Op)
			continue
		}
		op := s.Ops[row.Op-1]
		where := fmt.Sprintf("scenario %s op %d (%s) %s", r.Scenario, row.Op, row.Operation, row.Hook)
		switch row.Verdict {
		case scenario.VerdictAgree:
		case scenario.VerdictExpected:
			expectedRows[row.Op]++
			if op.ExpectDifference == "" || row.Reason != op.ExpectDifference {
				add("%s: reported as an expected difference (%q), but the scenario expects none there or says %q", where, row.Reason, op.ExpectDifference)
			}
		case scenario.VerdictUnexpectedAgreement:
			expectedRows[row.Op]++
			add("%s: the scenario expects a difference (%s), and IPE and bpfipe agree: %s", where, op.ExpectDifference, strings.Join(row.Notes, "; "))
		case scenario.VerdictUnexpected:
			add("%s: not what the scenario expects: %s", where, strings.Join(row.Notes, "; "))
		default:
			add("%s: %s: %s", where, row.Verdict, strings.Join(row.Notes, "; "))
		}
	}
	for i, op := range s.Ops {
		if op.ExpectDifference != "" && expectedRows[i+1] == 0 {
			add("scenario %s op %d (%s): expects a difference, and no row shows one", r.Scenario, i+1, op)
		}
	}
	for _, c := range []struct {
		verdict string
		n       int
	}{
		{scenario.VerdictAgree, r.Agreements},
		{scenario.VerdictExpected, r.Expected},
		{scenario.VerdictDisagree, r.Disagreements},
		{scenario.VerdictUnexpectedAgreement, r.UnexpectedAgreements},
		{scenario.VerdictUnexpected, r.Unexpected},
	} {
		if counts[c.verdict] != c.n {
			add("scenario %s: the report counts %d rows %s, its rows say %d", r.Scenario, c.n, c.verdict, counts[c.verdict])
		}
	}
	return problems
}

// The host does not take the guest's word: a report that calls a row an
// expected difference where the scenario declares none, or that shows none
// where it declares one, or whose counts do not match its rows, fails.
func TestReportProblems(t *testing.T) {
	s := &scenario.Scenario{Name: "s", Ops: []scenario.Op{
		{Op: "mmap", Prot: "rx"},
		{Op: "mmap", Path: "/tmp/x", Prot: "rx", ExpectDifference: "boot root"},
	}}
	good := func() *scenario.Report {
		return &scenario.Report{Scenario: "s", Agreements: 1, Expected: 1, Rows: []scenario.Row{
			{Op: 1, Verdict: scenario.VerdictAgree},
			{Op: 2, Verdict: scenario.VerdictExpected, Reason: "boot root"},
		}}
	}
	if p := reportProblems(s, good()); len(p) != 0 {
		t.Fatalf("a good report: %q", p)
	}
	for name, spoil := range map[string]func(r *scenario.Report){
		"expected where none is declared": func(r *scenario.Report) {
			r.Rows[0].Verdict, r.Rows[0].Reason = scenario.VerdictExpected, "boot root"
			r.Agreements, r.Expected = 0, 2
		},
		"no difference where one is declared": func(r *scenario.Report) {
			r.Rows[1].Verdict, r.Rows[1].Reason = scenario.VerdictAgree, ""
			r.Agreements, r.Expected = 2, 0
		},
		"another reason": func(r *scenario.Report) { r.Rows[1].Reason = "something else" },
		"unexpected agreement": func(r *scenario.Report) {
			r.Rows[1].Verdict = scenario.VerdictUnexpectedAgreement
			r.Expected, r.UnexpectedAgreements = 0, 1
		},
		"disagreement": func(r *scenario.Report) {
			r.Rows[0].Verdict = scenario.VerdictDisagree
			r.Agreements, r.Disagreements = 0, 1
		},
		"counts that hide a row": func(r *scenario.Report) { r.Rows[0].Verdict = scenario.VerdictDisagree },
		"a missing operation":    func(r *scenario.Report) { r.Rows = r.Rows[:1]; r.Expected = 0 },
	} {
		r := good()
		spoil(r)
		if p := reportProblems(s, r); len(p) == 0 {
			t.Errorf("%s: no problem found", name)
		}
	}
}

func scenarioNamed(all []*scenario.Scenario, name string) *scenario.Scenario {
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	return &scenario.Scenario{}
}
