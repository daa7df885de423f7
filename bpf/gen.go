// Package bpf holds bpfipe's BPF programs (C) and their Go bindings, which
// bpf2go generates and which are committed so that building needs no clang.
package bpf

// The ABI types are generated from ipe.h so Go and C can never disagree on a
// layout. The target is little-endian x86_64/arm64 only, like the kernels we
// test on. -mcpu=v3 for the atomic fetch-and-or of the scratch slots (any
// kernel with BPF LSM has it).
//
// The second object is test-only (decide_test.c): it wraps decide.h in a
// program type that loads where LSM programs cannot. Its bindings end in
// _test.go so only tests build them.
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type ipe_event -type ipe_row_key -type ipe_row -type ipe_device_key -type ipe_device -type ipe_settings -type ipe_digest bpfipe bpfipe.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -output-suffix _test -type ipe_test_ctx -type ipe_test_subject -type ipe_decision decidetest decide_test.c
//
// The third object is the tamper guard (guard.c). It is separate so the
// loader can attach it before it creates any of the objects it protects.
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type guard_config guard guard.c
