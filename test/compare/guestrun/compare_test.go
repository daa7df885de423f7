package main

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

// The records below are written out by hand as IPE's audit prints them
// (ipe-reference.md §4.6), not rendered by the code under test.

const tmpfsDenyText = `ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=%PID% comm="guestrun" path="/tmp/cmp/busybox" dev="tmpfs" ino=7 rule="DEFAULT op=EXECUTE action=DENY"`

func tmpfsDeny() loader.AccessRecord {
	return loader.AccessRecord{Op: "EXECUTE", Hook: "MMAP", Enforcing: true, PID: uint32(os.Getpid()), Comm: "guestrun",
		HasFile: true, Path: "/tmp/cmp/busybox", Dev: "tmpfs", Ino: 7, Rule: "DEFAULT op=EXECUTE action=DENY", Action: "DENY"}
}

const bootAllowText = `ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=%PID% comm="guestrun" path="/tmp/cmp/busybox" dev="tmpfs" ino=7 rule="op=EXECUTE boot_verified=TRUE action=ALLOW"`

func bootAllow() loader.AccessRecord {
	r := tmpfsDeny()
	r.Rule, r.Action = "op=EXECUTE boot_verified=TRUE action=ALLOW", "ALLOW"
	return r
}

// kernelText is a record's audit text with the runner's pid in it.
func kernelText(text string) string {
	return strings.Replace(text, "%PID%", strconv.Itoa(os.Getpid()), 1)
}

// result builds one enforcer's run of an operation from records and
// their texts.
func result(res string, recs []loader.AccessRecord, texts ...string) opResult {
	r := opResult{outcome: outcome{Result: res}, Records: recs}
	for _, t := range texts {
		r.Texts = append(r.Texts, kernelText(t))
	}
	return r
}

func play(op scenario.Op, ipe, bpf opResult) scenario.Report {
	return compare(&played{
		Scenario: &scenario.Scenario{Name: "t", Ops: []scenario.Op{op}},
		IPE:      []opResult{ipe},
		BPF:      []opResult{bpf},
	})
}

func verdicts(r scenario.Report) []string {
	var v []string
	for _, row := range r.Rows {
		v = append(v, row.Verdict)
	}
	return v
}

func TestCompareVerdicts(t *testing.T) {
	mmap := scenario.Op{Op: "mmap", Path: "/tmp/cmp/busybox", Prot: "rx"}
	expected := mmap
	expected.ExpectDifference = "bpfipe's boot filesystem is /tmp"
	deny := []loader.AccessRecord{tmpfsDeny()}
	allow := []loader.AccessRecord{bootAllow()}

	tests := []struct {
		name     string
		op       scenario.Op
		ipe, bpf opResult
		want     []string
		// count reads the report's counter that goes with the verdict.
		count func(scenario.Report) int
	}{
		{
			name:  "same records agree",
			op:    mmap,
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("EACCES", deny, tmpfsDenyText),
			want:  []string{scenario.VerdictAgree},
			count: func(r scenario.Report) int { return r.Agreements },
		},
		{
			name:  "a decision difference nobody expects",
			op:    mmap,
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("ok", allow, bootAllowText),
			want:  []string{scenario.VerdictDisagree},
			count: func(r scenario.Report) int { return r.Disagreements },
		},
		{
			name:  "an expected decision difference",
			op:    expected,
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("ok", allow, bootAllowText),
			want:  []string{scenario.VerdictExpected},
			count: func(r scenario.Report) int { return r.Expected },
		},
		{
			name:  "an expected difference that does not happen",
			op:    expected,
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("EACCES", deny, tmpfsDenyText),
			want:  []string{scenario.VerdictUnexpectedAgreement},
			count: func(r scenario.Report) int { return r.UnexpectedAgreements },
		},
		{
			name: "an expected difference with another inode too",
			op:   expected,
			ipe:  result("EACCES", deny, tmpfsDenyText),
			bpf: func() opResult {
				r := bootAllow()
				r.Ino = 8
				return result("ok", []loader.AccessRecord{r}, strings.Replace(bootAllowText, "ino=7", "ino=8", 1))
			}(),
			want:  []string{scenario.VerdictDisagree},
			count: func(r scenario.Report) int { return r.Disagreements },
		},
		{
			name:  "a record only one enforcer makes, expected",
			op:    expected,
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("ok", nil),
			want:  []string{scenario.VerdictExpected},
			count: func(r scenario.Report) int { return r.Expected },
		},
		{
			name:  "a record only one enforcer makes, unexpected",
			op:    mmap,
			ipe:   result("ok", nil),
			bpf:   result("ok", allow, bootAllowText),
			want:  []string{scenario.VerdictDisagree},
			count: func(r scenario.Report) int { return r.Disagreements },
		},
		{
			name:  "equal fields printed differently",
			op:    mmap,
			ipe:   result("EACCES", deny, strings.Replace(tmpfsDenyText, `comm="guestrun"`, "comm=6775657374727566", 1)),
			bpf:   result("EACCES", deny, tmpfsDenyText),
			want:  []string{scenario.VerdictDisagree},
			count: func(r scenario.Report) int { return r.Disagreements },
		},
		{
			name:  "both agree on an outcome the scenario does not expect",
			op:    scenario.Op{Op: "mmap", Path: "/tmp/cmp/busybox", Prot: "rx", Expect: "ok"},
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("EACCES", deny, tmpfsDenyText),
			want:  []string{scenario.VerdictUnexpected},
			count: func(r scenario.Report) int { return r.Unexpected },
		},
		{
			name:  "both agree on hooks the scenario does not expect",
			op:    scenario.Op{Op: "mprotect", From: "rx", To: "rwx", ExpectHooks: []string{}},
			ipe:   result("EACCES", deny, tmpfsDenyText),
			bpf:   result("EACCES", deny, tmpfsDenyText),
			want:  []string{scenario.VerdictUnexpected},
			count: func(r scenario.Report) int { return r.Unexpected },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := play(tt.op, tt.ipe, tt.bpf)
			got := verdicts(r)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("verdicts %q, want %q; rows %+v", got, tt.want, r.Rows)
			}
			if n := tt.count(r); n != len(tt.want) {
				t.Errorf("the report counts %d rows of this verdict, want %d", n, len(tt.want))
			}
			failed := tt.want[0] != scenario.VerdictAgree && tt.want[0] != scenario.VerdictExpected
			if r.Failed() != failed {
				t.Errorf("Failed() = %t, want %t", r.Failed(), failed)
			}
			if (tt.want[0] == scenario.VerdictExpected || tt.want[0] == scenario.VerdictUnexpectedAgreement) && r.Rows[0].Reason != tt.op.ExpectDifference {
				t.Errorf("reason %q, want the scenario's %q", r.Rows[0].Reason, tt.op.ExpectDifference)
			}
			if tt.want[0] != scenario.VerdictAgree && len(r.Rows[0].Notes) == 0 {
				t.Error("a row that is not agreement says nothing about why")
			}
		})
	}
}

// An exec IPE denies and bpfipe allows makes one pair of BPRM_CHECK
// records and MMAP records only bpfipe has: every row is expected, and
// the report counts each.
func TestCompareExpectedExec(t *testing.T) {
	op := scenario.Op{Op: "exec", Path: "/tmp/cmp/busybox", ExpectDifference: "boot root", ExpectIPE: "EACCES", ExpectBpfipe: "ok"}
	bprmDeny := tmpfsDeny()
	bprmDeny.Hook = "BPRM_CHECK"
	bprmAllow := bootAllow()
	bprmAllow.Hook = "BPRM_CHECK"
	mmapAllow := bootAllow()
	r := play(op,
		result("EACCES", []loader.AccessRecord{bprmDeny}, strings.Replace(tmpfsDenyText, "MMAP", "BPRM_CHECK", 1)),
		result("ok", []loader.AccessRecord{bprmAllow, mmapAllow}, strings.Replace(bootAllowText, "MMAP", "BPRM_CHECK", 1), bootAllowText))
	if got := verdicts(r); strings.Join(got, ",") != scenario.VerdictExpected+","+scenario.VerdictExpected {
		t.Fatalf("verdicts %q; rows %+v", got, r.Rows)
	}
	if r.Expected != 2 || r.Failed() {
		t.Errorf("expected %d, failed %t; want 2 and false", r.Expected, r.Failed())
	}
}

// bpfipe cuts paths at 255 bytes, keeping the components nearest the
// file (docs/ipe-differences.md): such a path is a documented difference,
// shown and not failed; any other cut is a disagreement.
func TestComparePathTruncation(t *testing.T) {
	head, tail := "/tmp/cmp/"+strings.Repeat("d", 150), "/"+strings.Repeat("e", 150)+"/busybox"
	long := head + tail
	ipeRec := tmpfsDeny()
	ipeRec.Path = long
	ipeText := strings.Replace(tmpfsDenyText, `"/tmp/cmp/busybox"`, `"`+long+`"`, 1)
	mmap := scenario.Op{Op: "mmap", Path: long, Prot: "rx"}
	run := func(path string) scenario.Row {
		cut := ipeRec
		cut.Path, cut.PathTruncated = path, true
		return play(mmap, result("EACCES", []loader.AccessRecord{ipeRec}, ipeText), result("EACCES", []loader.AccessRecord{cut}, "not compared")).Rows[0]
	}

	if row := run(tail); row.Verdict != scenario.VerdictAgree || len(row.Documented) != 1 {
		t.Errorf("last components: verdict %s, documented %q; want agree with one documented difference", row.Verdict, row.Documented)
	}
	for name, path := range map[string]string{
		"first bytes":           long[:255],
		"not on a component":    tail[1:],
		"another file's tail":   "/" + strings.Repeat("e", 150) + "/busybox2",
		"longer than 255 bytes": "/" + strings.Repeat("d", 150) + tail,
	} {
		if row := run(path); row.Verdict != scenario.VerdictDisagree {
			t.Errorf("%s: verdict %s, want %s", name, row.Verdict, scenario.VerdictDisagree)
		}
	}
}

// A child's record and the runner's are told apart by role, whatever the
// pids were in each run.
func TestComparePIDRoles(t *testing.T) {
	child := tmpfsDeny()
	child.Hook, child.Comm = "BPRM_CHECK", "busybox"
	text := `ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=%PID% comm="busybox" path="/tmp/cmp/busybox" dev="tmpfs" ino=7 rule="DEFAULT op=EXECUTE action=DENY"`
	ipeChild, bpfChild := child, child
	ipeChild.PID, bpfChild.PID = 1000, 2000
	ipe := opResult{outcome: outcome{Result: "EACCES", ChildPID: 1000}, Records: []loader.AccessRecord{ipeChild}, Texts: []string{strings.Replace(text, "%PID%", "1000", 1)}}
	bpf := opResult{outcome: outcome{Result: "EACCES", ChildPID: 2000}, Records: []loader.AccessRecord{bpfChild}, Texts: []string{strings.Replace(text, "%PID%", "2000", 1)}}
	op := scenario.Op{Op: "exec", Path: "/tmp/cmp/busybox"}
	if r := play(op, ipe, bpf); r.Rows[0].Verdict != scenario.VerdictAgree {
		t.Errorf("children of each run: verdict %s, notes %q", r.Rows[0].Verdict, r.Rows[0].Notes)
	}
	bpf.ChildPID = 3000 // the record is now another process's
	if r := play(op, ipe, bpf); r.Rows[0].Verdict != scenario.VerdictDisagree {
		t.Errorf("child against another process: verdict %s", r.Rows[0].Verdict)
	}

	// An exec that fails has no child to name; the process forked for it
	// got a pid between the two the runner read around the start.
	ipe.ChildPID, ipe.PIDsBefore, ipe.PIDsAfter = 0, 999, 1000
	bpf.ChildPID = 2000
	if r := play(op, ipe, bpf); r.Rows[0].Verdict != scenario.VerdictAgree {
		t.Errorf("failed exec's child against a child: verdict %s, notes %q", r.Rows[0].Verdict, r.Rows[0].Notes)
	}
	ipe.PIDsBefore, ipe.PIDsAfter = 1000, 1001
	if r := play(op, ipe, bpf); r.Rows[0].Verdict != scenario.VerdictDisagree {
		t.Errorf("a pid from before the start counts as the child: verdict %s", r.Rows[0].Verdict)
	}
}

// Each shared anonymous mapping gets a new shmem inode: the operation's
// own compares by role, any other inode by number.
func TestCompareSharedAnonymousInode(t *testing.T) {
	rec := func(ino uint64) loader.AccessRecord {
		r := tmpfsDeny()
		r.Hook, r.Path, r.Ino = "MPROTECT", "/dev/zero (deleted)", ino
		return r
	}
	text := func(ino string) string {
		return `ipe_op=EXECUTE ipe_hook=MPROTECT enforcing=1 pid=%PID% comm="guestrun" path=2F6465762F7A65726F202864656C6574656429 dev="tmpfs" ino=` + ino + ` rule="DEFAULT op=EXECUTE action=DENY"`
	}
	op := scenario.Op{Op: "mprotect", From: "rw", To: "rx", Shared: true}
	ipe := result("EACCES", []loader.AccessRecord{rec(3)}, text("3"))
	bpf := result("EACCES", []loader.AccessRecord{rec(4)}, text("4"))
	ipe.MapIno, bpf.MapIno = 3, 4
	if r := play(op, ipe, bpf); r.Rows[0].Verdict != scenario.VerdictAgree {
		t.Errorf("each run's own mapping: verdict %s, notes %q", r.Rows[0].Verdict, r.Rows[0].Notes)
	}
	bpf.MapIno = 5
	if r := play(op, ipe, bpf); r.Rows[0].Verdict != scenario.VerdictDisagree {
		t.Errorf("an inode that is not the run's mapping: verdict %s", r.Rows[0].Verdict)
	}
}

func TestShortRule(t *testing.T) {
	in := `op=EXECUTE dmverity_roothash="sha256":7118F5FF768CDAB1DA617F08E054D5BC9615126AD82F61489CBE120945818447 action=ALLOW`
	want := `op=EXECUTE dmverity_roothash="sha256":7118F5FF… action=ALLOW`
	if got := shortRule(in); got != want {
		t.Errorf("shortRule = %q, want %q", got, want)
	}
}

func TestShortText(t *testing.T) {
	short := "mmap rx private /tmp/cmp/busybox"
	if got := shortText(short); got != short {
		t.Errorf("shortText(%q) = %q, want it unchanged", short, got)
	}
	long := "mmap rx private /tmp/" + strings.Repeat("é", 100) + "/busybox"
	got := shortText(long)
	if n := len([]rune(got)); n != 61 || !strings.HasPrefix(long, strings.Split(got, "…")[0]) || !strings.HasSuffix(long, strings.Split(got, "…")[1]) {
		t.Errorf("shortText(long) = %q (%d runes), want its first and last 30 runes around an ellipsis", got, n)
	}
}
