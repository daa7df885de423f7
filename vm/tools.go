package vm

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Host files the runner uses from Debian packages.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// hostBusybox comes from busybox-static. The guest gets the host's copy
	// rather than a downloaded one: it is the same Debian build, already
	// verified by dpkg, and needs no network.
	hostBusybox = "/bin/busybox"
	// systemPython is Debian's interpreter, the one python3-cryptography is
	// installed for; a python3 earlier in PATH (pyenv, venvs) may lack it.
	systemPython = "/usr/bin/python3"
)

// lookTool finds a command or reports the Debian package to install.
func lookTool(name, pkg string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
			candidate := filepath.Join(dir, name)
			if info, statErr := os.Stat(candidate); statErr == nil && info.Mode()&0o111 != 0 {
				return candidate, nil
			}
		}
		return "", &MissingError{What: name, Package: pkg}
	}
	return path, nil
}

func requireFile(path, pkg string) error {
	if _, err := os.Stat(path); err != nil {
		return &MissingError{What: path, Package: pkg}
	}
	return nil
}

// staticBusybox checks that the host busybox is the static build: a dynamic
// one (package busybox) would not run in the guest, which has no libc.
func staticBusybox() (string, error) {
	f, err := elf.Open(hostBusybox)
	if err != nil {
		return "", &MissingError{What: hostBusybox + " (static)", Package: "busybox-static"}
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", &MissingError{What: hostBusybox + " (static; this one is dynamically linked)", Package: "busybox-static"}
		}
	}
	return hostBusybox, nil
}

// GoCommand finds the go command that builds the guest's binaries.
func GoCommand() (string, error) { return goTool() }

func goTool() (string, error) {
	if path, err := exec.LookPath("go"); err == nil {
		return path, nil
	}
	if path := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(path) {
		return path, nil
	}
	if fileExists("/usr/local/go/bin/go") {
		return "/usr/local/go/bin/go", nil
	}
	return "", &MissingError{What: "go (the Go toolchain named in go.mod)", Package: "golang-go"}
}

// python finds a python3 that can import cryptography, which virt-fw-vars
// needs.
func python(ctx context.Context) (string, error) {
	candidates := []string{systemPython}
	if path, err := exec.LookPath("python3"); err == nil && path != systemPython {
		candidates = append(candidates, path)
	}
	found := false
	for _, py := range candidates {
		if !fileExists(py) {
			continue
		}
		found = true
		cmd := exec.CommandContext(ctx, py, "-c", "import cryptography")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if cmd.Run() == nil {
			return py, nil
		}
	}
	if !found {
		return "", &MissingError{What: "python3", Package: "python3"}
	}
	return "", &MissingError{What: "the python3 module cryptography", Package: "python3-cryptography"}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// CheckHost reports the first host tool a run with cfg would miss, as a
// *MissingError, without building or booting anything.
func CheckHost(ctx context.Context, cfg Config) error {
	if _, err := lookTool("qemu-system-x86_64", "qemu-system-x86"); err != nil {
		return err
	}
	if _, err := staticBusybox(); err != nil {
		return err
	}
	if _, err := goTool(); err != nil {
		return err
	}
	if cfg.KernelImage == "" {
		for _, t := range []struct{ name, pkg string }{{"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg-deb", "dpkg"}} {
			if _, err := lookTool(t.name, t.pkg); err != nil {
				return err
			}
		}
		if err := requireFile(debianKeyring, "debian-archive-keyring"); err != nil {
			return err
		}
	}
	if cfg.UEFICert != "" {
		if err := requireFile(ovmfCode, "ovmf"); err != nil {
			return err
		}
		if err := requireFile(ovmfVars, "ovmf"); err != nil {
			return err
		}
		if _, err := python(ctx); err != nil {
			return err
		}
	}
	return nil
}
