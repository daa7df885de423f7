package loader

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
)

// headerDefines reads the integer #defines of bpf/ipe.h, including the
// counter indices written as (IPE_NUM_HOOKS * 2 + N).
func headerDefines(t *testing.T) map[string]int {
	t.Helper()
	src, err := os.ReadFile("../bpf/ipe.h")
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	values := map[string]int{}
	plain := regexp.MustCompile(`(?m)^#define\s+(IPE_\w+)\s+\(?(?:1u?\s*<<\s*)?(\d+)u?\)?`)
	for _, m := range plain.FindAllStringSubmatch(string(src), -1) {
		v, _ := strconv.Atoi(m[2])
		if strings.Contains(m[0], "<<") {
			v = 1 << v
		}
		values[m[1]] = v
	}
	counter := regexp.MustCompile(`(?m)^#define\s+(IPE_\w+)\s+\(IPE_NUM_HOOKS \* 2(?: \+ (\d+))?\)`)
	for _, m := range counter.FindAllStringSubmatch(string(src), -1) {
		extra, _ := strconv.Atoi(m[2])
		values[m[1]] = values["IPE_NUM_HOOKS"]*2 + extra
	}
	return values
}

func TestLoaderConstantsMatchHeader(t *testing.T) {
	h := headerDefines(t)
	want := map[string]int{
		"IPE_NUM_HOOKS":              NumHooks,
		"IPE_SCOPE_RULE":             scopeRule,
		"IPE_SCOPE_OP_DEFAULT":       scopeOpDefault,
		"IPE_SCOPE_GLOBAL_DEFAULT":   scopeGlobalDefault,
		"IPE_COUNTER_EVENTS_DROPPED": counterEventsDropped,
		"IPE_COUNTER_NO_POLICY":      counterNoPolicy,
		"IPE_COUNTER_SCRATCH_BUSY":   counterScratchBusy,
		"IPE_ACTION_DENY":            int(policy.Deny),
		"IPE_ACTION_ALLOW":           int(policy.Allow),
	}
	for i, name := range hookNames {
		want["IPE_HOOK_"+name] = i
	}
	obs := []struct {
		name string
		o    policy.Observability
	}{
		{"IPE_OBSERVE_DV_ROOTHASH", policy.Observability{DMVerityRootHash: true}},
		{"IPE_OBSERVE_DV_SIGNATURE", policy.Observability{DMVeritySignature: true}},
		{"IPE_OBSERVE_FV_DIGEST", policy.Observability{FSVerityDigest: true}},
		{"IPE_OBSERVE_FV_SIGNATURE", policy.Observability{FSVeritySignature: true}},
	}
	for _, o := range obs {
		want[o.name] = int(observableBits(o.o))
	}
	for name, v := range want {
		got, ok := h[name]
		if !ok {
			t.Errorf("%s not found in ipe.h", name)
			continue
		}
		if got != v {
			t.Errorf("%s: ipe.h says %d, the loader uses %d", name, got, v)
		}
	}
}
