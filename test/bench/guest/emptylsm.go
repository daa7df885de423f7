package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/bpfipe/bpfipe/loader"
)

// emptyPinDir holds the empty programs' links while they are attached.
// The loads of bpfipe that plan makes first have mounted the BPF
// filesystem.
const emptyPinDir = "/sys/fs/bpf/bench-empty-lsm"

// emptyLSM attaches a program that returns 0 at every hook bpfipe's
// programs attach to: the floor of any BPF LSM in bpfipe's place, which
// pays a trampoline and a program call on each of those hooks' calls
// whatever it decides.
type emptyLSM struct {
	hooks []string
}

func newEmptyLSM() (*emptyLSM, error) {
	hooks, err := loader.Hooks()
	if err != nil {
		return nil, fmt.Errorf("list bpfipe's hooks: %w", err)
	}
	return &emptyLSM{hooks: hooks}, nil
}

// up attaches and pins the programs and closes every descriptor, as the
// bpfipe variants do: descriptors this process kept open would be copied
// by every fork and closed by every exec of the workloads, a cost of the
// harness rather than of the hooks.
func (e *emptyLSM) up() error {
	if err := os.Mkdir(emptyPinDir, 0o700); err != nil {
		return fmt.Errorf("pin directory for the empty programs: %w", err)
	}
	for _, hook := range e.hooks {
		if err := attachEmpty(hook); err != nil {
			return errors.Join(err, e.down())
		}
	}
	return nil
}

func attachEmpty(hook string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bench_empty",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     hook,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load an empty program for %s: %w", hook, err)
	}
	// The link keeps the program.
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attach an empty program to %s: %w", hook, err)
	}
	defer l.Close()
	if err := l.Pin(filepath.Join(emptyPinDir, hook)); err != nil {
		return fmt.Errorf("pin the empty program's link on %s: %w", hook, err)
	}
	return nil
}

// down detaches the programs before it returns. Each link is opened,
// unpinned and closed: the close frees it there and then, where removing
// its last pin alone would leave that to a kernel worker on 6.12, and the
// next variant would be installed, or timed, while the programs are still
// attached.
func (e *emptyLSM) down() error {
	entries, err := os.ReadDir(emptyPinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, entry := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(emptyPinDir, entry.Name()), nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open the empty program's link on %s: %w", entry.Name(), err))
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	return errors.Join(append(errs, os.RemoveAll(emptyPinDir))...)
}
