package vmtest

import (
	"testing"

	"github.com/bpfipe/bpfipe/internal/testcert"
)

// TestCertificate writes a self-signed RSA certificate for commonName and
// its key (PKCS#8) as PEM files in a temporary directory. Enrolled with
// WithUEFICert it lands in the guest's .platform keyring, where IPE and
// dm-verity accept signatures made with the key.
func TestCertificate(t testing.TB, commonName string) (certPath, keyPath string) {
	t.Helper()
	return testcert.New(t, commonName, nil).WritePEM(t, t.TempDir())
}
