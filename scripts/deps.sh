#!/bin/sh
# SPDX-License-Identifier: MIT
#
# scripts/deps.sh GROUP... - install the Debian packages a qilin task needs.
#
# Groups:
#   build   compiler, make, pkg-config, liburing, Check, sys/sdt.h (library, tests);
#           libhttp-parser, curl, python3 (bench/httpd and its test); valgrind
#           (<valgrind/valgrind.h> for the library, tests/valgrind_check.sh)
#   bpf     clang/llvm, libbpf, bpftool, libelf, zlib, sys/sdt.h, iproute2;
#           nftables, python3-jsonschema, curl, promtool (the observer's tests)
#   bench   Go, wrk, nginx, fio, gnuplot (the benchmark peers and plots),
#           python3, jq, iproute2 (bench/run.sh's own tools)
#   demo    same as build
#   cross   aarch64 cross compiler, its libc, qemu-user (make test-ctx-cross)
#
# Idempotent: it only asks dpkg what is installed, and says nothing at all
# when every package is already there. When something is missing it installs
# exactly the missing packages (as root, or through sudo), running
# `apt-get update` first only when the package lists are empty, or once after
# a failed install. On a system that is not Debian or Ubuntu it names the
# packages to get and exits 1; set QILIN_DEPS_SKIP=1 to skip this script
# entirely once you have installed the equivalents by hand.
#
# Exit status: 0 when everything is installed, 1 when it is not (and could not
# be installed), 2 on a usage error.

set -eu

me=deps.sh
known_groups="build bpf bench demo cross"

usage() {
	echo "usage: scripts/deps.sh GROUP...   (groups: $known_groups)" >&2
	exit 2
}

# Print the packages of group $1; fail on an unknown group.
group_pkgs() {
	case $1 in
	# libhttp-parser-dev: bench/httpd parses HTTP with it; curl and python3:
	# its robustness test (tests/httpd/robust.sh).
	build) echo "gcc make pkg-config liburing-dev check systemtap-sdt-dev libhttp-parser-dev curl python3" \
		"valgrind" ;;
	# make demo (scripts/demo.sh): wrk drives the server, ss finds a free port.
	demo) echo "wrk iproute2 curl python3" ;;
	# nftables, python3, python3-jsonschema, curl, prometheus (promtool):
	# the observer's tests (tests/observer/run_observer.py, lossy netns).
	bpf) echo "clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev systemtap-sdt-dev iproute2" \
		"nftables python3 python3-jsonschema curl prometheus" ;;
	# gnuplot-nox: the gnuplot binary without the Qt/X11 front ends that the
	# "gnuplot" metapackage would drag in on a headless machine.
	# python3 and jq: bench/run.sh's figures and bench/report.py; iproute2:
	# ss, to check that the servers' ports are free.
	bench) echo "golang-go wrk nginx fio gnuplot-nox python3 jq iproute2" ;;
	# libc6-dev-arm64-cross: the aarch64 headers and libc.a, only a
	# Recommends of the cross compiler, which --no-install-recommends skips.
	cross) echo "gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user" ;;
	*) return 1 ;;
	esac
}

# True on Debian, Ubuntu and their derivatives (ID or ID_LIKE in os-release)
# when dpkg and apt are there to be used.
debian_like() {
	[ -r /etc/os-release ] || return 1
	# os-release is shell-compatible by specification; read it in a subshell
	# so that its variables do not leak into this script.
	ids=$(
		# shellcheck disable=SC1091
		. /etc/os-release
		echo "${ID:-} ${ID_LIKE:-}"
	)
	case " $ids " in
	*" debian "* | *" ubuntu "*) ;;
	*) return 1 ;;
	esac
	command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1
}

installed() {
	# shellcheck disable=SC2016 # ${Status} is dpkg-query's field, not ours
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# True when apt has no package lists at all (a fresh container image).
lists_empty() {
	for f in /var/lib/apt/lists/*_Packages*; do
		[ -e "$f" ] && return 1
	done
	return 0
}

run_apt() {
	# DPkg::Lock::Timeout: wait for a concurrent apt/dpkg instead of failing.
	if [ -n "$sudo" ]; then
		sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@"
	else
		env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@"
	fi
}

[ $# -gt 0 ] || usage
case $1 in -h | --help) usage ;; esac

if [ "${QILIN_DEPS_SKIP:-0}" = 1 ]; then
	exit 0
fi

# The packages of every group named, each once, in order.
pkgs=
for g in "$@"; do
	if ! list=$(group_pkgs "$g"); then
		echo "$me: unknown group '$g' (known groups: $known_groups)" >&2
		exit 2
	fi
	for p in $list; do
		case " $pkgs " in
		*" $p "*) ;;
		*) pkgs="${pkgs:+$pkgs }$p" ;;
		esac
	done
done

if ! debian_like; then
	echo "$me: this system is not Debian or Ubuntu, so I cannot check or install packages." >&2
	echo "$me: install your distribution's equivalents of these Debian packages:" >&2
	echo "    $pkgs" >&2
	echo "$me: then rerun with QILIN_DEPS_SKIP=1 in the environment." >&2
	exit 1
fi

missing=
for p in $pkgs; do
	installed "$p" || missing="${missing:+$missing }$p"
done
[ -n "$missing" ] || exit 0

install_cmd="apt-get install -y --no-install-recommends $missing"
if [ "$(id -u)" -eq 0 ]; then
	sudo=
elif command -v sudo >/dev/null 2>&1; then
	sudo=sudo
else
	echo "$me: missing packages: $missing" >&2
	echo "$me: I am not root and there is no sudo; as root, run:" >&2
	echo "    $install_cmd" >&2
	exit 1
fi

echo "$me: installing missing packages: $missing" >&2
updated=0
if lists_empty; then
	run_apt update
	updated=1
fi
# shellcheck disable=SC2086 # $missing is a list of package names
if ! run_apt install -y --no-install-recommends $missing; then
	if [ "$updated" = 1 ]; then
		echo "$me: failed: ${sudo:+sudo }$install_cmd" >&2
		exit 1
	fi
	# Stale lists are the usual cause (a package version gone from the
	# mirror): refresh them once and try again.
	run_apt update
	if ! run_apt install -y --no-install-recommends $missing; then
		echo "$me: failed: ${sudo:+sudo }$install_cmd" >&2
		exit 1
	fi
fi

# Trust dpkg, not apt's exit status.
still=
for p in $missing; do
	installed "$p" || still="${still:+$still }$p"
done
if [ -n "$still" ]; then
	echo "$me: still not installed after apt-get: $still" >&2
	exit 1
fi
