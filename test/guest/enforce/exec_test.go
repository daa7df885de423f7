package enforce

import (
	"os/exec"
	"syscall"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// probe is one exec a rule-kind case makes and the decision it expects.
type probe struct {
	// fromTmp execs a /tmp copy of busybox (not boot_verified) instead of
	// the initramfs one.
	fromTmp bool
	allow   bool
	rule    string
}

// TestExecRuleKinds execs a boot_verified binary and a copy that is not
// under policies that decide by each kind of rule IPE has without images,
// and checks the outcome and the BPRM_CHECK record of each exec, rule text
// included.
func TestExecRuleKinds(t *testing.T) {
	requireGuest(t)
	for _, tc := range []struct {
		name   string
		policy string
		// denyInitramfs: the policy denies the initramfs bpfipe, so a
		// /tmp copy loads it and reads the events.
		denyInitramfs bool
		probes        []probe
	}{
		{
			name: "boot_verified=TRUE",
			policy: `policy_name=bv_true policy_version=0.0.1
op=EXECUTE boot_verified=TRUE action=ALLOW
DEFAULT action=DENY`,
			probes: []probe{
				{fromTmp: false, allow: true, rule: ruleBootTrueAllow},
				{fromTmp: true, allow: false, rule: ruleGlobalDeny},
			},
		},
		{
			// Extra blanks, a tab and a comment: the record shows the rule
			// as IPE rebuilds it from the parsed policy, not as written.
			name: "boot_verified=FALSE deny",
			policy: "policy_name=bv_false policy_version=0.0.1\n" +
				"  op=EXECUTE   boot_verified=FALSE\taction=DENY # revoke what was not booted\n" +
				"DEFAULT action=ALLOW\n",
			probes: []probe{
				{fromTmp: true, allow: false, rule: ruleBootFalseDeny},
				{fromTmp: false, allow: true, rule: ruleGlobalAllow},
			},
		},
		{
			name: "boot_verified=FALSE allow",
			policy: `policy_name=bv_false_allow policy_version=0.0.1
op=EXECUTE boot_verified=FALSE action=ALLOW
DEFAULT op=EXECUTE action=DENY
DEFAULT action=ALLOW`,
			denyInitramfs: true,
			probes: []probe{
				{fromTmp: true, allow: true, rule: ruleBootFalseAllow},
				{fromTmp: false, allow: false, rule: ruleOpDefaultDeny},
			},
		},
		{
			name: "rule without properties denies",
			policy: `policy_name=no_props policy_version=0.0.1
op=EXECUTE boot_verified=TRUE action=ALLOW
op=EXECUTE action=DENY
DEFAULT action=ALLOW`,
			probes: []probe{
				{fromTmp: true, allow: false, rule: ruleAnyDeny},
				{fromTmp: false, allow: true, rule: ruleBootTrueAllow},
			},
		},
		{
			name: "rule without properties allows",
			policy: `policy_name=no_props_allow policy_version=0.0.1
op=EXECUTE action=ALLOW
DEFAULT action=DENY`,
			probes: []probe{
				{fromTmp: true, allow: true, rule: ruleAnyAllow},
				{fromTmp: false, allow: true, rule: ruleAnyAllow},
			},
		},
		{
			name: "per-op DEFAULT denies",
			policy: `policy_name=op_default policy_version=0.0.1
DEFAULT action=ALLOW
op=EXECUTE boot_verified=TRUE action=ALLOW
DEFAULT op=EXECUTE action=DENY`,
			probes: []probe{
				{fromTmp: true, allow: false, rule: ruleOpDefaultDeny},
				{fromTmp: false, allow: true, rule: ruleBootTrueAllow},
			},
		},
		{
			// The per-op DEFAULT overrides the global one.
			name: "per-op DEFAULT allows",
			policy: `policy_name=op_default_allow policy_version=0.0.1
DEFAULT op=EXECUTE action=ALLOW
DEFAULT action=DENY`,
			probes: []probe{
				{fromTmp: true, allow: true, rule: ruleOpDefaultAllow},
			},
		},
		{
			name: "global DEFAULT allows",
			policy: `policy_name=global_allow policy_version=0.0.1
DEFAULT action=ALLOW`,
			probes: []probe{
				{fromTmp: true, allow: true, rule: ruleGlobalAllow},
				{fromTmp: false, allow: true, rule: ruleGlobalAllow},
			},
		},
		{
			name: "DENY before ALLOW revokes",
			policy: `policy_name=revoke policy_version=0.0.1
op=EXECUTE boot_verified=FALSE action=DENY
op=EXECUTE action=ALLOW
DEFAULT action=DENY`,
			probes: []probe{
				{fromTmp: true, allow: false, rule: ruleBootFalseDeny},
				{fromTmp: false, allow: true, rule: ruleAnyAllow},
			},
		},
		{
			// The same rules the other way round: the first match wins.
			name: "ALLOW before DENY wins",
			policy: `policy_name=first_match policy_version=0.0.1
op=EXECUTE action=ALLOW
op=EXECUTE boot_verified=FALSE action=DENY
DEFAULT action=DENY`,
			probes: []probe{
				{fromTmp: true, allow: true, rule: ruleAnyAllow},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
			c := guestcli.Initramfs(t)
			if tc.denyInitramfs {
				c = tmpCLI(t)
			}
			loadWith(t, c, tc.policy, "--success-audit")
			var wants []wantRecord
			for _, p := range tc.probes {
				target := busybox
				if p.fromTmp {
					target = tmpBusybox
				}
				got := busyboxTrue(t, target)
				want := wantRecord{hook: hookBprm, path: target, rule: p.rule, enforcing: true, pid: got.PID}
				if p.allow {
					want.action = actionAllow
					expectExec(t, target, got, 0)
				} else {
					want.action = actionDeny
					expectExec(t, target, got, syscall.EACCES)
				}
				wants = append(wants, want)
			}
			records := c.Events(t)
			for _, w := range wants {
				expectOne(t, records, w)
			}
		})
	}
}

// TestPermissive loads in permissive mode, then switches enforcement on and
// off: a denial is reported every time, with enforcing=0 when it was not
// enforced, and only refused while enforcing.
func TestPermissive(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	load(t, bootVerifiedOnly("permissive", "0.0.1"), "--permissive")
	if s := c.MustStatus(t); s.Enforcing {
		t.Errorf("status after load --permissive says enforcing")
	}

	step := func(name string, enforcing bool) {
		t.Helper()
		got := busyboxTrue(t, tmpBusybox)
		if enforcing {
			expectExec(t, name, got, syscall.EACCES)
		} else {
			expectExec(t, name, got, 0)
		}
		want := wantRecord{hook: hookBprm, path: tmpBusybox, action: actionDeny, rule: ruleGlobalDeny, enforcing: enforcing, pid: got.PID}
		expectOne(t, c.Events(t), want)
		if s := c.MustStatus(t); s.Enforcing != enforcing {
			t.Errorf("%s: status says enforcing=%t", name, s.Enforcing)
		}
	}
	step("loaded --permissive", false)

	// Anonymous executable memory is evaluated with no file and, while
	// permissive, reported but allowed.
	mem, err := mmapAnon(protX, false)
	if err != nil {
		t.Errorf("permissive: anonymous PROT_EXEC mapping: %v, want it allowed", err)
	} else {
		unmap(t, mem)
	}
	expectOne(t, c.Events(t), wantRecord{hook: hookMmap, action: actionDeny, rule: ruleGlobalDeny, enforcing: false})

	c.Must(t, "enforce", "on")
	step("after enforce on", true)
	c.Must(t, "enforce", "off")
	step("after enforce off", false)
}

// TestSuccessAudit checks that ALLOW decisions are reported only while
// success auditing is on.
func TestSuccessAudit(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	load(t, bootVerifiedOnly("success_audit", "0.0.1"))

	got := busyboxTrue(t, busybox)
	expectExec(t, "success audit off at load", got, 0)
	if recs := guestcli.About(c.Events(t), hookBprm, busybox); len(recs) != 0 {
		t.Errorf("success audit off: allowed exec was reported: %v", recs)
	}

	c.Must(t, "success-audit", "on")
	if s := c.MustStatus(t); !s.SuccessAudit {
		t.Errorf("status after success-audit on says it is off")
	}
	cmd := exec.Command(busybox, "true")
	got = guestcli.Start(t, cmd)
	expectExec(t, "success audit on", got, 0)
	expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: busybox, action: actionAllow, rule: ruleBootTrueAllow, enforcing: true, pid: got.PID})

	c.Must(t, "success-audit", "off")
	got = busyboxTrue(t, busybox)
	expectExec(t, "success audit switched off", got, 0)
	if recs := guestcli.About(c.Events(t), hookBprm, busybox); len(recs) != 0 {
		t.Errorf("success audit switched off: allowed exec was reported: %v", recs)
	}
}
