// Package enforce boots test/guest/enforce on every stock kernel: exec,
// mmap and mprotect decided by bpfipe's BPF LSM programs, with the access
// records, counters and life cycle of a pinned load.
package enforce

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/vmtest"
)

const guestPackage = "./test/guest/enforce"

// The dynamic program the guest runs through ld.so, and where its loader
// and libc go: in the initramfs, so they are boot_verified.
const (
	guestDynamicProgram = "/opt/bpfipe-enforce/true"
	hostDynamicProgram  = "/bin/true"
	dynamicLoader       = "/lib64/ld-linux-x86-64.so.2"
	libc                = "/lib/x86_64-linux-gnu/libc.so.6"
)

// guestTimeout bounds one guest: the exec loop and some thirty bpfipe
// loads run under software emulation.
const guestTimeout = 15 * time.Minute

func TestExecuteEnforcement(t *testing.T) {
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	opts := []vmtest.Option{
		vmtest.WithTimeout(guestTimeout),
		vmtest.WithEnv("BPFIPE_ENFORCE_DYNAMIC_PROGRAM=" + guestDynamicProgram),
		vmtest.WithAdd(hostFile(t, hostDynamicProgram), guestDynamicProgram),
		vmtest.WithAdd(hostFile(t, dynamicLoader), dynamicLoader),
		vmtest.WithAdd(hostFile(t, libc), libc),
	}
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			vmtest.RunGoTests(t, kernel, guestPackage, opts...)
		})
	}
}

// hostFile resolves symlinks, which the initramfs would carry as links to
// files it does not hold.
func hostFile(t *testing.T, path string) string {
	t.Helper()
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatalf("the guest needs the host's %s (a dynamic program and glibc): %v", path, err)
	}
	return resolved
}
