package bpf

// Exported names for the ABI types bpf2go mirrors from ipe.h.
type (
	Event     = bpfipeIpeEvent
	RowKey    = bpfipeIpeRowKey
	Row       = bpfipeIpeRow
	DeviceKey = bpfipeIpeDeviceKey
	Device    = bpfipeIpeDevice
	Settings  = bpfipeIpeSettings
	Digest    = bpfipeIpeDigest
	Objects   = bpfipeObjects
)

// LoadSpec returns the collection spec of the compiled BPF object.
var LoadSpec = loadBpfipe

// Constants of ipe.h that bpf2go does not mirror (it generates types only).
// abi_test.go checks each against the header.

// Hooks, numbered as events and counters number them (IPE_HOOK_*).
const (
	HookBprmCheck uint8 = iota
	HookMmap
	HookMprotect
	HookKernelRead
	HookKernelLoad
	NumHooks = 5
)

// Indices of the per-CPU counters map past the per-decision ones, which
// DecisionCounter gives (IPE_COUNTER_*).
const (
	// CounterEventsDropped counts decisions whose event found the ring
	// buffer full.
	CounterEventsDropped = NumHooks*2 + iota
	// CounterNoPolicy counts hook calls allowed because no policy was
	// active, which IPE neither decides nor audits.
	CounterNoPolicy
	// CounterScratchBusy counts hook calls that found all of their CPU's
	// scratch slots taken: denied when enforcing, allowed when permissive,
	// and neither decided nor audited.
	CounterScratchBusy
	// NumCounters is the size of the counters map.
	NumCounters
)

// DecisionCounter is the counter of decisions with action on hook.
func DecisionCounter(hook, action uint8) uint32 { return uint32(hook)*2 + uint32(action) }

// Bits of Settings.Observable: the properties the running kernel can
// establish (IPE_OBSERVE_*). boot_verified always can.
const (
	ObserveDMVerityRootHash  uint32 = 1 << 0
	ObserveDMVeritySignature uint32 = 1 << 1
	ObserveFSVerityDigest    uint32 = 1 << 2
	ObserveFSVeritySignature uint32 = 1 << 3
)

// CapturePrefix starts the names of the programs that attach to hooks
// only Linux 6.12 and later have (bdev_setintegrity, bdev_free_security,
// inode_setintegrity): a loader deletes them from the spec on older kernels.
// There the loader fills the devices map itself, and fsverity_signature is
// unobservable.
const CapturePrefix = "capture_"

// The tamper guard (guard.c), loaded before everything it protects.
type GuardConfig = guardGuardConfig

// LoadGuardSpec returns the collection spec of the tamper guard.
var LoadGuardSpec = loadGuard

// GuardMark starts the kernel name of every map and program the guard
// protects (GUARD_MARK in guard.c); the loader names them so.
const GuardMark = "bpfipe_"

// GuardMaxLinks is how many link IDs the guard's configuration holds
// (GUARD_MAX_LINKS).
const GuardMaxLinks = 32
