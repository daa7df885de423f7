// Package kread holds in-guest tests of the IPE operations other than
// EXECUTE: kernel modules (finit_module and init_module), kexec images and
// initramfs (kexec_file_load and kexec_load) and IMA policy files, each
// decided by bpfipe's kernel_read_file and kernel_load_data programs on a
// stock kernel and reported with the ipe_op and ipe_hook IPE prints.
// test/kread boots them on every stock kernel; outside a bpfipe-vm guest
// they skip. What no guest can trigger (FIRMWARE, X509_CERT, unknown ids)
// is explained in docs/kernel-reads.md.
//
// The host puts the files the kernel reads (a module, the kernel image, an
// IMA policy) in the initramfs, the boot filesystem, so they are
// boot_verified; copies of them in /tmp (a tmpfs) are not. Every policy
// here allows EXECUTE, so bpfipe itself always runs.
package kread
