/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the LSM programs learn about a file: its properties as IPE's
 * ipe_build_eval_ctx gathers them, and its description as IPE's audit
 * record prints it. Every kernel structure is read through CO-RE so one
 * object serves 6.1 and 6.12 alike.
 */
#ifndef BPFIPE_FILE_H
#define BPFIPE_FILE_H

#include "decide.h"

#define IPE_PROT_EXEC 0x4 /* PROT_EXEC */
#define IPE_VM_EXEC 0x4   /* VM_EXEC */

/* Dentries and mounts the path walk visits before it gives up. */
#define IPE_PATH_STEPS 64

/* fs-verity algorithm numbers (FS_VERITY_HASH_ALG_*), named as IPE names
 * them (hash_algo_name[]). */
#define IPE_FSVERITY_SHA256 1
#define IPE_FSVERITY_SHA512 2

/* libbpf 1.1 predates bpf_ksym_exists. A missing __weak kfunc resolves to
 * address 0, so the verifier drops the guarded call as dead code. */
#define ipe_ksym_exists(sym) (!!(sym))

extern int bpf_get_fsverity_digest(struct file *file, struct bpf_dynptr *digest) __ksym __weak;

/* fs-verity internals, for kernels or hooks where the kfunc cannot be used:
 * 6.1 lacks it, and before 6.17 (roughly) the verifier does not trust
 * vma->vm_file, which the kfunc requires. struct fsverity_info has kept
 * these fields since fs-verity began; the flavor suffix keeps them apart
 * from whatever vmlinux.h has. */
struct fsverity_hash_alg___ipe {
	const char *name;
	int digest_size;
} __attribute__((preserve_access_index));

struct merkle_tree_params___ipe {
	const struct fsverity_hash_alg___ipe *hash_alg;
} __attribute__((preserve_access_index));

struct fsverity_info___ipe {
	struct merkle_tree_params___ipe tree_params;
	__u8 file_digest[IPE_DIGEST_MAX];
} __attribute__((preserve_access_index));

struct inode___ipe {
	struct fsverity_info___ipe *i_verity_info;
} __attribute__((preserve_access_index));

/* Copies an algorithm name into dst (IPE_ALG_LEN bytes, NUL-padded);
 * false when the name does not fit, so that it matches no policy digest. */
static __always_inline bool ipe_copy_alg(struct ipe_scratch *sc, __u8 *dst, const char *name)
{
	long n;

	__builtin_memset(sc->alg, 0, sizeof(sc->alg));
	n = bpf_probe_read_kernel_str(sc->alg, sizeof(sc->alg), name);
	/* n counts the NUL: a name of IPE_ALG_LEN bytes fills dst unterminated. */
	if (n <= 1 || n > IPE_ALG_LEN + 1)
		return false;
	__builtin_memcpy(dst, sc->alg, IPE_ALG_LEN);
	return true;
}

static __always_inline void ipe_put6(__u8 *dst, __u8 a, __u8 b, __u8 c, __u8 d, __u8 e, __u8 f)
{
	dst[0] = a;
	dst[1] = b;
	dst[2] = c;
	dst[3] = d;
	dst[4] = e;
	dst[5] = f;
}

static __always_inline void ipe_fsverity_by_kfunc(struct ipe_scratch *sc, struct file *file)
{
	struct fsverity_digest *raw = (void *)sc->fsverity;
	struct ipe_digest *fv = &sc->fv;
	struct bpf_dynptr ptr;
	__u32 size;

	if (bpf_dynptr_from_mem(sc->fsverity, sizeof(sc->fsverity), 0, &ptr))
		return;
	if (bpf_get_fsverity_digest(file, &ptr))
		return; /* -ENODATA: not a verity file */
	size = raw->digest_size;
	if (size == 0 || size > IPE_DIGEST_MAX)
		return;
	/* Written in place over ipe_observe's zeroes: a constant array would
	 * make a .rodata map, which the tamper guard cannot mark. */
	if (raw->digest_algorithm == IPE_FSVERITY_SHA256)
		ipe_put6(fv->alg, 's', 'h', 'a', '2', '5', '6');
	else if (raw->digest_algorithm == IPE_FSVERITY_SHA512)
		ipe_put6(fv->alg, 's', 'h', 'a', '5', '1', '2');
	else
		return;
	/* The kfunc zero-fills the buffer past the digest, as a key needs. */
	__builtin_memcpy(fv->bytes, sc->fsverity + 4, IPE_DIGEST_MAX);
	fv->len = size;
}

static __always_inline void ipe_fsverity_by_core(struct ipe_scratch *sc, struct inode *inode)
{
	struct inode___ipe *ino = (void *)inode;
	struct ipe_digest *fv = &sc->fv;
	const struct fsverity_hash_alg___ipe *alg;
	struct fsverity_info___ipe *vi;
	int size;

	vi = BPF_CORE_READ(ino, i_verity_info);
	if (!vi)
		return;
	alg = BPF_CORE_READ(vi, tree_params.hash_alg);
	size = BPF_CORE_READ(alg, digest_size);
	if (size <= 0 || size > IPE_DIGEST_MAX)
		return;
	if (!ipe_copy_alg(sc, fv->alg, BPF_CORE_READ(alg, name)))
		return;
	if (bpf_core_read(fv->bytes, size & (2 * IPE_DIGEST_MAX - 1), &vi->file_digest))
		return;
	fv->len = size;
}

/* The file's fs-verity digest into sc->fv, as fsverity_get_digest gives it
 * to IPE; sc->fv.len stays 0 for a file without one. hook is a constant in
 * each program, so each keeps one of the branches. */
static __always_inline void ipe_fsverity_digest(struct ipe_scratch *sc, struct file *file,
						struct inode *inode, __u8 hook)
{
	__builtin_memset(&sc->fv, 0, sizeof(sc->fv));
	if (hook != IPE_HOOK_MPROTECT && ipe_ksym_exists(bpf_get_fsverity_digest))
		ipe_fsverity_by_kfunc(sc, file);
	else if (bpf_core_field_exists(struct inode___ipe, i_verity_info))
		ipe_fsverity_by_core(sc, inode);
	if (sc->fv.len == 0)
		__builtin_memset(&sc->fv, 0, sizeof(sc->fv));
}

/* Whether disk is a device-mapper device, the only kind the devices map
 * can hold (dm-verity is a device-mapper target): the kernel names them
 * "dm-N" (dm.c, alloc_dev). A file on any other disk skips the devices
 * map's hash lookup, which costs about as much as the rest of a decision. */
static __always_inline bool ipe_device_mapper(struct gendisk *disk)
{
	return disk->disk_name[0] == 'd' && disk->disk_name[1] == 'm' && disk->disk_name[2] == '-';
}

/* Whether the file's mount is the boot filesystem's. IPE marks the
 * superblock of the mount, not of the inode, so that a file reached
 * through overlayfs is not "from initramfs". Here and below: direct loads
 * through the hook's BTF pointers, not BPF_CORE_READ's helper calls; the
 * verifier makes them inline loads that read 0 instead of faulting, at a
 * fraction of the cost, on every decision's path. */
static __always_inline bool ipe_boot_verified(struct file *file, const struct ipe_settings *cfg)
{
	return cfg->boot_sdev && file->f_path.mnt->mnt_sb->s_dev == cfg->boot_sdev;
}

/* The block device under the inode when ipe_device_mapper says it is
 * device-mapper's, else NULL. */
static __always_inline struct block_device *ipe_dm_bdev(struct inode *inode)
{
	struct block_device *bdev = inode->i_sb->s_bdev;

	return bdev && ipe_device_mapper(bdev->bd_disk) ? bdev : NULL;
}

static __always_inline bool ipe_observe_quick(__u32 *holds, const struct ipe_settings *cfg, void *target, __u32 needs)
{
	struct file *file = target;
	struct inode *inode;

	*holds = 0;
	if (!file)
		return true;
	if (needs & IPE_NEED_READ_BY_CALL)
		return false;
	inode = file->f_inode;
	if (!inode)
		return true;
	if ((needs & IPE_NEED_BOOT_VERIFIED) && ipe_boot_verified(file, cfg))
		*holds = IPE_NEED_BOOT_VERIFIED;
	/* A device-mapper device's entry is a map lookup away. */
	return !(needs & IPE_NEED_DEVICE) || !ipe_dm_bdev(inode);
}

static __always_inline bool ipe_observe(struct ipe_subject *subj, struct ipe_work *w,
					const struct ipe_settings *cfg, __u8 hook, void *target, __u32 needs)
{
	struct file *file = target;
	struct block_device *bdev;
	struct ipe_device_key key;
	struct ipe_device *dev;
	struct ipe_scratch *sc;
	struct inode *inode;
	__u32 holds = 0;

	ipe_subject_clear(subj);
	if (!file)
		return true;
	subj->has_file = 1;
	/* A direct load keeps the inode a BTF pointer, as the inode storage
	 * helper requires. */
	inode = file->f_inode;
	if (!inode)
		return true;

	if ((needs & IPE_NEED_BOOT_VERIFIED) && ipe_boot_verified(file, cfg))
		holds |= IPE_NEED_BOOT_VERIFIED;

	if (needs & IPE_NEED_DEVICE) {
		bdev = ipe_dm_bdev(inode);
		if (bdev) {
			__builtin_memset(&key, 0, sizeof(key));
			key.dev = bdev->bd_dev;
			key.diskseq = bdev->bd_disk->diskseq;
			dev = bpf_map_lookup_elem(&devices, &key);
			if (dev) {
				if (dev->signed_)
					holds |= IPE_NEED_DV_SIGNATURE;
				/* The map's writers zero-pad a root hash. */
				if ((needs & (IPE_NEED_DV_ROWS | IPE_NEED_DVFV_ROWS)) && dev->root_hash.len &&
				    dev->root_hash.len <= IPE_DIGEST_MAX)
					subj->dv = &dev->root_hash;
			}
		}
	}

	if (needs & (IPE_NEED_FV_ROWS | IPE_NEED_DVFV_ROWS)) {
		sc = ipe_work_scratch(w);
		if (!sc)
			return false;
		ipe_fsverity_digest(sc, file, inode, hook);
		if (sc->fv.len)
			subj->fv = &sc->fv;
	}

	if (needs & IPE_NEED_FV_SIGNATURE) {
		struct ipe_inode_state *st = bpf_inode_storage_get(&inode_states, inode, 0, 0);

		if (st && st->fsverity_signed)
			holds |= IPE_NEED_FV_SIGNATURE;
	}
	subj->holds = holds;
	return true;
}

/* The path walk's state, shared with its bpf_loop callback: one verified
 * callback instead of IPE_PATH_STEPS unrolled copies keeps 6.1's verifier
 * well inside its limits. */
struct ipe_path_walk {
	struct ipe_scratch *sc;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 pos; /* the path so far is sc->path[pos..IPE_PATH_MAX-1] */
	__u8 named; /* a name is in the path */
	__u8 done;  /* the walk reached the root */
	__u8 truncated;
};

/* Puts "/NAME" of dentry in front of the path so far; false when it does
 * not fit. */
static __always_inline bool ipe_path_prepend(struct ipe_path_walk *w, struct dentry *dentry)
{
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 pos = w->pos;

	if (len + 1 > pos || pos >= IPE_PATH_MAX) {
		w->truncated = 1;
		return false;
	}
	pos -= len;
	/* clang proves the masks redundant and drops them; the verifier, which
	 * cannot follow len + 1 <= pos, needs them. */
	ipe_opaque(pos);
	ipe_opaque(len);
	bpf_probe_read_kernel(&w->sc->path[pos & (IPE_PATH_MAX - 1)], len & (IPE_PATH_MAX - 1), name);
	pos--;
	ipe_opaque(pos);
	w->sc->path[pos & (IPE_PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->named = 1;
	return true;
}

/* One step of d_path's prepend_path: climb to the parent dentry, or from a
 * mount's root to where it is mounted. Returns 1 to stop the walk. */
static long ipe_path_step(__u32 index, void *ctx)
{
	struct ipe_path_walk *w = ctx;
	struct dentry *dentry = w->dentry, *parent;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt, *mnt_parent;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt)
		goto done;
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (mnt_parent == mnt)
			goto done; /* the root of its tree (or a detached one) */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->vfsmnt = (void *)mnt_parent + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry)
		goto done;
	if (!ipe_path_prepend(w, dentry))
		return 1;
	w->dentry = parent;
	return 0;
done:
	w->done = 1;
	return 1;
}

/* d_path's " (deleted)", written byte by byte for the reason ipe_put6
 * is. */
#define IPE_DELETED_LEN 10

static __always_inline void ipe_put_deleted(__u8 *dst)
{
	ipe_put6(dst, ' ', '(', 'd', 'e', 'l', 'e');
	dst[6] = 't';
	dst[7] = 'e';
	dst[8] = 'd';
	dst[9] = ')';
}

/* Whether d_path names the dentry through d_op->d_dname rather than by
 * walking to the root: the condition of d_path itself. */
static __always_inline bool ipe_pseudo_name(struct dentry *dentry, struct dentry *mnt_root)
{
	const struct dentry_operations *ops = BPF_CORE_READ(dentry, d_op);

	if (!ops || !BPF_CORE_READ(ops, d_dname))
		return false;
	return BPF_CORE_READ(dentry, d_parent) != dentry || dentry != mnt_root;
}

/* d_path of the file, relative to the task's root as d_path is. */
static __always_inline void ipe_file_path(struct ipe_event *e, struct ipe_scratch *sc, struct file *file)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct ipe_path_walk w = {
		.sc = sc,
		.dentry = BPF_CORE_READ(file, f_path.dentry),
		.vfsmnt = BPF_CORE_READ(file, f_path.mnt),
		.root_dentry = BPF_CORE_READ(task, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(task, fs, root.mnt),
		.pos = IPE_PATH_MAX - 1,
	};
	/* Not w.dentry inside BPF_CORE_READ: the macro would relocate the
	 * access to w itself against the kernel's types. */
	struct dentry *leaf = w.dentry;
	struct vfsmount *leaf_mnt = w.vfsmnt;
	__u32 pos;

	sc->path[IPE_PATH_MAX - 1] = 0;
	if (ipe_pseudo_name(leaf, BPF_CORE_READ(leaf_mnt, mnt_root))) {
		/* d_path asks the filesystem (d_op->d_dname). Every pseudo file one
		 * can map or execute (memfd, SysV shm) comes from
		 * alloc_file_pseudo, whose simple_dname prints "/NAME (deleted)". */
		w.pos -= IPE_DELETED_LEN;
		ipe_put_deleted(&sc->path[w.pos]);
		w.done = ipe_path_prepend(&w, leaf);
	} else {
		/* d_unlinked(): unhashed and not a root, which d_path marks. */
		if (!BPF_CORE_READ(leaf, d_hash.pprev) && BPF_CORE_READ(leaf, d_parent) != leaf) {
			w.pos -= IPE_DELETED_LEN;
			ipe_put_deleted(&sc->path[w.pos]);
		}
		bpf_loop(IPE_PATH_STEPS, ipe_path_step, &w, 0);
	}
	if (!w.done)
		w.truncated = 1;
	pos = w.pos;
	if (!w.named && pos > 0 && pos < IPE_PATH_MAX) {
		pos--;
		sc->path[pos] = '/';
	}
	ipe_opaque(pos);
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), &sc->path[pos & (IPE_PATH_MAX - 1)]);
	e->path_truncated = w.truncated;
}

static __always_inline void ipe_describe(struct ipe_event *e, struct ipe_scratch *sc, void *target)
{
	struct file *file = target;
	struct super_block *sb;
	struct inode *inode;

	if (!file)
		return;
	inode = BPF_CORE_READ(file, f_inode);
	sb = BPF_CORE_READ(inode, i_sb);
	e->ino = BPF_CORE_READ(inode, i_ino);
	e->sdev = BPF_CORE_READ(sb, s_dev);
	bpf_core_read_str(e->sid, sizeof(e->sid), &sb->s_id);
	if (sc)
		ipe_file_path(e, sc, file);
	else
		e->path_truncated = 1;
}

#endif
