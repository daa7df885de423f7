package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/compare/scenario"
	"github.com/bpfipe/bpfipe/test/guest/fsverity"
)

// verityDisks mounts the fs-verity disks the host built and enables
// fs-verity on their files, each disk once per boot: fs-verity, once on,
// cannot be turned off.
type verityDisks struct {
	disks    map[string]scenario.FSVerityDiskInfo
	cert     string
	keyAdded bool
	opened   map[string]scenario.FSVerityDisk
}

func newVerityDisks(m *scenario.Manifest) *verityDisks {
	return &verityDisks{disks: m.FSVerity, cert: m.FSVerityCert, opened: map[string]scenario.FSVerityDisk{}}
}

// digest is "ALG:HEX" of DISK/FILE, for the policy's placeholders.
func (v *verityDisks) digest(ref string) (string, bool) {
	disk, file, ok := strings.Cut(ref, "/")
	if !ok {
		return "", false
	}
	d, ok := v.disks[disk].Digests[file]
	return d, ok
}

func (v *verityDisks) open(d scenario.FSVerityDisk) error {
	if prev, ok := v.opened[d.Name]; ok {
		if !reflect.DeepEqual(prev, d) {
			return fmt.Errorf("fs-verity disk %s: two scenarios describe it differently", d.Name)
		}
		return nil
	}
	info, ok := v.disks[d.Name]
	if !ok {
		return fmt.Errorf("fs-verity disk %s: the host built no such disk", d.Name)
	}
	if err := os.MkdirAll(d.Mount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(info.Dev, d.Mount, "ext4", 0, ""); err != nil {
		return fmt.Errorf("fs-verity disk %s: mount %s on %s: %w", d.Name, info.Dev, d.Mount, err)
	}
	for _, f := range d.Files {
		if f.Verity == scenario.VerityNone {
			continue
		}
		p := filepath.Join(d.Mount, f.To)
		var sig []byte
		if f.Verity == scenario.VeritySigned {
			if err := v.trustCert(); err != nil {
				return err
			}
			var err error
			if sig, err = os.ReadFile(info.Signatures[f.To]); err != nil {
				return fmt.Errorf("fs-verity disk %s: read signature of %s: %w", d.Name, f.To, err)
			}
		}
		if err := fsverity.Enable(p, sig); err != nil {
			return fmt.Errorf("fs-verity disk %s: %w", d.Name, err)
		}
		// Every fsverity_digest rule rests on the host's digest being the
		// kernel's.
		got, err := fsverity.Measure(p)
		if err != nil {
			return fmt.Errorf("fs-verity disk %s: measure %s: %w", d.Name, f.To, err)
		}
		if want := info.Digests[f.To]; got != want {
			return fmt.Errorf("fs-verity disk %s: the kernel measures %s as %s, the host computed %s", d.Name, f.To, got, want)
		}
	}
	v.opened[d.Name] = d
	return nil
}

// remount mounts the scenario's fs-verity disks afresh, so every inode is
// read from disk again and fs-verity sets it up again, verifying builtin
// signatures while the enforcer that just loaded watches: bpfipe learns
// of a verified signature only then (docs/ipe-differences.md). Both
// enforcers get the same treatment. A scenario about files set up before
// the load keeps them (hold) instead.
func (v *verityDisks) remount(s *scenario.Scenario) error {
	if s.FSVeritySetUpBeforeLoad {
		return nil
	}
	for _, d := range s.FSVerity {
		if err := unix.Unmount(d.Mount, 0); err != nil {
			return fmt.Errorf("fs-verity disk %s: unmount: %w", d.Name, err)
		}
		if err := unix.Mount(v.disks[d.Name].Dev, d.Mount, "ext4", 0, ""); err != nil {
			return fmt.Errorf("fs-verity disk %s: mount: %w", d.Name, err)
		}
	}
	return nil
}

// hold opens every fs-verity file of the scenario's disks, which sets up
// its verity data now, before either enforcer loads, and keeps the inodes
// in memory (and so set up) until the files are closed.
func (v *verityDisks) hold(s *scenario.Scenario) ([]*os.File, error) {
	var held []*os.File
	for _, d := range s.FSVerity {
		for _, f := range d.Files {
			if f.Verity == scenario.VerityNone {
				continue
			}
			file, err := os.Open(filepath.Join(d.Mount, f.To))
			if err != nil {
				closeAll(held)
				return nil, fmt.Errorf("fs-verity disk %s: hold %s: %w", d.Name, f.To, err)
			}
			held = append(held, file)
		}
	}
	return held, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// trustCert puts the test certificate in the .fs-verity keyring, which
// builtin signatures are checked against.
func (v *verityDisks) trustCert() error {
	if v.keyAdded {
		return nil
	}
	keyring, err := fsVerityKeyring()
	if err != nil {
		return err
	}
	der, err := os.ReadFile(v.cert)
	if err != nil {
		return fmt.Errorf("read fs-verity certificate: %w", err)
	}
	if _, err := unix.AddKey("asymmetric", "", der, keyring); err != nil {
		return fmt.Errorf("add certificate to .fs-verity: %w", err)
	}
	v.keyAdded = true
	return nil
}

// fsVerityKeyring finds the .fs-verity keyring's id in /proc/keys.
func fsVerityKeyring() (int, error) {
	f, err := os.Open("/proc/keys")
	if err != nil {
		return 0, fmt.Errorf("find .fs-verity keyring: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID FLAGS USAGE TIMEOUT PERM UID GID TYPE DESCRIPTION: SUMMARY
		fields := strings.Fields(sc.Text())
		if len(fields) >= 9 && fields[7] == "keyring" && strings.HasPrefix(fields[8], ".fs-verity") {
			id, err := strconv.ParseUint(fields[0], 16, 32)
			return int(id), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("find .fs-verity keyring: %w", err)
	}
	return 0, errors.New("find .fs-verity keyring: not in /proc/keys (no CONFIG_FS_VERITY_BUILTIN_SIGNATURES?)")
}
