#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/demo.sh [BUILD_DIR] - README's main job (`make demo`): the
# deferred-task HTTP server on qilin, under load, seen from outside.
#
#   1. starts build/bench/qilin-httpd on 127.0.0.1 (one worker per CPU) and
#      shows one request of each kind with curl;
#   2. attaches build/bpf/qilin-observer to it (as root; otherwise it says
#      why not and goes on without it);
#   3. drives POST /defer-task with wrk (QILIN_DEMO_CONNS connections,
#      default 1000, for QILIN_DEMO_SECS seconds, default 10) and prints
#      requests/s and the latency percentiles;
#   4. stops the server with SIGTERM (a clean shutdown: every connection
#      closed, the executor shut down), which also ends the observer, and
#      prints the observer's last view: queue depth per ring and per worker,
#      latency histograms per opcode, TCP retransmits, errors.
#
# Everything it starts is stopped on exit, ^C included. Exit status: 0, or 1
# when the server does not start or answer, or wrk reports errors.

set -euo pipefail

me=demo.sh
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
secs=${QILIN_DEMO_SECS:-10}
conns=${QILIN_DEMO_CONNS:-1000}
port=${QILIN_DEMO_PORT:-18080}
httpd=$build/bench/qilin-httpd
observer=$build/bpf/qilin-observer
tmp=$(mktemp -d /tmp/qilin-demo.XXXXXX)
srv_pid=
obs_pid=

cleanup() {
	[ -n "$obs_pid" ] && kill "$obs_pid" 2>/dev/null || true
	[ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() {
	printf '\n== %s\n' "$*"
}

for prog in "$httpd" wrk curl; do
	if ! command -v "$prog" >/dev/null 2>&1; then
		echo "$me: $prog is missing: run 'make demo' (it installs and builds what is needed)" >&2
		exit 1
	fi
done

# 1000 connections on each side need more than the usual 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((conns + 64)) ]; then
	conns=$(($(ulimit -n) - 64))
	echo "$me: the descriptor limit is $(ulimit -n): using $conns connections"
fi

while ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; do
	port=$((port + 1))
done

say "qilin-httpd on 127.0.0.1:$port ($(nproc) workers)"
"$httpd" -a 127.0.0.1 -p "$port" -w "$(nproc)" --max-conns $((conns + 100)) \
	>"$tmp/httpd.out" 2>"$tmp/httpd.err" &
srv_pid=$!
for _ in $(seq 100); do
	grep -q '^listening on' "$tmp/httpd.out" 2>/dev/null && break
	if ! kill -0 "$srv_pid" 2>/dev/null; then
		echo "$me: qilin-httpd exited at start:" >&2
		cat "$tmp/httpd.err" >&2
		exit 1
	fi
	sleep 0.1
done
if ! grep -q '^listening on' "$tmp/httpd.out"; then
	echo "$me: qilin-httpd did not say it was listening within 10 s" >&2
	exit 1
fi
cat "$tmp/httpd.out"
url=http://127.0.0.1:$port
echo "\$ curl $url/healthz"
curl -sS --max-time 5 "$url/healthz"
echo
echo "\$ curl -d '{\"job\":\"report\"}' $url/defer-task"
reply=$(curl -sS --max-time 5 -d '{"job":"report"}' "$url/defer-task")
echo "$reply"
id=$(printf '%s' "$reply" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
if [ -z "$id" ]; then
	echo "$me: POST /defer-task did not answer with an id" >&2
	exit 1
fi
echo "\$ curl $url/task/$id"
curl -sS --max-time 5 "$url/task/$id"
echo

say "qilin-observer -p $srv_pid"
if [ "$(id -u)" != 0 ]; then
	echo "not attached: loading BPF programs needs root (or CAP_BPF and CAP_PERFMON);" \
		"run 'sudo make demo' to see it"
elif [ ! -x "$observer" ]; then
	echo "not attached: $observer was not built ('make bpf' failed; see its message)"
else
	"$observer" -p "$srv_pid" -i 2 >"$tmp/obs.out" 2>"$tmp/obs.err" &
	obs_pid=$!
	sleep 1
	if kill -0 "$obs_pid" 2>/dev/null; then
		echo "attached (pid $obs_pid), reporting every 2 s"
	else
		echo "not attached:"
		cat "$tmp/obs.err"
		obs_pid=
	fi
fi

say "wrk: POST /defer-task, $conns connections, ${secs} s"
threads=$(nproc)
wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$here/bench/wrk/post.lua" \
	"$url/defer-task" | tee "$tmp/wrk.out" | grep -v '^JSON'
wrk_json=$(sed -n 's/^JSON //p' "$tmp/wrk.out")
rss_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$srv_pid/status" 2>/dev/null || echo "?")
echo "$wrk_json" | /usr/bin/env python3 -c '
import json, sys
r = json.load(sys.stdin)
print("requests/s %.0f   p50 %.2f ms   p99 %.2f ms   p99.9 %.2f ms   errors %d   server peak RSS %s kB" % (
    r["rps"], r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["p999_us"] / 1e3, r["errors"], sys.argv[1]))
' "$rss_kb"
errors=$(echo "$wrk_json" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')

say "stopping qilin-httpd (SIGTERM)"
kill -TERM "$srv_pid"
status=0
wait "$srv_pid" || status=$?
srv_pid=
echo "qilin-httpd exited with status $status"
if [ -n "$obs_pid" ]; then
	# The observer notices that its target is gone, prints a last interval and exits.
	for _ in $(seq 50); do
		kill -0 "$obs_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$obs_pid" 2>/dev/null || true
	wait "$obs_pid" 2>/dev/null || true
	obs_pid=
	say "what qilin-observer saw (its last full interval during the load)"
	# The table repeats per interval; the last two are the load's end and the exit.
	awk '/^[0-9][0-9]:[0-9][0-9]:[0-9][0-9]/ { n++ } { block[n] = block[n] $0 "\n" }
		END { k = n > 2 ? n - 1 : n; printf "%s", block[k] }' "$tmp/obs.out"
	cat "$tmp/obs.err"
fi
[ "$status" = 0 ] && [ "${errors:-1}" = 0 ]
