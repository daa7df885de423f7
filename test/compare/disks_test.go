package compare_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/bpfipe/bpfipe/test/compare/scenario"
	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

// testModule is the module finit_module and init_module load: it has no
// dependencies, nothing in the guest loads it, and loading it only
// registers a character set table (docs/kernel-reads.md).
const testModule = "nls_ascii"

// requireTools skips t, or fails it when CI=true, if a host tool is
// missing.
func requireTools(t *testing.T, why string, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("needs %s %s (failing because CI=true): %v", tool, why, err)
			}
			t.Skipf("needs %s %s: %v", tool, why, err)
		}
	}
}

// hostCommand runs a host tool and returns its output, failing t if it
// fails.
func hostCommand(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// buildFSVerity makes the ext4 disk of d with the verity feature, computes
// the fs-verity digest of each file to get fs-verity and signs the signed
// ones with the test certificate, and attaches the disk writable: the
// guest enables fs-verity on it.
func (g *guest) buildFSVerity(d scenario.FSVerityDisk) scenario.FSVerityDiskInfo {
	t := g.t
	t.Helper()
	requireTools(t, "to build fs-verity disks (packages e2fsprogs, fsverity)", "mkfs.ext4", "fsverity")
	root := filepath.Join(g.work, "fsverity-"+d.Name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	info := scenario.FSVerityDiskInfo{Digests: map[string]string{}, Signatures: map[string]string{}}
	for _, f := range d.Files {
		p := filepath.Join(root, f.To)
		if err := os.WriteFile(p, append(g.payload(f.From), f.Tail...), 0o755); err != nil {
			t.Fatal(err)
		}
		if f.Verity == scenario.VerityNone {
			continue
		}
		// The guest enables fs-verity with these parameters.
		out := strings.Fields(hostCommand(t, "fsverity", "digest", "--hash-alg=sha256", "--block-size=4096", p))
		if len(out) == 0 || !strings.HasPrefix(out[0], "sha256:") {
			t.Fatalf("fsverity digest printed %q", out)
		}
		info.Digests[f.To] = out[0]
		if f.Verity == scenario.VeritySigned {
			sig := filepath.Join(g.work, "fsverity-"+d.Name+"-"+f.To+".sig")
			hostCommand(t, "fsverity", "sign", "--hash-alg=sha256", "--block-size=4096", "--key="+g.keyPath, "--cert="+g.certPath, p, sig)
			info.Signatures[f.To] = guestDir + "/sig/fsverity-" + d.Name + "-" + f.To + ".sig"
			g.opts = append(g.opts, vmtest.WithAdd(sig, info.Signatures[f.To]))
			g.addFSVerityCert()
		}
	}
	img := filepath.Join(g.work, "fsverity-"+d.Name+".ext4")
	hostCommand(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity", "-L", d.Name, "-d", root, img, "32M")
	info.Dev = g.attach(img, false)
	return info
}

// addFSVerityCert adds the test certificate in DER, which the guest puts
// in the .fs-verity keyring.
func (g *guest) addFSVerityCert() {
	if g.manifest.FSVerityCert != "" {
		return
	}
	data, err := os.ReadFile(g.certPath)
	if err != nil {
		g.t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		g.t.Fatal("the test certificate is not a PEM certificate")
	}
	der := filepath.Join(g.work, "cert.der")
	if err := os.WriteFile(der, block.Bytes, 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.manifest.FSVerityCert = guestDir + "/cert.der"
	g.opts = append(g.opts, vmtest.WithAdd(der, g.manifest.FSVerityCert))
}

// addModule takes testModule from the guest kernel's package: the file as
// finit_module gets it, and its ELF image for init_module.
func (g *guest) addModule() {
	t := g.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := vm.EnsureKernel(ctx, kernel)
	if err != nil {
		t.Fatalf("get kernel %s: %v", kernel, err)
	}
	shipped, err := findModule(k.ModulesDir, testModule)
	if err != nil {
		t.Fatal(err)
	}
	image := shipped
	finit := shipped
	if strings.HasSuffix(shipped, ".xz") {
		image = filepath.Join(g.work, testModule+".ko")
		if err := decompressXZ(shipped, image); err != nil {
			t.Fatal(err)
		}
		// The kernel reads a compressed module itself only with
		// CONFIG_MODULE_DECOMPRESS; otherwise it gets the image.
		config, err := kernelConfig(filepath.Join(filepath.Dir(k.Image), "config-"+k.Release))
		if err != nil {
			t.Fatal(err)
		}
		if config["CONFIG_MODULE_DECOMPRESS"] != "y" {
			finit = image
		}
	}
	g.payloads[scenario.PayloadModule] = finit
	g.payloads[scenario.PayloadModuleImage] = image
	g.manifest.Module = scenario.ModuleInfo{Name: testModule}
}

// findModule finds name.ko or name.ko.xz under dir.
func findModule(dir, name string) (string, error) {
	var found string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if b := d.Name(); !d.IsDir() && (b == name+".ko" || b == name+".ko.xz") {
			found = p
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("find module %s: %w", name, err)
	}
	if found == "" {
		return "", fmt.Errorf("find module %s: not under %s", name, dir)
	}
	return found, nil
}

func decompressXZ(src, dst string) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read module: %w", err)
	}
	r, err := xz.NewReader(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("decompress %s: %w", filepath.Base(src), err)
	}
	image, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("decompress %s: %w", filepath.Base(src), err)
	}
	if !bytes.HasPrefix(image, []byte("\x7fELF")) {
		return fmt.Errorf("decompress %s: not an ELF image", filepath.Base(src))
	}
	if err := os.WriteFile(dst, image, 0o644); err != nil {
		return fmt.Errorf("write module image: %w", err)
	}
	return nil
}

// kernelConfig reads a kernel config file; options not set are absent.
func kernelConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel config: %w", err)
	}
	defer f.Close()
	config := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			config[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kernel config: %w", err)
	}
	return config, nil
}
