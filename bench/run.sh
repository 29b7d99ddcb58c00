#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/run.sh [BUILD_DIR] [SCENARIO...] - run the benchmarks side by side with
# their peers, in one run, and keep the results.
#
# Scenarios (default: all of them):
#   nop      NOP round trips: the ring layer against a plain liburing loop
#   spawn    stackless spawn+run from a task, and from outside threads,
#            against Go goroutines (Debian's golang-go)
#   enop     NOPs through the executor (a continuation per completion, 64 in
#            flight per worker) against plain liburing loops on as many threads
#   wake     wake-up latency of a parked worker (Go for scale)
#   task     stackful tasks (bench/task_bench.c), each against Go where Go has
#            a peer: ql_yield switches on one worker (Go channel ping-pong),
#            ql_go+ql_join+ql_task_release (goroutines + WaitGroup), memory per
#            parked task at 100k and 1M (parked goroutines), memory per pending
#            stackless operation, ql_defer plus its run (Go's defer). Parking
#            1M tasks needs vm.max_map_count >= ~2.1M: as root the program
#            raises it for the run and restores it; otherwise it skips 1M.
#            About a minute; `task-quick` is the same with --quick (no 1M).
#
# Each program alternates the systems round by round and reports medians of
# several rounds (the machine is shared and noisy: single runs mean little).
# Results: bench/results/SCENARIO.json (per system the medians and the raw
# runs, the machine, and a top-level "ratios" object, above 1 meaning qilin
# is better) and a Markdown table per scenario on standard output.
# `make bench` installs the peers (scripts/deps.sh bench) and builds first.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(nop spawn enop wake task)
results=$here/results
mkdir -p "$results"

need() {
	if [ ! -x "$build/bench/$1" ]; then
		echo "bench/run.sh: $build/bench/$1 is missing: run 'make bench' (or make benches go-peers)" >&2
		exit 1
	fi
}

for s in "${scenarios[@]}"; do
	echo
	echo "## $s"
	case $s in
	nop)
		need nop_bench
		"$build/bench/nop_bench" -n 2000000 -r 9 --json "$results/nop.json"
		;;
	spawn)
		need exec_bench
		need go-spawn
		"$build/bench/exec_bench" -s spawn --go "$build/bench/go-spawn" --json "$results/spawn.json"
		"$build/bench/exec_bench" -s outside --go "$build/bench/go-spawn" \
			--json "$results/spawn_outside.json"
		;;
	enop)
		need exec_bench
		"$build/bench/exec_bench" -s nop --json "$results/exec_nop.json"
		;;
	wake)
		need exec_bench
		need go-spawn
		"$build/bench/exec_bench" -s wake --go "$build/bench/go-spawn" --json "$results/wake.json"
		;;
	task | task-quick)
		need task_bench
		need go-spawn
		quick=()
		[ "$s" = task-quick ] && quick=(--quick)
		for t in yield spawn park pending defer; do
			"$build/bench/task_bench" -s "$t" "${quick[@]}" --go "$build/bench/go-spawn" \
				--json "$results/task_$t.json"
		done
		;;
	*)
		echo "bench/run.sh: unknown scenario '$s' (known: nop spawn enop wake task task-quick)" >&2
		exit 2
		;;
	esac
done
