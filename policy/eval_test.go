package policy

import (
	"testing"
)

var (
	goodHash = Digest{Alg: "sha256", Bytes: []byte{0x01, 0x02}}
	badHash  = Digest{Alg: "sha256", Bytes: []byte{0xba, 0xad}}
)

type evalCase struct {
	name  string
	op    Op
	subj  Subject
	obs   Observability
	want  Action
	scope Scope
	line  int // for ScopeRule: the line of the rule that must decide
}

func runEval(t *testing.T, text string, cases []evalCase) {
	t.Helper()
	p := mustParse(t, text)
	for _, tc := range cases {
		d := Evaluate(p, tc.op, tc.subj, tc.obs)
		if d.Action != tc.want || d.Scope != tc.scope || d.Op != tc.op {
			t.Errorf("%s: got %v scope %d op %v, want %v scope %d op %v", tc.name, d.Action, d.Scope, d.Op, tc.want, tc.scope, tc.op)
			continue
		}
		switch {
		case tc.scope == ScopeRule && (d.Rule == nil || d.Rule.Line != tc.line):
			t.Errorf("%s: decided by rule %+v, want the rule on line %d", tc.name, d.Rule, tc.line)
		case tc.scope != ScopeRule && d.Rule != nil:
			t.Errorf("%s: a default decided but Rule = %+v", tc.name, d.Rule)
		}
	}
}

func TestEvaluateFirstMatchWins(t *testing.T) {
	runEval(t, hdr+"DEFAULT action=DENY\n"+
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n"+ // line 3
		"op=EXECUTE boot_verified=TRUE action=DENY\n"+ // line 4
		"op=EXECUTE action=DENY\n", // line 5
		[]evalCase{
			{name: "both match, first decides", op: OpExecute, subj: Subject{HasFile: true, BootVerified: true}, obs: AllObservable, want: Allow, scope: ScopeRule, line: 3},
			{name: "falls to the catch-all rule", op: OpExecute, subj: Subject{HasFile: true}, obs: AllObservable, want: Deny, scope: ScopeRule, line: 5},
			{name: "other op ignores EXECUTE rules", op: OpKmodule, subj: Subject{HasFile: true, BootVerified: true}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
		})
}

func TestEvaluateDenyBeforeAllowRevokes(t *testing.T) {
	runEval(t, hdr+"DEFAULT action=DENY\n"+
		"op=EXECUTE dmverity_roothash=sha256:baad action=DENY\n"+ // line 3
		"op=EXECUTE dmverity_signature=TRUE action=ALLOW\n", // line 4
		[]evalCase{
			{name: "revoked volume is denied though signed", op: OpExecute, subj: Subject{HasFile: true, DMVeritySigned: true, DMVerityRootHash: &badHash}, obs: AllObservable, want: Deny, scope: ScopeRule, line: 3},
			{name: "other signed volume is allowed", op: OpExecute, subj: Subject{HasFile: true, DMVeritySigned: true, DMVerityRootHash: &goodHash}, obs: AllObservable, want: Allow, scope: ScopeRule, line: 4},
			{name: "unsigned volume gets the default", op: OpExecute, subj: Subject{HasFile: true, DMVerityRootHash: &goodHash}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
		})
}

func TestEvaluateDigestMatching(t *testing.T) {
	runEval(t, hdr+"DEFAULT action=DENY\n"+
		"op=EXECUTE dmverity_roothash=sha256:0102 action=ALLOW\n"+ // line 3
		"op=EXECUTE fsverity_digest=sha512:0102 action=ALLOW\n", // line 4
		[]evalCase{
			{name: "same alg and bytes", op: OpExecute, subj: Subject{HasFile: true, DMVerityRootHash: &goodHash}, obs: AllObservable, want: Allow, scope: ScopeRule, line: 3},
			{name: "alg compared case-sensitively", op: OpExecute, subj: Subject{HasFile: true, DMVerityRootHash: &Digest{Alg: "SHA256", Bytes: goodHash.Bytes}}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
			{name: "longer digest with the same prefix", op: OpExecute, subj: Subject{HasFile: true, DMVerityRootHash: &Digest{Alg: "sha256", Bytes: []byte{1, 2, 3}}}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
			{name: "fs-verity digest is a different property", op: OpExecute, subj: Subject{HasFile: true, FSVerityDigest: &goodHash}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
			{name: "fs-verity digest with its own alg", op: OpExecute, subj: Subject{HasFile: true, FSVerityDigest: &Digest{Alg: "sha512", Bytes: []byte{1, 2}}}, obs: AllObservable, want: Allow, scope: ScopeRule, line: 4},
			{name: "no root hash known", op: OpExecute, subj: Subject{HasFile: true}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
		})
}

func TestEvaluateOpDefaultBeatsGlobal(t *testing.T) {
	runEval(t, hdr+"DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=KMODULE boot_verified=TRUE action=DENY\n",
		[]evalCase{
			{name: "EXECUTE takes its own default", op: OpExecute, subj: Subject{HasFile: true}, obs: AllObservable, want: Deny, scope: ScopeOpDefault},
			{name: "KMODULE has no default of its own", op: OpKmodule, subj: Subject{HasFile: true}, obs: AllObservable, want: Allow, scope: ScopeGlobalDefault},
			{name: "a KMODULE rule still comes first", op: OpKmodule, subj: Subject{HasFile: true, BootVerified: true}, obs: AllObservable, want: Deny, scope: ScopeRule, line: 4},
		})
}

func TestEvaluateNoFile(t *testing.T) {
	text := hdr + "DEFAULT action=DENY\n" +
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n" + // 3
		"op=EXECUTE dmverity_signature=TRUE action=ALLOW\n" + // 4
		"op=EXECUTE fsverity_signature=TRUE action=ALLOW\n" + // 5
		"op=EXECUTE dmverity_roothash=sha256:0102 action=ALLOW\n" + // 6
		"op=EXECUTE fsverity_digest=sha256:0102 action=ALLOW\n" + // 7
		"op=KMODULE boot_verified=FALSE action=ALLOW\n" + // 8
		"op=FIRMWARE dmverity_signature=FALSE action=ALLOW\n" + // 9
		"op=POLICY fsverity_signature=FALSE action=ALLOW\n" + // 10
		"op=X509_CERT action=ALLOW\n" // 11
	// Without a file the TRUE and digest forms are false even if the
	// other fields claim otherwise, and the FALSE forms are true.
	stale := Subject{HasFile: false, BootVerified: true, DMVeritySigned: true, FSVeritySigned: true, DMVerityRootHash: &goodHash, FSVerityDigest: &goodHash}
	runEval(t, text, []evalCase{
		{name: "TRUE and digest forms are false", op: OpExecute, subj: stale, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
		{name: "boot_verified=FALSE is true", op: OpKmodule, subj: stale, obs: AllObservable, want: Allow, scope: ScopeRule, line: 8},
		{name: "dmverity_signature=FALSE is true", op: OpFirmware, subj: stale, obs: AllObservable, want: Allow, scope: ScopeRule, line: 9},
		{name: "fsverity_signature=FALSE is true", op: OpPolicy, subj: stale, obs: AllObservable, want: Allow, scope: ScopeRule, line: 10},
		{name: "a rule without properties matches", op: OpX509Cert, subj: Subject{}, obs: AllObservable, want: Allow, scope: ScopeRule, line: 11},
	})
}

func TestEvaluateUnobservable(t *testing.T) {
	text := hdr + "DEFAULT action=DENY\n" +
		"op=EXECUTE dmverity_signature=TRUE action=ALLOW\n" + // 3
		"op=EXECUTE dmverity_signature=FALSE action=ALLOW\n" + // 4
		"op=KMODULE fsverity_signature=TRUE action=ALLOW\n" + // 5
		"op=KMODULE fsverity_signature=FALSE action=ALLOW\n" + // 6
		"op=FIRMWARE dmverity_roothash=sha256:0102 action=ALLOW\n" + // 7
		"op=POLICY fsverity_digest=sha256:0102 action=ALLOW\n" + // 8
		"op=X509_CERT boot_verified=TRUE action=ALLOW\n" // 9
	signed := Subject{HasFile: true, BootVerified: true, DMVeritySigned: true, FSVeritySigned: true, DMVerityRootHash: &goodHash, FSVerityDigest: &goodHash}
	unsigned := Subject{HasFile: true}
	nothing := Observability{}
	runEval(t, text, []evalCase{
		{name: "dmverity_signature TRUE form false when unobservable", op: OpExecute, subj: signed, obs: Observability{DMVerityRootHash: true, FSVerityDigest: true, FSVeritySignature: true}, want: Deny, scope: ScopeGlobalDefault},
		{name: "dmverity_signature FALSE form false when unobservable", op: OpExecute, subj: unsigned, obs: nothing, want: Deny, scope: ScopeGlobalDefault},
		{name: "dmverity_signature FALSE form false with no file", op: OpExecute, subj: Subject{}, obs: nothing, want: Deny, scope: ScopeGlobalDefault},
		{name: "fsverity_signature both forms false", op: OpKmodule, subj: unsigned, obs: Observability{DMVerityRootHash: true, DMVeritySignature: true, FSVerityDigest: true}, want: Deny, scope: ScopeGlobalDefault},
		{name: "fsverity_signature TRUE form false", op: OpKmodule, subj: signed, obs: nothing, want: Deny, scope: ScopeGlobalDefault},
		{name: "dmverity_roothash false when unobservable", op: OpFirmware, subj: signed, obs: Observability{DMVeritySignature: true, FSVerityDigest: true, FSVeritySignature: true}, want: Deny, scope: ScopeGlobalDefault},
		{name: "fsverity_digest false when unobservable", op: OpPolicy, subj: signed, obs: Observability{DMVerityRootHash: true, DMVeritySignature: true, FSVeritySignature: true}, want: Deny, scope: ScopeGlobalDefault},
		{name: "boot_verified is always observable", op: OpX509Cert, subj: signed, obs: nothing, want: Allow, scope: ScopeRule, line: 9},
		{name: "observable dmverity_signature matches", op: OpExecute, subj: signed, obs: AllObservable, want: Allow, scope: ScopeRule, line: 3},
		{name: "observable dmverity_signature=FALSE matches", op: OpExecute, subj: unsigned, obs: AllObservable, want: Allow, scope: ScopeRule, line: 4},
		{name: "observable fsverity_signature=FALSE matches", op: OpKmodule, subj: unsigned, obs: AllObservable, want: Allow, scope: ScopeRule, line: 6},
	})
}

func TestEvaluateInvalidOp(t *testing.T) {
	runEval(t, hdr+"DEFAULT action=DENY\nDEFAULT op=EXECUTE action=ALLOW\nop=EXECUTE action=ALLOW\n", []evalCase{
		{name: "unknown op takes the global default", op: OpInvalid, subj: Subject{HasFile: true}, obs: AllObservable, want: Deny, scope: ScopeGlobalDefault},
	})
	runEval(t, hdr+allOpDefaults("DENY"), []evalCase{
		{name: "unknown op without a global default is allowed", op: OpInvalid, subj: Subject{HasFile: true}, obs: AllObservable, want: Allow, scope: ScopeGlobalDefault},
		{name: "known op with only op defaults", op: OpKexecImage, subj: Subject{HasFile: true}, obs: AllObservable, want: Deny, scope: ScopeOpDefault},
	})
}
