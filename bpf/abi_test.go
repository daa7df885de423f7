package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/policy"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// headerConstants evaluates every IPE_* #define of ipe.h and maps.h and
// every IPE_* enumerator of ipe.h. It knows the C of those headers: integer
// literals with a u suffix, names defined earlier, parentheses, *, + and <<.
// A constant it cannot evaluate fails the test, so a new form in the header
// cannot slip past unchecked.
func headerConstants(t *testing.T) map[string]uint64 {
	t.Helper()
	comment := regexp.MustCompile(`(?s)/\*.*?\*/|//[^\n]*`)
	define := regexp.MustCompile(`(?m)^#define\s+(IPE_\w+)[ \t]+(.+)$`)
	enumerator := regexp.MustCompile(`(?m)^\s*(IPE_\w+)\s*=\s*([^,\n]+),?\s*$`)
	values := map[string]uint64{}
	for _, file := range []string{"ipe.h", "maps.h"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("read header: %v", err)
		}
		code := comment.ReplaceAllString(string(src), "")
		matches := append(define.FindAllStringSubmatch(code, -1), enumerator.FindAllStringSubmatch(code, -1)...)
		for _, m := range matches {
			v, err := evalHeaderExpr(m[2], values)
			if err != nil {
				t.Errorf("%s: %s = %q: %v", file, m[1], m[2], err)
				continue
			}
			values[m[1]] = v
		}
	}
	return values
}

// evalHeaderExpr evaluates a constant expression of the headers over the
// constants defined before it, with C's precedence: * binds tighter than +,
// which binds tighter than <<.
func evalHeaderExpr(expr string, defined map[string]uint64) (uint64, error) {
	tokens := regexp.MustCompile(`\w+|<<|\S`).FindAllString(expr, -1)
	var shift func() (uint64, error)
	next := func() string {
		if len(tokens) == 0 {
			return ""
		}
		return tokens[0]
	}
	primary := func() (uint64, error) {
		tok := next()
		if tok == "" {
			return 0, errors.New("expression ends early")
		}
		tokens = tokens[1:]
		if tok == "(" {
			v, err := shift()
			if err != nil {
				return 0, err
			}
			if next() != ")" {
				return 0, errors.New("unbalanced parenthesis")
			}
			tokens = tokens[1:]
			return v, nil
		}
		if v, err := strconv.ParseUint(strings.TrimRight(tok, "uUlL"), 0, 64); err == nil {
			return v, nil
		}
		if v, ok := defined[tok]; ok {
			return v, nil
		}
		return 0, fmt.Errorf("unknown term %q", tok)
	}
	// binary parses operands joined by op, each with operand.
	binary := func(op string, operand func() (uint64, error), apply func(a, b uint64) uint64) func() (uint64, error) {
		return func() (uint64, error) {
			v, err := operand()
			for err == nil && next() == op {
				tokens = tokens[1:]
				var w uint64
				if w, err = operand(); err == nil {
					v = apply(v, w)
				}
			}
			return v, err
		}
	}
	product := binary("*", primary, func(a, b uint64) uint64 { return a * b })
	sum := binary("+", product, func(a, b uint64) uint64 { return a + b })
	shift = binary("<<", sum, func(a, b uint64) uint64 { return a << b })
	v, err := shift()
	if err == nil && len(tokens) != 0 {
		err = fmt.Errorf("unexpected %q", tokens[0])
	}
	return v, err
}

// TestConstantsMatchHeaders holds every constant of the headers to its Go
// counterparts, and every Go constant that stands for one to the header.
func TestConstantsMatchHeaders(t *testing.T) {
	h := headerConstants(t)
	checks := []struct {
		header string
		goVal  uint64
	}{
		{"IPE_PROP_UNOBSERVABLE", PropUnobservable},
		{"IPE_PROP_TRUE", PropTrue},
		{"IPE_PROP_FALSE", PropFalse},
		{"IPE_STATES", NumStates},
		{"IPE_ALG_LEN", AlgLen},
		{"IPE_DIGEST_MAX", DigestMax},

		{"IPE_VERDICT_OP_DEFAULT", uint64(VerdictOpDefault)},
		{"IPE_VERDICT_GLOBAL_DEFAULT", uint64(VerdictGlobalDefault)},
		{"IPE_NO_VERDICT", uint64(NoVerdict)},
		{"IPE_ACTION_DENY", ActionDeny},
		{"IPE_ACTION_ALLOW", ActionAllow},

		{"IPE_NEED_BOOT_VERIFIED", uint64(NeedBootVerified)},
		{"IPE_NEED_DV_SIGNATURE", uint64(NeedDMVeritySignature)},
		{"IPE_NEED_FV_SIGNATURE", uint64(NeedFSVeritySignature)},
		{"IPE_NEED_DV_ROWS", uint64(NeedDVRows)},
		{"IPE_NEED_FV_ROWS", uint64(NeedFVRows)},
		{"IPE_NEED_DVFV_ROWS", uint64(NeedDVFVRows)},
		{"IPE_LINKS", Links},

		{"IPE_ROW_BASE", uint64(RowKindBase)},
		{"IPE_ROW_DV", uint64(RowKindDV)},
		{"IPE_ROW_FV", uint64(RowKindFV)},
		{"IPE_ROW_DVFV", uint64(RowKindDVFV)},

		{"IPE_HOOK_BPRM_CHECK", uint64(HookBprmCheck)},
		{"IPE_HOOK_MMAP", uint64(HookMmap)},
		{"IPE_HOOK_MPROTECT", uint64(HookMprotect)},
		{"IPE_HOOK_KERNEL_READ", uint64(HookKernelRead)},
		{"IPE_HOOK_KERNEL_LOAD", uint64(HookKernelLoad)},
		{"IPE_NUM_HOOKS", NumHooks},

		{"IPE_SCOPE_RULE", ScopeRule},
		{"IPE_SCOPE_OP_DEFAULT", ScopeOpDefault},
		{"IPE_SCOPE_GLOBAL_DEFAULT", ScopeGlobalDefault},

		{"IPE_COUNTER_EVENTS_DROPPED", CounterEventsDropped},
		{"IPE_COUNTER_NO_POLICY", CounterNoPolicy},
		{"IPE_COUNTER_SCRATCH_BUSY", CounterScratchBusy},
		{"IPE_COUNTER_PATH_LOST", CounterPathLost},
		{"IPE_SEEDS_PER_ROW", SeedsPerRow},
		{"IPE_NUM_COUNTERS", NumCounters},

		{"IPE_PATH_MAX", PathMax},
		{"IPE_SID_LEN", SIDLen},

		// maps.h, mirrored by the decision tests only.
		{"IPE_SCRATCH_SLOTS", scratchSlots},
	}
	// The policy package numbers ops, actions and scopes as the header
	// does, so the loader passes them between the two unconverted.
	policyChecks := []struct {
		header, goName string
		goVal          uint64
	}{
		{"IPE_OP_EXECUTE", "policy.OpExecute", uint64(policy.OpExecute)},
		{"IPE_OP_FIRMWARE", "policy.OpFirmware", uint64(policy.OpFirmware)},
		{"IPE_OP_KMODULE", "policy.OpKmodule", uint64(policy.OpKmodule)},
		{"IPE_OP_KEXEC_IMAGE", "policy.OpKexecImage", uint64(policy.OpKexecImage)},
		{"IPE_OP_KEXEC_INITRAMFS", "policy.OpKexecInitramfs", uint64(policy.OpKexecInitramfs)},
		{"IPE_OP_POLICY", "policy.OpPolicy", uint64(policy.OpPolicy)},
		{"IPE_OP_X509_CERT", "policy.OpX509Cert", uint64(policy.OpX509Cert)},
		{"IPE_OP_INVALID", "policy.OpInvalid", uint64(policy.OpInvalid)},
		{"IPE_NUM_OPS", "policy.NumOps", uint64(policy.NumOps)},
		{"IPE_ACTION_DENY", "policy.Deny", uint64(policy.Deny)},
		{"IPE_ACTION_ALLOW", "policy.Allow", uint64(policy.Allow)},
		{"IPE_SCOPE_RULE", "policy.ScopeRule", uint64(policy.ScopeRule)},
		{"IPE_SCOPE_OP_DEFAULT", "policy.ScopeOpDefault", uint64(policy.ScopeOpDefault)},
		{"IPE_SCOPE_GLOBAL_DEFAULT", "policy.ScopeGlobalDefault", uint64(policy.ScopeGlobalDefault)},
	}
	checked := map[string]bool{}
	compare := func(header, where string, goVal uint64) {
		checked[header] = true
		got, ok := h[header]
		if !ok {
			t.Errorf("%s: not found in the headers", header)
			return
		}
		if got != goVal {
			t.Errorf("%s = %d in the header, %d in %s", header, got, goVal, where)
		}
	}
	for _, c := range checks {
		compare(c.header, "package bpf", c.goVal)
	}
	for _, c := range policyChecks {
		compare(c.header, c.goName, c.goVal)
	}
	for name := range h {
		if !checked[name] {
			t.Errorf("%s: in the headers with no Go counterpart here", name)
		}
	}
}

// IPE audit's hook names are the IPE_HOOK_* names, so the header numbers
// them too.
func TestHookNamesMatchHeader(t *testing.T) {
	h := headerConstants(t)
	for hook := range uint8(NumHooks) {
		name := "IPE_HOOK_" + HookName(hook)
		if got, ok := h[name]; !ok || got != uint64(hook) {
			t.Errorf("hook %d is named %s, which the header numbers %d (defined: %v)", hook, HookName(hook), got, ok)
		}
	}
	if got := HookName(NumHooks); got != "UNKNOWN" {
		t.Errorf("HookName(NumHooks) = %q, want UNKNOWN", got)
	}
}

// bpf2go sizes the arrays of the generated types from the header; the
// constants above must agree with them.
func TestGeneratedTypesHaveHeaderSizes(t *testing.T) {
	var (
		d   Digest
		row Row
		ev  Event
	)
	for _, c := range []struct {
		what      string
		got, want int
	}{
		{"Digest.Alg", len(d.Alg), AlgLen},
		{"Digest.Bytes", len(d.Bytes), DigestMax},
		{"Row.Verdict", len(row.Verdict), NumStates},
		{"Event.Path", len(ev.Path), PathMax},
		{"Event.Sid", len(ev.Sid), SIDLen},
	} {
		if c.got != c.want {
			t.Errorf("%s has %d elements, want %d", c.what, c.got, c.want)
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
	if inner == nil || inner.Type != ebpf.Array || inner.KeySize != 4 || int(inner.ValueSize) != binary.Size(Row{}) || inner.Flags&unix.BPF_F_INNER_MAP == 0 {
		t.Errorf("policy inner map %+v, want an array of Row with BPF_F_INNER_MAP", inner)
	}
	if BaseRows != int(policy.OpInvalid)+1 {
		t.Errorf("BaseRows = %d, want a BASE row for each of the %d ops", BaseRows, policy.OpInvalid+1)
	}
	if SeedsPerRow*4 > binary.Size(Row{}) {
		t.Errorf("%d seeds do not fit in a row of %d bytes", SeedsPerRow, binary.Size(Row{}))
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
