package loader

import (
	"encoding/json"
	"strings"
	"testing"
)

// The expected lines are IPE's records from the reference (§4.6), with
// lsm=ipe replaced by lsm=bpfipe.
func TestConfigRecordsMatchIPELayout(t *testing.T) {
	unset := Subject{AUID: unsetID, Ses: unsetID}
	allowAll := &ActivePolicy{Name: "Allow_All", Version: "0.0.0", Digest: "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"}
	bootVerified := &ActivePolicy{Name: "boot_verified", Version: "0.0.0", Digest: "sha256:820EEA5B40CA42B51F68962354BA083122A20BB846F26765076DD8EED7B8F4DB"}
	for _, tc := range []struct {
		rec  ConfigRecord
		typ  string
		want string
	}{
		{PolicyLoadRecord{Policy: bootVerified, Subject: unset}, "IPE_POLICY_LOAD",
			`policy_name="boot_verified" policy_version=0.0.0 policy_digest=sha256:820EEA5B40CA42B51F68962354BA083122A20BB846F26765076DD8EED7B8F4DB auid=4294967295 ses=4294967295 lsm=bpfipe res=1 errno=0`},
		{PolicyLoadRecord{Subject: unset, Errno: -74}, "IPE_POLICY_LOAD",
			`policy_name=? policy_version=? policy_digest=? auid=4294967295 ses=4294967295 lsm=bpfipe res=0 errno=-74`},
		{ConfigChangeRecord{Old: allowAll, New: bootVerified, Subject: unset}, "IPE_CONFIG_CHANGE",
			`old_active_pol_name="Allow_All" old_active_pol_version=0.0.0 old_policy_digest=sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855 new_active_pol_name="boot_verified" new_active_pol_version=0.0.0 new_policy_digest=sha256:820EEA5B40CA42B51F68962354BA083122A20BB846F26765076DD8EED7B8F4DB auid=4294967295 ses=4294967295 lsm=bpfipe res=1`},
		{ConfigChangeRecord{New: bootVerified, Subject: Subject{AUID: 0, Ses: 3}}, "IPE_CONFIG_CHANGE",
			`old_active_pol_name=? old_active_pol_version=? old_policy_digest=? new_active_pol_name="boot_verified" new_active_pol_version=0.0.0 new_policy_digest=sha256:820EEA5B40CA42B51F68962354BA083122A20BB846F26765076DD8EED7B8F4DB auid=0 ses=3 lsm=bpfipe res=1`},
		{MACStatusRecord{Enforcing: false, OldEnforcing: true, Subject: Subject{AUID: 1000, Ses: 2}}, "MAC_STATUS",
			`enforcing=0 old_enforcing=1 auid=1000 ses=2 enabled=1 old-enabled=1 lsm=bpfipe res=1`},
	} {
		if got := tc.rec.String(); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.typ, got, tc.want)
		}
		if tc.rec.Type() != tc.typ {
			t.Errorf("type %s, want %s", tc.rec.Type(), tc.typ)
		}
		var fields map[string]any
		if err := json.Unmarshal(tc.rec.JSON(), &fields); err != nil {
			t.Errorf("%s JSON: %v: %s", tc.typ, err, tc.rec.JSON())
			continue
		}
		if fields["type"] != tc.typ {
			t.Errorf("%s JSON type = %v", tc.typ, fields["type"])
		}
		// Every key=value of the text is in the JSON, with the same value.
		for _, kv := range strings.Fields(tc.want) {
			k, v, _ := strings.Cut(kv, "=")
			if k == "lsm" {
				continue
			}
			got, ok := fields[k]
			if !ok {
				t.Errorf("%s JSON lacks %s", tc.typ, k)
				continue
			}
			if v == "?" {
				if got != nil {
					t.Errorf("%s JSON %s = %v, want null", tc.typ, k, got)
				}
				continue
			}
			if s, _ := json.Marshal(got); strings.Trim(string(s), `"`) != strings.Trim(v, `"`) {
				t.Errorf("%s JSON %s = %s, text has %s", tc.typ, k, s, v)
			}
		}
	}
}
