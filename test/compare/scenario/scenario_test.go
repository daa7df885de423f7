package scenario

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestScenarioFilesAreValid(t *testing.T) {
	files, err := filepath.Glob("../scenarios/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files found: %v", err)
	}
	names := map[string]string{}
	images := map[string]Image{}
	disks := map[string]FSVerityDisk{}
	for _, f := range files {
		s, err := Read(f)
		if err != nil {
			t.Error(err)
			continue
		}
		if prev, dup := names[s.Name]; dup {
			t.Errorf("%s and %s share the name %q", prev, f, s.Name)
		}
		names[s.Name] = f
		// The runner opens each image once per boot; two scenarios naming
		// one image must describe it the same way.
		for _, img := range s.Images {
			if prev, ok := images[img.Name]; ok && !sameImage(prev, img) {
				t.Errorf("%s describes image %q differently from another scenario", f, img.Name)
			}
			images[img.Name] = img
		}
		for _, d := range s.FSVerity {
			if prev, ok := disks[d.Name]; ok && !reflect.DeepEqual(prev, d) {
				t.Errorf("%s describes fs-verity disk %q differently from another scenario", f, d.Name)
			}
			disks[d.Name] = d
		}
	}
}

func sameImage(a, b Image) bool {
	if a.Name != b.Name || a.Mount != b.Mount || a.Signed != b.Signed || len(a.Files) != len(b.Files) {
		return false
	}
	for i := range a.Files {
		if a.Files[i] != b.Files[i] {
			return false
		}
	}
	return true
}

func TestCheckRejects(t *testing.T) {
	base := func() Scenario {
		return Scenario{Name: "ok", Policy: []string{"DEFAULT action=ALLOW"}, Ops: []Op{{Op: "exec", Path: "/bin/true"}}}
	}
	good := base()
	if err := good.Check(); err != nil {
		t.Fatalf("minimal scenario: %v", err)
	}
	tests := map[string]func(*Scenario){
		"bad name":           func(s *Scenario) { s.Name = "Has Space" },
		"header in policy":   func(s *Scenario) { s.Policy = append([]string{"policy_name=x policy_version=0.0.1"}, s.Policy...) },
		"unknown op":         func(s *Scenario) { s.Ops[0].Op = "open" },
		"relative exec path": func(s *Scenario) { s.Ops[0].Path = "bin/true" },
		"bad prot":           func(s *Scenario) { s.Ops = []Op{{Op: "mmap", Prot: "rxr"}} },
		"unknown payload":    func(s *Scenario) { s.Files = []File{{From: "nope", To: "/tmp/x"}} },
		"undeclared image": func(s *Scenario) {
			s.Policy = append(s.Policy, "op=EXECUTE dmverity_roothash={{ROOTHASH:img}} action=ALLOW")
		},
		"no ops": func(s *Scenario) { s.Ops = nil },
		"undeclared fs-verity file": func(s *Scenario) {
			s.Policy = append(s.Policy, "op=EXECUTE fsverity_digest={{FSVERITY:fsv/main}} action=ALLOW")
		},
		"digest of a file without verity": func(s *Scenario) {
			s.FSVerity = []FSVerityDisk{{Name: "fsv", Mount: "/mnt/fsv", Files: []FSVerityFile{{From: "busybox", To: "main"}}}}
			s.Policy = append(s.Policy, "op=EXECUTE fsverity_digest={{FSVERITY:fsv/main}} action=ALLOW")
		},
		"unknown verity mode": func(s *Scenario) {
			s.FSVerity = []FSVerityDisk{{Name: "fsv", Mount: "/mnt/fsv", Files: []FSVerityFile{{From: "busybox", To: "main", Verity: "yes"}}}}
		},
		"unknown placeholder kind": func(s *Scenario) {
			s.Policy = append(s.Policy, "op=EXECUTE dmverity_roothash={{DIGEST:x}} action=ALLOW")
		},
		"init_module with a path":     func(s *Scenario) { s.Ops = []Op{{Op: "init_module", Path: "/x.ko"}} },
		"finit_module without a path": func(s *Scenario) { s.Ops = []Op{{Op: "finit_module"}} },
		"outcomes differ without a reason": func(s *Scenario) {
			s.Ops[0].ExpectIPE, s.Ops[0].ExpectBpfipe = "EACCES", "ok"
		},
		"blank reason":                     func(s *Scenario) { s.Ops[0].ExpectDifference = "  " },
		"relative boot root":               func(s *Scenario) { s.BpfipeBootRoot = "tmp" },
		"set up before load without disks": func(s *Scenario) { s.FSVeritySetUpBeforeLoad = true },
		"image path escapes": func(s *Scenario) {
			s.Images = []Image{{Name: "img", Mount: "/mnt/i", Files: []File{{From: "busybox", To: "../x"}}}}
		},
	}
	for name, mutate := range tests {
		s := base()
		mutate(&s)
		if err := s.Check(); err == nil {
			t.Errorf("%s: Check accepts it", name)
		}
	}
}

func TestText(t *testing.T) {
	s := Scenario{Policy: []string{
		"DEFAULT action=ALLOW",
		"op=EXECUTE dmverity_roothash={{ROOTHASH:tools}} action=ALLOW",
		"op=EXECUTE fsverity_digest={{FSVERITY:fsv/main}} action=DENY",
	}}
	values := map[string]string{"ROOTHASH tools": "sha256:ab12", "FSVERITY fsv/main": "sha256:cd34"}
	text, err := s.Text("p", "1.2.0", func(kind, name string) (string, bool) {
		v, ok := values[kind+" "+name]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "policy_name=p policy_version=1.2.0\nDEFAULT action=ALLOW\n" +
		"op=EXECUTE dmverity_roothash=sha256:ab12 action=ALLOW\nop=EXECUTE fsverity_digest=sha256:cd34 action=DENY\n"
	if string(text) != want {
		t.Errorf("Text = %q, want %q", text, want)
	}
	if _, err := s.Text("p", "1.2.0", func(string, string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), "tools") || !strings.Contains(err.Error(), "fsv/main") {
		t.Errorf("missing values: %v", err)
	}
}

func TestParseProt(t *testing.T) {
	for in, want := range map[string]int{"none": 0, "r": 1, "rw": 3, "rx": 5, "rwx": 7, "xw": 6} {
		if got, err := ParseProt(in); err != nil || got != want {
			t.Errorf("ParseProt(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "rr", "q", "RW"} {
		if _, err := ParseProt(in); err == nil {
			t.Errorf("ParseProt(%q) accepted", in)
		}
	}
}

func TestReadRejectsUnknownFields(t *testing.T) {
	f := filepath.Join(t.TempDir(), "s.json")
	os.WriteFile(f, []byte(`{"name":"x","policy":["DEFAULT action=ALLOW"],"ops":[{"op":"exec","path":"/x"}],"sucess_audit":true}`), 0o600)
	if _, err := Read(f); err == nil {
		t.Error("a misspelt field is accepted")
	}
}

func TestExpected(t *testing.T) {
	for _, c := range []struct {
		op          Op
		ipe, bpfipe string
	}{
		{Op{}, "", ""},
		{Op{Expect: "ok"}, "ok", "ok"},
		{Op{Expect: "ok", ExpectIPE: "EACCES"}, "EACCES", "ok"},
		{Op{ExpectIPE: "EACCES", ExpectBpfipe: "ok"}, "EACCES", "ok"},
	} {
		if ipe, bpf := c.op.Expected(); ipe != c.ipe || bpf != c.bpfipe {
			t.Errorf("%+v: Expected() = %q, %q; want %q, %q", c.op, ipe, bpf, c.ipe, c.bpfipe)
		}
	}
}
