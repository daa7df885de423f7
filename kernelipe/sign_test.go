package kernelipe

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/bpfipe/bpfipe/internal/testcert"
)

const testPolicy = "policy_name=sign_test policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=ALLOW\n"

type testSigner struct {
	cert              *x509.Certificate
	key               crypto.Signer
	certPath, keyPath string
}

// withFiles adds the PEM files of p, for openssl and ReadKeyPair.
func withFiles(t *testing.T, p testcert.Pair) testSigner {
	t.Helper()
	certPath, keyPath := p.WritePEM(t, t.TempDir())
	return testSigner{cert: p.Cert, key: p.Key, certPath: certPath, keyPath: keyPath}
}

func rsaSigner(t *testing.T) testSigner {
	t.Helper()
	return withFiles(t, testcert.New(t, "bpfipe kernelipe test", nil))
}

func TestSignStructure(t *testing.T) {
	s := rsaSigner(t)
	blob, err := Sign([]byte(testPolicy), s.cert, s.key)
	if err != nil {
		t.Fatal(err)
	}
	p7, err := pkcs7.Parse(blob)
	if err != nil {
		t.Fatalf("parse signed policy: %v", err)
	}
	if string(p7.Content) != testPolicy {
		t.Errorf("attached content = %q, want the policy", p7.Content)
	}
	if len(p7.Signers) != 1 {
		t.Fatalf("%d signers, want 1", len(p7.Signers))
	}
	si := p7.Signers[0]
	if len(si.AuthenticatedAttributes) != 0 {
		t.Errorf("signer has %d signed attributes; IPE's documented form (-noattr) has none", len(si.AuthenticatedAttributes))
	}
	if !si.DigestAlgorithm.Algorithm.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		t.Errorf("digest algorithm %v, want sha256", si.DigestAlgorithm.Algorithm)
	}
	if !si.DigestEncryptionAlgorithm.Algorithm.Equal(pkcs7.OIDEncryptionAlgorithmRSA) {
		t.Errorf("signature algorithm %v, want rsaEncryption as openssl writes it", si.DigestEncryptionAlgorithm.Algorithm)
	}
	if len(p7.Certificates) != 1 || !p7.Certificates[0].Equal(s.cert) {
		t.Errorf("the message does not carry exactly the signer's certificate")
	}
	if err := p7.Verify(); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
	// The signature over the raw content, with no attributes in between,
	// is what the kernel checks when a message has no signed attributes.
	digest := sha256Sum([]byte(testPolicy))
	if err := rsa.VerifyPKCS1v15(s.cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest, si.EncryptedDigest); err != nil {
		t.Errorf("signature is not PKCS#1 v1.5 over SHA-256 of the content: %v", err)
	}
}

func sha256Sum(b []byte) []byte {
	h := crypto.SHA256.New()
	h.Write(b)
	return h.Sum(nil)
}

func needOpenSSL(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("needs openssl to cross-check signatures: not on PATH")
	}
	return path
}

// opensslVerify runs `openssl smime -verify -noverify` and returns the
// content it extracted.
func opensslVerify(t *testing.T, openssl string, blob []byte) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "policy.p7s"), filepath.Join(dir, "content")
	if err := os.WriteFile(in, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(openssl, "smime", "-verify", "-noverify", "-binary", "-inform", "der", "-in", in, "-out", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: msg}
	}
	return os.ReadFile(out)
}

func TestSignVerifiesWithOpenSSL(t *testing.T) {
	openssl := needOpenSSL(t)
	for name, s := range map[string]testSigner{"rsa": rsaSigner(t), "ecdsa": ecdsaSigner(t)} {
		t.Run(name, func(t *testing.T) {
			blob, err := Sign([]byte(testPolicy), s.cert, s.key)
			if err != nil {
				t.Fatal(err)
			}
			content, err := opensslVerify(t, openssl, blob)
			if err != nil {
				t.Fatalf("openssl rejects the signature: %v: %s", err, err.(*exec.ExitError).Stderr)
			}
			if string(content) != testPolicy {
				t.Errorf("openssl extracted %q, want the policy", content)
			}
			tampered := bytes.Replace(blob, []byte("sign_test"), []byte("sign_tesT"), 1)
			if bytes.Equal(tampered, blob) {
				t.Fatal("policy name not found in the message")
			}
			if _, err := opensslVerify(t, openssl, tampered); err == nil {
				t.Error("openssl accepts a message whose content was altered after signing")
			}
		})
	}
}

func ecdsaSigner(t *testing.T) testSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return withFiles(t, testcert.NewForKey(t, "bpfipe kernelipe test", key, nil))
}

// TestSignMatchesOpenSSL signs the same text with openssl's documented
// command and compares: RSA PKCS#1 v1.5 signatures are deterministic, so
// the signature bytes must be equal, and so must every other part the
// kernel reads.
func TestSignMatchesOpenSSL(t *testing.T) {
	openssl := needOpenSSL(t)
	s := rsaSigner(t)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "policy.pol"), filepath.Join(dir, "policy.p7s")
	if err := os.WriteFile(in, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(openssl, "smime", "-sign", "-in", in, "-signer", s.certPath, "-inkey", s.keyPath,
		"-noattr", "-nodetach", "-binary", "-outform", "der", "-out", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl smime -sign: %v: %s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Sign([]byte(testPolicy), s.cert, s.key)
	if err != nil {
		t.Fatal(err)
	}
	p7want, err := pkcs7.Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	p7got, err := pkcs7.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p7got.Content, p7want.Content) {
		t.Errorf("content differs from openssl's")
	}
	sw, sg := p7want.Signers[0], p7got.Signers[0]
	if !bytes.Equal(sg.EncryptedDigest, sw.EncryptedDigest) {
		t.Errorf("signature differs from openssl's")
	}
	if !sg.DigestAlgorithm.Algorithm.Equal(sw.DigestAlgorithm.Algorithm) || !sg.DigestEncryptionAlgorithm.Algorithm.Equal(sw.DigestEncryptionAlgorithm.Algorithm) {
		t.Errorf("algorithms %v/%v, openssl's %v/%v", sg.DigestAlgorithm.Algorithm, sg.DigestEncryptionAlgorithm.Algorithm,
			sw.DigestAlgorithm.Algorithm, sw.DigestEncryptionAlgorithm.Algorithm)
	}
	if len(sw.AuthenticatedAttributes) != len(sg.AuthenticatedAttributes) || sg.IssuerAndSerialNumber.SerialNumber.Cmp(sw.IssuerAndSerialNumber.SerialNumber) != 0 ||
		!bytes.Equal(sg.IssuerAndSerialNumber.IssuerName.FullBytes, sw.IssuerAndSerialNumber.IssuerName.FullBytes) {
		t.Errorf("signer info differs from openssl's")
	}
	// With the NULL algorithm parameters openssl writes, nothing is left to
	// differ: the message is the one the kernel's documentation produces.
	if !bytes.Equal(got, want) {
		t.Errorf("DER differs from openssl's (%d vs %d bytes)", len(got), len(want))
	}
}

func TestSignRefuses(t *testing.T) {
	s := rsaSigner(t)
	if _, err := Sign(nil, s.cert, s.key); err == nil {
		t.Error("Sign accepts an empty policy")
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sign([]byte(testPolicy), s.cert, edKey); err == nil || !strings.Contains(err.Error(), "unsupported key type") {
		t.Errorf("Sign with an Ed25519 key: %v, want unsupported key type", err)
	}
}

func TestReadKeyPair(t *testing.T) {
	a, b := rsaSigner(t), rsaSigner(t)
	cert, key, err := ReadKeyPair(a.certPath, a.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Equal(a.cert) {
		t.Error("ReadKeyPair returned another certificate")
	}
	if !key.Public().(*rsa.PublicKey).Equal(a.key.Public()) {
		t.Error("ReadKeyPair returned another key")
	}
	if _, _, err := ReadKeyPair(a.certPath, b.keyPath); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched pair: %v, want does not match", err)
	}
	if _, _, err := ReadKeyPair(a.keyPath, a.keyPath); err == nil {
		t.Error("a key file is accepted as a certificate")
	}
}
