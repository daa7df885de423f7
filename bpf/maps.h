/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The maps of bpfipe.c, shared with the test-only program (decide_test.c) so
 * that the decision code in decide.h is exercised against the very same
 * definitions. The names policy, settings, devices, counters, events and
 * cgroup_scope are the loader's interface.
 */
#ifndef BPFIPE_MAPS_H
#define BPFIPE_MAPS_H

#include <bpf/bpf_core_read.h>
#include "ipe.h"

/* The active policy: slot 0 holds the table of the policy in force (its
 * layout is in ipe.h). The loader builds a new inner map aside and swaps it
 * in with one update, which also waits for running programs
 * (maybe_wait_bpf_programs), so a decision never mixes two policies. An
 * empty slot means no policy: allow, as IPE. BPF_F_INNER_MAP lets each
 * table have its own size. */
struct policy_rows {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, struct ipe_row);
};

/* Full BTF for the ABI types, so that bpf2go -type can mirror them and the
 * inner map definition above does not degrade to forward declarations.
 * Asking for a type's size puts the whole type in BTF. A function that no
 * program calls holds the questions, rather than global variables: those
 * would make a .bss map, whose name the tamper guard cannot mark (see
 * loader/guard.go). */
__attribute__((unused)) __u64 ipe_btf_anchor(void)
{
	return bpf_core_type_size(struct ipe_event) + bpf_core_type_size(struct ipe_row_key) +
	       bpf_core_type_size(struct ipe_row) + bpf_core_type_size(struct ipe_device_key) +
	       bpf_core_type_size(struct ipe_device) + bpf_core_type_size(struct ipe_settings);
}

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

/* Filled by the capture_bdev_* programs where the kernel has
 * bdev_setintegrity (6.12+), else by the loader from dm ioctls. */
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

/* fs-verity builtin signature validity, written by capture_inode_setintegrity
 * (6.12+) when fs-verity verifies a file's signature, like IPE's inode blob. */
struct ipe_inode_state {
	__u32 fsverity_signed;
};

struct {
	__uint(type, BPF_MAP_TYPE_INODE_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ipe_inode_state);
} inode_states SEC(".maps");

/* What a decision knows of its subject, on the decision's stack. */
struct ipe_subject {
	/* The boolean properties that hold, as the IPE_NEED_* bits that ask
	 * for them (IPE_NEED_BOOT_VERIFIED, _DV_SIGNATURE, _FV_SIGNATURE);
	 * none without a file. A bit the op's needs lack may be set (the
	 * device's signature comes with its root hash) and counts for
	 * nothing: ipe_state reads holds through needs. */
	__u32 holds;
	__u32 has_file;
	const struct ipe_digest *dv; /* NULL: no dm-verity root hash known */
	const struct ipe_digest *fv; /* NULL: not an fs-verity file */
};

/* Working memory of a hook call that reads an fs-verity digest or
 * describes its file in an event: too big for the 512-byte stack, which
 * the decision mostly takes. */
struct ipe_scratch {
	struct ipe_digest fv;
	/* struct fsverity_digest as bpf_get_fsverity_digest fills it. */
	__u8 fsverity[4 + IPE_DIGEST_MAX] __attribute__((aligned(8)));
	/* Room to tell an algorithm name of IPE_ALG_LEN bytes from a longer one. */
	__u8 alg[IPE_ALG_LEN + 8];
	/* The path is assembled backwards in the first half; the second half
	 * lets the verifier bound a masked offset plus a masked length. */
	__u8 path[2 * IPE_PATH_MAX];
};

/* Several slots per CPU, claimed through the busy bitmap: a non-sleepable
 * LSM program runs with migration but not preemption disabled, so on a
 * preemptible kernel another task can enter the same program on this CPU
 * while the first is halfway through its scratch. */
#define IPE_SCRATCH_SLOTS 4

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPE_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct ipe_scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} scratch_busy SEC(".maps");

#endif
