// Package blockdev reads what the kernel says about block devices: their
// numbers in both encodings, their disk sequence numbers, where they are
// mounted, and the uevents announcing them.
package blockdev

import "golang.org/x/sys/unix"

// The kernel's internal dev_t splits 32 bits into a 12-bit major and a
// 20-bit minor (MINORBITS in include/linux/kdev_t.h).
const (
	kernelMinorBits = 20
	kernelMinorMask = 1<<kernelMinorBits - 1
	maxKernelMajor  = 1<<(32-kernelMinorBits) - 1
)

// KernelDev converts a device number in the userspace encoding (st_dev,
// st_rdev, statx, the device-mapper ioctl dev field) to the kernel's
// internal dev_t, which is what BPF programs read from sb->s_dev or
// bdev->bd_dev. The encodings only agree on small major-0 numbers, so a
// missed conversion passes toy tests and fails on real disks.
func KernelDev(userspaceDev uint64) uint32 {
	return KernelDevOf(unix.Major(userspaceDev), unix.Minor(userspaceDev))
}

// KernelDevOf builds the kernel's internal dev_t from a major and minor.
// Numbers outside the kernel's 12/20-bit ranges cannot name a device; they
// are truncated the way MKDEV would store them.
func KernelDevOf(major, minor uint32) uint32 {
	return (major&maxKernelMajor)<<kernelMinorBits | minor&kernelMinorMask
}

// SplitKernelDev is the inverse of KernelDevOf.
func SplitKernelDev(kernelDev uint32) (major, minor uint32) {
	return kernelDev >> kernelMinorBits, kernelDev & kernelMinorMask
}

// UserspaceDev converts a kernel dev_t back to the userspace encoding.
func UserspaceDev(kernelDev uint32) uint64 {
	return unix.Mkdev(SplitKernelDev(kernelDev))
}
