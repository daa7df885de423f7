package maps

import (
	"flag"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/policy"
)

var (
	equivSeed     = flag.Uint64("equiv.seed", 20240601, "seed of TestLookupEqualsEvaluate")
	equivPolicies = flag.Int("equiv.policies", 2000, "random policies in TestLookupEqualsEvaluate")
	equivSubjects = flag.Int("equiv.subjects", 200, "random subjects per policy in TestLookupEqualsEvaluate")
)

// kernelDigests are digests a kernel can report for a file: short names,
// non-empty. Some differ only in name case, length or one byte, and the
// second and third fold as the first (the 1 moves between words that go
// into the same half), so that near misses and linked rows are tried.
var kernelDigests = []policy.Digest{
	digest("sha256", "aa00000000000000000000000000000000000000000000000000000000000001"),
	digest("sha256", "aa00000000000001000000000000000000000000000000000000000000000000"),
	digest("sha256", "aa00000000000000000000000000000100000000000000000000000000000000"),
	digest("sha256", "aa00000000000000000000000000000000000000000000000000000000000002"),
	digest("sha256", "aa000000000000000000000000000000"),
	digest("SHA256", "aa00000000000000000000000000000000000000000000000000000000000001"),
	digest("sha512", strings.Repeat("5a", 64)),
	{Alg: strings.Repeat("b", 32), Bytes: []byte{1}},
}

// policyOnlyDigests can be written in a policy but never equal a kernel
// digest.
var policyOnlyDigests = []policy.Digest{
	{Alg: strings.Repeat("b", 33), Bytes: []byte{1}},
	{Alg: "sha512", Bytes: make([]byte, 65)},
	{Alg: "sha256"},
	digest("sha256", "0123"), // well-formed but no file has it
}

func randomDigest(r *rand.Rand, pool []policy.Digest) policy.Digest {
	return pool[r.IntN(len(pool))]
}

func randomPolicy(r *rand.Rand) *policy.Policy {
	actions := []policy.Action{policy.Deny, policy.Allow}
	pickAction := func() *policy.Action { return action(actions[r.IntN(2)]) }
	var rules []policy.Rule
	// Few ops and few digests per policy, so rules of one op collide.
	ops := policy.Ops()[:1+r.IntN(3)]
	for range r.IntN(25) {
		var props []policy.Property
		// A rule with no property matches everything and hides the rest.
		nprops := 1 + r.IntN(4)
		if r.IntN(10) == 0 {
			nprops = 0
		}
		for range nprops {
			// Half the properties are digests, so digest rows fill up.
			kind := policy.PropKind(r.IntN(3))
			if r.IntN(2) == 0 {
				kind = policy.PropDMVerityRootHash + policy.PropKind(r.IntN(2))
			}
			prop := policy.Property{Kind: kind, Value: r.IntN(2) == 0}
			if kind.IsDigest() {
				pool := kernelDigests
				if r.IntN(8) == 0 {
					pool = policyOnlyDigests
				}
				prop.Digest = randomDigest(r, pool[:1+r.IntN(len(pool))])
			}
			props = append(props, prop)
		}
		rules = append(rules, rule(ops[r.IntN(len(ops))], actions[r.IntN(2)], props...))
	}
	var global *policy.Action
	if r.IntN(4) != 0 {
		global = pickAction()
	}
	p := newPolicy(global, rules...)
	for _, op := range policy.Ops() {
		// The parser demands a DEFAULT for every op when there is no
		// global one.
		if global == nil || r.IntN(3) == 0 {
			p.OpDefaults[op] = pickAction()
		}
	}
	return p
}

func randomSubject(r *rand.Rand) (policy.Subject, policy.Observability) {
	coin := func() bool { return r.IntN(2) == 0 }
	digestOrNil := func() *policy.Digest {
		if r.IntN(4) == 0 {
			return nil
		}
		// Favour the digests policies favour, so that digest rules decide.
		pool := kernelDigests
		if r.IntN(2) == 0 {
			pool = pool[:2]
		}
		d := randomDigest(r, pool)
		return &d
	}
	subj := policy.Subject{
		HasFile:          r.IntN(5) != 0,
		BootVerified:     coin(),
		DMVerityRootHash: digestOrNil(),
		DMVeritySigned:   coin(),
		FSVerityDigest:   digestOrNil(),
		FSVeritySigned:   coin(),
	}
	obs := policy.AllObservable
	if r.IntN(3) == 0 {
		obs = policy.Observability{DMVerityRootHash: coin(), DMVeritySignature: coin(), FSVerityDigest: coin(), FSVeritySignature: coin()}
	}
	return subj, obs
}

// TestLookupEqualsEvaluate holds the compiled tables to IPE's linear walk:
// same action, same scope, same deciding rule. Each policy has its own
// stream, so a failure is reproduced from the seed and the policy number.
func TestLookupEqualsEvaluate(t *testing.T) {
	seed := *equivSeed
	policies, subjects := *equivPolicies, *equivSubjects
	if testing.Short() {
		policies /= 10
	}
	var decisions, byRule [3]int
	var byRow [NumRowKinds]int
	linkedRows := 0
	for n := range policies {
		r := rand.New(rand.NewPCG(seed, uint64(n)))
		p := randomPolicy(r)
		tables, err := Compile(p, uint32(n))
		if err != nil {
			t.Fatalf("seed %d policy %d: Compile: %v\n%s", seed, n, err, describe(p))
		}
		checkKeysZeroed(t, tables)
		for _, e := range tables.Rows {
			if e.Key.Link > 0 {
				linkedRows++
			}
		}
		for range subjects {
			subj, obs := randomSubject(r)
			op := policy.Op(r.IntN(policy.NumOps + 1))
			if len(p.Rules) > 0 && r.IntN(4) != 0 {
				op = p.Rules[r.IntN(len(p.Rules))].Op
			}
			want := policy.Evaluate(p, op, subj, obs)
			got := tables.Lookup(op, subj, obs)
			decisions[want.Scope]++
			if want.Scope == policy.ScopeRule {
				byRule[want.Action]++
				id, _, _, _ := compileRule(want.Rule)
				byRow[id.kind]++
			}
			if got.Action != want.Action || got.Scope != want.Scope ||
				(want.Scope == policy.ScopeRule && got.RuleIndex != uint32(want.Rule.Index)) {
				wantIndex := -1
				if want.Rule != nil {
					wantIndex = want.Rule.Index
				}
				t.Fatalf("seed %d policy %d: op %s subject %+v observability %+v:\nLookup %+v\nEvaluate action %s scope %d rule %d\npolicy:\n%s",
					seed, n, op, subj, obs, got, want.Action, want.Scope, wantIndex, describe(p))
			}
		}
	}
	// A generator that never reaches a branch proves nothing about it.
	t.Logf("decided by rule %d (deny %d, allow %d; rows %v), op default %d, global default %d",
		decisions[policy.ScopeRule], byRule[policy.Deny], byRule[policy.Allow], byRow, decisions[policy.ScopeOpDefault], decisions[policy.ScopeGlobalDefault])
	total := policies * subjects
	for scope, n := range decisions {
		if n < total/50 {
			t.Errorf("scope %d decided only %d of %d lookups; the generator needs rebalancing", scope, n, total)
		}
	}
	for kind := KindBase; kind < NumRowKinds; kind++ {
		if byRow[kind] < total/1000 {
			t.Errorf("rules of %s rows decided only %d of %d lookups; the generator needs rebalancing", kind, byRow[kind], total)
		}
	}
	if linkedRows < policies/10 {
		t.Errorf("only %d rows at a link above 0 in %d policies; the generator needs digests that fold alike", linkedRows, policies)
	}
	if byRule[policy.Deny] < total/50 || byRule[policy.Allow] < total/50 {
		t.Errorf("rules decided deny %d and allow %d times; the generator needs rebalancing", byRule[policy.Deny], byRule[policy.Allow])
	}
}
