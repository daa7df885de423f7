package bypass

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// fixturesEnv names the initramfs directory where the host put the
// dynamic program, the shared object and the overlayfs module.
const fixturesEnv = "BPFIPE_BYPASS_FIXTURES"

const (
	busybox       = guestcli.Busybox
	dynamicLoader = "/lib64/ld-linux-x86-64.so.2"
	// Device ids (s_id) that records print in dev=.
	tmpfsID   = "tmpfs"
	overlayID = "overlay"
	// ruleDeny is how records name the rule that denies everything not on
	// the boot filesystem.
	ruleDeny = "DEFAULT op=EXECUTE action=DENY"
)

// allowlist is the policy of every test here: only the boot filesystem
// may execute; other operations are not restricted.
func allowlist(name string) string {
	return fmt.Sprintf("policy_name=%s policy_version=0.0.1\n"+
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n"+
		"DEFAULT op=EXECUTE action=DENY\n"+
		"DEFAULT action=ALLOW\n", name)
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// suite is what every test starts from: the allowlist loaded and the
// bpfipe that reads its events.
type suite struct {
	cli guestcli.CLI
}

func start(t *testing.T, name string) *suite {
	t.Helper()
	guestcli.RequireGuest(t)
	s := &suite{cli: guestcli.Initramfs(t)}
	s.cli.Load(t, allowlist(name))
	return s
}

// drain discards what earlier steps reported, so a case sees only its own
// records.
func (s *suite) drain(t *testing.T) {
	t.Helper()
	s.cli.Events(t)
}

// denial is the one record a denied step must produce.
type denial struct {
	hook string
	path string // empty: anonymous memory
	// dev is the s_id wanted; empty accepts any.
	dev string
	// ino, when not 0, is the inode wanted.
	ino uint64
	pid int // 0: not checked
}

// expectOnly checks that the records since the last drain are exactly the
// one denial want: nothing else was refused on the way (without success
// auditing, allowed steps report nothing).
func (s *suite) expectOnly(t *testing.T, want denial) {
	t.Helper()
	records := s.cli.Events(t)
	if len(records) != 1 {
		t.Errorf("want exactly one %s denial about %q, got %d records: %v", want.hook, want.path, len(records), records)
		return
	}
	r := records[0]
	var problems []string
	check := func(field string, got, want any) {
		if got != want {
			problems = append(problems, fmt.Sprintf("%s = %v, want %v", field, got, want))
		}
	}
	check("ipe_hook", r.Hook, want.hook)
	check("action", r.Action, guestcli.ActionDeny)
	check("rule", r.Rule, ruleDeny)
	check("enforcing", r.Enforcing, true)
	check("has_file", r.HasFile, want.path != "")
	check("path", r.Path, want.path)
	if want.dev != "" {
		check("dev", r.Dev, want.dev)
	}
	if want.ino != 0 {
		check("ino", r.Ino, want.ino)
	}
	if want.pid != 0 {
		check("pid", r.PID, want.pid)
	}
	if len(problems) > 0 {
		t.Errorf("record %v: %s", r, strings.Join(problems, "; "))
	}
}

// expectNone checks that nothing was denied since the last drain.
func (s *suite) expectNone(t *testing.T, what string) {
	t.Helper()
	if records := s.cli.Events(t); len(records) != 0 {
		t.Errorf("%s: want nothing denied, got %v", what, records)
	}
}

// inode is the inode number of path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// fixture is a file the host added to the initramfs.
func fixture(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv(fixturesEnv)
	if dir == "" {
		t.Fatalf("%s is unset: the host must add the fixtures (test/bypass)", fixturesEnv)
	}
	path := dir + "/" + name
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the host did not add what this test needs: %v", err)
	}
	return path
}

// rootfsDir makes a fresh directory on the initramfs itself, which is
// writable: whatever is put there is on the boot filesystem.
func rootfsDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/opt", name+"-")
	if err != nil {
		t.Fatalf("create a directory on the initramfs: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if !sameFilesystem(t, dir, "/") {
		t.Fatalf("%s is not on the initramfs", dir)
	}
	return dir
}

func sameFilesystem(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev
}
