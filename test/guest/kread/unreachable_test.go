package kread

import (
	"os"
	"testing"
)

// TestFirmwareUnreachable checks what docs/kernel-reads.md says keeps
// op=FIRMWARE out of reach in these guests, so a kernel that changes it
// fails here instead of leaving the op untested unnoticed: no firmware
// sysfs fallback (the only userspace-driven LOADING_FIRMWARE), and no
// device whose driver could request firmware (READING_FIRMWARE).
func TestFirmwareUnreachable(t *testing.T) {
	requireGuest(t)
	config := kernelConfig(t)
	if v := config["CONFIG_FW_LOADER_USER_HELPER"]; v == "y" {
		t.Fatalf("kernel %s has the firmware sysfs fallback (CONFIG_FW_LOADER_USER_HELPER=y): "+
			"op=FIRMWARE is testable; write the test (docs/kernel-reads.md)", release(t))
	}
	// firmware_class lists pending fallback requests and firmware upload
	// devices here; 6.12 creates the class for CONFIG_FW_UPLOAD even
	// without a device.
	entries, err := os.ReadDir("/sys/class/firmware")
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read /sys/class/firmware: %v", err)
	}
	if len(entries) > 0 {
		t.Fatalf("/sys/class/firmware has %d entries: a firmware request may be reachable here; see docs/kernel-reads.md", len(entries))
	}
	t.Skipf("kernel %s: no firmware request can be triggered in this guest "+
		"(no sysfs fallback, no device that loads firmware); see docs/kernel-reads.md", release(t))
}
