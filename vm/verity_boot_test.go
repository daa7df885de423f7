package vm_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

// verityImage is a filesystem image and its hash tree, made on the host.
type verityImage struct {
	data, hash, rootHash string
}

// makeVerityImage builds an ext4 or squashfs image holding file (name ->
// content) and formats its hash tree with veritysetup.
func makeVerityImage(t *testing.T, fstype string, files map[string]string) verityImage {
	t.Helper()
	tools := map[string][]string{"ext4": {"mkfs.ext4", "veritysetup"}, "squashfs": {"mksquashfs", "veritysetup"}}[fstype]
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (failing because CI=true): %v", tool, err)
			}
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	dir := t.TempDir()
	content := filepath.Join(dir, "content")
	for name, data := range files {
		p := filepath.Join(content, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := verityImage{data: filepath.Join(dir, fstype+".img"), hash: filepath.Join(dir, fstype+".hash")}
	switch fstype {
	case "ext4":
		runHost(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", content, img.data, "4M")
	case "squashfs":
		runHost(t, "mksquashfs", content, img.data, "-quiet", "-noappend", "-all-root")
	}
	out := runHost(t, "veritysetup", "format", img.data, img.hash)
	scanner := bufio.NewScanner(bytes.NewReader(out))
	for scanner.Scan() {
		if key, value, ok := strings.Cut(scanner.Text(), ":"); ok && strings.TrimSpace(key) == "Root hash" {
			img.rootHash = strings.TrimSpace(value)
		}
	}
	if len(img.rootHash) != 64 {
		t.Fatalf("no sha256 root hash in veritysetup's output:\n%s", out)
	}
	return img
}

func runHost(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// TestBootVerityDevices opens an ext4 and a squashfs dm-verity device next
// to a plain disk and reads them at their mount points.
func TestBootVerityDevices(t *testing.T) {
	ext := makeVerityImage(t, "ext4", map[string]string{"dir/f": "ext4-through-verity\n"})
	sq := makeVerityImage(t, "squashfs", map[string]string{"g": "squashfs-through-verity\n"})
	// The squashfs device gets its root hash from the sidecar file.
	if err := os.WriteFile(sq.data+vm.RootHashSuffix, []byte(sq.rootHash+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), "plain.img")
	if err := os.WriteFile(plain, append([]byte("plain-disk"), make([]byte, 1<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			requireBoot(t, kernel)
			cfg := vmtest.Config(kernel, vmtest.WithDisk(plain, true))
			cfg.Verity = []vm.Verity{
				{Name: "ext", Data: ext.data, Hash: ext.hash, RootHash: ext.rootHash},
				{Name: "sq", Data: sq.data, Hash: sq.hash},
			}
			status, out, err := run(t, cfg, "sh", "-c", `cat /mnt/ext/dir/f /mnt/sq/g
head -c 10 /dev/vda; echo
for n in ext sq; do
	echo "$n: $(readlink /dev/mapper/$n) $(cat /sys/block/$(basename $(readlink /dev/mapper/$n))/dm/name)"
done
grep -E ' /mnt/(ext|sq) ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1
if touch /mnt/ext/new 2>/dev/null; then echo writable; fi`)
			if err != nil || status != 0 {
				t.Fatalf("Run = %d, %v; output:\n%s", status, err, out)
			}
			want := "ext4-through-verity\nsquashfs-through-verity\nplain-disk\n" +
				"ext: ../dm-0 ext\nsq: ../dm-1 sq\n" +
				"/mnt/ext ext4 ro\n/mnt/sq squashfs ro\n"
			if out != want {
				t.Errorf("guest saw:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

// TestBootVerityWrongRootHash: dm-verity accepts any root hash at table
// load and fails the reads, so the mount fails and init reports it.
func TestBootVerityWrongRootHash(t *testing.T) {
	requireBoot(t, "debian-6.1")
	t.Parallel()
	img := makeVerityImage(t, "ext4", map[string]string{"f": "x\n"})
	wrong := []byte(img.rootHash)
	if wrong[0] == '0' {
		wrong[0] = '1'
	} else {
		wrong[0] = '0'
	}
	cfg := vmtest.Config("debian-6.1")
	cfg.Verity = []vm.Verity{{Name: "bad", Data: img.data, Hash: img.hash, RootHash: string(wrong)}}
	status, out, err := run(t, cfg, "echo", "ran")
	if !errors.Is(err, vm.ErrInit) {
		t.Fatalf("Run = %d, %v, output %q; want ErrInit", status, err, out)
	}
	for _, want := range []string{`verity device "bad"`, "is the root hash that of this image?"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(out, "ran") {
		t.Errorf("the command ran without its verity device: %q", out)
	}
}

// TestBootVeritySignedRootHash opens a device whose root hash is signed by
// the certificate enrolled in the UEFI db: Debian's 6.12 dm-verity trusts
// the platform keyring, so the table loads with the signature key.
func TestBootVeritySignedRootHash(t *testing.T) {
	cert, key := vmtest.TestCertificate(t, "bpfipe-vm verity signer "+randomHex(t))
	requireBoot(t, "debian-6.12", vmtest.WithUEFICert(cert))
	t.Parallel()
	img := makeVerityImage(t, "ext4", map[string]string{"f": "signed-content\n"})
	dir := t.TempDir()
	rootHashFile := filepath.Join(dir, "roothash")
	if err := os.WriteFile(rootHashFile, []byte(img.rootHash), 0o644); err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(dir, "roothash.p7s")
	runHost(t, "openssl", "smime", "-sign", "-nocerts", "-noattr", "-binary",
		"-in", rootHashFile, "-signer", cert, "-inkey", key, "-outform", "der", "-out", sig)

	cfg := vmtest.Config("debian-6.12", vmtest.WithUEFICert(cert))
	cfg.Verity = []vm.Verity{{Name: "signed", Data: img.data, Hash: img.hash, RootHash: img.rootHash, Signature: sig}}
	status, out, err := run(t, cfg, "sh", "-c", "cat /mnt/signed/f; grep -c 'user *bpfipe-vm:signed:' /proc/keys")
	if err != nil || status != 0 {
		t.Fatalf("Run = %d, %v; output:\n%s", status, err, out)
	}
	if out != "signed-content\n1\n" {
		t.Errorf("guest saw %q, want the file and one signature key", out)
	}
}

// TestBootVerityUntrustedSignature: Debian's 6.1 dm-verity checks root
// hash signatures against built-in keys only, so any signature made here
// is refused and the run fails before the command.
func TestBootVerityUntrustedSignature(t *testing.T) {
	requireBoot(t, "debian-6.1")
	t.Parallel()
	cert, key := vmtest.TestCertificate(t, "bpfipe-vm untrusted signer")
	img := makeVerityImage(t, "ext4", map[string]string{"f": "x\n"})
	dir := t.TempDir()
	rootHashFile := filepath.Join(dir, "roothash")
	if err := os.WriteFile(rootHashFile, []byte(img.rootHash), 0o644); err != nil {
		t.Fatal(err)
	}
	sig := filepath.Join(dir, "roothash.p7s")
	runHost(t, "openssl", "smime", "-sign", "-nocerts", "-noattr", "-binary",
		"-in", rootHashFile, "-signer", cert, "-inkey", key, "-outform", "der", "-out", sig)
	cfg := vmtest.Config("debian-6.1")
	cfg.Verity = []vm.Verity{{Name: "untrusted", Data: img.data, Hash: img.hash, RootHash: img.rootHash, Signature: sig}}
	_, out, err := run(t, cfg, "echo", "ran")
	if !errors.Is(err, vm.ErrInit) || !strings.Contains(err.Error(), `verity device "untrusted"`) {
		t.Fatalf("Run error = %v, output %q; want ErrInit naming the device", err, out)
	}
}
