package kread

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
	"golang.org/x/sys/unix"
)

// imaPolicyFile takes IMA policy rules, or the absolute path of a file of
// rules, which IMA reads with kernel_read_file (READING_POLICY).
const imaPolicyFile = "/sys/kernel/security/ima/policy"

// writeIMAPolicy writes path to IMA's policy file in one write(2), as IMA
// wants, and returns that write's error.
func writeIMAPolicy(t *testing.T, path string) error {
	t.Helper()
	fd, err := unix.Open(imaPolicyFile, unix.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", imaPolicyFile, err)
	}
	n, err := unix.Write(fd, []byte(path))
	if closeErr := unix.Close(fd); closeErr != nil {
		t.Errorf("close %s: %v", imaPolicyFile, closeErr)
	}
	if err == nil && n != len(path) {
		t.Errorf("write to %s took %d of %d bytes", imaPolicyFile, n, len(path))
	}
	return err
}

// TestIMAPolicyRead: IMA reading a policy file is op=POLICY, decided by
// the file's properties.
func TestIMAPolicyRead(t *testing.T) {
	requireGuest(t)
	config := kernelConfig(t)
	if config["CONFIG_IMA"] != "y" {
		t.Skipf("kernel %s lacks CONFIG_IMA: nothing reads policy files (READING_POLICY)", release(t))
	}
	if _, err := os.Stat(imaPolicyFile); err != nil {
		t.Fatalf("IMA is built in but %v: IMA is off, or a policy was loaded earlier in this boot", err)
	}
	// One rule that changes nothing a test does: do not measure procfs.
	trusted, err := filepath.Abs("testdata/ima-policy")
	if err != nil {
		t.Fatal(err)
	}
	const (
		ruleBootAllow = "op=POLICY boot_verified=TRUE action=ALLOW"
		ruleOpDeny    = "DEFAULT op=POLICY action=DENY"
	)
	load(t, policyText(ruleBootAllow, ruleOpDeny, "DEFAULT action=ALLOW"), "--success-audit")

	t.Run("tmpfs policy file denied", func(t *testing.T) {
		copied := copyToTmp(t, trusted)
		expectErrno(t, "write "+copied+" to IMA's policy file", writeIMAPolicy(t, copied), unix.EACCES)
		if _, err := os.Stat(imaPolicyFile); err != nil {
			t.Errorf("a refused policy must leave IMA's policy file in place: %v", err)
		}
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opPolicy, hook: hookRead, path: copied, dev: tmpfsID,
			action: actionDeny, rule: ruleOpDeny})
	})
	// Last: without CONFIG_IMA_WRITE_POLICY or CONFIG_IMA_READ_POLICY, IMA
	// takes one policy per boot and then removes its policy file.
	t.Run("initramfs policy file allowed", func(t *testing.T) {
		expectErrno(t, "write "+trusted+" to IMA's policy file", writeIMAPolicy(t, trusted), 0)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opPolicy, hook: hookRead, path: trusted, dev: rootfsID,
			action: actionAllow, rule: ruleBootAllow})
		if config["CONFIG_IMA_WRITE_POLICY"] != "y" && config["CONFIG_IMA_READ_POLICY"] != "y" {
			if _, err := os.Stat(imaPolicyFile); err == nil {
				t.Errorf("%s is still there: IMA did not take the policy", imaPolicyFile)
			}
		}
	})
}
