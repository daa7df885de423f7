package enforce

import (
	"bytes"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// TestDynamicLoader runs a dynamically linked program through ld.so, as
// `ld.so ./untrusted` does to bypass exec checks: the loader itself is
// boot_verified and runs, but its executable mapping of a program copied
// to /tmp is denied at the MMAP hook. The same program from the initramfs
// runs, directly and through ld.so, so the libraries are not what fails.
func TestDynamicLoader(t *testing.T) {
	requireGuest(t)
	program := os.Getenv(dynamicProgramEnv)
	if program == "" {
		t.Fatalf("%s is unset: the host must add a dynamic program with %s and libc to the initramfs", dynamicProgramEnv, dynamicLoader)
	}
	for _, p := range []string{program, dynamicLoader} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the host did not add what this test needs: %v", err)
		}
	}
	c := guestcli.Initramfs(t)
	untrusted := guestcli.CopyToTmp(t, program, "untrusted")
	load(t, bootVerifiedOnly("ldso", "0.0.1"))

	expectExec(t, "boot_verified dynamic program", guestcli.Start(t, exec.Command(program)), 0)
	expectExec(t, "ld.so with a boot_verified program", guestcli.Start(t, exec.Command(dynamicLoader, program)), 0)
	if recs := c.Events(t); len(recs) != 0 {
		t.Errorf("boot_verified dynamic program: denials %v", recs)
	}

	got := guestcli.Start(t, exec.Command(untrusted))
	expectExec(t, "untrusted dynamic program", got, syscall.EACCES)
	expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: untrusted, action: actionDeny, rule: ruleGlobalDeny, enforcing: true})

	cmd := exec.Command(dynamicLoader, untrusted)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	got = guestcli.Start(t, cmd)
	if got.Errno != 0 || got.Code == 0 {
		t.Errorf("ld.so %s: %+v, want ld.so to start and fail to map it", untrusted, got)
	}
	t.Logf("ld.so said: %s", bytes.TrimSpace(stderr.Bytes()))
	records := c.Events(t)
	mmaps := guestcli.About(records, hookMmap, untrusted)
	if len(mmaps) == 0 {
		t.Errorf("ld.so %s: no MMAP record about the program; records: %v", untrusted, records)
	}
	// comm is the loader's once it runs: its file name, cut to 15 bytes.
	for _, r := range mmaps {
		checkRecord(t, r, wantRecord{hook: hookMmap, path: untrusted, action: actionDeny, rule: ruleGlobalDeny, enforcing: true, pid: got.PID, comm: "ld-linux-x86-64"})
	}
	if recs := guestcli.About(records, hookBprm, dynamicLoader); len(recs) != 0 {
		t.Errorf("exec of ld.so itself was denied: %v", recs)
	}
}

// TestMemfdExec execs a copy of busybox from a memfd, through execveat with
// AT_EMPTY_PATH and through /proc/self/fd: a memfd is on no boot
// filesystem, so a policy of file properties denies it. Switched to
// permissive, the same exec runs, which shows the helper itself works.
func TestMemfdExec(t *testing.T) {
	requireGuest(t)
	c := guestcli.Initramfs(t)
	load(t, bootVerifiedOnly("memfd", "0.0.1"))
	for _, mode := range []string{helperExecveat, helperProcFD} {
		t.Run(mode, func(t *testing.T) {
			name := "bpfipe-" + mode
			// d_path of a memfd: its name under the internal shmem mount,
			// unlinked.
			path := "/memfd:" + name + " (deleted)"

			got := runMemfdHelper(t, mode, name, "busybox", "true")
			if got.Code != helperExecFailed || got.execErrno != "EACCES" {
				t.Errorf("exec from memfd: exit %d, exec errno %q, want EACCES (output %q)", got.Code, got.execErrno, got.out)
			}
			expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: path, ino: got.ino, dev: tmpfsID, action: actionDeny, rule: ruleGlobalDeny, enforcing: true, pid: got.PID})

			c.Must(t, "enforce", "off")
			got = runMemfdHelper(t, mode, name, "busybox", "true")
			c.Must(t, "enforce", "on")
			if got.Code != 0 || got.execErrno != "" {
				t.Errorf("exec from memfd while permissive: exit %d, exec errno %q, want busybox true to run (output %q)", got.Code, got.execErrno, got.out)
			}
			expectOne(t, c.Events(t), wantRecord{hook: hookBprm, path: path, ino: got.ino, dev: tmpfsID, action: actionDeny, rule: ruleGlobalDeny, enforcing: false, pid: got.PID})
		})
	}
}
