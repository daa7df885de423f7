// Package vmtest runs Go tests inside qemu guests from host tests: it builds
// a package's test binary statically, boots it on a stock kernel with the vm
// package, and reports every in-guest test as a host subtest of the same
// name.
//
// Where qemu or a kernel cannot be had, tests skip with a message naming
// what is missing; in CI (CI=true) they fail instead, so a broken setup
// cannot pass silently.
package vmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/vm"
)

// RunEnv, when set, is passed to in-guest test binaries as -test.run, to
// pick in-guest tests without touching the host test's own -run.
const RunEnv = "BPFIPE_VMTEST_RUN"

// VerboseEnv, when set to 1, shows the guests' kernel messages.
const VerboseEnv = "BPFIPE_VMTEST_VERBOSE"

// Kernels lists the named kernels tests should loop over.
func Kernels() []string { return vm.KernelNames() }

// guestTestDir is where test binaries and their testdata go in the guest.
const guestTestDir = "/opt/bpfipe-tests"

type options struct {
	adds     []vm.Add
	disks    []vm.Disk
	uefiCert string
	timeout  time.Duration
	run      string
	env      []string
	args     []string
}

// Option adjusts a guest run.
type Option func(*options)

// WithAdd copies a host file or directory into the guest at dst.
func WithAdd(src, dst string) Option {
	return func(o *options) { o.adds = append(o.adds, vm.Add{Src: src, Dst: dst}) }
}

// WithDisk attaches a host file as the next virtio disk (/dev/vda first).
func WithDisk(path string, readOnly bool) Option {
	return func(o *options) { o.disks = append(o.disks, vm.Disk{Path: path, ReadOnly: readOnly}) }
}

// WithUEFICert boots through OVMF with the PEM certificate in the UEFI db,
// which puts it in the guest kernel's .platform keyring.
func WithUEFICert(path string) Option { return func(o *options) { o.uefiCert = path } }

// WithTimeout bounds the whole guest run (default vm.DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRun selects in-guest tests like go test -run; it overrides RunEnv.
func WithRun(pattern string) Option { return func(o *options) { o.run = pattern } }

// WithEnv sets KEY=VALUE entries in the guest test binary's environment.
func WithEnv(kv ...string) Option { return func(o *options) { o.env = append(o.env, kv...) } }

// WithArgs passes extra flags to the test binary (e.g. "-test.count=2").
func WithArgs(args ...string) Option { return func(o *options) { o.args = append(o.args, args...) } }

func collect(opts []Option) *options {
	o := &options{timeout: vm.DefaultTimeout, run: os.Getenv(RunEnv)}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Config returns the vm.Config these options describe for kernel, for tests
// that call vm.Run themselves.
func Config(kernel string, opts ...Option) vm.Config {
	o := collect(opts)
	cfg := vm.Config{
		Kernel:   kernel,
		Adds:     o.adds,
		Disks:    o.disks,
		UEFICert: o.uefiCert,
		Timeout:  o.timeout,
		Env:      o.env,
	}
	if os.Getenv(VerboseEnv) == "1" {
		cfg.Verbose = true
		cfg.Stderr = os.Stderr
	}
	return cfg
}

// Require makes sure a guest with kernel (and the options' needs, such as
// OVMF for a UEFI certificate) can boot here. If not, it skips t with a
// message naming what is missing, or fails t when CI=true.
func Require(t testing.TB, kernel string, opts ...Option) {
	t.Helper()
	requireAvailable(t, unavailable(kernel, Config(kernel, opts...)))
}

// skipper is the part of testing.TB that Require uses.
type skipper interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

func requireAvailable(t skipper, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("VM tests cannot run here (failing because CI=true): %v", err)
		return
	}
	t.Skipf("VM tests cannot run here: %v", err)
}

// unavailable reports what stops a guest from booting here, or nil. Only
// missing tools and unobtainable kernels count; other errors are left for
// the run itself to report.
func unavailable(kernel string, cfg vm.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := vm.CheckHost(ctx, cfg); err != nil {
		return err
	}
	if _, err := vm.EnsureKernel(ctx, kernel); err != nil {
		var missing *vm.MissingError
		if errors.As(err, &missing) || errors.Is(err, vm.ErrUnavailable) {
			return fmt.Errorf("kernel %s: %w", kernel, err)
		}
	}
	return nil
}

// RunGoTests builds the tests of pkg (an import path, or ./path from the
// repository root) as a static binary, runs them in a guest booting kernel
// with -test.v, and reports each in-guest test as a subtest of t with the
// same name, failing with its output when it failed in the guest.
func RunGoTests(t *testing.T, kernel, pkg string, opts ...Option) {
	t.Helper()
	Require(t, kernel, opts...)
	runGoTests(testingReporter{t}, kernel, pkg, collect(opts))
}

// runGoTests does RunGoTests' work against a reporter, so the reporting can
// be checked with a recording one.
func runGoTests(r reporter, kernel, pkg string, o *options) {
	r.Helper()
	ctx := context.Background()
	binary, err := vm.BuildGoTest(ctx, pkg)
	if err != nil {
		r.Fatalf("build tests of %s: %v", pkg, err)
		return
	}
	cfg := Config(kernel)
	cfg.Adds, cfg.Disks, cfg.UEFICert, cfg.Timeout, cfg.Env = o.adds, o.disks, o.uefiCert, o.timeout, o.env
	guestDir := path.Join(guestTestDir, strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimPrefix(pkg, "./")))
	guestBinary := path.Join(guestDir, "pkg.test")
	cfg.Adds = append(cfg.Adds, vm.Add{Src: binary, Dst: guestBinary})
	// go test runs a package's tests in its source directory; do the same
	// so relative testdata paths work.
	if dir, err := packageDir(pkg); err == nil {
		if testdata := filepath.Join(dir, "testdata"); dirExists(testdata) {
			cfg.Adds = append(cfg.Adds, vm.Add{Src: testdata, Dst: path.Join(guestDir, "testdata")})
		}
	}
	cfg.Dir = guestDir
	argv := []string{guestBinary, "-test.v=test2json", "-test.timeout=" + testTimeout(o.timeout).String()}
	if o.run != "" {
		argv = append(argv, "-test.run="+o.run)
	}
	argv = append(argv, o.args...)

	var output bytes.Buffer
	cfg.Stdout = &output
	status, runErr := vm.Run(ctx, cfg, argv)
	events, parseErr := test2json(ctx, pkg, output.Bytes())
	if parseErr != nil {
		r.Fatalf("read in-guest test output: %v\n%s", parseErr, output.String())
		return
	}
	results := buildTree(events)
	report(r, results)
	switch {
	case runErr != nil:
		r.Fatalf("in-guest tests of %s on %s: %v", pkg, kernel, runErr)
	case len(results.children) == 0:
		r.Fatalf("no in-guest test of %s ran on %s (exit status %d):\n%s", pkg, kernel, status, results.output.String())
	case status != 0 && !results.anyFailed():
		r.Fatalf("in-guest test binary of %s exited with status %d on %s:\n%s", pkg, status, kernel, results.output.String())
	}
}

// testTimeout leaves the test binary less time than the guest, so a stuck
// test ends with Go's goroutine dump rather than a killed guest.
func testTimeout(guest time.Duration) time.Duration {
	if guest > 2*time.Minute {
		return guest - time.Minute
	}
	return guest * 3 / 4
}

func packageDir(pkg string) (string, error) {
	src, err := vm.SourceDir()
	if err != nil {
		return "", err
	}
	if rel, ok := strings.CutPrefix(pkg, "github.com/bpfipe/bpfipe"); ok {
		return filepath.Join(src, filepath.FromSlash(rel)), nil
	}
	return filepath.Join(src, filepath.FromSlash(pkg)), nil
}

func dirExists(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.IsDir()
}

// event is one line of go test -json (test2json) output.
type event struct {
	Action string
	Test   string
	Output string
}

// test2json converts the guest's -test.v=test2json output with the go
// command's own converter, which knows the framing better than any copy.
func test2json(ctx context.Context, pkg string, raw []byte) ([]event, error) {
	gocmd, err := vm.GoCommand()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, gocmd, "tool", "test2json", "-p", pkg)
	cmd.Stdin = bytes.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go tool test2json: %w: %s", err, stderr.String())
	}
	var events []event
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var e event
		if err := dec.Decode(&e); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode test2json output: %w", err)
		}
		events = append(events, e)
	}
	return events, nil
}

// result is one in-guest test, or the package itself at the root.
type result struct {
	name     string // full name, TestA/sub
	short    string // the last element, as passed to t.Run
	action   string // pass, fail, skip; empty if it never finished
	output   strings.Builder
	children []*result
}

func (r *result) anyFailed() bool {
	if r.action == "fail" && r.name != "" {
		return true
	}
	for _, c := range r.children {
		if c.anyFailed() {
			return true
		}
	}
	return false
}

// buildTree arranges the events into the tree of tests. A test's parent is
// the longest test already seen whose name prefixes it, which is right even
// for subtest names that themselves contain a slash.
func buildTree(events []event) *result {
	root := &result{}
	byName := map[string]*result{"": root}
	find := func(name string) *result {
		if r, ok := byName[name]; ok {
			return r
		}
		parent := root
		for i := len(name) - 1; i > 0; i-- {
			if name[i] == '/' {
				if p, ok := byName[name[:i]]; ok {
					parent = p
					break
				}
			}
		}
		short := name
		if parent != root {
			short = strings.TrimPrefix(name, parent.name+"/")
		}
		r := &result{name: name, short: short}
		byName[name] = r
		parent.children = append(parent.children, r)
		return r
	}
	for _, e := range events {
		r := find(e.Test)
		switch e.Action {
		case "output":
			if !isFraming(e.Output) {
				r.output.WriteString(e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test != "" {
				r.action = e.Action
			}
		}
	}
	return root
}

// isFraming tells go test's own status lines, which the host test prints
// again for the subtest, from the test's output.
func isFraming(line string) bool {
	trimmed := strings.TrimLeft(line, " ")
	for _, prefix := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- FAIL", "--- SKIP"} {
		if strings.HasPrefix(trimmed, prefix) {
			return true
		}
	}
	return false
}

// report turns the tree into subtests of r.
func report(r reporter, root *result) {
	for _, c := range root.children {
		c := c
		r.Run(c.short, func(sub reporter) { reportOne(sub, c) })
	}
}

func reportOne(r reporter, res *result) {
	out := strings.TrimRight(res.output.String(), "\n")
	for _, c := range res.children {
		c := c
		r.Run(c.short, func(sub reporter) { reportOne(sub, c) })
	}
	switch res.action {
	case "pass":
		if out != "" {
			r.Log(out)
		}
	case "skip":
		r.Skip("skipped in the guest: " + out)
	case "fail":
		r.Errorf("failed in the guest:\n%s", out)
	default:
		r.Errorf("did not finish in the guest:\n%s", out)
	}
}

// reporter is the part of *testing.T that reporting uses.
type reporter interface {
	Helper()
	Run(name string, f func(reporter)) bool
	Log(args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

type testingReporter struct{ t *testing.T }

func (r testingReporter) Helper()         { r.t.Helper() }
func (r testingReporter) Log(args ...any) { r.t.Helper(); r.t.Log(args...) }
func (r testingReporter) Errorf(format string, args ...any) {
	r.t.Helper()
	r.t.Errorf(format, args...)
}
func (r testingReporter) Fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf(format, args...)
}
func (r testingReporter) Skip(args ...any) { r.t.Helper(); r.t.Skip(args...) }
func (r testingReporter) Run(name string, f func(reporter)) bool {
	return r.t.Run(name, func(t *testing.T) { f(testingReporter{t}) })
}
