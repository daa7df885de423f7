// Package faults holds in-guest tests of bpfipe under load and faults:
// policy updates as fast as bpfipe update goes while execs and mappings
// are decided, the loader killed at random points of load, update and
// unload, and an event flood that overruns the ring buffer. Every decision
// is checked against the reference evaluator (policy.Evaluate) with the
// policy of the generation the decision's record names, and the counters
// of bpfipe status against the records read. test/faults boots them on
// every stock kernel; outside a bpfipe-vm guest they skip.
//
// The guest's initramfs is the boot filesystem: busybox and bpfipe are
// boot_verified, files under /tmp are not.
package faults
