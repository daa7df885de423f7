package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/bench"
)

// programStats is one program's cumulative statistics.
type programStats struct {
	name        string
	runs, nanos uint64
}

// allProgramStats reads the statistics of every BPF program in the guest,
// which runs bpfipe's alone, by program ID.
func allProgramStats() (map[ebpf.ProgramID]programStats, error) {
	stats := map[ebpf.ProgramID]programStats{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return stats, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list programs: %w", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			continue // unloaded since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("open program %d: %w", id, err)
		}
		info, infoErr := prog.Info()
		st, statsErr := prog.Stats()
		prog.Close()
		if err := errors.Join(infoErr, statsErr); err != nil {
			return nil, fmt.Errorf("program %d: %w", id, err)
		}
		stats[id] = programStats{name: info.Name, runs: st.RunCount, nanos: uint64(st.Runtime)}
	}
}

// costs runs every workload once under each bpfipe size with the kernel's
// BPF statistics on, and records what each program cost. It runs after
// the rounds: the statistics' clock reads would weigh on their ratios.
func (g *guest) costs() error {
	enabled, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer enabled.Close()
	for _, n := range g.loadable[bench.Bpfipe] {
		if err := g.costsOf(n); err != nil {
			return err
		}
	}
	return nil
}

func (g *guest) costsOf(rules int) (err error) {
	variant := bench.VariantName(bench.Bpfipe, rules)
	if err := g.bpfipe.start(rules, false); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, g.bpfipe.stop()) }()
	for _, w := range bench.Workloads {
		before, err := allProgramStats()
		if err != nil {
			return err
		}
		timed, _, err := g.work.run(w)
		if err != nil {
			return fmt.Errorf("%s under %s: %w", w, variant, err)
		}
		// The statistics count the untimed warm-up operations too.
		ops := timed + warmup
		after, err := allProgramStats()
		if err != nil {
			return err
		}
		for id, a := range after {
			b := before[id]
			// The guard's programs on the bpf() hooks run here for the
			// statistics' own reads, not for the workload.
			if a.runs == b.runs || strings.HasPrefix(a.name, "protect_bpf") {
				continue
			}
			g.out.record(bench.Record{Cost: &bench.Cost{Variant: variant, Workload: w, Program: a.name,
				Ops: ops, Runs: a.runs - b.runs, Nanos: a.nanos - b.nanos}})
		}
	}
	return nil
}
