package bypass

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// insertModule loads a kernel module from a file, as insmod does.
func insertModule(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatalf("insert %s: %v", path, err)
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or
// newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var gotMajor, gotMinor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &gotMajor, &gotMinor); err != nil {
		t.Fatalf("parse kernel release %q: %v", unix.ByteSliceToString(u.Release[:]), err)
	}
	return gotMajor > major || gotMajor == major && gotMinor >= minor
}

// TestOverlay mounts an overlay whose lower layer is a directory of the
// initramfs and execs and maps its files. IPE takes boot_verified from the
// superblock of the file's mount (eval.c: file->f_path.mnt->mnt_sb), which
// for a file opened through the overlay is the overlay's: the file is not
// boot_verified, although its data is the initramfs file's. bpfipe reads
// the same field and decides the same.
func TestOverlay(t *testing.T) {
	guestcli.RequireGuest(t)
	// Before the policy: module loading is an operation the tests do not
	// mean to decide.
	insertModule(t, fixture(t, "overlay.ko"))
	lower := rootfsDir(t, "bypass-lower")
	for _, name := range []string{"busybox", "copied-up"} {
		if err := os.Link(busybox, filepath.Join(lower, name)); err != nil {
			t.Fatal(err)
		}
	}
	base := t.TempDir()
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, dir := range []string{upper, work, merged} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	options := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, options); err != nil {
		t.Fatalf("mount overlay (%s): %v", options, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})
	s := start(t, "bypass_overlay")
	throughOverlay := filepath.Join(merged, "busybox")

	t.Run("exec from the lower layer directly", func(t *testing.T) {
		s.drain(t)
		runs(t, "the lower layer's busybox", busyboxTrue(t, filepath.Join(lower, "busybox")))
		s.expectNone(t, "exec from the lower layer")
	})

	t.Run("exec through the overlay", func(t *testing.T) {
		s.drain(t)
		refused(t, "the initramfs busybox through the overlay", busyboxTrue(t, throughOverlay))
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: throughOverlay, dev: overlayID})
	})

	t.Run("executable mapping through the overlay", func(t *testing.T) {
		f := openFile(t, throughOverlay, os.O_RDONLY)
		s.drain(t)
		mem, err := unix.Mmap(int(f.Fd()), 0, page, protR|protX, unix.MAP_PRIVATE)
		if err == nil {
			unix.Munmap(mem)
		}
		deniedWith(t, "executable mapping of an overlay file", err)
		s.expectOnly(t, denial{hook: guestcli.HookMmap, path: throughOverlay, dev: overlayID, pid: os.Getpid()})
	})

	// A mapping of an overlay file holds the layer's own file (ovl_mmap
	// swaps vma->vm_file), and file_mprotect decides by vma->vm_file, for
	// IPE as for bpfipe. Until Linux 6.7 that file carried the overlay's
	// path ("fake path"), so the mount is the overlay's and the mprotect is
	// denied. Since 6.7 it is a backing file with the real path, in a
	// private clone of the lower layer's mount, whose superblock is the
	// initramfs: the mprotect is allowed, and what runs is the initramfs
	// file's data. See docs/bypass.md.
	t.Run("mprotect of a mapping through the overlay", func(t *testing.T) {
		mem := mapFile(t, openFile(t, throughOverlay, os.O_RDONLY), protR, unix.MAP_PRIVATE)
		s.drain(t)
		err := unix.Mprotect(mem, protR|protX)
		if kernelAtLeast(t, 6, 7) {
			if err != nil {
				t.Errorf("mprotect to RX of a mapping of a lower-layer file: %v, want it allowed (the mapping's file is the lower layer's)", err)
			}
			s.expectNone(t, "mprotect of a lower-layer mapping")
			return
		}
		deniedWith(t, "mprotect to RX of a mapping of an overlay file", err)
		s.expectOnly(t, denial{hook: guestcli.HookMprotect, path: throughOverlay, pid: os.Getpid()})
	})

	// Once written through the overlay, the file is copied up to the upper
	// layer on /tmp: whichever file a kernel evaluates, it is not trusted.
	t.Run("mprotect of a mapping of a copied-up file", func(t *testing.T) {
		copiedUp := filepath.Join(merged, "copied-up")
		openFile(t, copiedUp, os.O_WRONLY)
		if _, err := os.Stat(filepath.Join(upper, "copied-up")); err != nil {
			t.Fatalf("opening for write did not copy the file up: %v", err)
		}
		mem := mapFile(t, openFile(t, copiedUp, os.O_RDONLY), protR, unix.MAP_PRIVATE)
		s.drain(t)
		deniedWith(t, "mprotect to RX of a mapping of a copied-up overlay file", unix.Mprotect(mem, protR|protX))
		records := s.cli.Events(t)
		if len(records) != 1 || records[0].Hook != guestcli.HookMprotect || records[0].Action != guestcli.ActionDeny || !records[0].HasFile {
			t.Errorf("want one MPROTECT denial about the copied-up file, got %v", records)
		}
	})
}
