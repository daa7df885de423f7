#!/usr/bin/env bash
# fuzz.sh FUZZTIME PKG:TARGET...
#
# Fuzzes each target for FUZZTIME. A target fails when the fuzzer writes a
# failing input (a crash, a failed assertion, an input that hangs a worker):
# the input is kept under PKG/testdata/fuzz/TARGET and replayed here so the
# log shows why.
#
# Go's fuzzing engine can also exit non-zero with "context deadline
# exceeded" when -fuzztime expires while a worker is mid-call, without any
# failing input (golang/go#51484; seen on a loaded 2-core CI machine). That
# is not a finding, so the target is fuzzed once more; only a second engine
# failure in a row, or any other unexplained failure, fails the run.
set -uo pipefail

go=${GO:-go}
fuzztime=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# fuzz_once PKG TARGET: 0 passed, 1 failing input or unexplained failure,
# 2 engine deadline flake.
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
		for f in $new; do
			echo "failing input kept in $dir/$f; replaying it:"
			"$go" test -count=1 -run="^$fn/$f\$" "$pkg"
		done
		return 1
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
		echo "fuzz $fn: the engine stopped at the -fuzztime deadline with no failing input (golang/go#51484); fuzzing again"
		fuzz_once "$pkg" "$fn"
		rc=$?
	fi
	case $rc in
	0) ;;
	2) echo "fuzz $fn: the engine failed at the deadline twice in a row" >&2; exit 1 ;;
	*) echo "fuzz $fn: FAILED" >&2; exit 1 ;;
	esac
done
