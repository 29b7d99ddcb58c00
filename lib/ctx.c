/* SPDX-License-Identifier: MIT */
/*
 * lib/ctx.c - new contexts and guarded stacks (see ctx.h); the switch
 * itself is in ctx_x86_64.S. Any thread; no shared state.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctx.h"

#if !defined(__x86_64__)
#error "qilin's context switch exists for x86_64 only so far"
#endif

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
	 * The trampoline must start with rsp 16-byte aligned: rsp after the
	 * switch's `ret` is sp + SLOTS * 8, so sp = top - SLOTS * 8 with top
	 * aligned down to 16.
	 */
	uintptr_t top = (uintptr_t)stack_top & ~(uintptr_t)15;
	uint64_t *sp = (uint64_t *)(top - SLOTS * sizeof(uint64_t));
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
