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
	"syscall"
	"time"

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
	// Output is what an executed program printed, for diagnosis.
	Output string
}

func run(op scenario.Op) outcome {
	switch op.Op {
	case "exec":
		return runProgram(op.Path, op.Path, op.Args, nil)
	case "ldso":
		return runProgram(dynamicLoader, dynamicLoader, append([]string{op.Path}, op.Args...), nil)
	case "memfd":
		return runMemfd(op)
	case "mmap":
		prot, _ := scenario.ParseProt(op.Prot)
		return outcome{Result: errnoResult(mapOnce(op.Path, prot, op.Shared, -1))}
	case "mprotect":
		from, _ := scenario.ParseProt(op.From)
		to, _ := scenario.ParseProt(op.To)
		return outcome{Result: errnoResult(mapOnce(op.Path, from, op.Shared, to))}
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
	err := cmd.Start()
	if err != nil {
		return outcome{Result: errnoResult(err), Output: err.Error()}
	}
	o := outcome{ChildPID: cmd.Process.Pid}
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

// mapOnce maps one page of path (anonymous memory when path is empty)
// with prot and, when mprotectTo is not negative, changes the protection
// to mprotectTo; it reports the first error, prefixed "mmap:" when the
// mapping itself failed in an mprotect operation.
func mapOnce(path string, prot int, shared bool, mprotectTo int) error {
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
			return fmt.Errorf("open: %w", err)
		}
		defer unix.Close(fd)
	}
	mem, err := unix.Mmap(fd, 0, os.Getpagesize(), prot, flags)
	if err != nil {
		if mprotectTo >= 0 {
			return &stepError{"mmap", err}
		}
		return err
	}
	defer unix.Munmap(mem)
	if mprotectTo >= 0 {
		return unix.Mprotect(mem, mprotectTo)
	}
	return nil
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
