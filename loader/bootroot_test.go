package loader

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount tables as PID 1 sees them: still in the initramfs, after
// switch_root, and an initramfs with a tmpfs mounted over "/".
const (
	initramfsMountinfo = `1 1 0:2 / / rw - rootfs rootfs rw,size=61236k,nr_inodes=15309
2 1 0:5 / /dev rw,relatime - devtmpfs devtmpfs rw,size=61236k,nr_inodes=15309,mode=755
3 1 0:20 / /proc rw,relatime - proc proc rw
`
	switchedMountinfo = `23 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
24 23 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 23 0:5 / /dev rw,nosuid shared:3 - devtmpfs udev rw,size=4014020k,mode=755
`
	overmountedMountinfo = `1 1 0:2 / / rw - rootfs rootfs rw
40 1 0:33 / / rw,relatime - tmpfs tmpfs rw,mode=755
`
)

func TestInitramfsRoot(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mountinfo string
		magic     int64
		dev       uint64
		wantSdev  uint32
	}{
		{"still in the initramfs", initramfsMountinfo, unix.RAMFS_MAGIC, unix.Mkdev(0, 2), 2},
		{"initramfs on tmpfs (CONFIG_TMPFS rootfs)", initramfsMountinfo, unix.TMPFS_MAGIC, unix.Mkdev(0, 2), 2},
		{"after switch_root to ext4", switchedMountinfo, unix.EXT4_SUPER_MAGIC, unix.Mkdev(254, 1), 0},
		// The ext4 magic aside, a root mount of type ext4 is not rootfs.
		{"after switch_root, magic lying", switchedMountinfo, unix.TMPFS_MAGIC, unix.Mkdev(254, 1), 0},
		{"tmpfs mounted over rootfs", overmountedMountinfo, unix.TMPFS_MAGIC, unix.Mkdev(0, 33), 0},
		{"root device not in mountinfo", initramfsMountinfo, unix.RAMFS_MAGIC, unix.Mkdev(0, 99), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := initramfsRoot([]byte(tc.mountinfo), tc.magic, tc.dev)
			if got.Sdev != tc.wantSdev {
				t.Errorf("Sdev = %#x (%s), want %#x", got.Sdev, got.Why, tc.wantSdev)
			}
			if (got.Source == "initramfs") != (tc.wantSdev != 0) {
				t.Errorf("Source = %q with Sdev %#x", got.Source, got.Sdev)
			}
			if got.Why == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestDetectBootRootNamedPathUsesKernelEncoding(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	got, err := DetectBootRoot(path)
	if err != nil {
		t.Fatal(err)
	}
	want := unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)
	if got.Sdev != want || got.Source != path {
		t.Errorf("got %+v, want Sdev %#x from %s", got, want, path)
	}
}
