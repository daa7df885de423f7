package loader

import (
	"bytes"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader/blockdev"
)

// BootRoot is the superblock whose files are boot_verified.
type BootRoot struct {
	// Source is "initramfs" or the path given with --boot-root; empty when
	// no superblock is designated.
	Source string
	// Sdev is the superblock's kernel dev_t; 0 when none.
	Sdev uint32
	// Why says how the choice was made, for status and warnings.
	Why string
}

// IPE marks the superblock of the initramfs as it is unpacked, which a
// loader that starts after boot cannot watch. bpfipe therefore designates a
// superblock: by default the root of PID 1's mount namespace while it is
// still the initramfs (rootfs, a ramfs or tmpfs), otherwise none unless
// the user names one.
func DetectBootRoot(path string) (BootRoot, error) {
	if path != "" {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return BootRoot{}, fmt.Errorf("stat boot root: %w", err)
		}
		return BootRoot{Source: path, Sdev: blockdev.KernelDev(st.Dev), Why: "named with --boot-root"}, nil
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/1/root", &st); err != nil {
		return BootRoot{}, fmt.Errorf("stat root of PID 1: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs("/proc/1/root", &sfs); err != nil {
		return BootRoot{}, fmt.Errorf("statfs root of PID 1: %w", err)
	}
	mountinfo, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		return BootRoot{}, fmt.Errorf("read mountinfo of PID 1: %w", err)
	}
	return initramfsRoot(mountinfo, int64(sfs.Type), st.Dev), nil
}

// initramfsRoot decides whether PID 1's root, with filesystem magic magic
// and device rootDev, is still the initramfs: its root mount must be of
// type "rootfs" in PID 1's mountinfo and be a ramfs or tmpfs.
func initramfsRoot(mountinfo []byte, magic int64, rootDev uint64) BootRoot {
	none := func(why string) BootRoot { return BootRoot{Why: why} }
	if magic != unix.RAMFS_MAGIC && magic != unix.TMPFS_MAGIC {
		return none("PID 1's root is not a ramfs or tmpfs, so not the initramfs; name the boot filesystem with --boot-root")
	}
	fstype, ok, err := rootMountType(mountinfo, rootDev)
	if err != nil {
		return none(fmt.Sprintf("PID 1's mountinfo does not parse: %v", err))
	}
	if !ok {
		return none("PID 1's root mount is not in its mountinfo")
	}
	if fstype != "rootfs" {
		return none(fmt.Sprintf("PID 1's root is a %s mount, not the initramfs rootfs; name the boot filesystem with --boot-root", fstype))
	}
	return BootRoot{Source: "initramfs", Sdev: blockdev.KernelDev(rootDev), Why: "PID 1's root is still the initramfs"}
}

// rootMountType finds the filesystem type of the mount on "/" whose device
// is dev. Mounts stacked on "/" hide the earlier ones, so the last match wins.
func rootMountType(mountinfo []byte, dev uint64) (string, bool, error) {
	mounts, err := blockdev.ParseMountInfo(bytes.NewReader(mountinfo))
	if err != nil {
		return "", false, err
	}
	major, minor := unix.Major(dev), unix.Minor(dev)
	var fstype string
	found := false
	for _, m := range mounts {
		if m.MountPoint == "/" && m.Major == major && m.Minor == minor {
			fstype, found = m.FSType, true
		}
	}
	return fstype, found, nil
}
