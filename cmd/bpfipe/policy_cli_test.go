package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the CLI in-process and returns what it printed.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var outBuf, errBuf bytes.Buffer
	code = dispatch(args, &outBuf, &errBuf)
	return outBuf.String(), errBuf.String(), code
}

// writePolicyFiles writes name→text into a fresh directory and returns the
// paths by name.
func writePolicyFiles(t *testing.T, files map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	paths := make(map[string]string, len(files))
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths[name] = path
	}
	return paths
}

const (
	validPolicyText = "policy_name=good policy_version=1.2.3\nDEFAULT action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\n"
	// The action on line 3 starts at byte 31.
	badActionText  = "policy_name=bad policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=PERMIT\n"
	badVersionText = "policy_name=v policy_version=1.70000.0\nDEFAULT action=ALLOW\n"
)

func TestPolicyCheckText(t *testing.T) {
	paths := writePolicyFiles(t, map[string]string{
		"good.pol":      validPolicyText,
		"bad.pol":       badActionText,
		"version.pol":   badVersionText,
		"ctrl-name.pol": "policy_name=a\x1b[2J policy_version=0.0.1\nDEFAULT action=ALLOW\n",
	})
	good, bad, version, ctrl := paths["good.pol"], paths["bad.pol"], paths["version.pol"], paths["ctrl-name.pol"]

	stdout, stderr, code := runCLI(t, "policy", "check", good)
	if code != exitOK || stdout != good+": valid (policy_name=good policy_version=1.2.3)\n" || stderr != "" {
		t.Errorf("valid file: exit %d stdout %q stderr %q", code, stdout, stderr)
	}

	stdout, stderr, code = runCLI(t, "policy", "check", good, bad, version)
	want := good + ": valid (policy_name=good policy_version=1.2.3)\n" +
		bad + `:3:31: "action=PERMIT": action must be ALLOW or DENY [EBADMSG]` + "\n" +
		version + `:1:15: "policy_version=1.70000.0": version part "70000" is greater than 65535 [ERANGE]` + "\n"
	if code != exitFailure || stdout != want || stderr != "" {
		t.Errorf("mixed files: exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}

	stdout, _, code = runCLI(t, "policy", "check", ctrl)
	if code != exitOK || stdout != ctrl+`: valid (policy_name="a\x1b[2J" policy_version=0.0.1)`+"\n" {
		t.Errorf("control bytes in the name must be quoted: exit %d stdout %q", code, stdout)
	}
}

func TestPolicyCheckUnreadable(t *testing.T) {
	good := writePolicyFiles(t, map[string]string{"good.pol": validPolicyText})["good.pol"]
	missing := filepath.Join(t.TempDir(), "missing.pol")
	stdout, stderr, code := runCLI(t, "policy", "check", missing, good)
	if code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr, missing) || !strings.Contains(stderr, "no such file or directory") {
		t.Errorf("stderr %q does not name the file and the reason", stderr)
	}
	if stdout != good+": valid (policy_name=good policy_version=1.2.3)\n" {
		t.Errorf("the readable file after it was not checked: stdout %q", stdout)
	}
}

func TestPolicyCheckUsage(t *testing.T) {
	_, stderr, code := runCLI(t, "policy", "check")
	if code != exitUsage || !strings.Contains(stderr, "no policy files") {
		t.Errorf("no files: exit %d stderr %q", code, stderr)
	}
	_, _, code = runCLI(t, "policy", "check", "--json")
	if code != exitUsage {
		t.Errorf("--json and no files: exit %d, want %d", code, exitUsage)
	}
	_, _, code = runCLI(t, "policy", "check", "--bogus", "x.pol")
	if code != exitUsage {
		t.Errorf("unknown flag: exit %d, want %d", code, exitUsage)
	}
}

func TestPolicyCheckJSON(t *testing.T) {
	paths := writePolicyFiles(t, map[string]string{"good.pol": validPolicyText, "bad.pol": badActionText, "empty.pol": ""})
	missing := filepath.Join(t.TempDir(), "missing.pol")
	files := []string{paths["good.pol"], paths["bad.pol"], paths["empty.pol"], missing}
	stdout, stderr, code := runCLI(t, append([]string{"policy", "check", "--json"}, files...)...)
	if code != exitFailure || stderr != "" {
		t.Errorf("exit %d stderr %q, want %d and nothing", code, stderr, exitFailure)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(files) {
		t.Fatalf("got %d lines, want one per file:\n%s", len(lines), stdout)
	}
	str := func(s string) *string { return &s }
	num := func(n int) *float64 { f := float64(n); return &f }
	type result struct {
		File          string   `json:"file"`
		Valid         bool     `json:"valid"`
		Errno         *string  `json:"errno"`
		Line          *float64 `json:"line"`
		Column        *float64 `json:"column"`
		Message       *string  `json:"message"`
		PolicyName    *string  `json:"policy_name"`
		PolicyVersion *string  `json:"policy_version"`
	}
	want := []result{
		{File: files[0], Valid: true, PolicyName: str("good"), PolicyVersion: str("1.2.3")},
		{File: files[1], Errno: str("EBADMSG"), Line: num(3), Column: num(31), Message: str("action must be ALLOW or DENY")},
		{File: files[2], Errno: str("EBADMSG"), Message: str("policy is empty")},
		{File: files[3], Errno: str("ENOENT"), Message: str("open " + missing + ": no such file or directory")},
	}
	for i, line := range lines {
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		for _, key := range []string{"file", "valid", "errno", "line", "column", "message", "policy_name", "policy_version"} {
			if _, ok := raw[key]; !ok {
				t.Errorf("line %d lacks key %q: %s", i, key, line)
			}
		}
		var got result
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatal(err)
		}
		if !sameResult(got, want[i]) {
			t.Errorf("line %d = %s\nwant %+v", i, line, want[i])
		}
	}
}

func sameResult[T any](a, b T) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

const evalPolicyText = `policy_name=eval policy_version=0.0.1
DEFAULT action=ALLOW
DEFAULT op=EXECUTE action=DENY
op=EXECUTE dmverity_roothash=sha256:BAAD action=DENY
op=EXECUTE dmverity_signature=TRUE action=ALLOW
op=EXECUTE boot_verified=TRUE action=ALLOW
op=EXECUTE dmverity_signature=FALSE fsverity_digest=sha512:0102 action=ALLOW
op=KMODULE fsverity_signature=TRUE action=DENY
`

func TestPolicyEval(t *testing.T) {
	pol := writePolicyFiles(t, map[string]string{"eval.pol": evalPolicyText})["eval.pol"]
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"op default", nil, `action=DENY rule="DEFAULT op=EXECUTE action=DENY"`},
		{"global default for another op", []string{"--op", "FIRMWARE"}, `action=ALLOW rule="DEFAULT action=ALLOW"`},
		{"unknown op takes the global default", []string{"--op", "UNKNOWN"}, `action=ALLOW rule="DEFAULT action=ALLOW"`},
		{"revoked root hash", []string{"--dmverity-roothash", "sha256:baad", "--dmverity-signature"},
			`action=DENY rule="op=EXECUTE dmverity_roothash="sha256":BAAD action=DENY" line=4`},
		{"signed volume", []string{"--dmverity-roothash", "sha256:0102", "--dmverity-signature"},
			`action=ALLOW rule="op=EXECUTE dmverity_signature=TRUE action=ALLOW" line=5`},
		{"boot verified", []string{"--boot-verified"}, `action=ALLOW rule="op=EXECUTE boot_verified=TRUE action=ALLOW" line=6`},
		{"fs-verity digest", []string{"--fsverity-digest", "sha512:0102"},
			`action=ALLOW rule="op=EXECUTE dmverity_signature=FALSE fsverity_digest="sha512":0102 action=ALLOW" line=7`},
		{"unobservable signature is false in both forms", []string{"--fsverity-digest", "sha512:0102", "--unobservable", "dmverity_signature"},
			`action=DENY rule="DEFAULT op=EXECUTE action=DENY"`},
		{"unobservable digest", []string{"--fsverity-digest", "sha512:0102", "--unobservable=fsverity_digest,fsverity_signature"},
			`action=DENY rule="DEFAULT op=EXECUTE action=DENY"`},
		{"no file", []string{"--no-file"}, `action=DENY rule="DEFAULT op=EXECUTE action=DENY"`},
		{"module signature", []string{"--op", "KMODULE", "--fsverity-signature"}, `action=DENY rule="op=KMODULE fsverity_signature=TRUE action=DENY" line=8`},
	}
	for _, tc := range tests {
		stdout, stderr, code := runCLI(t, append([]string{"policy", "eval", "--policy", pol}, tc.args...)...)
		if code != exitOK || stdout != tc.want+"\n" || stderr != "" {
			t.Errorf("%s: exit %d\nstdout %q\nwant   %q\nstderr %q", tc.name, code, stdout, tc.want+"\n", stderr)
		}
	}
}

func TestPolicyEvalErrors(t *testing.T) {
	paths := writePolicyFiles(t, map[string]string{"eval.pol": evalPolicyText, "bad.pol": badActionText})
	pol := paths["eval.pol"]
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no policy", []string{"policy", "eval"}, exitUsage, "--policy FILE is required"},
		{"op is case-sensitive", []string{"policy", "eval", "--policy", pol, "--op", "execute"}, exitUsage, `unknown --op "execute"`},
		{"bad digest", []string{"policy", "eval", "--policy", pol, "--dmverity-roothash", "sha256:abc"}, exitUsage, "odd number of hex digits [EINVAL]"},
		{"digest without alg", []string{"policy", "eval", "--policy", pol, "--fsverity-digest", "abcd"}, exitUsage, "[EBADMSG]"},
		{"no-file with a property", []string{"policy", "eval", "--policy", pol, "--no-file", "--boot-verified"}, exitUsage, "--boot-verified cannot be given"},
		{"boot_verified is always observable", []string{"policy", "eval", "--policy", pol, "--unobservable", "boot_verified"}, exitUsage, "always observes boot_verified"},
		{"unknown property", []string{"policy", "eval", "--policy", pol, "--unobservable", "magic"}, exitUsage, `--unobservable "magic"`},
		{"positional argument", []string{"policy", "eval", "--policy", pol, "extra"}, exitUsage, "unexpected arguments"},
		{"invalid policy", []string{"policy", "eval", "--policy", paths["bad.pol"]}, exitFailure, `:3:31: "action=PERMIT": action must be ALLOW or DENY [EBADMSG]`},
		{"missing policy", []string{"policy", "eval", "--policy", pol + ".missing"}, exitFailure, "no such file or directory"},
	}
	for _, tc := range tests {
		stdout, stderr, code := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.stderr) || stdout != "" {
			t.Errorf("%s: exit %d stdout %q stderr %q; want exit %d and stderr containing %q", tc.name, code, stdout, stderr, tc.code, tc.stderr)
		}
	}
}
