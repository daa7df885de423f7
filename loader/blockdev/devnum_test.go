package blockdev

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestKernelDev(t *testing.T) {
	tests := []struct {
		name         string
		major, minor uint32
		userspace    uint64 // glibc's gnu_dev_makedev layout, written out by hand
		kernel       uint32 // major<<20 | minor
	}{
		{"loop0", 7, 0, 0x700, 0x700000},
		{"sda1", 8, 1, 0x801, 0x800001},
		{"dm-3", 254, 3, 0xfe03, 0xfe00003},
		// Minors above 255 move to bits 20 and up in userspace.
		{"nvme minor 0x12345", 259, 0x12345, 0x12310345, 0x10312345},
		{"major 0", 0, 42, 0x2a, 0x2a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unix.Mkdev(tt.major, tt.minor); got != tt.userspace {
				t.Fatalf("fixture: Mkdev(%d, %d) = %#x, fixture says %#x", tt.major, tt.minor, got, tt.userspace)
			}
			if got := KernelDev(tt.userspace); got != tt.kernel {
				t.Errorf("KernelDev(%#x) = %#x, want %#x", tt.userspace, got, tt.kernel)
			}
			if got := KernelDevOf(tt.major, tt.minor); got != tt.kernel {
				t.Errorf("KernelDevOf(%d, %d) = %#x, want %#x", tt.major, tt.minor, got, tt.kernel)
			}
			if major, minor := SplitKernelDev(tt.kernel); major != tt.major || minor != tt.minor {
				t.Errorf("SplitKernelDev(%#x) = %d:%d, want %d:%d", tt.kernel, major, minor, tt.major, tt.minor)
			}
			if got := UserspaceDev(tt.kernel); got != tt.userspace {
				t.Errorf("UserspaceDev(%#x) = %#x, want %#x", tt.kernel, got, tt.userspace)
			}
		})
	}
}
