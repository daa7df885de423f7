package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/policy"
)

func init() {
	register(&command{
		name:    "policy eval",
		summary: "Decide one operation on a described file with a policy, as in-tree IPE would",
		usage:   "--policy FILE [--op OP] [FILE PROPERTIES]",
		flags: func(fs *pflag.FlagSet) {
			fs.String("policy", "", "the policy `FILE` to evaluate (required)")
			fs.String("op", "EXECUTE", "the operation `OP` to decide: EXECUTE, FIRMWARE, KMODULE, KEXEC_IMAGE, KEXEC_INITRAMFS, POLICY, X509_CERT, or UNKNOWN for one no policy can name")
			fs.String("dmverity-roothash", "", "root hash `ALG:HEX` of the dm-verity device holding the file")
			fs.String("fsverity-digest", "", "fs-verity digest `ALG:HEX` of the file")
			fs.Bool("boot-verified", false, "the file comes from the initramfs")
			fs.Bool("dmverity-signature", false, "the dm-verity root hash has a valid signature")
			fs.Bool("fsverity-signature", false, "the file has a valid fs-verity builtin signature")
			fs.Bool("no-file", false, "there is no file (anonymous executable memory, kernel_load_data)")
			fs.StringSlice("unobservable", nil, "properties `PROP,...` this kernel cannot observe, false in both forms: dmverity_roothash, dmverity_signature, fsverity_digest, fsverity_signature")
		},
		run: func(fs *pflag.FlagSet, args []string) int {
			req, err := evalRequestFromFlags(fs, args)
			if err != nil {
				fmt.Fprintf(stderr, "bpfipe policy eval: %v\n", err)
				return exitUsage
			}
			return evalPolicy(stdout, stderr, req)
		},
	})
}

type evalRequest struct {
	policyFile string
	op         policy.Op
	subject    policy.Subject
	obs        policy.Observability
}

func evalRequestFromFlags(fs *pflag.FlagSet, args []string) (evalRequest, error) {
	var req evalRequest
	if len(args) > 0 {
		return req, fmt.Errorf("unexpected arguments %q: the policy is given with --policy", args)
	}
	req.policyFile, _ = fs.GetString("policy")
	if req.policyFile == "" {
		return req, errors.New("--policy FILE is required")
	}
	opName, _ := fs.GetString("op")
	op, ok := evalOpByName(opName)
	if !ok {
		return req, fmt.Errorf("unknown --op %q: IPE's names are %s", opName, strings.Join(evalOpNames(), ", "))
	}
	req.op = op

	noFile, _ := fs.GetBool("no-file")
	req.subject.HasFile = !noFile
	if noFile {
		for _, name := range []string{"dmverity-roothash", "fsverity-digest", "boot-verified", "dmverity-signature", "fsverity-signature"} {
			if fs.Changed(name) {
				return req, fmt.Errorf("--no-file describes no file, so --%s cannot be given with it", name)
			}
		}
	}
	req.subject.BootVerified, _ = fs.GetBool("boot-verified")
	req.subject.DMVeritySigned, _ = fs.GetBool("dmverity-signature")
	req.subject.FSVeritySigned, _ = fs.GetBool("fsverity-signature")
	for _, digest := range []struct {
		flag string
		dst  **policy.Digest
	}{
		{"dmverity-roothash", &req.subject.DMVerityRootHash},
		{"fsverity-digest", &req.subject.FSVerityDigest},
	} {
		if !fs.Changed(digest.flag) {
			continue
		}
		value, _ := fs.GetString(digest.flag)
		d, err := policy.ParseDigest(value)
		if err != nil {
			return req, fmt.Errorf("parse --%s: %w", digest.flag, err)
		}
		*digest.dst = &d
	}

	req.obs = policy.AllObservable
	unobservable, _ := fs.GetStringSlice("unobservable")
	for _, prop := range unobservable {
		switch prop {
		case "dmverity_roothash":
			req.obs.DMVerityRootHash = false
		case "dmverity_signature":
			req.obs.DMVeritySignature = false
		case "fsverity_digest":
			req.obs.FSVerityDigest = false
		case "fsverity_signature":
			req.obs.FSVeritySignature = false
		case "boot_verified":
			return req, errors.New("--unobservable boot_verified: IPE always observes boot_verified")
		default:
			return req, fmt.Errorf("--unobservable %q: want dmverity_roothash, dmverity_signature, fsverity_digest or fsverity_signature", prop)
		}
	}
	return req, nil
}

func evalOpByName(name string) (policy.Op, bool) {
	for _, op := range append(policy.Ops(), policy.OpInvalid) {
		if op.String() == name {
			return op, true
		}
	}
	return 0, false
}

func evalOpNames() []string {
	var names []string
	for _, op := range append(policy.Ops(), policy.OpInvalid) {
		names = append(names, op.String())
	}
	return names
}

// evalPolicy prints the decision as `action=X rule="…"`, the rule text being
// what IPE's audit record would show, followed by line=N when a rule (not a
// DEFAULT) decided, so duplicate rules can be told apart.
func evalPolicy(stdout, stderr io.Writer, req evalRequest) int {
	text, err := os.ReadFile(req.policyFile)
	if err != nil {
		fmt.Fprintf(stderr, "bpfipe policy eval: read policy: %v\n", err)
		return exitFailure
	}
	p, err := policy.Parse(req.policyFile, text)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	d := policy.Evaluate(p, req.op, req.subject, req.obs)
	fmt.Fprintf(stdout, "action=%s rule=\"%s\"", d.Action, d.RuleString())
	if d.Scope == policy.ScopeRule {
		fmt.Fprintf(stdout, " line=%d", d.Rule.Line)
	}
	fmt.Fprintln(stdout)
	return exitOK
}
