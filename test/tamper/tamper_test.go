// Package tamper boots test/guest/tamper on every stock kernel: the tamper
// guard against a root process, the bpfipe commands under it, and the lock.
package tamper

import (
	"testing"

	"github.com/bpfipe/bpfipe/test/vmtest"
)

const guestPackage = "./test/guest/tamper"

func TestTamperResistanceInGuest(t *testing.T) {
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Run("guard", func(t *testing.T) {
				vmtest.RunGoTests(t, kernel, guestPackage, vmtest.WithRun("^TestGuard"))
			})
			// The lock lasts until reboot: a guest of its own.
			t.Run("lock", func(t *testing.T) {
				vmtest.RunGoTests(t, kernel, guestPackage, vmtest.WithRun("^TestLock$"), vmtest.WithEnv("BPFIPE_TAMPER_LOCK=1"))
			})
		})
	}
}
