package compare_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

// kernel is the stock kernel with in-tree IPE.
const kernel = "debian-6.12"

const (
	guestDir      = "/opt/compare"
	guestRunner   = guestDir + "/guestrun"
	guestManifest = guestDir + "/manifest.json"
)

// guest collects what one guest run needs.
type guest struct {
	t        *testing.T
	work     string
	certPath string
	keyPath  string
	cert     *x509.Certificate
	key      crypto.Signer
	manifest scenario.Manifest
	opts     []vmtest.Option
	// payloads maps each payload name to its host file.
	payloads map[string]string
	// disks counts the virtio disks attached so far.
	disks int
}

// newGuest makes a signing certificate (enrolled in the guest's UEFI db,
// so in-tree IPE trusts what it signs), builds the runner and adds the
// payloads.
func newGuest(t *testing.T) *guest {
	t.Helper()
	certPath, keyPath := vmtest.TestCertificate(t, "bpfipe compare suite")
	vmtest.Require(t, kernel, vmtest.WithUEFICert(certPath))
	cert, key, err := kernelipe.ReadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{t: t, work: t.TempDir(), certPath: certPath, keyPath: keyPath, cert: cert, key: key, payloads: map[string]string{}}
	g.manifest = scenario.Manifest{
		Images:   map[string]scenario.ImageDisks{},
		FSVerity: map[string]scenario.FSVerityDiskInfo{},
		Cert:     guestDir + "/cert.pem",
		Key:      guestDir + "/key.pem",
	}
	g.opts = []vmtest.Option{
		vmtest.WithUEFICert(certPath),
		vmtest.WithAdd(certPath, g.manifest.Cert),
		vmtest.WithAdd(keyPath, g.manifest.Key),
		vmtest.WithAdd(buildRunner(t, g.work), guestRunner),
	}
	for name, host := range scenario.Payloads {
		g.payloads[name] = host
	}
	g.addModule()
	for name, host := range g.payloads {
		g.opts = append(g.opts, vmtest.WithAdd(host, scenario.GuestPayloadDir+"/"+name))
	}
	// The dynamically linked payload needs its loader and libc where its
	// ELF header and the loader's default path look.
	for guestPath, host := range map[string]string{
		"/lib64/ld-linux-x86-64.so.2":     "/lib64/ld-linux-x86-64.so.2",
		"/lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
	} {
		real, err := filepath.EvalSymlinks(host)
		if err != nil {
			t.Skipf("needs the host's glibc for the dynamic payload: %v", err)
		}
		g.opts = append(g.opts, vmtest.WithAdd(real, guestPath))
	}
	return g
}

// buildRunner builds the guest runner statically.
func buildRunner(t *testing.T, dir string) string {
	t.Helper()
	src, err := vm.SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	gocmd, err := vm.GoCommand()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "guestrun")
	cmd := exec.Command(gocmd, "build", "-trimpath", "-o", out, "./test/compare/guestrun")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build guest runner: %v\n%s", err, msg)
	}
	return out
}

// addImages builds every dm-verity image and fs-verity disk the scenarios
// declare, attaches them and records them in the manifest.
func (g *guest) addImages(scenarios []*scenario.Scenario) {
	g.t.Helper()
	for _, s := range scenarios {
		for _, img := range s.Images {
			if _, done := g.manifest.Images[img.Name]; !done {
				g.manifest.Images[img.Name] = g.buildImage(img)
			}
		}
		for _, d := range s.FSVerity {
			if _, done := g.manifest.FSVerity[d.Name]; !done {
				g.manifest.FSVerity[d.Name] = g.buildFSVerity(d)
			}
		}
	}
}

// attach adds a disk and returns its name in the guest.
func (g *guest) attach(path string, readOnly bool) string {
	g.opts = append(g.opts, vmtest.WithDisk(path, readOnly))
	g.disks++
	return "/dev/vd" + string(rune('a'+g.disks-1))
}

// payload reads a payload's bytes from the host.
func (g *guest) payload(name string) []byte {
	g.t.Helper()
	host, ok := g.payloads[name]
	if !ok {
		g.t.Fatalf("no host file for payload %q", name)
	}
	data, err := os.ReadFile(host)
	if err != nil {
		g.t.Fatal(err)
	}
	return data
}

var verityField = regexp.MustCompile(`(?m)^(Root hash|Salt|Data blocks|Hash algorithm):\s+(\S+)$`)

func (g *guest) buildImage(img scenario.Image) scenario.ImageDisks {
	t := g.t
	t.Helper()
	requireTools(t, "to build dm-verity images (packages e2fsprogs, cryptsetup-bin)", "mkfs.ext4", "veritysetup")
	root := filepath.Join(g.work, "img-"+img.Name)
	for _, f := range img.Files {
		data := g.payload(f.From)
		dst := filepath.Join(root, f.To)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, hash := root+".ext4", root+".verity"
	run := func(name string, args ...string) string { return hostCommand(t, name, args...) }
	run("mkfs.ext4", "-q", "-F", "-b", "4096", "-L", img.Name, "-d", root, data, "16M")
	out := run("veritysetup", "format", "--data-block-size=4096", "--hash-block-size=4096", data, hash)
	fields := map[string]string{}
	for _, m := range verityField.FindAllStringSubmatch(out, -1) {
		fields[m[1]] = m[2]
	}
	d := scenario.ImageDisks{RootHash: fields["Root hash"], Salt: fields["Salt"], Algorithm: fields["Hash algorithm"]}
	if _, err := fmt.Sscan(fields["Data blocks"], &d.DataBlocks); err != nil || d.RootHash == "" || d.Algorithm == "" {
		t.Fatalf("read veritysetup output: %v\n%s", err, out)
	}
	if d.Salt == "" {
		d.Salt = "-"
	}
	d.DataDev, d.HashDev = g.attach(data, true), g.attach(hash, true)
	if img.Signed {
		sig := filepath.Join(g.work, img.Name+".roothash.p7s")
		if err := os.WriteFile(sig, g.signDetached([]byte(d.RootHash)), 0o644); err != nil {
			t.Fatal(err)
		}
		d.Signature = guestDir + "/sig/" + img.Name + ".p7s"
		g.opts = append(g.opts, vmtest.WithAdd(sig, d.Signature))
	}
	return d
}

// signDetached makes the root hash signature dm-verity checks: PKCS#7 over
// the root hash exactly as the table spells it, content detached.
func (g *guest) signDetached(content []byte) []byte {
	g.t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		g.t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if _, ok := g.key.Public().(*rsa.PublicKey); ok {
		sd.SetEncryptionAlgorithm(pkcs7.OIDEncryptionAlgorithmRSA)
	}
	if err := sd.SignWithoutAttr(g.cert, g.key, pkcs7.SignerInfoConfig{}); err != nil {
		g.t.Fatal(err)
	}
	sd.Detach()
	blob, err := sd.Finish()
	if err != nil {
		g.t.Fatal(err)
	}
	return blob
}

// run boots the guest with argv and returns the exit status and output.
func (g *guest) run(argv ...string) (int, string) {
	g.t.Helper()
	manifest, err := json.Marshal(g.manifest)
	if err != nil {
		g.t.Fatal(err)
	}
	manifestPath := filepath.Join(g.work, "manifest.json")
	if err := os.WriteFile(manifestPath, manifest, 0o644); err != nil {
		g.t.Fatal(err)
	}
	opts := append(g.opts, vmtest.WithAdd(manifestPath, guestManifest), vmtest.WithTimeout(vmTimeout))
	cfg := vmtest.Config(kernel, opts...)
	var out bytes.Buffer
	cfg.Stdout = &out
	status, err := vm.Run(context.Background(), cfg, argv)
	if err != nil {
		g.t.Fatalf("guest: %v\noutput:\n%s", err, out.String())
	}
	return status, out.String()
}

// prefixedLines returns the JSON after prefix on each line that starts
// with it, and the other lines.
func prefixedLines(output, prefix string) (found []string, rest []string) {
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, prefix); i >= 0 {
			found = append(found, line[i+len(prefix):])
		} else {
			rest = append(rest, line)
		}
	}
	return found, rest
}
