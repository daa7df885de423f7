package kernelipe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// auditStatus is struct audit_status (include/uapi/linux/audit.h). Older
// kernels read only the prefix they know.
type auditStatus struct {
	Mask, Enabled, Failure, PID, RateLimit, BacklogLimit, Lost, Backlog uint32
	FeatureBitmap, BacklogWaitTime, BacklogWaitTimeActual               uint32
}

const auditStatusSize = 11 * 4

func (s *auditStatus) marshal() []byte {
	b := make([]byte, 0, auditStatusSize)
	for _, v := range []uint32{s.Mask, s.Enabled, s.Failure, s.PID, s.RateLimit, s.BacklogLimit, s.Lost, s.Backlog, s.FeatureBitmap, s.BacklogWaitTime, s.BacklogWaitTimeActual} {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	return b
}

func (s *auditStatus) unmarshal(b []byte) {
	fields := []*uint32{&s.Mask, &s.Enabled, &s.Failure, &s.PID, &s.RateLimit, &s.BacklogLimit, &s.Lost, &s.Backlog, &s.FeatureBitmap, &s.BacklogWaitTime, &s.BacklogWaitTimeActual}
	for i, f := range fields {
		if len(b) < (i+1)*4 {
			return
		}
		*f = binary.NativeEndian.Uint32(b[i*4:])
	}
}

// backlogLimit is how many records the kernel queues for us before it
// drops; the default 64 overflows when a scenario denies in a burst.
const backlogLimit = 8192

// AuditReader receives audit records as the audit daemon: kauditd sends
// every record to the registered daemon's socket. Without a daemon the
// kernel prints records to the console, rate-limited, and most are lost.
type AuditReader struct {
	f   *os.File
	rc  syscall.RawConn
	seq uint32
	buf []byte
	// queued holds records that arrived while waiting for an
	// acknowledgement.
	queued [][]byte
	// Overruns counts the times the socket's receive buffer overflowed
	// (ENOBUFS): records were lost.
	Overruns int
}

// OpenAudit becomes the audit daemon (AUDIT_SET pid), enables auditing and
// raises the backlog limit. It needs CAP_AUDIT_CONTROL in the initial
// namespaces, and replaces any running audit daemon: do not use it on a
// system whose auditd matters.
func OpenAudit() (*AuditReader, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_AUDIT)
	if err != nil {
		return nil, fmt.Errorf("open audit socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind audit socket: %w", err)
	}
	// A larger buffer rides out bursts; FORCE needs CAP_NET_ADMIN, the
	// plain option is the fallback.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	f := os.NewFile(uintptr(fd), "audit-netlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit socket: %w", err)
	}
	r := &AuditReader{f: f, rc: rc, buf: make([]byte, 1<<16)}
	st := auditStatus{
		Mask:         unix.AUDIT_STATUS_ENABLED | unix.AUDIT_STATUS_PID | unix.AUDIT_STATUS_BACKLOG_LIMIT,
		Enabled:      1,
		PID:          uint32(os.Getpid()),
		BacklogLimit: backlogLimit,
	}
	if err := r.request(unix.AUDIT_SET, st.marshal()); err != nil {
		f.Close()
		if errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("become audit daemon: another audit daemon is registered: %w", err)
		}
		return nil, fmt.Errorf("become audit daemon: %w", err)
	}
	return r, nil
}

// SetDeadline bounds the next Reads; past it Read returns an error
// matching os.ErrDeadlineExceeded. The zero time removes the bound.
func (r *AuditReader) SetDeadline(t time.Time) error { return r.f.SetReadDeadline(t) }

// Close unregisters as the audit daemon and closes the socket. It may be
// called from another goroutine to end a blocked Read.
func (r *AuditReader) Close() error {
	if r == nil || r.f == nil {
		return nil
	}
	// Unregistering first keeps kauditd from holding records for a
	// socket that is gone; failure only means the kernel notices later.
	st := auditStatus{Mask: unix.AUDIT_STATUS_PID, PID: 0}
	r.send(unix.AUDIT_SET, 0, st.marshal())
	return r.f.Close()
}

// Lost is the kernel's count of records it dropped since boot (backlog
// full, rate limit, no memory), from AUDIT_GET.
func (r *AuditReader) Lost() (uint32, error) {
	seq, err := r.send(unix.AUDIT_GET, unix.NLM_F_REQUEST, nil)
	if err != nil {
		return 0, err
	}
	for {
		msg, err := r.receive()
		if err != nil {
			return 0, fmt.Errorf("read audit status: %w", err)
		}
		switch {
		case msg.Type == unix.AUDIT_GET && msg.Seq == seq:
			var st auditStatus
			st.unmarshal(msg.Payload)
			return st.Lost, nil
		case msg.Type == unix.NLMSG_ERROR && msg.Seq == seq:
			if err := msg.ackError(); err != nil {
				return 0, fmt.Errorf("read audit status: %w", err)
			}
		case msg.Type >= firstRecordType:
			r.queued = append(r.queued, append([]byte(nil), msg.raw...))
		}
	}
}

// Read returns the next audit record of any type; callers filter with
// Record.IsIPE. A record that does not parse comes back with its Type
// and Body set and an error wrapping ErrMalformedRecord; reading may go on.
func (r *AuditReader) Read() (Record, error) {
	for {
		var msg Message
		if len(r.queued) > 0 {
			raw := r.queued[0]
			r.queued = r.queued[1:]
			var err error
			if msg, err = ParseMessage(raw); err != nil {
				return Record{}, err
			}
		} else {
			var err error
			if msg, err = r.receive(); err != nil {
				return Record{}, err
			}
		}
		if msg.Type < firstRecordType || msg.Type == auditReplace {
			continue // acknowledgements, replies and liveness probes
		}
		rec, err := ParseRecord(msg.Type, msg.Payload)
		if err != nil {
			rec.Type = msg.Type
			rec.Body = string(msg.Payload)
			return rec, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
		}
		return rec, nil
	}
}

// auditReplace (AUDIT_REPLACE) is the kernel probing whether the
// registered daemon is alive, each time some process sets the audit pid;
// its payload is a binary pid, not text.
const auditReplace = 1329

// auditTrustedApp (AUDIT_TRUSTED_APP) is the user message type Mark sends:
// one in the user range, which the kernel logs like any record.
const auditTrustedApp = 1121

// Mark asks the kernel to log text as a record of type 1121
// (AUDIT_TRUSTED_APP). The kernel queues records in the order they are
// made, so once Read returns the mark, every record made before Mark was
// called has been read: the way to tell which records an action caused.
// Needs CAP_AUDIT_WRITE and auditing enabled.
func (r *AuditReader) Mark(text string) error {
	_, err := r.send(auditTrustedApp, 0, append([]byte(text), 0))
	return err
}

// IsMark says rec is the record Mark(text) produced.
func IsMark(rec Record, text string) bool {
	return rec.Type == auditTrustedApp && strings.Contains(rec.Body, "msg='"+text+"'")
}

// ErrMalformedRecord marks a record Read could not parse.
var ErrMalformedRecord = errors.New("malformed audit record")

// firstRecordType separates audit's control messages (AUDIT_GET, AUDIT_SET
// and the like, below 1100) from records.
const firstRecordType = 1100

func (r *AuditReader) send(typ uint16, flags uint16, payload []byte) (uint32, error) {
	r.seq++
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(msg[8:], r.seq)
	msg = append(msg, payload...)
	var sendErr error
	err := r.rc.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return sendErr != unix.EAGAIN
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		return 0, fmt.Errorf("send audit request %d: %w", typ, err)
	}
	return r.seq, nil
}

// request sends a message and waits for the kernel's acknowledgement,
// queueing records that arrive meanwhile.
func (r *AuditReader) request(typ uint16, payload []byte) error {
	seq, err := r.send(typ, unix.NLM_F_ACK, payload)
	if err != nil {
		return err
	}
	for {
		msg, err := r.receive()
		if err != nil {
			return err
		}
		if msg.Type == unix.NLMSG_ERROR && msg.Seq == seq {
			return msg.ackError()
		}
		if msg.Type >= firstRecordType {
			r.queued = append(r.queued, append([]byte(nil), msg.raw...))
		}
	}
}

func (r *AuditReader) receive() (Message, error) {
	for {
		var n int
		var recvErr error
		err := r.rc.Read(func(fd uintptr) bool {
			n, _, recvErr = unix.Recvfrom(int(fd), r.buf, 0)
			return recvErr != unix.EAGAIN
		})
		if err == nil {
			err = recvErr
		}
		if errors.Is(err, unix.ENOBUFS) {
			r.Overruns++
			continue
		}
		if err != nil {
			return Message{}, fmt.Errorf("read audit socket: %w", err)
		}
		msg, err := ParseMessage(r.buf[:n])
		if err != nil {
			return Message{}, err
		}
		return msg, nil
	}
}

// Message is one netlink message from the audit socket.
type Message struct {
	Type    uint16
	Flags   uint16
	Seq     uint32
	PortID  uint32
	Payload []byte
	raw     []byte
}

// ParseMessage parses one datagram from the audit socket. The kernel
// sends each record in a datagram of its own with nlmsg_len counting only
// the payload, 16 bytes short of what netlink specifies, so
// syscall.ParseNetlinkMessage rejects records; for them the payload is the
// rest of the datagram. Control messages (acknowledgements, AUDIT_GET
// replies) have correct lengths and are cut to nlmsg_len.
func ParseMessage(b []byte) (Message, error) {
	if len(b) < unix.NLMSG_HDRLEN {
		return Message{}, fmt.Errorf("parse audit message: %d bytes is shorter than a netlink header", len(b))
	}
	m := Message{
		Type:   binary.NativeEndian.Uint16(b[4:]),
		Flags:  binary.NativeEndian.Uint16(b[6:]),
		Seq:    binary.NativeEndian.Uint32(b[8:]),
		PortID: binary.NativeEndian.Uint32(b[12:]),
		raw:    b,
	}
	length := int(binary.NativeEndian.Uint32(b[0:]))
	if m.Type < firstRecordType {
		if length < unix.NLMSG_HDRLEN || length > len(b) {
			return Message{}, fmt.Errorf("parse audit message: type %d: length %d outside the %d-byte datagram", m.Type, length, len(b))
		}
		m.Payload = b[unix.NLMSG_HDRLEN:length]
		return m, nil
	}
	m.Payload = b[unix.NLMSG_HDRLEN:]
	return m, nil
}

// ackError is the errno of an NLMSG_ERROR message, nil for a plain ACK.
func (m Message) ackError() error {
	if len(m.Payload) < 4 {
		return errors.New("parse audit acknowledgement: too short")
	}
	code := int32(binary.NativeEndian.Uint32(m.Payload))
	if code == 0 {
		return nil
	}
	return syscall.Errno(-code)
}
