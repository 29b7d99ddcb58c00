# qilin - one entry point.
#
#   make [all]        library, tests, benchmarks and BPF objects
#   make lib          libqilin.a, libqilin.so.N, qilin.pc
#   make bpf          vmlinux.h from the running kernel's BTF, BPF objects, skeletons
#   make test         install what is missing, build, run the Check suites
#   make test-stress  the heavier torture tests
#   make bench        bench/run.sh (installs the peers it needs)
#   make demo         install what is missing, build, run the main job
#   make install / uninstall   (prefix=/usr/local, DESTDIR=)
#
# Knobs: V=1 (echo commands), SAN=address,undefined or SAN=thread (separate
# build folder), WERROR=1, CC=, CFLAGS=, BUILD= (output folder).

VERSION_MAJOR := 0
VERSION_MINOR := 1
VERSION_PATCH := 0
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

prefix ?= /usr/local
libdir ?= $(prefix)/lib
includedir ?= $(prefix)/include
bindir ?= $(prefix)/bin
pkgconfigdir ?= $(libdir)/pkgconfig

CC ?= cc
CLANG ?= clang
BPFTOOL ?= bpftool
PKG_CONFIG ?= pkg-config

SAN ?=
ifeq ($(SAN),)
BUILD ?= build
else
BUILD ?= build/san-$(subst $(comma),-,$(SAN))
endif
comma := ,

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' $(1) $(2)
endif

CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Wshadow -Wno-unused-parameter \
	-Wstrict-prototypes -Wmissing-prototypes -fno-strict-aliasing \
	-D_GNU_SOURCE -pthread -Iuring -Ilib -Ilib/include -MMD -MP
ifeq ($(WERROR),1)
override CFLAGS += -Werror
endif
ifneq ($(SAN),)
override CFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SAN)
endif
LIB_CFLAGS := -fPIC -fvisibility=hidden
# No undefined symbols in libqilin.so; but not under sanitizers, where clang
# leaves the sanitizer runtime out of shared objects (the program brings it).
ifeq ($(SAN),)
SO_ZDEFS := -Wl,-z,defs
endif
URING_LIBS := $(shell $(PKG_CONFIG) --libs liburing 2>/dev/null || echo -luring)
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null || echo -lcheck -lsubunit -lm -lrt)
LIBS := $(URING_LIBS) -pthread

.DELETE_ON_ERROR:
# Keep the objects that pattern-rule chains make (tests, bench, BPF): as
# "intermediate" files make would delete them after each link.
.SECONDARY:
.SUFFIXES:
.PHONY: all lib bpf test test-unit test-tsan test-stress bench demo install uninstall \
	clean deps-test deps-demo FORCE

# ---------------------------------------------------------------- sources

URING_SRCS := $(wildcard uring/*.c)
LIB_SRCS := $(wildcard lib/*.c)
# The context switch is hand-written per architecture (lib/ctx_ARCH.S).
LIB_ASMS := $(wildcard lib/ctx_$(shell uname -m).S)
CORE_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(URING_SRCS) $(LIB_SRCS)) \
	$(patsubst %.S,$(BUILD)/obj/%.o,$(LIB_ASMS))

STATIC_LIB := $(BUILD)/libqilin.a
SONAME := libqilin.so.$(VERSION_MAJOR)
SHARED_LIB := $(BUILD)/libqilin.so.$(VERSION)
PC_FILE := $(BUILD)/qilin.pc

TEST_HELPERS := $(BUILD)/obj/tests/helpers.o
TEST_SRCS := $(wildcard tests/check_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_PROGS_SRCS := $(wildcard tests/prog_*.c)
TEST_PROGS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_PROGS_SRCS))
# The observer's target programs (tests/observer/run_observer.py runs them).
OBS_TEST_SRCS := $(wildcard tests/observer/obs_*.c)
OBS_TEST_PROGS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(OBS_TEST_SRCS))

BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

all: lib tests benches bench-peers bpf

lib: $(STATIC_LIB) $(SHARED_LIB) $(BUILD)/libqilin.so $(PC_FILE)

# Rebuild everything when the compile flags change. The flags are captured
# here, once, with ":=": expanded inside the recipe they would pick up the
# target-specific additions (LIB_CFLAGS, CHECK_CFLAGS) of whichever object
# happened to need the stamp first, and the stamp would flip between
# "make lib" and "make tests", rebuilding everything each time.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_STRING := $(CC) $(CFLAGS) $(LDFLAGS) | $(LIB_CFLAGS) | $(CHECK_CFLAGS)
$(FLAGS_STAMP): FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_STRING)' | cmp -s - $@ || echo '$(FLAGS_STRING)' > $@

# Regenerate qilin.pc when the install paths change (make install prefix=...).
PATHS_STAMP := $(BUILD)/.paths
PATHS_STRING := $(prefix) $(libdir) $(includedir) $(VERSION)
$(PATHS_STAMP): FORCE
	@mkdir -p $(@D)
	@echo '$(PATHS_STRING)' | cmp -s - $@ || echo '$(PATHS_STRING)' > $@

$(BUILD)/obj/uring/%.o $(BUILD)/obj/lib/%.o: override CFLAGS += $(LIB_CFLAGS)

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.S $(FLAGS_STAMP)
	$(call msg,AS,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(STATIC_LIB): $(CORE_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(SHARED_LIB): $(CORE_OBJS) lib/qilin.map
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/qilin.map \
		$(SO_ZDEFS) $(LDFLAGS) -o $@ $(CORE_OBJS) $(LIBS)

$(BUILD)/libqilin.so: $(SHARED_LIB)
	$(Q)ln -sf libqilin.so.$(VERSION) $(BUILD)/$(SONAME)
	$(Q)ln -sf $(SONAME) $@

$(PC_FILE): qilin.pc.in Makefile $(PATHS_STAMP)
	$(call msg,GEN,$@)
	@mkdir -p $(@D)
	$(Q)sed -e 's|@prefix@|$(prefix)|' -e 's|@libdir@|$(libdir)|' \
		-e 's|@includedir@|$(includedir)|' -e 's|@version@|$(VERSION)|' $< > $@

# ---------------------------------------------------------------- tests

.PHONY: tests benches
tests: $(TEST_BINS) $(TEST_PROGS) $(OBS_TEST_PROGS)

$(BUILD)/obj/tests/%.o: override CFLAGS += $(CHECK_CFLAGS) -Itests

$(BUILD)/tests/check_%: $(BUILD)/obj/tests/check_%.o $(TEST_HELPERS) $(STATIC_LIB)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LIBS)

$(BUILD)/tests/prog_%: $(BUILD)/obj/tests/prog_%.o $(STATIC_LIB)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/observer/obs_%: $(BUILD)/obj/tests/observer/obs_%.o $(STATIC_LIB)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# make test: what README shows. Installs missing packages, builds, runs every
# suite, then the ring suite again with every feature forced off through the
# environment (the old-kernel paths, reached the way a user would).
test: deps-test
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tests/run.sh $(BUILD)

# With `make bpf test-unit` (CI's sanitizer stage) the suites wait for the
# BPF tools too: under -j they would otherwise start before those are linked,
# and skip the cases that need them.
test-unit: tests $(filter bpf,$(MAKECMDGOALS))
	$(Q)tests/run.sh $(BUILD)

# The concurrency suites only (what CI runs under SAN=thread).
test-tsan: tests
	$(Q)QILIN_TEST_ONLY="$(TSAN_SUITES)" tests/run.sh $(BUILD)
TSAN_SUITES ?= check_ring check_queue check_exec check_task

test-stress: deps-test
	$(Q)$(MAKE) --no-print-directory all
	$(Q)QILIN_STRESS=1 tests/run.sh $(BUILD)

deps-test:
	$(Q)scripts/deps.sh build bpf

deps-demo:
	$(Q)scripts/deps.sh build bpf demo

# make test-ctx-cross: the aarch64 context switch (lib/ctx_aarch64.S) through
# its standalone self-test, cross-built static and run under qemu-user; skips
# (exit 0) when the cross compiler or qemu is missing. Not part of make test.
CROSS_AARCH64_CC ?= aarch64-linux-gnu-gcc
QEMU_AARCH64 ?= qemu-aarch64
CROSS_CTX_BIN := $(BUILD)/cross/ctx_selftest-aarch64
.PHONY: test-ctx-cross
test-ctx-cross:
	$(Q)scripts/deps.sh cross || echo "test-ctx-cross: scripts/deps.sh cross failed" >&2
	$(Q)if ! command -v $(CROSS_AARCH64_CC) >/dev/null 2>&1 || \
		! command -v $(QEMU_AARCH64) >/dev/null 2>&1; then \
		echo "test-ctx-cross: SKIP: needs $(CROSS_AARCH64_CC) and $(QEMU_AARCH64)" \
			"(Debian: scripts/deps.sh cross)"; \
		exit 0; \
	fi; \
	mkdir -p $(dir $(CROSS_CTX_BIN)) && \
	printf '  %-8s %s\n' CROSS $(CROSS_CTX_BIN) && \
	$(CROSS_AARCH64_CC) -static -O2 -g -std=gnu11 -Wall -Wextra -Wshadow \
		-Wno-unused-parameter -Wstrict-prototypes -Wmissing-prototypes -D_GNU_SOURCE \
		-Ilib -o $(CROSS_CTX_BIN) tests/ctx_selftest.c lib/ctx.c lib/ctx_aarch64.S && \
	$(QEMU_AARCH64) $(CROSS_CTX_BIN)

# ---------------------------------------------------------------- bench, demo

# The deferred-task HTTP server (bench/httpd/, docs in its README.md): a
# folder of its own, since each bench/*.c is a program; links Debian's
# libhttp-parser.
HTTPD_SRCS := $(wildcard bench/httpd/*.c)
HTTPD_BIN := $(BUILD)/bench/qilin-httpd

benches: $(BENCH_BINS) $(HTTPD_BIN)

$(HTTPD_BIN): $(patsubst %.c,$(BUILD)/obj/%.o,$(HTTPD_SRCS)) $(STATIC_LIB)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lhttp_parser $(LIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(STATIC_LIB)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lm

# The Go peers of the benchmarks (Debian's golang-go, offline build): go-spawn
# (executor and task benches), go-echo (echo), go-httpd (http). One build.sh
# run makes all three (a grouped target).
GO_PEER := $(BUILD)/bench/go-spawn
GO_PEERS := $(GO_PEER) $(BUILD)/bench/go-echo $(BUILD)/bench/go-httpd
GO_PEER_SRCS := bench/go/go.mod bench/go/build.sh $(wildcard bench/go/*/*.go)
.PHONY: go-peers bench-peers
go-peers: $(GO_PEERS)
$(GO_PEERS) &: $(GO_PEER_SRCS)
	$(call msg,GO,$(@D)/go-spawn+echo+httpd)
	$(Q)bench/go/build.sh $(@D)

# The C peers (bench/peers/*.c: epoll echo server, load generator): plain
# programs, not linked with libqilin.
BENCH_PEER_SRCS := $(wildcard bench/peers/*.c)
BENCH_PEERS := $(patsubst bench/peers/%.c,$(BUILD)/bench/peers/%,$(BENCH_PEER_SRCS))
bench-peers: $(BENCH_PEERS)
$(BUILD)/bench/peers/%: bench/peers/%.c $(FLAGS_STAMP)
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -pthread -lm

# make bench [BENCH_ARGS="echo http"]: every scenario, or those named.
bench:
	$(Q)scripts/deps.sh build bench bpf
	$(Q)$(MAKE) --no-print-directory all go-peers bench-peers
	$(Q)QILIN_BENCH_NO_BUILD=1 bench/run.sh $(BUILD) $(BENCH_ARGS)

# make demo: README's main job (scripts/demo.sh): qilin-httpd under wrk, seen
# by qilin-observer. Without BTF or clang the observer does not build; the
# demo then says so and runs without it.
demo: deps-demo
	$(Q)$(MAKE) --no-print-directory lib benches
	$(Q)$(MAKE) --no-print-directory bpf || echo "demo: the observer did not build (above); going on without it"
	$(Q)scripts/demo.sh $(BUILD)

# ---------------------------------------------------------------- bpf

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
BPF_SKELS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.skel.h,$(BPF_SRCS))
# A program is a pair bpf/X.bpf.c + bpf/X.c; bpf/obs_*.c are parts of the
# qilin-observer user side, linked into it, not programs of their own;
# bpf/tool.c (privileges, BTF, tracefs, the tp_btf-or-classic chooser, the
# paused command) is the user-side plumbing linked into every program.
BPF_BINS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%,$(filter \
	$(patsubst %.c,%.bpf.c,$(wildcard bpf/*.c)),$(BPF_SRCS)))
BPF_TOOL_OBJ := $(BUILD)/obj/bpf/tool.o
OBS_PART_SRCS := $(wildcard bpf/obs_*.c)
OBS_PART_OBJS := $(patsubst bpf/%.c,$(BUILD)/obj/bpf/%.o,$(OBS_PART_SRCS))
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
BPF_LIBS := $(shell $(PKG_CONFIG) --libs libbpf 2>/dev/null || echo -lbpf -lelf -lz)
# clang -target bpf does not search the multiarch folder where Debian keeps
# asm/ (which <bpf/usdt.bpf.h> reaches through <linux/errno.h>): hand it the
# host's system include folders, after its own, as libbpf-bootstrap does.
# Recursive, so clang only runs when a BPF object is built.
CLANG_BPF_SYS_INCLUDES ?= $(shell $(CLANG) -v -E - </dev/null 2>&1 \
	| sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter \1|p }')

bpf: $(BPF_OBJS) $(BPF_SKELS) $(BPF_BINS)

$(BUILD)/bpf/vmlinux.h:
	$(call msg,BTF,$@)
	@mkdir -p $(@D)
	$(Q)test -r $(VMLINUX_BTF) || { echo "no kernel BTF at $(VMLINUX_BTF):" \
		"the kernel needs CONFIG_DEBUG_INFO_BTF=y for the observer" >&2; exit 1; }
	$(Q)$(BPFTOOL) btf dump file $(VMLINUX_BTF) format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/bpf/vmlinux.h $(wildcard bpf/*.h)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -I$(BUILD)/bpf -Ibpf \
		$(CLANG_BPF_SYS_INCLUDES) -c $< -o $@.tmp && $(BPFTOOL) gen object $@ $@.tmp && rm -f $@.tmp

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< > $@

$(BUILD)/bpf/%: bpf/%.c $(BPF_SKELS) $(BPF_TOOL_OBJ) $(STATIC_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -I$(BUILD)/bpf -Ibpf -o $@ $< $(BPF_TOOL_OBJ) $(LDFLAGS) $(BPF_LIBS) \
		$(STATIC_LIB) $(LIBS)

$(BPF_TOOL_OBJ): bpf/tool.c bpf/tool.h $(FLAGS_STAMP)
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -Ibpf -c $< -o $@

$(BUILD)/obj/bpf/obs_%.o: bpf/obs_%.c $(wildcard bpf/*.h)
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -Ibpf -c $< -o $@

$(BUILD)/bpf/qilin-observer: bpf/qilin-observer.c $(BPF_SKELS) $(OBS_PART_OBJS) $(BPF_TOOL_OBJ)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) -I$(BUILD)/bpf -Ibpf -o $@ $< $(OBS_PART_OBJS) $(BPF_TOOL_OBJ) $(LDFLAGS) \
		$(BPF_LIBS) -lm

# ---------------------------------------------------------------- install

install: lib
	install -d $(DESTDIR)$(libdir) $(DESTDIR)$(includedir) $(DESTDIR)$(pkgconfigdir)
	install -m 644 lib/include/qilin.h $(DESTDIR)$(includedir)/qilin.h
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(libdir)/libqilin.a
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(libdir)/libqilin.so.$(VERSION)
	ln -sf libqilin.so.$(VERSION) $(DESTDIR)$(libdir)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(libdir)/libqilin.so
	install -m 644 $(PC_FILE) $(DESTDIR)$(pkgconfigdir)/qilin.pc
	@if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then ldconfig; fi

uninstall:
	rm -f $(DESTDIR)$(includedir)/qilin.h $(DESTDIR)$(libdir)/libqilin.a \
		$(DESTDIR)$(libdir)/libqilin.so.$(VERSION) $(DESTDIR)$(libdir)/$(SONAME) \
		$(DESTDIR)$(libdir)/libqilin.so $(DESTDIR)$(pkgconfigdir)/qilin.pc

clean:
	rm -rf build

FORCE:

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
