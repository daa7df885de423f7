#!/bin/sh
# Writes vmlinux.h (next to this script) from the BTF of a kernel image:
#   bpf/vmlinux.sh /boot/vmlinuz-...       a bzImage with a zstd payload
#   bpf/vmlinux.sh /sys/kernel/btf/vmlinux raw BTF of the running kernel
# See README.md for the image it comes from.
set -eu
src=$1
out=$(dirname "$0")/vmlinux.h
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$(head -c 4 "$src" | od -An -tx1 | tr -d ' ')" = "9feb0100" ]; then
	btf=$src # raw BTF: magic 0xeb9f, version 1
else
	# The compressed kernel follows the setup code; zstd stops at the end
	# of its frame and complains about the trailer, hence the || true.
	offset=$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$src" | head -n 1 | cut -d: -f1)
	[ -n "$offset" ] || { echo "vmlinux.sh: no zstd payload in $src" >&2; exit 1; }
	tail -c +"$((offset + 1))" "$src" | zstd -dcq >"$tmp/vmlinux" 2>/dev/null || true
	btf=$tmp/vmlinux
fi
bpftool btf dump file "$btf" format c >"$tmp/vmlinux.h"
mv "$tmp/vmlinux.h" "$out"
