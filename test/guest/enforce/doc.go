// Package enforce holds in-guest tests of EXECUTE enforcement: exec, mmap
// and mprotect decided by bpfipe's BPF LSM programs on a stock kernel, the
// access records bpfipe reports for them, and the life cycle of a pinned
// load (update, permissive mode, cgroup scope, unload). test/enforce boots
// them on every stock kernel; outside a bpfipe-vm guest they skip.
//
// The guest's initramfs rootfs is the boot filesystem, so its files (the
// test binary, busybox, bpfipe) are boot_verified and copies of them in
// /tmp (a tmpfs) are not. Every policy here keeps bpfipe itself executable,
// or the test runs a copy that the policy allows, so a test can always read
// events and unload.
package enforce
