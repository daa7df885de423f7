//go:build ignore
// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only: the decision of decide.h wrapped in a program type that loads
 * where LSM programs cannot (the development machine), driven through
 * BPF_PROG_TEST_RUN by decide_test.go. The subject comes from the test
 * instead of a struct file; everything else is the LSM programs' code path,
 * against the same maps (maps.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "ipe.h"
#include "maps.h"
#include "decide.h"

char LICENSE[] SEC("license") = "GPL";

/* The subject as the test gives it: digests of length 0 are absent. */
struct ipe_test_subject {
	__u8 has_file;
	__u8 boot_verified;
	__u8 dv_signed;
	__u8 fv_signed;
	struct ipe_digest dv;
	struct ipe_digest fv;
};

/* One call's inputs, written by the test, and outputs, written by the
 * program. A map carries it: syscall programs, whose context goes both
 * ways, are sleepable and may not use map-in-map, and raw tracepoint
 * programs (LSM's helpers, not sleepable) have a read-only context. */
struct ipe_test_ctx {
	__u8 op;
	__u8 hook;
	__u8 pad[2];
	struct ipe_test_subject subject;
	__s32 rc;
	struct ipe_decision decision;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ipe_test_ctx);
} test_io SEC(".maps");

/* Marks events as coming from this program, in place of a file's path. */
static const char ipe_test_path[] = "decide_test";

/* As file.h does: nothing without a file, only what needs asks for; the
 * root hash stays where it is (the devices map there, the test's input
 * here), the fs-verity digest goes through the call's scratch slot. */
static __always_inline bool ipe_observe(struct ipe_subject *subj, struct ipe_work *w,
					const struct ipe_settings *cfg, __u8 hook, void *target, __u32 needs)
{
	struct ipe_test_ctx *t = target;
	struct ipe_test_subject *in = &t->subject;
	struct ipe_scratch *sc;
	__u32 holds = 0;

	ipe_subject_clear(subj);
	if (!in->has_file)
		return true;
	subj->has_file = 1;
	if (in->boot_verified)
		holds |= IPE_NEED_BOOT_VERIFIED;
	if (in->dv_signed)
		holds |= IPE_NEED_DV_SIGNATURE;
	if (in->fv_signed)
		holds |= IPE_NEED_FV_SIGNATURE;
	subj->holds = holds & needs;
	if (in->dv.len && in->dv.len <= IPE_DIGEST_MAX && (needs & (IPE_NEED_DV_ROWS | IPE_NEED_DVFV_ROWS)))
		subj->dv = &in->dv;
	if (in->fv.len && (needs & (IPE_NEED_FV_ROWS | IPE_NEED_DVFV_ROWS))) {
		sc = ipe_work_scratch(w);
		if (!sc)
			return false;
		sc->fv = in->fv;
		if (sc->fv.len <= IPE_DIGEST_MAX)
			subj->fv = &sc->fv;
	}
	return true;
}

/* As file.h does: a subject with a root hash or a signed device stands
 * for a file on a device-mapper device, whose entry file.h looks up. */
static __always_inline bool ipe_observe_quick(__u32 *holds, const struct ipe_settings *cfg, void *target, __u32 needs)
{
	struct ipe_test_ctx *t = target;
	struct ipe_test_subject *in = &t->subject;

	*holds = 0;
	if (!in->has_file)
		return true;
	if (needs & IPE_NEED_READ_BY_CALL)
		return false;
	if (in->boot_verified)
		*holds = IPE_NEED_BOOT_VERIFIED & needs;
	return !(needs & IPE_NEED_DEVICE) || !(in->dv.len || in->dv_signed);
}

static __always_inline void ipe_describe(struct ipe_event *e, struct ipe_scratch *sc, void *target)
{
	struct ipe_test_ctx *t = target;

	if (!t->subject.has_file)
		return;
	if (sc)
		__builtin_memcpy(e->path, ipe_test_path, sizeof(ipe_test_path));
	else
		e->path_truncated = 1;
}

/* Never attached: run with BPF_PROG_TEST_RUN only. */
SEC("raw_tp/ipe_decide_test")
int decide(void *ctx)
{
	struct ipe_test_ctx *io;
	__u32 zero = 0;
	__u8 hook;

	io = bpf_map_lookup_elem(&test_io, &zero);
	if (!io)
		return 1;
	hook = io->hook;
	if (hook >= IPE_NUM_HOOKS)
		return 1;
	io->rc = ipe_enforce(io->op, hook, io, &io->decision);
	return 0;
}
