package policy

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"syscall"
)

// kernelModel is a second, deliberately naive parser that follows the
// kernel's C step by step (strsep, match_token, parse_version,
// ipe_digest_parse) on strings, built from different pieces than Parse
// (strconv, encoding/hex, strings.Split). It only answers which errno the
// kernel returns, 0 for success. Tests and the fuzzer compare it with Parse,
// so a shortcut taken in Parse for speed cannot drift from the kernel.
func kernelModel(text []byte) syscall.Errno {
	if len(text) == 0 {
		return syscall.EBADMSG
	}
	s := string(text)
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	m := model{}
	for _, line := range strsepAll(s, "\n\r") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		// Byte by byte: strings.TrimRight would read the cutset and the
		// line as UTF-8 and trim any invalid byte as U+FFFD.
		for line != "" && strings.IndexByte(" \t\n\v\f\r\xa0", line[len(line)-1]) >= 0 {
			line = line[:len(line)-1]
		}
		if line == "" {
			continue
		}
		var errno syscall.Errno
		if !m.header {
			errno = modelHeader(line)
			m.header = true
		} else {
			errno = m.rule(line)
		}
		if errno != 0 {
			return errno
		}
	}
	if !m.header {
		return syscall.EBADMSG
	}
	if !m.global {
		for _, set := range m.opDefault {
			if !set {
				return syscall.EBADMSG
			}
		}
	}
	return 0
}

type model struct {
	header    bool
	global    bool
	opDefault [NumOps]bool
}

// strsepAll returns what repeated strsep(&s, delims) yields, empty pieces
// included.
func strsepAll(s, delims string) []string {
	var out []string
	for {
		i := strings.IndexAny(s, delims)
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
}

// matchToken is lib/parser.c match_token for the two pattern shapes IPE
// uses: a literal, or a literal prefix followed by "%s" (a non-empty rest).
// It returns the index of the first matching pattern, or -1.
func matchToken(tok string, patterns []string) (int, string) {
	for i, pat := range patterns {
		if prefix, ok := strings.CutSuffix(pat, "%s"); ok {
			if rest, ok := strings.CutPrefix(tok, prefix); ok && rest != "" {
				return i, rest
			}
		} else if tok == pat {
			return i, ""
		}
	}
	return -1, ""
}

func modelHeader(line string) syscall.Errno {
	idx := 0
	for _, t := range strsepAll(line, " \t") {
		if t == "" {
			continue
		}
		if idx >= 2 {
			return syscall.EBADMSG
		}
		token, arg := matchToken(t, []string{"policy_name=%s", "policy_version=%s"})
		if token != idx {
			return syscall.EBADMSG
		}
		if token == 1 {
			if errno := modelVersion(arg); errno != 0 {
				return errno
			}
		}
		idx++
	}
	if idx != 2 {
		return syscall.EBADMSG
	}
	return 0
}

func modelVersion(ver string) syscall.Errno {
	count := 0
	for _, part := range strings.Split(ver, ".") {
		if count >= 3 {
			return syscall.EBADMSG
		}
		// kstrtou16: one optional '+', then base-10 digits.
		v, err := strconv.ParseUint(strings.TrimPrefix(part, "+"), 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange):
			return syscall.ERANGE
		case err != nil:
			return syscall.EINVAL
		case v > 0xFFFF:
			return syscall.ERANGE
		}
		count++
	}
	if count != 3 {
		return syscall.EBADMSG
	}
	return 0
}

var (
	modelOps     = []string{"op=EXECUTE", "op=FIRMWARE", "op=KMODULE", "op=KEXEC_IMAGE", "op=KEXEC_INITRAMFS", "op=POLICY", "op=X509_CERT"}
	modelActions = []string{"action=ALLOW", "action=DENY"}
	modelProps   = []string{
		"boot_verified=FALSE", "boot_verified=TRUE", "dmverity_roothash=%s",
		"dmverity_signature=FALSE", "dmverity_signature=TRUE", "fsverity_digest=%s",
		"fsverity_signature=FALSE", "fsverity_signature=TRUE",
	}
)

func (m *model) rule(line string) syscall.Errno {
	toks := strsepAll(line, " \t")
	isDefault, first, op, props := false, true, -1, 0
	for _, t := range toks[:len(toks)-1] {
		if t == "" {
			continue
		}
		switch {
		case first && t == "DEFAULT":
			isDefault = true
		case op < 0:
			if op, _ = matchToken(t, modelOps); op < 0 {
				return syscall.EBADMSG
			}
		default:
			prop, arg := matchToken(t, modelProps)
			if prop < 0 {
				return syscall.EBADMSG
			}
			if modelProps[prop] == "dmverity_roothash=%s" || modelProps[prop] == "fsverity_digest=%s" {
				if errno := modelDigest(arg); errno != 0 {
					return errno
				}
			}
			props++
		}
		first = false
	}
	if action, _ := matchToken(toks[len(toks)-1], modelActions); action < 0 {
		return syscall.EBADMSG
	}
	switch {
	case isDefault && props > 0:
		return syscall.EBADMSG
	case isDefault && op < 0:
		if m.global {
			return syscall.EBADMSG
		}
		m.global = true
	case isDefault:
		if m.opDefault[op] {
			return syscall.EBADMSG
		}
		m.opDefault[op] = true
	case op < 0:
		return syscall.EBADMSG
	}
	return 0
}

func modelDigest(v string) syscall.Errno {
	_, h, ok := strings.Cut(v, ":")
	if !ok {
		return syscall.EBADMSG
	}
	if _, err := hex.DecodeString(h); err != nil {
		return syscall.EINVAL
	}
	return 0
}
