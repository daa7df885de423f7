package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestTestdataFixtures pins what each fixture in testdata/ parses to; the
// same files seed the fuzzer.
func TestTestdataFixtures(t *testing.T) {
	tests := []struct {
		file  string
		errno syscall.Errno
		name  string
		ver   Version
		rules int
		line  int // for rejections
	}{
		{file: "revocation.pol", name: "revocation", ver: Version{1, 0, 0}, rules: 3},
		{file: "per-op-defaults.pol", name: "per_op_defaults", ver: Version{0, 1, 65535}, rules: 3},
		{file: "whitespace-crlf.pol", name: "crlf", ver: Version{2, 2, 0}, rules: 2},
		{file: "bad-version-erange.pol", errno: syscall.ERANGE, line: 1},
		{file: "bad-digest-einval.pol", errno: syscall.EINVAL, line: 3},
		{file: "bad-action-ebadmsg.pol", errno: syscall.EBADMSG, line: 3},
	}
	for _, tc := range tests {
		text, err := os.ReadFile(filepath.Join("testdata", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(tc.file, text)
		if got := errnoOf(t, err); got != tc.errno {
			t.Errorf("%s: got %v, want %s", tc.file, err, ErrnoName(tc.errno))
			continue
		}
		if err != nil {
			if line := err.(*ParseError).Line; line != tc.line {
				t.Errorf("%s: error on line %d, want %d", tc.file, line, tc.line)
			}
			continue
		}
		if p.Name != tc.name || p.Version != tc.ver || len(p.Rules) != tc.rules {
			t.Errorf("%s: got %q %v with %d rules, want %q %v with %d", tc.file, p.Name, p.Version, len(p.Rules), tc.name, tc.ver, tc.rules)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.text))
	}
	for _, tc := range kunitCases {
		f.Add([]byte(tc.text))
	}
	fixtures, err := filepath.Glob(filepath.Join("testdata", "*.pol"))
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range fixtures {
		text, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(text)
	}

	f.Fuzz(func(t *testing.T, text []byte) {
		p, err := Parse("fuzz.pol", text)
		want := kernelModel(text)
		if err != nil {
			pe, ok := err.(*ParseError)
			if !ok {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if p != nil {
				t.Fatal("Parse returned both a policy and an error")
			}
			switch pe.Errno {
			case syscall.EBADMSG, syscall.EINVAL, syscall.ERANGE:
			default:
				t.Fatalf("errno %d is none of EBADMSG, EINVAL, ERANGE", pe.Errno)
			}
			if pe.Errno != want {
				t.Fatalf("Parse says %v; the kernel model says %s", err, ErrnoName(want))
			}
			checkErrorPosition(t, text, pe)
			return
		}
		if want != 0 {
			t.Fatalf("Parse accepted what the kernel model rejects with %s", ErrnoName(want))
		}
		for i, r := range p.Rules {
			if r.Index != i || r.Op >= OpInvalid || (i > 0 && r.Line <= p.Rules[i-1].Line) {
				t.Fatalf("rule %d has Index %d Op %v Line %d", i, r.Index, r.Op, r.Line)
			}
		}
		formatted := Format(p)
		q, err := Parse("formatted.pol", formatted)
		if err != nil {
			t.Fatalf("Format output does not parse: %v\n%q", err, formatted)
		}
		if !p.Equal(q) {
			t.Fatalf("Format changed the policy:\n%q\n->\n%q", text, formatted)
		}
		if again := Format(q); !bytes.Equal(again, formatted) {
			t.Fatalf("Format is not a fixed point:\n%q\n->\n%q", formatted, again)
		}
	})
}

// checkErrorPosition asserts that a reported token really is at the
// reported line and column of the text.
func checkErrorPosition(t *testing.T, text []byte, pe *ParseError) {
	t.Helper()
	if pe.Line < 0 || pe.Column < 0 || (pe.Line == 0 && pe.Column != 0) {
		t.Fatalf("impossible position %d:%d", pe.Line, pe.Column)
	}
	if pe.Token == "" {
		return
	}
	if nul := bytes.IndexByte(text, 0); nul >= 0 {
		text = text[:nul]
	}
	// Split on each \n and \r separately, as the kernel does.
	var all [][]byte
	start := 0
	for i, c := range text {
		if c == '\n' || c == '\r' {
			all = append(all, text[start:i])
			start = i + 1
		}
	}
	all = append(all, text[start:])
	if pe.Line > len(all) {
		t.Fatalf("line %d beyond the %d lines of the text", pe.Line, len(all))
	}
	line := all[pe.Line-1]
	at := pe.Column - 1
	if pe.Column == 0 || at+len(pe.Token) > len(line) || string(line[at:at+len(pe.Token)]) != pe.Token {
		t.Fatalf("token %q is not at %d:%d of %q", pe.Token, pe.Line, pe.Column, line)
	}
}
