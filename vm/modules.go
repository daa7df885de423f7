package vm

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ulikunitz/xz"
)

// baseModules are loaded in every guest: virtio disks, device-mapper and
// dm-verity, and the filesystems tests put on disks. Any of them may be
// built in; a kernel that has one neither built in nor as a module simply
// goes without it.
var baseModules = []string{
	"virtio_pci", "virtio_blk",
	"dm_mod", "dm_bufio", "dm_verity",
	"loop", "squashfs", "ext4", "erofs",
}

// preDependencies are load-order constraints that no depends= records.
// virtio_blk binds to devices on the virtio bus, which only the PCI
// transport populates; loaded first, virtio_blk finds no disks.
var preDependencies = map[string][]string{
	"virtio_blk": {"virtio_pci"},
}

// moduleName normalises a module's name: the kernel treats '-' and '_' as
// the same, and depends= uses file names (dm-mod) while name= uses
// underscores (dm_mod).
func moduleName(s string) string {
	s = filepath.Base(s)
	s = strings.TrimSuffix(s, ".xz")
	s = strings.TrimSuffix(s, ".zst")
	s = strings.TrimSuffix(s, ".gz")
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// moduleTree is a kernel's module directory (lib/modules/RELEASE).
type moduleTree struct {
	dir     string
	files   map[string]string // module name to file path
	builtin map[string]bool
}

// indexModules finds every module file under dir by name only; modinfo is
// read later, and only for the modules a run needs.
func indexModules(dir string) (*moduleTree, error) {
	tree := &moduleTree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if name := d.Name(); strings.HasSuffix(name, ".ko") || strings.HasSuffix(name, ".ko.xz") {
			tree.files[moduleName(name)] = path
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", dir, err)
	}
	builtin, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return tree, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read built-in module list: %w", err)
	}
	defer builtin.Close()
	scanner := bufio.NewScanner(builtin)
	for scanner.Scan() {
		if line := strings.TrimSpace(scanner.Text()); line != "" {
			tree.builtin[moduleName(line)] = true
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read built-in module list: %w", err)
	}
	return tree, nil
}

// readModuleFile returns a module's ELF image, decompressing .ko.xz.
func readModuleFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".xz") {
		return raw, nil
	}
	r, err := xz.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", filepath.Base(path), err)
	}
	image, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", filepath.Base(path), err)
	}
	return image, nil
}

// modinfo holds the fields of a module's .modinfo section that the runner
// uses.
type modinfo struct {
	name     string
	depends  []string
	vermagic string
}

func parseModinfo(image []byte) (modinfo, error) {
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return modinfo{}, fmt.Errorf("parse module ELF: %w", err)
	}
	section := f.Section(".modinfo")
	if section == nil {
		return modinfo{}, errors.New("parse module ELF: no .modinfo section")
	}
	data, err := section.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("read .modinfo: %w", err)
	}
	var info modinfo
	for _, field := range bytes.Split(data, []byte{0}) {
		key, value, ok := strings.Cut(string(field), "=")
		if !ok {
			continue
		}
		switch key {
		case "name":
			info.name = moduleName(value)
		case "vermagic":
			info.vermagic = strings.TrimSpace(value)
		case "depends":
			for _, dep := range strings.Split(value, ",") {
				if dep = strings.TrimSpace(dep); dep != "" {
					info.depends = append(info.depends, moduleName(dep))
				}
			}
		}
	}
	return info, nil
}

// loadedModule is a module chosen for the guest, with its ELF image.
type loadedModule struct {
	name   string
	source string // the file it came from, for cache keys and messages
	image  []byte
}

// resolve picks the files to load for the wanted modules and their
// dependencies, in an order the kernel accepts. Wanted modules that are
// built in or absent are skipped unless listed in required.
func (t *moduleTree) resolve(wanted []string, required map[string]bool) ([]loadedModule, error) {
	images := map[string]loadedModule{}
	dependsOn := func(name string) ([]string, bool, error) {
		if t.builtin[name] {
			return nil, false, nil
		}
		path, ok := t.files[name]
		if !ok {
			return nil, false, nil
		}
		image, err := readModuleFile(path)
		if err != nil {
			return nil, false, fmt.Errorf("read module %s: %w", name, err)
		}
		info, err := parseModinfo(image)
		if err != nil {
			return nil, false, fmt.Errorf("read module %s: %w", name, err)
		}
		images[name] = loadedModule{name: name, source: path, image: image}
		return info.depends, true, nil
	}
	for _, name := range wanted {
		name = moduleName(name)
		if required[name] && !t.builtin[name] && t.files[name] == "" {
			return nil, fmt.Errorf("find module %s: not in %s and not built in", name, t.dir)
		}
	}
	order, err := orderModules(wanted, dependsOn, preDependencies)
	if err != nil {
		return nil, err
	}
	modules := make([]loadedModule, 0, len(order))
	for _, name := range order {
		modules = append(modules, images[name])
	}
	return modules, nil
}

// dependencyFunc reports a module's dependencies and whether it needs
// loading at all (false for built-in or absent modules).
type dependencyFunc func(name string) (depends []string, loadable bool, err error)

// orderModules returns the loadable modules among wanted and everything they
// depend on, each after its dependencies and pre-dependencies, keeping the
// order of wanted where constraints allow. A dependency that cannot be
// loaded is an error: the module that needs it would fail to load.
// Pre-dependencies are only ordering hints and are added when loadable.
func orderModules(wanted []string, dependsOn dependencyFunc, pre map[string][]string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	loadable := map[string]bool{}
	var order []string
	var visit func(name string, path []string, mustLoad bool) error
	visit = func(name string, path []string, mustLoad bool) error {
		switch state[name] {
		case done:
			if mustLoad && !loadable[name] {
				return fmt.Errorf("order modules: %s needs %s, which is not available", strings.Join(path, " -> "), name)
			}
			return nil
		case visiting:
			return fmt.Errorf("order modules: dependency cycle %s -> %s", strings.Join(path, " -> "), name)
		}
		state[name] = visiting
		deps, ok, err := dependsOn(name)
		if err != nil {
			return err
		}
		if !ok {
			state[name] = done
			if mustLoad {
				return fmt.Errorf("order modules: %s needs %s, which is not available", strings.Join(path, " -> "), name)
			}
			return nil
		}
		loadable[name] = true
		path = append(path, name)
		for _, p := range pre[name] {
			if err := visit(moduleName(p), path, false); err != nil {
				return err
			}
		}
		for _, d := range deps {
			if err := visit(moduleName(d), path, true); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, name := range wanted {
		if err := visit(moduleName(name), nil, false); err != nil {
			return nil, err
		}
	}
	return order, nil
}
