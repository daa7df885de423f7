package enforce

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// lsmPrograms names the BPF LSM programs loaded in the kernel, whoever
// loaded them, and counts the programs this process may not open: while
// bpfipe enforces, its tamper guard refuses every process but bpfipe.
func lsmPrograms(t *testing.T) (names []string, refused int) {
	t.Helper()
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			return names, refused
		}
		if err != nil {
			t.Fatalf("list BPF programs: %v", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT):
			continue // freed meanwhile
		case errors.Is(err, unix.EPERM):
			refused++
			continue
		case err != nil:
			t.Fatalf("open BPF program %d: %v", id, err)
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			t.Fatalf("read BPF program %d: %v", id, err)
		}
		if info.Type == ebpf.LSM {
			names = append(names, info.Name)
		}
	}
}

// waitNoLSMPrograms waits briefly for programs being freed: the kernel
// may release a detached program after a grace period. It returns what is
// left after the wait.
func waitNoLSMPrograms(t *testing.T) (names []string, refused int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, refused = lsmPrograms(t)
		if len(names) == 0 && refused == 0 || time.Now().After(deadline) {
			return names, refused
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func expectNoLSMPrograms(t *testing.T, when string) {
	t.Helper()
	if names, refused := waitNoLSMPrograms(t); len(names) > 0 || refused > 0 {
		t.Errorf("%s: BPF LSM programs %q still loaded, and %d BPF programs refuse this process", when, names, refused)
	}
}

// expectNotLoaded checks that bpfipe finds nothing to act on and that
// nothing of it is pinned or loaded.
func expectNotLoaded(t *testing.T, c guestcli.CLI, when string) {
	t.Helper()
	s, res := c.Status(t)
	if res.Code != guestcli.ExitNotLoaded || s.Loaded {
		t.Errorf("%s: bpfipe status: %s, want exit %d and loaded=false", when, res, guestcli.ExitNotLoaded)
	}
	if entries, err := os.ReadDir("/sys/fs/bpf"); err != nil {
		t.Errorf("%s: read /sys/fs/bpf: %v", when, err)
	} else if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s: /sys/fs/bpf holds %q, want nothing", when, names)
	}
	expectNoLSMPrograms(t, when)
}

// TestPinnedSurvivesLoaderExit loads with --pin, which returns: with the
// loader gone, execs are still decided, status names the policy and no
// foreground loader, and unload restores unrestricted exec and leaves
// nothing pinned or loaded.
func TestPinnedSurvivesLoaderExit(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	expectNotLoaded(t, c, "before load")
	load(t, bootVerifiedOnly("pinned", "1.2.3"))

	// load --pin has returned, so the loader has exited.
	s := c.MustStatus(t)
	if s.Policy != "pinned" || s.Version != "1.2.3" || s.Generation != 1 || !s.Enforcing || s.Foreground != 0 || s.Scope != "system" {
		t.Errorf("status %+v, want policy pinned 1.2.3, generation 1, enforcing, no foreground loader, system-wide", s)
	}
	expectExec(t, "pinned, no loader process", busyboxTrue(t, tmpBusybox), syscall.EACCES)
	expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: tmpBusybox, action: actionDeny, rule: ruleGlobalDeny, enforcing: true})

	c.Must(t, "unload")
	// Nothing of bpfipe may outlive a finished unload, its tamper guard
	// included: checked at once, before any grace period could pass.
	if _, refused := lsmPrograms(t); refused > 0 {
		t.Errorf("right after bpfipe unload returned, %d BPF programs refuse this process: the tamper guard outlived the unload", refused)
	}
	expectExec(t, "after unload", busyboxTrue(t, tmpBusybox), 0)
	mem, err := mmapAnon(protR|protX, false)
	if err != nil {
		t.Errorf("anonymous RX mapping after unload: %v", err)
	} else {
		unmap(t, mem)
	}
	expectNotLoaded(t, c, "after unload")
	if res := c.Run(t, "events", "--json"); res.Code != guestcli.ExitNotLoaded {
		t.Errorf("bpfipe events after unload: %s, want exit %d", res, guestcli.ExitNotLoaded)
	}
}

// TestStatusCounters makes a known number of decisions and checks that
// the per-hook counters grew by exactly that many.
func TestStatusCounters(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	load(t, bootVerifiedOnly("counters", "0.0.1"))

	before := c.MustStatus(t)
	const denied, allowed, deniedMmaps = 3, 2, 2
	for range denied {
		expectExec(t, "tmp copy", busyboxTrue(t, tmpBusybox), syscall.EACCES)
	}
	for range allowed {
		expectExec(t, "initramfs busybox", busyboxTrue(t, busybox), 0)
	}
	for range deniedMmaps {
		if mem, err := mmapAnon(protR|protX, false); err == nil {
			unmap(t, mem)
			t.Errorf("anonymous RX mapping was allowed")
		}
	}
	mem, err := mmapAnon(protR|protW, false)
	if err != nil {
		t.Fatalf("anonymous RW mapping: %v", err)
	}
	if err := unix.Mprotect(mem, protR|protW|protX); err == nil {
		t.Errorf("mprotect of anonymous memory to RWX was allowed")
	}
	unmap(t, mem)
	after := c.MustStatus(t)

	if after.Policy != "counters" || after.Version != "0.0.1" {
		t.Errorf("status names policy %q version %q, want counters 0.0.1", after.Policy, after.Version)
	}
	delta := func(hook string) (allow, deny uint64) {
		a0, d0 := counts(t, before, hook)
		a1, d1 := counts(t, after, hook)
		return a1 - a0, d1 - d0
	}
	// The exec of the second bpfipe status is an allowed BPRM_CHECK too.
	if allow, deny := delta(hookBprm); allow != allowed+1 || deny != denied {
		t.Errorf("BPRM_CHECK counters grew by allow=%d deny=%d, want allow=%d deny=%d", allow, deny, allowed+1, denied)
	}
	if _, deny := delta(hookMmap); deny != deniedMmaps {
		t.Errorf("MMAP deny counter grew by %d, want %d", deny, deniedMmaps)
	}
	if allow, deny := delta(hookMprotect); allow != 0 || deny != 1 {
		t.Errorf("MPROTECT counters grew by allow=%d deny=%d, want allow=0 deny=1", allow, deny)
	}
	if after.EventsDropped != 0 || after.ScratchBusy != 0 || after.PathsLost != 0 {
		t.Errorf("events_dropped=%d scratch_busy=%d paths_lost=%d, want 0", after.EventsDropped, after.ScratchBusy, after.PathsLost)
	}
}

// TestUpdateRules checks IPE's rules for an update: the same name (else
// EINVAL) and a greater version (else ESTALE). A refused update changes
// nothing; an accepted one takes effect at once.
func TestUpdateRules(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	load(t, bootVerifiedOnly("upd", "1.0.0"))

	for _, tc := range []struct {
		name, policy, errno string
	}{
		{"other name", bootVerifiedOnly("other", "2.0.0"), "EINVAL"},
		{"same version", "policy_name=upd policy_version=1.0.0\nDEFAULT action=ALLOW\n", "ESTALE"},
		{"older version", "policy_name=upd policy_version=0.9.9\nDEFAULT action=ALLOW\n", "ESTALE"},
		// Versions compare as one number, major first.
		{"greater minor, smaller major", "policy_name=upd policy_version=0.65535.65535\nDEFAULT action=ALLOW\n", "ESTALE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.Run(t, "update", guestcli.WritePolicy(t, tc.policy))
			if res.Code == 0 || !strings.Contains(res.Stderr, tc.errno) {
				t.Errorf("update: %s, want a failure naming %s", res, tc.errno)
			}
			if s := c.MustStatus(t); s.Policy != "upd" || s.Version != "1.0.0" || s.Generation != 1 {
				t.Errorf("after a refused update: policy %q version %q generation %d, want upd 1.0.0 generation 1", s.Policy, s.Version, s.Generation)
			}
			expectExec(t, "after a refused update", busyboxTrue(t, tmpBusybox), syscall.EACCES)
			expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: tmpBusybox, action: actionDeny, rule: ruleGlobalDeny, enforcing: true})
		})
	}

	c.Must(t, "update", guestcli.WritePolicy(t, "policy_name=upd policy_version=1.0.1\nDEFAULT action=ALLOW\n"))
	if s := c.MustStatus(t); s.Policy != "upd" || s.Version != "1.0.1" || s.Generation != 2 {
		t.Errorf("after the update: policy %q version %q generation %d, want upd 1.0.1 generation 2", s.Policy, s.Version, s.Generation)
	}
	expectExec(t, "after the update to DEFAULT action=ALLOW", busyboxTrue(t, tmpBusybox), 0)
	if recs := c.Events(t); len(recs) != 0 {
		t.Errorf("after the update to DEFAULT action=ALLOW: denials %v", recs)
	}
}

// loopPolicy is generation gen of the exec-loop test's policy: odd
// generations allow a /tmp script, even ones deny it. Both allow the
// initramfs, where the script's interpreter and bpfipe live.
func loopPolicy(gen int) (text, rule, action string) {
	action, rule = actionAllow, ruleBootFalseAllow
	if gen%2 == 0 {
		action, rule = actionDeny, ruleBootFalseDeny
	}
	text = fmt.Sprintf("policy_name=loop policy_version=0.0.%d\nop=EXECUTE boot_verified=FALSE action=%s\nDEFAULT action=ALLOW\n", gen, action)
	return text, rule, action
}

// execOutcome tallies the exec loop's results.
type execOutcome struct {
	allowed, denied int
	others          []string
}

// TestUpdateUnderExecLoop swaps between two policies that decide a /tmp
// script differently while another goroutine execs it in a loop. Every
// exec must end as one of the two decisions, each BPRM_CHECK record must
// match the policy of the generation it names, and the counters must add
// up to the execs made.
//
// The target is a script with an initramfs interpreter so that only one
// decision per exec depends on the policy: a binary in /tmp would also be
// mapped, and an update between its BPRM_CHECK and its MMAP could kill it
// after the point of no return, which is IPE's behaviour too but no
// "decision of one policy".
func TestUpdateUnderExecLoop(t *testing.T) {
	requireGuest(t)
	const (
		updates = 6
		// perGeneration execs at least are made under each policy before
		// the next update, so every generation decides some.
		perGeneration = 10
		// maxExecs only bounds a stuck run: the loop stops once the last
		// generation has seen its execs. It stays under the ring buffer's
		// capacity (about 3,000 events), drained after every update.
		maxExecs = 3000
	)
	c := guestcli.Initramfs(t)
	script := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(script, []byte("#!"+busybox+" true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text, _, _ := loopPolicy(1)
	load(t, text, "--success-audit")
	before := c.MustStatus(t)

	done := make(chan struct{})
	outcome := make(chan execOutcome, 1)
	var execs atomic.Int64
	var finished atomic.Bool
	go func() {
		var o execOutcome
		defer func() {
			finished.Store(true)
			outcome <- o
		}()
		for range maxExecs {
			select {
			case <-done:
				return
			default:
			}
			err := exec.Command(script).Run()
			switch {
			case err == nil:
				o.allowed++
			case errors.Is(err, syscall.EACCES):
				o.denied++
			default:
				o.others = append(o.others, err.Error())
			}
			execs.Add(1)
		}
	}()
	// waitForExecs lets the loop run perGeneration execs under the policy
	// just installed; it only returns early if the loop has ended.
	waitForExecs := func() {
		target := execs.Load() + perGeneration
		for execs.Load() < target && !finished.Load() {
			time.Sleep(10 * time.Millisecond)
		}
	}

	var records []guestcli.Record
	bpfipeRuns := 0 // execs of bpfipe after before was read, all allowed
	for gen := 2; gen <= updates+1; gen++ {
		waitForExecs()
		text, _, _ := loopPolicy(gen)
		res := c.Run(t, "update", guestcli.WritePolicy(t, text))
		bpfipeRuns++
		if res.Code != 0 {
			close(done)
			<-outcome
			t.Fatalf("update to generation %d: %s", gen, res)
		}
		// Drain after every update: a reader renders the rules of the
		// active and the previous policy only.
		records = append(records, c.Events(t)...)
		bpfipeRuns++
	}
	waitForExecs()
	close(done)
	o := <-outcome
	records = append(records, c.Events(t)...)
	bpfipeRuns++
	after := c.MustStatus(t)
	bpfipeRuns++

	t.Logf("%d execs allowed, %d denied across %d generations", o.allowed, o.denied, updates+1)
	if len(o.others) > 0 {
		t.Errorf("%d execs ended neither allowed nor with EACCES: %q", len(o.others), o.others)
	}
	if o.allowed == 0 || o.denied == 0 {
		t.Errorf("the loop saw %d allowed and %d denied execs; want both policies to decide some", o.allowed, o.denied)
	}
	if after.Version != fmt.Sprintf("0.0.%d", updates+1) || after.Generation != updates+1 {
		t.Errorf("status after the updates: version %q generation %d, want 0.0.%d generation %d", after.Version, after.Generation, updates+1, updates+1)
	}

	scriptRecords := guestcli.About(records, hookBprm, script)
	var allowRecords, denyRecords int
	perGen := map[uint32]int{}
	for _, r := range scriptRecords {
		perGen[r.Generation]++
		if r.Generation < 1 || r.Generation > updates+1 {
			t.Errorf("record %v names generation %d, which never existed", r, r.Generation)
			continue
		}
		_, rule, action := loopPolicy(int(r.Generation))
		checkRecord(t, r, wantRecord{hook: hookBprm, path: script, action: action, rule: rule, enforcing: true, generation: r.Generation})
		if r.Action == actionAllow {
			allowRecords++
		} else {
			denyRecords++
		}
	}
	t.Logf("execs decided per generation: %v", perGen)
	for gen := uint32(1); gen <= updates+1; gen++ {
		if perGen[gen] == 0 {
			t.Errorf("no exec was decided by generation %d (per generation: %v)", gen, perGen)
		}
	}
	if allowRecords != o.allowed || denyRecords != o.denied {
		t.Errorf("records of the script: %d ALLOW, %d DENY; execs: %d allowed, %d denied", allowRecords, denyRecords, o.allowed, o.denied)
	}
	interpreter := guestcli.About(records, hookBprm, busybox)
	if len(interpreter) != o.allowed {
		t.Errorf("%d records of the interpreter, want one per allowed exec (%d)", len(interpreter), o.allowed)
	}
	for _, r := range interpreter {
		checkRecord(t, r, wantRecord{hook: hookBprm, path: busybox, action: actionAllow, rule: ruleGlobalAllow, enforcing: true, generation: r.Generation})
	}

	a0, d0 := counts(t, before, hookBprm)
	a1, d1 := counts(t, after, hookBprm)
	// An allowed exec is two allowed checks: the script, then its
	// interpreter.
	if wantAllow := uint64(2*o.allowed + bpfipeRuns); a1-a0 != wantAllow || d1-d0 != uint64(o.denied) {
		t.Errorf("BPRM_CHECK counters grew by allow=%d deny=%d, want allow=%d (2×%d execs + %d bpfipe runs) deny=%d",
			a1-a0, d1-d0, wantAllow, o.allowed, bpfipeRuns, o.denied)
	}
	if after.EventsDropped != 0 {
		t.Errorf("%d events were dropped", after.EventsDropped)
	}
}

// TestCgroupScope scopes enforcement to one cgroup: a process started in
// it is decided, one outside is not evaluated at all.
func TestCgroupScope(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	const cgroupName = "bpfipe-enforce-test"
	cgroup := filepath.Join("/sys/fs/cgroup", cgroupName)
	if err := os.Mkdir(cgroup, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	// Registered before load, so it runs after the unload.
	t.Cleanup(func() {
		if err := os.Remove(cgroup); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	load(t, bootVerifiedOnly("cgroup", "0.0.1"), "--success-audit", "--cgroup", cgroup)
	if s := c.MustStatus(t); s.Scope != cgroup {
		t.Errorf("status scope %q, want %q", s.Scope, cgroup)
	}
	dir, err := os.Open(cgroup)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	defer dir.Close()
	inCgroup := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
		return cmd
	}

	expectExec(t, "tmp copy in the cgroup", guestcli.Start(t, inCgroup(tmpBusybox, "true")), syscall.EACCES)
	cat := inCgroup(busybox, "cat", "/proc/self/cgroup")
	var out bytes.Buffer
	cat.Stdout = &out
	inside := guestcli.Start(t, cat)
	expectExec(t, "initramfs busybox in the cgroup", inside, 0)
	if want := "0::/" + cgroupName + "\n"; out.String() != want {
		t.Errorf("the process started in the cgroup is in %q, want %q", out.String(), want)
	}
	expectExec(t, "tmp copy outside the cgroup", busyboxTrue(t, tmpBusybox), 0)

	records := c.Events(t)
	expectOne(t, records, wantRecord{hook: hookBprm, path: tmpBusybox, action: actionDeny, rule: ruleGlobalDeny, enforcing: true})
	expectOne(t, records, wantRecord{hook: hookBprm, path: busybox, action: actionAllow, rule: ruleBootTrueAllow, enforcing: true, pid: inside.PID})
	// bpfipe runs outside the cgroup: with success auditing on, a decision
	// about it would be reported.
	if recs := guestcli.About(records, hookBprm, c.Path); len(recs) != 0 {
		t.Errorf("execs outside the cgroup were evaluated: %v", recs)
	}
}

// TestBadInputLeavesNoState loads invalid policies: each fails with its
// parse error and leaves nothing loaded.
func TestBadInputLeavesNoState(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	for _, tc := range []struct {
		name, policy, errno string
	}{
		{"no DEFAULT", "policy_name=bad policy_version=0.0.1\nop=EXECUTE action=DENY\n", "EBADMSG"},
		{"version part too large", "policy_name=bad policy_version=70000.0.0\nDEFAULT action=DENY\n", "ERANGE"},
		{"odd-length digest", "policy_name=bad policy_version=0.0.1\nop=EXECUTE fsverity_digest=sha256:abc action=DENY\nDEFAULT action=DENY\n", "EINVAL"},
		{"unknown property", "policy_name=bad policy_version=0.0.1\nop=EXECUTE trusted=TRUE action=DENY\nDEFAULT action=DENY\n", "EBADMSG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := guestcli.WritePolicy(t, tc.policy)
			res := c.Run(t, "load", "--pin", file)
			if res.Code == 0 {
				t.Cleanup(func() { unloadAfter(t) })
				t.Fatalf("load of an invalid policy succeeded: %s", res)
			}
			if !strings.Contains(res.Stderr, tc.errno) || !strings.Contains(res.Stderr, file) {
				t.Errorf("load: %s, want the parse error naming %s and the file", res, tc.errno)
			}
			expectNotLoaded(t, c, "after a failed load")
			expectExec(t, "after a failed load", busyboxTrue(t, tmpBusybox), 0)
		})
	}
	if res := c.Run(t, "update", guestcli.WritePolicy(t, bootVerifiedOnly("nothing", "0.0.1"))); res.Code != guestcli.ExitNotLoaded {
		t.Errorf("update with nothing loaded: %s, want exit %d", res, guestcli.ExitNotLoaded)
	}
}

// TestLoadWhileLoaded starts a second load: it fails and the first
// policy, with its mode, stays in force.
func TestLoadWhileLoaded(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	tmpBusybox := guestcli.CopyToTmp(t, busybox, "busybox")
	load(t, bootVerifiedOnly("first", "0.0.1"))

	res := c.Run(t, "load", "--pin", "--permissive", guestcli.WritePolicy(t, "policy_name=second policy_version=0.0.1\nDEFAULT action=ALLOW\n"))
	if res.Code != guestcli.ExitAlreadyLoaded || !strings.Contains(res.Stderr, "already loaded") {
		t.Errorf("second load: %s, want exit %d saying it is already loaded", res, guestcli.ExitAlreadyLoaded)
	}
	if s := c.MustStatus(t); s.Policy != "first" || s.Generation != 1 || !s.Enforcing {
		t.Errorf("after the second load: policy %q generation %d enforcing %t, want first, 1, enforcing", s.Policy, s.Generation, s.Enforcing)
	}
	expectExec(t, "after the second load", busyboxTrue(t, tmpBusybox), syscall.EACCES)
	expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: tmpBusybox, action: actionDeny, rule: ruleGlobalDeny, enforcing: true})
}
