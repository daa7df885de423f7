// Package policy is the IPE policy language: the parser that accepts exactly
// what in-tree IPE accepts, the reference evaluator with IPE's semantics, and
// the renderer that prints rules the way IPE's audit records do.
package policy

// Op is an IPE operation. The numbering is the kernel's (security/ipe/policy.h)
// and is part of the BPF ABI: the kernel tables are indexed by it.
type Op uint8

const (
	OpExecute Op = iota
	OpFirmware
	OpKmodule
	OpKexecImage
	OpKexecInitramfs
	OpPolicy
	OpX509Cert
	// OpInvalid is what an unknown kernel read/load id maps to. It cannot
	// be written in a policy; it is decided by the global DEFAULT.
	OpInvalid
)

// NumOps is the number of operations a policy can name.
const NumOps = int(OpInvalid)

var opNames = [...]string{"EXECUTE", "FIRMWARE", "KMODULE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY", "X509_CERT", "UNKNOWN"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "UNKNOWN"
}

// Ops lists the operations a policy can name, in kernel order.
func Ops() []Op {
	return []Op{OpExecute, OpFirmware, OpKmodule, OpKexecImage, OpKexecInitramfs, OpPolicy, OpX509Cert}
}

// Action is what a rule or DEFAULT decides.
type Action uint8

const (
	Deny Action = iota
	Allow
)

func (a Action) String() string {
	if a == Allow {
		return "ALLOW"
	}
	return "DENY"
}

// PropKind names one of IPE's five properties; the boolean ones come in a
// TRUE and a FALSE form, carried by Property.Value.
type PropKind uint8

const (
	PropBootVerified PropKind = iota
	PropDMVeritySignature
	PropFSVeritySignature
	PropDMVerityRootHash
	PropFSVerityDigest
)

var propNames = [...]string{"boot_verified", "dmverity_signature", "fsverity_signature", "dmverity_roothash", "fsverity_digest"}

func (k PropKind) String() string { return propNames[k] }

// IsDigest reports whether the property compares a digest rather than a boolean.
func (k PropKind) IsDigest() bool { return k == PropDMVerityRootHash || k == PropFSVerityDigest }

// Digest is an `alg:hex` value. Alg is free text compared byte for byte, as
// the kernel's strcmp does; Bytes may be empty (`sha256:` parses and never matches).
type Digest struct {
	Alg   string
	Bytes []byte
}

// Property is one `name=value` condition of a rule.
type Property struct {
	Kind   PropKind
	Value  bool   // for the boolean properties: TRUE or FALSE
	Digest Digest // for dmverity_roothash and fsverity_digest
}

// Rule is one non-DEFAULT line: all properties must hold (AND) for it to match.
type Rule struct {
	Op     Op
	Props  []Property
	Action Action
	// Index is the rule's position among all rules of the policy, in file
	// order, counting from 0. It identifies the rule in kernel events.
	Index int
	// Line is the 1-based line number the rule came from.
	Line int
}

// Policy is a parsed IPE policy.
type Policy struct {
	Name    string
	Version Version
	// GlobalDefault is the `DEFAULT action=X` line, if any.
	GlobalDefault *Action
	// OpDefaults holds the `DEFAULT op=O action=X` lines, indexed by Op.
	OpDefaults [NumOps]*Action
	// Rules are all rules in file order; Rule.Index is the position here.
	Rules []Rule
}

// Version is IPE's three-part u16 version.
type Version struct{ Major, Minor, Rev uint16 }

// U64 is the ordering IPE uses (policy.c ver_to_u64).
func (v Version) U64() uint64 { return uint64(v.Major)<<32 | uint64(v.Minor)<<16 | uint64(v.Rev) }

// Subject is what is known about the file an operation acts on, as the
// evaluator sees it.
type Subject struct {
	// HasFile is false for anonymous executable memory and kernel_load_data.
	HasFile          bool
	BootVerified     bool
	DMVerityRootHash *Digest // nil when the file's block device has no known root hash
	DMVeritySigned   bool
	FSVerityDigest   *Digest // nil when the file has no fs-verity
	FSVeritySigned   bool
}

// Observability says which properties the kernel in use can establish. A
// property it cannot observe is false in both its forms, as IPE treats a
// property whose Kconfig is off. boot_verified is always observable.
type Observability struct {
	DMVerityRootHash  bool
	DMVeritySignature bool
	FSVerityDigest    bool
	FSVeritySignature bool
}

// AllObservable is what in-tree IPE with every property compiled in observes.
var AllObservable = Observability{true, true, true, true}

// Scope says what decided an evaluation.
type Scope uint8

const (
	ScopeRule Scope = iota
	ScopeOpDefault
	ScopeGlobalDefault
)

// Decision is the outcome of an evaluation and what produced it.
type Decision struct {
	Action Action
	Scope  Scope
	Op     Op
	Rule   *Rule // set when Scope is ScopeRule
}
