package loader

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Refusal is a rejection that in-tree IPE reports with an errno: a policy
// whose signature does not check out, or an update that breaks IPE's rules.
// errors.Is(err, syscall.ESTALE) and the like test the class.
type Refusal struct {
	// Step is what was refused, e.g. "verify policy signature".
	Step   string
	Errno  syscall.Errno
	Reason string
}

func (e *Refusal) Error() string {
	return fmt.Sprintf("%s: %s [%s]", e.Step, e.Reason, unix.ErrnoName(e.Errno))
}

func (e *Refusal) Unwrap() error { return e.Errno }

func refuse(step string, errno syscall.Errno, format string, args ...any) *Refusal {
	return &Refusal{Step: step, Errno: errno, Reason: fmt.Sprintf(format, args...)}
}
