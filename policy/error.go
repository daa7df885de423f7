package policy

import (
	"strconv"
	"strings"
	"syscall"
)

// ParseError is why Parse rejected a policy, with the errno in-tree IPE
// returns for the same text, so a rejection here predicts the kernel's.
type ParseError struct {
	File string
	// Line is 1-based; 0 means the error concerns the policy as a whole.
	Line int
	// Column is the 1-based byte column of Token within its line; 0 means
	// the error concerns the line as a whole.
	Column int
	// Token is the offending token; empty when no single token is at fault.
	Token string
	// Message says what was expected.
	Message string
	// Errno is what the kernel's parser returns: EBADMSG, EINVAL or ERANGE.
	Errno syscall.Errno
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Column))
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Token != "" {
		b.WriteString(strconv.Quote(e.Token))
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	b.WriteString(" [")
	b.WriteString(ErrnoName(e.Errno))
	b.WriteByte(']')
	return b.String()
}

// Unwrap lets callers test the errno class with errors.Is(err, syscall.EINVAL).
func (e *ParseError) Unwrap() error { return e.Errno }

// ErrnoName is the symbolic name of the errnos the parser returns, as the
// kernel headers spell them; other values print as "errno N".
func ErrnoName(e syscall.Errno) string {
	switch e {
	case syscall.EBADMSG:
		return "EBADMSG"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.ERANGE:
		return "ERANGE"
	}
	return "errno " + strconv.Itoa(int(e))
}
