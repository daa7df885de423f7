package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/bpfipe/bpfipe/policy"
)

func init() {
	register(&command{
		name:    "policy check",
		summary: "Check that policy files parse exactly as in-tree IPE would parse them",
		usage:   "[--json] FILE...",
		flags: func(fs *pflag.FlagSet) {
			fs.Bool("json", false, "print one JSON object per file, one per line")
		},
		run: func(fs *pflag.FlagSet, args []string) int {
			asJSON, _ := fs.GetBool("json")
			if len(args) == 0 {
				fmt.Fprintln(stderr, "bpfipe policy check: no policy files given")
				return exitUsage
			}
			// The registry hands run no stdout; stderr is the flag set's output.
			return checkPolicies(stdout, stderr, args, asJSON)
		},
	})
}

// checkResult is one file's line of `policy check --json`. Pointers are
// JSON null where a field does not apply.
type checkResult struct {
	File          string  `json:"file"`
	Valid         bool    `json:"valid"`
	Errno         *string `json:"errno"`
	Line          *int    `json:"line"`
	Column        *int    `json:"column"`
	Token         *string `json:"token"`
	Message       *string `json:"message"`
	PolicyName    *string `json:"policy_name"`
	PolicyVersion *string `json:"policy_version"`

	parseErr error
}

// checkPolicies checks every file, even after a failure, so one run reports
// all broken files. An unreadable file counts as invalid.
func checkPolicies(stdout, stderr io.Writer, files []string, asJSON bool) int {
	status := exitOK
	enc := json.NewEncoder(stdout)
	for _, file := range files {
		res, readErr := checkPolicy(file)
		if !res.Valid {
			status = exitFailure
		}
		switch {
		case asJSON:
			if err := enc.Encode(res); err != nil {
				fmt.Fprintf(stderr, "bpfipe policy check: write result: %v\n", err)
				return exitFailure
			}
		case readErr != nil:
			fmt.Fprintf(stderr, "bpfipe policy check: read policy: %v\n", readErr)
		case res.Valid:
			fmt.Fprintf(stdout, "%s: valid (policy_name=%s policy_version=%s)\n", file, displayName(*res.PolicyName), *res.PolicyVersion)
		default:
			fmt.Fprintln(stdout, res.parseErr)
		}
	}
	return status
}

// checkPolicy parses one file. The error returned is only a read error;
// a parse error is part of the result.
func checkPolicy(file string) (checkResult, error) {
	res := checkResult{File: file}
	text, err := os.ReadFile(file)
	if err != nil {
		msg := err.Error()
		res.Message = &msg
		var errno syscall.Errno
		if errors.As(err, &errno) {
			name := unix.ErrnoName(errno)
			res.Errno = &name
		}
		return res, err
	}
	p, err := policy.Parse(file, text)
	if err != nil {
		var perr *policy.ParseError
		res.parseErr = err
		if !errors.As(err, &perr) {
			msg := err.Error()
			res.Message = &msg
			return res, nil
		}
		name := policy.ErrnoName(perr.Errno)
		res.Errno, res.Message = &name, &perr.Message
		if perr.Token != "" {
			res.Token = &perr.Token
		}
		if perr.Line > 0 {
			res.Line = &perr.Line
		}
		if perr.Column > 0 {
			res.Column = &perr.Column
		}
		return res, nil
	}
	version := p.Version.String()
	res.Valid, res.PolicyName, res.PolicyVersion = true, &p.Name, &version
	return res, nil
}

// displayName prints a policy name as is when it is plain printable ASCII
// and quoted otherwise: names may hold any byte but NUL, space, TAB, CR, LF
// and '#', including terminal control sequences.
func displayName(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] < 0x21 || name[i] > 0x7e {
			return strconv.Quote(name)
		}
	}
	return name
}
