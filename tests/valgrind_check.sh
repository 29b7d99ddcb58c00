#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/valgrind_check.sh BUILD_DIR - programs that use qilin, run under
# valgrind's memcheck with a full leak check: no invalid access, no use of
# uninitialised memory, no definite or indirect leak (--error-exitcode).
#
#   1. stackful tasks on 2 workers: 2000 spawned, joined and released
#      (bench/task_bench -s spawn), stacks switched, pooled and unmapped;
#   2. two stackful tasks yielding to each other (task_bench -s yield);
#   3. NOPs through the executor's rings and continuations on 2 workers
#      (bench/exec_bench -s nop), the rings' waits and wake-ups included.
#
# The library tells valgrind where task stacks lie and waits in poll(2)
# under it when it was built with valgrind's header (scripts/deps.sh build
# installs the valgrind package); without the header, or without valgrind,
# this is skipped (exit 77) and says why. Prints one "ok" line per program;
# exits 0 when all pass, 1 otherwise. Run by tests/run.sh on builds without
# sanitizers (which valgrind cannot run).

set -uo pipefail

me=valgrind_check.sh
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
	echo "usage: tests/valgrind_check.sh BUILD_DIR" >&2
	exit 2
fi
build=$1
if ! command -v valgrind >/dev/null 2>&1; then
	echo "$me: skipped: no valgrind (scripts/deps.sh build installs it)"
	exit 77
fi
if [ ! -e /usr/include/valgrind/valgrind.h ]; then
	echo "$me: skipped: no <valgrind/valgrind.h>: the library was built without valgrind support"
	exit 77
fi

for b in task_bench exec_bench; do
	if [ ! -x "$build/bench/$b" ]; then
		echo "$me: skipped: $build/bench/$b is not built (make all, or make test)"
		exit 77
	fi
done

status=0
check() {
	local what=$1 log
	shift
	log=$(mktemp "${TMPDIR:-/tmp}/qilin-vg.XXXXXX")
	# KILL: a program that hangs under valgrind ignores TERM in its wait.
	if timeout -s KILL 300 valgrind -q --leak-check=full \
		--errors-for-leak-kinds=definite,indirect --error-exitcode=9 "$@" \
		>"$log" 2>&1; then
		echo "ok $what"
	else
		echo "FAIL $what (exit $?): $*"
		# valgrind's report, else the program's own last words.
		grep -q '^==' "$log" && grep '^==' "$log" | head -n 40 || tail -n 5 "$log"
		status=1
	fi
	rm -f "$log"
}

check "valgrind: 2000 stackful tasks spawned, joined and released on 2 workers" \
	"$build/bench/task_bench" -s spawn --no-peer -r 1 --tasks 2000 --batch 100 -w 2
check "valgrind: two stackful tasks yielding 2000 times each" \
	"$build/bench/task_bench" -s yield --no-peer -r 1 --yields 2000
check "valgrind: NOPs through the executor's rings on 2 workers" \
	"$build/bench/exec_bench" -s nop -r 1 --no-peer
exit $status
