package kernelipe

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bpfipe/bpfipe/loader"
)

// Audit record types IPE emits (include/uapi/linux/audit.h).
const (
	TypeMACStatus    = 1404 // AUDIT_MAC_STATUS: enforce changed
	TypeAccess       = 1420 // AUDIT_IPE_ACCESS: a decision
	TypeConfigChange = 1421 // AUDIT_IPE_CONFIG_CHANGE: a policy became active
	TypePolicyLoad   = 1422 // AUDIT_IPE_POLICY_LOAD: new_policy or update
)

// TypeName is audit's name for the record types IPE emits, as ausearch
// prints them.
func TypeName(typ uint16) string {
	switch typ {
	case TypeMACStatus:
		return "MAC_STATUS"
	case TypeAccess:
		return "IPE_ACCESS"
	case TypeConfigChange:
		return "IPE_CONFIG_CHANGE"
	case TypePolicyLoad:
		return "IPE_POLICY_LOAD"
	}
	return "UNKNOWN[" + strconv.Itoa(int(typ)) + "]"
}

// Record is one audit record. Exactly one of the typed fields is set for
// the IPE types, when Body is not empty; other types carry only Body.
type Record struct {
	Type uint16
	// Time and Serial come from the "audit(SEC.MSEC:SERIAL): " stamp;
	// records of one event share the serial.
	Time   time.Time
	Serial uint64
	// Body is the record's text after the stamp.
	Body string

	Access       *loader.AccessRecord
	PolicyLoad   *PolicyLoad
	ConfigChange *ConfigChange
	MACStatus    *MACStatus
}

// IsIPE says the record is one of the types IPE emits; a MAC_STATUS record
// from another LSM is not.
func (r *Record) IsIPE() bool {
	switch r.Type {
	case TypeAccess, TypeConfigChange, TypePolicyLoad:
		return true
	case TypeMACStatus:
		return r.MACStatus != nil && r.MACStatus.LSM == "ipe"
	}
	return false
}

// String is the record as `bpfipe events` prints it: an access record's
// fields alone, any other record prefixed with its type name.
func (r *Record) String() string {
	if r.Access != nil {
		return r.Access.String()
	}
	return TypeName(r.Type) + " " + r.Body
}

// JSON is the record as `bpfipe events --json` prints it: one object with
// a "type" member and the record's fields.
func (r *Record) JSON() []byte {
	switch {
	case r.Access != nil:
		return r.Access.JSON()
	case r.PolicyLoad != nil:
		return typedJSON(TypeName(r.Type), r.PolicyLoad.jsonFields())
	case r.ConfigChange != nil:
		return typedJSON(TypeName(r.Type), r.ConfigChange.jsonFields())
	case r.MACStatus != nil:
		return typedJSON(TypeName(r.Type), r.MACStatus.jsonFields())
	}
	return typedJSON(TypeName(r.Type), struct {
		Body string `json:"body"`
	}{r.Body})
}

func typedJSON(typ string, v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		// Only strings, numbers, booleans and pointers to them are marshalled.
		panic(fmt.Sprintf("marshal %s record: %v", typ, err))
	}
	out := append([]byte(`{"type":`), strconv.Quote(typ)...)
	if len(body) > 2 {
		out = append(out, ',')
	}
	return append(out, body[1:]...)
}

// The jsonFields methods give the members bpfipe's own records have (see
// loader/configrecord.go), plus lsm, so one decoder reads both.

func (p *PolicyLoad) jsonFields() any {
	o := struct {
		Name    *string `json:"policy_name"`
		Version *string `json:"policy_version"`
		Digest  *string `json:"policy_digest"`
		AUID    uint32  `json:"auid"`
		Ses     uint32  `json:"ses"`
		LSM     string  `json:"lsm"`
		Res     int     `json:"res"`
		// Absent when the kernel printed no errno= (6.12 and older).
		Errno *int `json:"errno,omitempty"`
	}{AUID: p.AUID, Ses: p.Ses, LSM: p.LSM, Res: p.Res}
	if p.HasErrno {
		o.Errno = &p.Errno
	}
	if p.Policy != nil {
		o.Name, o.Version, o.Digest = &p.Policy.Name, &p.Policy.Version, &p.Policy.Digest
	}
	return o
}

func (c *ConfigChange) jsonFields() any {
	o := struct {
		OldName    *string `json:"old_active_pol_name"`
		OldVersion *string `json:"old_active_pol_version"`
		OldDigest  *string `json:"old_policy_digest"`
		NewName    string  `json:"new_active_pol_name"`
		NewVersion string  `json:"new_active_pol_version"`
		NewDigest  string  `json:"new_policy_digest"`
		AUID       uint32  `json:"auid"`
		Ses        uint32  `json:"ses"`
		LSM        string  `json:"lsm"`
		Res        int     `json:"res"`
	}{NewName: c.New.Name, NewVersion: c.New.Version, NewDigest: c.New.Digest, AUID: c.AUID, Ses: c.Ses, LSM: c.LSM, Res: c.Res}
	if c.Old != nil {
		o.OldName, o.OldVersion, o.OldDigest = &c.Old.Name, &c.Old.Version, &c.Old.Digest
	}
	return o
}

func (m *MACStatus) jsonFields() any {
	return struct {
		Enforcing    int    `json:"enforcing"`
		OldEnforcing int    `json:"old_enforcing"`
		AUID         uint32 `json:"auid"`
		Ses          uint32 `json:"ses"`
		Enabled      int    `json:"enabled"`
		OldEnabled   int    `json:"old-enabled"`
		LSM          string `json:"lsm"`
		Res          int    `json:"res"`
	}{digit(m.Enforcing), digit(m.OldEnforcing), m.AUID, m.Ses, digit(m.Enabled), digit(m.OldEnabled), m.LSM, m.Res}
}

func digit(b bool) int {
	if b {
		return 1
	}
	return 0
}

// PolicyRef names a policy in IPE's configuration records.
type PolicyRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"` // "sha256:HEX" of the PKCS#7 message
}

// PolicyLoad is AUDIT_IPE_POLICY_LOAD. Policy is nil for a failed load.
type PolicyLoad struct {
	Policy *PolicyRef `json:"policy"`
	AUID   uint32     `json:"auid"`
	Ses    uint32     `json:"ses"`
	LSM    string     `json:"lsm"`
	Res    int        `json:"res"`
	// Errno is the negative errno of a failed load; kernels before the
	// errno= field (6.12) only record successes and leave it 0.
	Errno    int  `json:"errno"`
	HasErrno bool `json:"-"`
}

// ConfigChange is AUDIT_IPE_CONFIG_CHANGE. Old is nil when no policy was
// active before.
type ConfigChange struct {
	Old  *PolicyRef `json:"old"`
	New  PolicyRef  `json:"new"`
	AUID uint32     `json:"auid"`
	Ses  uint32     `json:"ses"`
	LSM  string     `json:"lsm"`
	Res  int        `json:"res"`
}

// MACStatus is AUDIT_MAC_STATUS, which IPE emits when enforce changes.
type MACStatus struct {
	Enforcing, OldEnforcing bool
	AUID, Ses               uint32
	// Enabled and OldEnabled are whether the LSM is enabled; IPE always
	// prints 1.
	Enabled, OldEnabled bool
	LSM                 string
	Res                 int
}

// ParseLine parses a record as audit logs and the kernel console print it:
// "type=1420 audit(1653364370.067:61): ipe_op=..." (auditd's log) or
// "audit: type=1420 audit(...): ..." (printk), with or without a leading
// kernel timestamp.
func ParseLine(line string) (Record, error) {
	i := strings.Index(line, "type=")
	if i < 0 {
		return Record{}, errors.New("parse audit line: no type=")
	}
	rest := line[i+len("type="):]
	num, text, ok := strings.Cut(rest, " ")
	if !ok {
		return Record{}, errors.New("parse audit line: nothing after type=")
	}
	typ, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		return Record{}, fmt.Errorf("parse audit line: type %q: %w", num, err)
	}
	return ParseRecord(uint16(typ), []byte(text))
}

// ParseRecord parses the text of an audit record of type typ, as the audit
// netlink socket delivers it: "audit(SEC.MSEC:SERIAL): FIELDS", possibly
// NUL-terminated.
func ParseRecord(typ uint16, text []byte) (Record, error) {
	r := Record{Type: typ}
	s := string(text)
	if nul := strings.IndexByte(s, 0); nul >= 0 {
		s = s[:nul]
	}
	s = strings.TrimRight(s, "\n")
	var err error
	if r.Time, r.Serial, s, err = parseStamp(s); err != nil {
		return r, err
	}
	r.Body = s
	if s == "" {
		// 6.12 follows each MAC_STATUS with an empty one of the same type.
		return r, nil
	}
	switch typ {
	case TypeAccess:
		a, err := ParseAccess(s)
		if err != nil {
			return r, err
		}
		r.Access = &a
	case TypePolicyLoad:
		p, err := parsePolicyLoad(s)
		if err != nil {
			return r, err
		}
		r.PolicyLoad = &p
	case TypeConfigChange:
		c, err := parseConfigChange(s)
		if err != nil {
			return r, err
		}
		r.ConfigChange = &c
	case TypeMACStatus:
		m, err := parseMACStatus(s)
		if err != nil {
			return r, err
		}
		r.MACStatus = &m
	}
	return r, nil
}

func parseStamp(s string) (time.Time, uint64, string, error) {
	rest, ok := strings.CutPrefix(s, "audit(")
	if !ok {
		return time.Time{}, 0, s, fmt.Errorf("parse audit record: no audit( stamp in %q", clip(s))
	}
	stamp, body, ok := strings.Cut(rest, "):")
	if !ok {
		return time.Time{}, 0, s, fmt.Errorf("parse audit record: unterminated stamp in %q", clip(s))
	}
	when, serial, ok := strings.Cut(stamp, ":")
	if !ok {
		return time.Time{}, 0, s, fmt.Errorf("parse audit record: stamp %q has no serial", stamp)
	}
	sec, msec, ok := strings.Cut(when, ".")
	if !ok {
		return time.Time{}, 0, s, fmt.Errorf("parse audit record: stamp %q has no milliseconds", stamp)
	}
	secs, err1 := strconv.ParseInt(sec, 10, 64)
	msecs, err2 := strconv.ParseUint(msec, 10, 16)
	ser, err3 := strconv.ParseUint(serial, 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || len(msec) != 3 {
		return time.Time{}, 0, s, fmt.Errorf("parse audit record: bad stamp %q", stamp)
	}
	return time.Unix(secs, int64(msecs)*int64(time.Millisecond)), ser, strings.TrimPrefix(body, " "), nil
}

// ParseAccess parses the fields of an AUDIT_IPE_ACCESS record:
//
//	ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=2241 comm="ld-linux.so" path="/deny/lib/libc.so.6" dev="sda2" ino=14549020 rule="DEFAULT action=DENY"
//
// Action is read from the rule's last token; Generation stays 0, since the
// kernel has none.
func ParseAccess(body string) (loader.AccessRecord, error) {
	var a loader.AccessRecord
	f, err := splitFields(body)
	if err != nil {
		return a, fmt.Errorf("parse IPE_ACCESS: %w", err)
	}
	for _, key := range []string{"ipe_op", "ipe_hook", "enforcing", "pid", "comm", "path", "dev", "ino", "rule"} {
		if _, ok := f[key]; !ok {
			return a, fmt.Errorf("parse IPE_ACCESS: no %s= in %q", key, clip(body))
		}
	}
	a.Op, a.Hook = f["ipe_op"], f["ipe_hook"]
	if a.Enforcing, err = parseDigit(f["enforcing"]); err != nil {
		return a, fmt.Errorf("parse IPE_ACCESS: enforcing: %w", err)
	}
	pid, err := strconv.ParseUint(f["pid"], 10, 32)
	if err != nil {
		return a, fmt.Errorf("parse IPE_ACCESS: pid: %w", err)
	}
	a.PID = uint32(pid)
	if a.Comm, err = DecodeUntrusted(f["comm"]); err != nil {
		return a, fmt.Errorf("parse IPE_ACCESS: comm: %w", err)
	}
	if f["path"] != "?" {
		a.HasFile = true
		if a.Path, err = decodePath(f["path"]); err != nil {
			return a, fmt.Errorf("parse IPE_ACCESS: path: %w", err)
		}
	}
	if f["dev"] != "?" {
		if a.Dev, err = DecodeUntrusted(f["dev"]); err != nil {
			return a, fmt.Errorf("parse IPE_ACCESS: dev: %w", err)
		}
	}
	if f["ino"] != "?" {
		if a.Ino, err = strconv.ParseUint(f["ino"], 10, 64); err != nil {
			return a, fmt.Errorf("parse IPE_ACCESS: ino: %w", err)
		}
	}
	if !a.HasFile && (a.Dev != "" || a.Ino != 0) {
		return a, fmt.Errorf("parse IPE_ACCESS: dev or ino without a path in %q", clip(body))
	}
	a.Rule = f["rule"]
	last := a.Rule[strings.LastIndexByte(a.Rule, ' ')+1:]
	switch last {
	case "action=ALLOW":
		a.Action = "ALLOW"
	case "action=DENY":
		a.Action = "DENY"
	default:
		return a, fmt.Errorf("parse IPE_ACCESS: rule %q does not end with an action", a.Rule)
	}
	return a, nil
}

// decodePath also takes the two placeholders audit_log_d_path writes when
// it cannot produce the path.
func decodePath(v string) (string, error) {
	if v == "<too_long>" || v == `"<no_memory>"` {
		return v, nil
	}
	return DecodeUntrusted(v)
}

func parsePolicyLoad(body string) (PolicyLoad, error) {
	var p PolicyLoad
	ref, rest, err := parsePolicyRef(body, "policy_name=", "policy_version=", "policy_digest=")
	if err != nil {
		return p, fmt.Errorf("parse IPE_POLICY_LOAD: %w", err)
	}
	p.Policy = ref
	f, err := splitFields(rest)
	if err != nil {
		return p, fmt.Errorf("parse IPE_POLICY_LOAD: %w", err)
	}
	if err := parseSubject(f, &p.AUID, &p.Ses, &p.LSM, &p.Res); err != nil {
		return p, fmt.Errorf("parse IPE_POLICY_LOAD: %w", err)
	}
	if v, ok := f["errno"]; ok {
		if p.Errno, err = strconv.Atoi(v); err != nil {
			return p, fmt.Errorf("parse IPE_POLICY_LOAD: errno: %w", err)
		}
		p.HasErrno = true
	}
	return p, nil
}

func parseConfigChange(body string) (ConfigChange, error) {
	var c ConfigChange
	old, rest, err := parsePolicyRef(body, "old_active_pol_name=", "old_active_pol_version=", "old_policy_digest=")
	if err != nil {
		return c, fmt.Errorf("parse IPE_CONFIG_CHANGE: %w", err)
	}
	c.Old = old
	nu, rest, err := parsePolicyRef(rest, "new_active_pol_name=", "new_active_pol_version=", "new_policy_digest=")
	if err != nil {
		return c, fmt.Errorf("parse IPE_CONFIG_CHANGE: %w", err)
	}
	if nu == nil {
		return c, errors.New("parse IPE_CONFIG_CHANGE: no new policy")
	}
	c.New = *nu
	f, err := splitFields(rest)
	if err != nil {
		return c, fmt.Errorf("parse IPE_CONFIG_CHANGE: %w", err)
	}
	if err := parseSubject(f, &c.AUID, &c.Ses, &c.LSM, &c.Res); err != nil {
		return c, fmt.Errorf("parse IPE_CONFIG_CHANGE: %w", err)
	}
	return c, nil
}

func parseMACStatus(body string) (MACStatus, error) {
	var m MACStatus
	f, err := splitFields(body)
	if err != nil {
		return m, fmt.Errorf("parse MAC_STATUS: %w", err)
	}
	if m.Enforcing, err = parseDigit(f["enforcing"]); err != nil {
		return m, fmt.Errorf("parse MAC_STATUS: enforcing: %w", err)
	}
	if m.OldEnforcing, err = parseDigit(f["old_enforcing"]); err != nil {
		return m, fmt.Errorf("parse MAC_STATUS: old_enforcing: %w", err)
	}
	if m.Enabled, err = parseDigit(f["enabled"]); err != nil {
		return m, fmt.Errorf("parse MAC_STATUS: enabled: %w", err)
	}
	if m.OldEnabled, err = parseDigit(f["old-enabled"]); err != nil {
		return m, fmt.Errorf("parse MAC_STATUS: old-enabled: %w", err)
	}
	if err := parseSubject(f, &m.AUID, &m.Ses, &m.LSM, &m.Res); err != nil {
		return m, fmt.Errorf("parse MAC_STATUS: %w", err)
	}
	return m, nil
}

// parsePolicyRef reads `NAMEKEY"NAME" VERKEY1.2.3 DIGESTKEYsha256:HEX ` or
// the absent form `NAMEKEY? VERKEY? DIGESTKEY? ` from the start of s. IPE
// prints the name with a bare "%s" in quotes, unescaped, so the name ends
// at the quote that is followed by the version key.
func parsePolicyRef(s, nameKey, versionKey, digestKey string) (*PolicyRef, string, error) {
	absent := nameKey + "? " + versionKey + "? " + digestKey + "?"
	if rest, ok := strings.CutPrefix(s, absent); ok {
		return nil, strings.TrimPrefix(rest, " "), nil
	}
	rest, ok := strings.CutPrefix(s, nameKey+`"`)
	if !ok {
		return nil, s, fmt.Errorf("no %s in %q", nameKey, clip(s))
	}
	end := strings.Index(rest, `" `+versionKey)
	if end < 0 {
		return nil, s, fmt.Errorf("no %s after %s in %q", versionKey, nameKey, clip(s))
	}
	ref := &PolicyRef{Name: rest[:end]}
	rest = rest[end+len(`" `+versionKey):]
	ref.Version, rest, _ = strings.Cut(rest, " ")
	if !validVersion(ref.Version) {
		return nil, s, fmt.Errorf("bad %s%q", versionKey, ref.Version)
	}
	if rest, ok = strings.CutPrefix(rest, digestKey); !ok {
		return nil, s, fmt.Errorf("no %s in %q", digestKey, clip(s))
	}
	ref.Digest, rest, _ = strings.Cut(rest, " ")
	if alg, sum, ok := strings.Cut(ref.Digest, ":"); !ok || alg == "" || !isUpperHex(sum) {
		return nil, s, fmt.Errorf("bad %s%q", digestKey, ref.Digest)
	}
	return ref, rest, nil
}

func validVersion(v string) bool {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return false
		}
	}
	return true
}

func isUpperHex(s string) bool {
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func parseSubject(f map[string]string, auid, ses *uint32, lsm *string, res *int) error {
	for _, key := range []string{"auid", "ses", "lsm", "res"} {
		if _, ok := f[key]; !ok {
			return fmt.Errorf("no %s=", key)
		}
	}
	a, err1 := strconv.ParseUint(f["auid"], 10, 32)
	s, err2 := strconv.ParseUint(f["ses"], 10, 32)
	r, err3 := strconv.Atoi(f["res"])
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	*auid, *ses, *lsm, *res = uint32(a), uint32(s), f["lsm"], r
	return nil
}

func parseDigit(v string) (bool, error) {
	switch v {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not 0 or 1", v)
}

// splitFields splits audit's space-separated key=value fields. Values are
// single tokens (untrusted strings are quoted only when they hold no space
// or quote) except rule=, whose quoted text holds spaces and, for digest
// properties, quotes of its own; IPE prints it last, so it runs to the
// record's final quote.
func splitFields(s string) (map[string]string, error) {
	f := map[string]string{}
	for s != "" {
		if s[0] == ' ' {
			s = s[1:]
			continue
		}
		key, rest, ok := strings.Cut(s, "=")
		if !ok || key == "" || strings.ContainsAny(key, ` "`) {
			return nil, fmt.Errorf("malformed field at %q", clip(s))
		}
		if key == "rule" {
			if len(rest) < 2 || rest[0] != '"' || rest[len(rest)-1] != '"' {
				return nil, fmt.Errorf("rule= is not quoted to the end of the record: %q", clip(rest))
			}
			f[key] = rest[1 : len(rest)-1]
			break
		}
		var value string
		value, s, _ = strings.Cut(rest, " ")
		if _, dup := f[key]; dup {
			return nil, fmt.Errorf("field %s= repeated", key)
		}
		f[key] = value
	}
	return f, nil
}

// DecodeUntrusted reverses audit_log_untrustedstring: a quoted value is the
// text between the quotes, any other value is the hex of the bytes.
func DecodeUntrusted(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		inner := v[1 : len(v)-1]
		if strings.ContainsRune(inner, '"') {
			return "", fmt.Errorf("quoted value %q holds a quote", v)
		}
		return inner, nil
	}
	if len(v) == 0 || len(v)%2 != 0 {
		return "", fmt.Errorf("value %q is neither quoted nor hex", clip(v))
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return "", fmt.Errorf("value %q is neither quoted nor hex", clip(v))
	}
	return string(b), nil
}

func clip(s string) string {
	const max = 120
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
