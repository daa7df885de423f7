package policy

import (
	"bytes"
	"strconv"
	"strings"
	"syscall"
)

// Parse parses an IPE policy. It accepts exactly the texts that in-tree IPE's
// parser (security/ipe/policy_parser.c) accepts and rejects every other with
// a *ParseError carrying the errno the kernel would return; filename only
// labels errors.
//
// The kernel works on a NUL-terminated copy, so everything from the first
// NUL byte on is ignored, and the first error in file order decides the
// errno, so parsing stops there.
func Parse(filename string, text []byte) (*Policy, error) {
	if len(text) == 0 {
		return nil, &ParseError{File: filename, Message: "policy is empty", Errno: syscall.EBADMSG}
	}
	if nul := bytes.IndexByte(text, 0); nul >= 0 {
		text = text[:nul]
	}
	p := parser{file: filename, pol: &Policy{Rules: make([]Rule, 0, estimateRules(text))}}
	if err := p.parse(text); err != nil {
		return nil, err
	}
	return p.pol, nil
}

// Tokens and separators of the grammar (policy_parser.c).
const (
	prefixName    = "policy_name="
	prefixVersion = "policy_version="
	prefixOp      = "op="
	prefixAction  = "action="
	tokenDefault  = "DEFAULT"
	versionParts  = 3
	shortestRule  = len("op=POLICY action=DENY\n")
)

var opTokens = [NumOps]string{
	"op=EXECUTE", "op=FIRMWARE", "op=KMODULE", "op=KEXEC_IMAGE",
	"op=KEXEC_INITRAMFS", "op=POLICY", "op=X509_CERT",
}

const (
	expectedOps   = "op=EXECUTE|FIRMWARE|KMODULE|KEXEC_IMAGE|KEXEC_INITRAMFS|POLICY|X509_CERT"
	expectedProps = "boot_verified, dmverity_signature, fsverity_signature, dmverity_roothash or fsverity_digest"
)

// estimateRules bounds the number of rules so the rule slice is allocated
// once: every rule takes a line and at least shortestRule bytes.
func estimateRules(text []byte) int {
	lines := bytes.Count(text, []byte{'\n'}) + bytes.Count(text, []byte{'\r'}) + 1
	return min(lines, len(text)/shortestRule+1)
}

type parser struct {
	file string
	pol  *Policy

	headerLine        int // 0 until the header is parsed
	globalDefaultLine int
	opDefaultLine     [NumOps]int

	// Properties and digest bytes are carved out of shared slabs so that a
	// large policy costs a few allocations per thousand rules, not several
	// per rule. Each carved slice is capped at its length, so appending to
	// one never writes into its neighbour.
	lineProps  []Property
	propSlab   []Property
	digestSlab []byte
	algs       map[string]string
}

// Slabs start small so a short policy stays cheap, and double up to a
// ceiling so a long one needs few allocations without wasting much.
const (
	propSlabMin   = 8
	propSlabMax   = 1024
	digestSlabMin = 128
	digestSlabMax = 32 << 10
)

func nextSlab(current, need, lo, hi int) int {
	return max(need, min(max(2*current, lo), hi))
}

func (p *parser) parse(text []byte) error {
	// The kernel splits with strsep(…, "\n\r"): each \n and each \r ends a
	// line. The next position of each separator is cached so both searches
	// stay vectorised instead of testing every byte against two values.
	nextLF, nextCR := -1, -1
	lineNo := 0
	for start := 0; start <= len(text); {
		lineNo++
		if nextLF < start {
			nextLF = indexFrom(text, start, '\n')
		}
		if nextCR < start {
			nextCR = indexFrom(text, start, '\r')
		}
		end := min(nextLF, nextCR)
		if err := p.line(text[start:end], lineNo); err != nil {
			return err
		}
		start = end + 1
	}
	if p.headerLine == 0 {
		return &ParseError{File: p.file, Message: "policy has no header line policy_name=NAME policy_version=MAJOR.MINOR.REV", Errno: syscall.EBADMSG}
	}
	if p.pol.GlobalDefault == nil {
		var missing []string
		for op := range NumOps {
			if p.pol.OpDefaults[op] == nil {
				missing = append(missing, opTokens[op])
			}
		}
		if len(missing) > 0 {
			return &ParseError{
				File: p.file, Line: p.headerLine,
				Message: "policy has no global DEFAULT action=ALLOW|DENY and no DEFAULT for " + strings.Join(missing, ", "),
				Errno:   syscall.EBADMSG,
			}
		}
	}
	return nil
}

// indexFrom returns the position of the next c at or after from, or
// len(text) when there is none, which the caller treats as a final separator.
func indexFrom(text []byte, from int, c byte) int {
	if i := bytes.IndexByte(text[from:], c); i >= 0 {
		return from + i
	}
	return len(text)
}

// isKernelSpace is lib/ctype.c isspace(): it includes 0xA0, which the
// kernel's Latin-1 table classes as a space.
func isKernelSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xA0
}

func isTokenSeparator(c byte) bool { return c == ' ' || c == '\t' }

func (p *parser) line(line []byte, lineNo int) error {
	// remove_comment cuts at the first '#' wherever it is, even mid-token.
	if i := bytes.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	end := len(line)
	for end > 0 && isKernelSpace(line[end-1]) {
		end--
	}
	if end == 0 {
		return nil
	}
	line = line[:end]
	if p.headerLine == 0 {
		if err := p.header(line, lineNo); err != nil {
			return err
		}
		p.headerLine = lineNo
		return nil
	}
	return p.rule(line, lineNo)
}

// tokens walks the space/TAB-separated tokens of a line, skipping the empty
// tokens that runs of separators produce. Only space and TAB separate: \v, \f
// and 0xA0 inside a line are token bytes.
type tokens struct {
	line []byte
	pos  int
}

// next returns the next token and its 0-based offset in the line.
func (t *tokens) next() (tok []byte, off int, ok bool) {
	for t.pos < len(t.line) && isTokenSeparator(t.line[t.pos]) {
		t.pos++
	}
	if t.pos == len(t.line) {
		return nil, 0, false
	}
	off = t.pos
	for t.pos < len(t.line) && !isTokenSeparator(t.line[t.pos]) {
		t.pos++
	}
	return t.line[off:t.pos], off, true
}

func (p *parser) fail(lineNo, off int, tok []byte, errno syscall.Errno, msg string) *ParseError {
	return &ParseError{File: p.file, Line: lineNo, Column: off + 1, Token: string(tok), Message: msg, Errno: errno}
}

// header parses `policy_name=NAME policy_version=VER` (parse_header). The
// kernel matches each token against both patterns and demands the one for
// its position; "%s" needs a non-empty value, so an empty one is EBADMSG.
func (p *parser) header(line []byte, lineNo int) error {
	ts := tokens{line: line}
	idx := 0
	for {
		tok, off, ok := ts.next()
		if !ok {
			break
		}
		switch idx {
		case 0:
			name, ok := bytes.CutPrefix(tok, []byte(prefixName))
			if !ok || len(name) == 0 {
				msg := "expected policy_name=NAME first: a policy starts with the header policy_name=NAME policy_version=MAJOR.MINOR.REV"
				if ok {
					msg = "policy_name needs a value"
				}
				return p.fail(lineNo, off, tok, syscall.EBADMSG, msg)
			}
			p.pol.Name = string(name)
		case 1:
			ver, ok := bytes.CutPrefix(tok, []byte(prefixVersion))
			if !ok || len(ver) == 0 {
				msg := "expected policy_version=MAJOR.MINOR.REV after policy_name"
				if ok {
					msg = "policy_version needs a value"
				}
				return p.fail(lineNo, off, tok, syscall.EBADMSG, msg)
			}
			// A version error is reported as soon as the token is read,
			// before any extra token after it is seen.
			v, errno, msg := parseVersion(ver)
			if errno != 0 {
				return p.fail(lineNo, off, tok, errno, msg)
			}
			p.pol.Version = v
		default:
			return p.fail(lineNo, off, tok, syscall.EBADMSG, "unexpected token after policy_version: the header has exactly two tokens")
		}
		idx++
	}
	if idx < 2 {
		return &ParseError{File: p.file, Line: lineNo, Column: len(line) + 1, Message: "header is missing policy_version=MAJOR.MINOR.REV", Errno: syscall.EBADMSG}
	}
	return nil
}

// parseVersion is parse_version: parts are split on '.', each read with
// kstrtou16 in order, so the first bad part decides the errno; a fourth
// part is refused before it is read.
func parseVersion(s []byte) (Version, syscall.Errno, string) {
	var parts [versionParts]uint16
	n := 0
	for {
		part, rest, more := bytes.Cut(s, []byte{'.'})
		if n >= versionParts {
			return Version{}, syscall.EBADMSG, "version has more than three parts"
		}
		v, errno := kstrtou16(part)
		switch errno {
		case syscall.EINVAL:
			return Version{}, errno, "version part " + quotePart(part) + " is not a decimal number"
		case syscall.ERANGE:
			return Version{}, errno, "version part " + quotePart(part) + " is greater than 65535"
		}
		parts[n] = v
		n++
		if !more {
			break
		}
		s = rest
	}
	if n != versionParts {
		return Version{}, syscall.EBADMSG, "version needs three parts MAJOR.MINOR.REV"
	}
	return Version{parts[0], parts[1], parts[2]}, 0, ""
}

func quotePart(b []byte) string {
	if len(b) == 0 {
		return "(empty)"
	}
	return strconv.Quote(string(b))
}

// kstrtou16 is lib/kstrtox.c kstrtou16(s, 10): one optional '+', then decimal
// digits (leading zeros allowed, no '-'). A 64-bit overflow is detected
// while reading digits and so beats trailing junk; a value that fits 64 bits
// but not 16 is ERANGE only once the whole part is known to be numeric.
func kstrtou16(s []byte) (uint16, syscall.Errno) {
	if len(s) > 0 && s[0] == '+' {
		s = s[1:]
	}
	var v uint64
	overflow := false
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := uint64(s[i] - '0')
		if v > (^uint64(0)-d)/10 {
			overflow = true
		}
		v = v*10 + d
	}
	switch {
	case overflow:
		return 0, syscall.ERANGE
	case i == 0:
		return 0, syscall.EINVAL
	}
	// kstrtox tolerates one trailing newline; a line never holds one, but
	// the part is handled as the kernel would.
	if i < len(s) && s[i] == '\n' {
		i++
	}
	if i < len(s) {
		return 0, syscall.EINVAL
	}
	if v > 0xFFFF {
		return 0, syscall.ERANGE
	}
	return uint16(v), 0
}

// rule parses a rule or DEFAULT line (parse_rule). Every token but the last
// is DEFAULT (first only), then op=, then properties; the last must be the
// action. Tokens are checked left to right and the action after them, so a
// bad property beats a bad action.
func (p *parser) rule(line []byte, lineNo int) error {
	lastOff := len(line) - 1
	for lastOff > 0 && !isTokenSeparator(line[lastOff-1]) {
		lastOff--
	}

	var (
		isDefault  bool
		defaultOff int
		op         = OpInvalid
		opOff      int
		firstProp  []byte
		firstOff   int
	)
	p.lineProps = p.lineProps[:0]
	ts := tokens{line: line[:lastOff]}
	first := true
	for {
		tok, off, ok := ts.next()
		if !ok {
			break
		}
		switch {
		case first && string(tok) == tokenDefault:
			isDefault, defaultOff = true, off
		case op == OpInvalid:
			o, ok := lookupOp(tok)
			if !ok {
				return p.fail(lineNo, off, tok, syscall.EBADMSG, misplacedMessage(tok, isDefault))
			}
			op, opOff = o, off
		default:
			prop, errno, msg := p.property(tok)
			if errno != 0 {
				return p.fail(lineNo, off, tok, errno, msg)
			}
			if len(p.lineProps) == 0 {
				firstProp, firstOff = tok, off
			}
			p.lineProps = append(p.lineProps, prop)
		}
		first = false
	}

	last := line[lastOff:]
	var action Action
	switch string(last) {
	case "action=ALLOW":
		action = Allow
	case "action=DENY":
		action = Deny
	default:
		msg := "the last token must be action=ALLOW or action=DENY"
		if bytes.HasPrefix(last, []byte(prefixAction)) {
			msg = "action must be ALLOW or DENY"
		}
		return p.fail(lineNo, lastOff, last, syscall.EBADMSG, msg)
	}

	switch {
	case isDefault && len(p.lineProps) > 0:
		return p.fail(lineNo, firstOff, firstProp, syscall.EBADMSG, "a DEFAULT line cannot have properties")
	case isDefault && op == OpInvalid:
		if p.globalDefaultLine != 0 {
			return p.fail(lineNo, defaultOff, []byte(tokenDefault), syscall.EBADMSG,
				"duplicate global DEFAULT; the first is on line "+strconv.Itoa(p.globalDefaultLine))
		}
		p.globalDefaultLine = lineNo
		p.pol.GlobalDefault = newAction(action)
	case isDefault:
		if p.opDefaultLine[op] != 0 {
			return p.fail(lineNo, opOff, []byte(opTokens[op]), syscall.EBADMSG,
				"duplicate DEFAULT for this op; the first is on line "+strconv.Itoa(p.opDefaultLine[op]))
		}
		p.opDefaultLine[op] = lineNo
		p.pol.OpDefaults[op] = newAction(action)
	case op == OpInvalid:
		return p.fail(lineNo, lastOff, last, syscall.EBADMSG, "a rule needs "+expectedOps+" before the action")
	default:
		p.pol.Rules = append(p.pol.Rules, Rule{
			Op:     op,
			Props:  p.keepProps(p.lineProps),
			Action: action,
			Index:  len(p.pol.Rules),
			Line:   lineNo,
		})
	}
	return nil
}

func newAction(a Action) *Action { return &a }

func lookupOp(tok []byte) (Op, bool) {
	if !bytes.HasPrefix(tok, []byte(prefixOp)) {
		return OpInvalid, false
	}
	for op, name := range opTokens {
		if string(tok) == name {
			return Op(op), true
		}
	}
	return OpInvalid, false
}

// misplacedMessage explains a token found where op= was required.
func misplacedMessage(tok []byte, afterDefault bool) string {
	switch {
	case bytes.HasPrefix(tok, []byte(prefixOp)):
		return "unknown operation; expected " + expectedOps
	case bytes.HasPrefix(tok, []byte(prefixAction)):
		return "action= must be the last token of a line"
	case string(tok) == tokenDefault:
		return "DEFAULT must be the first token of a line"
	}
	for _, prefix := range propPrefixes {
		if !bytes.HasPrefix(tok, []byte(prefix)) {
			continue
		}
		if afterDefault {
			return "a DEFAULT line cannot have properties"
		}
		return "op= must come before the properties: expected " + expectedOps
	}
	if afterDefault {
		return "expected " + expectedOps + " or the action after DEFAULT"
	}
	return "expected " + expectedOps + " at the start of a rule"
}

var propPrefixes = [...]string{
	PropBootVerified:      "boot_verified=",
	PropDMVeritySignature: "dmverity_signature=",
	PropFSVeritySignature: "fsverity_signature=",
	PropDMVerityRootHash:  "dmverity_roothash=",
	PropFSVerityDigest:    "fsverity_digest=",
}

// property parses one property token (parse_property). Boolean values are
// exact; a digest property needs a non-empty value ("%s").
func (p *parser) property(tok []byte) (Property, syscall.Errno, string) {
	for kind, prefix := range propPrefixes {
		value, ok := bytes.CutPrefix(tok, []byte(prefix))
		if !ok {
			continue
		}
		kind := PropKind(kind)
		if kind.IsDigest() {
			if len(value) == 0 {
				return Property{}, syscall.EBADMSG, kind.String() + " needs a value ALG:HEX"
			}
			d, errno, msg := p.digest(value)
			if errno != 0 {
				return Property{}, errno, msg
			}
			return Property{Kind: kind, Digest: d}, 0, ""
		}
		switch string(value) {
		case "TRUE":
			return Property{Kind: kind, Value: true}, 0, ""
		case "FALSE":
			return Property{Kind: kind, Value: false}, 0, ""
		}
		return Property{}, syscall.EBADMSG, kind.String() + " must be TRUE or FALSE"
	}
	switch {
	case bytes.HasPrefix(tok, []byte(prefixOp)):
		return Property{}, syscall.EBADMSG, "a rule has exactly one op="
	case bytes.HasPrefix(tok, []byte(prefixAction)):
		return Property{}, syscall.EBADMSG, "action= must be the last token of a line"
	case string(tok) == tokenDefault:
		return Property{}, syscall.EBADMSG, "DEFAULT must be the first token of a line"
	}
	return Property{}, syscall.EBADMSG, "unknown property; expected " + expectedProps
}

// digest is ipe_digest_parse: ALG is everything before the first ':' (free
// text, possibly empty); HEX is decoded by hex2bin into (len+1)/2 bytes, so
// an odd length fails on the terminating NUL.
func (p *parser) digest(value []byte) (Digest, syscall.Errno, string) {
	alg, hex, ok := bytes.Cut(value, []byte{':'})
	if !ok {
		return Digest{}, syscall.EBADMSG, "digest must be ALG:HEX; there is no ':'"
	}
	n := (len(hex) + 1) / 2
	if len(p.digestSlab)+n > cap(p.digestSlab) {
		p.digestSlab = make([]byte, 0, nextSlab(cap(p.digestSlab), n, digestSlabMin, digestSlabMax))
	}
	start := len(p.digestSlab)
	for i := 0; i < n; i++ {
		hi := hexValue(hex, 2*i)
		lo := hexValue(hex, 2*i+1)
		if hi < 0 || lo < 0 {
			p.digestSlab = p.digestSlab[:start]
			if 2*i+1 == len(hex) && hi >= 0 {
				return Digest{}, syscall.EINVAL, "digest has an odd number of hex digits"
			}
			return Digest{}, syscall.EINVAL, "digest has a character that is not a hex digit after ':'"
		}
		p.digestSlab = append(p.digestSlab, byte(hi<<4|lo))
	}
	end := len(p.digestSlab)
	return Digest{Alg: p.intern(alg), Bytes: p.digestSlab[start:end:end]}, 0, ""
}

// hexValue is hex_to_bin of hex[i], reading past the end as the NUL
// terminator, which is not a hex digit.
func hexValue(hex []byte, i int) int {
	if i >= len(hex) {
		return -1
	}
	return int(hexDigits[hex[i]])
}

// hexDigits maps a byte to its hex value, or -1 (hex_to_bin: 0-9, a-f, A-F).
var hexDigits = func() (t [256]int8) {
	for c := range t {
		switch {
		case c >= '0' && c <= '9':
			t[c] = int8(c - '0')
		case c >= 'a' && c <= 'f':
			t[c] = int8(c-'a') + 10
		case c >= 'A' && c <= 'F':
			t[c] = int8(c-'A') + 10
		default:
			t[c] = -1
		}
	}
	return t
}()

// intern shares one string per algorithm name: a policy names a handful of
// algorithms many thousands of times.
func (p *parser) intern(alg []byte) string {
	if s, ok := p.algs[string(alg)]; ok {
		return s
	}
	if p.algs == nil {
		p.algs = make(map[string]string)
	}
	s := string(alg)
	p.algs[s] = s
	return s
}

func (p *parser) keepProps(props []Property) []Property {
	if len(props) == 0 {
		return nil
	}
	if len(p.propSlab)+len(props) > cap(p.propSlab) {
		p.propSlab = make([]Property, 0, nextSlab(cap(p.propSlab), len(props), propSlabMin, propSlabMax))
	}
	start := len(p.propSlab)
	p.propSlab = append(p.propSlab, props...)
	end := len(p.propSlab)
	return p.propSlab[start:end:end]
}

// ParseDigest parses an `ALG:HEX` digest the way a policy's
// dmverity_roothash= or fsverity_digest= value is parsed, returning a
// *ParseError (without position) with the kernel's errno on failure.
func ParseDigest(s string) (Digest, error) {
	var p parser
	if s == "" {
		return Digest{}, &ParseError{Message: "digest needs a value ALG:HEX", Errno: syscall.EBADMSG}
	}
	d, errno, msg := p.digest([]byte(s))
	if errno != 0 {
		return Digest{}, &ParseError{Token: s, Message: msg, Errno: errno}
	}
	return d, nil
}
