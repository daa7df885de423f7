package dm

import (
	"errors"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The key must be findable from the thread create runs on, as dm-verity's
// request_key is: by description, in that thread's keyrings.
func TestWithRootHashSignatureKeepsKeyAndLoadOnOneThread(t *testing.T) {
	desc := "bpfipe-test:" + strconv.Itoa(unix.Getpid())
	sig := []byte("not a real signature")
	calls := 0
	err := WithRootHashSignature(desc, sig, func() error {
		calls++
		id, err := unix.KeyctlSearch(unix.KEY_SPEC_SESSION_KEYRING, "user", desc, 0)
		if err != nil {
			return err
		}
		defer unix.KeyctlInt(unix.KEYCTL_REVOKE, id, 0, 0, 0)
		buf := make([]byte, 64)
		n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
		if err != nil {
			return err
		}
		if string(buf[:n]) != string(sig) {
			t.Errorf("key holds %q, want %q", buf[:n], sig)
		}
		return nil
	})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("keyrings unavailable here: %v", err)
	}
	if err != nil || calls != 1 {
		t.Fatalf("WithRootHashSignature: %v after %d calls of create, want nil after 1", err, calls)
	}

	// A key that cannot be stored stops before the table load.
	calls = 0
	err = WithRootHashSignature("", sig, func() error { calls++; return nil })
	if err == nil || calls != 0 {
		t.Errorf("empty description: error %v after %d calls of create, want an error and none", err, calls)
	}
}
