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
// This is their one Go home: abi_test.go checks each against the header and
// fails on a define of the header that has no counterpart here. The ops
// (IPE_OP_*) are policy.Op, which abi_test.go holds to the header too.

// Row kinds of a row key's Kind (enum ipe_row_kind). Kind 0 is no row.
const (
	RowKindBase uint8 = iota + 1
	RowKindDV
	RowKindFV
	RowKindDVFV
)

// A boolean property's state (IPE_PROP_*): the verdict slot of a file is
// boot_verified + 3*dmverity_signature + 9*fsverity_signature.
const (
	PropUnobservable = 0
	PropTrue         = 1
	PropFalse        = 2
	// NumStates is the number of combinations of the three boolean
	// properties' states, and of verdicts in a Row (IPE_STATES).
	NumStates = 27
)

// Sizes of a Digest (IPE_ALG_LEN, IPE_DIGEST_MAX) and of an Event's path
// and device name (IPE_PATH_MAX, IPE_SID_LEN).
const (
	AlgLen    = 32
	DigestMax = 64
	PathMax   = 256
	SIDLen    = 32
)

// Verdicts: a rule's is its index << 1 | action; a DEFAULT's is
// VerdictOpDefault or VerdictGlobalDefault | action, above every rule's
// (IPE_VERDICT_*).
const (
	VerdictOpDefault     uint32 = 0xfffffff8
	VerdictGlobalDefault uint32 = 0xfffffffa
	// NoVerdict marks a state in which no rule of a row matches
	// (IPE_NO_VERDICT).
	NoVerdict uint32 = 0xffffffff
	// The action of a verdict (IPE_ACTION_*).
	ActionDeny  = 0
	ActionAllow = 1
)

// Bits of a BASE row's Needs: what the rules of its op use (IPE_NEED_*).
const (
	NeedBootVerified uint32 = 1 << iota
	NeedDMVeritySignature
	NeedFSVeritySignature
	NeedDVRows
	NeedFVRows
	NeedDVFVRows
)

// Links is how many rows of one kind and op may share a digest fold
// (IPE_LINKS); a row key's Link tells them apart.
const Links = 4

// Who decided, in Event.Scope (IPE_SCOPE_*).
const (
	ScopeRule          = 0
	ScopeOpDefault     = 1
	ScopeGlobalDefault = 2
)

// Hooks, numbered as events and counters number them (IPE_HOOK_*).
const (
	HookBprmCheck uint8 = iota
	HookMmap
	HookMprotect
	HookKernelRead
	HookKernelLoad
	NumHooks = 5
)

// hookNames are the hooks' names in IPE's audit (ipe_hook=), which their
// IPE_HOOK_* defines spell too.
var hookNames = [NumHooks]string{
	HookBprmCheck:  "BPRM_CHECK",
	HookMmap:       "MMAP",
	HookMprotect:   "MPROTECT",
	HookKernelRead: "KERNEL_READ",
	HookKernelLoad: "KERNEL_LOAD",
}

// HookName is the ipe_hook= name of a hook number from an event or a
// counter index, or "UNKNOWN".
func HookName(hook uint8) string {
	if int(hook) < len(hookNames) {
		return hookNames[hook]
	}
	return "UNKNOWN"
}

// Indices of the per-CPU counters map past the per-decision ones, which
// DecisionCounter gives (IPE_COUNTER_*).
const (
	// CounterEventsDropped counts decisions whose event found the ring
	// buffer full.
	CounterEventsDropped = NumHooks*2 + iota
	// CounterNoPolicy counts hook calls allowed because no policy was
	// active, which IPE neither decides nor audits.
	CounterNoPolicy
	// CounterScratchBusy counts hook calls that had an fs-verity digest to
	// read and found all of their CPU's scratch slots taken: denied when
	// enforcing, allowed when permissive, and neither decided nor audited.
	CounterScratchBusy
	// CounterPathLost counts events sent without their file's path (empty,
	// marked truncated) because every scratch slot was taken.
	CounterPathLost
	// NumCounters is the size of the counters map.
	NumCounters
)

// DecisionCounter is the counter of decisions with action on hook.
func DecisionCounter(hook, action uint8) uint32 { return uint32(hook)*2 + uint32(action) }

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
