// Package dm_test exercises loader/dm and loader/blockdev against a real
// device mapper. It runs inside the bpfipe VM guest, where two virtio disks
// hold a dm-verity data image and its hash tree; outside the guest it skips.
//
// Inputs (environment):
//
//	BPFIPE_GUEST            set by the guest; the tests skip without it
//	BPFIPE_DM_ROOT_HASH     hex root hash from `veritysetup format`
//	BPFIPE_DM_SALT          hex salt
//	BPFIPE_DM_DATA_BLOCKS   data block count (4096-byte blocks)
//	BPFIPE_DM_DATA_DEV      data disk, default /dev/vda (an ext4 image)
//	BPFIPE_DM_HASH_DEV      hash disk, default /dev/vdb (hash start block 1)
package dm_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader/blockdev"
	"github.com/bpfipe/bpfipe/loader/dm"
)

const deviceName = "bpfipe-dmtest"

type verityImage struct {
	dataDev, hashDev string
	rootHash, salt   []byte
	dataBlocks       uint64
}

func guestImage(t *testing.T) verityImage {
	t.Helper()
	if os.Getenv("BPFIPE_GUEST") == "" {
		t.Skip("needs the bpfipe-vm guest: BPFIPE_GUEST is unset (run through test/dm_vm_test.go)")
	}
	img := verityImage{dataDev: "/dev/vda", hashDev: "/dev/vdb"}
	if v := os.Getenv("BPFIPE_DM_DATA_DEV"); v != "" {
		img.dataDev = v
	}
	if v := os.Getenv("BPFIPE_DM_HASH_DEV"); v != "" {
		img.hashDev = v
	}
	var err error
	if img.rootHash, err = hex.DecodeString(os.Getenv("BPFIPE_DM_ROOT_HASH")); err != nil || len(img.rootHash) != 32 {
		t.Fatalf("BPFIPE_DM_ROOT_HASH %q is not a sha256 digest", os.Getenv("BPFIPE_DM_ROOT_HASH"))
	}
	if img.salt, err = hex.DecodeString(os.Getenv("BPFIPE_DM_SALT")); err != nil {
		t.Fatalf("BPFIPE_DM_SALT: %v", err)
	}
	if img.dataBlocks, err = strconv.ParseUint(os.Getenv("BPFIPE_DM_DATA_BLOCKS"), 10, 64); err != nil || img.dataBlocks == 0 {
		t.Fatalf("BPFIPE_DM_DATA_BLOCKS %q: %v", os.Getenv("BPFIPE_DM_DATA_BLOCKS"), err)
	}
	return img
}

func (img verityImage) target(rootHash []byte) dm.Target {
	salt := "-"
	if len(img.salt) > 0 {
		salt = hex.EncodeToString(img.salt)
	}
	return dm.Target{
		Length: img.dataBlocks * 4096 / 512,
		Type:   dm.VerityTargetType,
		Params: fmt.Sprintf("1 %s %s 4096 4096 %d 1 sha256 %x %s", img.dataDev, img.hashDev, img.dataBlocks, rootHash, salt),
	}
}

func devNumber(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

func openControl(t *testing.T) *dm.Control {
	t.Helper()
	c, err := dm.Open()
	if err != nil {
		t.Fatalf("dm.Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	// A previous failed run may have left the device behind.
	if err := c.Remove(deviceName); err != nil && !errors.Is(err, unix.ENXIO) {
		t.Fatalf("remove leftover device: %v", err)
	}
	return c
}

// collectUevents gathers dm disk events until stop is closed.
func collectUevents(t *testing.T) (events func() []blockdev.Uevent) {
	t.Helper()
	l, err := blockdev.ListenUevents()
	if err != nil {
		t.Fatalf("ListenUevents: %v", err)
	}
	ch := make(chan blockdev.Uevent, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			e, err := l.Next()
			if err != nil {
				return
			}
			if e.IsDMDisk() {
				ch <- e
			}
		}
	}()
	return func() []blockdev.Uevent {
		// Uevents are broadcast before the ioctl returns, but give the
		// reader a moment to drain the socket.
		time.Sleep(300 * time.Millisecond)
		l.Close()
		<-done
		close(ch)
		var all []blockdev.Uevent
		for e := range ch {
			all = append(all, e)
		}
		return all
	}
}

func TestVerityLifecycle(t *testing.T) {
	img := guestImage(t)
	events := collectUevents(t)
	c := openControl(t)

	dev, err := c.Create(deviceName, []dm.Target{img.target(img.rootHash)}, true)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	created := true
	t.Cleanup(func() {
		if created {
			c.Remove(deviceName)
		}
	})
	if !dev.ReadOnly() || dev.Suspended() {
		t.Errorf("created device flags %#x: want read-only and active", dev.Flags)
	}

	// List finds it under the number Create returned.
	devices, err := c.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	i := slices.IndexFunc(devices, func(d dm.Device) bool { return d.Name == deviceName })
	if i < 0 || devices[i].Dev != dev.Dev {
		t.Fatalf("List = %+v, want %s at %d:%d", devices, deviceName, dev.Major(), dev.Minor())
	}

	// The kernel reports the table back with devices as major:minor.
	targets, err := c.Table(deviceName)
	if err != nil {
		t.Fatalf("Table: %v", err)
	}
	if len(targets) != 1 || targets[0].Type != "verity" || targets[0].Length != img.dataBlocks*8 {
		t.Fatalf("Table = %+v", targets)
	}
	t.Logf("kernel table: %s", targets[0].Params)
	table, err := dm.ParseVerityTable(targets[0].Params)
	if err != nil {
		t.Fatalf("ParseVerityTable(%q): %v", targets[0].Params, err)
	}
	if !bytes.Equal(table.RootHash, img.rootHash) || table.Algorithm != "sha256" || table.Signed {
		t.Errorf("table root hash %x alg %s signed %v; want %x sha256 unsigned", table.RootHash, table.Algorithm, table.Signed, img.rootHash)
	}
	if table.DataDevice != devNumber(t, img.dataDev) || table.HashDevice != devNumber(t, img.hashDev) {
		t.Errorf("table devices %s %s; want %s %s", table.DataDevice, table.HashDevice, devNumber(t, img.dataDev), devNumber(t, img.hashDev))
	}
	if table.NumDataBlocks != img.dataBlocks || table.HashStartBlock != 1 || !bytes.Equal(table.Salt, img.salt) {
		t.Errorf("table blocks %d start %d salt %x", table.NumDataBlocks, table.HashStartBlock, table.Salt)
	}

	seq1, err := blockdev.DiskSeq(dev.Major(), dev.Minor())
	if err != nil || seq1 == 0 {
		t.Fatalf("DiskSeq = %d, %v", seq1, err)
	}
	devName, err := blockdev.DevName(dev.Major(), dev.Minor())
	if err != nil {
		t.Fatalf("DevName: %v", err)
	}
	if name, err := blockdev.DMName(dev.Major(), dev.Minor()); err != nil || name != deviceName {
		t.Errorf("DMName = %q, %v", name, err)
	}

	// Every block reads back verified and equal to the data disk.
	verified, err := os.ReadFile("/dev/" + devName)
	if err != nil {
		t.Fatalf("read /dev/%s: %v", devName, err)
	}
	raw := make([]byte, len(verified))
	if f, err := os.Open(img.dataDev); err != nil {
		t.Fatal(err)
	} else {
		_, err = io.ReadFull(f, raw)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if uint64(len(verified)) != img.dataBlocks*4096 || !bytes.Equal(verified, raw) {
		t.Errorf("verity device gave %d bytes, differing from the data disk", len(verified))
	}

	// Mounted, Resolve reports it with its mount point.
	mnt := t.TempDir()
	if err := unix.Mount("/dev/"+devName, mnt, "ext4", unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount /dev/%s: %v", devName, err)
	}
	resolved, err := dm.Resolve()
	if uerr := unix.Unmount(mnt, 0); uerr != nil {
		t.Errorf("unmount: %v", uerr)
	}
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	i = slices.IndexFunc(resolved, func(v dm.VerityDevice) bool { return v.Name == deviceName })
	if i < 0 {
		t.Fatalf("Resolve = %+v, want %s", resolved, deviceName)
	}
	v := resolved[i]
	if v.Major != dev.Major() || v.Minor != dev.Minor() || v.DiskSeq != seq1 || !bytes.Equal(v.RootHash, img.rootHash) ||
		v.Algorithm != "sha256" || v.Signed || !v.Verifies || !slices.Equal(v.MountPoints, []string{mnt}) {
		t.Errorf("Resolve entry %+v", v)
	}
	if want := dev.Major()<<20 | dev.Minor(); v.KernelDev() != want {
		t.Errorf("KernelDev = %#x, want %#x", v.KernelDev(), want)
	}

	// Recreated under the same name, it is a different disk.
	if err := c.Remove(deviceName); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	created = false
	if _, err := c.Table(deviceName); !errors.Is(err, unix.ENXIO) {
		t.Errorf("Table after Remove: err = %v, want ENXIO", err)
	}
	dev2, err := c.Create(deviceName, []dm.Target{img.target(img.rootHash)}, true)
	if err != nil {
		t.Fatalf("Create again: %v", err)
	}
	created = true
	seq2, err := blockdev.DiskSeq(dev2.Major(), dev2.Minor())
	if err != nil {
		t.Fatalf("DiskSeq again: %v", err)
	}
	if seq2 <= seq1 {
		t.Errorf("diskseq after recreation %d, before %d: want a larger one", seq2, seq1)
	}
	t.Logf("first %d:%d diskseq %d, second %d:%d diskseq %d", dev.Major(), dev.Minor(), seq1, dev2.Major(), dev2.Minor(), seq2)
	if err := c.Remove(deviceName); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
	created = false

	// Each disk announced itself, became active and went away, in that
	// order, under its own sequence number.
	all := events()
	for _, seq := range []uint64{seq1, seq2} {
		var actions []string
		for _, e := range all {
			if e.DiskSeq == seq {
				actions = append(actions, e.Action)
				if !e.HasDevNum || e.Major != dev.Major() {
					t.Errorf("event %+v lacks the dm major", e)
				}
			}
		}
		if !isSubsequence([]string{"add", "change", "remove"}, actions) {
			t.Errorf("diskseq %d: uevents %q, want add, change, remove among them", seq, actions)
		}
	}
}

func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// A wrong root hash loads (dm-verity does not read the tree at setup) but
// every read fails. Resolve reports what the table says, so a policy
// naming the wrong hash matches a device that cannot be read.
func TestVerityWrongRootHash(t *testing.T) {
	img := guestImage(t)
	c := openControl(t)
	wrong := bytes.Clone(img.rootHash)
	wrong[0] ^= 0xff
	dev, err := c.Create(deviceName, []dm.Target{img.target(wrong)}, true)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { c.Remove(deviceName) })
	devName, err := blockdev.DevName(dev.Major(), dev.Minor())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/dev/" + devName)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.Read(make([]byte, 4096))
	if !errors.Is(err, unix.EIO) {
		t.Errorf("read with a wrong root hash: err = %v, want EIO", err)
	}
	targets, err := c.Table(deviceName)
	if err != nil || len(targets) != 1 {
		t.Fatalf("Table = %+v, %v", targets, err)
	}
	table, err := dm.ParseVerityTable(targets[0].Params)
	if err != nil || !bytes.Equal(table.RootHash, wrong) {
		t.Errorf("table root hash %x, %v; want %x", table.RootHash, err, wrong)
	}
}

// A writable verity table is refused, and Create leaves nothing behind.
func TestVerityNeedsReadOnly(t *testing.T) {
	img := guestImage(t)
	c := openControl(t)
	if _, err := c.Create(deviceName, []dm.Target{img.target(img.rootHash)}, false); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Create writable verity: err = %v, want EINVAL", err)
	}
	if _, err := c.Status(deviceName); !errors.Is(err, unix.ENXIO) {
		t.Errorf("Status after failed Create: err = %v, want ENXIO (removed)", err)
	}
}

// createSigned creates the device with target, whose table names desc as
// root_hash_sig_key_desc, and the signature in sigPath stored as that key.
func createSigned(t *testing.T, c *dm.Control, desc, sigPath string, target dm.Target) (dm.Device, error) {
	t.Helper()
	sig, err := os.ReadFile(sigPath)
	if err != nil {
		t.Fatalf("read signature: %v", err)
	}
	var dev dm.Device
	err = dm.WithRootHashSignature(desc, sig, func() (err error) {
		dev, err = c.Create(deviceName, []dm.Target{target}, true)
		return err
	})
	return dev, err
}

// With root_hash_sig_key_desc the kernel verifies a PKCS#7 signature of
// the root hash before it builds the table, so a table that carries the
// option is a verified one, and the parser's Signed is the
// dmverity_signature property. A signature by an unknown key is refused
// at load time.
//
// Inputs: BPFIPE_DM_ROOT_SIG, a signature of the hex root hash by a
// certificate the kernel trusts (the runner enrolls it in the UEFI db,
// which Linux 6.12 trusts for dm-verity); BPFIPE_DM_UNTRUSTED_SIG, one by
// a key the kernel does not know; BPFIPE_DM_SIG_TRUSTED=0 when the kernel
// is expected to refuse even the first (no platform keyring trust).
func TestVeritySignedRootHash(t *testing.T) {
	img := guestImage(t)
	goodSig, badSig := os.Getenv("BPFIPE_DM_ROOT_SIG"), os.Getenv("BPFIPE_DM_UNTRUSTED_SIG")
	if goodSig == "" || badSig == "" {
		t.Skip("needs root hash signatures: BPFIPE_DM_ROOT_SIG or BPFIPE_DM_UNTRUSTED_SIG unset")
	}
	trusted := os.Getenv("BPFIPE_DM_SIG_TRUSTED") != "0"
	c := openControl(t)

	signedTarget := func(desc string) dm.Target {
		tg := img.target(img.rootHash)
		tg.Params += " 2 root_hash_sig_key_desc " + desc
		return tg
	}

	if _, err := createSigned(t, c, "bpfipe:bad", badSig, signedTarget("bpfipe:bad")); err == nil {
		c.Remove(deviceName)
		t.Fatal("Create with an untrusted signature succeeded")
	} else if _, err := c.Status(deviceName); !errors.Is(err, unix.ENXIO) {
		t.Errorf("device left behind after a refused signature: %v", err)
	}

	dev, err := createSigned(t, c, "bpfipe:good", goodSig, signedTarget("bpfipe:good"))
	if !trusted {
		if err == nil {
			c.Remove(deviceName)
			t.Fatal("Create with a signature this kernel should not trust succeeded")
		}
		t.Logf("signature refused as expected: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("Create with a trusted signature: %v", err)
	}
	t.Cleanup(func() { c.Remove(deviceName) })
	targets, err := c.Table(deviceName)
	if err != nil || len(targets) != 1 {
		t.Fatalf("Table = %+v, %v", targets, err)
	}
	t.Logf("kernel table: %s", targets[0].Params)
	table, err := dm.ParseVerityTable(targets[0].Params)
	if err != nil {
		t.Fatalf("ParseVerityTable: %v", err)
	}
	if !table.Signed || table.RootHashSigKeyDesc != "bpfipe:good" {
		t.Errorf("Signed %v key %q; want a signed table with key bpfipe:good", table.Signed, table.RootHashSigKeyDesc)
	}
	resolved, err := dm.Resolve()
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	i := slices.IndexFunc(resolved, func(v dm.VerityDevice) bool { return v.Name == deviceName })
	if i < 0 || !resolved[i].Signed || resolved[i].Minor != dev.Minor() {
		t.Errorf("Resolve = %+v, want %s signed", resolved, deviceName)
	}
}
