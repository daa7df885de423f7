# bpfipe. `make demo` runs the main job, `make test` the whole test suite
# (exactly what CI runs). Targets install what they need on Debian/Ubuntu
# when run as root; otherwise `make deps` prints the command.

# Go from the official tarball lives in /usr/local/go; find it there too.
export PATH := $(PATH):/usr/local/go/bin
GO        ?= go
CLANG     ?= clang-19
GOFLAGS   ?=
export GOFLAGS

# Host packages: clang/llvm/libbpf/bpftool to regenerate BPF objects;
# qemu/ovmf/busybox-static/dpkg for the VM guests; cryptsetup-bin,
# squashfs-tools, e2fsprogs, fsverity and openssl to build the test images.
DEB_PACKAGES = clang-19 llvm-19 libbpf-dev bpftool qemu-system-x86 ovmf \
	busybox-static cryptsetup-bin squashfs-tools e2fsprogs fsverity cpio \
	openssl python3 python3-cryptography debian-archive-keyring dpkg apt

.PHONY: all build test compare kernels unit-test generate check-generated lint deps bench fuzz demo clean

all: build

build:
	$(GO) build -o bin/bpfipe ./cmd/bpfipe
	$(GO) build -o bin/bpfipe-vm ./cmd/bpfipe-vm

# deps installs the host packages when they are missing. As root on
# Debian/Ubuntu it runs apt-get; otherwise it prints the command to run.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "missing packages: $$missing"; echo "run: sudo apt-get install -y $$missing"; exit 1; \
	fi

# demo plays bpfipe's story in a qemu guest (test/demo, docs/demo.md): a
# dm-verity image built here, a policy trusting its root hash, an allowed
# and a denied exec, the access record, permissive mode, unload. It exits
# non-zero when a step does not behave as told. KERNEL=debian-6.1 shows it
# on a kernel without IPE.
KERNEL ?= debian-6.12
demo: deps build
	$(GO) run ./test/demo --kernel $(KERNEL)

# test is the whole suite: unit tests, the BPF decision logic through
# BPF_PROG_TEST_RUN, and the VM tests on debian-6.1 and debian-6.12.
test: deps lint check-generated kernels
	$(MAKE) fuzz
	$(GO) test -count=1 -timeout 60m ./...

# kernels downloads (or refreshes) the stock kernels the VM tests boot, so a
# slow mirror shows up here rather than as a test timeout.
kernels:
	$(GO) run ./cmd/bpfipe-vm fetch

unit-test:
	$(GO) test -count=1 -short ./...

# generate runs bpf2go on a copy of the tree at a fixed path and copies
# its output back: clang's BTF (the order of its forward declarations)
# depends on where the sources are, so objects generated in two checkouts
# could differ. From the one path they are byte-identical from any
# checkout; two checkouts generating at once take turns (flock).
GENERATE_DIR ?= /tmp/bpfipe-generate
generate:
	flock $(GENERATE_DIR).lock sh -ec '\
	rm -rf $(GENERATE_DIR); mkdir -p $(GENERATE_DIR); \
	tar -C $(CURDIR) --exclude=./.git --exclude=./bin -cf - . | tar -C $(GENERATE_DIR) -xf -; \
	cd $(GENERATE_DIR); $(GO) generate ./bpf/...; cd $(CURDIR); \
	cp $(GENERATE_DIR)/bpf/*_bpfel* bpf/; rm -rf $(GENERATE_DIR)'

# check-generated fails when the committed bpf2go output is stale.
check-generated: deps generate
	@git diff --exit-code --stat -- bpf/ || { echo "generated BPF artifacts are stale: run 'make generate' and commit"; exit 1; }

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# bench runs the host micro-benchmarks (parse, compile, lookup, and, as
# root, creating and filling the policy maps and a decision in the kernel,
# natively), then the enforcement benchmark in a guest per stock kernel:
# exec and mmap under no enforcement, bpfipe, in-tree IPE and fapolicyd,
# policy load times, kernel memory, event throughput (test/bench,
# docs/benchmarks.md). About a quarter of an hour; BPFIPE_BENCH_SMOKE=1
# measures briefly, BENCH_OUT=FILE keeps the tables.
bench: deps
	$(GO) test -run=NONE -bench=. -benchmem $(if $(BPFIPE_BENCH_SMOKE),-benchtime=1x) ./policy/ ./maps/ ./bpf/ ./loader/
	$(GO) run ./test/bench/run $(if $(BENCH_OUT),--out $(BENCH_OUT))

# fuzz runs every fuzz target of a parser of untrusted bytes (policies,
# PKCS#7 blobs, device-mapper results and tables, uevents, audit records) for
# FUZZTIME each; the seeds also run as plain tests in every `go test`.
FUZZTIME ?= 10s
FUZZ_TARGETS = ./policy/:FuzzParse ./loader/:FuzzDecodePolicy \
	./loader/dm/:FuzzParseVerityTable ./loader/dm/:FuzzParseResults \
	./loader/blockdev/:FuzzParseUevent ./kernelipe/:FuzzParseMessage ./kernelipe/:FuzzParseLine

fuzz:
	GO=$(GO) test/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

# compare plays the scenario suite under in-tree IPE and under bpfipe in one
# debian-6.12 guest and prints the side-by-side tables; it fails on any
# disagreement, and on any difference a scenario declares that does not
# happen (docs/compare.md).
compare: deps
	$(GO) test -count=1 -v -run 'TestCompareWithInTreeIPE|TestParserFidelity' ./test/compare/

clean:
	rm -rf bin
