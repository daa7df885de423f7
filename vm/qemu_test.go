package vm

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestQemuArgs(t *testing.T) {
	m := machine{
		kernelImage: "/k/vmlinuz", initrd: "/w/initrd", cmdline: "console=ttyS0", mem: "256M", cpus: 2,
		disks: []Disk{{Path: "/d/a,b.img", ReadOnly: true}, {Path: "/d/rw.img", Serial: "s,1"}},
	}
	args := qemuArgs(m)
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-accel tcg", "-no-reboot", "-m 256M", "-smp 2", "-kernel /k/vmlinuz", "-initrd /w/initrd",
		"-device isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-drive if=none,id=disk0,format=raw,file=/d/a,,b.img,readonly=on -device virtio-blk-pci,drive=disk0 -",
		"-drive if=none,id=disk1,format=raw,file=/d/rw.img -device virtio-blk-pci,drive=disk1,serial=s,,1 -",
	} {
		if !strings.Contains(joined+" -", want) {
			t.Errorf("qemu args lack %q:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "pflash") {
		t.Errorf("SeaBIOS boot has pflash drives:\n%s", joined)
	}
	// The console port comes first (ttyS0), the output port second (ttyS1).
	var serials []string
	for i, a := range args {
		if a == "-serial" {
			serials = append(serials, args[i+1])
		}
	}
	if !slices.Equal(serials, []string{"chardev:console", "chardev:output"}) {
		t.Errorf("serial ports %v, want console then output", serials)
	}

	m.varstore = "/w/vars.fd"
	joined = strings.Join(qemuArgs(m), " ")
	for _, want := range []string{
		"if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode,
		"if=pflash,format=raw,unit=1,file=/w/vars.fd",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("UEFI boot lacks %q:\n%s", want, joined)
		}
	}
}

func TestKernelCmdline(t *testing.T) {
	quiet := kernelCmdline(false, "lsm=bpf")
	verbose := kernelCmdline(true, "")
	for _, want := range []string{"console=ttyS0", "panic=-1", "quiet", "lsm=bpf"} {
		if !slices.Contains(strings.Fields(quiet), want) {
			t.Errorf("cmdline %q lacks %q", quiet, want)
		}
	}
	if slices.Contains(strings.Fields(verbose), "quiet") {
		t.Errorf("verbose cmdline %q is quiet", verbose)
	}
}

func TestParseDisk(t *testing.T) {
	tests := []struct {
		in   string
		want Disk
	}{
		{"a.img", Disk{Path: "a.img"}},
		{"a.img:ro", Disk{Path: "a.img", ReadOnly: true}},
		{"a.img:rw", Disk{Path: "a.img"}},
	}
	for _, tt := range tests {
		if got, err := ParseDisk(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseDisk(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{&GuestError{Err: ErrTimeout}, ExitTimeout},
		{fmt.Errorf("run: %w", &GuestError{Err: ErrPanic}), ExitGuestCrash},
		{&GuestError{Err: ErrNoStatus}, ExitGuestCrash},
		{&MissingError{What: "qemu-system-x86_64", Package: "qemu-system-x86"}, ExitMissing},
		{fmt.Errorf("fetch: %w", ErrUnavailable), ExitMissing},
		{&GuestError{Err: ErrInit}, ExitRunnerError},
		{errors.New("other"), ExitRunnerError},
	}
	seen := map[int]bool{}
	for _, tt := range tests {
		if got := ExitStatus(tt.err); got != tt.want {
			t.Errorf("ExitStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
		seen[tt.want] = true
	}
	if len(seen) != 5 {
		t.Errorf("exit statuses are not distinct: %v", seen)
	}
}

func TestMissingErrorNamesPackage(t *testing.T) {
	msg := (&MissingError{What: "qemu-system-x86_64", Package: "qemu-system-x86"}).Error()
	if !strings.Contains(msg, "apt-get install qemu-system-x86") {
		t.Errorf("message %q does not give the apt-get command", msg)
	}
}

func TestGuestErrorShowsLastLines(t *testing.T) {
	err := &GuestError{Err: ErrPanic, Detail: "Kernel panic - not syncing", Console: []string{"c1", "c2"}, Output: []string{"o1"}}
	msg := err.Error()
	for _, want := range []string{"guest kernel panicked: Kernel panic - not syncing", "| c2", "| o1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if !errors.Is(err, ErrPanic) {
		t.Error("GuestError does not unwrap to its sentinel")
	}
}
