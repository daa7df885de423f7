package policy

import (
	"bytes"
	"encoding/binary"
	"syscall"
	"testing"
	"unicode/utf16"
)

// kunitCases restates, as this project's own table, the parser cases of the
// kernel's KUnit suite (security/ipe/policy_tests.c, torvalds/linux
// f33e46a0c6bd): the same inputs and the errno the kernel asserts for each.
// Each comment is the kernel's case name.
var kunitCases = []struct {
	kernelName string
	text       string
	errno      syscall.Errno
}{
	// "basic"
	{"basic", "policy_name=allowall policy_version=0.0.0\nDEFAULT action=ALLOW", 0},
	// "trailing comment"
	{"trailing comment", "policy_name=trailing_comment policy_version=152.0.0 #This is comment\nDEFAULT action=ALLOW", 0},
	// "trailing newline"
	{"trailing newline", "policy_name=allowallnewline policy_version=0.2.0\nDEFAULT action=ALLOW\n\n", 0},
	// "clrf newline"
	{"clrf newline", "policy_name=carriagereturnlinefeed policy_version=0.0.1\nDEFAULT action=ALLOW\n\r\n", 0},
	// "various whitespaces and nested default"
	{"various whitespaces and nested default", "policy_name=whitespace policy_version=0.0.0\n" +
		"DEFAULT\taction=ALLOW\n" +
		"     \t     DEFAULT \t    op=EXECUTE      action=DENY\n" +
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n" +
		"# this is a\tcomment\t\t\t\t\n" +
		"DEFAULT \t op=KMODULE\t\t\t  action=DENY\r\n" +
		"op=KMODULE boot_verified=TRUE action=ALLOW\n", 0},
	// "negative version"
	{"negative version", "policy_name=boot_verified policy_version=-1236.0.0\nDEFAULT\taction=ALLOW\n", syscall.EINVAL},
	// "special characters" (the C literal's "%%" and "\\" are two '%' and one '\')
	{"special characters", "policy_name=$@!*&^%%\\:;{}() policy_version=0.0.0\nDEFAULT action=ALLOW", 0},
	// "overflow version"
	{"overflow version", "policy_name=test policy_version=999999.0.0\nDEFAULT action=ALLOW", syscall.ERANGE},
	// "incomplete version"
	{"incomplete version", "policy_name=test policy_version=255.0\nDEFAULT action=ALLOW", syscall.EBADMSG},
	// "extra version"
	{"extra version", "policy_name=test policy_version=111.0.0.0\nDEFAULT action=ALLOW", syscall.EBADMSG},
	// "0-length policy"
	{"0-length policy", "", syscall.EBADMSG},
	// "random null in header"
	{"random null in header", "policy_name=test\x00policy_version=0.0.0\nDEFAULT action=ALLOW", syscall.EBADMSG},
	// "incomplete policy from NULL"
	{"incomplete policy from NULL", "policy_name=test policy_version=0.0.0\n\x00DEFAULT action=ALLOW", syscall.EBADMSG},
	// "NULL truncates policy"
	{"NULL truncates policy", "policy_name=test policy_version=0.0.0\nDEFAULT action=DENY\n\x00op=EXECUTE dmverity_signature=TRUE action=ALLOW\n", 0},
	// "invalid property type"
	{"invalid property type", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=abc action=ALLOW", syscall.EBADMSG},
	// "missing policy header"
	{"missing policy header", "DEFAULT action=ALLOW", syscall.EBADMSG},
	// "missing default definition"
	{"missing default definition", "policy_name=test policy_version=0.0.0\n", syscall.EBADMSG},
	// "invalid rule ordering"
	{"invalid rule ordering", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\ndmverity_signature=TRUE op=EXECUTE action=ALLOW", syscall.EBADMSG},
	// "invalid rule ordering (2)"
	{"invalid rule ordering (2)", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\naction=ALLOW op=EXECUTE dmverity_signature=TRUE", syscall.EBADMSG},
	// "invalid version"
	{"invalid version", "policy_name=test policy_version=0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW", syscall.EBADMSG},
	// "unknown operation"
	{"unknown operation", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nop=UNKNOWN dmverity_signature=TRUE action=ALLOW", syscall.EBADMSG},
	// "missing space after policy name"
	{"missing space after policy name", "policy_name=asdvpolicy_version=0.0.0\nDEFAULT action=ALLOW\n", syscall.EBADMSG},
	// "expanded ascii"
	{"expanded ascii", "policy_name=test\xFF\xEF policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW", 0},
	// "invalid property value (2)"
	{"invalid property value (2)", "policy_name=test\xFF\xEF policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=GOOD_DOG action=ALLOW", syscall.EBADMSG},
	// "double header"
	{"double header", "policy_name=test policy_version=0.0.0\npolicy_name=test policy_version=0.1.0\nDEFAULT action=ALLOW", syscall.EBADMSG},
	// "double default"
	{"double default", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT action=ALLOW\n", syscall.EBADMSG},
	// "double operation default"
	{"double operation default", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nDEFAULT op=EXECUTE action=ALLOW\n", syscall.EBADMSG},
	// "invalid action value"
	{"invalid action value", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DEN\n", syscall.EBADMSG},
	// "invalid action value (2)"
	{"invalid action value (2)", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action\n", syscall.EBADMSG},
	// "unrecognized statement"
	{"unrecognized statement", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nUNKNOWN value=true\n", syscall.EBADMSG},
	// "old-style digest" (dmverity_roothash)
	{"old-style digest", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=1c0d7ee1f8343b7fbe418378e8eb22c061d7dec7 action=DENY\n", syscall.EBADMSG},
	// "old-style digest" (fsverity_digest)
	{"old-style digest", "policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=1c0d7ee1f8343b7fbe418378e8eb22c061d7dec7 action=DENY\n", syscall.EBADMSG},
}

func TestKUnitParserCases(t *testing.T) {
	if len(kunitCases) != 32 {
		t.Fatalf("the kernel table has 32 cases, this one %d", len(kunitCases))
	}
	for _, tc := range kunitCases {
		// The kernel harness passes strlen() bytes; the full literal must
		// give the same answer because the parser stops at the NUL anyway.
		full := []byte(tc.text)
		cstr := full
		if i := bytes.IndexByte(full, 0); i >= 0 {
			cstr = full[:i]
		}
		for _, input := range [][]byte{cstr, full} {
			_, err := Parse("kunit.pol", input)
			if got := errnoOf(t, err); got != tc.errno {
				t.Errorf("%s (%d bytes): got %s (%v), kernel says %s", tc.kernelName, len(input), ErrnoName(got), err, ErrnoName(tc.errno))
			}
			if got := kernelModel(input); got != tc.errno {
				t.Errorf("%s: kernel model gives %s, kernel says %s", tc.kernelName, ErrnoName(got), ErrnoName(tc.errno))
			}
		}
	}
}

// TestKUnitWideString is ipe_parser_widestring_test: a UTF-16 policy is
// refused, because its first NUL byte leaves only "p".
func TestKUnitWideString(t *testing.T) {
	units := utf16.Encode([]rune("policy_name=Test policy_version=0.0.0\nDEFAULT action=ALLOW"))
	wide := make([]byte, 2*len(units))
	for i, u := range units {
		binary.LittleEndian.PutUint16(wide[2*i:], u)
	}
	_, err := Parse("wide.pol", wide)
	if got := errnoOf(t, err); got != syscall.EBADMSG {
		t.Errorf("wide-string policy: got %v, want EBADMSG", err)
	}
}

// errnoOf returns 0 for success and the errno of a *ParseError, failing the
// test for any other error.
func errnoOf(t *testing.T, err error) syscall.Errno {
	t.Helper()
	if err == nil {
		return 0
	}
	pe, ok := err.(*ParseError)
	if !ok {
		t.Fatalf("error %v (%T) is not a *ParseError", err, err)
	}
	return pe.Errno
}
