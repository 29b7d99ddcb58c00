/* SPDX-License-Identifier: MIT */
/*
 * lib/ctx.h - execution contexts and their stacks, for stackful tasks.
 *
 * A context is a saved stack pointer: everything else a switch must keep
 * (the callee-saved registers, the x87 control word and MXCSR on x86_64) is
 * pushed on the context's own stack by ql__ctx_switch(), which is therefore
 * an ordinary function call as far as the compiler knows, and saves only
 * what the ABI says a callee must preserve. Stacks come from mmap with a
 * PROT_NONE guard page below them, so an overflow faults instead of silently
 * writing into a neighbour.
 *
 * Not thread-safe by itself: a context runs on one thread at a time, and
 * switching to a context that is running elsewhere is undefined. Internal,
 * not API.
 */
#ifndef QILIN_LIB_CTX_H
#define QILIN_LIB_CTX_H

#include <stddef.h>

struct ql_ctx {
	void *sp; /* the saved stack pointer; NULL before ql__ctx_make */
};

/*
 * Save the running context in *from and resume *to. Returns (into *from's
 * caller) when something switches back to *from.
 */
void ql__ctx_switch(struct ql_ctx *from, struct ql_ctx *to);

/*
 * Resume *to and abandon the running context for good: unlike
 * ql__ctx_switch it saves nothing, so a context that ends this way leaves no
 * frame on its stack, and that stack may be reused or unmapped as soon as
 * *to runs. Never returns.
 */
void ql__ctx_exit(struct ql_ctx *to) __attribute__((noreturn));

/*
 * Prepare *c to start running entry(arg) on the stack whose highest address
 * is stack_top, the first time it is switched to. entry must never return
 * (switch away for good instead): the trampoline aborts if it does.
 */
void ql__ctx_make(struct ql_ctx *c, void *stack_top, void (*entry)(void *), void *arg);

/*
 * Save the running context in *from (as ql__ctx_switch does) and start
 * entry(arg) on the stack whose highest address is stack_top (aligned down
 * to 16), writing nothing on that stack first: the lazy form of
 * ql__ctx_make plus the first switch, for contexts that may wait long
 * before they run (a stackful task). The new context starts with the
 * running thread's FP control state. Returns when something switches back
 * to *from. entry must never return.
 */
void ql__ctx_start(struct ql_ctx *from, void *stack_top, void (*entry)(void *), void *arg);

/* A stack: usable bytes [base, base + size), a guard page below base. */
struct ql_stack {
	void *map;	/* the mapping (guard page included) */
	size_t map_len;
	void *base;	/* lowest usable address */
	size_t size;	/* usable bytes (a multiple of the page size) */
};

/*
 * Map a stack of at least size bytes plus a guard page. Returns 0, -EINVAL
 * (size 0 or absurd), or -ENOMEM; when the mapping fails for lack of
 * mappings rather than memory, the thread's error names vm.max_map_count.
 */
int ql__stack_alloc(struct ql_stack *st, size_t size);

/* Unmap a stack; a zeroed stack is a no-op. */
void ql__stack_free(struct ql_stack *st);

/* The highest address of the stack, 16-byte aligned: what ql__ctx_make wants. */
static inline void *ql__stack_top(const struct ql_stack *st)
{
	return (char *)st->base + st->size;
}

#endif
