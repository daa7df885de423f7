// Package maps compiles a parsed IPE policy into the verdict rows that the
// BPF programs read (the layout is documented in bpf/ipe.h) and models, in
// Go, the lookup those programs perform on them.
package maps

import "github.com/bpfipe/bpfipe/bpf"

// RowKind is the kind byte of a row key (enum ipe_row_kind), with a name
// for the summary.
type RowKind uint8

const (
	KindBase = RowKind(bpf.RowKindBase)
	KindDV   = RowKind(bpf.RowKindDV)
	KindFV   = RowKind(bpf.RowKindFV)
	KindDVFV = RowKind(bpf.RowKindDVFV)
)

// NumRowKinds bounds the row kinds, which start at 1.
const NumRowKinds = 5

var kindNames = [NumRowKinds]string{
	KindBase: "BASE",
	KindDV:   "DV",
	KindFV:   "FV",
	KindDVFV: "DVFV",
}

func (k RowKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "UNKNOWN"
}
