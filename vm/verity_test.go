package vm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

func TestParseVerity(t *testing.T) {
	tests := []struct {
		in      string
		want    Verity
		wantErr string
	}{
		{in: "trusted=d.img:h.img", want: Verity{Name: "trusted", Data: "d.img", Hash: "h.img"}},
		{in: "v1=/a/d:/a/h:abcd", want: Verity{Name: "v1", Data: "/a/d", Hash: "/a/h", RootHash: "abcd"}},
		{in: "v=d:h:ab:sig.p7s", want: Verity{Name: "v", Data: "d", Hash: "h", RootHash: "ab", Signature: "sig.p7s"}},
		{in: "v=d:h::sig.p7s", want: Verity{Name: "v", Data: "d", Hash: "h", Signature: "sig.p7s"}},
		{in: "d.img:h.img", wantErr: "want NAME=DATA:HASH"},
		{in: "v=d.img", wantErr: "want NAME=DATA:HASH"},
		{in: "v=:h", wantErr: "want NAME=DATA:HASH"},
		{in: "v=d:h:r:s:x", wantErr: "want NAME=DATA:HASH"},
		{in: "v=d:h:r:", wantErr: "empty signature"},
		{in: "=d:h", wantErr: `device name ""`},
		{in: "../x=d:h", wantErr: `device name "../x"`},
		{in: "a b=d:h", wantErr: `device name "a b"`},
		{in: strings.Repeat("n", 65) + "=d:h", wantErr: "device name"},
	}
	for _, tt := range tests {
		got, err := ParseVerity(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseVerity(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseVerity(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// superblock builds a hash image superblock at the offsets cryptsetup's
// struct verity_sb gives, independently of the decoder's struct.
func superblock(t *testing.T, edit func(sb []byte)) []byte {
	t.Helper()
	sb := make([]byte, 512)
	copy(sb[0:], "verity\x00\x00")
	binary.LittleEndian.PutUint32(sb[8:], 1)  // version
	binary.LittleEndian.PutUint32(sb[12:], 1) // hash_type
	copy(sb[32:], "sha256")
	binary.LittleEndian.PutUint32(sb[64:], 4096)    // data_block_size
	binary.LittleEndian.PutUint32(sb[68:], 1024)    // hash_block_size
	binary.LittleEndian.PutUint64(sb[72:], 1<<33+5) // data_blocks
	binary.LittleEndian.PutUint16(sb[80:], 3)       // salt_size
	copy(sb[88:], []byte{0xde, 0xad, 0xbe, 0xef})   // salt, one byte past salt_size
	if edit != nil {
		edit(sb)
	}
	return sb
}

func TestParseVeritySuperblock(t *testing.T) {
	got, err := parseVeritySuperblock(superblock(t, nil))
	if err != nil {
		t.Fatalf("parseVeritySuperblock: %v", err)
	}
	want := verityParams{hashType: 1, algorithm: "sha256", dataBlockSize: 4096, hashBlockSize: 1024,
		dataBlocks: 1<<33 + 5, hashStartBlock: 1, salt: []byte{0xde, 0xad, 0xbe}}
	if got.hashType != want.hashType || got.algorithm != want.algorithm || got.dataBlockSize != want.dataBlockSize ||
		got.hashBlockSize != want.hashBlockSize || got.dataBlocks != want.dataBlocks ||
		got.hashStartBlock != want.hashStartBlock || !bytes.Equal(got.salt, want.salt) {
		t.Errorf("parseVeritySuperblock = %+v, want %+v", got, want)
	}

	for _, tt := range []struct {
		name    string
		edit    func(sb []byte)
		wantErr string
	}{
		{"no signature", func(sb []byte) { copy(sb, "VERITY\x00\x00") }, "no \"verity\" superblock"},
		{"version 2", func(sb []byte) { sb[8] = 2 }, "version 2"},
		{"hash type 2", func(sb []byte) { sb[12] = 2 }, "hash type 2"},
		{"odd block size", func(sb []byte) { binary.LittleEndian.PutUint32(sb[64:], 4095) }, "block size 4095"},
		{"tiny block size", func(sb []byte) { binary.LittleEndian.PutUint32(sb[68:], 256) }, "block size 256"},
		{"no data", func(sb []byte) { binary.LittleEndian.PutUint64(sb[72:], 0) }, "no blocks"},
		{"salt too long", func(sb []byte) { binary.LittleEndian.PutUint16(sb[80:], 257) }, "salt of 257"},
		{"no algorithm", func(sb []byte) { clear(sb[32:64]) }, "no hash algorithm"},
	} {
		if _, err := parseVeritySuperblock(superblock(t, tt.edit)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := parseVeritySuperblock(make([]byte, 100)); err == nil {
		t.Error("a 100-byte superblock parsed")
	}
}

// TestResolveVerityAgainstVeritysetup compares what the runner reads from
// a real hash image with what veritysetup format printed for it.
func TestResolveVerityAgainstVeritysetup(t *testing.T) {
	if _, err := exec.LookPath("veritysetup"); err != nil {
		t.Skipf("needs veritysetup (cryptsetup-bin): %v", err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data.img")
	hash := filepath.Join(dir, "hash.img")
	if err := os.WriteFile(data, bytes.Repeat([]byte("bpfipe"), 3*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("veritysetup", "format", "--data-block-size=1024", data, hash).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	printed := map[string]string{}
	scanner := bufio.NewScanner(bytes.NewReader(out))
	for scanner.Scan() {
		if key, value, ok := strings.Cut(scanner.Text(), ":"); ok {
			printed[strings.TrimSpace(key)] = strings.TrimSpace(value)
		}
	}

	// Without a root hash and without a sidecar the runner refuses.
	if _, err := (Verity{Name: "v", Data: data, Hash: hash}).resolve(); err == nil || !strings.Contains(err.Error(), RootHashSuffix) {
		t.Errorf("resolve without a root hash: error %v, want one naming the sidecar", err)
	}
	if err := os.WriteFile(data+RootHashSuffix, []byte(printed["Root hash"]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Verity{Name: "v", Data: data, Hash: hash}.resolve()
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	want := guestspec.Verity{
		Name:           "v",
		HashType:       atoi(t, printed["Hash type"]),
		DataBlockSize:  atoi(t, printed["Data block size"]),
		HashBlockSize:  atoi(t, printed["Hash block size"]),
		DataBlocks:     uint64(atoi(t, printed["Data blocks"])),
		HashStartBlock: 1,
		Algorithm:      printed["Hash algorithm"],
		RootHash:       printed["Root hash"],
		Salt:           printed["Salt"],
		MountPoint:     "/mnt/v",
	}
	if got != want {
		t.Errorf("resolve =\n%+v\nwant (from veritysetup's output)\n%+v", got, want)
	}

	for _, tt := range []struct {
		name    string
		v       Verity
		wantErr string
	}{
		{"short root hash", Verity{Name: "v", Data: data, Hash: hash, RootHash: "abcd"}, "root hash of 2 bytes"},
		{"root hash not hex", Verity{Name: "v", Data: data, Hash: hash, RootHash: "xyz"}, "not hex"},
		{"data as hash", Verity{Name: "v", Data: data, Hash: data, RootHash: printed["Root hash"]}, "superblock"},
		{"missing signature", Verity{Name: "v", Data: data, Hash: hash, Signature: filepath.Join(dir, "none")}, "signature"},
	} {
		if _, err := tt.v.resolve(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.wantErr)
		}
	}

	// A data image shorter than the tree covers belongs to another tree.
	if err := os.Truncate(data, 1024); err != nil {
		t.Fatal(err)
	}
	if _, err := (Verity{Name: "v", Data: data, Hash: hash}).resolve(); err == nil || !strings.Contains(err.Error(), "different image") {
		t.Errorf("resolve with a truncated data image: error %v", err)
	}
}

func TestVerityDisksNumberSerialsAndAddSignatures(t *testing.T) {
	dir := t.TempDir()
	hash := filepath.Join(dir, "hash.img")
	data := filepath.Join(dir, "data.img")
	sig := filepath.Join(dir, "sig")
	eightBlocks := superblock(t, func(sb []byte) { binary.LittleEndian.PutUint64(sb[72:], 8) })
	for path, content := range map[string][]byte{hash: eightBlocks, data: make([]byte, 8*4096), sig: []byte("pkcs7")} {
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := hex.EncodeToString(bytes.Repeat([]byte{1}, 32))
	specs, disks, adds, err := verityDisks([]Verity{
		{Name: "a", Data: data, Hash: hash, RootHash: root},
		{Name: "b", Data: data, Hash: hash, RootHash: root, Signature: sig},
	})
	if err != nil {
		t.Fatalf("verityDisks: %v", err)
	}
	if len(specs) != 2 || len(disks) != 4 || len(adds) != 1 {
		t.Fatalf("verityDisks = %d specs, %d disks, %d adds; want 2, 4, 1", len(specs), len(disks), len(adds))
	}
	serials := map[string]bool{}
	for i, d := range disks {
		if !d.ReadOnly || len(d.Serial) > 20 || d.Serial == "" || serials[d.Serial] {
			t.Errorf("disk %d = %+v: want read-only with a unique serial of at most 20 bytes", i, d)
		}
		serials[d.Serial] = true
	}
	if specs[1].DataSerial != disks[2].Serial || specs[1].HashSerial != disks[3].Serial ||
		disks[2].Path != data || disks[3].Path != hash {
		t.Errorf("second device's serials %q/%q do not name its disks %+v", specs[1].DataSerial, specs[1].HashSerial, disks[2:])
	}
	if specs[0].SignaturePath != "" || adds[0].Src != sig || adds[0].Dst != specs[1].SignaturePath {
		t.Errorf("signature add %+v for paths %q, %q", adds[0], specs[0].SignaturePath, specs[1].SignaturePath)
	}
	if _, _, _, err := verityDisks([]Verity{{Name: "a", Data: data, Hash: hash, RootHash: root}, {Name: "a", Data: data, Hash: hash, RootHash: root}}); err == nil {
		t.Error("two devices of the same name accepted")
	}
}

func atoi(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		t.Fatalf("veritysetup printed %q where a number belongs", s)
	}
	return uint32(n)
}
