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

#define IPE_EACCES 13
#define IPE_MAX_ERRNO 4095

struct ipe_decision {
	__u32 decided; /* 0: no policy, out of scope or no scratch slot */
	__u32 action;
	__u32 scope;
	__u32 rule; /* meaningful when scope is IPE_SCOPE_RULE */
	__u32 generation;
};

/* Fill sc->subject for the operation's target (a struct file or NULL in the
 * LSM programs). Properties the settings mark unobservable may be left
 * unset: the decision ignores them. */
static __always_inline void ipe_observe(struct ipe_scratch *sc, const struct ipe_settings *cfg,
					__u8 hook, void *target);
/* Fill the file fields of an event (path, sid, sdev, ino). */
static __always_inline void ipe_describe(struct ipe_event *e, struct ipe_scratch *sc, void *target);

/* An earlier program on the hook already decided: keep its verdict. The
 * clamp keeps the verifier's LSM return-range check satisfied. */
static __always_inline int ipe_prior(int ret)
{
	if (ret < 0 && ret >= -IPE_MAX_ERRNO)
		return ret;
	return -IPE_EACCES;
}

static __always_inline void ipe_count(__u32 index)
{
	__u64 *counter = bpf_map_lookup_elem(&counters, &index);

	/* Atomic: another task may be preempted halfway through the same
	 * per-CPU increment. */
	if (counter)
		__sync_fetch_and_add(counter, 1);
}

static __always_inline struct ipe_scratch *ipe_scratch_get(__u64 **busy, __u32 *slot)
{
	__u32 zero = 0;

	*busy = bpf_map_lookup_elem(&scratch_busy, &zero);
	if (!*busy)
		return NULL;
	for (__u32 i = 0; i < IPE_SCRATCH_SLOTS; i++) {
		__u64 bit = 1ull << i;
		struct ipe_scratch *sc;

		if (__sync_fetch_and_or(*busy, bit) & bit)
			continue;
		sc = bpf_map_lookup_elem(&scratch, &i);
		if (!sc) {
			__sync_fetch_and_and(*busy, ~bit);
			return NULL;
		}
		*slot = i;
		return sc;
	}
	return NULL;
}

static __always_inline void ipe_scratch_put(__u64 *busy, __u32 slot)
{
	__sync_fetch_and_and(busy, ~(1ull << (slot & (IPE_SCRATCH_SLOTS - 1))));
}

static __always_inline __u32 ipe_prop_state(bool observable, bool holds)
{
	if (!observable)
		return IPE_PROP_UNOBSERVABLE;
	return holds ? IPE_PROP_TRUE : IPE_PROP_FALSE;
}

/* The verdict slot of the subject, as ipe.h defines it. */
static __always_inline __u32 ipe_state(const struct ipe_subject *subj, __u32 observable)
{
	bool file = subj->has_file;

	return ipe_prop_state(true, file && subj->boot_verified) +
	       3 * ipe_prop_state(observable & IPE_OBSERVE_DV_SIGNATURE, file && subj->dv_signed) +
	       9 * ipe_prop_state(observable & IPE_OBSERVE_FV_SIGNATURE, file && subj->fv_signed);
}

static __always_inline __u32 ipe_row_verdict(void *rows, const struct ipe_row_key *key, __u32 state)
{
	struct ipe_row *row = bpf_map_lookup_elem(rows, key);

	if (!row || state >= IPE_STATES)
		return IPE_NO_VERDICT;
	return row->verdict[state];
}

static __always_inline __u32 ipe_min(__u32 a, __u32 b)
{
	return a < b ? a : b;
}

/* A DEFAULT slot of the META row; anything but a valid action is unset
 * except that garbage denies rather than allows. */
static __always_inline bool ipe_meta_default(const struct ipe_row *meta, __u32 slot, __u32 *action)
{
	__u32 v;

	if (!meta || slot > IPE_META_GLOBAL_DEFAULT)
		return false;
	v = meta->verdict[slot];
	if (v == IPE_NO_VERDICT)
		return false;
	*action = v == IPE_ACTION_ALLOW ? IPE_ACTION_ALLOW : IPE_ACTION_DENY;
	return true;
}

/* IPE's ipe_evaluate_event over the tables: the smallest verdict of the
 * rows that exist for the subject, else the op's DEFAULT, else the global
 * DEFAULT, else (only possible for IPE_OP_INVALID) allow. */
static __always_inline void ipe_decide(void *rows, struct ipe_scratch *sc, __u8 op, __u32 observable,
				       struct ipe_decision *d)
{
	struct ipe_subject *subj = &sc->subject;
	struct ipe_row_key *key = &sc->key;
	__u32 best = IPE_NO_VERDICT, state;
	struct ipe_row *meta;
	bool dv, fv;

	/* The META key is the all-zero key. */
	__builtin_memset(key, 0, sizeof(*key));
	meta = bpf_map_lookup_elem(rows, key);
	d->decided = 1;
	d->rule = 0;
	d->generation = meta ? meta->verdict[IPE_META_GENERATION] : 0;

	if (op < IPE_NUM_OPS) {
		state = ipe_state(subj, observable);
		dv = subj->has_file && (observable & IPE_OBSERVE_DV_ROOTHASH) && subj->dv.len;
		fv = subj->has_file && (observable & IPE_OBSERVE_FV_DIGEST) && subj->fv.len;

		key->op = op;
		key->kind = IPE_ROW_BASE;
		best = ipe_row_verdict(rows, key, state);
		if (dv) {
			key->kind = IPE_ROW_DV;
			key->dv = subj->dv;
			best = ipe_min(best, ipe_row_verdict(rows, key, state));
		}
		if (dv && fv) {
			key->kind = IPE_ROW_DVFV;
			key->fv = subj->fv;
			best = ipe_min(best, ipe_row_verdict(rows, key, state));
		}
		if (fv) {
			key->kind = IPE_ROW_FV;
			__builtin_memset(&key->dv, 0, sizeof(key->dv));
			key->fv = subj->fv;
			best = ipe_min(best, ipe_row_verdict(rows, key, state));
		}
		if (best != IPE_NO_VERDICT) {
			d->action = best & 1;
			d->scope = IPE_SCOPE_RULE;
			d->rule = best >> 1;
			return;
		}
		if (ipe_meta_default(meta, op, &d->action)) {
			d->scope = IPE_SCOPE_OP_DEFAULT;
			return;
		}
	}
	d->scope = IPE_SCOPE_GLOBAL_DEFAULT;
	if (!ipe_meta_default(meta, IPE_META_GLOBAL_DEFAULT, &d->action))
		d->action = IPE_ACTION_ALLOW;
}

static __always_inline void ipe_report(const struct ipe_decision *d, __u8 op, __u8 hook, __u32 enforcing,
				       struct ipe_scratch *sc, void *target)
{
	struct ipe_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

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
	e->has_file = sc->subject.has_file;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	ipe_describe(e, sc, target);
	bpf_ringbuf_submit(e, 0);
}

/* One hook call: returns 0 to allow or -EACCES to deny. out, when not
 * NULL, receives the decision (the test program reads it). */
static __always_inline int ipe_enforce(__u8 op, __u8 hook, void *target, struct ipe_decision *out)
{
	struct ipe_decision d = {};
	const struct ipe_settings *live;
	struct ipe_settings cfg;
	struct ipe_scratch *sc;
	__u32 zero = 0, slot = 0;
	__u64 *busy;
	void *rows;

	live = bpf_map_lookup_elem(&settings, &zero);
	if (!live)
		return 0;
	/* One snapshot, so the event and the return code agree even if the
	 * loader flips a switch meanwhile. */
	cfg = *live;
	/* An error (no cgroup in the slot) keeps the task in scope: failing
	 * open would silently disable enforcement. */
	if (cfg.cgroup_id && bpf_current_task_under_cgroup(&cgroup_scope, 0) == 0)
		return 0;
	rows = bpf_map_lookup_elem(&policy, &zero);
	if (!rows) {
		ipe_count(IPE_COUNTER_NO_POLICY);
		return 0;
	}
	sc = ipe_scratch_get(&busy, &slot);
	if (!sc) {
		ipe_count(IPE_COUNTER_SCRATCH_BUSY);
		return cfg.enforcing ? -IPE_EACCES : 0;
	}

	ipe_observe(sc, &cfg, hook, target);
	ipe_decide(rows, sc, op, cfg.observable, &d);
	ipe_count(hook * 2 + (d.action & 1));
	if (d.action == IPE_ACTION_DENY || cfg.success_audit)
		ipe_report(&d, op, hook, cfg.enforcing, sc, target);
	ipe_scratch_put(busy, slot);

	if (out)
		*out = d;
	return d.action == IPE_ACTION_DENY && cfg.enforcing ? -IPE_EACCES : 0;
}

#endif
