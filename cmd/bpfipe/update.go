package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "update",
		summary: "Replace the running policy with a newer version of it",
		usage:   "[--trust CERT]... [--json] POLICY",
		flags: func(fs *pflag.FlagSet) {
			fs.StringArray("trust", nil, "require the policy to be PKCS#7-signed by this certificate (PEM or DER), or one it issued; repeatable")
			fs.Bool("json", false, "print records as JSON, one object per line")
		},
		run: runUpdate,
	})
}

// runUpdate follows IPE's update rules: same policy name (else EINVAL) and
// a strictly greater version (else ESTALE).
func runUpdate(fs *pflag.FlagSet, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "bpfipe update: want exactly one policy file")
		return exitUsage
	}
	out := newRecordPrinter(stdout, fs)
	pf, _, status := readPolicyFile(fs, args[0], out, "update")
	if pf == nil {
		return status
	}
	running, err := loader.Open()
	if err != nil {
		return fail(stderr, "update", err)
	}
	defer running.Close()
	old, next, err := running.Update(pf, warner(stderr, "update"))
	subject := loader.CurrentSubject()
	if err != nil {
		var refusal *loader.Refusal
		if errors.As(err, &refusal) {
			var errno syscall.Errno
			errors.As(err, &errno)
			out.config(loader.PolicyLoadRecord{Subject: subject, Errno: -int(errno)})
		}
		return fail(stderr, "update", err)
	}
	out.config(loader.PolicyLoadRecord{Policy: &next, Subject: subject})
	out.config(loader.ConfigChangeRecord{Old: &old, New: &next, Subject: subject})
	return exitOK
}
