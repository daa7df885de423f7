package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// modulePath is this repository's Go module; the runner builds the guest's
// init and the bpfipe binary from its source tree.
const modulePath = "github.com/bpfipe/bpfipe"

// SourceDir finds the bpfipe source tree: the module containing the
// working directory, or failing that the one this package was compiled from.
func SourceDir() (string, error) {
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if isBpfipeModule(dir) {
				return dir, nil
			}
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if dir := filepath.Dir(filepath.Dir(file)); isBpfipeModule(dir) {
			return dir, nil
		}
	}
	return "", errors.New("find bpfipe source tree: run from inside it (the runner builds the guest's binaries from source)")
}

func isBpfipeModule(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if fields := strings.Fields(scanner.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

// builds makes each binary once per process: a test binary boots many guests
// and go build, even with nothing to do, costs a noticeable fraction of a
// boot.
var builds sync.Map // output path -> *buildResult

type buildResult struct {
	once sync.Once
	err  error
}

// goBuild builds a static linux/amd64 binary with the go command. args are
// the go subcommand and its arguments up to the package, e.g. {"build",
// "-ldflags=-s -w"} or {"test", "-c"}.
func goBuild(ctx context.Context, sourceDir, out string, args []string, pkg string, p progress) error {
	result, _ := builds.LoadOrStore(out, &buildResult{})
	r := result.(*buildResult)
	r.once.Do(func() {
		r.err = runGoBuild(ctx, sourceDir, out, args, pkg, p)
	})
	if r.err != nil {
		// A failed build is retried on the next run rather than remembered:
		// the source may have been fixed meanwhile.
		builds.CompareAndDelete(out, r)
	}
	return r.err
}

func runGoBuild(ctx context.Context, sourceDir, out string, args []string, pkg string, p progress) error {
	gocmd, err := goTool()
	if err != nil {
		return err
	}
	unlock, err := lockFile(out + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	done := p.step("building %s", pkg)
	argv := append(append([]string{}, args...), "-o", out, pkg)
	cmd := exec.CommandContext(ctx, gocmd, argv...)
	cmd.Dir = sourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	err = cmd.Run()
	done(err)
	if err != nil {
		return fmt.Errorf("go %s %s: %w\n%s", args[0], pkg, err, strings.TrimSpace(output.String()))
	}
	return nil
}

// BuildGoTest compiles the tests of pkg (an import path or a ./relative path
// in the source tree) into a static binary for the guest and returns its
// path in the cache.
func BuildGoTest(ctx context.Context, pkg string) (string, error) {
	cacheDir, err := DefaultCacheDir()
	if err != nil {
		return "", err
	}
	sourceDir, err := SourceDir()
	if err != nil {
		return "", err
	}
	name := strings.NewReplacer("/", "_", ".", "_").Replace(strings.TrimPrefix(pkg, "./"))
	out := filepath.Join(cacheDir, "bin", "tests", name+".test")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	if err := goBuild(ctx, sourceDir, out, []string{"test", "-c"}, pkg, progress{}); err != nil {
		return "", err
	}
	return out, nil
}
