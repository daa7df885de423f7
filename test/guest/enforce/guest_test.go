package enforce

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// Environment: guestEnv is set by the guest's init, dynamicProgramEnv by
// the host side (test/enforce), helperEnv by these tests for themselves.
const (
	guestEnv = "BPFIPE_GUEST"
	// dynamicProgramEnv names a dynamically linked program the host added
	// to the initramfs, with the loader and libc it needs.
	dynamicProgramEnv = "BPFIPE_ENFORCE_DYNAMIC_PROGRAM"
	// helperEnv makes the test binary act as one of the helpers of
	// helper_test.go instead of running tests.
	helperEnv = "BPFIPE_ENFORCE_HELPER"
)

const (
	// busybox is static and lives in the initramfs: boot_verified.
	busybox = "/bin/busybox"
	// dynamicLoader is the PT_INTERP of the host's dynamic programs.
	dynamicLoader = "/lib64/ld-linux-x86-64.so.2"
	// tmpfsID is the s_id of a tmpfs superblock, which IPE prints as dev=.
	tmpfsID = "tmpfs"
)

// Rendered the way IPE's audit_rule and audit_eval_ctx print rule="...".
const (
	ruleBootTrueAllow  = "op=EXECUTE boot_verified=TRUE action=ALLOW"
	ruleBootFalseAllow = "op=EXECUTE boot_verified=FALSE action=ALLOW"
	ruleBootFalseDeny  = "op=EXECUTE boot_verified=FALSE action=DENY"
	ruleAnyAllow       = "op=EXECUTE action=ALLOW"
	ruleAnyDeny        = "op=EXECUTE action=DENY"
	ruleOpDefaultAllow = "DEFAULT op=EXECUTE action=ALLOW"
	ruleOpDefaultDeny  = "DEFAULT op=EXECUTE action=DENY"
	ruleGlobalAllow    = "DEFAULT action=ALLOW"
	ruleGlobalDeny     = "DEFAULT action=DENY"
)

// Field values of access records, as IPE's audit names them.
const (
	hookBprm     = "BPRM_CHECK"
	hookMmap     = "MMAP"
	hookMprotect = "MPROTECT"
	actionAllow  = "ALLOW"
	actionDeny   = "DENY"
	opExecute    = "EXECUTE"
)

// bootVerifiedOnly is the policy the microsoft/ipe suite runs its mmap and
// mprotect cases under: only the boot filesystem may execute.
func bootVerifiedOnly(name, version string) string {
	return fmt.Sprintf("policy_name=%s policy_version=%s\nop=EXECUTE boot_verified=TRUE action=ALLOW\nDEFAULT action=DENY\n", name, version)
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv(guestEnv) != "1" {
		t.Skip("runs only inside a bpfipe-vm guest (test/enforce boots it)")
	}
}

// tmpCLI copies bpfipe to /tmp, where it is not boot_verified, for
// policies that deny the initramfs.
func tmpCLI(t *testing.T) guestcli.CLI {
	t.Helper()
	return guestcli.CLI{Path: guestcli.CopyToTmp(t, guestcli.Initramfs(t).Path, "bpfipe")}
}

// load starts pinned enforcement of text with the initramfs bpfipe and
// unloads it when t ends.
func load(t *testing.T, text string, flags ...string) {
	t.Helper()
	loadWith(t, guestcli.Initramfs(t), text, flags...)
}

// loadWith starts pinned enforcement of text with bpfipe binary c, which
// the tamper guard then lets reach the running enforcement, and unloads it
// when t ends.
func loadWith(t *testing.T, c guestcli.CLI, text string, flags ...string) {
	t.Helper()
	args := append([]string{"load", "--pin"}, flags...)
	args = append(args, guestcli.WritePolicy(t, text))
	res := c.Run(t, args...)
	if res.Code != 0 {
		t.Fatalf("bpfipe %s: %s\npolicy:\n%s", strings.Join(args, " "), res, text)
	}
	if strings.Contains(res.Stderr, "warning") {
		t.Logf("bpfipe load warned: %s", res.Stderr)
	}
	t.Cleanup(func() { unloadAfter(t) })
}

// unloadAfter takes enforcement down after a test, whatever its policy
// denies and whichever binary loaded it: the initramfs bpfipe, then /tmp
// copies, then the loader in this process, which needs no exec. Needing
// the last is a failure: the test left a policy that no bpfipe command
// could run under.
func unloadAfter(t *testing.T) {
	t.Helper()
	candidates := []string{guestcli.Initramfs(t).Path}
	if copies, _ := filepath.Glob("/tmp/*/*/bpfipe"); len(copies) > 0 {
		candidates = append(candidates, copies...)
	}
	var tried []string
	for _, path := range candidates {
		out, err := exec.Command(path, "unload").CombinedOutput()
		// The pins are gone only when unloaded: a binary the tamper guard
		// refuses may not even see them.
		if _, serr := os.Stat(loader.DefaultPinDir); errors.Is(serr, os.ErrNotExist) {
			// Later tests must not meet what is still being freed.
			if names, refused := waitNoLSMPrograms(t); len(names) > 0 || refused > 0 {
				t.Errorf("after unload: BPF LSM programs %q still loaded, and %d BPF programs refuse this process", names, refused)
			}
			return
		}
		tried = append(tried, fmt.Sprintf("%s: %v %s", path, err, out))
	}
	if _, err := loader.Unload(); err != nil && !errors.Is(err, loader.ErrNotLoaded) {
		t.Errorf("unload after the test: %v (bpfipe unload: %q)", err, tried)
		return
	}
	t.Errorf("no bpfipe command could unload after the test; unloaded in-process (%q)", tried)
}

// wantRecord is what a test expects of one access record; zero fields of
// the file are filled from the file itself.
type wantRecord struct {
	hook string
	path string // empty: no file
	// ino, when not 0, is the file's inode, for files path cannot stat
	// (a memfd); otherwise it comes from stat(path).
	ino uint64
	// dev is the superblock id wanted in dev=; empty means "tmpfs" for
	// /tmp and any id but tmpfs's for the initramfs.
	dev        string
	action     string
	rule       string
	enforcing  bool
	generation uint32 // 0 means 1, the generation of a fresh load
	pid        int    // 0: not checked
	comm       string // empty: this process's comm
}

// expectOne finds exactly one record of w.hook about w.path in records and
// checks every field IPE would print.
func expectOne(t *testing.T, records []guestcli.Record, w wantRecord) {
	t.Helper()
	matching := guestcli.About(records, w.hook, w.path)
	if len(matching) != 1 {
		t.Errorf("want one %s record about %q, got %d: %v", w.hook, w.path, len(matching), matching)
		return
	}
	checkRecord(t, matching[0], w)
}

func checkRecord(t *testing.T, r guestcli.Record, w wantRecord) {
	t.Helper()
	var problems []string
	check := func(field string, got, want any) {
		if got != want {
			problems = append(problems, fmt.Sprintf("%s = %v, want %v", field, got, want))
		}
	}
	check("ipe_op", r.Op, opExecute)
	check("ipe_hook", r.Hook, w.hook)
	check("enforcing", r.Enforcing, w.enforcing)
	check("action", r.Action, w.action)
	check("rule", r.Rule, w.rule)
	gen := w.generation
	if gen == 0 {
		gen = 1
	}
	check("generation", r.Generation, gen)
	comm := w.comm
	if comm == "" {
		comm = selfComm(t)
	}
	check("comm", r.Comm, comm)
	if w.pid != 0 {
		check("pid", r.PID, w.pid)
	}
	if w.path == "" {
		check("has_file", r.HasFile, false)
		check("path", r.Path, "")
		check("dev", r.Dev, "")
		check("ino", r.Ino, uint64(0))
	} else {
		check("has_file", r.HasFile, true)
		check("path", r.Path, w.path)
		ino := w.ino
		if ino == 0 {
			var st unix.Stat_t
			if err := unix.Stat(w.path, &st); err != nil {
				t.Fatalf("stat %s: %v", w.path, err)
			}
			ino = st.Ino
		}
		check("ino", r.Ino, ino)
		switch {
		case w.dev != "":
			check("dev", r.Dev, w.dev)
		case strings.HasPrefix(w.path, "/tmp/"):
			check("dev", r.Dev, tmpfsID)
		case r.Dev == "" || r.Dev == tmpfsID:
			problems = append(problems, fmt.Sprintf("dev = %q, want the initramfs superblock's id", r.Dev))
		}
	}
	if len(problems) > 0 {
		t.Errorf("record %v: %s", r, strings.Join(problems, "; "))
	}
}

// selfComm is this process's comm, which every record of an operation it
// or a child it forked (before exec) makes carries.
func selfComm(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatalf("read comm: %v", err)
	}
	return strings.TrimSuffix(string(raw), "\n")
}

// counts returns hook's counters from s, failing t when s has none.
func counts(t *testing.T, s *guestcli.Status, hook string) (allow, deny uint64) {
	t.Helper()
	allow, deny, ok := s.Counts(hook)
	if !ok {
		t.Fatalf("status has no counters for hook %s: %+v", hook, s.Hooks)
	}
	return allow, deny
}

// busyboxTrue runs busybox's true applet from the busybox binary at path.
func busyboxTrue(t *testing.T, path string) guestcli.Exec {
	t.Helper()
	return guestcli.Start(t, exec.Command(path, "true"))
}

// expectExec checks an exec's outcome: refused with want, or (want 0)
// started and exited 0.
func expectExec(t *testing.T, what string, got guestcli.Exec, want syscall.Errno) {
	t.Helper()
	switch {
	case want != 0 && got.Errno != want:
		t.Errorf("%s: exec gave %+v, want %s", what, got, unix.ErrnoName(want))
	case want == 0 && (got.Errno != 0 || got.Code != 0):
		t.Errorf("%s: exec gave errno %v exit %d, want it to run and exit 0", what, got.Errno, got.Code)
	}
}
