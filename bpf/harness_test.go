package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// DecideHarness runs decide.h through the test-only program decide_test.c,
// which this machine can load and run with BPF_PROG_TEST_RUN where it
// cannot load LSM programs. It is exported for the external tests that
// compare the kernel side with the maps package.
type DecideHarness struct {
	t      testing.TB
	objs   decidetestObjects
	events *ringbuf.Reader
	// rows is the spec of the policy's inner map. Inner maps must be made
	// from it, BTF included: 6.1 refuses an inner map created without BTF
	// into an outer map whose template had it (their timer_off differ).
	rows *ebpf.MapSpec
}

// TestSubject is what the LSM programs would learn from a file.
type TestSubject struct {
	HasFile, BootVerified, DVSigned, FVSigned bool
	// DV and FV are the dm-verity root hash and fs-verity digest, nil when
	// the file has none.
	DV, FV *Digest
}

// DecideResult is one hook call's outcome.
type DecideResult struct {
	// RC is what the LSM program would return: 0 or -EACCES.
	RC int32
	// Decided is false when the call ended before a decision: no policy,
	// out of the cgroup scope, or no scratch slot.
	Decided                         bool
	Action, Scope, Rule, Generation uint32
}

// NewDecideHarness loads the test program. ringBytes, when non-zero,
// replaces the size of the events ring buffer.
func NewDecideHarness(t testing.TB, ringBytes uint32) *DecideHarness {
	t.Helper()
	spec, err := loadDecidetest()
	if err != nil {
		t.Fatalf("load test object spec: %v", err)
	}
	if ringBytes != 0 {
		spec.Maps["events"].MaxEntries = ringBytes
	}
	h := &DecideHarness{t: t, rows: spec.Maps["policy"].InnerMap}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load test program (needs root and BPF_PROG_TEST_RUN for raw tracepoints): %+v", ve)
		}
		t.Fatalf("load test program (needs root and BPF_PROG_TEST_RUN for raw tracepoints): %v", err)
	}
	t.Cleanup(func() { h.objs.Close() })
	h.events, err = ringbuf.NewReader(h.objs.Events)
	if err != nil {
		t.Fatalf("open events: %v", err)
	}
	t.Cleanup(func() { h.events.Close() })
	return h
}

// SetPolicy makes rows the active policy, in a new inner map as the loader
// does.
func (h *DecideHarness) SetPolicy(rows map[RowKey]Row) {
	h.t.Helper()
	var entries []TableRow
	for k, v := range rows {
		entries = append(entries, TableRow{Key: k, Row: v})
	}
	table, err := BuildTable(entries)
	if err != nil {
		h.t.Fatalf("build policy table: %v", err)
	}
	h.SetTable(table)
}

// SetTable makes table the active policy as it is, laid out or not.
func (h *DecideHarness) SetTable(table []Row) {
	h.t.Helper()
	spec := h.rows.Copy()
	spec.MaxEntries = uint32(len(table))
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		h.t.Fatalf("create policy table: %v", err)
	}
	defer inner.Close()
	for i := range table {
		if err := inner.Put(uint32(i), table[i]); err != nil {
			h.t.Fatalf("put table row %d: %v", i, err)
		}
	}
	if err := h.objs.Policy.Put(uint32(0), inner); err != nil {
		h.t.Fatalf("install policy: %v", err)
	}
}

// ClearPolicy empties the policy slot: no policy is active.
func (h *DecideHarness) ClearPolicy() {
	h.t.Helper()
	if err := h.objs.Policy.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		h.t.Fatalf("clear policy: %v", err)
	}
}

// SetSettings replaces the runtime switches.
func (h *DecideHarness) SetSettings(s Settings) {
	h.t.Helper()
	if err := h.objs.Settings.Put(uint32(0), s); err != nil {
		h.t.Fatalf("put settings: %v", err)
	}
}

// Run makes one hook call for op on hook with subj.
func (h *DecideHarness) Run(op, hook uint8, subj TestSubject) DecideResult {
	h.t.Helper()
	in := decidetestIpeTestCtx{Op: op, Hook: hook}
	in.Subject.HasFile = b2u(subj.HasFile)
	in.Subject.BootVerified = b2u(subj.BootVerified)
	in.Subject.DvSigned = b2u(subj.DVSigned)
	in.Subject.FvSigned = b2u(subj.FVSigned)
	if subj.DV != nil {
		in.Subject.Dv = *subj.DV
	}
	if subj.FV != nil {
		in.Subject.Fv = *subj.FV
	}
	if err := h.objs.TestIo.Put(uint32(0), in); err != nil {
		h.t.Fatalf("put test input: %v", err)
	}
	ret, err := h.objs.Decide.Run(&ebpf.RunOptions{})
	if err != nil {
		h.t.Fatalf("run test program: %v", err)
	}
	if ret != 0 {
		h.t.Fatalf("test program rejected its input (returned %d)", ret)
	}
	var out decidetestIpeTestCtx
	if err := h.objs.TestIo.Lookup(uint32(0), &out); err != nil {
		h.t.Fatalf("read test output: %v", err)
	}
	d := out.Decision
	return DecideResult{RC: out.Rc, Decided: d.Decided != 0, Action: d.Action, Scope: d.Scope, Rule: d.Rule, Generation: d.Generation}
}

// ProgramStats is the kernel's BPF statistics of the test program: its
// runs and their time, counted while statistics are enabled.
func (h *DecideHarness) ProgramStats() *ebpf.ProgramStats {
	h.t.Helper()
	st, err := h.objs.Decide.Stats()
	if err != nil {
		h.t.Fatalf("read program statistics: %v", err)
	}
	return st
}

// Counters sums each counter over the CPUs.
func (h *DecideHarness) Counters() [NumCounters]uint64 {
	h.t.Helper()
	var sums [NumCounters]uint64
	for i := range sums {
		var perCPU []uint64
		if err := h.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			h.t.Fatalf("read counter %d: %v", i, err)
		}
		for _, v := range perCPU {
			sums[i] += v
		}
	}
	return sums
}

// NextEvent returns the oldest unread event, if any. The test program
// commits its event before BPF_PROG_TEST_RUN returns, so an empty ring
// buffer means no event.
func (h *DecideHarness) NextEvent() (Event, bool) {
	h.t.Helper()
	if h.events.AvailableBytes() == 0 {
		return Event{}, false
	}
	rec, err := h.events.Read()
	if err != nil {
		h.t.Fatalf("read event: %v", err)
	}
	var e Event
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &e); err != nil {
		h.t.Fatalf("decode event of %d bytes: %v", len(rec.RawSample), err)
	}
	return e, true
}

// SetScratchBusy marks the scratch slots of every CPU taken (mask) or free.
func (h *DecideHarness) SetScratchBusy(mask uint64) {
	h.t.Helper()
	n, err := ebpf.PossibleCPU()
	if err != nil {
		h.t.Fatalf("count CPUs: %v", err)
	}
	perCPU := make([]uint64, n)
	for i := range perCPU {
		perCPU[i] = mask
	}
	if err := h.objs.ScratchBusy.Put(uint32(0), perCPU); err != nil {
		h.t.Fatalf("put scratch_busy: %v", err)
	}
}

// ScratchBusy returns each CPU's taken-slot mask.
func (h *DecideHarness) ScratchBusy() []uint64 {
	h.t.Helper()
	var perCPU []uint64
	if err := h.objs.ScratchBusy.Lookup(uint32(0), &perCPU); err != nil {
		h.t.Fatalf("read scratch_busy: %v", err)
	}
	return perCPU
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
