package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// sysfsRoot is where sysfs is mounted; tests point it at a fixture tree.
var sysfsRoot = "/sys"

// ErrNoDiskSeq reports a kernel older than 5.15, which has no disk sequence
// numbers. Without them a device number can be reused by a different disk,
// so callers must not key anything on the device number alone.
var ErrNoDiskSeq = errors.New("kernel has no disk sequence numbers (needs Linux 5.15)")

func devDir(major, minor uint32) string {
	return filepath.Join(sysfsRoot, "dev", "block", fmt.Sprintf("%d:%d", major, minor))
}

// DiskSeq returns the disk sequence number of a block device: a counter the
// kernel gives every disk it creates (and every media change), never reused
// until reboot. Together with the device number it tells a recreated disk
// apart from the one that held the number before.
func DiskSeq(major, minor uint32) (uint64, error) {
	dir := devDir(major, minor)
	raw, err := os.ReadFile(filepath.Join(dir, "diskseq"))
	if errors.Is(err, os.ErrNotExist) {
		if _, statErr := os.Stat(dir); statErr == nil {
			return 0, fmt.Errorf("read diskseq of %d:%d: %w", major, minor, ErrNoDiskSeq)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("read diskseq of %d:%d: %w", major, minor, err)
	}
	seq, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse diskseq of %d:%d: %w", major, minor, err)
	}
	return seq, nil
}

// DMName returns the device-mapper name of a dm block device, or an error
// wrapping os.ErrNotExist when the device is gone or is not a dm device.
func DMName(major, minor uint32) (string, error) {
	raw, err := os.ReadFile(filepath.Join(devDir(major, minor), "dm", "name"))
	if err != nil {
		return "", fmt.Errorf("read dm name of %d:%d: %w", major, minor, err)
	}
	return strings.TrimSuffix(string(raw), "\n"), nil
}

// DevName returns the device node name under /dev (such as "dm-0" or
// "vda1") from the device's uevent file. devtmpfs creates nodes under these
// names, so the result is usable without udev.
func DevName(major, minor uint32) (string, error) {
	raw, err := os.ReadFile(filepath.Join(devDir(major, minor), "uevent"))
	if err != nil {
		return "", fmt.Errorf("read uevent of %d:%d: %w", major, minor, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok && name != "" {
			return name, nil
		}
	}
	return "", fmt.Errorf("read uevent of %d:%d: no DEVNAME", major, minor)
}
