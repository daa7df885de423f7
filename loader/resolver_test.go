package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/loader/blockdev"
	"github.com/bpfipe/bpfipe/loader/dm"
)

func newDevicesMap(t *testing.T) *ebpf.Map {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF) to create maps")
	}
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(spec.Maps[mapDevices])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mapEntries(t *testing.T, m *ebpf.Map) map[bpf.DeviceKey]bpf.Device {
	t.Helper()
	out := map[bpf.DeviceKey]bpf.Device{}
	var k bpf.DeviceKey
	var v bpf.Device
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func verityDevice(name string, major, minor uint32, seq uint64, hash byte, signed bool) dm.VerityDevice {
	return dm.VerityDevice{Name: name, Major: major, Minor: minor, DiskSeq: seq, Algorithm: "sha256",
		RootHash: []byte{hash, 2, 3}, Signed: signed, Verifies: true}
}

func TestSyncDevicesFollowsTheLiveDevices(t *testing.T) {
	m := newDevicesMap(t)
	a := verityDevice("a", 253, 0, 10, 0xaa, false)
	b := verityDevice("b", 253, 1, 11, 0xbb, true)
	keyOf := func(d dm.VerityDevice) bpf.DeviceKey {
		return bpf.DeviceKey{Dev: 253<<20 | d.Minor, Diskseq: d.DiskSeq}
	}

	fakeVerity(t, a, b)
	changes, warnings := syncDevices(m)
	if len(changes) != 2 || len(warnings) != 0 {
		t.Fatalf("first sync: changes %q warnings %q, want two recorded devices", changes, warnings)
	}
	got := mapEntries(t, m)
	if len(got) != 2 || got[keyOf(b)].Signed != 1 || got[keyOf(a)].RootHash.Bytes[0] != 0xaa || got[keyOf(a)].RootHash.Len != 3 {
		t.Fatalf("map after first sync: %+v", got)
	}

	// Nothing changed: nothing is written.
	if changes, _ := syncDevices(m); len(changes) != 0 {
		t.Errorf("unchanged devices rewrote entries: %q", changes)
	}

	// a is recreated at the same number (new disk sequence number) with
	// another root hash, b is gone.
	a2 := verityDevice("a", 253, 0, 12, 0xcc, false)
	fakeVerity(t, a2)
	changes, _ = syncDevices(m)
	joined := strings.Join(changes, "\n")
	for _, want := range []string{"forgot device 253:0 diskseq 10", "forgot device 253:1 diskseq 11", "recorded device 253:0 diskseq 12 \"a\": sha256:cc0203"} {
		if !strings.Contains(joined, want) {
			t.Errorf("changes %q lack %q", changes, want)
		}
	}
	got = mapEntries(t, m)
	if len(got) != 1 || got[keyOf(a2)].RootHash.Bytes[0] != 0xcc {
		t.Errorf("map after recreation: %+v", got)
	}

	// A failed scan keeps what is known rather than forgetting it.
	saved := resolveVerity
	resolveVerity = func() ([]dm.VerityDevice, error) { return nil, errors.New("dm is sulking") }
	t.Cleanup(func() { resolveVerity = saved })
	changes, warnings = syncDevices(m)
	if len(changes) != 0 || len(warnings) != 1 || !strings.Contains(warnings[0], "keeping the entries") {
		t.Errorf("failed scan: changes %q warnings %q", changes, warnings)
	}
	if len(mapEntries(t, m)) != 1 {
		t.Error("a failed scan emptied the map")
	}
}

func TestCompareWithKernel(t *testing.T) {
	current := verityDevice("current", 253, 0, 5, 1, false)
	stale := verityDevice("stale", 253, 1, 6, 2, false)
	missing := verityDevice("missing", 253, 2, 7, 3, true)
	verity := []dm.VerityDevice{current, stale, missing}
	entries, _ := deviceEntries(verity)
	// The table of "stale" was reloaded with another root hash; the map
	// still holds the old one.
	staleKey := bpf.DeviceKey{Dev: 253<<20 | 1, Diskseq: 6}
	old := entries[staleKey]
	old.RootHash.Bytes[0] = 9
	entries[staleKey] = old
	delete(entries, bpf.DeviceKey{Dev: 253<<20 | 2, Diskseq: 7})
	// An entry for a plain disk, and one for a disk since recreated.
	entries[bpf.DeviceKey{Dev: 254 << 20, Diskseq: 1}] = entries[bpf.DeviceKey{Dev: 253 << 20, Diskseq: 5}]
	entries[bpf.DeviceKey{Dev: 253<<20 | 0, Diskseq: 4}] = entries[bpf.DeviceKey{Dev: 253 << 20, Diskseq: 5}]

	devs := []BlockDevice{
		{Name: "dm-0", Major: 253, Minor: 0, DiskSeq: 5, Verity: &DeviceVerity{}},
		{Name: "dm-1", Major: 253, Minor: 1, DiskSeq: 6, Verity: &DeviceVerity{}},
		{Name: "dm-2", Major: 253, Minor: 2, DiskSeq: 7, Verity: &DeviceVerity{}},
		{Name: "vda", Major: 254, Minor: 0, DiskSeq: 1},
		{Name: "vdb", Major: 254, Minor: 16, DiskSeq: 2},
	}
	orphans := compareWithKernel(devs, verity, entries)
	want := []string{KernelEntryCurrent, KernelEntryStale, KernelEntryMissing, KernelEntryUnexpected, KernelEntryNone}
	for i, d := range devs {
		if d.Kernel == nil || d.Kernel.State != want[i] {
			t.Errorf("%s: kernel entry %+v, want %s", d.Name, d.Kernel, want[i])
		}
	}
	if devs[1].Kernel.RootHash != "sha256:090203" {
		t.Errorf("stale entry shows %q, want the old root hash sha256:090203", devs[1].Kernel.RootHash)
	}
	if len(orphans) != 1 || orphans[0].Dev != "253:0" || orphans[0].DiskSeq != 4 || orphans[0].RootHash != "sha256:010203" {
		t.Errorf("orphans %+v, want the entry of 253:0 diskseq 4", orphans)
	}
}

func TestListBlockDevicesReadsSysfs(t *testing.T) {
	root := t.TempDir()
	devices := filepath.Join(root, "devices")
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(devices, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("vda/dev", "254:0\n")
	write("vda/size", "2048\n")
	write("vda/diskseq", "9\n")
	write("vda/vda1/dev", "254:1\n")
	write("vda/vda1/size", "1024\n")
	write("vda/vda1/partition", "1\n")
	write("dm-0/dev", "253:0\n")
	write("dm-0/size", "0\n")
	write("dm-0/diskseq", "17\n")
	write("dm-0/dm/name", "root\n")
	write("loop0/dev", "7:0\n")
	write("loop0/size", "0\n")
	write("loop0/diskseq", "3\n")
	class := filepath.Join(root, "class")
	if err := os.Mkdir(class, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"vda": "vda", "vda1": "vda/vda1", "dm-0": "dm-0", "loop0": "loop0"} {
		if err := os.Symlink(filepath.Join(devices, target), filepath.Join(class, name)); err != nil {
			t.Fatal(err)
		}
	}
	saved := sysClassBlock
	sysClassBlock = class
	t.Cleanup(func() { sysClassBlock = saved })

	devs, err := listBlockDevices()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%+v", devs)
	// The empty loop device is left out, the dm device without a table
	// is not; the partition carries its disk's sequence number.
	want := fmt.Sprintf("%+v", []BlockDevice{
		{Name: "dm-0", DMName: "root", Dev: "253:0", Major: 253, Minor: 0, DiskSeq: 17},
		{Name: "vda", Dev: "254:0", Major: 254, Minor: 0, DiskSeq: 9},
		{Name: "vda1", Dev: "254:1", Major: 254, Minor: 1, DiskSeq: 9, Partition: true},
	})
	if got != want {
		t.Errorf("listBlockDevices:\n got %s\nwant %s", got, want)
	}
}

// The resolver as a process. The test binary is the resolver's executable:
// TestResolverHelperProcess runs it when the parent test asks for it.

const (
	helperPathsEnv   = "BPFIPE_TEST_RESOLVER_PATHS"
	helperDevicesEnv = "BPFIPE_TEST_RESOLVER_DEVICES"
)

func TestResolverHelperProcess(t *testing.T) {
	spec, ok := os.LookupEnv(helperPathsEnv)
	if !ok {
		t.Skip("runs only as the resolver started by TestDetachedResolver")
	}
	pinDir, lockFile, _ := strings.Cut(spec, "\n")
	devicesFile := os.Getenv(helperDevicesEnv)
	resolveVerity = func() ([]dm.VerityDevice, error) {
		data, err := os.ReadFile(devicesFile)
		if err != nil {
			return nil, err
		}
		var devs []dm.VerityDevice
		return devs, json.Unmarshal(data, &devs)
	}
	rescanInterval = 50 * time.Millisecond
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	err := runResolver(ctx, paths{pinDir: pinDir, lockFile: lockFile}, ResolverOptions{Log: func(msg string) { fmt.Fprintln(os.Stderr, msg) }})
	if err != nil {
		t.Fatal(err)
	}
}

func writeFakeDevices(t *testing.T, path string, devs ...dm.VerityDevice) {
	t.Helper()
	data, err := json.Marshal(devs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDetachedResolver(t *testing.T) {
	p := privateBPFFS(t)
	devicesFile := filepath.Join(t.TempDir(), "devices.json")
	first := verityDevice("first", 253, 0, 40, 0x11, false)
	writeFakeDevices(t, devicesFile, first)
	t.Setenv(helperPathsEnv, p.pinDir+"\n"+p.lockFile)
	t.Setenv(helperDevicesEnv, devicesFile)
	saved := ResolverCommand
	ResolverCommand = []string{"-test.run=^TestResolverHelperProcess$"}
	t.Cleanup(func() { ResolverCommand = saved })

	fakeVerity(t) // the load itself sees no devices
	l, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV2)})
	var warnings []string
	l.startResolverAfterLoad(Options{Warn: func(w string) { warnings = append(warnings, w) }})
	if len(warnings) != 0 {
		t.Fatalf("resolver did not start: %q", warnings)
	}
	instance := l.Running.State.Instance
	rs := resolverStatus(p, instance)
	if !rs.Running || rs.PID == os.Getpid() || rs.PID == 0 {
		t.Fatalf("resolver status %+v, want a running resolver process", rs)
	}
	// Ready means scanned once: the device is already recorded.
	firstKey := bpf.DeviceKey{Dev: blockdev.KernelDevOf(253, 0), Diskseq: 40}
	if _, ok := mapEntries(t, l.Running.devices)[firstKey]; !ok {
		t.Errorf("resolver reported ready before recording the live device")
	}
	status, err := l.Running.Status()
	if err != nil {
		t.Fatal(err)
	}
	if status.Resolver == nil || !status.Resolver.Running || status.Resolver.PID != rs.PID {
		t.Errorf("Status().Resolver = %+v, want pid %d running", status.Resolver, rs.PID)
	}

	// It follows: the device is recreated with another root hash.
	second := verityDevice("first", 253, 0, 41, 0x22, false)
	writeFakeDevices(t, devicesFile, second)
	secondKey := bpf.DeviceKey{Dev: blockdev.KernelDevOf(253, 0), Diskseq: 41}
	waitFor(t, "the resolver records the recreated device and forgets the old one", func() bool {
		got := mapEntries(t, l.Running.devices)
		_, hasOld := got[firstKey]
		return len(got) == 1 && !hasOld && got[secondKey].RootHash.Bytes[0] == 0x22
	})

	// A second resolver is refused while the first runs.
	if err := runResolver(context.Background(), p, ResolverOptions{}); !errors.Is(err, ErrResolverRunning) {
		t.Errorf("second resolver: err = %v, want ErrResolverRunning", err)
	}

	// Restarting replaces the process.
	oldStart := mustStart(t, rs.PID)
	rs2, err := startResolver(p, ResolverCommand)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !rs2.Running || rs2.PID == rs.PID {
		t.Errorf("after restart %+v, want a new process (old pid %d)", rs2, rs.PID)
	}
	if processAlive(rs.PID, oldStart) {
		t.Errorf("old resolver %d still alive after restart", rs.PID)
	}

	// Unload stops it.
	l.Close()
	if _, err := unload(p, time.Second); err != nil {
		t.Fatalf("unload: %v", err)
	}
	if st := resolverStatus(p, instance); st.Running {
		t.Errorf("resolver still running after unload: %+v", st)
	}
	if _, err := os.Stat(p.run(resolverRecordName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("resolver record left after unload: %v", err)
	}
}

func mustStart(t *testing.T, pid int) uint64 {
	t.Helper()
	start, err := processStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	return start
}

// A resolver whose enforcement disappears without unload (pins removed by
// hand) notices and exits, rather than writing into a map nobody reads.
func TestResolverExitsWhenEnforcementGoes(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	l, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1)})
	saved := rescanInterval
	rescanInterval = 20 * time.Millisecond
	t.Cleanup(func() { rescanInterval = saved })
	done := make(chan error, 1)
	go func() { done <- runResolver(context.Background(), p, ResolverOptions{}) }()
	waitFor(t, "the resolver records itself", func() bool { return resolverStatus(p, l.Running.State.Instance).Running })
	l.Close()
	if _, err := takeDown(p.pinDir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("resolver ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("resolver still running after its enforcement went away")
	}
	if _, err := os.Stat(p.run(resolverRecordName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("resolver record left behind: %v", err)
	}
}

// Where the kernel captures root hashes, or a foreground loader follows
// the devices, a resolver refuses to start, and says why.
func TestResolverRefusesWhenNotNeeded(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Foreground: true})
	err := runResolver(context.Background(), p, ResolverOptions{})
	if !errors.Is(err, ErrNoResolverNeeded) || !strings.Contains(err.Error(), "foreground loader") {
		t.Errorf("beside a live foreground loader: err = %v, want ErrNoResolverNeeded naming it", err)
	}
}

func TestProcessAliveIgnoresZombiesAndReuse(t *testing.T) {
	start := mustStart(t, os.Getpid())
	if !processAlive(os.Getpid(), start) {
		t.Error("this process is not alive")
	}
	if processAlive(os.Getpid(), start+1) {
		t.Error("a different start time still counts as the same process")
	}
	// A child that has exited but is not reaped yet is a zombie.
	attr := &os.ProcAttr{}
	proc, err := os.StartProcess("/bin/true", []string{"true"}, attr)
	if err != nil {
		t.Skipf("needs /bin/true: %v", err)
	}
	// Unreaped, it stays in the process table whatever it does.
	childStart, err := processStart(proc.Pid)
	if err != nil {
		proc.Wait()
		t.Fatalf("read start of child %d: %v", proc.Pid, err)
	}
	waitFor(t, "the child becomes a zombie", func() bool {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", proc.Pid))
		i := strings.LastIndexByte(string(data), ')')
		return i > 0 && strings.HasPrefix(strings.TrimSpace(string(data[i+1:])), "Z")
	})
	if processAlive(proc.Pid, childStart) {
		t.Error("a zombie counts as alive")
	}
	proc.Wait()
}
