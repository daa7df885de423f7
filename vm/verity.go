package vm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// Verity is a dm-verity device the guest's init opens from two host image
// files, made with `veritysetup format DATA HASH`, and mounts read-only at
// /mnt/NAME before the command runs. The files are attached as read-only
// virtio disks after Config.Disks.
type Verity struct {
	// Name is the device-mapper name: /dev/mapper/NAME, mounted at /mnt/NAME.
	Name string
	// Data holds the filesystem (ext4 or squashfs); Hash holds
	// veritysetup's superblock and hash tree.
	Data string
	Hash string
	// RootHash is the hex root hash veritysetup printed. Empty reads it
	// from the sidecar file Data + ".roothash".
	RootHash string
	// Signature, if set, is a host file with the PKCS#7 signature of the
	// hex root hash (veritysetup's --root-hash-signature); dm-verity then
	// checks it against the kernel's keys, and the device is signed only if
	// it verifies (on 6.12, a --uefi-cert signer is trusted).
	Signature string
}

// RootHashSuffix names the sidecar file next to a data image that holds
// its root hash, for a Verity given without one.
const RootHashSuffix = ".roothash"

// validVerityName keeps NAME usable as a device-mapper name, a path
// element and a key description.
var validVerityName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$`)

// ParseVerity reads NAME=DATA:HASH[:ROOTHASH[:SIGFILE]], the syntax of
// bpfipe-vm's --verity. File names cannot contain ':'.
func ParseVerity(s string) (Verity, error) {
	name, files, ok := strings.Cut(s, "=")
	if !ok {
		return Verity{}, fmt.Errorf("parse --verity %q: want NAME=DATA:HASH[:ROOTHASH[:SIGFILE]]", s)
	}
	parts := strings.Split(files, ":")
	if len(parts) < 2 || len(parts) > 4 || parts[0] == "" || parts[1] == "" {
		return Verity{}, fmt.Errorf("parse --verity %q: want NAME=DATA:HASH[:ROOTHASH[:SIGFILE]]", s)
	}
	v := Verity{Name: name, Data: parts[0], Hash: parts[1]}
	if len(parts) > 2 {
		v.RootHash = parts[2]
	}
	if len(parts) > 3 {
		if parts[3] == "" {
			return Verity{}, fmt.Errorf("parse --verity %q: empty signature file name", s)
		}
		v.Signature = parts[3]
	}
	if err := checkVerityName(v.Name); err != nil {
		return Verity{}, fmt.Errorf("parse --verity %q: %w", s, err)
	}
	return v, nil
}

func checkVerityName(name string) error {
	if !validVerityName.MatchString(name) {
		return fmt.Errorf("device name %q: want 1 to 64 letters, digits, '_', '.', '+' or '-', starting with a letter or digit", name)
	}
	return nil
}

// veritySuperblock is the superblock veritysetup writes at the start of
// the hash image (cryptsetup lib/verity/verity.c struct verity_sb): 512
// bytes, little-endian.
type veritySuperblock struct {
	Signature     [8]byte
	Version       uint32
	HashType      uint32
	UUID          [16]byte
	Algorithm     [32]byte
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	SaltSize      uint16
	_             [6]byte
	Salt          [256]byte
	_             [168]byte
}

const veritySuperblockSize = 512

var veritySignature = [8]byte{'v', 'e', 'r', 'i', 't', 'y', 0, 0}

// verityParams is what the table needs besides the devices and the root
// hash.
type verityParams struct {
	hashType       uint32
	algorithm      string
	dataBlockSize  uint32
	hashBlockSize  uint32
	dataBlocks     uint64
	hashStartBlock uint64
	salt           []byte
}

// parseVeritySuperblock decodes and checks a hash image's superblock.
func parseVeritySuperblock(raw []byte) (verityParams, error) {
	if len(raw) < veritySuperblockSize {
		return verityParams{}, fmt.Errorf("superblock of %d bytes, want %d", len(raw), veritySuperblockSize)
	}
	var sb veritySuperblock
	if _, err := binary.Decode(raw[:veritySuperblockSize], binary.LittleEndian, &sb); err != nil {
		return verityParams{}, fmt.Errorf("decode superblock: %w", err)
	}
	if sb.Signature != veritySignature {
		return verityParams{}, errors.New(`no "verity" superblock (made with veritysetup format --no-superblock?)`)
	}
	if sb.Version != 1 {
		return verityParams{}, fmt.Errorf("superblock version %d, want 1", sb.Version)
	}
	if sb.HashType > 1 {
		return verityParams{}, fmt.Errorf("hash type %d, want 0 or 1", sb.HashType)
	}
	for _, size := range []uint32{sb.DataBlockSize, sb.HashBlockSize} {
		if size < 512 || size&(size-1) != 0 || size > 1<<30 {
			return verityParams{}, fmt.Errorf("block size %d is not a power of two from 512", size)
		}
	}
	if sb.DataBlocks == 0 {
		return verityParams{}, errors.New("superblock says the data has no blocks")
	}
	if int(sb.SaltSize) > len(sb.Salt) {
		return verityParams{}, fmt.Errorf("salt of %d bytes, at most %d fit", sb.SaltSize, len(sb.Salt))
	}
	algorithm, _, _ := bytes.Cut(sb.Algorithm[:], []byte{0})
	if len(algorithm) == 0 {
		return verityParams{}, errors.New("superblock names no hash algorithm")
	}
	return verityParams{
		hashType:      sb.HashType,
		algorithm:     string(algorithm),
		dataBlockSize: sb.DataBlockSize,
		hashBlockSize: sb.HashBlockSize,
		dataBlocks:    sb.DataBlocks,
		// The tree starts at the first hash block after the superblock.
		hashStartBlock: (veritySuperblockSize + uint64(sb.HashBlockSize) - 1) / uint64(sb.HashBlockSize),
		salt:           append([]byte(nil), sb.Salt[:sb.SaltSize]...),
	}, nil
}

// Digest sizes of the algorithms veritysetup offers, to catch a root hash
// pasted short; others are only checked for being hex.
var verityDigestSizes = map[string]int{"sha1": 20, "sha256": 32, "sha512": 64}

// resolve checks the files, reads the hash image's superblock and the root
// hash, and returns what init needs besides the disks' serial numbers.
func (v Verity) resolve() (guestspec.Verity, error) {
	fail := func(err error) (guestspec.Verity, error) {
		return guestspec.Verity{}, fmt.Errorf("prepare verity device %q: %w", v.Name, err)
	}
	if err := checkVerityName(v.Name); err != nil {
		return fail(err)
	}
	params, err := readVeritySuperblock(v.Hash)
	if err != nil {
		return fail(err)
	}
	data, err := os.Stat(v.Data)
	if err != nil {
		return fail(fmt.Errorf("check data image: %w", err))
	}
	if need := params.dataBlocks * uint64(params.dataBlockSize); uint64(data.Size()) < need {
		return fail(fmt.Errorf("data image %s has %d bytes, the hash image covers %d (a different image?)", v.Data, data.Size(), need))
	}
	rootHash := v.RootHash
	if rootHash == "" {
		sidecar := v.Data + RootHashSuffix
		raw, err := os.ReadFile(sidecar)
		if err != nil {
			return fail(fmt.Errorf("no root hash given and none in %s: %w", sidecar, err))
		}
		rootHash = strings.TrimSpace(string(raw))
	}
	digest, err := hex.DecodeString(rootHash)
	if err != nil || len(digest) == 0 {
		return fail(fmt.Errorf("root hash %q is not hex", rootHash))
	}
	if want, ok := verityDigestSizes[params.algorithm]; ok && len(digest) != want {
		return fail(fmt.Errorf("%s root hash of %d bytes, want %d", params.algorithm, len(digest), want))
	}
	if v.Signature != "" {
		if _, err := os.Stat(v.Signature); err != nil {
			return fail(fmt.Errorf("check root hash signature: %w", err))
		}
	}
	salt := "-"
	if len(params.salt) > 0 {
		salt = hex.EncodeToString(params.salt)
	}
	spec := guestspec.Verity{
		Name:           v.Name,
		HashType:       params.hashType,
		DataBlockSize:  params.dataBlockSize,
		HashBlockSize:  params.hashBlockSize,
		DataBlocks:     params.dataBlocks,
		HashStartBlock: params.hashStartBlock,
		Algorithm:      params.algorithm,
		RootHash:       hex.EncodeToString(digest),
		Salt:           salt,
		MountPoint:     path.Join(guestspec.VerityMountDir, v.Name),
	}
	if v.Signature != "" {
		spec.SignaturePath = path.Join(guestspec.VerityDir, v.Name+".sig")
	}
	return spec, nil
}

func readVeritySuperblock(hashImage string) (verityParams, error) {
	f, err := os.Open(hashImage)
	if err != nil {
		return verityParams{}, fmt.Errorf("open hash image: %w", err)
	}
	defer f.Close()
	raw := make([]byte, veritySuperblockSize)
	if _, err := io.ReadFull(f, raw); err != nil {
		return verityParams{}, fmt.Errorf("read hash image %s: %w", hashImage, err)
	}
	params, err := parseVeritySuperblock(raw)
	if err != nil {
		return verityParams{}, fmt.Errorf("hash image %s: %w", hashImage, err)
	}
	return params, nil
}

// verityDisks resolves every Verity and returns the guest's view of them,
// the disks to attach after cfg.Disks and the signature files to add.
func verityDisks(verities []Verity) ([]guestspec.Verity, []Disk, []Add, error) {
	var (
		specs []guestspec.Verity
		disks []Disk
		adds  []Add
		seen  = map[string]bool{}
	)
	for i, v := range verities {
		if seen[v.Name] {
			return nil, nil, nil, fmt.Errorf("prepare verity device %q: name given twice", v.Name)
		}
		seen[v.Name] = true
		spec, err := v.resolve()
		if err != nil {
			return nil, nil, nil, err
		}
		// virtio-blk serials hold at most 20 bytes: number the devices
		// rather than embed their names.
		spec.DataSerial = fmt.Sprintf("bpfipe-verity%d-d", i)
		spec.HashSerial = fmt.Sprintf("bpfipe-verity%d-h", i)
		specs = append(specs, spec)
		disks = append(disks,
			Disk{Path: v.Data, ReadOnly: true, Serial: spec.DataSerial},
			Disk{Path: v.Hash, ReadOnly: true, Serial: spec.HashSerial})
		if v.Signature != "" {
			adds = append(adds, Add{Src: v.Signature, Dst: spec.SignaturePath})
		}
	}
	return specs, disks, adds, nil
}
