#!/bin/sh
# The guest half of `make demo` (test/demo/main.go boots it): bpfipe
# enforcing a policy that trusts one dm-verity image, told as a terminal
# transcript. Every step checks that what happened is what the story says
# and stops the demo with a non-zero status when it is not, so the demo is
# also a smoke test.
#
# The guest's init has opened the image as dm-verity device "trusted",
# mounted at /mnt/trusted. Environment:
#   DEMO_DIR        where the host put this script and demo.pol
#   DEMO_ROOT_HASH  the image's root hash as veritysetup printed it (hex)
set -u
DEMO_DIR=${DEMO_DIR:-/opt/bpfipe-demo}
step=0

# say starts a step of the story with its narration.
say() {
	step=$((step + 1))
	printf '\n%d. %s\n' "$step" "$1"
	shift
	for line in "$@"; do
		printf '   %s\n' "$line"
	done
}

# run shows a command as typed and runs it in a child shell, so a denied
# exec reads as it would at a prompt. Output and status are kept in $out
# and $status for the checks.
run() {
	printf 'guest$ %s\n' "$1"
	out=$(sh -c "$1" 2>&1)
	status=$?
	if [ -n "$out" ]; then
		printf '%s\n' "$out"
	fi
}

# here shows a command and runs it in this shell, for assignments.
here() {
	printf 'guest$ %s\n' "$1"
	eval "$1"
}

fail() {
	printf '\ndemo: step %d did not go as the story says: %s\n' "$step" "$1" >&2
	exit 1
}

expect_status() {
	[ "$status" -eq "$1" ] || fail "exit status $status, want $1"
}

# expect_out fails the step unless the last output holds the fixed string.
expect_out() {
	printf '%s\n' "$out" | grep -qF -- "$1" || fail "no \"$1\" in the output"
}

# expect_match fails the step unless a line of the last output matches the
# extended regular expression.
expect_match() {
	printf '%s\n' "$out" | grep -qE -- "$1" || fail "no line matching /$1/ in the output"
}

expect_no_out() {
	if printf '%s\n' "$out" | grep -qF -- "$1"; then
		fail "\"$1\" in the output"
	fi
}

say "The host built an ext4 image holding a static program, bin/hello, and its" \
	"dm-verity hash tree. The guest opened it as device \"trusted\" and mounted it at" \
	"/mnt/trusted: every block read from it is checked against the root hash."
run "bpfipe devices"
expect_status 0
expect_out "(trusted)"
expect_out "sha256:$DEMO_ROOT_HASH"
expect_out "/mnt/trusted"

say "A policy that runs only the boot filesystem (the initramfs: init, busybox," \
	"bpfipe) and the image with that root hash. examples/demo.pol is the template."
here "ROOT_HASH=\$(bpfipe devices | grep -o 'sha256:[0-9a-f]\\{64\\}')"
[ "$ROOT_HASH" = "sha256:$DEMO_ROOT_HASH" ] || fail "read root hash \"$ROOT_HASH\", want sha256:$DEMO_ROOT_HASH"
here "sed \"s/sha256:0\\{64\\}/\$ROOT_HASH/\" $DEMO_DIR/demo.pol > demo.pol"
run "cat demo.pol"
expect_out "op=EXECUTE dmverity_roothash=sha256:$DEMO_ROOT_HASH action=ALLOW"

say "Check it parses as in-tree IPE would parse it, and ask it about a file with no" \
	"property at all, like a copy in /tmp: no rule matches, the EXECUTE default denies."
run "bpfipe policy check demo.pol"
expect_status 0
expect_out "valid"
run "bpfipe policy eval --policy demo.pol --op EXECUTE"
expect_out 'action=DENY rule="DEFAULT op=EXECUTE action=DENY"'

say "Enforce it. --pin leaves the BPF programs attached after bpfipe exits."
run "bpfipe load --pin demo.pol"
expect_status 0
expect_out "IPE_POLICY_LOAD policy_name=\"demo\""
expect_out "res=1"

say "The program on the verified image runs."
run "/mnt/trusted/bin/hello"
expect_status 0
expect_out "hello from /mnt/trusted/bin/hello"

say "The same bytes copied to /tmp (a tmpfs: no dm-verity, not the boot filesystem)" \
	"are denied, as the policy said."
run "cp /mnt/trusted/bin/hello /tmp/hello"
expect_status 0
run "/tmp/hello"
expect_status 126
expect_out "Permission denied"
expect_no_out "hello from"

say "Each denial is reported in the layout of IPE's access record (AUDIT_IPE_ACCESS):" \
	"the hook, the process, the file and the rule that decided."
run "bpfipe events"
expect_status 0
expect_out 'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1'
expect_out 'path="/tmp/hello" dev="tmpfs"'
expect_out 'rule="DEFAULT op=EXECUTE action=DENY"'

say "What is loaded, and what it decided so far."
run "bpfipe status"
expect_status 0
expect_match '^mode: +enforcing$'
expect_match '^policy: +"demo" version 0\.0\.1'
expect_match 'BPRM_CHECK: +allow=[0-9]+ deny=[1-9]'


say "Permissive mode (IPE's enforce=0): every decision is still made and reported," \
	"but nothing is denied. The copy runs, and its records say enforcing=0."
run "bpfipe enforce off"
expect_status 0
expect_out "MAC_STATUS enforcing=0 old_enforcing=1"
run "/tmp/hello"
expect_status 0
expect_out "hello from /tmp/hello"
run "bpfipe events"
expect_out 'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=0'
expect_out 'path="/tmp/hello"'

say "Back to enforcing, then unload: with no policy everything runs again."
run "bpfipe enforce on"
expect_status 0
expect_out "MAC_STATUS enforcing=1 old_enforcing=0"
run "/tmp/hello"
expect_status 126
run "bpfipe unload"
expect_status 0
run "/tmp/hello"
expect_status 0
expect_out "hello from /tmp/hello"

printf '\nThe story went as told: %d steps.\n' "$step"
