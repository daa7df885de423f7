package loader

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Records of configuration changes, in the layout of the records IPE emits
// for the same changes, so logs of both read alike. They carry lsm=bpfipe:
// on a kernel that also runs in-tree IPE the two must not be confused.
// Like IPE, a policy's name is printed in quotes without escaping.

// ConfigRecord is a configuration change record.
type ConfigRecord interface {
	// Type is the audit record type name, e.g. "IPE_POLICY_LOAD".
	Type() string
	// String is the record's fields in audit's key=value layout.
	String() string
	JSON() []byte
}

// Subject is who made a change, as audit's auid= and ses= say.
type Subject struct {
	AUID uint32 `json:"auid"`
	Ses  uint32 `json:"ses"`
}

// unsetID is audit's AUDIT_UID_UNSET and AUDIT_SID_UNSET.
const unsetID = 4294967295

// CurrentSubject reads the login uid and session of this process.
func CurrentSubject() Subject {
	return Subject{AUID: readID("/proc/self/loginuid"), Ses: readID("/proc/self/sessionid")}
}

func readID(path string) uint32 {
	data, err := os.ReadFile(path)
	if err != nil {
		return unsetID
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		return unsetID
	}
	return uint32(n)
}

// PolicyLoadRecord is IPE's AUDIT_IPE_POLICY_LOAD (1422).
type PolicyLoadRecord struct {
	Policy *ActivePolicy `json:"-"` // nil when the load failed before parsing
	Subject
	Errno int `json:"errno"` // 0 on success, else the negative errno
}

func (r PolicyLoadRecord) Type() string { return "IPE_POLICY_LOAD" }

func (r PolicyLoadRecord) String() string {
	pol := "policy_name=? policy_version=? policy_digest=?"
	if r.Policy != nil {
		pol = fmt.Sprintf("policy_name=\"%s\" policy_version=%s policy_digest=%s", r.Policy.Name, r.Policy.Version, r.Policy.Digest)
	}
	return fmt.Sprintf("%s auid=%d ses=%d lsm=bpfipe res=%d errno=%d", pol, r.AUID, r.Ses, boolDigit(r.Errno == 0), r.Errno)
}

func (r PolicyLoadRecord) JSON() []byte {
	type out struct {
		Name    *string `json:"policy_name"`
		Version *string `json:"policy_version"`
		Digest  *string `json:"policy_digest"`
		Subject
		Res   int `json:"res"`
		Errno int `json:"errno"`
	}
	o := out{Subject: r.Subject, Res: boolDigit(r.Errno == 0), Errno: r.Errno}
	if r.Policy != nil {
		o.Name, o.Version, o.Digest = &r.Policy.Name, &r.Policy.Version, &r.Policy.Digest
	}
	return typedJSON(r.Type(), o)
}

// ConfigChangeRecord is IPE's AUDIT_IPE_CONFIG_CHANGE (1421): a policy
// became active. Old is nil when none was.
type ConfigChangeRecord struct {
	Old, New *ActivePolicy
	Subject
}

func (r ConfigChangeRecord) Type() string { return "IPE_CONFIG_CHANGE" }

func (r ConfigChangeRecord) String() string {
	old := "old_active_pol_name=? old_active_pol_version=? old_policy_digest=?"
	if r.Old != nil {
		old = fmt.Sprintf("old_active_pol_name=\"%s\" old_active_pol_version=%s old_policy_digest=%s", r.Old.Name, r.Old.Version, r.Old.Digest)
	}
	return fmt.Sprintf("%s new_active_pol_name=\"%s\" new_active_pol_version=%s new_policy_digest=%s auid=%d ses=%d lsm=bpfipe res=1",
		old, r.New.Name, r.New.Version, r.New.Digest, r.AUID, r.Ses)
}

func (r ConfigChangeRecord) JSON() []byte {
	type out struct {
		OldName    *string `json:"old_active_pol_name"`
		OldVersion *string `json:"old_active_pol_version"`
		OldDigest  *string `json:"old_policy_digest"`
		NewName    string  `json:"new_active_pol_name"`
		NewVersion string  `json:"new_active_pol_version"`
		NewDigest  string  `json:"new_policy_digest"`
		Subject
		Res int `json:"res"`
	}
	o := out{NewName: r.New.Name, NewVersion: r.New.Version, NewDigest: r.New.Digest, Subject: r.Subject, Res: 1}
	if r.Old != nil {
		o.OldName, o.OldVersion, o.OldDigest = &r.Old.Name, &r.Old.Version, &r.Old.Digest
	}
	return typedJSON(r.Type(), o)
}

// MACStatusRecord is AUDIT_MAC_STATUS (1404), which IPE emits when the
// enforce switch changes value.
type MACStatusRecord struct {
	Enforcing, OldEnforcing bool
	Subject
}

func (r MACStatusRecord) Type() string { return "MAC_STATUS" }

func (r MACStatusRecord) String() string {
	return fmt.Sprintf("enforcing=%d old_enforcing=%d auid=%d ses=%d enabled=1 old-enabled=1 lsm=bpfipe res=1",
		boolDigit(r.Enforcing), boolDigit(r.OldEnforcing), r.AUID, r.Ses)
}

func (r MACStatusRecord) JSON() []byte {
	return typedJSON(r.Type(), struct {
		Enforcing    int `json:"enforcing"`
		OldEnforcing int `json:"old_enforcing"`
		Subject
		Enabled    int `json:"enabled"`
		OldEnabled int `json:"old-enabled"`
		Res        int `json:"res"`
	}{boolDigit(r.Enforcing), boolDigit(r.OldEnforcing), r.Subject, 1, 1, 1})
}

// SuccessAuditRecord reports a change of success_audit. IPE emits no record
// for it; bpfipe prints one in the same layout so every change is visible.
type SuccessAuditRecord struct {
	SuccessAudit, Old bool
	Subject
}

func (r SuccessAuditRecord) Type() string { return "BPFIPE_SUCCESS_AUDIT" }

func (r SuccessAuditRecord) String() string {
	return fmt.Sprintf("success_audit=%d old_success_audit=%d auid=%d ses=%d lsm=bpfipe res=1",
		boolDigit(r.SuccessAudit), boolDigit(r.Old), r.AUID, r.Ses)
}

func (r SuccessAuditRecord) JSON() []byte {
	return typedJSON(r.Type(), struct {
		SuccessAudit int `json:"success_audit"`
		Old          int `json:"old_success_audit"`
		Subject
		Res int `json:"res"`
	}{boolDigit(r.SuccessAudit), boolDigit(r.Old), r.Subject, 1})
}
