package bpf

import (
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
)

// guardDefine reads one numeric #define of guard.c.
func guardDefine(t *testing.T, name string) uint64 {
	t.Helper()
	src, err := os.ReadFile("guard.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define\s+` + name + `\s+(0x[0-9a-f]+|\d+)(?:ull)?\b`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("guard.c has no numeric #define %s", name)
	}
	v, err := strconv.ParseUint(string(m[1]), 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGuardConstantsMatchSource(t *testing.T) {
	var mark [8]byte
	binary.LittleEndian.PutUint64(mark[:], guardDefine(t, "GUARD_MARK"))
	masked := guardDefine(t, "GUARD_MARK_MASK")
	n := 0
	for masked != 0 {
		n++
		masked >>= 8
	}
	if got := string(mark[:n]); got != GuardMark {
		t.Errorf("GUARD_MARK spells %q over %d bytes, GuardMark is %q", got, n, GuardMark)
	}
	if got := guardDefine(t, "GUARD_MAX_LINKS"); got != GuardMaxLinks {
		t.Errorf("GUARD_MAX_LINKS %d, GuardMaxLinks %d", got, GuardMaxLinks)
	}
	if got := len(GuardConfig{}.Links); got != GuardMaxLinks {
		t.Errorf("GuardConfig holds %d links, GuardMaxLinks %d", got, GuardMaxLinks)
	}
}

// The loader relies on the guard object being LSM programs and one
// configuration map, each program named so its link pin sorts after every
// enforcement program's (so unload unpins the guard last).
func TestGuardSpecShape(t *testing.T) {
	spec, err := LoadGuardSpec()
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Maps) != 1 || spec.Maps["guard"] == nil {
		t.Errorf("guard maps %v, want exactly the configuration map", keys(spec.Maps))
	}
	if got := spec.Maps["guard"].ValueSize; got != uint32(binary.Size(GuardConfig{})) {
		t.Errorf("guard value size %d, GuardConfig %d", got, binary.Size(GuardConfig{}))
	}
	main, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range spec.Programs {
		if p.Type != ebpf.LSM {
			t.Errorf("guard program %s has type %v, want LSM", name, p.Type)
		}
		for other := range main.Programs {
			if name <= other {
				t.Errorf("guard program %s sorts before enforcement program %s", name, other)
			}
		}
	}
	if len(spec.Programs) == 0 {
		t.Error("the guard object has no programs")
	}
}

// The guard knows bpfipe's maps by the name the loader gives them, and
// cilium/ebpf recognises data sections (.bss, .data, .rodata) by theirs:
// the enforcement object must have none, or a map of it would go unmarked.
func TestEnforcementObjectHasNoDataSections(t *testing.T) {
	for what, load := range map[string]func() (*ebpf.CollectionSpec, error){"bpfipe": LoadSpec, "guard": LoadGuardSpec} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		for name := range spec.Maps {
			if name == "" || name[0] == '.' {
				t.Errorf("%s object has data section %s", what, name)
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
