package loader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func TestProbeClassification(t *testing.T) {
	ok := func() error { return nil }
	root := func() ([]string, error) { return nil, nil }
	lsms := func(list string) func() (string, error) { return func() (string, error) { return list, nil } }
	// What cilium/ebpf returns on a host that refuses LSM programs.
	refused := fmt.Errorf("load program: %w (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", unix.EPERM)

	for _, tc := range []struct {
		name string
		env  probeEnv
		want error
	}{
		{"everything works", probeEnv{root, ok, lsms("lockdown,capability,bpf\n"), ok}, nil},
		{"not root", probeEnv{func() ([]string, error) { return []string{"CAP_BPF"}, nil }, ok, lsms("bpf"), ok}, ErrNotPrivileged},
		{"no LSM program type", probeEnv{root, func() error { return fmt.Errorf("detect support for LSM: %w", ebpf.ErrNotSupported) }, lsms("bpf"), ok}, ErrNoBPFLSM},
		{"program type refused", probeEnv{root, func() error { return refused }, lsms("capability,bpf"), ok}, ErrLSMRefused},
		{"bpf not active", probeEnv{root, ok, lsms("lockdown,capability,landlock,yama,apparmor\n"), ok}, ErrBPFLSMInactive},
		// "bpfx" is not "bpf": the list is compared by names.
		{"bpf only as a prefix", probeEnv{root, ok, lsms("bpfx,capability"), ok}, ErrBPFLSMInactive},
		{"trial attach refused", probeEnv{root, ok, lsms("bpf"), func() error { return refused }}, ErrLSMRefused},
		{"link descriptors detach", probeEnv{root, ok, lsms("bpf"), func() error { return linkDescriptorPowers(ok, ok) }}, ErrLinkDescriptorsDetach},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probeWith(tc.env)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "MEMLOCK") {
				t.Errorf("error repeats cilium/ebpf's misleading MEMLOCK hint: %v", err)
			}
		})
	}
}

func TestProbeInactiveNamesTheFix(t *testing.T) {
	err := probeWith(probeEnv{
		func() ([]string, error) { return nil, nil },
		func() error { return nil },
		func() (string, error) { return "lockdown,capability,apparmor", nil },
		func() error { return nil },
	})
	if err == nil || !strings.Contains(err.Error(), "lsm=lockdown,capability,apparmor,bpf") {
		t.Errorf("error %v does not say which lsm= to boot with", err)
	}
}

// TestProbeOnThisHost runs the real probe and checks its verdict against
// bpftool's independent one. On bpfipe's development hosts bpftool says
// LSM programs are not available, and the probe must say they are refused.
func TestProbeOnThisHost(t *testing.T) {
	if os.Geteuid() != 0 {
		if err := Probe(); !errors.Is(err, ErrNotPrivileged) {
			t.Fatalf("as uid %d: got %v, want ErrNotPrivileged", os.Geteuid(), err)
		}
		return
	}
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		t.Skip("bpftool is not installed: no independent verdict on LSM programs to compare with")
	}
	out, err := exec.Command(bpftool, "feature", "probe", "kernel").CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool feature probe: %v\n%s", err, out)
	}
	err = Probe()
	switch {
	case strings.Contains(string(out), "program_type lsm is NOT available"):
		// With the BPF LSM built in (its hooks are in BTF), unavailable
		// means refused; without, it means not built.
		want := ErrNoBPFLSM
		if k, kerr := DetectKernel(); kerr == nil && k.HasHook("bprm_check_security") {
			want = ErrLSMRefused
		}
		if !errors.Is(err, want) {
			t.Fatalf("bpftool says LSM programs are unavailable: got %v, want %v", err, want)
		}
		if errors.Is(err, ErrLSMRefused) && !strings.Contains(err.Error(), "bpfipe-vm") {
			t.Errorf("refusal does not point at bpfipe-vm: %v", err)
		}
	case strings.Contains(string(out), "program_type lsm is available"):
		if err != nil && !errors.Is(err, ErrBPFLSMInactive) {
			t.Fatalf("bpftool says LSM programs load, probe says %v", err)
		}
	default:
		t.Fatalf("bpftool output names no verdict on program_type lsm:\n%s", out)
	}
}

// The guard's design rests on a link descriptor being powerless: either
// power found on the trial link refuses the kernel, and the kernels'
// answers for "cannot" (EOPNOTSUPP, EINVAL, or any other error) pass.
func TestLinkDescriptorPowers(t *testing.T) {
	works := func() error { return nil }
	cannot := func(errno unix.Errno) func() error { return func() error { return errno } }
	for _, tc := range []struct {
		name           string
		detach, update func() error
		refused        bool
	}{
		{"6.1 and 6.12", cannot(unix.EOPNOTSUPP), cannot(unix.EINVAL), false},
		{"both refused otherwise", cannot(unix.EPERM), cannot(unix.EBADF), false},
		{"detach works", works, cannot(unix.EINVAL), true},
		{"update works", cannot(unix.EOPNOTSUPP), works, true},
	} {
		err := linkDescriptorPowers(tc.detach, tc.update)
		if got := errors.Is(err, ErrLinkDescriptorsDetach); got != tc.refused {
			t.Errorf("%s: %v, want refused %v", tc.name, err, tc.refused)
		}
	}
}
