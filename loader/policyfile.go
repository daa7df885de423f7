package loader

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"syscall"

	"github.com/smallstep/pkcs7"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/policy"
)

// PolicyFile is a policy as read from disk: the text the parser sees and
// the bytes that were loaded, which are what IPE digests in its records.
type PolicyFile struct {
	Name string // the file name, for messages
	// Blob is the file's content: a PKCS#7 message or plain text.
	Blob []byte
	// Text is the policy text: the signed content of a PKCS#7 message, or
	// Blob itself.
	Text   []byte
	Signed bool
	// Verified says the signature was checked against trusted certificates.
	Verified bool
	// Signer is the subject of the certificate that signed, when known.
	Signer string
	Policy *policy.Policy
}

// Digest is "sha256:HEX" of the loaded bytes, as IPE's policy_digest.
func (f *PolicyFile) Digest() string {
	sum := sha256.Sum256(f.Blob)
	return "sha256:" + strings.ToUpper(hex.EncodeToString(sum[:]))
}

// ReadPolicy reads and parses a policy file, plain text or IPE's
// PKCS#7-signed form (DER, content attached). With trusted certificates
// the signature must verify against one of them, as IPE requires of every
// policy it loads, and errors carry IPE's errnos: EBADMSG for a policy
// that is unsigned or malformed, ENOKEY when no signer is trusted,
// EKEYREJECTED when a signature does not verify. Without trusted
// certificates a signed policy's signature is still checked against the
// signer certificate it carries, so a damaged file is caught, but anyone
// may have signed it.
func ReadPolicy(path string, trusted []*x509.Certificate) (*PolicyFile, error) {
	blob, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return DecodePolicy(path, blob, trusted)
}

// DecodePolicy is ReadPolicy on bytes already read.
func DecodePolicy(name string, blob []byte, trusted []*x509.Certificate) (*PolicyFile, error) {
	f := &PolicyFile{Name: name, Blob: blob, Text: blob}
	if IsPKCS7(blob) {
		if err := f.openSigned(trusted); err != nil {
			return nil, err
		}
	} else if len(trusted) > 0 {
		return nil, refuse("verify policy signature", syscall.EBADMSG,
			"%s is not a PKCS#7 signed message; sign it with openssl smime -sign -nodetach -noattr -binary -outform der", name)
	}
	p, err := policy.Parse(name, f.Text)
	if err != nil {
		return nil, err
	}
	if err := checkLoadableName(p.Name); err != nil {
		return nil, err
	}
	f.Policy = p
	return f, nil
}

// checkLoadableName refuses the policy names IPE's parser accepts but its
// load path cannot: IPE makes a securityfs directory policies/NAME, which
// fails for "/" inside, "." and ".." (EACCES) and names longer than
// NAME_MAX (ENAMETOOLONG). bpfipe refuses what IPE would, so a policy
// tried here loads there too.
func checkLoadableName(name string) error {
	const step = "load policy"
	switch {
	case name == "." || name == ".." || strings.Contains(name, "/"):
		return refuse(step, syscall.EACCES, "policy name %q cannot name IPE's securityfs directory policies/NAME", name)
	case len(name) > unix.NAME_MAX:
		return refuse(step, syscall.ENAMETOOLONG, "policy name is %d bytes; IPE's securityfs directory name takes at most %d", len(name), unix.NAME_MAX)
	}
	return nil
}

// contentInfo is the outer structure of every PKCS#7 message (RFC 2315).
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
}

// IsPKCS7 reports whether blob is a DER ContentInfo of type signedData. A
// policy text cannot be mistaken for one: it would have to start with the
// byte '0' followed by a valid DER length and the signedData OID.
func IsPKCS7(blob []byte) bool {
	if len(blob) < 2 || blob[0] != 0x30 {
		return false
	}
	var info contentInfo
	// Trailing bytes or a damaged body are the verifier's to report: what
	// matters here is only what the file claims to be.
	if _, err := asn1.Unmarshal(blob, &info); err != nil {
		return looksLikeSignedDataHeader(blob)
	}
	return info.ContentType.Equal(pkcs7.OIDSignedData)
}

// looksLikeSignedDataHeader recognises a signedData message whose body is
// damaged, so it is reported as a malformed signature (EBADMSG) rather
// than as a policy text that does not parse.
func looksLikeSignedDataHeader(blob []byte) bool {
	oid, err := asn1.Marshal(pkcs7.OIDSignedData)
	if err != nil {
		return false
	}
	// SEQUENCE, a short or long length of up to 4 bytes, then the OID.
	for _, skip := range []int{2, 3, 4, 5, 6} {
		if len(blob) >= skip+len(oid) && bytes.Equal(blob[skip:skip+len(oid)], oid) {
			return skip == 2 && blob[1] < 0x80 || skip > 2 && int(blob[1]) == 0x80+skip-2
		}
	}
	return false
}

const stepVerify = "verify policy signature"

// openSigned extracts and checks the content of a PKCS#7 policy in the
// order the kernel does (pkcs7_verify, then pkcs7_validate_trust), so the
// same defect gets the same errno.
func (f *PolicyFile) openSigned(trusted []*x509.Certificate) error {
	f.Signed = true
	p7, err := pkcs7.Parse(f.Blob)
	if err != nil {
		return refuse(stepVerify, syscall.EBADMSG, "%s: malformed PKCS#7 message: %v", f.Name, err)
	}
	if len(p7.Signers) == 0 {
		return refuse(stepVerify, syscall.EBADMSG, "%s: PKCS#7 message has no signer", f.Name)
	}
	if len(p7.Content) == 0 {
		return refuse(stepVerify, syscall.EBADMSG, "%s: PKCS#7 message has no attached content; sign with -nodetach", f.Name)
	}
	f.Text = p7.Content

	signers := make([]*x509.Certificate, len(p7.Signers))
	for i, s := range p7.Signers {
		signers[i] = findCert(p7.Certificates, s.IssuerAndSerialNumber.IssuerName.FullBytes, s.IssuerAndSerialNumber.SerialNumber)
		if signers[i] == nil {
			if len(trusted) == 0 {
				// Nothing to check the signature with; the content is
				// taken as is, as the caller asked for no trust.
				continue
			}
			return refuse(stepVerify, syscall.ENOKEY, "%s: signer %d's certificate is not in the message; sign without -nocerts", f.Name, i)
		}
	}
	if signers[0] != nil {
		f.Signer = signers[0].Subject.String()
	}
	if allNonNil(signers) {
		if err := p7.Verify(); err != nil {
			return refuse(stepVerify, syscall.EKEYREJECTED, "%s: signature does not verify: %v", f.Name, err)
		}
	}
	if len(trusted) == 0 {
		return nil
	}
	for _, c := range signers {
		if trustedBy(c, p7.Certificates, trusted) {
			f.Verified = true
			f.Signer = c.Subject.String()
			return nil
		}
	}
	return refuse(stepVerify, syscall.ENOKEY, "%s: signed by %q, which is neither a trusted certificate nor issued by one", f.Name, f.Signer)
}

func allNonNil(certs []*x509.Certificate) bool {
	for _, c := range certs {
		if c == nil {
			return false
		}
	}
	return true
}

// findCert finds a signer's certificate by issuer and serial number.
func findCert(certs []*x509.Certificate, issuer []byte, serial *big.Int) *x509.Certificate {
	for _, c := range certs {
		if serial != nil && c.SerialNumber.Cmp(serial) == 0 && bytes.Equal(c.RawIssuer, issuer) {
			return c
		}
	}
	return nil
}

// trustedBy walks from the signer towards a trusted certificate, as the
// kernel's pkcs7_validate_trust_one does: a certificate is trusted when its
// key is a trusted key, or when a trusted key signed it; otherwise the walk
// continues with the certificate in the message that signed it. Validity
// dates are not checked, as the kernel does not check them either.
func trustedBy(signer *x509.Certificate, inMessage, trusted []*x509.Certificate) bool {
	c := signer
	for range len(inMessage) + 1 {
		for _, t := range trusted {
			if samePublicKey(t, c) || t.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil {
				return true
			}
		}
		var parent *x509.Certificate
		for _, p := range inMessage {
			if p != c && bytes.Equal(p.RawSubject, c.RawIssuer) && p.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil {
				parent = p
				break
			}
		}
		if parent == nil {
			return false
		}
		c = parent
	}
	return false
}

func samePublicKey(a, b *x509.Certificate) bool {
	type equaler interface{ Equal(crypto any) bool }
	k, ok := a.PublicKey.(equaler)
	return ok && k.Equal(b.PublicKey)
}

// ReadCertificates reads trusted certificates from PEM or DER files.
func ReadCertificates(paths []string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read certificate: %w", err)
		}
		found, err := parseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %s: %w", path, err)
		}
		certs = append(certs, found...)
	}
	return certs, nil
}

func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		return x509.ParseCertificates(data)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no CERTIFICATE block")
	}
	return certs, nil
}
