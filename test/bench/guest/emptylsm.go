package main

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/bpfipe/bpfipe/loader"
)

// emptyLSM attaches a program that returns 0 at every hook bpfipe's
// programs attach to: the floor of any BPF LSM in bpfipe's place, which
// pays a trampoline and a program call on each of those hooks' calls
// whatever it decides.
type emptyLSM struct {
	hooks []string
	progs []*ebpf.Program
	links []link.Link
}

func newEmptyLSM() (*emptyLSM, error) {
	hooks, err := loader.Hooks()
	if err != nil {
		return nil, fmt.Errorf("list bpfipe's hooks: %w", err)
	}
	return &emptyLSM{hooks: hooks}, nil
}

func (e *emptyLSM) up() error {
	for _, hook := range e.hooks {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         "bench_empty",
			Type:         ebpf.LSM,
			AttachType:   ebpf.AttachLSMMac,
			AttachTo:     hook,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			return errors.Join(fmt.Errorf("load an empty program for %s: %w", hook, err), e.down())
		}
		e.progs = append(e.progs, prog)
		l, err := link.AttachLSM(link.LSMOptions{Program: prog})
		if err != nil {
			return errors.Join(fmt.Errorf("attach an empty program to %s: %w", hook, err), e.down())
		}
		e.links = append(e.links, l)
	}
	return nil
}

func (e *emptyLSM) down() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	for _, p := range e.progs {
		errs = append(errs, p.Close())
	}
	e.links, e.progs = nil, nil
	return errors.Join(errs...)
}
