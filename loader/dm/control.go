// Package dm talks to the kernel's device mapper through its ioctl
// interface on /dev/mapper/control (include/uapi/linux/dm-ioctl.h), with no
// dmsetup or veritysetup at run time, and reads dm-verity tables.
package dm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device mapper's control node. devtmpfs creates it
// as soon as the dm core is loaded.
const ControlPath = "/dev/mapper/control"

// The interface version sent with every ioctl. The kernel rejects a client
// newer than itself (check_ioctl_version), and x/sys's DM_VERSION_MINOR is
// newer than Linux 6.1's; 4.0.0 covers every request made here.
var clientVersion = [3]uint32{4, 0, 0}

const headerSize = unix.SizeofDmIoctl

// The kernel places results at the first 8-byte boundary after the header.
const dataAlign = 8

// Result buffers start here and double on DM_BUFFER_FULL_FLAG up to the cap.
const (
	initialResultSize = 16 << 10
	maxResultSize     = 16 << 20
)

// Device is one device-mapper device.
type Device struct {
	Name string
	// UUID is empty when the device has none, or when the kernel did not
	// report it (List on kernels before 5.14).
	UUID string
	// Dev is the device number in the userspace encoding, as the ioctl
	// returns it; see blockdev.KernelDev for the kernel's encoding.
	Dev uint64
	// Flags holds DM_*_FLAG status bits; List leaves it zero.
	Flags     uint32
	OpenCount int32
	EventNr   uint32
}

// Major returns the device's major number.
func (d Device) Major() uint32 { return unix.Major(d.Dev) }

// Minor returns the device's minor number.
func (d Device) Minor() uint32 { return unix.Minor(d.Dev) }

// ReadOnly reports DM_READONLY_FLAG (List does not report flags).
func (d Device) ReadOnly() bool { return d.Flags&unix.DM_READONLY_FLAG != 0 }

// Suspended reports DM_SUSPEND_FLAG (List does not report flags).
func (d Device) Suspended() bool { return d.Flags&unix.DM_SUSPEND_FLAG != 0 }

// Target is one line of a device-mapper table.
type Target struct {
	Start  uint64 // first sector covered, in 512-byte sectors
	Length uint64 // sectors covered
	Type   string // such as "verity" or "linear"
	Params string // the target's parameter line
}

// Control is an open handle on the device mapper.
type Control struct {
	fd int
	// ioctl is the system call, replaced by a fake kernel in tests.
	ioctl func(fd int, req uint, buf []byte) error
	// KernelVersion is the kernel's dm ioctl interface version.
	KernelVersion [3]uint32
}

// Open opens the device mapper control node and checks that the kernel
// speaks interface version 4.
func Open() (*Control, error) {
	fd, err := unix.Open(ControlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ControlPath, err)
	}
	c, err := newControl(fd, ioctl)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return c, nil
}

func newControl(fd int, call func(int, uint, []byte) error) (*Control, error) {
	c := &Control{fd: fd, ioctl: call}
	hdr, _, err := c.do(unix.DM_VERSION, request{})
	if err != nil {
		return nil, fmt.Errorf("query device-mapper version: %w", err)
	}
	if hdr.Version[0] != clientVersion[0] {
		return nil, fmt.Errorf("query device-mapper version: kernel speaks %d.%d.%d, want major %d",
			hdr.Version[0], hdr.Version[1], hdr.Version[2], clientVersion[0])
	}
	c.KernelVersion = hdr.Version
	return c, nil
}

// Close releases the control node. It is safe on a nil Control.
func (c *Control) Close() error {
	if c == nil || c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

func ioctl(fd int, req uint, buf []byte) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0])))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return errno
		}
	}
}

// request is one ioctl's input.
type request struct {
	name    string
	uuid    string
	flags   uint32
	targets uint32
	payload []byte // placed at the data start
	// resultSize is the room reserved after the header for the answer.
	resultSize int
}

func (c *Control) do(req uint, r request) (unix.DmIoctl, []byte, error) {
	if len(r.name) >= unix.DM_NAME_LEN {
		return unix.DmIoctl{}, nil, fmt.Errorf("device name %q longer than %d bytes", r.name, unix.DM_NAME_LEN-1)
	}
	if len(r.uuid) >= unix.DM_UUID_LEN {
		return unix.DmIoctl{}, nil, fmt.Errorf("device uuid %q longer than %d bytes", r.uuid, unix.DM_UUID_LEN-1)
	}
	if strings.IndexByte(r.name, 0) >= 0 || strings.IndexByte(r.uuid, 0) >= 0 {
		return unix.DmIoctl{}, nil, errors.New("device name or uuid contains a NUL byte")
	}
	size := headerSize + max(len(r.payload), r.resultSize)
	buf := make([]byte, size)
	hdr := unix.DmIoctl{
		Version:      clientVersion,
		Data_size:    uint32(size),
		Data_start:   headerSize,
		Target_count: r.targets,
		Flags:        r.flags,
	}
	copy(hdr.Name[:], r.name)
	copy(hdr.Uuid[:], r.uuid)
	if _, err := binary.Encode(buf, binary.NativeEndian, &hdr); err != nil {
		return unix.DmIoctl{}, nil, fmt.Errorf("encode dm ioctl header: %w", err)
	}
	copy(buf[headerSize:], r.payload)
	if err := c.ioctl(c.fd, req, buf); err != nil {
		return unix.DmIoctl{}, nil, err
	}
	var out unix.DmIoctl
	if _, err := binary.Decode(buf, binary.NativeEndian, &out); err != nil {
		return unix.DmIoctl{}, nil, fmt.Errorf("decode dm ioctl header: %w", err)
	}
	if out.Flags&unix.DM_BUFFER_FULL_FLAG != 0 {
		return out, nil, nil
	}
	// Commands without results leave data_start and data_size as sent or
	// shrink data_size; only a range inside what was sent is trusted.
	start, end := int(out.Data_start), int(out.Data_size)
	if start < headerSize || end > size || start > end {
		return out, nil, nil
	}
	return out, buf[start:end], nil
}

// doGrowing repeats a request with a larger result buffer until the
// answer fits.
func (c *Control) doGrowing(req uint, r request) (unix.DmIoctl, []byte, error) {
	for r.resultSize = initialResultSize; ; r.resultSize *= 2 {
		hdr, data, err := c.do(req, r)
		if err != nil {
			return hdr, nil, err
		}
		if hdr.Flags&unix.DM_BUFFER_FULL_FLAG == 0 {
			return hdr, data, nil
		}
		if r.resultSize*2 > maxResultSize {
			return hdr, nil, fmt.Errorf("result larger than %d bytes", maxResultSize)
		}
	}
}

func deviceFromHeader(hdr unix.DmIoctl) Device {
	return Device{
		Name:      cString(hdr.Name[:]),
		UUID:      cString(hdr.Uuid[:]),
		Dev:       hdr.Dev,
		Flags:     hdr.Flags,
		OpenCount: hdr.Open_count,
		EventNr:   hdr.Event_nr,
	}
}

func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// List returns every device-mapper device.
func (c *Control) List() ([]Device, error) {
	// DM_UUID_FLAG asks kernels from 5.14 on to append each UUID; older
	// kernels ignore it.
	_, data, err := c.doGrowing(unix.DM_LIST_DEVICES, request{flags: unix.DM_UUID_FLAG})
	if err != nil {
		return nil, fmt.Errorf("list dm devices: %w", err)
	}
	devices, err := parseNameList(data)
	if err != nil {
		return nil, fmt.Errorf("list dm devices: %w", err)
	}
	return devices, nil
}

// Status returns a device's state without its table.
func (c *Control) Status(name string) (Device, error) {
	hdr, _, err := c.do(unix.DM_DEV_STATUS, request{name: name})
	if err != nil {
		return Device{}, fmt.Errorf("query status of dm device %q: %w", name, err)
	}
	return deviceFromHeader(hdr), nil
}

// Table returns the active table of a device.
func (c *Control) Table(name string) ([]Target, error) {
	_, targets, err := c.TableStatus(name)
	return targets, err
}

// TableStatus returns the device's state together with its active table,
// both from one ioctl, so they describe the same device even if it is
// being removed and recreated concurrently.
func (c *Control) TableStatus(name string) (Device, []Target, error) {
	hdr, data, err := c.doGrowing(unix.DM_TABLE_STATUS, request{name: name, flags: unix.DM_STATUS_TABLE_FLAG})
	if err != nil {
		return Device{}, nil, fmt.Errorf("read table of dm device %q: %w", name, err)
	}
	targets, err := parseTargetSpecs(data, hdr.Target_count)
	if err != nil {
		return Device{}, nil, fmt.Errorf("read table of dm device %q: %w", name, err)
	}
	return deviceFromHeader(hdr), targets, nil
}

// Create makes a device, loads the table and activates it. Verity tables
// need readOnly: the target refuses writable tables. On failure the
// half-made device is removed.
func (c *Control) Create(name string, targets []Target, readOnly bool) (Device, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return Device{}, fmt.Errorf("create dm device %q: invalid name", name)
	}
	if len(targets) == 0 {
		return Device{}, fmt.Errorf("create dm device %q: no targets", name)
	}
	payload, err := encodeTargetSpecs(targets)
	if err != nil {
		return Device{}, fmt.Errorf("create dm device %q: %w", name, err)
	}
	if _, _, err := c.do(unix.DM_DEV_CREATE, request{name: name}); err != nil {
		return Device{}, fmt.Errorf("create dm device %q: %w", name, err)
	}
	var flags uint32
	if readOnly {
		flags |= unix.DM_READONLY_FLAG
	}
	if _, _, err := c.do(unix.DM_TABLE_LOAD, request{name: name, flags: flags, targets: uint32(len(targets)), payload: payload}); err != nil {
		err = fmt.Errorf("load table of dm device %q: %w", name, err)
		return Device{}, errors.Join(err, c.Remove(name))
	}
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes, which swaps the
	// loaded table in.
	hdr, _, err := c.do(unix.DM_DEV_SUSPEND, request{name: name})
	if err != nil {
		err = fmt.Errorf("resume dm device %q: %w", name, err)
		return Device{}, errors.Join(err, c.Remove(name))
	}
	return deviceFromHeader(hdr), nil
}

// Remove destroys a device. It fails with EBUSY while the device is open
// or mounted.
func (c *Control) Remove(name string) error {
	if _, _, err := c.do(unix.DM_DEV_REMOVE, request{name: name}); err != nil {
		return fmt.Errorf("remove dm device %q: %w", name, err)
	}
	return nil
}
