package properties_test

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/test/guest/fsverity"
	"github.com/bpfipe/bpfipe/test/properties/fixture"
)

// mountFSVerity mounts the writable fs-verity disk.
func mountFSVerity(t *testing.T, m *fixture.Manifest) string {
	t.Helper()
	return mountDisk(t, m.FSVerity.Disk, "ext4", 0)
}

// enableVerity turns on fs-verity for path with SHA-256 and 4096-byte
// blocks (what the host's digests assume), with a builtin signature when
// sig is not nil. A file that has it already is left alone.
func enableVerity(t *testing.T, path string, sig []byte) error {
	t.Helper()
	if _, err := fsverity.Measure(path); err == nil {
		return nil
	}
	return fsverity.Enable(path, sig)
}

// fsverity_digest allows the file whose fs-verity digest the policy names
// and nothing else: not a verity file with another digest, not the same
// bytes without fs-verity. Where the loader reports the property
// unobservable, nothing matches it.
func TestFSVerityDigest(t *testing.T) {
	m := setup(t)
	mnt := mountFSVerity(t, m)
	main, other, plain := filepath.Join(mnt, fixture.FSVerityFileMain), filepath.Join(mnt, fixture.FSVerityFileOther), filepath.Join(mnt, fixture.FSVerityFilePlain)
	for _, p := range []string{main, other, plain} {
		expectAllowed(t, "before load", p)
	}
	mainDigest := m.FSVerity.Files[fixture.FSVerityFileMain].Digest
	load(t, "0.0.1", denyByDefault("op=EXECUTE fsverity_digest="+mainDigest+" action=ALLOW"))
	digestObservable := observable(status(t), "fsverity_digest")
	t.Logf("fsverity_digest observable: %v", digestObservable)

	for _, name := range []string{fixture.FSVerityFileMain, fixture.FSVerityFileOther} {
		p := filepath.Join(mnt, name)
		if err := enableVerity(t, p, nil); err != nil {
			t.Fatal(err)
		}
		// The kernel's digest is the one the host computed: a mismatch
		// would make every result below meaningless.
		got, err := fsverity.Measure(p)
		if err != nil || got != m.FSVerity.Files[name].Digest {
			t.Fatalf("%s: kernel fs-verity digest %s (%v), host computed %s", name, got, err, m.FSVerity.Files[name].Digest)
		}
	}
	expect(t, digestObservable, "fs-verity file with the allowed digest", main)
	expectDenied(t, "fs-verity file with another digest", other)
	expectDenied(t, "same bytes without fs-verity", plain)

	// Reading the digest does not depend on when verity was set up: a
	// fresh mount reads it from disk.
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(m.FSVerity.Disk, mnt, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	expect(t, digestObservable, "fs-verity file with the allowed digest, remounted", main)
	expectDenied(t, "fs-verity file with another digest, remounted", other)
}

// fsVerityKeyring finds the .fs-verity keyring in /proc/keys.
func fsVerityKeyring() (int, error) {
	f, err := os.Open("/proc/keys")
	if err != nil {
		return 0, err
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
		return 0, err
	}
	return 0, errors.New("no .fs-verity keyring in /proc/keys")
}

// fsverity_signature=TRUE holds for a file whose builtin signature
// fs-verity verified when it set the file up, after the load; FALSE for a
// verity file without one, and for files without fs-verity. Where the
// loader reports it unobservable (no inode_setintegrity hook before
// 6.12), both forms are false.
func TestFSVeritySignature(t *testing.T) {
	m := setup(t)
	mnt := mountFSVerity(t, m)
	signedPath := filepath.Join(mnt, fixture.FSVerityFileSigned)
	unsignedPath := filepath.Join(mnt, fixture.FSVerityFileMain)
	plainPath := filepath.Join(mnt, fixture.FSVerityFilePlain)
	if err := enableVerity(t, unsignedPath, nil); err != nil {
		t.Fatal(err)
	}

	load(t, "0.0.1", denyByDefault("op=EXECUTE fsverity_signature=TRUE action=ALLOW"))
	sigObservable := observable(status(t), "fsverity_signature")
	t.Logf("fsverity_signature observable: %v", sigObservable)

	// The signer's certificate goes into the keyring fs-verity checks
	// builtin signatures against; then verity is enabled with the
	// signature, after the load, so capture sees the verification.
	signedOK := false
	if keyring, err := fsVerityKeyring(); err != nil {
		t.Logf("no builtin signatures on this kernel: %v", err)
	} else {
		cert, err := os.ReadFile(m.FSVerity.CertDER)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.AddKey("asymmetric", "", cert, keyring); err != nil {
			t.Fatalf("add certificate to .fs-verity: %v", err)
		}
		sig, err := os.ReadFile(m.FSVerity.Files[fixture.FSVerityFileSigned].Signature)
		if err != nil {
			t.Fatal(err)
		}
		if err := enableVerity(t, signedPath, sig); err != nil {
			t.Fatalf("enable fs-verity with a builtin signature by a certificate in .fs-verity: %v", err)
		}
		signedOK = true
	}
	if signedOK {
		expect(t, sigObservable, "fs-verity file with a verified builtin signature, fsverity_signature=TRUE", signedPath)
	}
	expectDenied(t, "fs-verity file without a signature, fsverity_signature=TRUE", unsignedPath)
	expectDenied(t, "file without fs-verity, fsverity_signature=TRUE", plainPath)

	update(t, "0.0.2", []string{
		"DEFAULT action=ALLOW",
		"op=EXECUTE boot_verified=TRUE action=ALLOW",
		"op=EXECUTE fsverity_signature=FALSE action=DENY",
	})
	// An unobservable property is false in both forms: nothing is denied.
	expect(t, !sigObservable, "fs-verity file without a signature, fsverity_signature=FALSE denied", unsignedPath)
	expect(t, !sigObservable, "file without fs-verity, fsverity_signature=FALSE denied", plainPath)
	if signedOK {
		expectAllowed(t, "fs-verity file with a verified builtin signature, fsverity_signature=FALSE denied", signedPath)
	}
}
