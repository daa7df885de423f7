package bypass

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// helperEnv makes the test binary run one helper instead of its tests.
// Helpers change what a process is (its root, its mount namespace) or
// exec in ways os/exec cannot, in a process of their own, so that an exec
// that wrongly succeeds replaces the helper and not the test.
const helperEnv = "BPFIPE_BYPASS_HELPER"

// Helper modes and their arguments.
const (
	// helperMemfd SOURCE ARGV...: copy SOURCE into a memfd and
	// execveat(fd, "", AT_EMPTY_PATH), as glibc's fexecve does.
	helperMemfd = "memfd"
	// helperOPath PATH ARGV...: execveat of an O_PATH descriptor of PATH.
	helperOPath = "o-path"
	// helperChroot DIR PATH ARGV...: chroot to DIR, then exec PATH.
	helperChroot = "chroot"
	// helperMountNS SOURCE TARGET ARGV...: in a new mount namespace, bind
	// SOURCE over TARGET, then exec TARGET.
	helperMountNS = "mount-ns"
	// helperPatchedMapping FILE: map FILE private and writable, write a
	// return instruction over its first byte, make it executable and
	// call it.
	helperPatchedMapping = "patched-mapping"
)

// Helper exit statuses.
const (
	// helperRefused: the exec or mprotect was refused; the errno was
	// printed as "errno=NAME".
	helperRefused = 3
	helperBroken  = 2
)

// patchedCodeRan is what helperPatchedMapping prints when the code it
// wrote ran.
const patchedCodeRan = "patched code ran"

func runHelper(mode string, args []string) int {
	var err error
	switch {
	case mode == helperMemfd && len(args) >= 2:
		err = memfdExec(args[0], args[1:])
	case mode == helperOPath && len(args) >= 2:
		err = oPathExec(args[0], args[1:])
	case mode == helperChroot && len(args) >= 3:
		err = chrootExec(args[0], args[1], args[2:])
	case mode == helperMountNS && len(args) >= 3:
		err = mountNSExec(args[0], args[1], args[2:])
	case mode == helperPatchedMapping && len(args) == 1:
		err = runPatchedMapping(args[0])
		if err == nil {
			fmt.Println(patchedCodeRan)
			return 0
		}
	default:
		fmt.Fprintf(os.Stderr, "helper: bad mode or arguments: %q %q\n", mode, args)
		return helperBroken
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		return helperBroken
	}
	fmt.Printf("errno=%s\n", unix.ErrnoName(errno))
	return helperRefused
}

// setupError marks a failure before the step under test, which must not
// pass for a refusal.
type setupError struct{ err error }

func (e setupError) Error() string { return "setup: " + e.err.Error() }

var helperEnvironment = []string{"PATH=/bin"}

func memfdExec(source string, argv []string) error {
	content, err := os.ReadFile(source)
	if err != nil {
		return setupError{err}
	}
	fd, err := unix.MemfdCreate("bypass", 0)
	if err != nil {
		return setupError{err}
	}
	if _, err := unix.Write(fd, content); err != nil {
		return setupError{err}
	}
	return execveatEmptyPath(fd, argv)
}

func oPathExec(path string, argv []string) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return setupError{err}
	}
	return execveatEmptyPath(fd, argv)
}

func chrootExec(dir, path string, argv []string) error {
	if err := unix.Chroot(dir); err != nil {
		return setupError{err}
	}
	if err := unix.Chdir("/"); err != nil {
		return setupError{err}
	}
	return syscall.Exec(path, argv, helperEnvironment)
}

func mountNSExec(source, target string, argv []string) error {
	// The namespace belongs to this thread's fs context, and the exec
	// must come from the same thread.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return setupError{err}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return setupError{err}
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return setupError{err}
	}
	return syscall.Exec(target, argv, helperEnvironment)
}

// execveatEmptyPath is execveat(fd, "", argv, env, AT_EMPTY_PATH), which
// x/sys/unix does not wrap.
func execveatEmptyPath(fd int, argv []string) error {
	empty, err := syscall.BytePtrFromString("")
	if err != nil {
		return setupError{err}
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return setupError{err}
	}
	envp, err := syscall.SlicePtrFromStrings(helperEnvironment)
	if err != nil {
		return setupError{err}
	}
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(empty)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])), unix.AT_EMPTY_PATH, 0)
	return errno
}

// x86-64 "ret": calling it returns at once.
const opRet = 0xc3

// runPatchedMapping turns a private copy-on-write mapping of path into
// code of its own and runs it: the pages hold what this process wrote,
// but the mapping's file is still path.
func runPatchedMapping(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return setupError{err}
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return setupError{err}
	}
	mem[0] = opRet
	if err := unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return err
	}
	// A func value is a pointer to a word holding the code's address.
	code := unsafe.Pointer(&mem[0])
	funcValue := unsafe.Pointer(&code)
	call := *(*func())(unsafe.Pointer(&funcValue))
	call()
	return nil
}

// helperRun is one run of a helper.
type helperRun struct {
	guestcli.Exec
	// errno is the errno name the helper's step under test returned;
	// empty when it succeeded.
	errno string
	out   string
}

// runHelperProcess runs the test binary as the helper mode with args.
func runHelperProcess(t *testing.T, mode string, args ...string) helperRun {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary: %v", err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	res := helperRun{Exec: guestcli.Start(t, cmd), out: out.String()}
	if res.Exec.Errno != 0 {
		t.Fatalf("start helper %s: %v", mode, res.Exec.Errno)
	}
	if res.Code == helperBroken {
		t.Fatalf("helper %s %q could not set up: %s", mode, args, res.out)
	}
	for _, line := range strings.Split(res.out, "\n") {
		if v, ok := strings.CutPrefix(line, "errno="); ok {
			res.errno = v
		}
	}
	return res
}

// expectHelperRefused checks that the helper's step was refused with
// EACCES.
func expectHelperRefused(t *testing.T, what string, got helperRun) {
	t.Helper()
	if got.Code != helperRefused || got.errno != "EACCES" {
		t.Errorf("%s: exit %d, errno %q, want EACCES (output %q)", what, got.Code, got.errno, got.out)
	}
}

// expectHelperRan checks that the helper's exec ran busybox true.
func expectHelperRan(t *testing.T, what string, got helperRun) {
	t.Helper()
	if got.Code != 0 || got.errno != "" {
		t.Errorf("%s: exit %d, errno %q, want the exec to run and exit 0 (output %q)", what, got.Code, got.errno, got.out)
	}
}
