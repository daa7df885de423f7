package vm

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// archive writes one newc cpio archive for the kernel's initramfs unpacker.
// The kernel unpacks concatenated archives one after the other, later entries
// replacing earlier ones, which lets a cached base archive be followed by a
// small per-run one.
type archive struct {
	w    *cpio.Writer
	dirs map[string]bool
}

func newArchive(w io.Writer) *archive {
	return &archive{w: cpio.NewWriter(w), dirs: map[string]bool{}}
}

// entryName turns a guest path into an archive name: relative, cleaned.
func entryName(guestPath string) (string, error) {
	if !strings.HasPrefix(guestPath, "/") {
		return "", fmt.Errorf("guest path %q is not absolute", guestPath)
	}
	name := strings.TrimPrefix(path.Clean(guestPath), "/")
	if name == "" {
		return "", fmt.Errorf("guest path %q names the root directory", guestPath)
	}
	return name, nil
}

// dir adds a directory and any missing parents. The unpacker creates
// nothing implicitly: a file whose parent is missing is dropped.
func (a *archive) dir(guestPath string, mode fs.FileMode) error {
	name, err := entryName(guestPath)
	if err != nil {
		return err
	}
	return a.dirName(name, mode)
}

func (a *archive) dirName(name string, mode fs.FileMode) error {
	if name == "." || name == "" || a.dirs[name] {
		return nil
	}
	if err := a.parents(name); err != nil {
		return err
	}
	a.dirs[name] = true
	return a.w.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeDir | cpio.FileMode(mode.Perm()), Links: 2})
}

func (a *archive) parents(name string) error {
	if parent := path.Dir(name); parent != "." {
		return a.dirName(parent, 0o755)
	}
	return nil
}

// file adds a regular file with the given contents.
func (a *archive) file(guestPath string, mode fs.FileMode, data []byte) error {
	name, err := entryName(guestPath)
	if err != nil {
		return err
	}
	if err := a.parents(name); err != nil {
		return err
	}
	hdr := &cpio.Header{Name: name, Mode: cpio.TypeReg | cpio.FileMode(mode.Perm()), Size: int64(len(data)), Links: 1}
	if err := a.w.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", guestPath, err)
	}
	if _, err := a.w.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", guestPath, err)
	}
	return nil
}

// copyFile adds a host file, streaming it rather than holding it in memory
// (test binaries and disk images can be large).
func (a *archive) copyFile(guestPath, hostPath string) error {
	name, err := entryName(guestPath)
	if err != nil {
		return err
	}
	f, err := os.Open(hostPath)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("add %s: not a regular file", hostPath)
	}
	if err := a.parents(name); err != nil {
		return err
	}
	hdr := &cpio.Header{Name: name, Mode: cpio.TypeReg | cpio.FileMode(info.Mode().Perm()), Size: info.Size(), Links: 1}
	if err := a.w.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", guestPath, err)
	}
	if n, err := io.Copy(a.w, f); err != nil {
		return fmt.Errorf("write %s: %w", guestPath, err)
	} else if n != info.Size() {
		return fmt.Errorf("write %s: %s changed size while being copied", guestPath, hostPath)
	}
	return nil
}

// symlink adds a symbolic link; newc stores the target as the entry's data.
func (a *archive) symlink(guestPath, target string) error {
	name, err := entryName(guestPath)
	if err != nil {
		return err
	}
	if err := a.parents(name); err != nil {
		return err
	}
	hdr := &cpio.Header{Name: name, Mode: cpio.TypeSymlink | 0o777, Size: int64(len(target)), Links: 1}
	if err := a.w.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", guestPath, err)
	}
	if _, err := io.WriteString(a.w, target); err != nil {
		return fmt.Errorf("write %s: %w", guestPath, err)
	}
	return nil
}

// tree adds a host file or directory at guestPath, recursively, keeping
// permissions and symbolic links.
func (a *archive) tree(guestPath, hostPath string) error {
	info, err := os.Lstat(hostPath)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return a.entry(guestPath, hostPath, info)
	}
	return filepath.WalkDir(hostPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(hostPath, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return a.entry(path.Join(guestPath, filepath.ToSlash(rel)), p, info)
	})
}

func (a *archive) entry(guestPath, hostPath string, info fs.FileInfo) error {
	switch {
	case info.IsDir():
		return a.dir(guestPath, info.Mode())
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(hostPath)
		if err != nil {
			return err
		}
		return a.symlink(guestPath, target)
	case info.Mode().IsRegular():
		return a.copyFile(guestPath, hostPath)
	default:
		return fmt.Errorf("add %s: only files, directories and symbolic links can be added", hostPath)
	}
}

// close writes the trailer. The archive's length stays a multiple of four,
// so another archive can follow it directly.
func (a *archive) close() error { return a.w.Close() }
