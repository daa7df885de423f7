package kernelipe

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fakeIPE lays out a directory shaped like IPE's securityfs tree. Regular
// files cannot refuse writes the way the kernel does, so these tests cover
// reading, naming and routing; the kernel's answers are tested in the VM.
func fakeIPE(t *testing.T) FS {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"enforce":                 "1",
		"success_audit":           "0",
		"new_policy":              "",
		"policies/boot/name":      "boot",
		"policies/boot/version":   "0.0.0",
		"policies/boot/active":    "0",
		"policies/signed/name":    "signed",
		"policies/signed/version": "1.2.3",
		"policies/signed/active":  "1",
		"policies/signed/pkcs7":   "not really a message",
		"policies/signed/update":  "",
		"policies/signed/delete":  "",
		"policies/signed/policy":  "policy_name=signed policy_version=1.2.3\nDEFAULT action=ALLOW\n",
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return FS{Dir: dir}
}

func TestStatus(t *testing.T) {
	fs := fakeIPE(t)
	st, err := fs.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enforce || st.SuccessAudit {
		t.Errorf("enforce %v success_audit %v, want true false", st.Enforce, st.SuccessAudit)
	}
	if st.Active == nil || st.Active.Name != "signed" || st.Active.Version != "1.2.3" {
		t.Fatalf("active = %+v, want signed 1.2.3", st.Active)
	}
	if st.Active.Digest != Digest([]byte("not really a message")) || !st.Active.Signed {
		t.Errorf("active digest %s signed %v", st.Active.Digest, st.Active.Signed)
	}
	if len(st.Policies) != 2 {
		t.Fatalf("%d policies, want 2", len(st.Policies))
	}
	for _, p := range st.Policies {
		if p.Name == "boot" {
			// IPE's audit records give the boot policy the digest of no
			// bytes (ipe-reference.md §4.5).
			if p.Signed || p.Active || p.Digest != "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855" {
				t.Errorf("boot policy = %+v", p)
			}
		}
	}
}

func TestWritesAreWhole(t *testing.T) {
	fs := fakeIPE(t)
	s := rsaSigner(t)
	blob, err := Sign([]byte(testPolicy), s.cert, s.key)
	if err != nil {
		t.Fatal(err)
	}
	// No directory appears in the fake tree, so the name comes from the
	// signed header.
	name, err := fs.NewPolicy(blob)
	if err != nil {
		t.Fatal(err)
	}
	if name != "sign_test" {
		t.Errorf("NewPolicy named the policy %q, want sign_test", name)
	}
	written, err := os.ReadFile(filepath.Join(fs.Dir, "new_policy"))
	if err != nil {
		t.Fatal(err)
	}
	if string(written) != string(blob) {
		t.Errorf("new_policy holds %d bytes, want the %d-byte message", len(written), len(blob))
	}
	if err := fs.Update("signed", blob); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(fs.Dir, "policies/signed/update")); string(got) != string(blob) {
		t.Error("update did not receive the message")
	}
	if err := fs.SetEnforce(false); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(fs.Dir, "enforce")); string(got) != "0" {
		t.Errorf("enforce holds %q after SetEnforce(false)", got)
	}
}

func TestErrors(t *testing.T) {
	fs := fakeIPE(t)
	err := fs.Activate("absent")
	var kerr *Error
	if !errors.As(err, &kerr) || kerr.Errno != syscall.ENOENT || kerr.Step != StepActivate || kerr.Policy != "absent" {
		t.Fatalf("Activate(absent) = %v, want an ENOENT *Error", err)
	}
	if !errors.Is(err, syscall.ENOENT) || !kerr.Opening || !strings.Contains(err.Error(), `activate policy "absent": open `) || !strings.Contains(err.Error(), "ENOENT: no such policy") {
		t.Errorf("error %q", err)
	}
	for _, name := range []string{"../boot", "..", ""} {
		if err := fs.Delete(name); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("Delete(%q) = %v, want ENOENT without leaving policies/", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(fs.Dir, "policies/boot/name")); err != nil {
		t.Errorf("a traversing name touched another policy: %v", err)
	}

	missing := FS{Dir: filepath.Join(t.TempDir(), "ipe")}
	if _, err := missing.Status(); !errors.Is(err, ErrNotAvailable) {
		t.Errorf("Status without IPE = %v, want ErrNotAvailable", err)
	}
	if err := missing.SetEnforce(true); !errors.Is(err, ErrNotAvailable) {
		t.Errorf("SetEnforce without IPE = %v, want ErrNotAvailable", err)
	}
}

func TestMeaning(t *testing.T) {
	tests := []struct {
		step  Step
		errno syscall.Errno
		want  string
	}{
		{StepNewPolicy, syscall.ENOKEY, "not trusted"},
		{StepNewPolicy, syscall.EKEYREJECTED, "does not verify"},
		{StepNewPolicy, syscall.EBADMSG, "malformed or unsigned"},
		{StepUpdate, syscall.ESTALE, "not newer"},
		{StepNewPolicy, syscall.EEXIST, "already loaded"},
		{StepActivate, syscall.EINVAL, "older than the active"},
		{StepUpdate, syscall.EINVAL, "different name"},
		{StepNewPolicy, syscall.EPERM, "CAP_MAC_ADMIN"},
		{StepDelete, syscall.EPERM, "is active"},
		{StepActivate, syscall.ENOENT, "deleted"},
		{StepNewPolicy, syscall.EACCES, "securityfs directory"},
		{StepNewPolicy, syscall.ENAMETOOLONG, "255 bytes"},
	}
	for _, tt := range tests {
		got := (&Error{Step: tt.step, Errno: tt.errno}).Error()
		if !strings.Contains(got, tt.want) || !strings.Contains(got, ErrnoName(tt.errno)) {
			t.Errorf("%v %v: %q, want it to name %s and say %q", tt.step, tt.errno, got, ErrnoName(tt.errno), tt.want)
		}
	}
	for _, errno := range []syscall.Errno{syscall.ENOKEY, syscall.EKEYREJECTED, syscall.EBADMSG, syscall.ESTALE, syscall.EEXIST, syscall.EINVAL, syscall.EPERM, syscall.ENOENT, syscall.ERANGE} {
		back, ok := ParseErrnoName(ErrnoName(errno))
		if !ok || back != errno {
			t.Errorf("ParseErrnoName(ErrnoName(%d)) = %d, %v", errno, back, ok)
		}
	}
}

func TestHeaderName(t *testing.T) {
	tests := map[string]string{
		"policy_name=a policy_version=0.0.1\n":                    "a",
		"# comment\n\n   policy_name=b\tpolicy_version=0.0.1\r\n": "b",
		"policy_name=a#b policy_version=0.0.1\n":                  "a",
		"\xa0\n policy_name=test\xff\xef policy_version=0.0.1":    "test\xff\xef",
		"policy_name=c\x00policy_name=d policy_version=0.0.1\n":   "c",
		"policy_version=0.0.1 policy_name=x\n":                    "",
		"policy_name= policy_version=0.0.1\n":                     "",
		"":                                                        "",
		"# only comments\n":                                       "",
	}
	for text, want := range tests {
		got, ok := HeaderName([]byte(text))
		if got != want || ok != (want != "") {
			t.Errorf("HeaderName(%q) = %q, %v; want %q", text, got, ok, want)
		}
	}
}
