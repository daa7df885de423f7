package policy

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"
)

const (
	hdr      = "policy_name=p policy_version=0.0.0\n"
	allowAll = "DEFAULT action=ALLOW\n"
	// hash64 is a made-up sha256-length digest.
	hash64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
)

// parseCase is one grammar point. A rejection names where the error must
// point: line, 1-based column and token (line 0 for whole-policy errors).
type parseCase struct {
	name  string
	text  string
	errno syscall.Errno // 0: the policy is valid
	line  int
	col   int
	token string
	check func(t *testing.T, p *Policy)
}

func rejectAt(name, text string, errno syscall.Errno, line, col int, token string) parseCase {
	return parseCase{name: name, text: text, errno: errno, line: line, col: col, token: token}
}

func accept(name, text string, check func(t *testing.T, p *Policy)) parseCase {
	return parseCase{name: name, text: text, check: check}
}

func wantName(name string) func(*testing.T, *Policy) {
	return func(t *testing.T, p *Policy) {
		if p.Name != name {
			t.Errorf("Name = %q, want %q", p.Name, name)
		}
	}
}

func wantVersion(v Version) func(*testing.T, *Policy) {
	return func(t *testing.T, p *Policy) {
		if p.Version != v {
			t.Errorf("Version = %+v, want %+v", p.Version, v)
		}
	}
}

func wantRules(n int) func(*testing.T, *Policy) {
	return func(t *testing.T, p *Policy) {
		if len(p.Rules) != n {
			t.Errorf("got %d rules, want %d", len(p.Rules), n)
		}
	}
}

// wantProps checks the properties of the only rule.
func wantProps(props ...Property) func(*testing.T, *Policy) {
	return func(t *testing.T, p *Policy) {
		if len(p.Rules) != 1 {
			t.Fatalf("got %d rules, want 1", len(p.Rules))
		}
		got := p.Rules[0].Props
		if len(got) != len(props) {
			t.Fatalf("got %d properties %+v, want %+v", len(got), got, props)
		}
		for i := range props {
			g, w := got[i], props[i]
			if g.Kind != w.Kind || g.Value != w.Value || g.Digest.Alg != w.Digest.Alg || !bytes.Equal(g.Digest.Bytes, w.Digest.Bytes) {
				t.Errorf("property %d = %+v, want %+v", i, g, w)
			}
		}
	}
}

func digestProp(kind PropKind, alg string, b ...byte) Property {
	return Property{Kind: kind, Digest: Digest{Alg: alg, Bytes: b}}
}

func boolProp(kind PropKind, v bool) Property { return Property{Kind: kind, Value: v} }

func hashBytes() []byte {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(i%16)<<4 | byte(i%16)
	}
	return b
}

var parseCases = []parseCase{
	// Input: length, NUL truncation, bytes >= 0x80.
	rejectAt("empty text", "", syscall.EBADMSG, 0, 0, ""),
	rejectAt("only a NUL", "\x00", syscall.EBADMSG, 0, 0, ""),
	accept("NUL hides garbage after it", hdr+allowAll+"\x00op=NOPE garbage", wantRules(0)),
	accept("NUL hides a rule after it", hdr+allowAll+"\x00op=EXECUTE action=DENY\n", wantRules(0)),
	rejectAt("NUL inside the header cuts the version", "policy_name=a\x00 policy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 14, ""),
	rejectAt("NUL before the only DEFAULT", hdr+"\x00"+allowAll, syscall.EBADMSG, 1, 0, ""),
	accept("bytes above 0x7f in the name", "policy_name=n\xff\xef\x80 policy_version=0.0.0\n"+allowAll, wantName("n\xff\xef\x80")),

	// Lines: \n and \r end lines; '#' cuts anywhere; trailing kernel
	// isspace is stripped; only space and TAB separate tokens.
	accept("CR alone ends lines", "policy_name=p policy_version=0.0.0\rDEFAULT action=ALLOW\rop=EXECUTE action=DENY", wantRules(1)),
	accept("CRLF line ends", "policy_name=p policy_version=0.0.0\r\nDEFAULT action=ALLOW\r\n", nil),
	accept("no final newline", hdr+"DEFAULT action=ALLOW", nil),
	accept("blank and whitespace-only lines", "\n \t \n"+hdr+"\n\v\f\xa0\n"+allowAll+"\n\n", nil),
	accept("leading whitespace", " \t policy_name=p policy_version=0.0.0\n\t  DEFAULT action=ALLOW\n", nil),
	accept("runs of spaces and TABs between tokens", "policy_name=p \t  policy_version=0.0.0\nDEFAULT\t\t \taction=ALLOW\nop=EXECUTE   \tboot_verified=TRUE\t action=DENY\n", wantRules(1)),
	accept("trailing space TAB VT FF", hdr+"DEFAULT action=ALLOW \t\v\f\n", nil),
	accept("trailing 0xA0 is kernel whitespace", hdr+"DEFAULT action=ALLOW\xa0\xa0\n", nil),
	accept("trailing whitespace after the version", "policy_name=p policy_version=1.2.3\v\xa0 \n"+allowAll, wantVersion(Version{1, 2, 3})),
	rejectAt("VT does not separate tokens", hdr+"DEFAULT\vaction=ALLOW\n", syscall.EBADMSG, 2, 1, "DEFAULT\vaction=ALLOW"),
	rejectAt("FF does not separate tokens", hdr+"DEFAULT\faction=ALLOW\n", syscall.EBADMSG, 2, 1, "DEFAULT\faction=ALLOW"),
	rejectAt("0xA0 does not separate tokens", hdr+"DEFAULT\xa0action=ALLOW\n", syscall.EBADMSG, 2, 1, "DEFAULT\xa0action=ALLOW"),
	accept("0xA0 and VT inside a name", "policy_name=a\xa0b\vc policy_version=0.0.0\n"+allowAll, wantName("a\xa0b\vc")),
	accept("comment lines and trailing comments", "# leading comment\n"+hdr+"   # indented comment\n"+"DEFAULT action=ALLOW # trailing\n", nil),
	accept("comment right after a token", hdr+"DEFAULT action=ALLOW#no space\n", nil),
	rejectAt("comment cuts the header short", "policy_name=a#b policy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 14, ""),
	rejectAt("comment cuts the action off", hdr+allowAll+"op=EXECUTE boot_verified=TRUE #action=ALLOW\n", syscall.EBADMSG, 3, 12, "boot_verified=TRUE"),
	rejectAt("comment inside a digest cuts the action off", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:ab#cd action=ALLOW\n", syscall.EBADMSG, 3, 12, "dmverity_roothash=sha256:ab"),
	rejectAt("only comments", "# nothing\n   # here\n", syscall.EBADMSG, 0, 0, ""),
	rejectAt("only whitespace", " \n\t\r\v\f\xa0\n", syscall.EBADMSG, 0, 0, ""),
	rejectAt("columns count from the line start after CR", "policy_name=p policy_version=0.0.0\r"+allowAll+"  op=NOPE action=ALLOW", syscall.EBADMSG, 3, 3, "op=NOPE"),
	rejectAt("CRLF counts two line ends", "policy_name=p policy_version=0.0.0\r\nDEFAULT action=ALLOW\r\nop=NOPE action=ALLOW\r\n", syscall.EBADMSG, 5, 1, "op=NOPE"),

	// Header: exactly policy_name=NAME then policy_version=VER.
	accept("header", "policy_name=Test_Policy policy_version=0.1.2\n"+allowAll, func(t *testing.T, p *Policy) {
		wantName("Test_Policy")(t, p)
		wantVersion(Version{0, 1, 2})(t, p)
	}),
	accept("name with '=' and '%'", "policy_name=a=b%s policy_version=0.0.0\n"+allowAll, wantName("a=b%s")),
	accept("name of punctuation", "policy_name=)(*&^%$@!+-';:><.,\\][`~ policy_version=0.0.0\n"+allowAll, wantName(")(*&^%$@!+-';:><.,\\][`~")),
	rejectAt("tokens swapped", "policy_version=0.0.0 policy_name=p\n"+allowAll, syscall.EBADMSG, 1, 1, "policy_version=0.0.0"),
	rejectAt("version missing", "policy_name=p\n"+allowAll, syscall.EBADMSG, 1, 14, ""),
	rejectAt("name missing", "policy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 1, "policy_version=0.0.0"),
	rejectAt("third header token", "policy_name=p policy_version=0.0.0 extra=1\n"+allowAll, syscall.EBADMSG, 1, 36, "extra=1"),
	rejectAt("name repeated as third token", "policy_name=p policy_version=0.0.0 policy_name=q\n"+allowAll, syscall.EBADMSG, 1, 36, "policy_name=q"),
	rejectAt("empty name", "policy_name= policy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 1, "policy_name="),
	rejectAt("empty version is EBADMSG not EINVAL", "policy_name=p policy_version=\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version="),
	rejectAt("misspelt version key", "policy_name=p policy_versio=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_versio=0.0.0"),
	rejectAt("name twice", "policy_name=p policy_name=q\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_name=q"),
	rejectAt("keys are case-sensitive", "POLICY_NAME=p policy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 1, "POLICY_NAME=p"),
	rejectAt("no space between header tokens", "policy_name=ppolicy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 34, ""),
	rejectAt("VT between header tokens", "policy_name=p\vpolicy_version=0.0.0\n"+allowAll, syscall.EBADMSG, 1, 35, ""),
	rejectAt("DEFAULT before the header", allowAll+hdr, syscall.EBADMSG, 1, 1, "DEFAULT"),
	rejectAt("header twice", hdr+hdr+allowAll, syscall.EBADMSG, 2, 1, "policy_name=p"),

	// Version parts: kstrtou16, checked left to right.
	accept("version 1.2.3", "policy_name=p policy_version=1.2.3\n"+allowAll, wantVersion(Version{1, 2, 3})),
	accept("version with '+' signs", "policy_name=p policy_version=+1.+2.+3\n"+allowAll, wantVersion(Version{1, 2, 3})),
	accept("version with leading zeros", "policy_name=p policy_version=007.0010.00065535\n"+allowAll, wantVersion(Version{7, 10, 65535})),
	accept("version maximum", "policy_name=p policy_version=65535.65535.65535\n"+allowAll, wantVersion(Version{65535, 65535, 65535})),
	rejectAt("version part 65536", "policy_name=p policy_version=65536.0.0\n"+allowAll, syscall.ERANGE, 1, 15, "policy_version=65536.0.0"),
	rejectAt("version third part 65536", "policy_name=p policy_version=0.0.65536\n"+allowAll, syscall.ERANGE, 1, 15, "policy_version=0.0.65536"),
	rejectAt("version part 999999", "policy_name=p policy_version=999999.0.0\n"+allowAll, syscall.ERANGE, 1, 15, "policy_version=999999.0.0"),
	rejectAt("version part overflows 64 bits", "policy_name=p policy_version=99999999999999999999.0.0\n"+allowAll, syscall.ERANGE, 1, 15, "policy_version=99999999999999999999.0.0"),
	rejectAt("64-bit overflow beats trailing junk", "policy_name=p policy_version=99999999999999999999x.0.0\n"+allowAll, syscall.ERANGE, 1, 15, "policy_version=99999999999999999999x.0.0"),
	rejectAt("trailing junk beats 16-bit range", "policy_name=p policy_version=70000x.0.0\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=70000x.0.0"),
	rejectAt("negative part", "policy_name=p policy_version=-1.0.0\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=-1.0.0"),
	rejectAt("hex letters", "policy_name=p policy_version=1a.0.0\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=1a.0.0"),
	rejectAt("0x prefix", "policy_name=p policy_version=0x1.0.0\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=0x1.0.0"),
	rejectAt("'+' alone", "policy_name=p policy_version=+.0.0\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=+.0.0"),
	rejectAt("two '+'", "policy_name=p policy_version=++1.0.0\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=++1.0.0"),
	rejectAt("one part", "policy_name=p policy_version=0\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version=0"),
	rejectAt("0. has an empty part", "policy_name=p policy_version=0.\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=0."),
	rejectAt("two parts", "policy_name=p policy_version=0.0\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version=0.0"),
	rejectAt("0.0. has an empty third part", "policy_name=p policy_version=0.0.\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=0.0."),
	rejectAt("empty middle part", "policy_name=p policy_version=1..3\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=1..3"),
	rejectAt("only a dot", "policy_name=p policy_version=.\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=."),
	rejectAt("four parts", "policy_name=p policy_version=1.2.3.4\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version=1.2.3.4"),
	rejectAt("empty fourth part", "policy_name=p policy_version=1.2.3.\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version=1.2.3."),
	rejectAt("fourth part checked before it is read", "policy_name=p policy_version=1.2.3.x\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version=1.2.3.x"),
	rejectAt("bad second part beats a fourth part", "policy_name=p policy_version=1.x.3.4\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=1.x.3.4"),
	rejectAt("out-of-range part beats a fourth part", "policy_name=p policy_version=70000.0.0.0\n"+allowAll, syscall.ERANGE, 1, 15, "policy_version=70000.0.0.0"),
	rejectAt("version error beats an extra token", "policy_name=p policy_version=-1 junk\n"+allowAll, syscall.EINVAL, 1, 15, "policy_version=-1"),
	rejectAt("four parts beat an extra token", "policy_name=p policy_version=1.2.3.4 junk\n"+allowAll, syscall.EBADMSG, 1, 15, "policy_version=1.2.3.4"),

	// DEFAULT lines.
	accept("global DEFAULT DENY", hdr+"DEFAULT action=DENY\n", func(t *testing.T, p *Policy) {
		if p.GlobalDefault == nil || *p.GlobalDefault != Deny {
			t.Errorf("GlobalDefault = %v, want DENY", p.GlobalDefault)
		}
	}),
	accept("all seven op DEFAULTs and no global", hdr+allOpDefaults("DENY"), func(t *testing.T, p *Policy) {
		if p.GlobalDefault != nil {
			t.Errorf("GlobalDefault = %v, want none", *p.GlobalDefault)
		}
		for op, a := range p.OpDefaults {
			if a == nil || *a != Deny {
				t.Errorf("OpDefaults[%v] = %v, want DENY", Op(op), a)
			}
		}
	}),
	accept("op DEFAULT and global DEFAULT after the rules", hdr+"op=EXECUTE action=DENY\nDEFAULT op=KMODULE action=ALLOW\n"+allowAll, func(t *testing.T, p *Policy) {
		if a := p.OpDefaults[OpKmodule]; a == nil || *a != Allow {
			t.Errorf("OpDefaults[KMODULE] = %v, want ALLOW", a)
		}
		if p.OpDefaults[OpExecute] != nil {
			t.Errorf("OpDefaults[EXECUTE] set, want unset")
		}
		wantRules(1)(t, p)
	}),
	accept("DEFAULTs of different ops", hdr+allowAll+"DEFAULT op=EXECUTE action=DENY\nDEFAULT op=FIRMWARE action=DENY\n", nil),
	rejectAt("six op DEFAULTs and no global", hdr+strings.Replace(allOpDefaults("DENY"), "DEFAULT op=X509_CERT action=DENY\n", "", 1), syscall.EBADMSG, 1, 0, ""),
	rejectAt("no DEFAULT at all", hdr+"op=EXECUTE action=ALLOW\n", syscall.EBADMSG, 1, 0, ""),
	rejectAt("header only", hdr, syscall.EBADMSG, 1, 0, ""),
	rejectAt("missing DEFAULT reported at the header line", "\n\n"+hdr+"op=EXECUTE action=ALLOW\n", syscall.EBADMSG, 3, 0, ""),
	rejectAt("duplicate global DEFAULT", hdr+allowAll+"  DEFAULT action=DENY\n", syscall.EBADMSG, 3, 3, "DEFAULT"),
	rejectAt("duplicate op DEFAULT", hdr+allowAll+"DEFAULT op=EXECUTE action=DENY\nDEFAULT op=EXECUTE action=DENY\n", syscall.EBADMSG, 4, 9, "op=EXECUTE"),
	rejectAt("DEFAULT with a property", hdr+"DEFAULT op=EXECUTE boot_verified=TRUE action=DENY\n"+allowAll, syscall.EBADMSG, 2, 20, "boot_verified=TRUE"),
	rejectAt("DEFAULT with a property and no op", hdr+allowAll+"DEFAULT dmverity_signature=TRUE action=DENY\n", syscall.EBADMSG, 3, 9, "dmverity_signature=TRUE"),
	rejectAt("bad digest on a DEFAULT line is EINVAL", hdr+allowAll+"DEFAULT op=EXECUTE dmverity_roothash=sha256:zz action=DENY\n", syscall.EINVAL, 3, 20, "dmverity_roothash=sha256:zz"),
	rejectAt("DEFAULT only as the first token", hdr+allowAll+"op=EXECUTE DEFAULT action=ALLOW\n", syscall.EBADMSG, 3, 12, "DEFAULT"),
	rejectAt("DEFAULT twice", hdr+"DEFAULT DEFAULT action=ALLOW\n", syscall.EBADMSG, 2, 9, "DEFAULT"),
	rejectAt("DEFAULT alone", hdr+allowAll+"DEFAULT\n", syscall.EBADMSG, 3, 1, "DEFAULT"),
	rejectAt("DEFAULT is case-sensitive", hdr+"default action=ALLOW\n", syscall.EBADMSG, 2, 1, "default"),
	rejectAt("DEFAULT with an unknown op", hdr+"DEFAULT op=MAGIC action=ALLOW\n", syscall.EBADMSG, 2, 9, "op=MAGIC"),

	// Operations: op= is mandatory, second after DEFAULT or first otherwise.
	accept("EXECUTE", hdr+allowAll+"op=EXECUTE action=DENY\n", wantOp(OpExecute)),
	accept("FIRMWARE", hdr+allowAll+"op=FIRMWARE action=DENY\n", wantOp(OpFirmware)),
	accept("KMODULE", hdr+allowAll+"op=KMODULE action=DENY\n", wantOp(OpKmodule)),
	accept("KEXEC_IMAGE", hdr+allowAll+"op=KEXEC_IMAGE action=DENY\n", wantOp(OpKexecImage)),
	accept("KEXEC_INITRAMFS", hdr+allowAll+"op=KEXEC_INITRAMFS action=DENY\n", wantOp(OpKexecInitramfs)),
	accept("POLICY", hdr+allowAll+"op=POLICY action=DENY\n", wantOp(OpPolicy)),
	accept("X509_CERT", hdr+allowAll+"op=X509_CERT action=DENY\n", wantOp(OpX509Cert)),
	rejectAt("op is case-sensitive", hdr+allowAll+"op=execute action=DENY\n", syscall.EBADMSG, 3, 1, "op=execute"),
	rejectAt("op with a suffix", hdr+allowAll+"op=EXECUTEX action=DENY\n", syscall.EBADMSG, 3, 1, "op=EXECUTEX"),
	rejectAt("op with a trailing '='", hdr+allowAll+"op=EXECUTE= action=DENY\n", syscall.EBADMSG, 3, 1, "op=EXECUTE="),
	rejectAt("op prefix", hdr+allowAll+"op=EXEC action=DENY\n", syscall.EBADMSG, 3, 1, "op=EXEC"),
	rejectAt("op empty", hdr+allowAll+"op= action=DENY\n", syscall.EBADMSG, 3, 1, "op="),
	rejectAt("op UNKNOWN cannot be written", hdr+allowAll+"op=UNKNOWN action=DENY\n", syscall.EBADMSG, 3, 1, "op=UNKNOWN"),
	rejectAt("rule without op", hdr+allowAll+"boot_verified=TRUE action=DENY\n", syscall.EBADMSG, 3, 1, "boot_verified=TRUE"),
	rejectAt("action alone", hdr+allowAll+"action=DENY\n", syscall.EBADMSG, 3, 1, "action=DENY"),
	rejectAt("property before op", hdr+allowAll+"dmverity_signature=TRUE op=EXECUTE action=ALLOW\n", syscall.EBADMSG, 3, 1, "dmverity_signature=TRUE"),
	rejectAt("two ops", hdr+allowAll+"op=EXECUTE op=KMODULE action=ALLOW\n", syscall.EBADMSG, 3, 12, "op=KMODULE"),
	rejectAt("unknown statement", hdr+allowAll+"UNKNOWN value=true\n", syscall.EBADMSG, 3, 1, "UNKNOWN"),

	// Actions: the last token, exactly action=ALLOW or action=DENY.
	rejectAt("action PERMIT", hdr+allowAll+"op=EXECUTE action=PERMIT\n", syscall.EBADMSG, 3, 12, "action=PERMIT"),
	rejectAt("action is case-sensitive", hdr+allowAll+"op=EXECUTE action=allow\n", syscall.EBADMSG, 3, 12, "action=allow"),
	rejectAt("action empty", hdr+allowAll+"op=EXECUTE action=\n", syscall.EBADMSG, 3, 12, "action="),
	rejectAt("action without '='", hdr+allowAll+"op=EXECUTE action\n", syscall.EBADMSG, 3, 12, "action"),
	rejectAt("action missing", hdr+allowAll+"op=EXECUTE boot_verified=TRUE\n", syscall.EBADMSG, 3, 12, "boot_verified=TRUE"),
	rejectAt("op only", hdr+allowAll+"op=EXECUTE\n", syscall.EBADMSG, 3, 1, "op=EXECUTE"),
	rejectAt("action first", hdr+allowAll+"action=ALLOW op=EXECUTE dmverity_signature=TRUE\n", syscall.EBADMSG, 3, 1, "action=ALLOW"),
	rejectAt("two actions", hdr+allowAll+"op=EXECUTE action=ALLOW action=DENY\n", syscall.EBADMSG, 3, 12, "action=ALLOW"),
	rejectAt("action before a property", hdr+allowAll+"op=EXECUTE action=ALLOW boot_verified=TRUE\n", syscall.EBADMSG, 3, 12, "action=ALLOW"),

	// Boolean properties.
	accept("boot_verified TRUE", hdr+allowAll+"op=EXECUTE boot_verified=TRUE action=ALLOW\n", wantProps(boolProp(PropBootVerified, true))),
	accept("boot_verified FALSE", hdr+allowAll+"op=EXECUTE boot_verified=FALSE action=ALLOW\n", wantProps(boolProp(PropBootVerified, false))),
	accept("dmverity_signature TRUE", hdr+allowAll+"op=EXECUTE dmverity_signature=TRUE action=ALLOW\n", wantProps(boolProp(PropDMVeritySignature, true))),
	accept("dmverity_signature FALSE", hdr+allowAll+"op=EXECUTE dmverity_signature=FALSE action=ALLOW\n", wantProps(boolProp(PropDMVeritySignature, false))),
	accept("fsverity_signature TRUE", hdr+allowAll+"op=EXECUTE fsverity_signature=TRUE action=ALLOW\n", wantProps(boolProp(PropFSVeritySignature, true))),
	accept("fsverity_signature FALSE", hdr+allowAll+"op=EXECUTE fsverity_signature=FALSE action=ALLOW\n", wantProps(boolProp(PropFSVeritySignature, false))),
	accept("repeated property", hdr+allowAll+"op=EXECUTE boot_verified=TRUE boot_verified=TRUE action=ALLOW\n",
		wantProps(boolProp(PropBootVerified, true), boolProp(PropBootVerified, true))),
	accept("contradictory properties", hdr+allowAll+"op=KMODULE dmverity_signature=TRUE dmverity_signature=FALSE action=ALLOW\n",
		wantProps(boolProp(PropDMVeritySignature, true), boolProp(PropDMVeritySignature, false))),
	accept("properties keep file order", hdr+allowAll+"op=EXECUTE fsverity_signature=FALSE boot_verified=TRUE fsverity_digest=sha512:01 dmverity_signature=TRUE action=DENY\n",
		wantProps(boolProp(PropFSVeritySignature, false), boolProp(PropBootVerified, true), digestProp(PropFSVerityDigest, "sha512", 1), boolProp(PropDMVeritySignature, true))),
	rejectAt("boolean in lower case", hdr+allowAll+"op=EXECUTE boot_verified=true action=ALLOW\n", syscall.EBADMSG, 3, 12, "boot_verified=true"),
	rejectAt("boolean abc", hdr+allowAll+"op=EXECUTE dmverity_signature=abc action=ALLOW\n", syscall.EBADMSG, 3, 12, "dmverity_signature=abc"),
	rejectAt("boolean empty", hdr+allowAll+"op=EXECUTE fsverity_signature= action=ALLOW\n", syscall.EBADMSG, 3, 12, "fsverity_signature="),
	rejectAt("boolean with suffix", hdr+allowAll+"op=EXECUTE boot_verified=TRUEX action=ALLOW\n", syscall.EBADMSG, 3, 12, "boot_verified=TRUEX"),
	rejectAt("property without value", hdr+allowAll+"op=EXECUTE boot_verified action=ALLOW\n", syscall.EBADMSG, 3, 12, "boot_verified"),
	rejectAt("unknown property", hdr+allowAll+"op=EXECUTE magic_property=TRUE action=ALLOW\n", syscall.EBADMSG, 3, 12, "magic_property=TRUE"),
	rejectAt("property name is case-sensitive", hdr+allowAll+"op=EXECUTE Boot_Verified=TRUE action=ALLOW\n", syscall.EBADMSG, 3, 12, "Boot_Verified=TRUE"),

	// Digests: ALG:HEX split at the first ':'.
	accept("dmverity_roothash sha256", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:"+hash64+" action=ALLOW\n",
		wantProps(digestProp(PropDMVerityRootHash, "sha256", hashBytes()...))),
	accept("fsverity_digest upper-case hex", hdr+allowAll+"op=EXECUTE fsverity_digest=sha256:"+strings.ToUpper(hash64)+" action=ALLOW\n",
		wantProps(digestProp(PropFSVerityDigest, "sha256", hashBytes()...))),
	accept("mixed-case hex", hdr+allowAll+"op=EXECUTE fsverity_digest=sha256:aBcD action=ALLOW\n", wantProps(digestProp(PropFSVerityDigest, "sha256", 0xab, 0xcd))),
	accept("empty algorithm", hdr+allowAll+"op=EXECUTE dmverity_roothash=:abcd action=ALLOW\n", wantProps(digestProp(PropDMVerityRootHash, "", 0xab, 0xcd))),
	accept("empty hex", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256: action=ALLOW\n", wantProps(digestProp(PropDMVerityRootHash, "sha256"))),
	accept("colon alone", hdr+allowAll+"op=EXECUTE fsverity_digest=: action=ALLOW\n", wantProps(digestProp(PropFSVerityDigest, ""))),
	accept("algorithm is free text", hdr+allowAll+"op=EXECUTE dmverity_roothash=Sha-256_\"x\v\xff=:00 action=ALLOW\n",
		wantProps(digestProp(PropDMVerityRootHash, "Sha-256_\"x\v\xff=", 0))),
	accept("unknown algorithm", hdr+allowAll+"op=EXECUTE dmverity_roothash=md4:00ff action=ALLOW\n", wantProps(digestProp(PropDMVerityRootHash, "md4", 0, 0xff))),
	rejectAt("digest without ':'", hdr+allowAll+"op=EXECUTE dmverity_roothash=GOOD_DOG action=ALLOW\n", syscall.EBADMSG, 3, 12, "dmverity_roothash=GOOD_DOG"),
	rejectAt("old-style bare hex digest", hdr+allowAll+"op=EXECUTE fsverity_digest="+hash64+" action=ALLOW\n", syscall.EBADMSG, 3, 12, "fsverity_digest="+hash64),
	rejectAt("odd hex length", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:abc action=ALLOW\n", syscall.EINVAL, 3, 12, "dmverity_roothash=sha256:abc"),
	rejectAt("one hex digit", hdr+allowAll+"op=EXECUTE fsverity_digest=sha256:a action=ALLOW\n", syscall.EINVAL, 3, 12, "fsverity_digest=sha256:a"),
	rejectAt("non-hex digit", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:zz action=ALLOW\n", syscall.EINVAL, 3, 12, "dmverity_roothash=sha256:zz"),
	rejectAt("second ':' is not hex", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:ab:cd action=ALLOW\n", syscall.EINVAL, 3, 12, "dmverity_roothash=sha256:ab:cd"),
	rejectAt("0x in hex", hdr+allowAll+"op=EXECUTE fsverity_digest=sha256:0x12 action=ALLOW\n", syscall.EINVAL, 3, 12, "fsverity_digest=sha256:0x12"),
	rejectAt("placeholder hex", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:ROOTHASH action=ALLOW\n", syscall.EINVAL, 3, 12, "dmverity_roothash=sha256:ROOTHASH"),
	rejectAt("empty dmverity_roothash", hdr+allowAll+"op=EXECUTE dmverity_roothash= action=ALLOW\n", syscall.EBADMSG, 3, 12, "dmverity_roothash="),
	rejectAt("empty fsverity_digest", hdr+allowAll+"op=EXECUTE fsverity_digest= action=ALLOW\n", syscall.EBADMSG, 3, 12, "fsverity_digest="),
	rejectAt("bad digest as the last token is an action error", hdr+allowAll+"op=EXECUTE fsverity_digest=sha256:zz\n", syscall.EBADMSG, 3, 12, "fsverity_digest=sha256:zz"),
	rejectAt("bad digest beats a bad action", hdr+allowAll+"op=EXECUTE fsverity_digest=sha256:zz action=NOPE\n", syscall.EINVAL, 3, 12, "fsverity_digest=sha256:zz"),
	rejectAt("bad op beats a bad digest", hdr+allowAll+"op=NOPE fsverity_digest=sha256:zz action=ALLOW\n", syscall.EBADMSG, 3, 1, "op=NOPE"),

	// The first error in file order decides.
	rejectAt("earlier line wins", hdr+allowAll+"op=EXECUTE dmverity_roothash=sha256:abc action=ALLOW\nop=EXECUTE action=NOPE\n", syscall.EINVAL, 3, 12, "dmverity_roothash=sha256:abc"),
	rejectAt("line error beats a missing DEFAULT", hdr+"op=EXECUTE action=NOPE\n", syscall.EBADMSG, 2, 12, "action=NOPE"),
}

func allOpDefaults(action string) string {
	var b strings.Builder
	for _, op := range Ops() {
		b.WriteString("DEFAULT op=" + op.String() + " action=" + action + "\n")
	}
	return b.String()
}

func wantOp(op Op) func(*testing.T, *Policy) {
	return func(t *testing.T, p *Policy) {
		if len(p.Rules) != 1 || p.Rules[0].Op != op {
			t.Errorf("rules = %+v, want one rule for %v", p.Rules, op)
		}
	}
}

func TestParseGrammar(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("test.pol", []byte(tc.text))
			if tc.errno == 0 {
				if err != nil {
					t.Fatalf("Parse: %v, want success", err)
				}
				if tc.check != nil {
					tc.check(t, p)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted the policy, want %s", ErrnoName(tc.errno))
			}
			if p != nil {
				t.Errorf("Parse returned a policy with an error")
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if pe.Errno != tc.errno || pe.Line != tc.line || pe.Column != tc.col || pe.Token != tc.token {
				t.Errorf("got %s %d:%d token %q, want %s %d:%d token %q (%v)",
					ErrnoName(pe.Errno), pe.Line, pe.Column, pe.Token,
					ErrnoName(tc.errno), tc.line, tc.col, tc.token, err)
			}
			if !errors.Is(err, tc.errno) {
				t.Errorf("errors.Is(err, %s) = false", ErrnoName(tc.errno))
			}
			if pe.File != "test.pol" || pe.Message == "" {
				t.Errorf("File = %q, Message = %q; want test.pol and a message", pe.File, pe.Message)
			}
		})
	}
}

// TestParseGrammarAgreesWithKernelModel cross-checks every expectation in
// the table against the literal transliteration of the kernel parser.
func TestParseGrammarAgreesWithKernelModel(t *testing.T) {
	for _, tc := range parseCases {
		if got := kernelModel([]byte(tc.text)); got != tc.errno {
			t.Errorf("%s: kernel model gives %s, table says %s", tc.name, ErrnoName(got), ErrnoName(tc.errno))
		}
	}
}

func TestParseErrorString(t *testing.T) {
	tests := []struct {
		err  ParseError
		want string
	}{
		{ParseError{File: "policy.pol", Line: 3, Column: 21, Token: "action=PERMIT", Message: "action must be ALLOW or DENY", Errno: syscall.EBADMSG},
			`policy.pol:3:21: "action=PERMIT": action must be ALLOW or DENY [EBADMSG]`},
		{ParseError{File: "p.pol", Message: "policy is empty", Errno: syscall.EBADMSG}, `p.pol: policy is empty [EBADMSG]`},
		{ParseError{File: "p.pol", Line: 2, Message: "no default", Errno: syscall.EBADMSG}, `p.pol:2: no default [EBADMSG]`},
		{ParseError{File: "p.pol", Line: 1, Column: 14, Message: "header is missing policy_version", Errno: syscall.EBADMSG}, `p.pol:1:14: header is missing policy_version [EBADMSG]`},
		{ParseError{File: "v.pol", Line: 1, Column: 15, Token: "policy_version=1\xff", Message: "m", Errno: syscall.EINVAL}, `v.pol:1:15: "policy_version=1\xff": m [EINVAL]`},
		{ParseError{File: "v.pol", Line: 1, Column: 15, Token: "t", Message: "m", Errno: syscall.ERANGE}, `v.pol:1:15: "t": m [ERANGE]`},
		{ParseError{Token: "x", Message: "m", Errno: syscall.EINVAL}, `"x": m [EINVAL]`},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %s, want %s", got, tc.want)
		}
	}
}

func TestParseErrorMessagesExplain(t *testing.T) {
	tests := []struct {
		text, contains string
	}{
		{hdr + allowAll + "op=EXECUTE action=PERMIT\n", "action must be ALLOW or DENY"},
		{hdr + allowAll + "op=EXECUTE boot_verified=TRUE\n", "last token must be action=ALLOW or action=DENY"},
		{hdr + allowAll + "op=EXECUTEX action=DENY\n", "unknown operation"},
		{hdr + "op=EXECUTE action=DENY\n", "no DEFAULT for op=EXECUTE, op=FIRMWARE"},
		{hdr + allowAll + allowAll, "duplicate global DEFAULT; the first is on line 2"},
		{hdr + allowAll + "op=EXECUTE dmverity_roothash=sha256:abc action=ALLOW\n", "odd number of hex digits"},
		{hdr + allowAll + "op=EXECUTE dmverity_roothash=sha256:zz action=ALLOW\n", "not a hex digit"},
		{hdr + allowAll + "op=EXECUTE dmverity_roothash=sha256 action=ALLOW\n", "no ':'"},
		{"policy_name=p policy_version=1.70000.0\n", `version part "70000" is greater than 65535`},
		{"policy_name=p policy_version=1..0\n", `version part (empty) is not a decimal number`},
		{hdr + "DEFAULT op=EXECUTE boot_verified=TRUE action=DENY\n", "DEFAULT line cannot have properties"},
		{hdr + "DEFAULT boot_verified=TRUE action=DENY\n", "DEFAULT line cannot have properties"},
		{hdr + allowAll + "boot_verified=TRUE op=EXECUTE action=DENY\n", "op= must come before the properties"},
	}
	for _, tc := range tests {
		_, err := Parse("m.pol", []byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.text, err, tc.contains)
		}
	}
}

func TestParseRuleIndexAndLine(t *testing.T) {
	text := "# comment\r\n" + // lines 1, 2
		"policy_name=p policy_version=0.0.0\n" + // 3
		"op=KMODULE action=DENY\n" + // 4
		"DEFAULT action=ALLOW\r" + // 5
		"\n" + // 6
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n" + // 7
		"DEFAULT op=EXECUTE action=DENY\n" + // 8
		"op=KMODULE boot_verified=FALSE action=ALLOW" // 9
	p, err := Parse("lines.pol", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		op   Op
		line int
	}{{OpKmodule, 4}, {OpExecute, 7}, {OpKmodule, 9}}
	if len(p.Rules) != len(want) {
		t.Fatalf("got %d rules, want %d", len(p.Rules), len(want))
	}
	for i, w := range want {
		r := p.Rules[i]
		if r.Index != i || r.Op != w.op || r.Line != w.line {
			t.Errorf("rule %d: Index %d Op %v Line %d, want Index %d Op %v Line %d", i, r.Index, r.Op, r.Line, i, w.op, w.line)
		}
	}
}

// TestParseKeepsPropsIndependent guards the slab allocation: appending to
// one rule's properties must not change the next rule's.
func TestParseKeepsPropsIndependent(t *testing.T) {
	p, err := Parse("slab.pol", []byte(hdr+allowAll+
		"op=EXECUTE dmverity_roothash=sha256:0102 action=ALLOW\n"+
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n"))
	if err != nil {
		t.Fatal(err)
	}
	p.Rules[0].Props = append(p.Rules[0].Props, boolProp(PropFSVeritySignature, true))
	p.Rules[0].Props[0].Digest.Bytes = append(p.Rules[0].Props[0].Digest.Bytes, 0xff)
	if got := p.Rules[1].Props; len(got) != 1 || got[0].Kind != PropBootVerified || !got[0].Value {
		t.Errorf("second rule's properties changed to %+v", got)
	}
}

func TestParseDigest(t *testing.T) {
	d, err := ParseDigest("sha256:ABcd")
	if err != nil || d.Alg != "sha256" || !bytes.Equal(d.Bytes, []byte{0xab, 0xcd}) {
		t.Errorf("ParseDigest(sha256:ABcd) = %+v, %v", d, err)
	}
	for s, errno := range map[string]syscall.Errno{"": syscall.EBADMSG, "abcd": syscall.EBADMSG, "sha256:abc": syscall.EINVAL, "sha256:xx": syscall.EINVAL} {
		if _, err := ParseDigest(s); !errors.Is(err, errno) {
			t.Errorf("ParseDigest(%q) = %v, want %s", s, err, ErrnoName(errno))
		}
	}
}
