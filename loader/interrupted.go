package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"

	"github.com/bpfipe/bpfipe/bpf"
)

// ErrUnloadInterrupted: an unload was killed after it emptied the policy
// slot and before it removed the pins. Every hook allows, as with no
// policy, while the pins still say loaded; bpfipe unload finishes the job.
var ErrUnloadInterrupted = errors.New("unload interrupted: nothing is enforced; run bpfipe unload")

// A killed update or unload leaves the pins half-way between two complete
// states. Each command settles them first, under the command lock, so what
// it reads and reports is the state the kernel enforces:
//   - state_next pinned: an update was killed between pinning its state and
//     renaming it into place. If the rows in force are of its generation the
//     swap happened and the rename is completed; otherwise it is discarded.
//   - pins without rows in the policy slot: ErrUnloadInterrupted.
//   - a staging directory (pins.go): a load was killed before it published.
//     Its links may already be pinned and enforcing, yet no command would
//     report them, so they are taken down: the load did not happen.

// settle settles a killed command's leftovers. It takes the command lock
// only when there is something to settle, so the caller must not hold it.
func (p paths) settle() error {
	if !p.unsettled() {
		return nil
	}
	unlock, err := p.lock()
	if err != nil {
		return err
	}
	defer unlock()
	_, err = p.settleLocked()
	return err
}

// unsettled is settle's check without the lock: a command running now may
// show the same signs, and settleLocked waits for it and looks again.
func (p paths) unsettled() bool {
	if _, err := os.Stat(p.pin(stateNextName)); err == nil {
		return true
	}
	if dirs, err := p.stagingLeftovers(); err != nil || len(dirs) != 0 {
		return true // an unreadable parent: settleLocked says why
	}
	m, err := ebpf.LoadPinnedMap(p.pin(mapPolicy), nil)
	if err != nil {
		return false // gone or out of reach: opening the pins says which
	}
	defer m.Close()
	_, installed, err := liveGeneration(m)
	return err == nil && !installed
}

// settleLocked settles the pins and returns the generation of the rows in
// force (0 when nothing is pinned). The caller holds the command lock.
func (p paths) settleLocked() (uint32, error) {
	if err := p.removeStaging(); err != nil {
		return 0, err
	}
	m, err := loadPinnedMap(p, mapPolicy)
	if errors.Is(err, ErrNotLoaded) {
		return 0, nil // not loaded, or an unload got past the maps: unload finishes
	}
	if err != nil {
		return 0, err
	}
	defer m.Close()
	live, installed, err := liveGeneration(m)
	if err != nil {
		return 0, err
	}
	if !installed {
		return 0, ErrUnloadInterrupted
	}
	return live, p.finishUpdate(live)
}

// finishUpdate completes or discards the state an update pinned aside,
// according to whether the rows in force are of its generation.
func (p paths) finishUpdate(live uint32) error {
	m, err := loadPinnedMap(p, stateNextName)
	if errors.Is(err, ErrNotLoaded) {
		return nil
	}
	if err != nil {
		return err
	}
	next, err := readStateMap(m)
	m.Close()
	if err == nil && next.Active.Generation == live {
		if err := os.Rename(p.pin(stateNextName), p.pin(stateName)); err != nil {
			return fmt.Errorf("publish state of an interrupted update: %w", err)
		}
		return nil
	}
	// Never swapped in (or unreadable): it describes nothing in force.
	if err := os.Remove(p.pin(stateNextName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove state of an interrupted update: %w", err)
	}
	return nil
}

// liveGeneration reads the generation from a BASE row of the rows in the
// policy slot; installed is false when the slot is empty.
func liveGeneration(policyMap *ebpf.Map) (generation uint32, installed bool, err error) {
	var rows *ebpf.Map
	err = policyMap.Lookup(uint32(0), &rows)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read policy slot: %w", err)
	}
	defer rows.Close()
	var base bpf.Row
	if err := rows.Lookup(uint32(0), &base); err != nil {
		return 0, true, fmt.Errorf("read a BASE row of the policy in force: %w", err)
	}
	return base.Generation, true, nil
}
