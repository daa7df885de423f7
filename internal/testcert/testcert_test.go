package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"
)

func TestSelfSigned(t *testing.T) {
	p := New(t, "bpfipe signer", nil)
	c := p.Cert
	if c.Subject.CommonName != "bpfipe signer" || string(c.RawIssuer) != string(c.RawSubject) {
		t.Errorf("subject %q issuer %q, want a self-signed bpfipe signer", c.Subject, c.Issuer)
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Errorf("the certificate does not verify with its own key: %v", err)
	}
	key, ok := p.Key.(*rsa.PrivateKey)
	if !ok || key.N.BitLen() != 2048 || !key.PublicKey.Equal(c.PublicKey) {
		t.Errorf("key %T does not match the certificate, or is not RSA 2048", p.Key)
	}
	if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 || c.IsCA || c.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Errorf("key usage %#x CA %v, want a signer that is not a CA", c.KeyUsage, c.IsCA)
	}
	if now := time.Now(); now.Before(c.NotBefore) || now.After(c.NotAfter) {
		t.Errorf("valid %v to %v, not now", c.NotBefore, c.NotAfter)
	}
	if q := New(t, "bpfipe signer", nil); q.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates of one name share a serial, so a PKCS#7 signer identifier cannot tell them apart")
	}
}

func TestIssued(t *testing.T) {
	ca := NewCA(t, "bpfipe root")
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA %v key usage %#x, want a CA that signs certificates", ca.Cert.IsCA, ca.Cert.KeyUsage)
	}
	leaf := New(t, "bpfipe leaf", &ca)
	if err := leaf.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("the issued certificate does not verify with its issuer: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("no chain from the issued certificate to its issuer: %v", err)
	}
}

func TestForKey(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := NewForKey(t, "bpfipe ecdsa", key, nil)
	if !key.PublicKey.Equal(p.Cert.PublicKey) || p.Key != key {
		t.Error("the certificate is not of the given key")
	}
}

func TestWritePEM(t *testing.T) {
	p := New(t, "bpfipe files", nil)
	certPath, keyPath := p.WritePEM(t, t.TempDir())
	certBlock := readPEM(t, certPath, "CERTIFICATE")
	if string(certBlock.Bytes) != string(p.Cert.Raw) {
		t.Error("cert.pem holds another certificate")
	}
	key, err := x509.ParsePKCS8PrivateKey(readPEM(t, keyPath, "PRIVATE KEY").Bytes)
	if err != nil {
		t.Fatalf("key.pem is not PKCS#8: %v", err)
	}
	if !p.Key.(*rsa.PrivateKey).Equal(key) {
		t.Error("key.pem holds another key")
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("key.pem mode %v, want it private to its owner", fi.Mode())
	}
}

func readPEM(t *testing.T, path, typ string) *pem.Block {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != typ || len(rest) != 0 {
		t.Fatalf("%s: want one PEM block of type %s", path, typ)
	}
	return block
}
