package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDispatchUsageErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"boot"}, `unknown command "boot"`},
		{"run without a command", []string{"run", "--kernel", "debian-6.1"}, "no command given"},
		{"run without a kernel", []string{"run", "--", "true"}, "give --kernel NAME"},
		{"modules without an image", []string{"run", "--kernel", "debian-6.1", "--modules", "/m", "--", "true"}, "--modules goes with --kernel-image"},
		{"bad add", []string{"run", "--kernel", "debian-6.1", "--add", "nocolon", "--", "true"}, "want SRC:DST"},
		{"verity without hash image", []string{"run", "--kernel", "debian-6.1", "--verity", "v=data.img", "--", "true"}, "NAME=DATA:HASH"},
		{"verity with a bad name", []string{"run", "--kernel", "debian-6.1", "--verity", "a/b=d:h", "--", "true"}, `device name "a/b"`},
		{"bad env", []string{"run", "--kernel", "debian-6.1", "--env", "NOVALUE", "--", "true"}, "want KEY=VALUE"},
		{"bad flag", []string{"run", "--no-such-flag"}, "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := dispatch(context.Background(), tt.args, &stdout, &stderr)
			if status != 125 {
				t.Errorf("status %d, want 125 (runner error)", status)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.wantErr)
			}
		})
	}
}

func TestRunHelpDocumentsExitStatuses(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if status := dispatch(context.Background(), []string{"run", "--help"}, &stdout, &stderr); status != 0 {
		t.Fatalf("run --help: status %d, stderr %q", status, stderr.String())
	}
	for _, want := range []string{"--kernel", "--uefi-cert", "--disk", "--verity", "125", "124", "123", "122"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("run --help does not mention %q:\n%s", want, stdout.String())
		}
	}
}
