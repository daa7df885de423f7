package kernelipe

import (
	"testing"
)

// FuzzParseMessage feeds arbitrary datagrams to the audit socket parser.
// Besides not panicking, an access record that parses must read back the
// same from the layout bpfipe prints it in.
func FuzzParseMessage(f *testing.F) {
	for _, text := range []string{
		`audit(1653364370.067:61): ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=2241 comm="ld-linux.so" path="/deny/lib/libc.so.6" dev="sda2" ino=14549020 rule="DEFAULT action=DENY"`,
		`audit(1.000:9): ipe_op=EXECUTE ipe_hook=MPROTECT enforcing=1 pid=77 comm=7801 path=? dev=? ino=? rule="op=EXECUTE dmverity_roothash="sha256":CD2C action=DENY"`,
		`audit(1.000:2): policy_name="a" policy_version=0.0.0 policy_digest=sha256:820E auid=4294967295 ses=4294967295 lsm=ipe res=1 errno=0`,
		`audit(1.000:6): old_active_pol_name=? old_active_pol_version=? old_policy_digest=? new_active_pol_name="p" new_active_pol_version=0.0.1 new_policy_digest=sha256:AB auid=0 ses=3 lsm=ipe res=1`,
		`audit(1.000:7): enforcing=0 old_enforcing=1 auid=1 ses=1 enabled=1 old-enabled=1 lsm=ipe res=1`,
		`audit(1.000:7): `,
	} {
		for _, typ := range []uint16{TypeAccess, TypePolicyLoad, TypeConfigChange, TypeMACStatus} {
			f.Add(datagram(typ, text, false))
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := ParseMessage(b)
		if err != nil {
			return
		}
		rec, err := ParseRecord(msg.Type, msg.Payload)
		if err != nil || rec.Access == nil {
			return
		}
		_ = rec.JSON()
		again, err := ParseAccess(rec.Access.String())
		if err != nil {
			t.Fatalf("record %q printed as %q does not parse: %v", msg.Payload, rec.Access.String(), err)
		}
		if again != *rec.Access {
			t.Fatalf("record %q: %+v, printed and parsed again: %+v", msg.Payload, *rec.Access, again)
		}
	})
}

// FuzzParseLine covers the log-line entry point and every record type.
func FuzzParseLine(f *testing.F) {
	f.Add(`type=1420 audit(1.000:1): ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=0 pid=1 comm="bash" path="/x" dev="tmpfs" ino=2 rule="DEFAULT op=EXECUTE action=DENY"`)
	f.Add(`audit: type=1422 audit(1.000:3): policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-74`)
	f.Add(`type=1421 audit(1.000:5): old_active_pol_name="A" old_active_pol_version=0.0.0 old_policy_digest=sha256:E3 new_active_pol_name="b" new_active_pol_version=0.0.1 new_policy_digest=sha256:82 auid=1 ses=1 lsm=ipe res=1`)
	f.Fuzz(func(t *testing.T, line string) {
		rec, err := ParseLine(line)
		if err != nil {
			return
		}
		_ = rec.String()
		_ = rec.JSON()
		_ = rec.IsIPE()
	})
}
