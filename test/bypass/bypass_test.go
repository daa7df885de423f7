// Package bypass boots test/guest/bypass on every stock kernel: the ways
// around an exec allowlist that docs/bypass.md lists, each either denied by
// bpfipe or shown to be out of scope exactly as it is for IPE.
package bypass

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

const guestPackage = "./test/guest/bypass"

// Where the guest finds what the host adds: in the initramfs, so all of it
// is boot_verified. test/guest/bypass names the same paths.
const (
	guestFixtures = "/opt/bypass"
	fixturesEnv   = "BPFIPE_BYPASS_FIXTURES"
	dynamicLoader = "/lib64/ld-linux-x86-64.so.2"
	libc          = "/lib/x86_64-linux-gnu/libc.so.6"
)

// guestTimeout bounds one guest; the suite loads one policy and runs some
// forty short cases under software emulation.
const guestTimeout = 8 * time.Minute

func TestBypass(t *testing.T) {
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	built := buildFixtures(t)
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			vmtest.Require(t, kernel)
			opts := []vmtest.Option{
				vmtest.WithTimeout(guestTimeout),
				vmtest.WithEnv(fixturesEnv + "=" + guestFixtures),
				vmtest.WithAdd(hostFile(t, dynamicLoader), dynamicLoader),
				vmtest.WithAdd(hostFile(t, libc), libc),
				vmtest.WithAdd(overlayModule(t, kernel), guestFixtures+"/overlay.ko"),
			}
			for _, name := range []string{"dlopen-loader", "libbypass-probe.so"} {
				opts = append(opts, vmtest.WithAdd(filepath.Join(built, name), guestFixtures+"/"+name))
			}
			vmtest.RunGoTests(t, kernel, guestPackage, opts...)
		})
	}
}

// buildFixtures compiles the dynamic program and the shared object of
// testdata with the host's gcc: glibc's dlopen and ld.so are the loaders a
// bypass would go through.
func buildFixtures(t *testing.T) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		requireOrSkip(t, "gcc (Debian package gcc) builds the dlopen fixtures: %v", err)
	}
	dir := t.TempDir()
	for _, build := range [][]string{
		{"-O2", "-Wall", "-Wextra", "-Werror", "-o", filepath.Join(dir, "dlopen-loader"), "testdata/dlopen-loader.c"},
		{"-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", filepath.Join(dir, "libbypass-probe.so"), "testdata/probe.c"},
	} {
		out, err := exec.Command(gcc, build...).CombinedOutput()
		if err != nil {
			t.Fatalf("gcc %s: %v\n%s", strings.Join(build, " "), err, out)
		}
	}
	return dir
}

// overlayModule decompresses the kernel's overlayfs module for the guest to
// insert itself: the cloud kernels build overlayfs as a module, and the
// runner loads only the modules every guest needs.
func overlayModule(t *testing.T, kernel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := vm.EnsureKernel(ctx, kernel)
	if err != nil {
		t.Fatalf("kernel %s: %v", kernel, err)
	}
	matches, _ := filepath.Glob(filepath.Join(k.ModulesDir, "kernel", "fs", "overlayfs", "overlay.ko*"))
	if len(matches) != 1 {
		t.Fatalf("kernel %s: want one overlayfs module under %s, found %q", kernel, k.ModulesDir, matches)
	}
	raw, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	image := raw
	if strings.HasSuffix(matches[0], ".xz") {
		r, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("decompress %s: %v", matches[0], err)
		}
		if image, err = io.ReadAll(r); err != nil {
			t.Fatalf("decompress %s: %v", matches[0], err)
		}
	}
	out := filepath.Join(t.TempDir(), "overlay.ko")
	if err := os.WriteFile(out, image, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// hostFile resolves symlinks, which the initramfs would carry as links to
// files it does not hold.
func hostFile(t *testing.T, path string) string {
	t.Helper()
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatalf("the guest needs the host's %s (glibc's loader and libc): %v", path, err)
	}
	return resolved
}

// requireOrSkip skips, naming what is missing, or fails in CI, where a
// missing tool must not pass silently.
func requireOrSkip(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run here (failing because CI=true): %s", msg)
	}
	t.Skipf("cannot run here: %s", msg)
}
