package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	// load --pin starts this command, detached, where the kernel cannot
	// capture dm-verity root hashes itself.
	loader.ResolverCommand = []string{"resolver"}
	register(&command{
		name:    "resolver",
		summary: "Follow dm-verity devices for a pinned load on kernels without in-kernel capture",
		usage:   "[--restart | --stop | --status [--json]]",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("restart", false, "start the detached resolver, stopping a running one first (load --pin starts it)")
			fs.Bool("stop", false, "stop the detached resolver (unload stops it too)")
			fs.Bool("status", false, "say whether a resolver follows the devices")
			fs.Bool("json", false, "with --status, print one JSON object")
		},
		run: runResolverCommand,
	})
}

// runResolverCommand runs the resolver in the foreground (as load --pin
// starts it, or under a service manager) or controls the detached one.
func runResolverCommand(fs *pflag.FlagSet, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "bpfipe resolver: takes no arguments")
		return exitUsage
	}
	restart, _ := fs.GetBool("restart")
	stop, _ := fs.GetBool("stop")
	status, _ := fs.GetBool("status")
	asJSON, _ := fs.GetBool("json")
	chosen := 0
	for _, b := range []bool{restart, stop, status} {
		if b {
			chosen++
		}
	}
	if chosen > 1 || (asJSON && !status) {
		fmt.Fprintln(stderr, "bpfipe resolver: --restart, --stop and --status exclude each other; --json goes with --status")
		return exitUsage
	}
	switch {
	case restart:
		rs, err := loader.StartResolver()
		if err != nil {
			return fail(stderr, "resolver", err)
		}
		fmt.Fprintf(stderr, "bpfipe: device resolver running, pid %d, log %s\n", rs.PID, rs.Log)
		return exitOK
	case stop:
		if err := loader.StopResolver(); err != nil {
			return fail(stderr, "resolver", err)
		}
		fmt.Fprintln(stderr, "bpfipe: device resolver stopped")
		return exitOK
	case status:
		return resolverStatus(asJSON)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	logf := func(msg string) {
		fmt.Fprintf(stderr, "%s bpfipe resolver: %s\n", time.Now().UTC().Format(time.RFC3339), msg)
	}
	if err := loader.RunResolver(ctx, loader.ResolverOptions{Log: logf}); err != nil {
		return fail(stderr, "resolver", err)
	}
	logf("stopped")
	return exitOK
}

// resolverStatus reports the resolver: exit status 0 when it runs or none
// is needed, 1 when one is needed and not running.
func resolverStatus(asJSON bool) int {
	running, err := loader.Open()
	if errors.Is(err, loader.ErrNotLoaded) {
		fmt.Fprintln(stdout, "bpfipe: not loaded")
		return exitNotLoaded
	}
	if err != nil {
		return fail(stderr, "resolver", err)
	}
	st, err := running.Status()
	running.Close()
	if err != nil {
		return fail(stderr, "resolver", err)
	}
	needed := st.Resolver != nil
	rs := loader.ResolverStatus{}
	if needed {
		rs = *st.Resolver
	}
	if asJSON {
		json.NewEncoder(stdout).Encode(struct {
			Mode   string `json:"dm_verity_mode"`
			Needed bool   `json:"needed"`
			loader.ResolverStatus
		}{st.DMVerityMode, needed, rs})
	} else {
		fmt.Fprintf(stdout, "%s\n", describeResolver(st))
	}
	if needed && !rs.Running {
		return exitFailure
	}
	return exitOK
}

// describeResolver says in one line who keeps the devices map current.
func describeResolver(st *loader.Status) string {
	switch {
	case st.DMVerityMode == loader.DMVerityCapture:
		return "in-kernel capture: the kernel records dm-verity root hashes, no resolver needed"
	case st.Resolver == nil:
		return fmt.Sprintf("userspace resolver: the foreground loader (pid %d) follows the devices", st.Foreground)
	case st.Resolver.Running:
		return fmt.Sprintf("userspace resolver: running, pid %d, since %s, log %s", st.Resolver.PID, st.Resolver.StartedAt.Format(time.RFC3339), st.Resolver.Log)
	default:
		return "userspace resolver: NOT running; dm-verity devices set up from now on stay unknown; start it with bpfipe resolver --restart"
	}
}
