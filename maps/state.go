package maps

import (
	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// StateIndex is the verdict slot of a file: each boolean property is
// UNOBSERVABLE when the kernel cannot establish it, else TRUE or FALSE, and
// every observable one is FALSE when there is no file (the FALSE forms of
// IPE's properties hold for anonymous memory).
func StateIndex(subj policy.Subject, obs policy.Observability) uint32 {
	return usedState(subj, obs, bpf.NeedBootVerified|bpf.NeedDMVeritySignature|bpf.NeedFSVeritySignature)
}

// usedState is StateIndex as the kernel computes it for an op whose BASE
// row needs needs (ipe_state in decide.h): a property no rule of the op
// uses stays UNOBSERVABLE, since the op's verdicts are the same in all
// three of its states.
func usedState(subj policy.Subject, obs policy.Observability, needs uint32) uint32 {
	bv := propState(needs&bpf.NeedBootVerified != 0, subj.HasFile && subj.BootVerified)
	dvSig := propState(obs.DMVeritySignature && needs&bpf.NeedDMVeritySignature != 0, subj.HasFile && subj.DMVeritySigned)
	fvSig := propState(obs.FSVeritySignature && needs&bpf.NeedFSVeritySignature != 0, subj.HasFile && subj.FSVeritySigned)
	return bv + 3*dvSig + 9*fvSig
}

// UsableNeeds is the settings' UsableNeeds for a kernel that observes obs:
// the bpf.Need* bits whose property or rows it can serve, by which the
// kernel masks every op's needs. boot_verified is always observable; rows
// keyed by both digests need both.
func UsableNeeds(obs policy.Observability) uint32 {
	needs := bpf.NeedBootVerified
	for _, b := range []struct {
		on  bool
		bit uint32
	}{
		{obs.DMVerityRootHash, bpf.NeedDVRows},
		{obs.DMVeritySignature, bpf.NeedDMVeritySignature},
		{obs.FSVerityDigest, bpf.NeedFVRows},
		{obs.FSVeritySignature, bpf.NeedFSVeritySignature},
		{obs.DMVerityRootHash && obs.FSVerityDigest, bpf.NeedDVFVRows},
	} {
		if b.on {
			needs |= b.bit
		}
	}
	return needs
}

func propState(observable, value bool) uint32 {
	switch {
	case !observable:
		return bpf.PropUnobservable
	case value:
		return bpf.PropTrue
	default:
		return bpf.PropFalse
	}
}

// boolPropWeight is each boolean property's multiplier in the state index.
var boolPropWeight = map[policy.PropKind]uint32{
	policy.PropBootVerified:      1,
	policy.PropDMVeritySignature: 3,
	policy.PropFSVeritySignature: 9,
}

// statesWhere returns the set of states, one bit per state index, in which
// the boolean property whose weight is weight is in state want.
func statesWhere(weight, want uint32) uint32 {
	var set uint32
	for s := range uint32(bpf.NumStates) {
		if s/weight%3 == want {
			set |= 1 << s
		}
	}
	return set
}

// allStates has one bit for each of the bpf.NumStates states.
const allStates = 1<<bpf.NumStates - 1
