package loader

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/smallstep/pkcs7"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/internal/testcert"
	"github.com/bpfipe/bpfipe/policy"
)

const signedPolicyText = "policy_name=signed policy_version=1.2.3\nDEFAULT action=ALLOW\n"

// sign makes what `openssl smime -sign -nodetach -noattr -binary -outform
// der` makes: signedData with the content attached and no signed
// attributes, optionally with extra certificates (a chain).
func sign(t testing.TB, content []byte, k testcert.Pair, extra ...*x509.Certificate) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.SignWithoutAttr(k.Cert, k.Key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range extra {
		sd.AddCertificate(c)
	}
	blob, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

func TestIsPKCS7(t *testing.T) {
	k := testcert.New(t, "detect", nil)
	blob := sign(t, []byte(signedPolicyText), k)
	if !IsPKCS7(blob) {
		t.Error("a signedData message is not recognised")
	}
	if !IsPKCS7(blob[:len(blob)/2]) {
		t.Error("a truncated signedData message is not recognised, so it would be parsed as text")
	}
	for _, text := range []string{signedPolicyText, "0 policy", "", "0"} {
		if IsPKCS7([]byte(text)) {
			t.Errorf("text %q taken for PKCS#7", text)
		}
	}
	// A DER SEQUENCE of another content type (id-data) is not a signed policy.
	data := append([]byte{0x30, 0x0b, 0x06, 0x09}, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01)
	if IsPKCS7(data) {
		t.Error("id-data ContentInfo taken for signedData")
	}
}

func TestDecodePolicySignatures(t *testing.T) {
	root := testcert.NewCA(t, "trusted root")
	leaf := testcert.New(t, "policy signer", &root)
	stranger := testcert.New(t, "stranger", nil)
	good := sign(t, []byte(signedPolicyText), root)

	tampered := bytes.Replace(good, []byte("1.2.3"), []byte("9.2.3"), 1)
	if bytes.Equal(tampered, good) {
		t.Fatal("policy text not found in the blob")
	}

	for _, tc := range []struct {
		name    string
		blob    []byte
		trusted []*x509.Certificate
		errno   syscall.Errno // 0: accepted
	}{
		{"signed by a trusted certificate", good, []*x509.Certificate{root.Cert}, 0},
		{"signed by a certificate a trusted one issued", sign(t, []byte(signedPolicyText), leaf), []*x509.Certificate{root.Cert}, 0},
		{"chain carried in the message", sign(t, []byte(signedPolicyText), leaf, root.Cert), []*x509.Certificate{root.Cert}, 0},
		{"signed, no trust asked for", sign(t, []byte(signedPolicyText), stranger), nil, 0},
		{"plain text, no trust asked for", []byte(signedPolicyText), nil, 0},
		{"plain text when trust is required", []byte(signedPolicyText), []*x509.Certificate{root.Cert}, syscall.EBADMSG},
		{"truncated message", good[:len(good)-40], []*x509.Certificate{root.Cert}, syscall.EBADMSG},
		{"signer not trusted", sign(t, []byte(signedPolicyText), stranger), []*x509.Certificate{root.Cert}, syscall.ENOKEY},
		{"content altered after signing", tampered, []*x509.Certificate{root.Cert}, syscall.EKEYREJECTED},
		{"content altered, no trust asked for", tampered, nil, syscall.EKEYREJECTED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodePolicy("p.p7s", tc.blob, tc.trusted)
			if tc.errno == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if f.Policy.Name != "signed" || f.Policy.Version.String() != "1.2.3" {
					t.Errorf("parsed %q %s, want signed 1.2.3", f.Policy.Name, f.Policy.Version)
				}
				if !bytes.Equal(f.Blob, tc.blob) {
					t.Error("Blob is not the bytes given")
				}
				if f.Verified != (len(tc.trusted) > 0) {
					t.Errorf("Verified = %v with %d trusted certificates", f.Verified, len(tc.trusted))
				}
				return
			}
			var refusal *Refusal
			if !errors.As(err, &refusal) || !errors.Is(err, tc.errno) {
				t.Fatalf("error %v, want a Refusal with %v", err, tc.errno)
			}
			if refusal.Reason == "" {
				t.Error("refusal without a reason")
			}
		})
	}
}

func TestDecodePolicyReportsParseErrorsOfSignedContent(t *testing.T) {
	k := testcert.New(t, "signer", nil)
	blob := sign(t, []byte("policy_name=x\n"), k)
	_, err := DecodePolicy("bad.p7s", blob, []*x509.Certificate{k.Cert})
	if err == nil || !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.EBADMSG) {
		t.Fatalf("got %v, want the parser's rejection of the signed text", err)
	}
	var refusal *Refusal
	if errors.As(err, &refusal) {
		t.Errorf("a parse error reported as a signature refusal: %v", err)
	}
}

func TestPolicyDigestIsOfTheLoadedBytes(t *testing.T) {
	// IPE's boot policy has no blob and is reported with sha256 of nothing.
	f := &PolicyFile{}
	if got, want := f.Digest(), "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"; got != want {
		t.Errorf("digest of nothing = %s, want %s", got, want)
	}
}

// TestOpenSSLSignedPolicy checks the form IPE's documentation produces
// with openssl, which is what users will bring.
func TestOpenSSLSignedPolicy(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed: cannot produce an openssl-signed policy")
	}
	dir := t.TempDir()
	k := testcert.New(t, "openssl signer", nil)
	polPath := filepath.Join(dir, "policy.txt")
	outPath := filepath.Join(dir, "policy.p7s")
	certPath, keyPath := k.WritePEM(t, dir)
	if err := os.WriteFile(polPath, []byte(signedPolicyText), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(openssl, "smime", "-sign", "-in", polPath, "-signer", certPath, "-inkey", keyPath,
		"-noattr", "-nodetach", "-nosmimecap", "-binary", "-outform", "der", "-out", outPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	trusted, err := ReadCertificates([]string{certPath})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ReadPolicy(outPath, trusted)
	if err != nil {
		t.Fatalf("openssl-signed policy rejected: %v", err)
	}
	if string(f.Text) != signedPolicyText || !f.Verified || !strings.Contains(f.Signer, "openssl signer") {
		t.Errorf("text %q verified %v signer %q", f.Text, f.Verified, f.Signer)
	}
}

// FuzzDecodePolicy feeds arbitrary files to the policy reader: it must not
// panic, and every rejection must say whether the signature or the text
// was at fault, with an errno.
func FuzzDecodePolicy(f *testing.F) {
	k := testcert.New(f, "fuzz", nil)
	signed := sign(f, []byte(signedPolicyText), k)
	f.Add(signed, true)
	f.Add(signed[:len(signed)/3], false)
	f.Add([]byte(signedPolicyText), false)
	f.Add([]byte{0x30, 0x82, 0x00, 0x10, 0x06, 0x09}, true)
	f.Fuzz(func(t *testing.T, blob []byte, trust bool) {
		var trusted []*x509.Certificate
		if trust {
			trusted = []*x509.Certificate{k.Cert}
		}
		pf, err := DecodePolicy("fuzz", blob, trusted)
		if err == nil {
			if pf.Policy == nil {
				t.Fatal("accepted without a parsed policy")
			}
			return
		}
		var refusal *Refusal
		var parseErr *policy.ParseError
		if !errors.As(err, &refusal) && !errors.As(err, &parseErr) {
			t.Fatalf("untyped rejection: %v", err)
		}
		var errno syscall.Errno
		if !errors.As(err, &errno) || errno == 0 {
			t.Fatalf("rejection without an errno: %v", err)
		}
	})
}

func TestDecodePolicyRefusesNamesIPECannotLoad(t *testing.T) {
	for name, want := range map[string]syscall.Errno{
		".":                      syscall.EACCES,
		"..":                     syscall.EACCES,
		"a/b":                    syscall.EACCES,
		strings.Repeat("n", 256): syscall.ENAMETOOLONG,
	} {
		text := "policy_name=" + name + " policy_version=0.0.1\nDEFAULT action=ALLOW\n"
		_, err := DecodePolicy("p.pol", []byte(text), nil)
		if !errors.Is(err, want) {
			t.Errorf("name %.20q: got %v, want %s", name, err, unix.ErrnoName(want))
		}
	}
	longest := strings.Repeat("n", 255)
	if _, err := DecodePolicy("p.pol", []byte("policy_name="+longest+" policy_version=0.0.1\nDEFAULT action=ALLOW\n"), nil); err != nil {
		t.Errorf("a 255-byte name: %v", err)
	}
}
