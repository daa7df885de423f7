// Package faults boots test/guest/faults on every stock kernel: bpfipe
// under policy updates during an exec and mmap load, with its loader
// killed at random points, and under an event flood.
package faults

import (
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/vmtest"
)

const guestPackage = "./test/guest/faults"

// guestTimeout bounds one guest: a minute and a half of updates under
// load, some forty killed or recovering loads, and a flood of 3000 execs,
// all under software emulation.
const guestTimeout = 12 * time.Minute

func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			vmtest.RunGoTests(t, kernel, guestPackage, vmtest.WithTimeout(guestTimeout))
		})
	}
}
