package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// baseLayoutVersion changes whenever the base archive's layout changes, so
// archives cached by older code are not reused.
const baseLayoutVersion = "bpfipe-initramfs-base-1"

// baseDirs are the directories every guest has, besides mount points that
// init creates itself.
var baseDirs = []string{
	"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
	"/etc", "/root", "/tmp", "/run", "/mnt", "/var/tmp", "/proc", "/sys", "/dev",
	guestspec.ModulesDir,
}

// baseKey identifies a base archive by the content of everything in it.
func baseKey(initPath, busybox string, modules []loadedModule) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", baseLayoutVersion)
	for _, f := range []string{initPath, busybox} {
		if err := hashFile(h, f); err != nil {
			return "", fmt.Errorf("hash %s: %w", f, err)
		}
	}
	for _, m := range modules {
		sum := sha256.Sum256(m.image)
		fmt.Fprintf(h, "%s %x\n", m.name, sum)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// baseInitramfs returns the cached archive holding init, busybox and the
// modules, building it if no run has yet.
func baseInitramfs(ctx context.Context, cacheDir, initPath, busybox string, modules []loadedModule) (string, error) {
	key, err := baseKey(initPath, busybox, modules)
	if err != nil {
		return "", err
	}
	out := filepath.Join(cacheDir, "initramfs", "base-"+key+".cpio")
	if fileExists(out) {
		touch(out)
		return out, nil
	}
	prune(filepath.Join(cacheDir, "initramfs", "base-*.cpio"))
	applets, err := busyboxApplets(ctx, busybox)
	if err != nil {
		return "", err
	}
	err = writeFileAtomic(out, func(w io.Writer) error {
		return writeBaseArchive(w, initPath, busybox, applets, modules)
	})
	if err != nil {
		return "", fmt.Errorf("build base initramfs: %w", err)
	}
	return out, nil
}

// busyboxApplets lists the paths busybox installs its applets at, from the
// binary itself, so the links match whatever build the host has.
func busyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	var applets []string
	for _, line := range strings.Fields(string(out)) {
		applets = append(applets, "/"+strings.TrimPrefix(line, "/"))
	}
	return applets, nil
}

func writeBaseArchive(w io.Writer, initPath, busybox string, applets []string, modules []loadedModule) error {
	a := newArchive(w)
	for _, d := range baseDirs {
		mode := os.FileMode(0o755)
		if d == "/tmp" || d == "/var/tmp" {
			mode = 0o777
		}
		if err := a.dir(d, mode); err != nil {
			return err
		}
	}
	if err := a.copyFile("/init", initPath); err != nil {
		return err
	}
	if err := a.copyFile("/bin/busybox", busybox); err != nil {
		return err
	}
	for _, applet := range applets {
		// /init is ours, and busybox must not link to itself.
		if applet == "/bin/busybox" || applet == "/init" {
			continue
		}
		target, err := filepath.Rel(path.Dir(applet), "/bin/busybox")
		if err != nil {
			return err
		}
		if err := a.symlink(applet, target); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, data string }{
		{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"/etc/group", "root:x:0:\nnogroup:x:65534:\n"},
		{"/etc/hostname", "bpfipe-guest\n"},
	} {
		if err := a.file(f.name, 0o644, []byte(f.data)); err != nil {
			return err
		}
	}
	var order bytes.Buffer
	for _, m := range modules {
		guestPath := path.Join(guestspec.ModulesDir, m.name+".ko")
		if err := a.file(guestPath, 0o644, m.image); err != nil {
			return err
		}
		fmt.Fprintln(&order, guestPath)
	}
	if err := a.file(guestspec.ModuleOrderPath, 0o644, order.Bytes()); err != nil {
		return err
	}
	return a.close()
}

// Add copies a host file or directory into the guest.
type Add struct {
	Src string // host path
	Dst string // absolute guest path
}

// ParseAdd reads SRC:DST.
func ParseAdd(s string) (Add, error) {
	src, dst, ok := strings.Cut(s, ":")
	if !ok || src == "" || dst == "" {
		return Add{}, fmt.Errorf("parse --add %q: want SRC:DST", s)
	}
	if !strings.HasPrefix(dst, "/") {
		return Add{}, fmt.Errorf("parse --add %q: guest path %q is not absolute", s, dst)
	}
	return Add{Src: src, Dst: dst}, nil
}

// writeRunArchive writes the per-run archive: the run description, the
// bpfipe binary and the files the caller added. It follows the base archive,
// so its entries win over the base's.
func writeRunArchive(w io.Writer, spec *guestspec.Spec, bpfipe string, adds []Add) error {
	a := newArchive(w)
	raw, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := a.file(guestspec.SpecPath, 0o644, raw); err != nil {
		return err
	}
	if bpfipe != "" {
		if err := a.copyFile("/usr/local/bin/bpfipe", bpfipe); err != nil {
			return err
		}
	}
	for _, add := range adds {
		if err := a.tree(add.Dst, add.Src); err != nil {
			return fmt.Errorf("add %s: %w", add.Src, err)
		}
	}
	return a.close()
}

// assembleInitramfs writes the base archive followed by the run's archive
// into one file for qemu's -initrd.
func assembleInitramfs(out, base string, spec *guestspec.Spec, bpfipe string, adds []Add) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	in, err := os.Open(base)
	if err != nil {
		f.Close()
		return err
	}
	_, err = io.Copy(f, in)
	in.Close()
	if err == nil {
		err = writeRunArchive(f, spec, bpfipe, adds)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("assemble initramfs: %w", err)
	}
	return nil
}
