// Package testcert makes the certificates and keys that tests sign policies
// and dm-verity root hashes with. A certificate is allowed to sign
// (KeyUsage DigitalSignature), which is what IPE, dm-verity and openssl
// smime ask of a signer. It is valid from an hour ago, so that a clock
// lagging the host's (a guest's) finds it valid, for a year.
package testcert

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Pair is a certificate and the private key of its public key.
type Pair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// New makes an RSA 2048 key and a certificate for it named commonName,
// issued by issuer, or self-signed when issuer is nil.
func New(t testing.TB, commonName string, issuer *Pair) Pair {
	t.Helper()
	return NewForKey(t, commonName, rsaKey(t), issuer)
}

// NewCA makes a self-signed certificate that may also issue others: a CA
// allowed to sign certificates, for New's issuer.
func NewCA(t testing.TB, commonName string) Pair {
	t.Helper()
	return create(t, commonName, rsaKey(t), nil, true)
}

// NewForKey is New with a key of the caller's, of any type x509 encodes.
func NewForKey(t testing.TB, commonName string, key crypto.Signer, issuer *Pair) Pair {
	t.Helper()
	return create(t, commonName, key, issuer, false)
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func create(t testing.TB, commonName string, key crypto.Signer, issuer *Pair, ca bool) Pair {
	t.Helper()
	// A random serial keeps the issuer and serial pair, by which PKCS#7
	// names its signer and keyrings find keys, unique across certificates
	// and test runs that share a name.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("generate serial: %v", err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	if ca {
		template.IsCA = true
		template.KeyUsage |= x509.KeyUsageCertSign
	}
	parent, signer := template, key
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, key.Public(), signer)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return Pair{Cert: cert, Key: key}
}

// WritePEM writes the certificate to dir/cert.pem and the key, PKCS#8, to
// dir/key.pem, the forms openssl and the bpfipe and kernel-ipe commands
// read.
func (p Pair) WritePEM(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.Key)
	if err != nil {
		t.Fatalf("encode key: %v", err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Cert.Raw}), 0o644); err != nil {
		t.Fatalf("write certificate: %v", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatalf("write key: %v", err)
	}
	return certPath, keyPath
}
