package policy

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
)

func (v Version) String() string {
	return strconv.Itoa(int(v.Major)) + "." + strconv.Itoa(int(v.Minor)) + "." + strconv.Itoa(int(v.Rev))
}

// String is the digest as a policy writes it: ALG:hex, in lower case.
func (d Digest) String() string { return d.Alg + ":" + hex.EncodeToString(d.Bytes) }

// String is the property as a policy writes it, e.g. boot_verified=TRUE or
// dmverity_roothash=sha256:ab12….
func (prop Property) String() string {
	var b strings.Builder
	writePolicyProperty(&b, prop)
	return b.String()
}

func writePolicyProperty(b textWriter, prop Property) {
	b.WriteString(prop.Kind.String())
	b.WriteByte('=')
	if prop.Kind.IsDigest() {
		b.WriteString(prop.Digest.Alg)
		b.WriteByte(':')
		writeHex(b, prop.Digest.Bytes, lowerHex)
		return
	}
	writeBool(b, prop.Value)
}

// textWriter is what both strings.Builder (for String methods) and
// bytes.Buffer (for Format, which returns bytes) offer.
type textWriter interface {
	WriteByte(c byte) error
	WriteString(s string) (int, error)
}

const (
	lowerHex = "0123456789abcdef"
	upperHex = "0123456789ABCDEF"
)

func writeHex(b textWriter, data []byte, digits string) {
	for _, c := range data {
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&0xF])
	}
}

func writeBool(b textWriter, v bool) {
	if v {
		b.WriteString("TRUE")
	} else {
		b.WriteString("FALSE")
	}
}

// String renders the rule as IPE's AUDIT_IPE_ACCESS record prints it
// between the quotes of rule="…" (audit.c audit_rule), so events from
// bpfipe and from in-tree IPE compare as text: properties in policy order,
// and a digest as its algorithm through audit_log_untrustedstring followed
// by ':' and upper-case hex, e.g.
//
//	op=EXECUTE dmverity_roothash="sha256":AB12… action=ALLOW
func (r *Rule) String() string {
	var b strings.Builder
	b.WriteString("op=")
	b.WriteString(r.Op.String())
	b.WriteByte(' ')
	for _, prop := range r.Props {
		b.WriteString(prop.Kind.String())
		b.WriteByte('=')
		if prop.Kind.IsDigest() {
			writeUntrustedString(&b, prop.Digest.Alg)
			b.WriteByte(':')
			writeHex(&b, prop.Digest.Bytes, upperHex)
		} else {
			writeBool(&b, prop.Value)
		}
		b.WriteByte(' ')
	}
	b.WriteString("action=")
	b.WriteString(r.Action.String())
	return b.String()
}

// writeUntrustedString is kernel/audit.c audit_log_untrustedstring: a string
// with no '"', no byte below 0x21 (so no space) and none above 0x7e is
// printed in double quotes; any other is printed as upper-case hex without
// quotes.
func writeUntrustedString(b textWriter, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c < 0x21 || c > 0x7e {
			for j := 0; j < len(s); j++ {
				b.WriteByte(upperHex[s[j]>>4])
				b.WriteByte(upperHex[s[j]&0xF])
			}
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}

// RuleString is what IPE's audit record puts in rule="…" for this decision:
// "DEFAULT action=X" for the global default, "DEFAULT op=O action=X" for an
// op's default, or the matched rule's String.
func (d Decision) RuleString() string {
	switch {
	case d.Scope == ScopeRule && d.Rule != nil:
		return d.Rule.String()
	case d.Scope == ScopeOpDefault:
		return "DEFAULT op=" + d.Op.String() + " action=" + d.Action.String()
	}
	return "DEFAULT action=" + d.Action.String()
}

// Format writes p as canonical policy text: the header, the global DEFAULT,
// the per-op DEFAULTs in kernel op order, then the rules in order, one per
// line, with digests in lower-case hex. For any policy Parse returned, Parse
// accepts the result and yields a policy Equal to p; rule line numbers are
// those of the canonical text.
func Format(p *Policy) []byte {
	var b bytes.Buffer
	b.Grow(64 + len(p.Rules)*48)
	b.WriteString(prefixName)
	b.WriteString(p.Name)
	b.WriteByte(' ')
	b.WriteString(prefixVersion)
	b.WriteString(p.Version.String())
	b.WriteByte('\n')
	if p.GlobalDefault != nil {
		b.WriteString("DEFAULT action=")
		b.WriteString(p.GlobalDefault.String())
		b.WriteByte('\n')
	}
	for op, a := range p.OpDefaults {
		if a == nil {
			continue
		}
		b.WriteString("DEFAULT op=")
		b.WriteString(Op(op).String())
		b.WriteString(" action=")
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		b.WriteString("op=")
		b.WriteString(r.Op.String())
		b.WriteByte(' ')
		for _, prop := range r.Props {
			writePolicyProperty(&b, prop)
			b.WriteByte(' ')
		}
		b.WriteString("action=")
		b.WriteString(r.Action.String())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Equal reports whether p and q are the same policy: same name, version,
// defaults and rules in the same order. Rule.Line is where a rule was
// written, not what it means, so it is not compared.
func (p *Policy) Equal(q *Policy) bool {
	if p == nil || q == nil {
		return p == q
	}
	if p.Name != q.Name || p.Version != q.Version || !sameAction(p.GlobalDefault, q.GlobalDefault) {
		return false
	}
	for op := range p.OpDefaults {
		if !sameAction(p.OpDefaults[op], q.OpDefaults[op]) {
			return false
		}
	}
	if len(p.Rules) != len(q.Rules) {
		return false
	}
	for i := range p.Rules {
		a, b := &p.Rules[i], &q.Rules[i]
		if a.Op != b.Op || a.Action != b.Action || a.Index != b.Index || len(a.Props) != len(b.Props) {
			return false
		}
		for j := range a.Props {
			x, y := a.Props[j], b.Props[j]
			if x.Kind != y.Kind || x.Value != y.Value || x.Digest.Alg != y.Digest.Alg || !bytes.Equal(x.Digest.Bytes, y.Digest.Bytes) {
				return false
			}
		}
	}
	return true
}

func sameAction(a, b *Action) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
