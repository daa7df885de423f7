// Command guestrun plays comparison scenarios inside a guest booting a
// kernel with in-tree IPE: each scenario's operations run first under the
// kernel's IPE, then under bpfipe, with the same signed policy, and a table
// shows both results and records side by side. It also feeds a corpus of
// signed policies to the kernel's parser and reports each errno.
//
//	guestrun play --manifest FILE SCENARIO.json...
//	guestrun fidelity --manifest FILE DIR
//
// Exit status: 0 when every row agrees or differs as its scenario expects,
// 1 otherwise, 2 when a scenario could not be played.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: guestrun play|fidelity --manifest FILE ARGS...")
		os.Exit(2)
	}
	flags := flag.NewFlagSet("guestrun "+os.Args[1], flag.ExitOnError)
	manifestPath := flags.String("manifest", "/opt/compare/manifest.json", "what the host prepared")
	flags.Parse(os.Args[2:])
	m, err := readManifest(*manifestPath)
	if err != nil {
		fatal(err)
	}
	switch os.Args[1] {
	case "play":
		os.Exit(playAll(m, flags.Args()))
	case "fidelity":
		if flags.NArg() != 1 {
			fatal(errors.New("fidelity wants one directory"))
		}
		os.Exit(fidelity(flags.Arg(0)))
	default:
		fatal(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "guestrun: %v\n", err)
	os.Exit(2)
}

func readManifest(path string) (*scenario.Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var m scenario.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return &m, nil
}

func playAll(m *scenario.Manifest, files []string) int {
	cert, key, err := kernelipe.ReadKeyPair(m.Cert, m.Key)
	if err != nil {
		fatal(err)
	}
	if err := (kernelipe.FS{}).Available(); err != nil {
		fatal(err)
	}
	audit, err := kernelipe.OpenAudit()
	if err != nil {
		fatal(err)
	}
	defer audit.Close()
	p := &player{manifest: m, cert: cert, key: key, audit: audit, images: newImageSet(m), verity: newVerityDisks(m)}
	status := 0
	for _, file := range files {
		s, err := scenario.Read(file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "guestrun: %v\n", err)
			printJSON(os.Stdout, scenario.Report{Scenario: filepath.Base(file), Error: err.Error()})
			status = 2
			continue
		}
		result, err := p.play(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "guestrun: scenario %s: %v\n", s.Name, err)
			printJSON(os.Stdout, scenario.Report{Scenario: s.Name, Error: err.Error()})
			// Leave no enforcement behind for the next scenario.
			if _, uerr := loader.Unload(); uerr != nil && !errors.Is(uerr, loader.ErrNotLoaded) {
				fmt.Fprintf(os.Stderr, "guestrun: unload after failure: %v\n", uerr)
			}
			status = 2
			continue
		}
		r := compare(result)
		printTable(os.Stdout, r)
		printJSON(os.Stdout, r)
		if r.Failed() && status == 0 {
			status = 1
		}
	}
	if n, err := audit.Lost(); err == nil && n > 0 {
		fmt.Fprintf(os.Stderr, "guestrun: warning: the kernel lost %d audit records\n", n)
	}
	return status
}

// fidelity hands each signed policy of dir (*.p7s, in name order) to the
// kernel's new_policy and reports the errno; accepted policies are deleted
// again (loading never activates) so the next one's name is free.
func fidelity(dir string) int {
	files, err := filepath.Glob(filepath.Join(dir, "*.p7s"))
	if err != nil {
		fatal(err)
	}
	slices.Sort(files)
	ipe := kernelipe.FS{}
	for _, file := range files {
		blob, err := os.ReadFile(file)
		if err != nil {
			fatal(err)
		}
		res := scenario.FidelityResult{File: filepath.Base(file), Errno: "OK"}
		name, err := ipe.NewPolicy(blob)
		var kerr *kernelipe.Error
		switch {
		case errors.As(err, &kerr):
			res.Errno = kernelipe.ErrnoName(kerr.Errno)
		case err != nil:
			fatal(err)
		default:
			res.Name = name
			if err := ipe.Delete(name); err != nil {
				res.DeleteError = err.Error()
			}
		}
		data, _ := json.Marshal(res)
		fmt.Printf("%s%s\n", scenario.FidelityPrefix, data)
	}
	return 0
}
