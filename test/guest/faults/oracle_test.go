package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

const busybox = guestcli.Busybox

// oracle knows the policy of every generation loaded in a test and
// decides records with the reference evaluator.
type oracle struct {
	byGeneration map[uint32]*policy.Policy
}

func newOracle() *oracle { return &oracle{byGeneration: map[uint32]*policy.Policy{}} }

func (o *oracle) add(t testing.TB, generation uint32, text string) {
	t.Helper()
	p, err := policy.Parse("policy", []byte(text))
	if err != nil {
		t.Fatalf("parse the policy of generation %d: %v\n%s", generation, err, text)
	}
	o.byGeneration[generation] = p
}

// subject is what a record says of its file: only boot_verified matters
// to the policies here, and only files under /tmp are off the boot
// filesystem.
func subject(r guestcli.Record) policy.Subject {
	return policy.Subject{HasFile: r.HasFile, BootVerified: r.HasFile && !offBoot(r.Path)}
}

func offBoot(path string) bool { return strings.HasPrefix(path, "/tmp/") }

// check returns what is wrong with r: a generation no load or update
// made, or an action or rule other than its generation's policy decides.
func (o *oracle) check(r guestcli.Record) error {
	p, ok := o.byGeneration[r.Generation]
	if !ok {
		return fmt.Errorf("record %v names generation %d, which was never installed", r, r.Generation)
	}
	if r.Op != "EXECUTE" {
		return fmt.Errorf("record %v: op %s, want EXECUTE", r, r.Op)
	}
	if r.HasFile && offBoot(r.Path) != (r.Dev == "tmpfs") {
		return fmt.Errorf("record %v: path and device disagree about where the file lives", r)
	}
	d := policy.Evaluate(p, policy.OpExecute, subject(r), policy.Observability{})
	if r.Action != d.Action.String() {
		return fmt.Errorf("record %v: action %s, but generation %d's policy decides %s", r, r.Action, r.Generation, d.Action)
	}
	// "?" is a rule bpfipe events could not render because the policy of
	// that generation had already been replaced twice when it read it.
	if r.Rule != "?" && r.Rule != d.RuleString() {
		return fmt.Errorf("record %v: rule %q, but generation %d's policy decides by %q", r, r.Rule, r.Generation, d.RuleString())
	}
	return nil
}

// actionOf is the action generation's policy takes on subj.
func (o *oracle) actionOf(t testing.TB, generation uint32, subj policy.Subject) string {
	t.Helper()
	p, ok := o.byGeneration[generation]
	if !ok {
		t.Fatalf("no policy for generation %d", generation)
	}
	return policy.Evaluate(p, policy.OpExecute, subj, policy.Observability{}).Action.String()
}

// togglePolicy is version v of the policy these tests swap between: it
// decides everything off the boot filesystem, anonymous memory included,
// by one rule whose action alternates with the version, and allows the
// boot filesystem, where bpfipe and busybox live.
func togglePolicy(name string, v int) string {
	action := "ALLOW"
	if v%2 == 1 {
		action = "DENY"
	}
	return fmt.Sprintf("policy_name=%s policy_version=0.0.%d\nop=EXECUTE boot_verified=FALSE action=%s\nDEFAULT action=ALLOW\n", name, v, action)
}

// tmpScript writes an executable script under /tmp whose interpreter is
// the initramfs busybox: its exec is decided once by the policy (the
// script), and its interpreter is trusted by every policy here.
func tmpScript(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(path, []byte("#!"+busybox+" true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
