package blockdev

import (
	"reflect"
	"strings"
	"testing"
)

// Lines in the format of proc_pid_mountinfo(5): no optional fields, one,
// two, and an escaped space in a mount point.
const mountInfoFixture = `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=4096k
40 22 253:0 / /mnt/verity ro,relatime shared:7 master:2 - ext4 /dev/mapper/vroot ro
41 22 253:0 /usr /srv/my\040usr ro - ext4 /dev/mapper/vroot ro
`

func TestParseMountInfo(t *testing.T) {
	mounts, err := ParseMountInfo(strings.NewReader(mountInfoFixture))
	if err != nil {
		t.Fatalf("ParseMountInfo: %v", err)
	}
	if len(mounts) != 4 {
		t.Fatalf("got %d mounts, want 4", len(mounts))
	}
	want := Mount{
		ID: 40, ParentID: 22, Major: 253, Minor: 0, Root: "/", MountPoint: "/mnt/verity",
		Options: "ro,relatime", FSType: "ext4", Source: "/dev/mapper/vroot", SuperOptions: "ro",
	}
	if !reflect.DeepEqual(mounts[2], want) {
		t.Errorf("mount with two optional fields:\n got %+v\nwant %+v", mounts[2], want)
	}
	if mounts[1].FSType != "devtmpfs" || mounts[1].Major != 0 || mounts[1].Minor != 5 {
		t.Errorf("mount without optional fields: %+v", mounts[1])
	}
	if got := MountPoints(mounts, 253, 0); !reflect.DeepEqual(got, []string{"/mnt/verity", "/srv/my usr"}) {
		t.Errorf("MountPoints(253:0) = %q", got)
	}
	if got := MountPoints(mounts, 254, 0); got != nil {
		t.Errorf("MountPoints of an unmounted device = %q, want none", got)
	}
}

func TestParseMountInfoRejects(t *testing.T) {
	for _, line := range []string{
		"22 1 254:1 / / rw shared:1 ext4 /dev/vda1 rw", // no separator
		"22 1 254:1 / / rw - ext4 /dev/vda1",           // too few after it
		"x 1 254:1 / / rw - ext4 /dev/vda1 rw",
		"22 1 254-1 / / rw - ext4 /dev/vda1 rw",
		"22 1 254:x / / rw - ext4 /dev/vda1 rw",
	} {
		if _, err := ParseMountInfo(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("ParseMountInfo(%q): no error", line)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:     "/a b",
		`/tab\011`:    "/tab\t",
		`/back\134x`:  `/back\x`,
		`/short\04`:   `/short\04`,
		`/notoct\089`: `/notoct\089`,
		`/high\777`:   `/high\777`,
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}
