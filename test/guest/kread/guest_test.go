package kread

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// Environment the host side (test/kread) sets.
const (
	guestEnv = "BPFIPE_GUEST"
	// moduleNameEnv names a module with no dependencies that the guest's
	// init does not load.
	moduleNameEnv = "BPFIPE_KREAD_MODULE_NAME"
	// moduleFileEnv is that module's file in the initramfs, compressed
	// (.ko.xz) when the kernel decompresses modules itself.
	moduleFileEnv = "BPFIPE_KREAD_MODULE_FILE"
	// moduleImageEnv is the module's ELF image, for init_module.
	moduleImageEnv = "BPFIPE_KREAD_MODULE_IMAGE"
	// kernelImageEnv is the guest's own bzImage, in the initramfs.
	kernelImageEnv = "BPFIPE_KREAD_KERNEL_IMAGE"
	// kernelConfigEnv is the kernel package's config, for kernels without
	// /proc/config.gz.
	kernelConfigEnv = "BPFIPE_KREAD_KERNEL_CONFIG"
)

// Names as IPE's audit prints them.
const (
	hookRead      = "KERNEL_READ"
	hookLoad      = "KERNEL_LOAD"
	actionAllow   = "ALLOW"
	actionDeny    = "DENY"
	opKmodule     = "KMODULE"
	opKexecImage  = "KEXEC_IMAGE"
	opKexecInitrd = "KEXEC_INITRAMFS"
	opPolicy      = "POLICY"
	// rootfsID and tmpfsID are the s_id of the initramfs's superblock and of
	// a tmpfs one: their file system types' names, which IPE prints as dev=.
	rootfsID = "rootfs"
	tmpfsID  = "tmpfs"
)

// policyText makes a policy of rules under a fixed header.
func policyText(rules ...string) string {
	return "policy_name=kread policy_version=0.0.1\n" + strings.Join(rules, "\n") + "\n"
}

func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv(guestEnv) != "1" {
		t.Skip("runs only inside a bpfipe-vm guest (test/kread boots it)")
	}
}

// hostFile is a path the host passed in the environment.
func hostFile(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is unset: the host side (test/kread) passes it", env)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", env, err)
	}
	return p
}

// load starts pinned enforcement of text and unloads it when t ends.
func load(t *testing.T, text string, flags ...string) {
	t.Helper()
	bpfipe := guestcli.Initramfs(t)
	args := append(append([]string{"load", "--pin"}, flags...), guestcli.WritePolicy(t, text))
	if res := bpfipe.Run(t, args...); res.Code != 0 {
		t.Fatalf("bpfipe %s: %s\npolicy:\n%s", strings.Join(args, " "), res, text)
	}
	t.Cleanup(func() {
		res := bpfipe.Run(t, "unload")
		if res.Code == 0 {
			return
		}
		// Leave the next test a clean kernel even when the CLI failed.
		if _, err := loader.Unload(); err != nil && !errors.Is(err, loader.ErrNotLoaded) {
			t.Errorf("unload in-process after bpfipe unload failed (%s): %v", res, err)
			return
		}
		t.Errorf("bpfipe unload: %s", res)
	})
}

// wantRecord is the access record an operation of this process must make.
type wantRecord struct {
	op, hook string
	// path is the file the kernel read; empty for kernel_load_data, which
	// has none.
	path   string
	dev    string
	action string
	rule   string
}

// expectOne checks that records hold exactly one record of w.op and that
// it carries every field IPE would print for it.
func expectOne(t *testing.T, records []guestcli.Record, w wantRecord) {
	t.Helper()
	var matching []guestcli.Record
	for _, r := range records {
		if r.Op == w.op {
			matching = append(matching, r)
		}
	}
	if len(matching) != 1 {
		t.Errorf("want one %s record, got %d: %v", w.op, len(matching), matching)
		return
	}
	r := matching[0]
	var problems []string
	check := func(field string, got, want any) {
		if got != want {
			problems = append(problems, fmt.Sprintf("%s = %v, want %v", field, got, want))
		}
	}
	check("ipe_hook", r.Hook, w.hook)
	check("enforcing", r.Enforcing, true)
	check("pid", r.PID, os.Getpid())
	check("comm", r.Comm, selfComm(t))
	check("action", r.Action, w.action)
	check("rule", r.Rule, w.rule)
	if w.path == "" {
		check("has_file", r.HasFile, false)
		check("path", r.Path, "")
		check("dev", r.Dev, "")
		check("ino", r.Ino, uint64(0))
	} else {
		var st unix.Stat_t
		if err := unix.Stat(w.path, &st); err != nil {
			t.Fatalf("stat %s: %v", w.path, err)
		}
		check("has_file", r.HasFile, true)
		check("path", r.Path, w.path)
		check("dev", r.Dev, w.dev)
		check("ino", r.Ino, st.Ino)
	}
	if len(problems) > 0 {
		t.Errorf("record %v: %s", r, strings.Join(problems, "; "))
	}
}

// expectNone checks that no record of op was made.
func expectNone(t *testing.T, records []guestcli.Record, op string) {
	t.Helper()
	for _, r := range records {
		if r.Op == op {
			t.Errorf("unexpected %s record %v", op, r)
		}
	}
}

func selfComm(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatalf("read comm: %v", err)
	}
	return strings.TrimSuffix(string(raw), "\n")
}

// expectErrno checks a system call's outcome: want 0 means success.
func expectErrno(t *testing.T, what string, err error, want unix.Errno) {
	t.Helper()
	switch {
	case want == 0 && err != nil:
		t.Errorf("%s: %v, want success", what, err)
	case want != 0 && !errors.Is(err, want):
		t.Errorf("%s: got %v, want %s", what, err, unix.ErrnoName(want))
	}
}

// copyToTmp copies src into a fresh directory under /tmp, a tmpfs, where
// nothing is boot_verified.
func copyToTmp(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("open %s: %v", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s: %v", src, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("close %s: %v", dst, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dst, &sfs); err != nil {
		t.Fatalf("statfs %s: %v", dst, err)
	}
	if sfs.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is on file system type %#x, want a tmpfs", dst, sfs.Type)
	}
	return dst
}

// kernelConfig reads the running kernel's configuration: /proc/config.gz
// when the kernel has it, otherwise the package's config the host passed.
// Options that are not set are absent.
func kernelConfig(t *testing.T) map[string]string {
	t.Helper()
	var r io.Reader
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("read /proc/config.gz: %v", err)
		}
		r = gz
	} else {
		f, err := os.Open(hostFile(t, kernelConfigEnv))
		if err != nil {
			t.Fatalf("open kernel config: %v", err)
		}
		defer f.Close()
		r = f
	}
	config := map[string]string{}
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		key, value, ok := strings.Cut(scanner.Text(), "=")
		if ok && strings.HasPrefix(key, "CONFIG_") {
			config[key] = strings.Trim(value, `"`)
		}
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("read kernel config: %v", err)
	}
	if len(config) == 0 {
		t.Fatalf("kernel config has no options")
	}
	return config
}

// release is what uname -r reports, for messages.
func release(t *testing.T) string {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatalf("uname: %v", err)
	}
	return unix.ByteSliceToString(uts.Release[:])
}
