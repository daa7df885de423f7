package bpf

import (
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// headerDefines evaluates the #defines of ipe.h and maps.h that are a
// number, a name already defined, or "NAME * N + N" over them: enough for
// every constant abi.go and the tests mirror.
func headerDefines(t *testing.T) map[string]uint64 {
	t.Helper()
	values := map[string]uint64{}
	define := regexp.MustCompile(`(?m)^#define\s+(IPE_\w+)\s+\(?([^/\n]*?)\)?\s*(?:/\*.*)?$`)
	term := regexp.MustCompile(`^(?:(\w+)\s*\*\s*)?(\w+)(?:\s*\+\s*(\d+))?$`)
	operand := func(s string) (uint64, bool) {
		if v, err := strconv.ParseUint(strings.TrimSuffix(s, "u"), 0, 64); err == nil {
			return v, true
		}
		v, ok := values[s]
		return v, ok
	}
	for _, file := range []string{"ipe.h", "maps.h"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("read header: %v", err)
		}
		for _, m := range define.FindAllStringSubmatch(string(src), -1) {
			expr := strings.ReplaceAll(strings.TrimSpace(m[2]), "(1u << ", "1<<")
			if a, b, ok := strings.Cut(expr, "<<"); ok {
				x, okx := operand(strings.TrimSpace(a))
				y, oky := operand(strings.TrimSuffix(strings.TrimSpace(b), ")"))
				if okx && oky {
					values[m[1]] = x << y
				}
				continue
			}
			p := term.FindStringSubmatch(expr)
			if p == nil {
				continue
			}
			v, ok := operand(p[2])
			if !ok {
				continue
			}
			if p[1] != "" {
				f, ok := operand(p[1])
				if !ok {
					continue
				}
				v *= f
			}
			if p[3] != "" {
				add, _ := strconv.ParseUint(p[3], 10, 64)
				v += add
			}
			values[m[1]] = v
		}
	}
	return values
}

func TestConstantsMatchHeaders(t *testing.T) {
	h := headerDefines(t)
	want := map[string]uint64{
		"IPE_HOOK_BPRM_CHECK":        uint64(HookBprmCheck),
		"IPE_HOOK_MMAP":              uint64(HookMmap),
		"IPE_HOOK_MPROTECT":          uint64(HookMprotect),
		"IPE_HOOK_KERNEL_READ":       uint64(HookKernelRead),
		"IPE_HOOK_KERNEL_LOAD":       uint64(HookKernelLoad),
		"IPE_NUM_HOOKS":              NumHooks,
		"IPE_COUNTER_EVENTS_DROPPED": CounterEventsDropped,
		"IPE_COUNTER_NO_POLICY":      CounterNoPolicy,
		"IPE_COUNTER_SCRATCH_BUSY":   CounterScratchBusy,
		"IPE_NUM_COUNTERS":           NumCounters,
		"IPE_OBSERVE_DV_ROOTHASH":    uint64(ObserveDMVerityRootHash),
		"IPE_OBSERVE_DV_SIGNATURE":   uint64(ObserveDMVeritySignature),
		"IPE_OBSERVE_FV_DIGEST":      uint64(ObserveFSVerityDigest),
		"IPE_OBSERVE_FV_SIGNATURE":   uint64(ObserveFSVeritySignature),
		// The tests' own mirrors.
		"IPE_PROP_UNOBSERVABLE":    propUnobservable,
		"IPE_PROP_TRUE":            propTrue,
		"IPE_PROP_FALSE":           propFalse,
		"IPE_NO_VERDICT":           noVerdict,
		"IPE_META_GLOBAL_DEFAULT":  metaGlobalDefault,
		"IPE_META_GENERATION":      metaGeneration,
		"IPE_SCOPE_RULE":           scopeRule,
		"IPE_SCOPE_OP_DEFAULT":     scopeOpDefault,
		"IPE_SCOPE_GLOBAL_DEFAULT": scopeGlobalDefault,
		"IPE_SCRATCH_SLOTS":        scratchSlots,
	}
	for name, v := range want {
		got, ok := h[name]
		if !ok {
			t.Errorf("%s: not found in the headers", name)
			continue
		}
		if got != v {
			t.Errorf("%s = %d in the header, %d in Go", name, got, v)
		}
	}
}

// The object itself is the final word on sizes the headers only imply.
func TestMapsMatchABI(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	for _, tc := range []struct {
		name       string
		key, value int
		entries    uint32
	}{
		{"counters", 4, 8, NumCounters},
		{"settings", 4, binary.Size(Settings{}), 1},
		{"devices", binary.Size(DeviceKey{}), binary.Size(Device{}), 0},
	} {
		m := spec.Maps[tc.name]
		if m == nil {
			t.Errorf("map %s missing", tc.name)
			continue
		}
		if int(m.KeySize) != tc.key || int(m.ValueSize) != tc.value || (tc.entries != 0 && m.MaxEntries != tc.entries) {
			t.Errorf("map %s: key %d value %d entries %d, want %d %d %d", tc.name, m.KeySize, m.ValueSize, m.MaxEntries, tc.key, tc.value, tc.entries)
		}
	}
	inner := spec.Maps["policy"].InnerMap
	if inner == nil || inner.Type != ebpf.Hash || int(inner.KeySize) != binary.Size(RowKey{}) || int(inner.ValueSize) != binary.Size(Row{}) {
		t.Errorf("policy inner map %+v, want a hash of RowKey to Row", inner)
	}
}

// A CO-RE relocation against one of our own types can never resolve in a
// kernel: cilium/ebpf poisons the instruction and the verifier rejects the
// program on the target kernel only. BPF_CORE_READ(s.field, ...) on a local
// struct s does that silently, so catch it here.
func TestNoRelocationAgainstLocalTypes(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	for name, prog := range spec.Programs {
		for i := range prog.Instructions {
			relo := btf.CORERelocationMetadata(&prog.Instructions[i])
			if relo == nil {
				continue
			}
			typ := relo.String()
			if strings.Contains(typ, `"ipe_`) {
				t.Errorf("program %s instruction %d: relocation against a local type: %s", name, i, typ)
			}
		}
	}
}
