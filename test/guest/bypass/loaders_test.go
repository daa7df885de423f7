package bypass

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// The fixtures test/bypass builds with the host's gcc (testdata there).
const (
	dlopenLoader    = "dlopen-loader"
	probeLibrary    = "libbypass-probe.so"
	probeResult     = "bypass_probe=42"
	constructorRan  = "bypass-probe: constructor ran"
	loaderRan       = "dlopen-loader: ran"
	dlopenFailed    = 3
	ldsoCannotStart = 127
)

// output runs cmd and returns how it ended and what it printed.
func output(t *testing.T, cmd *exec.Cmd) (guestcli.Exec, string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	got := guestcli.Start(t, cmd)
	return got, out.String()
}

// TestLoaders runs code that no execve names: programs through ld.so,
// shared objects through dlopen and LD_PRELOAD. Each is mapped executable
// by a trusted loader, so the MMAP hook decides it.
func TestLoaders(t *testing.T) {
	s := start(t, "bypass_loaders")
	loader, library := fixture(t, dlopenLoader), fixture(t, probeLibrary)
	untrustedLoader := guestcli.CopyToTmp(t, loader, dlopenLoader)
	untrustedLibrary := guestcli.CopyToTmp(t, library, probeLibrary)

	t.Run("dynamic program from the boot filesystem", func(t *testing.T) {
		s.drain(t)
		got, out := output(t, exec.Command(loader))
		if got.Errno != 0 || got.Code != 0 || !strings.Contains(out, loaderRan) {
			t.Errorf("%s: %v, output %q", loader, got, out)
		}
		got, out = output(t, exec.Command(dynamicLoader, loader))
		if got.Errno != 0 || got.Code != 0 || !strings.Contains(out, loaderRan) {
			t.Errorf("ld.so %s: %v, output %q", loader, got, out)
		}
		s.expectNone(t, "a trusted dynamic program")
	})

	t.Run("ld.so with an untrusted program", func(t *testing.T) {
		s.drain(t)
		refused(t, "exec of the /tmp copy", guestcli.Start(t, exec.Command(untrustedLoader)))
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: untrustedLoader, dev: tmpfsID})

		got, out := output(t, exec.Command(dynamicLoader, untrustedLoader))
		if got.Errno != 0 || got.Code != ldsoCannotStart || strings.Contains(out, loaderRan) {
			t.Errorf("ld.so %s: %v, output %q; want ld.so to start and fail to map the program", untrustedLoader, got, out)
		}
		s.expectOnly(t, denial{hook: guestcli.HookMmap, path: untrustedLoader, dev: tmpfsID, pid: got.PID})
	})

	t.Run("dlopen", func(t *testing.T) {
		s.drain(t)
		got, out := output(t, exec.Command(loader, library))
		if got.Code != 0 || !strings.Contains(out, probeResult) {
			t.Errorf("dlopen of the initramfs library: %v, output %q, want %q", got, out, probeResult)
		}
		s.expectNone(t, "dlopen of a trusted library")

		got, out = output(t, exec.Command(loader, untrustedLibrary))
		if got.Code != dlopenFailed || strings.Contains(out, constructorRan) || strings.Contains(out, probeResult) {
			t.Errorf("dlopen of the /tmp library: %v, output %q; want dlopen to fail before any of its code runs", got, out)
		}
		s.expectOnly(t, denial{hook: guestcli.HookMmap, path: untrustedLibrary, dev: tmpfsID, pid: got.PID})
	})

	t.Run("LD_PRELOAD", func(t *testing.T) {
		preload := func(lib string) (guestcli.Exec, string) {
			cmd := exec.Command(loader)
			cmd.Env = append(os.Environ(), "LD_PRELOAD="+lib)
			return output(t, cmd)
		}
		s.drain(t)
		got, out := preload(library)
		if got.Code != 0 || !strings.Contains(out, constructorRan) {
			t.Errorf("LD_PRELOAD of the initramfs library: %v, output %q, want its constructor to run", got, out)
		}
		s.expectNone(t, "LD_PRELOAD of a trusted library")

		// ld.so reports the library it cannot map and goes on without it.
		got, out = preload(untrustedLibrary)
		if got.Code != 0 || !strings.Contains(out, loaderRan) || strings.Contains(out, constructorRan) {
			t.Errorf("LD_PRELOAD of the /tmp library: %v, output %q; want the program to run without the library", got, out)
		}
		s.expectOnly(t, denial{hook: guestcli.HookMmap, path: untrustedLibrary, dev: tmpfsID, pid: got.PID})
	})
}

// TestScripts execs #! scripts. The kernel evaluates the script file at
// BPRM_CHECK, then, through binfmt_script, the interpreter in a second
// BPRM_CHECK; either can deny. A script handed to an interpreter as an
// argument is only read, which no hook sees.
func TestScripts(t *testing.T) {
	s := start(t, "bypass_scripts")
	untrustedInterpreter := guestcli.CopyToTmp(t, busybox, "busybox")
	write := func(dir, name, interpreter string) string {
		path := filepath.Join(dir, name)
		body := "#!" + interpreter + " sh\necho script ran\n"
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tmpDir, rootfs := t.TempDir(), rootfsDir(t, "bypass-scripts")
	untrustedScript := write(tmpDir, "script", busybox)
	trustedScript := write(rootfs, "script", busybox)
	trustedScriptUntrustedInterpreter := write(rootfs, "script-tmp-interpreter", untrustedInterpreter)

	t.Run("trusted script and interpreter", func(t *testing.T) {
		s.drain(t)
		got, out := output(t, exec.Command(trustedScript))
		if got.Code != 0 || !strings.Contains(out, "script ran") {
			t.Errorf("%s: %v, output %q", trustedScript, got, out)
		}
		s.expectNone(t, "a trusted script")
	})

	t.Run("untrusted script", func(t *testing.T) {
		s.drain(t)
		refused(t, "a /tmp script with the initramfs interpreter", guestcli.Start(t, exec.Command(untrustedScript)))
		// Denied before binfmt_script looks for the interpreter.
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: untrustedScript, dev: tmpfsID})
	})

	t.Run("untrusted interpreter", func(t *testing.T) {
		s.drain(t)
		refused(t, "an initramfs script with a /tmp interpreter", guestcli.Start(t, exec.Command(trustedScriptUntrustedInterpreter)))
		s.expectOnly(t, denial{hook: guestcli.HookBprm, path: untrustedInterpreter, dev: tmpfsID})
	})

	// Out of scope, as for IPE (admin guide, "Known Limitations"): the
	// interpreter is trusted and reads the script as data. Interpreters
	// that call execveat(AT_EXECVE_CHECK) close this from Linux 6.19 with
	// IPE; busybox does not. See docs/bypass.md.
	t.Run("script passed to an interpreter", func(t *testing.T) {
		s.drain(t)
		got, out := output(t, exec.Command(busybox, "sh", untrustedScript))
		if got.Code != 0 || !strings.Contains(out, "script ran") {
			t.Errorf("busybox sh %s: %v, output %q; want the script to run", untrustedScript, got, out)
		}
		s.expectNone(t, "a script passed as an argument")
	})
}
