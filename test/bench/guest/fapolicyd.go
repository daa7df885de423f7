package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bpfipe/bpfipe/test/bench"
)

// fapolicydReady bounds the daemon's start: it reads its trust database
// and marks every watched mount before it decides anything.
const fapolicydReady = 2 * time.Minute

// fapolicydEnforcer runs fapolicyd, the user-space peer, from the setup
// the host put in dir: the daemon, its libraries under lib/, and its
// configuration in /etc/fapolicyd.
type fapolicydEnforcer struct {
	dir       string
	out       *output
	untrusted string
	devNull   *os.File
	cmd       *exec.Cmd
	exited    chan error
	started   bool
}

func (f *fapolicydEnforcer) variant() *variant {
	return &variant{name: bench.Fapolicyd, up: f.start, down: f.stop, want: syscall.EPERM}
}

// start runs the daemon in the foreground (--debug-deny keeps it attached, so
// it is this program's child to stop) and waits until it refuses the
// untrusted program, which is when it decides.
func (f *fapolicydEnforcer) start() error {
	for _, dir := range []string{"/var/lib/fapolicyd", "/run/fapolicyd", "/var/log"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile("/tmp/fapolicyd.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	f.cmd = exec.Command(filepath.Join(f.dir, "fapolicyd"), "--debug-deny")
	f.cmd.Env = []string{"LD_LIBRARY_PATH=" + filepath.Join(f.dir, "lib")}
	f.cmd.Stdout, f.cmd.Stderr = logFile, logFile
	began := time.Now()
	if err := f.cmd.Start(); err != nil {
		return fmt.Errorf("start fapolicyd: %w", err)
	}
	f.exited = make(chan error, 1)
	go func() { f.exited <- f.cmd.Wait() }()
	for time.Since(began) < fapolicydReady {
		select {
		case err := <-f.exited:
			return fmt.Errorf("fapolicyd exited while starting (%v): %s", err, logTail())
		default:
		}
		if err := spawn(f.untrusted, f.devNull); errors.Is(err, syscall.EPERM) {
			if !f.started {
				f.out.note(fmt.Sprintf("fapolicyd decided %.1f s after it started", time.Since(began).Seconds()))
				f.started = true
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.stop()
	return fmt.Errorf("fapolicyd did not start deciding within %s: %s", fapolicydReady, logTail())
}

func (f *fapolicydEnforcer) stop() error {
	if f.cmd == nil {
		return nil
	}
	defer func() { f.cmd = nil }()
	f.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.exited:
		return nil
	case <-time.After(30 * time.Second):
		f.cmd.Process.Kill()
		<-f.exited
		return errors.New("fapolicyd ignored SIGTERM for 30 s")
	}
}

func logTail() string {
	data, _ := os.ReadFile("/tmp/fapolicyd.log")
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}
