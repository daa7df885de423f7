package kread

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
	"golang.org/x/sys/unix"
)

// kexecFile loads kernel (and initrd, unless empty) with kexec_file_load,
// which reads both through kernel_read_file (READING_KEXEC_IMAGE, then
// READING_KEXEC_INITRAMFS). A loaded image is unloaded when t ends.
func kexecFile(t *testing.T, kernel, initrd string) error {
	t.Helper()
	kf, err := os.Open(kernel)
	if err != nil {
		t.Fatalf("open %s: %v", kernel, err)
	}
	defer kf.Close()
	initrdFD, flags := -1, unix.KEXEC_FILE_NO_INITRAMFS
	if initrd != "" {
		f, err := os.Open(initrd)
		if err != nil {
			t.Fatalf("open %s: %v", initrd, err)
		}
		defer f.Close()
		initrdFD, flags = int(f.Fd()), 0
	}
	err = unix.KexecFileLoad(int(kf.Fd()), initrdFD, "", flags)
	if err == nil {
		t.Cleanup(func() {
			if err := unix.KexecFileLoad(-1, -1, "", unix.KEXEC_FILE_UNLOAD); err != nil {
				t.Errorf("unload the kexec image: %v", err)
			}
		})
	}
	return err
}

// kexecLoadNothing is kexec_load(2) with no segments, which would unload a
// loaded image; it passes kernel_load_data (LOADING_KEXEC_IMAGE) first and
// has no file.
func kexecLoadNothing() error {
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, unix.KEXEC_ARCH_DEFAULT, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// expectKexecLoaded checks whether the kernel holds a kexec image, as
// /sys/kernel/kexec_loaded reports it.
func expectKexecLoaded(t *testing.T, want bool) {
	t.Helper()
	raw, err := os.ReadFile("/sys/kernel/kexec_loaded")
	if err != nil {
		t.Fatalf("read kexec_loaded: %v", err)
	}
	got := strings.TrimSpace(string(raw))
	if wantText := map[bool]string{false: "0", true: "1"}[want]; got != wantText {
		t.Errorf("/sys/kernel/kexec_loaded = %q, want %q", got, wantText)
	}
}

// TestKexecFileLoad: the kernel image and initramfs kexec_file_load reads
// are decided by their files' properties, before anything is loaded.
func TestKexecFileLoad(t *testing.T) {
	requireGuest(t)
	if kernelConfig(t)["CONFIG_KEXEC_FILE"] != "y" {
		err := unix.KexecFileLoad(-1, -1, "", unix.KEXEC_FILE_NO_INITRAMFS)
		expectErrno(t, "kexec_file_load without CONFIG_KEXEC_FILE", err, unix.ENOSYS)
		t.Skipf("kernel %s lacks CONFIG_KEXEC_FILE: kexec_file_load does not exist, so KEXEC_IMAGE and KEXEC_INITRAMFS reads cannot happen", release(t))
	}
	kernel := hostFile(t, kernelImageEnv)
	expectKexecLoaded(t, false)
	const (
		imageAllow  = "op=KEXEC_IMAGE boot_verified=TRUE action=ALLOW"
		imageDeny   = "DEFAULT op=KEXEC_IMAGE action=DENY"
		initrdAllow = "op=KEXEC_INITRAMFS boot_verified=TRUE action=ALLOW"
		initrdDeny  = "DEFAULT op=KEXEC_INITRAMFS action=DENY"
	)
	load(t, policyText(imageAllow, imageDeny, initrdAllow, initrdDeny, "DEFAULT action=ALLOW"), "--success-audit")

	t.Run("tmpfs kernel denied", func(t *testing.T) {
		copied := copyToTmp(t, kernel)
		expectErrno(t, "kexec_file_load of "+copied, kexecFile(t, copied, ""), unix.EACCES)
		expectKexecLoaded(t, false)
		records := guestcli.Initramfs(t).Events(t)
		expectOne(t, records, wantRecord{op: opKexecImage, hook: hookRead, path: copied, dev: tmpfsID,
			action: actionDeny, rule: imageDeny})
		expectNone(t, records, opKexecInitrd)
	})
	t.Run("tmpfs initramfs denied", func(t *testing.T) {
		initrd := filepath.Join(t.TempDir(), "initrd")
		if err := os.WriteFile(initrd, make([]byte, 4096), 0o644); err != nil {
			t.Fatalf("write initrd: %v", err)
		}
		expectErrno(t, "kexec_file_load with initrd "+initrd, kexecFile(t, kernel, initrd), unix.EACCES)
		expectKexecLoaded(t, false)
		// The kernel image is read, and allowed, before the initramfs.
		records := guestcli.Initramfs(t).Events(t)
		expectOne(t, records, wantRecord{op: opKexecImage, hook: hookRead, path: kernel, dev: rootfsID,
			action: actionAllow, rule: imageAllow})
		expectOne(t, records, wantRecord{op: opKexecInitrd, hook: hookRead, path: initrd, dev: tmpfsID,
			action: actionDeny, rule: initrdDeny})
	})
	t.Run("initramfs kernel allowed", func(t *testing.T) {
		expectErrno(t, "kexec_file_load of "+kernel, kexecFile(t, kernel, ""), 0)
		expectKexecLoaded(t, true)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKexecImage, hook: hookRead, path: kernel, dev: rootfsID,
			action: actionAllow, rule: imageAllow})
	})
}

// TestKexecLoad: the legacy kexec_load passes its segments from memory
// (kernel_load_data), so no file property is TRUE and =FALSE ones are.
func TestKexecLoad(t *testing.T) {
	requireGuest(t)
	if kernelConfig(t)["CONFIG_KEXEC"] != "y" {
		expectErrno(t, "kexec_load without CONFIG_KEXEC", kexecLoadNothing(), unix.ENOSYS)
		t.Skipf("kernel %s lacks CONFIG_KEXEC: kexec_load does not exist", release(t))
	}
	expectKexecLoaded(t, false)

	t.Run("boot_verified=FALSE matches no file", func(t *testing.T) {
		const rule = "op=KEXEC_IMAGE boot_verified=FALSE action=DENY"
		load(t, policyText(rule, "DEFAULT action=ALLOW"))
		expectErrno(t, "kexec_load", kexecLoadNothing(), unix.EACCES)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKexecImage, hook: hookLoad, action: actionDeny, rule: rule})
	})
	t.Run("op DEFAULT allows", func(t *testing.T) {
		const rule = "DEFAULT op=KEXEC_IMAGE action=ALLOW"
		load(t, policyText(rule, "DEFAULT op=EXECUTE action=ALLOW", "DEFAULT action=DENY"), "--success-audit")
		expectErrno(t, "kexec_load", kexecLoadNothing(), 0)
		expectKexecLoaded(t, false)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKexecImage, hook: hookLoad, action: actionAllow, rule: rule})
	})
}
