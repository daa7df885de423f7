// Package kread boots test/guest/kread on every stock kernel: module
// loading, kexec and IMA policy reads decided by bpfipe's kernel_read_file
// and kernel_load_data programs. See docs/kernel-reads.md.
package kread

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/bpfipe/bpfipe/test/vmtest"
	"github.com/bpfipe/bpfipe/vm"
)

const guestPackage = "./test/guest/kread"

// guestDir holds the files the guest's kernel reads. It is in the
// initramfs, so they are boot_verified.
const guestDir = "/opt/bpfipe-kread"

// testModule has no dependencies and nothing in the guest loads it; it
// only registers a character set table, so loading it changes nothing the
// tests rely on.
const testModule = "nls_ascii"

// guestTimeout bounds one guest: a dozen bpfipe loads and a kexec image
// load (hashing the kernel for purgatory) under software emulation.
const guestTimeout = 10 * time.Minute

func TestKernelReadsAndLoads(t *testing.T) {
	if testing.Short() {
		t.Skip("boots qemu guests; skipped with -short")
	}
	for _, kernel := range vmtest.Kernels() {
		t.Run(kernel, func(t *testing.T) {
			t.Parallel()
			vmtest.Require(t, kernel)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			k, err := vm.EnsureKernel(ctx, kernel)
			if err != nil {
				t.Fatalf("get kernel %s: %v", kernel, err)
			}
			opts, err := guestOptions(k, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			vmtest.RunGoTests(t, kernel, guestPackage, opts...)
		})
	}
}

// guestOptions adds the kernel's module, image and config to the guest and
// names them in its environment.
func guestOptions(k *vm.Kernel, scratch string) ([]vmtest.Option, error) {
	configPath := filepath.Join(filepath.Dir(k.Image), "config-"+k.Release)
	config, err := readConfig(configPath)
	if err != nil {
		return nil, err
	}
	shipped, err := findModule(k.ModulesDir, testModule)
	if err != nil {
		return nil, err
	}
	image, err := moduleImage(shipped, filepath.Join(scratch, testModule+".ko"))
	if err != nil {
		return nil, err
	}
	// finit_module takes the file as shipped when the kernel decompresses
	// modules itself (MODULE_INIT_COMPRESSED_FILE); otherwise the image.
	finitFile := shipped
	if strings.HasSuffix(shipped, ".xz") && config["CONFIG_MODULE_DECOMPRESS"] != "y" {
		finitFile = image
	}
	var (
		guestFinit  = guestDir + "/finit/" + filepath.Base(finitFile)
		guestImage  = guestDir + "/image/" + testModule + ".ko"
		guestKernel = guestDir + "/vmlinuz"
		guestConfig = guestDir + "/config"
	)
	return []vmtest.Option{
		vmtest.WithTimeout(guestTimeout),
		vmtest.WithAdd(finitFile, guestFinit),
		vmtest.WithAdd(image, guestImage),
		vmtest.WithAdd(k.Image, guestKernel),
		vmtest.WithAdd(configPath, guestConfig),
		vmtest.WithEnv(
			"BPFIPE_KREAD_MODULE_NAME="+testModule,
			"BPFIPE_KREAD_MODULE_FILE="+guestFinit,
			"BPFIPE_KREAD_MODULE_IMAGE="+guestImage,
			"BPFIPE_KREAD_KERNEL_IMAGE="+guestKernel,
			"BPFIPE_KREAD_KERNEL_CONFIG="+guestConfig,
		),
	}, nil
}

// readConfig reads a kernel config file; options not set are absent.
func readConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open kernel config: %w", err)
	}
	defer f.Close()
	config := map[string]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if key, value, ok := strings.Cut(scanner.Text(), "="); ok && strings.HasPrefix(key, "CONFIG_") {
			config[key] = value
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read kernel config: %w", err)
	}
	return config, nil
}

// findModule finds a module's file (.ko or .ko.xz) in a module directory.
func findModule(dir, name string) (string, error) {
	var found string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if base := d.Name(); !d.IsDir() && (base == name+".ko" || base == name+".ko.xz") {
			found = path
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("find module %s: %w", name, err)
	}
	if found == "" {
		return "", fmt.Errorf("find module %s: no %s.ko or %s.ko.xz under %s", name, name, name, dir)
	}
	return found, nil
}

// moduleImage returns the module's ELF image: the file itself, or its
// decompressed content written to out.
func moduleImage(path, out string) (string, error) {
	if !strings.HasSuffix(path, ".xz") {
		return path, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read module: %w", err)
	}
	r, err := xz.NewReader(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("decompress %s: %w", filepath.Base(path), err)
	}
	image, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("decompress %s: %w", filepath.Base(path), err)
	}
	if !bytes.HasPrefix(image, []byte("\x7fELF")) {
		return "", fmt.Errorf("decompress %s: not an ELF image", filepath.Base(path))
	}
	if err := os.WriteFile(out, image, 0o644); err != nil {
		return "", fmt.Errorf("write module image: %w", err)
	}
	return out, nil
}
