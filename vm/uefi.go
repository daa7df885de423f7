package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// dbOwnerGUID is the owner recorded with the certificate in the UEFI db;
// any GUID works, a fixed one keeps enrolled varstores reproducible.
const dbOwnerGUID = "b5b6ac19-0b4e-4e31-9c5b-6d0b0c3e1f1d"

// virtFirmwarePackage provides virt-fw-vars. It is only in Debian 13, so it
// is downloaded through the private trixie configuration and run from the
// cache with the system's python3; it is never installed.
const virtFirmwarePackage = "python3-virt-firmware"

// readCertificate loads a PEM (or DER) X.509 certificate and returns it as
// PEM, failing early with a clear message instead of deep in virt-fw-vars.
func readCertificate(path string) (pemBytes []byte, cert *x509.Certificate, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read UEFI certificate: %w", err)
	}
	der := raw
	if block, _ := pem.Decode(raw); block != nil {
		if block.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("read UEFI certificate %s: PEM block is %q, want CERTIFICATE", path, block.Type)
		}
		der = block.Bytes
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("read UEFI certificate %s: %w", path, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// enrolledVarstore returns a cached copy of OVMF's stock varstore (Secure
// Boot off) with the certificate added to db, building it on first use.
// The kernel loads db certificates into its .platform keyring.
func enrolledVarstore(ctx context.Context, cacheDir, certPath string, p progress) (string, error) {
	for _, f := range []string{ovmfCode, ovmfVars} {
		if err := requireFile(f, "ovmf"); err != nil {
			return "", err
		}
	}
	certPEM, _, err := readCertificate(certPath)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(certPEM)
	if err := hashFile(h, ovmfVars); err != nil {
		return "", fmt.Errorf("read %s: %w", ovmfVars, err)
	}
	out := filepath.Join(cacheDir, "uefi", "vars-"+hex.EncodeToString(h.Sum(nil))[:24]+".fd")
	if fileExists(out) {
		touch(out)
		return out, nil
	}
	prune(filepath.Join(cacheDir, "uefi", "vars-*.fd"))
	unlock, err := lockFile(filepath.Join(cacheDir, "uefi", ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if fileExists(out) {
		return out, nil
	}
	py, err := python(ctx)
	if err != nil {
		return "", err
	}
	tool, err := ensureVirtFirmware(ctx, cacheDir, p)
	if err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".enroll-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	certFile := filepath.Join(work, "db.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", err
	}
	vars := filepath.Join(work, "vars.fd")
	if err := copyFile(ovmfVars, vars); err != nil {
		return "", err
	}
	done := p.step("enrolling %s in a UEFI varstore", filepath.Base(certPath))
	cmd := exec.CommandContext(ctx, py, "-c", "import sys; from virt.firmware.vars import main; sys.exit(main())",
		"--inplace", vars, "--add-db", dbOwnerGUID, certFile)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+tool.pythonPath, "PYTHONDONTWRITEBYTECODE=1")
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	err = cmd.Run()
	done(err)
	if err != nil {
		return "", fmt.Errorf("enroll UEFI certificate with virt-fw-vars: %w: %s", err, lastLines(output.String(), 5))
	}
	if err := os.Rename(vars, out); err != nil {
		return "", err
	}
	return out, nil
}

type virtFirmware struct{ pythonPath string }

// ensureVirtFirmware unpacks python3-virt-firmware into the cache once; any
// cached version will do, since enrolling a db certificate has not changed
// across its releases.
func ensureVirtFirmware(ctx context.Context, cacheDir string, p progress) (*virtFirmware, error) {
	root := filepath.Join(cacheDir, "tools")
	if dir := newestCachedTool(root, virtFirmwarePackage); dir != "" {
		return virtFirmwareIn(root, dir)
	}
	for _, t := range []struct{ name, pkg string }{{"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg-deb", "dpkg"}} {
		if _, err := lookTool(t.name, t.pkg); err != nil {
			return nil, err
		}
	}
	a, err := privateApt(cacheDir, "trixie")
	if err != nil {
		return nil, err
	}
	if err := a.refreshPrivate(ctx, p); err != nil {
		return nil, fmt.Errorf("fetch %s: %w: %w", virtFirmwarePackage, ErrUnavailable, err)
	}
	out, err := a.run(ctx, "", "apt-cache", "policy", virtFirmwarePackage)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", virtFirmwarePackage, err)
	}
	version := parsePolicy(out)[virtFirmwarePackage]
	if version == "" || version == "(none)" {
		return nil, fmt.Errorf("fetch %s: %w: not in Debian trixie's package lists", virtFirmwarePackage, ErrUnavailable)
	}
	dl, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dl)
	done := p.step("downloading %s %s", virtFirmwarePackage, version)
	deb, err := a.download(ctx, dl, virtFirmwarePackage, version)
	done(err)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w: %w", virtFirmwarePackage, ErrUnavailable, err)
	}
	dir := filepath.Join(root, virtFirmwarePackage+"_"+version)
	tmp := dir + ".partial"
	os.RemoveAll(tmp)
	if err := extractDeb(ctx, deb, tmp); err != nil {
		return nil, err
	}
	// The package imports the importlib_resources backport, which Debian 12
	// does not ship; the standard library's importlib.resources has the
	// same API for what it uses.
	shim := filepath.Join(tmp, "shim")
	if err := os.MkdirAll(shim, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(shim, "importlib_resources.py"), []byte("from importlib.resources import *  # noqa: F401,F403\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	return virtFirmwareIn(root, filepath.Base(dir))
}

func virtFirmwareIn(root, name string) (*virtFirmware, error) {
	dir := filepath.Join(root, name)
	pkgs := filepath.Join(dir, "usr", "lib", "python3", "dist-packages")
	if !fileExists(filepath.Join(pkgs, "virt", "firmware", "vars.py")) {
		return nil, fmt.Errorf("cached %s in %s is incomplete: remove it to fetch it again", virtFirmwarePackage, dir)
	}
	return &virtFirmware{pythonPath: pkgs + string(os.PathListSeparator) + filepath.Join(dir, "shim")}, nil
}

var toolVersionDir = regexp.MustCompile(`^[a-z0-9.+-]+_[A-Za-z0-9.+~:-]+$`)

func newestCachedTool(root, pkg string) string {
	entries, _ := os.ReadDir(root)
	var names []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), pkg+"_") && toolVersionDir.MatchString(e.Name()) && !strings.HasSuffix(e.Name(), ".partial") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return names[len(names)-1]
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
