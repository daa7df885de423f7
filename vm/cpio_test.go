package vm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// entry is what the kernel's unpacker would create for one archive member.
type entry struct {
	mode   cpio.FileMode
	data   string // file contents or symlink target
	source int    // which of the concatenated archives it came from
}

// readArchives reads concatenated newc archives the way the kernel does:
// one after the other, later entries replacing earlier ones. It also checks
// that each entry's parent directory came before it.
func readArchives(t *testing.T, raw []byte) (map[string]entry, []string) {
	t.Helper()
	entries := map[string]entry{}
	var order []string
	r := bytes.NewReader(raw)
	for archive := 0; ; archive++ {
		// Like the kernel, skip the zero padding after a trailer; the next
		// header must then start 4-byte aligned.
		for r.Len() > 0 {
			if b, _ := r.ReadByte(); b != 0 {
				r.UnreadByte()
				break
			}
		}
		if r.Len() == 0 {
			break
		}
		if offset := len(raw) - r.Len(); offset%4 != 0 {
			t.Fatalf("archive %d starts at offset %d, not 4-byte aligned", archive, offset)
		}
		cr := cpio.NewReader(r)
		for {
			hdr, err := cr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("archive %d: %v", archive, err)
			}
			if parent := filepath.Dir(hdr.Name); parent != "." {
				if e, ok := entries[parent]; !ok || !e.mode.IsDir() {
					t.Errorf("archive %d: %s comes before its directory %s", archive, hdr.Name, parent)
				}
			}
			data := hdr.Linkname
			if hdr.Mode&^cpio.ModePerm == cpio.TypeReg {
				b, err := io.ReadAll(cr)
				if err != nil {
					t.Fatalf("read %s: %v", hdr.Name, err)
				}
				data = string(b)
			}
			entries[hdr.Name] = entry{mode: hdr.Mode, data: data, source: archive}
			order = append(order, hdr.Name)
		}
	}
	return entries, order
}

func TestArchiveEntries(t *testing.T) {
	var buf bytes.Buffer
	a := newArchive(&buf)
	if err := a.file("/etc/deep/nested/file", 0o640, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := a.symlink("/bin/sh", "busybox"); err != nil {
		t.Fatal(err)
	}
	if err := a.dir("/var/tmp", 0o777); err != nil {
		t.Fatal(err)
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4; a following archive would be misaligned", buf.Len())
	}
	entries, _ := readArchives(t, buf.Bytes())
	checks := []struct {
		name string
		mode cpio.FileMode
		data string
	}{
		{"etc", cpio.TypeDir | 0o755, ""},
		{"etc/deep/nested", cpio.TypeDir | 0o755, ""},
		{"etc/deep/nested/file", cpio.TypeReg | 0o640, "hello"},
		{"bin/sh", cpio.TypeSymlink | 0o777, "busybox"},
		{"var/tmp", cpio.TypeDir | 0o777, ""},
	}
	for _, c := range checks {
		got, ok := entries[c.name]
		if !ok {
			t.Errorf("archive lacks %s", c.name)
			continue
		}
		if got.mode != c.mode || got.data != c.data {
			t.Errorf("%s = mode %o data %q, want mode %o data %q", c.name, got.mode, got.data, c.mode, c.data)
		}
	}
}

func TestEntryNameRejectsRelativeAndRoot(t *testing.T) {
	for _, p := range []string{"relative/path", "/", "/.."} {
		if name, err := entryName(p); err == nil {
			t.Errorf("entryName(%q) = %q, want an error", p, name)
		}
	}
	if name, err := entryName("/a/./b/../c"); err != nil || name != "a/c" {
		t.Errorf("entryName(/a/./b/../c) = %q, %v; want a/c", name, err)
	}
}

func TestAssembleInitramfsConcatenatesBaseAndRun(t *testing.T) {
	dir := t.TempDir()
	initBin := writeTestFile(t, dir, "init", "init-binary", 0o755)
	busybox := writeTestFile(t, dir, "busybox", "busybox-binary", 0o755)
	bpfipe := writeTestFile(t, dir, "bpfipe", "bpfipe-binary", 0o755)
	modules := []loadedModule{{name: "dm_mod", image: []byte("\x7fELF dm_mod")}, {name: "dm_verity", image: []byte("\x7fELF dm_verity")}}
	base := filepath.Join(dir, "base.cpio")
	f, err := os.Create(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeBaseArchive(f, initBin, busybox, []string{"/bin/sh", "/usr/bin/awk", "/bin/busybox"}, modules); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// Added files: a tree with a symlink, and a file that replaces one from
	// the base archive.
	tree := filepath.Join(dir, "tree")
	writeTestFile(t, tree, "sub/data.txt", "payload", 0o600)
	if err := os.Symlink("sub/data.txt", filepath.Join(tree, "link")); err != nil {
		t.Fatal(err)
	}
	hostname := writeTestFile(t, dir, "hostname", "replaced\n", 0o644)
	spec := &guestspec.Spec{Argv: []string{"/bin/true"}, Nonce: "abc", Disks: 2}
	out := filepath.Join(dir, "initramfs.cpio")
	err = assembleInitramfs(out, base, spec, bpfipe, []Add{{Src: tree, Dst: "/opt/tree"}, {Src: hostname, Dst: "/etc/hostname"}})
	if err != nil {
		t.Fatalf("assembleInitramfs: %v", err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := readArchives(t, raw)

	want := map[string]struct {
		data   string
		source int
		mode   cpio.FileMode
	}{
		"init":                         {"init-binary", 0, cpio.TypeReg | 0o755},
		"bin/busybox":                  {"busybox-binary", 0, cpio.TypeReg | 0o755},
		"bin/sh":                       {"busybox", 0, cpio.TypeSymlink | 0o777},
		"usr/bin/awk":                  {"../../bin/busybox", 0, cpio.TypeSymlink | 0o777},
		"lib/modules/bpfipe/dm_mod.ko": {"\x7fELF dm_mod", 0, cpio.TypeReg | 0o644},
		"etc/bpfipe/modules.order":     {"/lib/modules/bpfipe/dm_mod.ko\n/lib/modules/bpfipe/dm_verity.ko\n", 0, cpio.TypeReg | 0o644},
		"usr/local/bin/bpfipe":         {"bpfipe-binary", 1, cpio.TypeReg | 0o755},
		"opt/tree/sub/data.txt":        {"payload", 1, cpio.TypeReg | 0o600},
		"opt/tree/link":                {"sub/data.txt", 1, cpio.TypeSymlink | 0o777},
		"etc/hostname":                 {"replaced\n", 1, cpio.TypeReg | 0o644},
	}
	for name, w := range want {
		got, ok := entries[name]
		if !ok {
			t.Errorf("initramfs lacks %s", name)
			continue
		}
		if got.data != w.data || got.source != w.source || got.mode != w.mode {
			t.Errorf("%s = {%q archive %d mode %o}, want {%q archive %d mode %o}", name, got.data, got.source, got.mode, w.data, w.source, w.mode)
		}
	}
	if e, ok := entries["bin/busybox"]; ok && e.mode&^cpio.ModePerm == cpio.TypeSymlink {
		t.Error("busybox was replaced by a link to itself")
	}
	var gotSpec guestspec.Spec
	if err := json.Unmarshal([]byte(entries[strings.TrimPrefix(guestspec.SpecPath, "/")].data), &gotSpec); err != nil {
		t.Fatalf("decode run description: %v", err)
	}
	if gotSpec.Nonce != "abc" || gotSpec.Disks != 2 || len(gotSpec.Argv) != 1 || gotSpec.Argv[0] != "/bin/true" {
		t.Errorf("run description = %+v, want argv [/bin/true], nonce abc, 2 disks", gotSpec)
	}
}

func TestBaseKeyFollowsContent(t *testing.T) {
	dir := t.TempDir()
	initBin := writeTestFile(t, dir, "init", "one", 0o755)
	busybox := writeTestFile(t, dir, "busybox", "bb", 0o755)
	modules := []loadedModule{{name: "a", image: []byte("x")}}
	k1, err := baseKey(initBin, busybox, modules)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := baseKey(initBin, busybox, []loadedModule{{name: "a", image: []byte("y")}})
	writeTestFile(t, dir, "init", "two", 0o755)
	k3, _ := baseKey(initBin, busybox, modules)
	if k1 == k2 || k1 == k3 {
		t.Errorf("base keys %s %s %s: changed module or init content must change the key", k1, k2, k3)
	}
	writeTestFile(t, dir, "init", "one", 0o755)
	if k4, _ := baseKey(initBin, busybox, modules); k4 != k1 {
		t.Errorf("same content gave key %s, then %s", k1, k4)
	}
}

func TestParseAdd(t *testing.T) {
	if a, err := ParseAdd("host/file:/guest/file"); err != nil || a.Src != "host/file" || a.Dst != "/guest/file" {
		t.Errorf("ParseAdd = %+v, %v", a, err)
	}
	for _, bad := range []string{"nocolon", ":/dst", "src:", "src:relative"} {
		if _, err := ParseAdd(bad); err == nil {
			t.Errorf("ParseAdd(%q) accepted", bad)
		}
	}
}

func writeTestFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}
