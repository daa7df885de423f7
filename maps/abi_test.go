package maps

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// headerConstants reads the #define and enum values of bpf/ipe.h that are
// plain integers.
func headerConstants(t *testing.T) map[string]uint64 {
	t.Helper()
	src, err := os.ReadFile("../bpf/ipe.h")
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	values := map[string]uint64{}
	define := regexp.MustCompile(`(?m)^#define\s+(IPE_\w+)\s+(0x[0-9a-fA-F]+|\d+)u?\b`)
	for _, m := range define.FindAllSubmatch(src, -1) {
		v, err := strconv.ParseUint(string(m[2]), 0, 64)
		if err != nil {
			t.Fatalf("parse %s: %v", m[1], err)
		}
		values[string(m[1])] = v
	}
	enum := regexp.MustCompile(`(?m)^\s*(IPE_ROW_\w+)\s*=\s*(\d+),`)
	for _, m := range enum.FindAllSubmatch(src, -1) {
		v, _ := strconv.ParseUint(string(m[2]), 10, 64)
		values[string(m[1])] = v
	}
	return values
}

func TestConstantsMatchHeader(t *testing.T) {
	h := headerConstants(t)
	want := map[string]uint64{
		"IPE_OP_EXECUTE":           uint64(policy.OpExecute),
		"IPE_OP_X509_CERT":         uint64(policy.OpX509Cert),
		"IPE_OP_INVALID":           uint64(policy.OpInvalid),
		"IPE_NUM_OPS":              uint64(policy.NumOps),
		"IPE_PROP_UNOBSERVABLE":    propUnobservable,
		"IPE_PROP_TRUE":            propTrue,
		"IPE_PROP_FALSE":           propFalse,
		"IPE_STATES":               NumStates,
		"IPE_ALG_LEN":              algLen,
		"IPE_DIGEST_MAX":           digestMax,
		"IPE_NO_VERDICT":           uint64(NoVerdict),
		"IPE_ACTION_DENY":          uint64(policy.Deny),
		"IPE_ACTION_ALLOW":         uint64(policy.Allow),
		"IPE_META_GLOBAL_DEFAULT":  MetaGlobalDefaultSlot,
		"IPE_META_GENERATION":      MetaGenerationSlot,
		"IPE_ROW_META":             uint64(KindMeta),
		"IPE_ROW_BASE":             uint64(KindBase),
		"IPE_ROW_DV":               uint64(KindDV),
		"IPE_ROW_FV":               uint64(KindFV),
		"IPE_ROW_DVFV":             uint64(KindDVFV),
		"IPE_SCOPE_RULE":           uint64(policy.ScopeRule),
		"IPE_SCOPE_OP_DEFAULT":     uint64(policy.ScopeOpDefault),
		"IPE_SCOPE_GLOBAL_DEFAULT": uint64(policy.ScopeGlobalDefault),
	}
	for name, v := range want {
		got, ok := h[name]
		if !ok {
			t.Errorf("%s not found in ipe.h", name)
			continue
		}
		if got != v {
			t.Errorf("%s: ipe.h says %d, Go says %d", name, got, v)
		}
	}
	if actionDeny != policy.Deny || actionAllow != policy.Allow {
		t.Errorf("verdict actions %d/%d differ from policy actions %d/%d", actionDeny, actionAllow, policy.Deny, policy.Allow)
	}
}

func TestGeneratedTypesHaveHeaderSizes(t *testing.T) {
	var (
		d   bpf.Digest
		row bpf.Row
	)
	if len(d.Alg) != algLen || len(d.Bytes) != digestMax {
		t.Errorf("bpf.Digest has %d alg and %d digest bytes, want %d and %d", len(d.Alg), len(d.Bytes), algLen, digestMax)
	}
	if len(row.Verdict) != NumStates {
		t.Errorf("bpf.Row has %d verdicts, want %d", len(row.Verdict), NumStates)
	}
	// kind, op, pad (4) + two digests of len (4) + alg + bytes; value: the verdicts.
	if want := 4 + 2*(4+algLen+digestMax) + 4*NumStates; RowBytes != want {
		t.Errorf("RowBytes = %d, want %d", RowBytes, want)
	}
}
