package loader

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

// AccessRecord is one decision, with the fields of IPE's AUDIT_IPE_ACCESS
// record (type 1420) so the output of bpfipe and of in-tree IPE can be
// compared line by line.
type AccessRecord struct {
	Op        string `json:"ipe_op"`
	Hook      string `json:"ipe_hook"`
	Enforcing bool   `json:"enforcing"`
	PID       uint32 `json:"pid"`
	Comm      string `json:"comm"`
	// HasFile is false for anonymous memory and kernel_load_data, which
	// IPE prints as path=? dev=? ino=?.
	HasFile bool   `json:"has_file"`
	Path    string `json:"path,omitempty"`
	// PathTruncated says Path is the tail of a longer path: the BPF program
	// builds the path from the file upwards and keeps the last whole
	// components that fit in IPE_PATH_MAX bytes, so the text still starts
	// with '/'; IPE prints the whole path.
	PathTruncated bool   `json:"path_truncated,omitempty"`
	Dev           string `json:"dev,omitempty"`
	Ino           uint64 `json:"ino,omitempty"`
	// Rule is the text IPE puts in rule="...", or "?" when the policy that
	// decided is no longer known.
	Rule       string `json:"rule"`
	Action     string `json:"action"`
	Generation uint32 `json:"generation"`
}

// String renders r as IPE's access record, without audit's type and
// timestamp prefix:
//
//	ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=123 comm="sh" path="/tmp/x" dev="tmpfs" ino=5 rule="DEFAULT action=DENY"
func (r *AccessRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ipe_op=%s ipe_hook=%s enforcing=%d pid=%d comm=%s", r.Op, r.Hook, boolDigit(r.Enforcing), r.PID, UntrustedString(r.Comm))
	if r.HasFile {
		fmt.Fprintf(&b, " path=%s dev=%s ino=%d", UntrustedString(r.Path), UntrustedString(r.Dev), r.Ino)
	} else {
		b.WriteString(" path=? dev=? ino=?")
	}
	// IPE formats the rule with a plain "%s" inside quotes, so a digest
	// property's own quotes nest, as they do in the kernel's record.
	fmt.Fprintf(&b, " rule=\"%s\"", r.Rule)
	return b.String()
}

// JSON renders r as one line of JSON with a "type" member, so a stream of
// records of different types stays self-describing.
func (r *AccessRecord) JSON() []byte {
	return typedJSON("IPE_ACCESS", r)
}

func typedJSON(typ string, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		// Only plain strings, numbers and booleans are marshalled.
		panic(fmt.Sprintf("marshal %s record: %v", typ, err))
	}
	out := make([]byte, 0, len(body)+len(typ)+12)
	out = append(out, `{"type":`...)
	out = strconv.AppendQuote(out, typ)
	if len(body) > 2 {
		out = append(out, ',')
	}
	return append(out, body[1:]...)
}

func boolDigit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// UntrustedString encodes s the way audit_log_untrustedstring does: in
// double quotes when it holds no '"' and only bytes from 0x21 to 0x7e,
// otherwise as uppercase hex of its bytes with no quotes. A space forces
// hex too, so every field stays one token.
func UntrustedString(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c < 0x21 || c > 0x7e {
			return fmt.Sprintf("%X", s)
		}
	}
	return `"` + s + `"`
}

// cString is the bytes of a NUL-padded kernel char array up to the first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// RuleSource finds the policy that made a decision, by the generation the
// event carries; it returns nil when that policy is no longer known.
type RuleSource func(generation uint32) *policy.Policy

// DecodeAccess turns a decision event into the record IPE would print for
// it. rules renders rule="..." from the policy of the event's generation.
func DecodeAccess(ev *bpf.Event, rules RuleSource) AccessRecord {
	op := policy.Op(ev.Op)
	action := policy.Action(ev.Action)
	r := AccessRecord{
		Op:            op.String(),
		Hook:          bpf.HookName(ev.Hook),
		Enforcing:     ev.Enforcing != 0,
		PID:           ev.Pid,
		Comm:          cString(ev.Comm[:]),
		HasFile:       ev.HasFile != 0,
		PathTruncated: ev.PathTruncated != 0,
		Action:        action.String(),
		Generation:    ev.Generation,
		Rule:          "?",
	}
	if r.HasFile {
		r.Path = cString(ev.Path[:])
		r.Dev = cString(ev.Sid[:])
		r.Ino = ev.Ino
	}
	var pol *policy.Policy
	if rules != nil {
		pol = rules(ev.Generation)
	}
	if text, ok := ruleText(pol, ev, op, action); ok {
		r.Rule = text
	}
	return r
}

// ruleText is the rule="..." content of IPE's record: the matched rule as
// IPE rebuilds it from the parsed policy, or the DEFAULT that decided. The
// DEFAULTs need no policy; a rule does.
func ruleText(pol *policy.Policy, ev *bpf.Event, op policy.Op, action policy.Action) (string, bool) {
	d := policy.Decision{Action: action, Op: op}
	switch ev.Scope {
	case bpf.ScopeRule:
		if pol == nil || int(ev.Rule) >= len(pol.Rules) {
			return "", false
		}
		d.Scope, d.Rule = policy.ScopeRule, &pol.Rules[ev.Rule]
	case bpf.ScopeOpDefault:
		d.Scope = policy.ScopeOpDefault
	case bpf.ScopeGlobalDefault:
		d.Scope = policy.ScopeGlobalDefault
	default:
		return "", false
	}
	return d.RuleString(), true
}
