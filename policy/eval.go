package policy

import "bytes"

// Evaluate decides op for subj the way in-tree IPE does (eval.c
// ipe_evaluate_event): the first rule of op whose properties all hold wins,
// then op's DEFAULT, then the global DEFAULT. An op that is not one a policy
// can name (OpInvalid) is decided by the global DEFAULT alone, or allowed
// when there is none, as IPE does after its WARN.
func Evaluate(p *Policy, op Op, subj Subject, obs Observability) Decision {
	if op >= OpInvalid {
		if p.GlobalDefault != nil {
			return Decision{Action: *p.GlobalDefault, Scope: ScopeGlobalDefault, Op: op}
		}
		return Decision{Action: Allow, Scope: ScopeGlobalDefault, Op: op}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Op == op && r.Matches(subj, obs) {
			return Decision{Action: r.Action, Scope: ScopeRule, Op: op, Rule: r}
		}
	}
	if a := p.OpDefaults[op]; a != nil {
		return Decision{Action: *a, Scope: ScopeOpDefault, Op: op}
	}
	// The parser guarantees a global DEFAULT when any per-op one is missing.
	return Decision{Action: *p.GlobalDefault, Scope: ScopeGlobalDefault, Op: op}
}

// Matches reports whether every property of r holds for subj; a rule with no
// properties matches everything.
func (r *Rule) Matches(subj Subject, obs Observability) bool {
	for _, prop := range r.Props {
		if !prop.Holds(subj, obs) {
			return false
		}
	}
	return true
}

// Holds evaluates one property as IPE's eval.c does. With no file the TRUE
// and digest forms are false and the FALSE forms true; a property the kernel
// cannot observe is false in both forms.
func (prop Property) Holds(subj Subject, obs Observability) bool {
	switch prop.Kind {
	case PropBootVerified:
		return (subj.HasFile && subj.BootVerified) == prop.Value
	case PropDMVeritySignature:
		if !obs.DMVeritySignature {
			return false
		}
		return (subj.HasFile && subj.DMVeritySigned) == prop.Value
	case PropFSVeritySignature:
		if !obs.FSVeritySignature {
			return false
		}
		return (subj.HasFile && subj.FSVeritySigned) == prop.Value
	case PropDMVerityRootHash:
		return obs.DMVerityRootHash && subj.HasFile && prop.Digest.Equal(subj.DMVerityRootHash)
	case PropFSVerityDigest:
		return obs.FSVerityDigest && subj.HasFile && prop.Digest.Equal(subj.FSVerityDigest)
	}
	return false
}

// Equal is IPE's ipe_digest_eval: same algorithm name, same length, same bytes.
func (d Digest) Equal(other *Digest) bool {
	return other != nil && d.Alg == other.Alg && bytes.Equal(d.Bytes, other.Bytes)
}
