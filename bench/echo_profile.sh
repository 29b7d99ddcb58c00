#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/echo_profile.sh [BUILD_DIR] - where an echo server's CPU goes, and the
# ceiling that puts on any echo server's lead over another.
#
# For qilin (echo_server, streams) and the epoll peer in turn: the server on
# the server CPU (default 1) with one worker, bench/peers/loadgen on the client
# CPU (default 0) with C connections (1000) of S-byte messages (64), and
# `perf record -g` on the server for D seconds (5) in the middle of the run.
# Printed per server: messages per second, server CPU per message, and the
# share of the server's samples inside the kernel's TCP send and receive
# (tcp_sendmsg and tcp_recvmsg with everything they call: on loopback the
# send includes delivering the segment to the peer's socket and waking it).
# The rest is what a server's design can change: system calls, epoll or
# io_uring, and user space. The last line is the ceiling: a server with no
# cost at all beyond the TCP work would do at most 1 / (the epoll server's TCP
# share) times the epoll server's messages per CPU-second.
#
# Needs perf (Debian: linux-perf) and root or perf_event_paranoid <= 1.
# Knobs: ECHO_PROFILE_CONNS, ECHO_PROFILE_SIZE, ECHO_PROFILE_SECS,
# ECHO_PROFILE_SERVER_CPU, ECHO_PROFILE_CLIENT_CPU, ECHO_PROFILE_PORT (18480).
set -euo pipefail

build=${1:-build}
conns=${ECHO_PROFILE_CONNS:-1000}
size=${ECHO_PROFILE_SIZE:-64}
secs=${ECHO_PROFILE_SECS:-5}
scpu=${ECHO_PROFILE_SERVER_CPU:-1}
ccpu=${ECHO_PROFILE_CLIENT_CPU:-0}
port=${ECHO_PROFILE_PORT:-18480}

die() { echo "echo_profile: $*" >&2; exit 1; }
command -v perf >/dev/null || die "perf not found (Debian: apt-get install linux-perf)"
for b in bench/echo_server bench/peers/epoll_echo bench/peers/loadgen; do
	[ -x "$build/$b" ] || die "$build/$b missing: make benches bench-peers"
done
tmp=$(mktemp -d)
srv=
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# tcp PERF_DATA: the children percentages of tcp_sendmsg and tcp_recvmsg, added.
tcp() {
	perf report -i "$1" --children --sort sym -g none --stdio 2>/dev/null |
		awk 'NF >= 2 && $(NF-1) == "[k]" && ($NF == "tcp_sendmsg" || $NF == "tcp_recvmsg") && !seen[$NF]++ {
			sub("%", "", $1); t += $1 } END { print t + 0 }'
}

# user PERF_DATA: the share of samples outside the kernel.
user() {
	perf report -i "$1" --no-children --sort dso --stdio 2>/dev/null |
		awk '$1 ~ /%$/ && $2 != "[kernel.kallsyms]" { sub("%", "", $1); u += $1 } END { print u + 0 }'
}

hz=$(getconf CLK_TCK)
declare -A tcp_share per_msg
printf '| server | msgs/s | server CPU per msg (us) | TCP send+recv | rest: kernel | rest: user |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for sys in qilin epoll; do
	port=$((port + 1))
	case $sys in
	qilin) cmd=("$build/bench/echo_server" -w 1 -p "$port") ;;
	epoll) cmd=("$build/bench/peers/epoll_echo" -p "$port") ;;
	esac
	taskset -c "$scpu" "${cmd[@]}" >/dev/null 2>"$tmp/$sys.err" &
	srv=$!
	for _ in $(seq 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	taskset -c "$ccpu" "$build/bench/peers/loadgen" -p "$port" -c "$conns" -s "$size" -w 1 \
		-d $((secs + 3)) >"$tmp/$sys.json" 2>/dev/null &
	lg=$!
	sleep 2
	t0=$(cpu_ticks "$srv")
	w0=$(date +%s.%N)
	perf record -q -g -p "$srv" -o "$tmp/$sys.data" -- sleep "$secs" >/dev/null 2>&1 ||
		die "perf record failed (root, or kernel.perf_event_paranoid <= 1)"
	t1=$(cpu_ticks "$srv")
	w1=$(date +%s.%N)
	wait "$lg" || die "$sys: loadgen failed: $(cat "$tmp/$sys.json")"
	kill "$srv"
	wait "$srv" 2>/dev/null || true
	srv=
	rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["msgs_per_s"])' "$tmp/$sys.json")
	tcp_pct=$(tcp "$tmp/$sys.data")
	usr=$(user "$tmp/$sys.data")
	read -r per tcp row < <(python3 -c '
import sys
rate, t0, t1, hz, w0, w1, tcp_pct, usr = map(float, sys.argv[1:])
cpu = (t1 - t0) / hz / (w1 - w0)        # server CPUs busy over the profile
per = cpu / rate * 1e6                  # us of server CPU per message
tcp = tcp_pct / 100
u = usr / 100
k = 1 - tcp - u
print(f"{per:.2f} {tcp:.4f} {per:.2f} us | {tcp * per:.2f} us ({tcp:.1%}) | "
      f"{k * per:.2f} us ({k:.1%}) | {u * per:.2f} us ({u:.1%})")' \
		"$rate" "$t0" "$t1" "$hz" "$w0" "$w1" "$tcp_pct" "$usr")
	tcp_share[$sys]=$tcp
	per_msg[$sys]=$per
	printf '| %s | %.0f | %s |\n' "$sys" "$rate" "$row"
done
python3 -c "
t, p = ${tcp_share[epoll]}, ${per_msg[epoll]}
print(f'''
Ceiling over the epoll server for a server with no cost beyond its TCP work: {1 / t:.2f}x.
A 1.2x lead needs at most {p / 1.2 - t * p:.2f} us per message beyond that work (the epoll server: {p - t * p:.2f} us).''')"
