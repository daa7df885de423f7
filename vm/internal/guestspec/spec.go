// Package guestspec is the contract between the host runner and the guest
// init: where the runner puts things in the initramfs and the run description
// it leaves for init. Both sides import it so they cannot drift apart.
package guestspec

import (
	"fmt"
	"strconv"
	"strings"
)

// Paths inside the guest's initramfs.
const (
	// SpecPath holds the JSON-encoded Spec of the run.
	SpecPath = "/etc/bpfipe/run.json"
	// ModuleOrderPath lists the module files to load, one path a line, in
	// load order.
	ModuleOrderPath = "/etc/bpfipe/modules.order"
	// ModulesDir is where the runner puts the (decompressed) module files.
	ModulesDir = "/lib/modules/bpfipe"
	// ConsoleDevice carries kernel messages; OutputDevice carries the
	// command's output and the markers, so neither can corrupt the other.
	ConsoleDevice = "/dev/ttyS0"
	OutputDevice  = "/dev/ttyS1"
	// DebugExitPort is the isa-debug-exit device's I/O port.
	DebugExitPort = 0xf4
)

// GuestEnv is set to "1" in the environment of every guest command so tests
// can tell they are inside a runner guest.
const GuestEnv = "BPFIPE_GUEST"

// Spec describes one run for the guest init.
type Spec struct {
	Argv []string `json:"argv"`
	// Env holds extra KEY=VALUE entries on top of init's defaults.
	Env []string `json:"env,omitempty"`
	// Dir is the command's working directory; /root if empty.
	Dir string `json:"dir,omitempty"`
	// Nonce makes the markers unguessable for the guest command, so its
	// output cannot fake an exit status.
	Nonce string `json:"nonce"`
	// Interactive runs the command on the output tty as its controlling
	// terminal, in cooked mode, with stdin attached.
	Interactive bool `json:"interactive,omitempty"`
	// Disks is the number of virtio disks init waits for before starting
	// the command.
	Disks int `json:"disks,omitempty"`
	// Rows and Cols size the interactive terminal.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	Term string `json:"term,omitempty"`
	// Verity lists the dm-verity devices init opens and mounts, in order,
	// before the command starts.
	Verity []Verity `json:"verity,omitempty"`
}

// Verity is one dm-verity device for init to create from two virtio disks
// and mount read-only. The host read everything but the root hash from the
// hash image's superblock, so init needs no veritysetup.
type Verity struct {
	// Name is the device-mapper name (/dev/mapper/NAME) and the last
	// element of the mount point.
	Name string `json:"name"`
	// DataSerial and HashSerial are the virtio serial numbers of the data
	// and hash disks (/sys/block/vdX/serial), which name the disks whatever
	// order the kernel probed them in.
	DataSerial string `json:"data_serial"`
	HashSerial string `json:"hash_serial"`
	// The verity table's fields (Documentation/admin-guide/device-mapper/verity.rst).
	HashType       uint32 `json:"hash_type"`
	DataBlockSize  uint32 `json:"data_block_size"`
	HashBlockSize  uint32 `json:"hash_block_size"`
	DataBlocks     uint64 `json:"data_blocks"`
	HashStartBlock uint64 `json:"hash_start_block"`
	Algorithm      string `json:"algorithm"`
	RootHash       string `json:"root_hash"` // hex
	Salt           string `json:"salt"`      // hex; "-" for none
	// SignaturePath is the guest path of a PKCS#7 signature of the root
	// hash, or empty. init stores it as a user key for dm-verity to check.
	SignaturePath string `json:"signature_path,omitempty"`
	// MountPoint is where init mounts the device read-only.
	MountPoint string `json:"mount_point"`
}

// VerityDir holds the root hash signatures the host adds for Verity
// devices, one NAME.sig each.
const VerityDir = "/etc/bpfipe/verity"

// VerityMountDir is where init mounts each Verity device, at
// VerityMountDir/NAME.
const VerityMountDir = "/mnt"

// VeritySignatureKey is the description of the user key holding a
// device's root hash signature (dm-verity's root_hash_sig_key_desc).
func VeritySignatureKey(name string) string { return "bpfipe-vm:" + name }

// Marker lines written on the output device, each on a line of its own and
// preceded by a newline that is part of the marker.
const (
	startPrefix = "BPFIPE-START:"
	exitPrefix  = "BPFIPE-EXIT:"
	failPrefix  = "BPFIPE-FAIL:"
)

// StartMarker precedes the command's output. Firmware may scribble on the
// serial ports before the kernel runs; everything before this is discarded.
func StartMarker(nonce string) string { return "\n" + startPrefix + nonce + "\n" }

// ExitMarker follows the command's output and carries its exit status.
func ExitMarker(nonce string, status int) string {
	return fmt.Sprintf("\n%s%s:%d\n", exitPrefix, nonce, status)
}

// FailMarker reports that init could not run the command at all.
func FailMarker(nonce, message string) string {
	return fmt.Sprintf("\n%s%s:%s\n", failPrefix, nonce, strings.ReplaceAll(message, "\n", " "))
}

// EndPrefix is what both end markers start with: the output stops there.
func EndPrefix(nonce string) (exit, fail string) {
	return "\n" + exitPrefix + nonce + ":", "\n" + failPrefix + nonce + ":"
}

// ParseExitStatus reads the status that follows an exit marker's prefix.
func ParseExitStatus(rest string) (int, error) {
	status, err := strconv.Atoi(strings.TrimSpace(rest))
	if err != nil {
		return 0, fmt.Errorf("parse exit status %q: %w", rest, err)
	}
	return status, nil
}
