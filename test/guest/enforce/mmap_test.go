package enforce

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
	"golang.org/x/sys/unix"
)

const (
	protR = unix.PROT_READ
	protW = unix.PROT_WRITE
	protX = unix.PROT_EXEC
)

// mapLength is one page of the mapped file, enough for any mapping here.
const mapLength = 4096

func mmapFile(f *os.File, prot int, shared bool) ([]byte, error) {
	flags := unix.MAP_PRIVATE
	if shared {
		flags = unix.MAP_SHARED
	}
	return unix.Mmap(int(f.Fd()), 0, mapLength, prot, flags)
}

func mmapAnon(prot int, shared bool) ([]byte, error) {
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if shared {
		flags = unix.MAP_SHARED | unix.MAP_ANONYMOUS
	}
	return unix.Mmap(-1, 0, mapLength, prot, flags)
}

func unmap(t *testing.T, mem []byte) {
	t.Helper()
	if err := unix.Munmap(mem); err != nil {
		t.Errorf("munmap: %v", err)
	}
}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func protName(prot int) string {
	var b strings.Builder
	for _, p := range []struct {
		bit  int
		name string
	}{{protR, "R"}, {protW, "W"}, {protX, "X"}} {
		if prot&p.bit != 0 {
			b.WriteString(p.name)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// expectErrno checks err from an mmap or mprotect: nil when allowed,
// EACCES when denied.
func expectErrno(t *testing.T, what string, err error, allow bool) {
	t.Helper()
	switch {
	case allow && err != nil:
		t.Errorf("%s: %v, want it allowed", what, err)
	case !allow && !errors.Is(err, syscall.EACCES):
		t.Errorf("%s: error %v, want EACCES", what, err)
	}
}

// TestMmap runs the microsoft/ipe suite's mmap cases under a policy that
// only lets the boot filesystem execute: executable mappings of a file in
// /tmp and of anonymous memory are denied at the MMAP hook, mappings
// without PROT_EXEC are not even checked, and an executable mapping of a
// boot_verified file is allowed.
func TestMmap(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	untrusted := openFile(t, guestcli.CopyToTmp(t, busybox, "mapped"))
	trusted := openFile(t, busybox)
	load(t, bootVerifiedOnly("mmap", "0.0.1"))

	for _, tc := range []struct {
		name   string
		file   *os.File // nil: anonymous memory
		prot   int
		shared bool
		allow  bool
	}{
		{"file X", untrusted, protX, false, false},
		{"file RX", untrusted, protR | protX, false, false},
		{"file WX", untrusted, protW | protX, false, false},
		{"file shared X", untrusted, protX, true, false},
		{"file shared RX", untrusted, protR | protX, true, false},
		{"anonymous X", nil, protX, false, false},
		{"anonymous RX", nil, protR | protX, false, false},
		{"anonymous WX", nil, protW | protX, false, false},
		{"shared anonymous X", nil, protX, true, false},
		{"shared anonymous RX", nil, protR | protX, true, false},
		{"file R", untrusted, protR, false, true},
		{"file W", untrusted, protW, false, true},
		{"file RW", untrusted, protR | protW, false, true},
		{"boot_verified file RX", trusted, protR | protX, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mem []byte
			var err error
			path := ""
			if tc.file != nil {
				path = tc.file.Name()
				mem, err = mmapFile(tc.file, tc.prot, tc.shared)
			} else {
				mem, err = mmapAnon(tc.prot, tc.shared)
			}
			if err == nil {
				unmap(t, mem)
			}
			expectErrno(t, "mmap "+protName(tc.prot), err, tc.allow)
			records := c.Events(t)
			if tc.allow {
				if recs := guestcli.About(records, hookMmap, path); len(recs) != 0 {
					t.Errorf("allowed mapping was reported without success auditing: %v", recs)
				}
				return
			}
			expectOne(t, records, wantRecord{hook: hookMmap, path: path, action: actionDeny, rule: ruleGlobalDeny, enforcing: true, pid: os.Getpid()})
		})
	}
}

// TestMprotect runs the suite's mprotect cases: adding PROT_EXEC to a
// mapping of a file in /tmp is denied at the MPROTECT hook, changes
// without PROT_EXEC are not checked.
func TestMprotect(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	untrusted := openFile(t, guestcli.CopyToTmp(t, busybox, "mapped"))
	trusted := openFile(t, busybox)
	load(t, bootVerifiedOnly("mprotect", "0.0.1"))

	for _, tc := range []struct {
		name     string
		file     *os.File // nil: anonymous memory
		from, to int
		allow    bool
	}{
		{"W to R", untrusted, protW, protR, true},
		{"R to W", untrusted, protR, protW, true},
		{"W to X", untrusted, protW, protX, false},
		{"W to RX", untrusted, protW, protR | protX, false},
		{"R to X", untrusted, protR, protX, false},
		{"R to WX", untrusted, protR, protW | protX, false},
		{"anonymous RW to RWX", nil, protR | protW, protR | protW | protX, false},
		{"boot_verified file R to RX", trusted, protR, protR | protX, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mem []byte
			var err error
			path := ""
			if tc.file != nil {
				path = tc.file.Name()
				mem, err = mmapFile(tc.file, tc.from, false)
			} else {
				mem, err = mmapAnon(tc.from, false)
			}
			if err != nil {
				t.Fatalf("mmap %s: %v", protName(tc.from), err)
			}
			defer unmap(t, mem)
			err = unix.Mprotect(mem, tc.to)
			expectErrno(t, "mprotect "+protName(tc.from)+" to "+protName(tc.to), err, tc.allow)
			records := c.Events(t)
			if tc.allow {
				if recs := guestcli.About(records, hookMprotect, path); len(recs) != 0 {
					t.Errorf("allowed mprotect was reported without success auditing: %v", recs)
				}
				return
			}
			expectOne(t, records, wantRecord{hook: hookMprotect, path: path, action: actionDeny, rule: ruleGlobalDeny, enforcing: true, pid: os.Getpid()})
		})
	}
}

// TestMprotectAlreadyExecutable builds an executable mapping of a /tmp
// file while the policy allows it, then updates to a policy that denies
// it: mprotect of the mapping that keeps it executable is not checked, but
// once PROT_EXEC is dropped, adding it back is.
func TestMprotectAlreadyExecutable(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	untrusted := openFile(t, guestcli.CopyToTmp(t, busybox, "mapped"))
	load(t, "policy_name=mprotect_x policy_version=0.0.1\nop=EXECUTE action=ALLOW\nDEFAULT action=DENY\n")

	mem, err := mmapFile(untrusted, protR|protX, false)
	if err != nil {
		t.Fatalf("mmap RX while allowed: %v", err)
	}
	defer unmap(t, mem)

	c.Must(t, "update", guestcli.WritePolicy(t, bootVerifiedOnly("mprotect_x", "0.0.2")))
	// The new policy is in force: a new executable mapping is refused.
	if fresh, err := mmapFile(untrusted, protR|protX, false); err == nil {
		unmap(t, fresh)
		t.Fatalf("mmap RX after the update to a denying policy succeeded")
	} else if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("mmap RX after the update: %v, want EACCES", err)
	}
	expectOne(t, c.Events(t), wantRecord{hook: hookMmap, path: untrusted.Name(), action: actionDeny, rule: ruleGlobalDeny, enforcing: true, generation: 2, pid: os.Getpid()})

	for _, prot := range []int{protR | protX, protX, protR | protW | protX} {
		if err := unix.Mprotect(mem, prot); err != nil {
			t.Errorf("mprotect of an executable mapping to %s: %v, want it unchecked", protName(prot), err)
		}
	}
	if recs := guestcli.About(c.Events(t), hookMprotect, untrusted.Name()); len(recs) != 0 {
		t.Errorf("mprotect of an executable mapping was evaluated: %v", recs)
	}

	if err := unix.Mprotect(mem, protR); err != nil {
		t.Fatalf("mprotect to R: %v", err)
	}
	err = unix.Mprotect(mem, protR|protX)
	expectErrno(t, "mprotect R to RX after dropping X", err, false)
	expectOne(t, c.Events(t), wantRecord{hook: hookMprotect, path: untrusted.Name(), action: actionDeny, rule: ruleGlobalDeny, enforcing: true, generation: 2, pid: os.Getpid()})
}
