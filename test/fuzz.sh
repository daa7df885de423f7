#!/usr/bin/env bash
# fuzz.sh FUZZTIME PKG:TARGET...
#
# Fuzzes each target for FUZZTIME. A target fails when the fuzzer writes a
# failing input (a crash, a failed assertion, an input that hangs a worker):
# the input is kept under PKG/testdata/fuzz/TARGET and replayed here so the
# log shows why.
#
# Go's fuzzing engine can also fail without a finding: it exits non-zero
# with "context deadline exceeded" when -fuzztime expires while a worker is
# mid-call (golang/go#51484), and it can report a worker as hung and keep
# the input it was running although that input passes
# (golang/go#56238). Both were seen on a loaded 2-core CI machine. So an
# input the fuzzer keeps fails the run only if it also fails when replayed;
# an engine failure is fuzzed once more, and only a second one in a row, or
# any other unexplained failure, fails the run.
set -uo pipefail

go=${GO:-go}
fuzztime=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# fuzz_once PKG TARGET: 0 passed, 1 a failing input or an unexplained
# failure, 2 the engine failed without a reproducible finding.
fuzz_once() {
	local pkg=$1 fn=$2 dir=${1%/}/testdata/fuzz/$2 before after new
	before=$(ls "$dir" 2>/dev/null | sort)
	if "$go" test -run=NONE -fuzz="^$fn\$" -fuzztime="$fuzztime" "$pkg" >"$log" 2>&1; then
		return 0
	fi
	after=$(ls "$dir" 2>/dev/null | sort)
	new=$(comm -13 <(echo "$before") <(echo "$after") | grep -v '^$')
	if [ -n "$new" ]; then
		tail -n 40 "$log"
		local f failed=0
		for f in $new; do
			echo "failing input kept in $dir/$f; replaying it:"
			# A bound, so that an input that really hangs fails here too.
			if ! "$go" test -count=1 -timeout=30s -run="^$fn/$f\$" "$pkg"; then
				failed=1
			fi
		done
		if [ $failed -eq 1 ]; then
			return 1
		fi
		# Every kept input passes: the engine's failure, not the code's.
		for f in $new; do rm -f "$dir/$f"; done
		rmdir "$dir" 2>/dev/null
		return 2
	fi
	if grep -q 'context deadline exceeded' "$log"; then
		tail -n 3 "$log"
		return 2
	fi
	tail -n 40 "$log"
	return 1
}

for t in "$@"; do
	pkg=${t%%:*}
	fn=${t##*:}
	echo "fuzz $fn in $pkg for $fuzztime"
	fuzz_once "$pkg" "$fn"
	rc=$?
	if [ $rc -eq 2 ]; then
		echo "fuzz $fn: the fuzzing engine failed without a reproducible finding (golang/go#51484, #56238); fuzzing again"
		fuzz_once "$pkg" "$fn"
		rc=$?
	fi
	case $rc in
	0) ;;
	2) echo "fuzz $fn: the fuzzing engine failed twice in a row" >&2; exit 1 ;;
	*) echo "fuzz $fn: FAILED" >&2; exit 1 ;;
	esac
done
