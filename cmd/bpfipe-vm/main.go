// Command bpfipe-vm boots stock Debian kernels under qemu and runs a command
// in the guest: the way bpfipe's BPF LSM programs are tried and tested on
// kernels the host does not run.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/vm"
)

const exitStatuses = `Exit status:
  the guest command's own status, passed through unchanged, or
  125  runner error: bad usage, or the guest could not be built or started
  124  the guest did not finish within --timeout
  123  the guest kernel panicked, or the guest stopped without a status
  122  a host tool or a kernel is missing and cannot be had (the message
       names the Debian package to install)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	status := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(status)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `bpfipe-vm: run commands in qemu guests booting stock Debian kernels.

Usage:
  bpfipe-vm run --kernel NAME [FLAGS] -- COMMAND [ARGS]
  bpfipe-vm shell --kernel NAME [FLAGS] [-- COMMAND [ARGS]]
  bpfipe-vm kernels
  bpfipe-vm fetch NAME...

Run 'bpfipe-vm run --help' for the flags.
`)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return vm.ExitRunnerError
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], false, stdout, stderr)
	case "shell":
		return runCommand(ctx, args[1:], true, stdout, stderr)
	case "kernels":
		return listKernels(ctx, stdout, stderr)
	case "fetch":
		return fetchKernels(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "bpfipe-vm: unknown command %q\n", args[0])
		usage(stderr)
		return vm.ExitRunnerError
	}
}

// progressWriter shows progress only to a person watching: when stdout is a
// terminal. Notes go to stderr so they never mix into captured output.
func progressWriter(stderr io.Writer) io.Writer {
	if isTerminal(os.Stdout) {
		return stderr
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func runCommand(ctx context.Context, args []string, interactive bool, stdout, stderr io.Writer) int {
	name := "run"
	synopsis := "--kernel NAME [FLAGS] -- COMMAND [ARGS]"
	summary := "Boot a guest, run COMMAND in it as root, stream its output (stdout and stderr merged)\nand exit with its status."
	if interactive {
		name = "shell"
		synopsis = "--kernel NAME [FLAGS] [-- COMMAND [ARGS]]"
		summary = "Boot a guest with an interactive shell (or COMMAND) on the terminal.\nCtrl-A x quits qemu; leaving the shell powers the guest off."
	}
	fs := pflag.NewFlagSet("bpfipe-vm "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.SetInterspersed(false)
	var (
		cfg     vm.Config
		adds    []string
		disks   []string
		verity  []string
		envs    []string
		modules []string
	)
	fs.StringVar(&cfg.Kernel, "kernel", "", "named kernel: "+strings.Join(vm.KernelNames(), ", "))
	fs.StringVar(&cfg.KernelImage, "kernel-image", "", "boot this bzImage instead of a named kernel")
	fs.StringVar(&cfg.ModulesDir, "modules", "", "module directory (lib/modules/RELEASE) for --kernel-image")
	fs.StringArrayVar(&adds, "add", nil, "copy host file or directory SRC to guest path DST (`SRC:DST`, repeatable)")
	fs.StringArrayVar(&disks, "disk", nil, "attach `FILE[:ro]` as the next virtio disk, /dev/vda first (repeatable)")
	fs.StringArrayVar(&verity, "verity", nil, "open `NAME=DATA:HASH[:ROOTHASH[:SIGFILE]]` (veritysetup format images) as dm-verity\n"+
		"device NAME, mounted read-only at /mnt/NAME; ROOTHASH defaults to DATA"+vm.RootHashSuffix+" (repeatable)")
	fs.StringVar(&cfg.UEFICert, "uefi-cert", "", "boot through OVMF with this PEM `CERT` in the UEFI db (lands in .platform)")
	fs.StringVar(&cfg.Mem, "mem", vm.DefaultMem, "guest memory")
	fs.IntVar(&cfg.CPUs, "cpus", vm.DefaultCPUs, "guest CPUs")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "limit for boot and command (default 300s for run, none for shell)")
	fs.StringVar(&cfg.Append, "append", "", "extra kernel command line `ARGS`")
	fs.StringArrayVar(&envs, "env", nil, "set `KEY=VALUE` in the command's environment (repeatable)")
	fs.StringArrayVar(&modules, "module", nil, "also load kernel module `NAME` (repeatable)")
	fs.BoolVar(&cfg.NoBpfipe, "no-bpfipe", false, "do not build bpfipe into the guest")
	fs.BoolVar(&cfg.Verbose, "verbose", false, "show kernel messages on stderr")
	// Declared rather than left to pflag, which would print the usage to
	// the error output before reporting ErrHelp.
	help := fs.BoolP("help", "h", false, "show this help")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: bpfipe-vm %s %s\n\n%s\n\nFlags:\n%s\n%s", name, synopsis, summary, fs.FlagUsages(), exitStatuses)
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "bpfipe-vm %s: %v\n", name, err)
		return vm.ExitRunnerError
	}
	if *help {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	argv := fs.Args()
	if len(argv) == 0 {
		if !interactive {
			fmt.Fprintf(stderr, "bpfipe-vm run: no command given\n")
			return vm.ExitRunnerError
		}
		argv = []string{"/bin/sh"}
	}
	if cfg.Kernel == "" && cfg.KernelImage == "" {
		fmt.Fprintf(stderr, "bpfipe-vm %s: give --kernel NAME (%s) or --kernel-image PATH\n", name, strings.Join(vm.KernelNames(), ", "))
		return vm.ExitRunnerError
	}
	if cfg.ModulesDir != "" && cfg.KernelImage == "" {
		fmt.Fprintf(stderr, "bpfipe-vm %s: --modules goes with --kernel-image\n", name)
		return vm.ExitRunnerError
	}
	for _, a := range adds {
		add, err := vm.ParseAdd(a)
		if err != nil {
			fmt.Fprintf(stderr, "bpfipe-vm %s: %v\n", name, err)
			return vm.ExitRunnerError
		}
		cfg.Adds = append(cfg.Adds, add)
	}
	for _, d := range disks {
		disk, err := vm.ParseDisk(d)
		if err != nil {
			fmt.Fprintf(stderr, "bpfipe-vm %s: %v\n", name, err)
			return vm.ExitRunnerError
		}
		cfg.Disks = append(cfg.Disks, disk)
	}
	for _, v := range verity {
		dev, err := vm.ParseVerity(v)
		if err != nil {
			fmt.Fprintf(stderr, "bpfipe-vm %s: %v\n", name, err)
			return vm.ExitRunnerError
		}
		cfg.Verity = append(cfg.Verity, dev)
	}
	for _, e := range envs {
		if !strings.Contains(e, "=") {
			fmt.Fprintf(stderr, "bpfipe-vm %s: --env %q: want KEY=VALUE\n", name, e)
			return vm.ExitRunnerError
		}
	}
	cfg.Env = envs
	cfg.Modules = modules
	cfg.Stdout = stdout
	cfg.Stderr = stderr
	cfg.Progress = progressWriter(stderr)
	if interactive {
		cfg.Interactive = true
		cfg.Stdin = os.Stdin
		fmt.Fprintln(stderr, "bpfipe-vm: booting; Ctrl-A x quits qemu, 'exit' powers the guest off")
	}
	status, err := vm.Run(ctx, cfg, argv)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe-vm %s: %v\n", name, err)
		return vm.ExitStatus(err)
	}
	return status
}

func listKernels(ctx context.Context, stdout, stderr io.Writer) int {
	cacheDir, err := vm.DefaultCacheDir()
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe-vm kernels: %v\n", err)
		return vm.ExitRunnerError
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNEWEST AVAILABLE\tCACHED\tDESCRIPTION")
	for _, k := range vm.ListKernels(ctx, cacheDir, progressWriter(stderr)) {
		latest := k.Latest
		if k.LatestErr != nil {
			latest = "unknown (" + k.LatestErr.Error() + ")"
		}
		var cached []string
		for _, c := range k.Cached {
			cached = append(cached, c.Package+" "+c.Version)
		}
		if len(cached) == 0 {
			cached = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, latest, strings.Join(cached, ", "), k.Summary)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nCache: %s\n", cacheDir)
	return 0
}

func fetchKernels(ctx context.Context, names []string, stdout, stderr io.Writer) int {
	if len(names) == 0 {
		names = vm.KernelNames()
	}
	for _, name := range names {
		k, err := vm.EnsureKernelWithProgress(ctx, name, progressWriter(stderr))
		if err != nil {
			fmt.Fprintf(stderr, "bpfipe-vm fetch: %v\n", err)
			return vm.ExitStatus(err)
		}
		fmt.Fprintf(stdout, "%s: %s %s (%s)\n", k.Name, k.Package, k.Version, k.Release)
	}
	return 0
}
