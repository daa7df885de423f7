package loader

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/maps"
)

var policyV3 = strings.Replace(policyV2, "policy_version=1.0.1", "policy_version=1.0.2", 1)

// killedUpdate leaves the pins as an update of f to generation killed
// after pinning its state aside: with swapped, also after swapping its
// rows in, the window in which the kernel enforces the new policy while
// the published state names the old one.
func killedUpdate(t *testing.T, p paths, f *PolicyFile, generation uint32, swapped bool) {
	t.Helper()
	st, err := readState(p)
	if err != nil {
		t.Fatal(err)
	}
	next := *st
	next.Active = activePolicy(f, generation)
	stateMap, err := newStateMap(&next)
	if err != nil {
		t.Fatal(err)
	}
	defer stateMap.Close()
	if err := stateMap.Pin(p.pin(stateNextName)); err != nil {
		t.Fatal(err)
	}
	if swapped {
		swapRows(t, p, f, generation)
	}
}

// swapRows puts f's rows, compiled as generation, into the policy slot.
func swapRows(t *testing.T, p paths, f *PolicyFile, generation uint32) {
	t.Helper()
	tables, err := maps.Compile(f.Policy, generation)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := newPolicyRows(spec.Maps[mapPolicy].InnerMap, tables.Table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	policyMap, err := ebpf.LoadPinnedMap(p.pin(mapPolicy), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer policyMap.Close()
	if err := policyMap.Put(uint32(0), rows); err != nil {
		t.Fatal(err)
	}
}

func TestKilledUpdateSettlesOnOpen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		swapped bool
		// want is the version and generation the state must name.
		wantVersion    string
		wantGeneration uint32
	}{
		{"killed after the swap rolls forward", true, "1.0.1", 2},
		{"killed before the swap is discarded", false, "1.0.0", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := privateBPFFS(t)
			fakeVerity(t)
			installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true})
			killedUpdate(t, p, testPolicy(t, policyV2), 2, tc.swapped)

			r, err := openRunning(p)
			if err != nil {
				t.Fatalf("open after a killed update: %v", err)
			}
			defer r.Close()
			if _, err := os.Stat(p.pin(stateNextName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still pinned after open: %v", stateNextName, err)
			}
			s, err := r.Status()
			if err != nil {
				t.Fatal(err)
			}
			if s.Version != tc.wantVersion || s.Generation != tc.wantGeneration {
				t.Errorf("status reports version %s generation %d, want %s generation %d", s.Version, s.Generation, tc.wantVersion, tc.wantGeneration)
			}
			if g := generationOf(t, r); g != s.Generation {
				t.Errorf("status reports generation %d, the rows in force are of %d", s.Generation, g)
			}

			// The next update takes the next generation and nothing in
			// force before it.
			_, next, err := r.Update(testPolicy(t, policyV3), nil)
			if err != nil {
				t.Fatalf("update after a killed update: %v", err)
			}
			if next.Generation != tc.wantGeneration+1 || generationOf(t, r) != next.Generation {
				t.Errorf("update after the kill took generation %d (rows %d), want %d", next.Generation, generationOf(t, r), tc.wantGeneration+1)
			}
		})
	}
}

// An update never reuses a generation the rows in force carry, even when
// the state lags behind them with nothing pinned aside to say why.
func TestUpdateSkipsLiveGeneration(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1), Enforcing: true})
	swapRows(t, p, testPolicy(t, policyV2), 5)
	r, err := openRunning(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, next, err := r.Update(testPolicy(t, policyV2), nil)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if next.Generation != 6 {
		t.Errorf("update took generation %d with rows of generation 5 in force, want 6", next.Generation)
	}
}

func TestKilledUnloadIsReportedAndFinished(t *testing.T) {
	p := privateBPFFS(t)
	fakeVerity(t)
	stopped := stopRecorder(t)
	l, _ := installWithoutPrograms(t, p, Options{Policy: testPolicy(t, policyV1)})
	l.Close()
	// takeDown's first step, then the kill: the slot is empty, the pins stay.
	policyMap, err := ebpf.LoadPinnedMap(p.pin(mapPolicy), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = policyMap.Delete(uint32(0))
	policyMap.Close()
	if err != nil {
		t.Fatal(err)
	}

	if _, err := openRunning(p); !errors.Is(err, ErrUnloadInterrupted) {
		t.Errorf("open after a killed unload: %v, want ErrUnloadInterrupted", err)
	}
	if err := p.checkNotLoaded(); !errors.Is(err, ErrUnloadInterrupted) {
		t.Errorf("load after a killed unload: %v, want ErrUnloadInterrupted", err)
	}
	if _, err := os.Stat(p.pin(stateName)); err != nil {
		t.Fatalf("settling removed the state, which only unload may: %v", err)
	}

	st, err := unload(p, time.Second)
	if err != nil {
		t.Fatalf("unload after a killed unload: %v", err)
	}
	if st == nil || st.Active.Name != "test" {
		t.Errorf("unload returned state %+v", st)
	}
	if _, err := os.Stat(p.pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory still there: %v", err)
	}
	if _, err := openRunning(p); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("open after unload: %v, want ErrNotLoaded", err)
	}
	if err := p.checkNotLoaded(); err != nil {
		t.Errorf("load after unload: %v", err)
	}
	if len(*stopped) != 0 {
		t.Errorf("unloading a pinned load signalled %v", *stopped)
	}
}
