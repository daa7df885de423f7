//go:build linux && amd64

// Command guestinit is /init in the runner's initramfs. It prepares the
// guest (mounts, modules, disks), runs the one command the host asked for on
// the output serial port, reports its exit status through a marker line and
// the isa-debug-exit device, and powers off. PID 1 must never return: a
// returning init panics the kernel, which the host would report as a crash.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// outb writes one byte to an I/O port (outb_amd64.s); the cloud kernels
// have no /dev/port, so init talks to isa-debug-exit directly.
func outb(port uint16, value uint8)

func main() {
	os.Setenv("PATH", defaultPath)
	spec, out, err := prepare()
	if err != nil {
		nonce := ""
		if spec != nil {
			nonce = spec.Nonce
		}
		fail(out, nonce, err)
	}
	status := runCommand(spec, out)
	if spec.Interactive {
		// The shell was the session leader of the port; its exit hung the
		// port up, and every descriptor opened before now fails with EIO.
		if fresh, err := openOutput(); err == nil {
			out = fresh
		} else {
			console("reopen output port: %v", err)
		}
	}
	finish(out, guestspec.ExitMarker(spec.Nonce, status), status)
}

// prepare mounts the filesystems, loads modules, waits for disks, opens
// the output port and sets up the dm-verity devices. It returns whatever it got so far on error so the failure
// can still be reported through the port.
func prepare() (*guestspec.Spec, *os.File, error) {
	if err := mountAll(); err != nil {
		return nil, nil, err
	}
	spec, err := readSpec()
	if err != nil {
		return nil, nil, err
	}
	out, err := openOutput()
	if err != nil {
		return spec, out, err
	}
	if _, err := out.WriteString(guestspec.StartMarker(spec.Nonce)); err != nil {
		return spec, out, fmt.Errorf("write start marker: %w", err)
	}
	if spec.Interactive {
		if err := makeTerminal(out, spec); err != nil {
			return spec, out, err
		}
	}
	loadModules()
	if err := waitForDisks(spec.Disks, 20*time.Second); err != nil {
		return spec, out, err
	}
	if err := openVerity(spec.Verity); err != nil {
		return spec, out, err
	}
	return spec, out, nil
}

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	required               bool
}

// mounts lists what a BPF LSM test expects to find: the BPF filesystem, the
// security filesystem for the LSM list and IPE, tracefs and cgroup2 for
// attaching programs.
var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", true},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620", false},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700", true},
	{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"debugfs", "/sys/kernel/debug", "debugfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", true},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
}

func mountAll() error {
	for _, m := range mounts {
		// Files the host added under a tmpfs mount point would be hidden by
		// the mount; move them aside and copy them back in afterwards.
		stash := ""
		if entries, _ := os.ReadDir(m.target); len(entries) > 0 && m.fstype == "tmpfs" {
			stash = m.target + ".initramfs"
			if err := os.Rename(m.target, stash); err != nil {
				return fmt.Errorf("move aside %s: %w", m.target, err)
			}
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil && m.required {
			return fmt.Errorf("create mount point %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			if m.required {
				return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
			}
			console("mount %s on %s: %v", m.fstype, m.target, err)
		}
		if stash != "" {
			cp := exec.Command("/bin/busybox", "cp", "-a", stash+"/.", m.target+"/")
			if out, err := cp.CombinedOutput(); err != nil {
				return fmt.Errorf("restore files under %s: %w: %s", m.target, err, out)
			}
			os.RemoveAll(stash)
		}
	}
	return nil
}

func readSpec() (*guestspec.Spec, error) {
	raw, err := os.ReadFile(guestspec.SpecPath)
	if err != nil {
		return nil, fmt.Errorf("read run description: %w", err)
	}
	var spec guestspec.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("decode run description: %w", err)
	}
	if len(spec.Argv) == 0 {
		return nil, errors.New("run description has no command")
	}
	return &spec, nil
}

// openOutput opens the second serial port in raw mode, so the command's
// bytes and the markers reach the host untranslated (no \n to \r\n).
func openOutput() (*os.File, error) {
	out, err := os.OpenFile(guestspec.OutputDevice, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open output port: %w", err)
	}
	fd := int(out.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return out, fmt.Errorf("read output port settings: %w", err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		return out, fmt.Errorf("set output port mode: %w", err)
	}
	return out, nil
}

// makeTerminal gives an interactive command the line discipline a person
// expects, sized like the host's terminal.
func makeTerminal(out *os.File, spec *guestspec.Spec) error {
	fd := int(out.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("read output port settings: %w", err)
	}
	tio.Iflag |= unix.ICRNL
	tio.Oflag |= unix.OPOST | unix.ONLCR
	tio.Lflag |= unix.ICANON | unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ISIG | unix.IEXTEN
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		return fmt.Errorf("set output port mode: %w", err)
	}
	if spec.Rows > 0 && spec.Cols > 0 {
		ws := &unix.Winsize{Row: spec.Rows, Col: spec.Cols}
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws); err != nil {
			console("set terminal size: %v", err)
		}
	}
	return nil
}

// loadModules loads the modules in the order the host worked out. A module
// that fails to load is reported on the console but does not stop the run:
// the command may not need it, and if it does its own error says more.
func loadModules() {
	f, err := os.Open(guestspec.ModuleOrderPath)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		console("open module list: %v", err)
		return
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		path := strings.TrimSpace(scanner.Text())
		if path == "" {
			continue
		}
		if err := loadModule(path); err != nil {
			console("load module %s: %v", filepath.Base(path), err)
		}
	}
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// waitForDisks waits for the virtio disks the host attached: their nodes
// appear after the driver probes them, which may lag the module load.
func waitForDisks(want int, limit time.Duration) error {
	if want == 0 {
		return nil
	}
	deadline := time.Now().Add(limit)
	for {
		names, _ := filepath.Glob("/sys/block/vd*")
		if len(names) >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %d virtio disks: %d appeared in %s (is virtio_blk available?)", want, len(names), limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runCommand runs the command and returns its exit status, with shell
// conventions: 127 when it cannot be found, 126 when it cannot be run,
// 128+N when signal N killed it.
func runCommand(spec *guestspec.Spec, out *os.File) int {
	env := append([]string{
		"PATH=" + defaultPath,
		"HOME=/root",
		"USER=root",
		"LOGNAME=root",
		"SHELL=/bin/sh",
		"TERM=" + termOr(spec.Term),
		guestspec.GuestEnv + "=1",
	}, spec.Env...)
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Args = spec.Argv
	cmd.Env = env
	cmd.Dir = "/root"
	if spec.Dir != "" {
		cmd.Dir = spec.Dir
	}
	cmd.Stdout = out
	cmd.Stderr = out
	if spec.Interactive {
		cmd.Stdin = out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	} else {
		null, err := os.Open(os.DevNull)
		if err == nil {
			defer null.Close()
			cmd.Stdin = null
		}
	}
	if err := os.MkdirAll(cmd.Dir, 0o755); err != nil {
		fmt.Fprintf(out, "bpfipe-init: create working directory: %v\n", err)
		return 126
	}
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(out, "bpfipe-init: %v\n", err)
		return 127
	default:
		fmt.Fprintf(out, "bpfipe-init: %v\n", err)
		return 126
	}
}

func termOr(term string) string {
	if term == "" {
		return "dumb"
	}
	return term
}

// fail reports an init failure to the host and powers off.
func fail(out *os.File, nonce string, err error) {
	console("%v", err)
	finish(out, guestspec.FailMarker(nonce, err.Error()), 125)
}

// finish writes the final marker after everything before it has left the
// serial port, then exits qemu through isa-debug-exit. Without the drain the
// last lines of output can still sit in the UART when qemu stops.
func finish(out *os.File, marker string, status int) {
	unix.Sync()
	if out != nil {
		drain(out)
		out.WriteString(marker)
		drain(out)
	}
	if err := unix.Ioperm(guestspec.DebugExitPort, 4, 1); err == nil {
		outb(guestspec.DebugExitPort, uint8(status))
	} else {
		console("open debug exit port: %v", err)
	}
	// Reached only without an isa-debug-exit device.
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour)
	}
}

func drain(f *os.File) {
	// TCSBRK with a non-zero argument is tcdrain: wait until sent, no break.
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1); err != nil {
		console("drain output port: %v", err)
	}
}

// console writes a diagnostic line to the kernel console, which the host
// keeps for error reports.
func console(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bpfipe-init: "+format+"\n", args...)
}
