package tamper

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/bpfipe/bpfipe/loader"

	"github.com/bpfipe/bpfipe/test/guest/guestcli"
)

// TestLock loads a locked enforcement in this process and checks what the
// lock refuses until reboot. Nothing can undo it, so test/tamper runs it
// alone in a guest of its own, which the reboot is.
//
// Loading in this process makes this test binary the executable the guard
// authorises, so the refusals seen here are the loader's, and the bpfipe
// command is the one the guard refuses.
func TestLock(t *testing.T) {
	requireGuest(t)
	if os.Getenv("BPFIPE_TAMPER_LOCK") != "1" {
		t.Skip("locks enforcement until reboot: test/tamper runs it in a guest of its own (BPFIPE_TAMPER_LOCK=1)")
	}
	copy := untrusted(t)
	decode := func(version string) *loader.PolicyFile {
		t.Helper()
		f, err := loader.DecodePolicy("tamper", []byte(policy(version)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	l, err := loader.Start(loader.Options{Policy: decode("0.0.1"), Enforcing: true, Foreground: true, Lock: true})
	if err != nil {
		t.Fatalf("locked load: %v", err)
	}
	checkDecisions(t, copy)

	locked := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, loader.ErrLocked) || !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s: %v, want ErrLocked", what, err)
		}
	}
	_, err = loader.Unload()
	locked("unload", err)
	_, err = l.Running.SetEnforcing(false)
	locked("switch to permissive", err)
	_, _, err = l.Running.Update(decode("0.0.2"), nil)
	locked("unsigned update", err)
	if _, err := l.Running.SetEnforcing(true); err != nil {
		t.Errorf("switch to enforcing, which the lock allows: %v", err)
	}
	checkDecisions(t, copy)

	// The bpfipe command is not the executable that loaded: the guard
	// refuses it, in one line, with the privilege status.
	for _, args := range [][]string{{"unload"}, {"enforce", "off"}, {"status"}} {
		res := guestcli.Initramfs(t).Run(t, args...)
		lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
		if res.Code != exitPrivilege || len(lines) != 1 || !strings.Contains(res.Stderr, "tamper guard") {
			t.Errorf("bpfipe %s: %s, want exit %d and one line naming the tamper guard", strings.Join(args, " "), res, exitPrivilege)
		}
	}

	// The loader process stops; enforcement stays.
	if err := l.Stop(); err != nil {
		t.Errorf("stop the locked foreground loader: %v", err)
	}
	checkDecisions(t, copy)
	st, err := loader.Open()
	if err != nil {
		t.Fatalf("open the locked enforcement after its loader stopped: %v", err)
	}
	defer st.Close()
	if !st.State.Locked || st.State.Active.Version != "0.0.1" {
		t.Errorf("state after the loader stopped: locked %v, version %s", st.State.Locked, st.State.Active.Version)
	}
}
