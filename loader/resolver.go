package loader

// The device resolver. Kernels before 6.12 have no bdev_setintegrity hook,
// so nothing in the kernel tells the BPF programs a dm-verity device's root
// hash: userspace reads the tables and writes the devices map. A foreground
// loader does that itself while it runs; a pinned load (load --pin) leaves a
// small daemon behind, `bpfipe resolver`, for as long as enforcement lasts.
//
// Both follow devices the same way (followDevices): listen to block
// uevents first, then scan, so that a device set up between the two is seen
// by one or the other; scan again on every device-mapper disk event, after
// the uevent queue overflowed, and every few seconds in case an event was
// missed. docs/devices.md explains why an entry can never vouch for a device
// it was not made for.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/loader/blockdev"
)

// ResolverCommand is the command line, after this program's own
// executable, that runs RunResolver. A program offering the resolver sets
// it (bpfipe's resolver subcommand does); while it is nil, pinned loads
// start no resolver, and devices set up after such a load stay unknown
// until bpfipe update, which fails closed under a deny-by-default policy.
var ResolverCommand []string

var (
	// ErrResolverRunning: another resolver already follows the devices.
	ErrResolverRunning = errors.New("a device resolver is already running")
	// ErrNoResolverNeeded: the kernel records dm-verity root hashes
	// itself, or a foreground loader follows the devices.
	ErrNoResolverNeeded = errors.New("no device resolver is needed")
)

// Files under the run directory (/run/bpfipe): the record naming the
// running resolver, its log, the lock that keeps it unique, and the lock
// that makes every read-the-tables-then-write-the-map step atomic with
// respect to the others (resolver, foreground loader, update).
const (
	resolverRecordName = "resolver.json"
	resolverLockName   = "resolver.lock"
	resolverLogName    = "resolver.log"
	devicesLockName    = "devices.lock"
)

// resolverNotifyEnv names the descriptor on which a resolver started by
// startResolver reports that it is ready, or why it could not start.
const resolverNotifyEnv = "BPFIPE_RESOLVER_NOTIFY_FD"

// How often devices are scanned without an event (tests shorten it).
var rescanInterval = 5 * time.Second

// How long a stopped resolver and a starting one are waited for.
const (
	resolverStopWait    = 5 * time.Second
	resolverStartupWait = 30 * time.Second
)

// runDir holds the resolver's files, next to the command lock.
func (p paths) runDir() string { return filepath.Join(filepath.Dir(p.lockFile), "bpfipe") }

func (p paths) run(name string) string { return filepath.Join(p.runDir(), name) }

// flockFile takes an exclusive lock on path, waiting for it unless
// nonBlocking; the lock lasts until unlock or the process's death.
func flockFile(path string, nonBlocking bool) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	how := unix.LOCK_EX
	if nonBlocking {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// ResolverStatus says whether a resolver follows the devices of the
// running enforcement.
type ResolverStatus struct {
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Log is where a detached resolver writes what it does.
	Log string `json:"log,omitempty"`
}

// resolverRecord is resolver.json: which process resolves for which load.
type resolverRecord struct {
	PID       int       `json:"pid"`
	PIDStart  uint64    `json:"pid_start"`
	Instance  string    `json:"instance"`
	StartedAt time.Time `json:"started_at"`
	Log       string    `json:"log,omitempty"`
}

func readResolverRecord(p paths) (*resolverRecord, error) {
	data, err := os.ReadFile(p.run(resolverRecordName))
	if err != nil {
		return nil, err
	}
	var rec resolverRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("read resolver record: %w", err)
	}
	return &rec, nil
}

func writeResolverRecord(p paths, rec *resolverRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode resolver record: %w", err)
	}
	tmp := p.run(resolverRecordName + ".new")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write resolver record: %w", err)
	}
	if err := os.Rename(tmp, p.run(resolverRecordName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write resolver record: %w", err)
	}
	return nil
}

// removeResolverRecord removes the record if it still names pid, so a
// resolver on its way out never removes its successor's.
func removeResolverRecord(p paths, pid int) {
	if rec, err := readResolverRecord(p); err == nil && rec.PID == pid {
		os.Remove(p.run(resolverRecordName))
	}
}

// processAlive reports whether pid is still the process that started at
// start clock ticks and has not exited. A zombie counts as exited: an
// orphaned resolver's parent may be an init that never reaps.
func processAlive(pid int, start uint64) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	stat := string(data)
	now, err := parseProcessStart(stat)
	if err != nil || now != start {
		return false
	}
	i := strings.LastIndexByte(stat, ')')
	fields := strings.Fields(stat[i+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// resolverStatus reports the resolver serving instance; one left over from
// another load is not running as far as this load is concerned.
func resolverStatus(p paths, instance string) ResolverStatus {
	rec, err := readResolverRecord(p)
	if err != nil {
		return ResolverStatus{}
	}
	if !processAlive(rec.PID, rec.PIDStart) || rec.Instance != instance {
		return ResolverStatus{}
	}
	return ResolverStatus{Running: true, PID: rec.PID, StartedAt: rec.StartedAt, Log: rec.Log}
}

// ResolverOptions configure RunResolver.
type ResolverOptions struct {
	// Log receives what the resolver does and what goes wrong without
	// stopping it; nil discards it.
	Log func(string)
}

// RunResolver follows the dm-verity devices of the running enforcement
// until ctx ends or the enforcement is unloaded. It refuses to run twice,
// where the kernel captures root hashes itself, and beside a live
// foreground loader.
func RunResolver(ctx context.Context, opts ResolverOptions) error {
	return runResolver(ctx, defaultPaths, opts)
}

func runResolver(ctx context.Context, p paths, opts ResolverOptions) (err error) {
	logf := opts.Log
	if logf == nil {
		logf = func(string) {}
	}
	notify := takeNotifyPipe()
	ready := false
	defer func() {
		if notify != nil {
			if !ready {
				fmt.Fprintf(notify, "error: %v\n", err)
			}
			notify.Close()
		}
	}()

	unlock, err := flockFile(p.run(resolverLockName), true)
	if errors.Is(err, unix.EWOULDBLOCK) {
		if rec, rerr := readResolverRecord(p); rerr == nil {
			return fmt.Errorf("%w (pid %d)", ErrResolverRunning, rec.PID)
		}
		return ErrResolverRunning
	}
	if err != nil {
		return err
	}
	defer unlock()

	running, err := openRunning(p)
	if err != nil {
		return err
	}
	defer running.Close()
	st := running.State
	if st.DMVerityMode != DMVerityUserspace {
		return fmt.Errorf("%w: this kernel records dm-verity root hashes itself (%s)", ErrNoResolverNeeded, st.DMVerityMode)
	}
	if st.LoaderRunning() {
		return fmt.Errorf("%w: the foreground loader (pid %d) follows the devices itself", ErrNoResolverNeeded, st.PID)
	}

	pid := os.Getpid()
	start, err := processStart(pid)
	if err != nil {
		return err
	}
	rec := &resolverRecord{PID: pid, PIDStart: start, Instance: st.Instance, StartedAt: time.Now().UTC(), Log: logPathOf(os.Stderr)}
	if err := writeResolverRecord(p, rec); err != nil {
		return err
	}
	defer removeResolverRecord(p, pid)

	f := &deviceFollower{paths: p, devices: running.devices, note: logf, warn: func(w string) { logf("warning: " + w) }}
	stillLoaded := func() bool {
		now, err := readState(p)
		if err != nil || now.Instance != st.Instance {
			logf("enforcement was unloaded; stopping")
			return false
		}
		return true
	}
	f.follow(ctx, stillLoaded, func() {
		ready = true
		if notify != nil {
			fmt.Fprintln(notify, "ready")
			notify.Close()
			notify = nil
		}
		logf(fmt.Sprintf("following dm-verity devices for policy %q (instance %s)", st.Active.Name, st.Instance))
	})
	return nil
}

// logPathOf names the file w writes to, when it is one; a detached
// resolver's standard error is its log.
func logPathOf(f *os.File) string {
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil || !strings.HasPrefix(target, "/") {
		return ""
	}
	return target
}

// takeNotifyPipe returns the readiness pipe startResolver passed, and
// keeps it from children.
func takeNotifyPipe() *os.File {
	v, ok := os.LookupEnv(resolverNotifyEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(resolverNotifyEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "resolver-notify")
}

// deviceFollower keeps the devices map equal to the live dm-verity devices.
type deviceFollower struct {
	paths   paths
	devices *ebpf.Map
	// note receives each change to the map, warn what goes wrong; either
	// may be nil.
	note, warn func(string)
	// warned holds the warnings already logged, so that a rescan every
	// few seconds does not repeat them.
	warned map[string]bool
}

// follow listens to uevents, scans once, calls started, and then scans
// again as devices change until ctx ends or alive (asked before every
// scan) says to stop. Listening comes before the first scan: a device set
// up in between is then in the scan, or its event is queued.
func (f *deviceFollower) follow(ctx context.Context, alive func() bool, started func()) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	listener, err := blockdev.ListenUevents()
	if err != nil {
		f.warnf("listen for device uevents: " + err.Error() + fmt.Sprintf("; scanning every %v only", rescanInterval))
	} else {
		go func() {
			<-ctx.Done()
			listener.Close()
		}()
		go f.readUevents(ctx, listener, poke)
	}

	f.sync()
	if started != nil {
		started()
	}
	tick := time.NewTicker(rescanInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
		if !alive() {
			return
		}
		f.sync()
	}
}

func (f *deviceFollower) readUevents(ctx context.Context, listener *blockdev.UeventListener, poke func()) {
	for {
		ev, err := listener.Next()
		switch {
		case errors.Is(err, blockdev.ErrUeventOverflow):
			// Any device may have changed meanwhile.
			f.notef("uevents were lost (queue overflow); scanning all devices")
			poke()
		case err != nil:
			if ctx.Err() == nil {
				f.warnf("read device uevents: " + err.Error() + fmt.Sprintf("; scanning every %v only", rescanInterval))
			}
			return
		case ev.IsDMDisk():
			// add: not yet a table; change: a table went live on
			// resume; remove: gone. Each one can change the answer.
			poke()
		}
	}
}

func (f *deviceFollower) notef(msg string) {
	if f.note != nil {
		f.note(msg)
	}
}

func (f *deviceFollower) warnf(msg string) {
	if f.warn != nil {
		f.warn(msg)
	}
}

// sync scans the devices once and writes the differences, logging each
// change and each warning it has not logged before.
func (f *deviceFollower) sync() {
	changes, warnings := syncDevicesLocked(f.paths, f.devices)
	for _, c := range changes {
		f.notef(c)
	}
	if f.warned == nil {
		f.warned = map[string]bool{}
	}
	for _, w := range warnings {
		if !f.warned[w] {
			f.warned[w] = true
			f.warnf(w)
		}
	}
}

// syncDevicesLocked is syncDevices under the devices lock.
func syncDevicesLocked(p paths, m *ebpf.Map) (changes, warnings []string) {
	unlock, err := flockFile(p.run(devicesLockName), false)
	if err != nil {
		return nil, []string{err.Error()}
	}
	defer unlock()
	return syncDevices(m)
}

// syncDevices makes the devices map hold exactly the live dm-verity
// devices: entries of devices that are gone are deleted, new or changed
// ones written, each entry as one whole-value update. A device that cannot
// be read has no entry, so its files get no dm-verity property: rules
// that allow by root hash do not match it.
func syncDevices(m *ebpf.Map) (changes, warnings []string) {
	devs, err := resolveDevices()
	if err != nil {
		// Keep what is known: wiping the map on a transient failure
		// would deny every verity file, and stale entries cannot match a
		// new disk (their disk sequence number is gone for good).
		return nil, []string{err.Error() + "; keeping the entries already known"}
	}
	entries, warnings := deviceEntries(devs)
	names := make(map[bpf.DeviceKey]string, len(devs))
	for _, d := range devs {
		names[bpf.DeviceKey{Dev: d.KernelDev(), Diskseq: d.DiskSeq}] = d.Name
	}

	existing := map[bpf.DeviceKey]bpf.Device{}
	var key bpf.DeviceKey
	var value bpf.Device
	it := m.Iterate()
	for it.Next(&key, &value) {
		existing[key] = value
	}
	if err := it.Err(); err != nil {
		warnings = append(warnings, fmt.Sprintf("read devices map: %v", err))
	}
	var stale []bpf.DeviceKey
	for k := range existing {
		if _, live := entries[k]; !live {
			stale = append(stale, k)
		}
	}
	slices.SortFunc(stale, compareDeviceKeys)
	for i := range stale {
		k := stale[i]
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			warnings = append(warnings, fmt.Sprintf("delete entry of %s: %v", describeKey(k), err))
			continue
		}
		changes = append(changes, fmt.Sprintf("forgot %s (gone)", describeKey(k)))
	}
	keys := make([]bpf.DeviceKey, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareDeviceKeys)
	for _, k := range keys {
		v := entries[k]
		if old, ok := existing[k]; ok && old == v {
			continue
		}
		if err := m.Put(&k, &v); err != nil {
			warnings = append(warnings, fmt.Sprintf("record %s: %v", describeKey(k), err))
			continue
		}
		changes = append(changes, fmt.Sprintf("recorded %s %q: %s signed=%v", describeKey(k), names[k], formatDigest(v.RootHash), v.Signed != 0))
	}
	return changes, warnings
}

func compareDeviceKeys(a, b bpf.DeviceKey) int {
	if a.Dev != b.Dev {
		return int(int64(a.Dev) - int64(b.Dev))
	}
	switch {
	case a.Diskseq < b.Diskseq:
		return -1
	case a.Diskseq > b.Diskseq:
		return 1
	}
	return 0
}

func describeKey(k bpf.DeviceKey) string {
	major, minor := blockdev.SplitKernelDev(k.Dev)
	return fmt.Sprintf("device %d:%d diskseq %d", major, minor, k.Diskseq)
}

// formatDigest writes a map digest as policies do, ALG:HEX.
func formatDigest(d bpf.Digest) string {
	if d.Len == 0 || int(d.Len) > len(d.Bytes) {
		return "(none)"
	}
	alg := make([]byte, 0, len(d.Alg))
	for _, c := range d.Alg {
		if c == 0 {
			break
		}
		alg = append(alg, byte(c))
	}
	return fmt.Sprintf("%s:%x", alg, d.Bytes[:d.Len])
}

// refreshDevicesLocked is seedDevices under the devices lock, so that an
// update's scan and a resolver's do not interleave their reads and writes.
func refreshDevicesLocked(p paths, m *ebpf.Map) []string {
	unlock, err := flockFile(p.run(devicesLockName), false)
	if err != nil {
		return []string{err.Error()}
	}
	defer unlock()
	return seedDevices(m, true)
}

// StartResolver (re)starts the detached resolver of the running
// enforcement and waits until it has scanned the devices once.
func StartResolver() (ResolverStatus, error) {
	unlock, err := defaultPaths.lock()
	if err != nil {
		return ResolverStatus{}, err
	}
	defer unlock()
	st, err := readState(defaultPaths)
	if err != nil {
		return ResolverStatus{}, err
	}
	if st.DMVerityMode != DMVerityUserspace {
		return ResolverStatus{}, fmt.Errorf("%w: this kernel records dm-verity root hashes itself (%s)", ErrNoResolverNeeded, st.DMVerityMode)
	}
	return startResolver(defaultPaths, ResolverCommand)
}

// StopResolver stops the resolver, if one runs.
func StopResolver() error { return stopResolver(defaultPaths, resolverStopWait) }

// startResolver stops any resolver still running and starts this
// executable with args, detached (its own session, no terminal, output to
// the log), then waits for it to report that it follows the devices.
func startResolver(p paths, args []string) (ResolverStatus, error) {
	if args == nil {
		return ResolverStatus{}, errors.New("start device resolver: this program cannot run one")
	}
	exe, err := os.Executable()
	if err != nil {
		return ResolverStatus{}, fmt.Errorf("start device resolver: %w", err)
	}
	if err := stopResolver(p, resolverStopWait); err != nil {
		return ResolverStatus{}, err
	}
	if err := os.MkdirAll(p.runDir(), 0o700); err != nil {
		return ResolverStatus{}, fmt.Errorf("start device resolver: %w", err)
	}
	logPath := p.run(resolverLogName)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return ResolverStatus{}, fmt.Errorf("start device resolver: open log: %w", err)
	}
	defer logFile.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return ResolverStatus{}, fmt.Errorf("start device resolver: %w", err)
	}
	defer null.Close()
	notifyRead, notifyWrite, err := os.Pipe()
	if err != nil {
		return ResolverStatus{}, fmt.Errorf("start device resolver: %w", err)
	}
	defer notifyRead.Close()

	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, logFile, logFile
	cmd.ExtraFiles = []*os.File{notifyWrite} // fd 3
	cmd.Env = append(os.Environ(), resolverNotifyEnv+"=3")
	// Its own session: no terminal to lose, no signal meant for the
	// shell that ran bpfipe load.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	notifyWrite.Close()
	if err != nil {
		return ResolverStatus{}, fmt.Errorf("start device resolver: %w", err)
	}
	// Reap it if this process outlives it; otherwise init inherits it.
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()

	notifyRead.SetReadDeadline(time.Now().Add(resolverStartupWait))
	line, readErr := bufio.NewReader(notifyRead).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ready":
		st, err := readState(p)
		if err != nil {
			return ResolverStatus{}, err
		}
		return resolverStatus(p, st.Instance), nil
	case strings.HasPrefix(line, "error: "):
		<-exited
		return ResolverStatus{}, fmt.Errorf("start device resolver: %s", strings.TrimPrefix(line, "error: "))
	case errors.Is(readErr, os.ErrDeadlineExceeded):
		cmd.Process.Kill()
		<-exited
		return ResolverStatus{}, fmt.Errorf("start device resolver: not ready after %v; see %s", resolverStartupWait, logPath)
	default:
		<-exited
		return ResolverStatus{}, fmt.Errorf("start device resolver: it exited (%v) before it was ready; the end of %s:\n%s", cmd.ProcessState, logPath, resolverLogTail(p, 10))
	}
}

// stopResolver stops the recorded resolver: SIGTERM, then SIGKILL if it is
// still there after wait. A record naming a process that is gone is
// removed.
func stopResolver(p paths, wait time.Duration) error {
	if err := checkPrivileged(); err != nil {
		return fmt.Errorf("stop device resolver: %w", err)
	}
	rec, err := readResolverRecord(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// An unreadable record names no process we could stop.
		os.Remove(p.run(resolverRecordName))
		return nil
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !processAlive(rec.PID, rec.PIDStart) {
			removeResolverRecord(p, rec.PID)
			return nil
		}
		if err := syscall.Kill(rec.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop device resolver %d: %w", rec.PID, err)
		}
		deadline := time.Now().Add(wait)
		for processAlive(rec.PID, rec.PIDStart) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if processAlive(rec.PID, rec.PIDStart) {
		return fmt.Errorf("stop device resolver %d: still running after SIGKILL", rec.PID)
	}
	removeResolverRecord(p, rec.PID)
	return nil
}

// resolverLogTail returns the last lines of the resolver's log, for
// errors and status.
func resolverLogTail(p paths, lines int) string {
	f, err := os.Open(p.run(resolverLogName))
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(-64<<10, io.SeekEnd)
	}
	data, _ := io.ReadAll(f)
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// startResolverAfterLoad leaves a resolver behind a pinned load on a
// kernel without in-kernel capture, to follow the devices set up after
// the load's own scan. Enforcement is in place either way, so a resolver
// that does not start is a warning: devices it would have recorded stay
// unknown, which fails closed under a deny-by-default policy.
func (l *Loader) startResolverAfterLoad(opts Options) {
	if opts.Foreground || ResolverCommand == nil || l.Running.State.DMVerityMode != DMVerityUserspace {
		return
	}
	if _, err := startResolver(l.paths, ResolverCommand); err != nil {
		opts.Warn(err.Error() + "; dm-verity devices set up from now on stay unknown until bpfipe resolver --restart")
	}
}
