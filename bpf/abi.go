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
