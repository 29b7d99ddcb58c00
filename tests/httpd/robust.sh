#!/bin/sh
# SPDX-License-Identifier: MIT
#
# tests/httpd/robust.sh - run the robustness test of bench/httpd (see
# robust.py) against $QILIN_HTTPD, by default build/bench/qilin-httpd.
# tests/run.sh runs it as the suite "httpd" and counts its PASS/FAIL/SKIP
# lines and summary like a Check suite's. Exit 77 when it cannot run.
here=$(cd "$(dirname "$0")" && pwd)
: "${QILIN_HTTPD:=${1:-build}/bench/qilin-httpd}"
export QILIN_HTTPD
if [ ! -x /usr/bin/python3 ]; then
	echo "httpd: /usr/bin/python3 missing (scripts/deps.sh build installs it)"
	exit 77
fi
exec /usr/bin/python3 "$here/robust.py"
