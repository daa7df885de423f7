package vm

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// feed writes s to the filter in pieces of the given size, as a pipe might
// deliver it.
func feed(f *outputFilter, s string, chunk int) {
	for len(s) > 0 {
		n := min(chunk, len(s))
		f.Write([]byte(s[:n]))
		s = s[n:]
	}
}

func TestOutputFilter(t *testing.T) {
	const nonce = "0123abcd"
	start := guestspec.StartMarker(nonce)
	tests := []struct {
		name      string
		stream    string
		wantOut   string
		wantKind  string
		wantValue string
		wantStart bool
	}{
		{
			name:     "firmware noise dropped, output kept byte for byte",
			stream:   "\x1b[2J\x1b[01;01HBdsDxe: loading" + start + "line one\r\nbin\x00ary\n" + guestspec.ExitMarker(nonce, 7),
			wantOut:  "line one\r\nbin\x00ary\n",
			wantKind: "exit", wantValue: "7", wantStart: true,
		},
		{
			name:     "output without a final newline",
			stream:   start + "no newline" + guestspec.ExitMarker(nonce, 0),
			wantOut:  "no newline",
			wantKind: "exit", wantValue: "0", wantStart: true,
		},
		{
			name:     "marker with another nonce is output",
			stream:   start + guestspec.ExitMarker("forged", 0) + "after" + guestspec.ExitMarker(nonce, 3),
			wantOut:  guestspec.ExitMarker("forged", 0) + "after",
			wantKind: "exit", wantValue: "3", wantStart: true,
		},
		{
			name:     "init failure",
			stream:   start + guestspec.FailMarker(nonce, "mount proc: permission denied"),
			wantOut:  "",
			wantKind: "fail", wantValue: "mount proc: permission denied", wantStart: true,
		},
		{
			name:     "nothing after the marker is output",
			stream:   start + "x" + guestspec.ExitMarker(nonce, 1) + "late noise\n",
			wantOut:  "x",
			wantKind: "exit", wantValue: "1", wantStart: true,
		},
		{
			name:      "guest died mid-output",
			stream:    start + "partial\nBPFIPE-EX",
			wantOut:   "partial\nBPFIPE-EX",
			wantStart: true,
		},
		{
			name:   "guest died before init started",
			stream: "SeaBIOS\nBooting from ROM..\n",
		},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 64, 1 << 20} {
			var out bytes.Buffer
			f := newOutputFilter(&out, nonce, 10)
			feed(f, tt.stream, chunk)
			f.flush()
			kind, value, started := f.result()
			if out.String() != tt.wantOut || kind != tt.wantKind || value != tt.wantValue || started != tt.wantStart {
				t.Errorf("%s (chunks of %d): output %q, end %q %q, started %v; want %q, %q %q, %v",
					tt.name, chunk, out.String(), kind, value, started, tt.wantOut, tt.wantKind, tt.wantValue, tt.wantStart)
			}
		}
	}
}

func TestParseExitStatus(t *testing.T) {
	if s, err := guestspec.ParseExitStatus("255"); err != nil || s != 255 {
		t.Errorf("ParseExitStatus(255) = %d, %v", s, err)
	}
	if _, err := guestspec.ParseExitStatus("x"); err == nil {
		t.Error("ParseExitStatus accepted a non-number")
	}
}

func TestLineTail(t *testing.T) {
	tail := newLineTail(3)
	tail.Write([]byte("one\r\ntwo\n\x1b[2Jthree\nfour\n[  1.0] Kernel panic - not syncing: test\nfive\nsix"))
	got := tail.Lines()
	want := []string{"[  1.0] Kernel panic - not syncing: test", "five", "six"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Lines() = %q, want %q", got, want)
	}
	tail.Write([]byte("\nseven\neight\nnine\n"))
	if got := tail.panicked(); got != "[  1.0] Kernel panic - not syncing: test" {
		t.Errorf("panicked() = %q after the panic line scrolled out, want it kept", got)
	}
	if got := newLineTail(3).panicked(); got != "" {
		t.Errorf("panicked() = %q with no panic", got)
	}
}

func TestPrintable(t *testing.T) {
	if got := printable("\x1b[01;01H\x1b[=3hBdsDxe:\tok\x07\r"); got != "BdsDxe: ok" {
		t.Errorf("printable = %q, want %q", got, "BdsDxe: ok")
	}
}
