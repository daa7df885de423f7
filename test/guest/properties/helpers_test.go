// Package properties_test runs inside the bpfipe VM guest (booted by
// test/properties), where virtio disks hold the images the host built and
// described in the manifest. It drives the real bpfipe command, pinned as a
// user would run it, and checks what each integrity property lets run.
// Outside the guest it skips.
package properties_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/loader/blockdev"
	"github.com/bpfipe/bpfipe/loader/dm"
	"github.com/bpfipe/bpfipe/test/properties/fixture"
)

// The bpfipe binary the runner puts in every guest.
const bpfipeBinary = "/usr/local/bin/bpfipe"

var readManifest = sync.OnceValues(fixture.Read)

func setup(t *testing.T) *fixture.Manifest {
	t.Helper()
	if os.Getenv("BPFIPE_GUEST") == "" {
		t.Skip("needs the bpfipe-vm guest: BPFIPE_GUEST is unset (run through test/properties)")
	}
	m, err := readManifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// bpfipe runs the bpfipe command and returns its output and exit status.
func bpfipe(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(bpfipeBinary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		status = exitErr.ExitCode()
	default:
		t.Fatalf("run bpfipe %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), status
}

func mustBpfipe(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, status := bpfipe(t, args...)
	if status != 0 {
		t.Fatalf("bpfipe %s: exit %d\n%s%s", strings.Join(args, " "), status, out, errOut)
	}
	return out
}

const policyName = "properties"

func writePolicy(t *testing.T, version string, rules []string) string {
	t.Helper()
	text := fmt.Sprintf("policy_name=%s policy_version=%s\n%s\n", policyName, version, strings.Join(rules, "\n"))
	path := filepath.Join(t.TempDir(), "policy-"+version)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// load enforces a policy pinned, as bpfipe load --pin does, and unloads it
// when the test ends. Every policy here allows the initramfs, where the
// test binary and bpfipe live, by boot_verified.
func load(t *testing.T, version string, rules []string) {
	t.Helper()
	path := writePolicy(t, version, rules)
	_, errOut, status := bpfipe(t, "load", "--pin", path)
	if status != 0 {
		t.Fatalf("bpfipe load --pin: exit %d\n%s", status, errOut)
	}
	t.Logf("bpfipe load --pin:\n%s", strings.TrimSpace(errOut))
	t.Cleanup(func() {
		if _, errOut, status := bpfipe(t, "unload"); status != 0 {
			t.Errorf("bpfipe unload: exit %d\n%s", status, errOut)
		}
	})
}

func update(t *testing.T, version string, rules []string) {
	t.Helper()
	mustBpfipe(t, "update", writePolicy(t, version, rules))
}

// header rules of every policy: deny-by-default execution, the initramfs
// (test binary, bpfipe, busybox) allowed.
func denyByDefault(rules ...string) []string {
	return append([]string{
		"DEFAULT action=ALLOW",
		"DEFAULT op=EXECUTE action=DENY",
		"op=EXECUTE boot_verified=TRUE action=ALLOW",
	}, rules...)
}

func status(t *testing.T) *loader.Status {
	t.Helper()
	var st loader.Status
	if err := json.Unmarshal([]byte(mustBpfipe(t, "status", "--json")), &st); err != nil {
		t.Fatalf("decode bpfipe status --json: %v", err)
	}
	return &st
}

func observable(st *loader.Status, prop string) bool { return slices.Contains(st.Observable, prop) }

func devices(t *testing.T) *loader.DeviceListing {
	t.Helper()
	var l loader.DeviceListing
	if err := json.Unmarshal([]byte(mustBpfipe(t, "devices", "--json")), &l); err != nil {
		t.Fatalf("decode bpfipe devices --json: %v", err)
	}
	return &l
}

func findDevice(l *loader.DeviceListing, major, minor uint32) *loader.BlockDevice {
	for i := range l.Devices {
		if l.Devices[i].Major == major && l.Devices[i].Minor == minor {
			return &l.Devices[i]
		}
	}
	return nil
}

// waitKernelEntry waits until bpfipe devices says the devices map holds
// what the device's table says: at once with in-kernel capture, after the
// resolver's next scan without.
func waitKernelEntry(t *testing.T, v *verityDevice) *loader.BlockDevice {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		d := findDevice(devices(t), v.major, v.minor)
		if d != nil && d.Kernel != nil && d.Kernel.State == loader.KernelEntryCurrent && d.DiskSeq == v.diskSeq {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%d:%d diskseq %d): kernel table entry %+v, want %s after 20s", v.name, v.major, v.minor, v.diskSeq, d, loader.KernelEntryCurrent)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func openControl(t *testing.T) *dm.Control {
	t.Helper()
	c, err := dm.Open()
	if err != nil {
		t.Fatalf("open device mapper: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// verityDevice is one dm-verity device, mounted.
type verityDevice struct {
	name         string
	major, minor uint32
	diskSeq      uint64
	mnt          string
	// binary is the static binary's path on the device.
	binary string
	closed bool
	c      *dm.Control
	t      *testing.T
}

// openVerity sets up img as the dm-verity device name, with its root hash
// signature when signed, and mounts it read-only. The error is the
// device mapper's refusal, for signatures the kernel does not trust.
func openVerity(t *testing.T, c *dm.Control, name string, img fixture.VerityImage, signed bool) (*verityDevice, error) {
	t.Helper()
	params := img.Table()
	var dev dm.Device
	create := func() (err error) {
		dev, err = c.Create(name, []dm.Target{{Length: img.DataBlocks * 8, Type: dm.VerityTargetType, Params: params}}, true)
		return err
	}
	if signed {
		sig, err := os.ReadFile(img.Signature)
		if err != nil {
			t.Fatalf("read root hash signature: %v", err)
		}
		desc := "bpfipe-properties:" + name
		params += " 2 root_hash_sig_key_desc " + desc
		if err := dm.WithRootHashSignature(desc, sig, create); err != nil {
			return nil, err
		}
	} else if err := create(); err != nil {
		return nil, err
	}
	v := &verityDevice{name: name, major: dev.Major(), minor: dev.Minor(), c: c, t: t}
	t.Cleanup(v.close)
	var err error
	if v.diskSeq, err = blockdev.DiskSeq(v.major, v.minor); err != nil {
		t.Fatal(err)
	}
	v.mnt = mountDisk(t, fmt.Sprintf("/dev/dm-%d", v.minor), img.FSType, unix.MS_RDONLY)
	v.binary = filepath.Join(v.mnt, fixture.Binary)
	return v, nil
}

func mustOpenVerity(t *testing.T, c *dm.Control, name string, img fixture.VerityImage) *verityDevice {
	t.Helper()
	v, err := openVerity(t, c, name, img, false)
	if err != nil {
		t.Fatalf("set up dm-verity device %s: %v", name, err)
	}
	return v
}

// close unmounts and removes the device; a test may call it early to
// recreate the device.
func (v *verityDevice) close() {
	if v.closed {
		return
	}
	v.closed = true
	// EINVAL or ENOENT: the mount's own cleanup came first.
	if err := unix.Unmount(v.mnt, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		v.t.Errorf("unmount %s: %v", v.mnt, err)
	}
	// The last reference to a filesystem may go a moment after umount.
	var err error
	for range 50 {
		if err = v.c.Remove(v.name); !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		v.t.Errorf("remove %s: %v", v.name, err)
	}
}

// mountDisk mounts a block device on a new directory until the test ends.
func mountDisk(t *testing.T, dev, fsType string, flags uintptr) string {
	t.Helper()
	mnt, err := os.MkdirTemp("/mnt", "props-")
	if err != nil {
		os.MkdirAll("/mnt", 0o755)
		if mnt, err = os.MkdirTemp("/mnt", "props-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(dev, mnt, fsType, flags, ""); err != nil {
		t.Fatalf("mount %s (%s) on %s: %v", dev, fsType, mnt, err)
	}
	t.Cleanup(func() {
		err := unix.Unmount(mnt, 0)
		if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: unmounted already
			t.Errorf("unmount %s: %v", mnt, err)
		}
		os.Remove(mnt)
	})
	return mnt
}

// tmpfsCopy puts a copy of the binary on a fresh tmpfs.
func tmpfsCopy(t *testing.T, from string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fixture.Binary)
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// run execs the static binary at path as its "true" applet; argv[0]
// names busybox whatever the file is called, since busybox picks the
// applet by that name.
func run(path string) error {
	cmd := exec.Command(path, "true")
	cmd.Args[0] = fixture.Binary
	return cmd.Run()
}

func expectAllowed(t *testing.T, what, path string) {
	t.Helper()
	if err := run(path); err != nil {
		t.Errorf("%s (%s): %v, want it to run", what, path, err)
	}
}

func expectDenied(t *testing.T, what, path string) {
	t.Helper()
	err := run(path)
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("%s (%s): err = %v, want EACCES (denied)", what, path, err)
	}
}

// expect checks allowed or denied.
func expect(t *testing.T, allowed bool, what, path string) {
	t.Helper()
	if allowed {
		expectAllowed(t, what, path)
	} else {
		expectDenied(t, what, path)
	}
}
