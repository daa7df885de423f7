// Package vm boots stock Debian kernels under qemu and runs one command in
// the guest, for tests that need a kernel this machine does not run (BPF LSM
// programs cannot load on the development machines).
//
// Kernels: debian-6.1 is the Debian 12 cloud kernel from the system's apt
// sources; debian-6.12 is the Debian 13 one, read through a private apt
// configuration whose lists live in the cache (nothing from Debian 13 is
// installed). The newest package is resolved from the package lists on each
// run, fetched with apt-get download, unpacked with dpkg-deb -x and kept in
// $XDG_CACHE_HOME/bpfipe (default ~/.cache/bpfipe). Without a network the
// newest cached build is used.
//
// Initramfs: a cached base archive, keyed by the content of what it holds,
// carries the guest init (a static Go program, vm/internal/guestinit), the
// host's /bin/busybox from the busybox-static package (the same Debian build
// the guest would otherwise download, already verified by dpkg), and the
// kernel modules the guest needs, ordered by their .modinfo depends= with
// virtio_pci ahead of virtio_blk. Modules are decompressed on the host and
// loaded by init with finit_module, which needs no kmod tools and reports
// each failure precisely. A second, per-run archive concatenated after it
// carries the run description, the static bpfipe binary and added files;
// the kernel unpacks both, later entries winning.
//
// Guest: the kernel console goes to the first serial port, the command's
// output to the second, in raw mode, framed by start and exit markers that
// carry a per-run nonce. After the command, init drains the port, writes the
// exit marker, and leaves through the isa-debug-exit device. A guest panic
// (panic=-1 with -no-reboot) or a hang (the run's timeout) fails the run
// with the last console and output lines.
//
// dm-verity: each Verity names a data and a hash image made by veritysetup
// format. The runner reads the table's parameters from the hash image's
// superblock, attaches both as read-only virtio disks with serial numbers,
// and init creates the device with the device-mapper ioctls (loader/dm),
// optionally with a root hash signature stored as a user key, and mounts
// it read-only at /mnt/NAME (ext4, else squashfs) before the command runs.
//
// UEFI: with a certificate, the guest boots through OVMF with a private copy
// of a varstore that has the certificate in db (enrolled with virt-fw-vars
// from Debian 13's python3-virt-firmware, cached by certificate), Secure
// Boot off; the kernel then loads the certificate into .platform.
package vm
