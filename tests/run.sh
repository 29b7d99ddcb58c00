#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/run.sh BUILD_DIR - run the Check suites of one build and add them up.
#
# Runs every BUILD_DIR/tests/check_* binary in fork mode (CK_FORK=yes), or
# only those named in QILIN_TEST_ONLY (space-separated, "check_ring" or just
# "ring"), showing each suite's own output and Check summary. Then it runs
# check_ring, check_exec, check_task and check_stream once more with QILIN_URING_DISABLE=all exported,
# which sends the ring layer down the paths an old kernel would take, the way a user would
# force them. Then tests/httpd/robust.sh (bench/httpd's server against real
# clients) runs, both ways, counted like a suite. On a build without
# sanitizers, and when no QILIN_TEST_ONLY is
# given, tests/install_check.sh then installs the build into a scratch root
# and uses it as an outside program would, and tests/valgrind_check.sh runs
# programs that use qilin under valgrind's memcheck (each counted as one
# test case, or one skipped).
#
# Counting is in Check test cases, read from Check's summary lines
# ("100%: Checks: 12, Failures: 0, Errors: 0"): passed = Checks - Failures -
# Errors; each "SKIP: suite/case: reason" line a suite prints is one skipped
# test case. A binary that exits 77 is a skipped suite (its last line of output
# is the reason). A binary that dies without a summary, or exits non-zero
# after reporting no failure (a sanitizer report at exit, say), counts as one
# failure more. The last line is exactly "N passed, N failed, N skipped"; the
# exit status is 1 when anything failed.
#
# Environment:
#   QILIN_TEST_ONLY       suites to run (default: all; "httpd" names tests/httpd/robust.sh)
#                         ("observer" names tests/observer/run_observer.py)
#   QILIN_SUITE_TIMEOUT   seconds per binary before it is killed; 0 means none
#                         (default 900, 1800 under sanitizers, none with
#                         QILIN_STRESS set). Check's per-test timeouts apply
#                         inside a suite; this only catches a hung runner.
#   QILIN_TSAN_SETARCH    1 or 0 to force running TSan binaries under
#                         `setarch -R` on or off (default: only when ASLR has
#                         more entropy than TSan's memory layout tolerates)
#   CK_*, ASAN_OPTIONS, UBSAN_OPTIONS, TSAN_OPTIONS are passed through.

set -uo pipefail

me=run.sh
if [ $# -ne 1 ]; then
	echo "usage: tests/run.sh BUILD_DIR" >&2
	exit 2
fi
build=${1%/}
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -d "$build/tests" ]; then
	echo "$me: no $build/tests: build the tests first (make tests)" >&2
	exit 1
fi

# A sanitizer build is one in a folder named like the Makefile names them
# (build/san-address-undefined, build/san-thread).
san=0
tsan=0
case ${build##*/} in
*san-thread*) san=1 tsan=1 ;;
*san-*) san=1 ;;
esac

export CK_FORK=yes
export CK_VERBOSITY=${CK_VERBOSITY:-normal}
if [ "$san" = 1 ]; then
	# Sanitized code runs several times slower; stretch Check's timeouts.
	export CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-4}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
	export TSAN_OPTIONS=${TSAN_OPTIONS:-second_deadlock_stack=1}
fi

if [ -n "${QILIN_SUITE_TIMEOUT:-}" ]; then
	suite_timeout=$QILIN_SUITE_TIMEOUT
elif [ -n "${QILIN_STRESS:-}" ]; then
	suite_timeout=0
elif [ "$san" = 1 ]; then
	suite_timeout=1800
else
	suite_timeout=900
fi

# The command every binary runs under. timeout(1) puts the binary in a
# process group of its own and, when the time is up or when it is told to
# stop, signals the whole group: Check's forked test children included.
# A duration of 0 means no time limit.
runner=()
if command -v timeout >/dev/null 2>&1; then
	runner=(timeout -k 10 "$suite_timeout")
fi

# ThreadSanitizer maps its shadow memory at fixed addresses; with more ASLR
# entropy than the default 28 bits (vm.mmap_rnd_bits, raised by some recent
# distributions and kernels) a TSan program may die at start with "FATAL:
# ThreadSanitizer: unexpected memory mapping". Running it with ASLR off
# (setarch -R) avoids that without touching system settings.
tsan_needs_setarch() {
	local bits
	case ${QILIN_TSAN_SETARCH:-auto} in
	1 | yes) return 0 ;;
	0 | no) return 1 ;;
	esac
	bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null) || return 0
	[ "$bits" -gt 28 ]
}
if [ "$tsan" = 1 ] && tsan_needs_setarch; then
	if setarch "$(uname -m)" -R true 2>/dev/null; then
		echo "$me: TSan build: running the tests with ASLR off (setarch -R)"
		runner+=(setarch "$(uname -m)" -R)
	else
		echo "$me: warning: TSan may need ASLR off, and setarch -R does not work here" >&2
	fi
fi

# On ^C or TERM: stop the running suite (timeout passes the signal on to its
# whole process group), show what it printed, and give up.
child=
log=
on_signal() {
	trap - INT TERM
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null
		wait "$child" 2>/dev/null
		[ -n "$log" ] && cat "$log" && rm -f "$log"
	fi
	echo "$me: interrupted"
	exit 130
}
trap on_signal INT TERM

passed=0
failed=0
skipped=0
failures=()

# run_suite LABEL BINARY [VAR=VALUE...]: run one Check binary, show its
# output, add its results to the totals.
run_suite() {
	local label=$1 bin=$2
	shift 2
	local rc line checks=0 fails=0 errs=0 summaries=0 skips=0 p f
	log=$(mktemp "${TMPDIR:-/tmp}/qilin-test.XXXXXX")

	echo "=== $label"
	if [ ! -x "$bin" ]; then
		echo "$me: $bin: no such test binary"
		failed=$((failed + 1))
		failures+=("$label (missing)")
		rm -f "$log"
		log=
		return
	fi
	# In the background, so that a ^C or a TERM reaches our trap at once
	# (bash runs traps only between foreground commands, but it does
	# interrupt `wait`); the output goes to a file and is shown after.
	env "$@" "${runner[@]}" "$bin" >"$log" 2>&1 &
	child=$!
	wait "$child"
	rc=$?
	child=
	cat "$log"

	while IFS= read -r line; do
		if [[ $line =~ ([0-9]+)%:\ Checks:\ ([0-9]+),\ Failures:\ ([0-9]+),\ Errors:\ ([0-9]+) ]]; then
			checks=$((checks + BASH_REMATCH[2]))
			fails=$((fails + BASH_REMATCH[3]))
			errs=$((errs + BASH_REMATCH[4]))
			summaries=$((summaries + 1))
		fi
		# A test case the suite left out because it cannot run here
		# prints "SKIP: suite/case: reason" instead of passing silently.
		if [[ $line == SKIP:* ]]; then
			skips=$((skips + 1))
		fi
	done <"$log"
	skipped=$((skipped + skips))

	p=$((checks - fails - errs))
	f=$((fails + errs))
	if [ "$rc" = 77 ]; then
		line=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
		echo "--- $label: skipped: ${line:-no reason given}"
		skipped=$((skipped + 1))
	elif [ "$summaries" = 0 ]; then
		echo "--- $label: no Check summary: $(describe_exit "$rc")"
		f=$((f + 1))
	elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		echo "--- $label: $(describe_exit "$rc") after reporting no failure"
		f=$((f + 1))
	else
		echo "--- $label: $p passed, $f failed"
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" != 0 ]; then
		failures+=("$label")
	fi
	rm -f "$log"
	log=
}

describe_exit() {
	local rc=$1
	if [ "$rc" = 124 ] && [ "${#runner[@]}" -gt 0 ] && [ "$suite_timeout" != 0 ]; then
		echo "timed out after ${suite_timeout}s"
	elif [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
		echo "killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
	else
		echo "exit status $rc"
	fi
}

# The suites to run.
suites=()
# The HTTP server's robustness test (tests/httpd/): with every suite, or by name.
want_httpd=1
# qilin-observer's tests (tests/observer/run_observer.py): likewise.
want_observer=1
if [ -n "${QILIN_TEST_ONLY:-}" ]; then
	want_httpd=0
	want_observer=0
	for name in $QILIN_TEST_ONLY; do
		name=${name##*/}
		if [ "$name" = httpd ]; then
			want_httpd=1
			continue
		fi
		if [ "$name" = observer ]; then
			want_observer=1
			continue
		fi
		[[ $name == check_* ]] || name=check_$name
		suites+=("$build/tests/$name")
	done
else
	for bin in "$build"/tests/check_*; do
		case ${bin##*/} in *.*) continue ;; esac
		[ -f "$bin" ] && [ -x "$bin" ] && suites+=("$bin")
	done
fi
if [ "${#suites[@]}" = 0 ]; then
	echo "$me: no check_* binaries in $build/tests" >&2
fi

rerun=()
for bin in "${suites[@]}"; do
	run_suite "${bin##*/}" "$bin"
	case ${bin##*/} in
	check_ring | check_exec | check_task | check_stream) rerun+=("$bin") ;;
	esac
done

# The old-kernel paths, forced off through the environment as a user would.
for bin in "${rerun[@]}"; do
	[ -x "$bin" ] && run_suite "${bin##*/} (QILIN_URING_DISABLE=all)" "$bin" QILIN_URING_DISABLE=all
done

# bench/httpd against real clients (skipped, exit 77, when it is not built).
if [ "$want_httpd" = 1 ]; then
	run_suite httpd "$here/httpd/robust.sh" QILIN_HTTPD="$build/bench/qilin-httpd"
	if [ -x "$build/bench/qilin-httpd" ]; then
		run_suite "httpd (QILIN_URING_DISABLE=all)" "$here/httpd/robust.sh" \
			QILIN_HTTPD="$build/bench/qilin-httpd" QILIN_URING_DISABLE=all
	fi
fi

# qilin-observer against real targets, as root (each case that cannot run
# here prints SKIP with the reason; a Check-style summary line at the end).
if [ "$want_observer" = 1 ]; then
	run_suite observer "$here/observer/run_observer.py" QILIN_BUILD="$build"
fi

# A check script over the whole build, counted as one test case: exit 0
# passed, 77 skipped (it says why), anything else failed.
run_check() {
	local name=$1 rc

	echo "=== $name"
	"$here/$name.sh" "$build"
	rc=$?
	case $rc in
	0) passed=$((passed + 1)) ;;
	77) skipped=$((skipped + 1)) ;;
	*)
		failed=$((failed + 1))
		failures+=("$name")
		;;
	esac
}

# The installed library, used from outside, and programs that use qilin
# under valgrind's memcheck: neither for a sanitizer build (its objects need
# the sanitizer runtime, and valgrind cannot run them).
if [ "$san" = 0 ] && [ -z "${QILIN_TEST_ONLY:-}" ]; then
	run_check install_check
	run_check valgrind_check
fi

if [ "${#failures[@]}" -gt 0 ]; then
	echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
