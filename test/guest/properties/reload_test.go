package properties_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/properties/fixture"
)

// reloadTable replaces a live device's table the way dmsetup reload plus
// resume does: DM_TABLE_LOAD into the inactive slot, then DM_DEV_SUSPEND
// without the suspend flag, which suspends, swaps the tables and resumes.
// The device keeps its number and its disk sequence number.
func reloadTable(t *testing.T, name string, img fixture.VerityImage) {
	t.Helper()
	fd, err := unix.Open("/dev/mapper/control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	params := append([]byte(img.Table()), 0)
	specLen := (unix.SizeofDmTargetSpec + len(params) + 7) &^ 7
	spec := unix.DmTargetSpec{Length: img.DataBlocks * 8, Next: uint32(specLen)}
	copy(spec.Target_type[:], "verity")
	var payload bytes.Buffer
	binary.Write(&payload, binary.NativeEndian, &spec)
	payload.Write(params)
	payload.Write(make([]byte, specLen-payload.Len()))

	for _, step := range []struct {
		req     uint
		flags   uint32
		targets uint32
		payload []byte
	}{
		// Verity tables must be read-only.
		{unix.DM_TABLE_LOAD, unix.DM_READONLY_FLAG, 1, payload.Bytes()},
		{unix.DM_DEV_SUSPEND, 0, 0, nil},
	} {
		hdr := unix.DmIoctl{
			// 4.0.0: Linux 6.1 refuses x/sys's newer minor version.
			Version:      [3]uint32{4, 0, 0},
			Data_size:    uint32(unix.SizeofDmIoctl + len(step.payload)),
			Data_start:   unix.SizeofDmIoctl,
			Target_count: step.targets,
			Flags:        step.flags,
		}
		copy(hdr.Name[:], name)
		var buf bytes.Buffer
		binary.Write(&buf, binary.NativeEndian, &hdr)
		buf.Write(step.payload)
		b := buf.Bytes()
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(step.req), uintptr(unsafe.Pointer(&b[0]))); errno != 0 {
			t.Fatalf("dm ioctl %#x on %s: %v", step.req, name, errno)
		}
	}
}

// A table reload changes a live device's root hash while its number and
// disk sequence number stay. With in-kernel capture dm-verity reports the
// new root hash before the new table serves a read, so the binary is
// denied at once. Without it the entry holds the old root hash until the
// resolver has handled the reload's change uevent; the test reports what
// an exec right after the resume saw, and requires the denial once the
// entry is current. docs/devices.md discusses the window.
func TestTableReload(t *testing.T) {
	m := setup(t)
	c := openControl(t)
	allowed, other := m.Verity["ext4-allowed"], m.Verity["ext4-other"]
	load(t, "0.0.1", denyByDefault("op=EXECUTE dmverity_roothash="+allowed.PolicyRootHash()+" action=ALLOW"))
	capture := status(t).DMVerityMode == loader.DMVerityCapture

	v := mustOpenVerity(t, c, "props-reloaded", allowed)
	waitKernelEntry(t, v)
	expectAllowed(t, "allowed root hash before the reload", v.binary)

	reloadTable(t, v.name, other)
	immediate := run(v.binary)
	if capture {
		expectDenied(t, "right after a reload to another root hash, with capture", v.binary)
	} else {
		d := findDevice(devices(t), v.major, v.minor)
		t.Logf("userspace resolution: exec right after the resume: %v (nil: allowed by the previous root hash's entry); kernel table then %+v",
			immediate, d.Kernel)
	}
	d := waitKernelEntry(t, v)
	if d.Verity == nil || d.Verity.RootHash != other.PolicyRootHash() || d.DiskSeq != v.diskSeq {
		t.Errorf("after the reload bpfipe devices says %+v, want root hash %s, disk sequence number %d unchanged", d, other.PolicyRootHash(), v.diskSeq)
	}
	expectDenied(t, "after a reload to another root hash, entry current", v.binary)
	if capture {
		return
	}

	// With no resolver running the window lasts until one runs again:
	// the entry keeps the previous root hash, and bpfipe devices says so.
	reloadTable(t, v.name, allowed)
	waitKernelEntry(t, v)
	expectAllowed(t, "allowed root hash, reloaded back", v.binary)
	mustBpfipe(t, "resolver", "--stop")
	reloadTable(t, v.name, other)
	d = findDevice(devices(t), v.major, v.minor)
	if d == nil || d.Kernel == nil || d.Kernel.State != loader.KernelEntryStale || d.Kernel.RootHash != allowed.PolicyRootHash() {
		t.Errorf("reloaded with no resolver running: %+v, want a stale entry holding %s", d, allowed.PolicyRootHash())
	}
	expectAllowed(t, "reloaded to another root hash with no resolver running (the documented window)", v.binary)
	mustBpfipe(t, "resolver", "--restart")
	waitKernelEntry(t, v)
	expectDenied(t, "reloaded to another root hash, resolver restarted", v.binary)
}
