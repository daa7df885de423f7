package kernelipe

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/smallstep/pkcs7"
	"golang.org/x/sys/unix"
)

// DefaultDir is where securityfs shows in-tree IPE.
const DefaultDir = "/sys/kernel/security/ipe"

// FS is an IPE securityfs directory. The zero value means DefaultDir; tests
// point it at a fake tree.
type FS struct{ Dir string }

func (f FS) dir() string {
	if f.Dir == "" {
		return DefaultDir
	}
	return f.Dir
}

func (f FS) path(elem ...string) string {
	return filepath.Join(append([]string{f.dir()}, elem...)...)
}

// Available reports ErrNotAvailable unless IPE's securityfs tree is there.
func (f FS) Available() error {
	if _, err := os.Stat(f.path("new_policy")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotAvailable
		}
		return fmt.Errorf("check in-tree IPE: %w", err)
	}
	return nil
}

// NewPolicy hands a signed policy to the kernel (new_policy) without
// activating it, and returns the name the kernel filed it under.
func (f FS) NewPolicy(blob []byte) (string, error) {
	before, err := f.policyNames()
	if err != nil {
		return "", err
	}
	if err := f.write(f.path("new_policy"), blob, StepNewPolicy, ""); err != nil {
		return "", err
	}
	// The kernel's own directory listing names the policy, so a name our
	// parser would read differently still resolves.
	after, err := f.policyNames()
	if err != nil {
		return "", err
	}
	for _, name := range after {
		if !slices.Contains(before, name) {
			return name, nil
		}
	}
	if name, ok := PolicyName(blob); ok {
		return name, nil
	}
	return "", errors.New("load policy: the kernel accepted the policy but no new directory appeared under policies/")
}

// Activate makes the loaded policy name the active one.
func (f FS) Activate(name string) error {
	return f.writePolicy(name, "active", []byte("1"), StepActivate)
}

// Load loads a signed policy and activates it, returning its name.
func (f FS) Load(blob []byte) (string, error) {
	name, err := f.NewPolicy(blob)
	if err != nil {
		return "", err
	}
	return name, f.Activate(name)
}

// Update replaces the loaded policy name with a signed policy; the kernel
// requires the same name and a newer version. An active policy stays active.
func (f FS) Update(name string, blob []byte) error {
	return f.writePolicy(name, "update", blob, StepUpdate)
}

// Delete unloads the policy name; the kernel refuses for the active one.
func (f FS) Delete(name string) error {
	return f.writePolicy(name, "delete", []byte("1"), StepDelete)
}

// SetEnforce switches between enforcing (true) and permissive.
func (f FS) SetEnforce(on bool) error {
	return f.write(f.path("enforce"), boolText(on), StepEnforce, "")
}

// SetSuccessAudit switches audit records for ALLOW decisions on or off.
func (f FS) SetSuccessAudit(on bool) error {
	return f.write(f.path("success_audit"), boolText(on), StepSuccessAudit, "")
}

func boolText(on bool) []byte {
	if on {
		return []byte("1")
	}
	return []byte("0")
}

// writePolicy writes to a node of policies/NAME/. A name that would leave
// policies/ is refused as absent: the kernel could never have filed a
// policy under it.
func (f FS) writePolicy(name, node string, data []byte, step Step) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return &Error{Step: step, Policy: name, Errno: syscall.ENOENT}
	}
	return f.write(f.path("policies", name, node), data, step, name)
}

// write hands data to a securityfs node in exactly one write(2): IPE reads
// each write as a whole message and keeps nothing between writes.
func (f FS) write(path string, data []byte, step Step, policy string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return f.openError(err, step, policy, path)
	}
	defer unix.Close(fd)
	var n int
	for {
		n, err = unix.Write(fd, data)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return &Error{Step: step, Policy: policy, Path: path, Errno: err.(syscall.Errno)}
	}
	if n != len(data) {
		return fmt.Errorf("%s: short write to %s: %d of %d bytes", step, path, n, len(data))
	}
	return nil
}

func (f FS) openError(err error, step Step, policy, path string) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("%s: open %s: %w", step, path, err)
	}
	if errno == syscall.ENOENT {
		if availErr := f.Available(); availErr != nil {
			return availErr
		}
	}
	return &Error{Step: step, Policy: policy, Path: path, Errno: errno, Opening: true}
}

func (f FS) read(elem ...string) ([]byte, error) {
	path := f.path(elem...)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, f.openError(err, StepRead, "", path)
	}
	return data, nil
}

func (f FS) readBool(elem ...string) (bool, error) {
	data, err := f.read(elem...)
	if err != nil {
		return false, err
	}
	switch string(bytes.TrimSpace(data)) {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("read ipe state: %s holds %q, not 0 or 1", filepath.Join(elem...), data)
}

func (f FS) policyNames() ([]string, error) {
	entries, err := os.ReadDir(f.path("policies"))
	if err != nil {
		return nil, f.openError(err, StepRead, "", f.path("policies"))
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// Status is in-tree IPE's state as securityfs shows it.
type Status struct {
	Enforce      bool `json:"enforce"`
	SuccessAudit bool `json:"success_audit"`
	// Active is nil when no policy is active: IPE then allows everything
	// and records nothing.
	Active   *PolicyInfo  `json:"active"`
	Policies []PolicyInfo `json:"policies"`
}

// PolicyInfo describes one loaded policy.
type PolicyInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Active  bool   `json:"active"`
	// Signed is false for the boot policy, which has no PKCS#7 message.
	Signed bool `json:"signed"`
	// Digest is "sha256:HEX" of the PKCS#7 message (of nothing for the
	// boot policy): the policy_digest of IPE's audit records.
	Digest string `json:"digest"`
}

// Status reads enforce, success_audit and every loaded policy.
func (f FS) Status() (*Status, error) {
	var st Status
	var err error
	if st.Enforce, err = f.readBool("enforce"); err != nil {
		return nil, err
	}
	if st.SuccessAudit, err = f.readBool("success_audit"); err != nil {
		return nil, err
	}
	names, err := f.policyNames()
	if err != nil {
		return nil, err
	}
	st.Policies = []PolicyInfo{}
	for _, dir := range names {
		info, err := f.policyInfo(dir)
		if errors.Is(err, syscall.ENOENT) {
			continue // deleted or replaced while we read
		}
		if err != nil {
			return nil, err
		}
		st.Policies = append(st.Policies, info)
	}
	for i := range st.Policies {
		if st.Policies[i].Active {
			active := st.Policies[i]
			st.Active = &active
		}
	}
	return &st, nil
}

func (f FS) policyInfo(dir string) (PolicyInfo, error) {
	info := PolicyInfo{Name: dir}
	name, err := f.read("policies", dir, "name")
	if err != nil {
		return info, err
	}
	info.Name = string(name)
	version, err := f.read("policies", dir, "version")
	if err != nil {
		return info, err
	}
	info.Version = strings.TrimSpace(string(version))
	if info.Active, err = f.readBool("policies", dir, "active"); err != nil {
		return info, err
	}
	blob, err := f.read("policies", dir, "pkcs7")
	switch {
	case err == nil:
		info.Signed = true
	case errors.Is(err, syscall.ENOENT):
		// The boot policy has no message; its pkcs7 node says ENOENT.
		if _, statErr := os.Stat(f.path("policies", dir)); statErr != nil {
			return info, err
		}
	default:
		return info, err
	}
	info.Digest = Digest(blob)
	return info, nil
}

// Digest is how IPE's audit records name a policy: "sha256:" and the
// uppercase hex SHA-256 of its PKCS#7 message.
func Digest(blob []byte) string {
	sum := sha256.Sum256(blob)
	return "sha256:" + strings.ToUpper(hex.EncodeToString(sum[:]))
}

// PolicyName is the policy_name of the policy signed in blob, read the way
// IPE's parser reads the header line; ok is false when there is none.
func PolicyName(blob []byte) (string, bool) {
	p7, err := pkcs7.Parse(blob)
	if err != nil {
		return "", false
	}
	return HeaderName(p7.Content)
}

// HeaderName is the policy_name of a policy text: the first token of the
// first line that is not empty once comments and trailing space are cut.
func HeaderName(text []byte) (string, bool) {
	if nul := bytes.IndexByte(text, 0); nul >= 0 {
		text = text[:nul]
	}
	for _, line := range bytes.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if hash := bytes.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		for len(line) > 0 && isKernelSpace(line[len(line)-1]) {
			line = line[:len(line)-1]
		}
		fields := bytes.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
		if len(fields) == 0 {
			continue
		}
		name, ok := bytes.CutPrefix(fields[0], []byte("policy_name="))
		if !ok || len(name) == 0 {
			return "", false
		}
		return string(name), true
	}
	return "", false
}

// isKernelSpace is the kernel's isspace(), which also counts 0xA0.
func isKernelSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' || c == 0xa0
}

// Load loads a signed policy into the running kernel's IPE and activates
// it, returning its name.
func Load(blob []byte) (string, error) { return FS{}.Load(blob) }

// Update replaces the loaded policy of the same name as the signed policy
// in blob, returning that name.
func Update(blob []byte) (string, error) {
	name, ok := PolicyName(blob)
	if !ok {
		return "", errors.New("update policy: no policy_name in the signed policy (is it a PKCS#7 message with attached content?)")
	}
	return name, FS{}.Update(name, blob)
}

// Delete unloads the running kernel's policy name.
func Delete(name string) error { return FS{}.Delete(name) }

// SetEnforce switches the running kernel's IPE between enforcing and
// permissive.
func SetEnforce(on bool) error { return FS{}.SetEnforce(on) }

// SetSuccessAudit switches records of ALLOW decisions on or off.
func SetSuccessAudit(on bool) error { return FS{}.SetSuccessAudit(on) }

// CurrentStatus reads the running kernel's IPE state.
func CurrentStatus() (*Status, error) { return FS{}.Status() }
