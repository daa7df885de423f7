package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/policy"
)

func init() {
	register(&command{
		name:    "load",
		summary: "Enforce a policy with BPF LSM programs, in the foreground or pinned",
		usage:   "[--permissive] [--success-audit] [--pin] [--lock] [--cgroup PATH] [--boot-root PATH] [--trust CERT]... [--json] POLICY",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("permissive", false, "evaluate and report, deny nothing (IPE's enforce=0)")
			fs.Bool("success-audit", false, "report ALLOW decisions too (IPE's success_audit=1)")
			fs.Bool("pin", false, "leave enforcement running after bpfipe exits; stop it with bpfipe unload")
			fs.Bool("lock", false, "refuse unload, permissive mode and (with --trust) unsigned updates until reboot")
			fs.String("cgroup", "", "enforce only on tasks in this cgroup v2 directory and below")
			fs.String("boot-root", "", "treat the filesystem holding PATH as the boot filesystem (boot_verified)")
			fs.StringArray("trust", nil, "require the policy to be PKCS#7-signed by this certificate (PEM or DER), or one it issued; repeatable")
			fs.Bool("json", false, "print records as JSON, one object per line")
		},
		run: runLoad,
	})
}

func runLoad(fs *pflag.FlagSet, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "bpfipe load: want exactly one policy file")
		return exitUsage
	}
	permissive, _ := fs.GetBool("permissive")
	successAudit, _ := fs.GetBool("success-audit")
	pin, _ := fs.GetBool("pin")
	cgroup, _ := fs.GetString("cgroup")
	bootRoot, _ := fs.GetString("boot-root")
	lock, _ := fs.GetBool("lock")
	out := newRecordPrinter(stdout, fs)
	warn := warner(stderr, "load")

	pf, trusted, status := readPolicyFile(fs, args[0], out, "load")
	if pf == nil {
		return status
	}
	l, err := loader.Start(loader.Options{
		Policy:       pf,
		Enforcing:    !permissive,
		SuccessAudit: successAudit,
		CgroupPath:   cgroup,
		BootRoot:     bootRoot,
		Foreground:   !pin,
		Lock:         lock,
		Trusted:      trusted,
		Warn:         warn,
	})
	if err != nil {
		return fail(stderr, "load", err)
	}
	subject := loader.CurrentSubject()
	active := l.Running.State.Active
	out.config(loader.PolicyLoadRecord{Policy: &active, Subject: subject})
	out.config(loader.ConfigChangeRecord{New: &active, Subject: subject})
	mode := "enforcing"
	if permissive {
		mode = "permissive"
	}
	if pin {
		fmt.Fprintf(stderr, "bpfipe: %s policy %q version %s, pinned at %s; stop with bpfipe unload\n", mode, active.Name, active.Version, loader.DefaultPinDir)
		if err := l.Close(); err != nil {
			return fail(stderr, "load", err)
		}
		return exitOK
	}

	fmt.Fprintf(stderr, "bpfipe: %s policy %q version %s; stop with Ctrl-C or bpfipe unload\n", mode, active.Name, active.Version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serveErr := l.Serve(ctx, out.access, warn)
	stopErr := l.Stop()
	if serveErr != nil {
		return fail(stderr, "load", serveErr)
	}
	if stopErr != nil {
		return fail(stderr, "load", stopErr)
	}
	fmt.Fprintln(stderr, "bpfipe: enforcement stopped")
	return exitOK
}

// readPolicyFile reads POLICY and the --trust certificates it was checked
// against. A policy IPE would refuse gets IPE's failed IPE_POLICY_LOAD record
// on stdout besides the error; nil means the returned exit status ends the
// command.
func readPolicyFile(fs *pflag.FlagSet, path string, out recordPrinter, cmd string) (*loader.PolicyFile, []*x509.Certificate, int) {
	trustPaths, _ := fs.GetStringArray("trust")
	var trusted []*x509.Certificate
	if len(trustPaths) > 0 {
		var err error
		if trusted, err = loader.ReadCertificates(trustPaths); err != nil {
			return nil, nil, fail(stderr, cmd, err)
		}
	}
	pf, err := loader.ReadPolicy(path, trusted)
	if err != nil {
		var refusal *loader.Refusal
		var parseErr *policy.ParseError
		if errors.As(err, &refusal) || errors.As(err, &parseErr) {
			var errno syscall.Errno
			errors.As(err, &errno)
			out.config(loader.PolicyLoadRecord{Subject: loader.CurrentSubject(), Errno: -int(errno)})
		}
		return nil, nil, fail(stderr, cmd, err)
	}
	if pf.Signed && !pf.Verified {
		warner(stderr, cmd)("the policy is signed by " + quoteOrUnknown(pf.Signer) + " but no --trust certificate was given, so the signer is not checked")
	}
	return pf, trusted, exitOK
}

func quoteOrUnknown(s string) string {
	if s == "" {
		return "an unknown signer"
	}
	return fmt.Sprintf("%q", s)
}

// fail prints err and maps it to the exit status of its class.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "bpfipe %s: %v\n", cmd, err)
	switch {
	case errors.Is(err, loader.ErrNotPrivileged), errors.Is(err, os.ErrPermission):
		return exitPrivilege
	case errors.Is(err, loader.ErrNoBPFLSM), errors.Is(err, loader.ErrBPFLSMInactive), errors.Is(err, loader.ErrLSMRefused),
		errors.Is(err, loader.ErrLinkDescriptorsDetach):
		return exitUnsupported
	case errors.Is(err, loader.ErrNotLoaded):
		return exitNotLoaded
	case errors.Is(err, loader.ErrAlreadyLoaded):
		return exitAlreadyLoaded
	}
	return exitFailure
}

func warner(stderr io.Writer, cmd string) func(string) {
	return func(msg string) { fmt.Fprintf(stderr, "bpfipe %s: warning: %s\n", cmd, msg) }
}

// recordPrinter writes records as text (IPE's key=value layout) or JSON.
type recordPrinter struct {
	w    io.Writer
	json bool
}

func newRecordPrinter(w io.Writer, fs *pflag.FlagSet) recordPrinter {
	asJSON, _ := fs.GetBool("json")
	return recordPrinter{w: w, json: asJSON}
}

// config prints a configuration record, prefixed by its type in text so it
// stands out among access records.
func (p recordPrinter) config(r loader.ConfigRecord) {
	if p.json {
		fmt.Fprintf(p.w, "%s\n", r.JSON())
		return
	}
	fmt.Fprintf(p.w, "%s %s\n", r.Type(), r.String())
}

// access prints an access record as IPE's AUDIT_IPE_ACCESS body.
func (p recordPrinter) access(r loader.AccessRecord) {
	if p.json {
		fmt.Fprintf(p.w, "%s\n", r.JSON())
		return
	}
	fmt.Fprintln(p.w, r.String())
}

// parseSwitch reads a switch value as the kernel's kstrtobool reads what
// is written to IPE's enforce and success_audit files: only the first
// character counts, or the first two after an 'o'.
func parseSwitch(s string) (on, ok bool) {
	if s == "" {
		return false, false
	}
	switch s[0] {
	case 'y', 'Y', 't', 'T', '1':
		return true, true
	case 'n', 'N', 'f', 'F', '0':
		return false, true
	case 'o', 'O':
		if len(s) > 1 {
			switch s[1] {
			case 'n', 'N':
				return true, true
			case 'f', 'F':
				return false, true
			}
		}
	}
	return false, false
}
