package main

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/bench"
)

// catchUp is how long a reader may go without a new event before the
// buffer counts as drained.
const catchUp = 2 * time.Second

// bpfipeEvents runs the exec loop under bpfipe with success auditing on,
// once with a reader taking events as they come and once with the reader
// started only after the loop, and reports both against bpfipe's own
// decision and drop counters.
func (b *bpfipeEnforcer) events(w *workloads, execs int) []bench.Events {
	var out []bench.Events
	for _, concurrent := range []bool{true, false} {
		ev := bench.Events{Enforcer: bench.Bpfipe, Reader: concurrent, Execs: execs}
		if err := b.eventLoop(w, &ev); err != nil {
			ev.Error = err.Error()
		}
		out = append(out, ev)
	}
	return out
}

func (b *bpfipeEnforcer) eventLoop(w *workloads, ev *bench.Events) (err error) {
	if err := b.start(1, true); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.stop()) }()
	running, err := loader.Open()
	if err != nil {
		return err
	}
	defer running.Close()
	before, err := running.Status()
	if err != nil {
		return err
	}
	var read atomic.Uint64
	var reader *loader.EventReader
	readerDone := make(chan struct{})
	startReader := func(follow bool) error {
		if reader, err = running.Events(follow); err != nil {
			return err
		}
		go func() {
			defer close(readerDone)
			for {
				if _, err := reader.Read(); err != nil {
					return
				}
				read.Add(1)
			}
		}()
		return nil
	}
	if ev.Reader {
		if err := startReader(true); err != nil {
			return err
		}
	}
	began := time.Now()
	for range ev.Execs {
		if err := spawn(w.static, w.devNull); err != nil {
			return err
		}
	}
	ev.Nanos = time.Since(began).Nanoseconds()
	after, err := running.Status()
	if err != nil {
		return err
	}
	if !ev.Reader {
		if err := startReader(false); err != nil {
			return err
		}
	}
	waitQuiet(&read)
	reader.Close()
	<-readerDone
	ev.Read = read.Load()
	ev.Decisions = decisions(after) - decisions(before)
	ev.Dropped = after.EventsDropped - before.EventsDropped
	return nil
}

func decisions(s *loader.Status) uint64 {
	var n uint64
	for _, h := range s.Hooks {
		n += h.Allow + h.Deny
	}
	return n
}

// waitQuiet returns once count has not grown for catchUp.
func waitQuiet(count *atomic.Uint64) {
	last := count.Load()
	for {
		time.Sleep(catchUp)
		now := count.Load()
		if now == last {
			return
		}
		last = now
	}
}

// ipeEvents runs the exec loop under in-tree IPE with success_audit on,
// this program reading the audit records as the audit daemon, and reports
// the records read against the kernel's count of lost records.
func (e *ipeEnforcer) events(w *workloads, execs int) bench.Events {
	ev := bench.Events{Enforcer: bench.IPE, Reader: true, Execs: execs}
	if err := e.eventLoop(w, &ev); err != nil {
		ev.Error = err.Error()
	}
	return ev
}

func (e *ipeEnforcer) eventLoop(w *workloads, ev *bench.Events) (err error) {
	audit, err := kernelipe.OpenAudit()
	if err != nil {
		return err
	}
	defer audit.Close()
	if err := e.start(1); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, e.stop(1)) }()
	lostBefore, err := audit.Lost()
	if err != nil {
		return err
	}
	// Records of the load itself come first; the reader starts after them.
	if err := readUntilMark(audit, "bench-events-start", nil); err != nil {
		return err
	}
	if err := e.fs.SetSuccessAudit(true); err != nil {
		return err
	}
	var read atomic.Uint64
	const mark = "bench-events-end"
	readerErr := make(chan error, 1)
	go func() { readerErr <- readUntilMark(audit, "", func(rec kernelipe.Record) { read.Add(1) }) }()
	began := time.Now()
	var loopErr error
	for range ev.Execs {
		if loopErr = spawn(w.static, w.devNull); loopErr != nil {
			break
		}
	}
	ev.Nanos = time.Since(began).Nanoseconds()
	offErr := e.fs.SetSuccessAudit(false)
	markErr := audit.Mark(mark)
	if err := errors.Join(loopErr, offErr, markErr); err != nil {
		audit.Close()
		<-readerErr
		return err
	}
	if err := <-readerErr; err != nil {
		return err
	}
	ev.Read = read.Load()
	lostAfter, err := audit.Lost()
	if err != nil {
		return err
	}
	ev.Dropped = uint64(lostAfter - lostBefore)
	return nil
}

// readUntilMark reads IPE access records, handing each to seen, until
// the record of a mark: its own mark when text is given, else any
// "bench-events-end" mark made by the caller.
func readUntilMark(audit *kernelipe.AuditReader, text string, seen func(kernelipe.Record)) error {
	want := text
	if want == "" {
		want = "bench-events-end"
	} else if err := audit.Mark(text); err != nil {
		return err
	}
	audit.SetDeadline(time.Now().Add(5 * time.Minute))
	defer audit.SetDeadline(time.Time{})
	for {
		rec, err := audit.Read()
		if errors.Is(err, kernelipe.ErrMalformedRecord) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read audit records: %w", err)
		}
		if kernelipe.IsMark(rec, want) {
			return nil
		}
		if rec.Access != nil && seen != nil {
			seen(rec)
		}
	}
}
