package enforce

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
	"golang.org/x/sys/unix"
)

// Helper modes: the test binary re-executes itself with helperEnv set to
// one of these to exec from a memfd in a process of its own, so a wrong
// decision replaces the helper rather than the test binary.
const (
	// helperExecveat: memfd_create, copy a file in, execveat(fd, "",
	// AT_EMPTY_PATH), as glibc's fexecve does.
	helperExecveat = "memfd-execveat"
	// helperProcFD: the same, exec'ing /proc/self/fd/N, fexecve's fallback.
	helperProcFD = "memfd-proc-fd"
)

// helperExecFailed is the helper's exit status when its exec returned.
const helperExecFailed = 3

// runHelper is the helper's main. args are the file to copy into the
// memfd, the memfd's name and the argv to exec with. It prints the memfd's
// inode number, then, if the exec returns, its errno.
func runHelper(mode string, args []string) int {
	if len(args) < 3 {
		fmt.Fprintf(os.Stderr, "helper %s: want SOURCE NAME ARGV...\n", mode)
		return 2
	}
	source, name, argv := args[0], args[1], args[2:]
	fd, err := memfdWith(source, name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		return 2
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: stat memfd: %v\n", mode, err)
		return 2
	}
	fmt.Printf("ino=%d\n", st.Ino)
	env := []string{"PATH=/bin"}
	switch mode {
	case helperExecveat:
		err = execveatEmptyPath(fd, argv, env)
	case helperProcFD:
		err = syscall.Exec(fmt.Sprintf("/proc/self/fd/%d", fd), argv, env)
	default:
		fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", mode)
		return 2
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		fmt.Fprintf(os.Stderr, "helper %s: exec: %v\n", mode, err)
		return 2
	}
	fmt.Printf("errno=%s\n", unix.ErrnoName(errno))
	return helperExecFailed
}

func memfdWith(source, name string) (int, error) {
	content, err := os.ReadFile(source)
	if err != nil {
		return -1, err
	}
	fd, err := unix.MemfdCreate(name, 0)
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := io.Copy(f, bytes.NewReader(content)); err != nil {
		return -1, fmt.Errorf("fill memfd: %w", err)
	}
	// f would close fd when collected; the exec needs it open.
	dup, err := unix.Dup(fd)
	if err != nil {
		return -1, err
	}
	f.Close()
	return dup, nil
}

// execveatEmptyPath is execveat(fd, "", argv, env, AT_EMPTY_PATH), which
// x/sys/unix does not wrap.
func execveatEmptyPath(fd int, argv, env []string) error {
	empty, err := syscall.BytePtrFromString("")
	if err != nil {
		return err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return errno
}

// helperRun is one run of a helper: how it ended, the memfd's inode and
// the errno its exec returned, if any.
type helperRun struct {
	guestcli.Exec
	ino uint64
	// execErrno is the errno name the helper's exec returned; empty when
	// the exec succeeded.
	execErrno string
	out       string
}

func runMemfdHelper(t *testing.T, mode, name string, argv ...string) helperRun {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary: %v", err)
	}
	cmd := exec.Command(self, append([]string{busybox, name}, argv...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	res := helperRun{Exec: guestcli.Start(t, cmd)}
	if res.Exec.Errno != 0 {
		t.Fatalf("start helper %s: %v", mode, res.Exec.Errno)
	}
	res.out = out.String()
	for _, line := range strings.Split(res.out, "\n") {
		if v, ok := strings.CutPrefix(line, "ino="); ok {
			if res.ino, err = strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatalf("helper printed %q: %v", line, err)
			}
		}
		if v, ok := strings.CutPrefix(line, "errno="); ok {
			res.execErrno = v
		}
	}
	if res.ino == 0 {
		t.Fatalf("helper %s printed no inode: %q (exit %d)", mode, res.out, res.Code)
	}
	return res
}
