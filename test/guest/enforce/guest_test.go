package enforce

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader"
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
	// exitAlreadyLoaded and exitNotLoaded are bpfipe's exit statuses for a
	// load that finds enforcement running and a command that finds none.
	exitAlreadyLoaded = 6
	exitNotLoaded     = 5
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

// cli is one bpfipe binary: the one in the initramfs, or a copy in /tmp
// for policies that deny the initramfs.
type cli struct{ path string }

func initramfsCLI(t *testing.T) cli {
	t.Helper()
	p, err := exec.LookPath("bpfipe")
	if err != nil {
		t.Fatalf("find bpfipe: %v", err)
	}
	return cli{p}
}

// tmpCLI copies bpfipe to /tmp, where it is not boot_verified.
func tmpCLI(t *testing.T) cli {
	t.Helper()
	return cli{copyToTmp(t, initramfsCLI(t).path, "bpfipe")}
}

type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// run runs bpfipe with args; it fails t only if bpfipe cannot be run at all.
func (c cli) run(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("run %s %s: %v (stderr %q)", c.path, strings.Join(args, " "), err, stderr.String())
	}
	return res
}

// must runs bpfipe and fails t unless it exits 0.
func (c cli) must(t *testing.T, args ...string) cliResult {
	t.Helper()
	res := c.run(t, args...)
	if res.code != 0 {
		t.Fatalf("bpfipe %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// writePolicy writes text to a file of its own.
func writePolicy(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatalf("write policy: %v", err)
	}
	return path
}

// load starts pinned enforcement of text with the initramfs bpfipe and
// unloads it when t ends.
func load(t *testing.T, text string, flags ...string) {
	t.Helper()
	initramfsCLI(t).load(t, text, flags...)
}

// load starts pinned enforcement of text with this bpfipe binary, which
// the tamper guard then lets reach the running enforcement, and unloads it
// when t ends.
func (c cli) load(t *testing.T, text string, flags ...string) {
	t.Helper()
	args := append([]string{"load", "--pin"}, flags...)
	args = append(args, writePolicy(t, text))
	res := c.run(t, args...)
	if res.code != 0 {
		t.Fatalf("bpfipe %s: %s\npolicy:\n%s", strings.Join(args, " "), res, text)
	}
	if strings.Contains(res.stderr, "warning") {
		t.Logf("bpfipe load warned: %s", res.stderr)
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
	candidates := []string{initramfsCLI(t).path}
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

// accessRecord is one line of bpfipe events --json: IPE's
// AUDIT_IPE_ACCESS fields plus the decision and the generation of the
// policy that made it.
type accessRecord struct {
	Type       string `json:"type"`
	Op         string `json:"ipe_op"`
	Hook       string `json:"ipe_hook"`
	Enforcing  bool   `json:"enforcing"`
	PID        int    `json:"pid"`
	Comm       string `json:"comm"`
	HasFile    bool   `json:"has_file"`
	Path       string `json:"path"`
	Dev        string `json:"dev"`
	Ino        uint64 `json:"ino"`
	Rule       string `json:"rule"`
	Action     string `json:"action"`
	Generation uint32 `json:"generation"`
}

func (r accessRecord) String() string {
	return fmt.Sprintf("{%s %s enforcing=%t pid=%d comm=%q has_file=%t path=%q dev=%q ino=%d rule=%q %s gen=%d}",
		r.Op, r.Hook, r.Enforcing, r.PID, r.Comm, r.HasFile, r.Path, r.Dev, r.Ino, r.Rule, r.Action, r.Generation)
}

// events drains the decisions reported since the last call.
func (c cli) events(t *testing.T) []accessRecord {
	t.Helper()
	res := c.must(t, "events", "--json")
	var records []accessRecord
	scanner := bufio.NewScanner(strings.NewReader(res.stdout))
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r accessRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("decode event %q: %v", line, err)
		}
		if r.Type != "IPE_ACCESS" {
			t.Fatalf("event %q has type %q, want IPE_ACCESS", line, r.Type)
		}
		records = append(records, r)
	}
	return records
}

// about keeps the records of hook for the file at path (any file when
// path is empty and has_file is false).
func about(records []accessRecord, hook, path string) []accessRecord {
	var out []accessRecord
	for _, r := range records {
		if r.Hook != hook {
			continue
		}
		if path == "" && !r.HasFile || path != "" && r.HasFile && r.Path == path {
			out = append(out, r)
		}
	}
	return out
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
func expectOne(t *testing.T, records []accessRecord, w wantRecord) {
	t.Helper()
	matching := about(records, w.hook, w.path)
	if len(matching) != 1 {
		t.Errorf("want one %s record about %q, got %d: %v", w.hook, w.path, len(matching), matching)
		return
	}
	checkRecord(t, matching[0], w)
}

func checkRecord(t *testing.T, r accessRecord, w wantRecord) {
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

// status is bpfipe status --json.
type status struct {
	Loaded       bool   `json:"loaded"`
	Policy       string `json:"policy_name"`
	Version      string `json:"policy_version"`
	Generation   uint32 `json:"generation"`
	Enforcing    bool   `json:"enforcing"`
	SuccessAudit bool   `json:"success_audit"`
	Scope        string `json:"scope"`
	Foreground   int    `json:"foreground_pid"`
	Hooks        []struct {
		Hook  string `json:"hook"`
		Allow uint64 `json:"allow"`
		Deny  uint64 `json:"deny"`
	} `json:"hooks"`
	EventsDropped uint64 `json:"events_dropped"`
	ScratchBusy   uint64 `json:"scratch_busy"`
}

func (s *status) counts(t *testing.T, hook string) (allow, deny uint64) {
	t.Helper()
	for _, h := range s.Hooks {
		if h.Hook == hook {
			return h.Allow, h.Deny
		}
	}
	t.Fatalf("status has no counters for hook %s: %+v", hook, s.Hooks)
	return 0, 0
}

// status reads bpfipe status --json; a status of nothing loaded comes back
// with Loaded false and exit status exitNotLoaded.
func (c cli) status(t *testing.T) (*status, cliResult) {
	t.Helper()
	res := c.run(t, "status", "--json")
	var s status
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil {
		t.Fatalf("decode bpfipe status --json (%s): %v", res, err)
	}
	return &s, res
}

func (c cli) mustStatus(t *testing.T) *status {
	t.Helper()
	s, res := c.status(t)
	if res.code != 0 || !s.Loaded {
		t.Fatalf("bpfipe status: %s", res)
	}
	return s
}

// copyToTmp copies src to a fresh directory under /tmp, executable.
func copyToTmp(t *testing.T, src, name string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("open %s: %v", src, err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), name)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatalf("create %s: %v", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s: %v", src, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("close %s: %v", dst, err)
	}
	return dst
}

// execResult is how one exec ended: started (pid, exit code) or refused
// (errno).
type execResult struct {
	errno syscall.Errno
	pid   int
	code  int
}

// run forks and execs path with args and waits for it.
func run(t *testing.T, cmd *exec.Cmd) execResult {
	t.Helper()
	err := cmd.Start()
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return execResult{errno: errno}
		}
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	res := execResult{pid: cmd.Process.Pid}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("wait for %s: %v", cmd.Path, err)
	}
	return res
}

// busyboxTrue runs busybox's true applet from the busybox binary at path.
func busyboxTrue(t *testing.T, path string) execResult {
	t.Helper()
	return run(t, exec.Command(path, "true"))
}

// expectExec checks an exec's outcome: refused with want, or (want 0)
// started and exited 0.
func expectExec(t *testing.T, what string, got execResult, want syscall.Errno) {
	t.Helper()
	switch {
	case want != 0 && got.errno != want:
		t.Errorf("%s: exec gave %+v, want %s", what, got, unix.ErrnoName(want))
	case want == 0 && (got.errno != 0 || got.code != 0):
		t.Errorf("%s: exec gave errno %v exit %d, want it to run and exit 0", what, got.errno, got.code)
	}
}
