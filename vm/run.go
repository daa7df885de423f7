package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/vm/internal/guestspec"
)

// Defaults for the fields of Config left zero.
const (
	DefaultMem     = "512M"
	DefaultCPUs    = 1
	DefaultTimeout = 300 * time.Second
)

// Config describes one guest run.
type Config struct {
	// Kernel names a stock kernel (see KernelNames). KernelImage, if set,
	// boots that bzImage instead, with modules from ModulesDir.
	Kernel      string
	KernelImage string
	ModulesDir  string

	Adds  []Add
	Disks []Disk
	// Verity devices are opened and mounted by init before the command
	// runs; their images follow Disks.
	Verity []Verity
	// UEFICert boots through OVMF with this certificate in the UEFI db
	// (Secure Boot off), which puts it in the kernel's .platform keyring.
	UEFICert string

	Mem  string // qemu -m syntax; DefaultMem if empty
	CPUs int    // DefaultCPUs if zero
	// Timeout bounds the whole boot and run. Zero means DefaultTimeout for
	// commands and no limit for interactive shells.
	Timeout time.Duration
	// Append adds to the kernel command line.
	Append string
	// Env adds KEY=VALUE entries to the command's environment.
	Env []string
	// Dir is the command's working directory in the guest; /root if empty.
	Dir string
	// Modules are loaded in addition to the usual set; each must exist.
	Modules []string
	// NoBpfipe leaves the bpfipe binary out of the guest, saving its build.
	NoBpfipe bool
	// Interactive attaches Stdin and runs the command on a terminal.
	Interactive bool
	Stdin       *os.File

	// Verbose shows kernel messages (on Stderr).
	Verbose bool
	// Stdout receives the command's output (stdout and stderr merged);
	// nil discards it.
	Stdout io.Writer
	// Stderr receives kernel messages when Verbose; nil means os.Stderr.
	Stderr io.Writer
	// Progress receives notes about long steps (downloads, builds); nil
	// keeps quiet.
	Progress io.Writer

	// CacheDir defaults to DefaultCacheDir.
	CacheDir string
}

// tailLines is how many console and output lines an error report carries.
const tailLines = 25

// Run boots a guest, runs argv in it as root and returns the command's exit
// status. A non-nil error means the runner or the guest failed; see the
// sentinels and ExitStatus.
func Run(ctx context.Context, cfg Config, argv []string) (int, error) {
	if len(argv) == 0 {
		return 0, errors.New("run guest: no command")
	}
	if cfg.Mem == "" {
		cfg.Mem = DefaultMem
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.Timeout == 0 && !cfg.Interactive {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	p := progress{cfg.Progress}
	qemu, err := lookTool("qemu-system-x86_64", "qemu-system-x86")
	if err != nil {
		return 0, err
	}
	if cfg.CacheDir == "" {
		if cfg.CacheDir, err = DefaultCacheDir(); err != nil {
			return 0, err
		}
	}
	for _, d := range cfg.Disks {
		if _, err := os.Stat(d.Path); err != nil {
			return 0, fmt.Errorf("check disk: %w", err)
		}
	}
	for _, a := range cfg.Adds {
		if _, err := os.Lstat(a.Src); err != nil {
			return 0, fmt.Errorf("check added file: %w", err)
		}
	}
	verity, extraDisks, extraAdds, err := verityDisks(cfg.Verity)
	if err != nil {
		return 0, err
	}
	disks := append(append([]Disk(nil), cfg.Disks...), extraDisks...)
	adds := append(append([]Add(nil), cfg.Adds...), extraAdds...)

	began := time.Now()
	prepared, err := prepare(ctx, cfg, p)
	if err != nil {
		return 0, err
	}
	work, err := os.MkdirTemp("", "bpfipe-vm-")
	if err != nil {
		return 0, fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(work)

	spec := &guestspec.Spec{Argv: argv, Env: cfg.Env, Dir: cfg.Dir, Nonce: newNonce(), Interactive: cfg.Interactive,
		Disks: len(disks), Verity: verity}
	if cfg.Interactive {
		spec.Term = os.Getenv("TERM")
		if cfg.Stdin != nil {
			if ws, err := unix.IoctlGetWinsize(int(cfg.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
				spec.Rows, spec.Cols = ws.Row, ws.Col
			}
		}
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	if err := assembleInitramfs(initrd, prepared.base, spec, prepared.bpfipe, adds); err != nil {
		return 0, err
	}
	m := machine{
		kernelImage: prepared.kernel.Image,
		initrd:      initrd,
		cmdline:     kernelCmdline(cfg.Verbose, cfg.Append),
		mem:         cfg.Mem,
		cpus:        cfg.CPUs,
		disks:       disks,
		interactive: cfg.Interactive,
	}
	if prepared.varstore != "" {
		// OVMF writes to its varstore; each guest gets its own copy.
		m.varstore = filepath.Join(work, "vars.fd")
		if err := copyFile(prepared.varstore, m.varstore); err != nil {
			return 0, fmt.Errorf("copy UEFI varstore: %w", err)
		}
	}
	if cfg.Verbose {
		fmt.Fprintf(cfg.Stderr, "bpfipe-vm: kernel %s %s; guest prepared in %.2fs\nbpfipe-vm: %s %s\n",
			prepared.kernel.Name, prepared.kernel.Release, time.Since(began).Seconds(), qemu, strings.Join(qemuArgs(m), " "))
	}
	booted := time.Now()
	status, err := boot(ctx, cfg, qemu, m, spec.Nonce)
	if cfg.Verbose {
		fmt.Fprintf(cfg.Stderr, "bpfipe-vm: guest ran for %.2fs\n", time.Since(booted).Seconds())
	}
	return status, err
}

// prepared holds what a run needs besides its own files.
type prepared struct {
	kernel   *Kernel
	base     string // base initramfs
	bpfipe   string // static bpfipe binary, or empty
	varstore string // enrolled UEFI varstore, or empty
}

// prepare fetches the kernel, builds the binaries, the base initramfs and the
// varstore, concurrently where they do not depend on each other.
func prepare(ctx context.Context, cfg Config, p progress) (*prepared, error) {
	busybox, err := staticBusybox()
	if err != nil {
		return nil, err
	}
	sourceDir, err := SourceDir()
	if err != nil {
		return nil, err
	}
	binDir := filepath.Join(cfg.CacheDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, fmt.Errorf("create cache: %w", err)
	}
	var (
		out                         prepared
		wg                          sync.WaitGroup
		initErr, bpfipeErr, uefiErr error
		initPath                    = filepath.Join(binDir, "guestinit")
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		initErr = goBuild(ctx, sourceDir, initPath, []string{"build", "-trimpath", "-ldflags=-s -w"}, modulePath+"/vm/internal/guestinit", p)
	}()
	if !cfg.NoBpfipe {
		out.bpfipe = filepath.Join(binDir, "bpfipe")
		wg.Add(1)
		go func() {
			defer wg.Done()
			bpfipeErr = goBuild(ctx, sourceDir, out.bpfipe, []string{"build", "-trimpath"}, modulePath+"/cmd/bpfipe", p)
		}()
	}
	if cfg.UEFICert != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.varstore, uefiErr = enrolledVarstore(ctx, cfg.CacheDir, cfg.UEFICert, p)
		}()
	}
	kernel, kernelErr := runKernel(ctx, cfg, p)
	var modules []loadedModule
	if kernelErr == nil && kernel.ModulesDir != "" {
		modules, kernelErr = kernelModules(kernel, cfg.Modules)
	}
	wg.Wait()
	for _, err := range []error{kernelErr, initErr, bpfipeErr, uefiErr} {
		if err != nil {
			return nil, err
		}
	}
	out.kernel = kernel
	if out.base, err = baseInitramfs(ctx, cfg.CacheDir, initPath, busybox, modules); err != nil {
		return nil, err
	}
	return &out, nil
}

func runKernel(ctx context.Context, cfg Config, p progress) (*Kernel, error) {
	if cfg.KernelImage != "" {
		return customKernel(cfg.KernelImage, cfg.ModulesDir)
	}
	if cfg.Kernel == "" {
		return nil, fmt.Errorf("run guest: no kernel given (known: %s)", strings.Join(KernelNames(), ", "))
	}
	return ensureKernel(ctx, cfg.CacheDir, cfg.Kernel, p)
}

// kernelModules picks and orders the modules every guest loads plus extra.
func kernelModules(k *Kernel, extra []string) ([]loadedModule, error) {
	tree, err := indexModules(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	required := map[string]bool{}
	for _, m := range extra {
		required[moduleName(m)] = true
	}
	return tree.resolve(append(append([]string{}, baseModules...), extra...), required)
}

func newNonce() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// boot runs qemu and turns what it printed into an exit status or an error.
func boot(ctx context.Context, cfg Config, qemu string, m machine, nonce string) (int, error) {
	runCtx := ctx
	cancel := func() {}
	if cfg.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	}
	defer cancel()

	consoleRead, consoleWrite, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("create console pipe: %w", err)
	}
	defer consoleRead.Close()
	console := newLineTail(tailLines)
	var consoleDone sync.WaitGroup
	consoleDone.Add(1)
	go func() {
		defer consoleDone.Done()
		var dst io.Writer = console
		if cfg.Verbose {
			dst = io.MultiWriter(console, &crStripper{w: cfg.Stderr})
		}
		io.Copy(dst, consoleRead)
	}()

	output := newOutputFilter(cfg.Stdout, nonce, tailLines)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(runCtx, qemu, qemuArgs(m)...)
	cmd.Stdout = output
	cmd.Stderr = &stderr
	if cfg.Interactive && cfg.Stdin != nil {
		cmd.Stdin = cfg.Stdin
	}
	cmd.ExtraFiles = []*os.File{consoleWrite} // becomes fd 3: consoleFD
	cmd.WaitDelay = 5 * time.Second
	started := time.Now()
	err = cmd.Start()
	consoleWrite.Close()
	if err != nil {
		return 0, fmt.Errorf("start qemu: %w", err)
	}
	waitErr := cmd.Wait()
	consoleDone.Wait()
	output.flush()

	kind, value, sawStart := output.result()
	switch kind {
	case "exit":
		status, err := guestspec.ParseExitStatus(value)
		if err != nil {
			return 0, &GuestError{Err: ErrNoStatus, Detail: err.Error(), Console: console.Lines(), Output: output.tail.Lines()}
		}
		return status, nil
	case "fail":
		return 0, &GuestError{Err: ErrInit, Detail: value, Console: console.Lines(), Output: output.tail.Lines()}
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("run guest: %w", ctx.Err())
	}
	if runCtx.Err() != nil {
		return 0, &GuestError{Err: ErrTimeout, Detail: fmt.Sprintf("no exit status after %s", cfg.Timeout),
			Console: console.Lines(), Output: output.tail.Lines()}
	}
	if line := console.panicked(); line != "" {
		return 0, &GuestError{Err: ErrPanic, Detail: line, Console: console.Lines(), Output: output.tail.Lines()}
	}
	if qemuSaid := strings.TrimSpace(stderr.String()); waitErr != nil && !sawStart && len(console.Lines()) == 0 && qemuSaid != "" {
		// qemu refused the configuration (a locked or unreadable disk, a bad
		// option in Append...): the guest never ran.
		return 0, fmt.Errorf("start guest: qemu: %s", lastLines(qemuSaid, 5))
	}
	detail := describeQemuExit(waitErr, stderr.String(), sawStart, time.Since(started))
	return 0, &GuestError{Err: ErrNoStatus, Detail: detail, Console: console.Lines(), Output: output.tail.Lines()}
}

func describeQemuExit(waitErr error, stderr string, sawStart bool, elapsed time.Duration) string {
	var parts []string
	if waitErr != nil {
		parts = append(parts, "qemu: "+waitErr.Error())
	} else {
		parts = append(parts, "qemu exited normally (guest rebooted or powered off)")
	}
	if !sawStart {
		parts = append(parts, "init never started the command")
	}
	parts = append(parts, fmt.Sprintf("after %.1fs", elapsed.Seconds()))
	if s := strings.TrimSpace(stderr); s != "" {
		parts = append(parts, "qemu said: "+lastLines(s, 5))
	}
	return strings.Join(parts, "; ")
}

// crStripper drops carriage returns, which the kernel's serial console adds
// to every line.
type crStripper struct{ w io.Writer }

func (c *crStripper) Write(p []byte) (int, error) {
	if _, err := c.w.Write(bytes.ReplaceAll(p, []byte("\r"), nil)); err != nil {
		return 0, err
	}
	return len(p), nil
}
