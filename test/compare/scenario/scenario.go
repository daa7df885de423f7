// Package scenario is the file format of the comparison suite: a policy,
// the files and dm-verity images it is about, and the operations to try
// under in-tree IPE and under bpfipe. The host reads it to build images;
// the guest runner reads it to play it.
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
//	    "op=EXECUTE dmverity_roothash={{ROOTHASH:tools}} action=ALLOW"
//	  ],
//	  "files":  [{"from": "busybox", "to": "/tmp/t/busybox"}],
//	  "images": [{"name": "tools", "mount": "/mnt/tools", "files": [{"from": "busybox", "to": "busybox"}]}],
//	  "ops": [
//	    {"op": "exec", "path": "/tmp/t/busybox", "args": ["true"], "expect": "EACCES"},
//	    {"op": "mmap", "path": "/tmp/t/busybox", "prot": "rx"},
//	    {"op": "mmap", "prot": "rwx", "shared": true},
//	    {"op": "mprotect", "path": "/tmp/t/busybox", "from": "r", "to": "rx"},
//	    {"op": "ldso", "path": "/tmp/t/true"},
//	    {"op": "memfd", "from": "busybox", "args": ["true"]}
//	  ]
//	}
//
// The policy holds rules only: the runner writes the header, because IPE
// never forgets the highest version it activated (until reboot) and one
// boot plays many scenarios. "from" names a payload file (see Payloads);
// image file paths are relative to the image root.
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
	Permissive bool    `json:"permissive,omitempty"`
	Files      []File  `json:"files,omitempty"`
	Images     []Image `json:"images,omitempty"`
	Ops        []Op    `json:"ops"`
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

// Op is one operation to attempt.
type Op struct {
	// Op is exec, ldso, memfd, mmap or mprotect.
	Op string `json:"op"`
	// Path is the file: executed (exec), handed to the dynamic loader
	// (ldso), mapped (mmap, mprotect; empty maps anonymous memory).
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
	Expect string `json:"expect,omitempty"`
}

// Ops an Op may name.
var opKinds = []string{"exec", "ldso", "memfd", "mmap", "mprotect"}

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

// Payloads are the files scenarios copy from: the host puts each at
// GuestPayloadDir/NAME. A dynamically linked program also needs its
// loader and libc at their usual paths, which the host adds too.
var Payloads = map[string]string{
	"busybox": "/bin/busybox",  // static
	"true":    "/usr/bin/true", // dynamic
}

// GuestPayloadDir is where payloads sit in the guest.
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
	for _, f := range s.Files {
		errs = append(errs, checkFile(f, true))
	}
	names := map[string]bool{}
	for _, img := range s.Images {
		if !validName.MatchString(img.Name) || names[img.Name] {
			errs = append(errs, fmt.Errorf("image name %q is invalid or repeated", img.Name))
		}
		names[img.Name] = true
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
	for _, ref := range placeholders(s.Policy) {
		if !names[ref.image] {
			errs = append(errs, fmt.Errorf("policy refers to image %q, which the scenario does not declare", ref.image))
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
	if _, ok := Payloads[f.From]; !ok {
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
	case "exec", "ldso":
		if !path.IsAbs(o.Path) {
			return fmt.Errorf("%s needs an absolute path", o.Op)
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

type placeholder struct{ kind, image string }

var placeholderPattern = regexp.MustCompile(`\{\{([A-Z_]+):([a-z0-9_-]+)\}\}`)

func placeholders(lines []string) []placeholder {
	var out []placeholder
	for _, line := range lines {
		for _, m := range placeholderPattern.FindAllStringSubmatch(line, -1) {
			out = append(out, placeholder{m[1], m[2]})
		}
	}
	return out
}

// Text is the policy with its header and placeholders filled in:
// {{ROOTHASH:IMAGE}} becomes the image's "ALG:HEX" root hash.
func (s *Scenario) Text(name, version string, rootHash func(image string) (string, bool)) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "policy_name=%s policy_version=%s\n", name, version)
	var errs []error
	for _, line := range s.Policy {
		line = placeholderPattern.ReplaceAllStringFunc(line, func(m string) string {
			sub := placeholderPattern.FindStringSubmatch(m)
			if sub[1] != "ROOTHASH" {
				errs = append(errs, fmt.Errorf("unknown placeholder %s", m))
				return m
			}
			h, ok := rootHash(sub[2])
			if !ok {
				errs = append(errs, fmt.Errorf("no root hash for image %q", sub[2]))
				return m
			}
			return h
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
