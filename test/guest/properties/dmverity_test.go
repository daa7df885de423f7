package properties_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/loader"
)

// dmverity_roothash allows the binary on the device with the named root
// hash only: not on another verity device, a plain disk or a tmpfs; a DENY
// for a root hash placed before an ALLOW for it wins; ext4 and squashfs
// alike. Some devices exist before the load (read by the load itself), the
// others are set up after it (the resolver's or the capture programs' job).
func TestDMVerityRootHash(t *testing.T) {
	m := setup(t)
	c := openControl(t)
	allowed, revoked := m.Verity["ext4-allowed"], m.Verity["ext4-revoked"]
	squashAllowed := m.Verity["squashfs-allowed"]

	before := mustOpenVerity(t, c, "props-ext4-allowed", allowed)
	plain := mountDisk(t, m.PlainDisk, "ext4", unix.MS_RDONLY) + "/busybox"
	tmpfs := tmpfsCopy(t, before.binary)
	// Without bpfipe every copy runs: a denial below is the policy's.
	for what, path := range map[string]string{"verity ext4": before.binary, "plain ext4": plain, "tmpfs": tmpfs} {
		expectAllowed(t, what+" before load", path)
	}

	rules := func(withRevocation bool) []string {
		var r []string
		if withRevocation {
			r = append(r, "op=EXECUTE dmverity_roothash="+revoked.PolicyRootHash()+" action=DENY")
		}
		return denyByDefault(append(r,
			"op=EXECUTE dmverity_roothash="+allowed.PolicyRootHash()+" action=ALLOW",
			"op=EXECUTE dmverity_roothash="+squashAllowed.PolicyRootHash()+" action=ALLOW",
			"op=EXECUTE dmverity_roothash="+revoked.PolicyRootHash()+" action=ALLOW",
		)...)
	}
	load(t, "0.0.1", rules(true))
	st := status(t)
	t.Logf("dm-verity mode %q, resolver %+v", st.DMVerityMode, st.Resolver)
	if st.DMVerityMode == loader.DMVerityUserspace && (st.Resolver == nil || !st.Resolver.Running) {
		t.Fatalf("pinned load without in-kernel capture: resolver %+v, want one running", st.Resolver)
	}
	if st.DMVerityMode == loader.DMVerityCapture && st.Resolver != nil {
		t.Errorf("with in-kernel capture: resolver %+v, want none", st.Resolver)
	}

	ext4Other := mustOpenVerity(t, c, "props-ext4-other", m.Verity["ext4-other"])
	ext4Revoked := mustOpenVerity(t, c, "props-ext4-revoked", revoked)
	squash := mustOpenVerity(t, c, "props-squashfs-allowed", squashAllowed)
	squashOther := mustOpenVerity(t, c, "props-squashfs-other", m.Verity["squashfs-other"])
	for _, v := range []*verityDevice{before, ext4Other, ext4Revoked, squash, squashOther} {
		waitKernelEntry(t, v)
	}

	if st.Resolver != nil {
		// The resolver's log names what it recorded, with the key the
		// programs look up.
		log, err := os.ReadFile(st.Resolver.Log)
		want := fmt.Sprintf("recorded device %d:%d diskseq %d %q: %s", ext4Other.major, ext4Other.minor, ext4Other.diskSeq, ext4Other.name, m.Verity["ext4-other"].PolicyRootHash())
		if err != nil || !strings.Contains(string(log), want) {
			t.Errorf("resolver log %s (%v) lacks %q:\n%s", st.Resolver.Log, err, want, log)
		}
	}

	expectAllowed(t, "ext4 verity device with the allowed root hash (set up before load)", before.binary)
	expectAllowed(t, "squashfs verity device with the allowed root hash", squash.binary)
	expectDenied(t, "ext4 verity device with another root hash", ext4Other.binary)
	expectDenied(t, "squashfs verity device with another root hash", squashOther.binary)
	expectDenied(t, "ext4 verity device whose root hash is denied before it is allowed", ext4Revoked.binary)
	expectDenied(t, "plain ext4 disk", plain)
	expectDenied(t, "tmpfs", tmpfs)

	t.Logf("bpfipe devices:\n%s", mustBpfipe(t, "devices"))
	l := devices(t)
	if d := findDevice(l, before.major, before.minor); d == nil || d.Verity == nil || d.Verity.RootHash != allowed.PolicyRootHash() || len(d.MountPoints) != 1 {
		t.Errorf("bpfipe devices on %s: %+v, want root hash %s and one mount point", before.name, d, allowed.PolicyRootHash())
	}

	// Without the DENY line the same device runs: the order decided.
	update(t, "0.0.2", rules(false))
	expectAllowed(t, "the formerly revoked root hash, DENY rule removed", ext4Revoked.binary)
	expectDenied(t, "ext4 verity device with another root hash, after update", ext4Other.binary)
}

// A device removed and recreated at the same device number with another
// root hash is never allowed by the entry its predecessor left: the entry
// is keyed by the disk sequence number too. Each round executes right after
// the recreation (racing the resolver where there is one) and again once
// the kernel table is current.
func TestRecreatedDeviceNeverInheritsEntry(t *testing.T) {
	m := setup(t)
	c := openControl(t)
	allowed, other := m.Verity["ext4-allowed"], m.Verity["ext4-other"]
	load(t, "0.0.1", denyByDefault("op=EXECUTE dmverity_roothash="+allowed.PolicyRootHash()+" action=ALLOW"))

	const name = "props-recycled"
	var major, minor uint32
	sameNumber := func(v *verityDevice) {
		t.Helper()
		if major == 0 {
			major, minor = v.major, v.minor
		}
		if v.major != major || v.minor != minor {
			t.Fatalf("%s came back as %d:%d, not %d:%d: the test needs the number reused", name, v.major, v.minor, major, minor)
		}
	}
	for round := range 5 {
		good := mustOpenVerity(t, c, name, allowed)
		sameNumber(good)
		waitKernelEntry(t, good)
		expectAllowed(t, "allowed root hash", good.binary)
		good.close()

		bad := mustOpenVerity(t, c, name, other)
		sameNumber(bad)
		if bad.diskSeq <= good.diskSeq {
			t.Fatalf("round %d: diskseq %d after %d", round, bad.diskSeq, good.diskSeq)
		}
		expectDenied(t, "other root hash right after recreation at the same number", bad.binary)
		waitKernelEntry(t, bad)
		expectDenied(t, "other root hash once the kernel table is current", bad.binary)
		bad.close()
	}

	if status(t).DMVerityMode != loader.DMVerityUserspace {
		return
	}
	// With the resolver stopped, the old entry stays for certain, for the
	// same device number: it must still not match the new disk.
	good := mustOpenVerity(t, c, name, allowed)
	waitKernelEntry(t, good)
	expectAllowed(t, "allowed root hash", good.binary)
	mustBpfipe(t, "resolver", "--stop")
	if st := status(t); st.Resolver == nil || st.Resolver.Running {
		t.Fatalf("after bpfipe resolver --stop: resolver %+v", st.Resolver)
	}
	good.close()
	bad := mustOpenVerity(t, c, name, other)
	sameNumber(bad)
	l := devices(t)
	stale := false
	for _, o := range l.Orphans {
		stale = stale || (o.Dev == devString(major, minor) && o.DiskSeq == good.diskSeq && o.RootHash == allowed.PolicyRootHash())
	}
	if !stale {
		t.Fatalf("no entry of the removed device left behind (orphans %+v): the test cannot show it is ignored", l.Orphans)
	}
	if d := findDevice(l, major, minor); d == nil || d.Kernel == nil || d.Kernel.State != loader.KernelEntryMissing {
		t.Errorf("recreated device with nothing resolving it: %+v, want kernel entry %q", d, loader.KernelEntryMissing)
	}
	expectDenied(t, "other root hash at the number of an allowed device's leftover entry", bad.binary)

	mustBpfipe(t, "resolver", "--restart")
	waitKernelEntry(t, bad)
	if orphans := devices(t).Orphans; len(orphans) != 0 {
		t.Errorf("after restart the resolver left entries of removed devices: %+v", orphans)
	}
	expectDenied(t, "other root hash after the resolver restarted", bad.binary)
}

// dmverity_signature=TRUE holds for a device whose root hash signature
// dm-verity verified, FALSE for an unsigned one and for files on no
// device at all. Where the kernel does not trust the signing certificate
// (6.1: no platform keyring trust) the signed table is refused outright.
func TestDMVeritySignature(t *testing.T) {
	m := setup(t)
	c := openControl(t)
	signedImg, unsignedImg := m.Verity["ext4-allowed"], m.Verity["ext4-other"]
	load(t, "0.0.1", denyByDefault("op=EXECUTE dmverity_signature=TRUE action=ALLOW"))
	st := status(t)
	sigObservable := observable(st, "dmverity_signature")
	t.Logf("dmverity_signature observable: %v (observable: %v)", sigObservable, st.Observable)

	signed, err := openVerity(t, c, "props-signed", signedImg, true)
	if !m.DMSignatureTrusted {
		if err == nil {
			t.Fatal("the kernel accepted a root hash signature by a certificate it should not trust")
		}
		t.Logf("signed table refused, as this kernel does not trust the certificate: %v", err)
		signed = nil
	} else if err != nil {
		t.Fatalf("set up signed device: %v", err)
	}
	unsigned := mustOpenVerity(t, c, "props-unsigned", unsignedImg)
	plain := mountDisk(t, m.PlainDisk, "ext4", unix.MS_RDONLY) + "/busybox"
	tmpfs := tmpfsCopy(t, unsigned.binary)
	waitKernelEntry(t, unsigned)
	if signed != nil {
		d := waitKernelEntry(t, signed)
		if !d.Verity.Signed || !d.Kernel.Signed {
			t.Errorf("bpfipe devices on the signed device: table signed %v, kernel entry signed %v; want both", d.Verity.Signed, d.Kernel.Signed)
		}
		expect(t, sigObservable, "signed root hash, dmverity_signature=TRUE", signed.binary)
	}
	expectDenied(t, "unsigned root hash, dmverity_signature=TRUE", unsigned.binary)

	// =FALSE: unsigned devices and files on no device at all.
	update(t, "0.0.2", []string{
		"DEFAULT action=ALLOW",
		"op=EXECUTE boot_verified=TRUE action=ALLOW",
		"op=EXECUTE dmverity_signature=FALSE action=DENY",
	})
	// An unobservable property is false in both forms: nothing is denied.
	expect(t, !sigObservable, "unsigned root hash, dmverity_signature=FALSE denied", unsigned.binary)
	expect(t, !sigObservable, "plain disk, dmverity_signature=FALSE denied", plain)
	expect(t, !sigObservable, "tmpfs (no block device), dmverity_signature=FALSE denied", tmpfs)
	if signed != nil {
		expectAllowed(t, "signed root hash, dmverity_signature=FALSE denied", signed.binary)
	}
}

func devString(major, minor uint32) string { return fmt.Sprintf("%d:%d", major, minor) }
