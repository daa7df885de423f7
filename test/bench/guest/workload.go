package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/bench"
)

// warmup operations run before each timed loop, untimed: the first exec
// after a policy change pulls the program into the page cache and the
// enforcer's first lookups fault in what they touch.
const warmup = 3

// workloads times each operation under the enforcement in place.
type workloads struct {
	static, dynamic string // programs that exit 0
	mapFile         *os.File
	devNull         *os.File
	execIters       int
	dynamicIters    int
	mmapIters       int
}

func (w *workloads) run(name string) (ops int, elapsed time.Duration, err error) {
	switch name {
	case bench.ExecStatic:
		return w.loop(w.execIters, func() error { return spawn(w.static, w.devNull) })
	case bench.ExecDynamic:
		return w.loop(w.dynamicIters, func() error { return spawn(w.dynamic, w.devNull) })
	case bench.MmapExec:
		return w.loop(w.mmapIters, func() error { return mapExec(w.mapFile) })
	case bench.OpenClose:
		return w.loop(w.mmapIters, func() error { return openClose(w.static) })
	case bench.MprotectExec:
		mem, err := unix.Mmap(int(w.mapFile.Fd()), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			return 0, 0, fmt.Errorf("map file for mprotect: %w", err)
		}
		defer unix.Munmap(mem)
		return w.loop(w.mmapIters, func() error { return protectExec(mem) })
	}
	return 0, 0, fmt.Errorf("unknown workload %q", name)
}

func (w *workloads) loop(n int, op func() error) (int, time.Duration, error) {
	for range warmup {
		if err := op(); err != nil {
			return 0, 0, err
		}
	}
	// A collection in the middle of a timed loop would be charged to
	// whichever variant is unlucky: collect now, and not again until the
	// loop is over (it allocates little). So would the runtime's
	// background scavenger, which returns freed memory to the kernel at
	// up to 1% of the CPU, most after a large policy was loaded: return
	// it all now.
	debug.FreeOSMemory()
	// So would the kernel's deferred work of what came before (RCU
	// callbacks and workers freeing the last variant's maps and the last
	// loop's processes): let it run while this process sleeps. Under
	// -icount an idle guest skips ahead, so settling costs no host time.
	time.Sleep(settle)
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	start := time.Now()
	for range n {
		if err := op(); err != nil {
			return 0, 0, err
		}
	}
	return n, time.Since(start), nil
}

// settle is how long the guest idles before each timed loop.
const settle = 100 * time.Millisecond

// spawn forks, executes path and waits for it; anything but exit status 0
// is an error, so a denied or broken run cannot pass for a fast one.
func spawn(path string, devNull *os.File) error {
	fd := devNull.Fd()
	pid, err := syscall.ForkExec(path, []string{path}, &syscall.ProcAttr{Files: []uintptr{fd, fd, fd}})
	if err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("wait for %s: %w", path, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("%s ended with status %v", path, ws)
	}
	return nil
}

func mapExec(f *os.File) error {
	mem, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mmap PROT_EXEC: %w", err)
	}
	return unix.Munmap(mem)
}

// protectExec adds PROT_EXEC, which the hooks check, and takes it away
// again, which they let through without deciding, so the next call is
// checked too.
func protectExec(mem []byte) error {
	if err := unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return fmt.Errorf("mprotect PROT_EXEC: %w", err)
	}
	if err := unix.Mprotect(mem, unix.PROT_READ); err != nil {
		return fmt.Errorf("mprotect PROT_READ: %w", err)
	}
	return nil
}

func openClose(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	return unix.Close(fd)
}

// checkDenied proves the enforcement in place is live: a copy of the
// static program outside the initramfs must be refused with want, or run
// when want is 0.
func checkDenied(untrusted string, devNull *os.File, want syscall.Errno) error {
	err := spawn(untrusted, devNull)
	switch {
	case want == 0 && err != nil:
		return fmt.Errorf("without enforcement: %w", err)
	case want == 0:
		return nil
	case errors.Is(err, want):
		return nil
	case err == nil:
		return fmt.Errorf("%s ran although the policy denies it", untrusted)
	}
	return fmt.Errorf("want %s from %s: %w", unix.ErrnoName(want), untrusted, err)
}
