// Command guest measures enforcement inside a benchmark guest (see package
// bench): it times the workloads under every variant, round after round in
// rotating order, then policy loads and updates, kernel memory and event
// throughput, and prints everything as bench.Records.
//
//	guest --static PROG --dynamic PROG [--cert CERT --key KEY] [flags]
//
// Exit status: 0 when every phase ran (variants may still have been
// skipped, each with its reason), 1 when the guest could not measure.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
	"github.com/bpfipe/bpfipe/test/bench"
)

// untrustedDir is a tmpfs, outside the initramfs every policy trusts.
const untrustedDir = "/tmp/bench-untrusted"

func main() {
	var (
		static     = flag.String("static", "", "static program that exits 0, in the initramfs")
		dynamic    = flag.String("dynamic", "", "dynamically linked program that exits 0, in the initramfs")
		certPath   = flag.String("cert", "", "PEM certificate in the UEFI db, for in-tree IPE")
		keyPath    = flag.String("key", "", "its PEM private key")
		rounds     = flag.Int("rounds", 5, "rounds; each runs every variant once")
		execIters  = flag.Int("exec-iters", 200, "fork+execs of the static program per variant and round")
		dynIters   = flag.Int("dynamic-iters", 40, "fork+execs of the dynamic program per variant and round")
		mmapIters  = flag.Int("mmap-iters", 1000, "mmaps or mprotects per workload, variant and round")
		sizesFlag  = flag.String("sizes", "1,1000,100000", "policy sizes in rules")
		fallbacks  = flag.String("fallback", "30000,500", "sizes an enforcer is tried at, largest first, when a listed size does not load into it (empty: none)")
		updates    = flag.Int("updates", 3, "timed updates per policy size")
		eventExecs = flag.Int("event-execs", 2000, "execs of the event throughput loop")
		fapolicyd  = flag.String("fapolicyd", "", "directory of the fapolicyd setup the host made (see fapolicyd.go)")
		fapMissing = flag.String("fapolicyd-missing", "", "why the host could not set fapolicyd up")
	)
	flag.Parse()
	out := &output{}
	g, err := newGuest(out, *static, *dynamic)
	if err != nil {
		fatal(err)
	}
	sizes, err := bench.ParseSizes(*sizesFlag)
	if err != nil {
		fatal(err)
	}
	g.sizes = sizes
	g.iters = bench.Iters{Exec: *execIters, Dynamic: *dynIters, Mmap: *mmapIters}
	g.work.execIters, g.work.dynamicIters, g.work.mmapIters = *execIters, *dynIters, *mmapIters
	if *certPath != "" {
		if err := g.openIPE(*certPath, *keyPath); err != nil {
			fatal(err)
		}
	}
	if *fapolicyd != "" {
		g.fapolicyd = &fapolicydEnforcer{dir: *fapolicyd, out: out, untrusted: g.untrusted, devNull: g.work.devNull}
	}
	var fallbackSizes []int
	if *fallbacks != "" {
		if fallbackSizes, err = bench.ParseSizes(*fallbacks); err != nil {
			fatal(err)
		}
	}
	if err := g.plan(fallbackSizes, *fapMissing); err != nil {
		fatal(err)
	}
	out.record(bench.Record{Plan: &bench.Plan{Kernel: release(), Variants: g.variantNames(), Rounds: *rounds, Sizes: sizes, Iters: g.iters}})
	for round := range *rounds {
		if err := g.round(round); err != nil {
			fatal(err)
		}
	}
	if err := g.costs(); err != nil {
		out.note("bpfipe's programs' costs: " + err.Error())
	}
	g.updates(*updates)
	for _, ev := range g.bpfipe.events(g.work, *eventExecs) {
		out.record(bench.Record{Events: &ev})
	}
	if g.ipe != nil {
		ev := g.ipe.events(g.work, *eventExecs)
		out.record(bench.Record{Events: &ev})
	}
	out.record(bench.Record{Done: &bench.Summary{Seconds: time.Since(g.began).Seconds()}})
}

// output prints records; a record that cannot be printed ends the run.
type output struct{}

func (o *output) record(r bench.Record) {
	if err := bench.WriteRecord(os.Stdout, r); err != nil {
		fatal(err)
	}
}

func (o *output) note(text string) { o.record(bench.Record{Note: text}) }

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench guest: %v\n", err)
	os.Exit(1)
}

func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// variant is one way of enforcing, or none.
type variant struct {
	name string
	// up installs the enforcement; want is the errno an untrusted exec
	// then gets (0: it runs).
	up   func() error
	down func() error
	want syscall.Errno
	// skipped is set once the variant could not be installed: it is
	// reported once and left out of later rounds.
	skipped bool
}

type guest struct {
	out       *output
	began     time.Time
	work      *workloads
	untrusted string
	sizes     []int
	iters     bench.Iters
	policies  *policies
	bpfipe    *bpfipeEnforcer
	ipe       *ipeEnforcer // nil without in-tree IPE
	fapolicyd *fapolicydEnforcer
	variants  []*variant
	// loadable lists, by enforcer, the sizes it loaded when tried.
	loadable map[string][]int
}

func newGuest(out *output, static, dynamic string) (*guest, error) {
	if static == "" || dynamic == "" {
		return nil, errors.New("--static and --dynamic are required")
	}
	devNull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	mapFile, err := os.Open(dynamic)
	if err != nil {
		return nil, err
	}
	g := &guest{out: out, began: time.Now(), policies: &policies{}, loadable: map[string][]int{}}
	g.work = &workloads{static: static, dynamic: dynamic, mapFile: mapFile, devNull: devNull}
	g.bpfipe = &bpfipeEnforcer{policies: g.policies, out: out, memorySeen: map[int]bool{}}
	// A copy outside the initramfs: every policy denies it, so running
	// it tells whether enforcement is in place.
	if err := os.MkdirAll(untrustedDir, 0o755); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(static)
	if err != nil {
		return nil, err
	}
	g.untrusted = filepath.Join(untrustedDir, filepath.Base(static))
	if err := os.WriteFile(g.untrusted, data, 0o755); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *guest) openIPE(certPath, keyPath string) error {
	fs := kernelipe.FS{}
	if err := fs.Available(); err != nil {
		g.out.note("in-tree IPE: " + err.Error())
		return nil
	}
	cert, key, err := kernelipe.ReadKeyPair(certPath, keyPath)
	if err != nil {
		return err
	}
	g.ipe = &ipeEnforcer{fs: fs, cert: cert, key: key, policies: g.policies, out: g.out}
	// From here on IPE always has a policy: every variant, the baseline
	// included, runs with IPE holding an empty allow-all one.
	return g.ipe.goIdle()
}

// plan lists the variants. Each enforcer is first tried at every size
// once: a size it refuses is reported with its reason (and errno, when
// the kernel refused), and then the largest of the fallback sizes it
// takes is measured as well, so that the table still shows how its cost
// follows the rule count.
func (g *guest) plan(fallbacks []int, fapolicydMissing string) error {
	g.variants = append(g.variants, &variant{name: bench.Baseline, up: noop, down: noop})
	if empty, err := newEmptyLSM(); err != nil {
		g.variants = append(g.variants, &variant{name: bench.EmptyLSM, skipped: true})
		g.out.record(bench.Record{Skip: &bench.Skip{Variant: bench.EmptyLSM, Reason: err.Error()}})
	} else {
		// It decides nothing: the untrusted program runs.
		g.variants = append(g.variants, &variant{name: bench.EmptyLSM, up: empty.up, down: empty.down})
	}
	type enforcer struct {
		name  string
		probe func(n int) error
		up    func(n int) error
		down  func(n int) error
		what  string
	}
	enforcers := []enforcer{{
		name: bench.Bpfipe,
		probe: func(n int) error {
			if err := g.bpfipe.start(n, false); err != nil {
				return err
			}
			return g.bpfipe.stop()
		},
		up:   func(n int) error { return g.bpfipe.start(n, false) },
		down: func(int) error { return g.bpfipe.stop() },
		what: "bpfipe could not load the %d-rule policy",
	}}
	if g.ipe != nil {
		enforcers = append(enforcers, enforcer{
			name:  bench.IPE,
			probe: g.probeIPE,
			up:    g.ipe.start,
			down:  g.ipe.stop,
			what:  "new_policy refused the signed %d-rule policy",
		})
	}
	fallbacks = slices.Clone(fallbacks)
	slices.Sort(fallbacks)
	slices.Reverse(fallbacks)
	for _, e := range enforcers {
		add := func(n int) {
			g.loadable[e.name] = append(g.loadable[e.name], n)
			g.variants = append(g.variants, &variant{
				name: bench.VariantName(e.name, n),
				up:   func() error { return e.up(n) },
				down: func() error { return e.down(n) },
				want: syscall.EACCES,
			})
		}
		refused := false
		for _, n := range g.sizes {
			name := bench.VariantName(e.name, n)
			if err := e.probe(n); err != nil {
				refused = true
				g.variants = append(g.variants, &variant{name: name, skipped: true})
				g.out.record(bench.Record{Skip: &bench.Skip{Variant: name,
					Reason: fmt.Sprintf(e.what+": %v", n, err), Errno: errnoOf(err)}})
				continue
			}
			add(n)
		}
		if !refused {
			continue
		}
		for _, n := range fallbacks {
			if slices.Contains(g.sizes, n) {
				continue
			}
			if err := e.probe(n); err != nil {
				g.out.note(fmt.Sprintf("%s refused the %d-rule fallback policy too: %v", e.name, n, err))
				continue
			}
			add(n)
			break
		}
	}
	// The table's order: enforcers, then sizes ascending.
	slices.SortStableFunc(g.variants, func(a, b *variant) int {
		ea, sa := splitVariant(a.name)
		eb, sb := splitVariant(b.name)
		return cmp.Or(strings.Compare(ea, eb), cmp.Compare(sa, sb))
	})
	switch {
	case g.fapolicyd != nil:
		g.variants = append(g.variants, g.fapolicyd.variant())
	case fapolicydMissing != "":
		g.variants = append(g.variants, &variant{name: bench.Fapolicyd, skipped: true})
		g.out.record(bench.Record{Skip: &bench.Skip{Variant: bench.Fapolicyd, Reason: fapolicydMissing}})
	}
	return nil
}

// splitVariant returns a variant's enforcer, "" for the baseline and " "
// for the empty programs so that they sort first, and its policy size.
func splitVariant(variant string) (string, int) {
	e, size, _ := strings.Cut(variant, "/")
	switch e {
	case bench.Baseline:
		return "", 0
	case bench.EmptyLSM:
		return " ", 0
	}
	n, _ := strconv.Atoi(size)
	return e, n
}

// probeIPE hands a policy of n rules to the kernel and deletes it again.
func (g *guest) probeIPE(n int) error {
	name, err := g.ipe.tryNew(n)
	if err != nil {
		return err
	}
	return g.ipe.fs.Delete(name)
}

func noop() error { return nil }

func (g *guest) variantNames() []string {
	var names []string
	for _, v := range g.variants {
		names = append(names, v.name)
	}
	return names
}

// round runs every variant once, starting at a position that moves by one
// each round.
func (g *guest) round(round int) error {
	byName := map[string]*variant{}
	for _, v := range g.variants {
		byName[v.name] = v
	}
	for position, name := range bench.Order(g.variantNames(), round) {
		v := byName[name]
		if v.skipped {
			continue
		}
		if err := g.measure(round, position, v); err != nil {
			// Enforcement left behind would be charged to every variant
			// after this one: no number is better than a wrong one.
			if v.name == bench.Baseline || errors.Is(err, errTeardown) {
				return fmt.Errorf("round %d: %s: %w", round, v.name, err)
			}
			v.skipped = true
			g.out.record(bench.Record{Skip: &bench.Skip{Variant: v.name, Reason: fmt.Sprintf("round %d: %v", round, err), Errno: errnoOf(err)}})
		}
	}
	return nil
}

// errTeardown marks a variant that could not be removed again.
var errTeardown = errors.New("remove enforcement")

func (g *guest) measure(round, position int, v *variant) (err error) {
	if err := v.up(); err != nil {
		return err
	}
	defer func() {
		if derr := v.down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("%w: %w", errTeardown, derr))
		}
	}()
	if err := checkDenied(g.untrusted, g.work.devNull, v.want); err != nil {
		return fmt.Errorf("enforcement check: %w", err)
	}
	runtime.GC()
	for _, w := range bench.Workloads {
		ops, elapsed, err := g.work.run(w)
		if err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
		g.out.record(bench.Record{Sample: &bench.Sample{Round: round, Position: position, Variant: v.name, Workload: w, Ops: ops, Nanos: elapsed.Nanoseconds()}})
	}
	return nil
}

// updates times the steps of a policy change: parsing and compiling
// alone, then bpfipe's whole update (compile, new map, swap) from a
// one-rule policy to each size, and in-tree IPE's update of an active
// policy to a newer version of itself.
func (g *guest) updates(repeats int) {
	sizes := slices.Clone(g.sizes)
	for _, n := range slices.Concat(g.loadable[bench.Bpfipe], g.loadable[bench.IPE]) {
		if !slices.Contains(sizes, n) {
			sizes = append(sizes, n)
		}
	}
	slices.Sort(sizes)
	for range repeats {
		for _, n := range sizes {
			text := g.policies.text("bench", "1.0.0", n)
			began := time.Now()
			p, err := policy.Parse("bench.pol", text)
			parsed := time.Since(began)
			if err != nil {
				g.out.note(fmt.Sprintf("parse %d-rule policy: %v", n, err))
				return
			}
			g.out.record(bench.Record{Load: &bench.Load{Enforcer: bench.Bpfipe, Rules: n, Step: bench.StepParse, Bytes: len(text), Nanos: parsed.Nanoseconds()}})
			began = time.Now()
			if _, err := maps.Compile(p, 1); err != nil {
				g.out.note(fmt.Sprintf("compile %d-rule policy: %v", n, err))
				return
			}
			g.out.record(bench.Record{Load: &bench.Load{Enforcer: bench.Bpfipe, Rules: n, Step: bench.StepCompile, Nanos: time.Since(began).Nanoseconds()}})
		}
	}
	if err := g.bpfipeUpdates(repeats); err != nil {
		g.out.note("bpfipe updates: " + err.Error())
	}
	if g.ipe != nil {
		for range repeats {
			for _, n := range g.loadable[bench.IPE] {
				if err := g.ipe.start(n); err != nil {
					g.out.note(fmt.Sprintf("IPE update of %d rules: %v", n, err))
					continue
				}
				if err := g.ipe.update(n); err != nil {
					g.out.note(fmt.Sprintf("IPE update of %d rules: %v", n, err))
				}
				if err := g.ipe.stop(n); err != nil {
					g.out.note(fmt.Sprintf("IPE back to idle: %v", err))
				}
			}
		}
	}
}

func (g *guest) bpfipeUpdates(repeats int) (err error) {
	if err := g.bpfipe.start(1, false); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, g.bpfipe.stop()) }()
	running, err := loader.Open()
	if err != nil {
		return err
	}
	defer running.Close()
	version := 1
	for range repeats {
		for _, n := range g.loadable[bench.Bpfipe] {
			version++
			pf, err := g.bpfipe.decode(n, fmt.Sprintf("%d.0.0", version))
			if err != nil {
				return err
			}
			began := time.Now()
			if _, _, err := running.Update(pf, nil); err != nil {
				return fmt.Errorf("update to %d rules: %w", n, err)
			}
			g.out.record(bench.Record{Load: &bench.Load{Enforcer: bench.Bpfipe, Rules: n, Step: bench.StepUpdate, Bytes: len(pf.Blob), Nanos: time.Since(began).Nanoseconds()}})
		}
	}
	return nil
}
