package dm

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// WithRootHashSignature stores sig as the "user" key desc, which a
// dm-verity table names with root_hash_sig_key_desc, and runs create, which
// loads that table, on the same OS thread.
//
// dm-verity looks the key up in the keyrings of the task loading the table.
// Credentials, and the session keyring add_key puts the key in, belong to a
// thread; a Go program left to itself may load the table from another
// thread, where the kernel does not find the key and refuses the table
// with ENOKEY, as if it distrusted the signature.
func WithRootHashSignature(desc string, sig []byte, create func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, err := unix.AddKey("user", desc, sig, unix.KEY_SPEC_SESSION_KEYRING); err != nil {
		return fmt.Errorf("store root hash signature as key %q: %w", desc, err)
	}
	return create()
}
