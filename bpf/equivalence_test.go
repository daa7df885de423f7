package bpf_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// Digests the random policies and subjects draw from: few enough that
// rules and files often share one, with an algorithm-only difference and
// digests no kernel value can ever equal.
var (
	dvPool = []policy.Digest{
		{Alg: "sha256", Bytes: []byte{0xd1, 0x01}},
		// Three that fold alike (words 0 and 2 of the bytes go into the
		// same half): linked rows.
		{Alg: "sha256", Bytes: []byte{0xd1, 0x01, 0, 0, 0, 0, 0, 0, 0x00}},
		{Alg: "sha256", Bytes: []byte{0xd0, 0x01, 0, 0, 0, 0, 0, 0, 0x01}},
		{Alg: "sha256", Bytes: []byte{0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xd1}},
		{Alg: "sha256", Bytes: []byte{0xd2, 0x02}},
		{Alg: "sha512", Bytes: []byte{0xd1, 0x01}},
	}
	fvPool = []policy.Digest{
		{Alg: "sha256", Bytes: []byte{0xf1}},
		{Alg: "sha256", Bytes: []byte{0xf2, 0xf2, 0xf2}},
		{Alg: "sha512", Bytes: []byte{0xf1}},
	}
	// Only in policies: IPE accepts them, no file digest equals them.
	neverPool = []policy.Digest{
		{Alg: "an-algorithm-name-of-more-than-32-bytes", Bytes: []byte{0xd1, 0x01}},
		{Alg: "sha256", Bytes: make([]byte, 65)},
	}
)

func pick[T any](r *rand.Rand, from []T) T { return from[r.IntN(len(from))] }

func randomAction(r *rand.Rand) policy.Action { return policy.Action(r.IntN(2)) }

func randomProperty(r *rand.Rand) policy.Property {
	kind := policy.PropKind(r.IntN(5))
	prop := policy.Property{Kind: kind, Value: r.IntN(2) == 0}
	switch {
	case kind == policy.PropDMVerityRootHash && r.IntN(10) == 0, kind == policy.PropFSVerityDigest && r.IntN(10) == 0:
		prop.Digest = pick(r, neverPool)
	case kind == policy.PropDMVerityRootHash:
		prop.Digest = pick(r, dvPool)
	case kind == policy.PropFSVerityDigest:
		prop.Digest = pick(r, fvPool)
	}
	return prop
}

func randomPolicy(r *rand.Rand) *policy.Policy {
	p := &policy.Policy{Name: "random"}
	if r.IntN(4) != 0 {
		a := randomAction(r)
		p.GlobalDefault = &a
	}
	for _, op := range policy.Ops() {
		if p.GlobalDefault == nil || r.IntN(3) == 0 {
			a := randomAction(r)
			p.OpDefaults[op] = &a
		}
	}
	for i := range r.IntN(16) {
		rule := policy.Rule{Op: policy.Op(r.IntN(policy.NumOps)), Action: randomAction(r), Index: i, Line: i + 2}
		for range r.IntN(4) {
			rule.Props = append(rule.Props, randomProperty(r))
		}
		p.Rules = append(p.Rules, rule)
	}
	return p
}

func randomSubject(r *rand.Rand) policy.Subject {
	s := policy.Subject{
		HasFile:        r.IntN(5) != 0,
		BootVerified:   r.IntN(2) == 0,
		DMVeritySigned: r.IntN(2) == 0,
		FSVeritySigned: r.IntN(2) == 0,
	}
	if r.IntN(3) != 0 {
		d := pick(r, dvPool)
		s.DMVerityRootHash = &d
	}
	if r.IntN(3) != 0 {
		d := pick(r, fvPool)
		s.FSVerityDigest = &d
	}
	return s
}

// kernelSubject is what the LSM programs would observe of subj.
func kernelSubject(t *testing.T, subj policy.Subject) bpf.TestSubject {
	t.Helper()
	ks := bpf.TestSubject{HasFile: subj.HasFile, BootVerified: subj.BootVerified, DVSigned: subj.DMVeritySigned, FVSigned: subj.FSVeritySigned}
	for _, d := range []struct {
		in  *policy.Digest
		out **bpf.Digest
	}{{subj.DMVerityRootHash, &ks.DV}, {subj.FSVerityDigest, &ks.FV}} {
		if d.in == nil {
			continue
		}
		enc, ok := maps.DigestKey(*d.in)
		if !ok {
			t.Fatalf("subject digest %+v has no encoding", *d.in)
		}
		*d.out = &enc
	}
	return ks
}

// TestKernelDecisionMatchesTables holds the BPF decision (decide.h, run in
// the kernel) equal to the compiler's Go model of it, maps.Tables.Lookup,
// and to the reference evaluator, for random policies and files.
func TestKernelDecisionMatchesTables(t *testing.T) {
	h := bpf.NewDecideHarness(t, 0)
	r := rand.New(rand.NewPCG(1, 2))
	const policies, subjectsPerPolicy = 40, 150
	hooks := []uint8{bpf.HookBprmCheck, bpf.HookMmap, bpf.HookMprotect, bpf.HookKernelRead, bpf.HookKernelLoad}

	for pi := range policies {
		p := randomPolicy(r)
		generation := r.Uint32()
		tables, err := maps.Compile(p, generation)
		if err != nil {
			t.Fatalf("policy %d: compile: %v", pi, err)
		}
		rows := make(map[bpf.RowKey]bpf.Row, len(tables.Rows))
		for _, e := range tables.Rows {
			rows[e.Key] = e.Row
		}
		h.SetPolicy(rows)

		for si := range subjectsPerPolicy {
			subj := randomSubject(r)
			obs := policy.Observability{
				DMVerityRootHash: r.IntN(4) != 0, DMVeritySignature: r.IntN(4) != 0,
				FSVerityDigest: r.IntN(4) != 0, FSVeritySignature: r.IntN(4) != 0,
			}
			op := policy.Op(r.IntN(policy.NumOps + 1)) // OpInvalid too
			hook := pick(r, hooks)
			enforcing := uint32(r.IntN(2))
			// Without success auditing an allowed file decided by its
			// BASE row takes ipe_enforce's quick path.
			audit := uint32(r.IntN(2))
			h.SetSettings(bpf.Settings{Enforcing: enforcing, SuccessAudit: audit, UsableNeeds: maps.UsableNeeds(obs)})

			got := h.Run(uint8(op), hook, kernelSubject(t, subj))
			want := tables.Lookup(op, subj, obs)
			ref := policy.Evaluate(p, op, subj, obs)
			where := fmt.Sprintf("policy %d %+v, subject %d %+v, op %v, observability %+v", pi, p, si, subj, op, obs)

			if !got.Decided || got.Action != uint32(want.Action) || got.Scope != uint32(want.Scope) || got.Rule != want.RuleIndex || got.Generation != generation {
				t.Fatalf("%s:\nkernel %+v\ntables %+v (generation %d)", where, got, want, generation)
			}
			if ref.Action != want.Action || ref.Scope != want.Scope || (ref.Rule != nil && uint32(ref.Rule.Index) != want.RuleIndex) {
				t.Fatalf("%s:\nevaluator %+v\ntables %+v", where, ref, want)
			}
			wantRC := int32(0)
			if want.Action == policy.Deny && enforcing == 1 {
				wantRC = -13
			}
			if got.RC != wantRC {
				t.Fatalf("%s: rc %d, want %d", where, got.RC, wantRC)
			}
			e, ok := h.NextEvent()
			if audit == 0 && want.Action == policy.Allow {
				if ok {
					t.Fatalf("%s: event %+v of an allowed decision with success_audit off", where, e)
				}
				continue
			}
			if !ok {
				t.Fatalf("%s: no event with success_audit %d, action %v", where, audit, want.Action)
			}
			if e.Action != uint8(want.Action) || e.Scope != uint8(want.Scope) || e.Rule != want.RuleIndex || e.Op != uint8(op) || e.Hook != hook || e.Generation != generation || e.Enforcing != uint8(enforcing) {
				t.Fatalf("%s: event %+v, want %+v", where, e, want)
			}
			if extra, ok := h.NextEvent(); ok {
				t.Fatalf("%s: second event %+v", where, extra)
			}
		}
	}
}
