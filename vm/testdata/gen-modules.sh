#!/bin/sh
# Regenerates the fake kernel module tree used by modules_test.go: tiny ELF
# objects whose only content is a .modinfo section, plain (.ko) or
# compressed the way Debian 13 ships modules (.ko.xz, CRC32 check).
# Needs binutils (as, objcopy) and xz-utils. Run from vm/testdata.
set -eu
root=modules/6.0.0-test
rm -rf modules
mkdir -p "$root"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '' | as -o "$work/empty.o"

# module PATH NAME DEPENDS [xz]
module() {
	path=$root/kernel/$1
	mkdir -p "$(dirname "$path")"
	printf 'name=%s\0depends=%s\0vermagic=6.0.0-test SMP mod_unload\0' "$2" "$3" > "$work/modinfo"
	objcopy --add-section .modinfo="$work/modinfo" --set-section-flags .modinfo=alloc,readonly \
		"$work/empty.o" "$path.ko"
	if [ "${4:-}" = xz ]; then
		xz --check=crc32 --lzma2=dict=1MiB "$path.ko"
	fi
}

module drivers/virtio/virtio virtio ""
module drivers/virtio/virtio_ring virtio_ring "virtio" xz
module drivers/virtio/virtio_pci virtio_pci "virtio_ring,virtio"
module drivers/block/virtio_blk virtio_blk "virtio,virtio_ring" xz
module drivers/md/dm-mod dm_mod "" xz
module drivers/md/dm-bufio dm_bufio ""
module lib/reed_solomon/reed_solomon reed_solomon ""
module drivers/md/dm-verity dm_verity "reed_solomon,dm-mod,dm-bufio" xz
module misc/needs-missing needs_missing "not_there"
module misc/cycle-a cycle_a "cycle-b"
module misc/cycle-b cycle_b "cycle_a"
printf 'kernel/fs/ext4/ext4.ko\nkernel/drivers/block/loop.ko\n' > "$root/modules.builtin"
