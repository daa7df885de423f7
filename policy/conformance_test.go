package policy

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// conformanceDir is the shared copy of the microsoft/ipe user-space test
// suite's policies, relative to the module root.
const conformanceDir = "../shared/conformance/ipe-test-suite"

type conformanceEntry struct {
	File       string    `json:"file"`
	Expect     string    `json:"expect"`
	PolicyName *string   `json:"policy_name"`
	Version    *[3]int64 `json:"version"`
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// TestConformanceSuite parses every policy of the IPE test suite and checks
// the result, name and version against expected.json; every file must be
// listed and every listed file must exist.
func TestConformanceSuite(t *testing.T) {
	root := filepath.Join(moduleRoot(t), conformanceDir)
	manifest, err := os.ReadFile(filepath.Join(root, "expected.json"))
	if os.IsNotExist(err) {
		t.Skipf("conformance suite not present at %s", root)
	}
	if err != nil {
		t.Fatal(err)
	}
	var entries []conformanceEntry
	if err := json.Unmarshal(manifest, &entries); err != nil {
		t.Fatalf("decode expected.json: %v", err)
	}
	expected := make(map[string]conformanceEntry, len(entries))
	for _, e := range entries {
		expected[e.File] = e
	}

	checked := 0
	err = filepath.WalkDir(filepath.Join(root, "policies"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		want, ok := expected[rel]
		if !ok {
			t.Errorf("%s: not in expected.json", rel)
			return nil
		}
		delete(expected, rel)
		checked++
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		p, err := Parse(rel, text)
		got := "valid"
		if err != nil {
			got = ErrnoName(errnoOf(t, err))
		}
		if got != want.Expect {
			t.Errorf("%s: got %s (%v), want %s", rel, got, err, want.Expect)
			return nil
		}
		if p == nil {
			return nil
		}
		if want.PolicyName == nil || p.Name != *want.PolicyName {
			t.Errorf("%s: name %q, want %v", rel, p.Name, want.PolicyName)
		}
		if want.Version == nil || [3]int64{int64(p.Version.Major), int64(p.Version.Minor), int64(p.Version.Rev)} != *want.Version {
			t.Errorf("%s: version %v, want %v", rel, p.Version, want.Version)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for file := range expected {
		t.Errorf("%s: listed in expected.json but missing", file)
	}
	if checked != len(entries) || checked == 0 {
		t.Errorf("checked %d files, expected.json lists %d", checked, len(entries))
	}
	if !t.Failed() {
		t.Logf("all %d conformance policies agree with expected.json", checked)
	}
}
