// Package harness holds in-guest tests for the VM runner's own tests: the
// host side (test/vmtest) boots them in qemu guests and checks that each is
// reported back by name. On the host they skip, since they inspect a guest
// prepared by the runner's init.
package harness
