// Package bypass holds in-guest tests of the ways around an exec
// allowlist: fileless exec, loaders, descriptors, mounts, links, chroot,
// namespaces, overlayfs, memory protection tricks, scripts and shared
// objects. Each case is either denied by bpfipe under a boot_verified
// allowlist, or out of scope as it is for IPE, in which case the test
// asserts that it is allowed so that docs/bypass.md stays true.
// test/bypass boots them on every stock kernel; outside a bpfipe-vm guest
// they skip.
//
// The guest's initramfs is the boot filesystem: its files (this binary,
// busybox, bpfipe, and the fixtures the host adds under /opt/bypass) are
// boot_verified, and anything under /tmp (a tmpfs) is not.
package bypass
