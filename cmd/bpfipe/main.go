// Command bpfipe enforces IPE policies with BPF LSM programs and works with
// the IPE policy language. Each subcommand lives in its own file and
// registers itself; this file only dispatches.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// Exit statuses. Each failure class has its own so scripts can tell them apart.
const (
	exitOK            = 0
	exitFailure       = 1 // the operation ran and failed, or a policy is invalid
	exitUsage         = 2 // bad flags or arguments
	exitUnsupported   = 3 // this kernel cannot run bpfipe
	exitPrivilege     = 4 // not privileged enough
	exitNotLoaded     = 5 // no running enforcement to act on
	exitAlreadyLoaded = 6 // load found enforcement running already
)

// command is one subcommand. run receives the arguments after the
// subcommand's name and returns the exit status.
type command struct {
	name    string
	summary string
	usage   string // the argument synopsis after the name
	// flags declares the subcommand's flags; it may be nil.
	flags func(fs *pflag.FlagSet)
	run   func(fs *pflag.FlagSet, args []string) int
}

var commands = map[string]*command{}

// stdout and stderr are where commands write. dispatch sets them, so tests
// drive the whole CLI in-process and read what it printed.
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)

func register(c *command) { commands[c.name] = c }

func main() { os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr)) }

func dispatch(args []string, out, errOut io.Writer) int {
	stdout, stderr = out, errOut
	if len(args) == 0 {
		printHelp(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		if len(args) > 1 {
			if c, ok := lookup(args[1:]); ok {
				newFlagSet(c, stdout).Usage()
				return exitOK
			}
			fmt.Fprintf(stderr, "bpfipe: unknown command %q\n", strings.Join(args[1:], " "))
			return exitUsage
		}
		printHelp(stdout)
		return exitOK
	}
	c, ok := lookup(args)
	if !ok {
		fmt.Fprintf(stderr, "bpfipe: unknown command %q; run 'bpfipe help'\n", name)
		return exitUsage
	}
	rest := args[len(strings.Fields(c.name)):]
	fs := newFlagSet(c, stdout)
	// pflag prints the whole usage on every parse error; a bad flag gets one
	// line instead, and the usage is printed only when asked for.
	usage := fs.Usage
	fs.Usage = func() {}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage()
			return exitOK
		}
		fmt.Fprintf(stderr, "bpfipe %s: %v (see 'bpfipe %s --help')\n", c.name, err, c.name)
		return exitUsage
	}
	return c.run(fs, fs.Args())
}

// lookup finds the longest registered command name that prefixes args, so
// "policy check" and "kernel-ipe load" are commands of their own.
func lookup(args []string) (*command, bool) {
	for n := len(args); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, true
		}
	}
	return nil, false
}

func newFlagSet(c *command, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("bpfipe "+c.name, pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	if c.flags != nil {
		c.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bpfipe %s %s\n\n%s\n", c.name, c.usage, c.summary)
		if fs.HasFlags() {
			fmt.Fprintf(fs.Output(), "\nFlags:\n%s", fs.FlagUsages())
		}
	}
	return fs
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "bpfipe: IPE (Integrity Policy Enforcement) policies enforced by BPF LSM programs on stock kernels.")
	fmt.Fprintln(w, "\nUsage: bpfipe COMMAND [FLAGS] [ARGS]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-22s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'bpfipe help COMMAND' or 'bpfipe COMMAND --help' for a command's flags.")
}
