package main

// The kernel-ipe commands drive the kernel's own IPE (6.12 and later), so a
// policy can be tried under both enforcers with one tool and their records
// compared line by line.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	signingFlags := func(fs *pflag.FlagSet) {
		fs.String("key", "", "PEM private key that signs the policy")
		fs.String("cert", "", "PEM certificate of the key; the kernel must trust it (secondary or platform keyring)")
	}
	register(&command{
		name:    "kernel-ipe load",
		summary: "Sign a policy, load it into the kernel's IPE and activate it",
		usage:   "--key KEY --cert CERT POLICY  (or POLICY.p7s, already signed)",
		flags:   signingFlags,
		run: func(fs *pflag.FlagSet, args []string) int {
			return runKernelPolicy(fs, args, "kernel-ipe load", func(blob []byte) (string, error) { return kernelipe.Load(blob) })
		},
	})
	register(&command{
		name:    "kernel-ipe update",
		summary: "Sign a newer version of a loaded policy and replace it in the kernel's IPE",
		usage:   "--key KEY --cert CERT POLICY  (or POLICY.p7s, already signed)",
		flags:   signingFlags,
		run: func(fs *pflag.FlagSet, args []string) int {
			return runKernelPolicy(fs, args, "kernel-ipe update", kernelipe.Update)
		},
	})
	register(&command{
		name:    "kernel-ipe sign",
		summary: "Sign a policy the way the kernel's IPE requires (openssl smime -sign -noattr -nodetach -binary -outform der)",
		usage:   "--key KEY --cert CERT [--out FILE] POLICY",
		flags: func(fs *pflag.FlagSet) {
			signingFlags(fs)
			fs.StringP("out", "o", "", "write the signed policy here instead of POLICY.p7s")
		},
		run: runKernelSign,
	})
	register(&command{
		name:    "kernel-ipe delete",
		summary: "Delete a loaded, inactive policy from the kernel's IPE",
		usage:   "NAME",
		run: func(fs *pflag.FlagSet, args []string) int {
			if len(args) != 1 {
				fmt.Fprintln(stderr, "bpfipe kernel-ipe delete: want one policy name")
				return exitUsage
			}
			if err := kernelipe.Delete(args[0]); err != nil {
				return kernelFail(stderr, "kernel-ipe delete", err)
			}
			return exitOK
		},
	})
	register(&command{
		name:    "kernel-ipe status",
		summary: "Show the kernel's IPE: active policy, enforce, success_audit, loaded policies",
		usage:   "[--json]",
		flags:   func(fs *pflag.FlagSet) { fs.Bool("json", false, "print one JSON object") },
		run:     runKernelStatus,
	})
	register(&command{
		name:    "kernel-ipe events",
		summary: "Print the kernel's IPE audit records in bpfipe's event layout (becomes the audit daemon)",
		usage:   "[--json] [--follow]",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print one JSON object per line")
			fs.BoolP("follow", "f", false, "keep printing new records until interrupted")
			fs.Duration("idle", 500*time.Millisecond, "without --follow, stop once no record arrived for this long")
		},
		run: runKernelEvents,
	})
	register(&command{
		name:    "kernel-ipe enforce",
		summary: "Switch the kernel's IPE between enforcing (on) and permissive (off)",
		usage:   "on|off",
		run: func(fs *pflag.FlagSet, args []string) int {
			return runKernelSwitch(fs, args, "kernel-ipe enforce", kernelipe.SetEnforce)
		},
	})
	register(&command{
		name:    "kernel-ipe success-audit",
		summary: "Switch audit records of the kernel IPE's ALLOW decisions on or off",
		usage:   "on|off",
		run: func(fs *pflag.FlagSet, args []string) int {
			return runKernelSwitch(fs, args, "kernel-ipe success-audit", kernelipe.SetSuccessAudit)
		},
	})
}

// kernelFail prints err and maps it to an exit status: the kernel's
// refusals name what their errno means (kernelipe.Error).
func kernelFail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "bpfipe %s: %v\n", cmd, err)
	switch {
	case errors.Is(err, kernelipe.ErrNotAvailable):
		return exitUnsupported
	}
	var kerr *kernelipe.Error
	if errors.As(err, &kerr) {
		switch {
		case kerr.Opening && (kerr.Errno == syscall.EACCES || kerr.Errno == syscall.EPERM):
			return exitPrivilege
		case kerr.Errno == syscall.EPERM && kerr.Step != kernelipe.StepDelete:
			// Deleting the active policy is EPERM too; that is no
			// privilege problem.
			return exitPrivilege
		}
	}
	return exitFailure
}

// signedPolicy reads POLICY and signs it with --key and --cert, or takes it
// as it is when it is already a PKCS#7 message and no key is given.
func signedPolicy(fs *pflag.FlagSet, path, cmd string) ([]byte, int) {
	keyPath, _ := fs.GetString("key")
	certPath, _ := fs.GetString("cert")
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe %s: %v\n", cmd, err)
		return nil, exitFailure
	}
	if keyPath == "" && certPath == "" {
		if loader.IsPKCS7(data) {
			return data, exitOK
		}
		fmt.Fprintf(stderr, "bpfipe %s: %s is not signed; give --key and --cert to sign it (the kernel loads only signed policies)\n", cmd, path)
		return nil, exitUsage
	}
	if keyPath == "" || certPath == "" {
		fmt.Fprintf(stderr, "bpfipe %s: --key and --cert go together\n", cmd)
		return nil, exitUsage
	}
	if loader.IsPKCS7(data) {
		fmt.Fprintf(stderr, "bpfipe %s: %s is signed already; give the plain policy to sign it again\n", cmd, path)
		return nil, exitUsage
	}
	cert, key, err := kernelipe.ReadKeyPair(certPath, keyPath)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe %s: %v\n", cmd, err)
		return nil, exitUsage
	}
	blob, err := kernelipe.Sign(data, cert, key)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe %s: %v\n", cmd, err)
		return nil, exitFailure
	}
	return blob, exitOK
}

func runKernelPolicy(fs *pflag.FlagSet, args []string, cmd string, apply func([]byte) (string, error)) int {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "bpfipe %s: want exactly one policy file\n", cmd)
		return exitUsage
	}
	blob, status := signedPolicy(fs, args[0], cmd)
	if blob == nil {
		return status
	}
	name, err := apply(blob)
	if err != nil {
		return kernelFail(stderr, cmd, err)
	}
	st, err := kernelipe.CurrentStatus()
	if err != nil {
		return kernelFail(stderr, cmd, err)
	}
	for _, p := range st.Policies {
		if p.Name == name {
			fmt.Fprintf(stdout, "kernel IPE: policy %q version %s %s (%s)\n", p.Name, p.Version, onOff(p.Active, "active", "loaded"), p.Digest)
			return exitOK
		}
	}
	fmt.Fprintf(stderr, "bpfipe %s: the kernel took policy %q but does not list it\n", cmd, name)
	return exitFailure
}

func runKernelSign(fs *pflag.FlagSet, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "bpfipe kernel-ipe sign: want exactly one policy file")
		return exitUsage
	}
	if k, _ := fs.GetString("key"); k == "" {
		fmt.Fprintln(stderr, "bpfipe kernel-ipe sign: --key and --cert are required")
		return exitUsage
	}
	blob, status := signedPolicy(fs, args[0], "kernel-ipe sign")
	if blob == nil {
		return status
	}
	out, _ := fs.GetString("out")
	if out == "" {
		out = args[0] + ".p7s"
	}
	if err := os.WriteFile(out, blob, 0o644); err != nil {
		fmt.Fprintf(stderr, "bpfipe kernel-ipe sign: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func runKernelStatus(fs *pflag.FlagSet, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "bpfipe kernel-ipe status: takes no arguments")
		return exitUsage
	}
	st, err := kernelipe.CurrentStatus()
	if err != nil {
		return kernelFail(stderr, "kernel-ipe status", err)
	}
	if asJSON, _ := fs.GetBool("json"); asJSON {
		if err := json.NewEncoder(stdout).Encode(st); err != nil {
			return kernelFail(stderr, "kernel-ipe status", err)
		}
		return exitOK
	}
	line := func(label, format string, args ...any) {
		fmt.Fprintf(stdout, "%-15s %s\n", label+":", fmt.Sprintf(format, args...))
	}
	if st.Active != nil {
		line("active policy", "%q version %s (%s)", st.Active.Name, st.Active.Version, st.Active.Digest)
	} else {
		line("active policy", "none (IPE allows everything)")
	}
	line("mode", "%s", onOff(st.Enforce, "enforcing", "permissive"))
	line("success audit", "%s", onOff(st.SuccessAudit, "on", "off"))
	for _, p := range st.Policies {
		kind := "signed"
		if !p.Signed {
			kind = "boot policy, unsigned"
		}
		line("loaded", "%q version %s%s (%s, %s)", p.Name, p.Version, onOff(p.Active, ", active", ""), kind, p.Digest)
	}
	return exitOK
}

func runKernelEvents(fs *pflag.FlagSet, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "bpfipe kernel-ipe events: takes no arguments")
		return exitUsage
	}
	follow, _ := fs.GetBool("follow")
	idle, _ := fs.GetDuration("idle")
	reader, err := kernelipe.OpenAudit()
	if err != nil {
		return kernelFail(stderr, "kernel-ipe events", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		reader.Close()
	}()
	defer reader.Close()
	asJSON, _ := fs.GetBool("json")
	for {
		if !follow {
			reader.SetDeadline(time.Now().Add(idle))
		}
		rec, err := reader.Read()
		switch {
		case errors.Is(err, kernelipe.ErrMalformedRecord):
			fmt.Fprintf(stderr, "bpfipe kernel-ipe events: warning: %v: %q\n", err, rec.Body)
			continue
		case err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil):
			if reader.Overruns > 0 {
				fmt.Fprintf(stderr, "bpfipe kernel-ipe events: warning: the socket overflowed %d times; records were lost\n", reader.Overruns)
			}
			return exitOK
		case err != nil:
			return kernelFail(stderr, "kernel-ipe events", err)
		}
		if !rec.IsIPE() {
			continue
		}
		if asJSON {
			fmt.Fprintf(stdout, "%s\n", rec.JSON())
		} else {
			fmt.Fprintln(stdout, rec.String())
		}
	}
}

func runKernelSwitch(fs *pflag.FlagSet, args []string, cmd string, set func(bool) error) int {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "bpfipe %s: want on or off\n", cmd)
		return exitUsage
	}
	on, ok := parseSwitch(args[0])
	if !ok {
		fmt.Fprintf(stderr, "bpfipe %s: %q is neither on nor off\n", cmd, args[0])
		return exitUsage
	}
	if err := set(on); err != nil {
		return kernelFail(stderr, cmd, err)
	}
	return exitOK
}
