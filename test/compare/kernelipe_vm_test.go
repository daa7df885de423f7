package compare_test

import (
	"testing"

	"github.com/bpfipe/bpfipe/test/vmtest"
)

// TestKernelIPEPackageInGuest runs test/guest/kernelipe, the checks of
// package kernelipe against the real kernel, in a 6.12 guest that trusts a
// freshly made certificate.
func TestKernelIPEPackageInGuest(t *testing.T) {
	cert, key := vmtest.TestCertificate(t, "bpfipe kernelipe tests")
	const guestCert, guestKey = "/opt/kipe/cert.pem", "/opt/kipe/key.pem"
	vmtest.RunGoTests(t, kernel, "./test/guest/kernelipe",
		vmtest.WithUEFICert(cert),
		vmtest.WithAdd(cert, guestCert),
		vmtest.WithAdd(key, guestKey),
		vmtest.WithEnv("BPFIPE_KIPE_CERT="+guestCert, "BPFIPE_KIPE_KEY="+guestKey),
	)
}
