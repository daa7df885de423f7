package blockdev

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// uevent joins variables the way lib/kobject_uevent.c sends them: the
// "ACTION@DEVPATH" header, then each KEY=VALUE, each NUL-terminated.
func uevent(header string, vars ...string) []byte {
	return []byte(header + "\x00" + strings.Join(vars, "\x00") + "\x00")
}

func TestParseUeventDMAdd(t *testing.T) {
	msg := uevent("add@/devices/virtual/block/dm-0",
		"ACTION=add", "DEVPATH=/devices/virtual/block/dm-0", "SUBSYSTEM=block",
		"MAJOR=254", "MINOR=0", "DEVNAME=dm-0", "DEVTYPE=disk", "DISKSEQ=9", "SEQNUM=1234")
	e, err := ParseUevent(msg)
	if err != nil {
		t.Fatalf("ParseUevent: %v", err)
	}
	if e.Action != "add" || e.DevPath != "/devices/virtual/block/dm-0" || e.Subsystem != "block" ||
		e.DevName != "dm-0" || e.DevType != "disk" {
		t.Errorf("strings: %+v", e)
	}
	if !e.HasDevNum || e.Major != 254 || e.Minor != 0 || e.DiskSeq != 9 || e.SeqNum != 1234 {
		t.Errorf("numbers: %+v", e)
	}
	if !e.IsDMDisk() {
		t.Error("IsDMDisk = false for a dm disk")
	}
	if e.Env["SUBSYSTEM"] != "block" || len(e.Env) != 9 {
		t.Errorf("Env = %v", e.Env)
	}
}

func TestParseUeventOthers(t *testing.T) {
	// dm sends its udev cookie on change and remove.
	change, err := ParseUevent(uevent("change@/devices/virtual/block/dm-1",
		"ACTION=change", "DEVPATH=/devices/virtual/block/dm-1", "SUBSYSTEM=block", "DM_COOKIE=4194304",
		"MAJOR=254", "MINOR=1", "DEVNAME=dm-1", "DEVTYPE=disk", "DISKSEQ=12", "SEQNUM=2000"))
	if err != nil || !change.IsDMDisk() || change.Env["DM_COOKIE"] != "4194304" || change.Minor != 1 {
		t.Errorf("dm change: %+v, %v", change, err)
	}
	// A partition of a virtio disk is a block event but not a dm disk.
	part, err := ParseUevent(uevent("add@/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1",
		"ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1", "SUBSYSTEM=block",
		"MAJOR=253", "MINOR=1", "DEVNAME=vda1", "DEVTYPE=partition", "DISKSEQ=1", "PARTN=1", "SEQNUM=900"))
	if err != nil || part.IsDMDisk() || part.Major != 253 {
		t.Errorf("partition: %+v, %v", part, err)
	}
	// Module events have no device number.
	mod, err := ParseUevent(uevent("add@/module/dm_verity",
		"ACTION=add", "DEVPATH=/module/dm_verity", "SUBSYSTEM=module", "SEQNUM=901"))
	if err != nil || mod.HasDevNum || mod.IsDMDisk() || mod.Subsystem != "module" {
		t.Errorf("module: %+v, %v", mod, err)
	}
	// The header alone is a valid (if useless) message.
	bare, err := ParseUevent([]byte("remove@/devices/virtual/block/dm-2"))
	if err != nil || bare.Action != "remove" || len(bare.Env) != 0 {
		t.Errorf("bare header: %+v, %v", bare, err)
	}
}

func TestParseUeventRejects(t *testing.T) {
	tests := map[string][]byte{
		"udev message":        append([]byte("libudev\x00\xfe\xed\xca\xfe"), make([]byte, 32)...),
		"no at sign":          uevent("add/devices/x", "ACTION=add"),
		"empty action":        uevent("@/devices/x"),
		"relative devpath":    uevent("add@devices/x"),
		"variable without =":  uevent("add@/devices/x", "ACTION"),
		"empty key":           uevent("add@/devices/x", "=value"),
		"action contradicts":  uevent("add@/devices/x", "ACTION=remove"),
		"devpath contradicts": uevent("add@/devices/x", "DEVPATH=/devices/y"),
		"duplicate":           uevent("add@/devices/x", "MAJOR=1", "MAJOR=2", "MINOR=0"),
		"major alone":         uevent("add@/devices/x", "MAJOR=1"),
		"minor alone":         uevent("add@/devices/x", "MINOR=1"),
		"bad major":           uevent("add@/devices/x", "MAJOR=x", "MINOR=0"),
		"major too big":       uevent("add@/devices/x", "MAJOR=4294967296", "MINOR=0"),
		"negative minor":      uevent("add@/devices/x", "MAJOR=1", "MINOR=-1"),
		"bad diskseq":         uevent("add@/devices/x", "DISKSEQ=0x10"),
		"bad seqnum":          uevent("add@/devices/x", "SEQNUM="),
		"empty message":       {},
	}
	for name, msg := range tests {
		if e, err := ParseUevent(msg); err == nil {
			t.Errorf("%s: no error, got %+v", name, e)
		}
	}
}

func FuzzParseUevent(f *testing.F) {
	f.Add(uevent("add@/devices/virtual/block/dm-0",
		"ACTION=add", "DEVPATH=/devices/virtual/block/dm-0", "SUBSYSTEM=block",
		"MAJOR=254", "MINOR=0", "DEVNAME=dm-0", "DEVTYPE=disk", "DISKSEQ=9", "SEQNUM=1234"))
	f.Add(uevent("remove@/module/x", "ACTION=remove", "SEQNUM=1"))
	f.Add([]byte("libudev\x00"))
	f.Add([]byte("a@/\x00=\x00MAJOR=1"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		e, err := ParseUevent(msg)
		if err != nil {
			return
		}
		if e.Action == "" || !strings.HasPrefix(e.DevPath, "/") {
			t.Fatalf("accepted a bad header: %+v", e)
		}
		if v, ok := e.Env["ACTION"]; ok && v != e.Action {
			t.Fatalf("ACTION %q kept beside header %q", v, e.Action)
		}
		if e.HasDevNum {
			if e.Env["MAJOR"] == "" || e.Env["MINOR"] == "" {
				t.Fatalf("device number without MAJOR and MINOR: %+v", e)
			}
			if maj, _ := strconv.ParseUint(e.Env["MAJOR"], 10, 32); uint32(maj) != e.Major {
				t.Fatalf("Major %d, MAJOR=%s", e.Major, e.Env["MAJOR"])
			}
		}
		if e.Subsystem != e.Env["SUBSYSTEM"] || e.DevName != e.Env["DEVNAME"] {
			t.Fatalf("fields disagree with Env: %+v", e)
		}
	})
}

// The listener must stop on a deadline and on Close, or a daemon waiting
// for device events could never shut down. Binding to the kernel's group
// needs no privilege, so this runs anywhere with netlink.
func TestUeventListenerStops(t *testing.T) {
	l, err := ListenUevents()
	if err != nil {
		t.Fatalf("ListenUevents: %v", err)
	}
	// Any event that happens to arrive is fine; the deadline must end the
	// wait otherwise.
	if err := l.SetDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := l.Next()
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Next after the deadline: %v, want ErrDeadlineExceeded", err)
		}
		break
	}
	if err := l.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := l.Next(); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked 5s after Close")
	}
	var nilListener *UeventListener
	if err := nilListener.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
}
