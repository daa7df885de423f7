package loader

import (
	"slices"
	"testing"
)

// Hooks is the cost floor the benchmark measures: it must name the hooks
// the workloads reach (exec, mmap, mprotect, and the guard's file_open on
// every exec), once each, and nothing for a capture program this kernel
// cannot attach.
func TestHooksAreTheLoadsAttachPoints(t *testing.T) {
	k, err := DetectKernel()
	if err != nil {
		t.Skipf("no kernel BTF here: %v", err)
	}
	if !k.HasHook("bprm_check_security") {
		t.Skip("this kernel is built without the BPF LSM (no bpf_lsm_* functions in its BTF)")
	}
	hooks, err := Hooks()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bprm_check_security", "mmap_file", "file_mprotect", "kernel_read_file", "file_open"} {
		if !slices.Contains(hooks, want) {
			t.Errorf("Hooks() = %v, want %s among them", hooks, want)
		}
	}
	if !slices.IsSorted(hooks) || len(slices.Compact(slices.Clone(hooks))) != len(hooks) {
		t.Errorf("Hooks() = %v, want sorted and each once", hooks)
	}
	if slices.Contains(hooks, "bdev_setintegrity") != k.Capture() {
		t.Errorf("Hooks() = %v while in-kernel capture is %v", hooks, k.Capture())
	}
}
