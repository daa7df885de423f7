// Package compare_test plays the comparison suite in a guest booting
// Debian's 6.12 kernel, whose in-tree IPE is the reference: every scenario
// runs under IPE and under bpfipe with the same signed policy, and any
// difference in results or records that docs/ipe-differences.md does not
// explain fails the test.
package compare_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/compare/scenario"
	"github.com/bpfipe/bpfipe/test/vmtest"
)

const vmTimeout = 15 * time.Minute

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

	seen := map[string]bool{}
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
		for _, row := range r.Rows {
			if row.Verdict == scenario.VerdictDisagree {
				t.Errorf("scenario %s op %d (%s) %s: %s", r.Scenario, row.Op, row.Operation, row.Hook, strings.Join(row.Notes, "; "))
			}
		}
		if len(r.Rows) < len(scenarioNamed(scenarios, r.Scenario).Ops) {
			t.Errorf("scenario %s: %d rows for %d operations", r.Scenario, len(r.Rows), len(scenarioNamed(scenarios, r.Scenario).Ops))
		}
	}
	for _, s := range scenarios {
		if !seen[s.Name] {
			t.Errorf("scenario %s: no report from the guest", s.Name)
		}
	}
	if status != 0 && !t.Failed() {
		t.Errorf("guest runner exited with status %d", status)
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
