package loader

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Why bpfipe cannot enforce on this system. Each is an expected condition
// with its own remedy, so callers tell them apart with errors.Is and map
// them to exit statuses.
var (
	// ErrNotPrivileged: loading LSM programs and pinning them takes root.
	ErrNotPrivileged = errors.New("bpfipe must run as root (CAP_SYS_ADMIN, or CAP_BPF, CAP_PERFMON and CAP_MAC_ADMIN)")
	// ErrNoBPFLSM: the kernel has no BPF LSM program type.
	ErrNoBPFLSM = errors.New("this kernel was built without the BPF LSM (CONFIG_BPF_LSM=y and BTF are required)")
	// ErrBPFLSMInactive: the BPF LSM is built in but not in the active
	// LSM list, so programs would load and never run.
	ErrBPFLSMInactive = errors.New("the BPF LSM is built in but not active")
	// ErrLSMRefused: the kernel has the BPF LSM but refuses LSM programs,
	// with EPERM and an empty verifier log: a kernel without trampoline
	// support, under lockdown, or a hardened host like bpfipe's own
	// development machines.
	ErrLSMRefused = errors.New("this kernel refuses to load BPF LSM programs (EPERM with an empty verifier log); use bpfipe-vm to try bpfipe on a stock kernel")
	// ErrLinkDescriptorsDetach: on this kernel a descriptor of an LSM
	// link can detach the link or swap its program. The tamper guard lets
	// root open bpfipe's pinned links (refusing that would cost a program
	// on every path component), which is only safe while such a descriptor
	// can do neither, as on 6.1 and 6.12 (docs/security.md).
	ErrLinkDescriptorsDetach = errors.New("on this kernel a BPF LSM link descriptor can detach its link or swap its program, so the tamper guard could not keep root from ending enforcement through bpfipe's pinned links")
)

// Probe checks once per process, and in the order that gives the most
// useful answer, that this system can run bpfipe: privileges, the LSM
// program type, bpf among the active LSMs, then a trial load and attach of
// a minimal LSM program, since a program that loads may still never run.
// Later calls return the first answer.
func Probe() error { return probeOnce() }

var probeOnce = sync.OnceValue(func() error { return probeWith(hostProbe) })

// probeEnv is what the probe asks of the system, replaceable in tests.
type probeEnv struct {
	// missingCaps lists the capabilities the process lacks.
	missingCaps func() ([]string, error)
	haveLSMType func() error
	// activeLSMs reads /sys/kernel/security/lsm.
	activeLSMs  func() (string, error)
	trialAttach func() error
}

var hostProbe = probeEnv{
	missingCaps: missingCapabilities,
	haveLSMType: func() error { return features.HaveProgramType(ebpf.LSM) },
	activeLSMs:  readActiveLSMs,
	trialAttach: trialAttach,
}

func probeWith(env probeEnv) error {
	missing, err := env.missingCaps()
	if err != nil {
		return fmt.Errorf("probe privileges: %w", err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrNotPrivileged, strings.Join(missing, ", "))
	}
	if err := classifyLoadError(env.haveLSMType()); err != nil {
		return err
	}
	lsms, err := env.activeLSMs()
	if err != nil {
		return fmt.Errorf("probe active LSMs: %w", err)
	}
	if !slices.Contains(strings.Split(strings.TrimSpace(lsms), ","), "bpf") {
		return fmt.Errorf("%w: the active LSMs are %q; add lsm=%s,bpf to the kernel command line and reboot",
			ErrBPFLSMInactive, strings.TrimSpace(lsms), strings.TrimSpace(lsms))
	}
	return classifyLoadError(env.trialAttach())
}

// classifyLoadError turns a failure to load or attach an LSM program into
// the sentinel a user can act on. cilium/ebpf suggests raising MEMLOCK on
// EPERM, which is wrong here: LSM programs are refused outright.
func classifyLoadError(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %v", ErrNoBPFLSM, err)
	case errors.As(err, &ve) && len(ve.Log) > 0:
		return fmt.Errorf("probe LSM programs: %+v", ve)
	case errors.Is(err, unix.EPERM):
		return ErrLSMRefused
	}
	return fmt.Errorf("probe LSM programs: %w", err)
}

// trialAttach loads "return 0" on bprm_check_security and attaches it for
// an instant: returning 0 lets every exec through, so the trial cannot
// change a decision.
func trialAttach() error {
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name:         "bpfipe_probe",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     "bprm_check_security",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	}, ebpf.ProgramOptions{})
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return err
	}
	defer l.Close()
	raw, ok := l.(interface{ FD() int })
	if !ok {
		return fmt.Errorf("probe LSM links: cilium/ebpf's %T has no descriptor", l)
	}
	fd := raw.FD()
	return linkDescriptorPowers(
		func() error { return linkCommand(bpfLinkDetach, fd, 0) },
		func() error { return linkCommand(bpfLinkUpdate, fd, prog.FD()) },
	)
}

// linkDescriptorPowers answers ErrLinkDescriptorsDetach when detaching
// an LSM link or swapping its program through a descriptor worked. The
// trial link is the one tried, so success costs nothing but the answer.
func linkDescriptorPowers(detach, update func() error) error {
	if err := detach(); err == nil {
		return fmt.Errorf("%w (BPF_LINK_DETACH detached a trial link)", ErrLinkDescriptorsDetach)
	}
	if err := update(); err == nil {
		return fmt.Errorf("%w (BPF_LINK_UPDATE swapped a trial link's program)", ErrLinkDescriptorsDetach)
	}
	return nil
}

const (
	bpfLinkUpdate = 29 // BPF_LINK_UPDATE
	bpfLinkDetach = 34 // BPF_LINK_DETACH
)

// linkCommand issues BPF_LINK_DETACH or BPF_LINK_UPDATE itself:
// cilium/ebpf answers "not supported" for a tracing link's update without
// asking the kernel, and the kernel's answer is the point.
func linkCommand(cmd uintptr, linkFD, progFD int) error {
	attr := struct{ linkFD, newProgFD, flags, oldProgFD uint32 }{linkFD: uint32(linkFD), newProgFD: uint32(progFD)}
	return sysBPF(cmd, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
}

// sysBPF is bpf(2) for the few commands the loader issues itself; it
// returns the kernel's errno as is.
func sysBPF(cmd uintptr, attr unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
	if errno != 0 {
		return errno
	}
	return nil
}

const securityfsDir = "/sys/kernel/security"

// readActiveLSMs reads the active LSM list, mounting securityfs first when
// nothing is mounted there (minimal systems and fresh namespaces).
func readActiveLSMs() (string, error) {
	path := securityfsDir + "/lsm"
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if merr := unix.Mount("securityfs", securityfsDir, "securityfs", 0, ""); merr != nil {
			return "", fmt.Errorf("mount securityfs: %w", merr)
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// missingCapabilities lists what the process lacks among the capabilities
// bpfipe needs: CAP_SYS_ADMIN covers BPF, PERFMON and mounting bpffs;
// without it, CAP_BPF and CAP_PERFMON load programs and CAP_MAC_ADMIN is
// what IPE demands of anyone changing its configuration.
func missingCapabilities() ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) && has(unix.CAP_MAC_ADMIN) {
		return nil, nil
	}
	var missing []string
	for _, c := range []struct {
		n    uint
		name string
	}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_PERFMON, "CAP_PERFMON"}, {unix.CAP_MAC_ADMIN, "CAP_MAC_ADMIN"}} {
		if !has(c.n) && !(c.n != unix.CAP_MAC_ADMIN && has(unix.CAP_SYS_ADMIN)) {
			missing = append(missing, c.name)
		}
	}
	return missing, nil
}
