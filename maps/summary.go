package maps

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// RowBytes is what one row of the kernel's table costs: it holds its key.
var RowBytes = binary.Size(bpf.Row{})

// Summary is what a compiled policy amounts to in the kernel.
type Summary struct {
	Rules       int
	RulesPerOp  [policy.NumOps]int
	DeadRules   int
	Rows        int
	RowsPerKind [NumRowKinds]int
	// TableRows is the length of the kernel's table: the rows, the seed
	// rows of the perfect hash and its empty slots (bpf.BuildTable).
	TableRows int
	// KernelBytes is the bytes of the table, RowBytes per table row.
	KernelBytes int
}

// Summary counts the rules and rows of t.
func (t *Tables) Summary() Summary {
	s := Summary{RulesPerOp: t.rulesPerOp, DeadRules: len(t.Dead), Rows: len(t.Rows)}
	for _, n := range t.rulesPerOp {
		s.Rules += n
	}
	for i := range t.Rows {
		if k := t.Rows[i].Key.Kind; int(k) < NumRowKinds {
			s.RowsPerKind[k]++
		}
	}
	s.TableRows = len(t.Table)
	s.KernelBytes = s.TableRows * RowBytes
	return s
}

// String renders the summary for people, one aspect per line.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules: %d", s.Rules)
	var perOp []string
	for op, n := range s.RulesPerOp {
		if n > 0 {
			perOp = append(perOp, fmt.Sprintf("%s %d", policy.Op(op), n))
		}
	}
	if len(perOp) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(perOp, ", "))
	}
	fmt.Fprintf(&b, "\ndead rules: %d\nrows: %d (", s.DeadRules, s.Rows)
	for k := KindBase; k < NumRowKinds; k++ {
		if k > KindBase {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, s.RowsPerKind[k])
	}
	fmt.Fprintf(&b, ")\nkernel table: %d rows, %d bytes (%d per row)\n", s.TableRows, s.KernelBytes, RowBytes)
	return b.String()
}
