package vm

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	out := `linux-image-6.1.0-57-cloud-amd64-unsigned:
  Installed: (none)
  Candidate: 6.1.192-3
  Version table:
     6.1.192-3 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-57-cloud-amd64:
  Installed: (none)
  Candidate: (none)
  Version table:
busybox-static:
  Installed: 1:1.35.0-4+deb12u1+b1
  Candidate: 1:1.37.0-6+b9
  Version table:
 *** 1:1.35.0-4+deb12u1+b1 100
        100 /var/lib/dpkg/status
`
	got := parsePolicy(out)
	want := map[string]string{
		"linux-image-6.1.0-57-cloud-amd64-unsigned": "6.1.192-3",
		"linux-image-6.1.0-57-cloud-amd64":          "(none)",
		"busybox-static":                            "1:1.37.0-6+b9",
	}
	if len(got) != len(want) {
		t.Errorf("parsePolicy = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("candidate of %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestFindDebianMirror(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{
			name: "deb822 with security and updates",
			files: map[string]string{"sources.list.d/debian.sources": `Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`},
			want: "http://mirror.example/debian",
		},
		{
			name: "one-line format with options, third-party first",
			files: map[string]string{"sources.list": `# comment
deb https://packages.example.com/apt stable main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://proxy.local:3142/debian bookworm main contrib
deb http://deb.debian.org/debian-security bookworm-security main
`},
			want: "http://proxy.local:3142/debian",
		},
		{
			name:  "disabled entries and nothing usable",
			files: map[string]string{"sources.list.d/x.sources": "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\n"},
			want:  "http://deb.debian.org/debian",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := findDebianMirror(dir); got != tt.want {
				t.Errorf("findDebianMirror = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCachedKernelsNewestFirst(t *testing.T) {
	root := t.TempDir()
	for _, k := range []struct {
		dir  string
		rank int
	}{{"pkg-55_1", 55}, {"pkg-57_1", 57}, {"pkg-9_1", 9}} {
		dir := filepath.Join(root, k.dir)
		writeTestFile(t, dir, "boot/vmlinuz-x", "image", 0o644)
		meta := `{"name":"debian-6.1","package":"` + k.dir + `","version":"1","release":"x","image":"boot/vmlinuz-x","modules_dir":"lib/modules/x","rank":` + strconv.Itoa(k.rank) + `}`
		writeTestFile(t, dir, "kernel.json", meta, 0o644)
	}
	// An unpacked directory without kernel.json is incomplete and ignored.
	writeTestFile(t, root, "pkg-99_1/boot/vmlinuz-x", "image", 0o644)
	got := cachedKernels(root)
	var order []string
	for _, k := range got {
		order = append(order, k.Package)
	}
	if len(order) != 3 || order[0] != "pkg-57_1" || order[1] != "pkg-55_1" || order[2] != "pkg-9_1" {
		t.Errorf("cachedKernels order = %v, want [pkg-57_1 pkg-55_1 pkg-9_1]", order)
	}
	if len(got) > 0 && got[0].Image != filepath.Join(root, "pkg-57_1", "boot/vmlinuz-x") {
		t.Errorf("cached image path %q, want it resolved inside the cache entry", got[0].Image)
	}
}
