#!/bin/sh
# SPDX-License-Identifier: MIT
#
# bench/go/build.sh OUTDIR - build the Go peers of the benchmarks, offline.
#
# Builds bench/go/spawn into OUTDIR/go-spawn, bench/go/echo into OUTDIR/go-echo
# and bench/go/httpd into OUTDIR/go-httpd (go build -o takes one package, so
# one build per peer; they share the build cache). The module (bench/go/go.mod)
# uses the standard library only, so nothing is ever downloaded: GOPROXY=off
# and GOFLAGS=-mod=mod are not needed, but GOPROXY=off makes a stray import
# fail at once instead of trying the network. Everything Go writes (build
# cache, GOPATH, module cache, its config and telemetry folder) goes under
# OUTDIR, so the build touches nothing outside the build folder. CGO is off:
# the peers need no C, and the binary is then static.
#
# Prints nothing on success. Exit status: 0 on success, 1 when Go is missing
# or the build fails, 2 on a usage error.

set -eu

me=build.sh

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: bench/go/build.sh OUTDIR" >&2
	exit 2
fi
if ! command -v go >/dev/null 2>&1; then
	echo "$me: no 'go' command; install it with: scripts/deps.sh bench" >&2
	exit 1
fi

mkdir -p "$1"
# Go wants absolute cache paths, and the build runs from the module folder.
out=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")" && pwd)

cd "$src"
for peer in spawn echo httpd; do
	env GOCACHE="$out/.gocache" GOPATH="$out/.gopath" GOMODCACHE="$out/.gopath/pkg/mod" \
		XDG_CONFIG_HOME="$out/.goconfig" GOENV=off GOFLAGS=-trimpath GOPROXY=off \
		GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=0 \
		go build -o "$out/go-$peer" "./$peer"
done
