/* SPDX-License-Identifier: MIT */
/*
 * tests/ctx_selftest.c - a standalone test of the hand-written context
 * switch (lib/ctx.h, lib/ctx_ARCH.S), for architectures where the Check
 * suite (tests/check_ctx.c) cannot easily run: plain C, no library but libc,
 * built with the switch linked in directly and run natively or under
 * qemu-user (`make test-ctx-cross`). On x86_64:
 *
 *   gcc -O2 -Ilib tests/ctx_selftest.c lib/ctx.c lib/ctx_x86_64.S -o /tmp/x && /tmp/x
 *
 * and for aarch64 under qemu:
 *
 *   aarch64-linux-gnu-gcc -static -O2 -Ilib tests/ctx_selftest.c lib/ctx.c \
 *	lib/ctx_aarch64.S -o /tmp/x && qemu-aarch64 /tmp/x
 *
 * It prints one line per check and exits 0 when all pass, 1 at the first
 * failure (with the file, line and what differed).
 *
 * Two kinds of evidence. Behavioural, as check_ctx.c does it: values the
 * compiler keeps live across a switch (integers and doubles: on aarch64
 * eight doubles live across a call land in d8-d15), the rounding mode of
 * each context, printf of doubles on the new stack, a ring of 1000 contexts,
 * an overflow faulting on the guard page. And direct, because the compiler
 * might spill instead of using the registers the switch must keep: small
 * assembly helpers at the end of this file load every callee-saved register
 * with a known pattern, switch to a context that scribbles over all of them,
 * and read them back after the switch returns; another records the stack
 * pointer at the first instruction of a context's entry function.
 *
 * The rounding mode is set with set_round() below, which does what glibc's
 * fesetround() does (the x87 control word and MXCSR on x86_64, FPCR.RMode on
 * aarch64) without needing libm, so that the one-line builds above need no
 * -lm; the tests also check the arithmetic, not only the register.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "ctx.h"

#if defined(__x86_64__)
#define ARCH "x86_64"
#elif defined(__aarch64__)
#define ARCH "aarch64"
#else
#error "no context switch for this architecture"
#endif

#define STACK_SIZE (64 * 1024)

static int nchecks;

#define CHECK(cond, ...)                                                                \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                   \
			fputc('\n', stderr);                                            \
			exit(1);                                                        \
		}                                                                       \
		nchecks++;                                                              \
	} while (0)

static void ok(const char *what)
{
	printf("ok - %s\n", what);
	fflush(stdout);
}

static struct ql_stack xstack(size_t size)
{
	struct ql_stack st;
	int rc = ql__stack_alloc(&st, size);

	CHECK(rc == 0, "ql__stack_alloc(%zu) = %d", size, rc);
	return st;
}

static struct ql_ctx main_ctx;

/* ------------------------------------------------------------ rounding mode */

enum round { R_NEAREST, R_UP, R_DOWN, R_ZERO };
static const char *const round_name[] = { "nearest", "up", "down", "zero" };

#if defined(__x86_64__)
/* x87 RC (control word bits 10-11) and MXCSR RC (bits 13-14) share an encoding. */
static const unsigned round_bits[] = { 0, 2, 1, 3 };

static void set_round(enum round r)
{
	uint16_t cw;
	uint32_t mxcsr;

	__asm__ volatile("fnstcw %0" : "=m"(cw));
	cw = (uint16_t)((cw & ~0x0c00u) | round_bits[r] << 10);
	__asm__ volatile("fldcw %0" : : "m"(cw) : "memory");
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	mxcsr = (mxcsr & ~0x6000u) | round_bits[r] << 13;
	__asm__ volatile("ldmxcsr %0" : : "m"(mxcsr) : "memory");
}

/* The mode, or -1 when the x87 unit and SSE disagree (half a switch). */
static int get_round(void)
{
	uint16_t cw;
	uint32_t mxcsr;

	__asm__ volatile("fnstcw %0" : "=m"(cw));
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	if (((cw >> 10) & 3) != ((mxcsr >> 13) & 3))
		return -1;
	for (int r = 0; r < 4; r++)
		if (round_bits[r] == ((mxcsr >> 13) & 3))
			return r;
	return -1;
}
#elif defined(__aarch64__)
/* FPCR.RMode, bits 22-23: RN, RP (up), RM (down), RZ. */
static void set_round(enum round r)
{
	uint64_t fpcr;

	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	fpcr = (fpcr & ~(3ull << 22)) | (uint64_t)r << 22;
	__asm__ volatile("msr fpcr, %0" : : "r"(fpcr) : "memory");
}

static int get_round(void)
{
	uint64_t fpcr;

	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	return (int)((fpcr >> 22) & 3);
}
#endif

/*
 * 1/3 rounded by the current mode: the arithmetic, not just the register.
 * Out of line and through volatiles, so that the compiler (which assumes
 * the default rounding mode without -frounding-math) can neither fold the
 * division nor move it across a set_round().
 */
static __attribute__((noinline)) double third(void)
{
	volatile double one = 1.0, three = 3.0, q;

	q = one / three;
	return q;
}

/* ------------------------------------------------------------ assembly helpers */

/*
 * probe_regs(from, to, in, out): load every callee-saved register with
 * in[i], ql__ctx_switch(from, to), store them to out[i] once switched back.
 * scribble_switch(from, to): set every callee-saved register to garbage,
 * ql__ctx_switch(from, to); preserves its own caller's registers.
 * align_probe_entry(arg): a context entry that records its stack pointer at
 * its first instruction in entry_sp, then jumps to align_probe_body(arg).
 */
void probe_regs(struct ql_ctx *from, struct ql_ctx *to, const uint64_t *in, uint64_t *out);
void scribble_switch(struct ql_ctx *from, struct ql_ctx *to);
void align_probe_entry(void *arg);
void align_probe_body(void *arg);
__attribute__((visibility("hidden"))) uintptr_t entry_sp;

#if defined(__x86_64__)
#define NREGS 6
static const char *const reg_name[NREGS] = { "rbx", "rbp", "r12", "r13", "r14", "r15" };
/* At a function's first instruction rsp + 8 is 16-byte aligned (the call pushed 8). */
#define ENTRY_SP_ALIGNED(sp) ((((sp) + 8) & 15) == 0)

__asm__(".text\n"
	".globl probe_regs\n .hidden probe_regs\n .type probe_regs, @function\n"
	"probe_regs:\n"
	"	pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
	"	pushq %rcx\n" /* out; also makes rsp 16-byte aligned for the call */
	"	movq 0(%rdx), %rbx\n movq 8(%rdx), %rbp\n movq 16(%rdx), %r12\n"
	"	movq 24(%rdx), %r13\n movq 32(%rdx), %r14\n movq 40(%rdx), %r15\n"
	"	call ql__ctx_switch\n"
	"	popq %rcx\n"
	"	movq %rbx, 0(%rcx)\n movq %rbp, 8(%rcx)\n movq %r12, 16(%rcx)\n"
	"	movq %r13, 24(%rcx)\n movq %r14, 32(%rcx)\n movq %r15, 40(%rcx)\n"
	"	popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
	"	ret\n"
	"	.size probe_regs, .-probe_regs\n"

	".globl scribble_switch\n .hidden scribble_switch\n .type scribble_switch, @function\n"
	"scribble_switch:\n"
	"	pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
	"	subq $8, %rsp\n"
	"	movq $-1, %rbx\n movq $-2, %rbp\n movq $-3, %r12\n"
	"	movq $-4, %r13\n movq $-5, %r14\n movq $-6, %r15\n"
	"	call ql__ctx_switch\n"
	"	addq $8, %rsp\n"
	"	popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
	"	ret\n"
	"	.size scribble_switch, .-scribble_switch\n"

	".globl align_probe_entry\n .hidden align_probe_entry\n"
	" .type align_probe_entry, @function\n"
	"align_probe_entry:\n"
	"	movq %rsp, entry_sp(%rip)\n"
	"	jmp align_probe_body\n"
	"	.size align_probe_entry, .-align_probe_entry\n");
#elif defined(__aarch64__)
#define NREGS 18
static const char *const reg_name[NREGS] = { "x19", "x20", "x21", "x22", "x23", "x24",
					     "x25", "x26", "x27", "x28", "d8",	"d9",
					     "d10", "d11", "d12", "d13", "d14", "d15" };
/* sp is 16-byte aligned at every instruction. */
#define ENTRY_SP_ALIGNED(sp) (((sp)&15) == 0)

/* The common frame of the two helpers: x29/x30, x19-x28, d8-d15, out. */
#define A64_SAVE                                                 \
	"	stp x29, x30, [sp, #-176]!\n mov x29, sp\n"            \
	"	stp x19, x20, [sp, #16]\n stp x21, x22, [sp, #32]\n"   \
	"	stp x23, x24, [sp, #48]\n stp x25, x26, [sp, #64]\n"   \
	"	stp x27, x28, [sp, #80]\n stp d8, d9, [sp, #96]\n"     \
	"	stp d10, d11, [sp, #112]\n stp d12, d13, [sp, #128]\n" \
	"	stp d14, d15, [sp, #144]\n"
#define A64_RESTORE                                              \
	"	ldp x19, x20, [sp, #16]\n ldp x21, x22, [sp, #32]\n"   \
	"	ldp x23, x24, [sp, #48]\n ldp x25, x26, [sp, #64]\n"   \
	"	ldp x27, x28, [sp, #80]\n ldp d8, d9, [sp, #96]\n"     \
	"	ldp d10, d11, [sp, #112]\n ldp d12, d13, [sp, #128]\n" \
	"	ldp d14, d15, [sp, #144]\n"                            \
	"	ldp x29, x30, [sp], #176\n"

__asm__(".text\n"
	".globl probe_regs\n .hidden probe_regs\n .type probe_regs, %function\n"
	"probe_regs:\n" A64_SAVE "	str x3, [sp, #160]\n" /* out */
	"	ldp x19, x20, [x2, #0]\n ldp x21, x22, [x2, #16]\n"
	"	ldp x23, x24, [x2, #32]\n ldp x25, x26, [x2, #48]\n"
	"	ldp x27, x28, [x2, #64]\n ldp d8, d9, [x2, #80]\n"
	"	ldp d10, d11, [x2, #96]\n ldp d12, d13, [x2, #112]\n"
	"	ldp d14, d15, [x2, #128]\n"
	"	bl ql__ctx_switch\n"
	"	ldr x3, [sp, #160]\n"
	"	stp x19, x20, [x3, #0]\n stp x21, x22, [x3, #16]\n"
	"	stp x23, x24, [x3, #32]\n stp x25, x26, [x3, #48]\n"
	"	stp x27, x28, [x3, #64]\n stp d8, d9, [x3, #80]\n"
	"	stp d10, d11, [x3, #96]\n stp d12, d13, [x3, #112]\n"
	"	stp d14, d15, [x3, #128]\n"
	/* x29 must be this frame's again, and sp with it: out[18], out[19]. */
	"	mov x4, sp\n stp x29, x4, [x3, #144]\n" A64_RESTORE "	ret\n"
	"	.size probe_regs, .-probe_regs\n"

	".globl scribble_switch\n .hidden scribble_switch\n .type scribble_switch, %function\n"
	"scribble_switch:\n" A64_SAVE "	mov x19, #-1\n mov x20, #-2\n mov x21, #-3\n"
	"	mov x22, #-4\n mov x23, #-5\n mov x24, #-6\n mov x25, #-7\n"
	"	mov x26, #-8\n mov x27, #-9\n mov x28, #-10\n mov x29, #-11\n"
	"	movi d8, #0xffffffffffffffff\n movi d9, #0xff00ff00ff00ff00\n"
	"	movi d10, #0x00ff00ff00ff00ff\n movi d11, #0xffff0000ffff0000\n"
	"	movi d12, #0x0000ffff0000ffff\n movi d13, #0xff000000000000ff\n"
	"	movi d14, #0x00ffffffffffff00\n movi d15, #0xffffffff00000000\n"
	"	bl ql__ctx_switch\n" A64_RESTORE "	ret\n"
	"	.size scribble_switch, .-scribble_switch\n"

	".globl align_probe_entry\n .hidden align_probe_entry\n"
	" .type align_probe_entry, %function\n"
	"align_probe_entry:\n"
	"	mov x9, sp\n"
	"	adrp x10, entry_sp\n"
	"	str x9, [x10, :lo12:entry_sp]\n"
	"	b align_probe_body\n"
	"	.size align_probe_entry, .-align_probe_entry\n");
#endif

/* ------------------------------------------------------------ ping-pong */

static struct ql_ctx a_ctx, b_ctx;
static long trace[64];
static int ntrace;

/* main -> a -> b -> main: each logs its id (the arg it was made with). */
static void ping(void *arg)
{
	for (;;) {
		trace[ntrace++] = (long)(intptr_t)arg;
		ql__ctx_switch(&a_ctx, &b_ctx);
	}
}

static void pong(void *arg)
{
	for (;;) {
		trace[ntrace++] = (long)(intptr_t)arg;
		ql__ctx_switch(&b_ctx, &main_ctx);
	}
}

static void test_ping_pong(void)
{
	struct ql_stack sa = xstack(STACK_SIZE), sb = xstack(STACK_SIZE);

	ql__ctx_make(&a_ctx, ql__stack_top(&sa), ping, (void *)(intptr_t)1001);
	ql__ctx_make(&b_ctx, ql__stack_top(&sb), pong, (void *)(intptr_t)2002);
	for (int i = 0; i < 10; i++) {
		trace[ntrace++] = -i;
		ql__ctx_switch(&main_ctx, &a_ctx);
	}
	CHECK(ntrace == 30, "ntrace %d", ntrace);
	for (int i = 0; i < 10; i++) {
		CHECK(trace[3 * i] == -i, "step %d: %ld", 3 * i, trace[3 * i]);
		CHECK(trace[3 * i + 1] == 1001, "step %d: %ld", 3 * i + 1, trace[3 * i + 1]);
		CHECK(trace[3 * i + 2] == 2002, "step %d: %ld", 3 * i + 2, trace[3 * i + 2]);
	}
	ql__stack_free(&sa);
	ql__stack_free(&sb);
	ok("ping-pong: main -> a -> b -> main, 10 rounds, in order, args delivered");
}

/* ------------------------------------------------------------ registers */

static struct ql_ctx scr_ctx;

/* Clobbers every register the compiler wants, and every callee-saved one. */
static void scribbler(void *arg)
{
	for (;;) {
		volatile double d[16];
		uint64_t x[12];

		for (int i = 0; i < 12; i++)
			x[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
		for (int r = 0; r < 20; r++)
			for (int i = 0; i < 12; i++)
				x[i] = x[i] * 6364136223846793005ull + x[(i + 1) % 12];
		for (int i = 0; i < 16; i++)
			d[i] = (double)x[i % 12] * 1e-3;
		(void)d;
		scribble_switch(&scr_ctx, &main_ctx);
	}
}

static void test_registers_direct(void)
{
	struct ql_stack st = xstack(STACK_SIZE);
	uint64_t in[NREGS], out[NREGS + 2];

	ql__ctx_make(&scr_ctx, ql__stack_top(&st), scribbler, NULL);
	for (uint64_t round = 1; round <= 100; round++) {
		for (int i = 0; i < NREGS; i++)
			in[i] = (round << 32 | (uint64_t)i) * 0x9e3779b97f4a7c15ull;
		memset(out, 0, sizeof(out));
		probe_regs(&main_ctx, &scr_ctx, in, out);
		for (int i = 0; i < NREGS; i++)
			CHECK(out[i] == in[i], "%s: 0x%016llx, expected 0x%016llx", reg_name[i],
			      (unsigned long long)out[i], (unsigned long long)in[i]);
#if defined(__aarch64__)
		CHECK(out[18] == out[19], "x29 0x%llx, its frame at 0x%llx",
		      (unsigned long long)out[18], (unsigned long long)out[19]);
#endif
	}
	ql__stack_free(&st);
#if defined(__x86_64__)
	ok("callee-saved registers rbx rbp r12-r15 hold their values across 100 switches");
#else
	ok("callee-saved registers x19-x28 x29 d8-d15 hold their values across 100 switches");
#endif
}

/* Integers the compiler keeps live across the switch. */
static __attribute__((noinline)) uint64_t live_ints(uint64_t seed, int do_switch)
{
	uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed, v4 = seed << 3,
		 v5 = seed * seed, v6 = seed - 9, v7 = seed * 11, v8 = seed ^ 0xabcdef,
		 v9 = seed + 0x1234567;

	for (int i = 0; i < 20; i++) {
		if (do_switch)
			ql__ctx_switch(&main_ctx, &scr_ctx);
		v0 += 1, v1 ^= 1, v2 -= 1, v3 += 2, v4 ^= 2, v5 += 3, v6 += v0, v7 ^= v1, v8 += v2,
			v9 -= v3;
	}
	return v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5) ^ (v6 << 6) ^
	       (v7 << 7) ^ (v8 << 8) ^ (v9 << 9);
}

/*
 * Eight doubles live across the switch (d8-d15 on aarch64, spilled on
 * x86_64, where no SSE register is callee-saved). Every operation is exact
 * (sums of multiples of 1/8 far below 2^53), so the result does not depend
 * on how the compiler contracts or orders them.
 */
static __attribute__((noinline)) void live_doubles(double seed, int do_switch, double out[8])
{
	double a0 = seed + 0.5, a1 = seed * 2 + 0.25, a2 = seed * 4 - 0.75, a3 = seed + 1024,
	       a4 = seed * 0.5, a5 = -seed, a6 = seed * 8 + 0.125, a7 = 3 * seed - 2;

	for (int i = 0; i < 20; i++) {
		if (do_switch)
			ql__ctx_switch(&main_ctx, &scr_ctx);
		a0 += 0.125, a1 += 0.25, a2 -= 0.375, a3 += a0, a4 -= a1, a5 += 0.5, a6 += a2 * 0.5,
			a7 -= 0.875;
	}
	out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3;
	out[4] = a4, out[5] = a5, out[6] = a6, out[7] = a7;
}

static void test_registers_behaviour(void)
{
	struct ql_stack st = xstack(STACK_SIZE);

	ql__ctx_make(&scr_ctx, ql__stack_top(&st), scribbler, NULL);
	for (uint64_t seed = 1; seed < 2000; seed += 97) {
		uint64_t got = live_ints(seed, 1), want = live_ints(seed, 0);

		CHECK(got == want, "seed %llu: 0x%llx, expected 0x%llx", (unsigned long long)seed,
		      (unsigned long long)got, (unsigned long long)want);
	}
	ok("integers live across switches (compiler-allocated) survive");

	for (int seed = 1; seed < 2000; seed += 97) {
		double got[8], want[8];

		live_doubles(seed, 1, got);
		live_doubles(seed, 0, want);
		for (int i = 0; i < 8; i++)
			CHECK(got[i] == want[i], "seed %d a%d: %.17g, expected %.17g", seed, i,
			      got[i], want[i]);
	}
	ql__stack_free(&st);
	ok("eight doubles live across switches (d8-d15 on aarch64) survive, bit for bit");
}

/* ------------------------------------------------------------ rounding mode */

static int fp_round_at_start, fp_round_after;
static double fp_third_down, fp_third_after;

static void fp_context(void *arg)
{
	fp_round_at_start = get_round();
	set_round(R_DOWN);
	fp_third_down = third();
	ql__ctx_switch(&a_ctx, &main_ctx);
	fp_round_after = get_round();
	fp_third_after = third();
	ql__ctx_switch(&a_ctx, &main_ctx);
	for (;;)
		ql__ctx_switch(&a_ctx, &main_ctx);
}

static void test_rounding_per_context(void)
{
	struct ql_stack st = xstack(STACK_SIZE);
	double up, down, nearest;

	set_round(R_UP);
	up = third();
	set_round(R_DOWN);
	down = third();
	set_round(R_NEAREST);
	nearest = third();
	CHECK(up != down, "1/3 rounds the same up and down: the mode has no effect");
	CHECK(nearest == down || nearest == up, "1/3 to nearest is neither");

	/* Made while this thread rounds up: the context starts rounding up. */
	set_round(R_UP);
	ql__ctx_make(&a_ctx, ql__stack_top(&st), fp_context, NULL);
	set_round(R_ZERO);
	ql__ctx_switch(&main_ctx, &a_ctx);
	CHECK(fp_round_at_start == R_UP, "context started rounding %s, made under \"up\"",
	      fp_round_at_start < 0 ? "inconsistently" : round_name[fp_round_at_start]);
	CHECK(fp_third_down == down, "the context's own mode had no effect");
	/* Its "down" did not leak into this context. */
	CHECK(get_round() == R_ZERO, "main rounds %d after the context set \"down\"", get_round());
	set_round(R_UP);
	CHECK(third() == up, "main's arithmetic");
	ql__ctx_switch(&main_ctx, &a_ctx);
	/* And this context's "up" did not leak into it. */
	CHECK(fp_round_after == R_DOWN, "the context rounds %d after main set \"up\"",
	      fp_round_after);
	CHECK(fp_third_after == down, "the context's arithmetic after the switch");
	CHECK(get_round() == R_UP, "main rounds %d", get_round());
	set_round(R_NEAREST);
	ql__stack_free(&st);
	ok("rounding mode: a context starts with its maker's, and keeps its own across switches");
}

/* ------------------------------------------------------------ alignment */

static char printed[64];
static uintptr_t body_arg;

void align_probe_body(void *arg)
{
	body_arg = (uintptr_t)arg;
	/* glibc's printf of doubles keeps vector registers in aligned stack
	 * slots: a misaligned stack faults here on x86_64. */
	snprintf(printed, sizeof(printed), "%.3f %.1e", 3.14159, 2.5e-10);
	for (;;)
		ql__ctx_switch(&a_ctx, &main_ctx);
}

/* What align_probe_entry saw when a context on a stack top skewed by skew began. */
static void check_entry(int skew, const char *top, uintptr_t arg)
{
	CHECK(ENTRY_SP_ALIGNED(entry_sp), "skew %d: sp at entry 0x%llx", skew,
	      (unsigned long long)entry_sp);
	CHECK(entry_sp <= (uintptr_t)top && entry_sp >= (uintptr_t)top - 64,
	      "skew %d: entry sp 0x%llx is not at or just below the top %p", skew,
	      (unsigned long long)entry_sp, (const void *)top);
	CHECK(body_arg == arg, "skew %d: arg %llu", skew, (unsigned long long)body_arg);
	CHECK(strcmp(printed, "3.142 2.5e-10") == 0, "skew %d: printed \"%s\"", skew, printed);
}

static void test_alignment(void)
{
	/* An unaligned top is aligned down by ql__ctx_make. */
	for (int skew = 0; skew < 16; skew++) {
		struct ql_stack st = xstack(STACK_SIZE);
		char *top = (char *)ql__stack_top(&st) - skew;

		printed[0] = '\0';
		entry_sp = 1;
		ql__ctx_make(&a_ctx, top, align_probe_entry, (void *)(intptr_t)(skew + 100));
		ql__ctx_switch(&main_ctx, &a_ctx);
		check_entry(skew, top, (uintptr_t)(skew + 100));
		ql__stack_free(&st);
	}
	ok("entry runs with the ABI's 16-byte stack alignment, for stack tops skewed by 0..15");
}

/* ------------------------------------------------------------ lazy start */

/* Six values live across ql__ctx_start: kept in callee-saved registers or spilled. */
static __attribute__((noinline)) uint64_t live_across_start(uint64_t seed, char *top, int skew)
{
	uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed, v4 = seed << 3,
		 v5 = seed * seed;

	ql__ctx_start(&main_ctx, top, align_probe_entry, (void *)(intptr_t)(skew + 200));
	return v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5);
}

static void test_start(void)
{
	for (int skew = 0; skew < 16; skew++) {
		struct ql_stack st = xstack(STACK_SIZE);
		char *top = (char *)ql__stack_top(&st) - skew;
		uint64_t seed = (uint64_t)skew * 1000003u + 17, want;

		want = seed * 3 ^ ((seed ^ 0x5555) << 1) ^ ((seed + 77) << 2) ^ (~seed << 3) ^
		       ((seed << 3) << 4) ^ ((seed * seed) << 5);
		printed[0] = '\0';
		entry_sp = 1;
		CHECK(live_across_start(seed, top, skew) == want,
		      "skew %d: values live across ql__ctx_start changed", skew);
		check_entry(skew, top, (uintptr_t)(skew + 200));
		/* The started context switches like any other afterwards. */
		ql__ctx_switch(&main_ctx, &a_ctx);
		ql__stack_free(&st);
	}
	ok("ql__ctx_start runs entry at once, aligned, with its argument, and keeps the "
	   "starter's callee-saved values, for stack tops skewed by 0..15");
}

/* ------------------------------------------------------------ exit */

static long exit_arg;

/* Clobbers registers and the rounding mode, then leaves for good. */
static void exiting(void *arg)
{
	uint64_t x[12];
	volatile uint64_t sink;

	exit_arg = (long)(intptr_t)arg;
	for (int i = 0; i < 12; i++)
		x[i] = (uint64_t)(i + exit_arg) * 0x9e3779b97f4a7c15ull;
	for (int r = 0; r < 20; r++)
		for (int i = 0; i < 12; i++)
			x[i] = x[i] * 6364136223846793005ull + x[(i + 1) % 12];
	sink = x[5];
	(void)sink;
	set_round(R_DOWN);
	ql__ctx_exit(&main_ctx);
}

static __attribute__((noinline)) uint64_t live_across_exit(uint64_t seed, char *top)
{
	uint64_t v0 = seed * 3, v1 = seed ^ 0x5555, v2 = seed + 77, v3 = ~seed, v4 = seed << 3,
		 v5 = seed * seed;

	ql__ctx_start(&main_ctx, top, exiting, (void *)(intptr_t)(seed + 9));
	return v0 ^ (v1 << 1) ^ (v2 << 2) ^ (v3 << 3) ^ (v4 << 4) ^ (v5 << 5);
}

static void test_exit(void)
{
	for (uint64_t seed = 1; seed < 200; seed += 13) {
		struct ql_stack st = xstack(STACK_SIZE);
		uint64_t want = seed * 3 ^ ((seed ^ 0x5555) << 1) ^ ((seed + 77) << 2) ^
				(~seed << 3) ^ ((seed << 3) << 4) ^ ((seed * seed) << 5);

		set_round(R_UP);
		exit_arg = 0;
		CHECK(live_across_exit(seed, (char *)ql__stack_top(&st)) == want,
		      "seed %llu: values live across an exit changed", (unsigned long long)seed);
		CHECK(exit_arg == (long)seed + 9, "exit_arg %ld", exit_arg);
		CHECK(get_round() == R_UP, "rounding after the exit: %s", round_name[get_round()]);
		/* Nothing will resume on the exited stack: it goes at once. */
		ql__stack_free(&st);
	}
	set_round(R_NEAREST);
	ok("ql__ctx_exit resumes its target with the target's callee-saved values and "
	   "rounding mode, and abandons the context that called it");
}

/* ------------------------------------------------------------ 1000 contexts */

enum { RING = 1000, ROUNDS = 5 };
static struct ql_ctx ring[RING];
static long ring_hits[RING];
static long ring_next; /* whose turn it is */
static int ring_bad = -1;

/* Each member checks it runs in turn and that its own stack is intact,
 * then passes the turn to the next one; the last hands back to main. */
static void ring_member(void *arg)
{
	long i = (long)(intptr_t)arg;
	volatile long mine = i * 7919 + 13;

	for (;;) {
		if (ring_next != i || mine != i * 7919 + 13)
			ring_bad = (int)i;
		ring_hits[i]++;
		ring_next = (i + 1) % RING;
		ql__ctx_switch(&ring[i], i == RING - 1 ? &main_ctx : &ring[i + 1]);
	}
}

static void test_ring(void)
{
	static struct ql_stack st[RING];

	for (long i = 0; i < RING; i++) {
		st[i] = xstack(16 * 1024);
		ql__ctx_make(&ring[i], ql__stack_top(&st[i]), ring_member, (void *)(intptr_t)i);
	}
	for (int round = 0; round < ROUNDS; round++) {
		CHECK(ring_next == 0, "round %d starts at %ld", round, ring_next);
		ql__ctx_switch(&main_ctx, &ring[0]);
		CHECK(ring_bad < 0, "context %d ran out of turn or lost its stack", ring_bad);
	}
	for (long i = 0; i < RING; i++) {
		CHECK(ring_hits[i] == ROUNDS, "context %ld ran %ld times", i, ring_hits[i]);
		ql__stack_free(&st[i]);
	}
	ok("1000 contexts switch round-robin among themselves, 5 rounds, in order");
}

/* ------------------------------------------------------------ faults */

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

static void returns(void *arg)
{
}

/* Run entry on a fresh stack in a child; return its wait status. */
static int in_child(void (*entry)(void *))
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct ql_stack st;
		int null = open("/dev/null", O_WRONLY);

		/* Quiet: the abort message, and qemu's "uncaught target signal". */
		if (null >= 0)
			dup2(null, 2);
		if (ql__stack_alloc(&st, 16 * 1024) != 0)
			_exit(2);
		ql__ctx_make(&a_ctx, ql__stack_top(&st), entry, NULL);
		ql__ctx_switch(&main_ctx, &a_ctx);
		_exit(0); /* came back: the fault did not happen */
	}
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	return status;
}

static void test_faults(void)
{
	int status = in_child(overflow);

	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
	      "child status 0x%x: the overflow did not fault", status);
	ok("a stack overflow faults on the guard page (SIGSEGV, in a child)");
	status = in_child(returns);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
	      "child status 0x%x: a returning entry did not abort", status);
	ok("an entry function that returns aborts through ql__ctx_returned (SIGABRT, in a child)");
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ctx_selftest: %s context switch\n", ARCH);
	test_ping_pong();
	test_registers_direct();
	test_registers_behaviour();
	test_rounding_per_context();
	test_alignment();
	test_start();
	test_exit();
	test_ring();
	test_faults();
	printf("ctx_selftest: %s: all passed (%d checks)\n", ARCH, nchecks);
	return 0;
}
