package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bpfipe/bpfipe/kernelipe"
	"github.com/bpfipe/bpfipe/loader"
	"github.com/bpfipe/bpfipe/test/compare/scenario"
)

// player plays scenarios one after the other in one boot.
type player struct {
	manifest *scenario.Manifest
	cert     *x509.Certificate
	key      crypto.Signer
	audit    *kernelipe.AuditReader
	images   *imageSet
	verity   *verityDisks
	// played counts scenarios, for policy versions that only go up: IPE
	// refuses to activate a version below the highest it activated.
	played int
	marks  int
}

// opResult is one operation under one enforcer.
type opResult struct {
	outcome
	Records []loader.AccessRecord
	// Texts[i] is Records[i] as the enforcer printed it: the kernel's
	// audit text for IPE, `bpfipe events` for bpfipe.
	Texts []string
}

// played is one scenario's results under both enforcers.
type played struct {
	Scenario *scenario.Scenario
	Policy   string // the text both enforcers enforced
	IPE      []opResult
	BPF      []opResult
}

func (p *player) play(s *scenario.Scenario) (*played, error) {
	p.played++
	if err := p.prepare(s); err != nil {
		return nil, err
	}
	name := "compare_" + strings.ReplaceAll(s.Name, "-", "_")
	text, err := s.Text(name, fmt.Sprintf("1.%d.0", p.played), p.resolve)
	if err != nil {
		return nil, err
	}
	blob, err := kernelipe.Sign(text, p.cert, p.key)
	if err != nil {
		return nil, err
	}
	out := &played{Scenario: s, Policy: string(text)}
	if s.FSVeritySetUpBeforeLoad {
		held, err := p.verity.hold(s)
		if err != nil {
			return nil, err
		}
		defer closeAll(held)
	}
	if out.IPE, err = p.underIPE(s, blob); err != nil {
		return nil, fmt.Errorf("in-tree IPE: %w", err)
	}
	if out.BPF, err = p.underBpfipe(s, blob); err != nil {
		return nil, fmt.Errorf("bpfipe: %w", err)
	}
	return out, nil
}

// resolve fills in the policy's placeholders.
func (p *player) resolve(kind, name string) (string, bool) {
	switch kind {
	case "ROOTHASH":
		return p.images.rootHash(name)
	case "FSVERITY":
		return p.verity.digest(name)
	}
	return "", false
}

func (p *player) prepare(s *scenario.Scenario) error {
	for _, f := range s.Files {
		if err := copyPayload(f.From, f.To); err != nil {
			return err
		}
	}
	for _, img := range s.Images {
		if err := p.images.open(img); err != nil {
			return err
		}
	}
	for _, d := range s.FSVerity {
		if err := p.verity.open(d); err != nil {
			return err
		}
	}
	return nil
}

func copyPayload(from, to string) error {
	data, err := os.ReadFile(filepath.Join(scenario.GuestPayloadDir, from))
	if err != nil {
		return fmt.Errorf("read payload: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return fmt.Errorf("prepare %s: %w", to, err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		return fmt.Errorf("prepare %s: %w", to, err)
	}
	return nil
}

// underIPE activates the scenario's policy in the kernel's IPE, runs the
// operations and reads each one's records, then leaves IPE allowing
// everything with an allow-all policy of a higher version (IPE cannot be
// unloaded), so bpfipe's run that follows is alone in deciding.
func (p *player) underIPE(s *scenario.Scenario, blob []byte) (results []opResult, err error) {
	ipe := kernelipe.FS{}
	if err := ipe.SetSuccessAudit(s.SuccessAudit); err != nil {
		return nil, err
	}
	if err := ipe.SetEnforce(!s.Permissive); err != nil {
		return nil, err
	}
	name, err := ipe.Load(blob)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := p.allowAll(ipe, name); rerr != nil {
			err = errors.Join(err, fmt.Errorf("switch to allow-all: %w", rerr))
		}
	}()
	if err := p.verity.remount(s); err != nil {
		return nil, err
	}
	if err := p.drain(); err != nil {
		return nil, err
	}
	for _, op := range s.Ops {
		o := run(op, p.manifest)
		recs, err := p.recordsUntilMark()
		if err != nil {
			return nil, err
		}
		r := opResult{outcome: o}
		for _, rec := range recs {
			r.Records = append(r.Records, *rec.Access)
			r.Texts = append(r.Texts, rec.Body)
		}
		results = append(results, r)
	}
	return results, nil
}

func (p *player) allowAll(ipe kernelipe.FS, scenarioPolicy string) error {
	if err := ipe.SetSuccessAudit(false); err != nil {
		return err
	}
	if err := ipe.SetEnforce(true); err != nil {
		return err
	}
	text := fmt.Sprintf("policy_name=compare_allow_all_%d policy_version=1.%d.1\nDEFAULT action=ALLOW\n", p.played, p.played)
	blob, err := kernelipe.Sign([]byte(text), p.cert, p.key)
	if err != nil {
		return err
	}
	if _, err := ipe.Load(blob); err != nil {
		return err
	}
	// Inactive now, so the kernel lets it go; the names of later
	// scenarios stay free.
	return ipe.Delete(scenarioPolicy)
}

// drain reads what is pending (the load's own records) up to a mark.
func (p *player) drain() error {
	_, err := p.recordsUntilMark()
	return err
}

// recordsUntilMark returns the IPE access records made before now.
func (p *player) recordsUntilMark() ([]kernelipe.Record, error) {
	p.marks++
	mark := fmt.Sprintf("bpfipe-compare-mark-%d", p.marks)
	if err := p.audit.Mark(mark); err != nil {
		return nil, err
	}
	p.audit.SetDeadline(time.Now().Add(15 * time.Second))
	defer p.audit.SetDeadline(time.Time{})
	var recs []kernelipe.Record
	for {
		rec, err := p.audit.Read()
		if errors.Is(err, kernelipe.ErrMalformedRecord) {
			fmt.Fprintf(os.Stderr, "guestrun: warning: %v\n", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for audit mark: %w", err)
		}
		if kernelipe.IsMark(rec, mark) {
			return recs, nil
		}
		if rec.Access != nil {
			recs = append(recs, rec)
		}
	}
}

// underBpfipe loads the same signed policy with bpfipe, pinned as `bpfipe
// load --pin --trust CERT` does, runs the operations, reads each one's
// events as `bpfipe events --json` does, and unloads. It calls the loader
// package rather than the command so that no bpfipe process has to be
// started while the policy may deny it.
func (p *player) underBpfipe(s *scenario.Scenario, blob []byte) ([]opResult, error) {
	pf, err := loader.DecodePolicy("scenario "+s.Name, blob, []*x509.Certificate{p.cert})
	if err != nil {
		return nil, err
	}
	l, err := loader.Start(loader.Options{
		Policy:       pf,
		Enforcing:    !s.Permissive,
		SuccessAudit: s.SuccessAudit,
		BootRoot:     s.BpfipeBootRoot,
		Warn:         func(msg string) { fmt.Fprintf(os.Stderr, "guestrun: bpfipe: %s\n", msg) },
	})
	if err != nil {
		return nil, err
	}
	if err := l.Close(); err != nil {
		return nil, err
	}
	running, err := loader.Open()
	if err != nil {
		loader.Unload()
		return nil, err
	}
	if err := p.verity.remount(s); err != nil {
		running.Close()
		loader.Unload()
		return nil, err
	}
	var results []opResult
	for _, op := range s.Ops {
		o := run(op, p.manifest)
		recs, err := drainEvents(running)
		if err != nil {
			running.Close()
			loader.Unload()
			return nil, err
		}
		r := opResult{outcome: o, Records: recs}
		for i := range recs {
			r.Texts = append(r.Texts, recs[i].String())
		}
		results = append(results, r)
	}
	running.Close()
	if _, err := loader.Unload(); err != nil {
		return nil, fmt.Errorf("unload: %w", err)
	}
	return results, nil
}

// drainEvents reads every event in the ring buffer: the programs write
// them inside the hook, so once an operation returned its events are
// there.
func drainEvents(r *loader.Running) ([]loader.AccessRecord, error) {
	ev, err := r.Events(false)
	if err != nil {
		return nil, err
	}
	defer ev.Close()
	var recs []loader.AccessRecord
	for {
		rec, err := ev.Read()
		if errors.Is(err, loader.ErrNoMoreEvents) {
			return recs, nil
		}
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
}
