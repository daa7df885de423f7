package bpf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
)

const (
	errEACCES = -13

	// IPE_SCRATCH_SLOTS of maps.h; abi_test.go holds it to the header.
	scratchSlots = 4
)

func digest(alg string, b ...byte) *Digest {
	d := Digest{Len: uint32(len(b))}
	copy(d.Alg[:], alg)
	copy(d.Bytes[:], b)
	return &d
}

func state(bv, dvSig, fvSig uint32) uint32 { return bv + 3*dvSig + 9*fvSig }

func verdict(rule uint32, a policy.Action) uint32 { return rule<<1 | uint32(a) }

// fold is maps.Fold, which this package cannot import: the XOR of the
// 32-bit words of the whole digest struct, even ones into the first half,
// odd ones into the second. Written again here, it also checks decide.h's.
func fold(d *Digest) [2]uint32 {
	var raw bytes.Buffer
	if err := binary.Write(&raw, binary.NativeEndian, d); err != nil {
		panic(err)
	}
	var f [2]uint32
	for i := 0; i+4 <= raw.Len(); i += 4 {
		f[i/4%2] ^= binary.NativeEndian.Uint32(raw.Bytes()[i:])
	}
	return f
}

// tableRow is one row of a hand-assembled table: a rule row of kind for op
// (BASE rows hold the rules without a digest) with the digests its kind
// has, at link.
type tableRow struct {
	kind   uint8
	op     policy.Op
	dv, fv *Digest
	link   uint8
	row    Row
}

func ruleRow(kind uint8, op policy.Op, dv, fv *Digest, row Row) tableRow {
	return tableRow{kind: kind, op: op, dv: dv, fv: fv, row: row}
}

func (r tableRow) key() RowKey {
	k := RowKey{Kind: r.kind, Op: uint8(r.op), Link: r.link}
	if r.dv != nil {
		k.DvFold = fold(r.dv)
	}
	if r.fv != nil {
		k.FvFold = fold(r.fv)
	}
	return k
}

// allNeeds makes a BASE row ask for every property and row kind, so a
// hand-assembled table is decided on the whole state.
const allNeeds = NeedBootVerified | NeedDMVeritySignature | NeedFSVeritySignature | NeedDVRows | NeedFVRows | NeedDVFVRows

// emptyRow has no verdict in any state.
func emptyRow() Row {
	var r Row
	for i := range r.Verdict {
		r.Verdict[i] = NoVerdict
	}
	return r
}

// everywhere is a row whose rule matches in every state.
func everywhere(v uint32) Row {
	r := emptyRow()
	for i := range r.Verdict {
		r.Verdict[i] = v
	}
	return r
}

// only is a row whose rule matches in the listed states.
func only(v uint32, states ...uint32) Row {
	r := emptyRow()
	for _, s := range states {
		r.Verdict[s] = v
	}
	return r
}

func action(a policy.Action) *policy.Action { return &a }

// table assembles a policy's rows as maps.Compile lays them out: a BASE row
// for every op, IPE_OP_INVALID included, with the op's DEFAULT (else the
// global one, else an allow) below its digest-free rules, the generation
// and allNeeds; then the digest rows.
func table(generation uint32, global *policy.Action, perOp map[policy.Op]policy.Action, rules ...tableRow) map[RowKey]Row {
	rows := map[RowKey]Row{}
	for op := range policy.OpInvalid + 1 {
		v := VerdictGlobalDefault | ActionAllow
		if global != nil {
			v = VerdictGlobalDefault | uint32(*global)
		}
		if a, ok := perOp[op]; ok {
			v = VerdictOpDefault | uint32(a)
		}
		base := everywhere(v)
		base.Generation, base.Needs = generation, allNeeds
		rows[RowKey{Kind: RowKindBase, Op: uint8(op)}] = base
	}
	for _, r := range rules {
		if r.kind == RowKindBase {
			base := rows[r.key()]
			for s, v := range r.row.Verdict {
				base.Verdict[s] = min(base.Verdict[s], v)
			}
			rows[r.key()] = base
			continue
		}
		row := r.row
		if r.dv != nil {
			row.Dv = *r.dv
		}
		if r.fv != nil {
			row.Fv = *r.fv
		}
		rows[r.key()] = row
	}
	return rows
}

var (
	fileBoot = TestSubject{HasFile: true, BootVerified: true}
	dvA      = digest("sha256", 0xa1, 0xa2, 0xa3)
	dvB      = digest("sha256", 0xb1, 0xb2, 0xb3)
	fvA      = digest("sha256", 0xf1, 0xf2)
	fvA512   = digest("sha512", 0xf1, 0xf2)
)

func TestNoPolicyAllowsUndecided(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, SuccessAudit: 1, UsableNeeds: allNeeds})
	h.ClearPolicy()

	got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot)
	if got.RC != 0 || got.Decided {
		t.Errorf("no policy: got %+v, want rc 0 and no decision", got)
	}
	c := h.Counters()
	if c[CounterNoPolicy] != 1 {
		t.Errorf("no-policy counter = %d, want 1", c[CounterNoPolicy])
	}
	if c[DecisionCounter(HookBprmCheck, uint8(policy.Allow))] != 0 {
		t.Errorf("an undecided call counted as a decision: %v", c)
	}
	if e, ok := h.NextEvent(); ok {
		t.Errorf("no policy emitted event %+v, IPE audits nothing without a policy", e)
	}
}

func TestDecisionScopes(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	rows := table(41, action(policy.Allow), map[policy.Op]policy.Action{policy.OpFirmware: policy.Deny},
		// Rule 3: op=EXECUTE boot_verified=TRUE action=DENY, with both
		// signatures observable and FALSE.
		ruleRow(RowKindBase, policy.OpExecute, nil, nil, only(verdict(3, policy.Deny), state(PropTrue, PropFalse, PropFalse))),
	)
	h.SetPolicy(rows)

	tests := []struct {
		name string
		op   policy.Op
		subj TestSubject
		want DecideResult
	}{
		{"rule", policy.OpExecute, fileBoot, DecideResult{RC: errEACCES, Decided: true, Action: uint32(policy.Deny), Scope: ScopeRule, Rule: 3, Generation: 41}},
		{"no rule matches: global default", policy.OpExecute, TestSubject{HasFile: true}, DecideResult{RC: 0, Decided: true, Action: uint32(policy.Allow), Scope: ScopeGlobalDefault, Generation: 41}},
		{"op default before global", policy.OpFirmware, fileBoot, DecideResult{RC: errEACCES, Decided: true, Action: uint32(policy.Deny), Scope: ScopeOpDefault, Generation: 41}},
		{"op without default: global", policy.OpKmodule, fileBoot, DecideResult{RC: 0, Decided: true, Action: uint32(policy.Allow), Scope: ScopeGlobalDefault, Generation: 41}},
		// Without a file boot_verified is FALSE, whatever the input says.
		{"no file", policy.OpExecute, TestSubject{BootVerified: true}, DecideResult{RC: 0, Decided: true, Action: uint32(policy.Allow), Scope: ScopeGlobalDefault, Generation: 41}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.Run(uint8(tc.op), HookKernelRead, tc.subj); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFirstRuleInFileOrderWins(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	rows := table(1, action(policy.Deny), nil,
		// 0: op=EXECUTE dmverity_roothash=A action=DENY (a revocation)
		// 1: op=EXECUTE action=ALLOW
		// 2: op=EXECUTE fsverity_digest=A action=DENY (never reached)
		// 3: op=EXECUTE dmverity_roothash=B fsverity_digest=A action=DENY (never reached)
		ruleRow(RowKindDV, policy.OpExecute, dvA, nil, everywhere(verdict(0, policy.Deny))),
		ruleRow(RowKindBase, policy.OpExecute, nil, nil, everywhere(verdict(1, policy.Allow))),
		ruleRow(RowKindFV, policy.OpExecute, nil, fvA, everywhere(verdict(2, policy.Deny))),
		ruleRow(RowKindDVFV, policy.OpExecute, dvB, fvA, everywhere(verdict(3, policy.Deny))),
		// op=KMODULE: 4: dmverity_roothash=B fsverity_digest=A action=ALLOW
		ruleRow(RowKindDVFV, policy.OpKmodule, dvB, fvA, everywhere(verdict(4, policy.Allow))),
	)
	h.SetPolicy(rows)

	tests := []struct {
		name       string
		op         policy.Op
		subj       TestSubject
		wantAction policy.Action
		wantScope  uint32
		wantRule   uint32
	}{
		{"deny before allow", policy.OpExecute, TestSubject{HasFile: true, DV: dvA}, policy.Deny, ScopeRule, 0},
		{"other root hash", policy.OpExecute, TestSubject{HasFile: true, DV: dvB}, policy.Allow, ScopeRule, 1},
		{"allow before later deny", policy.OpExecute, TestSubject{HasFile: true, DV: dvB, FV: fvA}, policy.Allow, ScopeRule, 1},
		{"both digests", policy.OpKmodule, TestSubject{HasFile: true, DV: dvB, FV: fvA}, policy.Allow, ScopeRule, 4},
		{"both digests needed", policy.OpKmodule, TestSubject{HasFile: true, FV: fvA}, policy.Deny, ScopeGlobalDefault, 0},
		{"algorithm is part of the digest", policy.OpKmodule, TestSubject{HasFile: true, DV: dvB, FV: fvA512}, policy.Deny, ScopeGlobalDefault, 0},
		{"no file, no digest", policy.OpKmodule, TestSubject{DV: dvB, FV: fvA}, policy.Deny, ScopeGlobalDefault, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := h.Run(uint8(tc.op), HookBprmCheck, tc.subj)
			if !got.Decided || got.Action != uint32(tc.wantAction) || got.Scope != tc.wantScope || got.Rule != tc.wantRule {
				t.Errorf("got %+v, want action %v scope %d rule %d", got, tc.wantAction, tc.wantScope, tc.wantRule)
			}
		})
	}
}

func TestUnobservableProperties(t *testing.T) {
	h := NewDecideHarness(t, 0)
	rows := table(1, action(policy.Deny), nil,
		// 0: op=EXECUTE boot_verified=TRUE action=ALLOW, compiled for a
		// kernel that observes neither signature.
		ruleRow(RowKindBase, policy.OpExecute, nil, nil, only(verdict(0, policy.Allow), state(PropTrue, PropUnobservable, PropUnobservable))),
		// 1: op=EXECUTE dmverity_roothash=A action=ALLOW
		ruleRow(RowKindDV, policy.OpExecute, dvA, nil, everywhere(verdict(1, policy.Allow))),
		// 2: op=EXECUTE fsverity_digest=A action=ALLOW
		ruleRow(RowKindFV, policy.OpExecute, nil, fvA, everywhere(verdict(2, policy.Allow))),
	)
	h.SetPolicy(rows)
	signedBoot := TestSubject{HasFile: true, BootVerified: true, DVSigned: true, FVSigned: true}

	tests := []struct {
		name       string
		usable     uint32
		subj       TestSubject
		wantAction policy.Action
		wantRule   uint32
	}{
		{"signatures unobservable", NeedBootVerified, signedBoot, policy.Allow, 0},
		{"signatures observable", NeedBootVerified | NeedDMVeritySignature | NeedFSVeritySignature, signedBoot, policy.Deny, 0},
		{"dm-verity signature alone observable", NeedBootVerified | NeedDMVeritySignature, signedBoot, policy.Deny, 0},
		{"root hash observable", NeedBootVerified | NeedDVRows, TestSubject{HasFile: true, DV: dvA}, policy.Allow, 1},
		{"root hash unobservable", NeedBootVerified | NeedFVRows, TestSubject{HasFile: true, DV: dvA}, policy.Deny, 0},
		{"fs-verity digest observable", NeedBootVerified | NeedFVRows, TestSubject{HasFile: true, FV: fvA}, policy.Allow, 2},
		{"fs-verity digest unobservable", NeedBootVerified | NeedDVRows, TestSubject{HasFile: true, FV: fvA}, policy.Deny, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.SetSettings(Settings{Enforcing: 1, UsableNeeds: tc.usable})
			got := h.Run(uint8(policy.OpExecute), HookMmap, tc.subj)
			if got.Action != uint32(tc.wantAction) || got.Rule != tc.wantRule {
				t.Errorf("got %+v, want action %v rule %d", got, tc.wantAction, tc.wantRule)
			}
		})
	}
}

func TestInvalidOpTakesGlobalDefault(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	for _, tc := range []struct {
		name   string
		global *policy.Action
		want   DecideResult
	}{
		{"global DEFAULT DENY", action(policy.Deny), DecideResult{RC: errEACCES, Decided: true, Action: uint32(policy.Deny), Scope: ScopeGlobalDefault, Generation: 9}},
		{"no global DEFAULT", nil, DecideResult{RC: 0, Decided: true, Action: uint32(policy.Allow), Scope: ScopeGlobalDefault, Generation: 9}},
	} {
		// Op DEFAULTs of every nameable op must not leak into the
		// invalid op's decision.
		perOp := map[policy.Op]policy.Action{}
		for _, op := range policy.Ops() {
			perOp[op] = policy.Allow
			if tc.global == nil {
				perOp[op] = policy.Deny
			}
		}
		h.SetPolicy(table(9, tc.global, perOp))
		if got := h.Run(uint8(policy.OpInvalid), HookKernelLoad, TestSubject{}); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// A table the loader did not write, one without the op's BASE row, with
// a state that has no verdict or with a verdict no compiler makes, denies
// rather than allows.
func TestIncompleteTableFailsClosed(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	var entries []TableRow
	for k, v := range table(3, action(policy.Allow), nil) {
		entries = append(entries, TableRow{Key: k, Row: v})
	}
	laidOut, err := BuildTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	// Too short to hold the BASE row of KMODULE.
	h.SetTable(laidOut[:policy.OpKmodule])
	want := DecideResult{RC: errEACCES, Decided: true, Action: uint32(policy.Deny), Scope: ScopeGlobalDefault}
	if got := h.Run(uint8(policy.OpKmodule), HookKernelRead, fileBoot); got != want {
		t.Errorf("no BASE row: got %+v, want %+v", got, want)
	}

	rows := table(3, action(policy.Allow), nil)
	base := rows[RowKey{Kind: RowKindBase, Op: uint8(policy.OpKmodule)}]
	base.Verdict[state(PropFalse, PropFalse, PropFalse)] = NoVerdict
	rows[RowKey{Kind: RowKindBase, Op: uint8(policy.OpKmodule)}] = base
	h.SetPolicy(rows)
	want.Generation = 3
	if got := h.Run(uint8(policy.OpKmodule), HookKernelRead, TestSubject{HasFile: true}); got != want {
		t.Errorf("a state without a verdict: got %+v, want %+v", got, want)
	}

	// Between the global DEFAULT and NoVerdict lie values no compiler
	// writes; with the allow bit set they must still deny.
	base.Verdict[state(PropFalse, PropFalse, PropFalse)] = VerdictGlobalDefault + 3
	rows[RowKey{Kind: RowKindBase, Op: uint8(policy.OpKmodule)}] = base
	h.SetPolicy(rows)
	if got := h.Run(uint8(policy.OpKmodule), HookKernelRead, TestSubject{HasFile: true}); got != want {
		t.Errorf("a verdict above the global DEFAULT: got %+v, want %+v", got, want)
	}
}

// Digests that fold alike share a key but for its link; the decision
// must follow the links to the row whose whole digest is the file's, and
// match none when no row's is.
func TestDigestsThatFoldAlikeAreToldApart(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	// Words 0 and 2 both go into the first half of the fold, so moving a
	// bit from one to the other keeps the fold.
	first := digest("sha256", 0x10, 0, 0, 0, 0, 0, 0, 0, 0x01)
	second := digest("sha256", 0x11, 0, 0, 0, 0, 0, 0, 0, 0x00)
	third := digest("sha256", 0x01, 0, 0, 0, 0, 0, 0, 0, 0x10)
	stranger := digest("sha256", 0x00, 0, 0, 0, 0, 0, 0, 0, 0x11)
	for _, d := range []*Digest{second, third, stranger} {
		if fold(d) != fold(first) {
			t.Fatalf("test digests do not fold alike: %x and %x", fold(d), fold(first))
		}
	}
	linked := func(link uint8, r tableRow) tableRow { r.link = link; return r }
	h.SetPolicy(table(1, action(policy.Deny), nil,
		linked(0, ruleRow(RowKindDV, policy.OpExecute, first, nil, everywhere(verdict(0, policy.Allow)))),
		linked(1, ruleRow(RowKindDV, policy.OpExecute, second, nil, everywhere(verdict(1, policy.Deny)))),
		linked(2, ruleRow(RowKindDV, policy.OpExecute, third, nil, everywhere(verdict(2, policy.Allow)))),
	))
	for _, tc := range []struct {
		name      string
		dv        *Digest
		wantScope uint32
		wantRule  uint32
	}{
		{"link 0", first, ScopeRule, 0},
		{"link 1", second, ScopeRule, 1},
		{"link 2", third, ScopeRule, 2},
		{"same fold, no row", stranger, ScopeGlobalDefault, 0},
	} {
		got := h.Run(uint8(policy.OpExecute), HookBprmCheck, TestSubject{HasFile: true, DV: tc.dv})
		if got.Scope != tc.wantScope || got.Rule != tc.wantRule {
			t.Errorf("%s: got %+v, want scope %d rule %d", tc.name, got, tc.wantScope, tc.wantRule)
		}
	}
}

// The BASE row's needs decide which rows are consulted: rows of a kind the
// op does not need are not looked up, and a signature no rule uses is not
// part of the state.
func TestNeedsSelectWhatIsConsulted(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	rows := table(1, action(policy.Deny), nil,
		ruleRow(RowKindDV, policy.OpExecute, dvA, nil, everywhere(verdict(0, policy.Allow))),
		// Holds only where dmverity_signature is UNOBSERVABLE.
		ruleRow(RowKindBase, policy.OpExecute, nil, nil, only(verdict(1, policy.Allow), state(PropFalse, PropUnobservable, PropFalse))),
	)
	key := RowKey{Kind: RowKindBase, Op: uint8(policy.OpExecute)}
	subj := TestSubject{HasFile: true, DV: dvA}
	for _, tc := range []struct {
		name     string
		needs    uint32
		wantRule uint32
		scope    uint32
	}{
		{"everything", allNeeds, 0, ScopeRule},
		{"no DV rows: the signature still counts", allNeeds &^ NeedDVRows, 0, ScopeGlobalDefault},
		{"no DV rows, no signature", NeedBootVerified | NeedFSVeritySignature, 1, ScopeRule},
	} {
		base := rows[key]
		base.Needs = tc.needs
		rows[key] = base
		h.SetPolicy(rows)
		got := h.Run(uint8(policy.OpExecute), HookMmap, subj)
		if got.Scope != tc.scope || got.Rule != tc.wantRule {
			t.Errorf("%s: got %+v, want scope %d rule %d", tc.name, got, tc.scope, tc.wantRule)
		}
	}
}

func denyAll(generation uint32) map[RowKey]Row {
	return table(generation, action(policy.Deny), nil)
}

func TestPermissiveReportsButAllows(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 0, UsableNeeds: allNeeds})
	h.SetPolicy(denyAll(5))

	got := h.Run(uint8(policy.OpExecute), HookMprotect, fileBoot)
	if got.RC != 0 || !got.Decided || got.Action != uint32(policy.Deny) {
		t.Errorf("permissive: got %+v, want a DENY decision returning 0", got)
	}
	e, ok := h.NextEvent()
	if !ok {
		t.Fatal("permissive DENY emitted no event")
	}
	if e.Enforcing != 0 || e.Action != uint8(policy.Deny) || e.Hook != HookMprotect {
		t.Errorf("event %+v, want enforcing 0, action DENY, hook MPROTECT", e)
	}
	if c := h.Counters()[DecisionCounter(HookMprotect, uint8(policy.Deny))]; c != 1 {
		t.Errorf("MPROTECT deny counter = %d, want 1", c)
	}
}

func TestSuccessAudit(t *testing.T) {
	h := NewDecideHarness(t, 0)
	allowAll := table(2, action(policy.Allow), nil)
	h.SetPolicy(allowAll)

	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot)
	if e, ok := h.NextEvent(); ok {
		t.Errorf("ALLOW without success_audit emitted %+v", e)
	}

	h.SetSettings(Settings{Enforcing: 1, SuccessAudit: 1, UsableNeeds: allNeeds})
	h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot)
	e, ok := h.NextEvent()
	if !ok {
		t.Fatal("ALLOW with success_audit emitted no event")
	}
	if e.Action != uint8(policy.Allow) || e.Scope != ScopeGlobalDefault || e.Enforcing != 1 {
		t.Errorf("event %+v, want an enforcing ALLOW by the global DEFAULT", e)
	}
}

// cString is the text of a NUL-padded field.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func TestEventFields(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	h.SetPolicy(table(77, action(policy.Allow), nil,
		ruleRow(RowKindFV, policy.OpKexecImage, nil, fvA, everywhere(verdict(6, policy.Deny))),
	))
	comm, err := os.ReadFile("/proc/thread-self/comm")
	if err != nil {
		t.Fatalf("read own comm: %v", err)
	}

	h.Run(uint8(policy.OpKexecImage), HookKernelRead, TestSubject{HasFile: true, FV: fvA})
	e, ok := h.NextEvent()
	if !ok {
		t.Fatal("DENY emitted no event")
	}
	want := Event{
		Pid: uint32(os.Getpid()), Rule: 6, Generation: 77,
		Op: uint8(policy.OpKexecImage), Hook: HookKernelRead, Enforcing: 1,
		Action: uint8(policy.Deny), Scope: ScopeRule, HasFile: 1,
	}
	gotFixed := e
	gotFixed.Comm, gotFixed.Path = [16]uint8{}, [256]uint8{}
	if gotFixed != want {
		t.Errorf("event %+v, want %+v", gotFixed, want)
	}
	if got, want := cString(e.Comm[:]), strings.TrimSpace(string(comm)); got != want {
		t.Errorf("comm %q, want %q", got, want)
	}
	// The test program's ipe_describe marks file events with this name.
	if got := cString(e.Path[:]); got != "decide_test" {
		t.Errorf("path %q, want the test program's marker", got)
	}

	h.SetPolicy(denyAll(78))
	h.Run(uint8(policy.OpExecute), HookMmap, TestSubject{})
	e, ok = h.NextEvent()
	if !ok {
		t.Fatal("DENY without a file emitted no event")
	}
	if e.HasFile != 0 || e.Path != [256]uint8{} || e.Generation != 78 {
		t.Errorf("event without a file: %+v, want has_file 0, empty path, generation 78", e)
	}
}

func TestCountersPerHookAndAction(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	h.SetPolicy(table(1, action(policy.Deny), nil,
		ruleRow(RowKindBase, policy.OpExecute, nil, nil, only(verdict(0, policy.Allow), state(PropTrue, PropFalse, PropFalse))),
	))

	want := [NumCounters]uint64{}
	for hook := range uint8(NumHooks) {
		for range int(hook) + 1 {
			h.Run(uint8(policy.OpExecute), hook, fileBoot)
			want[DecisionCounter(hook, uint8(policy.Allow))]++
		}
		h.Run(uint8(policy.OpExecute), hook, TestSubject{})
		want[DecisionCounter(hook, uint8(policy.Deny))]++
	}
	if got := h.Counters(); got != want {
		t.Errorf("counters %v, want %v", got, want)
	}
}

func TestFullRingBufferCountsDroppedEvents(t *testing.T) {
	// The smallest ring buffer, one page, holds about a dozen events.
	h := NewDecideHarness(t, uint32(os.Getpagesize()))
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	h.SetPolicy(denyAll(1))

	const calls = 40
	for range calls {
		if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != errEACCES {
			t.Fatalf("a full ring buffer changed the verdict: %+v", got)
		}
	}
	var delivered uint64
	for {
		if _, ok := h.NextEvent(); !ok {
			break
		}
		delivered++
	}
	c := h.Counters()
	if dropped := c[CounterEventsDropped]; dropped == 0 || delivered+dropped != calls {
		t.Errorf("%d events delivered and %d dropped, want some dropped and %d in all", delivered, dropped, calls)
	}
	if c[DecisionCounter(HookBprmCheck, uint8(policy.Deny))] != calls {
		t.Errorf("deny counter %d, want %d: dropping an event must not lose the count", c[DecisionCounter(HookBprmCheck, uint8(policy.Deny))], calls)
	}
}

// TestScratchSlots: a decision claims working memory only to read an
// fs-verity digest or to describe its file in an event. Without a free
// slot, the first goes undecided (denied when enforcing) and the second
// goes out without its path; each is counted.
func TestScratchSlots(t *testing.T) {
	h := NewDecideHarness(t, 0)
	const allSlots = 1<<scratchSlots - 1
	// The digest row allows; everything else falls to the deny default.
	h.SetPolicy(table(1, action(policy.Deny), nil,
		ruleRow(RowKindFV, policy.OpExecute, nil, fvA, everywhere(verdict(0, policy.Allow)))))
	fsverity := TestSubject{HasFile: true, FV: fvA}
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	h.SetScratchBusy(allSlots)

	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fsverity); got.RC != errEACCES || got.Decided {
		t.Errorf("fs-verity digest, no free slot, enforcing: got %+v, want an undecided -EACCES", got)
	}
	h.SetSettings(Settings{Enforcing: 0, UsableNeeds: allNeeds})
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fsverity); got.RC != 0 || got.Decided {
		t.Errorf("fs-verity digest, no free slot, permissive: got %+v, want an undecided 0", got)
	}
	if c := h.Counters(); c[CounterScratchBusy] != 2 {
		t.Errorf("scratch-busy counter %d, want 2", c[CounterScratchBusy])
	}
	if e, ok := h.NextEvent(); ok {
		t.Errorf("an undecided call emitted %+v", e)
	}

	// Nothing to read into a slot and nothing to report: decided anyway.
	h.SetPolicy(table(2, action(policy.Allow), nil))
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != 0 || !got.Decided {
		t.Errorf("no digest, no free slot: got %+v, want a decided allow", got)
	}
	if c := h.Counters(); c[CounterScratchBusy] != 2 {
		t.Errorf("scratch-busy counter %d after a call that needed no slot, want 2", c[CounterScratchBusy])
	}

	// An event without a slot for its path: sent, marked, counted.
	h.SetSettings(Settings{Enforcing: 1, SuccessAudit: 1, UsableNeeds: allNeeds})
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != 0 || !got.Decided {
		t.Errorf("success audit, no free slot: got %+v, want a decided allow", got)
	}
	e, ok := h.NextEvent()
	switch {
	case !ok:
		t.Error("success audit without a free slot emitted no event")
	case e.PathTruncated != 1 || e.Path[0] != 0 || e.Generation != 2:
		t.Errorf("event %+v, want generation 2, an empty path marked truncated", e)
	}
	if c := h.Counters(); c[CounterScratchBusy] != 2 || c[CounterPathLost] != 1 {
		t.Errorf("scratch-busy counter %d, path-lost %d, want 2 and 1", c[CounterScratchBusy], c[CounterPathLost])
	}

	// The last free slot is enough for both, and is given back.
	h.SetPolicy(table(3, action(policy.Deny), nil,
		ruleRow(RowKindFV, policy.OpExecute, nil, fvA, everywhere(verdict(0, policy.Allow)))))
	h.SetScratchBusy(allSlots &^ (1 << 3))
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fsverity); got.RC != 0 || !got.Decided || got.Scope != ScopeRule {
		t.Errorf("one free slot: got %+v, want the digest rule to allow", got)
	}
	if e, ok := h.NextEvent(); !ok || e.PathTruncated != 0 || e.Path[0] == 0 {
		t.Errorf("one free slot: event %+v (sent: %t), want one with its path", e, ok)
	}
	for cpu, mask := range h.ScratchBusy() {
		if mask != allSlots&^(1<<3) {
			t.Errorf("CPU %d slots %#x after the call, want %#x", cpu, mask, allSlots&^(1<<3))
		}
	}

	h.SetScratchBusy(0)
	for op := range uint8(policy.OpInvalid) + 1 {
		h.Run(op, HookKernelRead, fsverity)
		h.Run(op, HookKernelLoad, TestSubject{})
	}
	for cpu, mask := range h.ScratchBusy() {
		if mask != 0 {
			t.Errorf("CPU %d kept slots %#x taken after its calls returned", cpu, mask)
		}
	}
	if c := h.Counters(); c[CounterScratchBusy] != 2 || c[CounterPathLost] != 1 {
		t.Errorf("scratch-busy counter %d, path-lost %d with slots free, want them left at 2 and 1", c[CounterScratchBusy], c[CounterPathLost])
	}
}

// cgroup2Mount finds where the unified cgroup hierarchy is mounted.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	for line := range strings.Lines(string(info)) {
		_, after, ok := strings.Cut(line, " - ")
		if fields := strings.Fields(line); ok && strings.HasPrefix(after, "cgroup2 ") && len(fields) > 4 {
			return fields[4]
		}
	}
	t.Fatal("no cgroup2 hierarchy is mounted: the cgroup scope cannot be tested")
	return ""
}

func TestCgroupScope(t *testing.T) {
	h := NewDecideHarness(t, 0)
	h.SetPolicy(denyAll(1))
	root := cgroup2Mount(t)
	// A fresh cgroup that this test's task is not in.
	outside := filepath.Join(root, "bpfipe-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(outside) })

	put := func(dir string) {
		t.Helper()
		f, err := os.Open(dir)
		if err != nil {
			t.Fatalf("open cgroup: %v", err)
		}
		defer f.Close()
		if err := h.objs.CgroupScope.Put(uint32(0), uint32(f.Fd())); err != nil {
			t.Fatalf("put cgroup: %v", err)
		}
	}
	h.SetSettings(Settings{Enforcing: 1, CgroupId: 1, UsableNeeds: allNeeds})

	put(outside)
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != 0 || got.Decided {
		t.Errorf("task outside the scoped cgroup: got %+v, want undecided 0", got)
	}
	put(root)
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != errEACCES {
		t.Errorf("task under the scoped cgroup: got %+v, want -EACCES", got)
	}
	if err := h.objs.CgroupScope.Delete(uint32(0)); err != nil {
		t.Fatalf("clear cgroup: %v", err)
	}
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != errEACCES {
		t.Errorf("scope set but no cgroup in the slot: got %+v, want enforcement (fail closed)", got)
	}
	h.SetSettings(Settings{Enforcing: 1, UsableNeeds: allNeeds})
	put(outside)
	if got := h.Run(uint8(policy.OpExecute), HookBprmCheck, fileBoot); got.RC != errEACCES {
		t.Errorf("no scope: got %+v, want system-wide enforcement", got)
	}
}
