package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/policy"
)

func sampleState() *State {
	return &State{
		Instance: "0123456789abcdef",
		Active: ActivePolicy{Name: "p", Version: "1.2.3", Generation: 4, Digest: "sha256:AB", Signed: true,
			Text: "policy_name=p policy_version=1.2.3\nDEFAULT action=ALLOW\n"},
		Previous:     &ActivePolicy{Name: "p", Version: "1.2.2", Generation: 3, Text: "x"},
		CgroupPath:   "/sys/fs/cgroup/app",
		CgroupID:     1234,
		BootRoot:     "initramfs",
		BootSdev:     2,
		DMVerityMode: DMVerityUserspace,
		Observable:   []string{"boot_verified", "dmverity_roothash"},
		Programs:     []string{"bprm_check_security"},
		PID:          77,
		PIDStart:     999,
		LoadedAt:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestStateRoundTrip(t *testing.T) {
	in := sampleState()
	blob, err := encodeState(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(blob)%8 != 0 {
		t.Errorf("blob of %d bytes is not 8-byte aligned", len(blob))
	}
	out, err := decodeState(blob)
	if err != nil {
		t.Fatal(err)
	}
	if out.Active != in.Active || *out.Previous != *in.Previous || out.CgroupPath != in.CgroupPath ||
		out.CgroupID != in.CgroupID || out.BootSdev != in.BootSdev || out.PID != in.PID ||
		out.PIDStart != in.PIDStart || !out.LoadedAt.Equal(in.LoadedAt) ||
		strings.Join(out.Observable, ",") != strings.Join(in.Observable, ",") {
		t.Errorf("round trip changed the state:\n in %+v\nout %+v", in, out)
	}
}

func TestDecodeStateRejectsDamage(t *testing.T) {
	blob, err := encodeState(sampleState())
	if err != nil {
		t.Fatal(err)
	}
	jsonLen := binary.LittleEndian.Uint32(blob)
	long := append([]byte(nil), blob...)
	binary.LittleEndian.PutUint32(long, uint32(len(blob)))
	truncatedJSON := append([]byte(nil), blob...)
	binary.LittleEndian.PutUint32(truncatedJSON, 10)
	longText := append([]byte(nil), blob...)
	binary.LittleEndian.PutUint32(longText[stateHeaderLen+jsonLen:], uint32(len(blob)))
	for name, b := range map[string][]byte{
		"empty":             nil,
		"length too large":  long,
		"json cut short":    truncatedJSON,
		"text past the end": longText,
		"texts missing":     blob[:stateHeaderLen+jsonLen],
	} {
		if _, err := decodeState(b); !errors.Is(err, errStateCorrupt) {
			t.Errorf("%s: got %v, want errStateCorrupt", name, err)
		}
	}
	future := sampleState()
	blob, _ = encodeState(future)
	current, next := fmt.Sprintf(`"format":%d`, stateFormat), fmt.Sprintf(`"format":%d`, stateFormat+1)
	body := strings.Replace(string(blob[stateHeaderLen:]), current, next, 1)
	copy(blob[stateHeaderLen:], body)
	if _, err := decodeState(blob); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("format %d", stateFormat+1)) {
		t.Errorf("a state of another format was read: %v", err)
	}
}

// The texts are kept byte for byte, whatever they hold, and a state
// without a previous policy reads back without one.
func TestStateTextsRoundTrip(t *testing.T) {
	for _, previous := range []*ActivePolicy{nil, {Name: "p", Version: "1.2.2", Text: ""}, {Name: "p", Text: "\"}\x00\xff\n"}} {
		in := sampleState()
		in.Active.Text = "policy_name=\"p\" \x00\xfe\n\\"
		in.Previous = previous
		blob, err := encodeState(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeState(blob)
		if err != nil {
			t.Fatal(err)
		}
		if out.Active.Text != in.Active.Text {
			t.Errorf("active text %q, want %q", out.Active.Text, in.Active.Text)
		}
		switch {
		case previous == nil && out.Previous != nil:
			t.Errorf("previous %+v, want none", out.Previous)
		case previous != nil && (out.Previous == nil || *out.Previous != *previous):
			t.Errorf("previous %+v, want %+v", out.Previous, previous)
		}
	}
}

func TestEncodeStateRefusesOversizedPolicy(t *testing.T) {
	defer func(saved int) { maxStateBlob = saved }(maxStateBlob)
	maxStateBlob = 1 << 20
	s := sampleState()
	s.Active.Text = strings.Repeat("x", maxStateBlob)
	if _, err := encodeState(s); err == nil {
		t.Fatal("a state larger than bpfipe keeps was encoded")
	}
}

// A policy of 100,000 rules is about 11 MiB of text, more than one map
// value may hold: the state map spreads it over several entries.
func TestStateMapHoldsPolicyLargerThanOneMapValue(t *testing.T) {
	privateBPFFS(t) // skips without the privileges to create maps
	s := sampleState()
	s.Active.Text = strings.Repeat("op=EXECUTE dmverity_roothash=sha256:00 action=ALLOW\n", 200_000)
	m, err := newStateMap(s)
	if err != nil {
		t.Fatalf("store state of %d bytes of policy text: %v", len(s.Active.Text), err)
	}
	defer m.Close()
	if m.MaxEntries() < 2 {
		t.Fatalf("state of %d bytes fits %d entry", len(s.Active.Text), m.MaxEntries())
	}
	got, err := readStateMap(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.Active.Text != s.Active.Text || got.Active.Name != s.Active.Name {
		t.Errorf("state read back differs: %d bytes of text, want %d", len(got.Active.Text), len(s.Active.Text))
	}
}

func TestParseVersion(t *testing.T) {
	v, err := parseVersion("1.65535.0")
	if err != nil || v != (policy.Version{Major: 1, Minor: 65535, Rev: 0}) {
		t.Errorf("got %v, %v", v, err)
	}
	for _, bad := range []string{"1.2", "1.2.3.4", "1.2.65536", "a.b.c", ""} {
		if _, err := parseVersion(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestCheckUpdate(t *testing.T) {
	active := ActivePolicy{Name: "prod", Version: "1.2.3"}
	for _, tc := range []struct {
		name    string
		pname   string
		version policy.Version
		errno   syscall.Errno
	}{
		{"newer revision", "prod", policy.Version{Major: 1, Minor: 2, Rev: 4}, 0},
		{"newer major, lower minor", "prod", policy.Version{Major: 2}, 0},
		{"same version", "prod", policy.Version{Major: 1, Minor: 2, Rev: 3}, syscall.ESTALE},
		{"older version", "prod", policy.Version{Major: 1, Minor: 1, Rev: 9}, syscall.ESTALE},
		{"other name", "test", policy.Version{Major: 9}, syscall.EINVAL},
		// The name is checked first, as in ipe_update_policy.
		{"other name and older", "test", policy.Version{}, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckUpdate(active, &policy.Policy{Name: tc.pname, Version: tc.version})
			if tc.errno == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var r *Refusal
			if !errors.As(err, &r) || r.Errno != tc.errno {
				t.Fatalf("got %v, want a refusal with %v", err, tc.errno)
			}
		})
	}
}

func TestParseProcessStart(t *testing.T) {
	// comm may hold spaces and parentheses; field 22 is the start time.
	stat := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50"
	got, err := parseProcessStart(stat)
	if err != nil || got != 987654 {
		t.Errorf("got %d, %v; want 987654", got, err)
	}
	if _, err := parseProcessStart("12 (x) S 1"); err == nil {
		t.Error("a short stat line parsed")
	}
}
