// Package kernelipe_test checks package kernelipe against the kernel's own
// IPE inside a bpfipe-vm guest booting Debian's 6.12 kernel through OVMF,
// with the signing certificate enrolled in the UEFI db (so in the .platform
// keyring IPE trusts). Outside the guest the tests skip. The host side is
// test/compare/kernelipe_vm_test.go.
//
// Inputs (environment):
//
//	BPFIPE_GUEST        set by the guest
//	BPFIPE_KIPE_CERT    PEM certificate enrolled in the UEFI db
//	BPFIPE_KIPE_KEY     its PEM private key
package kernelipe_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/internal/testcert"
	"github.com/bpfipe/bpfipe/kernelipe"
)

type signer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func trusted(t *testing.T) signer {
	t.Helper()
	if os.Getenv("BPFIPE_GUEST") == "" {
		t.Skip("needs the bpfipe-vm guest with in-tree IPE: BPFIPE_GUEST is unset (run through test/compare/kernelipe_vm_test.go)")
	}
	cert, key, err := kernelipe.ReadKeyPair(os.Getenv("BPFIPE_KIPE_CERT"), os.Getenv("BPFIPE_KIPE_KEY"))
	if err != nil {
		t.Fatalf("read the enrolled key pair: %v", err)
	}
	if err := (kernelipe.FS{}).Available(); err != nil {
		t.Fatal(err)
	}
	return signer{cert, key}
}

func (s signer) sign(t *testing.T, text string) []byte {
	t.Helper()
	blob, err := kernelipe.Sign([]byte(text), s.cert, s.key)
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

// IPE never lets the active version go down until reboot, and every test
// shares one boot: versions come from one rising counter.
var (
	versionMu sync.Mutex
	minor     = 0
)

func nextVersion() string {
	versionMu.Lock()
	defer versionMu.Unlock()
	minor++
	return fmt.Sprintf("10.%d.0", minor)
}

func policyText(name, version string, rules ...string) string {
	return fmt.Sprintf("policy_name=%s policy_version=%s\nDEFAULT action=ALLOW\n%s", name, version, strings.Join(rules, "\n")+"\n")
}

// allowAll leaves IPE allowing everything, for the tests that follow.
func allowAll(t *testing.T, s signer) {
	t.Helper()
	name := fmt.Sprintf("allow_all_%d", time.Now().UnixNano())
	if _, err := kernelipe.Load(s.sign(t, policyText(name, nextVersion()))); err != nil {
		t.Fatalf("activate an allow-all policy: %v", err)
	}
	if err := kernelipe.SetEnforce(true); err != nil {
		t.Fatal(err)
	}
}

func wantErrno(t *testing.T, what string, err error, errno syscall.Errno, step kernelipe.Step) {
	t.Helper()
	var kerr *kernelipe.Error
	if !errors.As(err, &kerr) || kerr.Errno != errno || kerr.Step != step {
		t.Errorf("%s: %v, want %s from %s", what, err, kernelipe.ErrnoName(errno), step)
		return
	}
	if !strings.Contains(err.Error(), kernelipe.Meaning(step, errno)) {
		t.Errorf("%s: message %q does not say what %s means", what, err, kernelipe.ErrnoName(errno))
	}
}

func TestLoadActivateStatus(t *testing.T) {
	s := trusted(t)
	version := nextVersion()
	blob := s.sign(t, policyText("kipe_status", version))
	name, err := kernelipe.Load(blob)
	if err != nil {
		t.Fatal(err)
	}
	defer allowAll(t, s)
	if name != "kipe_status" {
		t.Errorf("Load named the policy %q", name)
	}
	st, err := kernelipe.CurrentStatus()
	if err != nil {
		t.Fatal(err)
	}
	if st.Active == nil || st.Active.Name != "kipe_status" || st.Active.Version != version {
		t.Fatalf("active = %+v, want kipe_status %s", st.Active, version)
	}
	if !st.Active.Signed || st.Active.Digest != kernelipe.Digest(blob) {
		t.Errorf("active digest %s signed %v, want %s of the message loaded", st.Active.Digest, st.Active.Signed, kernelipe.Digest(blob))
	}
	if text, err := os.ReadFile(filepath.Join(kernelipe.DefaultDir, "policies/kipe_status/policy")); err != nil || string(text) != policyText("kipe_status", version) {
		t.Errorf("the kernel holds policy text %q, %v", text, err)
	}
}

func TestRefusals(t *testing.T) {
	s := trusted(t)
	fs := kernelipe.FS{}
	v1, v2 := nextVersion(), nextVersion()
	current := s.sign(t, policyText("kipe_refusals", v2))
	if _, err := fs.Load(current); err != nil {
		t.Fatal(err)
	}
	defer allowAll(t, s)

	_, err := fs.NewPolicy(current)
	wantErrno(t, "loading a name twice", err, syscall.EEXIST, kernelipe.StepNewPolicy)

	err = fs.Update("kipe_refusals", s.sign(t, policyText("kipe_refusals", v1)))
	wantErrno(t, "update to an older version", err, syscall.ESTALE, kernelipe.StepUpdate)
	err = fs.Update("kipe_refusals", s.sign(t, policyText("kipe_refusals", v2)))
	wantErrno(t, "update to the same version", err, syscall.ESTALE, kernelipe.StepUpdate)
	err = fs.Update("kipe_refusals", s.sign(t, policyText("kipe_other_name", nextVersion())))
	wantErrno(t, "update with another name", err, syscall.EINVAL, kernelipe.StepUpdate)

	err = fs.Delete("kipe_refusals")
	wantErrno(t, "deleting the active policy", err, syscall.EPERM, kernelipe.StepDelete)

	older, err := fs.NewPolicy(s.sign(t, policyText("kipe_older", v1)))
	if err != nil {
		t.Fatal(err)
	}
	err = fs.Activate(older)
	wantErrno(t, "activating an older version", err, syscall.EINVAL, kernelipe.StepActivate)
	if err := fs.Delete(older); err != nil {
		t.Errorf("deleting an inactive policy: %v", err)
	}

	_, err = fs.NewPolicy([]byte(policyText("kipe_unsigned", nextVersion())))
	wantErrno(t, "an unsigned policy", err, syscall.EBADMSG, kernelipe.StepNewPolicy)

	stranger := untrustedSigner(t)
	_, err = fs.NewPolicy(stranger.sign(t, policyText("kipe_stranger", nextVersion())))
	wantErrno(t, "a policy signed by a certificate the kernel does not know", err, syscall.ENOKEY, kernelipe.StepNewPolicy)

	tampered := s.sign(t, policyText("kipe_tampered", nextVersion()))
	i := strings.Index(string(tampered), "ALLOW")
	tampered[i] = 'a'
	_, err = fs.NewPolicy(tampered)
	wantErrno(t, "a policy altered after signing", err, syscall.EKEYREJECTED, kernelipe.StepNewPolicy)

	for text, errno := range map[string]syscall.Errno{
		"policy_name=kipe_syntax policy_version=0.0.1\nop=EXECUTE action=ALLOW\n":                                            syscall.EBADMSG,
		"policy_name=kipe_range policy_version=70000.0.0\nDEFAULT action=ALLOW\n":                                            syscall.ERANGE,
		"policy_name=kipe_hex policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha256:q action=DENY\n": syscall.EINVAL,
	} {
		_, err = fs.NewPolicy(s.sign(t, text))
		wantErrno(t, fmt.Sprintf("policy %q", text), err, errno, kernelipe.StepNewPolicy)
	}
}

func untrustedSigner(t *testing.T) signer {
	t.Helper()
	p := testcert.New(t, "not enrolled", nil)
	return signer{p.Cert, p.Key}
}

// TestAuditRecords reads IPE's records of a load, an activation, a mode
// change and a denial from the audit socket, and checks them against what
// was done.
func TestAuditRecords(t *testing.T) {
	s := trusted(t)
	audit, err := kernelipe.OpenAudit()
	if err != nil {
		t.Fatal(err)
	}
	defer audit.Close()
	if _, err := kernelipe.CurrentStatus(); err != nil {
		t.Fatal(err)
	}
	version := nextVersion()
	blob := s.sign(t, policyText("kipe_audit", version, "DEFAULT op=EXECUTE action=DENY", "op=EXECUTE boot_verified=TRUE action=ALLOW"))
	if _, err := kernelipe.Load(blob); err != nil {
		t.Fatal(err)
	}
	defer allowAll(t, s)
	if err := kernelipe.SetEnforce(false); err != nil {
		t.Fatal(err)
	}
	// A copy of busybox on tmpfs is not boot_verified: permissive IPE lets
	// it run and records the denial.
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bb, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bb, "true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run %s under permissive IPE: %v", bb, err)
	}
	if err := kernelipe.SetEnforce(true); err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark("kipe-audit-done"); err != nil {
		t.Fatal(err)
	}
	var loads, changes, statuses, denials int
	audit.SetDeadline(time.Now().Add(20 * time.Second))
	for {
		rec, err := audit.Read()
		if err != nil {
			t.Fatalf("read audit records: %v", err)
		}
		if kernelipe.IsMark(rec, "kipe-audit-done") {
			break
		}
		switch {
		case rec.PolicyLoad != nil && rec.PolicyLoad.Policy != nil && rec.PolicyLoad.Policy.Name == "kipe_audit":
			loads++
			if p := rec.PolicyLoad.Policy; p.Version != version || p.Digest != kernelipe.Digest(blob) || rec.PolicyLoad.Res != 1 {
				t.Errorf("IPE_POLICY_LOAD %+v %+v, want version %s digest %s", *rec.PolicyLoad, *p, version, kernelipe.Digest(blob))
			}
		case rec.ConfigChange != nil && rec.ConfigChange.New.Name == "kipe_audit":
			changes++
			if rec.ConfigChange.New.Digest != kernelipe.Digest(blob) || rec.ConfigChange.Old == nil {
				t.Errorf("IPE_CONFIG_CHANGE %+v", *rec.ConfigChange)
			}
		case rec.MACStatus != nil && rec.MACStatus.LSM == "ipe":
			statuses++
		case rec.Access != nil && rec.Access.Path == bb:
			denials++
			a := rec.Access
			if a.Enforcing || a.Action != "DENY" || a.Rule != "DEFAULT op=EXECUTE action=DENY" || a.Dev != "tmpfs" || !a.HasFile {
				t.Errorf("IPE_ACCESS %s", a)
			}
		}
	}
	t.Logf("records of the test: %d loads, %d activations, %d mode changes, %d denials", loads, changes, statuses, denials)
	if loads != 1 || changes != 1 {
		t.Errorf("%d IPE_POLICY_LOAD and %d IPE_CONFIG_CHANGE records for the load, want 1 and 1", loads, changes)
	}
	if statuses != 2 {
		t.Errorf("%d MAC_STATUS records for enforce off and on, want 2", statuses)
	}
	// BPRM_CHECK and the mapping of the program's text.
	if denials < 2 {
		t.Errorf("%d IPE_ACCESS records for the tmpfs program, want at least 2 (BPRM_CHECK, MMAP)", denials)
	}
	if audit.Overruns != 0 {
		t.Errorf("the audit socket overflowed %d times", audit.Overruns)
	}
}
