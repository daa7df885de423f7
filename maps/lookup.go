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
// programs do: at most five hash lookups whatever the policy's size. It
// is the Go model of the kernel side that the tests hold equal to
// policy.Evaluate.
func (t *Tables) Lookup(op policy.Op, subj policy.Subject, obs policy.Observability) Verdict {
	meta := t.row(metaKey())
	if op >= policy.OpInvalid {
		return globalDefault(meta)
	}

	state := StateIndex(subj, obs)
	best := bpf.NoVerdict
	consider := func(key bpf.RowKey) {
		if row := t.row(key); row != nil && row.Verdict[state] < best {
			best = row.Verdict[state]
		}
	}
	consider(bpf.RowKey{Kind: uint8(KindBase), Op: uint8(op)})
	dv, hasDV := fileDigest(subj.HasFile && obs.DMVerityRootHash, subj.DMVerityRootHash)
	fv, hasFV := fileDigest(subj.HasFile && obs.FSVerityDigest, subj.FSVerityDigest)
	if hasDV {
		consider(bpf.RowKey{Kind: uint8(KindDV), Op: uint8(op), Dv: dv})
	}
	if hasFV {
		consider(bpf.RowKey{Kind: uint8(KindFV), Op: uint8(op), Fv: fv})
	}
	if hasDV && hasFV {
		consider(bpf.RowKey{Kind: uint8(KindDVFV), Op: uint8(op), Dv: dv, Fv: fv})
	}
	if best != bpf.NoVerdict {
		return Verdict{Action: policy.Action(best & 1), Scope: policy.ScopeRule, RuleIndex: best >> 1}
	}
	if meta != nil && meta.Verdict[op] != bpf.NoVerdict {
		return Verdict{Action: policy.Action(meta.Verdict[op]), Scope: policy.ScopeOpDefault}
	}
	return globalDefault(meta)
}

// globalDefault allows when the policy sets no global DEFAULT, as IPE does
// for an op it does not know; Compile guarantees every nameable op has a
// DEFAULT of some scope.
func globalDefault(meta *bpf.Row) Verdict {
	if meta != nil && meta.Verdict[bpf.MetaGlobalDefault] != bpf.NoVerdict {
		return Verdict{Action: policy.Action(meta.Verdict[bpf.MetaGlobalDefault]), Scope: policy.ScopeGlobalDefault}
	}
	return Verdict{Action: policy.Allow, Scope: policy.ScopeGlobalDefault}
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
