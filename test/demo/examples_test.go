package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// examplePolicies parses every examples/*.pol, failing the test on any
// that in-tree IPE would reject or the kernel tables cannot hold.
func examplePolicies(t *testing.T) map[string]*policy.Policy {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.pol"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples/*.pol found")
	}
	parsed := map[string]*policy.Policy{}
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p, err := policy.Parse(file, text)
		if err != nil {
			t.Errorf("%s: rejected: %v", file, err)
			continue
		}
		tables, err := maps.Compile(p, 1)
		if err != nil {
			t.Errorf("%s: compile: %v", file, err)
			continue
		}
		// A rule that can never match in an example teaches the wrong thing.
		for _, dead := range tables.Dead {
			t.Errorf("%s:%d: rule can never match: %s", file, dead.Line, dead.Reason)
		}
		parsed[filepath.Base(file)] = p
	}
	return parsed
}

func TestExamplesParse(t *testing.T) {
	want := []string{"demo.pol", "boot-only.pol", "verity-allowlist.pol", "permissive-audit.pol", "kernel-reads.pol"}
	parsed := examplePolicies(t)
	for _, name := range want {
		if parsed[name] == nil {
			t.Errorf("examples/%s missing or rejected", name)
		}
	}
}

func digest(t *testing.T, s string) *policy.Digest {
	t.Helper()
	d, err := policy.ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestExamplesDecideAsTheirCommentsSay holds each example to what its
// comments promise, with the reference evaluator.
func TestExamplesDecideAsTheirCommentsSay(t *testing.T) {
	parsed := examplePolicies(t)
	const (
		revoked  = "sha256:6f1ed002ab5595859014ebf0951522d9a5a8b5e2ed04f9dab7b1b4fa2b0e6b8a"
		base     = "sha256:b2a5c31f8e9e3a1b0c7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293"
		firmware = "sha256:3c9a1e5b7d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c"
		unknown  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
		zeros    = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	)
	boot := policy.Subject{HasFile: true, BootVerified: true}
	tmpFile := policy.Subject{HasFile: true}
	noFile := policy.Subject{}
	onImage := func(root string, signed bool) policy.Subject {
		return policy.Subject{HasFile: true, DMVerityRootHash: digest(t, root), DMVeritySigned: signed}
	}
	for _, tt := range []struct {
		file string
		op   policy.Op
		subj policy.Subject
		want policy.Action
	}{
		{"demo.pol", policy.OpExecute, boot, policy.Allow},
		{"demo.pol", policy.OpExecute, onImage(zeros, false), policy.Allow},
		{"demo.pol", policy.OpExecute, onImage(unknown, false), policy.Deny},
		{"demo.pol", policy.OpExecute, tmpFile, policy.Deny},
		{"demo.pol", policy.OpKmodule, tmpFile, policy.Allow},

		{"boot-only.pol", policy.OpExecute, boot, policy.Allow},
		{"boot-only.pol", policy.OpExecute, tmpFile, policy.Deny},
		{"boot-only.pol", policy.OpExecute, noFile, policy.Deny},
		{"boot-only.pol", policy.OpFirmware, tmpFile, policy.Allow},

		{"verity-allowlist.pol", policy.OpExecute, onImage(base, false), policy.Allow},
		{"verity-allowlist.pol", policy.OpExecute, onImage(unknown, true), policy.Allow},
		{"verity-allowlist.pol", policy.OpExecute, onImage(unknown, false), policy.Deny},
		// The revocation wins even for a signed image.
		{"verity-allowlist.pol", policy.OpExecute, onImage(revoked, true), policy.Deny},
		{"verity-allowlist.pol", policy.OpExecute, boot, policy.Allow},

		{"permissive-audit.pol", policy.OpExecute, boot, policy.Allow},
		{"permissive-audit.pol", policy.OpExecute, tmpFile, policy.Deny},
		{"permissive-audit.pol", policy.OpKmodule, onImage(unknown, true), policy.Allow},
		{"permissive-audit.pol", policy.OpKexecImage, boot, policy.Deny},

		{"kernel-reads.pol", policy.OpExecute, tmpFile, policy.Allow},
		{"kernel-reads.pol", policy.OpKmodule, boot, policy.Allow},
		{"kernel-reads.pol", policy.OpKmodule, onImage(unknown, true), policy.Allow},
		{"kernel-reads.pol", policy.OpKmodule, noFile, policy.Deny},
		{"kernel-reads.pol", policy.OpKmodule, tmpFile, policy.Deny},
		{"kernel-reads.pol", policy.OpFirmware, onImage(firmware, false), policy.Allow},
		{"kernel-reads.pol", policy.OpFirmware, boot, policy.Deny},
		{"kernel-reads.pol", policy.OpKexecImage, boot, policy.Deny},
		{"kernel-reads.pol", policy.OpKexecInitramfs, noFile, policy.Deny},
	} {
		p := parsed[tt.file]
		if p == nil {
			continue // examplePolicies reported it
		}
		if got := policy.Evaluate(p, tt.op, tt.subj, policy.AllObservable); got.Action != tt.want {
			t.Errorf("%s: %s of %+v = %s (%s), want %s", tt.file, tt.op, tt.subj, got.Action, got.RuleString(), tt.want)
		}
	}
}
