package vm

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fakeDeps builds a dependencyFunc from a table; names missing from the
// table are not loadable (built in or absent).
func fakeDeps(graph map[string][]string) dependencyFunc {
	return func(name string) ([]string, bool, error) {
		deps, ok := graph[name]
		return deps, ok, nil
	}
}

// assertOrder checks that every module comes after its dependencies and
// pre-dependencies, and that each appears once.
func assertOrder(t *testing.T, order []string, graph, pre map[string][]string) {
	t.Helper()
	pos := map[string]int{}
	for i, name := range order {
		if _, dup := pos[name]; dup {
			t.Fatalf("order %v lists %s twice", order, name)
		}
		pos[name] = i
	}
	for _, name := range order {
		for _, dep := range append(append([]string{}, graph[name]...), pre[name]...) {
			if _, loadable := graph[dep]; !loadable {
				continue
			}
			if pos[dep] > pos[name] {
				t.Errorf("order %v loads %s before its dependency %s", order, name, dep)
			}
		}
	}
}

func TestOrderModules(t *testing.T) {
	tests := []struct {
		name   string
		wanted []string
		graph  map[string][]string
		pre    map[string][]string
		want   []string // the exact order, where it is determined
	}{
		{
			name:   "dependencies first",
			wanted: []string{"dm_verity"},
			graph:  map[string][]string{"dm_verity": {"reed_solomon", "dm_mod", "dm_bufio"}, "reed_solomon": nil, "dm_mod": nil, "dm_bufio": nil},
			want:   []string{"reed_solomon", "dm_mod", "dm_bufio", "dm_verity"},
		},
		{
			name:   "shared dependency loaded once",
			wanted: []string{"virtio_blk", "virtio_pci"},
			graph:  map[string][]string{"virtio_blk": {"virtio", "virtio_ring"}, "virtio_pci": {"virtio_ring", "virtio"}, "virtio": nil, "virtio_ring": {"virtio"}},
		},
		{
			name:   "pre-dependency moves the PCI transport before the block driver",
			wanted: []string{"virtio_blk", "virtio_pci"},
			graph:  map[string][]string{"virtio_blk": {"virtio"}, "virtio_pci": {"virtio"}, "virtio": nil},
			pre:    map[string][]string{"virtio_blk": {"virtio_pci"}},
			want:   []string{"virtio", "virtio_pci", "virtio_blk"},
		},
		{
			name:   "pre-dependency that is built in is ignored",
			wanted: []string{"virtio_blk"},
			graph:  map[string][]string{"virtio_blk": nil},
			pre:    map[string][]string{"virtio_blk": {"virtio_pci"}},
			want:   []string{"virtio_blk"},
		},
		{
			name:   "wanted modules that are built in are skipped",
			wanted: []string{"ext4", "loop", "squashfs"},
			graph:  map[string][]string{"squashfs": nil},
			want:   []string{"squashfs"},
		},
		{
			name:   "dashes and underscores name the same module",
			wanted: []string{"dm-verity"},
			graph:  map[string][]string{"dm_verity": {"dm-mod"}, "dm_mod": nil},
			want:   []string{"dm_mod", "dm_verity"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order, err := orderModules(tt.wanted, fakeDeps(tt.graph), tt.pre)
			if err != nil {
				t.Fatalf("orderModules: %v", err)
			}
			assertOrder(t, order, tt.graph, tt.pre)
			for name := range tt.graph {
				if !slices.Contains(order, name) {
					t.Errorf("order %v lacks %s", order, name)
				}
			}
			if tt.want != nil && !slices.Equal(order, tt.want) {
				t.Errorf("order = %v, want %v", order, tt.want)
			}
		})
	}
}

func TestOrderModulesErrors(t *testing.T) {
	tests := []struct {
		name    string
		wanted  []string
		graph   map[string][]string
		wantErr string
	}{
		{"missing dependency", []string{"a"}, map[string][]string{"a": {"b"}}, "a needs b, which is not available"},
		{"missing dependency seen earlier as optional", []string{"b", "a"}, map[string][]string{"a": {"b"}}, "a needs b"},
		{"cycle", []string{"a"}, map[string][]string{"a": {"b"}, "b": {"a"}}, "dependency cycle a -> b -> a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order, err := orderModules(tt.wanted, fakeDeps(tt.graph), nil)
			if err == nil {
				t.Fatalf("orderModules = %v, want error containing %q", order, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestOrderModulesPropagatesReadErrors(t *testing.T) {
	readErr := fmt.Errorf("read module b: corrupt")
	deps := func(name string) ([]string, bool, error) {
		if name == "b" {
			return nil, false, readErr
		}
		return []string{"b"}, true, nil
	}
	if _, err := orderModules([]string{"a"}, deps, nil); err != readErr {
		t.Errorf("orderModules error = %v, want %v", err, readErr)
	}
}

const fixtureModules = "testdata/modules/6.0.0-test"

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		file     string
		name     string
		depends  []string
		vermagic string
	}{
		{"kernel/drivers/md/dm-verity.ko.xz", "dm_verity", []string{"reed_solomon", "dm_mod", "dm_bufio"}, "6.0.0-test SMP mod_unload"},
		{"kernel/drivers/virtio/virtio.ko", "virtio", nil, "6.0.0-test SMP mod_unload"},
		{"kernel/drivers/virtio/virtio_pci.ko", "virtio_pci", []string{"virtio_ring", "virtio"}, "6.0.0-test SMP mod_unload"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			image, err := readModuleFile(fixtureModules + "/" + tt.file)
			if err != nil {
				t.Fatalf("readModuleFile: %v", err)
			}
			if !bytes.HasPrefix(image, []byte("\x7fELF")) {
				t.Fatalf("image starts %q, want an ELF header", image[:min(4, len(image))])
			}
			info, err := parseModinfo(image)
			if err != nil {
				t.Fatalf("parseModinfo: %v", err)
			}
			if info.name != tt.name || !slices.Equal(info.depends, tt.depends) || info.vermagic != tt.vermagic {
				t.Errorf("modinfo = {%s %v %q}, want {%s %v %q}", info.name, info.depends, info.vermagic, tt.name, tt.depends, tt.vermagic)
			}
		})
	}
}

func TestParseModinfoRejectsNonModules(t *testing.T) {
	if _, err := parseModinfo([]byte("not an ELF file")); err == nil {
		t.Error("parseModinfo accepted a non-ELF file")
	}
}

func TestResolveFixtureTree(t *testing.T) {
	tree, err := indexModules(fixtureModules)
	if err != nil {
		t.Fatalf("indexModules: %v", err)
	}
	modules, err := tree.resolve(baseModules, nil)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	var names []string
	for _, m := range modules {
		names = append(names, m.name)
		if !bytes.HasPrefix(m.image, []byte("\x7fELF")) {
			t.Errorf("module %s from %s is not a decompressed ELF image", m.name, m.source)
		}
	}
	// Everything in the fixture's dependency closure of the base set, and
	// nothing built in (ext4, loop) or absent (squashfs, erofs).
	want := []string{"virtio", "virtio_ring", "virtio_pci", "virtio_blk", "dm_mod", "dm_bufio", "reed_solomon", "dm_verity"}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("resolved %v lacks %s", names, w)
		}
	}
	if len(names) != len(want) {
		t.Errorf("resolved %v, want exactly %v in some valid order", names, want)
	}
	graph := map[string][]string{
		"virtio": nil, "virtio_ring": {"virtio"}, "virtio_pci": {"virtio_ring", "virtio"},
		"virtio_blk": {"virtio", "virtio_ring"}, "dm_mod": nil, "dm_bufio": nil, "reed_solomon": nil,
		"dm_verity": {"reed_solomon", "dm_mod", "dm_bufio"},
	}
	assertOrder(t, names, graph, preDependencies)
}

func TestResolveFixtureErrors(t *testing.T) {
	tree, err := indexModules(fixtureModules)
	if err != nil {
		t.Fatalf("indexModules: %v", err)
	}
	tests := []struct {
		name     string
		wanted   []string
		required map[string]bool
		wantErr  string
	}{
		{"required module absent", []string{"nonexistent"}, map[string]bool{"nonexistent": true}, "find module nonexistent"},
		{"dependency absent", []string{"needs-missing"}, nil, "needs_missing needs not_there"},
		{"dependency cycle", []string{"cycle_a"}, nil, "dependency cycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tree.resolve(tt.wanted, tt.required)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("resolve error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	// A built-in module satisfies a requirement without a file.
	if modules, err := tree.resolve([]string{"ext4"}, map[string]bool{"ext4": true}); err != nil || len(modules) != 0 {
		t.Errorf("resolve(built-in ext4) = %v, %v; want nothing to load and no error", modules, err)
	}
}
