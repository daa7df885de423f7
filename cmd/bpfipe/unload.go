package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "unload",
		summary: "Stop enforcement: detach the programs and remove the pins",
		usage:   "",
		run: func(fs *pflag.FlagSet, args []string) int {
			if len(args) != 0 {
				fmt.Fprintln(stderr, "bpfipe unload: takes no arguments")
				return exitUsage
			}
			st, err := loader.Unload()
			if err != nil {
				return fail(stderr, "unload", err)
			}
			if st != nil {
				fmt.Fprintf(stderr, "bpfipe: unloaded policy %q version %s\n", st.Active.Name, st.Active.Version)
			} else {
				fmt.Fprintf(stderr, "bpfipe: removed %s\n", loader.DefaultPinDir)
			}
			return exitOK
		},
	})
}
