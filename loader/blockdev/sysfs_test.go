package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeSysfs builds a sysfs tree in a temporary directory (git and Go module
// zips cannot hold the "254:0" directory names as fixtures) and points
// sysfsRoot at it.
func fakeSysfs(t *testing.T, files map[string]string) {
	t.Helper()
	root := t.TempDir()
	for path, content := range files {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := sysfsRoot
	sysfsRoot = root
	t.Cleanup(func() { sysfsRoot = old })
}

func TestSysfsFacts(t *testing.T) {
	fakeSysfs(t, map[string]string{
		"dev/block/254:0/diskseq": "17\n",
		"dev/block/254:0/dm/name": "vroot\n",
		"dev/block/254:0/uevent":  "MAJOR=254\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\nDISKSEQ=17\n",
		// A pre-5.15 kernel: the device exists, diskseq does not.
		"dev/block/7:0/uevent":  "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n",
		"dev/block/8:0/diskseq": "not a number\n",
	})

	seq, err := DiskSeq(254, 0)
	if err != nil || seq != 17 {
		t.Errorf("DiskSeq(254, 0) = %d, %v; want 17", seq, err)
	}
	if name, err := DMName(254, 0); err != nil || name != "vroot" {
		t.Errorf("DMName(254, 0) = %q, %v; want vroot", name, err)
	}
	if name, err := DevName(254, 0); err != nil || name != "dm-0" {
		t.Errorf("DevName(254, 0) = %q, %v; want dm-0", name, err)
	}
	if _, err := DiskSeq(7, 0); !errors.Is(err, ErrNoDiskSeq) {
		t.Errorf("DiskSeq on a device without diskseq: err = %v, want ErrNoDiskSeq", err)
	}
	if _, err := DiskSeq(9, 9); !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrNoDiskSeq) {
		t.Errorf("DiskSeq on a missing device: err = %v, want ErrNotExist only", err)
	}
	if _, err := DiskSeq(8, 0); err == nil {
		t.Error("DiskSeq with a malformed file: no error")
	}
	if _, err := DMName(7, 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DMName of a non-dm device: err = %v, want ErrNotExist", err)
	}
}
