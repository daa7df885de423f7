package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/loader"
)

func TestPrintDevices(t *testing.T) {
	list := &loader.DeviceListing{
		Loaded:       true,
		DMVerityMode: loader.DMVerityUserspace,
		Resolver:     &loader.ResolverStatus{},
		Devices: []loader.BlockDevice{
			{Name: "dm-0", DMName: "root", Dev: "253:0", DiskSeq: 12, MountPoints: []string{"/usr"},
				Verity: &loader.DeviceVerity{RootHash: "sha256:aa", Signed: true, Verifies: true},
				Kernel: &loader.KernelEntry{State: loader.KernelEntryStale, RootHash: "sha256:bb"}},
			{Name: "vda", Dev: "254:0", DiskSeq: 3, Kernel: &loader.KernelEntry{State: loader.KernelEntryNone}},
		},
		Orphans: []loader.DeviceEntry{{Dev: "253:0", DiskSeq: 11, RootHash: "sha256:cc"}},
	}
	var out bytes.Buffer
	printDevices(&out, list)
	text := out.String()
	lines := strings.Split(text, "\n")
	if !strings.Contains(lines[0], "KERNEL TABLE") {
		t.Errorf("header %q lacks the kernel table column while loaded", lines[0])
	}
	for _, want := range []string{
		"dm-0 (root)", "253:0", "sha256:aa", "/usr", "stale (holds sha256:bb signed=no)",
		"resolver NOT running", "253:0 diskseq 11: sha256:cc",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if fields := strings.Fields(lines[2]); len(fields) < 2 || fields[0] != "vda" || fields[len(fields)-1] != "-" {
		t.Errorf("plain disk row %q, want vda ... -", lines[2])
	}

	out.Reset()
	printDevices(&out, &loader.DeviceListing{Devices: list.Devices[1:]})
	if strings.Contains(out.String(), "KERNEL TABLE") || !strings.Contains(out.String(), "not loaded") {
		t.Errorf("not loaded:\n%s", out.String())
	}
}

func TestResolverFlagsExcludeEachOther(t *testing.T) {
	for _, args := range [][]string{{"resolver", "--stop", "--restart"}, {"resolver", "--json"}, {"resolver", "extra"}} {
		var out, errOut bytes.Buffer
		if got := dispatch(args, &out, &errOut); got != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, got, exitUsage, errOut.String())
		}
	}
}
