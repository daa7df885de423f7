package dm

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

const (
	rootSHA256 = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076"
	salt32     = "1234000000000000000000000000000000000000000000000000000000000000"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseVerityTable(t *testing.T) {
	tests := []struct {
		name   string
		params string
		want   VerityTable
	}{{
		// The example from verity.rst, as a path-based table.
		name:   "documentation example",
		params: "1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256 " + rootSHA256 + " " + salt32,
		want: VerityTable{
			Version: 1, DataDevice: "/dev/sda1", HashDevice: "/dev/sda2",
			DataBlockSize: 4096, HashBlockSize: 4096, NumDataBlocks: 262144, HashStartBlock: 1,
			Algorithm: "sha256", RootHash: mustHex(rootSHA256), Salt: mustHex(salt32),
		},
	}, {
		// As the kernel reports a live table: devices as major:minor, and
		// a signed root hash with other options in verity_status order.
		name: "kernel status, signed",
		params: "1 254:0 254:16 4096 4096 2560 1 sha256 " + rootSHA256 + " " + salt32 +
			" 5 restart_on_corruption ignore_zero_blocks check_at_most_once root_hash_sig_key_desc vroot:sig",
		want: VerityTable{
			Version: 1, DataDevice: "254:0", HashDevice: "254:16",
			DataBlockSize: 4096, HashBlockSize: 4096, NumDataBlocks: 2560, HashStartBlock: 1,
			Algorithm: "sha256", RootHash: mustHex(rootSHA256), Salt: mustHex(salt32),
			Options:          []string{"restart_on_corruption", "ignore_zero_blocks", "check_at_most_once", "root_hash_sig_key_desc", "vroot:sig"},
			CorruptionMode:   "restart_on_corruption",
			IgnoreZeroBlocks: true, CheckAtMostOnce: true,
			RootHashSigKeyDesc: "vroot:sig", Signed: true,
		},
	}, {
		name: "no salt, version 0, sha1, fec, ignore_corruption",
		params: "0 8:1 8:2 512 1024 100 0 sha1 0123456789abcdef0123456789ABCDEF01234567 - " +
			"10 ignore_corruption use_fec_from_device 8:3 fec_roots 2 fec_blocks 126 fec_start 7 try_verify_in_tasklet",
		want: VerityTable{
			Version: 0, DataDevice: "8:1", HashDevice: "8:2",
			DataBlockSize: 512, HashBlockSize: 1024, NumDataBlocks: 100, HashStartBlock: 0,
			Algorithm: "sha1", RootHash: mustHex("0123456789abcdef0123456789abcdef01234567"),
			Options: []string{"ignore_corruption", "use_fec_from_device", "8:3", "fec_roots", "2",
				"fec_blocks", "126", "fec_start", "7", "try_verify_in_tasklet"},
			CorruptionMode:     "ignore_corruption",
			FEC:                &VerityFEC{Device: "8:3", Roots: 2, Blocks: 126, Start: 7},
			TryVerifyInTasklet: true,
		},
	}, {
		name:   "zero optional arguments, extra blanks, option case, error mode",
		params: "  1 7:0\t7:1 4096 4096 1 1 sha512 " + strings.Repeat("ab", 64) + " 00 0 ",
		want: VerityTable{
			Version: 1, DataDevice: "7:0", HashDevice: "7:1",
			DataBlockSize: 4096, HashBlockSize: 4096, NumDataBlocks: 1, HashStartBlock: 1,
			Algorithm: "sha512", RootHash: bytes.Repeat([]byte{0xab}, 64), Salt: []byte{0},
		},
	}, {
		name:   "unknown algorithm, unknown option, options ignoring case",
		params: "1 7:0 7:1 4096 4096 1 1 wp256 abcd - 2 PANIC_ON_ERROR some_future_flag",
		want: VerityTable{
			Version: 1, DataDevice: "7:0", HashDevice: "7:1",
			DataBlockSize: 4096, HashBlockSize: 4096, NumDataBlocks: 1, HashStartBlock: 1,
			Algorithm: "wp256", RootHash: []byte{0xab, 0xcd},
			Options:   []string{"PANIC_ON_ERROR", "some_future_flag"},
			ErrorMode: "panic_on_error",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVerityTable(tt.params)
			if err != nil {
				t.Fatalf("ParseVerityTable: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestVerityTableDerived(t *testing.T) {
	logging, err := ParseVerityTable("1 7:0 7:1 4096 4096 1 1 sha256 " + rootSHA256 + " - 1 ignore_corruption")
	if err != nil {
		t.Fatal(err)
	}
	if logging.Verifies() {
		t.Error("Verifies() = true for ignore_corruption")
	}
	strict, err := ParseVerityTable("1 254:3 7:1 4096 4096 1 1 sha256 " + rootSHA256 + " - 1 panic_on_corruption")
	if err != nil {
		t.Fatal(err)
	}
	if !strict.Verifies() || strict.Signed {
		t.Errorf("panic_on_corruption: Verifies %v Signed %v", strict.Verifies(), strict.Signed)
	}
	if major, minor, ok := strict.DataDev(); !ok || major != 254 || minor != 3 {
		t.Errorf("DataDev() = %d:%d %v, want 254:3", major, minor, ok)
	}
	byPath, _ := ParseVerityTable("1 /dev/vda /dev/vdb 4096 4096 1 1 sha256 " + rootSHA256 + " -")
	if _, _, ok := byPath.DataDev(); ok {
		t.Error("DataDev() ok for a path")
	}
}

func TestVerityTableString(t *testing.T) {
	// The kernel's verity_status format: lowercase hex, "-" for no salt,
	// the option count before the options.
	params := "1 254:0 254:16 4096 4096 2560 1 sha256 " + strings.ToUpper(rootSHA256) + " - 3 ignore_zero_blocks root_hash_sig_key_desc k"
	table, err := ParseVerityTable(params)
	if err != nil {
		t.Fatal(err)
	}
	want := "1 254:0 254:16 4096 4096 2560 1 sha256 " + rootSHA256 + " - 3 ignore_zero_blocks root_hash_sig_key_desc k"
	if got := table.String(); got != want {
		t.Errorf("String() = %q\nwant       %q", got, want)
	}
}

func TestParseVerityTableRejects(t *testing.T) {
	base := func(replace map[int]string) string {
		args := strings.Fields("1 7:0 7:1 4096 4096 8 1 sha256 " + rootSHA256 + " " + salt32)
		for i, v := range replace {
			args[i] = v
		}
		return strings.Join(args, " ")
	}
	tests := map[string]string{
		"empty":                   "",
		"nine arguments":          "1 7:0 7:1 4096 4096 8 1 sha256 " + rootSHA256,
		"version 2":               base(map[int]string{0: "2"}),
		"negative version":        base(map[int]string{0: "-1"}),
		"block size not power":    base(map[int]string{3: "4000"}),
		"block size zero":         base(map[int]string{4: "0"}),
		"block size 256":          base(map[int]string{4: "256"}),
		"block count overflows":   base(map[int]string{5: "18446744073709551616"}),
		"hash start not a number": base(map[int]string{6: "one"}),
		"root hash odd length":    base(map[int]string{8: rootSHA256[1:]}),
		"root hash not hex":       base(map[int]string{8: "zz" + rootSHA256[2:]}),
		"sha256 root hash of 20":  base(map[int]string{8: strings.Repeat("ab", 20)}),
		"unknown alg, 65 bytes":   base(map[int]string{7: "x", 8: strings.Repeat("ab", 65)}),
		"salt odd length":         base(map[int]string{9: "123"}),
		"salt not hex":            base(map[int]string{9: "xy"}),
		"count larger":            base(nil) + " 2 ignore_zero_blocks",
		"count smaller":           base(nil) + " 1 ignore_zero_blocks check_at_most_once",
		"count not a number":      base(nil) + " x ignore_zero_blocks",
		"option value missing":    base(nil) + " 1 root_hash_sig_key_desc",
		"signature twice":         base(nil) + " 4 root_hash_sig_key_desc a root_hash_sig_key_desc b",
		"fec roots not a number":  base(nil) + " 4 use_fec_from_device 7:2 fec_roots two",
		"fec without device":      base(nil) + " 2 fec_roots 2",
		"count without options":   base(nil) + " 1",
		"count huge":              base(nil) + " 99999999999 a",
	}
	for name, params := range tests {
		if got, err := ParseVerityTable(params); err == nil {
			t.Errorf("%s: no error, got %+v", name, got)
		}
	}
}

func FuzzParseVerityTable(f *testing.F) {
	f.Add("1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256 " + rootSHA256 + " " + salt32)
	f.Add("1 254:0 254:16 4096 4096 2560 1 sha256 " + rootSHA256 + " - 3 ignore_zero_blocks root_hash_sig_key_desc k")
	f.Add("0 8:1 8:2 512 1024 100 0 sha1 0123456789abcdef0123456789abcdef01234567 - 8 use_fec_from_device 8:3 fec_roots 2 fec_blocks 126 fec_start 7")
	f.Add("1 a b 512 512 0 0 x 00 - 0")
	f.Fuzz(func(t *testing.T, params string) {
		table, err := ParseVerityTable(params)
		if err != nil {
			return
		}
		if len(table.RootHash) == 0 || len(table.RootHash) > MaxDigestSize {
			t.Fatalf("root hash of %d bytes accepted", len(table.RootHash))
		}
		if table.Signed != (table.RootHashSigKeyDesc != "") {
			t.Fatalf("Signed %v with key description %q", table.Signed, table.RootHashSigKeyDesc)
		}
		if !strings.Contains(table.String(), " "+hex.EncodeToString(table.RootHash)+" ") {
			t.Fatalf("String() %q lacks the lowercase hex root hash", table.String())
		}
		again, err := ParseVerityTable(table.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", table.String(), err)
		}
		if !reflect.DeepEqual(again, table) {
			t.Fatalf("re-parse differs:\n%+v\n%+v", table, again)
		}
	})
}
