package kread

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
	"golang.org/x/sys/unix"
)

// testModule is the module the host put in the initramfs.
type testModule struct {
	name  string
	file  string // for finit_module
	image string // the ELF image, for init_module
}

func moduleUnderTest(t *testing.T) testModule {
	t.Helper()
	m := testModule{
		name:  os.Getenv(moduleNameEnv),
		file:  hostFile(t, moduleFileEnv),
		image: hostFile(t, moduleImageEnv),
	}
	if m.name == "" {
		t.Fatalf("%s is unset: the host side (test/kread) passes it", moduleNameEnv)
	}
	if m.loaded() {
		t.Fatalf("module %s is already loaded: a test must start without it", m.name)
	}
	return m
}

func (m testModule) loaded() bool {
	_, err := os.Stat("/sys/module/" + m.name)
	return err == nil
}

// finit loads the module from path with finit_module, asking the kernel to
// decompress a .ko.xz (MODULE_INIT_COMPRESSED_FILE, CONFIG_MODULE_DECOMPRESS).
func (m testModule) finit(t *testing.T, path string) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	m.removeLater(t, err)
	return err
}

// initModule loads the module from memory with init_module: no file.
func (m testModule) initModule(t *testing.T) error {
	t.Helper()
	image, err := os.ReadFile(m.image)
	if err != nil {
		t.Fatalf("read module image: %v", err)
	}
	err = unix.InitModule(image, "")
	m.removeLater(t, err)
	return err
}

// removeLater unloads the module when t ends if a load succeeded, so every
// test starts without it.
func (m testModule) removeLater(t *testing.T, loadErr error) {
	t.Helper()
	if loadErr != nil {
		return
	}
	t.Cleanup(func() {
		if err := unix.DeleteModule(m.name, unix.O_NONBLOCK); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("delete module %s: %v", m.name, err)
		}
	})
}

// expectLoaded checks /sys/module against a load's outcome.
func (m testModule) expectLoaded(t *testing.T, want bool) {
	t.Helper()
	if got := m.loaded(); got != want {
		t.Errorf("module %s loaded = %t, want %t", m.name, got, want)
	}
}

// TestFinitModule: finit_module reads the module through kernel_read_file
// (READING_MODULE), so the file's properties decide.
func TestFinitModule(t *testing.T) {
	requireGuest(t)
	m := moduleUnderTest(t)
	const ruleBootAllow = "op=KMODULE boot_verified=TRUE action=ALLOW"
	const ruleOpDeny = "DEFAULT op=KMODULE action=DENY"
	load(t, policyText(ruleBootAllow, ruleOpDeny, "DEFAULT action=ALLOW"), "--success-audit")

	t.Run("initramfs module allowed", func(t *testing.T) {
		err := m.finit(t, m.file)
		expectErrno(t, "finit_module of "+m.file, err, 0)
		m.expectLoaded(t, true)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKmodule, hook: hookRead, path: m.file, dev: rootfsID,
			action: actionAllow, rule: ruleBootAllow})
	})
	t.Run("tmpfs copy denied", func(t *testing.T) {
		copied := copyToTmp(t, m.file)
		err := m.finit(t, copied)
		expectErrno(t, "finit_module of "+copied, err, unix.EACCES)
		m.expectLoaded(t, false)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKmodule, hook: hookRead, path: copied, dev: tmpfsID,
			action: actionDeny, rule: ruleOpDeny})
	})
}

// TestInitModule: init_module hands the kernel a buffer, not a file
// (kernel_load_data, LOADING_MODULE), so only DEFAULTs, rules without
// properties and =FALSE properties (true without a file) can match it.
func TestInitModule(t *testing.T) {
	requireGuest(t)
	m := moduleUnderTest(t)

	t.Run("boot_verified=FALSE matches no file", func(t *testing.T) {
		const rule = "op=KMODULE boot_verified=FALSE action=DENY"
		load(t, policyText(rule, "DEFAULT action=ALLOW"))
		expectErrno(t, "init_module", m.initModule(t), unix.EACCES)
		m.expectLoaded(t, false)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKmodule, hook: hookLoad, action: actionDeny, rule: rule})

		// The same rule leaves a boot_verified file alone.
		expectErrno(t, "finit_module of "+m.file, m.finit(t, m.file), 0)
		m.expectLoaded(t, true)
		expectNone(t, guestcli.Initramfs(t).Events(t), opKmodule)
	})
	t.Run("op DEFAULT allows", func(t *testing.T) {
		const rule = "DEFAULT op=KMODULE action=ALLOW"
		load(t, policyText(rule, "DEFAULT op=EXECUTE action=ALLOW", "DEFAULT action=DENY"), "--success-audit")
		expectErrno(t, "init_module", m.initModule(t), 0)
		m.expectLoaded(t, true)
		expectOne(t, guestcli.Initramfs(t).Events(t), wantRecord{op: opKmodule, hook: hookLoad, action: actionAllow, rule: rule})
	})
	t.Run("global DEFAULT denies", func(t *testing.T) {
		load(t, policyText("DEFAULT op=EXECUTE action=ALLOW", "DEFAULT action=DENY"))
		expectErrno(t, "init_module", m.initModule(t), unix.EACCES)
		m.expectLoaded(t, false)
		// The text form, as IPE's AUDIT_IPE_ACCESS prints a decision
		// without a file.
		comm := selfComm(t)
		if strings.ContainsAny(comm, "\" ") {
			t.Fatalf("comm %q would be hex-encoded; the expected line assumes a plain one", comm)
		}
		want := "ipe_op=KMODULE ipe_hook=KERNEL_LOAD enforcing=1 pid=" + strconv.Itoa(os.Getpid()) +
			` comm="` + comm + `" path=? dev=? ino=? rule="DEFAULT action=DENY"`
		out := guestcli.Initramfs(t).Must(t, "events").Stdout
		var lines []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(line, "ipe_op=KMODULE ") {
				lines = append(lines, line)
			}
		}
		if len(lines) != 1 || lines[0] != want {
			t.Errorf("bpfipe events printed KMODULE records %q, want exactly %q", lines, want)
		}
	})
}
