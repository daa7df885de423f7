package scenario

import (
	"os"
	"path/filepath"
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
	s := Scenario{Policy: []string{"DEFAULT action=ALLOW", "op=EXECUTE dmverity_roothash={{ROOTHASH:tools}} action=ALLOW"}}
	text, err := s.Text("p", "1.2.0", func(img string) (string, bool) {
		return "sha256:ab12", img == "tools"
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "policy_name=p policy_version=1.2.0\nDEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:ab12 action=ALLOW\n"
	if string(text) != want {
		t.Errorf("Text = %q, want %q", text, want)
	}
	if _, err := s.Text("p", "1.2.0", func(string) (string, bool) { return "", false }); err == nil || !strings.Contains(err.Error(), "tools") {
		t.Errorf("missing root hash: %v", err)
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
