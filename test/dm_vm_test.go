package test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/vmtest"
)

// Kernels whose dm-verity does not trust the platform keyring
// (DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING came after 6.1): there a
// signature by the UEFI db certificate must be refused, and the guest is
// booted without OVMF.
var noPlatformKeyringTrust = map[string]bool{"debian-6.1": true}

// TestDeviceMapperInGuest runs test/guest/dm on every stock kernel: the dm
// ioctl client, the verity table parser, disk sequence numbers, uevents and
// Resolve against a real device mapper, with a dm-verity ext4 image built
// here by mkfs.ext4 and veritysetup.
func TestDeviceMapperInGuest(t *testing.T) {
	requireTools(t, "mkfs.ext4", "veritysetup", "openssl")
	img := buildVerityImage(t)
	certPath, keyPath := vmtest.TestCertificate(t, "bpfipe dm-verity test")
	untrustedCert, untrustedKey := vmtest.TestCertificate(t, "bpfipe untrusted")
	goodSig := signRootHash(t, img.rootHash, certPath, keyPath)
	badSig := signRootHash(t, img.rootHash, untrustedCert, untrustedKey)

	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			opts := []vmtest.Option{
				vmtest.WithDisk(img.data, true),
				vmtest.WithDisk(img.hash, true),
				vmtest.WithAdd(goodSig, "/opt/bpfipe-dm/good.sig"),
				vmtest.WithAdd(badSig, "/opt/bpfipe-dm/bad.sig"),
				vmtest.WithEnv(
					"BPFIPE_DM_ROOT_HASH="+img.rootHash,
					"BPFIPE_DM_SALT="+img.salt,
					"BPFIPE_DM_DATA_BLOCKS="+img.dataBlocks,
					"BPFIPE_DM_ROOT_SIG=/opt/bpfipe-dm/good.sig",
					"BPFIPE_DM_UNTRUSTED_SIG=/opt/bpfipe-dm/bad.sig",
				),
			}
			if noPlatformKeyringTrust[kernel] {
				opts = append(opts, vmtest.WithEnv("BPFIPE_DM_SIG_TRUSTED=0"))
			} else {
				opts = append(opts, vmtest.WithUEFICert(certPath))
			}
			vmtest.RunGoTests(t, kernel, "./test/guest/dm", opts...)
		})
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (failing because CI=true): %v", tool, err)
			}
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

type verityImage struct {
	data, hash                 string
	rootHash, salt, dataBlocks string
}

// buildVerityImage makes a 4 MiB ext4 image with a few files and its
// dm-verity hash tree in a separate file (superblock first, so the tree
// starts at hash block 1).
func buildVerityImage(t *testing.T) verityImage {
	t.Helper()
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	if err := os.MkdirAll(filepath.Join(content, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(content, "hello.txt"), []byte("verified by dm-verity\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(content, "bin", "script"), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := verityImage{data: filepath.Join(dir, "data.img"), hash: filepath.Join(dir, "hash.img")}
	run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", content, img.data, "4M")
	out := run(t, "veritysetup", "format", img.data, img.hash)
	fields := map[string]string{}
	scanner := bufio.NewScanner(bytes.NewReader(out))
	for scanner.Scan() {
		if key, value, ok := strings.Cut(scanner.Text(), ":"); ok {
			fields[strings.TrimSpace(key)] = strings.TrimSpace(value)
		}
	}
	img.rootHash, img.salt, img.dataBlocks = fields["Root hash"], fields["Salt"], fields["Data blocks"]
	if len(img.rootHash) != 64 || img.salt == "" || img.dataBlocks != "1024" ||
		fields["Hash algorithm"] != "sha256" || fields["Data block size"] != "4096" {
		t.Fatalf("unexpected veritysetup format output:\n%s", out)
	}
	return img
}

// signRootHash makes the detached PKCS#7 signature of the hex root hash
// that dm-verity's root_hash_sig_key_desc expects (as veritysetup's
// --root-hash-signature does).
func signRootHash(t *testing.T, rootHash, certPath, keyPath string) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "roothash")
	if err := os.WriteFile(in, []byte(rootHash), 0o644); err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(dir, "roothash.p7s")
	run(t, "openssl", "smime", "-sign", "-nocerts", "-noattr", "-binary",
		"-in", in, "-signer", certPath, "-inkey", keyPath, "-outform", "der", "-out", sig)
	return sig
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}
