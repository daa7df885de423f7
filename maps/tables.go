package maps

import (
	"errors"
	"fmt"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// MaxRows is the most rows a compiled policy may have. The loader sizes the
// policy's hash map to its exact row count; the bound keeps a hostile or
// mistaken policy from asking the kernel for gigabytes (a row is 312 bytes
// of key and value, so the limit is about 330 MB before hash overhead).
const MaxRows = 1 << 20

// ErrTooLarge is returned, wrapped with the numbers, when a policy needs
// more rows than MaxRows or has a rule index the verdict encoding cannot
// hold.
var ErrTooLarge = errors.New("policy too large for the kernel tables")

// Limits as variables so tests can reach them without millions of rules.
var (
	maxRows = MaxRows
	// A verdict is index<<1 | action and must stay below bpf.NoVerdict, so the
	// largest index is the one whose ALLOW verdict is bpf.NoVerdict-1.
	maxRuleIndex = int(bpf.NoVerdict>>1) - 1
)

// Entry is one row of the policy's hash map.
type Entry struct {
	Key bpf.RowKey
	Row bpf.Row
}

// DeadRule is a rule that compiles to no verdict because no file can ever
// satisfy it. It keeps its index, so later rules keep theirs.
type DeadRule struct {
	Index  int
	Line   int
	Reason string
}

// Tables are a compiled policy: the rows of its hash map, one per distinct
// key, and what the summary reports about them.
type Tables struct {
	Rows       []Entry
	Generation uint32
	// Dead lists the rules that can never match, in file order.
	Dead []DeadRule

	rulesPerOp [policy.NumOps]int
	// index maps a key to its position in Rows. Compile builds it; Lookup
	// builds it on first use for Tables assembled by hand.
	index map[bpf.RowKey]int
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
	capacity := min(len(p.Rules)+1, maxRows)
	t := &Tables{
		Generation: generation,
		Rows:       make([]Entry, 0, capacity),
		index:      make(map[bpf.RowKey]int, capacity),
	}
	if _, ok := t.addRow(metaKey()); !ok {
		return nil, fmt.Errorf("compile policy: a row limit of %d leaves no room for the META row: %w", maxRows, ErrTooLarge)
	}
	t.Rows[0].Row.Verdict[bpf.MetaGeneration] = generation
	for _, op := range policy.Ops() {
		if a := p.OpDefaults[op]; a != nil {
			t.Rows[0].Row.Verdict[op] = uint32(*a)
		}
	}
	if p.GlobalDefault != nil {
		t.Rows[0].Row.Verdict[bpf.MetaGlobalDefault] = uint32(*p.GlobalDefault)
	}

	for i := range p.Rules {
		r := &p.Rules[i]
		if err := checkRule(r, i); err != nil {
			return nil, err
		}
		t.rulesPerOp[r.Op]++
		key, states, why := compileRule(r)
		if why != "" {
			t.Dead = append(t.Dead, DeadRule{Index: r.Index, Line: r.Line, Reason: why})
			continue
		}
		row, ok := t.addRow(key)
		if !ok {
			return nil, fmt.Errorf("compile policy: rule %d (line %d) needs more than %d rows: %w", r.Index, r.Line, maxRows, ErrTooLarge)
		}
		verdict := uint32(r.Index)<<1 | uint32(r.Action)
		verdicts := &t.Rows[row].Row.Verdict
		// Rules come in index order, so the first verdict a state gets is
		// already the smallest.
		for s := range uint32(bpf.NumStates) {
			if states&(1<<s) != 0 && verdicts[s] == bpf.NoVerdict {
				verdicts[s] = verdict
			}
		}
	}
	return t, nil
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

// compileRule finds the row a rule belongs in and the states in which its
// boolean conditions hold, or says why it can never match.
func compileRule(r *policy.Rule) (bpf.RowKey, uint32, string) {
	var (
		states       uint32 = allStates
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
				return bpf.RowKey{}, 0, fmt.Sprintf("%s is both TRUE and FALSE", prop.Kind)
			}
			boolRequired[w] = want
			states &= statesOf[w][want]
		case policy.PropDMVerityRootHash, policy.PropFSVerityDigest:
			slot := &dv
			if prop.Kind == policy.PropFSVerityDigest {
				slot = &fv
			}
			if *slot != nil && !prop.Digest.Equal(*slot) {
				return bpf.RowKey{}, 0, fmt.Sprintf("two different %s values", prop.Kind)
			}
			*slot = &prop.Digest
		default:
			return bpf.RowKey{}, 0, fmt.Sprintf("unknown property kind %d", prop.Kind)
		}
	}

	key := bpf.RowKey{Kind: uint8(KindBase), Op: uint8(r.Op)}
	if dv != nil {
		enc, why := encodeDigest(*dv)
		if why != "" {
			return bpf.RowKey{}, 0, fmt.Sprintf("%s: %s", policy.PropDMVerityRootHash, why)
		}
		key.Kind, key.Dv = uint8(KindDV), enc
	}
	if fv != nil {
		enc, why := encodeDigest(*fv)
		if why != "" {
			return bpf.RowKey{}, 0, fmt.Sprintf("%s: %s", policy.PropFSVerityDigest, why)
		}
		key.Kind, key.Fv = uint8(KindFV), enc
		if dv != nil {
			key.Kind = uint8(KindDVFV)
		}
	}
	return key, states, ""
}

func weightIndex(k policy.PropKind) int {
	switch k {
	case policy.PropDMVeritySignature:
		return 1
	case policy.PropFSVeritySignature:
		return 2
	}
	return 0
}

func metaKey() bpf.RowKey { return bpf.RowKey{Kind: uint8(KindMeta)} }

// addRow returns the position of key's row, adding an empty one if needed;
// false when that would exceed maxRows.
func (t *Tables) addRow(key bpf.RowKey) (int, bool) {
	if i, ok := t.index[key]; ok {
		return i, true
	}
	if len(t.Rows) >= maxRows {
		return 0, false
	}
	e := Entry{Key: key}
	for s := range e.Row.Verdict {
		e.Row.Verdict[s] = bpf.NoVerdict
	}
	t.Rows = append(t.Rows, e)
	t.index[key] = len(t.Rows) - 1
	return len(t.Rows) - 1, true
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
