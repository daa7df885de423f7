//go:build ignore
// SPDX-License-Identifier: GPL-2.0
/*
 * bpfipe's tamper guard: LSM programs that keep root processes other than
 * the bpfipe executable that loaded enforcement away from its BPF objects,
 * its pins and its processes. docs/security.md gives the threat model and
 * why each hook is here.
 *
 * Who is authorised: a task whose mm->exe_file is the inode (s_dev, i_ino)
 * the loader claimed, and that nobody traces. The loader does not name the
 * inode itself: it sets claim_tgid, and the first bpf() call of that
 * process records the executable as the kernel sees it (userspace st_dev is
 * not i_sb->s_dev on btrfs and overlayfs).
 *
 * What is protected:
 *   - maps and programs whose kernel name starts with "bpfipe_": no file
 *     descriptor for them (BPF_MAP_GET_FD_BY_ID, BPF_PROG_GET_FD_BY_ID,
 *     BPF_OBJ_GET and creation all pass bpf_map/bpf_prog). A name is set
 *     before the object gets an id, so there is no window in which a new
 *     object is reachable and unmarked;
 *   - links, by id: links[] once the load recorded them, and every id from
 *     link_floor on while the load is still attaching (links have no LSM
 *     hook of their own, only BPF_LINK_GET_FD_BY_ID through lsm/bpf);
 *   - the pin directory: nothing created, linked, unlinked or renamed in
 *     it, no rename of it, no unmount of its bpffs (an unmounted bpffs
 *     drops its pins). Looking inside is not refused: that needs a program
 *     on inode_permission, which runs for every component of every path
 *     walk. BPF_OBJ_GET of a pinned map or program is refused by name as
 *     above; a pinned link's descriptor can be had, and on the kernels the
 *     loader accepts can neither detach its link nor swap its program (the
 *     loader's probe checks that on the running kernel);
 *   - the authorised executable: no open for writing, no truncation, no
 *     unlink, no rename over it, no unmount of its filesystem, so its inode
 *     cannot change content nor be freed and reused by another file;
 *   - processes running it: no ptrace, /proc/PID/mem, process_vm_*,
 *     pidfd_getfd or /proc/PID/fd (all pass ptrace_access_check);
 *   - the executable identity itself: no PR_SET_MM_EXE_FILE / PR_SET_MM_MAP
 *     (a process could otherwise make its /proc/self/exe bpfipe's).
 *
 * Denials return -EPERM, so they are told apart from IPE's -EACCES.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define GUARD_EPERM 1
#define GUARD_MAX_ERRNO 4095
#define GUARD_MAX_LINKS 32

/* "bpfipe_" as the first seven bytes of a little-endian u64. */
#define GUARD_MARK 0x5f657069667062ull
#define GUARD_MARK_MASK 0x00ffffffffffffffull

#define GUARD_FMODE_WRITE 0x2 /* FMODE_WRITE */
#define GUARD_O_TRUNC 01000   /* O_TRUNC */

#define GUARD_PR_SET_MM 35
#define GUARD_PR_SET_MM_EXE_FILE 13
#define GUARD_PR_SET_MM_MAP 14

struct guard_config {
	/* The authorised executable, as the claim recorded it. */
	__u64 exe_ino;
	__u32 exe_dev;   /* kernel dev_t of its superblock */
	__u32 claimed;   /* exe_* are set; until then nobody is authorised */
	/* Nonzero: the next bpf() call of this process claims its executable. */
	__u32 claim_tgid;
	/* Nonzero: every link id from this one on is protected, because the
	 * load is still attaching and has not recorded them all yet. */
	__u32 link_floor;
	/* The pin directory; dir_ino 0 until the loader has made it. */
	__u64 dir_ino;
	__u32 dir_dev;
	__u32 nlinks;
	__u32 links[GUARD_MAX_LINKS];
};

/* Frozen once the load is complete: a descriptor that someone obtained
 * before the guard was attached can no longer change it. The programs
 * only write it for the claim, which happens before the freeze. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} guard SEC(".maps");

static __always_inline struct guard_config *guard_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&guard, &zero);
}

/* An earlier program on the hook already refused: keep its answer, within
 * the range the verifier accepts from an LSM program. */
static __always_inline int guard_prior(int ret)
{
	if (ret < 0 && ret >= -GUARD_MAX_ERRNO)
		return ret;
	return -GUARD_EPERM;
}

/* Kernel structures are read by direct loads through the hooks' BTF
 * pointers, which the verifier turns into inline loads that read 0 rather
 * than fault: inode_permission runs for every component of every path
 * walk, where a helper call per field would show. */
static __always_inline bool guard_is_inode(struct inode *inode, __u64 ino, __u32 dev)
{
	return inode && ino && inode->i_ino == ino && inode->i_sb->s_dev == dev;
}

static __always_inline bool guard_is_exe(const struct guard_config *cfg, struct inode *inode)
{
	return cfg->claimed && guard_is_inode(inode, cfg->exe_ino, cfg->exe_dev);
}

static __always_inline bool guard_is_dir(const struct guard_config *cfg, struct inode *inode)
{
	return guard_is_inode(inode, cfg->dir_ino, cfg->dir_dev);
}

static __always_inline struct inode *guard_exe_inode(struct task_struct *task)
{
	return task->mm->exe_file->f_inode;
}

/* Whether the current task may touch bpfipe's objects. A traced task
 * answers to its tracer, who could make it do anything, so it is not
 * authorised even when it runs bpfipe: that also covers a tracer that
 * attached before the exec of bpfipe, which ptrace_access_check never
 * sees. */
static __always_inline bool guard_authorised(const struct guard_config *cfg)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (task->ptrace)
		return false;
	return guard_is_exe(cfg, guard_exe_inode(task));
}

static __always_inline bool guard_marked(const void *name)
{
	__u64 head = 0;

	if (bpf_probe_read_kernel(&head, sizeof(head), name))
		return false;
	return (head & GUARD_MARK_MASK) == GUARD_MARK;
}

static __always_inline void guard_claim(struct guard_config *cfg)
{
	struct inode *inode = guard_exe_inode(bpf_get_current_task_btf());

	cfg->exe_ino = inode->i_ino;
	cfg->exe_dev = inode->i_sb->s_dev;
	cfg->claimed = cfg->exe_ino != 0;
	cfg->claim_tgid = 0;
}

static __always_inline bool guard_protected_link(const struct guard_config *cfg, __u32 id)
{
	if (cfg->link_floor && id >= cfg->link_floor)
		return true;
	for (__u32 i = 0; i < GUARD_MAX_LINKS; i++) {
		if (i >= cfg->nlinks)
			break;
		if (cfg->links[i] == id)
			return true;
	}
	return false;
}

SEC("lsm/bpf")
int BPF_PROG(protect_bpf, int cmd, union bpf_attr *attr, unsigned int size, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg)
		return 0;
	if (cfg->claim_tgid && cfg->claim_tgid == bpf_get_current_pid_tgid() >> 32)
		guard_claim(cfg);
	/* Maps and programs are refused in bpf_map and bpf_prog, whatever
	 * the command that asks for a descriptor; links only here. */
	if (cmd != BPF_LINK_GET_FD_BY_ID)
		return 0;
	if (!guard_protected_link(cfg, attr->link_id))
		return 0;
	return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
}

/* Called for every new map descriptor: creation, BPF_MAP_GET_FD_BY_ID and
 * BPF_OBJ_GET alike. */
SEC("lsm/bpf_map")
int BPF_PROG(protect_bpf_map, struct bpf_map *map, fmode_t fmode, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg || !guard_marked(&map->name))
		return 0;
	return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
}

/* Called for every new program descriptor, as bpf_map is for maps. */
SEC("lsm/bpf_prog")
int BPF_PROG(protect_bpf_prog, struct bpf_prog *prog, int ret)
{
	struct guard_config *cfg;
	struct bpf_prog_aux *aux;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg)
		return 0;
	aux = prog->aux;
	if (!aux || !guard_marked(&aux->name))
		return 0;
	return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
}

/* The executable's identity is its inode, so its content must not change
 * under it: no open for writing, and no truncation, which O_TRUNC (allowed
 * even on a read-only open) and truncate(2) do without a writable file.
 * Refused to everyone. file_open rather than inode_permission, which runs
 * for every component of every path walk: this hook runs once per open. */
SEC("lsm/file_open")
int BPF_PROG(protect_file_open, struct file *file, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	if (!(file->f_mode & GUARD_FMODE_WRITE) && !(file->f_flags & GUARD_O_TRUNC))
		return 0;
	cfg = guard_config();
	if (cfg && guard_is_exe(cfg, file->f_inode))
		return -GUARD_EPERM;
	return 0;
}

SEC("lsm/path_truncate")
int BPF_PROG(protect_path_truncate, const struct path *path, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (cfg && guard_is_exe(cfg, path->dentry->d_inode))
		return -GUARD_EPERM;
	return 0;
}

/* Nothing may appear in the pin directory but what bpfipe pins there, be
 * it a pin (BPF_OBJ_PIN creates through vfs_mkobj, which asks
 * inode_create), a directory, a symbolic or a hard link. */
static __always_inline int guard_dir_change(struct inode *dir)
{
	struct guard_config *cfg = guard_config();

	if (!cfg || !guard_is_dir(cfg, dir))
		return 0;
	return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
}

SEC("lsm/inode_create")
int BPF_PROG(protect_inode_create, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	if (ret)
		return guard_prior(ret);
	return guard_dir_change(dir);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(protect_inode_mkdir, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	if (ret)
		return guard_prior(ret);
	return guard_dir_change(dir);
}

SEC("lsm/inode_symlink")
int BPF_PROG(protect_inode_symlink, struct inode *dir, struct dentry *dentry, const char *old_name, int ret)
{
	if (ret)
		return guard_prior(ret);
	return guard_dir_change(dir);
}

/* A hard link into the directory, or of a pin out of it. */
SEC("lsm/inode_link")
int BPF_PROG(protect_inode_link, struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry, int ret)
{
	if (ret)
		return guard_prior(ret);
	if (guard_dir_change(dir))
		return -GUARD_EPERM;
	return guard_dir_change(old_dentry->d_parent->d_inode);
}

/* Renaming the pin directory, or a pin out of it, into it or over one.
 * Renaming something over the executable would unlink its inode, which
 * could then be freed and its number reused. */
SEC("lsm/inode_rename")
int BPF_PROG(protect_inode_rename, struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
	     struct dentry *new_dentry, int ret)
{
	struct inode *moved = old_dentry->d_inode;
	struct inode *replaced = new_dentry->d_inode;
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg)
		return 0;
	if ((guard_is_dir(cfg, moved) || guard_is_dir(cfg, replaced) || guard_is_dir(cfg, old_dir) ||
	     guard_is_dir(cfg, new_dir)) &&
	    !guard_authorised(cfg))
		return -GUARD_EPERM;
	if (guard_is_exe(cfg, replaced))
		return -GUARD_EPERM;
	return 0;
}

/* Unlinking a pin drops its reference (a link's last one detaches it);
 * unlinking the executable's last name would free its inode. */
SEC("lsm/inode_unlink")
int BPF_PROG(protect_inode_unlink, struct inode *dir, struct dentry *dentry, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg)
		return 0;
	if (guard_is_exe(cfg, dentry->d_inode))
		return -GUARD_EPERM;
	if (guard_is_dir(cfg, dir) && !guard_authorised(cfg))
		return -GUARD_EPERM;
	return 0;
}

/* The last unmount of a bpffs frees its pins, which detaches pinned links;
 * an unmounted filesystem frees the executable's inode. */
SEC("lsm/sb_umount")
int BPF_PROG(protect_sb_umount, struct vfsmount *mnt, int flags, int ret)
{
	struct guard_config *cfg;
	__u32 dev;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg)
		return 0;
	dev = mnt->mnt_sb->s_dev;
	if ((cfg->dir_ino && dev == cfg->dir_dev) || (cfg->claimed && dev == cfg->exe_dev))
		return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
	return 0;
}

/* ptrace attach, /proc/PID/mem, process_vm_readv/writev, pidfd_getfd and
 * /proc/PID/fd all ask ptrace_may_access, which asks this hook. A bpfipe
 * process holds descriptors of everything the guard protects. */
SEC("lsm/ptrace_access_check")
int BPF_PROG(protect_ptrace_access, struct task_struct *child, unsigned int mode, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	cfg = guard_config();
	if (!cfg || !guard_is_exe(cfg, guard_exe_inode(child)))
		return 0;
	return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
}

/* PR_SET_MM_EXE_FILE (and PR_SET_MM_MAP, which carries an exe_fd) lets a
 * process point its mm->exe_file at any executable, bpfipe's included. The
 * fd it names cannot be checked without a race, so both are refused to
 * everyone but bpfipe while the guard runs. Returning 0 here lets the
 * kernel's default (-ENOSYS, "not handled") through: the trampoline only
 * skips the default hook for a nonzero answer. */
SEC("lsm/task_prctl")
int BPF_PROG(protect_task_prctl, int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
	     unsigned long arg5, int ret)
{
	struct guard_config *cfg;

	if (ret)
		return guard_prior(ret);
	if (option != GUARD_PR_SET_MM || (arg2 != GUARD_PR_SET_MM_EXE_FILE && arg2 != GUARD_PR_SET_MM_MAP))
		return 0;
	cfg = guard_config();
	if (!cfg)
		return 0;
	return guard_authorised(cfg) ? 0 : -GUARD_EPERM;
}
