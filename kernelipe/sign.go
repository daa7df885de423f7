package kernelipe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/smallstep/pkcs7"
)

// Sign wraps policyText in the PKCS#7 message IPE's new_policy and update
// files accept: SignedData with the content attached, the signer's
// certificate included and no signed attributes, digested with SHA-256 --
// what `openssl smime -sign -noattr -nodetach -binary -outform der`
// produces. The kernel only trusts it if cert is in its secondary or
// platform keyring.
func Sign(policyText []byte, cert *x509.Certificate, key crypto.Signer) ([]byte, error) {
	if cert == nil || key == nil {
		return nil, errors.New("sign policy: no certificate or key")
	}
	if len(policyText) == 0 {
		// pkcs7 would encode an empty content the same as a detached one,
		// which the kernel reads as "no data"; IPE rejects both anyway.
		return nil, errors.New("sign policy: policy is empty")
	}
	sd, err := pkcs7.NewSignedData(policyText)
	if err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	switch key.Public().(type) {
	case *rsa.PublicKey:
		// The library would name the pair sha256WithRSAEncryption; openssl
		// writes plain rsaEncryption, the one form every kernel's PKCS#7
		// parser knows (6.12's knows no other for RSA).
		sd.SetEncryptionAlgorithm(pkcs7.OIDEncryptionAlgorithmRSA)
	case *ecdsa.PublicKey:
		// ecdsa-with-SHA256, inferred by the library, as openssl writes it.
	default:
		return nil, fmt.Errorf("sign policy: unsupported key type %T (the kernel verifies RSA and ECDSA)", key.Public())
	}
	if err := sd.SignWithoutAttr(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	// openssl writes NULL parameters into each AlgorithmIdentifier, as RFC
	// 3279 asks for RSA; with them the message is byte for byte what the
	// kernel documentation's openssl command produces.
	if _, isRSA := key.Public().(*rsa.PublicKey); isRSA {
		inner := sd.GetSignedData()
		for i := range inner.DigestAlgorithmIdentifiers {
			inner.DigestAlgorithmIdentifiers[i].Parameters = asn1.NullRawValue
		}
		for i := range inner.SignerInfos {
			inner.SignerInfos[i].DigestAlgorithm.Parameters = asn1.NullRawValue
			inner.SignerInfos[i].DigestEncryptionAlgorithm.Parameters = asn1.NullRawValue
		}
	}
	blob, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("sign policy: %w", err)
	}
	return blob, nil
}

// ReadKeyPair reads a PEM certificate and its PEM private key (PKCS#8, as
// `openssl req -newkey` writes it, or PKCS#1 RSA, or SEC 1 EC) and checks
// that they belong together.
func ReadKeyPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate: %w", err)
	}
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("key %s does not match certificate %s", keyPath, certPath)
	}
	return cert, key, nil
}

// ParseCertificate reads the first certificate of PEM data, or DER data.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			return parseCert(block.Bytes)
		}
	}
	return parseCert(data)
}

func parseCert(der []byte) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

// ParsePrivateKey reads the first private key of PEM data.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("parse key: no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("parse key: the key is encrypted; write it with -nodes or openssl pkey")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse key: %T cannot sign", key)
		}
		return signer, nil
	}
}
