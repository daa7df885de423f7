package loader

import (
	"encoding/json"
	"testing"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/policy"
)

func TestUntrustedString(t *testing.T) {
	// kernel/audit.c audit_string_contains_control: '"', bytes below 0x21
	// and above 0x7e force hex; everything else is quoted.
	for _, tc := range []struct{ in, want string }{
		{"sh", `"sh"`},
		{"/usr/bin/true", `"/usr/bin/true"`},
		{"", `""`},
		{"~!", `"~!"`},
		{"a b", "612062"},
		{`a"b`, "612262"},
		{"tab\t", "74616209"},
		{"\x7f", "7F"},
		{"caf\xc3\xa9", "636166C3A9"},
		{"\x21", `"!"`},
		{"\x20", "20"},
	} {
		if got := UntrustedString(tc.in); got != tc.want {
			t.Errorf("UntrustedString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func putString(dst []uint8, s string) { copy(dst, s) }

func TestAccessRecordMatchesIPELayout(t *testing.T) {
	// The records below are IPE's, from the admin guide and the Azure
	// Linux lab quoted in the reference, without the audit prefix.
	withFile := AccessRecord{Op: "EXECUTE", Hook: "MMAP", Enforcing: true, PID: 2241, Comm: "ld-linux.so",
		HasFile: true, Path: "/deny/lib/libc.so.6", Dev: "sda2", Ino: 14549020, Rule: "DEFAULT action=DENY"}
	want := `ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=2241 comm="ld-linux.so" path="/deny/lib/libc.so.6" dev="sda2" ino=14549020 rule="DEFAULT action=DENY"`
	if got := withFile.String(); got != want {
		t.Errorf("with file:\n got %s\nwant %s", got, want)
	}
	anon := AccessRecord{Op: "EXECUTE", Hook: "MMAP", Enforcing: true, PID: 2472, Comm: "mmap_test", Rule: "DEFAULT action=DENY"}
	want = `ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=2472 comm="mmap_test" path=? dev=? ino=? rule="DEFAULT action=DENY"`
	if got := anon.String(); got != want {
		t.Errorf("anonymous:\n got %s\nwant %s", got, want)
	}
	permissive := AccessRecord{Op: "EXECUTE", Hook: "BPRM_CHECK", PID: 1204583, Comm: "bash", HasFile: true,
		Path: "/var/tmp/true", Dev: "tmpfs", Ino: 2, Rule: "DEFAULT op=EXECUTE action=DENY"}
	want = `ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=0 pid=1204583 comm="bash" path="/var/tmp/true" dev="tmpfs" ino=2 rule="DEFAULT op=EXECUTE action=DENY"`
	if got := permissive.String(); got != want {
		t.Errorf("permissive:\n got %s\nwant %s", got, want)
	}
	spaced := AccessRecord{Op: "EXECUTE", Hook: "BPRM_CHECK", PID: 1, Comm: "my prog", HasFile: true, Path: "/tmp/a b", Dev: "vda", Ino: 9, Rule: "DEFAULT action=DENY"}
	want = `ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=0 pid=1 comm=6D792070726F67 path=2F746D702F612062 dev="vda" ino=9 rule="DEFAULT action=DENY"`
	if got := spaced.String(); got != want {
		t.Errorf("hex-encoded fields:\n got %s\nwant %s", got, want)
	}
}

const recordPolicy = `policy_name=records policy_version=1.0.0
DEFAULT action=ALLOW
DEFAULT op=EXECUTE action=DENY
op=EXECUTE boot_verified=TRUE action=ALLOW
op=EXECUTE dmverity_roothash=sha256:ab12 action=ALLOW
`

func TestDecodeAccessRendersRule(t *testing.T) {
	pol, err := policy.Parse("records", []byte(recordPolicy))
	if err != nil {
		t.Fatal(err)
	}
	source := func(gen uint32) *policy.Policy {
		if gen == 7 {
			return pol
		}
		return nil
	}
	base := bpf.Event{Ino: 42, Pid: 99, Generation: 7, Op: uint8(policy.OpExecute), Hook: 0, Enforcing: 1, HasFile: 1}
	putString(base.Comm[:], "sh")
	putString(base.Sid[:], "vda1")
	putString(base.Path[:], "/usr/bin/x")

	for _, tc := range []struct {
		name   string
		mutate func(*bpf.Event)
		want   string
	}{
		{"rule with digest", func(e *bpf.Event) { e.Scope, e.Rule, e.Action = bpf.ScopeRule, 1, 1 },
			`ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=99 comm="sh" path="/usr/bin/x" dev="vda1" ino=42 rule="op=EXECUTE dmverity_roothash="sha256":AB12 action=ALLOW"`},
		{"op default", func(e *bpf.Event) { e.Scope, e.Action = bpf.ScopeOpDefault, 0 },
			`ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=99 comm="sh" path="/usr/bin/x" dev="vda1" ino=42 rule="DEFAULT op=EXECUTE action=DENY"`},
		{"global default, no file", func(e *bpf.Event) {
			e.Scope, e.Action, e.Op, e.Hook, e.HasFile = bpf.ScopeGlobalDefault, 1, uint8(policy.OpKmodule), 4, 0
		}, `ipe_op=KMODULE ipe_hook=KERNEL_LOAD enforcing=1 pid=99 comm="sh" path=? dev=? ino=? rule="DEFAULT action=ALLOW"`},
		{"rule of a forgotten generation", func(e *bpf.Event) { e.Scope, e.Rule, e.Generation = bpf.ScopeRule, 0, 3 },
			`ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=99 comm="sh" path="/usr/bin/x" dev="vda1" ino=42 rule="?"`},
		{"rule index past the policy", func(e *bpf.Event) { e.Scope, e.Rule = bpf.ScopeRule, 5 },
			`ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=99 comm="sh" path="/usr/bin/x" dev="vda1" ino=42 rule="?"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := base
			tc.mutate(&ev)
			rec := DecodeAccess(&ev, source)
			if got := rec.String(); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestAccessRecordJSON(t *testing.T) {
	rec := AccessRecord{Op: "EXECUTE", Hook: "MPROTECT", Enforcing: true, PID: 5, Comm: "a\"b", Rule: "DEFAULT action=DENY", Action: "DENY", Generation: 2}
	var got map[string]any
	if err := json.Unmarshal(rec.JSON(), &got); err != nil {
		t.Fatalf("JSON does not parse: %v: %s", err, rec.JSON())
	}
	want := map[string]any{"type": "IPE_ACCESS", "ipe_op": "EXECUTE", "ipe_hook": "MPROTECT", "enforcing": true,
		"pid": 5.0, "comm": "a\"b", "has_file": false, "rule": "DEFAULT action=DENY", "action": "DENY", "generation": 2.0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	for _, absent := range []string{"path", "dev", "ino"} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s present for a record without a file", absent)
		}
	}
}
