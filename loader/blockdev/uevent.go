package blockdev

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Uevent is one kernel object event as the kernel broadcasts it on
// NETLINK_KOBJECT_UEVENT (lib/kobject_uevent.c): "ACTION@DEVPATH" then
// NUL-separated KEY=VALUE pairs.
type Uevent struct {
	Action    string // add, remove, change, move, online, offline, bind, unbind
	DevPath   string // under /sys, such as /devices/virtual/block/dm-0
	Subsystem string
	DevType   string // "disk" or "partition" for block devices
	DevName   string // node name under /dev, such as "dm-0"
	// Major and Minor are valid only when HasDevNum is set.
	Major, Minor uint32
	HasDevNum    bool
	// DiskSeq is the disk sequence number (block devices, Linux 5.15+);
	// zero when absent, which the kernel never assigns.
	DiskSeq uint64
	SeqNum  uint64
	// DMName is the device-mapper name. The kernel does not send it; it
	// appears only in events that udev re-broadcasts.
	DMName string
	Env    map[string]string // every KEY=VALUE pair, the above included
}

// IsDMDisk reports whether the event is about a device-mapper disk.
func (e Uevent) IsDMDisk() bool {
	return e.Subsystem == "block" && e.DevType == "disk" && strings.HasPrefix(e.DevName, "dm-")
}

// udev's own re-broadcasts on the same netlink family start with this
// magic and a binary header; they are not kernel messages.
var udevMagic = []byte("libudev\x00")

// ParseUevent parses one kernel uevent message.
func ParseUevent(msg []byte) (Uevent, error) {
	if bytes.HasPrefix(msg, udevMagic) {
		return Uevent{}, errors.New("parse uevent: udev message, not a kernel one")
	}
	parts := bytes.Split(msg, []byte{0})
	action, devPath, ok := strings.Cut(string(parts[0]), "@")
	if !ok || action == "" || !strings.HasPrefix(devPath, "/") {
		return Uevent{}, fmt.Errorf("parse uevent: malformed header %q", parts[0])
	}
	e := Uevent{Action: action, DevPath: devPath, Env: make(map[string]string, len(parts))}
	var major, minor string
	var haveMajor, haveMinor bool
	for _, part := range parts[1:] {
		if len(part) == 0 {
			continue // the trailing NUL, or padding
		}
		key, value, ok := strings.Cut(string(part), "=")
		if !ok || key == "" {
			return Uevent{}, fmt.Errorf("parse uevent: malformed variable %q", part)
		}
		if _, dup := e.Env[key]; dup {
			return Uevent{}, fmt.Errorf("parse uevent: duplicate variable %s", key)
		}
		e.Env[key] = value
		var err error
		switch key {
		case "ACTION":
			if value != action {
				return Uevent{}, fmt.Errorf("parse uevent: ACTION=%s contradicts header %s", value, action)
			}
		case "DEVPATH":
			if value != devPath {
				return Uevent{}, fmt.Errorf("parse uevent: DEVPATH=%s contradicts header %s", value, devPath)
			}
		case "SUBSYSTEM":
			e.Subsystem = value
		case "DEVTYPE":
			e.DevType = value
		case "DEVNAME":
			e.DevName = value
		case "DM_NAME":
			e.DMName = value
		case "MAJOR":
			major, haveMajor = value, true
		case "MINOR":
			minor, haveMinor = value, true
		case "DISKSEQ":
			e.DiskSeq, err = strconv.ParseUint(value, 10, 64)
		case "SEQNUM":
			e.SeqNum, err = strconv.ParseUint(value, 10, 64)
		}
		if err != nil {
			return Uevent{}, fmt.Errorf("parse uevent: %s: %w", key, err)
		}
	}
	if haveMajor != haveMinor {
		return Uevent{}, errors.New("parse uevent: MAJOR without MINOR or the reverse")
	}
	if haveMajor {
		maj, err := strconv.ParseUint(major, 10, 32)
		if err != nil {
			return Uevent{}, fmt.Errorf("parse uevent: MAJOR: %w", err)
		}
		min, err := strconv.ParseUint(minor, 10, 32)
		if err != nil {
			return Uevent{}, fmt.Errorf("parse uevent: MINOR: %w", err)
		}
		e.Major, e.Minor, e.HasDevNum = uint32(maj), uint32(min), true
	}
	return e, nil
}

// ErrUeventOverflow means the socket's receive queue overflowed and events
// were dropped: whatever the caller tracks must be rebuilt from a full scan.
var ErrUeventOverflow = errors.New("uevent queue overflowed, events were lost")

// The kernel's groups on NETLINK_KOBJECT_UEVENT: 1 carries kernel events,
// 2 is udev's re-broadcast.
const kernelUeventGroup = 1

// Big enough for bursts such as many devices appearing at boot; a read that
// overflows it reports ErrUeventOverflow.
const ueventRecvBuffer = 4 << 20

// UeventListener receives kernel uevents.
type UeventListener struct {
	file   *os.File
	buf    []byte
	closed atomic.Bool
}

// ListenUevents subscribes to kernel uevents. It needs no privilege, but
// only sees the events of the initial network namespace's devices when run
// there.
func ListenUevents() (*UeventListener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("open uevent socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: kernelUeventGroup}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind uevent socket: %w", err)
	}
	// SO_RCVBUFFORCE exceeds rmem_max but needs CAP_NET_ADMIN; the plain
	// option is the unprivileged fallback.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ueventRecvBuffer) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, ueventRecvBuffer)
	}
	return &UeventListener{
		file: os.NewFile(uintptr(fd), "uevent"),
		// UEVENT_BUFFER_SIZE is 2048 for the variables plus the header.
		buf: make([]byte, 16*1024),
	}, nil
}

// SetDeadline makes Next return an error wrapping os.ErrDeadlineExceeded
// once t passes; the zero time clears it.
func (l *UeventListener) SetDeadline(t time.Time) error {
	return l.file.SetReadDeadline(t)
}

// Next returns the next well-formed kernel uevent. Messages from other
// senders and malformed messages are dropped. Close unblocks it.
func (l *UeventListener) Next() (Uevent, error) {
	conn, err := l.file.SyscallConn()
	if l.closed.Load() {
		err = os.ErrClosed
	}
	if err != nil {
		return Uevent{}, fmt.Errorf("read uevent: %w", err)
	}
	for {
		var n, flags int
		var from unix.Sockaddr
		var recvErr error
		err := conn.Read(func(fd uintptr) bool {
			n, _, flags, from, recvErr = unix.Recvmsg(int(fd), l.buf, nil, 0)
			return recvErr != unix.EAGAIN
		})
		if err != nil {
			// A read cut short by Close reports an internal error
			// value; callers test for os.ErrClosed.
			if l.closed.Load() {
				err = os.ErrClosed
			}
			return Uevent{}, fmt.Errorf("read uevent: %w", err)
		}
		if errors.Is(recvErr, unix.ENOBUFS) {
			return Uevent{}, fmt.Errorf("read uevent: %w", ErrUeventOverflow)
		}
		if errors.Is(recvErr, unix.EINTR) {
			continue
		}
		if recvErr != nil {
			return Uevent{}, fmt.Errorf("read uevent: %w", recvErr)
		}
		// Only the kernel sends with port id 0; anything else is a
		// process pretending.
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			continue
		}
		e, err := ParseUevent(l.buf[:n])
		if err != nil {
			continue
		}
		return e, nil
	}
}

// Close stops listening. It is safe on a nil listener.
func (l *UeventListener) Close() error {
	if l == nil {
		return nil
	}
	l.closed.Store(true)
	return l.file.Close()
}
