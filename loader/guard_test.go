package loader

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/internal/testcert"
)

// The guard protects maps by the name the loader gives them, so every map
// a load creates must carry the mark: a map added later without it would
// be open to root.
func TestEveryMapOfALoadIsMarked(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	l, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true})

	check := func(what string, m *ebpf.Map) {
		t.Helper()
		info, err := m.Info()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !strings.HasPrefix(info.Name, bpf.GuardMark) {
			t.Errorf("%s has kernel name %q, want the %q mark", what, info.Name, bpf.GuardMark)
		}
	}
	for name, m := range l.coll.Maps {
		if strings.HasPrefix(name, ".") {
			continue // data sections: see markObjects
		}
		check("map "+name, m)
	}
	check("policy rows", l.rows)
	check("state", l.state)

	// An update makes new rows and a new state: marked too.
	if _, _, err := l.Running.Update(testPolicy(t, policyV2), nil); err != nil {
		t.Fatal(err)
	}
	var rows *ebpf.Map
	if err := l.Running.policy.Lookup(uint32(0), &rows); err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	check("updated policy rows", rows)
	state, err := loadPinnedMap(p, stateName)
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	check("updated state", state)
}

// The claim happens in the bpf hook's program, which the loader attaches
// first by name.
func TestGuardClaimProgramHooksBPF(t *testing.T) {
	spec, err := bpf.LoadGuardSpec()
	if err != nil {
		t.Fatal(err)
	}
	p := spec.Programs[guardClaimProgram]
	if p == nil || p.AttachTo != "bpf" {
		t.Fatalf("guard program %s: %+v, want one attached to the bpf hook", guardClaimProgram, p)
	}
	// Unload finds the guard's links by this prefix.
	for name := range spec.Programs {
		if !strings.HasPrefix(name, guardProgramPrefix) {
			t.Errorf("guard program %s does not start with %q", name, guardProgramPrefix)
		}
	}
}

func TestMarkObjectsNamesEachObjectOnce(t *testing.T) {
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	markObjects(spec)
	markObjects(spec)
	for name, m := range spec.Maps {
		want := bpf.GuardMark + name
		if strings.HasPrefix(name, ".") {
			want = name
		}
		if m.Name != want {
			t.Errorf("map %s named %q, want %q", name, m.Name, want)
		}
	}
	for name, p := range spec.Programs {
		if p.Name != bpf.GuardMark+name {
			t.Errorf("program %s named %q, want %q", name, p.Name, bpf.GuardMark+name)
		}
	}
}

// noopTracepoint is a raw tracepoint program that does nothing, for tests
// that need real links on a host that cannot attach LSM programs.
func noopTracepoint() (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.RawTracepoint,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
}

// attachNoop attaches a noopTracepoint program: one link per call.
func attachNoop(prog *ebpf.Program) (link.Link, error) {
	return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: prog})
}

// nextLinkFloor relies on the kernel handing out link IDs upwards.
func TestLinkFloorIsBelowNewLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF) to create links")
	}
	floor, err := nextLinkFloor()
	if err != nil {
		t.Fatal(err)
	}
	prog, err := noopTracepoint()
	if err != nil {
		t.Skipf("this host cannot load a raw tracepoint program: %v", err)
	}
	defer prog.Close()
	for range 3 {
		lk, err := attachNoop(prog)
		if err != nil {
			t.Skipf("this host cannot attach a raw tracepoint: %v", err)
		}
		info, err := lk.Info()
		lk.Close()
		if err != nil {
			t.Fatal(err)
		}
		if uint32(info.ID) < floor {
			t.Errorf("new link %d below the floor %d", info.ID, floor)
		}
	}
	again, err := nextLinkFloor()
	if err != nil {
		t.Fatal(err)
	}
	if again < floor {
		t.Errorf("floor went down from %d to %d", floor, again)
	}
}

func TestLockRefusesWhatWeakensEnforcement(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	l, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true, Foreground: true, Lock: true})
	r := l.Running

	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrLocked) || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s: %v, want ErrLocked (a permission error)", what, err)
		}
	}
	_, err := r.SetEnforcing(false)
	refused("enforce off", err)
	_, _, err = r.Update(testPolicy(t, policyV2), nil)
	refused("unsigned update", err)
	_, err = unload(p, 0)
	refused("unload", err)

	if s, err := r.Settings(); err != nil || s.Enforcing != 1 {
		t.Errorf("settings after refusals: %+v, %v; want still enforcing", s, err)
	}
	if st, err := readState(p); err != nil || st.Active.Version != "1.0.0" || !st.Locked {
		t.Errorf("state after refusals: %+v, %v; want version 1.0.0, locked", st, err)
	}
	// What does not weaken enforcement still works.
	if _, err := r.SetEnforcing(true); err != nil {
		t.Errorf("enforce on: %v", err)
	}
	if _, err := r.SetSuccessAudit(true); err != nil {
		t.Errorf("success-audit on: %v", err)
	}

	// The foreground loader stops without taking enforcement down.
	if err := l.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.pin(stateName)); err != nil {
		t.Errorf("state pin gone after the locked loader stopped: %v", err)
	}
}

func TestUnlockedLoadUnloads(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true})
	if _, err := unload(p, 0); err != nil {
		t.Fatalf("unload without --lock: %v", err)
	}
	if _, err := os.Stat(p.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after unload: %v", err)
	}
}

func TestUpdatesMustBeSignedByTheLoadsTrust(t *testing.T) {
	root := testcert.NewCA(t, "bpfipe trust root")
	issued := testcert.New(t, "bpfipe issued signer", &root)
	stranger := testcert.New(t, "bpfipe stranger", nil)
	text := func(version string) []byte {
		return []byte("policy_name=test policy_version=" + version + "\nDEFAULT action=ALLOW\n")
	}
	signed := func(content []byte, k testcert.Pair, extra ...*x509.Certificate) *PolicyFile {
		t.Helper()
		f, err := DecodePolicy("test.pol", sign(t, content, k, extra...), nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	for _, locked := range []bool{false, true} {
		t.Run(fmt.Sprintf("locked=%v", locked), func(t *testing.T) {
			p := privateBPFFS(t)
			fakeVerity(t)
			l, _ := installWithoutPrograms(t, p, Options{
				Policy: signed(text("1.0.0"), root), Enforcing: true, Lock: locked, Trusted: []*x509.Certificate{root.Cert},
			})
			r := l.Running
			for _, tc := range []struct {
				name  string
				file  *PolicyFile
				errno syscall.Errno
			}{
				{"unsigned", testPolicyText(t, text("1.0.1")), syscall.EBADMSG},
				{"signed by a stranger", signed(text("1.0.1"), stranger), syscall.ENOKEY},
			} {
				if _, _, err := r.Update(tc.file, nil); !errors.Is(err, tc.errno) {
					t.Errorf("%s update: %v, want %v", tc.name, err, tc.errno)
				}
			}
			if st, err := readState(p); err != nil || st.Active.Version != "1.0.0" {
				t.Fatalf("refused updates changed the policy: %+v, %v", st, err)
			}
			// A certificate the trusted root issued signs updates too, as
			// --trust accepts at load.
			if _, next, err := r.Update(signed(text("1.0.1"), issued, issued.Cert), nil); err != nil || next.Version != "1.0.1" {
				t.Errorf("update signed under the trusted root: %v, %+v", err, next)
			}
		})
	}
}

func testPolicyText(t *testing.T, text []byte) *PolicyFile {
	t.Helper()
	return testPolicy(t, string(text))
}

func TestGuardRefusalNamesTheGuard(t *testing.T) {
	eperm := fmt.Errorf("open pinned map state: %w", syscall.EPERM)
	err := guardRefusal(eperm)
	if missing, _ := missingCapabilities(); len(missing) == 0 {
		if !errors.Is(err, ErrGuarded) || !errors.Is(err, syscall.EPERM) {
			t.Errorf("privileged EPERM: %v, want ErrGuarded wrapping EPERM", err)
		}
	} else if err != eperm {
		t.Errorf("unprivileged EPERM: %v, want it unchanged (the guard is not why)", err)
	}
	for _, other := range []error{nil, ErrNotLoaded, fmt.Errorf("x: %w", syscall.EACCES)} {
		if got := guardRefusal(other); got != other {
			t.Errorf("guardRefusal(%v) = %v, want it unchanged", other, got)
		}
	}
}
