/* SPDX-License-Identifier: MIT */
/*
 * lib/ctx.c - new contexts and guarded stacks (see ctx.h); the switch
 * itself is in ctx_ARCH.S (ctx_x86_64.S, ctx_aarch64.S), and the initial
 * frame written here must match the frame described at the top of that file.
 * Any thread; no shared state.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"

#if defined(__x86_64__)
/* Frame slots written by ql__ctx_make, matching ctx_x86_64.S. */
enum {
	SLOT_FPUCW,
	SLOT_MXCSR,
	SLOT_R15,
	SLOT_R14,
	SLOT_R13,
	SLOT_R12,
	SLOT_RBX,
	SLOT_RBP,
	SLOT_RET,
	SLOTS,
};
#elif defined(__aarch64__)
/*
 * Frame slots written by ql__ctx_make, matching ctx_aarch64.S: 22 slots,
 * 176 bytes, a multiple of 16 as sp's alignment requires.
 */
enum {
	SLOT_X19, /* arg, for the trampoline */
	SLOT_X20, /* entry, for the trampoline */
	SLOT_X21,
	SLOT_X22,
	SLOT_X23,
	SLOT_X24,
	SLOT_X25,
	SLOT_X26,
	SLOT_X27,
	SLOT_X28,
	SLOT_FP, /* x29: 0, the end of the frame chain */
	SLOT_LR, /* x30: where the switch "returns", the trampoline */
	SLOT_D8,
	SLOT_D9,
	SLOT_D10,
	SLOT_D11,
	SLOT_D12,
	SLOT_D13,
	SLOT_D14,
	SLOT_D15,
	SLOT_FPCR,
	SLOT_PAD,
	SLOTS,
};
_Static_assert(SLOTS * 8 % 16 == 0, "the aarch64 frame must keep sp 16-byte aligned");
#else
#error "qilin's context switch exists for x86_64 and aarch64 only so far"
#endif

void ql__ctx_trampoline(void);
void ql__ctx_returned(void) __attribute__((noreturn, visibility("hidden")));

void ql__ctx_returned(void)
{
	fprintf(stderr, "qilin: a context's entry function returned\n");
	abort();
}

void ql__ctx_make(struct ql_ctx *c, void *stack_top, void (*entry)(void *), void *arg)
{
	/*
	 * The trampoline must start with the stack pointer 16-byte aligned:
	 * the stack pointer after the switch's `ret` is sp + SLOTS * 8 (on
	 * x86_64 `ret` pops the last slot; on aarch64 the switch pops the
	 * whole frame and returns through x30), so sp = top - SLOTS * 8 with
	 * top aligned down to 16.
	 */
	uintptr_t top = (uintptr_t)stack_top & ~(uintptr_t)15;
	uint64_t *sp = (uint64_t *)(top - SLOTS * sizeof(uint64_t));
#if defined(__x86_64__)
	uint16_t fpucw;
	uint32_t mxcsr;

	/* The new context starts with the creating thread's FP control state. */
	__asm__ volatile("fnstcw %0" : "=m"(fpucw));
	__asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
	memset(sp, 0, SLOTS * sizeof(uint64_t));
	memcpy(&sp[SLOT_FPUCW], &fpucw, sizeof(fpucw));
	memcpy(&sp[SLOT_MXCSR], &mxcsr, sizeof(mxcsr));
	sp[SLOT_R12] = (uint64_t)(uintptr_t)arg;
	sp[SLOT_R13] = (uint64_t)(uintptr_t)entry;
	sp[SLOT_RET] = (uint64_t)(uintptr_t)ql__ctx_trampoline;
#elif defined(__aarch64__)
	uint64_t fpcr;

	/*
	 * The new context starts with the creating thread's FP control
	 * state (FPCR: rounding mode, flush-to-zero, default NaN). Every
	 * other slot starts at zero, x29 included, which ends the frame
	 * chain for debuggers.
	 */
	__asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
	memset(sp, 0, SLOTS * sizeof(uint64_t));
	sp[SLOT_FPCR] = fpcr;
	sp[SLOT_X19] = (uint64_t)(uintptr_t)arg;
	sp[SLOT_X20] = (uint64_t)(uintptr_t)entry;
	sp[SLOT_LR] = (uint64_t)(uintptr_t)ql__ctx_trampoline;
#endif
	c->sp = sp;
}

int ql__stack_alloc(struct ql_stack *st, size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *map;

	if (!st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	if (size == 0 || size > ((size_t)1 << 40))
		return -EINVAL;
	size = (size + page - 1) & ~(page - 1);
	/* Reserve, then make all but the lowest page usable: one mapping is
	 * split in two (a guard and the stack), which is what costs the
	 * vm.max_map_count budget. */
	map = mmap(NULL, size + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		   0);
	if (map == MAP_FAILED)
		return -ENOMEM;
	if (mprotect((char *)map + page, size, PROT_READ | PROT_WRITE) != 0) {
		/* ENOMEM here is the vm.max_map_count limit (or memory). */
		munmap(map, size + page);
		return -ENOMEM;
	}
	st->map = map;
	st->map_len = size + page;
	st->base = (char *)map + page;
	st->size = size;
	return 0;
}

void ql__stack_free(struct ql_stack *st)
{
	if (!st || !st->map)
		return;
	munmap(st->map, st->map_len);
	memset(st, 0, sizeof(*st));
}
