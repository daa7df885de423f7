package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Spread is the median and range of a set of values.
type Spread struct {
	N                int
	Median, Min, Max float64
}

// SpreadOf summarises values; the zero Spread for none.
func SpreadOf(values []float64) Spread {
	if len(values) == 0 {
		return Spread{}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	n := len(v)
	median := v[n/2]
	if n%2 == 0 {
		median = (v[n/2-1] + v[n/2]) / 2
	}
	return Spread{N: n, Median: median, Min: v[0], Max: v[n-1]}
}

// Cell is one workload under one variant.
type Cell struct {
	// Ratio is the time per operation divided by the baseline's in the
	// same round, over the rounds in which both were measured.
	Ratio Spread
	// NsPerOp is the time per operation over the rounds.
	NsPerOp Spread
	// AboveFloor, for bpfipe's variants, is the time per operation
	// divided by EmptyLSM's in the same round: what bpfipe's decisions
	// add to the cost of any BPF LSM on the same hooks.
	AboveFloor Spread
}

// Row is one variant: its cells by workload, or why it has none.
type Row struct {
	Variant string
	Cells   map[string]Cell
	Skip    *Skip
}

// LoadRow is one load step of one enforcer at one policy size.
type LoadRow struct {
	Enforcer string
	Rules    int
	Step     string
	Bytes    int
	Millis   Spread
	// Errno or Error of the first attempt that failed, if any did.
	Errno, Error string
	Failed       int
}

// Result is everything one guest measured, summarised.
type Result struct {
	Kernel   string // the runner's name for it: debian-6.12
	Plan     Plan
	Rows     []Row
	Loads    []LoadRow
	Memory   []Memory
	Events   []Events
	Costs    []Cost
	Notes    []string
	Seconds  float64 // the guest's own run time; 0 if it did not finish
	Finished bool
	// Icount says times are instruction counts (1 ns each), not
	// wall-clock time.
	Icount bool
}

// Row returns the row of variant, if there is one.
func (r *Result) Row(variant string) (Row, bool) {
	for _, row := range r.Rows {
		if row.Variant == variant {
			return row, true
		}
	}
	return Row{}, false
}

// Summarize turns a guest's records into ratios to the baseline: for each
// round, a variant's time per operation divided by the baseline's in that
// same round, then the median and range of those ratios over the rounds.
func Summarize(kernel string, records []Record) (*Result, error) {
	res := &Result{Kernel: kernel}
	var samples []Sample
	skips := map[string]*Skip{}
	type loadKey struct {
		enforcer string
		rules    int
		step     string
	}
	loads := map[loadKey]*LoadRow{}
	loadValues := map[loadKey][]float64{}
	var loadOrder []loadKey
	for _, rec := range records {
		switch {
		case rec.Plan != nil:
			if res.Plan.Variants != nil {
				return nil, fmt.Errorf("summarize %s: two plans in one output", kernel)
			}
			res.Plan = *rec.Plan
		case rec.Sample != nil:
			if rec.Sample.Ops <= 0 {
				return nil, fmt.Errorf("summarize %s: sample of %s/%s with %d operations", kernel, rec.Sample.Variant, rec.Sample.Workload, rec.Sample.Ops)
			}
			samples = append(samples, *rec.Sample)
		case rec.Skip != nil:
			if _, seen := skips[rec.Skip.Variant]; !seen {
				skips[rec.Skip.Variant] = rec.Skip
			}
		case rec.Load != nil:
			l := rec.Load
			k := loadKey{l.Enforcer, l.Rules, l.Step}
			row, ok := loads[k]
			if !ok {
				row = &LoadRow{Enforcer: l.Enforcer, Rules: l.Rules, Step: l.Step}
				loads[k] = row
				loadOrder = append(loadOrder, k)
			}
			row.Bytes = max(row.Bytes, l.Bytes)
			if l.Error != "" || l.Errno != "" {
				if row.Failed == 0 {
					row.Errno, row.Error = l.Errno, l.Error
				}
				row.Failed++
				continue
			}
			loadValues[k] = append(loadValues[k], float64(l.Nanos)/1e6)
		case rec.Memory != nil:
			res.Memory = append(res.Memory, *rec.Memory)
		case rec.Events != nil:
			res.Events = append(res.Events, *rec.Events)
		case rec.Cost != nil:
			if rec.Cost.Ops <= 0 {
				return nil, fmt.Errorf("summarize %s: cost of %s in %s/%s with %d operations", kernel, rec.Cost.Program, rec.Cost.Variant, rec.Cost.Workload, rec.Cost.Ops)
			}
			res.Costs = append(res.Costs, *rec.Cost)
		case rec.Note != "":
			res.Notes = append(res.Notes, rec.Note)
		case rec.Done != nil:
			res.Finished = true
			res.Seconds = rec.Done.Seconds
		}
	}
	if res.Plan.Variants == nil {
		return nil, fmt.Errorf("summarize %s: the guest printed no plan", kernel)
	}
	for _, k := range loadOrder {
		row := loads[k]
		row.Millis = SpreadOf(loadValues[k])
		res.Loads = append(res.Loads, *row)
	}
	slices.SortStableFunc(res.Loads, func(a, b LoadRow) int {
		return cmp.Or(cmp.Compare(a.Rules, b.Rules), cmp.Compare(a.Enforcer, b.Enforcer))
	})

	// perOp[variant][workload][round]
	perOp := map[string]map[string]map[int]float64{}
	for _, s := range samples {
		if perOp[s.Variant] == nil {
			perOp[s.Variant] = map[string]map[int]float64{}
		}
		if perOp[s.Variant][s.Workload] == nil {
			perOp[s.Variant][s.Workload] = map[int]float64{}
		}
		perOp[s.Variant][s.Workload][s.Round] = s.NsPerOp()
	}
	for _, v := range res.Plan.Variants {
		row := Row{Variant: v, Skip: skips[v]}
		if byWorkload, ok := perOp[v]; ok {
			row.Cells = map[string]Cell{}
			for w, byRound := range byWorkload {
				var times []float64
				for _, ns := range byRound {
					times = append(times, ns)
				}
				cell := Cell{Ratio: ratiosTo(byRound, perOp[Baseline][w]), NsPerOp: SpreadOf(times)}
				if strings.HasPrefix(v, Bpfipe+"/") {
					cell.AboveFloor = ratiosTo(byRound, perOp[EmptyLSM][w])
				}
				row.Cells[w] = cell
			}
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

// ratiosTo spreads the ratios of times to reference's in the same round,
// over the rounds that measured both.
func ratiosTo(times, reference map[int]float64) Spread {
	var ratios []float64
	for round, ns := range times {
		if ref, ok := reference[round]; ok && ref > 0 {
			ratios = append(ratios, ns/ref)
		}
	}
	return SpreadOf(ratios)
}
