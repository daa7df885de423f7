// Package bpf holds bpfipe's BPF programs (C) and their Go bindings, which
// bpf2go generates and which are committed so that building needs no clang.
package bpf

// The ABI types are generated from ipe.h so Go and C can never disagree on a
// layout. The target is little-endian x86_64/arm64 only, like the kernels we
// test on.
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type ipe_event -type ipe_row_key -type ipe_row -type ipe_device_key -type ipe_device -type ipe_settings -type ipe_digest bpfipe bpfipe.c
