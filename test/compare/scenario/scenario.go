// Package scenario is the file format of the comparison suite: a policy,
// the files, dm-verity images and fs-verity disks it is about, and the
// operations to try under in-tree IPE and under bpfipe. The host reads it
// to build disks; the guest runner reads it to play it.
//
// A scenario is one JSON object:
//
//	{
//	  "name": "tmpfs-exec",
//	  "description": "files on tmpfs are not boot_verified",
//	  "success_audit": true,
//	  "policy": [
//	    "DEFAULT action=ALLOW",
//	    "DEFAULT op=EXECUTE action=DENY",
//	    "op=EXECUTE boot_verified=TRUE action=ALLOW",
//	    "op=EXECUTE dmverity_roothash={{ROOTHASH:tools}} action=ALLOW",
//	    "op=EXECUTE fsverity_digest={{FSVERITY:fsv/main}} action=ALLOW"
//	  ],
//	  "files":  [{"from": "busybox", "to": "/tmp/t/busybox"}],
//	  "images": [{"name": "tools", "mount": "/mnt/tools", "files": [{"from": "busybox", "to": "busybox"}]}],
//	  "fsverity": [{"name": "fsv", "mount": "/mnt/fsv", "files": [
//	    {"from": "busybox", "to": "main", "verity": "unsigned"},
//	    {"from": "busybox", "to": "signed", "tail": "signed", "verity": "signed"}
//	  ]}],
//	  "ops": [
//	    {"op": "exec", "path": "/tmp/t/busybox", "args": ["true"], "expect": "EACCES"},
//	    {"op": "mmap", "path": "/tmp/t/busybox", "prot": "rx"},
//	    {"op": "mmap", "prot": "rwx", "shared": true},
//	    {"op": "mprotect", "path": "/tmp/t/busybox", "from": "r", "to": "rx", "expect_hooks": ["MPROTECT"]},
//	    {"op": "ldso", "path": "/tmp/t/true"},
//	    {"op": "memfd", "from": "busybox", "args": ["true"]},
//	    {"op": "finit_module", "path": "/opt/compare/payload/module", "expect": "ok"},
//	    {"op": "init_module", "expect": "EACCES"}
//	  ]
//	}
//
// The policy holds rules only: the runner writes the header, because IPE
// never forgets the highest version it activated (until reboot) and one
// boot plays many scenarios. "from" names a payload file (see Payloads);
// image and fs-verity file paths are relative to their filesystem's root.
//
// An operation where bpfipe differs from IPE by design carries
// "expect_difference": "why", and usually "expect_ipe" and
// "expect_bpfipe" for the two outcomes. The runner then reports its
// differing rows as expected, and fails the scenario if the operation
// agrees after all or differs in more than what was decided.
package scenario

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Scenario is one comparison.
type Scenario struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Policy is the policy's lines after the header.
	Policy []string `json:"policy"`
	// SuccessAudit records ALLOW decisions too, so more records compare.
	SuccessAudit bool `json:"success_audit,omitempty"`
	// Permissive runs both enforcers with enforcement off: every
	// operation succeeds and the records say what would have been denied.
	Permissive bool `json:"permissive,omitempty"`
	// BpfipeBootRoot, when set, is the path bpfipe is loaded with as
	// --boot-root: the filesystem holding it is bpfipe's boot_verified
	// one, while IPE's stays the initramfs. Empty lets bpfipe designate
	// the initramfs itself, as IPE does.
	BpfipeBootRoot string `json:"bpfipe_boot_root,omitempty"`
	// FSVeritySetUpBeforeLoad has fs-verity set up the scenario's files
	// before either enforcer loads, and keeps them so: the runner opens
	// them first and mounts nothing afresh. bpfipe only learns of builtin
	// signatures verified after its load (docs/ipe-differences.md).
	// Otherwise the runner mounts the disks afresh after each load.
	FSVeritySetUpBeforeLoad bool           `json:"fsverity_set_up_before_load,omitempty"`
	Files                   []File         `json:"files,omitempty"`
	Images                  []Image        `json:"images,omitempty"`
	FSVerity                []FSVerityDisk `json:"fsverity,omitempty"`
	Ops                     []Op           `json:"ops"`
}

// File is a payload file copied into place.
type File struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Image is a dm-verity protected ext4 image the host builds with
// veritysetup and the guest opens with the project's device-mapper code.
type Image struct {
	Name  string `json:"name"`
	Mount string `json:"mount"`
	Files []File `json:"files"`
	// Signed opens the device with a PKCS#7 signature of its root hash
	// (root_hash_sig_key_desc), so dmverity_signature=TRUE holds.
	Signed bool `json:"signed,omitempty"`
}

// FSVerityDisk is a writable ext4 disk made with the verity feature. The
// host computes each file's fs-verity digest and signs the signed ones;
// the guest mounts the disk and enables fs-verity once per boot.
type FSVerityDisk struct {
	Name  string         `json:"name"`
	Mount string         `json:"mount"`
	Files []FSVerityFile `json:"files"`
}

// FSVerityFile is one file of an fs-verity disk.
type FSVerityFile struct {
	From string `json:"from"`
	// To is the file's name on the disk, also the name placeholders use.
	To string `json:"to"`
	// Tail is appended to the payload's bytes, so that copies of one
	// payload have digests of their own and still run.
	Tail string `json:"tail,omitempty"`
	// Verity is VerityNone, VerityUnsigned or VeritySigned.
	Verity string `json:"verity,omitempty"`
}

// Ways an fs-verity file is set up.
const (
	// VerityNone leaves fs-verity off: the same bytes, no digest.
	VerityNone = ""
	// VerityUnsigned enables fs-verity without a signature.
	VerityUnsigned = "unsigned"
	// VeritySigned enables fs-verity with a builtin signature by the test
	// certificate, which the guest puts in the .fs-verity keyring.
	VeritySigned = "signed"
)

// Op is one operation to attempt.
type Op struct {
	// Op is one of opKinds.
	Op string `json:"op"`
	// Path is the file: executed (exec), handed to the dynamic loader
	// (ldso), mapped (mmap, mprotect; empty maps anonymous memory), or
	// loaded as a kernel module (finit_module).
	Path string `json:"path,omitempty"`
	// From is, for memfd, the payload copied into the memfd; for
	// mprotect, the protection mapped first.
	From string   `json:"from,omitempty"`
	Args []string `json:"args,omitempty"`
	// Prot is mmap's protection and To mprotect's new one: letters of
	// "rwx", or "none".
	Prot   string `json:"prot,omitempty"`
	To     string `json:"to,omitempty"`
	Shared bool   `json:"shared,omitempty"`
	// Expect, when set, is the outcome both enforcers must produce:
	// "ok", an errno name such as "EACCES", "exit N" or "signal NAME".
	// ExpectIPE and ExpectBpfipe override it for one enforcer, for
	// operations that differ by design.
	Expect       string `json:"expect,omitempty"`
	ExpectIPE    string `json:"expect_ipe,omitempty"`
	ExpectBpfipe string `json:"expect_bpfipe,omitempty"`
	// ExpectHooks, when not nil, is the ipe_hook of every record each
	// enforcer must make, in order; an empty list means no record. It
	// shows what is checked at all (an mprotect of memory that is
	// executable already is not).
	ExpectHooks []string `json:"expect_hooks,omitempty"`
	// ExpectDifference says why bpfipe decides this operation otherwise
	// than IPE, by design (docs/ipe-differences.md). Without it every
	// difference is a disagreement.
	ExpectDifference string `json:"expect_difference,omitempty"`
}

// Ops an Op may name. finit_module loads a module file through
// kernel_read_file; init_module hands the kernel the module's image, no
// file, through kernel_load_data.
var opKinds = []string{"exec", "ldso", "memfd", "mmap", "mprotect", "finit_module", "init_module"}

// String is the operation as the comparison table shows it.
func (o Op) String() string {
	var b strings.Builder
	b.WriteString(o.Op)
	switch o.Op {
	case "mmap":
		fmt.Fprintf(&b, " %s %s", o.Prot, o.target())
	case "mprotect":
		fmt.Fprintf(&b, " %s->%s %s", o.From, o.To, o.target())
	case "memfd":
		b.WriteString(" " + o.From)
	case "init_module":
		b.WriteString(" (" + PayloadModuleImage + ")")
	default:
		b.WriteString(" " + o.Path)
	}
	for _, a := range o.Args {
		b.WriteString(" " + a)
	}
	return b.String()
}

func (o Op) target() string {
	kind := "private"
	if o.Shared {
		kind = "shared"
	}
	if o.Path == "" {
		return kind + " anon"
	}
	return kind + " " + o.Path
}

// Expected returns what the scenario expects of IPE and of bpfipe; empty
// when it does not say.
func (o Op) Expected() (ipe, bpfipe string) {
	ipe, bpfipe = o.Expect, o.Expect
	if o.ExpectIPE != "" {
		ipe = o.ExpectIPE
	}
	if o.ExpectBpfipe != "" {
		bpfipe = o.ExpectBpfipe
	}
	return ipe, bpfipe
}

// Payloads are the host files scenarios copy from: the host puts each at
// GuestPayloadDir/NAME. A dynamically linked program also needs its
// loader and libc at their usual paths, which the host adds too.
var Payloads = map[string]string{
	"busybox": "/bin/busybox",  // static
	"true":    "/usr/bin/true", // dynamic
}

// Payloads taken from the guest kernel's own package, which the host finds
// at run time: a module with no dependencies that nothing in the guest
// loads (the Manifest names it).
const (
	// PayloadModule is the module file as finit_module takes it: as
	// shipped (.ko.xz) when the kernel decompresses modules itself.
	PayloadModule = "module"
	// PayloadModuleImage is the module's ELF image, which init_module
	// takes.
	PayloadModuleImage = "module-image"
)

// IsPayload says name is a payload a scenario may copy from.
func IsPayload(name string) bool {
	_, ok := Payloads[name]
	return ok || name == PayloadModule || name == PayloadModuleImage
}

// GuestPayloadDir is where payloads sit in the guest. It is in the
// initramfs, so payloads run from here are boot_verified.
const GuestPayloadDir = "/opt/compare/payload"

// Read reads a scenario file and checks it.
func Read(file string) (*Scenario, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	var s Scenario
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("read scenario %s: %w", file, err)
	}
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", file, err)
	}
	return &s, nil
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Check reports what makes a scenario unplayable.
func (s *Scenario) Check() error {
	var errs []error
	if !validName.MatchString(s.Name) {
		errs = append(errs, fmt.Errorf("name %q: want lowercase letters, digits, - and _", s.Name))
	}
	if len(s.Policy) == 0 {
		errs = append(errs, errors.New("no policy"))
	}
	for _, line := range s.Policy {
		if strings.HasPrefix(strings.TrimSpace(line), "policy_name=") {
			errs = append(errs, errors.New("policy has a header line; the runner writes it"))
		}
	}
	if s.FSVeritySetUpBeforeLoad && len(s.FSVerity) == 0 {
		errs = append(errs, errors.New("fsverity_set_up_before_load without fs-verity disks"))
	}
	if s.BpfipeBootRoot != "" && !path.IsAbs(s.BpfipeBootRoot) {
		errs = append(errs, fmt.Errorf("bpfipe_boot_root %q is not absolute", s.BpfipeBootRoot))
	}
	for _, f := range s.Files {
		errs = append(errs, checkFile(f, true))
	}
	images := map[string]bool{}
	for _, img := range s.Images {
		if !validName.MatchString(img.Name) || images[img.Name] {
			errs = append(errs, fmt.Errorf("image name %q is invalid or repeated", img.Name))
		}
		images[img.Name] = true
		if !path.IsAbs(img.Mount) {
			errs = append(errs, fmt.Errorf("image %s: mount %q is not absolute", img.Name, img.Mount))
		}
		if len(img.Files) == 0 {
			errs = append(errs, fmt.Errorf("image %s: no files", img.Name))
		}
		for _, f := range img.Files {
			errs = append(errs, checkFile(f, false))
		}
	}
	verityFiles := map[string]bool{}
	disks := map[string]bool{}
	for _, d := range s.FSVerity {
		if !validName.MatchString(d.Name) || disks[d.Name] || images[d.Name] {
			errs = append(errs, fmt.Errorf("fs-verity disk name %q is invalid or repeated", d.Name))
		}
		disks[d.Name] = true
		if !path.IsAbs(d.Mount) {
			errs = append(errs, fmt.Errorf("fs-verity disk %s: mount %q is not absolute", d.Name, d.Mount))
		}
		if len(d.Files) == 0 {
			errs = append(errs, fmt.Errorf("fs-verity disk %s: no files", d.Name))
		}
		names := map[string]bool{}
		for _, f := range d.Files {
			if !validName.MatchString(f.To) || names[f.To] {
				errs = append(errs, fmt.Errorf("fs-verity disk %s: file name %q is invalid or repeated", d.Name, f.To))
			}
			names[f.To] = true
			if _, ok := Payloads[f.From]; !ok {
				errs = append(errs, fmt.Errorf("fs-verity disk %s: file %s: unknown payload %q", d.Name, f.To, f.From))
			}
			switch f.Verity {
			case VerityNone:
			case VerityUnsigned, VeritySigned:
				verityFiles[d.Name+"/"+f.To] = true
			default:
				errs = append(errs, fmt.Errorf("fs-verity disk %s: file %s: verity %q (want %q, %q or nothing)", d.Name, f.To, f.Verity, VerityUnsigned, VeritySigned))
			}
		}
	}
	for _, ref := range placeholders(s.Policy) {
		switch ref.kind {
		case "ROOTHASH":
			if !images[ref.name] {
				errs = append(errs, fmt.Errorf("policy refers to image %q, which the scenario does not declare", ref.name))
			}
		case "FSVERITY":
			if !verityFiles[ref.name] {
				errs = append(errs, fmt.Errorf("policy refers to fs-verity file %q, which the scenario does not declare with verity on", ref.name))
			}
		default:
			errs = append(errs, fmt.Errorf("unknown placeholder kind %s (want ROOTHASH or FSVERITY)", ref.kind))
		}
	}
	if len(s.Ops) == 0 {
		errs = append(errs, errors.New("no operations"))
	}
	for i, op := range s.Ops {
		if err := op.check(); err != nil {
			errs = append(errs, fmt.Errorf("op %d: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}

func checkFile(f File, absolute bool) error {
	if !IsPayload(f.From) {
		return fmt.Errorf("file %q: unknown payload %q", f.To, f.From)
	}
	if absolute != path.IsAbs(f.To) || strings.Contains(f.To, "..") {
		return fmt.Errorf("file %q: want an %s path", f.To, map[bool]string{true: "absolute", false: "image-relative"}[absolute])
	}
	return nil
}

func (o Op) check() error {
	if !slices.Contains(opKinds, o.Op) {
		return fmt.Errorf("unknown op %q (want one of %s)", o.Op, strings.Join(opKinds, ", "))
	}
	switch o.Op {
	case "exec", "ldso", "finit_module":
		if !path.IsAbs(o.Path) {
			return fmt.Errorf("%s needs an absolute path", o.Op)
		}
	case "init_module":
		if o.Path != "" {
			return errors.New("init_module takes no path: it loads the module image from memory")
		}
	case "memfd":
		if _, ok := Payloads[o.From]; !ok {
			return fmt.Errorf("memfd: unknown payload %q", o.From)
		}
	case "mmap":
		if _, err := ParseProt(o.Prot); err != nil {
			return err
		}
	case "mprotect":
		if _, err := ParseProt(o.From); err != nil {
			return err
		}
		if _, err := ParseProt(o.To); err != nil {
			return err
		}
	}
	if o.Path != "" && !path.IsAbs(o.Path) {
		return fmt.Errorf("path %q is not absolute", o.Path)
	}
	if (o.ExpectIPE != "" || o.ExpectBpfipe != "") && o.ExpectDifference == "" {
		if ipe, bpf := o.Expected(); ipe != bpf {
			return errors.New("expect_ipe and expect_bpfipe differ, but expect_difference does not say why")
		}
	}
	if o.ExpectDifference != "" && strings.TrimSpace(o.ExpectDifference) == "" {
		return errors.New("expect_difference is blank: say why the enforcers differ")
	}
	return nil
}

// Protection bits, as in <sys/mman.h>.
const (
	ProtRead  = 0x1
	ProtWrite = 0x2
	ProtExec  = 0x4
)

// ParseProt reads "r", "rw", "rx", "rwx", "x", ... or "none".
func ParseProt(s string) (int, error) {
	if s == "none" {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty protection (want letters of rwx, or none)")
	}
	prot := 0
	for _, c := range s {
		bit := map[rune]int{'r': ProtRead, 'w': ProtWrite, 'x': ProtExec}[c]
		if bit == 0 || prot&bit != 0 {
			return 0, fmt.Errorf("protection %q: want letters of rwx, each once, or none", s)
		}
		prot |= bit
	}
	return prot, nil
}

// placeholder is {{KIND:NAME}} in a policy line: ROOTHASH:IMAGE or
// FSVERITY:DISK/FILE.
type placeholder struct{ kind, name string }

var placeholderPattern = regexp.MustCompile(`\{\{([A-Z_]+):([a-z0-9_-]+(?:/[a-z0-9_-]+)?)\}\}`)

func placeholders(lines []string) []placeholder {
	var out []placeholder
	for _, line := range lines {
		for _, m := range placeholderPattern.FindAllStringSubmatch(line, -1) {
			out = append(out, placeholder{m[1], m[2]})
		}
	}
	return out
}

// Resolver gives the value of a placeholder: for ROOTHASH the image's
// "ALG:HEX" root hash, for FSVERITY the file's "ALG:HEX" fs-verity digest.
type Resolver func(kind, name string) (string, bool)

// Text is the policy with its header and placeholders filled in.
func (s *Scenario) Text(name, version string, resolve Resolver) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "policy_name=%s policy_version=%s\n", name, version)
	var errs []error
	for _, line := range s.Policy {
		line = placeholderPattern.ReplaceAllStringFunc(line, func(m string) string {
			sub := placeholderPattern.FindStringSubmatch(m)
			v, ok := resolve(sub[1], sub[2])
			if !ok {
				errs = append(errs, fmt.Errorf("no value for %s", m))
				return m
			}
			return v
		})
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return []byte(b.String()), errors.Join(errs...)
}

// Manifest tells the guest runner what the host prepared.
type Manifest struct {
	// Images maps an image name to its disks and verity parameters.
	Images map[string]ImageDisks `json:"images"`
	// FSVerity maps an fs-verity disk's name to what the host made of it.
	FSVerity map[string]FSVerityDiskInfo `json:"fsverity,omitempty"`
	// FSVerityCert is the guest path of the test certificate in DER, for
	// the .fs-verity keyring.
	FSVerityCert string `json:"fsverity_cert,omitempty"`
	// Module describes PayloadModule.
	Module ModuleInfo `json:"module"`
	// Cert and Key sign policies; the host enrolled Cert in the UEFI db.
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// ImageDisks is a built image as attached to the guest.
type ImageDisks struct {
	DataDev    string `json:"data_dev"`
	HashDev    string `json:"hash_dev"`
	DataBlocks uint64 `json:"data_blocks"`
	Algorithm  string `json:"algorithm"`
	RootHash   string `json:"root_hash"` // hex
	Salt       string `json:"salt"`      // hex, or "-"
	// Signature is the guest path of a detached PKCS#7 signature of the
	// root hash's hex text, for images opened signed.
	Signature string `json:"signature,omitempty"`
}

// FSVerityDiskInfo is a built fs-verity disk as attached to the guest.
type FSVerityDiskInfo struct {
	Dev string `json:"dev"`
	// Digests maps each file with fs-verity to its digest, "sha256:HEX"
	// for 4096-byte blocks, as `fsverity digest` computed it on the host.
	Digests map[string]string `json:"digests"`
	// Signatures maps each signed file to the guest path of its builtin
	// signature (`fsverity sign`).
	Signatures map[string]string `json:"signatures,omitempty"`
}

// ModuleInfo is the module the host took from the guest kernel's package.
type ModuleInfo struct {
	// Name is the module's name, for delete_module and /sys/module.
	Name string `json:"name"`
	// Compressed says PayloadModule is a compressed module the kernel
	// decompresses itself (finit_module with MODULE_INIT_COMPRESSED_FILE).
	Compressed bool `json:"compressed"`
}
