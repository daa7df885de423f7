package maps

import (
	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// Verdict is the outcome of a lookup and what produced it.
type Verdict struct {
	Action policy.Action
	Scope  policy.Scope
	// RuleIndex is the deciding rule's index when Scope is ScopeRule.
	RuleIndex uint32
}

// Lookup decides op for subj from the rows alone, exactly as the BPF
// programs do (ipe_decide in decide.h): the op's BASE row, then a row of
// each digest kind the op has and the file's digests select, whatever the
// policy's size. It is the Go model of the kernel side that the tests
// hold equal to policy.Evaluate.
func (t *Tables) Lookup(op policy.Op, subj policy.Subject, obs policy.Observability) Verdict {
	op = min(op, policy.OpInvalid)
	base := t.row(bpf.RowKey{Kind: uint8(KindBase), Op: uint8(op)})
	if base == nil {
		// Not a table Compile wrote: the kernel fails closed.
		return Verdict{Action: policy.Deny, Scope: policy.ScopeGlobalDefault}
	}
	needs := base.Needs
	state := usedState(subj, obs, needs)
	best := base.Verdict[state]

	dv, hasDV := fileDigest(subj.HasFile && obs.DMVerityRootHash, subj.DMVerityRootHash)
	fv, hasFV := fileDigest(subj.HasFile && obs.FSVerityDigest, subj.FSVerityDigest)
	consider := func(need uint32, kind RowKind, want rowID) {
		if needs&need == 0 {
			return
		}
		want.kind, want.op = kind, op
		if v := t.digestVerdict(want, state); v < best {
			best = v
		}
	}
	if hasDV {
		consider(bpf.NeedDVRows, KindDV, rowID{dv: dv})
	}
	if hasFV {
		consider(bpf.NeedFVRows, KindFV, rowID{fv: fv})
	}
	if hasDV && hasFV {
		consider(bpf.NeedDVFVRows, KindDVFV, rowID{dv: dv, fv: fv})
	}
	return decodeVerdict(best)
}

// digestVerdict follows the links of id's key to the row whose digests
// are id's and returns its verdict in state.
func (t *Tables) digestVerdict(id rowID, state uint32) uint32 {
	for key := keyOf(id); key.Link < bpf.Links; key.Link++ {
		row := t.row(key)
		if row == nil {
			break
		}
		if row.Dv == id.dv && row.Fv == id.fv {
			return row.Verdict[state]
		}
	}
	return bpf.NoVerdict
}

func decodeVerdict(v uint32) Verdict {
	action := policy.Action(v & 1)
	switch {
	case v < bpf.VerdictOpDefault:
		return Verdict{Action: action, Scope: policy.ScopeRule, RuleIndex: v >> 1}
	case v&^1 == bpf.VerdictOpDefault:
		return Verdict{Action: action, Scope: policy.ScopeOpDefault}
	case v&^1 == bpf.VerdictGlobalDefault:
		return Verdict{Action: action, Scope: policy.ScopeGlobalDefault}
	}
	// A state without a verdict: not a table Compile wrote.
	return Verdict{Action: policy.Deny, Scope: policy.ScopeGlobalDefault}
}

// fileDigest is the key of a file's digest when the kernel can establish
// it. A digest with no encoding matches no row, as no policy digest can
// equal it there.
func fileDigest(observed bool, d *policy.Digest) (bpf.Digest, bool) {
	if !observed || d == nil {
		return bpf.Digest{}, false
	}
	return DigestKey(*d)
}

func (t *Tables) row(key bpf.RowKey) *bpf.Row {
	if t.index == nil {
		// Not concurrency-safe, but only hand-assembled Tables get here.
		t.index = make(map[bpf.RowKey]int, len(t.Rows))
		for i := range t.Rows {
			t.index[t.Rows[i].Key] = i
		}
	}
	if i, ok := t.index[key]; ok {
		return &t.Rows[i].Row
	}
	return nil
}
