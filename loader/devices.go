package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/loader/dm"
	"github.com/bpfipe/bpfipe/maps"
	"github.com/bpfipe/bpfipe/policy"
)

// resolveVerity is dm.Resolve, replaceable in tests.
var resolveVerity = dm.Resolve

// deviceEntries turns resolved verity devices into devices map entries,
// keyed by the kernel dev_t and disk sequence number the BPF programs read
// from the file's block device. Warnings name devices whose root hash the
// kernel encoding cannot hold, and tables that do not verify.
func deviceEntries(devs []dm.VerityDevice) (map[bpf.DeviceKey]bpf.Device, []string) {
	entries := make(map[bpf.DeviceKey]bpf.Device, len(devs))
	var warnings []string
	for _, d := range devs {
		digest, ok := maps.DigestKey(policy.Digest{Alg: d.Algorithm, Bytes: d.RootHash})
		if !ok {
			warnings = append(warnings, fmt.Sprintf("dm-verity device %s (%d:%d): root hash %s:%x cannot be represented; no rule can match it", d.Name, d.Major, d.Minor, d.Algorithm, d.RootHash))
			continue
		}
		if !d.Verifies {
			// In-tree IPE trusts the root hash whatever dm-verity does on
			// corruption; so does bpfipe, but the user should know.
			warnings = append(warnings, fmt.Sprintf("dm-verity device %s (%d:%d) does not fail on corruption (ignore_corruption): its root hash vouches for nothing", d.Name, d.Major, d.Minor))
		}
		entries[bpf.DeviceKey{Dev: d.KernelDev(), Diskseq: d.DiskSeq}] = bpf.Device{RootHash: digest, Signed: boolU32(d.Signed)}
	}
	return entries, warnings
}

// resolveDevices reads the live verity devices. A kernel without the
// device mapper has none, which is no error.
func resolveDevices() ([]dm.VerityDevice, error) {
	devs, err := resolveVerity()
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("resolve dm-verity devices: %w", err)
	}
	return devs, nil
}

// seedDevices writes the live verity devices into the devices map. With
// prune, entries for devices that are gone are deleted too; capture
// programs delete their own when a device is freed, so they do not prune.
// Failures are returned as warnings: a device missing from the map falls
// through to DEFAULT, which fails closed.
func seedDevices(m *ebpf.Map, prune bool) []string {
	devs, err := resolveDevices()
	if err != nil {
		return []string{err.Error() + "; dm-verity root hashes are unknown until the next resolution"}
	}
	entries, warnings := deviceEntries(devs)
	if prune {
		var stale []bpf.DeviceKey
		var key bpf.DeviceKey
		var value bpf.Device
		it := m.Iterate()
		for it.Next(&key, &value) {
			if _, ok := entries[key]; !ok {
				stale = append(stale, key)
			}
		}
		if err := it.Err(); err != nil {
			warnings = append(warnings, fmt.Sprintf("read devices map: %v", err))
		}
		for i := range stale {
			if err := m.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				warnings = append(warnings, fmt.Sprintf("delete stale device: %v", err))
			}
		}
	}
	for key, value := range entries {
		if err := m.Put(&key, &value); err != nil {
			warnings = append(warnings, fmt.Sprintf("record dm-verity device %d:%d: %v", key.Dev>>20, key.Dev&(1<<20-1), err))
		}
	}
	return warnings
}
