package bypass

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// runs checks that an exec started and exited 0.
func runs(t *testing.T, what string, got guestcli.Exec) {
	t.Helper()
	if got.Errno != 0 || got.Code != 0 {
		t.Errorf("%s: %v, want it to run and exit 0", what, got)
	}
}

// refused checks that an exec was refused with EACCES.
func refused(t *testing.T, what string, got guestcli.Exec) {
	t.Helper()
	if got.Errno != syscall.EACCES {
		t.Errorf("%s: %v, want EACCES", what, got)
	}
}

func busyboxTrue(t *testing.T, path string) guestcli.Exec {
	t.Helper()
	return guestcli.Start(t, exec.Command(path, "true"))
}

// bindMount binds source on target until t ends.
func bindMount(t *testing.T, source, target string) {
	t.Helper()
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", source, target, err)
	}
	t.Cleanup(func() {
		// bpfipe's tamper guard refuses to unmount any mount of the
		// initramfs while it runs, and its programs outlive bpfipe
		// unload by a moment (see TestBindMountOfBootFilesystem).
		deadline := time.Now().Add(unmountPatience)
		for {
			err := unix.Unmount(target, 0)
			if err == nil {
				return
			}
			if !errors.Is(err, unix.EPERM) || time.Now().After(deadline) {
				t.Errorf("unmount %s: %v", target, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// unmountPatience is how long an unmount the tamper guard refuses is
// retried after the test unloaded bpfipe.
const unmountPatience = 10 * time.Second

// TestExecRoutes reaches a file that is not on the boot filesystem by
// every route that changes how it is named, and execs it: each is decided
// by the file's mount, never by the name used, so each is denied, and the
// record names the file as IPE's audit would (d_path from the caller's
// root). The controls show each route works when the file is trusted.
func TestExecRoutes(t *testing.T) {
	s := start(t, "bypass_exec")
	untrusted := guestcli.CopyToTmp(t, busybox, "busybox")
	untrustedIno := inode(t, untrusted)

	t.Run("boot filesystem", func(t *testing.T) {
		s.drain(t)
		runs(t, busybox, busyboxTrue(t, busybox))
		s.expectNone(t, "exec from the initramfs")
	})

	t.Run("copied to tmpfs", func(t *testing.T) {
		s.drain(t)
		got := busyboxTrue(t, untrusted)
		refused(t, "a copy of busybox in /tmp", got)
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: untrusted, dev: tmpfsID, ino: untrustedIno})
	})

	t.Run("memfd execveat", func(t *testing.T) {
		s.drain(t)
		got := runHelperProcess(t, helperMemfd, busybox, "busybox", "true")
		expectHelperRefused(t, "execveat(AT_EMPTY_PATH) of a memfd", got)
		// d_path of a memfd: its name on the internal shmem mount, unlinked.
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: "/memfd:bypass (deleted)", dev: tmpfsID, pid: got.PID})
	})

	t.Run("O_PATH execveat", func(t *testing.T) {
		s.drain(t)
		got := runHelperProcess(t, helperOPath, untrusted, "busybox", "true")
		expectHelperRefused(t, "execveat(AT_EMPTY_PATH) of an O_PATH descriptor", got)
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: untrusted, dev: tmpfsID, ino: untrustedIno, pid: got.PID})

		expectHelperRan(t, "execveat of an O_PATH descriptor of the initramfs busybox", runHelperProcess(t, helperOPath, busybox, "busybox", "true"))
		s.expectNone(t, "O_PATH exec of a trusted file")
	})

	t.Run("hard link", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "link")
		if err := os.Link(untrusted, link); err != nil {
			t.Fatalf("hard link on /tmp: %v", err)
		}
		s.drain(t)
		refused(t, "a hard link to the /tmp copy", busyboxTrue(t, link))
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: link, dev: tmpfsID, ino: untrustedIno})

		// A hard link cannot carry a file onto the boot filesystem.
		err := os.Link(untrusted, filepath.Join(rootfsDir(t, "bypass-link"), "link"))
		if !errors.Is(err, unix.EXDEV) {
			t.Errorf("hard link from /tmp into the initramfs: %v, want EXDEV", err)
		}
	})

	t.Run("symlink", func(t *testing.T) {
		onRootfs := filepath.Join(rootfsDir(t, "bypass-symlink"), "busybox")
		if err := os.Symlink(untrusted, onRootfs); err != nil {
			t.Fatal(err)
		}
		s.drain(t)
		refused(t, "a symlink on the initramfs to the /tmp copy", busyboxTrue(t, onRootfs))
		// The exec opens the target: the record names it.
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: untrusted, dev: tmpfsID, ino: untrustedIno})

		toTrusted := filepath.Join(t.TempDir(), "busybox")
		if err := os.Symlink(busybox, toTrusted); err != nil {
			t.Fatal(err)
		}
		runs(t, "a symlink in /tmp to the initramfs busybox", busyboxTrue(t, toTrusted))
		s.expectNone(t, "symlink to a trusted file")
	})

	t.Run("bind mount of a directory", func(t *testing.T) {
		target := rootfsDir(t, "bypass-bind")
		bindMount(t, filepath.Dir(untrusted), target)
		through := filepath.Join(target, "busybox")
		s.drain(t)
		refused(t, "the /tmp copy through a bind mount on the initramfs", busyboxTrue(t, through))
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: through, dev: tmpfsID, ino: untrustedIno})
	})

	t.Run("bind mount over a trusted file", func(t *testing.T) {
		trusted := filepath.Join(rootfsDir(t, "bypass-over"), "busybox")
		guestcli.CopyFile(t, busybox, trusted)
		s.drain(t)
		runs(t, "a copy of busybox on the initramfs", busyboxTrue(t, trusted))
		bindMount(t, untrusted, trusted)
		refused(t, "the /tmp copy bound over a trusted file", busyboxTrue(t, trusted))
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: trusted, dev: tmpfsID, ino: untrustedIno})
	})

	t.Run("chroot", func(t *testing.T) {
		root := t.TempDir()
		if err := os.Mkdir(filepath.Join(root, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		inChroot := filepath.Join(root, "bin", "busybox")
		guestcli.CopyFile(t, busybox, inChroot)
		s.drain(t)
		got := runHelperProcess(t, helperChroot, root, "/bin/busybox", "busybox", "true")
		expectHelperRefused(t, "exec inside a chroot on /tmp", got)
		// d_path is relative to the caller's root, the chroot.
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: "/bin/busybox", dev: tmpfsID, ino: inode(t, inChroot), pid: got.PID})

		trustedRoot := rootfsDir(t, "bypass-chroot")
		if err := os.Mkdir(filepath.Join(trustedRoot, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(busybox, filepath.Join(trustedRoot, "bin", "busybox")); err != nil {
			t.Fatal(err)
		}
		expectHelperRan(t, "exec inside a chroot on the initramfs", runHelperProcess(t, helperChroot, trustedRoot, "/bin/busybox", "busybox", "true"))
		s.expectNone(t, "chroot on the boot filesystem")
	})

	t.Run("mount namespace", func(t *testing.T) {
		s.drain(t)
		got := runHelperProcess(t, helperMountNS, untrusted, busybox, "busybox", "true")
		expectHelperRefused(t, "the /tmp copy bound over /bin/busybox in a new mount namespace", got)
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: busybox, dev: tmpfsID, ino: untrustedIno, pid: got.PID})
		// The bind stayed in the helper's namespace.
		runs(t, busybox+" in the initial namespace", busyboxTrue(t, busybox))
		s.expectNone(t, "after the mount namespace helper")
	})

	// Out of scope, as for IPE: the initramfs is writable, and
	// boot_verified trusts its superblock, whatever was written to it
	// after boot. IPE's documentation advises leaving boot_verified
	// behind after switch_root; see docs/bypass.md.
	t.Run("written to the boot filesystem", func(t *testing.T) {
		written := filepath.Join(rootfsDir(t, "bypass-written"), "busybox")
		guestcli.CopyFile(t, untrusted, written)
		s.drain(t)
		runs(t, "a file copied from /tmp onto the initramfs", busyboxTrue(t, written))
		s.expectNone(t, "a file written to the boot filesystem")
	})
}

// TestBindMountOfBootFilesystem binds a directory of the initramfs under
// /tmp and execs through it: trust follows the mount's superblock, not the
// path, so the boot filesystem seen elsewhere is still boot_verified, as
// it is for IPE. The mount is made before the load and removed after the
// unload: bpfipe's tamper guard refuses, while loaded, to unmount any
// mount of the filesystem that holds the bpfipe executable, bind mounts
// included.
func TestBindMountOfBootFilesystem(t *testing.T) {
	guestcli.RequireGuest(t)
	source := rootfsDir(t, "bypass-bind-source")
	guestcli.CopyFile(t, busybox, filepath.Join(source, "busybox"))
	target := t.TempDir()
	bindMount(t, source, target)
	s := start(t, "bypass_bind_boot")
	s.drain(t)
	runs(t, "an initramfs directory bound under /tmp", busyboxTrue(t, filepath.Join(target, "busybox")))
	s.expectNone(t, "bind mount of the boot filesystem")
}
