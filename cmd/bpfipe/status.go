package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "status",
		summary: "Show the running enforcement: policy, mode, scope, properties, counters",
		usage:   "[--json]",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print one JSON object")
		},
		run: runStatus,
	})
}

func runStatus(fs *pflag.FlagSet, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "bpfipe status: takes no arguments")
		return exitUsage
	}
	asJSON, _ := fs.GetBool("json")
	running, err := loader.Open()
	if errors.Is(err, loader.ErrNotLoaded) {
		if asJSON {
			fmt.Fprintln(stdout, `{"loaded":false}`)
		} else {
			fmt.Fprintln(stdout, "bpfipe: not loaded")
		}
		return exitNotLoaded
	}
	if err != nil {
		return fail(stderr, "status", err)
	}
	defer running.Close()
	st, err := running.Status()
	if err != nil {
		return fail(stderr, "status", err)
	}
	if asJSON {
		if err := json.NewEncoder(stdout).Encode(st); err != nil {
			return fail(stderr, "status", err)
		}
		return exitOK
	}
	printStatus(stdout, st)
	return exitOK
}

func printStatus(w io.Writer, st *loader.Status) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-18s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	signed := "unsigned"
	if st.Signed {
		signed = "signed"
	}
	line("policy", "%q version %s (generation %d, %s, %s)", st.Policy, st.Version, st.Generation, signed, st.Digest)
	line("mode", "%s", onOff(st.Enforcing, "enforcing", "permissive"))
	line("success audit", "%s", onOff(st.SuccessAudit, "on", "off"))
	line("scope", "%s", onOff(st.Scope == "system", "system-wide", "cgroup "+st.Scope))
	if st.BootRoot != "" {
		line("boot root", "%s (device %s)", st.BootRoot, st.BootSdev)
	} else {
		line("boot root", "none (no file is boot_verified)")
	}
	line("dm-verity", "%s, %d device(s) known", st.DMVerityMode, st.Devices)
	if st.Resolver != nil {
		line("resolver", "%s", onOff(st.Resolver.Running,
			fmt.Sprintf("running, pid %d, log %s", st.Resolver.PID, st.Resolver.Log),
			"NOT running (restart it with: bpfipe resolver --restart)"))
	}
	line("observable", "%s", strings.Join(st.Observable, " "))
	line("programs", "%s", strings.Join(st.Programs, " "))
	switch {
	case st.Foreground != 0 && st.ForegroundRunning:
		line("loader", "foreground, pid %d", st.Foreground)
	case st.Foreground != 0:
		line("loader", "foreground pid %d has exited; enforcement stays until bpfipe unload", st.Foreground)
	default:
		line("loader", "pinned (no process)")
	}
	line("loaded at", "%s", st.LoadedAt.Format("2006-01-02 15:04:05 MST"))
	for _, h := range st.Hooks {
		line("hook "+h.Hook, "allow=%d deny=%d", h.Allow, h.Deny)
	}
	line("events lost", "%d", st.EventsDropped)
	if st.ScratchBusy != 0 {
		line("undecided", "%d (no working memory free to read an fs-verity digest; denied when enforcing)", st.ScratchBusy)
	}
	if st.PathsLost != 0 {
		line("paths lost", "%d (events sent without their file's path: no working memory free)", st.PathsLost)
	}
}

func onOff(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
