package loader

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bpfipe/bpfipe/bpf"
	"github.com/bpfipe/bpfipe/loader/blockdev"
	"github.com/bpfipe/bpfipe/loader/dm"
)

// How the kernel's devices map stands for one block device.
const (
	// KernelEntryCurrent: the entry holds what the device's table says.
	KernelEntryCurrent = "current"
	// KernelEntryStale: the entry differs from the table (the table was
	// reloaded, or the resolver has not caught up yet).
	KernelEntryStale = "stale"
	// KernelEntryMissing: a dm-verity device without an entry; its files
	// have no dm-verity properties.
	KernelEntryMissing = "missing"
	// KernelEntryNone: not a dm-verity device, and no entry, as it should.
	KernelEntryNone = "none"
	// KernelEntryUnexpected: an entry for a device whose table is not
	// dm-verity (any more).
	KernelEntryUnexpected = "unexpected"
)

// DeviceListing is what bpfipe devices shows.
type DeviceListing struct {
	// Loaded says whether bpfipe runs; only then are Kernel fields set.
	Loaded       bool            `json:"loaded"`
	DMVerityMode string          `json:"dm_verity_mode,omitempty"`
	Resolver     *ResolverStatus `json:"resolver,omitempty"`
	Devices      []BlockDevice   `json:"devices"`
	// Orphans are entries of the devices map that match no live device:
	// devices since removed (kept until the next scan, or until the kernel
	// frees them), which can never match a new device.
	Orphans []DeviceEntry `json:"orphan_entries,omitempty"`
	// Warnings say what could not be read.
	Warnings []string `json:"warnings,omitempty"`
}

// BlockDevice is one block device and what dm-verity established for it.
type BlockDevice struct {
	Name   string `json:"name"` // kernel name, as under /dev: dm-0, vda1
	DMName string `json:"dm_name,omitempty"`
	Dev    string `json:"dev"` // major:minor
	Major  uint32 `json:"major"`
	Minor  uint32 `json:"minor"`
	// DiskSeq is the disk sequence number; a partition has its disk's,
	// which is what the BPF programs read (bdev->bd_disk->diskseq).
	DiskSeq     uint64        `json:"diskseq,omitempty"`
	Partition   bool          `json:"partition,omitempty"`
	Verity      *DeviceVerity `json:"verity,omitempty"`
	MountPoints []string      `json:"mount_points,omitempty"`
	// Kernel is the devices map's entry for this device; nil when bpfipe
	// is not loaded.
	Kernel *KernelEntry `json:"kernel,omitempty"`
}

// DeviceVerity is a dm-verity device's active table, as policies test it.
type DeviceVerity struct {
	// RootHash is ALG:HEX, as a dmverity_roothash rule writes it.
	RootHash string `json:"root_hash"`
	Signed   bool   `json:"signed"`
	// Verifies is false for ignore_corruption tables.
	Verifies   bool   `json:"verifies"`
	DataDevice string `json:"data_device"`
	HashDevice string `json:"hash_device"`
}

// KernelEntry compares the devices map's entry with the device.
type KernelEntry struct {
	State    string `json:"state"` // KernelEntry*
	RootHash string `json:"root_hash,omitempty"`
	Signed   bool   `json:"signed,omitempty"`
}

// DeviceEntry is one entry of the devices map.
type DeviceEntry struct {
	Dev      string `json:"dev"`
	DiskSeq  uint64 `json:"diskseq"`
	RootHash string `json:"root_hash"`
	Signed   bool   `json:"signed"`
}

// sysClassBlock lists every block device; tests point it at a fixture.
var sysClassBlock = "/sys/class/block"

// ListDevices lists the block devices with their dm-verity state, read
// from sysfs and the device-mapper ioctls, and, when bpfipe is loaded,
// what its devices map holds for each. It works without bpfipe loaded;
// what it cannot read (the device mapper or the map need root) becomes a
// warning rather than an error.
func ListDevices() (*DeviceListing, error) {
	out := &DeviceListing{}
	devs, err := listBlockDevices()
	if err != nil {
		return nil, err
	}
	verity, err := resolveDevices()
	if err != nil {
		out.Warnings = append(out.Warnings, err.Error()+"; dm-verity tables unknown")
	}
	byDev := map[[2]uint32]dm.VerityDevice{}
	for _, v := range verity {
		byDev[[2]uint32{v.Major, v.Minor}] = v
	}
	mounts, err := blockdev.Mounts()
	if err != nil {
		out.Warnings = append(out.Warnings, err.Error())
	}
	for i := range devs {
		d := &devs[i]
		d.MountPoints = blockdev.MountPoints(mounts, d.Major, d.Minor)
		if v, ok := byDev[[2]uint32{d.Major, d.Minor}]; ok {
			// The table and this sequence number were read together.
			d.DiskSeq = v.DiskSeq
			d.Verity = &DeviceVerity{
				RootHash:   v.Algorithm + ":" + fmt.Sprintf("%x", v.RootHash),
				Signed:     v.Signed,
				Verifies:   v.Verifies,
				DataDevice: v.Table.DataDevice,
				HashDevice: v.Table.HashDevice,
			}
		}
	}

	out.Devices = devs

	running, err := Open()
	switch {
	case errors.Is(err, ErrNotLoaded):
		return out, nil
	case err != nil:
		out.Warnings = append(out.Warnings, err.Error()+"; the kernel's table is unknown")
		return out, nil
	}
	defer running.Close()
	out.Loaded = true
	out.DMVerityMode = running.State.DMVerityMode
	if out.DMVerityMode == DMVerityUserspace && !running.State.LoaderRunning() {
		rs := resolverStatus(running.paths, running.State.Instance)
		out.Resolver = &rs
	}
	entries := map[bpf.DeviceKey]bpf.Device{}
	var key bpf.DeviceKey
	var value bpf.Device
	it := running.devices.Iterate()
	for it.Next(&key, &value) {
		entries[key] = value
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read devices map: %w", err)
	}
	out.Orphans = compareWithKernel(devs, verity, entries)
	return out, nil
}

// compareWithKernel fills each device's Kernel field from entries and
// returns the entries no live device accounts for.
func compareWithKernel(devs []BlockDevice, verity []dm.VerityDevice, entries map[bpf.DeviceKey]bpf.Device) []DeviceEntry {
	want := map[bpf.DeviceKey]bpf.Device{}
	if expected, _ := deviceEntries(verity); expected != nil {
		want = expected
	}
	seen := map[bpf.DeviceKey]bool{}
	for i := range devs {
		d := &devs[i]
		k := bpf.DeviceKey{Dev: blockdev.KernelDevOf(d.Major, d.Minor), Diskseq: d.DiskSeq}
		have, ok := entries[k]
		seen[k] = ok
		ke := &KernelEntry{State: KernelEntryNone}
		if ok {
			ke.RootHash, ke.Signed = formatDigest(have.RootHash), have.Signed != 0
		}
		expected, isVerity := want[k]
		switch {
		case isVerity && !ok:
			ke.State = KernelEntryMissing
		case isVerity && have == expected:
			ke.State = KernelEntryCurrent
		case isVerity:
			ke.State = KernelEntryStale
		case d.Verity != nil && !ok:
			// A verity table whose root hash the map cannot hold.
			ke.State = KernelEntryMissing
		case ok:
			ke.State = KernelEntryUnexpected
		}
		d.Kernel = ke
	}
	var orphans []DeviceEntry
	for k, v := range entries {
		if seen[k] {
			continue
		}
		major, minor := blockdev.SplitKernelDev(k.Dev)
		orphans = append(orphans, DeviceEntry{
			Dev:      fmt.Sprintf("%d:%d", major, minor),
			DiskSeq:  k.Diskseq,
			RootHash: formatDigest(v.RootHash),
			Signed:   v.Signed != 0,
		})
	}
	slices.SortFunc(orphans, func(a, b DeviceEntry) int {
		return cmp.Or(cmp.Compare(a.Dev, b.Dev), cmp.Compare(a.DiskSeq, b.DiskSeq))
	})
	return orphans
}

// listBlockDevices reads every block device from sysfs, in device number
// order. Devices of size zero (loop and ram devices with nothing behind
// them) are left out, except device-mapper ones, which may be waiting for
// a table.
func listBlockDevices() ([]BlockDevice, error) {
	entries, err := os.ReadDir(sysClassBlock)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	devs := []BlockDevice{}
	for _, e := range entries {
		d, ok, err := readBlockDevice(filepath.Join(sysClassBlock, e.Name()), e.Name())
		if err != nil {
			return nil, err
		}
		if ok {
			devs = append(devs, d)
		}
	}
	slices.SortFunc(devs, func(a, b BlockDevice) int {
		return cmp.Or(cmp.Compare(a.Major, b.Major), cmp.Compare(a.Minor, b.Minor))
	})
	return devs, nil
}

func readBlockDevice(dir, name string) (BlockDevice, bool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "dev"))
	if errors.Is(err, os.ErrNotExist) {
		return BlockDevice{}, false, nil // removed while listing
	}
	if err != nil {
		return BlockDevice{}, false, fmt.Errorf("read block device %s: %w", name, err)
	}
	major, minor, err := blockdev.ParseMajorMinor(strings.TrimSpace(string(raw)))
	if err != nil {
		return BlockDevice{}, false, fmt.Errorf("read block device %s: %w", name, err)
	}
	d := BlockDevice{Name: name, Dev: fmt.Sprintf("%d:%d", major, minor), Major: major, Minor: minor}
	if dmName, err := os.ReadFile(filepath.Join(dir, "dm", "name")); err == nil {
		d.DMName = strings.TrimSpace(string(dmName))
	}
	if size, err := readUint(filepath.Join(dir, "size")); err == nil && size == 0 && d.DMName == "" {
		return BlockDevice{}, false, nil
	}
	_, err = os.Stat(filepath.Join(dir, "partition"))
	d.Partition = err == nil
	// A partition's directory sits in its disk's, and the disk holds the
	// sequence number.
	seqDir := dir
	if d.Partition {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			seqDir = filepath.Dir(real)
		}
	}
	if seq, err := readUint(filepath.Join(seqDir, "diskseq")); err == nil {
		d.DiskSeq = seq
	}
	return d, true, nil
}

func readUint(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
}
