package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

// dynamicLoader is where the host puts the x86-64 glibc loader.
const dynamicLoader = "/lib64/ld-linux-x86-64.so.2"

// execTimeout bounds one executed program; the payloads exit at once.
const execTimeout = 20 * time.Second

// outcome is what an operation ended with, as the table shows it: "ok",
// an errno name, "exit N" or "signal NAME".
type outcome struct {
	Result string
	// ChildPID is the process an exec ran in, to tell its records apart.
	ChildPID int
	// PIDsBefore and PIDsAfter are the kernel's last allocated pid before
	// and after starting a program. An exec that fails leaves no pid to
	// read, so its forked process is the one in between.
	PIDsBefore, PIDsAfter int
	// MapIno is the inode of a shared anonymous mapping: the kernel backs
	// each with a new shmem file, which a record may name.
	MapIno uint64
	// Output is what an executed program printed, for diagnosis.
	Output string
}

func run(op scenario.Op, m *scenario.Manifest) outcome {
	switch op.Op {
	case "exec":
		return runProgram(op.Path, op.Path, op.Args, nil)
	case "ldso":
		return runProgram(dynamicLoader, dynamicLoader, append([]string{op.Path}, op.Args...), nil)
	case "memfd":
		return runMemfd(op)
	case "mmap":
		prot, _ := scenario.ParseProt(op.Prot)
		ino, err := mapOnce(op.Path, prot, op.Shared, -1)
		return outcome{Result: errnoResult(err), MapIno: ino}
	case "mprotect":
		from, _ := scenario.ParseProt(op.From)
		to, _ := scenario.ParseProt(op.To)
		ino, err := mapOnce(op.Path, from, op.Shared, to)
		return outcome{Result: errnoResult(err), MapIno: ino}
	case "finit_module":
		return loadModule(m.Module.Name, func() error { return finitModule(op.Path) })
	case "init_module":
		return loadModule(m.Module.Name, initModule)
	}
	return outcome{Result: "unknown op " + op.Op}
}

func runProgram(path, argv0 string, args []string, extra []*os.File) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	// exec.Command would resolve a relative name; these paths are
	// absolute, and Path must stay the file the record names.
	cmd.Path = path
	cmd.Args[0] = argv0
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = extra
	before := lastPID()
	err := cmd.Start()
	after := lastPID()
	if err != nil {
		return outcome{Result: errnoResult(err), Output: err.Error(), PIDsBefore: before, PIDsAfter: after}
	}
	o := outcome{ChildPID: cmd.Process.Pid, PIDsBefore: before, PIDsAfter: after}
	err = cmd.Wait()
	o.Output = out.String()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		o.Result = "ok"
	case errors.As(err, &exitErr):
		ws := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			o.Result = "signal " + unix.SignalName(ws.Signal())
		} else {
			o.Result = fmt.Sprintf("exit %d", ws.ExitStatus())
		}
	default:
		o.Result = errnoResult(err)
	}
	return o
}

// memfds holds one memfd per payload for the runner's lifetime: both
// enforcers then see the same file, inode number included.
var memfds = map[string]*os.File{}

// runMemfd executes a payload from a memfd through /proc/self/fd, as
// fexecve does: IPE sees a file on no filesystem it trusts.
func runMemfd(op scenario.Op) outcome {
	f, ok := memfds[op.From]
	if !ok {
		data, err := os.ReadFile(filepath.Join(scenario.GuestPayloadDir, op.From))
		if err != nil {
			return outcome{Result: "setup: " + err.Error()}
		}
		fd, err := unix.MemfdCreate("bpfipe-compare-"+op.From, unix.MFD_CLOEXEC)
		if err != nil {
			return outcome{Result: "setup: memfd_create: " + err.Error()}
		}
		f = os.NewFile(uintptr(fd), "memfd")
		if _, err := f.Write(data); err != nil {
			return outcome{Result: "setup: write memfd: " + err.Error()}
		}
		memfds[op.From] = f
	}
	// ExtraFiles[0] is descriptor 3 in the child. argv[0] is the payload's
	// name, which busybox reads to pick its applet.
	return runProgram("/proc/self/fd/3", op.From, op.Args, []*os.File{f})
}

// lastPID is the last pid the kernel allocated in this namespace, or 0.
func lastPID() int {
	data, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

// mapOnce maps one page of path (anonymous memory when path is empty)
// with prot and, when mprotectTo is not negative, changes the protection
// to mprotectTo; it reports the first error, prefixed "mmap:" when the
// mapping itself failed in an mprotect operation. For shared anonymous
// memory it also returns the inode of the shmem file behind the mapping.
func mapOnce(path string, prot int, shared bool, mprotectTo int) (uint64, error) {
	flags := unix.MAP_PRIVATE
	if shared {
		flags = unix.MAP_SHARED
	}
	fd := -1
	if path == "" {
		flags |= unix.MAP_ANONYMOUS
	} else {
		mode := unix.O_RDONLY
		if shared && prot&scenario.ProtWrite != 0 {
			mode = unix.O_RDWR
		}
		var err error
		if fd, err = unix.Open(path, mode|unix.O_CLOEXEC, 0); err != nil {
			return 0, fmt.Errorf("open: %w", err)
		}
		defer unix.Close(fd)
	}
	mem, err := unix.Mmap(fd, 0, os.Getpagesize(), prot, flags)
	if err != nil {
		if mprotectTo >= 0 {
			return 0, &stepError{"mmap", err}
		}
		return 0, err
	}
	defer unix.Munmap(mem)
	var ino uint64
	if shared && path == "" {
		if ino, err = mappingInode(uintptr(unsafe.Pointer(&mem[0]))); err != nil {
			return 0, &stepError{"setup", err}
		}
	}
	if mprotectTo >= 0 {
		return ino, unix.Mprotect(mem, mprotectTo)
	}
	return ino, nil
}

// mappingInode reads the inode of the mapping that starts at addr from
// /proc/self/maps: "START-END PERMS OFFSET DEV INODE PATH".
func mappingInode(addr uintptr) (uint64, error) {
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	prefix := strconv.FormatUint(uint64(addr), 16) + "-"
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && strings.HasPrefix(line, prefix) {
			return strconv.ParseUint(f[4], 10, 64)
		}
	}
	return 0, fmt.Errorf("no mapping at %#x in /proc/self/maps", addr)
}

type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// errnoResult names the errno behind err, "ok" for nil.
func errnoResult(err error) string {
	if err == nil {
		return "ok"
	}
	prefix := ""
	var step *stepError
	if errors.As(err, &step) {
		prefix = step.step + ":"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return prefix + unix.ErrnoName(errno)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return prefix + "ENOENT"
	}
	return prefix + err.Error()
}

// loadModule runs one module load and removes the module again when it
// loaded, so the next run (the other enforcer's) starts without it.
func loadModule(name string, load func() error) outcome {
	if name == "" {
		return outcome{Result: "setup: the manifest names no module"}
	}
	if moduleLoaded(name) {
		return outcome{Result: "setup: module " + name + " is loaded already"}
	}
	if err := load(); err != nil {
		return outcome{Result: errnoResult(err)}
	}
	if err := unix.DeleteModule(name, unix.O_NONBLOCK); err != nil {
		return outcome{Result: "ok, then delete_module: " + errnoResult(err)}
	}
	return outcome{Result: "ok"}
}

func moduleLoaded(name string) bool {
	_, err := os.Stat("/sys/module/" + name)
	return err == nil
}

// xzMagic starts an xz stream: a module the kernel is to decompress
// itself (MODULE_INIT_COMPRESSED_FILE, CONFIG_MODULE_DECOMPRESS).
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// finitModule loads the module file at path: the kernel reads it through
// kernel_read_file (READING_MODULE), so the file's properties decide.
func finitModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	head := make([]byte, len(xzMagic))
	if _, err := f.ReadAt(head, 0); err != nil {
		return fmt.Errorf("read module header: %w", err)
	}
	flags := 0
	if bytes.Equal(head, xzMagic) {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	return unix.FinitModule(int(f.Fd()), "", flags)
}

// initModule loads the module's image from memory: kernel_load_data
// (LOADING_MODULE) decides without a file.
func initModule() error {
	image, err := os.ReadFile(filepath.Join(scenario.GuestPayloadDir, scenario.PayloadModuleImage))
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	return unix.InitModule(image, "")
}
