package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

func init() {
	register(&command{
		name:    "policy show",
		summary: "Print a policy in canonical form and what it compiles to in the kernel",
		usage:   "FILE",
		run: func(fs *pflag.FlagSet, args []string) int {
			if len(args) != 1 {
				fmt.Fprintf(stderr, "bpfipe policy show: want one FILE, got %d arguments\n", len(args))
				return exitUsage
			}
			return showPolicy(stdout, stderr, args[0])
		},
	})
}

// showPolicy prints the canonical text and then the compiled tables'
// summary as '#' comments, so the output is itself a policy that parses to
// the same rules.
func showPolicy(stdout, stderr io.Writer, filename string) int {
	text, err := os.ReadFile(filename)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe policy show: read policy: %v\n", err)
		return exitFailure
	}
	p, err := policy.Parse(filename, text)
	if err != nil {
		var perr *policy.ParseError
		if errors.As(err, &perr) {
			fmt.Fprintln(stderr, perr)
		} else {
			fmt.Fprintf(stderr, "bpfipe policy show: parse policy: %v\n", err)
		}
		return exitFailure
	}
	tables, err := maps.Compile(p, 0)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe policy show: %v\n", err)
		return exitFailure
	}

	stdout.Write(policy.Format(p))
	fmt.Fprintln(stdout, "\n# Compiled for the kernel:")
	summary := strings.TrimSuffix(tables.Summary().String(), "\n")
	for _, line := range strings.Split(summary, "\n") {
		fmt.Fprintf(stdout, "#   %s\n", line)
	}
	for _, d := range tables.Dead {
		fmt.Fprintf(stdout, "#   %s:%d: rule %d can never match: %s\n", filename, d.Line, d.Index, d.Reason)
	}
	return exitOK
}
