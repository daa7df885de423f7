package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// IcountArgs make qemu count instructions and derive the guest's clock
// from the count, one instruction per virtual nanosecond, skipping time
// the guest sleeps. Timings in the guest then measure the instructions the
// guest executed, whatever else the host runs: on a shared machine without
// KVM, wall-clock time under emulation swings by a factor of two between
// rounds, and so would every ratio.
var IcountArgs = []string{"-icount", "shift=0,sleep=on"}

var (
	icountOnce sync.Once
	icountErr  error
)

// useIcount makes every qemu this process starts from now on run with
// IcountArgs. The vm package has no way to pass qemu options, so a
// wrapper that adds them goes first in PATH, where vm finds qemu.
func useIcount() error {
	icountOnce.Do(func() { icountErr = installQemuWrapper() })
	return icountErr
}

func installQemuWrapper() error {
	const name = "qemu-system-x86_64"
	real, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("find qemu: %w", err)
	}
	dir, err := os.MkdirTemp("", "bpfipe-bench-qemu-")
	if err != nil {
		return err
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\" %s\n", shellQuote(real), strings.Join(IcountArgs, " "))
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		return err
	}
	return os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
