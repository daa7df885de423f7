/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The decision, shared by the LSM programs (bpfipe.c) and the test-only
 * program (decide_test.c) that drives it through BPF_PROG_TEST_RUN.
 *
 * A program including this header defines the two functions declared below:
 * how it learns the subject's properties and how it describes the file in
 * an event. Everything else, from the settings to the return code, is here.
 */
#ifndef BPFIPE_DECIDE_H
#define BPFIPE_DECIDE_H

#include "maps.h"

/* Hides v from the optimizer: so that a bound it can prove but the
 * verifier cannot is still checked in the code, or so that arithmetic
 * meant to be branch-free is not turned back into branches (each branch
 * multiplies the paths the verifier walks). */
#define ipe_opaque(v) asm volatile("" : "+r"(v))

#define IPE_EACCES 13
#define IPE_MAX_ERRNO 4095

struct ipe_decision {
	__u32 decided; /* 0: no policy or out of scope */
	__u32 action;
	__u32 scope;
	__u32 rule; /* meaningful when scope is IPE_SCOPE_RULE */
	__u32 generation;
};

struct ipe_work;

/* A subject without a file: nothing holds, no digests. Each ipe_observe
 * starts from it. */
static __always_inline void ipe_subject_clear(struct ipe_subject *subj)
{
	subj->holds = 0;
	subj->has_file = 0;
	subj->dv = NULL;
	subj->fv = NULL;
}

/* Fill subj for the operation's target (a struct file or NULL in the LSM
 * programs), starting from ipe_subject_clear. needs is what the op's rules
 * use and this kernel can observe (masked by the settings' usable_needs):
 * only those properties must be read, and the decision ignores the others. A digest pointer, when not
 * NULL, points at a digest of 1 to IPE_DIGEST_MAX bytes, zero-padded,
 * that stays put until the call returns (a map value, or the call's
 * scratch slot); a subject has digests only with a file. Returns false
 * when a property could not be read for lack of working memory: the call
 * then goes undecided. */
static __always_inline bool ipe_observe(struct ipe_subject *subj, struct ipe_work *w,
					const struct ipe_settings *cfg, __u8 hook, void *target, __u32 needs);
/* The quick look: the boolean properties that hold (into holds) when the
 * subject's properties can all be read without a call, which is when it
 * has no digests and needs reads nothing kept in a map or a scratch slot
 * (IPE_NEED_READ_BY_CALL, a device-mapper device's entry); false when
 * ipe_observe must look. A subject it completes is the one ipe_observe
 * would give: digests none, holds the same. */
static __always_inline bool ipe_observe_quick(__u32 *holds, const struct ipe_settings *cfg, void *target, __u32 needs);
/* Fill the file fields of an event (path, sid, sdev, ino). sc is working
 * memory for the path, NULL when none was free: the path is then left
 * empty and marked truncated. */
static __always_inline void ipe_describe(struct ipe_event *e, struct ipe_scratch *sc, void *target);

/* An earlier program on the hook already decided: keep its verdict. The
 * clamp keeps the verifier's LSM return-range check satisfied. */
static __always_inline int ipe_prior(int ret)
{
	if (ret < 0 && ret >= -IPE_MAX_ERRNO)
		return ret;
	return -IPE_EACCES;
}

/* One read of a setting the loader may change while a call runs. */
#define ipe_once(field) (*(volatile typeof(field) *)&(field))

static __always_inline void ipe_count(__u32 index)
{
	__u64 *counter = bpf_map_lookup_elem(&counters, &index);

	/* Atomic: another task may be preempted halfway through the same
	 * per-CPU increment. */
	if (counter)
		__sync_fetch_and_add(counter, 1);
}

/* Claims slot i if it is free. */
static __always_inline struct ipe_scratch *ipe_scratch_try(__u64 *busy, __u32 i, __u32 *slot)
{
	__u64 bit = 1ull << i;
	struct ipe_scratch *sc;

	if (__sync_fetch_and_or(busy, bit) & bit)
		return NULL;
	sc = bpf_map_lookup_elem(&scratch, &i);
	if (!sc) {
		__sync_fetch_and_and(busy, ~bit);
		return NULL;
	}
	*slot = i;
	return sc;
}

/* The first free slot, tried one by one without a loop: a loop counter
 * that the compiler spills to the stack loses its bounds, and the verifier
 * then walks the loop until it gives up. */
static __always_inline struct ipe_scratch *ipe_scratch_get(__u64 **busy, __u32 *slot)
{
	struct ipe_scratch *sc;
	__u32 zero = 0;

	_Static_assert(IPE_SCRATCH_SLOTS == 4, "ipe_scratch_get tries four slots");
	*busy = bpf_map_lookup_elem(&scratch_busy, &zero);
	if (!*busy)
		return NULL;
	sc = ipe_scratch_try(*busy, 0, slot);
	if (!sc)
		sc = ipe_scratch_try(*busy, 1, slot);
	if (!sc)
		sc = ipe_scratch_try(*busy, 2, slot);
	if (!sc)
		sc = ipe_scratch_try(*busy, 3, slot);
	return sc;
}

/* A hook call's working memory: a scratch slot, claimed when first needed
 * (an fs-verity digest to read, an event's path to assemble) and given
 * back when the call returns. Most calls need none, and claiming one
 * costs more than the rest of an allowed decision's bookkeeping. */
struct ipe_work {
	struct ipe_scratch *sc;
	__u64 *busy;
	__u32 slot;
	__u32 tried; /* a claim failed: every slot of this CPU is in use */
};

/* The call's slot, claimed now if need be; NULL when none is free. */
static __always_inline struct ipe_scratch *ipe_work_scratch(struct ipe_work *w)
{
	if (w->sc || w->tried)
		return w->sc;
	w->tried = 1;
	w->sc = ipe_scratch_get(&w->busy, &w->slot);
	return w->sc;
}

static __always_inline void ipe_work_release(struct ipe_work *w)
{
	if (w->sc && w->busy)
		__sync_fetch_and_and(w->busy, ~(1ull << (w->slot & (IPE_SCRATCH_SLOTS - 1))));
}

#define IPE_BOOL_NEEDS (IPE_NEED_BOOT_VERIFIED | IPE_NEED_DV_SIGNATURE | IPE_NEED_FV_SIGNATURE)
/* Needs served from the file's block device's entry in the devices map. */
#define IPE_NEED_DEVICE (IPE_NEED_DV_ROWS | IPE_NEED_DVFV_ROWS | IPE_NEED_DV_SIGNATURE)
/* Needs whose property is always read through a call: the fs-verity
 * digest (a kfunc or reads into a scratch slot) and signature (inode
 * storage). */
#define IPE_NEED_READ_BY_CALL (IPE_NEED_FV_ROWS | IPE_NEED_DVFV_ROWS | IPE_NEED_FV_SIGNATURE)

/* The state weight of a set of boolean properties (bits as in
 * IPE_BOOL_NEEDS, whose weights are 1, 3 and 9): one nibble of the
 * constant per set. */
static __always_inline __u32 ipe_weight(__u32 props)
{
	_Static_assert(IPE_NEED_BOOT_VERIFIED == 1 && IPE_NEED_DV_SIGNATURE == 2 && IPE_NEED_FV_SIGNATURE == 4,
		       "ipe_weight's nibbles follow the IPE_NEED_* bits");
	return (0xdca94310u >> ((props & IPE_BOOL_NEEDS) * 4)) & 0xf;
}

/* The verdict slot of the subject, as ipe.h defines it: a property the
 * op's rules do not use (or this kernel cannot observe) is UNOBSERVABLE
 * (0), since the op's verdicts are the same in all three of its states;
 * a used one is TRUE (1) if it holds, else FALSE (2). Summed with the
 * weights: every used property once, and once more each that does not
 * hold. */
static __always_inline __u32 ipe_state(__u32 needs, __u32 holds)
{
	return ipe_weight(needs) + ipe_weight(needs & ~holds);
}

#define IPE_DIGEST_WORDS (sizeof(struct ipe_digest) / 4)

/* The digest helpers below are global functions (neither static nor
 * inlined): the verifier checks each once, on its own, instead of at every
 * one of the decision's digest lookups, of which there are up to
 * 3 kinds x IPE_LINKS. A pointer argument may be NULL, which the verifier
 * makes them handle. */

/* A digest's fold: the XOR of the 32-bit words of the whole struct
 * (length, algorithm, bytes), even ones into fold[0], odd ones into
 * fold[1] (maps.Fold in Go). */
static __always_inline void ipe_fold(const struct ipe_digest *d, __u32 fold[2])
{
	const __u32 *w = (const __u32 *)d;
	__u32 even = 0, odd = 0;

#pragma unroll
	for (int i = 0; i < IPE_DIGEST_WORDS; i++) {
		if (i % 2)
			odd ^= w[i];
		else
			even ^= w[i];
	}
	fold[0] = even;
	fold[1] = odd;
}

/* Sets the key's dv_fold from dv and its fv_fold from fv, each when not
 * NULL. */
__noinline int ipe_key_fold(struct ipe_row_key *key, const struct ipe_digest *dv, const struct ipe_digest *fv)
{
	if (!key)
		return 0;
	if (dv)
		ipe_fold(dv, key->dv_fold);
	if (fv)
		ipe_fold(fv, key->fv_fold);
	return 0;
}

/* Whole-digest equality (length, algorithm, bytes), branch-free; a NULL
 * digest equals nothing. */
__noinline int ipe_digest_equal(const struct ipe_digest *a, const struct ipe_digest *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	__u32 diff = 0;

	if (!a || !b)
		return 0;
#pragma unroll
	for (int i = 0; i < IPE_DIGEST_WORDS; i++) {
		diff |= x[i] ^ y[i];
		ipe_opaque(diff);
	}
	return diff == 0;
}

/* A row's verdict in state. The mask, which the optimizer cannot drop,
 * bounds the index for the verifier even when it sees a copy of state
 * spilled before the check; 32 words still lie within a row. */
static __always_inline __u32 ipe_verdict_in(const struct ipe_row *row, __u32 state)
{
	if (state >= IPE_STATES)
		return IPE_NO_VERDICT;
	ipe_opaque(state);
	return row->verdict[state & 31];
}

/* murmur3's 64-bit finalizer: a bijection that spreads every input bit
 * over the output. */
static __always_inline __u64 ipe_mix64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* A row key's hash (bpf.KeyHash in Go): its three 64-bit words, mixed in
 * turn. Global, as the digest helpers below; a NULL key hashes to 0. */
__noinline __u64 ipe_key_hash(const struct ipe_row_key *k)
{
	__u64 w0, w1, w2;

	if (!k)
		return 0;
	w0 = k->kind | (__u64)k->op << 8 | (__u64)k->link << 16;
	w1 = k->dv_fold[0] | (__u64)k->dv_fold[1] << 32;
	w2 = k->fv_fold[0] | (__u64)k->fv_fold[1] << 32;

	return ipe_mix64(ipe_mix64(ipe_mix64(w0) ^ w1) ^ w2);
}

static __always_inline bool ipe_key_equal(const struct ipe_row_key *a, const struct ipe_row_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	_Static_assert(sizeof(struct ipe_row_key) == 20, "ipe_key_equal compares five words");
	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/* The row of key in the table, or NULL: the bucket's seed, then the slot
 * it sends the key to (see ipe.h); base holds the geometry. */
static __always_inline struct ipe_row *ipe_table_find(void *rows, const struct ipe_row *base,
						      const struct ipe_row_key *key)
{
	__u32 buckets = base->buckets, slots = base->slots;
	__u32 bucket, index, seed;
	struct ipe_row *row;
	const __u32 *seeds;
	__u64 h;

	if (!buckets || !slots)
		return NULL;
	h = ipe_key_hash(key);
	bucket = (__u32)(h >> 32) % buckets;
	index = IPE_OP_INVALID + 1 + bucket / IPE_SEEDS_PER_ROW;
	seeds = bpf_map_lookup_elem(rows, &index);
	if (!seeds)
		return NULL;
	seed = seeds[bucket % IPE_SEEDS_PER_ROW];
	index = IPE_OP_INVALID + 1 + (buckets + IPE_SEEDS_PER_ROW - 1) / IPE_SEEDS_PER_ROW +
		(__u32)ipe_mix64(h ^ seed) % slots;
	row = bpf_map_lookup_elem(rows, &index);
	if (!row || !ipe_key_equal(&row->key, key))
		return NULL;
	return row;
}

/* The verdict of the row of kind for op and the subject's digests (dv, fv
 * or both, NULL for the one the kind does not have), following the links
 * of rows whose digests fold alike. */
static __always_inline __u32 ipe_digest_verdict(void *rows, const struct ipe_row *base, __u8 kind, __u8 op,
						const struct ipe_digest *dv, const struct ipe_digest *fv,
						__u32 state)
{
	struct ipe_row_key key = { .kind = kind, .op = op };

	ipe_key_fold(&key, dv, fv);
#pragma unroll
	for (int link = 0; link < IPE_LINKS; link++) {
		struct ipe_row *row;

		key.link = link;
		row = ipe_table_find(rows, base, &key);
		if (!row)
			return IPE_NO_VERDICT;
		if ((!dv || ipe_digest_equal(&row->dv, dv)) && (!fv || ipe_digest_equal(&row->fv, fv)))
			return ipe_verdict_in(row, state);
	}
	return IPE_NO_VERDICT;
}

static __always_inline __u32 ipe_min(__u32 a, __u32 b)
{
	return a < b ? a : b;
}

/* The BASE row of op, at the op's index: every op has one, IPE_OP_INVALID
 * included. */
static __always_inline struct ipe_row *ipe_base_row(void *rows, __u8 op)
{
	__u32 index = op;

	return bpf_map_lookup_elem(rows, &index);
}

/* The smallest verdict of the digest rows that exist for the subject
 * under op (IPE_NO_VERDICT when none does). It works the state out again
 * rather than taking ipe_decide's: kept live until here, that value costs
 * a spill on every decision, most of which never get here. */
static __always_inline __u32 ipe_digest_best(void *rows, const struct ipe_row *base, const struct ipe_subject *subj,
					__u32 op, __u32 needs)
{
	__u32 state = ipe_state(needs, subj->holds);
	__u32 best = IPE_NO_VERDICT;

	/* A subject has digests only with a file, and only those needs asks
	 * for (ipe_observe). */
	if (subj->dv && (needs & IPE_NEED_DV_ROWS))
		best = ipe_min(best, ipe_digest_verdict(rows, base, IPE_ROW_DV, op, subj->dv, NULL, state));
	if (subj->fv && (needs & IPE_NEED_FV_ROWS))
		best = ipe_min(best, ipe_digest_verdict(rows, base, IPE_ROW_FV, op, NULL, subj->fv, state));
	if (subj->dv && subj->fv && (needs & IPE_NEED_DVFV_ROWS))
		best = ipe_min(best, ipe_digest_verdict(rows, base, IPE_ROW_DVFV, op, subj->dv, subj->fv, state));
	return best;
}

/* IPE's ipe_evaluate_event over the tables: the smallest verdict of the
 * rows that exist for the subject, where the BASE row holds the DEFAULTs
 * below every rule. Without a BASE row (not a table the loader wrote)
 * there is no verdict, which denies. */
static __always_inline __u32 ipe_decide(void *rows, const struct ipe_row *base, const struct ipe_subject *subj,
					__u8 op, __u32 needs)
{
	__u32 best, has_dv;

	if (!base)
		return IPE_NO_VERDICT;
	best = ipe_verdict_in(base, ipe_state(needs, subj->holds));
	/* Opaque, or the two tests become one OR of the pointers, which the
	 * verifier refuses. */
	has_dv = subj->dv != NULL;
	ipe_opaque(has_dv);
	if (has_dv || subj->fv)
		best = ipe_min(best, ipe_digest_best(rows, base, subj, op, needs));
	return best;
}

/* Whether a verdict allows: a rule's or a DEFAULT's with the allow bit.
 * Above the global DEFAULT is no verdict, which fails closed. */
static __always_inline bool ipe_allows(__u32 verdict)
{
	return (verdict & 1) && verdict <= (IPE_VERDICT_GLOBAL_DEFAULT | IPE_ACTION_ALLOW);
}

/* The decision a verdict stands for, as events and the test program give
 * it: who decided (a rule, the op's DEFAULT or the global one) and the
 * policy's generation. Only a call that reports or is observed needs it. */
static __always_inline void ipe_explain(struct ipe_decision *d, __u32 verdict, const struct ipe_row *base)
{
	d->decided = 1;
	d->generation = base ? base->generation : 0;
	d->action = ipe_allows(verdict) ? IPE_ACTION_ALLOW : IPE_ACTION_DENY;
	d->rule = 0;
	if (verdict < IPE_VERDICT_OP_DEFAULT) {
		d->scope = IPE_SCOPE_RULE;
		d->rule = verdict >> 1;
	} else if ((verdict & ~1u) == IPE_VERDICT_OP_DEFAULT) {
		d->scope = IPE_SCOPE_OP_DEFAULT;
	} else {
		/* The global DEFAULT, or no verdict, which denies as if it were. */
		d->scope = IPE_SCOPE_GLOBAL_DEFAULT;
	}
}

static __always_inline void ipe_report(const struct ipe_decision *d, __u8 op, __u8 hook, __u32 enforcing,
				       const struct ipe_subject *subj, struct ipe_work *w, void *target)
{
	struct ipe_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	struct ipe_scratch *sc;

	if (!e) {
		ipe_count(IPE_COUNTER_EVENTS_DROPPED);
		return;
	}
	/* Ring buffer memory is not cleared, and every byte reaches userspace. */
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->rule = d->rule;
	e->generation = d->generation;
	e->op = op;
	e->hook = hook;
	e->enforcing = enforcing != 0;
	e->action = d->action;
	e->scope = d->scope;
	e->has_file = subj->has_file;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* Only a file has a path to build: an event without one claims no
	 * slot. */
	sc = subj->has_file ? ipe_work_scratch(w) : NULL;
	if (!sc && subj->has_file)
		ipe_count(IPE_COUNTER_PATH_LOST);
	ipe_describe(e, sc, target);
	bpf_ringbuf_submit(e, 0);
}

/* One hook call: returns 0 to allow or -EACCES to deny. out, when not
 * NULL, receives the decision (the test program reads it). */
static __always_inline int ipe_enforce(__u8 op, __u8 hook, void *target, struct ipe_decision *out)
{
	struct ipe_decision d = {};
	const struct ipe_settings *cfg;
	struct ipe_subject subj;
	struct ipe_work w = {};
	struct ipe_row *base;
	__u32 zero = 0, needs, holds, verdict, allow, audit, enforcing;
	int rc = 0;
	void *rows;

	/* The settings are read where they are used rather than copied,
	 * which would keep them all live across the calls below. */
	cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg)
		return 0;
	/* An error (no cgroup in the slot) keeps the task in scope: failing
	 * open would silently disable enforcement. */
	if (cfg->cgroup_id && bpf_current_task_under_cgroup(&cgroup_scope, 0) == 0)
		return 0;
	rows = bpf_map_lookup_elem(&policy, &zero);
	if (!rows) {
		ipe_count(IPE_COUNTER_NO_POLICY);
		return 0;
	}

	/* Every op has a BASE row; anything else is IPE_OP_INVALID's. */
	if (op > IPE_OP_INVALID)
		op = IPE_OP_INVALID;
	base = ipe_base_row(rows, op);
	needs = base ? base->needs & cfg->usable_needs : 0;
	/* Most calls end here: a subject without digests whose properties
	 * come without a call, allowed by its BASE row, with nothing to
	 * report. Apart from the general path below, this path keeps its
	 * values in registers, where that path's calls would spill them
	 * (about 60 instructions of every such decision). */
	if (base && ipe_observe_quick(&holds, cfg, target, needs)) {
		verdict = ipe_verdict_in(base, ipe_state(needs, holds));
		if (ipe_allows(verdict) && !ipe_once(cfg->success_audit)) {
			ipe_count(hook * 2 + 1);
			/* out is NULL in the LSM programs. */
			if (out) {
				ipe_explain(&d, verdict, base);
				*out = d;
			}
			return 0;
		}
	}
	if (!ipe_observe(&subj, &w, cfg, hook, target, needs)) {
		ipe_count(IPE_COUNTER_SCRATCH_BUSY);
		rc = ipe_once(cfg->enforcing) ? -IPE_EACCES : 0;
		goto out;
	}
	verdict = ipe_decide(rows, base, &subj, op, needs);
	allow = ipe_allows(verdict);
	/* Each switch is read once, so the event and the return code agree
	 * even if the loader flips it meanwhile. */
	audit = ipe_once(cfg->success_audit);
	enforcing = ipe_once(cfg->enforcing);
	ipe_count(hook * 2 + allow);
	if (out || !allow || audit)
		ipe_explain(&d, verdict, base);
	if (!allow || audit)
		ipe_report(&d, op, hook, enforcing, &subj, &w, target);
	rc = !allow && enforcing ? -IPE_EACCES : 0;
out:
	ipe_work_release(&w);
	if (out)
		*out = d;
	return rc;
}

#endif
