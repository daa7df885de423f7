package maps

import (
	"errors"
	"fmt"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// MaxRows is the most rows a compiled policy may have. The loader sizes the
// policy's table to its rows; the bound keeps a hostile or mistaken policy
// from asking the kernel for gigabytes (a row is RowBytes, 344 bytes, and
// the table about 1.25 slots per digest row, so the limit is about 450 MB).
const MaxRows = 1 << 20

// ErrTooLarge is returned, wrapped with the numbers, when a policy needs
// more rows than MaxRows or has a rule index the verdict encoding cannot
// hold.
var ErrTooLarge = errors.New("policy too large for the kernel tables")

// ErrFoldCollision is returned, wrapped with the digests, when more than
// bpf.Links rows of one kind and op have digests that fold alike (see Fold):
// something only a policy built for it can do, since a digest's words are
// a cryptographic hash's.
var ErrFoldCollision = errors.New("too many digests share a key")

// Limits as variables so tests can reach them without millions of rules.
var (
	maxRows = MaxRows
	// A rule's verdict is index<<1 | action and must stay below the
	// DEFAULTs' verdicts, so the largest index is the one whose ALLOW
	// verdict is bpf.VerdictOpDefault-1.
	maxRuleIndex = int(bpf.VerdictOpDefault>>1) - 1
)

// Entry is one row of a compiled policy, with its key.
type Entry = bpf.TableRow

// DeadRule is a rule that compiles to no verdict because no file can ever
// satisfy it. It keeps its index, so later rules keep theirs.
type DeadRule struct {
	Index  int
	Line   int
	Reason string
}

// Tables are a compiled policy: its rows, their layout in the kernel's
// table, and what the summary reports about them.
type Tables struct {
	Rows []Entry
	// Table is Rows laid out as the programs read them (bpf.BuildTable),
	// what the loader writes into the policy's map.
	Table      []bpf.Row
	Generation uint32
	// Dead lists the rules that can never match, in file order.
	Dead []DeadRule

	rulesPerOp [policy.NumOps]int
	// index maps a key to its position in Rows. Compile builds it; Lookup
	// builds it on first use for Tables assembled by hand.
	index map[bpf.RowKey]int
}

// rowID is what a row stands for: its kind, op and whole digests. Rows
// whose digests fold alike share a key but for its link.
type rowID struct {
	kind   RowKind
	op     policy.Op
	dv, fv bpf.Digest
}

// statesOf[weight index][state] is the set of states in which one boolean
// property is in that state; see statesWhere.
var statesOf = func() (t [3][3]uint32) {
	for i, weight := range []uint32{1, 3, 9} {
		for want := range uint32(3) {
			t[i][want] = statesWhere(weight, want)
		}
	}
	return t
}()

// Compile turns p into the rows of its kernel hash map. generation is
// echoed in every decision event so events can be tied to the policy that
// made them.
func Compile(p *policy.Policy, generation uint32) (*Tables, error) {
	for _, op := range policy.Ops() {
		if p.OpDefaults[op] == nil && p.GlobalDefault == nil {
			return nil, fmt.Errorf("compile policy: op %s has no DEFAULT and there is no global DEFAULT", op)
		}
	}
	// Every live rule adds at most one row; sizing for that avoids
	// regrowing a 100,000-row table a dozen times.
	capacity := min(len(p.Rules)+numBaseRows, maxRows)
	t := &Tables{
		Generation: generation,
		Rows:       make([]Entry, 0, capacity),
		index:      make(map[bpf.RowKey]int, capacity),
	}
	// The BASE rows come first, one per op, each holding its DEFAULT in
	// every state, below which the rules' verdicts go.
	for op := range policy.Op(numBaseRows) {
		row, err := t.addRow(rowID{kind: KindBase, op: op})
		if err != nil {
			return nil, fmt.Errorf("compile policy: a row limit of %d leaves no room for the BASE rows: %w", maxRows, err)
		}
		base := &t.Rows[row].Row
		base.Generation = generation
		v := defaultVerdict(p, op)
		for s := range base.Verdict {
			base.Verdict[s] = v
		}
	}

	for i := range p.Rules {
		r := &p.Rules[i]
		if err := checkRule(r, i); err != nil {
			return nil, err
		}
		t.rulesPerOp[r.Op]++
		id, states, needs, why := compileRule(r)
		if why != "" {
			t.Dead = append(t.Dead, DeadRule{Index: r.Index, Line: r.Line, Reason: why})
			continue
		}
		row, err := t.addRow(id)
		if err != nil {
			return nil, fmt.Errorf("compile policy: rule %d (line %d): %w", r.Index, r.Line, err)
		}
		// The op's BASE row is row op.
		t.Rows[r.Op].Row.Needs |= needs
		verdict := uint32(r.Index)<<1 | uint32(r.Action)
		verdicts := &t.Rows[row].Row.Verdict
		// Rules come in index order, so the first verdict a state gets is
		// the smallest; a DEFAULT's is larger than any rule's.
		for s := range uint32(bpf.NumStates) {
			if states&(1<<s) != 0 && verdict < verdicts[s] {
				verdicts[s] = verdict
			}
		}
	}
	table, err := bpf.BuildTable(t.Rows)
	if err != nil {
		return nil, fmt.Errorf("compile policy: %w", err)
	}
	t.Table = table
	return t, nil
}

// numBaseRows is the number of BASE rows: one per op, IPE_OP_INVALID
// included.
const numBaseRows = int(policy.OpInvalid) + 1

// defaultVerdict is the verdict of op when no rule matches: its DEFAULT,
// else the global DEFAULT, else (possible only for OpInvalid) an allow by
// the global scope, as IPE allows an op it does not know.
func defaultVerdict(p *policy.Policy, op policy.Op) uint32 {
	if op < policy.OpInvalid {
		if a := p.OpDefaults[op]; a != nil {
			return bpf.VerdictOpDefault | uint32(*a)
		}
	}
	if p.GlobalDefault != nil {
		return bpf.VerdictGlobalDefault | uint32(*p.GlobalDefault)
	}
	return bpf.VerdictGlobalDefault | uint32(policy.Allow)
}

// checkRule rejects what the verdict encoding relies on never seeing.
func checkRule(r *policy.Rule, position int) error {
	switch {
	case r.Index != position:
		// Smallest verdict = first rule in file order only if indices
		// follow file order.
		return fmt.Errorf("compile policy: rule at position %d (line %d) has index %d", position, r.Line, r.Index)
	case r.Index > maxRuleIndex:
		return fmt.Errorf("compile policy: rule index %d exceeds %d: %w", r.Index, maxRuleIndex, ErrTooLarge)
	case r.Op >= policy.OpInvalid:
		return fmt.Errorf("compile policy: rule %d (line %d) has op %d, which a policy cannot name", r.Index, r.Line, r.Op)
	case r.Action != policy.Deny && r.Action != policy.Allow:
		return fmt.Errorf("compile policy: rule %d (line %d) has action %d", r.Index, r.Line, r.Action)
	}
	return nil
}

// compileRule finds the row a rule belongs in, the states in which its
// boolean conditions hold and what it needs observed (bpf.Need*), or says
// why it can never match.
func compileRule(r *policy.Rule) (rowID, uint32, uint32, string) {
	var (
		states       uint32 = allStates
		needs        uint32
		dv, fv       *policy.Digest
		boolRequired [3]uint32 // per weight index; 0: unconstrained
	)
	for i := range r.Props {
		prop := &r.Props[i]
		switch prop.Kind {
		case policy.PropBootVerified, policy.PropDMVeritySignature, policy.PropFSVeritySignature:
			w := weightIndex(prop.Kind)
			want := uint32(bpf.PropFalse)
			if prop.Value {
				want = bpf.PropTrue
			}
			if boolRequired[w] != 0 && boolRequired[w] != want {
				return rowID{}, 0, 0, fmt.Sprintf("%s is both TRUE and FALSE", prop.Kind)
			}
			boolRequired[w] = want
			states &= statesOf[w][want]
			needs |= needOf[w]
		case policy.PropDMVerityRootHash, policy.PropFSVerityDigest:
			slot := &dv
			if prop.Kind == policy.PropFSVerityDigest {
				slot = &fv
			}
			if *slot != nil && !prop.Digest.Equal(*slot) {
				return rowID{}, 0, 0, fmt.Sprintf("two different %s values", prop.Kind)
			}
			*slot = &prop.Digest
		default:
			return rowID{}, 0, 0, fmt.Sprintf("unknown property kind %d", prop.Kind)
		}
	}

	id := rowID{kind: KindBase, op: r.Op}
	if dv != nil {
		enc, why := encodeDigest(*dv)
		if why != "" {
			return rowID{}, 0, 0, fmt.Sprintf("%s: %s", policy.PropDMVerityRootHash, why)
		}
		id.kind, id.dv = KindDV, enc
	}
	if fv != nil {
		enc, why := encodeDigest(*fv)
		if why != "" {
			return rowID{}, 0, 0, fmt.Sprintf("%s: %s", policy.PropFSVerityDigest, why)
		}
		id.kind, id.fv = KindFV, enc
		if dv != nil {
			id.kind = KindDVFV
		}
	}
	needs |= rowsNeed[id.kind]
	return id, states, needs, ""
}

// needOf is the bpf.Need* bit of each boolean property, by weight index.
var needOf = [3]uint32{bpf.NeedBootVerified, bpf.NeedDMVeritySignature, bpf.NeedFSVeritySignature}

// rowsNeed is the bpf.Need* bit that says an op has rows of a kind.
var rowsNeed = [NumRowKinds]uint32{KindDV: bpf.NeedDVRows, KindFV: bpf.NeedFVRows, KindDVFV: bpf.NeedDVFVRows}

func weightIndex(k policy.PropKind) int {
	switch k {
	case policy.PropDMVeritySignature:
		return 1
	case policy.PropFSVeritySignature:
		return 2
	}
	return 0
}

// keyOf is the key of the row id stands for, at link 0; rows whose
// digests fold alike differ only in Link.
func keyOf(id rowID) bpf.RowKey {
	k := bpf.RowKey{Kind: uint8(id.kind), Op: uint8(id.op)}
	if id.kind == KindDV || id.kind == KindDVFV {
		k.DvFold = Fold(id.dv)
	}
	if id.kind == KindFV || id.kind == KindDVFV {
		k.FvFold = Fold(id.fv)
	}
	return k
}

// addRow returns the position of id's row, adding one with no verdict at
// the first free link of its key if needed.
func (t *Tables) addRow(id rowID) (int, error) {
	key := keyOf(id)
	for ; key.Link < bpf.Links; key.Link++ {
		i, taken := t.index[key]
		if !taken {
			break
		}
		// The key gives the kind and op; the row holds the digests.
		if row := &t.Rows[i].Row; row.Dv == id.dv && row.Fv == id.fv {
			return i, nil
		}
	}
	if key.Link == bpf.Links {
		return 0, fmt.Errorf("more than %d %s digests of op %s fold to %08x %08x %08x %08x: %w", bpf.Links, id.kind, id.op,
			key.DvFold[0], key.DvFold[1], key.FvFold[0], key.FvFold[1], ErrFoldCollision)
	}
	if len(t.Rows) >= maxRows {
		return 0, fmt.Errorf("more than %d rows: %w", maxRows, ErrTooLarge)
	}
	e := Entry{Key: key}
	e.Row.Dv, e.Row.Fv = id.dv, id.fv
	for s := range e.Row.Verdict {
		e.Row.Verdict[s] = bpf.NoVerdict
	}
	t.Rows = append(t.Rows, e)
	t.index[key] = len(t.Rows) - 1
	return len(t.Rows) - 1, nil
}

// KeysValues returns the rows as the parallel slices that
// (*ebpf.Map).BatchUpdate takes.
func (t *Tables) KeysValues() ([]bpf.RowKey, []bpf.Row) {
	keys := make([]bpf.RowKey, len(t.Rows))
	values := make([]bpf.Row, len(t.Rows))
	for i := range t.Rows {
		keys[i], values[i] = t.Rows[i].Key, t.Rows[i].Row
	}
	return keys, values
}
