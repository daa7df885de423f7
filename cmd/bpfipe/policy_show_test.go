package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
)

func writePolicy(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.pol")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyShow(t *testing.T) {
	path := writePolicy(t, `policy_name=demo   policy_version=1.2.3
DEFAULT action=DENY
# rules follow
op=EXECUTE dmverity_roothash=sha256:AA01 action=ALLOW
op=EXECUTE  boot_verified=TRUE boot_verified=FALSE action=ALLOW
op=KMODULE boot_verified=TRUE action=ALLOW   # modules from the initramfs
op=EXECUTE dmverity_roothash=sha256:aa01 fsverity_digest=sha256:0101 action=DENY
`)
	var stdout, stderr bytes.Buffer
	if code := showPolicy(&stdout, &stderr, path); code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q", stderr.String())
	}
	out := stdout.String()
	// Canonical form: single spaces, lower-case hex, no comments.
	wantPolicy := `policy_name=demo policy_version=1.2.3
DEFAULT action=DENY
op=EXECUTE dmverity_roothash=sha256:aa01 action=ALLOW
op=EXECUTE boot_verified=TRUE boot_verified=FALSE action=ALLOW
op=KMODULE boot_verified=TRUE action=ALLOW
op=EXECUTE dmverity_roothash=sha256:aa01 fsverity_digest=sha256:0101 action=DENY
`
	if !strings.HasPrefix(out, wantPolicy) {
		t.Errorf("output does not start with the canonical policy:\n%s", out)
	}
	for _, line := range []string{
		"#   rules: 4 (EXECUTE 3, KMODULE 1)",
		"#   dead rules: 1",
		// A BASE row per op, DV(EXECUTE, aa01), DVFV(EXECUTE, aa01, 0101).
		"#   rows: 10 (BASE 8, DV 1, FV 0, DVFV 1)",
		// The table: 8 BASE rows, a seed row for the one bucket of two
		// digest rows, and 2*1.25+1 slots; 344 bytes a row.
		"#   kernel table: 12 rows, 4128 bytes (344 per row)",
		"#   " + path + ":5: rule 1 can never match: boot_verified is both TRUE and FALSE",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}

	// The summary is comments, so the whole output is the same policy.
	again, err := policy.Parse("output", stdout.Bytes())
	if err != nil {
		t.Fatalf("the output does not parse: %v", err)
	}
	orig, _ := policy.Parse(path, []byte(wantPolicy))
	if !again.Equal(orig) {
		t.Errorf("the output parses to a different policy")
	}
}

func TestPolicyShowParseError(t *testing.T) {
	path := writePolicy(t, "policy_name=x policy_version=0.0.0\nop=EXECUTE action=MAYBE\n")
	var stdout, stderr bytes.Buffer
	if code := showPolicy(&stdout, &stderr, path); code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
	msg := stderr.String()
	if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, path+":2:") || !strings.Contains(msg, "[EBADMSG]") {
		t.Errorf("stderr %q, want one line %s:2:...[EBADMSG]", msg, path)
	}
}

func TestPolicyShowMissingFile(t *testing.T) {
	var stdout, stderr bytes.Buffer
	missing := filepath.Join(t.TempDir(), "absent.pol")
	if code := showPolicy(&stdout, &stderr, missing); code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr.String(), "read policy: ") {
		t.Errorf("stderr %q does not say the read failed", stderr.String())
	}
}

func TestPolicyShowUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"policy", "show"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	if got := stderr.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "want one FILE") {
		t.Errorf("stderr %q is not one line saying what is wrong", got)
	}
}
