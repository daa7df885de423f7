package dm

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// buffer builds a result area byte by byte at explicit offsets, the way the
// kernel's list_devices and retrieve_status write it.
type buffer []byte

func newBuffer(size int) buffer { return make(buffer, size) }

func (b buffer) u64(off int, v uint64) buffer { binary.NativeEndian.PutUint64(b[off:], v); return b }
func (b buffer) u32(off int, v uint32) buffer { binary.NativeEndian.PutUint32(b[off:], v); return b }
func (b buffer) str(off int, s string) buffer { copy(b[off:], s+"\x00"); return b }

func TestParseNameListBeforeUUIDs(t *testing.T) {
	// Linux before 5.14: a record is dev, next, name, padded to 8 from the
	// 16-byte struct size. "vroot\0" spans 12..18, so the next record
	// starts at align8(16+6) = 24; the kernel reserves 7 spare bytes per
	// record, making the area 29+28 = 57 bytes.
	data := newBuffer(57).
		u64(0, unix.Mkdev(254, 0)).u32(8, 24).str(12, "vroot").
		u64(24, unix.Mkdev(254, 1)).u32(32, 0).str(36, "data")
	got, err := parseNameList(data)
	if err != nil {
		t.Fatalf("parseNameList: %v", err)
	}
	want := []Device{
		{Name: "vroot", Dev: unix.Mkdev(254, 0)},
		{Name: "data", Dev: unix.Mkdev(254, 1)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestParseNameListWithUUIDs(t *testing.T) {
	// Linux 5.14+, asked with DM_UUID_FLAG: after the name, at the next
	// 8-byte boundary (24), event_nr and flags; with HAS_UUID the uuid at
	// the boundary after that (32). "CRYPT-VERITY-abc\0" ends at 49, so
	// the next record is at 56; its name ends at 73, its trailer is at 80.
	data := newBuffer(88).
		u64(0, unix.Mkdev(254, 0)).u32(8, 56).str(12, "vroot").
		u32(24, 3).u32(28, unix.DM_NAME_LIST_FLAG_HAS_UUID).str(32, "CRYPT-VERITY-abc").
		u64(56, unix.Mkdev(254, 1)).u32(64, 0).str(68, "data").
		u32(80, 0).u32(84, unix.DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID)
	got, err := parseNameList(data)
	if err != nil {
		t.Fatalf("parseNameList: %v", err)
	}
	want := []Device{
		{Name: "vroot", UUID: "CRYPT-VERITY-abc", Dev: unix.Mkdev(254, 0)},
		{Name: "data", Dev: unix.Mkdev(254, 1)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestParseNameListEmpty(t *testing.T) {
	for name, data := range map[string][]byte{
		"no data":         nil,
		"zero dev record": make([]byte, 16),
	} {
		got, err := parseNameList(data)
		if err != nil || len(got) != 0 {
			t.Errorf("%s: got %+v, %v; want no devices", name, got, err)
		}
	}
}

func TestParseNameListRejects(t *testing.T) {
	dev := unix.Mkdev(254, 0)
	tests := map[string][]byte{
		"next inside the header":  newBuffer(48).u64(0, dev).u32(8, 4).str(12, "a"),
		"next past the end":       newBuffer(48).u64(0, dev).u32(8, 64).str(12, "a"),
		"unterminated name":       newBuffer(16).u64(0, dev).u32(8, 0).str(12, "abc")[:15],
		"name cut by next record": newBuffer(48).u64(0, dev).u32(8, 16).str(12, "abcdefgh").u64(16, dev),
		"empty name":              newBuffer(24).u64(0, dev),
		"short second record":     newBuffer(32).u64(0, dev).u32(8, 24).str(12, "a").u64(24, dev)[:30],
		"uuid flag, no uuid":      newBuffer(24).u64(0, dev).str(12, "ab").u32(20, unix.DM_NAME_LIST_FLAG_HAS_UUID),
		"unterminated uuid": newBuffer(40).u64(0, dev).str(12, "ab").u32(20, unix.DM_NAME_LIST_FLAG_HAS_UUID).
			str(24, "0123456789abcdef")[:40],
	}
	for name, data := range tests {
		if got, err := parseNameList(data); err == nil {
			t.Errorf("%s: no error, got %+v", name, got)
		}
	}
}

func TestParseTargetSpecs(t *testing.T) {
	// DM_TABLE_STATUS output: next is an offset from the start of the
	// area. Spec 0 at 0 with "254:1 0\0" (40..48) → next 48; spec 1 at 48
	// with "254:2 100\0" (88..98) → next 104; spec 2 at 104 with "x\0"
	// (144..146), and the kernel's data_size ends the area there. Read as
	// relative offsets, spec 1's next would point at 152, past the end.
	data := newBuffer(146).
		u64(0, 0).u64(8, 8).u32(20, 48).str(24, "linear").str(40, "254:1 0").
		u64(48, 8).u64(56, 16).u32(68, 104).str(72, "linear").str(88, "254:2 100").
		u64(104, 24).u64(112, 1).u32(124, 0).str(128, "error").str(144, "x")
	got, err := parseTargetSpecs(data, 3)
	if err != nil {
		t.Fatalf("parseTargetSpecs: %v", err)
	}
	want := []Target{
		{Start: 0, Length: 8, Type: "linear", Params: "254:1 0"},
		{Start: 8, Length: 16, Type: "linear", Params: "254:2 100"},
		{Start: 24, Length: 1, Type: "error", Params: "x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got, err := parseTargetSpecs(nil, 0); err != nil || len(got) != 0 {
		t.Errorf("no targets: got %+v, %v", got, err)
	}
}

func TestParseTargetSpecsRejects(t *testing.T) {
	one := newBuffer(56).u64(8, 8).u32(20, 48).str(24, "linear").str(40, "254:1 0")
	tests := map[string]struct {
		data  []byte
		count uint32
	}{
		"count beyond data":    {one, 2},
		"huge count":           {one, 1 << 31},
		"unterminated params":  {newBuffer(48).str(24, "linear").str(40, "12345678")[:48], 1},
		"next back to itself":  {newBuffer(96).u32(20, 0).str(24, "linear").str(40, "a"), 2},
		"next into own params": {newBuffer(96).u32(20, 41).str(24, "linear").str(40, "a"), 2},
		"next past the end":    {newBuffer(96).u32(20, 200).str(24, "linear").str(40, "a"), 2},
		"second spec overruns": {newBuffer(96).u32(20, 80).str(24, "linear").str(40, "a"), 2},
	}
	for name, tt := range tests {
		if got, err := parseTargetSpecs(tt.data, tt.count); err == nil {
			t.Errorf("%s: no error, got %+v", name, got)
		}
	}
}

func TestEncodeTargetSpecs(t *testing.T) {
	targets := []Target{
		{Start: 0, Length: 2048, Type: "verity", Params: "1 254:0 254:1 4096 4096 256 1 sha256 ab -"},
		{Start: 2048, Length: 8, Type: "zero", Params: ""},
	}
	buf, err := encodeTargetSpecs(targets)
	if err != nil {
		t.Fatalf("encodeTargetSpecs: %v", err)
	}
	// Walk it as the kernel's populate_table does: each next is relative
	// to the spec it is in, and parameters follow the 40-byte spec.
	off := 0
	for i, want := range targets {
		if off+40 > len(buf) {
			t.Fatalf("spec %d at %d beyond %d bytes", i, off, len(buf))
		}
		if off%8 != 0 {
			t.Errorf("spec %d at unaligned offset %d", i, off)
		}
		start := binary.NativeEndian.Uint64(buf[off:])
		length := binary.NativeEndian.Uint64(buf[off+8:])
		typ := cString(buf[off+24 : off+40])
		params := cString(buf[off+40:])
		if start != want.Start || length != want.Length || typ != want.Type || params != want.Params {
			t.Errorf("spec %d = %d %d %q %q, want %+v", i, start, length, typ, params, want)
		}
		off += int(binary.NativeEndian.Uint32(buf[off+20:]))
	}
	// 40 + 41 params + NUL = 82, padded to 88; then 40 + NUL padded to 48.
	if len(buf) != 88+48 {
		t.Errorf("encoded %d bytes, want %d", len(buf), 88+48)
	}

	for _, bad := range []Target{
		{Type: "", Params: "x"},
		{Type: "sixteen-bytes-xx", Params: "x"},
		{Type: "linear", Params: "a\x00b"},
	} {
		if _, err := encodeTargetSpecs([]Target{bad}); err == nil {
			t.Errorf("encodeTargetSpecs(%+v): no error", bad)
		}
	}
}

func FuzzParseResults(f *testing.F) {
	f.Add([]byte(newBuffer(57).u64(0, 1).u32(8, 24).str(12, "vroot").u64(24, 2).str(36, "data")), uint32(1))
	f.Add([]byte(newBuffer(56).u64(8, 8).u32(20, 48).str(24, "linear").str(40, "254:1 0")), uint32(1))
	f.Fuzz(func(t *testing.T, data []byte, count uint32) {
		if devices, err := parseNameList(data); err == nil {
			for _, d := range devices {
				if d.Name == "" || strings.IndexByte(d.Name, 0) >= 0 {
					t.Fatalf("bad name %q accepted", d.Name)
				}
			}
		}
		if targets, err := parseTargetSpecs(data, count); err == nil && uint32(len(targets)) != count {
			t.Fatalf("%d targets for count %d", len(targets), count)
		}
	})
}
