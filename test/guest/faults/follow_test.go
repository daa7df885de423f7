package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// follower is a bpfipe events --json --follow running in the background,
// so that a load making thousands of decisions never fills the ring
// buffer.
type follower struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}

	mu      sync.Mutex
	records []guestcli.Record
	bad     []string // lines that did not decode
}

func follow(t *testing.T, c guestcli.CLI) *follower {
	t.Helper()
	f := &follower{cmd: exec.Command(c.Path, "events", "--json", "--follow"), done: make(chan struct{})}
	f.cmd.Stderr = &f.stderr
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start bpfipe events --follow: %v", err)
	}
	go func() {
		defer close(f.done)
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			var r guestcli.Record
			err := json.Unmarshal(scanner.Bytes(), &r)
			f.mu.Lock()
			if err != nil || r.Type != "IPE_ACCESS" {
				f.bad = append(f.bad, scanner.Text())
			} else {
				f.records = append(f.records, r)
			}
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() { f.stop(t) })
	return f
}

// seen reports whether a record of pid has been read.
func (f *follower) seen(pid int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.records) - 1; i >= 0; i-- {
		if f.records[i].PID == pid {
			return true
		}
	}
	return false
}

// waitFor waits until a record of pid has been read: the ring buffer is
// read in order, so every record reserved before it has been read too.
func (f *follower) waitFor(t *testing.T, pid int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !f.seen(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("bpfipe events --follow has not read a record of pid %d after %v (stderr %q)", pid, limit, f.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop interrupts the reader and returns what it read. It is safe to call
// again.
func (f *follower) stop(t *testing.T) ([]guestcli.Record, []string) {
	t.Helper()
	if f.cmd.ProcessState == nil {
		f.cmd.Process.Signal(syscall.SIGINT)
		<-f.done
		if err := f.cmd.Wait(); err != nil {
			t.Errorf("bpfipe events --follow: %v (stderr %q)", err, f.stderr.String())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.records, f.bad
}
