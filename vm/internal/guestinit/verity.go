//go:build linux && amd64

package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader/dm"
	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// openVerity creates and mounts the run's dm-verity devices. A device that
// cannot be opened or mounted fails the run: the command was promised it.
func openVerity(devices []guestspec.Verity) error {
	if len(devices) == 0 {
		return nil
	}
	control, err := dm.Open()
	if err != nil {
		return fmt.Errorf("open device mapper for verity devices (is dm_verity available?): %w", err)
	}
	defer control.Close()
	for _, v := range devices {
		if err := openVerityDevice(control, v); err != nil {
			return fmt.Errorf("verity device %q: %w", v.Name, err)
		}
	}
	return nil
}

func openVerityDevice(control *dm.Control, v guestspec.Verity) error {
	dataDev, err := diskBySerial(v.DataSerial)
	if err != nil {
		return err
	}
	hashDev, err := diskBySerial(v.HashSerial)
	if err != nil {
		return err
	}
	rootHash, err := hex.DecodeString(v.RootHash)
	if err != nil {
		return fmt.Errorf("decode root hash: %w", err)
	}
	var salt []byte
	if v.Salt != "-" {
		if salt, err = hex.DecodeString(v.Salt); err != nil {
			return fmt.Errorf("decode salt: %w", err)
		}
	}
	table := dm.VerityTable{
		Version:        v.HashType,
		DataDevice:     dataDev,
		HashDevice:     hashDev,
		DataBlockSize:  v.DataBlockSize,
		HashBlockSize:  v.HashBlockSize,
		NumDataBlocks:  v.DataBlocks,
		HashStartBlock: v.HashStartBlock,
		Algorithm:      v.Algorithm,
		RootHash:       rootHash,
		Salt:           salt,
	}
	var sig []byte
	var sigKey string
	if v.SignaturePath != "" {
		if sig, err = os.ReadFile(v.SignaturePath); err != nil {
			return fmt.Errorf("read root hash signature: %w", err)
		}
		// dm-verity looks the signature up as a user key by description,
		// in the keyrings of the task loading the table.
		sigKey = guestspec.VeritySignatureKey(v.Name)
		table.Options = []string{"root_hash_sig_key_desc", sigKey}
	}
	sectors := v.DataBlocks * uint64(v.DataBlockSize) / 512
	var device dm.Device
	create := func() (err error) {
		device, err = control.Create(v.Name, []dm.Target{{Length: sectors, Type: dm.VerityTargetType, Params: table.String()}}, true)
		return err
	}
	if sigKey != "" {
		err = dm.WithRootHashSignature(sigKey, sig, create)
	} else {
		err = create()
	}
	if err != nil {
		if v.SignaturePath != "" && (errors.Is(err, unix.EKEYREJECTED) || errors.Is(err, unix.ENOKEY)) {
			err = fmt.Errorf("%w (the kernel does not trust the root hash signature's signer)", err)
		}
		return err
	}
	node := fmt.Sprintf("/dev/dm-%d", device.Minor())
	if err := waitForNode(node, 5*time.Second); err != nil {
		return err
	}
	// udev would make this link; there is none in the guest.
	if err := os.MkdirAll("/dev/mapper", 0o755); err == nil {
		os.Symlink("../"+filepath.Base(node), filepath.Join("/dev/mapper", v.Name))
	}
	if err := os.MkdirAll(v.MountPoint, 0o755); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	return mountReadOnly(node, v.MountPoint)
}

// mountReadOnly tries the filesystems the runner's images use.
func mountReadOnly(node, target string) error {
	var failures []string
	var lastErr error
	for _, fstype := range []string{"ext4", "squashfs"} {
		err := unix.Mount(node, target, fstype, unix.MS_RDONLY, "")
		if err == nil {
			return nil
		}
		failures = append(failures, fstype+": "+err.Error())
		lastErr = err
	}
	msg := fmt.Sprintf("mount %s on %s: %s", node, target, strings.Join(failures, "; "))
	if errors.Is(lastErr, unix.EIO) {
		// dm-verity fails every read of a block that does not hash to the
		// tree, and with a wrong root hash that is every block.
		msg += " (I/O errors: is the root hash that of this image?)"
	}
	return errors.New(msg)
}

// diskBySerial finds the virtio disk the host gave a serial number.
func diskBySerial(serial string) (string, error) {
	names, _ := filepath.Glob("/sys/block/vd*/serial")
	for _, name := range names {
		raw, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		if strings.TrimRight(string(raw), "\x00\n ") == serial {
			return "/dev/" + filepath.Base(filepath.Dir(name)), nil
		}
	}
	return "", fmt.Errorf("no virtio disk with serial %q among %d", serial, len(names))
}

func waitForNode(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not there after %s", path, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
