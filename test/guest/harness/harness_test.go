package harness

import (
	"bufio"
	"encoding/binary"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Environment the host side sets to steer these tests.
const (
	// failEnv makes TestDeliberateFailure fail, so the host can check that
	// in-guest failures come back as failures, with their output.
	failEnv = "BPFIPE_HARNESS_FAIL"
	// platformCNEnv names the common name of the certificate the host
	// enrolled in the UEFI db; TestPlatformKeyring looks for it.
	platformCNEnv = "BPFIPE_HARNESS_PLATFORM_CN"
)

func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv("BPFIPE_GUEST") != "1" {
		t.Skip("runs only inside a bpfipe-vm guest (test/vmtest boots it)")
	}
}

// kernelAtLeast compares the running kernel's major.minor with want.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatalf("uname: %v", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("parse kernel release %q", release)
	}
	gotMajor, err1 := strconv.Atoi(parts[0])
	gotMinor, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		t.Fatalf("parse kernel release %q", release)
	}
	return gotMajor > major || gotMajor == major && gotMinor >= minor
}

func TestRunsAsRoot(t *testing.T) {
	requireGuest(t)
	if uid := os.Geteuid(); uid != 0 {
		t.Fatalf("effective uid is %d, want 0", uid)
	}
}

func TestActiveLSMs(t *testing.T) {
	requireGuest(t)
	raw, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		t.Fatalf("read LSM list: %v", err)
	}
	lsms := strings.Split(strings.TrimSpace(string(raw)), ",")
	has := func(name string) bool {
		for _, l := range lsms {
			if l == name {
				return true
			}
		}
		return false
	}
	if !has("bpf") {
		t.Errorf("active LSMs %q lack bpf", lsms)
	}
	if kernelAtLeast(t, 6, 12) && !has("ipe") {
		t.Errorf("active LSMs %q lack ipe on a 6.12 kernel", lsms)
	}
}

func TestMounts(t *testing.T) {
	requireGuest(t)
	f, err := os.Open("/proc/mounts")
	if err != nil {
		t.Fatalf("open mounts: %v", err)
	}
	defer f.Close()
	mounted := map[string]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 3 {
			mounted[fields[1]] = fields[2]
		}
	}
	for target, fstype := range map[string]string{
		"/proc":                "proc",
		"/sys":                 "sysfs",
		"/dev":                 "devtmpfs",
		"/sys/kernel/security": "securityfs",
		"/sys/fs/bpf":          "bpf",
		"/sys/kernel/tracing":  "tracefs",
		"/sys/fs/cgroup":       "cgroup2",
		"/tmp":                 "tmpfs",
	} {
		if got := mounted[target]; got != fstype {
			t.Errorf("%s is mounted as %q, want %q", target, got, fstype)
		}
	}
}

func TestModulesLoaded(t *testing.T) {
	requireGuest(t)
	// /sys/module lists built-in and loaded modules alike; a module the
	// runner failed to load is absent.
	for _, m := range []string{"virtio_blk", "dm_mod", "dm_verity", "loop", "squashfs"} {
		if _, err := os.Stat("/sys/module/" + m); err != nil {
			t.Errorf("module %s is not loaded: %v", m, err)
		}
	}
}

func TestBpfipeOnPath(t *testing.T) {
	requireGuest(t)
	path, err := exec.LookPath("bpfipe")
	if err != nil {
		t.Fatalf("bpfipe is not on PATH: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat bpfipe: %v", err)
	}
	if info.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable (mode %v)", path, info.Mode())
	}
}

func TestRunsInPackageDirectory(t *testing.T) {
	requireGuest(t)
	got, err := os.ReadFile("testdata/hello.txt")
	if err != nil {
		t.Fatalf("read testdata relative to the working directory: %v", err)
	}
	if want := "harness testdata\n"; string(got) != want {
		t.Errorf("testdata/hello.txt = %q, want %q", got, want)
	}
}

func TestSubtests(t *testing.T) {
	requireGuest(t)
	for _, name := range []string{"first", "second"} {
		t.Run(name, func(t *testing.T) {
			t.Logf("subtest %s ran", name)
			if t.Name() != "TestSubtests/"+name {
				t.Errorf("name %q, want TestSubtests/%s", t.Name(), name)
			}
		})
	}
}

func TestDeliberateFailure(t *testing.T) {
	requireGuest(t)
	if os.Getenv(failEnv) != "1" {
		t.Skip("fails only when the runner's failure-reporting test sets " + failEnv)
	}
	t.Error("deliberate failure for the harness")
}

func TestPlatformKeyring(t *testing.T) {
	requireGuest(t)
	cn := os.Getenv(platformCNEnv)
	if cn == "" {
		t.Skip("needs a UEFI db certificate: the host sets " + platformCNEnv)
	}
	id := keyringID(t, ".platform")
	keys := readKeyring(t, id)
	var descriptions []string
	for _, key := range keys {
		desc, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, key)
		if err != nil {
			t.Fatalf("describe key %d: %v", key, err)
		}
		descriptions = append(descriptions, desc)
		if strings.Contains(desc, cn) {
			return
		}
	}
	t.Errorf(".platform keyring holds no key for %q; it holds %q", cn, descriptions)
}

// keyringID finds a keyring's serial in /proc/keys, which lists keyrings by
// description.
func keyringID(t *testing.T, name string) int {
	t.Helper()
	raw, err := os.ReadFile("/proc/keys")
	if err != nil {
		t.Fatalf("read /proc/keys: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 9 && fields[7] == "keyring" && strings.TrimSuffix(fields[8], ":") == name {
			id, err := strconv.ParseInt(fields[0], 16, 32)
			if err != nil {
				t.Fatalf("parse keyring serial %q: %v", fields[0], err)
			}
			return int(id)
		}
	}
	t.Fatalf("no %s keyring in /proc/keys", name)
	return 0
}

func readKeyring(t *testing.T, id int) []int {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	if err != nil {
		t.Fatalf("read keyring %d: %v", id, err)
	}
	if n > len(buf) {
		t.Fatalf("keyring %d holds more keys than fit in %d bytes", id, len(buf))
	}
	// The keyring's payload is its keys' serials, native-endian int32s.
	var keys []int
	for off := 0; off+4 <= n; off += 4 {
		keys = append(keys, int(int32(binary.NativeEndian.Uint32(buf[off:]))))
	}
	return keys
}
