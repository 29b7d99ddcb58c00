#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/observer/repro_loop.sh BUILD_DIR CASE [RUNS] - run one case of
# run_observer.py RUNS times (default 20) and count its failures: the
# reproducer for the observer's intermittent findings (FINDINGS.md #3, #4).
# Each failing run's message (with its per-socket tracefs breakdown) is
# printed, and its outputs are kept in the folder the message names.
set -u
if [ $# -lt 2 ]; then
	echo "usage: tests/observer/repro_loop.sh BUILD_DIR CASE [RUNS]" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
build=$1 case=$2 runs=${3:-20}
fails=0
for i in $(seq 1 "$runs"); do
	out=$(QILIN_OBS_ONLY="$case" "$here/run_observer.py" "$build" 2>&1)
	if ! grep -q "^PASS: observer/$case" <<<"$out"; then
		fails=$((fails + 1))
		echo "run $i:"
		grep -E "^(FAIL|ERROR|SKIP|run_observer)" <<<"$out"
	fi
done
echo "$case: $fails of $runs runs failed"
[ "$fails" = 0 ]
