//go:build ignore
// SPDX-License-Identifier: GPL-2.0
/*
 * bpfipe: IPE's enforcement as BPF LSM programs. See ipe.h for the table
 * layout, decide.h for the decision shared with the test program and
 * file.h for what a file's properties are.
 *
 * Programs named capture_* attach to hooks that only exist from Linux 6.12
 * (bdev_setintegrity, bdev_free_security, inode_setintegrity, added with
 * in-tree IPE); the loader drops them on older kernels, where userspace
 * fills the devices map instead and fsverity_signature is unobservable.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ipe.h"
#include "maps.h"
#include "decide.h"
#include "file.h"

char LICENSE[] SEC("license") = "GPL";

SEC("lsm/bprm_check_security")
int BPF_PROG(bprm_check_security, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ipe_prior(ret);
	return ipe_enforce(IPE_OP_EXECUTE, IPE_HOOK_BPRM_CHECK, bprm->file, NULL);
}

SEC("lsm/mmap_file")
int BPF_PROG(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot,
	     unsigned long flags, int ret)
{
	if (ret)
		return ipe_prior(ret);
	/* prot, not reqprot: it already includes READ_IMPLIES_EXEC. */
	if (!(prot & IPE_PROT_EXEC))
		return 0;
	return ipe_enforce(IPE_OP_EXECUTE, IPE_HOOK_MMAP, file, NULL);
}

SEC("lsm/file_mprotect")
int BPF_PROG(file_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot,
	     int ret)
{
	if (ret)
		return ipe_prior(ret);
	/* Only a mapping gaining execute is checked, as IPE does. */
	if (vma->vm_flags & IPE_VM_EXEC)
		return 0;
	if (!(prot & IPE_PROT_EXEC))
		return 0;
	return ipe_enforce(IPE_OP_EXECUTE, IPE_HOOK_MPROTECT, vma->vm_file, NULL);
}

/* Newer kernels split compressed modules out of READING_MODULE; the flavor
 * lets the program ask whether the running kernel has the value. */
enum kernel_read_file_id___ipe {
	READING_MODULE_COMPRESSED___ipe = 0,
};

static __always_inline __u8 ipe_read_op(enum kernel_read_file_id id)
{
	if (id == bpf_core_enum_value(enum kernel_read_file_id, READING_FIRMWARE))
		return IPE_OP_FIRMWARE;
	if (id == bpf_core_enum_value(enum kernel_read_file_id, READING_MODULE))
		return IPE_OP_KMODULE;
	if (bpf_core_enum_value_exists(enum kernel_read_file_id___ipe, READING_MODULE_COMPRESSED___ipe) &&
	    id == bpf_core_enum_value(enum kernel_read_file_id___ipe, READING_MODULE_COMPRESSED___ipe))
		return IPE_OP_KMODULE;
	if (id == bpf_core_enum_value(enum kernel_read_file_id, READING_KEXEC_IMAGE))
		return IPE_OP_KEXEC_IMAGE;
	if (id == bpf_core_enum_value(enum kernel_read_file_id, READING_KEXEC_INITRAMFS))
		return IPE_OP_KEXEC_INITRAMFS;
	if (id == bpf_core_enum_value(enum kernel_read_file_id, READING_POLICY))
		return IPE_OP_POLICY;
	if (id == bpf_core_enum_value(enum kernel_read_file_id, READING_X509_CERTIFICATE))
		return IPE_OP_X509_CERT;
	return IPE_OP_INVALID;
}

static __always_inline __u8 ipe_load_op(enum kernel_load_data_id id)
{
	if (id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_FIRMWARE))
		return IPE_OP_FIRMWARE;
	if (id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_MODULE))
		return IPE_OP_KMODULE;
	if (id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_KEXEC_IMAGE))
		return IPE_OP_KEXEC_IMAGE;
	if (id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_KEXEC_INITRAMFS))
		return IPE_OP_KEXEC_INITRAMFS;
	if (id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_POLICY))
		return IPE_OP_POLICY;
	if (id == bpf_core_enum_value(enum kernel_load_data_id, LOADING_X509_CERTIFICATE))
		return IPE_OP_X509_CERT;
	return IPE_OP_INVALID;
}

SEC("lsm/kernel_read_file")
int BPF_PROG(kernel_read_file, struct file *file, enum kernel_read_file_id id, bool contents, int ret)
{
	if (ret)
		return ipe_prior(ret);
	return ipe_enforce(ipe_read_op(id), IPE_HOOK_KERNEL_READ, file, NULL);
}

SEC("lsm/kernel_load_data")
int BPF_PROG(kernel_load_data, enum kernel_load_data_id id, bool contents, int ret)
{
	if (ret)
		return ipe_prior(ret);
	return ipe_enforce(ipe_load_op(id), IPE_HOOK_KERNEL_LOAD, NULL, NULL);
}

/* What dm-verity passes with LSM_INT_DMVERITY_ROOTHASH (include/linux/dm-verity.h). */
struct ipe_dm_verity_digest {
	const char *alg;
	const __u8 *digest;
	__u64 digest_len;
};

static __always_inline struct ipe_device_key ipe_bdev_key(struct block_device *bdev)
{
	struct ipe_device_key key = {};

	key.dev = BPF_CORE_READ(bdev, bd_dev);
	key.diskseq = BPF_CORE_READ(bdev, bd_disk, diskseq);
	return key;
}

/* Copies dm-verity's root hash into root_hash; false leaves it unknown. */
static __always_inline bool ipe_read_root_hash(struct ipe_digest *root_hash, const void *value)
{
	struct ipe_dm_verity_digest vd;
	char alg[IPE_ALG_LEN + 8] = {};
	long n;

	if (bpf_probe_read_kernel(&vd, sizeof(vd), value))
		return false;
	if (vd.digest_len == 0 || vd.digest_len > IPE_DIGEST_MAX)
		return false;
	n = bpf_probe_read_kernel_str(alg, sizeof(alg), vd.alg);
	/* n counts the NUL: a name of IPE_ALG_LEN bytes fills the field. */
	if (n <= 1 || n > IPE_ALG_LEN + 1)
		return false;
	__builtin_memcpy(root_hash->alg, alg, IPE_ALG_LEN);
	if (bpf_probe_read_kernel(root_hash->bytes, vd.digest_len & (2 * IPE_DIGEST_MAX - 1), vd.digest))
		return false;
	root_hash->len = vd.digest_len;
	return true;
}

/* IPE's ipe_bdev_setintegrity: dm-verity reports a device's root hash and
 * whether its signature verified, on table load and again on resume. */
SEC("lsm/bdev_setintegrity")
int BPF_PROG(capture_bdev_setintegrity, struct block_device *bdev, enum lsm_integrity_type type,
	     const void *value, __u64 size, int ret)
{
	struct ipe_device_key key;
	struct ipe_device dev = {};
	struct ipe_device *old;
	__u64 v = 0;

	if (ret)
		return ipe_prior(ret);
	/* The verifier refuses a direct read of the const void * argument. */
	if (bpf_get_func_arg(ctx, 2, &v))
		return 0;
	key = ipe_bdev_key(bdev);
	old = bpf_map_lookup_elem(&devices, &key);
	if (old)
		dev = *old;

	if (type == bpf_core_enum_value(enum lsm_integrity_type, LSM_INT_DMVERITY_ROOTHASH)) {
		__builtin_memset(&dev.root_hash, 0, sizeof(dev.root_hash));
		if (v && !ipe_read_root_hash(&dev.root_hash, (const void *)v))
			__builtin_memset(&dev.root_hash, 0, sizeof(dev.root_hash));
	} else if (type == bpf_core_enum_value(enum lsm_integrity_type, LSM_INT_DMVERITY_SIG_VALID)) {
		dev.signed_ = size > 0 && v;
	} else {
		return 0;
	}
	/* A whole-value update: a concurrent decision sees the old entry or
	 * the new one, never half of each. */
	bpf_map_update_elem(&devices, &key, &dev, BPF_ANY);
	return 0;
}

SEC("lsm/bdev_free_security")
int BPF_PROG(capture_bdev_free_security, struct block_device *bdev)
{
	struct ipe_device_key key = ipe_bdev_key(bdev);

	bpf_map_delete_elem(&devices, &key);
	return 0;
}

/* IPE's ipe_inode_setintegrity: fs-verity reports that a file's builtin
 * signature verified when it sets up the file's verity info. */
SEC("lsm/inode_setintegrity")
int BPF_PROG(capture_inode_setintegrity, struct inode *inode, enum lsm_integrity_type type,
	     const void *value, __u64 size, int ret)
{
	struct ipe_inode_state *st;
	__u64 v = 0;

	if (ret)
		return ipe_prior(ret);
	if (type != bpf_core_enum_value(enum lsm_integrity_type, LSM_INT_FSVERITY_BUILTINSIG_VALID))
		return 0;
	if (bpf_get_func_arg(ctx, 2, &v))
		return 0;
	st = bpf_inode_storage_get(&inode_states, inode, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (st)
		st->fsverity_signed = size > 0 && v;
	return 0;
}
