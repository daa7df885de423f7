package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bpfipe/bpfipe/vm"
)

// image is the demo's dm-verity image: an ext4 filesystem holding
// bin/hello, its hash tree, and the root hash veritysetup printed.
type image struct {
	Data     string
	Hash     string
	RootHash string // hex
}

// Host tools the image needs, with the Debian packages that have them.
var imageTools = map[string]string{"mkfs.ext4": "e2fsprogs", "veritysetup": "cryptsetup-bin"}

// imageSize leaves room for the static hello program (about 1.5 MB).
const imageSize = "8M"

// buildImage builds the hello program, puts it on a fresh ext4 image in dir
// and formats the image's hash tree, printing each command to transcript
// as a person would type it. The root hash is also written next to the
// image (DATA.roothash), where bpfipe-vm --verity finds it.
func buildImage(ctx context.Context, sourceDir, dir string, transcript io.Writer) (image, error) {
	for tool, pkg := range imageTools {
		if _, err := exec.LookPath(tool); err != nil {
			return image{}, fmt.Errorf("find %s: %w (install the Debian package %s, or run make deps)", tool, err, pkg)
		}
	}
	gocmd, err := vm.GoCommand()
	if err != nil {
		return image{}, err
	}
	rootfs := filepath.Join(dir, "rootfs")
	img := image{Data: filepath.Join(dir, "trusted.img"), Hash: filepath.Join(dir, "trusted.hash")}
	for _, stale := range []string{rootfs, img.Data, img.Hash, img.Data + vm.RootHashSuffix} {
		if err := os.RemoveAll(stale); err != nil {
			return image{}, fmt.Errorf("remove old image: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		return image{}, fmt.Errorf("create image directory: %w", err)
	}

	hello := filepath.Join(rootfs, "bin", "hello")
	build := command{
		argv: []string{gocmd, "build", "-trimpath", "-ldflags=-s -w", "-o", hello, "./test/demo/hello"},
		// Static, so it needs nothing from the guest but the kernel.
		env: []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"},
		dir: sourceDir,
	}
	if _, err := build.run(ctx, transcript); err != nil {
		return image{}, err
	}
	mkfs := command{argv: []string{"mkfs.ext4", "-q", "-b", "4096", "-d", rootfs, img.Data, imageSize}}
	if _, err := mkfs.run(ctx, transcript); err != nil {
		return image{}, err
	}
	format := command{argv: []string{"veritysetup", "format", img.Data, img.Hash}, echo: true}
	out, err := format.run(ctx, transcript)
	if err != nil {
		return image{}, err
	}
	if img.RootHash, err = rootHashFrom(out); err != nil {
		return image{}, err
	}
	if err := os.WriteFile(img.Data+vm.RootHashSuffix, []byte(img.RootHash+"\n"), 0o644); err != nil {
		return image{}, fmt.Errorf("write root hash: %w", err)
	}
	return img, nil
}

// rootHashFrom reads the "Root hash:" line of veritysetup format's report.
func rootHashFrom(report []byte) (string, error) {
	scanner := bufio.NewScanner(bytes.NewReader(report))
	for scanner.Scan() {
		key, value, ok := strings.Cut(scanner.Text(), ":")
		if ok && strings.TrimSpace(key) == "Root hash" {
			if hash := strings.TrimSpace(value); hash != "" {
				return hash, nil
			}
		}
	}
	return "", errors.New("read veritysetup format's report: no root hash in it")
}

// command is one host command of the image build.
type command struct {
	argv []string
	env  []string
	dir  string
	// echo copies the command's output into the transcript.
	echo bool
}

func (c command) run(ctx context.Context, transcript io.Writer) ([]byte, error) {
	fmt.Fprintf(transcript, "host$ %s\n", shellWords(c.env, c.argv))
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if c.echo || err != nil {
		transcript.Write(out)
	}
	if err != nil {
		return out, fmt.Errorf("%s: %w", filepath.Base(c.argv[0]), err)
	}
	return out, nil
}

// shellWords renders a command line as a person would type it.
func shellWords(env, argv []string) string {
	words := make([]string, 0, len(env)+len(argv))
	for _, e := range env {
		words = append(words, shellQuote(e))
	}
	for i, a := range argv {
		if i == 0 {
			a = filepath.Base(a)
		}
		words = append(words, shellQuote(a))
	}
	return strings.Join(words, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
