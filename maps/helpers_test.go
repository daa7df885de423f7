package maps

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

func action(a policy.Action) *policy.Action { return &a }

func digest(alg, hexBytes string) policy.Digest {
	b, err := hex.DecodeString(hexBytes)
	if err != nil {
		panic(err)
	}
	return policy.Digest{Alg: alg, Bytes: b}
}

func dvProp(d policy.Digest) policy.Property {
	return policy.Property{Kind: policy.PropDMVerityRootHash, Digest: d}
}

func fvProp(d policy.Digest) policy.Property {
	return policy.Property{Kind: policy.PropFSVerityDigest, Digest: d}
}

func boolProp(k policy.PropKind, v bool) policy.Property {
	return policy.Property{Kind: k, Value: v}
}

func rule(op policy.Op, a policy.Action, props ...policy.Property) policy.Rule {
	return policy.Rule{Op: op, Action: a, Props: props}
}

// newPolicy numbers rules by position, as the parser does.
func newPolicy(global *policy.Action, rules ...policy.Rule) *policy.Policy {
	p := &policy.Policy{Name: "test", GlobalDefault: global, Rules: rules}
	for i := range p.Rules {
		p.Rules[i].Index = i
		p.Rules[i].Line = i + 2
	}
	return p
}

// checkKeysZeroed asserts that no key or row carries bytes the BPF side,
// which zeroes its keys and compares whole digests, would not also have,
// and that every key's folds are its row's digests'.
func checkKeysZeroed(t *testing.T, tables *Tables) {
	t.Helper()
	for _, e := range tables.Rows {
		k := e.Key
		if k.Pad != 0 || k.Link >= bpf.Links {
			t.Errorf("key %+v: pad %d, link %d", k, k.Pad, k.Link)
		}
		kind := RowKind(k.Kind)
		hasDV := kind == KindDV || kind == KindDVFV
		hasFV := kind == KindFV || kind == KindDVFV
		if kind == KindBase && k.Link != 0 {
			t.Errorf("BASE key %+v has a link", k)
		}
		if kind != KindBase && (e.Row.Generation != 0 || e.Row.Needs != 0) {
			t.Errorf("%s row %+v carries BASE fields", kind, e.Row)
		}
		if e.Row.Key != (bpf.RowKey{}) || e.Row.Buckets != 0 || e.Row.Slots != 0 {
			t.Errorf("row %+v: table fields set before there is a table: %+v", k, e.Row)
		}
		checkDigestZeroed(t, "dv", e.Row.Dv, hasDV)
		checkDigestZeroed(t, "fv", e.Row.Fv, hasFV)
		if k.DvFold != Fold(e.Row.Dv) || k.FvFold != Fold(e.Row.Fv) {
			t.Errorf("key %+v does not fold its row's digests", k)
		}
	}
}

func checkDigestZeroed(t *testing.T, what string, d bpf.Digest, used bool) {
	t.Helper()
	if !used {
		if d != (bpf.Digest{}) {
			t.Errorf("unused %s digest is not zero: %+v", what, d)
		}
		return
	}
	if d.Len == 0 || d.Len > bpf.DigestMax {
		t.Errorf("%s digest length %d", what, d.Len)
		return
	}
	if i := bytes.IndexByte(d.Alg[:], 0); i >= 0 && !allZero(d.Alg[i:]) {
		t.Errorf("%s alg %q has bytes after its NUL", what, d.Alg)
	}
	if !allZero(d.Bytes[d.Len:]) {
		t.Errorf("%s digest has bytes after its length %d: %x", what, d.Len, d.Bytes)
	}
}

func allZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

// describe renders a policy for failure messages.
func describe(p *policy.Policy) string {
	var b strings.Builder
	if p.GlobalDefault != nil {
		b.WriteString("DEFAULT action=" + p.GlobalDefault.String() + "\n")
	}
	for op, a := range p.OpDefaults {
		if a != nil {
			b.WriteString("DEFAULT op=" + policy.Op(op).String() + " action=" + a.String() + "\n")
		}
	}
	for _, r := range p.Rules {
		b.WriteString("op=" + r.Op.String())
		for _, prop := range r.Props {
			b.WriteString(" " + prop.Kind.String() + "=")
			if prop.Kind.IsDigest() {
				b.WriteString(strings.ToValidUTF8(prop.Digest.Alg, "?") + ":" + hex.EncodeToString(prop.Digest.Bytes))
			} else if prop.Value {
				b.WriteString("TRUE")
			} else {
				b.WriteString("FALSE")
			}
		}
		b.WriteString(" action=" + r.Action.String() + "\n")
	}
	return b.String()
}
