//go:build ignore
// SPDX-License-Identifier: GPL-2.0
/*
 * bpfipe: IPE's EXECUTE enforcement as BPF LSM programs. See ipe.h for the
 * table layout and decide.h for the decision shared with the test program.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ipe.h"

char LICENSE[] SEC("license") = "GPL";

/* The active policy: slot 0 holds the rows of the policy in force. The
 * loader builds a new inner map aside and swaps it in with one update, which
 * also waits for running programs (maybe_wait_bpf_programs), so a decision
 * never mixes two policies. An empty slot means no policy: allow, as IPE. */
struct policy_rows {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct ipe_row_key);
	__type(value, struct ipe_row);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct policy_rows);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ipe_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ipe_device_key);
	__type(value, struct ipe_device);
} devices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPE_NUM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_scope SEC(".maps");

/* Force BTF for the ABI types so bpf2go -type can mirror them. */
struct ipe_event *unused_event __attribute__((unused));
struct ipe_row_key *unused_row_key __attribute__((unused));
struct ipe_row *unused_row __attribute__((unused));
struct ipe_device_key *unused_device_key __attribute__((unused));
struct ipe_device *unused_device __attribute__((unused));
struct ipe_settings *unused_settings __attribute__((unused));

SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm, int ret)
{
	return ret;
}
