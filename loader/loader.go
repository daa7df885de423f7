// Package loader is bpfipe's privileged side: it probes the kernel, loads
// and attaches the BPF programs, fills their maps from a compiled policy,
// pins the running state under /sys/fs/bpf/bpfipe so any later bpfipe
// command can find it, swaps policies, and reads decision events.
package loader

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// Options say how to start enforcement.
type Options struct {
	Policy       *PolicyFile
	Enforcing    bool
	SuccessAudit bool
	// CgroupPath scopes enforcement to the tasks of one cgroup v2
	// directory and its descendants; empty means system-wide.
	CgroupPath string
	// BootRoot names the boot_verified filesystem; empty detects the
	// initramfs (see DetectBootRoot).
	BootRoot string
	// Foreground records the calling process as the loader to stop on
	// unload; with false (--pin) enforcement has no process at all.
	Foreground bool
	// Warn receives what the user should know but that does not stop the
	// load: properties this kernel cannot observe, rules that never match.
	Warn func(string)

	// Tamper resistance (guard.go). Lock refuses unload, permissive mode
	// and unsigned updates until reboot; Trusted are the --trust
	// certificates, which every later update must then be signed by.
	Lock    bool
	Trusted []*x509.Certificate
}

// capturePrefix marks programs that feed the devices map from hooks only
// newer kernels have; they are left out where the hook is missing.
const capturePrefix = "capture_"

// Loader owns what one load created: the collection, the policy rows, the
// state map, the cgroup directory and the links. Closing it releases the
// process's handles; the pins keep enforcement alive until Stop or unload.
type Loader struct {
	paths  paths
	coll   *ebpf.Collection
	rows   *ebpf.Map
	state  *ebpf.Map
	cgroup *os.File
	links  []link.Link
	// linkNames[i] is the program of links[i].
	linkNames []string
	kernel    *Kernel
	instance  string
	// guard is the tamper guard (guard.go); nil when nothing is attached.
	guard *guard
	// Running is the published enforcement, opened from its pins.
	Running *Running
}

// Start loads, attaches and pins enforcement of opts.Policy. Nothing of a
// failed start stays in the kernel: the error says which step failed and
// everything opened so far is closed, which detaches what was attached.
func Start(opts Options) (*Loader, error) { return start(defaultPaths, opts) }

func start(p paths, opts Options) (_ *Loader, err error) {
	if opts.Warn == nil {
		opts.Warn = func(string) {}
	}
	if err := Probe(); err != nil {
		return nil, err
	}
	unlock, err := p.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := p.checkNotLoaded(); err != nil {
		return nil, err
	}
	if err := mountBPFFS(filepath.Dir(p.pinDir)); err != nil {
		return nil, err
	}
	if err := p.removeStaging(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}

	l := &Loader{paths: p}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.kernel, err = DetectKernel(); err != nil {
		return nil, err
	}
	spec, err := bpf.LoadSpec()
	if err != nil {
		return nil, fmt.Errorf("load BPF object: %w", err)
	}
	if err := selectPrograms(spec, l.kernel); err != nil {
		return nil, err
	}
	if err := l.install(spec, opts); err != nil {
		return nil, err
	}
	// Device resolver wiring (resolver.go): pinned loads without
	// in-kernel capture leave a resolver behind.
	l.startResolverAfterLoad(opts)
	return l, nil
}

// checkNotLoaded refuses to load over pins that are there, naming the
// command to run; an interrupted unload is told apart from a running load
// (interrupted.go). The caller holds the command lock.
func (p paths) checkNotLoaded() error {
	loaded, err := p.loaded()
	if err != nil {
		return guardRefusal(err)
	}
	if !loaded {
		return nil
	}
	if _, err := p.settleLocked(); err != nil {
		return err
	}
	return fmt.Errorf("%w: run bpfipe update to change its policy, or bpfipe unload first", ErrAlreadyLoaded)
}

// install loads spec, fills its maps, attaches its programs and publishes
// the result. The caller has probed, locked and chosen the programs; on
// error it closes l.
func (l *Loader) install(spec *ebpf.CollectionSpec, opts Options) (err error) {
	if l.instance, err = newInstanceID(); err != nil {
		return err
	}
	obs := l.kernel.Observability(func(name string) bool { return spec.Programs[name] != nil })
	pol := opts.Policy
	for _, w := range Unobservable(pol.Policy, obs) {
		opts.Warn(w)
	}
	tables, err := maps.Compile(pol.Policy, 1)
	if err != nil {
		return err
	}
	warnDead(tables, opts.Warn)
	boot, err := DetectBootRoot(opts.BootRoot)
	if err != nil {
		return err
	}
	if boot.Sdev == 0 {
		opts.Warn("no filesystem is boot_verified: " + boot.Why)
	}

	// The tamper guard goes first, so that everything below is born
	// protected (guard.go).
	if err := l.startGuard(spec); err != nil {
		return err
	}
	if l.guard != nil {
		for _, w := range guardWarnings() {
			opts.Warn(w)
		}
	}
	markObjects(spec)
	l.coll, err = ebpf.NewCollection(spec)
	if err != nil {
		return loadError("load BPF programs", err)
	}
	settings := bpf.Settings{
		Enforcing:    boolU32(opts.Enforcing),
		SuccessAudit: boolU32(opts.SuccessAudit),
		BootSdev:     boot.Sdev,
		UsableNeeds:  maps.UsableNeeds(obs),
	}
	if opts.CgroupPath != "" {
		if settings.CgroupId, err = l.scopeToCgroup(opts.CgroupPath); err != nil {
			return err
		}
	}
	if err := l.coll.Maps[mapSettings].Put(uint32(0), &settings); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	if l.rows, err = newPolicyRows(spec.Maps[mapPolicy].InnerMap, tables.Table); err != nil {
		return err
	}
	if err := l.coll.Maps[mapPolicy].Put(uint32(0), l.rows); err != nil {
		return fmt.Errorf("install policy rows: %w", err)
	}

	// Capture first, then resolve what exists, so a device set up in
	// between is seen by one or the other.
	if err := l.attach(func(name string) bool { return strings.HasPrefix(name, capturePrefix) }); err != nil {
		return err
	}
	mode := DMVerityUserspace
	if l.kernel.Capture() && spec.Programs["capture_bdev_setintegrity"] != nil {
		mode = DMVerityCapture
	}
	for _, w := range seedDevices(l.coll.Maps[mapDevices], mode == DMVerityUserspace) {
		opts.Warn(w)
	}

	st := &State{
		Instance:     l.instance,
		Active:       activePolicy(pol, 1),
		CgroupPath:   opts.CgroupPath,
		CgroupID:     settings.CgroupId,
		BootRoot:     boot.Source,
		BootSdev:     boot.Sdev,
		DMVerityMode: mode,
		Observable:   observableNames(obs),
		LoadedAt:     time.Now().UTC(),
		Guard:        l.guard.state(),
		Locked:       opts.Lock,
		Trusted:      trustedDER(opts.Trusted),
	}
	for name, prog := range spec.Programs {
		if prog.Type == ebpf.LSM {
			st.Programs = append(st.Programs, name)
		}
	}
	slices.Sort(st.Programs)
	if opts.Foreground {
		st.PID = os.Getpid()
		if st.PIDStart, err = processStart(st.PID); err != nil {
			return err
		}
	}
	if l.state, err = newStateMap(st); err != nil {
		return err
	}

	if err := l.attach(func(name string) bool { return !strings.HasPrefix(name, capturePrefix) }); err != nil {
		return err
	}
	if err := l.publish(); err != nil {
		return err
	}
	// Under the command lock, and just published whole: nothing to settle.
	if l.Running, err = openPinned(l.paths); err != nil {
		// Published but unreadable: take it down again rather than leave
		// enforcement no command can reach. Closing l detaches the rest.
		takeDown(l.paths.pinDir)
		return err
	}
	return nil
}

// Hooks lists the LSM hooks a load attaches programs to on this kernel,
// the tamper guard's included: sorted, each once. A BPF LSM program on a
// hook costs every call of the hook a trampoline, whatever the program
// does, so these are where bpfipe's cost floor lies (docs/benchmarks.md).
func Hooks() ([]string, error) {
	k, err := DetectKernel()
	if err != nil {
		return nil, err
	}
	spec, err := bpf.LoadSpec()
	if err != nil {
		return nil, fmt.Errorf("load BPF object: %w", err)
	}
	if err := selectPrograms(spec, k); err != nil {
		return nil, err
	}
	guard, err := bpf.LoadGuardSpec()
	if err != nil {
		return nil, fmt.Errorf("load guard object: %w", err)
	}
	if err := checkGuardHooks(guard, k); err != nil {
		return nil, err
	}
	var hooks []string
	for _, s := range []*ebpf.CollectionSpec{spec, guard} {
		for _, p := range s.Programs {
			hooks = append(hooks, p.AttachTo)
		}
	}
	slices.Sort(hooks)
	return slices.Compact(hooks), nil
}

// selectPrograms keeps the LSM programs this kernel can attach. A capture_
// program whose hook is missing is dropped (its information then comes
// from userspace or is unobservable); any other missing hook is an error,
// since enforcement would have a hole. Programs of other types are for
// tests and are not loaded.
func selectPrograms(spec *ebpf.CollectionSpec, k *Kernel) error {
	for name, prog := range spec.Programs {
		if prog.Type != ebpf.LSM {
			delete(spec.Programs, name)
			continue
		}
		if k.HasHook(prog.AttachTo) {
			continue
		}
		if strings.HasPrefix(name, capturePrefix) {
			delete(spec.Programs, name)
			continue
		}
		return fmt.Errorf("select BPF programs: this kernel has no LSM hook %s, which program %s needs", prog.AttachTo, name)
	}
	return nil
}

// attach attaches the loaded LSM programs that pick selects, in name order.
func (l *Loader) attach(pick func(name string) bool) error {
	names := make([]string, 0, len(l.coll.Programs))
	for name := range l.coll.Programs {
		if pick(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		lk, err := link.AttachLSM(link.LSMOptions{Program: l.coll.Programs[name]})
		if err != nil {
			return fmt.Errorf("attach %s: %w", name, classifyAttach(err))
		}
		l.links = append(l.links, lk)
		l.linkNames = append(l.linkNames, name)
	}
	return nil
}

func classifyAttach(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w (%v)", ErrLSMRefused, err)
	}
	return err
}

// publish pins everything into a staging directory and renames it into
// place, so other commands see all of the running state or none of it.
func (l *Loader) publish() error {
	staging := l.paths.stagingDir()
	if err := os.Mkdir(staging, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	// Protected before anything is pinned in it, sealed before the
	// rename makes it visible (guard.go).
	err := l.guard.protectDir(staging)
	if err == nil {
		err = l.pinAll(staging)
	}
	if err == nil {
		err = l.guard.seal(l.links)
	}
	if err == nil {
		err = os.Rename(staging, l.paths.pinDir)
	}
	if err != nil {
		removePinDir(staging)
		return fmt.Errorf("pin running state: %w", err)
	}
	return nil
}

func (l *Loader) pinAll(dir string) error {
	for name, m := range l.coll.Maps {
		// .rodata and friends are reached through the programs.
		if strings.HasPrefix(name, ".") {
			continue
		}
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	if err := l.state.Pin(filepath.Join(dir, stateName)); err != nil {
		return err
	}
	for i, lk := range l.links {
		if err := lk.Pin(filepath.Join(dir, linkPrefix+l.linkNames[i])); err != nil {
			return err
		}
	}
	return nil
}

// scopeToCgroup puts the cgroup v2 directory at path into cgroup_scope and
// returns its id, which is its inode number on cgroup2.
func (l *Loader) scopeToCgroup(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open cgroup: %w", err)
	}
	l.cgroup = f
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return 0, fmt.Errorf("statfs cgroup: %w", err)
	}
	if sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("scope to cgroup: %s is not on a cgroup v2 filesystem", path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat cgroup: %w", err)
	}
	if err := l.coll.Maps[mapCgroupScope].Put(uint32(0), uint32(f.Fd())); err != nil {
		return 0, fmt.Errorf("write cgroup scope: %w", err)
	}
	return st.Ino, nil
}

// Stop detaches enforcement started in the foreground: it removes the pins
// unless another load has replaced them since, then closes everything.
func (l *Loader) Stop() error {
	if l == nil {
		return nil
	}
	// A locked load outlives its loader (guard.go): the pins keep it.
	if l.Running != nil && l.Running.State.Locked {
		return l.Close()
	}
	guardProgs := l.guard.programIDs() // guard.go
	ids, first := l.unpinOwn()
	if err := l.Close(); err != nil && first == nil {
		first = err
	}
	if err := waitLinksGone(ids, detachTimeout); err != nil && first == nil {
		first = err
	}
	if err := waitProgramsGone(guardProgs, detachTimeout); err != nil && first == nil {
		first = err
	}
	return first
}

// unpinOwn takes down the pins if they are still this load's. The loader's
// own link handles keep the programs attached until Close.
func (l *Loader) unpinOwn() ([]link.ID, error) {
	unlock, err := l.paths.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	m, err := loadPinnedMap(l.paths, stateName)
	if errors.Is(err, ErrNotLoaded) {
		return nil, nil // unloaded from elsewhere already
	}
	if err != nil {
		return nil, err
	}
	st, err := readStateMap(m)
	m.Close()
	if err != nil {
		return nil, err
	}
	if st.Instance != l.instance {
		return nil, nil
	}
	return takeDown(l.paths.pinDir)
}

// Close releases the loader's handles in reverse order of creation and
// returns the first error. Without pins that detaches everything.
func (l *Loader) Close() error {
	if l == nil {
		return nil
	}
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	if l.Running != nil {
		keep(l.Running.Close())
	}
	for i := len(l.links) - 1; i >= 0; i-- {
		keep(l.links[i].Close())
	}
	keep(l.guard.Close())
	if l.state != nil {
		keep(l.state.Close())
	}
	if l.rows != nil {
		keep(l.rows.Close())
	}
	if l.coll != nil {
		l.coll.Close()
	}
	if l.cgroup != nil {
		keep(l.cgroup.Close())
	}
	*l = Loader{paths: l.paths}
	return first
}

// newPolicyRows creates the map of a policy's table (maps.Tables.Table),
// an array sized to it, from the inner map template of the policy map (the kernel
// accepts an inner map whose type, key, value and flags match; the size
// may differ, which BPF_F_INNER_MAP allows).
func newPolicyRows(template *ebpf.MapSpec, table []bpf.Row) (*ebpf.Map, error) {
	spec := template.Copy()
	spec.Name = "bpfipe_rows"
	spec.MaxEntries = uint32(len(table))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create policy table (%d rows): %w", len(table), err)
	}
	indices := make([]uint32, len(table))
	for i := range indices {
		indices[i] = uint32(i)
	}
	_, err = m.BatchUpdate(indices, table, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		err = nil
		for i := range indices {
			if err = m.Update(&indices[i], &table[i], ebpf.UpdateAny); err != nil {
				break
			}
		}
	}
	if err == nil {
		// Root could otherwise rewrite verdicts with bpftool behind the
		// policy's back; a new policy gets a new map.
		err = m.Freeze()
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("fill policy table: %w", err)
	}
	return m, nil
}

func activePolicy(f *PolicyFile, generation uint32) ActivePolicy {
	return ActivePolicy{
		Name:       f.Policy.Name,
		Version:    f.Policy.Version.String(),
		Generation: generation,
		Digest:     f.Digest(),
		Signed:     f.Signed,
		Text:       string(f.Text),
	}
}

func warnDead(t *maps.Tables, warn func(string)) {
	for _, d := range t.Dead {
		warn(fmt.Sprintf("rule on line %d can never match: %s", d.Line, d.Reason))
	}
}

// verifierError prints the verifier's log in full (%+v), which is what a
// user needs to see when a program is rejected.
type verifierError struct {
	step string
	err  *ebpf.VerifierError
}

func (e *verifierError) Error() string { return fmt.Sprintf("%s: %+v", e.step, e.err) }
func (e *verifierError) Unwrap() error { return e.err }

func loadError(step string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if len(ve.Log) == 0 && errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%s: %w", step, ErrLSMRefused)
		}
		return &verifierError{step: step, err: ve}
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%s: %w", step, ErrLSMRefused)
	}
	return fmt.Errorf("%s: %w", step, err)
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func newInstanceID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make instance id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// processStart is a process's start time in clock ticks since boot, field
// 22 of /proc/PID/stat, which with the PID names one process for good.
func processStart(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process start: %w", err)
	}
	return parseProcessStart(string(data))
}

func parseProcessStart(stat string) (uint64, error) {
	// comm, field 2, may hold spaces and parentheses: count from the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse process stat: no comm")
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse process stat: %d fields", len(fields)+2)
	}
	var start uint64
	if _, err := fmt.Sscan(fields[19], &start); err != nil {
		return 0, fmt.Errorf("parse process start: %w", err)
	}
	return start, nil
}

// policyFromState parses the policy text a state holds.
func policyFromState(a *ActivePolicy) *policy.Policy {
	p, err := a.Parse()
	if err != nil {
		return nil
	}
	return p
}
