package loader

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/loader/dm"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// This host cannot load LSM programs, but it can create every map and run
// other program types. These tests run everything of a load except the
// attach, against a private bpffs, and drive the event ring buffer with a
// socket filter through BPF_PROG_TEST_RUN.

func privateBPFFS(t testing.TB) paths {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN, CAP_BPF) to mount a private bpffs and create maps")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return paths{pinDir: filepath.Join(mnt, "bpfipe"), lockFile: filepath.Join(dir, "lock")}
}

func testPolicy(t testing.TB, text string) *PolicyFile {
	t.Helper()
	f, err := DecodePolicy("test.pol", []byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const (
	policyV1 = "policy_name=test policy_version=1.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\n"
	policyV2 = "policy_name=test policy_version=1.0.1\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=EXECUTE dmverity_roothash=sha256:0102 action=ALLOW\nop=EXECUTE fsverity_signature=TRUE action=ALLOW\n"
)

// fakeVerity replaces the device-mapper resolver for one test.
func fakeVerity(t testing.TB, devs ...dm.VerityDevice) {
	t.Helper()
	saved := resolveVerity
	resolveVerity = func() ([]dm.VerityDevice, error) { return devs, nil }
	t.Cleanup(func() { resolveVerity = saved })
}

// installWithoutPrograms does what Start does after the probe, minus the
// programs this host refuses.
func installWithoutPrograms(t testing.TB, p paths, opts Options) (*Loader, []string) {
	t.Helper()
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{}
	var warnings []string
	opts.Warn = func(w string) { warnings = append(warnings, w) }
	if opts.BootRoot == "" {
		opts.BootRoot = t.TempDir()
	}
	l := &Loader{paths: p, kernel: &Kernel{}}
	if err := l.install(spec, opts); err != nil {
		l.Close()
		t.Fatalf("install: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, warnings
}

func TestInstallPublishesEverything(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t, dm.VerityDevice{Name: "root", Major: 254, Minor: 3, DiskSeq: 17, Algorithm: "sha256", RootHash: []byte{1, 2}, Signed: true, Verifies: true})
	l, warnings := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV2), Enforcing: true, Foreground: true})

	for _, name := range []string{stateName, mapPolicy, mapSettings, mapDevices, mapCounters, mapEvents, mapCgroupScope} {
		if _, err := os.Stat(p.pin(name)); err != nil {
			t.Errorf("%s not pinned: %v", name, err)
		}
	}
	if fi, err := os.Stat(p.pinDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("pin directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	if matches, _ := filepath.Glob(p.pinDir + "-new-*"); len(matches) != 0 {
		t.Errorf("staging left behind: %v", matches)
	}

	// A fake kernel observes nothing beyond root hashes: the fs-verity
	// signature rule draws a warning.
	if !strings.Contains(strings.Join(warnings, "\n"), "fsverity_signature cannot be established") {
		t.Errorf("no warning about fsverity_signature; warnings: %q", warnings)
	}

	st := l.Running.State
	if st.Active.Name != "test" || st.Active.Version != "1.0.1" || st.Active.Generation != 1 || st.PID != os.Getpid() || st.DMVerityMode != DMVerityUserspace {
		t.Errorf("state %+v", st)
	}
	settings, err := l.Running.Settings()
	if err != nil {
		t.Fatal(err)
	}
	if want := bpf.NeedBootVerified | bpf.NeedDVRows; settings.Enforcing != 1 || settings.SuccessAudit != 0 || settings.UsableNeeds != want {
		t.Errorf("settings %+v, want enforcing, no success audit, usable needs %#x (boot_verified and dm-verity root hash only)", settings, want)
	}

	// The device is keyed by the kernel's dev_t, 254<<20|3, not st_dev's 0xfe03.
	var dev bpf.Device
	key := bpf.DeviceKey{Dev: 254<<20 | 3, Diskseq: 17}
	if err := l.Running.devices.Lookup(&key, &dev); err != nil {
		t.Fatalf("device not seeded under the kernel dev_t: %v", err)
	}
	want, _ := maps.DigestKey(policy.Digest{Alg: "sha256", Bytes: []byte{1, 2}})
	if dev.RootHash != want || dev.Signed != 1 {
		t.Errorf("device %+v", dev)
	}

	// The rows in force are the compiled policy, generation and all.
	rows := activeRows(t, l.Running)
	tables, err := maps.Compile(testPolicy(t, policyV2).Policy, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(tables.Rows) {
		t.Fatalf("%d rows in the kernel, %d compiled", len(rows), len(tables.Rows))
	}
	for _, e := range tables.Rows {
		if got, ok := rows[e.Key]; !ok || got != e.Row {
			t.Errorf("row %+v missing or different", e.Key)
		}
	}

	loaded, err := p.loaded()
	if !loaded || err != nil {
		t.Errorf("loaded() = %v, %v after install", loaded, err)
	}
}

func activeRows(t *testing.T, r *Running) map[bpf.RowKey]bpf.Row {
	t.Helper()
	var inner *ebpf.Map
	if err := r.policy.Lookup(uint32(0), &inner); err != nil {
		t.Fatalf("read policy slot: %v", err)
	}
	defer inner.Close()
	table := make([]bpf.Row, inner.MaxEntries())
	for i := range table {
		if err := inner.Lookup(uint32(i), &table[i]); err != nil {
			t.Fatalf("read policy table row %d: %v", i, err)
		}
	}
	entries, err := bpf.TableRows(table)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[bpf.RowKey]bpf.Row{}
	for _, e := range entries {
		rows[e.Key] = e.Row
	}
	return rows
}

func generationOf(t *testing.T, r *Running) uint32 {
	t.Helper()
	for k, v := range activeRows(t, r) {
		if k.Kind == uint8(maps.KindBase) {
			return v.Generation
		}
	}
	t.Fatal("no BASE row")
	return 0
}

func TestUpdateSwapsRowsAndState(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true})
	r, err := openRunning(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Refusals leave the policy as it was.
	for _, tc := range []struct {
		text  string
		errno syscall.Errno
	}{
		{policyV1, syscall.ESTALE},
		{strings.Replace(policyV2, "policy_name=test", "policy_name=other", 1), syscall.EINVAL},
	} {
		_, _, err := r.Update(testPolicy(t, tc.text), nil)
		if !errors.Is(err, tc.errno) {
			t.Errorf("got %v, want %v", err, tc.errno)
		}
		if g := generationOf(t, r); g != 1 {
			t.Errorf("after a refused update the rows are of generation %d", g)
		}
	}

	old, next, err := r.Update(testPolicy(t, policyV2), nil)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if old.Version != "1.0.0" || next.Version != "1.0.1" || next.Generation != 2 {
		t.Errorf("update reported %+v -> %+v", old, next)
	}
	if g := generationOf(t, r); g != 2 {
		t.Errorf("rows in force are of generation %d, want 2", g)
	}
	st, err := readState(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Active.Version != "1.0.1" || st.Previous == nil || st.Previous.Version != "1.0.0" {
		t.Errorf("state after update: active %+v previous %+v", st.Active, st.Previous)
	}
	if _, err := os.Stat(p.pin(stateNextName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", stateNextName, err)
	}
}

func TestSwitchesAndStatus(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true, CgroupPath: cgroup2Dir(t)})
	r, err := openRunning(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if old, err := r.SetEnforcing(false); err != nil || !old {
		t.Errorf("SetEnforcing(false) = %v, %v; want old true", old, err)
	}
	if old, err := r.SetSuccessAudit(true); err != nil || old {
		t.Errorf("SetSuccessAudit(true) = %v, %v; want old false", old, err)
	}
	// Per-CPU counters: hook MMAP (1) allowed 3 times on each CPU.
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	perCPU := make([]uint64, ncpu)
	for i := range perCPU {
		perCPU[i] = 3
	}
	if err := r.counters.Put(uint32(1*2+1), perCPU); err != nil {
		t.Fatal(err)
	}
	if err := r.counters.Put(uint32(bpf.CounterEventsDropped), perCPU); err != nil {
		t.Fatal(err)
	}

	s, err := r.Status()
	if err != nil {
		t.Fatal(err)
	}
	if s.Enforcing || !s.SuccessAudit || s.Policy != "test" || s.Generation != 1 || s.Scope != cgroup2Dir(t) {
		t.Errorf("status %+v", s)
	}
	if len(s.Hooks) != bpf.NumHooks || s.Hooks[1].Hook != "MMAP" || s.Hooks[1].Allow != uint64(3*ncpu) || s.Hooks[1].Deny != 0 {
		t.Errorf("hook counts %+v, want MMAP allow=%d", s.Hooks, 3*ncpu)
	}
	if s.EventsDropped != uint64(3*ncpu) {
		t.Errorf("events dropped %d, want %d", s.EventsDropped, 3*ncpu)
	}
}

// cgroup2Dir finds a cgroup v2 directory to scope to.
func cgroup2Dir(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir
		}
	}
	t.Skip("no cgroup v2 hierarchy mounted: cannot test cgroup scoping")
	return ""
}

func TestAlreadyLoadedAndUnload(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	stopped := stopRecorder(t)
	l, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1)})
	l.Close()
	defer func() {
		if len(*stopped) != 0 {
			t.Errorf("unloading a pinned load signalled %v", *stopped)
		}
	}()

	if loaded, _ := p.loaded(); !loaded {
		t.Fatal("not loaded after install and close: pins must keep it")
	}
	policyMap, err := ebpf.LoadPinnedMap(p.pin(mapPolicy), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer policyMap.Close()
	st, err := unload(p, time.Second)
	if err != nil {
		t.Fatalf("unload: %v", err)
	}
	if st == nil || st.Active.Name != "test" {
		t.Errorf("unload returned state %+v", st)
	}
	if _, err := os.Stat(p.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory still there: %v", err)
	}
	// Programs still running while their links go must see no policy.
	var rows *ebpf.Map
	if err := policyMap.Lookup(uint32(0), &rows); !errors.Is(err, ebpf.ErrKeyNotExist) {
		rows.Close()
		t.Errorf("policy slot after unload: %v, want it empty", err)
	}
	if _, err := unload(p, time.Second); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("second unload: %v, want ErrNotLoaded", err)
	}
	if _, err := openRunning(p); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("open after unload: %v, want ErrNotLoaded", err)
	}
}

// stopRecorder stands in for signalling the foreground loader, which in
// these tests is the test process itself.
func stopRecorder(t *testing.T) *[]int {
	t.Helper()
	var stopped []int
	saved := stopForeground
	stopForeground = func(pid int, start uint64, _ time.Duration) error {
		if want, err := processStart(pid); err != nil || want != start {
			t.Errorf("asked to stop pid %d started at %d, which started at %d (%v)", pid, start, want, err)
		}
		stopped = append(stopped, pid)
		return nil
	}
	t.Cleanup(func() { stopForeground = saved })
	return &stopped
}

func TestStopLeavesAnotherInstanceAlone(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	stopped := stopRecorder(t)
	first, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Foreground: true})
	// Unloaded from another shell, then loaded again by someone else.
	if _, err := unload(p, 0); err != nil {
		t.Fatal(err)
	}
	if len(*stopped) != 1 || (*stopped)[0] != os.Getpid() {
		t.Errorf("unload stopped %v, want the foreground loader %d", *stopped, os.Getpid())
	}
	second, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV2)})
	if err := first.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	st, err := readState(p)
	if err != nil {
		t.Fatalf("the second load's state is gone: %v", err)
	}
	if st.Instance != second.instance {
		t.Errorf("state instance %s, want the second load's %s", st.Instance, second.instance)
	}
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stop of the owning instance left %s: %v", p.pinDir, err)
	}
}

// killedLoad leaves what a load killed between pinning and publishing
// leaves: a staging directory with a map and an attached link pinned in
// it. It returns the directory and the link's ID. (A raw tracepoint link
// stands in for the LSM links this host cannot attach.)
func killedLoad(t *testing.T, p paths) (string, link.ID) {
	t.Helper()
	staging := p.pinDir + "-new-999999"
	if err := os.Mkdir(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(staging, mapSettings)); err != nil {
		t.Fatal(err)
	}
	prog, err := noopTracepoint()
	if err != nil {
		t.Fatalf("load a raw tracepoint program: %v", err)
	}
	defer prog.Close()
	lk, err := attachNoop(prog)
	if err != nil {
		t.Fatalf("attach a raw tracepoint: %v", err)
	}
	defer lk.Close()
	info, err := lk.Info()
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Pin(filepath.Join(staging, linkPrefix+"bprm_check_security")); err != nil {
		t.Fatal(err)
	}
	return staging, info.ID
}

// Every command that reports or changes the running state takes down the
// pins of a load killed before it published: they are not loaded, so
// nothing may keep them.
func TestKilledLoadIsTakenDown(t *testing.T) {
	p := privateBPFFS(t)
	for _, c := range []struct {
		command string
		run     func() error
	}{
		{"status", func() error { _, err := openRunning(p); return err }},
		{"unload", func() error { _, err := unload(p, time.Second); return err }},
		{"load", p.removeStaging},
	} {
		staging, linkID := killedLoad(t, p)
		if err := c.run(); err != nil && !errors.Is(err, ErrNotLoaded) {
			t.Errorf("%s after a killed load: %v, want ErrNotLoaded or success", c.command, err)
		}
		if _, err := os.Stat(staging); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left the killed load's pins: %v", c.command, err)
		}
		if lk, err := link.NewFromID(linkID); err == nil {
			lk.Close()
			t.Errorf("%s left the killed load's link %d attached", c.command, linkID)
		}
	}
}

func TestNewPolicyRowsIsExactAndFrozen(t *testing.T) {
	privateBPFFS(t) // for the privilege check
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := maps.Compile(testPolicy(t, policyV2).Policy, 5)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newPolicyRows(spec.Maps[mapPolicy].InnerMap, tables.Table)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := tables.Table
	if len(want) <= len(tables.Rows) {
		t.Fatalf("a table of %d rows for %d rows: no seeds or slots", len(want), len(tables.Rows))
	}
	if int(m.MaxEntries()) != len(want) {
		t.Errorf("map holds %d entries, the policy's table %d", m.MaxEntries(), len(want))
	}
	for i := range want {
		var got bpf.Row
		if err := m.Lookup(uint32(i), &got); err != nil || got != want[i] {
			t.Errorf("table row %d: %+v (%v), want %+v", i, got, err, want[i])
		}
	}
	if err := m.Put(uint32(0), &tables.Rows[0].Row); err == nil {
		t.Error("the table accepts writes from userspace after it was filled")
	}
}

// TestEventsThroughRingBuffer writes an event into the real ring buffer
// with a socket filter, then reads it back as a record.
func TestEventsThroughRingBuffer(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true})
	r, err := openRunning(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	ev := bpf.Event{Ino: 5, Pid: 123, Rule: 0, Generation: 1, Sdev: 2, Op: uint8(policy.OpExecute), Hook: 0,
		Enforcing: 1, Action: uint8(policy.Allow), Scope: bpf.ScopeRule, HasFile: 1}
	copy(ev.Comm[:], "sh")
	copy(ev.Sid[:], "rootfs")
	copy(ev.Path[:], "/bin/busybox")
	emitEvent(t, r.events, &ev)
	ev.Scope, ev.Action, ev.HasFile, ev.Hook = bpf.ScopeOpDefault, uint8(policy.Deny), 0, 1
	emitEvent(t, r.events, &ev)

	reader, err := r.Events(false)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	want := []string{
		`ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=123 comm="sh" path="/bin/busybox" dev="rootfs" ino=5 rule="op=EXECUTE boot_verified=TRUE action=ALLOW"`,
		`ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=123 comm="sh" path=? dev=? ino=? rule="DEFAULT op=EXECUTE action=DENY"`,
	}
	for i, w := range want {
		rec, err := reader.Read()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if got := rec.String(); got != w {
			t.Errorf("event %d:\n got %s\nwant %s", i, got, w)
		}
	}
	if _, err := reader.Read(); !errors.Is(err, ErrNoMoreEvents) {
		t.Errorf("after the last event: %v, want ErrNoMoreEvents", err)
	}
}

// emitEvent runs a socket filter that copies ev from its stack into the
// ring buffer with bpf_ringbuf_output, as the LSM programs do.
func emitEvent(t *testing.T, ring *ebpf.Map, ev *bpf.Event) {
	t.Helper()
	raw, err := binary.Append(nil, binary.LittleEndian, ev)
	if err != nil {
		t.Fatal(err)
	}
	size := (len(raw) + 7) &^ 7
	raw = append(raw, make([]byte, size-len(raw))...)
	var insns asm.Instructions
	for off := 0; off < size; off += 8 {
		insns = append(insns,
			asm.LoadImm(asm.R1, int64(binary.LittleEndian.Uint64(raw[off:])), asm.DWord),
			asm.StoreMem(asm.RFP, int16(off-size), asm.R1, asm.DWord))
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, ring.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(-size)),
		asm.Mov.Imm(asm.R3, int32(binary.Size(ev))),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatalf("load event emitter: %v", err)
	}
	defer prog.Close()
	if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatalf("run event emitter: %v", err)
	}
}
