package loader

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/policy"
)

// How root hashes reach the devices map.
const (
	// DMVerityUserspace: the loader reads each verity table through the
	// device-mapper ioctls when it starts (and the foreground loader again
	// as devices come and go). Works on every kernel; a device set up
	// while no loader watches has no root hash until the next resolution,
	// so it falls through to DEFAULT (fails closed).
	DMVerityUserspace = "userspace resolution"
	// DMVerityCapture: a BPF program on bdev_setintegrity (6.12+) records
	// what dm-verity tells the LSMs, as in-tree IPE does.
	DMVerityCapture = "in-kernel capture"
)

// Kernel is what the running kernel offers bpfipe beyond the probe.
type Kernel struct {
	spec *btf.Spec
	// FSVerityDigests: the programs can read a file's fs-verity digest,
	// through the bpf_get_fsverity_digest kfunc (6.8+) or, before it, from
	// inode->i_verity_info.
	FSVerityDigests bool
	// DMVeritySignatures: dm-verity verifies root hash signatures
	// (CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG).
	DMVeritySignatures bool
	// DMVeritySignaturesWhy explains DMVeritySignatures.
	DMVeritySignaturesWhy string
}

// HasHook reports whether an LSM program can attach to hook.
func (k *Kernel) HasHook(hook string) bool { return k.hasFunc("bpf_lsm_" + hook) }

func (k *Kernel) hasFunc(name string) bool {
	if k.spec == nil {
		return false
	}
	var fn *btf.Func
	return k.spec.TypeByName(name, &fn) == nil
}

func (k *Kernel) hasMember(structName, member string) bool {
	if k.spec == nil {
		return false
	}
	var st *btf.Struct
	if k.spec.TypeByName(structName, &st) != nil {
		return false
	}
	for _, m := range st.Members {
		if m.Name == member {
			return true
		}
	}
	return false
}

// Capture reports whether dm-verity's root hashes reach BPF in the kernel.
func (k *Kernel) Capture() bool {
	return k.HasHook("bdev_setintegrity") && k.HasHook("bdev_free_security")
}

// DetectKernel reads the kernel's BTF and dm-verity's configuration.
func DetectKernel() (*Kernel, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load kernel BTF: %w", err)
	}
	k := &Kernel{spec: spec}
	k.FSVerityDigests = k.hasFunc("bpf_get_fsverity_digest") || k.hasMember("inode", "i_verity_info")
	k.DMVeritySignatures, k.DMVeritySignaturesWhy = dmVeritySignatures(uname())
	return k, nil
}

func uname() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// dmVeritySignatures decides whether dm-verity can verify root hash
// signatures. A loaded dm_verity says so through its require_signatures
// parameter, which exists only with CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG;
// when it is a module not yet loaded, the kernel configuration says.
func dmVeritySignatures(release string) (bool, string) {
	const param = "/sys/module/dm_verity/parameters/require_signatures"
	if _, err := os.Stat(param); err == nil {
		return true, "dm_verity has require_signatures"
	}
	if _, err := os.Stat("/sys/module/dm_verity"); err == nil {
		return false, "dm_verity is built without CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG"
	}
	for _, path := range []string{"/proc/config.gz", "/boot/config-" + release, "/lib/modules/" + release + "/config"} {
		value, err := kconfigValue(path, "CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG")
		if err != nil {
			continue
		}
		if value == "y" {
			return true, "dm_verity is not loaded; " + path + " has CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG=y"
		}
		return false, "dm_verity is not loaded; " + path + " lacks CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG"
	}
	return false, "dm_verity is not loaded and the kernel configuration is not readable; load dm_verity before bpfipe"
}

// kconfigValue reads one option from a kernel configuration file, plain or
// gzipped; "" when the option is unset.
func kconfigValue(path, option string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return "", err
		}
		defer gz.Close()
		r = gz
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if value, ok := strings.CutPrefix(sc.Text(), option+"="); ok {
			return value, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", nil
}

// Observability is what this kernel, with the programs that attached,
// lets bpfipe establish about a file. A property it cannot establish is
// false in both forms, as IPE treats a property compiled out of it.
func (k *Kernel) Observability(attached func(prog string) bool) policy.Observability {
	return policy.Observability{
		// Root hashes are resolved in userspace wherever capture is
		// missing, so they are known on every kernel.
		DMVerityRootHash:  true,
		DMVeritySignature: k.DMVeritySignatures,
		FSVerityDigest:    k.FSVerityDigests,
		FSVeritySignature: attached("capture_inode_setintegrity"),
	}
}

// observableNames lists the observable properties by policy name.
func observableNames(obs policy.Observability) []string {
	names := []string{policy.PropBootVerified.String()}
	for _, p := range []struct {
		on   bool
		kind policy.PropKind
	}{
		{obs.DMVerityRootHash, policy.PropDMVerityRootHash},
		{obs.DMVeritySignature, policy.PropDMVeritySignature},
		{obs.FSVerityDigest, policy.PropFSVerityDigest},
		{obs.FSVeritySignature, policy.PropFSVeritySignature},
	} {
		if p.on {
			names = append(names, p.kind.String())
		}
	}
	return names
}

// Unobservable lists, once per property, the properties p uses that obs
// cannot establish, with the first rule that uses each; the caller warns
// about them, because such rules never match here.
func Unobservable(p *policy.Policy, obs policy.Observability) []string {
	seen := map[policy.PropKind]bool{}
	var out []string
	for i := range p.Rules {
		r := &p.Rules[i]
		for _, prop := range r.Props {
			if seen[prop.Kind] || observable(prop.Kind, obs) {
				continue
			}
			seen[prop.Kind] = true
			out = append(out, fmt.Sprintf("%s cannot be established on this kernel, so both its forms are false, as in IPE built without it (first used on line %d: %s)",
				prop.Kind, r.Line, r.String()))
		}
	}
	return out
}

func observable(k policy.PropKind, obs policy.Observability) bool {
	switch k {
	case policy.PropDMVerityRootHash:
		return obs.DMVerityRootHash
	case policy.PropDMVeritySignature:
		return obs.DMVeritySignature
	case policy.PropFSVerityDigest:
		return obs.FSVerityDigest
	case policy.PropFSVeritySignature:
		return obs.FSVeritySignature
	}
	return true
}
