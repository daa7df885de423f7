package dm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader/blockdev"
)

// VerityDevice is what dm-verity established for one live block device:
// the facts an IPE dmverity_roothash or dmverity_signature rule tests.
type VerityDevice struct {
	Name         string
	Major, Minor uint32
	// DiskSeq tells this disk apart from any earlier or later one that
	// has the same device number.
	DiskSeq   uint64
	Algorithm string
	RootHash  []byte
	Signed    bool
	// Verifies is false for ignore_corruption tables, whose reads return
	// corrupted data, so the root hash vouches for nothing.
	Verifies    bool
	Table       VerityTable
	MountPoints []string
}

// KernelDev returns the device number as BPF programs see it.
func (v VerityDevice) KernelDev() uint32 { return blockdev.KernelDevOf(v.Major, v.Minor) }

// A device recreated while it is being read is read again this many times
// before Resolve gives up on it.
const resolveAttempts = 5

// Resolve returns the live dm-verity devices. A device qualifies when its
// active table is a single verity target: the kernel refuses to mix verity
// with other target types, and a table of several verity targets has no
// single root hash. mounts may be nil to skip mount points.
func (c *Control) Resolve(mounts []blockdev.Mount) ([]VerityDevice, error) {
	devices, err := c.List()
	if err != nil {
		return nil, err
	}
	var verity []VerityDevice
	for _, d := range devices {
		v, ok, err := c.resolveOne(d)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		v.MountPoints = blockdev.MountPoints(mounts, v.Major, v.Minor)
		verity = append(verity, v)
	}
	return verity, nil
}

// resolveOne reads one device's table and disk sequence number. The table
// and the sequence number come from two sources, so the sequence number is
// read on both sides of the table and must not change: otherwise a disk
// recreated in between could be paired with another disk's root hash.
func (c *Control) resolveOne(listed Device) (VerityDevice, bool, error) {
	major, minor := listed.Major(), listed.Minor()
	for range resolveAttempts {
		before, err := blockdev.DiskSeq(major, minor)
		if errors.Is(err, unix.ENOENT) {
			return VerityDevice{}, false, nil // removed since List
		}
		if err != nil {
			return VerityDevice{}, false, err
		}
		dev, targets, err := c.TableStatus(listed.Name)
		if errors.Is(err, unix.ENXIO) {
			return VerityDevice{}, false, nil // removed since List
		}
		if err != nil {
			return VerityDevice{}, false, err
		}
		after, err := blockdev.DiskSeq(major, minor)
		if errors.Is(err, unix.ENOENT) {
			return VerityDevice{}, false, nil
		}
		if err != nil {
			return VerityDevice{}, false, err
		}
		if before != after || dev.Dev != listed.Dev {
			continue // recreated meanwhile
		}
		if len(targets) != 1 || targets[0].Type != VerityTargetType {
			return VerityDevice{}, false, nil
		}
		table, err := ParseVerityTable(targets[0].Params)
		if err != nil {
			return VerityDevice{}, false, fmt.Errorf("resolve dm device %q: %w", listed.Name, err)
		}
		return VerityDevice{
			Name:      listed.Name,
			Major:     major,
			Minor:     minor,
			DiskSeq:   after,
			Algorithm: table.Algorithm,
			RootHash:  table.RootHash,
			Signed:    table.Signed,
			Verifies:  table.Verifies(),
			Table:     table,
		}, true, nil
	}
	return VerityDevice{}, false, fmt.Errorf("resolve dm device %q: recreated %d times while being read", listed.Name, resolveAttempts)
}

// Resolve opens the device mapper, reads the mount table and returns the
// live dm-verity devices.
func Resolve() ([]VerityDevice, error) {
	c, err := Open()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	mounts, err := blockdev.Mounts()
	if err != nil {
		return nil, err
	}
	return c.Resolve(mounts)
}
