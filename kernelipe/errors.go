package kernelipe

import (
	"errors"
	"strconv"
	"syscall"
)

// Step is the securityfs operation an Error comes from; the same errno
// means different things in different files.
type Step int

const (
	StepNewPolicy    Step = iota // write to new_policy
	StepUpdate                   // write to policies/NAME/update
	StepActivate                 // write to policies/NAME/active
	StepDelete                   // write to policies/NAME/delete
	StepEnforce                  // write to enforce
	StepSuccessAudit             // write to success_audit
	StepRead                     // read of any node
)

var stepNames = [...]string{"load policy", "update policy", "activate policy", "delete policy", "set enforce", "set success_audit", "read ipe state"}

func (s Step) String() string {
	if int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "step " + strconv.Itoa(int(s))
}

// ErrNotAvailable means in-tree IPE is not running: the kernel lacks
// CONFIG_SECURITY_IPE, IPE is not in the lsm= list, or securityfs is not
// mounted.
var ErrNotAvailable = errors.New("in-tree IPE is not available: no " + DefaultDir + " (kernel without CONFIG_SECURITY_IPE, ipe missing from lsm=, or securityfs not mounted)")

// Error is a securityfs operation the kernel refused, with the errno it
// returned.
type Error struct {
	Step   Step
	Policy string // the policy concerned, when known
	Path   string
	Errno  syscall.Errno
	// Opening says open(2) of the node failed, not the write or read.
	Opening bool
}

func (e *Error) Error() string {
	s := e.Step.String()
	if e.Policy != "" {
		s += " " + strconv.Quote(e.Policy)
	}
	if e.Opening {
		return s + ": open " + e.Path + ": " + ErrnoName(e.Errno) + ": " + openMeaning(e.Errno)
	}
	return s + ": " + ErrnoName(e.Errno) + ": " + Meaning(e.Step, e.Errno)
}

func openMeaning(errno syscall.Errno) string {
	switch errno {
	case syscall.EACCES, syscall.EPERM:
		return "permission denied (root is required)"
	case syscall.ENOENT:
		return "no such policy or node: it is not loaded, or was deleted or replaced meanwhile"
	}
	return errno.Error()
}

// Unwrap lets callers test with errors.Is(err, syscall.ENOKEY).
func (e *Error) Unwrap() error { return e.Errno }

// Meaning says what IPE means by errno in step, following the errno table
// of the kernel's admin guide (Documentation/admin-guide/LSM/ipe.rst) and
// security/ipe/{fs,policy_fs,policy}.c.
func Meaning(step Step, errno syscall.Errno) string {
	switch errno {
	case syscall.ENOKEY:
		return "the signer is not trusted by the kernel (its certificate is in neither the secondary nor the platform keyring)"
	case syscall.EKEYREJECTED:
		return "the signature does not verify (the policy or signature was altered, or the wrong key signed)"
	case syscall.EBADMSG:
		if step == StepNewPolicy || step == StepUpdate {
			return "the message is malformed or unsigned, or the policy has a syntax error"
		}
	case syscall.ERANGE:
		if step == StepNewPolicy || step == StepUpdate {
			return "a policy_version part exceeds 65535"
		}
	case syscall.ESTALE:
		return "the version is not newer than the loaded policy's"
	case syscall.EEXIST:
		return "a policy of that name is already loaded (use update)"
	case syscall.EINVAL:
		switch step {
		case StepActivate:
			return "the policy's version is older than the active policy's"
		case StepUpdate:
			return "the new policy has a different name, its version is older (kernels before 6.13), or its text is invalid"
		case StepNewPolicy:
			return "the policy text is invalid (a version part that is not a number, or a digest that is not even-length hex)"
		case StepDelete:
			return "only a true value deletes"
		case StepEnforce, StepSuccessAudit:
			return "the value is not a boolean"
		}
	case syscall.EPERM:
		if step == StepDelete {
			return "the policy is active (activate another first) or the caller lacks CAP_MAC_ADMIN"
		}
		return "the caller lacks CAP_MAC_ADMIN"
	case syscall.EACCES:
		if step == StepNewPolicy || step == StepUpdate {
			return "the policy name cannot name a securityfs directory (it contains '/' or is '.' or '..')"
		}
		return "permission denied"
	case syscall.ENAMETOOLONG:
		return "the policy name is longer than a securityfs directory name may be (255 bytes)"
	case syscall.ENOENT:
		return "no such policy: it is not loaded, or was deleted or replaced meanwhile"
	case syscall.ENOMEM:
		return "the kernel is out of memory, or the policy is larger than it accepts"
	case syscall.E2BIG:
		return "the policy is larger than the kernel accepts"
	case syscall.ENOPKG:
		return "the signature uses an algorithm the kernel's PKCS#7 code does not support"
	}
	return errno.Error()
}

// ErrnoName is the symbolic name of errno as the kernel headers spell it.
func ErrnoName(errno syscall.Errno) string {
	if name, ok := errnoNames[errno]; ok {
		return name
	}
	return "errno " + strconv.Itoa(int(errno))
}

var errnoNames = map[syscall.Errno]string{
	syscall.EPERM:        "EPERM",
	syscall.ENOENT:       "ENOENT",
	syscall.ENOMEM:       "ENOMEM",
	syscall.EACCES:       "EACCES",
	syscall.EEXIST:       "EEXIST",
	syscall.EINVAL:       "EINVAL",
	syscall.E2BIG:        "E2BIG",
	syscall.ERANGE:       "ERANGE",
	syscall.EBADMSG:      "EBADMSG",
	syscall.ESTALE:       "ESTALE",
	syscall.ENOKEY:       "ENOKEY",
	syscall.EKEYREJECTED: "EKEYREJECTED",
	syscall.ENOPKG:       "ENOPKG",
	syscall.EFAULT:       "EFAULT",
	syscall.ENOTDIR:      "ENOTDIR",
	syscall.EISDIR:       "EISDIR",
	syscall.ENAMETOOLONG: "ENAMETOOLONG",
}

// ParseErrnoName is the inverse of ErrnoName, for reports that carry
// names; it accepts "OK" and "" as 0.
func ParseErrnoName(name string) (syscall.Errno, bool) {
	if name == "" || name == "OK" {
		return 0, true
	}
	for e, n := range errnoNames {
		if n == name {
			return e, true
		}
	}
	return 0, false
}
