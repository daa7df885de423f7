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
const stateFormat = 2

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
	// Text is the policy text itself (the content of a signed blob). It
	// is stored after the JSON, as is (encodeState).
	Text string `json:"-"`
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

// The state blob: a little-endian u32 length and the JSON of the State;
// then the policy texts as they are, each a u32 length and the bytes:
// the active policy's, then the previous one's (empty when there is
// none). A 100,000-rule text is 11 MB: escaping it into JSON and back took
// more of an update than compiling the policy. The map value is sized to
// the blob, rounded up to 8 bytes, so the lengths say where each part ends.
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
	var previous string
	if s.Previous != nil {
		previous = s.Previous.Text
	}
	parts := []string{string(body), s.Active.Text, previous}
	size := 0
	for _, part := range parts {
		size += stateHeaderLen + len(part)
	}
	if size > maxStateBlob {
		return nil, fmt.Errorf("encode state: %d bytes exceed the %d bpfipe keeps; the policy text is too large", size, maxStateBlob)
	}
	// Array map values are 8-byte aligned in the kernel anyway.
	blob := make([]byte, 0, (size+7)&^7)
	for _, part := range parts {
		blob = binary.LittleEndian.AppendUint32(blob, uint32(len(part)))
		blob = append(blob, part...)
	}
	return blob[:cap(blob)], nil
}

// decodeState reads a state map value.
func decodeState(blob []byte) (*State, error) {
	body, rest, err := statePart(blob)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("decode state: %w: %w", errStateCorrupt, err)
	}
	// Before the texts: another format need not have them.
	if s.Format != stateFormat {
		return nil, fmt.Errorf("decode state: format %d, this bpfipe reads %d: unload with the bpfipe that loaded it", s.Format, stateFormat)
	}
	active, rest, err := statePart(rest)
	if err != nil {
		return nil, err
	}
	previous, _, err := statePart(rest)
	if err != nil {
		return nil, err
	}
	s.Active.Text = string(active)
	if s.Previous != nil {
		s.Previous.Text = string(previous)
	}
	return &s, nil
}

// statePart splits one length-prefixed part off the front of blob.
func statePart(blob []byte) (part, rest []byte, err error) {
	if len(blob) < stateHeaderLen {
		return nil, nil, fmt.Errorf("decode state: %d bytes where a length should be: %w", len(blob), errStateCorrupt)
	}
	n := binary.LittleEndian.Uint32(blob)
	blob = blob[stateHeaderLen:]
	if uint64(n) > uint64(len(blob)) {
		return nil, nil, fmt.Errorf("decode state: length %d exceeds the %d bytes left: %w", n, len(blob), errStateCorrupt)
	}
	return blob[:n], blob[n:], nil
}
