package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bpfipe/bpfipe/vm"
)

// Params say how much a guest measures.
type Params struct {
	Rounds       int
	ExecIters    int // fork+execs of the static program per variant and round
	DynamicIters int // of the dynamic one
	MmapIters    int // mmaps, and mprotects, per variant and round
	Sizes        []int
	// Fallbacks are the sizes an enforcer is tried at, largest first,
	// when a size of Sizes does not load into it: the largest it takes is
	// measured as well.
	Fallbacks  []int
	Updates    int // timed updates per size
	EventExecs int // execs of the event throughput loop
	// Icount times in instructions rather than wall-clock time (see
	// IcountArgs): the numbers stop depending on the host's load, and the
	// guest runs about three times slower.
	Icount  bool
	Timeout time.Duration
}

// Sizes are the policy sizes every run measures, in rules.
var Sizes = []int{1, 1000, 100000}

// Fallbacks: about 3.4 MB of policy text, under the 4 MiB a BPF map value
// (bpfipe's pinned state keeps the text) or a kmalloc can hold; and about
// 57 KB signed, under the 64 KiB the kernel's ASN.1 decoder takes, which
// bounds what in-tree IPE can verify.
var Fallbacks = []int{30000, 500}

// FullParams is what `make bench` measures, in instructions: about a
// quarter of an hour here for both kernels side by side, 6.12 (with IPE)
// the longer. Eight rounds, so that each of 6.12's seven variants takes
// every position; loops of about 0.2 s of guest time each, long enough
// that the guest's own background work (a timer, a kworker) adds a small
// fraction to any one of them: with 200 execs a round it swung the exec
// ratios by up to 10%.
func FullParams() Params {
	return Params{Rounds: 8, ExecIters: 1000, DynamicIters: 200, MmapIters: 15000, Sizes: Sizes, Fallbacks: Fallbacks,
		Updates: 3, EventExecs: 2000, Icount: true, Timeout: 30 * time.Minute}
}

// SmokeParams measures every variant briefly, for CI: the numbers mean
// little, the tables are complete. Sizes an enforcer refuses are reported
// but not replaced by a fallback size.
func SmokeParams() Params {
	return Params{Rounds: 2, ExecIters: 5, DynamicIters: 2, MmapIters: 50, Sizes: Sizes,
		Updates: 1, EventExecs: 40, Timeout: 12 * time.Minute}
}

// Guest paths. The programs sit in the initramfs, which every benchmark
// policy trusts (boot_verified); the loader and libc of the dynamic one
// where its ELF header and the loader's default path look.
const (
	guestDir     = "/opt/bench"
	guestProgram = guestDir + "/guest"
	guestStatic  = guestDir + "/exit0"
	guestDynamic = guestDir + "/true"
	guestCert    = guestDir + "/cert.pem"
	guestKey     = guestDir + "/key.pem"
)

var dynamicLibraries = []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"}

// hostDynamic is the dynamically linked program the guest runs.
const hostDynamic = "/bin/true"

// Run boots kernel (a name vm knows, such as debian-6.12) with the guest
// program, measures with p and returns the summary and the guest's whole
// output. The guest enrolls a fresh certificate in the UEFI db, so on a
// kernel with in-tree IPE the same policies are measured under IPE too.
func Run(ctx context.Context, kernel string, p Params, progress io.Writer) (*Result, []byte, error) {
	if p.Icount {
		if err := useIcount(); err != nil {
			return nil, nil, fmt.Errorf("time in instructions: %w", err)
		}
	}
	work, err := os.MkdirTemp("", "bpfipe-bench-")
	if err != nil {
		return nil, nil, fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(work)
	cfg, argv, err := prepare(ctx, work, kernel, p)
	if err != nil {
		return nil, nil, err
	}
	var output bytes.Buffer
	cfg.Stdout = &output
	cfg.Progress = progress
	status, runErr := vm.Run(ctx, cfg, argv)
	records, other, parseErr := ParseOutput(bytes.NewReader(output.Bytes()))
	if parseErr != nil {
		return nil, output.Bytes(), parseErr
	}
	res, sumErr := Summarize(kernel, records)
	if res != nil {
		res.Icount = p.Icount
	}
	switch {
	case runErr != nil:
		return res, output.Bytes(), fmt.Errorf("run benchmark guest on %s: %w", kernel, runErr)
	case sumErr != nil:
		return nil, output.Bytes(), fmt.Errorf("%w\nguest output:\n%s", sumErr, strings.Join(other, "\n"))
	case status != 0:
		return res, output.Bytes(), fmt.Errorf("benchmark guest on %s exited with status %d:\n%s", kernel, status, strings.Join(other, "\n"))
	}
	return res, output.Bytes(), nil
}

// prepare builds the guest program and gathers what the guest needs.
func prepare(ctx context.Context, work, kernel string, p Params) (vm.Config, []string, error) {
	program := filepath.Join(work, "guest")
	if err := buildGuest(ctx, program); err != nil {
		return vm.Config{}, nil, err
	}
	static := filepath.Join(work, "exit0")
	if err := os.WriteFile(static, TinyELF(0), 0o755); err != nil {
		return vm.Config{}, nil, err
	}
	certPath, keyPath := filepath.Join(work, "cert.pem"), filepath.Join(work, "key.pem")
	if err := writeCertificate(certPath, keyPath); err != nil {
		return vm.Config{}, nil, err
	}
	adds := []vm.Add{
		{Src: program, Dst: guestProgram},
		{Src: static, Dst: guestStatic},
		{Src: certPath, Dst: guestCert},
		{Src: keyPath, Dst: guestKey},
	}
	// Files the guest executes or maps, by guest path. The initramfs would
	// carry a symlink to a file it does not hold: resolve.
	executables := map[string]string{guestStatic: static, guestProgram: program, "/bin/busybox": ""}
	for guestPath, hostPath := range map[string]string{guestDynamic: hostDynamic, dynamicLibraries[0]: dynamicLibraries[0], dynamicLibraries[1]: dynamicLibraries[1]} {
		resolved, err := filepath.EvalSymlinks(hostPath)
		if err != nil {
			return vm.Config{}, nil, fmt.Errorf("the guest needs the host's %s (a dynamic program and glibc): %w", hostPath, err)
		}
		adds = append(adds, vm.Add{Src: resolved, Dst: guestPath})
		executables[guestPath] = resolved
	}
	// The guest's shell: the initramfs carries the host's.
	var err error
	if executables["/bin/busybox"], err = filepath.EvalSymlinks("/bin/busybox"); err != nil {
		return vm.Config{}, nil, fmt.Errorf("find the busybox the guest runs: %w", err)
	}
	fap, err := addFapolicyd(ctx, work, executables, &adds)
	if err != nil {
		return vm.Config{}, nil, err
	}
	argv := []string{guestProgram,
		"--static", guestStatic, "--dynamic", guestDynamic,
		"--cert", guestCert, "--key", guestKey,
		"--rounds", strconv.Itoa(p.Rounds),
		"--exec-iters", strconv.Itoa(p.ExecIters),
		"--dynamic-iters", strconv.Itoa(p.DynamicIters),
		"--mmap-iters", strconv.Itoa(p.MmapIters),
		"--sizes", FormatSizes(p.Sizes),
		"--fallback", FormatSizes(p.Fallbacks),
		"--updates", strconv.Itoa(p.Updates),
		"--event-execs", strconv.Itoa(p.EventExecs),
	}
	argv = append(argv, fap...)
	cfg := vm.Config{
		Kernel:   kernel,
		Adds:     adds,
		UEFICert: certPath,
		// A 100,000-rule policy is about 31 MB of map plus the parsed
		// policy in the guest's Go heap, and in-tree IPE's copy.
		Mem:      "1G",
		Timeout:  p.Timeout,
		NoBpfipe: true,
		Stderr:   io.Discard,
	}
	return cfg, argv, nil
}

func buildGuest(ctx context.Context, out string) error {
	src, err := vm.SourceDir()
	if err != nil {
		return err
	}
	gocmd, err := vm.GoCommand()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, gocmd, "build", "-trimpath", "-o", out, "./test/bench/guest")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build benchmark guest: %w\n%s", err, msg)
	}
	return nil
}

// writeCertificate makes a self-signed RSA certificate and its key, which
// the guest's UEFI db, and so its .platform keyring, will trust.
func writeCertificate(certPath, keyPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return fmt.Errorf("generate serial: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "bpfipe benchmarks"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}
