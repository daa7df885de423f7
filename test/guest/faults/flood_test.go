package faults

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// Sizes of the flood. The ring buffer holds 1 MiB of events of 344 bytes
// each with their header, about 3050; floodExecs alternate an allowed exec
// (two records: BPRM_CHECK and the MMAP of its text) and a denied one
// (one), half again more than the ring holds.
const (
	ringBytes   = 1 << 20
	eventBytes  = 344
	floodExecs  = 3000
	ringRecords = ringBytes / eventBytes
)

// TestEventFlood execs in a tight loop with success auditing on while
// nobody reads the events, until the ring buffer overflows. Decisions must
// not suffer (every exec allowed or denied as the policy says); the
// records lost must be counted (status events_dropped); and the records
// read afterwards plus the ones dropped must account for every decision
// the counters saw.
func TestEventFlood(t *testing.T) {
	guestcli.RequireGuest(t)
	c := guestcli.Initramfs(t)
	untrusted := guestcli.CopyToTmp(t, busybox, "busybox")
	const allowlist = "policy_name=flood policy_version=0.0.1\n" +
		"op=EXECUTE boot_verified=TRUE action=ALLOW\n" +
		"DEFAULT op=EXECUTE action=DENY\n" +
		"DEFAULT action=ALLOW\n"
	o := newOracle()
	o.add(t, 1, allowlist)
	c.Load(t, allowlist, "--success-audit")

	var wrong []string
	denied := 0
	for i := range floodExecs {
		target, wantAllowed := busybox, i%2 == 0
		if !wantAllowed {
			target = untrusted
			denied++
		}
		err := exec.Command(target, "true").Run()
		if allowed := err == nil; allowed != wantAllowed || err != nil && !errors.Is(err, syscall.EACCES) {
			if len(wrong) < 10 {
				wrong = append(wrong, target+": "+errString(err))
			}
		}
	}
	if len(wrong) > 0 {
		t.Errorf("execs decided wrongly during the flood: %q", wrong)
	}

	flooded := c.MustStatus(t)
	if flooded.EventsDropped == 0 {
		t.Fatalf("status reports no dropped events after %d execs (the ring holds about %d records); the flood did not overflow it", floodExecs, ringRecords)
	}
	if _, deny, _ := flooded.Counts(guestcli.HookBprm); deny != uint64(denied) {
		t.Errorf("BPRM_CHECK deny counter %d, want %d: one per denied exec, and nothing else denied", deny, denied)
	}
	read := c.Events(t)
	final, res := c.Status(t)
	if res.Code != 0 {
		t.Fatalf("bpfipe status: %s", res)
	}
	// The last status's own exec was decided before it read the counters
	// and after the reader drained: its records are still in the ring.
	tail, tailReader := c.EventsFrom(t)
	statusRecords := 0
	for _, r := range tail {
		switch r.PID {
		case res.PID:
			statusRecords++
		case tailReader:
		default:
			t.Errorf("record after the flood of a process that was not running: %v", r)
		}
	}

	t.Logf("%d execs (%d denied): %d decisions, %d records read, %d dropped", floodExecs, denied, final.Decisions(), len(read), final.EventsDropped)
	if got := uint64(len(read)+statusRecords) + final.EventsDropped; got != final.Decisions() {
		t.Errorf("records read (%d) + dropped (%d) + the last status's own (%d) = %d, want the %d decisions the counters saw",
			len(read), final.EventsDropped, statusRecords, got, final.Decisions())
	}
	if uint64(len(read)) > ringRecords+1 {
		t.Errorf("read %d records after the flood, more than the ring holds (%d)", len(read), ringRecords)
	}
	for _, r := range append(read, tail...) {
		if err := o.check(r); err != nil {
			t.Error(err)
			break
		}
	}
	if final.ScratchBusy != 0 || final.PathsLost != 0 {
		t.Errorf("scratch_busy=%d paths_lost=%d: hook calls went undecided or events lost their paths during the flood", final.ScratchBusy, final.PathsLost)
	}
}

func errString(err error) string {
	if err == nil {
		return "allowed"
	}
	return err.Error()
}
