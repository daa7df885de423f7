package loader

import (
	"fmt"
	"time"

	"github.com/bpfipe/bpfipe/bpf"
)

// HookCounts are one hook's decisions since load, summed over CPUs.
type HookCounts struct {
	Hook  string `json:"hook"`
	Allow uint64 `json:"allow"`
	Deny  uint64 `json:"deny"`
}

// Status describes the running enforcement.
type Status struct {
	Loaded       bool     `json:"loaded"`
	Policy       string   `json:"policy_name,omitempty"`
	Version      string   `json:"policy_version,omitempty"`
	Generation   uint32   `json:"generation,omitempty"`
	Digest       string   `json:"policy_digest,omitempty"`
	Signed       bool     `json:"signed,omitempty"`
	Enforcing    bool     `json:"enforcing"`
	SuccessAudit bool     `json:"success_audit"`
	Scope        string   `json:"scope,omitempty"` // "system" or the cgroup path
	BootRoot     string   `json:"boot_root,omitempty"`
	BootSdev     string   `json:"boot_sdev,omitempty"` // major:minor
	DMVerityMode string   `json:"dm_verity_mode,omitempty"`
	Devices      int      `json:"dm_verity_devices"`
	Observable   []string `json:"observable,omitempty"`
	Programs     []string `json:"programs,omitempty"`
	Foreground   int      `json:"foreground_pid,omitempty"` // 0: pinned, no process
	// ForegroundRunning is false when the foreground loader died without
	// unloading: enforcement stays, pinned, until bpfipe unload.
	ForegroundRunning bool         `json:"foreground_running,omitempty"`
	LoadedAt          time.Time    `json:"loaded_at,omitzero"`
	Hooks             []HookCounts `json:"hooks,omitempty"`
	EventsDropped     uint64       `json:"events_dropped"`
	// NoPolicy counts hook calls allowed because no policy was installed.
	NoPolicy uint64 `json:"no_policy"`
	// ScratchBusy counts hook calls that had an fs-verity digest to read,
	// found no working memory free and went undecided (denied when
	// enforcing).
	ScratchBusy uint64 `json:"scratch_busy"`
	// PathsLost counts events sent without their file's path for the same
	// lack of working memory.
	PathsLost uint64 `json:"paths_lost"`

	// Resolver is the device resolver following dm-verity devices where
	// the kernel cannot capture them (resolver.go); nil with capture and
	// while a foreground loader follows them itself.
	Resolver *ResolverStatus `json:"resolver,omitempty"`
}

// Status reads the running enforcement's state, switches and counters.
func (r *Running) Status() (*Status, error) {
	st, err := readState(r.paths)
	if err != nil {
		return nil, err
	}
	settings, err := r.Settings()
	if err != nil {
		return nil, err
	}
	s := &Status{
		Loaded:            true,
		Policy:            st.Active.Name,
		Version:           st.Active.Version,
		Generation:        st.Active.Generation,
		Digest:            st.Active.Digest,
		Signed:            st.Active.Signed,
		Enforcing:         settings.Enforcing != 0,
		SuccessAudit:      settings.SuccessAudit != 0,
		Scope:             "system",
		BootRoot:          st.BootRoot,
		DMVerityMode:      st.DMVerityMode,
		Observable:        st.Observable,
		Programs:          st.Programs,
		Foreground:        st.PID,
		ForegroundRunning: st.LoaderRunning(),
		LoadedAt:          st.LoadedAt,
	}
	if st.CgroupPath != "" {
		s.Scope = st.CgroupPath
	}
	if st.DMVerityMode == DMVerityUserspace && !st.LoaderRunning() { // resolver.go; a live foreground loader resolves itself
		rs := resolverStatus(r.paths, st.Instance)
		s.Resolver = &rs
	}
	if st.BootSdev != 0 {
		s.BootSdev = fmt.Sprintf("%d:%d", st.BootSdev>>20, st.BootSdev&(1<<20-1))
	}
	counts, err := r.counterSums()
	if err != nil {
		return nil, err
	}
	for h := range bpf.NumHooks {
		s.Hooks = append(s.Hooks, HookCounts{Hook: bpf.HookName(uint8(h)), Deny: counts[h*2], Allow: counts[h*2+1]})
	}
	s.EventsDropped = at(counts, bpf.CounterEventsDropped)
	s.NoPolicy = at(counts, bpf.CounterNoPolicy)
	s.ScratchBusy = at(counts, bpf.CounterScratchBusy)
	s.PathsLost = at(counts, bpf.CounterPathLost)
	var key bpf.DeviceKey
	var value bpf.Device
	it := r.devices.Iterate()
	for it.Next(&key, &value) {
		s.Devices++
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read devices map: %w", err)
	}
	return s, nil
}

func at(counts []uint64, i int) uint64 {
	if i < len(counts) {
		return counts[i]
	}
	return 0
}

// counterSums reads every counter summed over the CPUs.
func (r *Running) counterSums() ([]uint64, error) {
	sums := make([]uint64, r.counters.MaxEntries())
	var perCPU []uint64
	for i := range sums {
		if err := r.counters.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			sums[i] += v
		}
	}
	return sums, nil
}
