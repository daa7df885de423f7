// Command run is `make bench`: it boots each stock kernel with the
// benchmark guest (package bench) and prints the tables of
// docs/benchmarks.md.
//
//	go run ./test/bench/run [--kernel NAME]... [--smoke] [--wall] [--rounds N] [--sizes LIST] [--out FILE] [--raw DIR]
//
// BPFIPE_BENCH_SMOKE=1 is --smoke: every variant, briefly and by the wall
// clock, for a quick look.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bpfipe/bpfipe/test/bench"
	"github.com/bpfipe/bpfipe/vm"
)

type kernelList []string

func (k *kernelList) String() string     { return strings.Join(*k, ",") }
func (k *kernelList) Set(s string) error { *k = append(*k, s); return nil }

// outcome is one kernel's run.
type outcome struct {
	res *bench.Result
	err error
}

func main() {
	var kernels kernelList
	flag.Var(&kernels, "kernel", "kernel to boot (repeatable; default: every stock kernel)")
	smoke := flag.Bool("smoke", os.Getenv("BPFIPE_BENCH_SMOKE") == "1", "measure briefly")
	wall := flag.Bool("wall", false, "time with the wall clock, not in instructions (qemu -icount)")
	outPath := flag.String("out", "", "also write the tables to this file")
	rawDir := flag.String("raw", "", "keep each guest's raw output in this directory")
	rounds := flag.Int("rounds", 0, "rounds per kernel (0: the default of the mode)")
	sizes := flag.String("sizes", "", "policy sizes in rules, comma-separated (default: "+bench.FormatSizes(bench.Sizes)+")")
	flag.Parse()
	if len(kernels) == 0 {
		kernels = vm.KernelNames()
	}
	params := bench.FullParams()
	if *smoke {
		params = bench.SmokeParams()
	}
	if *wall {
		params.Icount = false
	}
	if *rounds < 0 {
		fmt.Fprintf(os.Stderr, "bench: --rounds %d: want a positive number of rounds\n", *rounds)
		os.Exit(2)
	}
	if *rounds > 0 {
		params.Rounds = *rounds
	}
	if *sizes != "" {
		list, err := bench.ParseSizes(*sizes)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: --sizes: %v\n", err)
			os.Exit(2)
		}
		params.Sizes = list
	}
	// Counted in instructions, a guest's numbers do not depend on what
	// else the host runs, so the kernels can share it; by the wall clock
	// they would disturb each other.
	outcomes := make([]outcome, len(kernels))
	var wg sync.WaitGroup
	for i, k := range kernels {
		run := func() {
			began := time.Now()
			fmt.Fprintf(os.Stderr, "bench: %s: booting (%d rounds)...\n", k, params.Rounds)
			res, raw, err := bench.Run(context.Background(), k, params, os.Stderr)
			if *rawDir != "" && raw != nil {
				if werr := os.WriteFile(filepath.Join(*rawDir, k+".out"), raw, 0o644); werr != nil {
					err = errors.Join(err, werr)
				}
			}
			outcomes[i] = outcome{res, err}
			fmt.Fprintf(os.Stderr, "bench: %s: done in %s\n", k, time.Since(began).Round(time.Second))
		}
		if params.Icount {
			wg.Add(1)
			go func() { defer wg.Done(); run() }()
		} else {
			run()
		}
	}
	wg.Wait()
	var doc strings.Builder
	w := io.MultiWriter(os.Stdout, &doc)
	failed := false
	for i, o := range outcomes {
		if o.res != nil {
			bench.WriteMarkdown(w, o.res)
		}
		if o.err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", kernels[i], o.err)
			failed = true
		}
	}
	if *outPath != "" {
		if err := os.WriteFile(*outPath, []byte(doc.String()), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
