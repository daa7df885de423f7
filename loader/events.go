package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// ErrNoMoreEvents ends a read that does not follow: every event that was in
// the ring buffer has been returned.
var ErrNoMoreEvents = errors.New("no more events")

// EventReader reads decision events from the ring buffer. The ring buffer
// has one consumer position: two readers (a foreground loader and bpfipe
// events) share the events between them rather than each seeing all.
type EventReader struct {
	running *Running
	ring    *ringbuf.Reader
	rec     ringbuf.Record
	// policies caches parsed policies by generation, to render rules.
	policies map[uint32]*policy.Policy
}

// Events opens a reader. With follow, Read waits for new events; without,
// it returns ErrNoMoreEvents once the buffer is drained.
func (r *Running) Events(follow bool) (*EventReader, error) {
	ring, err := ringbuf.NewReader(r.events)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	if !follow {
		ring.SetDeadline(time.Now())
	}
	er := &EventReader{running: r, ring: ring, policies: map[uint32]*policy.Policy{}}
	er.remember(r.State)
	return er, nil
}

func (e *EventReader) remember(st *State) {
	for _, a := range []*ActivePolicy{&st.Active, st.Previous} {
		if a == nil {
			continue
		}
		if _, ok := e.policies[a.Generation]; !ok {
			if p := policyFromState(a); p != nil {
				e.policies[a.Generation] = p
			}
		}
	}
}

// policyOf finds the policy of a generation, reading the state again when
// an update has happened since the reader opened.
func (e *EventReader) policyOf(generation uint32) *policy.Policy {
	if p, ok := e.policies[generation]; ok {
		return p
	}
	if st, err := readState(e.running.paths); err == nil {
		e.remember(st)
	}
	return e.policies[generation]
}

// Read returns the next decision as IPE's access record.
func (e *EventReader) Read() (AccessRecord, error) {
	if err := e.ring.ReadInto(&e.rec); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return AccessRecord{}, ErrNoMoreEvents
		}
		return AccessRecord{}, fmt.Errorf("read events: %w", err)
	}
	ev, err := decodeEvent(e.rec.RawSample)
	if err != nil {
		return AccessRecord{}, err
	}
	return DecodeAccess(ev, e.policyOf), nil
}

// Close stops the reader; a blocked Read returns.
func (e *EventReader) Close() error {
	if e == nil {
		return nil
	}
	return e.ring.Close()
}

var eventSize = binary.Size(bpf.Event{})

func decodeEvent(raw []byte) (*bpf.Event, error) {
	if len(raw) < eventSize {
		return nil, fmt.Errorf("decode event: %d bytes, want %d", len(raw), eventSize)
	}
	var ev bpf.Event
	if _, err := binary.Decode(raw[:eventSize], binary.LittleEndian, &ev); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	return &ev, nil
}
