package main

import (
	"github.com/spf13/pflag"

	"github.com/bpfipe/bpfipe/loader"
)

func init() {
	register(&command{
		name:    "success-audit",
		summary: "Switch reporting of allowed operations on or off",
		usage:   "[--json] on|off",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print the record as JSON")
		},
		run: func(fs *pflag.FlagSet, args []string) int {
			return runSwitch(fs, args, "success-audit", func(r *loader.Running, on bool) (bool, error) { return r.SetSuccessAudit(on) },
				func(on, old bool, s loader.Subject) loader.ConfigRecord {
					return loader.SuccessAuditRecord{SuccessAudit: on, Old: old, Subject: s}
				})
		},
	})
}
