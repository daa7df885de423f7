// Package cli runs the built bpfipe binary with bad input on this host:
// malformed command lines, missing and unreadable files, an unprivileged
// user, a kernel that cannot load LSM programs, nothing loaded. Each must
// be answered with exactly one line and the exit status of its class, and
// change nothing.
package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/loader"
)

// The exit statuses of cmd/bpfipe/main.go, by class. A file named on the
// command line that cannot be used (missing, not readable, not a policy or
// a certificate) is an operation that ran and failed, whether it is an
// argument or a flag's value; a command line that is wrong whatever the
// files hold (unknown command or flag, wrong number of arguments, a value
// outside the allowed words) is a usage error.
const (
	exitFailure     = 1
	exitUsage       = 2
	exitUnsupported = 3
	exitPrivilege   = 4
	exitNotLoaded   = 5
)

// nobody is the unprivileged user the privilege cases run as.
const nobody = 65534

// answer says where a command's one line goes.
type answer int

const (
	// onStderr: one line on stderr, nothing on stdout.
	onStderr answer = iota
	// withRecord: one line on stderr, and on stdout the failed
	// IPE_POLICY_LOAD record IPE also emits for a refused policy.
	withRecord
	// onStdout: the command's own report is the answer (status, resolver
	// --status, policy check): one line on stdout, nothing on stderr.
	onStdout
)

type testCase struct {
	args   []string
	status int
	answer answer
	// asNobody runs the command as an unprivileged user.
	asNobody bool
	// loads is a command that would start enforcement on a host that can.
	loads bool
}

// fixtures are the files the cases name, in a directory of their own.
type fixtures struct {
	dir                                       string
	valid, public, invalid, missing, notAFile string
}

func newFixtures(t *testing.T) fixtures {
	t.Helper()
	dir := publicTempDir(t)
	f := fixtures{
		dir:      dir,
		valid:    filepath.Join(dir, "valid.pol"),
		public:   filepath.Join(dir, "public.pol"),
		invalid:  filepath.Join(dir, "invalid.pol"),
		missing:  filepath.Join(dir, "missing.pol"),
		notAFile: filepath.Join(dir, "directory.pol"),
	}
	const text = "policy_name=cli policy_version=0.0.1\nDEFAULT action=ALLOW\n"
	write := func(path, text string, mode os.FileMode) {
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	// valid is readable by root only, public by everyone.
	write(f.valid, text, 0o600)
	write(f.public, text, 0o644)
	write(f.invalid, "policy_name=cli policy_version=0.0.1\nDEFAULT action=MAYBE\n", 0o644)
	if err := os.Mkdir(f.notAFile, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func cases(f fixtures) map[string]testCase {
	return map[string]testCase{
		// Malformed command lines.
		"unknown command":             {args: []string{"nosuch"}, status: exitUsage},
		"help for an unknown command": {args: []string{"help", "nosuch"}, status: exitUsage},
		"load without a policy":       {args: []string{"load"}, status: exitUsage},
		"load with two policies":      {args: []string{"load", f.public, f.public}, status: exitUsage},
		"load with an unknown flag":   {args: []string{"load", "--nosuch", f.public}, status: exitUsage},
		"load with a bad bool":        {args: []string{"load", "--permissive=maybe", f.public}, status: exitUsage},
		"update without a policy":     {args: []string{"update"}, status: exitUsage},
		"update with two policies":    {args: []string{"update", f.public, f.public}, status: exitUsage},
		"unload with an argument":     {args: []string{"unload", "now"}, status: exitUsage},
		"enforce without a value":     {args: []string{"enforce"}, status: exitUsage},
		"enforce maybe":               {args: []string{"enforce", "maybe"}, status: exitUsage},
		"enforce with two values":     {args: []string{"enforce", "on", "off"}, status: exitUsage},
		"success-audit without value": {args: []string{"success-audit"}, status: exitUsage},
		"success-audit maybe":         {args: []string{"success-audit", "maybe"}, status: exitUsage},
		"status with an argument":     {args: []string{"status", "now"}, status: exitUsage},
		"events with an argument":     {args: []string{"events", "now"}, status: exitUsage},
		"devices with an argument":    {args: []string{"devices", "now"}, status: exitUsage},
		"resolver with an argument":   {args: []string{"resolver", "now"}, status: exitUsage},
		"resolver with two actions":   {args: []string{"resolver", "--stop", "--restart"}, status: exitUsage},
		"policy check without files":  {args: []string{"policy", "check"}, status: exitUsage},
		"policy show without a file":  {args: []string{"policy", "show"}, status: exitUsage},
		"policy eval without policy":  {args: []string{"policy", "eval"}, status: exitUsage},
		"policy eval with a bad op":   {args: []string{"policy", "eval", "--policy", f.public, "--op", "NOPE"}, status: exitUsage},
		"kernel-ipe load no policy":   {args: []string{"kernel-ipe", "load"}, status: exitUsage},
		"kernel-ipe enforce maybe":    {args: []string{"kernel-ipe", "enforce", "maybe"}, status: exitUsage},

		// Files that cannot be used.
		"load a missing policy":          {args: []string{"load", f.missing}, status: exitFailure},
		"load a directory":               {args: []string{"load", f.notAFile}, status: exitFailure},
		"load an invalid policy":         {args: []string{"load", f.invalid}, status: exitFailure, answer: withRecord},
		"load trusting a missing cert":   {args: []string{"load", "--trust", f.missing, f.public}, status: exitFailure},
		"load trusting a non-cert":       {args: []string{"load", "--trust", f.public, f.public}, status: exitFailure},
		"update a missing policy":        {args: []string{"update", f.missing}, status: exitFailure},
		"update an invalid policy":       {args: []string{"update", f.invalid}, status: exitFailure, answer: withRecord},
		"policy check a missing file":    {args: []string{"policy", "check", f.missing}, status: exitFailure},
		"policy check an invalid policy": {args: []string{"policy", "check", f.invalid}, status: exitFailure, answer: onStdout},
		"policy show a missing file":     {args: []string{"policy", "show", f.missing}, status: exitFailure},
		"policy eval a missing policy":   {args: []string{"policy", "eval", "--policy", f.missing}, status: exitFailure},
		"kernel-ipe load missing file":   {args: []string{"kernel-ipe", "load", f.missing}, status: exitFailure},

		// This host's kernel cannot load LSM programs.
		"load":            {args: []string{"load", f.valid}, status: exitUnsupported, loads: true},
		"load pinned":     {args: []string{"load", "--pin", f.valid}, status: exitUnsupported, loads: true},
		"load permissive": {args: []string{"load", "--permissive", "--success-audit", f.valid}, status: exitUnsupported, loads: true},

		// Nothing is loaded.
		"update":            {args: []string{"update", f.public}, status: exitNotLoaded},
		"unload":            {args: []string{"unload"}, status: exitNotLoaded},
		"enforce on":        {args: []string{"enforce", "on"}, status: exitNotLoaded},
		"success-audit off": {args: []string{"success-audit", "off"}, status: exitNotLoaded},
		"events":            {args: []string{"events"}, status: exitNotLoaded},
		"events --follow":   {args: []string{"events", "--follow", "--json"}, status: exitNotLoaded},
		"status":            {args: []string{"status"}, status: exitNotLoaded, answer: onStdout},
		"status --json":     {args: []string{"status", "--json"}, status: exitNotLoaded, answer: onStdout},
		"resolver --status": {args: []string{"resolver", "--status"}, status: exitNotLoaded, answer: onStdout},

		// Unprivileged.
		"nobody: load":              {args: []string{"load", f.public}, status: exitPrivilege, asNobody: true},
		"nobody: load pinned":       {args: []string{"load", "--pin", f.public}, status: exitPrivilege, asNobody: true},
		"nobody: load unreadable":   {args: []string{"load", f.valid}, status: exitPrivilege, asNobody: true},
		"nobody: update":            {args: []string{"update", f.public}, status: exitPrivilege, asNobody: true},
		"nobody: update unreadable": {args: []string{"update", f.valid}, status: exitPrivilege, asNobody: true},
		"nobody: unload":            {args: []string{"unload"}, status: exitPrivilege, asNobody: true},
		"nobody: enforce":           {args: []string{"enforce", "off"}, status: exitPrivilege, asNobody: true},
		"nobody: success-audit":     {args: []string{"success-audit", "on"}, status: exitPrivilege, asNobody: true},
		"nobody: events":            {args: []string{"events"}, status: exitPrivilege, asNobody: true},
		"nobody: status":            {args: []string{"status"}, status: exitPrivilege, asNobody: true},
		"nobody: resolver --stop":   {args: []string{"resolver", "--stop"}, status: exitPrivilege, asNobody: true},
		// policy check documents 0 valid, 1 invalid or unreadable, 2 usage.
		"nobody: policy check unreadable": {args: []string{"policy", "check", f.valid}, status: exitFailure, asNobody: true},
	}
}

func TestBadInput(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the cases run as root and, through setuid, as an unprivileged user")
	}
	bin := build(t)
	f := newFixtures(t)
	hostLoads := loader.Probe() == nil
	before := hostState(t)
	all := cases(f)
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		tc := all[name]
		t.Run(name, func(t *testing.T) {
			if tc.loads && hostLoads {
				t.Skip("this host can load LSM programs: the command would enforce")
			}
			stdout, stderr, status := run(t, bin, f.dir, tc)
			if status != tc.status {
				t.Errorf("exit status %d, want %d\nstdout: %q\nstderr: %q", status, tc.status, stdout, stderr)
			}
			checkAnswer(t, tc.answer, stdout, stderr)
			if after := hostState(t); after != before {
				t.Errorf("the command changed the host: before %s, after %s", before, after)
			}
		})
	}
}

// checkAnswer asserts the one line where it belongs.
func checkAnswer(t *testing.T, a answer, stdout, stderr string) {
	t.Helper()
	switch a {
	case onStderr, withRecord:
		if !oneLine(stderr) {
			t.Errorf("stderr is not exactly one line:\n%s", stderr)
		}
		if a == onStderr && stdout != "" {
			t.Errorf("stdout %q, want nothing", stdout)
		}
		if a == withRecord && (!oneLine(stdout) || !strings.HasPrefix(stdout, "IPE_POLICY_LOAD ")) {
			t.Errorf("stdout %q, want one IPE_POLICY_LOAD record", stdout)
		}
	case onStdout:
		if !oneLine(stdout) {
			t.Errorf("stdout is not exactly one line:\n%s", stdout)
		}
		if stderr != "" {
			t.Errorf("stderr %q, want nothing", stderr)
		}
	}
}

// oneLine reports whether s is a single, non-blank, terminated line.
func oneLine(s string) bool {
	return strings.Count(s, "\n") == 1 && strings.HasSuffix(s, "\n") && strings.TrimSpace(s) != ""
}

func run(t *testing.T, bin, dir string, tc testCase) (stdout, stderr string, status int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, tc.args...)
	cmd.Dir = dir
	if tc.asNobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		status = exitErr.ExitCode()
	default:
		t.Fatalf("run bpfipe %s: %v (stderr %q)", strings.Join(tc.args, " "), err, errOut.String())
	}
	return out.String(), errOut.String(), status
}

// build compiles bpfipe from this source tree, as a user would get it.
func build(t *testing.T) string {
	t.Helper()
	// Reachable by the unprivileged user, like an installed binary.
	out := filepath.Join(publicTempDir(t), "bpfipe")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(gocmd, "build", "-o", out, "github.com/bpfipe/bpfipe/cmd/bpfipe")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build bpfipe: %v\n%s", err, msg)
	}
	return out
}

// publicTempDir is a t.TempDir that the unprivileged user can reach: the
// testing package makes their common parent private.
func publicTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// state is what a refused command must leave as it was: whether
// enforcement's pins exist, the mounts bpfipe may make (bpffs on
// /sys/fs/bpf, securityfs for the LSM list) and bpfipe's files in /run.
type state string

func hostState(t *testing.T) state {
	t.Helper()
	var parts []string
	_, err := os.Lstat(loader.DefaultPinDir)
	parts = append(parts, "pins:"+strings.TrimSpace(errString(err)))
	mounts, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mounts.Close()
	sc := bufio.NewScanner(mounts)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == "/sys/fs/bpf" || fields[4] == "/sys/kernel/security") {
			parts = append(parts, "mount:"+fields[4])
		}
	}
	entries, err := os.ReadDir("/run")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		// The command lock is taken before the state is read, and stays
		// as an empty file: it holds nothing.
		if strings.HasPrefix(e.Name(), "bpfipe") && e.Name() != "bpfipe.lock" {
			parts = append(parts, "run:"+e.Name())
		}
	}
	return state(strings.Join(parts, " "))
}

func errString(err error) string {
	if err == nil {
		return "exists"
	}
	if errors.Is(err, os.ErrNotExist) {
		return "absent"
	}
	return err.Error()
}
