package tamper

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// How many objects a load makes at least, on either kernel: the maps of
// bpf/maps.h, the policy rows, the state and the guard's map; the
// enforcement programs 6.1 attaches and the guard's; a link for each.
const (
	minMaps     = 12
	minPrograms = 14
)

// TestGuard attacks a pinned enforcement from this process, which is root
// but not bpfipe, in every way docs/security.md lists; then checks that
// the decisions did not change, that bpfipe's commands work, and that
// after unload the same attempts succeed.
func TestGuard(t *testing.T) {
	requireGuest(t)
	copy := untrusted(t)
	if got := execErrno(t, copy); got != 0 {
		t.Fatalf("before the load the /tmp copy does not run: %v", got)
	}
	bin := guestcli.Initramfs(t).Path
	binInfo, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	hardLink := bin + "-hardlink"
	os.Remove(hardLink)

	before := snapshot(t)
	unloadAfter(t)
	guestcli.Initramfs(t).Must(t, "load", "--pin", guestcli.WritePolicy(t, policy("0.0.1")))
	checkDecisions(t, copy)
	ours := snapshot(t).since(before)

	// Objects of this process's own, which the guard must leave alone.
	own, err := ebpf.NewMap(&ebpf.MapSpec{Name: "tamper_own", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatalf("create a map of this process's own: %v", err)
	}
	defer own.Close()

	t.Run("ObjectsByID", func(t *testing.T) {
		all := snapshot(t)
		for _, k := range []struct {
			kind  string
			get   int
			all   map[uint32]bool
			ours  map[uint32]bool
			least int
		}{
			{"map", bpfMapGetFDByID, all.maps, ours.maps, minMaps},
			{"program", bpfProgGetFDByID, all.progs, ours.progs, minPrograms},
			{"link", bpfLinkGetFDByID, all.links, ours.links, minPrograms},
		} {
			refused := 0
			for id := range k.all {
				fd, err := getFDByID(k.get, id)
				if err == nil {
					unix.Close(fd)
				}
				switch {
				case errnoOf(err) == syscall.ENOENT:
					// Freed since listed (the load's probes).
				case k.ours[id]:
					wantRefused(t, fmt.Sprintf("%s %d of the load", k.kind, id), err)
					refused++
				case err != nil:
					t.Errorf("%s %d, which the load did not make: %v, want it to open", k.kind, id, err)
				}
			}
			if refused < k.least {
				t.Errorf("%d %ss of the load refused, want at least %d", refused, k.kind, k.least)
			}
		}
		info, err := own.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		if fd, err := getFDByID(bpfMapGetFDByID, uint32(id)); err != nil {
			t.Errorf("a map of this process's own, by ID: %v", err)
		} else {
			unix.Close(fd)
		}
	})

	t.Run("MarkedName", func(t *testing.T) {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: mark + "forged", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err == nil {
			m.Close()
		}
		wantRefused(t, "create a map named like bpfipe's", err)
	})

	t.Run("Pins", func(t *testing.T) {
		prog := allowAllProgram(t)
		outside := filepath.Join(filepath.Dir(pinDir), "tamper-outside")
		for _, name := range pinNames(t) {
			path := filepath.Join(pinDir, name)
			fd, err := objGet(path)
			if strings.HasPrefix(name, "link_") {
				// Not refused (docs/security.md: refusing it would cost a
				// program on every path component), and powerless: the
				// loader's probe refuses a kernel where it is not.
				if err != nil {
					t.Errorf("BPF_OBJ_GET %s: %v, want a descriptor", name, err)
				} else {
					wantRefused(t, "BPF_LINK_DETACH of "+name, linkDetach(fd), syscall.EOPNOTSUPP, syscall.EINVAL)
					wantRefused(t, "BPF_LINK_UPDATE of "+name, linkUpdate(fd, prog.FD()), syscall.EOPNOTSUPP, syscall.EINVAL)
					unix.Close(fd)
				}
			} else {
				if err == nil {
					unix.Close(fd)
				}
				wantRefused(t, "BPF_OBJ_GET "+name, err)
			}
			wantRefused(t, "unlink "+name, os.Remove(path))
			wantRefused(t, "rename "+name, os.Rename(path, path+"_moved"))
			wantRefused(t, "rename "+name+" out of the pin directory", os.Rename(path, outside))
			wantRefused(t, "hard link "+name+" out of the pin directory", os.Link(path, outside))
		}
		forged := filepath.Join(pinDir, "forged")
		wantRefused(t, "pin a map in the pin directory", own.Pin(forged))
		wantRefused(t, "make a directory in the pin directory", os.Mkdir(forged, 0o700))
		wantRefused(t, "make a symbolic link in the pin directory", os.Symlink("/", forged))
		if err := own.Pin(outside); err != nil {
			t.Fatalf("pin a map of this process's own outside the pin directory: %v", err)
		}
		wantRefused(t, "hard link into the pin directory", os.Link(outside, forged))
		wantRefused(t, "rename into the pin directory", os.Rename(outside, forged))
		if err := os.Remove(outside); err != nil {
			t.Errorf("unpin this process's own map: %v", err)
		}
		wantRefused(t, "rename the pin directory", os.Rename(pinDir, pinDir+"_moved"))
		if err := os.Remove(pinDir); err == nil {
			t.Error("rmdir of the pin directory succeeded")
		}
		for _, flags := range []int{0, unix.MNT_DETACH} {
			wantRefused(t, fmt.Sprintf("unmount /sys/fs/bpf (flags %#x)", flags), unix.Unmount(filepath.Dir(pinDir), flags))
		}
		checkDecisions(t, copy)
	})

	t.Run("Executable", func(t *testing.T) {
		// While bpfipe runs (6.1's device resolver does), the kernel refuses
		// a writer with ETXTBSY before it asks any LSM; the read-only
		// O_TRUNC open below reaches the guard on every kernel.
		f, err := os.OpenFile(bin, os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		wantRefused(t, "open bpfipe for writing", err, syscall.EPERM, syscall.ETXTBSY)
		// O_TRUNC truncates even on a read-only open.
		f, err = os.OpenFile(bin, os.O_RDONLY|os.O_TRUNC, 0)
		if err == nil {
			f.Close()
		}
		wantRefused(t, "open bpfipe read-only with O_TRUNC", err)
		// Truncating to its own size would change nothing even if allowed.
		wantRefused(t, "truncate bpfipe", os.Truncate(bin, binInfo.Size()), syscall.EPERM, syscall.ETXTBSY)
		// A second name for the same inode shows that the guard knows the
		// inode, not the path; it is removed after unload.
		if err := os.Link(bin, hardLink); err != nil {
			t.Fatalf("hard link bpfipe: %v", err)
		}
		wantRefused(t, "unlink a name of bpfipe's inode", os.Remove(hardLink))
		other := filepath.Join(filepath.Dir(bin), "tamper-other")
		if err := os.WriteFile(other, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(other)
		wantRefused(t, "rename a file over bpfipe's inode", os.Rename(other, hardLink))
		if got, err := os.Stat(bin); err != nil || !os.SameFile(got, binInfo) || got.Size() != binInfo.Size() {
			t.Errorf("bpfipe after the attempts: %v, %v", got, err)
		}

		exe, err := os.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer exe.Close()
		err = unix.Prctl(unix.PR_SET_MM, unix.PR_SET_MM_EXE_FILE, exe.Fd(), 0, 0)
		wantRefused(t, "PR_SET_MM_EXE_FILE to bpfipe", err)
	})

	t.Run("Ptrace", func(t *testing.T) {
		attackProcess(t, blockedBpfipe(t).Process.Pid)
	})

	// A BPF LSM program of root's own on the same hook, allowing
	// everything, cannot undo bpfipe's deny: the first program to refuse
	// ends the hook.
	t.Run("OtherLSMProgram", func(t *testing.T) {
		prog := allowAllProgram(t)
		lk, err := link.AttachLSM(link.LSMOptions{Program: prog})
		if err != nil {
			t.Fatalf("attach it: %v", err)
		}
		defer lk.Close()
		checkDecisions(t, copy)
		info, err := lk.Info()
		if err != nil {
			t.Fatal(err)
		}
		fd, err := getFDByID(bpfLinkGetFDByID, uint32(info.ID))
		if err != nil {
			t.Fatalf("a link of this process's own, by ID: %v", err)
		}
		defer unix.Close(fd)
		// docs/security.md relies on this: even a descriptor of an LSM
		// link can neither detach it nor swap its program.
		if err := linkDetach(fd); errnoOf(err) != syscall.EOPNOTSUPP && errnoOf(err) != syscall.EINVAL {
			t.Errorf("BPF_LINK_DETACH of an LSM link: %v, want EOPNOTSUPP or EINVAL", err)
		}
		if err := linkUpdate(fd, prog.FD()); errnoOf(err) != syscall.EOPNOTSUPP && errnoOf(err) != syscall.EINVAL {
			t.Errorf("BPF_LINK_UPDATE of an LSM link: %v, want EOPNOTSUPP or EINVAL", err)
		}
	})

	t.Run("DecisionsUnchanged", func(t *testing.T) {
		checkDecisions(t, copy)
		st, res := guestcli.Initramfs(t).Status(t)
		if !st.Loaded || !st.Enforcing || st.Version != "0.0.1" {
			t.Errorf("status after the attempts: %s", res)
		}
	})

	t.Run("Commands", func(t *testing.T) {
		guestcli.Initramfs(t).Must(t, "update", guestcli.WritePolicy(t, policy("0.0.2")))
		guestcli.Initramfs(t).Must(t, "enforce", "off")
		if got := execErrno(t, copy); got != 0 {
			t.Errorf("permissive: exec of the copy %v, want it to run", got)
		}
		guestcli.Initramfs(t).Must(t, "enforce", "on")
		checkDecisions(t, copy)
		guestcli.Initramfs(t).Must(t, "success-audit", "on")
		guestcli.Initramfs(t).Must(t, "success-audit", "off")
		if !deniedIn(t, guestcli.Initramfs(t).Must(t, "events", "--json").Stdout, copy) {
			t.Errorf("bpfipe events has no DENY of %s", copy)
		}
		if st, res := guestcli.Initramfs(t).Status(t); !st.Loaded || !st.Enforcing || st.Version != "0.0.2" {
			t.Errorf("status after the commands: %s", res)
		}
	})

	t.Run("AfterUnload", func(t *testing.T) {
		guestcli.Initramfs(t).Must(t, "unload")
		// At once: unload returns only once the guard refuses nothing.
		m, err := ebpf.NewMap(&ebpf.MapSpec{Name: mark + "forged", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			t.Errorf("right after unload, create a map named like bpfipe's: %v", err)
		} else {
			m.Close()
		}
		if res := guestcli.Initramfs(t).Run(t, "status"); res.Code != guestcli.ExitNotLoaded {
			t.Errorf("status after unload: %s", res)
		}
		if _, err := os.Lstat(pinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory after unload: %v", err)
		}
		err = eventually(10*time.Second, func() error {
			if left := markedObjects(t); len(left) > 0 {
				return fmt.Errorf("left behind: %v", left)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		if err := os.Remove(hardLink); err != nil {
			t.Errorf("unlink the second name of bpfipe: %v", err)
		}
		f, err := os.OpenFile(bin, os.O_WRONLY, 0)
		if err != nil {
			t.Errorf("open bpfipe for writing: %v", err)
		} else {
			f.Close()
		}
		pid := blockedBpfipe(t).Process.Pid
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.PtraceSeize(pid); err != nil {
			t.Errorf("ptrace a bpfipe process: %v", err)
		}
	})
}

// TestGuardForeground attacks the process of a foreground load, which
// holds descriptors of everything, then stops it with bpfipe unload.
func TestGuardForeground(t *testing.T) {
	requireGuest(t)
	copy := untrusted(t)
	unloadAfter(t)
	cmd, done := startForeground(t, guestcli.WritePolicy(t, policy("0.0.1")))
	checkDecisions(t, copy)
	attackProcess(t, cmd.Process.Pid)
	checkDecisions(t, copy)

	guestcli.Initramfs(t).Must(t, "unload")
	select {
	case <-done:
		if !cmd.ProcessState.Success() {
			t.Errorf("foreground loader after unload: %v", cmd.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Error("foreground loader still running 30s after unload")
	}
	if got := execErrno(t, copy); got != 0 {
		t.Errorf("after unload the copy does not run: %v", got)
	}
}

// attackProcess tries every way to a bpfipe process's memory and
// descriptors.
func attackProcess(t *testing.T, pid int) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	wantRefused(t, "PTRACE_ATTACH", unix.PtraceAttach(pid))
	wantRefused(t, "PTRACE_SEIZE", unix.PtraceSeize(pid))

	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	for fd := range 8 {
		got, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err == nil {
			unix.Close(got)
		}
		wantRefused(t, fmt.Sprintf("pidfd_getfd of fd %d", fd), err)
	}

	buf := make([]byte, 8)
	_, err = unix.ProcessVMReadv(pid, []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}},
		[]unix.RemoteIovec{{Base: 0x400000, Len: len(buf)}}, 0)
	wantRefused(t, "process_vm_readv", err)

	// mm_access answers a refused ptrace check with EACCES.
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err == nil {
		mem.Close()
	}
	wantRefused(t, "open /proc/PID/mem", err, syscall.EACCES, syscall.EPERM)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list /proc/PID/fd: %v", err)
	}
	if len(fds) == 0 {
		t.Fatal("/proc/PID/fd lists nothing")
	}
	// bpfipe may still be starting (its probe opens and closes
	// descriptors): one closed after the listing, or between the two
	// attempts, answers ENOENT, and there is nothing left to reach
	// through it.
	for _, fd := range fds {
		path := fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())
		_, err := os.Readlink(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		wantRefused(t, "readlink "+path, err, syscall.EACCES, syscall.EPERM)
		f, err := os.Open(path)
		if err == nil {
			f.Close()
		}
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		wantRefused(t, "open "+path, err, syscall.EACCES, syscall.EPERM)
	}
}

// startForeground starts bpfipe load in the foreground and waits until it
// enforces. It is reaped as soon as it exits (bpfipe unload waits for the
// process to go, and a zombie has not gone), which closes the channel; it
// is killed when t ends if still running.
func startForeground(t *testing.T, policyPath string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(guestcli.Initramfs(t).Path, "load", policyPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	err := eventually(60*time.Second, func() error {
		st, res := guestcli.Initramfs(t).Status(t)
		if !st.Loaded || st.Foreground != cmd.Process.Pid {
			return fmt.Errorf("status: %s", res)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("foreground load did not start: %v", err)
	}
	return cmd, exited
}

// pinNames are the pins of the running load: the maps of bpf/maps.h and
// the state, and a link for each program status lists and for each of the
// guard's.
func pinNames(t *testing.T) []string {
	t.Helper()
	var st struct {
		Programs []string `json:"programs"`
	}
	res := guestcli.Initramfs(t).Must(t, "status", "--json")
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil || len(st.Programs) == 0 {
		t.Fatalf("programs of bpfipe status --json (%s): %v", res, err)
	}
	names := []string{"state"}
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Maps {
		names = append(names, name)
	}
	guard, err := bpf.LoadGuardSpec()
	if err != nil {
		t.Fatal(err)
	}
	programs := st.Programs
	for name := range guard.Programs {
		programs = append(programs, name)
	}
	for _, p := range programs {
		names = append(names, "link_"+p)
	}
	slices.Sort(names)
	return names
}

// allowAllProgram loads an LSM program of this process's own, for
// bprm_check_security, that allows everything.
func allowAllProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tamper_allow",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     "bprm_check_security",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load an LSM program of this process's own: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// deniedIn reports whether bpfipe events --json output has a DENY of path.
func deniedIn(t *testing.T, out, path string) bool {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var rec struct {
			Path   string `json:"path"`
			Action string `json:"action"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("decode event %q: %v", line, err)
		}
		if rec.Path == path && rec.Action == "DENY" {
			return true
		}
	}
	return false
}
