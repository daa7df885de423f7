package bypass

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

const (
	protR = unix.PROT_READ
	protW = unix.PROT_WRITE
	protX = unix.PROT_EXEC
	page  = 4096
)

func mapFile(t *testing.T, f *os.File, prot, flags int) []byte {
	t.Helper()
	mem, err := unix.Mmap(int(f.Fd()), 0, page, prot, flags)
	if err != nil {
		t.Fatalf("mmap %s: %v", f.Name(), err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

func openFile(t *testing.T, path string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func deniedWith(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("%s: %v, want EACCES", what, err)
	}
}

// TestMemoryTricks makes memory executable without exec'ing a file: the
// MMAP and MPROTECT hooks decide by the mapping's file, or by no file for
// anonymous memory, which only a DEFAULT can allow.
func TestMemoryTricks(t *testing.T) {
	s := start(t, "bypass_memory")
	untrusted := guestcli.CopyToTmp(t, busybox, "mapped")

	t.Run("anonymous RW then RX", func(t *testing.T) {
		mem, err := unix.Mmap(-1, 0, page, protR|protW, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatalf("anonymous RW mapping: %v", err)
		}
		defer unix.Munmap(mem)
		mem[0] = opRet
		s.drain(t)
		deniedWith(t, "mprotect of anonymous memory to RX", unix.Mprotect(mem, protR|protX))
		s.expectOnly(t, denial{hook: guestcli.HookMprotect, pid: os.Getpid()})
	})

	t.Run("shared file mapping written then X", func(t *testing.T) {
		mem := mapFile(t, openFile(t, untrusted, os.O_RDWR), protR|protW, unix.MAP_SHARED)
		mem[0] = opRet
		s.drain(t)
		deniedWith(t, "mprotect of a written MAP_SHARED mapping of a /tmp file to RX", unix.Mprotect(mem, protR|protX))
		s.expectOnly(t, denial{hook: guestcli.HookMprotect, path: untrusted, dev: tmpfsID, pid: os.Getpid()})
	})

	t.Run("private file mapping written then X", func(t *testing.T) {
		mem := mapFile(t, openFile(t, untrusted, os.O_RDONLY), protR|protW, unix.MAP_PRIVATE)
		mem[0] = opRet
		s.drain(t)
		deniedWith(t, "mprotect of a written private mapping of a /tmp file to RX", unix.Mprotect(mem, protR|protX))
		s.expectOnly(t, denial{hook: guestcli.HookMprotect, path: untrusted, dev: tmpfsID, pid: os.Getpid()})
	})

	t.Run("memfd mapped X", func(t *testing.T) {
		fd, err := unix.MemfdCreate("bypass-map", 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "memfd")
		defer f.Close()
		if err := f.Truncate(page); err != nil {
			t.Fatal(err)
		}
		s.drain(t)
		mem, err := unix.Mmap(fd, 0, page, protR|protX, unix.MAP_SHARED)
		if err == nil {
			unix.Munmap(mem)
		}
		deniedWith(t, "executable mapping of a memfd", err)
		s.expectOnly(t, denial{hook: guestcli.HookMmap, path: "/memfd:bypass-map (deleted)", dev: tmpfsID, pid: os.Getpid()})
	})

	// mremap moves or grows a mapping without asking the LSM: the mapping
	// was checked when it became executable. IPE has no mremap hook either.
	t.Run("mremap of an executable mapping", func(t *testing.T) {
		mem := mapFile(t, openFile(t, busybox, os.O_RDONLY), protR|protX, unix.MAP_PRIVATE)
		s.drain(t)
		moved, err := unix.Mremap(mem, 2*page, unix.MREMAP_MAYMOVE)
		if err != nil {
			t.Fatalf("mremap of an executable mapping of the initramfs busybox: %v", err)
		}
		defer unix.Munmap(moved)
		if !executable(t, moved) {
			t.Errorf("the remapped mapping is not executable")
		}
		s.expectNone(t, "mremap")
	})

	// Out of scope, as for IPE: a private writable mapping of a trusted
	// file holds whatever the process wrote, yet its file is still the
	// trusted one, so making it executable is allowed. SELinux calls this
	// execmod; see docs/bypass.md.
	t.Run("private mapping of a trusted file patched then run", func(t *testing.T) {
		s.drain(t)
		got := runHelperProcess(t, helperPatchedMapping, busybox)
		if got.Code != 0 || !strings.Contains(got.out, patchedCodeRan) {
			t.Errorf("patched private mapping of %s: exit %d, output %q; want the patched code to run", busybox, got.Code, got.out)
		}
		s.expectNone(t, "patched private mapping of a trusted file")

		got = runHelperProcess(t, helperPatchedMapping, untrusted)
		expectHelperRefused(t, "patched private mapping of a /tmp file", got)
		s.expectOnly(t, denial{hook: guestcli.HookMprotect, path: untrusted, dev: tmpfsID, pid: got.PID})
	})
}

// executable reports whether /proc/self/maps shows mem's mapping with x.
func executable(t *testing.T, mem []byte) bool {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	start := uintptr(unsafe.Pointer(&mem[0]))
	for _, line := range strings.Split(string(maps), "\n") {
		var lo, hi uintptr
		var perms string
		if n, _ := fmt.Sscanf(line, "%x-%x %s", &lo, &hi, &perms); n == 3 && lo <= start && start < hi {
			return strings.Contains(perms, "x")
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/maps", start)
	return false
}
