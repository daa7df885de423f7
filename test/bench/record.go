// Package bench measures what enforcement costs, inside qemu guests booting
// Debian's stock kernels: fork+exec of a static and of a dynamically linked
// program, and executable file mappings, under no enforcement, programs
// that decide nothing on bpfipe's hooks (the floor of any BPF LSM),
// bpfipe with policies of 1 to 100,000 rules, in-tree IPE with the same
// policies and fapolicyd where it runs; then policy load and update
// times, kernel memory and event throughput. The program in
// test/bench/guest measures inside the guest and prints Records; Run boots
// it, Summarize turns the records into ratios to the baseline, and
// WriteMarkdown prints the tables docs/benchmarks.md shows. `make bench`
// drives it through test/bench/run.
package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Prefix marks the guest's result lines among whatever else it prints.
const Prefix = "BPFIPE-BENCH "

// Workloads, each timed per operation.
const (
	ExecStatic   = "exec-static"   // fork+exec+wait of a tiny static program
	ExecDynamic  = "exec-dynamic"  // the same with a glibc-linked /bin/true
	MmapExec     = "mmap-exec"     // mmap of a file with PROT_EXEC, then munmap
	MprotectExec = "mprotect-exec" // mprotect of a file mapping adding PROT_EXEC, then removing it
	// OpenClose opens a file in the initramfs by its path and closes it:
	// no IPE hook sees it, so whatever an enforcer adds is collateral
	// (path walks, opens).
	OpenClose = "open-close"
)

// Workloads lists every workload in table order.
var Workloads = []string{ExecStatic, ExecDynamic, MmapExec, MprotectExec, OpenClose}

// Baseline is the variant without enforcement every ratio is taken to.
const Baseline = "none"

// EmptyLSM is the variant with a BPF LSM program that returns 0 at every
// hook bpfipe's programs attach to (loader.Hooks): what any BPF LSM in
// bpfipe's place costs before it decides anything, the kernel's
// trampolines and the BPF program calls. bpfipe's ratios to it are what
// its decisions add (Cell.AboveFloor).
const EmptyLSM = "empty-lsm"

// Enforcers, as variant names start with them: "bpfipe/1000".
const (
	Bpfipe    = "bpfipe"
	IPE       = "ipe"
	Fapolicyd = "fapolicyd"
)

// VariantName names an enforcer running a policy of rules rules.
func VariantName(enforcer string, rules int) string {
	return fmt.Sprintf("%s/%d", enforcer, rules)
}

// Record is one line of the guest's output; exactly one field is set.
type Record struct {
	Plan   *Plan    `json:"plan,omitempty"`
	Sample *Sample  `json:"sample,omitempty"`
	Skip   *Skip    `json:"skip,omitempty"`
	Load   *Load    `json:"load,omitempty"`
	Memory *Memory  `json:"memory,omitempty"`
	Events *Events  `json:"events,omitempty"`
	Cost   *Cost    `json:"cost,omitempty"`
	Note   string   `json:"note,omitempty"`
	Done   *Summary `json:"done,omitempty"`
}

// Plan is what the guest set out to measure, printed first.
type Plan struct {
	Kernel   string   `json:"kernel"` // uname -r
	Variants []string `json:"variants"`
	Rounds   int      `json:"rounds"`
	Sizes    []int    `json:"sizes"`
	Iters    Iters    `json:"iters"`
}

// Iters is how many operations each workload times per round.
type Iters struct {
	Exec    int `json:"exec"`    // of the static program
	Dynamic int `json:"dynamic"` // of the dynamic program
	Mmap    int `json:"mmap"`    // mmaps, mprotects, and opens
}

// Sample is one workload timed under one variant in one round.
type Sample struct {
	Round    int    `json:"round"`
	Position int    `json:"position"` // place in the round's order
	Variant  string `json:"variant"`
	Workload string `json:"workload"`
	Ops      int    `json:"ops"`
	Nanos    int64  `json:"nanos"` // for all Ops together
}

// NsPerOp is the sample's time per operation.
func (s Sample) NsPerOp() float64 { return float64(s.Nanos) / float64(s.Ops) }

// Skip says a variant could not be measured, and why.
type Skip struct {
	Variant string `json:"variant"`
	Reason  string `json:"reason"`
	Errno   string `json:"errno,omitempty"` // the kernel's answer, when it refused
}

// Load steps.
const (
	StepParse    = "parse"    // policy.Parse of the text, in the guest
	StepCompile  = "compile"  // maps.Compile, in the guest
	StepStart    = "start"    // bpfipe: loader.Start (programs, maps, policy, attach, pin)
	StepUpdate   = "update"   // bpfipe: Running.Update; IPE: write to policies/NAME/update
	StepNew      = "new"      // IPE: write of the signed policy to new_policy
	StepActivate = "activate" // IPE: write to policies/NAME/active
)

// Load is one timed step of loading or updating a policy.
type Load struct {
	Enforcer string `json:"enforcer"`
	Rules    int    `json:"rules"`
	Step     string `json:"step"`
	Bytes    int    `json:"bytes,omitempty"` // the policy as handed over
	Nanos    int64  `json:"nanos,omitempty"`
	Error    string `json:"error,omitempty"`
	Errno    string `json:"errno,omitempty"`
}

// Memory is the kernel memory bpfipe's maps are charged for with a policy
// of Rules rules (the memlock the kernel reports in each map's fdinfo).
type Memory struct {
	Rules      int    `json:"rules"`
	Rows       uint32 `json:"rows"`        // rows of the policy's table (array map)
	RowsBytes  uint64 `json:"rows_bytes"`  // that map alone
	TotalBytes uint64 `json:"total_bytes"` // every map the load created
	Maps       int    `json:"maps"`
	Error      string `json:"error,omitempty"`
}

// Events is one exec loop run with success auditing on.
type Events struct {
	Enforcer string `json:"enforcer"`
	// Reader says whether events were read while the loop ran; without,
	// they are read after it, so the buffer can overflow.
	Reader    bool   `json:"reader"`
	Execs     int    `json:"execs"`
	Decisions uint64 `json:"decisions"` // hook decisions the enforcer counted
	Read      uint64 `json:"read"`      // events (records) the reader got
	Dropped   uint64 `json:"dropped"`   // the enforcer's own count of lost events
	Nanos     int64  `json:"nanos"`     // the exec loop
	Error     string `json:"error,omitempty"`
}

// Cost is what one BPF program cost during one workload under one
// variant, from the kernel's BPF statistics (BPF_ENABLE_STATS), measured
// in a pass of its own after the rounds: the statistics read the clock
// twice per run, which would weigh on the rounds' ratios.
type Cost struct {
	Variant  string `json:"variant"`
	Workload string `json:"workload"`
	Program  string `json:"program"` // the kernel's (truncated) name
	Ops      int    `json:"ops"`
	Runs     uint64 `json:"runs"`
	Nanos    uint64 `json:"nanos"` // all runs together
}

// Summary ends the output; a guest that printed none did not finish.
type Summary struct {
	Seconds float64 `json:"seconds"`
}

// WriteRecord prints r as one prefixed line.
func WriteRecord(w io.Writer, r Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s%s\n", Prefix, data)
	return err
}

// ParseOutput picks the records out of a guest's output; other lines are
// returned as they are, for diagnosis.
func ParseOutput(r io.Reader) (records []Record, other []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		i := strings.Index(line, Prefix)
		if i < 0 {
			other = append(other, line)
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line[i+len(Prefix):]), &rec); err != nil {
			return nil, nil, fmt.Errorf("decode record %q: %w", line, err)
		}
		records = append(records, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read guest output: %w", err)
	}
	return records, other, nil
}
