#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/run.sh [--quick] [BUILD_DIR] [SCENARIO...] - run the benchmarks side by
# side with their peers and keep the results. `make bench` runs it.
#
# Scenarios (default: all of them, in this order):
#   nop      NOP round trips: the ring layer against a plain liburing loop
#   spawn    stackless spawn+run from a task and from outside threads
#            (exec_bench), stackful spawn+join and yield ping-pong
#            (task_bench -s spawn, -s yield), each against Go goroutines
#   enop     NOPs through the executor against plain liburing loops
#   wake     wake-up latency of a parked worker (Go for scale)
#   task     the rest of the stackful-task benches (task_bench: park, pending,
#            defer; and spawn, yield when the spawn scenario did not run in
#            this invocation). `task-quick`: the same with --quick (no 1M park).
#   echo     TCP echo, C connections (1000) in closed loop, 64 B and 4 KiB
#            messages, from bench/peers/loadgen: qilin (bench/echo_server.c
#            -m stream: multishot recv + send callbacks) vs an epoll server
#            (bench/peers/epoll_echo.c) vs Go (go-echo); and, for
#            information, qilin-task (echo_server -m task: a stackful task
#            per connection in ql_recv/ql_send)
#   http     POST /defer-task with wrk at C connections (1000): qilin-httpd
#            vs Go net/http (go-httpd, same handler) vs nginx (static 202,
#            the ceiling); req/s, p50/p99/p999, errors, peak RSS
#   file     4 KiB random reads at depth 64 on a 1 GiB file: qilin
#            (bench/file_bench.c, ql_read_cb continuations) vs fio io_uring
#   observer the http scenario's qilin run without and with
#            `qilin-observer -p PID` attached: throughput loss in percent
#
# Shape of the side-by-side scenarios (echo, http, file, observer): the server
# under test runs on the server CPUs (default: the last CPU) with one worker
# per server CPU (qilin -w N, GOMAXPROCS=N, nginx worker_processes N, epoll
# threads N); the load generator runs on the client CPUs (default: CPU 0).
# Figures "per server core" divide by N. Every server is started fresh for
# each round and killed on exit (trap); its port must be free first. The
# systems run one after the other in a rotating order (round r starts with
# system r mod n); each figure is the median over the rounds; each ratio is
# the median of the per-round ratios. A run that fails is recorded as failed
# (reported, never silently dropped) and makes the exit status 1. Each echo
# and http run also records the server's CPU use (server_cpu_pct, from
# /proc/PID/stat) and the headline per second of server CPU (per_cpu_s): on
# 2 vCPUs one client CPU often cannot saturate the server, and the table
# says so.
#
# Knobs (environment):
#   QILIN_BENCH_ROUNDS   rounds per side-by-side scenario (3)
#   QILIN_BENCH_SECS     measured seconds per run (echo 4, http 8, file 5,
#                        observer 8)
#   QILIN_BENCH_WARM     warm-up seconds before each measured run (1)
#   QILIN_BENCH_CONNS    connections for echo and http (1000)
#   QILIN_BENCH_SERVER_CPUS / QILIN_BENCH_CLIENT_CPUS   taskset CPU lists
#   QILIN_BENCH_PORT     first TCP port used (18400; up to +9)
#   QILIN_BENCH_FILE     the 1 GiB file for `file` (BUILD_DIR/bench/data/file.bin,
#                        written once from /dev/urandom)
#   QILIN_BENCH_NO_BUILD=1  skip scripts/deps.sh and make (make bench sets it)
#   QILIN_BENCH_RESULTS  where the JSON and PNGs go (bench/results)
# --quick: 2 rounds of 3 s and task-quick instead of task.
#
# Results: bench/results/SCENARIO.json (per system the medians and the raw
# runs, the machine, the peers' versions, and a top-level "ratios" object,
# above 1 meaning qilin is better), PNG plots bench/results/SCENARIO_*.png for
# the side-by-side scenarios (bench/report.py, bench/plot/*.gp), and a Markdown
# table per scenario on standard output with PASS/MISS per target.
# Servers' logs go to BUILD_DIR/bench/run/.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
all_scenarios=(nop spawn enop wake task echo http file observer)
known=" ${all_scenarios[*]} task-quick "

quick=0
if [ "${1:-}" = --quick ]; then
	quick=1
	shift
fi
build=build
if [ $# -gt 0 ] && [[ $known != *" $1 "* ]]; then
	build=$1
	shift
fi
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
	scenarios=("${all_scenarios[@]}")
	[ $quick = 1 ] && scenarios=(nop spawn enop wake task-quick echo http file observer)
fi
for s in "${scenarios[@]}"; do
	if [[ $known != *" $s "* ]]; then
		echo "bench/run.sh: unknown scenario '$s' (known:$known)" >&2
		exit 2
	fi
done
# make gets the folder as given (relative to the top: the names in its .d files); the rest of
# this script uses the absolute path.
make_build=$build
case $build in /*) ;; *) build=$top/$build ;; esac

rounds=${QILIN_BENCH_ROUNDS:-3}
warm=${QILIN_BENCH_WARM:-1}
conns=${QILIN_BENCH_CONNS:-1000}
port0=${QILIN_BENCH_PORT:-18400}
if [ $quick = 1 ]; then
	rounds=${QILIN_BENCH_ROUNDS:-2}
	QILIN_BENCH_SECS=${QILIN_BENCH_SECS:-3}
fi
secs_for() { echo "${QILIN_BENCH_SECS:-$1}"; }

ncpu=$(nproc)
srv_cpus=${QILIN_BENCH_SERVER_CPUS:-$((ncpu - 1))}
cli_cpus=${QILIN_BENCH_CLIENT_CPUS:-0}
# Number of CPUs in a taskset list such as 1 or 2-3 or 1,3.
count_cpus() {
	local n=0 part
	IFS=, read -ra parts <<<"$1"
	for part in "${parts[@]}"; do
		if [[ $part == *-* ]]; then
			n=$((n + ${part#*-} - ${part%-*} + 1))
		else
			n=$((n + 1))
		fi
	done
	echo $n
}
nsrv=$(count_cpus "$srv_cpus")
ncli=$(count_cpus "$cli_cpus")

results=${QILIN_BENCH_RESULTS:-$here/results}
rundir=$build/bench/run
mkdir -p "$results" "$rundir"
status=0

# ------------------------------------------------------------------ building

if [ "${QILIN_BENCH_NO_BUILD:-0}" != 1 ]; then
	"$top/scripts/deps.sh" build bench bpf
	make -C "$top" --no-print-directory BUILD="$make_build" all go-peers bench-peers
fi

need() {
	if [ ! -x "$build/bench/$1" ]; then
		echo "bench/run.sh: $build/bench/$1 is missing: run 'make bench' (or make benches go-peers)" >&2
		exit 1
	fi
}

# ------------------------------------------------------------------ servers

# Every server and helper this script starts; all are killed on exit.
declare -a started=()
cleanup() {
	local p
	for p in "${started[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	sleep 0.2
	for p in "${started[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'echo "bench/run.sh: interrupted" >&2; exit 130' INT TERM

# Servers and wrk need one fd per connection: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt $((conns + 100)) ]; then
	echo "bench/run.sh: RLIMIT_NOFILE is $(ulimit -n), too low for $conns connections" >&2
	exit 1
fi
if [ "$ncpu" -lt 2 ]; then
	echo "bench/run.sh: warning: one CPU: servers and load generators share it" >&2
fi

port_free() {
	! ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .
}

# start_server LOG PORT WAIT CMD... : start CMD on the server CPUs, its output
# in LOG, and wait (10 s at most) until it is ready: WAIT=print waits for its
# "listening on" line, WAIT=port for a listener on PORT. Sets srv_pid.
# Returns 1 with the reason in srv_why.
start_server() {
	local log=$1 port=$2 how=$3 i
	shift 3
	srv_pid=
	srv_why=
	if ! port_free "$port"; then
		srv_why="port $port is in use: $(ss -Htlnp "( sport = :$port )" | head -1)"
		return 1
	fi
	taskset -c "$srv_cpus" "$@" >"$log" 2>&1 &
	srv_pid=$!
	started+=("$srv_pid")
	for i in $(seq 100); do
		if ! kill -0 "$srv_pid" 2>/dev/null; then
			wait "$srv_pid" 2>/dev/null && true
			srv_why="$1 exited at start: $(tail -n 3 "$log" | tr '\n' ' ')"
			return 1
		fi
		if [ "$how" = print ] && grep -q "listening on" "$log"; then
			return 0
		fi
		if [ "$how" = port ] && ! port_free "$port"; then
			return 0
		fi
		sleep 0.1
	done
	srv_why="$1 not ready after 10 s: $(tail -n 3 "$log" | tr '\n' ' ')"
	stop_server "$srv_pid"
	return 1
}

# stop_server PID: SIGTERM, 5 s to exit, then SIGKILL. Says so when it had to kill.
stop_server() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "bench/run.sh: pid $pid ignored SIGTERM for 5 s: killed" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	# Forget it, so that the exit trap never signals a recycled pid.
	local keep=() p
	for p in "${started[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	started=("${keep[@]}")
}

# The sum, over PID and its children (nginx: master + workers), of what the awk
# program $3 prints from /proc/CHILD/$2.
proc_sum() {
	local total=0 p v
	for p in "$1" $(pgrep -P "$1" || true); do
		v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || echo 0)
		total=$((total + ${v:-0}))
	done
	echo $total
}

# Peak RSS in kB of PID and its children.
peak_rss_kb() { proc_sum "$1" status '/^VmHWM:/ { print $2 }'; }

# CPU time in clock ticks used so far by PID and its children (utime + stime).
cpu_ticks() { proc_sum "$1" stat '{ print $14 + $15 }'; }
clk_tck=$(getconf CLK_TCK)
# The server's CPU use in percent of one CPU since cpu_mark: tells whether the
# server or the client was the bottleneck (a server below ~90% was not).
cpu_mark() {
	mark_ticks=$(cpu_ticks "$srv_pid")
	mark_ns=$(date +%s%N)
}
cpu_pct() {
	local now_ticks now_ns
	now_ticks=$(cpu_ticks "$srv_pid")
	now_ns=$(date +%s%N)
	echo $(((now_ticks - mark_ticks) * 100000000000 / clk_tck / (now_ns - mark_ns + 1)))
}

# emit RUNS SYSTEM CASE ROUND JSON: one run's figures as a line of RUNS.
emit() {
	jq -c --arg s "$2" --arg c "$3" --argjson r "$4" '. + {system: $s, case: $c, round: $r}' \
		<<<"$5" >>"$1"
}
# fail_run RUNS SYSTEM CASE ROUND WHY: a run that produced no figures.
fail_run() {
	echo "bench/run.sh: FAILED: $2${3:+ $3} round $4: $5" >&2
	jq -nc --arg s "$2" --arg c "$3" --argjson r "$4" --arg w "$5" \
		'{system: $s, case: $c, round: $r, failed: $w}' >>"$1"
	status=1
}

# The config object of a scenario's JSON.
config_json() {
	jq -nc --argjson rounds "$rounds" --argjson secs "$1" --argjson warm "$warm" \
		--argjson conns "$conns" --arg srv "$srv_cpus" --arg cli "$cli_cpus" \
		--arg shape "$2" --argjson nsrv "$nsrv" \
		'{rounds: $rounds, secs: $secs, warm_secs: $warm, conns: $conns,
		  server_cpus: $srv, server_ncpu: $nsrv, client_cpus: $cli, shape: $shape}'
}

report() {
	local scen=$1 runs=$2 cfg=$3
	echo "$cfg" >"$rundir/$scen.config.json"
	if ! /usr/bin/python3 "$here/report.py" "$scen" "$runs" "$results/$scen.json" "$results" \
		"$rundir/$scen.config.json"; then
		status=1
	fi
}

# Rotating order: the systems of round r, starting with system r mod n.
order() {
	local r=$1
	shift
	local n=$# i
	local a=("$@")
	for ((i = 0; i < n; i++)); do
		echo "${a[$(((r + i) % n))]}"
	done
}

# ------------------------------------------------------------------ echo

scenario_echo() {
	local secs runs sys r port bin cmd size cs out json
	secs=$(secs_for 4)
	runs=$rundir/echo.runs
	: >"$runs"
	need echo_server
	for r in $(seq "$rounds"); do
		for sys in $(order "$r" qilin qilin-task epoll go); do
			port=$((port0 + 1))
			case $sys in
			qilin | qilin-task) bin=$build/bench/echo_server ;;
			epoll) bin=$build/bench/peers/epoll_echo ;;
			go) bin=$build/bench/go-echo ;;
			esac
			case $sys in
			qilin) cmd=("$bin" -p "$port" -w "$nsrv" -m stream) ;;
			qilin-task) cmd=("$bin" -p "$port" -w "$nsrv" -m task) ;;
			epoll) cmd=("$bin" -p "$port" -t "$nsrv") ;;
			go) cmd=(env GOMAXPROCS="$nsrv" "$bin" -p "$port") ;;
			esac
			if [ ! -x "$bin" ]; then
				for cs in 64B 4KiB; do
					fail_run "$runs" "$sys" "$cs" "$r" "$bin is missing (make benches bench-peers go-peers)"
				done
				continue
			fi
			if ! start_server "$rundir/echo-$sys.log" "$port" print "${cmd[@]}"; then
				for cs in 64B 4KiB; do
					fail_run "$runs" "$sys" "$cs" "$r" "$srv_why"
				done
				continue
			fi
			for size in 64 4096; do
				cs=64B
				[ $size = 4096 ] && cs=4KiB
				cpu_mark
				if out=$(taskset -c "$cli_cpus" "$build/bench/peers/loadgen" -p "$port" \
					-c "$conns" -s "$size" -t "$ncli" -w "$warm" -d "$secs" \
					2>>"$rundir/echo-loadgen.log") && json=$(head -1 <<<"$out") &&
					[ -n "$json" ]; then
					emit "$runs" "$sys" "$cs" "$r" \
						"$(jq -c --argjson k "$(peak_rss_kb "$srv_pid")" \
							--argjson c "$(cpu_pct)" \
							'. + {rss_kb: $k, server_cpu_pct: $c}' <<<"$json")"
				else
					fail_run "$runs" "$sys" "$cs" "$r" \
						"loadgen failed: $(tail -n 2 "$rundir/echo-loadgen.log" | tr '\n' ' ')"
				fi
			done
			stop_server "$srv_pid"
		done
	done
	report echo "$runs" "$(config_json "$secs" \
		"server on CPUs $srv_cpus ($nsrv workers), bench/peers/loadgen on CPUs $cli_cpus,\
 $conns conns, closed loop")"
}

# ------------------------------------------------------------------ http

# wrk_run RUNS SYSTEM CASE ROUND PORT SECS: warm up, measure, record.
wrk_run() {
	local runs=$1 sys=$2 cs=$3 r=$4 port=$5 secs=$6 url out json
	url="http://127.0.0.1:$port/defer-task"
	taskset -c "$cli_cpus" wrk -t"$ncli" -c"$conns" -d"${warm}s" -s "$here/wrk/post.lua" "$url" \
		>/dev/null 2>&1 || true
	cpu_mark
	if out=$(taskset -c "$cli_cpus" wrk -t"$ncli" -c"$conns" -d"${secs}s" --latency \
		-s "$here/wrk/post.lua" "$url" 2>&1) &&
		json=$(sed -n 's/^JSON //p' <<<"$out") && [ -n "$json" ]; then
		echo "$out" >>"$rundir/wrk.log"
		emit "$runs" "$sys" "$cs" "$r" "$(jq -c --argjson k "$(peak_rss_kb "$srv_pid")" \
			--argjson n "$nsrv" --argjson c "$(cpu_pct)" \
			'. + {rss_kb: $k, rps_per_core: (.rps / $n), server_cpu_pct: $c}' <<<"$json")"
	else
		echo "$out" >>"$rundir/wrk.log"
		fail_run "$runs" "$sys" "$cs" "$r" "wrk failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
	fi
}

# Start SYSTEM's HTTP server on port; sets srv_pid or srv_why.
start_http() {
	local sys=$1 port=$2 ndir
	case $sys in
	qilin)
		if [ ! -x "$build/bench/qilin-httpd" ]; then
			srv_why="$build/bench/qilin-httpd is missing (bench/httpd/, make all)"
			return 1
		fi
		# Its per-worker task logs go to its working folder.
		mkdir -p "$rundir/qilin-httpd"
		start_server "$rundir/http-qilin.log" "$port" print env -C "$rundir/qilin-httpd" \
			"$build/bench/qilin-httpd" -p "$port" -a 127.0.0.1 -w "$nsrv" \
			--max-conns $((conns + 1000))
		;;
	go)
		if [ ! -x "$build/bench/go-httpd" ]; then
			srv_why="$build/bench/go-httpd is missing (make go-peers)"
			return 1
		fi
		start_server "$rundir/http-go.log" "$port" print env GOMAXPROCS="$nsrv" \
			"$build/bench/go-httpd" -p "$port"
		;;
	nginx)
		if ! command -v nginx >/dev/null; then
			srv_why="no nginx (scripts/deps.sh bench)"
			return 1
		fi
		ndir=$rundir/nginx
		mkdir -p "$ndir"
		sed -e "s|@PREFIX@|$ndir|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$nsrv|g" \
			"$here/nginx/nginx.conf.in" >"$ndir/nginx.conf"
		start_server "$rundir/http-nginx.log" "$port" port nginx -p "$ndir" -c "$ndir/nginx.conf"
		;;
	esac
}

scenario_http() {
	local secs runs sys r port
	secs=$(secs_for 8)
	runs=$rundir/http.runs
	: >"$runs"
	for r in $(seq "$rounds"); do
		for sys in $(order "$r" qilin go nginx); do
			port=$((port0 + 2))
			if ! start_http "$sys" "$port"; then
				fail_run "$runs" "$sys" "" "$r" "$srv_why"
				continue
			fi
			wrk_run "$runs" "$sys" "" "$r" "$port" "$secs"
			stop_server "$srv_pid"
		done
	done
	report http "$runs" "$(config_json "$secs" \
		"server on CPUs $srv_cpus ($nsrv workers), wrk -t$ncli -c$conns on CPUs $cli_cpus,\
 per server core = /$nsrv")"
}

# ------------------------------------------------------------------ file

scenario_file() {
	local secs runs sys r file direct=0 flag=() out mode
	secs=$(secs_for 5)
	runs=$rundir/file.runs
	: >"$runs"
	need file_bench
	file=${QILIN_BENCH_FILE:-$build/bench/data/file.bin}
	mkdir -p "$(dirname "$file")"
	if [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != 1073741824 ]; then
		echo "bench/run.sh: writing the 1 GiB test file $file (random data)"
		dd if=/dev/urandom of="$file" bs=1M count=1024 conv=fsync status=none
	fi
	if dd if="$file" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null; then
		direct=1
		flag=(--direct)
		echo "file: O_DIRECT works on $(df --output=fstype "$file" | tail -1): both systems use it"
	else
		echo "file: O_DIRECT is refused by this filesystem: BOTH systems read buffered (page cache)"
	fi
	mode=buffered
	[ $direct = 1 ] && mode=O_DIRECT
	for r in $(seq "$rounds"); do
		for sys in $(order "$r" qilin fio); do
			case $sys in
			qilin)
				if out=$(taskset -c "$srv_cpus" "$build/bench/file_bench" -f "$file" \
					"${flag[@]}" -q 64 -b 4096 -w "$nsrv" -W "$warm" -d "$secs" \
					2>>"$rundir/file.log"); then
					emit "$runs" qilin "" "$r" "$out"
				else
					fail_run "$runs" qilin "" "$r" "file_bench: $(tail -n 2 "$rundir/file.log" | tr '\n' ' ')"
				fi
				;;
			fio)
				if ! command -v fio >/dev/null; then
					fail_run "$runs" fio "" "$r" "no fio (scripts/deps.sh bench)"
				elif out=$(BS=4096 QD=64 DIRECT=$direct FILE=$file WARM=$warm SECS=$secs \
					taskset -c "$srv_cpus" fio --output-format=json \
					"$here/fio/randread.fio" 2>>"$rundir/file.log"); then
					emit "$runs" fio "" "$r" "$(jq -c '.jobs[0].read |
						{iops: .iops, p50_us: (.clat_ns.percentile["50.000000"] / 1000),
						 p99_us: (.clat_ns.percentile["99.000000"] / 1000),
						 p999_us: (.clat_ns.percentile["99.900000"] / 1000),
						 reads: .total_ios, errors: 0}' <<<"$out")"
				else
					fail_run "$runs" fio "" "$r" "fio: $(tail -n 2 "$rundir/file.log" | tr '\n' ' ')"
				fi
				;;
			esac
		done
	done
	report file "$runs" "$(config_json "$secs" \
		"4 KiB random reads, depth 64, 1 GiB file, $mode, on CPUs $srv_cpus")"
}

# ------------------------------------------------------------------ observer

scenario_observer() {
	local secs runs r port obs=$build/bpf/qilin-observer cond opid ok i
	secs=$(secs_for 8)
	runs=$rundir/observer.runs
	: >"$runs"
	for r in $(seq "$rounds"); do
		port=$((port0 + 3))
		if ! start_http qilin "$port"; then
			fail_run "$runs" qilin "" "$r" "$srv_why"
			fail_run "$runs" qilin+observer "" "$r" "$srv_why"
			continue
		fi
		for cond in $(order "$r" qilin qilin+observer); do
			if [ "$cond" = qilin ]; then
				wrk_run "$runs" qilin "" "$r" "$port" "$secs"
				continue
			fi
			if [ ! -x "$obs" ]; then
				fail_run "$runs" "$cond" "" "$r" "$obs is missing (make bpf)"
				continue
			fi
			if [ "$(id -u)" != 0 ]; then
				fail_run "$runs" "$cond" "" "$r" "not root: the observer cannot load BPF programs"
				continue
			fi
			taskset -c "$cli_cpus" "$obs" -p "$srv_pid" -i 1 >"$rundir/observer-$r.log" 2>&1 &
			opid=$!
			started+=("$opid")
			# Attached once it has printed its first interval (or 3 s have passed alive).
			ok=0
			for i in $(seq 30); do
				kill -0 "$opid" 2>/dev/null || break
				if [ -s "$rundir/observer-$r.log" ] && [ "$i" -ge 12 ]; then
					ok=1
					break
				fi
				sleep 0.1
			done
			if [ $ok = 0 ] && ! kill -0 "$opid" 2>/dev/null; then
				fail_run "$runs" "$cond" "" "$r" \
					"qilin-observer exited: $(tail -n 3 "$rundir/observer-$r.log" | tr '\n' ' ')"
				continue
			fi
			wrk_run "$runs" "$cond" "" "$r" "$port" "$secs"
			if ! kill -0 "$opid" 2>/dev/null; then
				echo "bench/run.sh: qilin-observer ended during the run: see $rundir/observer-$r.log" >&2
			fi
			stop_server "$opid"
		done
		stop_server "$srv_pid"
	done
	report observer "$runs" "$(config_json "$secs" \
		"qilin-httpd on CPUs $srv_cpus, wrk -c$conns and the observer on CPUs $cli_cpus")"
}

# ------------------------------------------------------------------ main

spawn_ran=0
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
		need task_bench
		need go-spawn
		"$build/bench/exec_bench" -s spawn --go "$build/bench/go-spawn" --json "$results/spawn.json"
		"$build/bench/exec_bench" -s outside --go "$build/bench/go-spawn" \
			--json "$results/spawn_outside.json"
		# Stackful spawn+join and yield ping-pong, against Go.
		for t in spawn yield; do
			"$build/bench/task_bench" -s "$t" --go "$build/bench/go-spawn" \
				--json "$results/task_$t.json"
		done
		spawn_ran=1
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
		q=()
		[ "$s" = task-quick ] && q=(--quick)
		list=(yield spawn park pending defer)
		[ $spawn_ran = 1 ] && list=(park pending defer)
		for t in "${list[@]}"; do
			"$build/bench/task_bench" -s "$t" "${q[@]}" --go "$build/bench/go-spawn" \
				--json "$results/task_$t.json"
		done
		;;
	echo) scenario_echo ;;
	http) scenario_http ;;
	file) scenario_file ;;
	observer) scenario_observer ;;
	esac
done
exit $status
