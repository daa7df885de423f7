package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCacheDir is $XDG_CACHE_HOME/bpfipe, or ~/.cache/bpfipe.
func DefaultCacheDir() (string, error) {
	if dir := os.Getenv("XDG_CACHE_HOME"); dir != "" {
		return filepath.Join(dir, "bpfipe"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "bpfipe"), nil
}

// lockFile takes an exclusive lock that other processes using the same cache
// (parallel test binaries, two shells) respect, so they do not download or
// build the same thing into the same place at once.
func lockFile(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// never sees a half-written cache entry.
func writeFileAtomic(path string, write func(w io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// pruneAge is how long an unused cache entry that runs create often (base
// initramfs archives, enrolled varstores) is kept.
const pruneAge = 14 * 24 * time.Hour

// touch marks a cache entry as used, so pruning keeps it.
func touch(path string) {
	now := time.Now()
	os.Chtimes(path, now, now)
}

// prune removes entries matching pattern that no run used for pruneAge.
func prune(pattern string) {
	matches, _ := filepath.Glob(pattern)
	for _, m := range matches {
		if info, err := os.Stat(m); err == nil && time.Since(info.ModTime()) > pruneAge {
			os.Remove(m)
		}
	}
}

func hashFile(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

func sha256File(path string) (string, error) {
	h := sha256.New()
	if err := hashFile(h, path); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// progress reports long steps on a terminal; with a nil writer it says
// nothing.
type progress struct{ w io.Writer }

// step announces a step and returns the function that closes it. Steps
// that finish quickly (a build with nothing to do, a cache hit) are not
// shown at all.
func (p progress) step(format string, args ...any) func(err error) {
	if p.w == nil {
		return func(error) {}
	}
	msg := fmt.Sprintf(format, args...)
	start := time.Now()
	var mu sync.Mutex
	shown, finished := false, false
	timer := time.AfterFunc(progressDelay, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			shown = true
			fmt.Fprintf(p.w, "bpfipe-vm: %s...\n", msg)
		}
	})
	return func(err error) {
		timer.Stop()
		mu.Lock()
		defer mu.Unlock()
		finished = true
		switch {
		case err != nil:
			fmt.Fprintf(p.w, "bpfipe-vm: %s: failed after %.1fs\n", msg, time.Since(start).Seconds())
		case shown:
			fmt.Fprintf(p.w, "bpfipe-vm: %s: done in %.1fs\n", msg, time.Since(start).Seconds())
		}
	}
}

// progressDelay is how long a step runs before it is worth mentioning.
const progressDelay = 700 * time.Millisecond

func (p progress) note(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, "bpfipe-vm: "+format+"\n", args...)
	}
}
