package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/bpfipe/bpfipe/vm"
)

// fapolicyd, the user-space peer, comes from Debian's package and runs in
// the guest with the host's libraries, as the guest has none of its own.

// GuestFapolicydDir holds the daemon and its libraries in the guest.
const GuestFapolicydDir = "/opt/fapolicyd"

// fapolicydPackages are fapolicyd and the one library it needs that a
// Debian host with libmagic, libssl, libseccomp, libcap-ng and libudev
// (all common) does not have already.
var fapolicydPackages = []string{"fapolicyd", "liblmdb0"}

// fapolicydConf is Debian's fapolicyd.conf with what the guest needs
// changed: root instead of a fapolicyd user, the initramfs's filesystem
// types watched, and the file trust backend only (there is no package
// database in the guest).
const fapolicydConf = `permissive = 0
nice_val = 14
q_size = 640
uid = 0
gid = 0
do_stat_report = 0
detailed_report = 0
db_max_size = 50
subj_cache_size = 1549
obj_cache_size = 8191
watch_fs = rootfs,tmpfs,ramfs
trust = file
integrity = none
syslog_format = rule,dec,perm,auid,pid,exe,:,path,ftype,trust
rpm_sha256_only = 0
allow_filesystem_mark = 0
`

// fapolicydRules is the same policy as the benchmark's, in fapolicyd's
// terms: what the trust database lists may run, nothing else may, and
// opening for reading is free.
const fapolicydRules = `allow perm=any all : trust=1
deny_audit perm=execute all : all
allow perm=open all : all
`

// addFapolicyd sets fapolicyd up for the guest and returns the guest's
// flags for it: where it is, or why there is none. Only a failure to
// write into work is an error; anything missing is a reason.
func addFapolicyd(ctx context.Context, work string, trusted map[string]string, adds *[]vm.Add) ([]string, error) {
	missing := func(err error) ([]string, error) {
		return []string{"--fapolicyd-missing", "fapolicyd could not be set up on the host: " + err.Error()}, nil
	}
	root := filepath.Join(work, "fapolicyd-root")
	if err := extractPackages(ctx, root, fapolicydPackages); err != nil {
		return missing(err)
	}
	daemon := filepath.Join(root, "usr/sbin/fapolicyd")
	libs, err := sharedLibraries(ctx, daemon, filepath.Join(root, "usr/lib/x86_64-linux-gnu"))
	if err != nil {
		return missing(err)
	}
	etc := filepath.Join(work, "fapolicyd-etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return nil, err
	}
	var trust strings.Builder
	trust.WriteString("# the benchmark's programs, the guest's shell and the dynamic loader and libc\n")
	for guestPath, hostPath := range trusted {
		size, sum, err := sizeAndDigest(hostPath)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&trust, "%s %d %s\n", guestPath, size, sum)
	}
	files := map[string]string{
		"fapolicyd.conf":  fapolicydConf,
		"fapolicyd.rules": fapolicydRules,
		"compiled.rules":  fapolicydRules,
		"fapolicyd.trust": trust.String(),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	*adds = append(*adds,
		vm.Add{Src: daemon, Dst: GuestFapolicydDir + "/fapolicyd"},
		vm.Add{Src: etc, Dst: "/etc/fapolicyd"},
		vm.Add{Src: filepath.Join(root, "usr/share/fapolicyd/fapolicyd-magic.mgc"), Dst: "/usr/share/fapolicyd/fapolicyd-magic.mgc"},
	)
	for _, lib := range libs {
		*adds = append(*adds, vm.Add{Src: lib.file, Dst: path.Join(GuestFapolicydDir, "lib", lib.name)})
	}
	return []string{"--fapolicyd", GuestFapolicydDir}, nil
}

// extractPackages downloads Debian packages with apt-get into the cache
// (once) and unpacks them into root.
func extractPackages(ctx context.Context, root string, packages []string) error {
	cache, err := vm.DefaultCacheDir()
	if err != nil {
		return err
	}
	debs := filepath.Join(cache, "fapolicyd")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return err
	}
	for _, pkg := range packages {
		found, _ := filepath.Glob(filepath.Join(debs, pkg+"_*.deb"))
		if len(found) == 0 {
			cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
			cmd.Dir = debs
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get download %s: %w: %s", pkg, err, lastLine(out))
			}
			if found, _ = filepath.Glob(filepath.Join(debs, pkg+"_*.deb")); len(found) == 0 {
				return fmt.Errorf("apt-get download %s left no package", pkg)
			}
		}
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", found[len(found)-1], root).CombinedOutput(); err != nil {
			return fmt.Errorf("unpack %s: %w: %s", pkg, err, lastLine(out))
		}
	}
	return nil
}

// library is a shared library a program loads: the name it asks for and
// the file that name resolves to on the host.
type library struct{ name, file string }

// sharedLibraries lists the libraries program loads, as ldd finds them
// with extra searched first.
func sharedLibraries(ctx context.Context, program, extra string) ([]library, error) {
	cmd := exec.CommandContext(ctx, "ldd", program)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+extra)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", program, err)
	}
	var libs []library
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		name, target, ok := strings.Cut(strings.TrimSpace(sc.Text()), " => ")
		if !ok {
			continue
		}
		file, _, _ := strings.Cut(target, " (")
		if file == "not found" {
			return nil, fmt.Errorf("ldd %s: %s is not found", program, name)
		}
		resolved, err := filepath.EvalSymlinks(file)
		if err != nil {
			return nil, err
		}
		libs = append(libs, library{name: name, file: resolved})
	}
	return libs, sc.Err()
}

func sizeAndDigest(file string) (int64, string, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
