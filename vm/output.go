package vm

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// outputFilter receives the raw bytes of the guest's output port. It drops
// everything before the start marker (firmware noise), passes the command's
// output through unchanged, and stops at the exit or failure marker, whose
// content it records.
type outputFilter struct {
	mu       sync.Mutex
	dst      io.Writer
	start    string
	exitMark string
	failMark string

	started  bool
	pending  []byte // bytes held back: they may begin a marker
	ended    bool
	endKind  string // "exit" or "fail"
	endLine  []byte // what follows the end marker's prefix, up to newline
	closed   bool
	writeErr error
	tail     *lineTail
}

func newOutputFilter(dst io.Writer, nonce string, tailLines int) *outputFilter {
	exit, fail := guestspec.EndPrefix(nonce)
	return &outputFilter{
		dst:      dst,
		start:    guestspec.StartMarker(nonce),
		exitMark: exit,
		failMark: fail,
		tail:     newLineTail(tailLines),
	}
}

func (f *outputFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(p)
	if f.closed {
		return n, nil
	}
	f.pending = append(f.pending, p...)
	f.process()
	// Output that the destination refuses must not stall qemu: record the
	// error and keep draining.
	return n, nil
}

func (f *outputFilter) process() {
	if !f.started {
		i := bytes.Index(f.pending, []byte(f.start))
		if i < 0 {
			// Keep only what could still be the start of the marker.
			if keep := len(f.start) - 1; len(f.pending) > keep {
				f.pending = append(f.pending[:0], f.pending[len(f.pending)-keep:]...)
			}
			return
		}
		f.pending = f.pending[i+len(f.start):]
		f.started = true
	}
	if !f.ended {
		exitAt := bytes.Index(f.pending, []byte(f.exitMark))
		failAt := bytes.Index(f.pending, []byte(f.failMark))
		at, kind, mark := exitAt, "exit", f.exitMark
		if failAt >= 0 && (exitAt < 0 || failAt < exitAt) {
			at, kind, mark = failAt, "fail", f.failMark
		}
		if at < 0 {
			safe := len(f.pending) - partialSuffix(f.pending, f.exitMark, f.failMark)
			f.emit(f.pending[:safe])
			f.pending = append(f.pending[:0], f.pending[safe:]...)
			return
		}
		f.emit(f.pending[:at])
		f.pending = f.pending[at+len(mark):]
		f.ended = true
		f.endKind = kind
	}
	if nl := bytes.IndexByte(f.pending, '\n'); nl >= 0 {
		f.endLine = append(f.endLine, f.pending[:nl]...)
		f.closed = true
	} else {
		f.endLine = append(f.endLine, f.pending...)
	}
	f.pending = f.pending[:0]
}

func (f *outputFilter) emit(b []byte) {
	if len(b) == 0 {
		return
	}
	f.tail.Write(b)
	if f.writeErr == nil && f.dst != nil {
		_, f.writeErr = f.dst.Write(b)
	}
}

// partialSuffix returns the length of the longest suffix of b that is a
// proper prefix of one of the marks.
func partialSuffix(b []byte, marks ...string) int {
	longest := 0
	for _, mark := range marks {
		max := len(mark) - 1
		if max > len(b) {
			max = len(b)
		}
		for n := max; n > longest; n-- {
			if bytes.HasSuffix(b, []byte(mark[:n])) {
				longest = n
				break
			}
		}
	}
	return longest
}

// flush passes on bytes held back for a marker that never came.
func (f *outputFilter) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started && !f.ended {
		f.emit(f.pending)
		f.pending = f.pending[:0]
	}
}

// result reports the end marker: kind is "" when none arrived.
func (f *outputFilter) result() (kind, value string, started bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ended {
		return "", "", f.started
	}
	return f.endKind, strings.TrimRight(string(f.endLine), "\r"), f.started
}

// lineTail keeps the last lines written to it, for error reports, and the
// first line that reports a kernel panic, which a long oops dump could push
// out of the kept lines.
type lineTail struct {
	mu        sync.Mutex
	max       int
	lines     []string
	partial   []byte
	panicLine string
}

func newLineTail(max int) *lineTail { return &lineTail{max: max} }

func (t *lineTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		nl := bytes.IndexByte(t.partial, '\n')
		if nl < 0 {
			break
		}
		t.add(string(t.partial[:nl]))
		t.partial = t.partial[nl+1:]
	}
	// A line that never ends (a progress bar, binary junk) must not grow
	// without bound.
	if len(t.partial) > 4096 {
		t.add(string(t.partial))
		t.partial = t.partial[:0]
	}
	return len(p), nil
}

func (t *lineTail) add(line string) {
	line = printable(line)
	if line == "" {
		return
	}
	if t.panicLine == "" && strings.Contains(line, "Kernel panic") {
		t.panicLine = line
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// Lines returns the kept lines, including an unfinished last one.
func (t *lineTail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := append([]string(nil), t.lines...)
	if last := printable(string(t.partial)); last != "" {
		lines = append(lines, last)
		if len(lines) > t.max {
			lines = lines[1:]
		}
	}
	return lines
}

// panicked returns the kernel's panic line, if one was seen.
func (t *lineTail) panicked() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.panicLine == "" && strings.Contains(string(t.partial), "Kernel panic") {
		return printable(string(t.partial))
	}
	return t.panicLine
}

// printable strips terminal escape sequences and control characters, which
// firmware and the kernel's console code emit, so error messages stay
// readable.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b:
			// Skip an escape sequence: ESC [ params final, or ESC and one byte.
			if i+1 < len(s) && s[i+1] == '[' {
				i += 2
				for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
					i++
				}
			} else {
				i++
			}
		case c == '\t':
			b.WriteByte(' ')
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}
