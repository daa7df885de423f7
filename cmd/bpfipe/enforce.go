package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "enforce",
		summary: "Switch the running enforcement between enforcing (on) and permissive (off)",
		usage:   "[--json] on|off",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print the record as JSON")
		},
		run: func(fs *pflag.FlagSet, args []string) int {
			return runSwitch(fs, args, "enforce", func(r *loader.Running, on bool) (bool, error) { return r.SetEnforcing(on) },
				func(on, old bool, s loader.Subject) loader.ConfigRecord {
					return loader.MACStatusRecord{Enforcing: on, OldEnforcing: old, Subject: s}
				})
		},
	})
}

// runSwitch flips one runtime switch and, like IPE, reports a record only
// when the value changes.
func runSwitch(fs *pflag.FlagSet, args []string, name string,
	set func(*loader.Running, bool) (bool, error),
	record func(on, old bool, s loader.Subject) loader.ConfigRecord,
) int {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "bpfipe %s: want on or off\n", name)
		return exitUsage
	}
	on, ok := parseSwitch(args[0])
	if !ok {
		fmt.Fprintf(stderr, "bpfipe %s: %q is neither on nor off\n", name, args[0])
		return exitUsage
	}
	running, err := loader.Open()
	if err != nil {
		return fail(stderr, name, err)
	}
	defer running.Close()
	old, err := set(running, on)
	if err != nil {
		return fail(stderr, name, err)
	}
	if old != on {
		newRecordPrinter(stdout, fs).config(record(on, old, loader.CurrentSubject()))
	}
	return exitOK
}
