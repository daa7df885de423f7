package maps

import (
	"errors"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

var (
	hashA = digest("sha256", "aa00000000000000000000000000000000000000000000000000000000000001")
	hashB = digest("sha256", "bb00000000000000000000000000000000000000000000000000000000000002")
	fileF = digest("sha256", "ff00000000000000000000000000000000000000000000000000000000000003")
)

// check is one lookup and the verdict worked out by hand from IPE's rules.
type check struct {
	name string
	op   policy.Op
	subj policy.Subject
	obs  policy.Observability
	want Verdict
}

// rowWant gives a row's verdict for each combination of the
// (boot_verified, dmverity_signature, fsverity_signature) states.
type rowWant struct {
	key     bpf.RowKey
	verdict func(bv, dvSig, fvSig uint32) uint32
}

func everywhere(v uint32) func(_, _, _ uint32) uint32 {
	return func(_, _, _ uint32) uint32 { return v }
}

// where is v in the states in selects and bpf.NoVerdict elsewhere.
func where(v uint32, in func(bv, dvSig, fvSig uint32) bool) func(_, _, _ uint32) uint32 {
	return func(bv, dvSig, fvSig uint32) uint32 {
		if in(bv, dvSig, fvSig) {
			return v
		}
		return bpf.NoVerdict
	}
}

func mustKey(d policy.Digest) bpf.Digest {
	enc, ok := DigestKey(d)
	if !ok {
		panic("test digest cannot be encoded")
	}
	return enc
}

func baseKey(op policy.Op) bpf.RowKey { return bpf.RowKey{Kind: uint8(KindBase), Op: uint8(op)} }

// digestKey is the link-0 key of a row with the digests given (nil: none).
func digestKey(kind RowKind, op policy.Op, dv, fv *policy.Digest) bpf.RowKey {
	k := bpf.RowKey{Kind: uint8(kind), Op: uint8(op)}
	if dv != nil {
		k.DvFold = Fold(mustKey(*dv))
	}
	if fv != nil {
		k.FvFold = Fold(mustKey(*fv))
	}
	return k
}

func dvKey(op policy.Op, d policy.Digest) bpf.RowKey { return digestKey(KindDV, op, &d, nil) }

// defaultOf is the verdict a BASE row holds where no rule matches, worked
// out from the policy: the op's DEFAULT, else the global one, else an
// allow.
func defaultOf(p *policy.Policy, op policy.Op) uint32 {
	if op < policy.OpInvalid && p.OpDefaults[op] != nil {
		return bpf.VerdictOpDefault | uint32(*p.OpDefaults[op])
	}
	if p.GlobalDefault != nil {
		return bpf.VerdictGlobalDefault | uint32(*p.GlobalDefault)
	}
	return bpf.VerdictGlobalDefault | bpf.ActionAllow
}

var (
	signedFileA   = policy.Subject{HasFile: true, DMVerityRootHash: &hashA, DMVeritySigned: true}
	unsignedFileA = policy.Subject{HasFile: true, DMVerityRootHash: &hashA}
	signedFileB   = policy.Subject{HasFile: true, DMVerityRootHash: &hashB, DMVeritySigned: true}
	noFile        = policy.Subject{}
	bootFile      = policy.Subject{HasFile: true, BootVerified: true}
)

func TestCompile(t *testing.T) {
	allow, deny := policy.Allow, policy.Deny
	ruleVerdict := func(a policy.Action, i uint32) Verdict {
		return Verdict{Action: a, Scope: policy.ScopeRule, RuleIndex: i}
	}
	global := func(a policy.Action) Verdict { return Verdict{Action: a, Scope: policy.ScopeGlobalDefault} }
	opDefault := func(a policy.Action) Verdict { return Verdict{Action: a, Scope: policy.ScopeOpDefault} }

	tests := []struct {
		name   string
		policy *policy.Policy
		rows   []rowWant // the rule rows; the BASE rows of ops without rules are TestBaseRows'
		dead   []int
		checks []check
	}{
		{
			name: "deny before allow for the same root hash wins",
			policy: newPolicy(action(allow),
				rule(policy.OpExecute, deny, dvProp(hashA)),
				rule(policy.OpExecute, allow, dvProp(hashA))),
			rows: []rowWant{{dvKey(policy.OpExecute, hashA), everywhere(0<<1 | 0)}},
			checks: []check{
				{"file on A", policy.OpExecute, signedFileA, policy.AllObservable, ruleVerdict(deny, 0)},
				{"file on B", policy.OpExecute, signedFileB, policy.AllObservable, global(allow)},
				{"other op", policy.OpKmodule, signedFileA, policy.AllObservable, global(allow)},
			},
		},
		{
			name: "a rule matches only when all its properties hold",
			policy: newPolicy(action(deny),
				rule(policy.OpExecute, allow, dvProp(hashA), boolProp(policy.PropDMVeritySignature, true))),
			rows: []rowWant{{dvKey(policy.OpExecute, hashA),
				where(0<<1|1, func(_, dvSig, _ uint32) bool { return dvSig == bpf.PropTrue })}},
			checks: []check{
				{"signed on A", policy.OpExecute, signedFileA, policy.AllObservable, ruleVerdict(allow, 0)},
				{"unsigned on A", policy.OpExecute, unsignedFileA, policy.AllObservable, global(deny)},
				{"signed on B", policy.OpExecute, signedFileB, policy.AllObservable, global(deny)},
				{"signature unobservable", policy.OpExecute, signedFileA,
					policy.Observability{DMVerityRootHash: true, FSVerityDigest: true}, global(deny)},
				{"root hash unobservable", policy.OpExecute, signedFileA,
					policy.Observability{DMVeritySignature: true}, global(deny)},
			},
		},
		{
			name: "boolean-only rules land in BASE rows per op",
			policy: newPolicy(action(deny),
				rule(policy.OpExecute, allow, boolProp(policy.PropBootVerified, true)),
				rule(policy.OpKmodule, deny, boolProp(policy.PropBootVerified, false)),
				rule(policy.OpKmodule, allow)),
			rows: []rowWant{
				{baseKey(policy.OpExecute), where(0<<1|1, func(bv, _, _ uint32) bool { return bv == bpf.PropTrue })},
				// Rule 2 holds everywhere; rule 1 comes first where boot_verified is FALSE.
				{baseKey(policy.OpKmodule), func(bv, _, _ uint32) uint32 {
					if bv == bpf.PropFalse {
						return 1<<1 | 0
					}
					return 2<<1 | 1
				}},
			},
			checks: []check{
				{"boot file", policy.OpExecute, bootFile, policy.AllObservable, ruleVerdict(allow, 0)},
				{"anonymous memory", policy.OpExecute, noFile, policy.AllObservable, global(deny)},
				{"module with no file", policy.OpKmodule, noFile, policy.AllObservable, ruleVerdict(deny, 1)},
				{"module from boot", policy.OpKmodule, bootFile, policy.AllObservable, ruleVerdict(allow, 2)},
			},
		},
		{
			name: "rules that can never match compile to nothing but keep their index",
			policy: newPolicy(action(deny),
				rule(policy.OpExecute, allow, boolProp(policy.PropBootVerified, true), boolProp(policy.PropBootVerified, false)),
				rule(policy.OpExecute, allow, dvProp(digest(strings.Repeat("x", 33), "aa"))),
				rule(policy.OpExecute, allow, dvProp(hashA), dvProp(hashB)),
				rule(policy.OpExecute, allow, dvProp(policy.Digest{Alg: "sha256"})),
				rule(policy.OpExecute, allow, fvProp(policy.Digest{Alg: "sha512", Bytes: make([]byte, 65)})),
				rule(policy.OpExecute, allow, boolProp(policy.PropFSVeritySignature, false), boolProp(policy.PropFSVeritySignature, true)),
				rule(policy.OpExecute, deny, dvProp(hashA), dvProp(hashA))),
			dead: []int{0, 1, 2, 3, 4, 5},
			rows: []rowWant{{dvKey(policy.OpExecute, hashA), everywhere(6<<1 | 0)}},
			checks: []check{
				{"file on A", policy.OpExecute, signedFileA, policy.AllObservable, ruleVerdict(deny, 6)},
				{"boot file", policy.OpExecute, bootFile, policy.AllObservable, global(deny)},
			},
		},
		{
			name: "the first rule in file order wins across rows",
			policy: newPolicy(action(deny),
				rule(policy.OpExecute, allow, boolProp(policy.PropDMVeritySignature, true)),
				rule(policy.OpExecute, deny, dvProp(hashA)),
				rule(policy.OpExecute, allow, dvProp(hashA), fvProp(fileF)),
				rule(policy.OpExecute, allow, fvProp(fileF))),
			rows: []rowWant{
				{baseKey(policy.OpExecute), where(0<<1|1, func(_, dvSig, _ uint32) bool { return dvSig == bpf.PropTrue })},
				{dvKey(policy.OpExecute, hashA), everywhere(1<<1 | 0)},
				{digestKey(KindDVFV, policy.OpExecute, &hashA, &fileF), everywhere(2<<1 | 1)},
				{digestKey(KindFV, policy.OpExecute, nil, &fileF), everywhere(3<<1 | 1)},
			},
			checks: []check{
				{"signed on A", policy.OpExecute, signedFileA, policy.AllObservable, ruleVerdict(allow, 0)},
				{"unsigned on A", policy.OpExecute, unsignedFileA, policy.AllObservable, ruleVerdict(deny, 1)},
				{"verity file on B", policy.OpExecute,
					policy.Subject{HasFile: true, DMVerityRootHash: &hashB, FSVerityDigest: &fileF}, policy.AllObservable, ruleVerdict(allow, 3)},
				{"verity file on A", policy.OpExecute,
					policy.Subject{HasFile: true, DMVerityRootHash: &hashA, FSVerityDigest: &fileF}, policy.AllObservable, ruleVerdict(deny, 1)},
				{"verity file, no device", policy.OpExecute,
					policy.Subject{HasFile: true, FSVerityDigest: &fileF}, policy.AllObservable, ruleVerdict(allow, 3)},
				{"fs-verity unobservable", policy.OpExecute,
					policy.Subject{HasFile: true, FSVerityDigest: &fileF}, policy.Observability{DMVerityRootHash: true}, global(deny)},
			},
		},
		{
			name: "DVFV rows need both digests",
			policy: newPolicy(action(allow),
				rule(policy.OpExecute, deny, fvProp(fileF), dvProp(hashA))),
			rows: []rowWant{{digestKey(KindDVFV, policy.OpExecute, &hashA, &fileF), everywhere(0)}},
			checks: []check{
				{"both", policy.OpExecute,
					policy.Subject{HasFile: true, DMVerityRootHash: &hashA, FSVerityDigest: &fileF}, policy.AllObservable, ruleVerdict(deny, 0)},
				{"root hash only", policy.OpExecute, signedFileA, policy.AllObservable, global(allow)},
				{"root hash unobservable", policy.OpExecute,
					policy.Subject{HasFile: true, DMVerityRootHash: &hashA, FSVerityDigest: &fileF}, policy.Observability{FSVerityDigest: true}, global(allow)},
			},
		},
		{
			name: "FALSE forms hold with no file unless unobservable",
			policy: newPolicy(action(allow),
				rule(policy.OpExecute, deny, boolProp(policy.PropDMVeritySignature, false))),
			rows: []rowWant{{baseKey(policy.OpExecute), where(0, func(_, dvSig, _ uint32) bool { return dvSig == bpf.PropFalse })}},
			checks: []check{
				{"anonymous memory", policy.OpExecute, noFile, policy.AllObservable, ruleVerdict(deny, 0)},
				{"anonymous memory, signature unobservable", policy.OpExecute, noFile, policy.Observability{}, global(allow)},
				{"signed file", policy.OpExecute, signedFileA, policy.AllObservable, global(allow)},
			},
		},
		{
			name: "per-op DEFAULTs before the global one",
			policy: func() *policy.Policy {
				p := newPolicy(action(allow), rule(policy.OpExecute, allow, dvProp(hashA)))
				p.OpDefaults[policy.OpExecute] = action(deny)
				p.OpDefaults[policy.OpFirmware] = action(deny)
				return p
			}(),
			rows: []rowWant{{dvKey(policy.OpExecute, hashA), everywhere(1)}},
			checks: []check{
				{"execute on A", policy.OpExecute, signedFileA, policy.AllObservable, ruleVerdict(allow, 0)},
				{"execute on B", policy.OpExecute, signedFileB, policy.AllObservable, opDefault(deny)},
				{"firmware", policy.OpFirmware, signedFileA, policy.AllObservable, opDefault(deny)},
				{"kmodule", policy.OpKmodule, signedFileA, policy.AllObservable, global(allow)},
				{"invalid op", policy.OpInvalid, signedFileA, policy.AllObservable, global(allow)},
			},
		},
		{
			name: "an invalid op takes the global DEFAULT only",
			policy: func() *policy.Policy {
				p := newPolicy(action(deny), rule(policy.OpExecute, allow))
				p.OpDefaults[policy.OpExecute] = action(allow)
				return p
			}(),
			rows: []rowWant{{baseKey(policy.OpExecute), everywhere(1)}},
			checks: []check{
				{"invalid op", policy.OpInvalid, signedFileA, policy.AllObservable, global(deny)},
			},
		},
		{
			name: "an invalid op is allowed when there is no global DEFAULT",
			policy: func() *policy.Policy {
				p := newPolicy(nil)
				for _, op := range policy.Ops() {
					p.OpDefaults[op] = action(deny)
				}
				return p
			}(),
			checks: []check{
				{"invalid op", policy.OpInvalid, noFile, policy.AllObservable, global(allow)},
				{"execute", policy.OpExecute, noFile, policy.AllObservable, opDefault(deny)},
			},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tables, err := Compile(tc.policy, 7)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			checkKeysZeroed(t, tables)
			digestRows := 0
			for _, rw := range tc.rows {
				if RowKind(rw.key.Kind) != KindBase {
					digestRows++
				}
			}
			if got, want := len(tables.Rows), numBaseRows+digestRows; got != want {
				t.Errorf("%d rows, want %d (a BASE row per op and %d others)", got, want, digestRows)
			}
			for _, rw := range tc.rows {
				row := tables.row(rw.key)
				if row == nil {
					t.Errorf("no row for kind %s op %d", RowKind(rw.key.Kind), rw.key.Op)
					continue
				}
				for s := range uint32(bpf.NumStates) {
					want := rw.verdict(s%3, s/3%3, s/9)
					if RowKind(rw.key.Kind) == KindBase {
						want = min(want, defaultOf(tc.policy, policy.Op(rw.key.Op)))
					}
					if row.Verdict[s] != want {
						t.Errorf("row %s op %d state %d: verdict %#x, want %#x", RowKind(rw.key.Kind), rw.key.Op, s, row.Verdict[s], want)
					}
				}
			}
			var dead []int
			for _, d := range tables.Dead {
				dead = append(dead, d.Index)
				if d.Reason == "" || d.Line != d.Index+2 {
					t.Errorf("dead rule %+v lacks its reason or line", d)
				}
			}
			if !equalInts(dead, tc.dead) {
				t.Errorf("dead rules %v, want %v", dead, tc.dead)
			}
			for _, c := range tc.checks {
				if got := tables.Lookup(c.op, c.subj, c.obs); got != c.want {
					t.Errorf("%s: Lookup = %+v, want %+v", c.name, got, c.want)
				}
				// The hand-worked expectation must also be IPE's.
				d := policy.Evaluate(tc.policy, c.op, c.subj, c.obs)
				if d.Action != c.want.Action || d.Scope != c.want.Scope || (d.Rule != nil && uint32(d.Rule.Index) != c.want.RuleIndex) {
					t.Errorf("%s: the expectation disagrees with policy.Evaluate: %+v", c.name, d)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBaseRows(t *testing.T) {
	p := newPolicy(action(policy.Deny))
	p.OpDefaults[policy.OpExecute] = action(policy.Deny)
	p.OpDefaults[policy.OpKmodule] = action(policy.Allow)
	tables, err := Compile(p, 0xdeadbeef)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	if len(tables.Rows) != numBaseRows {
		t.Fatalf("%d rows, want a BASE row for each of the %d ops alone", len(tables.Rows), numBaseRows)
	}
	for op := range policy.OpInvalid + 1 {
		row := tables.row(baseKey(op))
		if row == nil {
			t.Errorf("op %s has no BASE row", op)
			continue
		}
		want := bpf.VerdictGlobalDefault | bpf.ActionDeny
		switch op {
		case policy.OpExecute:
			want = bpf.VerdictOpDefault | bpf.ActionDeny
		case policy.OpKmodule:
			want = bpf.VerdictOpDefault | bpf.ActionAllow
		}
		for s, v := range row.Verdict {
			if v != want {
				t.Errorf("op %s state %d: verdict %#x, want %#x", op, s, v, want)
			}
		}
		if row.Generation != 0xdeadbeef || row.Needs != 0 {
			t.Errorf("op %s: generation %#x, needs %#x; want 0xdeadbeef and nothing", op, row.Generation, row.Needs)
		}
	}
	if tables.Generation != 0xdeadbeef {
		t.Errorf("Generation %#x", tables.Generation)
	}
}

// An op's BASE row says what its rules use, so that the kernel observes
// and looks up nothing else.
func TestNeeds(t *testing.T) {
	p := newPolicy(action(policy.Deny),
		rule(policy.OpExecute, policy.Allow, dvProp(hashA), boolProp(policy.PropDMVeritySignature, true)),
		rule(policy.OpExecute, policy.Allow, boolProp(policy.PropBootVerified, true)),
		rule(policy.OpKmodule, policy.Allow, fvProp(fileF), boolProp(policy.PropFSVeritySignature, false)),
		rule(policy.OpKmodule, policy.Allow, fvProp(fileF), dvProp(hashB)),
		// Dead rules need nothing.
		rule(policy.OpFirmware, policy.Allow, boolProp(policy.PropBootVerified, true), boolProp(policy.PropBootVerified, false)),
		rule(policy.OpPolicy, policy.Allow))
	tables, err := Compile(p, 1)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	for op, want := range map[policy.Op]uint32{
		policy.OpExecute:  bpf.NeedDVRows | bpf.NeedDMVeritySignature | bpf.NeedBootVerified,
		policy.OpKmodule:  bpf.NeedFVRows | bpf.NeedFSVeritySignature | bpf.NeedDVFVRows,
		policy.OpFirmware: 0,
		policy.OpPolicy:   0,
		policy.OpInvalid:  0,
	} {
		if got := tables.row(baseKey(op)).Needs; got != want {
			t.Errorf("op %s needs %#x, want %#x", op, got, want)
		}
	}
}

// Digests that fold alike get links 0 to bpf.Links-1 of one key; one more
// cannot be compiled. Lookup finds each by its whole digest.
func TestDigestsThatFoldAlike(t *testing.T) {
	// Moving a byte between words 0, 2 and 4 of the bytes, which fold into
	// the same half, keeps the fold.
	colliding := []policy.Digest{
		digest("sha256", "0100000000000000000000000000000000000000"),
		digest("sha256", "0000000000000000010000000000000000000000"),
		digest("sha256", "0000000000000000000000000000000001000000"),
		digest("sha256", "0100000000000000010000000000000001000000"),
		digest("sha256", "0300000000000000020000000000000000000000"),
	}
	for _, d := range colliding[1:] {
		if Fold(mustKey(d)) != Fold(mustKey(colliding[0])) {
			t.Fatalf("%x does not fold as %x", d.Bytes, colliding[0].Bytes)
		}
	}
	var rules []policy.Rule
	for _, d := range colliding[:bpf.Links] {
		rules = append(rules, rule(policy.OpExecute, policy.Allow, dvProp(d)))
	}
	tables, err := Compile(newPolicy(action(policy.Deny), rules...), 1)
	if err != nil {
		t.Fatalf("Compile with %d digests that fold alike: %v", bpf.Links, err)
	}
	checkKeysZeroed(t, tables)
	for i, d := range colliding {
		want := Verdict{Action: policy.Deny, Scope: policy.ScopeGlobalDefault}
		if i < bpf.Links {
			want = Verdict{Action: policy.Allow, Scope: policy.ScopeRule, RuleIndex: uint32(i)}
		}
		subj := policy.Subject{HasFile: true, DMVerityRootHash: &d}
		if got := tables.Lookup(policy.OpExecute, subj, policy.AllObservable); got != want {
			t.Errorf("digest %d: Lookup = %+v, want %+v", i, got, want)
		}
	}

	rules = append(rules, rule(policy.OpExecute, policy.Allow, dvProp(colliding[bpf.Links])))
	if _, err := Compile(newPolicy(action(policy.Deny), rules...), 1); !errors.Is(err, ErrFoldCollision) {
		t.Errorf("Compile with %d digests that fold alike: %v, want ErrFoldCollision", bpf.Links+1, err)
	}
	// The same digests under another op, or as fs-verity digests, are
	// other keys.
	rules = rules[:bpf.Links]
	for _, d := range colliding {
		rules = append(rules, rule(policy.OpKmodule, policy.Allow, dvProp(d)))
	}
	if _, err := Compile(newPolicy(action(policy.Deny), rules...), 1); !errors.Is(err, ErrFoldCollision) {
		t.Errorf("a fifth linked row under another op: %v, want ErrFoldCollision", err)
	}
}

func TestRowsAreDeduplicated(t *testing.T) {
	var rules []policy.Rule
	for range 5 {
		rules = append(rules,
			rule(policy.OpExecute, policy.Allow, dvProp(hashA)),
			rule(policy.OpExecute, policy.Allow, boolProp(policy.PropBootVerified, true)),
			rule(policy.OpFirmware, policy.Allow, dvProp(hashA)))
	}
	tables, err := Compile(newPolicy(action(policy.Deny), rules...), 1)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	seen := map[bpf.RowKey]bool{}
	for _, e := range tables.Rows {
		if seen[e.Key] {
			t.Errorf("duplicate key %+v", e.Key)
		}
		seen[e.Key] = true
	}
	// A BASE row per op, DV(EXECUTE, A), DV(FIRMWARE, A).
	if len(tables.Rows) != numBaseRows+2 {
		t.Errorf("%d rows, want %d", len(tables.Rows), numBaseRows+2)
	}
}

func TestCompileRejectsMalformedPolicies(t *testing.T) {
	noDefaults := newPolicy(nil)
	noDefaults.OpDefaults[policy.OpExecute] = action(policy.Allow)

	misnumbered := newPolicy(action(policy.Allow), rule(policy.OpExecute, policy.Allow), rule(policy.OpExecute, policy.Deny))
	misnumbered.Rules[1].Index = 0

	invalidOp := newPolicy(action(policy.Allow), rule(policy.OpInvalid, policy.Allow))
	badAction := newPolicy(action(policy.Allow), rule(policy.OpExecute, policy.Action(2)))

	for name, p := range map[string]*policy.Policy{
		"an op with no DEFAULT at all": noDefaults,
		"indices out of file order":    misnumbered,
		"a rule for the invalid op":    invalidOp,
		"an unknown action":            badAction,
	} {
		if tables, err := Compile(p, 1); err == nil {
			t.Errorf("%s: Compile accepted it: %+v", name, tables.Rows)
		} else if errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: reported as too large: %v", name, err)
		}
	}
}

func TestLimits(t *testing.T) {
	defer func(rows, index int) { maxRows, maxRuleIndex = rows, index }(maxRows, maxRuleIndex)
	maxRows, maxRuleIndex = numBaseRows+2, 100

	var rules []policy.Rule
	for _, d := range []policy.Digest{hashA, hashB, hashA, hashB} {
		rules = append(rules, rule(policy.OpExecute, policy.Allow, dvProp(d)))
	}
	// The BASE rows and two DV rows fill the limit exactly; repeats share
	// rows.
	if _, err := Compile(newPolicy(action(policy.Deny), rules...), 1); err != nil {
		t.Fatalf("Compile at the limit: %v", err)
	}
	rules = append(rules, rule(policy.OpExecute, policy.Allow, dvProp(fileF)))
	tables, err := Compile(newPolicy(action(policy.Deny), rules...), 1)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Compile over the row limit: tables %v, error %v; want ErrTooLarge", tables, err)
	}
	if !strings.Contains(err.Error(), "10 rows") {
		t.Errorf("error %q does not give the limit", err)
	}

	maxRows, maxRuleIndex = MaxRows, 2
	rules = []policy.Rule{rule(policy.OpExecute, policy.Allow), rule(policy.OpExecute, policy.Allow), rule(policy.OpExecute, policy.Allow)}
	if _, err := Compile(newPolicy(action(policy.Deny), rules...), 1); err != nil {
		t.Fatalf("Compile with the last allowed index: %v", err)
	}
	rules = append(rules, rule(policy.OpExecute, policy.Allow))
	if _, err := Compile(newPolicy(action(policy.Deny), rules...), 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Compile over the index limit: %v, want ErrTooLarge", err)
	}
}

func TestMaxRuleIndexVerdictsStayBelowTheDefaults(t *testing.T) {
	if highest := uint64(maxRuleIndex)<<1 | 1; highest >= uint64(bpf.VerdictOpDefault) {
		t.Errorf("an ALLOW verdict of rule %d is %#x, not below bpf.VerdictOpDefault", maxRuleIndex, highest)
	}
	if next := uint64(maxRuleIndex+1)<<1 | 0; next < uint64(bpf.VerdictOpDefault) {
		t.Errorf("the limit %d is lower than the encoding needs", maxRuleIndex)
	}
}

func TestDigestKey(t *testing.T) {
	enc, ok := DigestKey(digest("sha256", "0102"))
	if !ok {
		t.Fatal("DigestKey rejected sha256:0102")
	}
	want := bpf.Digest{Len: 2}
	copy(want.Alg[:], "sha256")
	want.Bytes[0], want.Bytes[1] = 1, 2
	if enc != want {
		t.Errorf("DigestKey = %+v, want %+v", enc, want)
	}

	longest := policy.Digest{Alg: strings.Repeat("a", 32), Bytes: make([]byte, 64)}
	if _, ok := DigestKey(longest); !ok {
		t.Error("DigestKey rejected a 32-byte name with a 64-byte digest")
	}
	for name, d := range map[string]policy.Digest{
		"33-byte name":   {Alg: strings.Repeat("a", 33), Bytes: []byte{1}},
		"65-byte digest": {Alg: "sha512", Bytes: make([]byte, 65)},
		"empty digest":   {Alg: "sha256"},
		"NUL in name":    {Alg: "sha\x00256", Bytes: []byte{1}},
	} {
		if enc, ok := DigestKey(d); ok {
			t.Errorf("%s: DigestKey encoded it as %+v", name, enc)
		}
	}

	// Digests IPE tells apart must get different keys.
	distinct := []policy.Digest{
		digest("sha256", "01"), digest("sha256", "0100"), digest("SHA256", "01"),
		digest("sha256 ", "01"), digest("sha512", "01"), digest("", "01"),
	}
	keys := map[bpf.Digest]policy.Digest{}
	for _, d := range distinct {
		enc, _ := DigestKey(d)
		if prev, dup := keys[enc]; dup {
			t.Errorf("%+v and %+v share a key", prev, d)
		}
		keys[enc] = d
	}
}

func TestStateIndex(t *testing.T) {
	tests := []struct {
		name string
		subj policy.Subject
		obs  policy.Observability
		want uint32
	}{
		{"no file", noFile, policy.AllObservable, bpf.PropFalse + 3*bpf.PropFalse + 9*bpf.PropFalse},
		{"no file, signatures unobservable", noFile, policy.Observability{}, bpf.PropFalse},
		{"everything true", policy.Subject{HasFile: true, BootVerified: true, DMVeritySigned: true, FSVeritySigned: true},
			policy.AllObservable, bpf.PropTrue + 3*bpf.PropTrue + 9*bpf.PropTrue},
		{"flags without a file count for nothing", policy.Subject{BootVerified: true, DMVeritySigned: true, FSVeritySigned: true},
			policy.AllObservable, bpf.PropFalse + 3*bpf.PropFalse + 9*bpf.PropFalse},
		{"fs-verity signature unobservable", policy.Subject{HasFile: true, DMVeritySigned: true, FSVeritySigned: true},
			policy.Observability{DMVeritySignature: true}, bpf.PropFalse + 3*bpf.PropTrue},
	}
	for _, tc := range tests {
		if got := StateIndex(tc.subj, tc.obs); got != tc.want {
			t.Errorf("%s: StateIndex = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestSummary(t *testing.T) {
	p := newPolicy(action(policy.Deny),
		rule(policy.OpExecute, policy.Allow, dvProp(hashA)),
		rule(policy.OpExecute, policy.Allow, dvProp(hashB)),
		rule(policy.OpExecute, policy.Allow, dvProp(hashA), dvProp(hashB)),
		rule(policy.OpKmodule, policy.Allow, boolProp(policy.PropBootVerified, true)),
		rule(policy.OpKmodule, policy.Allow, fvProp(fileF), dvProp(hashA)))
	tables, err := Compile(p, 1)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	s := tables.Summary()
	// A row is its 20-byte key, 27 verdicts, four more words and two
	// 100-byte digests. The table: 8 BASE rows, then for 3 digest rows one
	// bucket (four keys a bucket), so one seed row, and 3*1.25+1 slots.
	const rowBytes = 20 + 27*4 + 4*4 + 2*100
	const tableRows = 8 + 1 + 4
	want := Summary{Rules: 5, DeadRules: 1, Rows: 11, TableRows: tableRows, KernelBytes: tableRows * rowBytes}
	want.RulesPerOp[policy.OpExecute] = 3
	want.RulesPerOp[policy.OpKmodule] = 2
	want.RowsPerKind = [NumRowKinds]int{KindBase: 8, KindDV: 2, KindDVFV: 1}
	if s != want {
		t.Errorf("Summary = %+v, want %+v", s, want)
	}
	text := s.String()
	for _, part := range []string{"rules: 5 (EXECUTE 3, KMODULE 2)", "dead rules: 1", "rows: 11 (BASE 8, DV 2, FV 0, DVFV 1)", "kernel table: 13 rows, 4472 bytes"} {
		if !strings.Contains(text, part) {
			t.Errorf("summary text lacks %q:\n%s", part, text)
		}
	}
}

// TestCompileParsedPolicy runs the parser's output through the compiler:
// digests written in either case, and the IPE idiom of denying a revoked
// image before allowing its family.
func TestCompileParsedPolicy(t *testing.T) {
	text := `policy_name=images policy_version=0.0.1
DEFAULT action=DENY
DEFAULT op=KMODULE action=ALLOW
op=EXECUTE dmverity_roothash=sha256:AA00000000000000000000000000000000000000000000000000000000000001 action=DENY
op=EXECUTE dmverity_signature=TRUE action=ALLOW
op=EXECUTE dmverity_roothash=sha256:bb00000000000000000000000000000000000000000000000000000000000002 action=ALLOW
op=EXECUTE boot_verified=TRUE action=ALLOW
`
	p, err := policy.Parse("images.pol", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tables, err := Compile(p, 3)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	checkKeysZeroed(t, tables)
	byRule := func(a policy.Action, i uint32) Verdict {
		return Verdict{Action: a, Scope: policy.ScopeRule, RuleIndex: i}
	}
	for _, c := range []check{
		{"revoked signed image", policy.OpExecute, signedFileA, policy.AllObservable, byRule(policy.Deny, 0)},
		{"signed image", policy.OpExecute, signedFileB, policy.AllObservable, byRule(policy.Allow, 1)},
		{"unsigned listed image", policy.OpExecute, policy.Subject{HasFile: true, DMVerityRootHash: &hashB}, policy.AllObservable, byRule(policy.Allow, 2)},
		{"initramfs", policy.OpExecute, bootFile, policy.AllObservable, byRule(policy.Allow, 3)},
		{"anonymous memory", policy.OpExecute, noFile, policy.AllObservable, Verdict{Action: policy.Deny, Scope: policy.ScopeGlobalDefault}},
		{"module", policy.OpKmodule, noFile, policy.AllObservable, Verdict{Action: policy.Allow, Scope: policy.ScopeOpDefault}},
	} {
		if got := tables.Lookup(c.op, c.subj, c.obs); got != c.want {
			t.Errorf("%s: Lookup = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestKeysValues(t *testing.T) {
	tables, err := Compile(newPolicy(action(policy.Deny),
		rule(policy.OpExecute, policy.Allow, dvProp(hashA)),
		rule(policy.OpFirmware, policy.Deny)), 1)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	keys, values := tables.KeysValues()
	if len(keys) != numBaseRows+1 || len(values) != numBaseRows+1 {
		t.Fatalf("%d keys and %d values, want %d each", len(keys), len(values), numBaseRows+1)
	}
	for i := range keys {
		if row := tables.row(keys[i]); row == nil || *row != values[i] {
			t.Errorf("key %d is paired with the wrong value", i)
		}
	}
}

// Tables assembled from rows alone, as read back from a kernel map, must
// decide as the compiled ones do.
func TestLookupOnAssembledTables(t *testing.T) {
	compiled, err := Compile(newPolicy(action(policy.Deny),
		rule(policy.OpExecute, policy.Allow, dvProp(hashA))), 1)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	assembled := &Tables{Rows: compiled.Rows}
	want := Verdict{Action: policy.Allow, Scope: policy.ScopeRule, RuleIndex: 0}
	if got := assembled.Lookup(policy.OpExecute, signedFileA, policy.AllObservable); got != want {
		t.Errorf("Lookup = %+v, want %+v", got, want)
	}
}
