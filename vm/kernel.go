package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kernel is a kernel ready to boot: its image and its module directory.
type Kernel struct {
	Name       string `json:"name"`              // "debian-6.1", "debian-6.12" or "custom"
	Package    string `json:"package,omitempty"` // the Debian package it came from
	Version    string `json:"version,omitempty"` // the package's version
	Release    string `json:"release"`           // what uname -r reports
	Image      string `json:"image"`             // the bzImage to boot
	ModulesDir string `json:"modules_dir"`       // lib/modules/RELEASE, or empty
	rank       int
}

// namedKernel is a stock kernel the runner knows how to fetch.
type namedKernel struct {
	name    string
	summary string
	// suite is empty for the system's own sources, otherwise the Debian
	// suite read through a private apt configuration.
	suite string
	// prefix narrows apt-cache pkgnames; pattern's first group is the number
	// that orders the packages (ABI number or patch level).
	prefix  string
	pattern *regexp.Regexp
}

var namedKernels = []namedKernel{
	{
		name:    "debian-6.1",
		summary: "Debian 12 cloud kernel (Linux 6.1): BPF LSM, dm-verity, fs-verity, no IPE",
		prefix:  "linux-image-6.1.0-",
		pattern: regexp.MustCompile(`^linux-image-6\.1\.0-(\d+)-cloud-amd64-unsigned$`),
	},
	{
		name:    "debian-6.12",
		summary: "Debian 13 cloud kernel (Linux 6.12): BPF LSM and in-tree IPE",
		suite:   "trixie",
		prefix:  "linux-image-6.12.",
		pattern: regexp.MustCompile(`^linux-image-6\.12\.(\d+)\+deb13-cloud-amd64-unsigned$`),
	},
}

// KernelNames lists the named kernels.
func KernelNames() []string {
	names := make([]string, len(namedKernels))
	for i, k := range namedKernels {
		names[i] = k.name
	}
	return names
}

func lookupKernel(name string) (namedKernel, error) {
	for _, k := range namedKernels {
		if k.name == name {
			return k, nil
		}
	}
	return namedKernel{}, fmt.Errorf("unknown kernel %q (known: %s)", name, strings.Join(KernelNames(), ", "))
}

// EnsureKernel returns the newest build of a named kernel, downloading and
// unpacking it into the cache if needed. Without a network it falls back to
// the newest cached build.
func EnsureKernel(ctx context.Context, name string) (*Kernel, error) {
	return EnsureKernelWithProgress(ctx, name, nil)
}

// EnsureKernelWithProgress is EnsureKernel reporting downloads to w (nil
// for none).
func EnsureKernelWithProgress(ctx context.Context, name string, w io.Writer) (*Kernel, error) {
	cacheDir, err := DefaultCacheDir()
	if err != nil {
		return nil, err
	}
	return ensureKernel(ctx, cacheDir, name, progress{w})
}

// resolved remembers kernels already ensured in this process: tests boot the
// same kernel many times and need not ask apt each time.
var resolved sync.Map // cacheDir + "\x00" + name -> *Kernel

func ensureKernel(ctx context.Context, cacheDir, name string, p progress) (*Kernel, error) {
	key := cacheDir + "\x00" + name
	if k, ok := resolved.Load(key); ok {
		return k.(*Kernel), nil
	}
	spec, err := lookupKernel(name)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(cacheDir, "kernels", name)
	unlock, err := lockFile(filepath.Join(cacheDir, "kernels", ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	k, err := fetchKernel(ctx, cacheDir, root, spec, p)
	if err != nil {
		cached := cachedKernels(root)
		if len(cached) == 0 {
			return nil, err
		}
		p.note("using cached %s %s: %v", cached[0].Package, cached[0].Version, err)
		k = cached[0]
	}
	resolved.Store(key, k)
	return k, nil
}

// fetchKernel resolves the newest package and makes sure it is unpacked.
func fetchKernel(ctx context.Context, cacheDir, root string, spec namedKernel, p progress) (*Kernel, error) {
	for _, tool := range []struct{ name, pkg string }{{"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg-deb", "dpkg"}} {
		if _, err := lookTool(tool.name, tool.pkg); err != nil {
			return nil, err
		}
	}
	a, err := kernelApt(cacheDir, spec)
	if err != nil {
		return nil, err
	}
	if err := a.refreshPrivate(ctx, p); err != nil {
		return nil, fmt.Errorf("resolve %s: %w: %w", spec.name, ErrUnavailable, err)
	}
	found, err := newestCached(ctx, a, root, spec)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", spec.name, err)
	}
	if len(found) == 0 && a.listsDir == "" {
		// The system lists may never have been fetched on a fresh machine.
		done := p.step("updating the system's package lists")
		err := a.update(ctx)
		done(err)
		if err == nil {
			found, err = a.newest(ctx, spec.prefix, spec.pattern)
		}
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w: %w", spec.name, ErrUnavailable, err)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("resolve %s: %w: no package matches %s", spec.name, ErrUnavailable, spec.pattern)
	}
	newest := found[0]
	dir := filepath.Join(root, newest.pkg+"_"+newest.version)
	if k, err := readKernelMeta(dir); err == nil {
		return k, nil
	}
	// A download of this same package that failed a moment ago (no network)
	// is not retried; the caller falls back to the cache.
	unreachable := root + ".unreachable"
	if raw, err := os.ReadFile(unreachable); err == nil && string(raw) == dir {
		if info, err := os.Stat(unreachable); err == nil && time.Since(info.ModTime()) < retryOfflineAfter {
			return nil, fmt.Errorf("fetch %s: %w: downloading %s %s failed less than %s ago", spec.name, ErrUnavailable, newest.pkg, newest.version, retryOfflineAfter)
		}
	}
	deb, err := downloadKernel(ctx, a, root, newest, p)
	if err != nil && a.listsDir == "" {
		// Stale system lists name files the mirror has dropped.
		if uerr := a.update(ctx); uerr == nil {
			if found, ferr := a.newest(ctx, spec.prefix, spec.pattern); ferr == nil && len(found) > 0 {
				newest = found[0]
				dir = filepath.Join(root, newest.pkg+"_"+newest.version)
				if k, err := readKernelMeta(dir); err == nil {
					return k, nil
				}
				deb, err = downloadKernel(ctx, a, root, newest, p)
			}
		}
	}
	if err != nil {
		os.WriteFile(unreachable, []byte(dir), 0o644)
		return nil, fmt.Errorf("fetch %s: %w: %w", spec.name, ErrUnavailable, err)
	}
	os.Remove(unreachable)
	defer os.Remove(deb)
	return unpackKernel(ctx, deb, dir, spec.name, newest, p)
}

// newestCached answers apt.newest from a note of the last answer while the
// package lists it came from are unchanged: asking apt-cache costs seconds on
// a busy machine, and the same lists always give the same answer.
func newestCached(ctx context.Context, a *apt, root string, spec namedKernel) ([]candidate, error) {
	stamp := a.listsStamp()
	note := root + ".resolved"
	if raw, err := os.ReadFile(note); err == nil && stamp != "" {
		var saved struct {
			Stamp   string `json:"stamp"`
			Package string `json:"package"`
			Version string `json:"version"`
			Rank    int    `json:"rank"`
		}
		if json.Unmarshal(raw, &saved) == nil && saved.Stamp == stamp && saved.Package != "" {
			return []candidate{{pkg: saved.Package, version: saved.Version, rank: saved.Rank}}, nil
		}
	}
	found, err := a.newest(ctx, spec.prefix, spec.pattern)
	if err != nil || len(found) == 0 || stamp == "" {
		return found, err
	}
	raw, err := json.Marshal(map[string]any{"stamp": stamp, "package": found[0].pkg, "version": found[0].version, "rank": found[0].rank})
	if err == nil {
		_ = writeFileAtomic(note, func(w io.Writer) error { _, err := w.Write(raw); return err })
	}
	return found, nil
}

func kernelApt(cacheDir string, spec namedKernel) (*apt, error) {
	if spec.suite == "" {
		return systemApt(), nil
	}
	return privateApt(cacheDir, spec.suite)
}

func downloadKernel(ctx context.Context, a *apt, root string, c candidate, p progress) (string, error) {
	if err := os.MkdirAll(root+"-downloads", 0o755); err != nil {
		return "", err
	}
	dl, err := os.MkdirTemp(root+"-downloads", "")
	if err != nil {
		return "", err
	}
	done := p.step("downloading %s %s", c.pkg, c.version)
	deb, err := a.download(ctx, dl, c.pkg, c.version)
	done(err)
	if err != nil {
		os.RemoveAll(dl)
	}
	return deb, err
}

// unpackKernel extracts the package next to its final place and renames it
// in, writing kernel.json last: a directory with kernel.json is complete.
func unpackKernel(ctx context.Context, deb, dir, name string, c candidate, p progress) (*Kernel, error) {
	defer os.RemoveAll(filepath.Dir(deb))
	tmp := dir + ".partial"
	os.RemoveAll(tmp)
	done := p.step("unpacking %s", c.pkg)
	err := extractDeb(ctx, deb, tmp)
	done(err)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	k, err := describeUnpacked(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("unpack %s: %w", c.pkg, err)
	}
	k.Name, k.Package, k.Version, k.rank = name, c.pkg, c.version, c.rank
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	// Paths in kernel.json are relative, so the cache can move.
	meta, err := json.MarshalIndent(struct {
		Kernel
		Rank int `json:"rank"`
	}{*k, c.rank}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), meta, 0o644); err != nil {
		return nil, err
	}
	return readKernelMeta(dir)
}

// describeUnpacked finds the image and module directory in an unpacked
// kernel package (Debian 12 uses lib/modules, Debian 13 usr/lib/modules),
// as paths relative to root.
func describeUnpacked(root string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("find kernel image: %d vmlinuz files in boot/", len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	k := &Kernel{Release: release, Image: filepath.Join("boot", filepath.Base(images[0]))}
	for _, dir := range []string{"lib/modules", "usr/lib/modules"} {
		if info, err := os.Stat(filepath.Join(root, dir, release)); err == nil && info.IsDir() {
			k.ModulesDir = filepath.Join(dir, release)
			return k, nil
		}
	}
	return nil, fmt.Errorf("find modules of %s: no lib/modules/%s", release, release)
}

func readKernelMeta(dir string) (*Kernel, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
	if err != nil {
		return nil, err
	}
	var meta struct {
		Kernel
		Rank int `json:"rank"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "kernel.json"), err)
	}
	k := meta.Kernel
	k.rank = meta.Rank
	if filepath.IsAbs(k.Image) || filepath.IsAbs(k.ModulesDir) {
		return nil, fmt.Errorf("cached kernel in %s: kernel.json from an older layout", dir)
	}
	k.Image = filepath.Join(dir, k.Image)
	k.ModulesDir = filepath.Join(dir, k.ModulesDir)
	if _, err := os.Stat(k.Image); err != nil {
		return nil, fmt.Errorf("cached kernel in %s: %w", dir, err)
	}
	return &k, nil
}

// cachedKernels lists the complete builds of a named kernel, newest first.
func cachedKernels(root string) []*Kernel {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var kernels []*Kernel
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if k, err := readKernelMeta(filepath.Join(root, e.Name())); err == nil {
			kernels = append(kernels, k)
		}
	}
	sort.Slice(kernels, func(i, j int) bool {
		if kernels[i].rank != kernels[j].rank {
			return kernels[i].rank > kernels[j].rank
		}
		return kernels[i].Version > kernels[j].Version
	})
	return kernels
}

// customKernel describes a kernel given by path. The modules directory may
// be lib/modules/RELEASE itself or a directory holding exactly one release.
func customKernel(image, modules string) (*Kernel, error) {
	if _, err := os.Stat(image); err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	k := &Kernel{Name: "custom", Image: image, Release: "custom"}
	if modules == "" {
		return k, nil
	}
	info, err := os.Stat(modules)
	if err != nil {
		return nil, fmt.Errorf("modules directory: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("modules directory: %s is not a directory", modules)
	}
	k.ModulesDir = modules
	if _, err := os.Stat(filepath.Join(modules, "kernel")); errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(modules)
		var dirs []string
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, e.Name())
			}
		}
		if len(dirs) == 1 {
			k.ModulesDir = filepath.Join(modules, dirs[0])
		}
	}
	k.Release = filepath.Base(k.ModulesDir)
	return k, nil
}

// KernelInfo is what 'bpfipe-vm kernels' shows about a named kernel.
type KernelInfo struct {
	Name    string
	Summary string
	// Latest is the newest package the archive offers, or empty with
	// LatestErr set when it could not be resolved.
	Latest    string
	LatestErr error
	Cached    []*Kernel
}

// ListKernels describes the named kernels: the newest available package
// and the builds in the cache. It downloads nothing but package lists.
// progressTo, if not nil, receives notes on long steps.
func ListKernels(ctx context.Context, cacheDir string, progressTo io.Writer) []KernelInfo {
	p := progress{progressTo}
	var infos []KernelInfo
	for _, spec := range namedKernels {
		info := KernelInfo{Name: spec.name, Summary: spec.summary, Cached: cachedKernels(filepath.Join(cacheDir, "kernels", spec.name))}
		a, err := kernelApt(cacheDir, spec)
		if err == nil {
			err = a.refreshPrivate(ctx, p)
		}
		var found []candidate
		if err == nil {
			found, err = a.newest(ctx, spec.prefix, spec.pattern)
		}
		switch {
		case err != nil:
			info.LatestErr = err
		case len(found) == 0:
			info.LatestErr = fmt.Errorf("no package matches %s", spec.pattern)
		default:
			info.Latest = found[0].pkg + " " + found[0].version
		}
		infos = append(infos, info)
	}
	return infos
}
