package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// The kill test's schedule: a fixed seed, so a failure replays. Each cycle
// kills one load, killsPerCycle updates and one unload.
const (
	killSeed1, killSeed2 = 9, 2026
	killCycles           = 8
	updateKillsPerCycle  = 3
)

const killPolicyName = "faults_kill"

// enforcement is one complete state bpfipe can be in: nothing loaded
// (generation 0), or a policy in force, or an unload interrupted.
type enforcement struct {
	generation uint32
	version    int
	// unloadInterrupted: an unload killed after it emptied the policy
	// slot, before it removed the pins. Nothing is enforced, and every
	// command but unload says so and refuses (exit 1, unloadInterrupted).
	unloadInterrupted bool
}

// unloadInterrupted is what bpfipe says of an interrupted unload.
const unloadInterrupted = "unload interrupted: nothing is enforced; run bpfipe unload"

// exitFailure is bpfipe's exit status for an error without a status of
// its own.
const exitFailure = 1

func (e enforcement) loaded() bool { return e.generation != 0 }

func (e enforcement) String() string {
	if e.unloadInterrupted {
		return "unload interrupted"
	}
	if !e.loaded() {
		return "not loaded"
	}
	return fmt.Sprintf("generation %d (version 0.0.%d)", e.generation, e.version)
}

// killRun is one bpfipe command killed after a delay.
type killRun struct {
	delay time.Duration
	// finished: the command exited before the kill; code is its status.
	finished bool
	code     int
}

// killAfter starts bpfipe with args and sends SIGKILL to it, and only it,
// after delay; the command may finish first.
func killAfter(t *testing.T, c guestcli.CLI, delay time.Duration, args ...string) killRun {
	t.Helper()
	cmd := exec.Command(c.Path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bpfipe %s: %v", strings.Join(args, " "), err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	run := killRun{delay: delay}
	select {
	case err := <-exited:
		run.finished = true
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			run.code = exitErr.ExitCode()
		}
	case <-time.After(delay):
		cmd.Process.Kill()
		if err := <-exited; err == nil {
			run.finished = true // exited between the timer and the signal
		}
	}
	return run
}

// timed runs bpfipe with args to completion and returns how long it took.
func timed(t *testing.T, c guestcli.CLI, args ...string) time.Duration {
	t.Helper()
	began := time.Now()
	c.Must(t, args...)
	return time.Since(began)
}

// killTest holds what the kill test knows across its steps.
type killTest struct {
	c       guestcli.CLI
	o       *oracle
	probe   string
	dir     string
	rng     *rand.Rand
	typical map[string]time.Duration
	// killed counts, per command, the runs the kill interrupted.
	killed, finished map[string]int
	// versionOf maps generations of the current load to versions.
	versionOf map[uint32]int
	nextVer   int
}

func (k *killTest) policyFile(t *testing.T, version int) string {
	t.Helper()
	path := filepath.Join(k.dir, fmt.Sprintf("v%d", version))
	if err := os.WriteFile(path, []byte(togglePolicy(killPolicyName, version)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// delay picks the kill delay for cmd, uniformly between 0 and its
// typical duration.
func (k *killTest) delay(cmd string) time.Duration {
	return time.Duration(k.rng.Int64N(int64(k.typical[cmd])))
}

func (k *killTest) kill(t *testing.T, cmd string, args ...string) killRun {
	t.Helper()
	run := killAfter(t, k.c, k.delay(cmd), append([]string{cmd}, args...)...)
	if run.finished {
		k.finished[cmd]++
		if run.code != 0 {
			t.Errorf("bpfipe %s finished before the kill with exit %d", cmd, run.code)
		}
	} else {
		k.killed[cmd]++
	}
	return run
}

// observe reads the state bpfipe reports and checks it against enforcement
// itself: it must be one of candidates, and a probe exec must be decided
// exactly as that state decides it, by a policy of that generation.
func (k *killTest) observe(t *testing.T, what string, candidates ...enforcement) enforcement {
	t.Helper()
	// Not k.c.Status: an interrupted unload prints no JSON.
	res := k.c.Run(t, "status", "--json")
	var s guestcli.Status
	var got enforcement
	switch {
	case res.Code == exitFailure && res.Stdout == "" && res.Stderr == "bpfipe status: "+unloadInterrupted+"\n":
		got.unloadInterrupted = true
		if len(guestcli.PinLeftovers(t)) == 0 {
			t.Errorf("%s: status reports an interrupted unload, but nothing is pinned", what)
		}
	case json.Unmarshal([]byte(res.Stdout), &s) != nil:
		t.Errorf("%s: bpfipe status: %s: not JSON", what, res)
		return got
	case res.Code == guestcli.ExitNotLoaded && !s.Loaded:
	case res.Code == 0 && s.Loaded:
		got.generation = s.Generation
		got.version = k.versionOf[s.Generation]
		if s.Policy != killPolicyName || s.Version != fmt.Sprintf("0.0.%d", got.version) || got.version == 0 {
			t.Errorf("%s: status names policy %q version %q generation %d; none of %v", what, s.Policy, s.Version, s.Generation, candidates)
		}
		if s.NoPolicy != 0 || s.ScratchBusy != 0 {
			t.Errorf("%s: status says %s but no_policy=%d scratch_busy=%d: hook calls went undecided", what, got, s.NoPolicy, s.ScratchBusy)
		}
	default:
		t.Errorf("%s: bpfipe status: %s", what, res)
		return got
	}
	if !slices.Contains(candidates, got) {
		t.Errorf("%s: status reports %s, want one of %v", what, got, candidates)
	}

	cmd := exec.Command(k.probe)
	err := cmd.Run()
	allowed := err == nil
	if err != nil && !errors.Is(err, syscall.EACCES) {
		t.Fatalf("%s: probe exec: %v", what, err)
	}
	if !got.loaded() {
		if !allowed {
			t.Errorf("%s: status says %s, yet the probe was denied: enforcement outlives what bpfipe reports (pins: %q)", what, got, guestcli.PinLeftovers(t))
		}
		return got
	}
	want := k.o.actionOf(t, got.generation, subject(guestcli.Record{HasFile: true, Path: k.probe}))
	records := guestcli.About(k.c.Events(t), guestcli.HookBprm, k.probe)
	if len(records) == 0 && allowed {
		t.Errorf("%s: status reports %s, but the probe exec was not decided at all (allowed, no record): nothing enforces the policy bpfipe reports loaded (pins: %q)", what, got, guestcli.PinLeftovers(t))
		return got
	}
	// A refused exec leaves no process to name.
	if len(records) != 1 || allowed && records[0].PID != cmd.Process.Pid {
		t.Errorf("%s: want one record of the probe, got %v", what, records)
		return got
	}
	r := records[0]
	if r.Generation != got.generation || r.Action != want || allowed != (want == guestcli.ActionAllow) {
		t.Errorf("%s: status reports %s, which decides the probe %s; the probe was allowed=%t by generation %d (%s)", what, got, want, allowed, r.Generation, r.Action)
	}
	if err := k.o.check(r); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return got
}

// load starts a fresh load of a new version, which must succeed.
func (k *killTest) load(t *testing.T) enforcement {
	t.Helper()
	return k.install(t, "load", "--pin", "--success-audit")
}

// install runs load or update of the next version to completion.
func (k *killTest) install(t *testing.T, args ...string) enforcement {
	t.Helper()
	v := k.nextVersion()
	k.c.Must(t, append(args, k.policyFile(t, v))...)
	s := k.c.MustStatus(t)
	k.record(t, s.Generation, v)
	return enforcement{generation: s.Generation, version: v}
}

func (k *killTest) nextVersion() int {
	k.nextVer++
	return k.nextVer
}

// record notes that generation runs version, for the oracle and status.
func (k *killTest) record(t *testing.T, generation uint32, version int) {
	t.Helper()
	k.versionOf[generation] = version
	k.o.add(t, generation, togglePolicy(killPolicyName, version))
}

// unloadAll finishes whatever a killed command left: bpfipe unload must
// either unload or find nothing to unload, and afterwards nothing of
// bpfipe stays pinned or decides.
func (k *killTest) unloadAll(t *testing.T, what string) {
	t.Helper()
	res := k.c.Run(t, "unload")
	if res.Code != 0 && res.Code != guestcli.ExitNotLoaded {
		t.Errorf("%s: bpfipe unload: %s", what, res)
	}
	if left := guestcli.PinLeftovers(t); len(left) != 0 {
		t.Errorf("%s: after bpfipe unload, /sys/fs/bpf still holds %q", what, left)
	}
	k.versionOf = map[uint32]int{}
	k.o = newOracle()
	k.observe(t, what+", then unloaded", enforcement{})
}

// TestLoaderKilled kills bpfipe load, update and unload at random points
// (SIGKILL after a delay drawn between 0 and the command's typical
// duration, from a fixed seed). After each kill, what bpfipe status
// reports must be the state before the command or the state after it,
// complete, and enforcement must be exactly that state: a probe exec is
// decided by that state's policy, in that generation, or allowed when
// nothing is loaded. Then ordinary commands must recover: unload, a fresh
// load, a further update.
func TestLoaderKilled(t *testing.T) {
	guestcli.RequireGuest(t)
	k := &killTest{
		c:         guestcli.Initramfs(t),
		o:         newOracle(),
		probe:     tmpScript(t),
		dir:       t.TempDir(),
		rng:       rand.New(rand.NewPCG(killSeed1, killSeed2)),
		typical:   map[string]time.Duration{},
		killed:    map[string]int{},
		finished:  map[string]int{},
		versionOf: map[uint32]int{},
	}
	t.Cleanup(func() { k.c.UnloadAfter(t) })

	// Typical durations, from one undisturbed run of each.
	v := k.nextVersion()
	k.typical["load"] = timed(t, k.c, "load", "--pin", "--success-audit", k.policyFile(t, v))
	k.record(t, 1, v)
	v = k.nextVersion()
	k.typical["update"] = timed(t, k.c, "update", k.policyFile(t, v))
	k.record(t, 2, v)
	k.observe(t, "after an undisturbed update", enforcement{generation: 2, version: v})
	k.typical["unload"] = timed(t, k.c, "unload")
	k.versionOf, k.o = map[uint32]int{}, newOracle()
	t.Logf("typical durations: load %v, update %v, unload %v", k.typical["load"], k.typical["update"], k.typical["unload"])

	for cycle := range killCycles {
		// A load killed: nothing, or the new policy in force.
		v := k.nextVersion()
		k.record(t, 1, v)
		run := k.kill(t, "load", "--pin", "--success-audit", k.policyFile(t, v))
		what := fmt.Sprintf("cycle %d: load killed after %v", cycle, run.delay)
		k.observe(t, what, enforcement{}, enforcement{generation: 1, version: v})
		k.unloadAll(t, what)
		current := k.load(t)

		for i := range updateKillsPerCycle {
			v := k.nextVersion()
			next := enforcement{generation: current.generation + 1, version: v}
			k.record(t, next.generation, v)
			run := k.kill(t, "update", k.policyFile(t, v))
			what := fmt.Sprintf("cycle %d: update %d killed after %v", cycle, i, run.delay)
			k.observe(t, what, current, next)
			// An update must still go through, whatever the kill left.
			current = k.install(t, "update")
			k.observe(t, what+", then updated", current)
		}

		run = k.kill(t, "unload")
		what = fmt.Sprintf("cycle %d: unload killed after %v", cycle, run.delay)
		k.observe(t, what, current, enforcement{}, enforcement{unloadInterrupted: true})
		k.unloadAll(t, what)
	}
	t.Logf("killed mid-way: %v; finished before the kill: %v", k.killed, k.finished)
	for _, cmd := range []string{"load", "update", "unload"} {
		if k.killed[cmd] == 0 {
			t.Errorf("no %s was killed before it finished: the schedule tested nothing for it", cmd)
		}
	}
}
