package policy

import (
	"strings"
	"testing"
)

func TestVersionString(t *testing.T) {
	for v, want := range map[Version]string{{0, 0, 0}: "0.0.0", {1, 2, 3}: "1.2.3", {65535, 10, 7}: "65535.10.7"} {
		if got := v.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", v, got, want)
		}
	}
}

func TestRuleStringIsAuditForm(t *testing.T) {
	hash := hashBytes()
	tests := []struct {
		rule Rule
		want string
	}{
		{Rule{Op: OpExecute, Action: Allow}, "op=EXECUTE action=ALLOW"},
		{Rule{Op: OpX509Cert, Action: Deny}, "op=X509_CERT action=DENY"},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{boolProp(PropBootVerified, true)}},
			"op=EXECUTE boot_verified=TRUE action=ALLOW"},
		{Rule{Op: OpKmodule, Action: Deny, Props: []Property{
			boolProp(PropDMVeritySignature, false), boolProp(PropFSVeritySignature, true), boolProp(PropBootVerified, false),
		}}, "op=KMODULE dmverity_signature=FALSE fsverity_signature=TRUE boot_verified=FALSE action=DENY"},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{boolProp(PropBootVerified, true), digestProp(PropDMVerityRootHash, "sha256", hash...)}},
			`op=EXECUTE boot_verified=TRUE dmverity_roothash="sha256":00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF action=ALLOW`},
		{Rule{Op: OpFirmware, Action: Deny, Props: []Property{digestProp(PropFSVerityDigest, "sha512", 0xde, 0xad)}},
			`op=FIRMWARE fsverity_digest="sha512":DEAD action=DENY`},
		// audit_log_untrustedstring: '!' (0x21) and '~' (0x7e) are safe
		// and quoted; space, '"', DEL and bytes above 0x7e force hex.
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{digestProp(PropDMVerityRootHash, "!~", 1)}}, `op=EXECUTE dmverity_roothash="!~":01 action=ALLOW`},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{digestProp(PropDMVerityRootHash, "a b", 1)}}, `op=EXECUTE dmverity_roothash=612062:01 action=ALLOW`},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{digestProp(PropDMVerityRootHash, `a"`, 1)}}, `op=EXECUTE dmverity_roothash=6122:01 action=ALLOW`},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{digestProp(PropDMVerityRootHash, "a\x7f", 1)}}, `op=EXECUTE dmverity_roothash=617F:01 action=ALLOW`},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{digestProp(PropDMVerityRootHash, "\xff\v", 1)}}, `op=EXECUTE dmverity_roothash=FF0B:01 action=ALLOW`},
		{Rule{Op: OpExecute, Action: Allow, Props: []Property{digestProp(PropFSVerityDigest, "")}}, `op=EXECUTE fsverity_digest="": action=ALLOW`},
	}
	for _, tc := range tests {
		if got := tc.rule.String(); got != tc.want {
			t.Errorf("String() =\n  %s\nwant\n  %s", got, tc.want)
		}
	}
}

func TestDecisionRuleString(t *testing.T) {
	rule := &Rule{Op: OpExecute, Action: Deny, Props: []Property{boolProp(PropBootVerified, false)}}
	tests := []struct {
		d    Decision
		want string
	}{
		{Decision{Action: Deny, Scope: ScopeGlobalDefault, Op: OpExecute}, "DEFAULT action=DENY"},
		{Decision{Action: Allow, Scope: ScopeGlobalDefault, Op: OpInvalid}, "DEFAULT action=ALLOW"},
		{Decision{Action: Deny, Scope: ScopeOpDefault, Op: OpKexecInitramfs}, "DEFAULT op=KEXEC_INITRAMFS action=DENY"},
		{Decision{Action: Allow, Scope: ScopeOpDefault, Op: OpExecute}, "DEFAULT op=EXECUTE action=ALLOW"},
		{Decision{Action: Deny, Scope: ScopeRule, Op: OpExecute, Rule: rule}, "op=EXECUTE boot_verified=FALSE action=DENY"},
	}
	for _, tc := range tests {
		if got := tc.d.RuleString(); got != tc.want {
			t.Errorf("RuleString() = %q, want %q", got, tc.want)
		}
	}
}

func TestFormatCanonical(t *testing.T) {
	text := "  policy_name=demo   policy_version=+01.2.0003 # header\r\n" +
		"op=EXECUTE dmverity_roothash=SHA256:ABCDEF01 boot_verified=TRUE action=ALLOW\n" +
		"DEFAULT op=KMODULE action=DENY\n" +
		"op=KMODULE\tfsverity_digest=:  action=DENY\n" +
		"DEFAULT action=ALLOW\n" +
		"DEFAULT op=EXECUTE action=DENY\n" +
		"op=POLICY action=ALLOW\n"
	want := "policy_name=demo policy_version=1.2.3\n" +
		"DEFAULT action=ALLOW\n" +
		"DEFAULT op=EXECUTE action=DENY\n" +
		"DEFAULT op=KMODULE action=DENY\n" +
		"op=EXECUTE dmverity_roothash=SHA256:abcdef01 boot_verified=TRUE action=ALLOW\n" +
		"op=KMODULE fsverity_digest=: action=DENY\n" +
		"op=POLICY action=ALLOW\n"
	p, err := Parse("demo.pol", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(Format(p)); got != want {
		t.Errorf("Format =\n%s\nwant\n%s", got, want)
	}
}

func TestFormatRoundTrip(t *testing.T) {
	var texts []string
	for _, tc := range parseCases {
		if tc.errno == 0 {
			texts = append(texts, tc.text)
		}
	}
	for _, tc := range kunitCases {
		if tc.errno == 0 {
			texts = append(texts, tc.text)
		}
	}
	if len(texts) < 50 {
		t.Fatalf("only %d valid fixtures", len(texts))
	}
	for _, text := range texts {
		p, err := Parse("in.pol", []byte(text))
		if err != nil {
			t.Fatalf("Parse(%q): %v", text, err)
		}
		formatted := Format(p)
		q, err := Parse("formatted.pol", formatted)
		if err != nil {
			t.Errorf("Format output does not parse: %v\n%s", err, formatted)
			continue
		}
		if !p.Equal(q) {
			t.Errorf("round trip changed the policy:\n%q\n->\n%s", text, formatted)
		}
		if again := Format(q); string(again) != string(formatted) {
			t.Errorf("Format is not a fixed point:\n%s\n->\n%s", formatted, again)
		}
	}
}

func TestPolicyEqual(t *testing.T) {
	base := hdr + allowAll + "DEFAULT op=EXECUTE action=DENY\nop=EXECUTE dmverity_roothash=sha256:0102 boot_verified=TRUE action=ALLOW\n"
	p := mustParse(t, base)
	if !p.Equal(mustParse(t, "\n\n# moved down\n"+base)) {
		t.Error("policies differing only in rule lines are not Equal")
	}
	for _, other := range []string{
		strings.Replace(base, "policy_name=p", "policy_name=q", 1),
		strings.Replace(base, "0.0.0", "0.0.1", 1),
		strings.Replace(base, "DEFAULT action=ALLOW", "DEFAULT action=DENY", 1),
		strings.Replace(base, "DEFAULT op=EXECUTE action=DENY\n", "", 1),
		strings.Replace(base, "op=EXECUTE action=DENY", "op=KMODULE action=DENY", 1),
		strings.Replace(base, "sha256:0102", "sha256:0103", 1),
		strings.Replace(base, "sha256:0102", "sha512:0102", 1),
		strings.Replace(base, "sha256:0102", "sha256:010200", 1),
		strings.Replace(base, "boot_verified=TRUE", "boot_verified=FALSE", 1),
		strings.Replace(base, " boot_verified=TRUE", "", 1),
		strings.Replace(base, "boot_verified=TRUE action=ALLOW", "boot_verified=TRUE action=DENY", 1),
		strings.Replace(base, "op=EXECUTE dmverity", "op=FIRMWARE dmverity", 1),
		base + "op=EXECUTE action=ALLOW\n",
	} {
		if p.Equal(mustParse(t, other)) {
			t.Errorf("Equal ignores the difference in\n%s", other)
		}
	}
	var nilPolicy *Policy
	if p.Equal(nil) || !nilPolicy.Equal(nil) {
		t.Error("Equal mishandles nil")
	}
}

func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse("test.pol", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, text)
	}
	return p
}
