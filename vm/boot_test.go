package vm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

// These tests boot real guests (seconds each under software emulation).

func requireBoot(t *testing.T, kernel string, opts ...vmtest.Option) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a qemu guest; skipped with -short")
	}
	vmtest.Require(t, kernel, opts...)
}

// run boots a guest without the bpfipe binary (these tests do not use it)
// and returns the status, the output and the error.
func run(t *testing.T, cfg vm.Config, argv ...string) (int, string, error) {
	t.Helper()
	var out bytes.Buffer
	cfg.Stdout = &out
	cfg.NoBpfipe = true
	status, err := vm.Run(context.Background(), cfg, argv)
	return status, out.String(), err
}

func TestBootExitStatusAndOutput(t *testing.T) {
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			requireBoot(t, kernel)
			status, out, err := run(t, vmtest.Config(kernel), "sh", "-c",
				`printf 'out\n'; printf 'err\n' >&2; printf 'raw\r\n\000end'; exit 7`)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if status != 7 {
				t.Errorf("exit status %d, want 7", status)
			}
			if want := "out\nerr\nraw\r\n\x00end"; out != want {
				t.Errorf("output %q, want %q", out, want)
			}
		})
	}
}

func TestBootTrueSucceedsSilently(t *testing.T) {
	requireBoot(t, "debian-6.1")
	status, out, err := run(t, vmtest.Config("debian-6.1"), "true")
	if err != nil || status != 0 || out != "" {
		t.Errorf("Run(true) = %d, %q, %v; want 0, no output, no error", status, out, err)
	}
}

func TestBootMissingCommand(t *testing.T) {
	requireBoot(t, "debian-6.1")
	status, out, err := run(t, vmtest.Config("debian-6.1"), "/no/such/command")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if status != 127 || !strings.Contains(out, "/no/such/command") {
		t.Errorf("Run(missing command) = %d, %q; want 127 and a message naming it", status, out)
	}
}

func TestBootGuestPanicFailsRun(t *testing.T) {
	requireBoot(t, "debian-6.1")
	t.Parallel()
	cfg := vmtest.Config("debian-6.1", vmtest.WithTimeout(2*time.Minute))
	start := time.Now()
	_, _, err := run(t, cfg, "sh", "-c", "echo before-crash; echo c > /proc/sysrq-trigger; sleep 600")
	elapsed := time.Since(start)
	if !errors.Is(err, vm.ErrPanic) {
		t.Fatalf("Run error = %v, want ErrPanic", err)
	}
	if vm.ExitStatus(err) != vm.ExitGuestCrash {
		t.Errorf("ExitStatus = %d, want %d", vm.ExitStatus(err), vm.ExitGuestCrash)
	}
	if elapsed >= cfg.Timeout {
		t.Errorf("panic reported after %s, the full timeout", elapsed)
	}
	for _, want := range []string{"Kernel panic", "before-crash"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestBootGuestHangTimesOut(t *testing.T) {
	requireBoot(t, "debian-6.1")
	t.Parallel()
	cfg := vmtest.Config("debian-6.1", vmtest.WithTimeout(40*time.Second))
	start := time.Now()
	_, _, err := run(t, cfg, "sh", "-c", "echo waiting-forever; sleep 600")
	elapsed := time.Since(start)
	if !errors.Is(err, vm.ErrTimeout) {
		t.Fatalf("Run error = %v, want ErrTimeout", err)
	}
	if vm.ExitStatus(err) != vm.ExitTimeout {
		t.Errorf("ExitStatus = %d, want %d", vm.ExitStatus(err), vm.ExitTimeout)
	}
	// The timeout covers the run; preparing the initramfs comes on top.
	if elapsed > cfg.Timeout+15*time.Second {
		t.Errorf("timed out after %s, timeout was %s", elapsed, cfg.Timeout)
	}
	if !strings.Contains(err.Error(), "waiting-forever") {
		t.Errorf("error does not show the last output:\n%v", err)
	}
}

func TestBootAddsAndDisks(t *testing.T) {
	requireBoot(t, "debian-6.12")
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	file := write("file", "file-content\n", 0o750)
	write("tree/sub/g", "tree-content\n", 0o644)
	tmpFile := write("tmpfile", "tmp-content\n", 0o644)
	roDisk := write("ro.img", "ro-disk-content"+strings.Repeat("\x00", 1<<20-15), 0o644)
	rwDisk := write("rw.img", strings.Repeat("\x00", 1<<20), 0o644)

	cfg := vmtest.Config("debian-6.12",
		vmtest.WithAdd(file, "/opt/f"), vmtest.WithAdd(filepath.Join(dir, "tree"), "/opt/tree"),
		vmtest.WithAdd(tmpFile, "/tmp/t"),
		vmtest.WithDisk(roDisk, true), vmtest.WithDisk(rwDisk, false))
	status, out, err := run(t, cfg, "sh", "-c", `cat /opt/f; stat -c %a /opt/f; cat /opt/tree/sub/g /tmp/t
head -c 15 /dev/vda; echo; cat /sys/block/vda/ro /sys/block/vdb/ro
printf guest-wrote | dd of=/dev/vdb conv=notrunc 2>/dev/null`)
	if err != nil || status != 0 {
		t.Fatalf("Run = %d, %v; output:\n%s", status, err, out)
	}
	want := "file-content\n750\ntree-content\ntmp-content\nro-disk-content\n1\n0\n"
	if out != want {
		t.Errorf("guest saw:\n%q\nwant:\n%q", out, want)
	}
	got, err := os.ReadFile(rwDisk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, []byte("guest-wrote")) {
		t.Errorf("read-write disk starts %q after the run, want the guest's write", got[:16])
	}
}

func TestBootUEFICertInPlatformKeyring(t *testing.T) {
	certCN := "bpfipe-vmtest-" + randomHex(t)
	cert, _ := vmtest.TestCertificate(t, certCN)
	requireBoot(t, "debian-6.12", vmtest.WithUEFICert(cert))
	t.Parallel()
	status, out, err := run(t, vmtest.Config("debian-6.12", vmtest.WithUEFICert(cert)),
		"sh", "-c", "cat /proc/keys; echo LSM=$(cat /sys/kernel/security/lsm)")
	if err != nil || status != 0 {
		t.Fatalf("Run = %d, %v; output:\n%s", status, err, out)
	}
	if !strings.Contains(out, " "+certCN+": ") {
		t.Errorf("/proc/keys has no key for %q:\n%s", certCN, out)
	}
	lsm := out[strings.LastIndex(out, "LSM=")+4:]
	for _, want := range []string{"bpf", "ipe"} {
		if !strings.Contains(","+strings.TrimSpace(lsm)+",", ","+want+",") {
			t.Errorf("LSM list %q lacks %s", lsm, want)
		}
	}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
