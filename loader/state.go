package loader

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bpfipe/bpfipe/policy"
)

// stateFormat versions the State encoding; a reader refuses other versions
// rather than misreading them.
const stateFormat = 1

// State is what the running enforcement needs to be understood and changed
// from any shell: the policy in force and the options it was started with.
// It lives in a one-entry BPF array map pinned beside the others, so it
// exists exactly as long as the pins do and is as root-only as they are.
type State struct {
	Format int `json:"format"`
	// Instance identifies one load; a foreground loader that finds another
	// instance's pins on exit leaves them alone.
	Instance string `json:"instance"`

	Active ActivePolicy `json:"active"`
	// Previous is the policy the last update replaced, so events still in
	// the ring buffer from before the update render their rule.
	Previous *ActivePolicy `json:"previous,omitempty"`

	// CgroupPath is the cgroup v2 directory enforcement is scoped to; empty
	// means system-wide.
	CgroupPath string `json:"cgroup_path,omitempty"`
	CgroupID   uint64 `json:"cgroup_id,omitempty"`
	// BootRoot says where boot_sdev came from: "initramfs", a path given
	// with --boot-root, or empty when no superblock is boot_verified.
	BootRoot string `json:"boot_root,omitempty"`
	BootSdev uint32 `json:"boot_sdev,omitempty"`

	// DMVerityMode is DMVerityUserspace or DMVerityCapture.
	DMVerityMode string `json:"dm_verity_mode"`
	// Observable lists what Observability.Names gave at load.
	Observable []string `json:"observable"`
	// Programs are the BPF programs attached, by name.
	Programs []string `json:"programs"`

	// PID is the foreground loader's process, 0 when started with --pin;
	// PIDStart is its start time in clock ticks (/proc/PID/stat field 22),
	// so a recycled PID is never signalled.
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pid_start,omitempty"`

	LoadedAt time.Time `json:"loaded_at"`

	// Tamper resistance (guard.go): the guard's authorised executable
	// (nil when none runs), the lock, and the DER certificates every
	// update must be signed by.
	Guard   *GuardState `json:"guard,omitempty"`
	Locked  bool        `json:"locked,omitempty"`
	Trusted [][]byte    `json:"trusted,omitempty"`
}

// LoaderRunning reports whether the foreground loader that started
// enforcement is still running; false for --pin loads.
func (s *State) LoaderRunning() bool {
	if s.PID == 0 {
		return false
	}
	start, err := processStart(s.PID)
	return err == nil && start == s.PIDStart
}

// ActivePolicy is one policy as loaded.
type ActivePolicy struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Generation is echoed by the BPF programs in every event.
	Generation uint32 `json:"generation"`
	// Digest is "sha256:HEX" of the bytes loaded (the PKCS#7 blob when
	// signed), which is what IPE's records call policy_digest.
	Digest string `json:"digest"`
	Signed bool   `json:"signed"`
	// Text is the policy text itself (the content of a signed blob).
	Text string `json:"text"`
}

// Parse parses the stored policy text again, for rendering rules.
func (a *ActivePolicy) Parse() (*policy.Policy, error) {
	return policy.Parse(a.Name, []byte(a.Text))
}

// VersionValue is the version as IPE orders versions.
func (a *ActivePolicy) VersionValue() (policy.Version, error) {
	return parseVersion(a.Version)
}

func parseVersion(s string) (policy.Version, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return policy.Version{}, fmt.Errorf("parse version %q: not MAJOR.MINOR.REV", s)
	}
	var n [3]uint16
	for i, part := range parts {
		v, err := strconv.ParseUint(part, 10, 16)
		if err != nil {
			return policy.Version{}, fmt.Errorf("parse version %q: %w", s, err)
		}
		n[i] = uint16(v)
	}
	return policy.Version{Major: n[0], Minor: n[1], Rev: n[2]}, nil
}

// The state blob: a little-endian u32 length, then JSON. The map value is
// sized to the blob, so the length says where the JSON ends.
const stateHeaderLen = 4

// maxStateBlob bounds the encoded state. It is spread over the entries of
// the state map (stateChunk bytes each, since one array map value may hold
// at most KMALLOC_MAX_SIZE, 4 MiB on x86_64), so the bound only keeps a
// runaway policy from taking unbounded kernel memory: 1<<20 rules, the
// compiler's row limit, take about 120 MiB of text.
var maxStateBlob = 256 << 20

var errStateCorrupt = errors.New("state corrupt")

// encodeState serializes s as the value of the state map.
func encodeState(s *State) ([]byte, error) {
	s.Format = stateFormat
	body, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	size := stateHeaderLen + len(body)
	if size > maxStateBlob {
		return nil, fmt.Errorf("encode state: %d bytes exceed the %d bpfipe keeps; the policy text is too large", size, maxStateBlob)
	}
	// Array map values are 8-byte aligned in the kernel anyway.
	blob := make([]byte, (size+7)&^7)
	binary.LittleEndian.PutUint32(blob, uint32(len(body)))
	copy(blob[stateHeaderLen:], body)
	return blob, nil
}

// decodeState reads a state map value.
func decodeState(blob []byte) (*State, error) {
	if len(blob) < stateHeaderLen {
		return nil, fmt.Errorf("decode state: %d bytes: %w", len(blob), errStateCorrupt)
	}
	n := binary.LittleEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-stateHeaderLen) {
		return nil, fmt.Errorf("decode state: length %d exceeds %d bytes: %w", n, len(blob)-stateHeaderLen, errStateCorrupt)
	}
	var s State
	if err := json.Unmarshal(blob[stateHeaderLen:stateHeaderLen+int(n)], &s); err != nil {
		return nil, fmt.Errorf("decode state: %w: %w", errStateCorrupt, err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("decode state: format %d, this bpfipe reads %d: unload with the bpfipe that loaded it", s.Format, stateFormat)
	}
	return &s, nil
}
