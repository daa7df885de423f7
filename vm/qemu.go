package vm

import (
	"fmt"
	"strconv"
	"strings"
)

// Disk is a host file attached to the guest as a virtio disk. Disks appear
// as /dev/vda, /dev/vdb, ... in the order given.
type Disk struct {
	Path     string
	ReadOnly bool
	// Serial, if set, is the virtio serial number the guest reads from
	// /sys/block/vdX/serial (at most 20 bytes).
	Serial string
}

// ParseDisk reads FILE, FILE:ro or FILE:rw.
func ParseDisk(s string) (Disk, error) {
	if s == "" {
		return Disk{}, fmt.Errorf("parse --disk: empty file name")
	}
	if path, ok := strings.CutSuffix(s, ":ro"); ok {
		return Disk{Path: path, ReadOnly: true}, nil
	}
	if path, ok := strings.CutSuffix(s, ":rw"); ok {
		return Disk{Path: path}, nil
	}
	return Disk{Path: s}, nil
}

// machine is everything qemuArgs needs to start one guest.
type machine struct {
	kernelImage string
	initrd      string
	cmdline     string
	mem         string
	cpus        int
	disks       []Disk
	// varstore is the guest's private, writable UEFI varstore; empty boots
	// through SeaBIOS, which is faster but leaves .platform empty.
	varstore    string
	interactive bool
}

// consoleFD is the file descriptor, as seen by qemu, that receives the
// kernel console (the first serial port).
const consoleFD = 3

// qemuArgs builds qemu's command line. The first serial port carries the
// kernel console, the second the command's output, so kernel messages can
// never corrupt the output or the exit marker.
func qemuArgs(m machine) []string {
	args := []string{
		"-accel", "tcg",
		"-nographic",
		// No default NIC, VGA or serial: each costs boot time under TCG and
		// the guest needs none of them.
		"-nodefaults",
		"-no-user-config",
		"-no-reboot",
		"-m", m.mem,
		"-smp", strconv.Itoa(m.cpus),
		"-kernel", m.kernelImage,
		"-initrd", m.initrd,
		"-append", m.cmdline,
		"-chardev", fmt.Sprintf("file,id=console,path=/dev/fd/%d", consoleFD),
		"-serial", "chardev:console",
	}
	if m.interactive {
		// The monitor shares the terminal (Ctrl-A x quits, Ctrl-A c switches),
		// and Ctrl-C goes to the guest rather than killing qemu.
		args = append(args,
			"-chardev", "stdio,id=output,mux=on,signal=off",
			"-serial", "chardev:output",
			"-mon", "chardev=output,mode=readline")
	} else {
		args = append(args,
			"-chardev", "stdio,id=output,signal=off",
			"-serial", "chardev:output")
	}
	args = append(args, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	if m.varstore != "" {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+escapeDriveValue(m.varstore))
	}
	// Each disk is a drive plus a device of its own rather than
	// if=virtio: that shorthand cannot carry a serial number, and qemu
	// creates its devices after every explicit -device, so mixing the two
	// forms would reorder /dev/vd*. Devices take PCI slots, and so vd
	// names, in the order given.
	for i, d := range m.disks {
		id := fmt.Sprintf("disk%d", i)
		drive := "if=none,id=" + id + ",format=raw,file=" + escapeDriveValue(d.Path)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		device := "virtio-blk-pci,drive=" + id
		if d.Serial != "" {
			device += ",serial=" + escapeDriveValue(d.Serial)
		}
		args = append(args, "-drive", drive, "-device", device)
	}
	return args
}

// escapeDriveValue doubles commas, which qemu's option syntax uses as
// separators.
func escapeDriveValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// kernelCmdline assembles the guest kernel's command line.
func kernelCmdline(verbose bool, extra string) string {
	parts := []string{
		"console=ttyS0",
		// Reboot at once on panic; with -no-reboot qemu then exits, so a
		// crashed guest ends the run instead of hanging until the timeout.
		"panic=-1",
		"rdinit=/init",
	}
	if verbose {
		parts = append(parts, "loglevel=7")
	} else {
		parts = append(parts, "quiet", "loglevel=4")
	}
	if extra = strings.TrimSpace(extra); extra != "" {
		parts = append(parts, extra)
	}
	return strings.Join(parts, " ")
}
