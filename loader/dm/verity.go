package dm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bpfipe/bpfipe/loader/blockdev"
)

// VerityTargetType is the device-mapper target type of dm-verity.
const VerityTargetType = "verity"

// MaxDigestSize is the kernel's HASH_MAX_DIGESTSIZE.
const MaxDigestSize = 64

// VerityTable is a dm-verity target's parameter line
// (Documentation/admin-guide/device-mapper/verity.rst):
//
//	<version> <data_dev> <hash_dev> <data_block_size> <hash_block_size>
//	<num_data_blocks> <hash_start_block> <algorithm> <root_digest> <salt>
//	[<#opt_params> <opt_params>...]
type VerityTable struct {
	Version        uint32 // hash format: 0 (Chromium OS) or 1
	DataDevice     string // "major:minor" as the kernel reports it, or a path
	HashDevice     string
	DataBlockSize  uint32
	HashBlockSize  uint32
	NumDataBlocks  uint64
	HashStartBlock uint64
	Algorithm      string
	RootHash       []byte
	Salt           []byte // nil when the table says "-"

	// Options are the optional arguments exactly as given, so the table
	// re-serialises unchanged; the fields below are derived from them.
	Options []string

	// CorruptionMode is "" (the default: fail the read with EIO),
	// "ignore_corruption", "restart_on_corruption" or "panic_on_corruption".
	CorruptionMode string
	// ErrorMode is "", "restart_on_error" or "panic_on_error".
	ErrorMode          string
	IgnoreZeroBlocks   bool
	CheckAtMostOnce    bool
	TryVerifyInTasklet bool
	FEC                *VerityFEC // nil without forward error correction
	// RootHashSigKeyDesc names the keyring key holding the PKCS#7
	// signature of the root hash.
	RootHashSigKeyDesc string
	// Signed reports that the table names a root hash signature. The
	// kernel refuses to construct such a table unless the signature
	// verifies against its trusted keys, so a live table with one has a
	// verified root hash.
	Signed bool
}

// VerityFEC is dm-verity's forward error correction setup.
type VerityFEC struct {
	Device string
	Roots  uint32
	Blocks uint64
	Start  uint64
}

// Verifies reports whether a corrupted block fails the read. With
// ignore_corruption dm-verity only logs and returns the corrupted data, so
// the root hash then says nothing about what is read.
func (t VerityTable) Verifies() bool {
	return t.CorruptionMode != "ignore_corruption"
}

// DataDev returns the data device's number when the table gives it as
// major:minor, which is how the kernel reports live tables.
func (t VerityTable) DataDev() (major, minor uint32, ok bool) {
	major, minor, err := blockdev.ParseMajorMinor(t.DataDevice)
	return major, minor, err == nil
}

// Digest sizes of the algorithms dm-verity is used with. Others are
// accepted with any size up to MaxDigestSize.
var digestSizes = map[string]int{
	"md5":         16,
	"sha1":        20,
	"sha224":      28,
	"sha256":      32,
	"sha384":      48,
	"sha512":      64,
	"sha3-224":    28,
	"sha3-256":    32,
	"sha3-384":    48,
	"sha3-512":    64,
	"blake2b-256": 32,
	"blake2b-512": 64,
	"sm3":         32,
	"streebog256": 32,
	"streebog512": 64,
}

// Optional arguments that take a value; every other one is a lone word.
var verityOptionArgs = map[string]bool{
	"use_fec_from_device":    true,
	"fec_roots":              true,
	"fec_blocks":             true,
	"fec_start":              true,
	"root_hash_sig_key_desc": true,
}

// ParseVerityTable parses a dm-verity target's parameters as the kernel
// reports them in DM_TABLE_STATUS (or as given to DM_TABLE_LOAD).
func ParseVerityTable(params string) (VerityTable, error) {
	args := strings.Fields(params)
	if len(args) < 10 {
		return VerityTable{}, fmt.Errorf("parse verity table: %d arguments, want at least 10", len(args))
	}
	var t VerityTable
	var err error
	if t.Version, err = parseUint32(args[0], "version"); err != nil {
		return VerityTable{}, err
	}
	if t.Version > 1 {
		return VerityTable{}, fmt.Errorf("parse verity table: unknown version %d", t.Version)
	}
	t.DataDevice, t.HashDevice = args[1], args[2]
	if t.DataBlockSize, err = parseBlockSize(args[3], "data block size"); err != nil {
		return VerityTable{}, err
	}
	if t.HashBlockSize, err = parseBlockSize(args[4], "hash block size"); err != nil {
		return VerityTable{}, err
	}
	if t.NumDataBlocks, err = parseUint64(args[5], "data block count"); err != nil {
		return VerityTable{}, err
	}
	if t.HashStartBlock, err = parseUint64(args[6], "hash start block"); err != nil {
		return VerityTable{}, err
	}
	t.Algorithm = args[7]
	if t.RootHash, err = parseRootHash(args[8], t.Algorithm); err != nil {
		return VerityTable{}, err
	}
	if args[9] != "-" {
		if t.Salt, err = hex.DecodeString(args[9]); err != nil {
			return VerityTable{}, fmt.Errorf("parse verity table: salt: %w", err)
		}
	}
	if len(args) == 10 {
		return t, nil
	}
	count, err := strconv.ParseUint(args[10], 10, 32)
	if err != nil {
		return VerityTable{}, fmt.Errorf("parse verity table: optional argument count: %w", err)
	}
	if count != uint64(len(args)-11) {
		return VerityTable{}, fmt.Errorf("parse verity table: %d optional arguments announced, %d given", count, len(args)-11)
	}
	if count > 0 {
		t.Options = args[11:]
	}
	if err := t.applyOptions(); err != nil {
		return VerityTable{}, err
	}
	return t, nil
}

func (t *VerityTable) applyOptions() error {
	opts := t.Options
	for i := 0; i < len(opts); i++ {
		// The kernel compares option names ignoring case.
		name := strings.ToLower(opts[i])
		var value string
		if verityOptionArgs[name] {
			if i+1 >= len(opts) {
				return fmt.Errorf("parse verity table: option %s needs a value", name)
			}
			i++
			value = opts[i]
		}
		var err error
		switch name {
		case "ignore_corruption", "restart_on_corruption", "panic_on_corruption":
			t.CorruptionMode = name
		case "restart_on_error", "panic_on_error":
			t.ErrorMode = name
		case "ignore_zero_blocks":
			t.IgnoreZeroBlocks = true
		case "check_at_most_once":
			t.CheckAtMostOnce = true
		case "try_verify_in_tasklet":
			t.TryVerifyInTasklet = true
		case "use_fec_from_device":
			t.fec().Device = value
		case "fec_roots":
			t.fec().Roots, err = parseUint32(value, "fec_roots")
		case "fec_blocks":
			t.fec().Blocks, err = parseUint64(value, "fec_blocks")
		case "fec_start":
			t.fec().Start, err = parseUint64(value, "fec_start")
		case "root_hash_sig_key_desc":
			if t.Signed {
				return errors.New("parse verity table: root_hash_sig_key_desc given twice")
			}
			t.RootHashSigKeyDesc, t.Signed = value, true
		default:
			// The kernel rejects options it does not know, so a live
			// table only holds ones newer than this parser; they are
			// kept in Options.
		}
		if err != nil {
			return err
		}
	}
	if t.FEC != nil && t.FEC.Device == "" {
		return errors.New("parse verity table: fec options without use_fec_from_device")
	}
	return nil
}

func (t *VerityTable) fec() *VerityFEC {
	if t.FEC == nil {
		t.FEC = &VerityFEC{}
	}
	return t.FEC
}

// String formats the table as the kernel takes it.
func (t VerityTable) String() string {
	salt := "-"
	if t.Salt != nil {
		salt = hex.EncodeToString(t.Salt)
	}
	s := fmt.Sprintf("%d %s %s %d %d %d %d %s %x %s",
		t.Version, t.DataDevice, t.HashDevice, t.DataBlockSize, t.HashBlockSize,
		t.NumDataBlocks, t.HashStartBlock, t.Algorithm, t.RootHash, salt)
	if len(t.Options) > 0 {
		s += fmt.Sprintf(" %d %s", len(t.Options), strings.Join(t.Options, " "))
	}
	return s
}

func parseRootHash(s, algorithm string) ([]byte, error) {
	digest, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("parse verity table: root hash: %w", err)
	}
	if want, known := digestSizes[strings.ToLower(algorithm)]; known && len(digest) != want {
		return nil, fmt.Errorf("parse verity table: %s root hash of %d bytes, want %d", algorithm, len(digest), want)
	}
	if len(digest) == 0 || len(digest) > MaxDigestSize {
		return nil, fmt.Errorf("parse verity table: root hash of %d bytes", len(digest))
	}
	return digest, nil
}

func parseBlockSize(s, what string) (uint32, error) {
	n, err := parseUint32(s, what)
	if err != nil {
		return 0, err
	}
	// 512 is the smallest logical block size; the kernel also caps sizes
	// at INT_MAX.
	if n < 512 || n&(n-1) != 0 || n > 1<<30 {
		return 0, fmt.Errorf("parse verity table: %s %d is not a power of two from 512", what, n)
	}
	return n, nil
}

func parseUint32(s, what string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse verity table: %s: %w", what, err)
	}
	return uint32(n), nil
}

func parseUint64(s, what string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse verity table: %s: %w", what, err)
	}
	return n, nil
}
