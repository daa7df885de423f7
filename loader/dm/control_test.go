package dm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Offsets of struct dm_ioctl fields, from include/uapi/linux/dm-ioctl.h.
const (
	hdrVersion     = 0
	hdrDataSize    = 12
	hdrDataStart   = 16
	hdrTargetCount = 20
	hdrFlags       = 28
	hdrDev         = 40
	hdrName        = 48
	hdrUUID        = 176
	hdrSize        = 312
)

type fakeDevice struct {
	dev             uint64
	uuid            string
	active          []Target
	inactive        []Target
	inactiveRO      bool
	readOnly, suspd bool
}

// fakeKernel answers dm ioctls the way drivers/md/dm-ioctl.c does, for the
// commands this package sends, and records what it was sent.
type fakeKernel struct {
	version  [3]uint32
	devices  map[string]*fakeDevice
	order    []string
	nextMin  uint32
	calls    []string
	failLoad error
	// listNeeds makes DM_LIST_DEVICES report a full buffer below this
	// data size.
	listNeeds uint32
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{version: [3]uint32{4, 47, 0}, devices: map[string]*fakeDevice{}}
}

func (k *fakeKernel) control(t *testing.T) *Control {
	t.Helper()
	c, err := newControl(-1, k.ioctl)
	if err != nil {
		t.Fatalf("newControl: %v", err)
	}
	return c
}

func (k *fakeKernel) ioctl(_ int, req uint, buf []byte) error {
	ne := binary.NativeEndian
	if len(buf) < hdrSize || int(ne.Uint32(buf[hdrDataSize:])) != len(buf) {
		return unix.EINVAL
	}
	if ne.Uint32(buf[hdrVersion:]) != 4 || ne.Uint32(buf[hdrVersion+4:]) > k.version[1] {
		return unix.EINVAL
	}
	for i, v := range k.version {
		ne.PutUint32(buf[hdrVersion+4*i:], v)
	}
	name := cString(buf[hdrName : hdrName+128])
	flags := ne.Uint32(buf[hdrFlags:])
	dataStart := int(ne.Uint32(buf[hdrDataStart:]))
	status := func(d *fakeDevice) {
		f := flags &^ (unix.DM_READONLY_FLAG | unix.DM_SUSPEND_FLAG)
		if d.readOnly {
			f |= unix.DM_READONLY_FLAG
		}
		if d.suspd {
			f |= unix.DM_SUSPEND_FLAG
		}
		ne.PutUint32(buf[hdrFlags:], f)
		ne.PutUint64(buf[hdrDev:], d.dev)
	}
	switch req {
	case unix.DM_VERSION:
		k.calls = append(k.calls, "version")
		return nil
	case unix.DM_LIST_DEVICES:
		k.calls = append(k.calls, "list")
		if uint32(len(buf)) < k.listNeeds {
			ne.PutUint32(buf[hdrFlags:], flags|unix.DM_BUFFER_FULL_FLAG)
			return nil
		}
		// The 5.14+ layout, with UUIDs when asked.
		out := buf[hdrSize:]
		off, prev := 0, -1
		for _, n := range k.order {
			d := k.devices[n]
			if prev >= 0 {
				ne.PutUint32(out[prev+8:], uint32(off-prev))
			}
			ne.PutUint64(out[off:], d.dev)
			copy(out[off+12:], n+"\x00")
			trailer := align(off + 12 + len(n) + 1)
			next := trailer + 8
			if flags&unix.DM_UUID_FLAG != 0 {
				if d.uuid != "" {
					ne.PutUint32(out[trailer+4:], unix.DM_NAME_LIST_FLAG_HAS_UUID)
					copy(out[next:], d.uuid+"\x00")
					next = align(next + len(d.uuid) + 1)
				} else {
					ne.PutUint32(out[trailer+4:], unix.DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID)
				}
			}
			prev, off = off, next
		}
		ne.PutUint32(buf[hdrDataStart:], hdrSize)
		ne.PutUint32(buf[hdrDataSize:], uint32(hdrSize+off))
		return nil
	case unix.DM_DEV_CREATE:
		k.calls = append(k.calls, "create "+name)
		if _, dup := k.devices[name]; dup {
			return unix.EBUSY
		}
		d := &fakeDevice{dev: unix.Mkdev(254, k.nextMin), uuid: cString(buf[hdrUUID : hdrUUID+129]), suspd: true}
		k.nextMin++
		k.devices[name] = d
		k.order = append(k.order, name)
		status(d)
		return nil
	case unix.DM_TABLE_LOAD:
		k.calls = append(k.calls, fmt.Sprintf("load %s flags=%#x", name, flags))
		d, ok := k.devices[name]
		if !ok {
			return unix.ENXIO
		}
		if k.failLoad != nil {
			return k.failLoad
		}
		// populate_table: the first spec is data_start bytes from the
		// header, each next is relative to the spec it is in.
		var targets []Target
		spec := 0
		next := dataStart
		for range ne.Uint32(buf[hdrTargetCount:]) {
			spec += next
			if spec+40 > len(buf) {
				return unix.EINVAL
			}
			params := cString(buf[spec+40:])
			targets = append(targets, Target{
				Start:  ne.Uint64(buf[spec:]),
				Length: ne.Uint64(buf[spec+8:]),
				Type:   cString(buf[spec+24 : spec+40]),
				Params: params,
			})
			if targets[len(targets)-1].Type == VerityTargetType && flags&unix.DM_READONLY_FLAG == 0 {
				return unix.EINVAL // "Device must be readonly"
			}
			next = int(ne.Uint32(buf[spec+20:]))
		}
		if len(targets) == 0 {
			return unix.EINVAL
		}
		d.inactive, d.inactiveRO = targets, flags&unix.DM_READONLY_FLAG != 0
		status(d)
		return nil
	case unix.DM_DEV_SUSPEND:
		k.calls = append(k.calls, fmt.Sprintf("suspend %s flags=%#x", name, flags))
		d, ok := k.devices[name]
		if !ok {
			return unix.ENXIO
		}
		if flags&unix.DM_SUSPEND_FLAG != 0 {
			d.suspd = true
		} else {
			if d.inactive != nil {
				d.active, d.readOnly, d.inactive = d.inactive, d.inactiveRO, nil
			}
			d.suspd = false
		}
		status(d)
		return nil
	case unix.DM_DEV_STATUS:
		d, ok := k.devices[name]
		if !ok {
			return unix.ENXIO
		}
		status(d)
		return nil
	case unix.DM_TABLE_STATUS:
		k.calls = append(k.calls, fmt.Sprintf("table %s flags=%#x", name, flags))
		d, ok := k.devices[name]
		if !ok {
			return unix.ENXIO
		}
		status(d)
		out := buf[hdrSize:]
		used := 0
		for _, tg := range d.active {
			if used+40+len(tg.Params)+1 > len(out) {
				ne.PutUint32(buf[hdrFlags:], ne.Uint32(buf[hdrFlags:])|unix.DM_BUFFER_FULL_FLAG)
				return nil
			}
			ne.PutUint64(out[used:], tg.Start)
			ne.PutUint64(out[used+8:], tg.Length)
			copy(out[used+24:used+40], tg.Type)
			copy(out[used+40:], tg.Params+"\x00")
			end := used + 40 + len(tg.Params) + 1
			ne.PutUint32(out[used+20:], uint32(align(end))) // from the area's start
			used = align(end)
			ne.PutUint32(buf[hdrDataSize:], uint32(hdrSize+end))
		}
		ne.PutUint32(buf[hdrDataStart:], hdrSize)
		ne.PutUint32(buf[hdrTargetCount:], uint32(len(d.active)))
		return nil
	case unix.DM_DEV_REMOVE:
		k.calls = append(k.calls, "remove "+name)
		if _, ok := k.devices[name]; !ok {
			return unix.ENXIO
		}
		delete(k.devices, name)
		for i, n := range k.order {
			if n == name {
				k.order = append(k.order[:i], k.order[i+1:]...)
				break
			}
		}
		return nil
	}
	return unix.ENOTTY
}

func TestHeaderLayout(t *testing.T) {
	if got := binary.Size(unix.DmIoctl{}); got != hdrSize {
		t.Fatalf("binary.Size(DmIoctl) = %d, want %d", got, hdrSize)
	}
}

func TestCreateVerity(t *testing.T) {
	k := newFakeKernel()
	c := k.control(t)
	if c.KernelVersion != [3]uint32{4, 47, 0} {
		t.Errorf("KernelVersion = %v", c.KernelVersion)
	}
	table := "1 /dev/vda /dev/vdb 4096 4096 256 1 sha256 " + rootSHA256 + " -"
	dev, err := c.Create("vroot", []Target{{Length: 2048, Type: "verity", Params: table}}, true)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if dev.Name != "vroot" || dev.Major() != 254 || dev.Minor() != 0 || !dev.ReadOnly() || dev.Suspended() {
		t.Errorf("Create returned %+v", dev)
	}
	wantCalls := []string{
		"version",
		"create vroot",
		fmt.Sprintf("load vroot flags=%#x", unix.DM_READONLY_FLAG),
		"suspend vroot flags=0x0", // a resume
	}
	if !reflect.DeepEqual(k.calls, wantCalls) {
		t.Errorf("ioctls:\n got %q\nwant %q", k.calls, wantCalls)
	}

	targets, err := c.Table("vroot")
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	if want := []Target{{Length: 2048, Type: "verity", Params: table}}; !reflect.DeepEqual(targets, want) {
		t.Errorf("Table = %+v, want %+v", targets, want)
	}
	if last := k.calls[len(k.calls)-1]; last != fmt.Sprintf("table vroot flags=%#x", unix.DM_STATUS_TABLE_FLAG) {
		t.Errorf("Table sent %q, want DM_STATUS_TABLE_FLAG", last)
	}
	st, err := c.Status("vroot")
	if err != nil || st.Dev != dev.Dev || !st.ReadOnly() {
		t.Errorf("Status = %+v, %v", st, err)
	}
}

func TestCreateMultipleTargets(t *testing.T) {
	k := newFakeKernel()
	c := k.control(t)
	want := []Target{
		{Start: 0, Length: 8, Type: "linear", Params: "7:0 0"},
		{Start: 8, Length: 16, Type: "zero"},
		{Start: 24, Length: 8, Type: "linear", Params: "7:1 2048"},
	}
	if _, err := c.Create("mix", want, false); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := c.Table("mix")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Table = %+v, %v; want %+v", got, err, want)
	}
}

func TestCreateCleansUp(t *testing.T) {
	k := newFakeKernel()
	c := k.control(t)
	// Without readOnly the verity load fails, as in the kernel.
	_, err := c.Create("vroot", []Target{{Length: 8, Type: "verity", Params: "x"}}, false)
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Create writable verity: err = %v, want EINVAL", err)
	}
	if len(k.devices) != 0 {
		t.Errorf("half-made device left behind: %v", k.order)
	}
	if last := k.calls[len(k.calls)-1]; last != "remove vroot" {
		t.Errorf("last ioctl %q, want the removal", last)
	}
	for _, name := range []string{"", "a/b", strings.Repeat("n", 128)} {
		if _, err := c.Create(name, []Target{{Length: 8, Type: "zero"}}, false); err == nil {
			t.Errorf("Create(%q): no error", name)
		}
	}
	if _, err := c.Create("none", nil, false); err == nil {
		t.Error("Create without targets: no error")
	}
}

func TestListAndRemove(t *testing.T) {
	k := newFakeKernel()
	c := k.control(t)
	if got, err := c.List(); err != nil || len(got) != 0 {
		t.Fatalf("List on no devices = %+v, %v", got, err)
	}
	for _, name := range []string{"a", "bb", "ccc"} {
		if _, err := c.Create(name, []Target{{Length: 8, Type: "zero"}}, false); err != nil {
			t.Fatal(err)
		}
	}
	k.devices["bb"].uuid = "CRYPT-VERITY-1234"
	got, err := c.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := []Device{
		{Name: "a", Dev: unix.Mkdev(254, 0)},
		{Name: "bb", UUID: "CRYPT-VERITY-1234", Dev: unix.Mkdev(254, 1)},
		{Name: "ccc", Dev: unix.Mkdev(254, 2)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %+v\nwant %+v", got, want)
	}
	if err := c.Remove("bb"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := c.Remove("bb"); !errors.Is(err, unix.ENXIO) {
		t.Errorf("second Remove: err = %v, want ENXIO", err)
	}
	if _, err := c.Table("bb"); !errors.Is(err, unix.ENXIO) {
		t.Errorf("Table of a removed device: err = %v, want ENXIO", err)
	}
	got, _ = c.List()
	if len(got) != 2 || got[1].Name != "ccc" {
		t.Errorf("List after Remove = %+v", got)
	}
}

func TestListGrowsBuffer(t *testing.T) {
	k := newFakeKernel()
	c := k.control(t)
	k.listNeeds = 3 * initialResultSize
	before := len(k.calls)
	if _, err := c.List(); err != nil {
		t.Fatalf("List: %v", err)
	}
	// 16 KiB and 32 KiB are full; 64 KiB fits.
	if n := len(k.calls) - before; n != 3 {
		t.Errorf("List took %d ioctls, want 3", n)
	}
	k.listNeeds = 2 * maxResultSize
	if _, err := c.List(); err == nil {
		t.Error("List with an answer beyond the cap: no error")
	}
}

func TestOpenRejectsOtherMajor(t *testing.T) {
	fake := func(fd int, req uint, buf []byte) error {
		binary.NativeEndian.PutUint32(buf, 5)
		return nil
	}
	if _, err := newControl(-1, fake); err == nil {
		t.Error("newControl accepted interface major 5")
	}
	// The version sent must be 4.0.0: Linux 6.1 (4.47) rejects newer.
	var sent [3]uint32
	spy := func(fd int, req uint, buf []byte) error {
		for i := range sent {
			sent[i] = binary.NativeEndian.Uint32(buf[4*i:])
		}
		return nil
	}
	if _, err := newControl(-1, spy); err != nil {
		t.Fatal(err)
	}
	if sent != [3]uint32{4, 0, 0} {
		t.Errorf("sent version %v, want 4.0.0", sent)
	}
}
