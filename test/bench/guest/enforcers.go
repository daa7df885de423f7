package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/bench"
)

// policies builds policy texts, keeping each size's rules, which take a
// while to generate under emulation, and changing only the header.
type policies struct {
	bodies map[int][]byte
}

func (p *policies) text(name, version string, rules int) []byte {
	if p.bodies == nil {
		p.bodies = map[int][]byte{}
	}
	body, ok := p.bodies[rules]
	if !ok {
		_, body, _ = bytes.Cut(bench.PolicyText("x", "0.0.0", rules), []byte("\n"))
		p.bodies[rules] = body
	}
	header := fmt.Sprintf("policy_name=%s policy_version=%s\n", name, version)
	return append([]byte(header), body...)
}

// bpfipeEnforcer loads and unloads bpfipe with the benchmark's policies,
// in-process as bpfipe load --pin does.
type bpfipeEnforcer struct {
	policies *policies
	out      *output
	// memorySeen records the sizes whose kernel memory was measured.
	memorySeen map[int]bool
}

func (b *bpfipeEnforcer) decode(rules int, version string) (*loader.PolicyFile, error) {
	return loader.DecodePolicy(fmt.Sprintf("bench-%d.pol", rules), b.policies.text("bench", version, rules), nil)
}

// start loads a policy of rules rules, recording how long loader.Start
// took and, the first time for a size, the kernel memory of its maps.
func (b *bpfipeEnforcer) start(rules int, successAudit bool) error {
	pf, err := b.decode(rules, "1.0.0")
	if err != nil {
		return err
	}
	measureMemory := !b.memorySeen[rules] && !successAudit
	var before map[ebpf.MapID]bool
	if measureMemory {
		before = mapIDs()
	}
	began := time.Now()
	l, err := loader.Start(loader.Options{Policy: pf, Enforcing: true, SuccessAudit: successAudit,
		Warn: func(msg string) { b.out.note("bpfipe: " + msg) }})
	elapsed := time.Since(began)
	if err != nil {
		return fmt.Errorf("load bpfipe: %w", err)
	}
	// The pins keep enforcement; the loader's own handles are not needed.
	if err := l.Close(); err != nil {
		loader.Unload()
		return fmt.Errorf("close loader: %w", err)
	}
	if !successAudit {
		b.out.record(bench.Record{Load: &bench.Load{Enforcer: bench.Bpfipe, Rules: rules, Step: bench.StepStart, Bytes: len(pf.Blob), Nanos: elapsed.Nanoseconds()}})
	}
	if measureMemory {
		m := memoryOf(rules, before)
		b.out.record(bench.Record{Memory: &m})
		b.memorySeen[rules] = true
	}
	return nil
}

func (b *bpfipeEnforcer) stop() error {
	if _, err := loader.Unload(); err != nil {
		return fmt.Errorf("unload bpfipe: %w", err)
	}
	return nil
}

// mapIDs lists the BPF maps that exist now.
func mapIDs() map[ebpf.MapID]bool {
	ids := map[ebpf.MapID]bool{}
	var id ebpf.MapID
	for {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			return ids
		}
		ids[next] = true
		id = next
	}
}

var rowValueSize = uint32(binary.Size(bpf.Row{}))

// memoryOf sums the memlock of the maps created since before, and picks
// out the policy's table: the array of rows.
func memoryOf(rules int, before map[ebpf.MapID]bool) bench.Memory {
	m := bench.Memory{Rules: rules}
	var errs []error
	for id := range mapIDs() {
		if before[id] {
			continue
		}
		mp, err := ebpf.NewMapFromID(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("open map %d: %w", id, err))
			continue
		}
		info, err := mp.Info()
		mp.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("read map %d: %w", id, err))
			continue
		}
		// Kernels before 6.4 charge memlock as max_entries times key and
		// value size, which is zero for ring buffers and local storage:
		// those maps count, with nothing.
		memlock, _ := info.Memlock()
		m.Maps++
		m.TotalBytes += memlock
		if info.Type == ebpf.Array && info.KeySize == 4 && info.ValueSize == rowValueSize {
			m.Rows = info.MaxEntries
			m.RowsBytes = memlock
		}
	}
	if m.RowsBytes == 0 {
		errs = append(errs, errors.New("no policy table among the new maps"))
	}
	if len(errs) > 0 {
		m.Error = errors.Join(errs...).Error()
	}
	return m
}

// ipeEnforcer drives in-tree IPE. IPE cannot return to having no policy
// once one was active, so between its variants it holds an empty
// allow-all policy, "idle"; and since an activated version is a floor
// that only rises, every policy gets a higher version than the last.
type ipeEnforcer struct {
	fs       kernelipe.FS
	cert     *x509.Certificate
	key      crypto.Signer
	policies *policies
	out      *output
	version  int
	idle     string // the loaded idle policy's name, "" before the first
	idles    int
}

func (e *ipeEnforcer) nextVersion() string {
	e.version++
	return fmt.Sprintf("1.%d.0", e.version)
}

func (e *ipeEnforcer) signed(name string, rules int) ([]byte, error) {
	return kernelipe.Sign(e.policies.text(name, e.nextVersion(), rules), e.cert, e.key)
}

func ipeName(rules int) string { return fmt.Sprintf("bench_ipe_%d", rules) }

// tryNew hands a policy of rules rules to new_policy, records the time
// or the errno, and returns the policy's name when the kernel took it.
func (e *ipeEnforcer) tryNew(rules int) (string, error) {
	blob, err := e.signed(ipeName(rules), rules)
	if err != nil {
		return "", err
	}
	rec := &bench.Load{Enforcer: bench.IPE, Rules: rules, Step: bench.StepNew, Bytes: len(blob)}
	began := time.Now()
	name, err := e.fs.NewPolicy(blob)
	rec.Nanos = time.Since(began).Nanoseconds()
	if err != nil {
		rec.Nanos = 0
		rec.Error = err.Error()
		var kerr *kernelipe.Error
		if errors.As(err, &kerr) {
			rec.Errno = kernelipe.ErrnoName(kerr.Errno)
		}
	}
	e.out.record(bench.Record{Load: rec})
	return name, err
}

// start makes a policy of rules rules the active one.
func (e *ipeEnforcer) start(rules int) error {
	name, err := e.tryNew(rules)
	if err != nil {
		return err
	}
	began := time.Now()
	if err := e.fs.Activate(name); err != nil {
		e.fs.Delete(name)
		return err
	}
	e.out.record(bench.Record{Load: &bench.Load{Enforcer: bench.IPE, Rules: rules, Step: bench.StepActivate, Nanos: time.Since(began).Nanoseconds()}})
	return nil
}

// stop activates a fresh idle policy and deletes the one of rules rules.
func (e *ipeEnforcer) stop(rules int) error {
	if err := e.goIdle(); err != nil {
		return err
	}
	return e.fs.Delete(ipeName(rules))
}

// goIdle replaces whatever is active with an allow-all policy of a newer
// version, under a name of its own each time, so that the previous idle
// policy, inactive by then, can be deleted.
func (e *ipeEnforcer) goIdle() error {
	e.idles++
	name := fmt.Sprintf("bench_idle_%d", e.idles)
	blob, err := kernelipe.Sign(bench.IdlePolicyText(name, e.nextVersion()), e.cert, e.key)
	if err != nil {
		return err
	}
	if _, err := e.fs.Load(blob); err != nil {
		return fmt.Errorf("activate idle policy: %w", err)
	}
	if e.idle != "" {
		if err := e.fs.Delete(e.idle); err != nil {
			return fmt.Errorf("delete previous idle policy: %w", err)
		}
	}
	e.idle = name
	return nil
}

// update times an update of the active policy of rules rules to a newer
// version of itself.
func (e *ipeEnforcer) update(rules int) error {
	blob, err := e.signed(ipeName(rules), rules)
	if err != nil {
		return err
	}
	began := time.Now()
	if err := e.fs.Update(ipeName(rules), blob); err != nil {
		return err
	}
	e.out.record(bench.Record{Load: &bench.Load{Enforcer: bench.IPE, Rules: rules, Step: bench.StepUpdate, Bytes: len(blob), Nanos: time.Since(began).Nanoseconds()}})
	return nil
}

// errnoOf names the kernel's errno behind err, if there is one.
func errnoOf(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return ""
}
