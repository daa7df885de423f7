// Package tamper holds in-guest tests of bpfipe's tamper resistance: while
// enforcement runs, the test binary (root, but not the bpfipe executable
// that loaded it) tries every way in that docs/security.md lists, and each
// must be refused with EPERM (EACCES where the kernel turns the guard's
// answer into it) while the decisions stay as they were; the bpfipe
// commands keep working, and after unload every attempt succeeds again.
// test/tamper boots them on every stock kernel; outside a bpfipe-vm guest
// they skip.
//
// The guest's initramfs is the boot filesystem, so its files (this binary,
// busybox, bpfipe) are boot_verified and a copy of busybox in /tmp is not:
// the policies here deny exactly that copy.
package tamper
