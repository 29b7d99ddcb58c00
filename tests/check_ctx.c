/* SPDX-License-Identifier: MIT */
/*
 * tests/check_ctx.c - the hand-written context switch and the guarded
 * stacks (lib/ctx.h, lib/ctx_x86_64.S): groundwork for stackful tasks.
 *
 * What a switch must keep is checked by behaviour, not by reading registers:
 * values the compiler keeps in callee-saved registers across the switch,
 * the floating-point rounding mode (x87 control word and MXCSR) of each
 * context, and the ABI's 16-byte stack alignment (glibc's printf of a double
 * faults on a misaligned stack). A stack overflow must hit the guard page.
 * ql__ctx_start, which starts a context without writing a frame first, is
 * checked the same ways.
 */
#include <errno.h>
#include <fenv.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctx.h"
#include "helpers.h"

#define STACK_SIZE (64 * 1024)

static struct ql_ctx main_ctx, a_ctx, b_ctx;

/* ------------------------------------------------------------ ping-pong */

static long trace[64];
static int ntrace;

static void pong(void *arg)
{
	long id = (long)(intptr_t)arg;

	for (;;) {
		trace[ntrace++] = id;
		ql__ctx_switch(&a_ctx, &main_ctx);
	}
}

START_TEST(test_switch_in_order)
{
	struct ql_stack st;

	ck_assert_int_eq(ql__stack_alloc(&st, STACK_SIZE), 0);
	ql__ctx_make(&a_ctx, ql__stack_top(&st), pong, (void *)(intptr_t)7);
	ntrace = 0;
	for (int i = 0; i < 10; i++) {
		trace[ntrace++] = -i;
		ql__ctx_switch(&main_ctx, &a_ctx);
	}
	ck_assert_int_eq(ntrace, 20);
	for (int i = 0; i < 10; i++) {
		ck_assert_int_eq(trace[2 * i], -i);
		ck_assert_int_eq(trace[2 * i + 1], 7);
	}
	ql__stack_free(&st);
}
END_TEST

/* ------------------------------------------------------------ registers */

/* Clobbers every register the compiler wants, then switches back. */
static void clobber(void *arg)
{
	for (;;) {
		volatile double d[8];
		uint64_t x[12];

		for (int i = 0; i < 12; i++)
			x[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
		for (int r = 0; r < 100; r++)
			for (int i = 0; i < 12; i++)
				x[i] = x[i] * 6364136223846793005ull + x[(i + 1) % 12];
		for (int i = 0; i < 8; i++)
			d[i] = (double)x[i];
		(void)d;
		ql__ctx_switch(&b_ctx, &main_ctx);
	}
}

static __attribute__((noinline)) uint64_t live_across_switches(uint64_t seed)
{
	/* Six values live across the switch: the compiler keeps them in
	 * callee-saved registers (or spills them), both must survive. */
	uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed, v4 = seed << 3,
		 v5 = seed * seed;

	for (int i = 0; i < 50; i++) {
		ql__ctx_switch(&main_ctx, &b_ctx);
		v0 += 1, v1 ^= 1, v2 -= 1, v3 += 2, v4 ^= 2, v5 += 3;
	}
	return v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5);
}

static uint64_t expected(uint64_t seed)
{
	uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed, v4 = seed << 3,
		 v5 = seed * seed;

	for (int i = 0; i < 50; i++)
		v0 += 1, v1 ^= 1, v2 -= 1, v3 += 2, v4 ^= 2, v5 += 3;
	return v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5);
}

START_TEST(test_callee_saved_survive)
{
	struct ql_stack st;

	ck_assert_int_eq(ql__stack_alloc(&st, STACK_SIZE), 0);
	ql__ctx_make(&b_ctx, ql__stack_top(&st), clobber, NULL);
	for (uint64_t seed = 1; seed < 2000; seed += 97)
		ck_assert_uint_eq(live_across_switches(seed), expected(seed));
	ql__stack_free(&st);
}
END_TEST

/* ------------------------------------------------------------ FP control */

static int b_round_at_start, b_round_after;

static void fp_context(void *arg)
{
	b_round_at_start = fegetround();
	fesetround(FE_DOWNWARD);
	ql__ctx_switch(&a_ctx, &main_ctx);
	b_round_after = fegetround();
	ql__ctx_switch(&a_ctx, &main_ctx);
	for (;;)
		ql__ctx_switch(&a_ctx, &main_ctx);
}

START_TEST(test_fp_control_per_context)
{
	struct ql_stack st;

	ck_assert_int_eq(fesetround(FE_TONEAREST), 0);
	ck_assert_int_eq(ql__stack_alloc(&st, STACK_SIZE), 0);
	ql__ctx_make(&a_ctx, ql__stack_top(&st), fp_context, NULL);
	fesetround(FE_UPWARD);
	ql__ctx_switch(&main_ctx, &a_ctx);
	/* The context started with the state of the thread that made it. */
	ck_assert_int_eq(b_round_at_start, FE_TONEAREST);
	/* Its FE_DOWNWARD did not leak into this context. */
	ck_assert_int_eq(fegetround(), FE_UPWARD);
	ql__ctx_switch(&main_ctx, &a_ctx);
	ck_assert_int_eq(b_round_after, FE_DOWNWARD);
	ck_assert_int_eq(fegetround(), FE_UPWARD);
	fesetround(FE_TONEAREST);
	ql__stack_free(&st);
}
END_TEST

/* ------------------------------------------------------------ alignment */

static char printed[64];

static void print_double(void *arg)
{
	/* vfprintf keeps doubles in aligned SSE stack slots: a misaligned
	 * stack faults here. */
	snprintf(printed, sizeof(printed), "%.3f %.1e", 3.14159, 2.5e-10);
	ql__ctx_switch(&a_ctx, &main_ctx);
	for (;;)
		ql__ctx_switch(&a_ctx, &main_ctx);
}

START_TEST(test_abi_alignment)
{
	struct ql_stack st;

	/* An unaligned top is aligned down by ql__ctx_make. */
	for (int skew = 0; skew < 16; skew += 3) {
		ck_assert_int_eq(ql__stack_alloc(&st, STACK_SIZE), 0);
		printed[0] = '\0';
		ql__ctx_make(&a_ctx, (char *)ql__stack_top(&st) - skew, print_double, NULL);
		ql__ctx_switch(&main_ctx, &a_ctx);
		ck_assert_str_eq(printed, "3.142 2.5e-10");
		ql__stack_free(&st);
	}
}
END_TEST

/* ------------------------------------------------------------ lazy start */

static long start_arg;
static int start_round;
static const char *start_sp;

static void started(void *arg)
{
	volatile char here;

	start_arg = (long)(intptr_t)arg;
	start_round = fegetround();
	start_sp = (const char *)&here;
	/* Aligned like any function's frame: a misaligned stack faults here. */
	fesetround(FE_TONEAREST);
	snprintf(printed, sizeof(printed), "%.3f %.1e", 3.14159, 2.5e-10);
	fesetround(FE_DOWNWARD);
	ql__ctx_switch(&a_ctx, &main_ctx);
	for (;;)
		ql__ctx_switch(&a_ctx, &main_ctx);
}

/*
 * ql__ctx_start: entry runs at once on the new stack with its argument,
 * aligned, with the starting thread's rounding mode; the starter's context
 * (callee-saved values, its own rounding mode) is intact when the new one
 * switches back, and both go on switching like any pair.
 */
START_TEST(test_start_lazy)
{
	struct ql_stack st;

	for (int skew = 0; skew < 16; skew += 5) {
		ck_assert_int_eq(ql__stack_alloc(&st, STACK_SIZE), 0);
		char *top = (char *)ql__stack_top(&st) - skew;
		uint64_t v0 = (uint64_t)skew * 11 + 3, v1 = ~v0, v2 = v0 << 7;

		printed[0] = '\0';
		start_arg = 0;
		start_sp = NULL;
		ck_assert_int_eq(fesetround(FE_UPWARD), 0);
		ql__ctx_start(&main_ctx, top, started, (void *)(intptr_t)(skew + 41));
		/* Back from the new context's first switch. */
		ck_assert_int_eq(start_arg, skew + 41);
		ck_assert_int_eq(start_round, FE_UPWARD);
		ck_assert_int_eq(fegetround(), FE_UPWARD);
		ck_assert_str_eq(printed, "3.142 2.5e-10");
		ck_assert_ptr_nonnull(start_sp);
		ck_assert(start_sp < top && start_sp >= (char *)st.base);
		ck_assert_uint_eq(v1, ~v0);
		ck_assert_uint_eq(v2, v0 << 7);
		ql__ctx_switch(&main_ctx, &a_ctx);
		ck_assert_int_eq(fegetround(), FE_UPWARD);
		fesetround(FE_TONEAREST);
		ql__stack_free(&st);
	}
}
END_TEST

/* ------------------------------------------------------------ exit */

static int exit_arg;

/* Clobbers registers and the rounding mode, then leaves for good. */
static void exiting(void *arg)
{
	uint64_t x[12];
	volatile uint64_t sink;

	exit_arg = (int)(intptr_t)arg;
	for (int i = 0; i < 12; i++)
		x[i] = (uint64_t)(i + exit_arg) * 0x9e3779b97f4a7c15ull;
	for (int r = 0; r < 50; r++)
		for (int i = 0; i < 12; i++)
			x[i] = x[i] * 6364136223846793005ull + x[(i + 1) % 12];
	sink = x[3];
	(void)sink;
	fesetround(FE_DOWNWARD);
	ql__ctx_exit(&main_ctx);
}

static __attribute__((noinline)) uint64_t live_across_exit(uint64_t seed, struct ql_stack *st)
{
	uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed, v4 = seed << 3,
		 v5 = seed * seed;

	ql__ctx_start(&main_ctx, ql__stack_top(st), exiting, (void *)(intptr_t)(seed + 5));
	return v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5);
}

/*
 * ql__ctx_exit: the context it resumes finds its callee-saved values and
 * its own rounding mode intact; the one that left is gone (its stack is
 * freed at once, and a new context starts on it the next round).
 */
START_TEST(test_exit_resumes_target)
{
	for (uint64_t seed = 1; seed < 400; seed += 7) {
		struct ql_stack st;
		uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed,
			 v4 = seed << 3, v5 = seed * seed;

		ck_assert_int_eq(ql__stack_alloc(&st, STACK_SIZE), 0);
		ck_assert_int_eq(fesetround(FE_UPWARD), 0);
		exit_arg = 0;
		ck_assert_uint_eq(live_across_exit(seed, &st),
				  v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5));
		ck_assert_int_eq(exit_arg, (int)seed + 5);
		ck_assert_int_eq(fegetround(), FE_UPWARD);
		ql__stack_free(&st);
	}
	fesetround(FE_TONEAREST);
}
END_TEST

/* ------------------------------------------------------------ guard page */

static __attribute__((noinline)) long recurse(long n)
{
	volatile char pad[512];

	pad[0] = (char)n;
	return n <= 0 ? pad[0] : recurse(n - 1) + pad[0];
}

static void overflow(void *arg)
{
	/* 1 MiB of frames on a 16 KiB stack. */
	recurse(2048);
	ql__ctx_switch(&a_ctx, &main_ctx);
}

START_TEST(test_overflow_hits_guard_page)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct ql_stack st;

		if (ql__stack_alloc(&st, 16 * 1024) != 0)
			_exit(2);
		ql__ctx_make(&a_ctx, ql__stack_top(&st), overflow, NULL);
		ql__ctx_switch(&main_ctx, &a_ctx);
		_exit(0); /* the overflow went unnoticed */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
#if defined(__SANITIZE_ADDRESS__)
	/* ASan's own SIGSEGV handler reports the stack overflow and exits 1. */
	if (WIFEXITED(status) && WEXITSTATUS(status) == 1)
		return;
#endif
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
		      "child status 0x%x: the overflow did not fault", status);
}
END_TEST

/* ------------------------------------------------------------ many, bad args */

enum { MANY = 1000 };
static struct ql_ctx many[MANY];
static long many_hits[MANY];

static void many_entry(void *arg)
{
	long i = (long)(intptr_t)arg;

	for (;;) {
		many_hits[i]++;
		ql__ctx_switch(&many[i], &main_ctx);
	}
}

START_TEST(test_many_contexts)
{
	static struct ql_stack st[MANY];

	for (long i = 0; i < MANY; i++) {
		ck_assert_int_eq(ql__stack_alloc(&st[i], 16 * 1024), 0);
		ql__ctx_make(&many[i], ql__stack_top(&st[i]), many_entry, (void *)(intptr_t)i);
	}
	for (int round = 0; round < 5; round++)
		for (long i = 0; i < MANY; i++)
			ql__ctx_switch(&main_ctx, &many[i]);
	for (long i = 0; i < MANY; i++) {
		ck_assert_int_eq(many_hits[i], 5);
		ql__stack_free(&st[i]);
	}
}
END_TEST

START_TEST(test_stack_arguments)
{
	struct ql_stack st;
	long page = sysconf(_SC_PAGESIZE);

	ck_assert_int_eq(ql__stack_alloc(NULL, 4096), -EINVAL);
	ck_assert_int_eq(ql__stack_alloc(&st, 0), -EINVAL);
	ck_assert_int_eq(ql__stack_alloc(&st, (size_t)1 << 41), -EINVAL);
	ck_assert_int_eq(ql__stack_alloc(&st, 1), 0);
	ck_assert_uint_eq(st.size, (size_t)page);
	ck_assert_uint_eq(((uintptr_t)ql__stack_top(&st)) % 16, 0);
	ql__stack_free(&st);
	ql__stack_free(&st); /* zeroed: a no-op */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ctx");
	const struct t_case cases[] = {
		{ "switch_in_order", test_switch_in_order, 10, NULL },
		{ "callee_saved", test_callee_saved_survive, 10, NULL },
		{ "fp_control", test_fp_control_per_context, 10, NULL },
		{ "abi_alignment", test_abi_alignment, 10, NULL },
		{ "start_lazy", test_start_lazy, 10, NULL },
		{ "exit", test_exit_resumes_target, 10, NULL },
		{ "guard_page", test_overflow_hits_guard_page, 10, NULL },
		{ "many_contexts", test_many_contexts, 30, NULL },
		{ "stack_arguments", test_stack_arguments, 10, NULL },
	};

	t_add_cases(s, "ctx", cases, sizeof(cases) / sizeof(cases[0]));
	return t_run_suite(s);
}
