#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/install_check.sh BUILD_DIR - install one build into a scratch root
# and use it the way an outside program would:
#
#   1. `make install DESTDIR=<tmp> prefix=/usr BUILD=<copy of BUILD_DIR>`;
#   2. libqilin.so exports nothing but the public API (ql_*, not ql__*), and
#      at least ql_version;
#   3. a small program that includes <qilin.h> and calls ql_version() builds
#      with the flags `pkg-config qilin` gives for the installed copy, once
#      against the shared library and once statically against libqilin.a
#      (which checks the Libs.private/Requires.private lines), and runs.
#
# Prints one "ok" line per check; exits 0 when all pass, 1 otherwise. Make
# variables given to the make that runs this (WERROR=1, CC=...) reach the
# install step through MAKEFLAGS, so it reuses the build's objects instead of
# recompiling them with other flags; and it works on a copy, so BUILD_DIR is
# never modified. Run by tests/run.sh on builds without sanitizers.

set -euo pipefail

me=install_check.sh
if [ $# -ne 1 ]; then
	echo "usage: tests/install_check.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$1" ]; then
	echo "$me: no build folder $1" >&2
	exit 1
fi
build=$(cd "$1" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qilin-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
	echo "FAIL: $*"
	exit 1
}

# This make is not a recursive $(MAKE) of the one running us, so it cannot use
# that one's jobserver: drop the jobserver descriptors from MAKEFLAGS (it keeps
# -jN and the command-line variables).
if [ -n "${MAKEFLAGS:-}" ]; then
	MAKEFLAGS=$(printf '%s' "$MAKEFLAGS" | sed -E 's/ ?--jobserver-(auth|fds)=[^ ]*//g')
	export MAKEFLAGS
fi

# 1. Install, from a copy of the library's part of the build (objects, flag
# stamps, libraries, with their times): should this make's flags differ from
# the build's (this script run by hand without the build's WERROR=1, say), it
# rebuilds the copy and never touches BUILD_DIR.
copy=$tmp/build
mkdir -p "$copy/obj"
for f in .flags .paths libqilin.a libqilin.so libqilin.so.* qilin.pc obj/uring obj/lib; do
	for g in "$build"/$f; do
		[ -e "$g" ] || continue
		cp -a "$g" "$copy/${g#"$build"/}"
	done
done
if ! make -C "$root" -s --no-print-directory install DESTDIR="$tmp" prefix=/usr \
	BUILD="$copy" >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	fail "make install DESTDIR=\$tmp prefix=/usr BUILD=\$tmp/build (a copy of $1)"
fi
usr=$tmp/usr
for f in include/qilin.h lib/libqilin.a lib/libqilin.so lib/pkgconfig/qilin.pc; do
	[ -e "$usr/$f" ] || fail "make install did not install /usr/$f"
done
soname=$(readelf -d "$usr/lib/libqilin.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ -n "$soname" ] || fail "libqilin.so has no SONAME"
[ -e "$usr/lib/$soname" ] || fail "no /usr/lib/$soname (the SONAME link) installed"
echo "ok install: qilin.h, libqilin.a, libqilin.so ($soname), qilin.pc"

# 2. Exports: defined dynamic symbols, without the version node itself (type
# A) and without the @@QILIN_0 version suffix.
syms=$(nm -D --defined-only "$usr/lib/libqilin.so" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }')
offenders=$(printf '%s\n' "$syms" | grep -v -e '^ql_[^_]' -e '^$' || true)
if [ -n "$offenders" ]; then
	echo "libqilin.so exports symbols outside the public API:"
	printf '%s\n' "$offenders" | sed 's/^/    /'
	fail "exports (fix lib/qilin.map or the visibility of these symbols)"
fi
printf '%s\n' "$syms" | grep -x ql_version >/dev/null ||
	fail "libqilin.so does not export ql_version (is it declared with default visibility in qilin.h?)"
echo "ok exports: $(printf '%s\n' "$syms" | grep -c .) symbols, all ql_*"

# 3. An outside program, built with what pkg-config says about the installed copy.
cat >"$tmp/app.c" <<'EOF'
#include <qilin.h>
#include <stdio.h>

static void show_str(const char *s)
{
	printf("qilin %s\n", s);
}

static void show_num(unsigned long long v)
{
	printf("qilin %llu\n", v);
}

/* Whatever ql_version() returns, a string or a number, print it. */
#define SHOW(x) _Generic((x), const char *: show_str, char *: show_str, default: show_num)(x)

int main(void)
{
	SHOW(ql_version());
	return 0;
}
EOF
pc() {
	PKG_CONFIG_SYSROOT_DIR=$tmp PKG_CONFIG_PATH=$usr/lib/pkgconfig pkg-config "$@" qilin
}
flags=$(pc --cflags --libs) || fail "pkg-config --cflags --libs qilin"
case " $flags " in
*" -I$usr/include "*) ;;
*) fail "pkg-config cflags do not point into the installed copy: $flags" ;;
esac
cc=${CC:-cc}
# shellcheck disable=SC2086 # $flags is a list of compiler flags
$cc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/app" "$tmp/app.c" $flags ||
	fail "building a program against the installed qilin.h and libqilin.so: $cc ... $flags"
out=$(LD_LIBRARY_PATH=$usr/lib "$tmp/app") || fail "running the program linked to libqilin.so"
LD_LIBRARY_PATH=$usr/lib ldd "$tmp/app" | grep "=> $usr/lib/$soname" >/dev/null ||
	fail "the program did not load the installed libqilin.so"
echo "ok shared: built with \`pkg-config --cflags --libs qilin\`, runs: $out"

static_flags=$(pc --cflags --libs --static) || fail "pkg-config --static --cflags --libs qilin"
# Link libqilin.a by name, and everything else as pkg-config says.
static_flags=${static_flags/-lqilin/$usr/lib/libqilin.a}
# shellcheck disable=SC2086
$cc -std=gnu11 -Wall -Wextra -Werror -o "$tmp/app-static" "$tmp/app.c" $static_flags ||
	fail "building a program against libqilin.a: $cc ... $static_flags"
out=$("$tmp/app-static") || fail "running the program linked to libqilin.a"
echo "ok static: built with \`pkg-config --static --cflags --libs qilin\`, runs: $out"
