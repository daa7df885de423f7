package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "devices",
		summary: "List block devices with their dm-verity root hashes and what the kernel table holds",
		usage:   "[--json]",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print one JSON object")
		},
		run: runDevices,
	})
}

func runDevices(fs *pflag.FlagSet, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "bpfipe devices: takes no arguments")
		return exitUsage
	}
	asJSON, _ := fs.GetBool("json")
	list, err := loader.ListDevices()
	if err != nil {
		return fail(stderr, "devices", err)
	}
	if asJSON {
		if err := json.NewEncoder(stdout).Encode(list); err != nil {
			return fail(stderr, "devices", err)
		}
		return exitOK
	}
	printDevices(stdout, list)
	for _, w := range list.Warnings {
		warner(stderr, "devices")(w)
	}
	return exitOK
}

func printDevices(w io.Writer, list *loader.DeviceListing) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := "DEVICE\tDEV\tDISKSEQ\tDM-VERITY ROOT HASH\tSIGNED\tMOUNTED"
	if list.Loaded {
		header += "\tKERNEL TABLE"
	}
	fmt.Fprintln(tw, header)
	for _, d := range list.Devices {
		name := d.Name
		if d.DMName != "" {
			name += " (" + d.DMName + ")"
		}
		hash, signed := "-", "-"
		if d.Verity != nil {
			hash = d.Verity.RootHash
			if !d.Verity.Verifies {
				hash += " (ignore_corruption)"
			}
			signed = yesNo(d.Verity.Signed)
		}
		mounted := "-"
		if len(d.MountPoints) > 0 {
			mounted = strings.Join(d.MountPoints, ",")
		}
		seq := "-"
		if d.DiskSeq != 0 {
			seq = fmt.Sprint(d.DiskSeq)
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", name, d.Dev, seq, hash, signed, mounted)
		if list.Loaded && d.Kernel != nil {
			row += "\t" + describeKernelEntry(d.Kernel)
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	if !list.Loaded {
		fmt.Fprintln(w, "\nbpfipe is not loaded: no kernel table to compare with.")
		return
	}
	fmt.Fprintf(w, "\ndm-verity root hashes: %s", list.DMVerityMode)
	if list.Resolver != nil {
		if list.Resolver.Running {
			fmt.Fprintf(w, ", resolver pid %d", list.Resolver.PID)
		} else {
			fmt.Fprint(w, ", resolver NOT running (bpfipe resolver --restart)")
		}
	}
	fmt.Fprintln(w)
	if len(list.Orphans) > 0 {
		fmt.Fprintln(w, "\nEntries of devices that are gone (they never match a new device, whose disk sequence number differs):")
		for _, o := range list.Orphans {
			fmt.Fprintf(w, "  %s diskseq %d: %s signed=%s\n", o.Dev, o.DiskSeq, o.RootHash, yesNo(o.Signed))
		}
	}
}

func describeKernelEntry(k *loader.KernelEntry) string {
	switch k.State {
	case loader.KernelEntryStale:
		return fmt.Sprintf("stale (holds %s signed=%s)", k.RootHash, yesNo(k.Signed))
	case loader.KernelEntryUnexpected:
		return fmt.Sprintf("unexpected entry %s", k.RootHash)
	case loader.KernelEntryNone:
		return "-"
	}
	return k.State
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
