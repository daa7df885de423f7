// Package guestcli drives bpfipe through its command line from in-guest
// tests, the way an administrator would: load --pin, update, status --json,
// events --json, unload. The in-guest suites share it; the tamper
// guard lets only the bpfipe binary that loaded reach the running
// enforcement, so tests never open its maps themselves.
package guestcli

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
)

// GuestEnv is set to 1 by the bpfipe-vm guest's init.
const GuestEnv = "BPFIPE_GUEST"

// Exit statuses of bpfipe that tests tell apart.
const (
	ExitNotLoaded     = 5
	ExitAlreadyLoaded = 6
)

// Busybox is static and lives in the initramfs, the boot filesystem.
const Busybox = "/bin/busybox"

// Field values of access records, as IPE's audit names them.
const (
	HookBprm     = "BPRM_CHECK"
	HookMmap     = "MMAP"
	HookMprotect = "MPROTECT"
	ActionAllow  = "ALLOW"
	ActionDeny   = "DENY"
)

// RequireGuest skips t outside a bpfipe-vm guest.
func RequireGuest(t testing.TB) {
	t.Helper()
	if os.Getenv(GuestEnv) != "1" {
		t.Skip("runs only inside a bpfipe-vm guest (the host test boots it)")
	}
}

// CLI is one bpfipe binary.
type CLI struct{ Path string }

// Initramfs is the bpfipe the guest's initramfs carries: boot_verified.
func Initramfs(t testing.TB) CLI {
	t.Helper()
	p, err := exec.LookPath("bpfipe")
	if err != nil {
		t.Fatalf("find bpfipe: %v", err)
	}
	return CLI{p}
}

// Result is how one bpfipe command ended.
type Result struct {
	Stdout, Stderr string
	Code           int
	PID            int
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// commandTimeout bounds any one bpfipe command; a load under emulation
// takes a few seconds.
const commandTimeout = 2 * time.Minute

// Run runs bpfipe with args; it fails t only if bpfipe cannot be run.
func (c CLI) Run(t testing.TB, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if cmd.Process != nil {
		res.PID = cmd.Process.Pid
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		res.Code = exitErr.ExitCode()
	default:
		t.Fatalf("run %s %s: %v (stderr %q)", c.Path, strings.Join(args, " "), err, stderr.String())
	}
	return res
}

// Must runs bpfipe and fails t unless it exits 0.
func (c CLI) Must(t testing.TB, args ...string) Result {
	t.Helper()
	res := c.Run(t, args...)
	if res.Code != 0 {
		t.Fatalf("bpfipe %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// WritePolicy writes text to a file of its own.
func WritePolicy(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatalf("write policy: %v", err)
	}
	return path
}

// Load starts pinned enforcement of text and unloads it when t ends.
func (c CLI) Load(t testing.TB, text string, flags ...string) {
	t.Helper()
	args := append([]string{"load", "--pin"}, flags...)
	args = append(args, WritePolicy(t, text))
	if res := c.Run(t, args...); res.Code != 0 {
		t.Fatalf("bpfipe %s: %s\npolicy:\n%s", strings.Join(args, " "), res, text)
	}
	t.Cleanup(func() { c.UnloadAfter(t) })
}

// UnloadAfter takes enforcement down after a test and checks that nothing
// of it stays pinned; nothing loaded is fine.
func (c CLI) UnloadAfter(t testing.TB) {
	t.Helper()
	res := c.Run(t, "unload")
	if res.Code != 0 && res.Code != ExitNotLoaded {
		t.Errorf("unload after the test: %s", res)
	}
	if left := PinLeftovers(t); len(left) > 0 {
		t.Errorf("after unload, /sys/fs/bpf still holds %q", left)
	}
}

// PinLeftovers lists what is under /sys/fs/bpf, where bpfipe pins its
// running state and stages a load before publishing it.
func PinLeftovers(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir("/sys/fs/bpf")
	if err != nil {
		t.Fatalf("read /sys/fs/bpf: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Record is one line of bpfipe events --json: IPE's AUDIT_IPE_ACCESS
// fields plus the decision and the generation of the policy that made it.
type Record struct {
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

func (r Record) String() string {
	return fmt.Sprintf("{%s %s enforcing=%t pid=%d comm=%q has_file=%t path=%q dev=%q ino=%d rule=%q %s gen=%d}",
		r.Op, r.Hook, r.Enforcing, r.PID, r.Comm, r.HasFile, r.Path, r.Dev, r.Ino, r.Rule, r.Action, r.Generation)
}

// ParseRecords decodes bpfipe events --json output.
func ParseRecords(out []byte) ([]Record, error) {
	var records []Record
	scanner := bufio.NewScanner(bytes.NewReader(out))
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			return records, fmt.Errorf("decode event %q: %w", line, err)
		}
		if r.Type != "IPE_ACCESS" {
			return records, fmt.Errorf("event %q has type %q, want IPE_ACCESS", line, r.Type)
		}
		records = append(records, r)
	}
	return records, scanner.Err()
}

// Events drains the decisions reported since the last drain.
func (c CLI) Events(t testing.TB) []Record {
	t.Helper()
	records, _ := c.EventsFrom(t)
	return records
}

// EventsFrom is Events that also returns the reader's pid, whose own exec
// is decided too.
func (c CLI) EventsFrom(t testing.TB) ([]Record, int) {
	t.Helper()
	res := c.Must(t, "events", "--json")
	records, err := ParseRecords([]byte(res.Stdout))
	if err != nil {
		t.Fatal(err)
	}
	return records, res.PID
}

// About keeps the records of hook about the file at path; an empty path
// keeps those about no file (anonymous memory).
func About(records []Record, hook, path string) []Record {
	var out []Record
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

// HookCounts are one hook's decisions since load.
type HookCounts struct {
	Hook  string `json:"hook"`
	Allow uint64 `json:"allow"`
	Deny  uint64 `json:"deny"`
}

// Status is bpfipe status --json.
type Status struct {
	Loaded        bool         `json:"loaded"`
	Policy        string       `json:"policy_name"`
	Version       string       `json:"policy_version"`
	Generation    uint32       `json:"generation"`
	Enforcing     bool         `json:"enforcing"`
	SuccessAudit  bool         `json:"success_audit"`
	Scope         string       `json:"scope"`
	Foreground    int          `json:"foreground_pid"`
	Hooks         []HookCounts `json:"hooks"`
	EventsDropped uint64       `json:"events_dropped"`
	NoPolicy      uint64       `json:"no_policy"`
	ScratchBusy   uint64       `json:"scratch_busy"`
	PathsLost     uint64       `json:"paths_lost"`
}

// Counts returns hook's counters; ok is false when status has none.
func (s *Status) Counts(hook string) (allow, deny uint64, ok bool) {
	for _, h := range s.Hooks {
		if h.Hook == hook {
			return h.Allow, h.Deny, true
		}
	}
	return 0, 0, false
}

// Decisions is the sum of every hook's counters.
func (s *Status) Decisions() uint64 {
	var n uint64
	for _, h := range s.Hooks {
		n += h.Allow + h.Deny
	}
	return n
}

// Status reads bpfipe status --json; with nothing loaded it comes back
// with Loaded false and exit status ExitNotLoaded.
func (c CLI) Status(t testing.TB) (*Status, Result) {
	t.Helper()
	res := c.Run(t, "status", "--json")
	var s Status
	if err := json.Unmarshal([]byte(res.Stdout), &s); err != nil {
		t.Fatalf("decode bpfipe status --json (%s): %v", res, err)
	}
	return &s, res
}

// MustStatus is Status for a test that knows enforcement is loaded.
func (c CLI) MustStatus(t testing.TB) *Status {
	t.Helper()
	s, res := c.Status(t)
	if res.Code != 0 || !s.Loaded {
		t.Fatalf("bpfipe status: %s", res)
	}
	return s
}

// CopyFile copies src to dst, executable, failing if dst exists.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("open %s: %v", src, err)
	}
	defer in.Close()
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
}

// CopyToTmp copies src into a fresh directory under /tmp (a tmpfs, so not
// boot_verified), executable.
func CopyToTmp(t testing.TB, src, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	CopyFile(t, src, dst)
	return dst
}

// Exec is how one exec ended: started (pid, exit code) or refused (errno).
type Exec struct {
	Errno syscall.Errno
	PID   int
	Code  int
}

// String says how the exec ended, for messages.
func (e Exec) String() string {
	if e.Errno != 0 {
		return "exec refused with " + e.Errno.Error()
	}
	return fmt.Sprintf("pid %d exited %d", e.PID, e.Code)
}

// Start runs cmd and waits for it.
func Start(t testing.TB, cmd *exec.Cmd) Exec {
	t.Helper()
	if err := cmd.Start(); err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return Exec{Errno: errno}
		}
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	res := Exec{PID: cmd.Process.Pid}
	err := cmd.Wait()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.Code = exitErr.ExitCode()
	default:
		t.Fatalf("wait for %s: %v", cmd.Path, err)
	}
	return res
}
