package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/bpfipe/bpfipe/internal/testcert"
	"github.com/bpfipe/bpfipe/kernelipe"
)

func TestKernelIPESign(t *testing.T) {
	certPath, keyPath := testcert.New(t, "cli test", nil).WritePEM(t, t.TempDir())
	paths := writePolicyFiles(t, map[string]string{"p.pol": validPolicyText})
	out := filepath.Join(t.TempDir(), "p.p7s")
	_, stderr, code := runCLI(t, "kernel-ipe", "sign", "--key", keyPath, "--cert", certPath, "-o", out, paths["p.pol"])
	if code != exitOK {
		t.Fatalf("sign: exit %d: %s", code, stderr)
	}
	blob, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(blob)
	if err != nil {
		t.Fatalf("the signed policy does not parse: %v", err)
	}
	if string(p7.Content) != validPolicyText || p7.Verify() != nil {
		t.Errorf("signed content %q, verify %v", p7.Content, p7.Verify())
	}
	// RSA PKCS#1 v1.5 signs deterministically: the command must produce
	// exactly what the package does.
	cert, key, err := kernelipe.ReadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := kernelipe.Sign([]byte(validPolicyText), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(blob, want) {
		t.Error("kernel-ipe sign and kernelipe.Sign disagree")
	}

	// Signing a signed file again is refused rather than nesting.
	_, stderr, code = runCLI(t, "kernel-ipe", "sign", "--key", keyPath, "--cert", certPath, out)
	if code != exitUsage || !strings.Contains(stderr, "signed already") {
		t.Errorf("re-signing: exit %d stderr %q", code, stderr)
	}
}

func TestKernelIPEUsage(t *testing.T) {
	certPath, keyPath := testcert.New(t, "cli test", nil).WritePEM(t, t.TempDir())
	paths := writePolicyFiles(t, map[string]string{"p.pol": validPolicyText})
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"kernel-ipe", "load", paths["p.pol"]}, "is not signed; give --key and --cert"},
		{[]string{"kernel-ipe", "load", "--key", keyPath, paths["p.pol"]}, "--key and --cert go together"},
		{[]string{"kernel-ipe", "update", "--key", certPath, "--cert", certPath, paths["p.pol"]}, "parse key"},
		{[]string{"kernel-ipe", "load"}, "want exactly one policy file"},
		{[]string{"kernel-ipe", "enforce", "maybe"}, "neither on nor off"},
		{[]string{"kernel-ipe", "delete"}, "want one policy name"},
	}
	for _, tt := range tests {
		_, stderr, code := runCLI(t, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d stderr %q, want usage error saying %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
}

func TestKernelIPEUnavailable(t *testing.T) {
	if _, err := os.Stat(kernelipe.DefaultDir); err == nil {
		t.Skip("this kernel runs in-tree IPE; the test checks the message of kernels without it")
	}
	_, stderr, code := runCLI(t, "kernel-ipe", "status")
	if code != exitUnsupported || !strings.Contains(stderr, "in-tree IPE is not available") {
		t.Errorf("status without IPE: exit %d stderr %q", code, stderr)
	}
}
