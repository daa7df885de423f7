// Command demo is `make demo`: bpfipe enforcing a policy on a stock
// Debian kernel under qemu, told as a terminal transcript.
//
// On the host it builds a dm-verity image holding a static hello program
// (mkfs.ext4 -d, veritysetup format), then boots the kernel with the image
// open as dm-verity device "trusted" and plays story.sh in the guest:
// bpfipe devices, a policy trusting the image's root hash and the boot
// filesystem, load, an allowed and a denied exec, the access record,
// status, permissive mode, unload. The story checks every step, so a
// non-zero exit means bpfipe did not behave as told.
//
//	go run ./test/demo [--kernel debian-6.12|debian-6.1] [--dir DIR] [--verbose]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/vm"
)

// Where the story and the policy template go in the guest.
const guestDemoDir = "/opt/bpfipe-demo"

// deviceName is the dm-verity device the guest opens; the story and the
// policy's narration use it.
const deviceName = "trusted"

// guestTimeout bounds the boot and the story: a cold 6.12 guest under
// software emulation takes under a minute.
const guestTimeout = 5 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	status := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(status)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	kernel := fs.String("kernel", "debian-6.12", "stock kernel to boot: "+strings.Join(vm.KernelNames(), ", "))
	dir := fs.String("dir", "", "where to build the image (default: the runner's cache, demo/)")
	verbose := fs.Bool("verbose", false, "show the guest kernel's messages on stderr")
	if err := fs.Parse(args); err != nil {
		return vm.ExitRunnerError
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "demo: unexpected arguments %q\n", fs.Args())
		return vm.ExitRunnerError
	}
	began := time.Now()
	sourceDir, err := vm.SourceDir()
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return vm.ExitRunnerError
	}
	if *dir == "" {
		cache, err := vm.DefaultCacheDir()
		if err != nil {
			fmt.Fprintf(stderr, "demo: %v\n", err)
			return vm.ExitRunnerError
		}
		*dir = filepath.Join(cache, "demo")
	}

	fmt.Fprintf(stdout, "bpfipe demo on %s: IPE policies enforced by BPF LSM programs on a stock kernel.\n", *kernel)
	fmt.Fprintf(stdout, "\nOn the host: a static program on an ext4 image, and the image's dm-verity hash tree.\n")
	img, err := buildImage(ctx, sourceDir, *dir, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "demo: build the image: %v\n", err)
		return vm.ExitRunnerError
	}

	g := guest{kernel: *kernel, image: img, sourceDir: sourceDir}
	fmt.Fprintf(stdout, "\nBoot %s under qemu with the image as dm-verity device %q, and play the story in it:\n", *kernel, deviceName)
	fmt.Fprintf(stdout, "host$ %s\n", g.commandLine())
	cfg := g.config()
	cfg.Stdout = stdout
	cfg.Stderr = stderr
	cfg.Verbose = *verbose
	// Downloads and builds on a first run take a while; say what is going on.
	cfg.Progress = stderr
	status, err := vm.Run(ctx, cfg, g.argv())
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return vm.ExitStatus(err)
	case status != 0:
		fmt.Fprintf(stderr, "demo: the story stopped with status %d: bpfipe did not behave as the demo says\n", status)
		return 1
	}
	printNext(stdout, g)
	fmt.Fprintf(stdout, "\n(demo finished in %.0fs)\n", time.Since(began).Seconds())
	return 0
}

// guest is one run of the story.
type guest struct {
	kernel    string
	image     image
	sourceDir string
}

func (g guest) story() string  { return filepath.Join(g.sourceDir, "test", "demo", "story.sh") }
func (g guest) policy() string { return filepath.Join(g.sourceDir, "examples", "demo.pol") }

func (g guest) argv() []string { return []string{"sh", path.Join(guestDemoDir, "story.sh")} }

func (g guest) env() []string {
	return []string{"DEMO_ROOT_HASH=" + g.image.RootHash}
}

func (g guest) config() vm.Config {
	return vm.Config{
		Kernel: g.kernel,
		// The root hash comes from the sidecar buildImage wrote, as it
		// would for bpfipe-vm --verity NAME=DATA:HASH.
		Verity: []vm.Verity{{Name: deviceName, Data: g.image.Data, Hash: g.image.Hash}},
		Adds: []vm.Add{
			{Src: g.story(), Dst: path.Join(guestDemoDir, "story.sh")},
			{Src: g.policy(), Dst: path.Join(guestDemoDir, "demo.pol")},
		},
		Env:     g.env(),
		Timeout: guestTimeout,
	}
}

// commandLine is the bpfipe-vm invocation that does what config does.
func (g guest) commandLine() string {
	words := []string{"bin/bpfipe-vm", "run", "--kernel", g.kernel,
		"--verity", deviceName + "=" + g.image.Data + ":" + g.image.Hash,
		"--add", g.relative(g.story()) + ":" + path.Join(guestDemoDir, "story.sh"),
		"--add", g.relative(g.policy()) + ":" + path.Join(guestDemoDir, "demo.pol")}
	for _, e := range g.env() {
		words = append(words, "--env", e)
	}
	words = append(words, "--")
	words = append(words, g.argv()...)
	return wrap(words)
}

func (g guest) relative(p string) string {
	if rel, err := filepath.Rel(g.sourceDir, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

// wrap quotes the words and breaks the line before each flag, with the
// shell's continuation backslash.
func wrap(words []string) string {
	var b strings.Builder
	for i, w := range words {
		if i > 0 {
			if strings.HasPrefix(w, "--") {
				b.WriteString(" \\\n      ")
			} else {
				b.WriteString(" ")
			}
		}
		b.WriteString(shellQuote(w))
	}
	return b.String()
}

func otherKernel(kernel string) string {
	if kernel == "debian-6.1" {
		return "The same story on Linux 6.12, which also has in-tree IPE: make demo KERNEL=debian-6.12"
	}
	return "The same story on Linux 6.1, which has no IPE: make demo KERNEL=debian-6.1"
}

func printNext(w io.Writer, g guest) {
	verity := deviceName + "=" + g.image.Data + ":" + g.image.Hash
	fmt.Fprintf(w, `
What to try next:
  A shell in the same guest, with the image and the sample policies (exit powers it off):
    bin/bpfipe-vm shell --kernel %s --verity %s --add examples:/root/examples
    then e.g.: bpfipe load --pin examples/boot-only.pol; /mnt/trusted/bin/hello; bpfipe events
  The sample policies, on the host, no privileges needed:
    bin/bpfipe policy check examples/*.pol
    bin/bpfipe policy show examples/verity-allowlist.pol
  %s
  Read: docs/demo.md (this story), docs/policy-language.md, docs/architecture.md
`, g.kernel, shellQuote(verity), otherKernel(g.kernel))
}
