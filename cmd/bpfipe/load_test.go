package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/loader"
)

func TestFailMapsErrorClassesToExitStatuses(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: missing CAP_BPF", loader.ErrNotPrivileged), exitPrivilege},
		{fmt.Errorf("open pinned map state: %w", os.ErrPermission), exitPrivilege},
		{loader.ErrLSMRefused, exitUnsupported},
		{fmt.Errorf("%w: not built", loader.ErrNoBPFLSM), exitUnsupported},
		{fmt.Errorf("%w: add lsm=", loader.ErrBPFLSMInactive), exitUnsupported},
		{fmt.Errorf("probe LSM programs: %w", loader.ErrLinkDescriptorsDetach), exitUnsupported},
		{fmt.Errorf("open pinned map state: %w", loader.ErrNotLoaded), exitNotLoaded},
		{fmt.Errorf("%w: unload first", loader.ErrAlreadyLoaded), exitAlreadyLoaded},
		{errors.New("attach mmap_file: invalid argument"), exitFailure},
	} {
		var stderr bytes.Buffer
		if got := fail(&stderr, "load", tc.err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.want)
		}
		if !strings.HasPrefix(stderr.String(), "bpfipe load: ") || !strings.Contains(stderr.String(), tc.err.Error()) {
			t.Errorf("message %q does not report %v", stderr.String(), tc.err)
		}
	}
	distinct := map[int]bool{}
	for _, s := range []int{exitOK, exitFailure, exitUsage, exitUnsupported, exitPrivilege, exitNotLoaded, exitAlreadyLoaded} {
		if distinct[s] {
			t.Errorf("exit status %d used for two classes", s)
		}
		distinct[s] = true
	}
}

func TestParseSwitch(t *testing.T) {
	// kstrtobool looks at the first character, or two after an 'o'.
	for in, want := range map[string]bool{"on": true, "1": true, "y": true, "true": true, "Yes": true, "ON": true,
		"off": false, "0": false, "n": false, "false": false, "of": false, "OFF": false} {
		got, ok := parseSwitch(in)
		if !ok || got != want {
			t.Errorf("parseSwitch(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "enable", "2", "o", "ox"} {
		if _, ok := parseSwitch(bad); ok {
			t.Errorf("parseSwitch(%q) accepted", bad)
		}
	}
}

func TestRecordPrinterPrefixesConfigRecordsOnly(t *testing.T) {
	var out bytes.Buffer
	p := recordPrinter{w: &out}
	p.config(loader.MACStatusRecord{Enforcing: true, Subject: loader.Subject{AUID: 1, Ses: 2}})
	p.access(loader.AccessRecord{Op: "EXECUTE", Hook: "MMAP", Comm: "x", Rule: "DEFAULT action=DENY"})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "MAC_STATUS enforcing=1 ") || !strings.HasPrefix(lines[1], "ipe_op=EXECUTE ") {
		t.Errorf("output:\n%s", out.String())
	}
}
