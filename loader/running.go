package loader

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// Running is a handle on the running enforcement, opened from its pins by
// any bpfipe command, whichever process started it.
type Running struct {
	paths    paths
	settings *ebpf.Map
	policy   *ebpf.Map
	devices  *ebpf.Map
	counters *ebpf.Map
	events   *ebpf.Map
	// State is the state as read when the handle was opened.
	State *State
}

// Open opens the running enforcement; ErrNotLoaded when there is none.
func Open() (*Running, error) {
	// Unprivileged, the pins are out of reach whether or not they exist:
	// say so rather than "not loaded" (guard.go).
	if err := checkPrivileged(); err != nil {
		return nil, err
	}
	r, err := openRunning(defaultPaths)
	return r, guardRefusal(err) // guard.go
}

// openRunning settles what a killed command left (interrupted.go), then
// opens the pins; the caller must not hold the command lock.
func openRunning(p paths) (*Running, error) {
	if err := p.settle(); err != nil {
		return nil, err
	}
	return openPinned(p)
}

// openPinned opens the pins as they are.
func openPinned(p paths) (_ *Running, err error) {
	r := &Running{paths: p}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.State, err = readState(p); err != nil {
		return nil, err
	}
	for _, m := range []struct {
		name string
		to   **ebpf.Map
	}{
		{mapSettings, &r.settings},
		{mapPolicy, &r.policy},
		{mapDevices, &r.devices},
		{mapCounters, &r.counters},
		{mapEvents, &r.events},
	} {
		if *m.to, err = loadPinnedMap(p, m.name); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func readState(p paths) (*State, error) {
	m, err := loadPinnedMap(p, stateName)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return readStateMap(m)
}

// Close releases the handle; enforcement is unaffected.
func (r *Running) Close() error {
	if r == nil {
		return nil
	}
	var first error
	for _, m := range []*ebpf.Map{r.events, r.counters, r.devices, r.policy, r.settings} {
		if m != nil {
			if err := m.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Settings reads the runtime switches.
func (r *Running) Settings() (bpf.Settings, error) {
	var s bpf.Settings
	if err := r.settings.Lookup(uint32(0), &s); err != nil {
		return s, fmt.Errorf("read settings: %w", err)
	}
	return s, nil
}

// SetEnforcing switches between enforcing and permissive and returns the
// previous mode. Like IPE's enforce file, permissive still evaluates and
// reports every decision but denies nothing.
func (r *Running) SetEnforcing(on bool) (old bool, err error) {
	return r.setSwitch(func(s *bpf.Settings) *uint32 { return &s.Enforcing }, on, !on)
}

// SetSuccessAudit switches reporting of ALLOW decisions and returns the
// previous setting.
func (r *Running) SetSuccessAudit(on bool) (old bool, err error) {
	return r.setSwitch(func(s *bpf.Settings) *uint32 { return &s.SuccessAudit }, on, false)
}

// setSwitch sets one switch; weakens says the change is one a locked load
// refuses (guard.go).
func (r *Running) setSwitch(field func(*bpf.Settings) *uint32, on, weakens bool) (bool, error) {
	unlock, err := r.paths.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	st, err := readState(r.paths)
	if err != nil {
		return false, err // unloaded since Open
	}
	if weakens {
		if err := st.checkLocked("switch to permissive"); err != nil {
			return false, err
		}
	}
	s, err := r.Settings()
	if err != nil {
		return false, err
	}
	f := field(&s)
	old := *f != 0
	*f = boolU32(on)
	if err := r.settings.Put(uint32(0), &s); err != nil {
		return old, fmt.Errorf("write settings: %w", err)
	}
	return old, nil
}

// CheckUpdate applies in-tree IPE's rules for replacing the active policy
// (policy.c ipe_update_policy): the name must stay the same (EINVAL) and
// the version must grow (ESTALE). Equal versions are refused too, as after
// Luca Boccassi's 2024 change; Linux 6.12 itself still accepted them.
func CheckUpdate(active ActivePolicy, next *policy.Policy) error {
	const step = "update policy"
	if next.Name != active.Name {
		return refuse(step, syscall.EINVAL, "the new policy is named %q, the active one %q; an update must keep the name", next.Name, active.Name)
	}
	old, err := active.VersionValue()
	if err != nil {
		return fmt.Errorf("%s: active policy: %w", step, err)
	}
	if next.Version.U64() <= old.U64() {
		return refuse(step, syscall.ESTALE, "version %s is not greater than the active %s", next.Version, old)
	}
	return nil
}

// Update replaces the active policy. The new rows are built in a map of
// their own and installed with one update of the policy map's slot, for
// which the kernel waits until no program still runs on the old rows: no
// decision mixes two policies, and a refused or failed update leaves the
// active policy exactly as it was.
func (r *Running) Update(f *PolicyFile, warn func(string)) (old, next ActivePolicy, err error) {
	if warn == nil {
		warn = func(string) {}
	}
	unlock, err := r.paths.lock()
	if err != nil {
		return old, next, err
	}
	defer unlock()
	live, err := r.paths.settleLocked() // interrupted.go
	if err != nil {
		return old, next, err
	}
	st, err := readState(r.paths)
	if err != nil {
		return old, next, err
	}
	old = st.Active
	if err := CheckUpdate(st.Active, f.Policy); err != nil {
		return old, next, err
	}
	if err := st.checkUpdateTrust(f); err != nil { // guard.go
		return old, next, err
	}
	for _, w := range Unobservable(f.Policy, st.observability()) {
		warn(w)
	}
	// Past the rows in force too: a generation must name one policy only,
	// as events and their rendering rely on.
	generation := max(st.Active.Generation, live) + 1
	tables, err := maps.Compile(f.Policy, generation)
	if err != nil {
		return old, next, err
	}
	warnDead(tables, warn)
	spec, err := bpf.LoadSpec()
	if err != nil {
		return old, next, fmt.Errorf("load BPF object: %w", err)
	}
	rows, err := newPolicyRows(spec.Maps[mapPolicy].InnerMap, tables.Table)
	if err != nil {
		return old, next, err
	}
	defer rows.Close()

	nextState := *st
	prev := st.Active
	nextState.Previous = &prev
	nextState.Active = activePolicy(f, generation)
	stateMap, err := newStateMap(&nextState)
	if err != nil {
		return old, next, err
	}
	defer stateMap.Close()
	nextPin := r.paths.pin(stateNextName)
	os.Remove(nextPin)
	if err := stateMap.Pin(nextPin); err != nil {
		return old, next, fmt.Errorf("pin new state: %w", err)
	}

	var previousRows *ebpf.Map
	if err := r.policy.Lookup(uint32(0), &previousRows); err != nil {
		os.Remove(nextPin)
		return old, next, fmt.Errorf("read active policy rows: %w", err)
	}
	defer previousRows.Close()
	if err := r.policy.Put(uint32(0), rows); err != nil {
		os.Remove(nextPin)
		return old, next, fmt.Errorf("swap policy rows: %w", err)
	}
	if err := os.Rename(nextPin, r.paths.pin(stateName)); err != nil {
		// The state must describe the rows in force: put the old back.
		if rerr := r.policy.Put(uint32(0), previousRows); rerr != nil {
			return old, next, fmt.Errorf("publish new state: %w (and restoring the previous policy failed: %v)", err, rerr)
		}
		os.Remove(nextPin)
		return old, next, fmt.Errorf("publish new state: %w", err)
	}
	r.State = &nextState
	if st.DMVerityMode == DMVerityUserspace {
		// Under the devices lock, not to interleave with a resolver (resolver.go).
		for _, w := range refreshDevicesLocked(r.paths, r.devices) {
			warn(w)
		}
	}
	return old, nextState.Active, nil
}

// RefreshDevices resolves the live dm-verity devices again where the
// kernel cannot capture them itself.
func (r *Running) RefreshDevices() []string {
	if r.State.DMVerityMode != DMVerityUserspace {
		return nil
	}
	return refreshDevicesLocked(r.paths, r.devices) // resolver.go
}

// observability rebuilds what the kernel could observe from the names the
// load recorded.
func (s *State) observability() policy.Observability {
	var obs policy.Observability
	for _, n := range s.Observable {
		switch n {
		case policy.PropDMVerityRootHash.String():
			obs.DMVerityRootHash = true
		case policy.PropDMVeritySignature.String():
			obs.DMVeritySignature = true
		case policy.PropFSVerityDigest.String():
			obs.FSVerityDigest = true
		case policy.PropFSVeritySignature.String():
			obs.FSVeritySignature = true
		}
	}
	return obs
}

// Unload detaches enforcement and removes its pins. A foreground loader
// still holds its links, so it is told to stop (SIGTERM) and awaited.
func Unload() (*State, error) { return unload(defaultPaths, 10*time.Second) }

func unload(p paths, wait time.Duration) (*State, error) {
	unlock, err := p.lock()
	if err != nil {
		return nil, err
	}
	st, err := readState(p)
	if err != nil && errors.Is(guardRefusal(err), ErrGuarded) {
		unlock()
		return nil, guardRefusal(err)
	}
	if err != nil && !errors.Is(err, ErrNotLoaded) {
		// Unreadable state: still take everything down, which is what
		// the user asked for.
		st = nil
	}
	if err := st.checkLocked("unload"); err != nil { // guard.go
		unlock()
		return st, err
	}
	// A load killed before it published is not loaded, but what it
	// pinned may enforce: it goes too (interrupted.go).
	if err := p.removeStaging(); err != nil {
		unlock()
		return st, err
	}
	if _, serr := os.Stat(p.pinDir); errors.Is(serr, os.ErrNotExist) {
		unlock()
		return nil, ErrNotLoaded
	}
	guardProgs := guardProgramIDs(p.pinDir) // guard.go
	ids, rerr := takeDown(p.pinDir)
	unlock()
	if rerr != nil {
		return st, rerr
	}
	if st != nil && st.PID != 0 {
		if err := stopForeground(st.PID, st.PIDStart, wait); err != nil {
			return st, err
		}
	}
	// The device resolver of a pinned load goes with it (resolver.go).
	if err := stopResolver(p, resolverStopWait); err != nil {
		return st, err
	}
	if err := waitLinksGone(ids, detachTimeout); err != nil {
		return st, err
	}
	return st, waitProgramsGone(guardProgs, detachTimeout) // guard.go
}

// stopForeground is stopProcess, replaceable in tests whose own process
// is the foreground loader.
var stopForeground = stopProcess

// stopProcess sends SIGTERM to the foreground loader pid, if it is still the
// process that loaded, and waits for it to exit.
func stopProcess(pid int, start uint64, wait time.Duration) error {
	if !processAlive(pid, start) {
		return nil // gone, a zombie, or the PID now names another process
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("stop foreground loader %d: %w", pid, err)
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if !processAlive(pid, start) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("stop foreground loader %d: still running after %v; it keeps enforcing until it exits", pid, wait)
}
