package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "events",
		summary: "Print decisions as IPE's access records (AUDIT_IPE_ACCESS)",
		usage:   "[--json] [--follow]",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print one JSON object per line")
			fs.BoolP("follow", "f", false, "keep printing new decisions until interrupted")
		},
		run: runEvents,
	})
}

func runEvents(fs *pflag.FlagSet, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "bpfipe events: takes no arguments")
		return exitUsage
	}
	follow, _ := fs.GetBool("follow")
	running, err := loader.Open()
	if err != nil {
		return fail(stderr, "events", err)
	}
	defer running.Close()
	if running.State.LoaderRunning() {
		fmt.Fprintf(stderr, "bpfipe events: note: the foreground loader (pid %d) reads the same events; each event goes to one of you\n", running.State.PID)
	}
	reader, err := running.Events(follow)
	if err != nil {
		return fail(stderr, "events", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		reader.Close()
	}()
	out := newRecordPrinter(stdout, fs)
	for {
		rec, err := reader.Read()
		switch {
		case err == nil:
			out.access(rec)
		case errors.Is(err, loader.ErrNoMoreEvents), ctx.Err() != nil && errors.Is(err, os.ErrClosed):
			return exitOK
		default:
			return fail(stderr, "events", err)
		}
	}
}
