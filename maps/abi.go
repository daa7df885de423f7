// Package maps compiles a parsed IPE policy into the verdict rows that the
// BPF programs read (the layout is documented in bpf/ipe.h) and models, in
// Go, the lookup those programs perform on them.
package maps

// Constants of bpf/ipe.h that bpf2go does not mirror (it generates types
// only). abi_test.go checks each against the header so the two cannot drift.

// RowKind is the kind byte of a row key (enum ipe_row_kind).
type RowKind uint8

const (
	KindMeta RowKind = iota
	KindBase
	KindDV
	KindFV
	KindDVFV
)

// NumRowKinds is the number of row kinds.
const NumRowKinds = 5

var kindNames = [NumRowKinds]string{"META", "BASE", "DV", "FV", "DVFV"}

func (k RowKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "UNKNOWN"
}

const (
	// NumStates is the number of combinations of the three boolean
	// properties' states (IPE_STATES).
	NumStates = 27
	// NoVerdict marks a state in which no rule of a row matches, and an
	// unset DEFAULT in the META row (IPE_NO_VERDICT).
	NoVerdict uint32 = 0xffffffff
	// MetaGlobalDefaultSlot is the META row slot of the global DEFAULT;
	// slots 0..6 hold the per-op DEFAULTs (IPE_META_GLOBAL_DEFAULT).
	MetaGlobalDefaultSlot = 7
	// MetaGenerationSlot is the META row slot of the policy generation
	// (IPE_META_GENERATION).
	MetaGenerationSlot = 8

	algLen    = 32 // IPE_ALG_LEN
	digestMax = 64 // IPE_DIGEST_MAX

	// A boolean property's state (IPE_PROP_*).
	propUnobservable = 0
	propTrue         = 1
	propFalse        = 2

	// Verdict actions (IPE_ACTION_*): the policy package numbers actions
	// the same way, which abi_test.go checks.
	actionDeny  = 0
	actionAllow = 1
)
