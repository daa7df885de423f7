package tamper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

const (
	// guestEnv is set by the bpfipe-vm guest init.
	guestEnv = "BPFIPE_GUEST"
	pinDir   = "/sys/fs/bpf/bpfipe"
	// busybox is static and in the initramfs: boot_verified.
	busybox = "/bin/busybox"
	// exitPrivilege is bpfipe's exit status for a refused command
	// (cmd/bpfipe/main.go).
	exitPrivilege = 4
	// mark starts the kernel name of every object the guard protects.
	mark = "bpfipe_"
)

func requireGuest(t *testing.T) {
	t.Helper()
	if os.Getenv(guestEnv) != "1" {
		t.Skip("runs only inside a bpfipe-vm guest (test/tamper boots it)")
	}
}

// policy denies executing anything that is not on the boot filesystem, so
// bpfipe, busybox and this binary run and a copy in /tmp does not.
func policy(version string) string {
	return "policy_name=tamper policy_version=" + version + "\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=FALSE action=DENY\n"
}

// unloadAfter makes sure a test leaves nothing loaded for the next.
func unloadAfter(t *testing.T) {
	t.Cleanup(func() {
		if res := guestcli.Initramfs(t).Run(t, "unload"); res.Code != 0 && res.Code != guestcli.ExitNotLoaded {
			t.Errorf("unload after the test: %s", res)
		}
	})
}

// untrusted copies busybox into /tmp as "true", where it is not
// boot_verified.
func untrusted(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "true")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// execErrno runs "true" from path and returns the errno of the exec, or 0
// when it ran and succeeded.
func execErrno(t *testing.T, path string) syscall.Errno {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Args = []string{"true"}
	err := cmd.Run()
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	t.Fatalf("run %s: %v, want it to run or its exec to fail", path, err)
	return 0
}

// checkDecisions asserts the policy's two answers.
func checkDecisions(t *testing.T, copy string) {
	t.Helper()
	if got := execErrno(t, busybox); got != 0 {
		t.Errorf("exec of the boot_verified busybox: %v, want it allowed", got)
	}
	if got := execErrno(t, copy); got != syscall.EACCES {
		t.Errorf("exec of the /tmp copy: %v, want EACCES", got)
	}
}

func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

// wantRefused asserts that err is the guard's refusal: EPERM, or EACCES
// where the kernel turns a refused ptrace check into it (mm_access).
func wantRefused(t *testing.T, what string, err error, errnos ...syscall.Errno) {
	t.Helper()
	if len(errnos) == 0 {
		errnos = []syscall.Errno{syscall.EPERM}
	}
	got := errnoOf(err)
	for _, e := range errnos {
		if got == e && got != 0 {
			return
		}
	}
	t.Errorf("%s: %v, want %v", what, err, errnos)
}

// The bpf(2) commands the tests issue directly, so each errno is the
// kernel's own and not a library's retry or translation.
const (
	bpfObjGet          = 7
	bpfProgGetNextID   = 11
	bpfMapGetNextID    = 12
	bpfProgGetFDByID   = 13
	bpfMapGetFDByID    = 14
	bpfLinkUpdate      = 29
	bpfLinkGetFDByID   = 30
	bpfLinkGetNextID   = 31
	bpfObjGetInfoByFD  = 15
	bpfLinkDetach      = 34
	bpfObjNameLen      = 16
	bpfMapInfoNameOff  = 24 // offsetof(struct bpf_map_info, name)
	bpfProgInfoNameOff = 64 // offsetof(struct bpf_prog_info, name)
)

func sysBPF(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// getFDByID is BPF_{MAP,PROG,LINK}_GET_FD_BY_ID.
func getFDByID(cmd int, id uint32) (int, error) {
	attr := struct{ id, next, openFlags uint32 }{id: id}
	return sysBPF(cmd, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

// objGet is BPF_OBJ_GET of a pinned path.
func objGet(path string) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	attr := struct {
		pathname  uint64
		bpfFD     uint32
		fileFlags uint32
	}{pathname: uint64(uintptr(unsafe.Pointer(p)))}
	return sysBPF(bpfObjGet, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

// linkDetach is BPF_LINK_DETACH.
func linkDetach(fd int) error {
	attr := struct{ linkFD uint32 }{uint32(fd)}
	_, err := sysBPF(bpfLinkDetach, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return err
}

// linkUpdate is BPF_LINK_UPDATE to program progFD.
func linkUpdate(fd, progFD int) error {
	attr := struct{ linkFD, newProgFD, flags, oldProgFD uint32 }{linkFD: uint32(fd), newProgFD: uint32(progFD)}
	_, err := sysBPF(bpfLinkUpdate, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return err
}

// ids lists every ID of one kind of object.
func ids(t *testing.T, nextCmd int) []uint32 {
	t.Helper()
	var out []uint32
	var id uint32
	for {
		attr := struct{ start, next, openFlags uint32 }{start: id}
		if _, err := sysBPF(nextCmd, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
			if errnoOf(err) == syscall.ENOENT {
				return out
			}
			t.Fatalf("list IDs (bpf command %d): %v", nextCmd, err)
		}
		id = attr.next
		out = append(out, id)
	}
}

// objects is a snapshot of the IDs of every map, program and link.
type objects struct{ maps, progs, links map[uint32]bool }

func snapshot(t *testing.T) objects {
	t.Helper()
	set := func(l []uint32) map[uint32]bool {
		m := map[uint32]bool{}
		for _, id := range l {
			m[id] = true
		}
		return m
	}
	return objects{set(ids(t, bpfMapGetNextID)), set(ids(t, bpfProgGetNextID)), set(ids(t, bpfLinkGetNextID))}
}

// since is what exists in o and did not in before.
func (o objects) since(before objects) objects {
	diff := func(a, b map[uint32]bool) map[uint32]bool {
		m := map[uint32]bool{}
		for id := range a {
			if !b[id] {
				m[id] = true
			}
		}
		return m
	}
	return objects{diff(o.maps, before.maps), diff(o.progs, before.progs), diff(o.links, before.links)}
}

// objectName reads the kernel name of a map or program from its fd.
func objectName(fd int, nameOffset int) (string, error) {
	var info [256]byte
	attr := struct {
		fd      uint32
		infoLen uint32
		info    uint64
	}{fd: uint32(fd), infoLen: uint32(len(info)), info: uint64(uintptr(unsafe.Pointer(&info[0])))}
	if _, err := sysBPF(bpfObjGetInfoByFD, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(info[nameOffset : nameOffset+bpfObjNameLen]), nil
}

// markedObjects lists the maps and programs whose name carries the mark,
// for checking that nothing of bpfipe is left after unload.
func markedObjects(t *testing.T) []string {
	t.Helper()
	var found []string
	for _, k := range []struct {
		kind          string
		next, get, at int
	}{{"map", bpfMapGetNextID, bpfMapGetFDByID, bpfMapInfoNameOff}, {"program", bpfProgGetNextID, bpfProgGetFDByID, bpfProgInfoNameOff}} {
		for _, id := range ids(t, k.next) {
			fd, err := getFDByID(k.get, id)
			if err != nil {
				if errnoOf(err) == syscall.ENOENT {
					continue // freed since listed
				}
				found = append(found, fmt.Sprintf("%s %d (unreadable: %v)", k.kind, id, err))
				continue
			}
			name, err := objectName(fd, k.at)
			unix.Close(fd)
			if err != nil || strings.HasPrefix(name, mark) {
				found = append(found, fmt.Sprintf("%s %d %q %v", k.kind, id, name, err))
			}
		}
	}
	return found
}

// eventually retries check until it returns nil or limit passes: objects
// are freed a grace period after their last reference goes.
func eventually(limit time.Duration, check func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// blockedBpfipe starts a bpfipe process that waits in open(2) on a FIFO
// for its policy: a bpfipe process that holds nothing, to trace. It is
// killed when t ends.
func blockedBpfipe(t *testing.T) *exec.Cmd {
	t.Helper()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(guestcli.Initramfs(t).Path, "load", "--pin", fifo)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Until it has exec'd, the child is this binary's fork. After, its
	// exe link names bpfipe, or is refused by the guard.
	exe, _ := os.Readlink("/proc/self/exe")
	err := eventually(10*time.Second, func() error {
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); err == nil && got == exe {
			return errors.New("not exec'd yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("bpfipe waiting on a FIFO: %v", err)
	}
	return cmd
}
