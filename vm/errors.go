package vm

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels for the ways a run can fail, checked with errors.Is.
var (
	// ErrTimeout: the guest did not finish within the run's timeout.
	ErrTimeout = errors.New("guest timed out")
	// ErrPanic: the guest kernel panicked.
	ErrPanic = errors.New("guest kernel panicked")
	// ErrNoStatus: the guest stopped without reporting an exit status.
	ErrNoStatus = errors.New("guest stopped without reporting an exit status")
	// ErrInit: the guest's init could not run the command.
	ErrInit = errors.New("guest init failed")
	// ErrUnavailable: something the run needs (a kernel, a tool from the
	// package registry) cannot be had, neither fetched nor found in the cache.
	ErrUnavailable = errors.New("not available")
)

// Exit statuses of bpfipe-vm when the runner itself fails. A guest command's
// own status is passed through unchanged, so these are chosen from the top
// of the range where ordinary commands rarely land.
const (
	ExitRunnerError = 125 // bad usage, or the runner could not build or start the guest
	ExitTimeout     = 124 // the guest did not finish in time
	ExitGuestCrash  = 123 // the guest kernel panicked or stopped without a status
	ExitMissing     = 122 // a host tool or a kernel is missing and cannot be had
)

// ExitStatus maps a Run error to the runner's exit status.
func ExitStatus(err error) int {
	var missing *MissingError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrTimeout):
		return ExitTimeout
	case errors.Is(err, ErrPanic), errors.Is(err, ErrNoStatus):
		return ExitGuestCrash
	case errors.As(err, &missing), errors.Is(err, ErrUnavailable):
		return ExitMissing
	default:
		return ExitRunnerError
	}
}

// MissingError names a host tool the runner needs and the Debian package
// that provides it.
type MissingError struct {
	What    string // the command or file that was looked for
	Package string // the Debian package that provides it
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s is missing: install it with 'apt-get install %s' (Debian package %s)", e.What, e.Package, e.Package)
}

// GuestError describes a guest that failed to report a status, with the last
// lines it printed so the cause can be read without rerunning.
type GuestError struct {
	Err     error // one of the sentinels
	Detail  string
	Console []string // last kernel console lines
	Output  []string // last lines of the command's output
}

func (e *GuestError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if len(e.Output) > 0 {
		b.WriteString("\nlast output lines:")
		for _, line := range e.Output {
			b.WriteString("\n  | ")
			b.WriteString(line)
		}
	}
	if len(e.Console) > 0 {
		b.WriteString("\nlast console lines:")
		for _, line := range e.Console {
			b.WriteString("\n  | ")
			b.WriteString(line)
		}
	}
	return b.String()
}

func (e *GuestError) Unwrap() error { return e.Err }
