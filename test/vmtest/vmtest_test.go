package vmtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/vm"
)

// recorder is a reporter that remembers what was reported, so tests can
// check the reporting itself, including failures, without failing.
type recorder struct {
	name     string
	logs     []string
	errors   []string
	fatals   []string
	skipped  string
	children []*recorder
}

func (r *recorder) Helper()          {}
func (r *recorder) Log(args ...any)  { r.logs = append(r.logs, fmt.Sprint(args...)) }
func (r *recorder) Skip(args ...any) { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}
func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
}
func (r *recorder) Run(name string, f func(reporter)) bool {
	child := &recorder{name: name}
	r.children = append(r.children, child)
	f(child)
	return len(child.errors) == 0 && len(child.fatals) == 0
}

func (r *recorder) child(t *testing.T, names ...string) *recorder {
	t.Helper()
	cur := r
	for _, name := range names {
		var next *recorder
		for _, c := range cur.children {
			if c.name == name {
				next = c
			}
		}
		if next == nil {
			var have []string
			for _, c := range cur.children {
				have = append(have, c.name)
			}
			t.Fatalf("no subtest %q under %q; have %q", name, cur.name, have)
		}
		cur = next
	}
	return cur
}

// events writes the test2json events of a small run by hand: a passing test
// with output and subtests (one of whose names contains a slash), a failing
// test, a skipped one and one that never finished.
func handWrittenEvents() []event {
	return []event{
		{Action: "start"},
		{Action: "run", Test: "TestPass"},
		{Action: "output", Test: "TestPass", Output: "=== RUN   TestPass\n"},
		{Action: "output", Test: "TestPass", Output: "    a_test.go:10: hello from the guest\n"},
		{Action: "run", Test: "TestPass/sub"},
		{Action: "output", Test: "TestPass/sub", Output: "=== RUN   TestPass/sub\n"},
		{Action: "output", Test: "TestPass/sub", Output: "    --- PASS: TestPass/sub (0.00s)\n"},
		{Action: "pass", Test: "TestPass/sub"},
		{Action: "run", Test: "TestPass/a/b"},
		{Action: "pass", Test: "TestPass/a/b"},
		{Action: "output", Test: "TestPass", Output: "--- PASS: TestPass (0.01s)\n"},
		{Action: "pass", Test: "TestPass"},
		{Action: "run", Test: "TestFail"},
		{Action: "output", Test: "TestFail", Output: "    a_test.go:20: wanted 1, got 2\n"},
		{Action: "output", Test: "TestFail", Output: "--- FAIL: TestFail (0.00s)\n"},
		{Action: "fail", Test: "TestFail"},
		{Action: "run", Test: "TestSkip"},
		{Action: "output", Test: "TestSkip", Output: "    a_test.go:30: needs a disk\n"},
		{Action: "skip", Test: "TestSkip"},
		{Action: "run", Test: "TestCrash"},
		{Action: "output", Test: "TestCrash", Output: "panic: boom\n"},
		{Action: "output", Output: "FAIL\n"},
		{Action: "fail"},
	}
}

func TestReportMirrorsInGuestTests(t *testing.T) {
	root := buildTree(handWrittenEvents())
	rec := &recorder{name: "host"}
	report(rec, root)

	pass := rec.child(t, "TestPass")
	if len(pass.errors) != 0 || pass.skipped != "" {
		t.Errorf("TestPass reported errors %q, skip %q", pass.errors, pass.skipped)
	}
	if len(pass.logs) != 1 || !strings.Contains(pass.logs[0], "hello from the guest") || strings.Contains(pass.logs[0], "=== RUN") {
		t.Errorf("TestPass logs %q, want its own output without go test's framing", pass.logs)
	}
	rec.child(t, "TestPass", "sub")
	rec.child(t, "TestPass", "a/b")

	fail := rec.child(t, "TestFail")
	if len(fail.errors) != 1 || !strings.Contains(fail.errors[0], "wanted 1, got 2") {
		t.Errorf("TestFail errors %q, want one carrying the guest's message", fail.errors)
	}
	skip := rec.child(t, "TestSkip")
	if !strings.Contains(skip.skipped, "needs a disk") || len(skip.errors) != 0 {
		t.Errorf("TestSkip skipped %q errors %q, want a skip with the reason", skip.skipped, skip.errors)
	}
	crash := rec.child(t, "TestCrash")
	if len(crash.errors) != 1 || !strings.Contains(crash.errors[0], "did not finish") || !strings.Contains(crash.errors[0], "panic: boom") {
		t.Errorf("TestCrash errors %q, want 'did not finish' with the panic", crash.errors)
	}
	if !root.anyFailed() {
		t.Error("anyFailed is false with TestFail in the tree")
	}
	if got := root.output.String(); got != "FAIL\n" {
		t.Errorf("package-level output %q, want %q", got, "FAIL\n")
	}
}

func TestRequireSkipsLocallyAndFailsInCI(t *testing.T) {
	missing := &vm.MissingError{What: "qemu-system-x86_64", Package: "qemu-system-x86"}

	t.Setenv("CI", "")
	local := &recorder{}
	requireAvailable(local, missing)
	if !strings.Contains(local.skipped, "apt-get install qemu-system-x86") || len(local.fatals) != 0 {
		t.Errorf("locally: skipped %q, fatals %q; want a skip naming the package", local.skipped, local.fatals)
	}

	t.Setenv("CI", "true")
	ci := &recorder{}
	requireAvailable(ci, missing)
	if len(ci.fatals) != 1 || !strings.Contains(ci.fatals[0], "qemu-system-x86_64") || ci.skipped != "" {
		t.Errorf("in CI: fatals %q, skipped %q; want a failure naming the tool", ci.fatals, ci.skipped)
	}

	fine := &recorder{}
	requireAvailable(fine, nil)
	if fine.skipped != "" || len(fine.fatals) != 0 {
		t.Errorf("with everything available: skipped %q, fatals %q", fine.skipped, fine.fatals)
	}
}

func TestIsFraming(t *testing.T) {
	for _, line := range []string{"=== RUN   TestA\n", "    --- FAIL: TestA/b (0.00s)\n", "=== CONT  TestA\n", "=== NAME  TestA\n"} {
		if !isFraming(line) {
			t.Errorf("isFraming(%q) = false", line)
		}
	}
	for _, line := range []string{"    a_test.go:1: === RUN in a message\n", "--- not framing\n", "PASS\n"} {
		if isFraming(line) {
			t.Errorf("isFraming(%q) = true", line)
		}
	}
}

func TestTestTimeoutLeavesRoomForBoot(t *testing.T) {
	for _, guest := range []int{60, 300, 900} {
		d := testTimeout(secs(guest))
		if d <= 0 || d >= secs(guest) {
			t.Errorf("testTimeout(%ds) = %s, want a positive duration below the guest's", guest, d)
		}
	}
}

const harnessPackage = "./test/guest/harness"

// TestRunGoTestsHarness is what other packages' VM tests look like: every
// in-guest test of the harness package appears below as a subtest.
func TestRunGoTestsHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	for _, kernel := range Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			var opts []Option
			if kernel == "debian-6.12" {
				// Boot through OVMF so TestPlatformKeyring runs too.
				cn := "bpfipe-harness-" + kernel
				cert, _ := TestCertificate(t, cn)
				opts = append(opts, WithUEFICert(cert), WithEnv("BPFIPE_HARNESS_PLATFORM_CN="+cn))
			}
			RunGoTests(t, kernel, harnessPackage, opts...)
		})
	}
}

// TestRunGoTestsReportsFailuresByName boots the harness with one test made
// to fail and checks what the host side reports, test by test.
func TestRunGoTestsReportsFailuresByName(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a qemu guest; skipped with -short")
	}
	const kernel = "debian-6.1"
	Require(t, kernel)
	t.Parallel()
	rec := &recorder{name: "host"}
	runGoTests(rec, kernel, harnessPackage, collect([]Option{WithEnv("BPFIPE_HARNESS_FAIL=1")}))

	if len(rec.fatals) != 0 {
		t.Fatalf("run failed as a whole: %q", rec.fatals)
	}
	for _, name := range []string{"TestRunsAsRoot", "TestActiveLSMs", "TestMounts", "TestModulesLoaded", "TestBpfipeOnPath", "TestRunsInPackageDirectory"} {
		if c := rec.child(t, name); len(c.errors) != 0 || c.skipped != "" {
			t.Errorf("%s: errors %q, skipped %q; want a pass", name, c.errors, c.skipped)
		}
	}
	for _, sub := range []string{"first", "second"} {
		c := rec.child(t, "TestSubtests", sub)
		if len(c.logs) != 1 || !strings.Contains(c.logs[0], "subtest "+sub+" ran") {
			t.Errorf("TestSubtests/%s logs %q, want the guest's log line", sub, c.logs)
		}
	}
	failed := rec.child(t, "TestDeliberateFailure")
	if len(failed.errors) != 1 || !strings.Contains(failed.errors[0], "deliberate failure for the harness") {
		t.Errorf("TestDeliberateFailure errors %q, want the guest's failure message", failed.errors)
	}
	if skipped := rec.child(t, "TestPlatformKeyring"); !strings.Contains(skipped.skipped, "BPFIPE_HARNESS_PLATFORM_CN") {
		t.Errorf("TestPlatformKeyring skipped %q, want a skip naming the variable", skipped.skipped)
	}
}

func secs(n int) time.Duration { return time.Duration(n) * time.Second }
