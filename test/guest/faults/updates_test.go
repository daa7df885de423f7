package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// Bounds of the update test: as many updates as bpfipe update can make in
// the budget, up to maxUpdates, while the loops below run. Under software
// emulation one update takes a tenth of a second or more.
const (
	maxUpdates   = 300
	updateBudget = 90 * time.Second
	maxExecs     = 4000
	maxMappings  = 8000
	// mappingPause keeps the mapping loop from starving the exec loop
	// and the event reader on the guest's one CPU.
	mappingPause = 2 * time.Millisecond
	page         = 4096
)

// operation is one exec or mapping of the load and how it ended. from and
// to bound the generations that can have decided it: the last update
// known complete when it started, and the last update begun when it
// ended.
type operation struct {
	kind     string
	pid      int
	allowed  bool
	failure  string // neither allowed nor refused with EACCES
	from, to uint32
}

// Kinds of mapping operations, in the order the mapping loop cycles them.
const (
	mapFileX        = "mmap of a /tmp file RX"
	mapAnonX        = "mmap of anonymous memory RX"
	mprotectAnonX   = "mprotect of anonymous memory to RX"
	mappingKindsLen = 3

	execTmpScript = "exec of a /tmp script"
)

// generations tracks the update in progress for the loops.
type generations struct {
	committed, inflight atomic.Uint32
}

func (g *generations) window(run func()) (from, to uint32) {
	from = g.committed.Load()
	run()
	return from, g.inflight.Load()
}

func outcome(err error) (allowed bool, failure string) {
	switch {
	case err == nil:
		return true, ""
	case errors.Is(err, syscall.EACCES):
		return false, ""
	default:
		return false, err.Error()
	}
}

// execLoop execs script until stop is closed or maxExecs are made.
func execLoop(script string, gens *generations, stop <-chan struct{}) []operation {
	var ops []operation
	for len(ops) < maxExecs {
		select {
		case <-stop:
			return ops
		default:
		}
		op := operation{kind: execTmpScript}
		var err error
		op.from, op.to = gens.window(func() {
			cmd := exec.Command(script)
			if err = cmd.Start(); err == nil {
				op.pid = cmd.Process.Pid
				if werr := cmd.Wait(); werr != nil {
					err = fmt.Errorf("script ran but failed: %w", werr)
				}
			}
		})
		op.allowed, op.failure = outcome(err)
		ops = append(ops, op)
	}
	return ops
}

// mappingLoop makes memory executable in the three ways the hooks see
// until stop is closed or maxMappings are made.
func mappingLoop(file *os.File, gens *generations, stop <-chan struct{}) []operation {
	var ops []operation
	kinds := [mappingKindsLen]string{mapFileX, mapAnonX, mprotectAnonX}
	for i := 0; len(ops) < maxMappings; i++ {
		select {
		case <-stop:
			return ops
		default:
		}
		op := operation{kind: kinds[i%mappingKindsLen], pid: os.Getpid()}
		var err error
		op.from, op.to = gens.window(func() { err = makeExecutable(op.kind, file) })
		op.allowed, op.failure = outcome(err)
		ops = append(ops, op)
		time.Sleep(mappingPause)
	}
	return ops
}

func makeExecutable(kind string, file *os.File) error {
	var mem []byte
	var err error
	switch kind {
	case mapFileX:
		mem, err = unix.Mmap(int(file.Fd()), 0, page, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
	case mapAnonX:
		mem, err = unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	case mprotectAnonX:
		mem, err = unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return fmt.Errorf("anonymous RW mapping, which no hook decides: %w", err)
		}
		err = unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC)
	}
	if mem != nil {
		unix.Munmap(mem)
	}
	return err
}

// hookOf is the hook and file (empty for none) that decide a mapping kind.
func hookOf(kind, file string) (hook, path string) {
	switch kind {
	case mapFileX:
		return guestcli.HookMmap, file
	case mapAnonX:
		return guestcli.HookMmap, ""
	default:
		return guestcli.HookMprotect, ""
	}
}

// TestUpdatesUnderLoad swaps between two policies as fast as bpfipe
// update can go while one loop execs a /tmp script and another makes
// anonymous memory and a /tmp file executable; the two policies decide all
// of these oppositely. With success auditing on and a reader following the
// events, every decision is reported: each must be what its generation's
// policy decides, each operation must have been decided by a generation
// in force while it ran, and the counters must equal the records.
func TestUpdatesUnderLoad(t *testing.T) {
	guestcli.RequireGuest(t)
	c := guestcli.Initramfs(t)
	script := tmpScript(t)
	mappedPath := guestcli.CopyToTmp(t, busybox, "mapped")
	mapped, err := os.Open(mappedPath)
	if err != nil {
		t.Fatal(err)
	}
	defer mapped.Close()
	policies := t.TempDir()
	o := newOracle()
	o.add(t, 1, togglePolicy("updates", 1))
	c.Load(t, togglePolicy("updates", 1), "--success-audit")
	reader := follow(t, c)

	var gens generations
	gens.committed.Store(1)
	gens.inflight.Store(1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var execs, mappings []operation
	wg.Add(2)
	go func() { defer wg.Done(); execs = execLoop(script, &gens, stop) }()
	go func() { defer wg.Done(); mappings = mappingLoop(mapped, &gens, stop) }()

	began := time.Now()
	last := uint32(1)
	for g := uint32(2); g <= maxUpdates+1 && time.Since(began) < updateBudget; g++ {
		text := togglePolicy("updates", int(g))
		file := filepath.Join(policies, fmt.Sprintf("v%d", g))
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		gens.inflight.Store(g)
		if res := c.Run(t, "update", file); res.Code != 0 {
			close(stop)
			wg.Wait()
			t.Fatalf("update to generation %d: %s", g, res)
		}
		o.add(t, g, text)
		gens.committed.Store(g)
		last = g
	}
	elapsed := time.Since(began)
	close(stop)
	wg.Wait()

	final, res := c.Status(t)
	if res.Code != 0 {
		t.Fatalf("bpfipe status: %s", res)
	}
	// A decision made after the counters were read, whose record marks
	// the end of what the counters cover.
	marker := exec.Command(busybox, "true")
	if err := marker.Run(); err != nil {
		t.Fatalf("run the marker: %v", err)
	}
	reader.waitFor(t, marker.Process.Pid, time.Minute)
	all, bad := reader.stop(t)
	if len(bad) > 0 {
		t.Errorf("bpfipe events --follow printed %d lines that are not access records: %q", len(bad), bad[:min(len(bad), 5)])
	}
	var records []guestcli.Record
	for _, r := range all {
		if r.PID != marker.Process.Pid {
			records = append(records, r)
		}
	}
	updates := last - 1
	t.Logf("%d updates in %v (%.0f ms each); %d execs and %d mappings decided; %d records",
		updates, elapsed.Round(time.Millisecond), float64(elapsed.Milliseconds())/float64(max(updates, 1)), len(execs), len(mappings), len(records))
	if final.Generation != last || final.Version != fmt.Sprintf("0.0.%d", last) {
		t.Errorf("status after the updates: generation %d version %q, want %d and 0.0.%d", final.Generation, final.Version, last, last)
	}

	checkRecords(t, o, records)
	checkCounters(t, final, records)
	checkExecs(t, execs, records, script)
	checkMappings(t, mappings, records, mappedPath)
}

// checkRecords holds every record to its generation's policy.
func checkRecords(t *testing.T, o *oracle, records []guestcli.Record) {
	t.Helper()
	wrong := 0
	for _, r := range records {
		if err := o.check(r); err != nil {
			if wrong < 10 {
				t.Error(err)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d records are not what their generation's policy decides", wrong, len(records))
	}
}

// checkCounters compares each hook's counters with the records of it:
// with success auditing on and nothing dropped they must be equal.
func checkCounters(t *testing.T, s *guestcli.Status, records []guestcli.Record) {
	t.Helper()
	if s.EventsDropped != 0 || s.ScratchBusy != 0 || s.NoPolicy != 0 {
		t.Errorf("status: events_dropped=%d scratch_busy=%d no_policy=%d, want 0", s.EventsDropped, s.ScratchBusy, s.NoPolicy)
	}
	type key struct{ hook, action string }
	seen := map[key]uint64{}
	for _, r := range records {
		seen[key{r.Hook, r.Action}]++
	}
	for _, h := range s.Hooks {
		if seen[key{h.Hook, guestcli.ActionAllow}] != h.Allow || seen[key{h.Hook, guestcli.ActionDeny}] != h.Deny {
			t.Errorf("%s counters allow=%d deny=%d, records allow=%d deny=%d",
				h.Hook, h.Allow, h.Deny, seen[key{h.Hook, guestcli.ActionAllow}], seen[key{h.Hook, guestcli.ActionDeny}])
		}
		delete(seen, key{h.Hook, guestcli.ActionAllow})
		delete(seen, key{h.Hook, guestcli.ActionDeny})
	}
	if len(seen) > 0 {
		t.Errorf("records of hooks status does not count: %v", seen)
	}
}

// checkExecs pairs the exec loop's operations with the records of the
// script, in order: one goroutine made them one after the other, so their
// records were reserved in that order. A refused exec leaves no process,
// so only an allowed one can be matched by pid too.
func checkExecs(t *testing.T, execs []operation, records []guestcli.Record, script string) {
	t.Helper()
	scripts := guestcli.About(records, guestcli.HookBprm, script)
	if len(scripts) != len(execs) {
		t.Errorf("%d execs of the script, %d records of it", len(execs), len(scripts))
	}
	var allowed, denied, wrong int
	for i, op := range execs {
		if op.failure != "" {
			t.Errorf("%s: %s", op.kind, op.failure)
			continue
		}
		if op.allowed {
			allowed++
		} else {
			denied++
		}
		if i >= len(scripts) {
			break
		}
		err := matchOperation(op, scripts[i], guestcli.HookBprm, script)
		if err == nil && op.allowed && scripts[i].PID != op.pid {
			err = fmt.Errorf("exec %d (pid %d) paired with the record of pid %d: %v", i, op.pid, scripts[i].PID, scripts[i])
		}
		if err != nil {
			if wrong < 10 {
				t.Errorf("exec %d: %v", i, err)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d execs disagree with their records", wrong, len(execs))
	}
	if allowed == 0 || denied == 0 {
		t.Errorf("execs: %d allowed, %d denied; want both policies to decide some", allowed, denied)
	}
}

// checkMappings pairs the mapping loop's operations with the records this
// process made about them, in order: one thread made them one after the
// other, so their records were reserved in that order.
func checkMappings(t *testing.T, mappings []operation, records []guestcli.Record, file string) {
	t.Helper()
	var mine []guestcli.Record
	for _, r := range records {
		if r.PID == os.Getpid() {
			mine = append(mine, r)
		}
	}
	if len(mine) != len(mappings) {
		t.Errorf("%d mapping operations, %d records of this process", len(mappings), len(mine))
	}
	wrong, allowed := 0, 0
	for i, op := range mappings {
		if op.failure != "" {
			t.Errorf("%s: %s", op.kind, op.failure)
			continue
		}
		if op.allowed {
			allowed++
		}
		if i >= len(mine) {
			break
		}
		hook, path := hookOf(op.kind, file)
		if err := matchOperation(op, mine[i], hook, path); err != nil {
			if wrong < 10 {
				t.Errorf("mapping %d: %v", i, err)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d mappings disagree with their records", wrong, len(mappings))
	}
	if allowed == 0 || allowed == len(mappings) {
		t.Errorf("mappings: %d of %d allowed; want both policies to decide some", allowed, len(mappings))
	}
}

// matchOperation checks that r is op's record; checkRecords holds the
// record itself to its generation's policy.
func matchOperation(op operation, r guestcli.Record, hook, path string) error {
	if r.Hook != hook || r.HasFile != (path != "") || r.Path != path {
		return fmt.Errorf("%s: record %v is about something else (want %s of %q)", op.kind, r, hook, path)
	}
	want := guestcli.ActionDeny
	if op.allowed {
		want = guestcli.ActionAllow
	}
	if r.Action != want {
		return fmt.Errorf("%s: %s, but its record says %s: %v", op.kind, want, r.Action, r)
	}
	if r.Generation < op.from || r.Generation > op.to {
		return fmt.Errorf("%s: decided by generation %d, but generations %d to %d were in force while it ran", op.kind, r.Generation, op.from, op.to)
	}
	return nil
}
