package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The running enforcement's one home: root-only (0700), holding the pinned
// maps, the pinned links and the state map, however it was started.
const (
	DefaultPinDir = "/sys/fs/bpf/bpfipe"
	// The lock lives outside bpffs because the pin directory comes and goes.
	defaultLockFile = "/run/bpfipe.lock"
)

// Names inside the pin directory. Maps keep their BPF names; links are
// named after their programs.
const (
	stateName  = "state"
	linkPrefix = "link_"
	// The state map being replaced by an update is pinned aside first, so
	// the swap is one rename. (bpffs refuses names with dots.)
	stateNextName = "state_next"
)

// Map names of bpf/maps.h that the loader uses: the stable interface.
const (
	mapPolicy      = "policy"
	mapSettings    = "settings"
	mapDevices     = "devices"
	mapCounters    = "counters"
	mapEvents      = "events"
	mapCgroupScope = "cgroup_scope"
)

var (
	// ErrNotLoaded: no enforcement is running.
	ErrNotLoaded = errors.New("bpfipe is not loaded")
	// ErrAlreadyLoaded: enforcement is running; update or unload it.
	ErrAlreadyLoaded = errors.New("bpfipe is already loaded")
)

// paths locates the running state; tests point it at a private bpffs.
type paths struct {
	pinDir   string
	lockFile string
}

var defaultPaths = paths{pinDir: DefaultPinDir, lockFile: defaultLockFile}

func (p paths) pin(name string) string { return filepath.Join(p.pinDir, name) }

// stagingDir names the directory a load pins into before one rename
// publishes it, so a load that fails half-way leaves nothing behind.
func (p paths) stagingDir() string {
	return fmt.Sprintf("%s-new-%d", p.pinDir, os.Getpid())
}

// lock serializes bpfipe commands that change the running state.
func (p paths) lock() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(p.lockFile), 0o755); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	f, err := os.OpenFile(p.lockFile, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p.lockFile, err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// loaded says whether a running enforcement's pins are present. A pin
// directory without a state map is a leftover bpfipe did not make (its
// own loads publish complete directories): it is reported, not guessed at.
func (p paths) loaded() (bool, error) {
	_, err := os.Stat(p.pin(stateName))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("stat state: %w", err)
	}
	if _, err := os.Stat(p.pinDir); err == nil {
		return false, fmt.Errorf("%s exists but holds no bpfipe state; run bpfipe unload to remove it", p.pinDir)
	}
	return false, nil
}

// stagingLeftovers lists the staging directories present. Under the
// command lock every one is a load that died before publishing: a load
// holds the lock until its rename.
func (p paths) stagingLeftovers() ([]string, error) {
	parent := filepath.Dir(p.pinDir)
	entries, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", parent, err)
	}
	prefix := filepath.Base(p.pinDir) + "-new-"
	var dirs []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			dirs = append(dirs, filepath.Join(parent, e.Name()))
		}
	}
	return dirs, nil
}

// removeStaging takes down the staging directories of loads that died
// before publishing. A load killed after pinning its links leaves them
// attached, enforcing a policy no command would report: they must go.
// The caller holds the command lock.
func (p paths) removeStaging() error {
	dirs, err := p.stagingLeftovers()
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		ids, err := takeDown(dir)
		if err == nil {
			err = waitLinksGone(ids, detachTimeout)
		}
		if err != nil {
			return fmt.Errorf("remove the pins of a killed load: %w", err)
		}
	}
	return nil
}

// takeDown ends the enforcement pinned in dir. Detaching is not atomic: a
// link goes when its last reference does, which for a pin is after an RCU
// grace period, so for a moment some hooks would run and others not (an
// exec allowed by bprm_check_security, then its mapping denied by
// mmap_file, kills the process). Emptying the policy slot first makes
// every program allow, as IPE does with no policy, in one step the kernel
// completes before returning; then the pins go. It returns the links'
// IDs, for waitLinksGone once the caller has dropped its own handles.
func takeDown(dir string) ([]link.ID, error) {
	if m, err := ebpf.LoadPinnedMap(filepath.Join(dir, mapPolicy), nil); err == nil {
		err := m.Delete(uint32(0))
		m.Close()
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("clear policy: %w", err)
		}
	}
	ids := pinnedLinkIDs(dir)
	return ids, removePinDir(dir)
}

// detachTimeout bounds the wait for links and the guard's programs to go
// once nothing holds them. The kernel frees them after RCU grace periods,
// which take seconds on a loaded machine without KVM; the wait ends as soon
// as they are gone, so the bound only matters when something is wrong.
const detachTimeout = 30 * time.Second

func pinnedLinkIDs(dir string) []link.ID {
	entries, _ := os.ReadDir(dir)
	var ids []link.ID
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), linkPrefix) {
			continue
		}
		lk, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			continue
		}
		if info, err := lk.Info(); err == nil {
			ids = append(ids, info.ID)
		}
		lk.Close()
	}
	return ids
}

// waitLinksGone waits until no link of ids exists any more, so that the
// caller's next exec runs no bpfipe program.
func waitLinksGone(ids []link.ID, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, id := range ids {
		for {
			lk, err := link.NewFromID(id)
			if err != nil {
				break
			}
			lk.Close()
			if time.Now().After(deadline) {
				return fmt.Errorf("detach programs: link %d still attached after %v", id, limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// removePinDir unpins everything in dir, links first so enforcement stops
// before the maps it reads go away, then removes dir.
func removePinDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	var first error
	for _, pass := range []func(string) bool{
		func(n string) bool { return strings.HasPrefix(n, linkPrefix) },
		func(n string) bool { return !strings.HasPrefix(n, linkPrefix) },
	} {
		for _, e := range entries {
			if pass(e.Name()) {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) && first == nil {
					first = fmt.Errorf("unpin %s: %w", e.Name(), err)
				}
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && first == nil {
		first = fmt.Errorf("remove pin directory: %w", err)
	}
	return first
}

// mountBPFFS makes sure dir is on a bpf filesystem, mounting one root-only
// when it is not (minimal systems, fresh mount namespaces).
func mountBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// stateChunk is the size of one state map value: the encoded state is cut
// into as many as it needs.
const stateChunk = 1 << 20

// newStateMap stores s in a new array map, one stateChunk-sized piece per
// entry, frozen so nothing can change it behind the loader's back: an update
// makes a new one.
func newStateMap(s *State) (*ebpf.Map, error) {
	blob, err := encodeState(s)
	if err != nil {
		return nil, err
	}
	chunk := min(len(blob), stateChunk)
	entries := (len(blob) + chunk - 1) / chunk
	padded := make([]byte, entries*chunk)
	copy(padded, blob)
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "bpfipe_state",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  uint32(chunk),
		MaxEntries: uint32(entries),
	})
	if err != nil {
		return nil, fmt.Errorf("create state map: %w", err)
	}
	for i := range entries {
		if err := m.Put(uint32(i), padded[i*chunk:(i+1)*chunk]); err != nil {
			m.Close()
			return nil, fmt.Errorf("write state map: %w", err)
		}
	}
	if err := m.Freeze(); err != nil {
		m.Close()
		return nil, fmt.Errorf("freeze state map: %w", err)
	}
	return m, nil
}

// readStateMap decodes the state a state map holds, joining its entries.
func readStateMap(m *ebpf.Map) (*State, error) {
	blob := make([]byte, 0, int(m.MaxEntries())*int(m.ValueSize()))
	for i := range m.MaxEntries() {
		piece, err := m.LookupBytes(i)
		if err != nil {
			return nil, fmt.Errorf("read state map: %w", err)
		}
		blob = append(blob, piece...)
	}
	return decodeState(blob)
}

// loadPinnedMap opens a pinned map, saying ErrNotLoaded when it is gone.
func loadPinnedMap(p paths, name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(p.pin(name), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open pinned map %s: %w", name, ErrNotLoaded)
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s: %w", name, err)
	}
	return m, nil
}
