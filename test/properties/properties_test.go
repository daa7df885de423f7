// Package properties_test boots the stock kernels with disks built here and
// runs test/guest/properties in them: dmverity_roothash, dmverity_signature,
// fsverity_digest and fsverity_signature under real enforcement, devices
// recreated at the same number, and the device resolver of pinned loads.
package properties_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bpfipe/bpfipe/test/properties/fixture"
	"github.com/bpfipe/bpfipe/test/vmtest"
)

// Kernels whose dm-verity trusts the UEFI db (the platform keyring) for
// root hash signatures: DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING
// arrived after 6.1. Only these boot through OVMF with the certificate.
var platformKeyringTrust = map[string]bool{"debian-6.12": true}

func TestPropertiesInGuest(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "mksquashfs", "veritysetup", "fsverity", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (failing because CI=true): %v", tool, err)
			}
			t.Skipf("needs %s (packages e2fsprogs, squashfs-tools, cryptsetup-bin, fsverity, openssl): %v", tool, err)
		}
	}
	binary := staticBinary(t)
	certPath, keyPath := vmtest.TestCertificate(t, "bpfipe property tests")

	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			var opts []vmtest.Option
			disks := 0
			b := &fixture.Builder{
				T: t, Work: t.TempDir(), Binary: binary, Cert: certPath, Key: keyPath,
				Add: func(src, dst string) { opts = append(opts, vmtest.WithAdd(src, dst)) },
				Disk: func(path string, readOnly bool) string {
					opts = append(opts, vmtest.WithDisk(path, readOnly))
					disks++
					return "/dev/vd" + string(rune('a'+disks-1))
				},
			}
			m := &fixture.Manifest{Verity: map[string]fixture.VerityImage{}}
			for _, img := range []struct {
				name, fs string
				signed   bool
			}{
				{"ext4-allowed", "ext4", true},
				{"ext4-other", "ext4", false},
				{"ext4-revoked", "ext4", false},
				{"squashfs-allowed", "squashfs", false},
				{"squashfs-other", "squashfs", false},
			} {
				m.Verity[img.name] = b.Verity(img.name, img.fs, img.signed)
			}
			m.PlainDisk = b.Plain()
			// fs-verity is enabled on this disk in the guest, so each
			// kernel gets a fresh one.
			m.FSVerity = b.FSVerity()
			m.DMSignatureTrusted = platformKeyringTrust[kernel]
			b.WriteManifest(m)
			if platformKeyringTrust[kernel] {
				opts = append(opts, vmtest.WithUEFICert(certPath))
			}
			opts = append(opts, vmtest.WithTimeout(15*time.Minute))
			vmtest.RunGoTests(t, kernel, "./test/guest/properties", opts...)
		})
	}
}

// staticBinary finds a statically linked program to put on the disks: the
// guest has no libraries on them.
func staticBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		dynamic := false
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				dynamic = true
			}
		}
		f.Close()
		if !dynamic {
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				t.Fatal(err)
			}
			return real
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs a static busybox (package busybox-static); failing because CI=true")
	}
	t.Skip("needs a static busybox (package busybox-static)")
	return ""
}
