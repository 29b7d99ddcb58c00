/* SPDX-License-Identifier: MIT */
/*
 * lib/task.c - stackful tasks: their stacks, switching in and out, parking
 * and waking, joins, cancellation, scopes with deadlines, defer chains,
 * panic/recover, blocking-style I/O, and the stack-overflow report.
 *
 * What a task is. A struct ql_task lives at the top of its own stack
 * mapping: [guard pages (PROT_NONE) | stack | the record]. The stack grows
 * down from just below the record, so a task that parks after a few calls
 * touches one or two pages in all, record included. The record starts with
 * a struct ql_job of kind QL_JOB_GO, which is how the scheduler (exec.c)
 * queues it like any other job. Stacks of the default size are pooled per
 * worker: a spawn from a task makes no system call in steady state.
 *
 * Running. exec.c's run_task switches from the worker's scheduler context
 * to a GO job's (ql__go_enter, then the switch from the worker loop's own
 * frame, then ql__go_back). The task runs until it parks, yields or ends;
 * each is a switch back with t->after saying which,
 * and the scheduler finishes the transition on its own stack: a yield goes
 * to the end of the ready list; a park runs t->commit (if any), the
 * hand-off that must happen only once the task is off its stack (Go's
 * gopark unlock function); an end wakes the joiners and frees the stack.
 * Whoever makes a parked task runnable again must do it exactly once.
 *
 * Where a task may run. A runnable task sits in run queues and may be
 * stolen: it has no operation in flight. A task blocked in I/O has its
 * operation on the ring of the worker it parked on (t->w), whose CQE makes
 * it runnable on that same worker. So a task never leaves a worker while
 * the kernel holds one of its buffers, and each blocking call returns only
 * after the final CQE of its operation: when a task ends, nothing of its is
 * in flight, and its defer chain may free what the kernel used.
 *
 * Thread-local storage and migration. A task may resume on another thread
 * than the one it parked on. The compiler may keep the address of a
 * thread-local variable in a register across a call, so code running on a
 * task's stack reads the worker through cur_worker() (not inlined, not
 * cached) once per entry, and after a switch uses t->w.
 *
 * Cancellation. A task is cancelled by ql_cancel (T_KILL in t->state), or
 * through a scope on its chain of scopes (s->cancelled, set by
 * ql_scope_cancel or by the scope's deadline timer). Every blocking call
 * checks cancel_reason() before it parks; a canceller sets its flag first
 * and then interrupts the task where it is parked (task_interrupt): it
 * takes it out of a join wait-list, or asks the worker holding its I/O to
 * cancel the operation (IORING_OP_ASYNC_CANCEL, run on that worker, since
 * only the owner touches a ring). Flag-then-look on one side and
 * publish-then-check-flag on the other are seq_cst (or under one lock), so
 * a cancel is never missed.
 *
 * Locks. Two small spinlocks per task: `lock` guards join_target (the task
 * it waits for), `wlock` guards its list of waiting tasks. Order: a
 * waiter's lock, then its target's wlock; a scope's lock before any task
 * lock; a parent scope's lock before a child's.
 *
 * Lifetime and the end, in one word: t->state. Its low bits count the
 * holders other than the task itself: the handle given by ql_go (until
 * ql_task_release) and every library job in flight that points at it.
 * T_RUN is the task's own hold, cleared when it ends: that is "done". T_WAIT
 * says a joiner may be waiting (a task on the waiter list, or a thread on the
 * futex); it is set before the joiner looks at T_RUN and never cleared. The
 * state reaching 0 (T_WAIT aside) frees the stack. The end clears T_RUN with
 * one compare-and-swap when T_WAIT is clear: no joiner can be waiting then,
 * since a joiner's fetch-or of T_WAIT and that CAS are both read-modify-writes
 * of the one word, so one of them sees the other. With T_WAIT set, the end
 * keeps a hold while it wakes the waiters, and drops it afterwards. T_KILL,
 * ql_cancel's flag, rides in the same word so that the running task reads
 * it from the record's first line (see struct ql_task); it is no hold, and
 * the end leaves it as it is. A handle released after the end, with no
 * other holder, frees the record with a plain load: nobody can take a
 * reference any more.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* Valgrind (when its header is there) is told where each task stack lies. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef VALGRIND_STACK_REGISTER
#define VALGRIND_STACK_REGISTER(lo, hi) 0u
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif

#ifdef QL_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef QL_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* Guard bytes below every stack: a frame up to this size still faults in it. */
#define QL_GUARD (16u * 1024u)
/* Idle stacks kept per worker, and idle defer chunks. */
#define QL_CHUNK_POOL_MAX 64
/* How many spawns ahead stack_pop prefetches the pooled record it will hand out. */
#define QL_SPAWN_PREFETCH 4
/* Largest stack accepted. */
#define QL_STACK_MAX ((size_t)1 << 30)
/* The SIGSEGV handler's own stack, per worker. */
#define QL_ALTSTACK (64u * 1024u)

enum { AFTER_PARK = 1, AFTER_YIELD, AFTER_EXIT };

/* A test-and-test-and-set spinlock; holders never block while holding it. */
struct ql_spin {
	_Atomic int v;
};

static void spin_lock(struct ql_spin *l)
{
	unsigned n = 0;

	/* acquire: what the previous holder wrote is visible to us. */
	while (atomic_exchange_explicit(&l->v, 1, memory_order_acquire)) {
		/* relaxed: only a hint to retry the exchange. */
		while (atomic_load_explicit(&l->v, memory_order_relaxed)) {
			if (++n % 64 == 0)
				sched_yield(); /* the holder may be preempted */
		}
	}
}

static void spin_unlock(struct ql_spin *l)
{
	/* release: our writes are visible to the next holder. */
	atomic_store_explicit(&l->v, 0, memory_order_release);
}

/*
 * A task record, at the top of its own stack mapping. Laid out by cache
 * line after what touches it, because with a thousand tasks in flight every
 * record is cold when it is spawned, run, joined and released, and each
 * line touched is a miss, or worse a transfer from another core when a
 * thief runs the task:
 *   line 0  everything a spawn writes that the run, the end, ql_join and
 *           ql_task_release read or write: a stolen task's round trip
 *           moves this one line to the thief and back (its first stack
 *           line, just below, goes with it);
 *   line 1  what only the spawning side writes (the id, the name, the
 *           executor, the idle join state) and what only blocked joins
 *           use: a task that runs to its end without blocking or yielding
 *           never has it read where it runs, unless it panics or has
 *           waiters;
 *   line 2+ the defer chain and what the end reads, left in their initial
 *           state by the end (so spawn need not write them);
 *   the rest: blocking I/O, joins, scopes and the mapping's geometry,
 *           written only when used, and left idle (NULL, 0, unlocked).
 * A record in a pool therefore has: the chain empty with no panic, scope and
 * cur_scope NULL, io_park NULL, lock unlocked, join_target NULL, in_wait 0;
 * stack_map gives new records that state, and task_end restores it.
 */
struct ql_task {
	/* ---- line 0 ---- */
	struct ql_job job;	 /* queued like any job; job.fn(job.arg) is the body, job.status
				    what ql_join reports */
	_Atomic int state;	 /* T_RUN | T_WAIT | T_KILL | holders (see Lifetime) */
	uint8_t after;		 /* AFTER_*: what the scheduler does next */
	uint8_t panicked;	 /* ended by a panic nobody recovered */
	struct ql_ctx ctx;	 /* saved context; sp NULL until the first run starts it */
	struct ql_worker *w;	 /* the worker running it, or where it parked last */
	struct ql_scope *cur_scope; /* the scope its calls obey, or NULL */
	/* ---- line 1 ---- */
	uint64_t id;
	const char *name;
	struct ql_exec *ex;
	uint64_t t_ready;	 /* when job.sampled: the time it became runnable */
	/* Being joined: guarded by wlock. */
	struct ql_task *_Atomic waiters; /* written under wlock, read without it once */
	_Atomic int outside_waiters;
	struct ql_spin wlock;
	uint8_t pooled;		 /* default stack size: goes back to a pool */
	uint8_t in_wait;	 /* in a join target's waiter list (the target's wlock) */
	/* ---- line 2 and on ---- */
	_Alignas(64) struct ql_chain chain;
	struct ql_scope *scope;	 /* the one it was spawned in, or NULL */
	void (*commit)(struct ql_task *t); /* park hand-off, run off the task's stack */
	/* I/O: the operation it is blocked in (at most one). */
	int io_res;
	struct ql_op op;
	_Atomic(struct ql_worker *) io_park; /* worker holding its operation, or NULL */
	/* Joining: the task it waits for, guarded by `lock`. */
	struct ql_spin lock;
	struct ql_task *join_target;
	struct ql_task *wnext, *wprev; /* in the target's waiter list (target's wlock) */
	struct ql_task *snext, *sprev; /* in scope->members (scope's lock) */
	/* Sanitizers. */
	void *san_fiber;
	void *san_fake;
	/* The mapping, set once by stack_map. */
	void *map;		 /* guard, stack, this record */
	size_t map_len;
	char *stack_lo;		 /* lowest usable stack byte */
	size_t stack_size;	 /* usable stack bytes */
	size_t size_class;	 /* the stack size asked for (pooled by it) */
	unsigned vg_stack;	 /* valgrind's id for the stack (0 when not under valgrind) */
};

_Static_assert(offsetof(struct ql_task, cur_scope) + sizeof(void *) <= 64,
	       "line 0 of a task record overflows");
_Static_assert(offsetof(struct ql_task, id) == 64, "line 1 of a task record moved");
_Static_assert(offsetof(struct ql_task, in_wait) < 128, "line 1 of a task record overflows");
_Static_assert(offsetof(struct ql_task, chain) == 128, "line 2 of a task record moved");

/* t->state: the task's own hold (it has not ended), "a joiner may wait", "cancelled". */
#define T_KILL (1 << 28)
#define T_RUN (1 << 29)
#define T_WAIT (1 << 30)
#define T_HOLDS(v) ((v) & ~(T_WAIT | T_KILL))

/* Whether t has ended. acquire: its status and effects are visible then. */
static inline int task_done(struct ql_task *t)
{
	return !(atomic_load_explicit(&t->state, memory_order_acquire) & T_RUN);
}

struct ql_scope {
	struct ql_scope *parent;
	struct ql_exec *ex;	  /* where its deadline timer runs (set once) */
	struct ql_spin lock;	  /* members, kids, opener */
	_Atomic int cancelled;	  /* 0, ECANCELED or ETIMEDOUT */
	_Atomic int refs;
	_Atomic int closed;
	uint64_t deadline;	  /* the nearest of its own and its ancestors' */
	struct ql_task *members;  /* tasks spawned in it, not yet ended */
	struct ql_scope *kids, *knext, *kprev;
	struct ql_task *opener;	  /* the task that opened it, while open */
	struct ql_scope *opener_prev; /* the opener's current scope before */
	/* The deadline timer: touched only on timer_w. */
	struct ql_worker *timer_w;
	struct ql_op *timer_op;
	uint8_t timer_armed;
};

static size_t page_size;
static _Atomic uint64_t outside_ids;
static _Atomic unsigned stack_colour; /* stack_map's colour sequence */

/* ------------------------------------------------------------ small helpers */

/*
 * The calling thread's worker, read afresh: code on a task's stack must
 * never reuse a thread-local address computed before a switch (the task may
 * have moved to another thread since). On x86_64 one volatile asm load
 * through %fs, which the compiler can neither cache nor move across the
 * switch (a call); elsewhere a call the optimiser cannot see into.
 */
#if defined(__x86_64__)
static inline struct ql_worker *cur_worker(void)
{
	struct ql_worker *w;

	__asm__ __volatile__("movq ql__self@gottpoff(%%rip), %0\n\t"
			     "movq %%fs:(%0), %0"
			     : "=r"(w)
			     :
			     : "memory");
	return w;
}
#else
static __attribute__((noinline)) struct ql_worker *cur_worker(void)
{
	struct ql_worker *w = ql__self;

	__asm__ __volatile__("" : "+r"(w)::"memory");
	return w;
}
#endif

/* The running stackful task, or NULL. */
static inline struct ql_task *cur_task(void)
{
	struct ql_worker *w = cur_worker();

	return w ? w->cur : NULL;
}

static void futex_wait(_Atomic int *addr, int val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic int *addr)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* ------------------------------------------------------------ sanitizers */

/*
 * ASan must know which stack is live (for its fake stacks and its stack
 * checks) and TSan which fiber runs. These wrap the switch in both
 * directions; without sanitizers they are empty.
 */
static inline void san_enter_task(struct ql_worker *w, struct ql_task *t)
{
#ifdef QL_ASAN
	__sanitizer_start_switch_fiber(&w->san_fiber, t->stack_lo, t->stack_size);
#endif
#ifdef QL_TSAN
	__tsan_switch_to_fiber(t->san_fiber, 0);
#endif
	(void)w;
	(void)t;
}

static inline void san_back_in_scheduler(struct ql_worker *w)
{
#ifdef QL_ASAN
	__sanitizer_finish_switch_fiber(w->san_fiber, NULL, NULL);
#endif
	(void)w;
}

/* On the task's stack, right after it was switched to. */
static inline void san_task_resumed(struct ql_task *t)
{
#ifdef QL_ASAN
	struct ql_worker *w = t->w;

	__sanitizer_finish_switch_fiber(t->san_fake, &w->san_stack_lo, &w->san_stack_size);
#endif
	(void)t;
}

/* On the task's stack, right before it switches to the scheduler. */
static inline void san_leave_task(struct ql_task *t, int for_good)
{
#ifdef QL_ASAN
	__sanitizer_start_switch_fiber(for_good ? NULL : &t->san_fake, t->w->san_stack_lo,
				       t->w->san_stack_size);
#endif
#ifdef QL_TSAN
	__tsan_switch_to_fiber(t->w->san_fiber, 0);
#endif
	(void)t;
	(void)for_good;
}

/* ------------------------------------------------------------ stacks */

static void report_map_limit(void)
{
	static _Atomic int once;
	char buf[64];
	long limit = -1, used = 0;
	FILE *f;

	if (atomic_exchange(&once, 1))
		return;
	f = fopen("/proc/sys/vm/max_map_count", "r");
	if (f) {
		if (fgets(buf, sizeof(buf), f))
			limit = strtol(buf, NULL, 10);
		fclose(f);
	}
	f = fopen("/proc/self/maps", "r");
	if (f) {
		int c;

		while ((c = fgetc(f)) != EOF)
			used += c == '\n';
		fclose(f);
	}
	if (limit > 0 && used + 64 >= limit)
		fprintf(stderr,
			"qilin: cannot map a task stack: %ld of vm.max_map_count=%ld memory "
			"mappings in use (each task stack takes 2); raise the limit, e.g. "
			"sysctl -w vm.max_map_count=%ld\n",
			used, limit, limit * 4);
	else
		fprintf(stderr, "qilin: cannot map a task stack: out of memory (%ld mappings in use)\n",
			used);
}

/* Record bytes at the top of a mapping (a whole number of cache lines). */
#define QL_RECORD_BYTES ((sizeof(struct ql_task) + 63) & ~(size_t)63)

static void chain_init(struct ql_chain *c);

/*
 * A new task record with its stack: one mapping of guard + stack + record,
 * reserved PROT_NONE and then opened above the guard (two mappings in the
 * kernel's count). Returns NULL and reports on failure.
 */
static struct ql_task *stack_map(size_t size)
{
	size_t rw = (size + QL_RECORD_BYTES + page_size - 1) & ~(page_size - 1);
	size_t len = QL_GUARD + rw;
	char *map = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct ql_task *t;

	if (map == MAP_FAILED) {
		report_map_limit();
		return NULL;
	}
	if (mprotect(map + QL_GUARD, rw, PROT_READ | PROT_WRITE) != 0) {
		munmap(map, len);
		report_map_limit();
		return NULL;
	}
	/*
	 * Cache colouring: every mapping is a whole number of pages, so records
	 * at the very top would all share one offset within a page, the same
	 * few L1 and L2 sets, and evict each other. Spread them over the slack
	 * that rounding to pages leaves, a cache line apart.
	 */
	size_t slack = rw - size - QL_RECORD_BYTES;
	/* relaxed: only spreads addresses; any value is correct. */
	unsigned seq = atomic_fetch_add_explicit(&stack_colour, 1, memory_order_relaxed);
	size_t colour = slack >= 64 ? (size_t)(seq * 7u % (unsigned)(slack / 64)) * 64 : 0;

	t = (struct ql_task *)(map + len - QL_RECORD_BYTES - colour);
	/* The idle state a pooled record has (see struct ql_task); the rest is mmap's zeroes. */
	chain_init(&t->chain);
	t->pooled = size == QL_STACK_DEFAULT;
	t->map = map;
	t->map_len = len;
	t->stack_lo = map + QL_GUARD;
	t->stack_size = (size_t)((char *)t - t->stack_lo);
	t->size_class = size;
	/* Without it valgrind takes every switch for a wild stack pointer. */
	t->vg_stack = VALGRIND_STACK_REGISTER(t->stack_lo, (char *)t);
	return t;
}

static void stack_unmap(struct ql_task *t)
{
	VALGRIND_STACK_DEREGISTER(t->vg_stack);
	munmap(t->map, t->map_len);
}

/*
 * Stacks are freed by the worker that ran the task to its end, often not the
 * one that spawns: as with job records (exec.c), a full pool gives its older
 * half to the executor's shared list, and an empty pool takes from it. The
 * shared list is a Treiber stack with batch push and take-all by exchange:
 * nothing pops a single node, so there is no ABA problem. Its links are the
 * records' wnext fields, written only while a record is idle.
 */
static void stack_list_push(struct ql_exec *ex, struct ql_task *first, struct ql_task *last)
{
	/* relaxed: the CAS below checks it. */
	struct ql_task *head = atomic_load_explicit(&ex->stack_free, memory_order_relaxed);

	do {
		last->wnext = head;
		/* release: the chain's links are visible to whoever takes it. */
	} while (!atomic_compare_exchange_weak_explicit(&ex->stack_free, &head, first,
							memory_order_release, memory_order_relaxed));
}

static void stack_pool_spill(struct ql_worker *w)
{
	unsigned n = QL_STACK_POOL_MAX / 2, i;

	/* The bottom half: the longest idle, the likeliest to be cold anyway. */
	for (i = 0; i + 1 < n; i++)
		w->stack_pool[i]->wnext = w->stack_pool[i + 1];
	stack_list_push(w->ex, w->stack_pool[0], w->stack_pool[n - 1]);
	memmove(w->stack_pool, w->stack_pool + n, (w->nstack_pool - n) * sizeof(w->stack_pool[0]));
	w->nstack_pool -= n;
}

/* The pooled record and stack on top of w's pool, which is not empty. */
static inline struct ql_task *stack_pop(struct ql_worker *w)
{
	struct ql_task *t = w->stack_pool[--w->nstack_pool];

	/*
	 * A few spawns ahead, claim the two lines ql_go will write in the
	 * record it takes then: after a steal the first sits modified in the
	 * thief's cache, and with a thousand tasks in flight both have left
	 * this core's first-level cache. A burst of spawns would otherwise
	 * wait out those misses one after the other (without the second
	 * line's prefetch, spawn+join at 2 workers took 74 ns, not 62).
	 */
	if (w->nstack_pool >= QL_SPAWN_PREFETCH) {
		const char *p = (const char *)w->stack_pool[w->nstack_pool - QL_SPAWN_PREFETCH];

		ql__prefetch_w(p);
		ql__prefetch_w(p + 64);
	}
#ifdef QL_ASAN
	/* Frames of the last owner that never returned left poison. */
	__asan_unpoison_memory_region(t->stack_lo, t->stack_size);
#endif
	return t;
}

/*
 * A record and stack for a task of `size` bytes: from w's pool when it can,
 * then from its spare chain, which an empty chain refills by taking the
 * whole shared list (one exchange, no walk).
 */
static struct ql_task *stack_get(struct ql_worker *w, size_t size)
{
	struct ql_task *t;

	if (!w || size != QL_STACK_DEFAULT)
		return stack_map(size);
	if (w->nstack_pool)
		return stack_pop(w);
	if (!w->stack_spare && atomic_load_explicit(&w->ex->stack_free, memory_order_relaxed))
		/* acquire: pairs with the spiller's release CAS (the links). */
		w->stack_spare =
			atomic_exchange_explicit(&w->ex->stack_free, NULL, memory_order_acquire);
	t = w->stack_spare;
	if (!t)
		return stack_map(size);
	w->stack_spare = t->wnext;
#ifdef QL_ASAN
	/* Frames of the last owner that never returned left poison. */
	__asan_unpoison_memory_region(t->stack_lo, t->stack_size);
#endif
	return t;
}

/*
 * task_free when the common case does not hold: the pool is full (it spills
 * half, then takes t), or t cannot go to this pool at all. Out of line, so
 * that the common case keeps no registers across a call.
 */
static __attribute__((noinline)) void task_free_slow(struct ql_task *t)
{
	struct ql_worker *w = ql__self;

	if (w && t->pooled && w->ex == t->ex) {
		stack_pool_spill(w);
		w->stack_pool[w->nstack_pool++] = t;
		return;
	}
	stack_unmap(t);
}

/* The last reference is gone: back to the pool, or unmapped. */
static inline void task_free(struct ql_task *t)
{
	struct ql_worker *w = ql__self;

	/* Line 1 is read (pooled, ex): the spawning side wrote it, and frees here. */
	if (__builtin_expect(w && t->pooled && w->ex == t->ex &&
				     w->nstack_pool < QL_STACK_POOL_MAX,
			     1)) {
		w->stack_pool[w->nstack_pool++] = t;
		return;
	}
	task_free_slow(t);
}

static void task_ref(struct ql_task *t)
{
	/* relaxed: the caller already holds a reference (or a lock that pins one). */
	atomic_fetch_add_explicit(&t->state, 1, memory_order_relaxed);
}

/* task_unref while other holders may remain. */
static __attribute__((noinline)) void task_unref_shared(struct ql_task *t)
{
	/* acq_rel: the freer sees every other holder's last writes. */
	if (T_HOLDS(atomic_fetch_sub_explicit(&t->state, 1, memory_order_acq_rel)) == 1)
		task_free(t);
}

static inline void task_unref(struct ql_task *t)
{
	/*
	 * The usual last release, a handle after its join: the task ended and
	 * the caller is the only holder left. Nobody else can take a reference
	 * now (every holder comes from an existing one, and the end has let go
	 * of its own), so the record is the caller's alone and goes back
	 * without a locked instruction, which would wait for every earlier
	 * load of a joiner's loop to finish. acquire: the other holders' last
	 * writes happened before their decrements, which this load reads from.
	 */
	if (T_HOLDS(atomic_load_explicit(&t->state, memory_order_acquire)) == 1) {
		task_free(t);
		return;
	}
	task_unref_shared(t);
}

/* ------------------------------------------------------------ defer chains */

static void chain_init(struct ql_chain *c)
{
	c->ents = c->inl;
	c->n = 0;
	c->cap = QL_CHAIN_INLINE;
	c->chunk = NULL;
	c->in_defer = 0;
	c->panicking = 0;
	c->recovered = 0;
	c->panic_code = 0;
	c->panic_msg = NULL;
}

void ql__chain_reset(struct ql_chain *c)
{
	chain_init(c);
}

static __attribute__((noinline)) int chain_grow(struct ql_chain *c, void (*fn)(void *), void *arg)
{
	struct ql_worker *w = cur_worker();
	struct ql_dchunk *k;

	if (w && w->chunk_pool) {
		k = w->chunk_pool;
		w->chunk_pool = k->prev;
		w->nchunk_pool--;
	} else {
		k = malloc(sizeof(*k));
		if (!k)
			return -ENOMEM;
	}
	k->prev = c->chunk;
	c->chunk = k;
	c->ents = k->e;
	c->cap = QL_CHUNK_ENTS;
	c->ents[0].fn = fn;
	c->ents[0].arg = arg;
	c->n = 1;
	return 0;
}

int ql_defer(void (*fn)(void *), void *arg)
{
	struct ql_chain *c = ql__chain;

	if (!c)
		return -EPERM;
	if (!fn)
		return -EINVAL;
	/* Locals, so that the stores below need not reload n (they may alias it). */
	unsigned n = c->n;
	struct ql_defer_ent *e = c->ents + n;

	if (__builtin_expect(n < c->cap, 1)) {
		e->fn = fn;
		e->arg = arg;
		c->n = n + 1;
		return 0;
	}
	return chain_grow(c, fn, arg);
}

/* Drop the empty top chunk: the segment below it (full) is on top again. */
static void chain_pop_chunk(struct ql_chain *c)
{
	struct ql_dchunk *k = c->chunk;
	struct ql_worker *w = cur_worker();

	c->chunk = k->prev;
	if (c->chunk) {
		c->ents = c->chunk->e;
		c->n = c->cap = QL_CHUNK_ENTS;
	} else {
		c->ents = c->inl;
		c->n = c->cap = QL_CHAIN_INLINE;
	}
	if (w && w->nchunk_pool < QL_CHUNK_POOL_MAX) {
		k->prev = w->chunk_pool;
		w->chunk_pool = k;
		w->nchunk_pool++;
	} else {
		free(k);
	}
}

/*
 * Run the chain, last in first out, until it is empty. An entry is taken off
 * before it is called, so a panic inside it (which runs the rest of the
 * chain from there) never runs it twice. Entries pushed by a deferred call
 * run next.
 */
void ql__chain_run(struct ql_chain *c)
{
	/*
	 * in_defer counts nesting (a deferred function may end up running
	 * another chain); raised once for the whole run rather than around each
	 * entry, since nothing but deferred functions runs in between.
	 */
	c->in_defer++;
	for (;;) {
		while (c->n) {
			struct ql_defer_ent e = c->ents[--c->n];

			e.fn(e.arg);
		}
		if (!c->chunk)
			break;
		chain_pop_chunk(c);
	}
	c->in_defer--;
}

/* ------------------------------------------------------------ switching */

/* On the task's stack: give the CPU back to the scheduler (AFTER_*). */
static void task_switch_out(struct ql_task *t, int after)
{
	struct ql_worker *w = t->w;

	t->after = (uint8_t)after;
	san_leave_task(t, 0);
	ql__ctx_switch(&t->ctx, &w->sched);
	/* Resumed, maybe on another worker: ql__go_enter set t->w. */
	san_task_resumed(t);
}

/*
 * On the task's stack, for the last time: back to the scheduler (which
 * ends the task) saving nothing, since nothing will resume here. A task
 * that ran briefly then touches one line of its stack, not two.
 */
static __attribute__((noreturn)) void task_exit(struct ql_task *t)
{
	struct ql_worker *w = t->w;

	t->after = AFTER_EXIT;
	san_leave_task(t, 1);
	ql__ctx_exit(&w->sched);
}

/* Park: switch out; commit (if any) runs on the scheduler's stack. */
static void task_park(struct ql_task *t, void (*commit)(struct ql_task *t))
{
	t->commit = commit;
	task_switch_out(t, AFTER_PARK);
}

/* Whoever wakes a parked task calls this once. Any thread. */
static void task_wake(struct ql_task *t)
{
	ql__job_ready(t->ex, t->w, &t->job);
}

static inline void task_end(struct ql_worker *w, struct ql_task *t);

struct ql_ctx *ql__go_enter(struct ql_worker *w, struct ql_task *t)
{
	w->direct = 0;
	t->w = w;
	w->cur = t;
	ql__chain = &t->chain;
	/* A task that never ran has no saved context: its stack top is where the record begins. */
	return __builtin_expect(t->ctx.sp != NULL, 1) ? &t->ctx : NULL;
}

#if defined(QL_ASAN) || defined(QL_TSAN)
void ql__go_switch_san(struct ql_worker *w, struct ql_task *t, struct ql_ctx *c)
{
	san_enter_task(w, t);
	if (c)
		ql__ctx_switch(&w->sched, c);
	else
		ql__ctx_start(&w->sched, t, ql__task_entry, t);
}
#endif

/* ql__go_back for a task that yielded or parked. */
static __attribute__((noinline)) int go_back_paused(struct ql_worker *w, struct ql_task *t)
{
	if (t->after == AFTER_YIELD) {
		ql__ready_append(w, &t->job);
		w->yielded = 1; /* the next pick looks at the queued tasks first */
		return 0;
	}
	if (t->commit)
		t->commit(t);
	return 0;
}

int ql__go_back(struct ql_worker *w)
{
	struct ql_task *t;

	san_back_in_scheduler(w);
	/* Direct yields may have run others since: the one that switched back is w->cur. */
	t = w->cur;
	w->cur = NULL;
	ql__chain = &w->fn_chain;
	if (t->after != AFTER_EXIT)
		return go_back_paused(w, t);
	task_end(w, t);
	return 1;
}

/* ------------------------------------------------------------ cancellation */

static int scope_reason(const struct ql_scope *s)
{
	for (; s; s = s->parent) {
		/* acquire: pairs with the canceller's store (see the essay). */
		int c = atomic_load_explicit(&s->cancelled, memory_order_seq_cst);

		if (c)
			return c;
	}
	return 0;
}

/* cancel_reason() past its first checks: the task runs in a scope. */
static __attribute__((noinline)) int cancel_reason_scoped(struct ql_task *t)
{
	int k = scope_reason(t->cur_scope);

	if (k)
		return k;
	/* The deadline timer may not have fired yet: the clock decides. */
	if (t->cur_scope->deadline != QL_NO_DEADLINE && ql_now() >= t->cur_scope->deadline)
		return ETIMEDOUT;
	return 0;
}

/*
 * Why t's calls must fail now: 0, ECANCELED or ETIMEDOUT, with ex t's
 * executor. Inline: every blocking call and every yield asks, and a task
 * outside any scope answers with three loads.
 */
static inline int cancel_reason_in(struct ql_task *t, struct ql_exec *ex)
{
	/* seq_cst: the task's half of the flag/park hand-shake. */
	if (__builtin_expect(atomic_load_explicit(&t->state, memory_order_seq_cst) & T_KILL, 0))
		return ECANCELED;
	/* Shutdown past its grace period cancels every task. */
	if (__builtin_expect(ql__exec_state(ex) == QL_EXEC_STOPPING, 0))
		return ECANCELED;
	if (!t->cur_scope)
		return 0;
	return cancel_reason_scoped(t);
}

/*
 * The same with t->ex: one load from the record's second line, where a
 * yield loop finds it in its cache (through t->w the executor is a chain of
 * three dependent loads, 2 ns a yield). A task's end asks through t->w
 * instead (see task_finish).
 */
static inline int cancel_reason(struct ql_task *t)
{
	return cancel_reason_in(t, t->ex);
}

/* On w, the worker holding t's operation: ask the kernel to cancel it. */
static void io_interrupt_here(struct ql_worker *w, struct ql_task *t)
{
	if (atomic_load_explicit(&t->io_park, memory_order_seq_cst) == w &&
	    ql__exec_state(w->ex) != QL_EXEC_STOPPING)
		ql__ring_cancel(&w->ring, &t->op);
}

static void io_interrupt_job(void *arg)
{
	struct ql_task *t = arg;

	io_interrupt_here(ql__self, t);
	task_unref(t);
}

/*
 * Make a task that was cancelled notice: wake it from a join, cancel its
 * operation. The caller set the flag first and keeps t alive. Any thread.
 */
static void task_interrupt(struct ql_task *t)
{
	struct ql_worker *w, *self = ql__self;
	int woke = 0;

	spin_lock(&t->lock);
	if (t->join_target) {
		struct ql_task *u = t->join_target;

		spin_lock(&u->wlock);
		if (t->in_wait) {
			if (t->wprev)
				t->wprev->wnext = t->wnext;
			else
				atomic_store_explicit(&u->waiters, t->wnext, memory_order_relaxed);
			if (t->wnext)
				t->wnext->wprev = t->wprev;
			t->in_wait = 0;
			woke = 1;
		}
		spin_unlock(&u->wlock);
	}
	spin_unlock(&t->lock);
	if (woke) {
		task_wake(t);
		return;
	}
	/* seq_cst: after our flag store, as the task publishes then checks. */
	w = atomic_load_explicit(&t->io_park, memory_order_seq_cst);
	if (!w)
		return;
	if (w == self) {
		io_interrupt_here(w, t);
		return;
	}
	task_ref(t);
	if (ql__run_on(w, io_interrupt_job, t) < 0)
		task_unref(t); /* shutting down: the ring's exit cancels it anyway */
}

int ql_cancel(struct ql_task *t)
{
	if (!t)
		return -EINVAL;
	/* acquire: if it ended, its status is final. */
	if (task_done(t))
		return -EALREADY;
	/*
	 * seq_cst: the flag before the look at where it is parked. An end
	 * racing with this keeps the bit (its CAS only clears T_RUN), and a
	 * bit set on an ended task is never read: the next spawn into the
	 * record sets the whole word.
	 */
	atomic_fetch_or_explicit(&t->state, T_KILL, memory_order_seq_cst);
	task_interrupt(t);
	return 0;
}

/* ------------------------------------------------------------ scopes */

static void scope_unref(struct ql_scope *s);

/* Set the flag and interrupt everything in s and below. Caller holds no lock. */
static void scope_cancel(struct ql_scope *s, int reason)
{
	int expected = 0;

	/* seq_cst: the flag before the looks at the members (the hand-shake). */
	atomic_compare_exchange_strong_explicit(&s->cancelled, &expected, reason,
						memory_order_seq_cst, memory_order_seq_cst);
	spin_lock(&s->lock);
	for (struct ql_task *t = s->members; t; t = t->snext)
		task_interrupt(t);
	if (s->opener)
		task_interrupt(s->opener);
	for (struct ql_scope *k = s->kids; k; k = k->knext)
		scope_cancel(k, reason);
	spin_unlock(&s->lock);
}

/* The deadline timer's continuation, on timer_w: expired, or cancelled. */
static void scope_timer_fired(void *arg, ssize_t res)
{
	struct ql_scope *s = arg;

	s->timer_armed = 0;
	if (res == -ETIME)
		scope_cancel(s, ETIMEDOUT);
	scope_unref(s);
}

/* On timer_w: arm the deadline timer, unless the scope is already closed. */
static void scope_timer_arm(void *arg)
{
	struct ql_scope *s = arg;

	if (!atomic_load_explicit(&s->closed, memory_order_acquire) &&
	    ql__timer_arm(s->timer_w, s->deadline, scope_timer_fired, s, &s->timer_op) == 0) {
		s->timer_armed = 1;
		return; /* the timer keeps the reference */
	}
	scope_unref(s);
}

/* On timer_w: the scope closed, cancel its timer. */
static void scope_timer_disarm(void *arg)
{
	struct ql_scope *s = arg;

	if (s->timer_armed && ql__exec_state(s->timer_w->ex) != QL_EXEC_STOPPING)
		ql__ring_cancel(&s->timer_w->ring, s->timer_op);
	scope_unref(s);
}

/* Bind s to ex and start its deadline timer there (once). */
static void scope_bind(struct ql_scope *s, struct ql_exec *ex, struct ql_worker *self)
{
	struct ql_exec *none = NULL;

	if (s->ex == ex || !atomic_compare_exchange_strong((_Atomic(struct ql_exec *) *)&s->ex,
							   &none, ex))
		return;
	if (s->deadline == QL_NO_DEADLINE || s->deadline < 1)
		return;
	s->timer_w = self ? self : ex->workers[0];
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	if (self) {
		scope_timer_arm(s);
	} else if (ql__run_on(s->timer_w, scope_timer_arm, s) < 0) {
		s->timer_w = NULL;
		scope_unref(s);
	}
}

static void scope_unref(struct ql_scope *s)
{
	while (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
		struct ql_scope *p = s->parent;

		if (p) {
			spin_lock(&p->lock);
			if (s->kprev)
				s->kprev->knext = s->knext;
			else
				p->kids = s->knext;
			if (s->knext)
				s->knext->kprev = s->kprev;
			spin_unlock(&p->lock);
		}
		free(s);
		s = p; /* the child's reference on its parent */
	}
}

/* t leaves the scope it was spawned in, and drops its reference on it. */
static void scope_leave(struct ql_scope *s, struct ql_task *t)
{
	spin_lock(&s->lock);
	if (t->sprev)
		t->sprev->snext = t->snext;
	else
		s->members = t->snext;
	if (t->snext)
		t->snext->sprev = t->sprev;
	spin_unlock(&s->lock);
	scope_unref(s);
}

int ql_scope_open(struct ql_scope **out, uint64_t deadline_ns)
{
	struct ql_task *t = cur_task();
	struct ql_scope *s, *p = t ? t->cur_scope : NULL;
	int r;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (t && (r = cancel_reason(t)))
		return -r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->deadline = deadline_ns;
	s->refs = 1; /* the handle */
	if (p) {
		if (p->deadline < s->deadline)
			s->deadline = p->deadline;
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
		s->parent = p;
		spin_lock(&p->lock);
		s->knext = p->kids;
		if (p->kids)
			p->kids->kprev = s;
		p->kids = s;
		spin_unlock(&p->lock);
		/* A cancel that walked p before we were linked: inherit it. */
		if ((r = scope_reason(p)))
			atomic_store_explicit(&s->cancelled, r, memory_order_seq_cst);
	}
	if (t) {
		s->opener = t;
		s->opener_prev = t->cur_scope;
		t->cur_scope = s;
		scope_bind(s, t->ex, t->w);
	}
	*out = s;
	return 0;
}

int ql_scope_cancel(struct ql_scope *s)
{
	if (!s)
		return -EINVAL;
	scope_cancel(s, ECANCELED);
	return 0;
}

void ql_scope_close(struct ql_scope *s)
{
	struct ql_task *t;

	if (!s)
		return;
	atomic_store_explicit(&s->closed, 1, memory_order_release);
	scope_cancel(s, ECANCELED);
	spin_lock(&s->lock);
	t = s->opener;
	s->opener = NULL;
	spin_unlock(&s->lock);
	if (t && t->cur_scope == s)
		t->cur_scope = s->opener_prev;
	if (s->timer_w) {
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
		if (ql__self == s->timer_w)
			scope_timer_disarm(s);
		else if (ql__run_on(s->timer_w, scope_timer_disarm, s) < 0)
			scope_unref(s);
	}
	scope_unref(s);
}

uint64_t ql_deadline(void)
{
	struct ql_task *t = cur_task();

	return t && t->cur_scope ? t->cur_scope->deadline : QL_NO_DEADLINE;
}

/* ------------------------------------------------------------ spawning */

static void task_finish(struct ql_task *t) __attribute__((noreturn));

void ql__task_entry(void *arg)
{
	struct ql_task *t = arg;

	san_task_resumed(t);
	t->job.fn(t->job.arg);
	task_finish(t);
}

/*
 * Lines 0 and 1 of a new task's record, field by field (see struct
 * ql_task): the record is cold more often than not, and the rest of it is
 * idle already. The queue link and the sampling flag are the spawn's
 * (exec.c). The stack is not touched: the first run starts the context
 * (ql__ctx_start).
 */
static inline void task_init(struct ql_task *t, struct ql_exec *ex, struct ql_worker *home,
			     void (*fn)(void *), void *arg, int handle, uint64_t id,
			     const char *name)
{
	t->job.kind = QL_JOB_GO;
	t->job.slab = 0;
	t->job.sys = 0;
	t->job.fn = fn;
	t->job.arg = arg;
	t->job.status = 0;
	atomic_init(&t->state, T_RUN | (handle ? 1 : 0));
	t->after = 0;
	t->panicked = 0;
	t->ctx.sp = NULL;
	t->w = home;
	t->cur_scope = NULL;
	t->id = id;
	t->name = name;
	t->ex = ex;
	atomic_init(&t->waiters, NULL);
	atomic_init(&t->outside_waiters, 0);
	atomic_init(&t->wlock.v, 0);
	t->in_wait = 0;
#if defined(QL_ASAN) || defined(QL_TSAN)
	t->san_fiber = t->san_fake = NULL;
#endif
#ifdef QL_TSAN
	t->san_fiber = __tsan_create_fiber(0);
#endif
}

/* A spawn whose task could not be queued (r < 0): undo it, return r. */
static __attribute__((noinline)) int spawn_undo(struct ql_task *t, struct ql_worker *self,
						struct ql_scope *s, struct ql_task **out, int r)
{
	if (self)
		self->tasks_ended++; /* spawned and ended, for the leak count */
	else
		atomic_fetch_sub_explicit(&t->ex->tasks_outside, 1, memory_order_relaxed);
	if (out)
		*out = NULL;
	if (s) {
		scope_leave(s, t);
		t->scope = t->cur_scope = NULL; /* idle again (struct ql_task) */
	}
#ifdef QL_TSAN
	__tsan_destroy_fiber(t->san_fiber);
#endif
	task_free(t);
	return r;
}

/* ql_go past its fast path: options, scopes, outside threads, a new stack. */
static __attribute__((noinline)) int go_general(struct ql_exec *ex, void (*fn)(void *), void *arg,
						 const struct ql_task_opts *opts,
						 struct ql_task **out)
{
	struct ql_task_opts o = { .sz = sizeof(o) };
	struct ql_worker *self = ql__self;
	struct ql_task *t, *parent;
	struct ql_scope *s;
	size_t size;
	int r;

	if (opts) {
		if (opts->sz < sizeof(size_t) || opts->sz > sizeof(o))
			return -EINVAL;
		memcpy(&o, opts, opts->sz);
	}
	size = o.stack_size ? o.stack_size : QL_STACK_DEFAULT;
	if (size < QL_STACK_MIN || size > QL_STACK_MAX)
		return -EINVAL;
	size = (size + page_size - 1) & ~(page_size - 1);
	if (self && self->ex != ex)
		self = NULL;
	parent = self ? self->cur : NULL;
	s = o.scope ? o.scope : parent ? parent->cur_scope : NULL;
	if (s && (r = scope_reason(s)))
		return -r;
	if (s && s->deadline != QL_NO_DEADLINE && ql_now() >= s->deadline)
		return -ETIMEDOUT;
	if (ql__exec_state(ex) != QL_EXEC_RUNNING && !(self && ql__exec_state(ex) == QL_EXEC_CLOSING))
		return -ESHUTDOWN;
	t = stack_get(self, size);
	if (!t)
		return -ENOMEM;
	/* Unique without a shared counter: a per-worker sequence and the worker in the low bits. */
	task_init(t, ex, self ? self : ex->workers[0], fn, arg, out != NULL,
		  self ? (++self->task_seq << 11) | (self->id + 1)
		       : (atomic_fetch_add_explicit(&outside_ids, 1, memory_order_relaxed) + 1) << 11,
		  o.name);
	if (!self)
		atomic_fetch_add_explicit(&ex->tasks_outside, 1, memory_order_relaxed);
	if (s) {
		scope_bind(s, ex, self);
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
		t->scope = s;
		t->cur_scope = s;
		spin_lock(&s->lock);
		t->sprev = NULL;
		t->snext = s->members;
		if (s->members)
			s->members->sprev = t;
		s->members = t;
		spin_unlock(&s->lock);
	}
	/* The handle must exist before the task can run (and end). */
	if (out)
		*out = t;
	r = ql__job_spawn(ex, &t->job);
	if (r < 0)
		return spawn_undo(t, self, s, out, r);
	return 0;
}

int ql_go(struct ql_exec *ex, void (*fn)(void *), void *arg, const struct ql_task_opts *opts,
	  struct ql_task **out)
{
	struct ql_worker *self = ql__self;
	struct ql_task *t;
	int r;

	if (out)
		*out = NULL;
	if (!ex || !fn)
		return -EINVAL;
	/*
	 * The common spawn, kept short: by one of ex's workers (from a task or
	 * a callback), with default options, outside any scope, while ex
	 * accepts work from its own workers, with a pooled stack at hand.
	 */
	if (opts || !self || self->ex != ex || !self->nstack_pool ||
	    (self->cur && self->cur->cur_scope) || ql__exec_state(ex) > QL_EXEC_CLOSING)
		return go_general(ex, fn, arg, opts, out);
	t = stack_pop(self);
	task_init(t, ex, self, fn, arg, out != NULL, (++self->task_seq << 11) | (self->id + 1),
		  NULL);
	/* The handle must exist before the task can run (and end). */
	if (out)
		*out = t;
	r = ql__job_spawn_local(self, &t->job);
	if (__builtin_expect(r < 0, 0))
		return spawn_undo(t, self, NULL, out, r);
	return 0;
}

/* ------------------------------------------------------------ ending */

/* On the task's stack: run the chain, settle the status, switch away for good. */
static void task_finish(struct ql_task *t)
{
	struct ql_chain *c = &t->chain;
	int r;

	if (c->n || c->chunk)
		ql__chain_run(c);
	if (__builtin_expect(!c->panicking && !c->recovered, 1)) {
		/* No panic since the chain was last reset: it is idle already. */
		assert(c->in_defer == 0 && c->panic_code == 0);
		/*
		 * Through t->w, not t->ex: the record's second line, which
		 * only the spawning side writes, stays out of the cache of a
		 * worker that stole the task (see struct ql_task).
		 */
		t->job.status = (r = cancel_reason_in(t, t->w->ex)) ? -r : 0;
		task_exit(t);
	}
	if (c->panicking) {
		t->panicked = 1;
		t->job.status = c->panic_code;
		fprintf(stderr, "qilin: task %llu%s%s%s panicked: code %d: %s\n",
			(unsigned long long)t->id, t->name ? " (" : "", t->name ? t->name : "",
			t->name ? ")" : "", c->panic_code, c->panic_msg ? c->panic_msg : "");
	} else {
		t->job.status = c->panic_code; /* recovered */
	}
	/*
	 * The chain back in its idle state for the record's next task (struct
	 * ql_task): empty it is already; a panic inside a deferred call never
	 * returned to the outer run, whose in_defer count is left raised.
	 */
	assert(c->n == 0 && !c->chunk);
	c->in_defer = 0;
	c->panicking = 0;
	c->recovered = 0;
	c->panic_code = 0;
	c->panic_msg = NULL;
	task_exit(t);
}

/* task_end for a task in a scope: out of its member list. */
static __attribute__((noinline)) void task_end_scope(struct ql_task *t)
{
	scope_leave(t->scope, t);
	t->scope = NULL; /* idle again (struct ql_task) */
}

/*
 * task_end for a task a joiner may wait on: done, trading the task's own
 * hold for a plain one that keeps the record (its waiter list, its futex
 * word) alive while the waiters are woken. Every waiter published itself
 * before setting T_WAIT, so the list read under wlock below has all of them.
 */
static __attribute__((noinline)) void task_end_waited(struct ql_worker *w, struct ql_task *t)
{
	struct ql_task *list, *next;

	atomic_fetch_sub_explicit(&t->state, T_RUN - 1, memory_order_acq_rel);
	spin_lock(&t->wlock);
	list = atomic_load_explicit(&t->waiters, memory_order_relaxed);
	atomic_store_explicit(&t->waiters, NULL, memory_order_relaxed);
	for (struct ql_task *x = list; x; x = x->wnext)
		x->in_wait = 0;
	spin_unlock(&t->wlock);
	for (struct ql_task *x = list; x; x = next) {
		next = x->wnext;
		task_wake(x);
	}
	if (atomic_load_explicit(&t->outside_waiters, memory_order_relaxed))
		futex_wake_all(&t->state);
	w->tasks_ended++;
	task_unref(t);
}

/* On the scheduler's stack: the task ended; wake its joiners, drop its reference. */
static inline void task_end(struct ql_worker *w, struct ql_task *t)
{
#ifdef QL_TSAN
	__tsan_destroy_fiber(t->san_fiber);
#endif
	if (t->scope)
		task_end_scope(t);
	t->cur_scope = NULL;
	/*
	 * Sole owner (no handle, no job holding it; the scope cannot hand one
	 * out any more): nobody can join it, wait for it or take a reference
	 * now, so there is nothing to publish. A detached task ends without a
	 * single atomic read-modify-write.
	 */
	int v = atomic_load_explicit(&t->state, memory_order_acquire);

	for (;;) {
		if ((v & ~T_KILL) == T_RUN) {
			w->tasks_ended++;
			task_free(t);
			return;
		}
		if (v & T_WAIT) {
			task_end_waited(w, t);
			return;
		}
		/*
		 * Nobody waits: done, and the task's own hold dropped, in one
		 * CAS. acq_rel: the status and the task's effects go out with
		 * it; a failure (a holder came or went, or a joiner set
		 * T_WAIT) rereads. Another holder remains (v was not T_RUN):
		 * the last to let go frees.
		 */
		if (atomic_compare_exchange_weak_explicit(&t->state, &v, v & ~T_RUN,
							  memory_order_acq_rel, memory_order_acquire)) {
			w->tasks_ended++;
			return;
		}
	}
}

void ql_task_release(struct ql_task *t)
{
	if (t)
		task_unref(t);
}

uint64_t ql_task_id(const struct ql_task *t)
{
	return t ? t->id : 0;
}

uint64_t *ql__task_t_ready(struct ql_job *j)
{
	return &((struct ql_task *)j)->t_ready;
}

struct ql_task *ql_self(void)
{
	return cur_task();
}

/* ------------------------------------------------------------ joining */

/* Off the waiter's stack: join u's waiters, or come back at once. */
static void join_commit(struct ql_task *self)
{
	struct ql_task *u = self->join_target;
	struct ql_task *head;
	int wake = 0;

	spin_lock(&u->wlock);
	/* Publish first, then set T_WAIT and look at T_RUN in one step (see Lifetime). */
	head = atomic_load_explicit(&u->waiters, memory_order_relaxed);
	self->wprev = NULL;
	self->wnext = head;
	if (head)
		head->wprev = self;
	self->in_wait = 1;
	atomic_store_explicit(&u->waiters, self, memory_order_relaxed);
	if (!(atomic_fetch_or_explicit(&u->state, T_WAIT, memory_order_acq_rel) & T_RUN) ||
	    cancel_reason(self)) {
		/* Ended (or we were cancelled) meanwhile: take ourselves back out, if still in. */
		if (self->in_wait) {
			if (self->wnext)
				self->wnext->wprev = NULL;
			atomic_store_explicit(&u->waiters, self->wnext, memory_order_relaxed);
			self->in_wait = 0;
			wake = 1;
		}
	}
	spin_unlock(&u->wlock);
	if (wake)
		task_wake(self);
}

static int join_result(struct ql_task *t, int *status)
{
	if (status)
		*status = t->job.status;
	return t->panicked ? -EOWNERDEAD : 0;
}

/* ql_join of a task that had not ended when it looked. */
static __attribute__((noinline)) int join_wait(struct ql_task *t, int *status)
{
	struct ql_task *self;
	int r;

	self = cur_task();
	if (self == t)
		return -EDEADLK;
	if (self) {
		if ((r = cancel_reason(self)))
			return -r;
		spin_lock(&self->lock);
		self->join_target = t;
		spin_unlock(&self->lock);
		task_park(self, join_commit);
		spin_lock(&self->lock);
		self->join_target = NULL;
		spin_unlock(&self->lock);
		if (!task_done(t))
			return -((r = cancel_reason(self)) ? r : ECANCELED);
		return join_result(t, status);
	}
	/*
	 * A thread: counted, then T_WAIT (so that the end sees the count),
	 * then block on the state word until T_RUN goes. The word also moves
	 * when holders come and go: the wait then returns and we look again.
	 */
	atomic_fetch_add_explicit(&t->outside_waiters, 1, memory_order_relaxed);
	int v = atomic_fetch_or_explicit(&t->state, T_WAIT, memory_order_acq_rel) | T_WAIT;
	while (v & T_RUN) {
		futex_wait(&t->state, v);
		v = atomic_load_explicit(&t->state, memory_order_acquire);
	}
	atomic_fetch_sub_explicit(&t->outside_waiters, 1, memory_order_relaxed);
	return join_result(t, status);
}

int ql_join(struct ql_task *t, int *status)
{
	if (!t)
		return -EINVAL;
	/* acquire: the ended task's status and effects are visible. */
	if (task_done(t))
		return join_result(t, status);
	return join_wait(t, status);
}

/* ------------------------------------------------------------ yield, sleep */

/* Direct hand-offs from task to task before a yield goes through the scheduler. */
#define QL_DIRECT_MAX 32

/*
 * A yield to another task that is waiting at the head of the ready list
 * (and nothing fresher in the LIFO slot): switch to it directly, one switch
 * instead of two through the scheduler, and take its place in the list.
 * After QL_DIRECT_MAX of those in a row the scheduler gets its turn (to
 * submit the batch, reap, and look at its other queues). Not under the
 * sanitizers, whose fiber bookkeeping assumes every switch goes through the
 * scheduler.
 */
static int yield_direct(struct ql_task *t)
{
#if defined(QL_ASAN) || defined(QL_TSAN)
	(void)t;
	return 0;
#else
	struct ql_worker *w = t->w;
	struct ql_job *j = w->ready_head;
	struct ql_task *n;

	/* Only when nothing else is queued here: a yield goes behind all of it. */
	if (!j || j->kind != QL_JOB_GO || w->lifo || w->direct >= QL_DIRECT_MAX ||
	    w->bl_head || w->ib_rest || ql__deque_any(&w->dq) ||
	    !((struct ql_task *)j)->ctx.sp) /* never ran: the scheduler starts it */
		return 0;
	w->direct++;
	w->ready_head = j->node.next ? (struct ql_job *)((char *)j->node.next -
							 offsetof(struct ql_job, node))
				     : NULL;
	if (!w->ready_head)
		w->ready_tail = NULL;
	w->nready--;
	ql__ready_append(w, &t->job);
	n = (struct ql_task *)j;
	n->w = w;
	w->cur = n;
	ql__chain = &n->chain;
	ql__ctx_switch(&t->ctx, &n->ctx);
	return 1;
#endif
}

int ql_yield(void)
{
	struct ql_task *t = cur_task();
	int r;

	if (!t)
		return -EPERM;
	if (!yield_direct(t))
		task_switch_out(t, AFTER_YIELD);
	return (r = cancel_reason(t)) ? -r : 0;
}

/* ------------------------------------------------------------ panic, recover */

int ql_recover(void)
{
	struct ql_chain *c = ql__chain;

	if (!c || !c->in_defer || !c->panicking)
		return 0;
	c->panicking = 0;
	c->recovered = 1;
	return c->panic_code;
}

void ql_panic(int code, const char *msg)
{
	struct ql_worker *w = cur_worker();
	struct ql_task *t = w ? w->cur : NULL;
	struct ql_chain *c = ql__chain;

	if (code == 0)
		code = -1;
	if (!c) {
		fprintf(stderr, "qilin: panic outside a task: code %d: %s\n", code, msg ? msg : "");
		abort();
	}
	/* A panic during a panic replaces it (as in Go); so does one after a recover. */
	c->panicking = 1;
	c->recovered = 0;
	c->panic_code = code;
	c->panic_msg = msg;
	if (t)
		task_finish(t); /* runs the rest of the chain, never returns */
	/* A stackless job: run its chain, report, and land in the worker's loop. */
	ql__chain_run(c);
	if (c->panicking)
		fprintf(stderr, "qilin: stackless task on worker %u panicked: code %d: %s\n", w->id,
			code, msg ? msg : "");
	longjmp(*w->panic_jb, 1);
}

/* ------------------------------------------------------------ blocking I/O */

static void io_complete(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct ql_task *t = (struct ql_task *)((char *)op - offsetof(struct ql_task, op));
	struct ql_worker *w = (struct ql_worker *)((char *)r - offsetof(struct ql_worker, ring));

	(void)flags;
	t->io_res = res;
	ql__make_ready(w, &t->job);
}

/*
 * Start a blocking operation: publish where it will be, check for a cancel,
 * get an SQE. Returns the SQE, or NULL with *err set.
 */
static struct io_uring_sqe *io_start(struct ql_task **tp, int *err)
{
	struct ql_task *t = cur_task();
	struct ql_worker *w;
	int r;

	*tp = t;
	if (!t) {
		*err = -EPERM;
		return NULL;
	}
	w = t->w;
	if (ql__exec_state(t->ex) == QL_EXEC_STOPPING) {
		*err = -ESHUTDOWN;
		return NULL;
	}
	/* seq_cst: published before the flag check (the canceller does the reverse). */
	atomic_store_explicit(&t->io_park, w, memory_order_seq_cst);
	if ((r = cancel_reason(t))) {
		atomic_store_explicit(&t->io_park, NULL, memory_order_relaxed);
		*err = -r;
		return NULL;
	}
	memset(&t->op, 0, sizeof(t->op));
	t->op.fn = io_complete;
	return ql__ring_sqe(&w->ring, &t->op);
}

/* Park until the operation's CQE; the result, or why it was cut short. */
static int io_wait(struct ql_task *t, int makes_fd)
{
	int res, r;

	task_park(t, NULL);
	/* Resumed on the worker that holds the ring: nothing is in flight now. */
	atomic_store_explicit(&t->io_park, NULL, memory_order_relaxed);
	res = t->io_res;
	if (res == -ECANCELED && (r = cancel_reason(t)))
		return -r;
	if (makes_fd && res >= 0 && (r = cancel_reason(t))) {
		/* It completed despite the cancel: nobody will own this fd. */
		close(res);
		return -r;
	}
	return res;
}

#define IO_BEGIN()                                                                         \
	struct ql_task *t;                                                                 \
	int err;                                                                           \
	struct io_uring_sqe *sqe = io_start(&t, &err);                                      \
	if (!sqe)                                                                          \
	return err

ssize_t ql_read(int fd, void *buf, size_t n)
{
	return ql_pread(fd, buf, n, -1);
}

ssize_t ql_write(int fd, const void *buf, size_t n)
{
	return ql_pwrite(fd, buf, n, -1);
}

/* The buffer calls: one set of checks, one prep per opcode. */
static ssize_t io_buf(unsigned opcode, int fd, const void *buf, size_t n, off_t off, int flags)
{
	int bad = ql__buf_check(fd, buf, n);

	if (bad < 0)
		return bad;
	IO_BEGIN();
	ql__buf_prep(sqe, opcode, fd, buf, n, off, flags);
	return io_wait(t, 0);
}

ssize_t ql_pread(int fd, void *buf, size_t n, off_t off)
{
	return io_buf(IORING_OP_READ, fd, buf, n, off, 0);
}

ssize_t ql_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return io_buf(IORING_OP_WRITE, fd, buf, n, off, 0);
}

ssize_t ql_recv(int fd, void *buf, size_t n, int flags)
{
	return io_buf(IORING_OP_RECV, fd, buf, n, 0, flags);
}

ssize_t ql_send(int fd, const void *buf, size_t n, int flags)
{
	return io_buf(IORING_OP_SEND, fd, buf, n, 0, flags);
}

/* readv/writev and recvmsg/sendmsg: the same pattern for vectors and messages. */
static ssize_t io_vec(int write, int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	if (fd < 0)
		return -EBADF;
	if (!iov || iovcnt <= 0 || iovcnt > IOV_MAX)
		return -EINVAL;
	IO_BEGIN();
	if (write)
		io_uring_prep_writev(sqe, fd, iov, (unsigned)iovcnt, (uint64_t)off);
	else
		io_uring_prep_readv(sqe, fd, iov, (unsigned)iovcnt, (uint64_t)off);
	return io_wait(t, 0);
}

ssize_t ql_readv(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return io_vec(0, fd, iov, iovcnt, off);
}

ssize_t ql_writev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return io_vec(1, fd, iov, iovcnt, off);
}

static ssize_t io_msg(int send, int fd, const struct msghdr *msg, int flags)
{
	if (fd < 0)
		return -EBADF;
	if (!msg)
		return -EINVAL;
	IO_BEGIN();
	if (send)
		io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)flags);
	else
		io_uring_prep_recvmsg(sqe, fd, (struct msghdr *)msg, (unsigned)flags);
	return io_wait(t, 0);
}

ssize_t ql_recvmsg(int fd, struct msghdr *msg, int flags)
{
	return io_msg(0, fd, msg, flags);
}

ssize_t ql_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	return io_msg(1, fd, msg, flags);
}

int ql_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	if (fd < 0)
		return -EBADF;
	if ((addr && !len) || (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)))
		return -EINVAL;
	IO_BEGIN();
	io_uring_prep_accept(sqe, fd, addr, len, flags);
	return io_wait(t, 1);
}

int ql_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	if (fd < 0)
		return -EBADF;
	if (!addr || !len)
		return -EINVAL;
	IO_BEGIN();
	io_uring_prep_connect(sqe, fd, addr, len);
	return io_wait(t, 0);
}

int ql_socket(int domain, int type, int protocol)
{
	struct ql_task *cur = cur_task();

	if (!cur)
		return -EPERM;
	if (!ql__ring_op_supported(&cur->w->ring, IORING_OP_SOCKET)) {
		int r = cancel_reason(cur);
		int fd;

		if (r)
			return -r;
		fd = socket(domain, type, protocol);
		return fd < 0 ? -errno : fd;
	}
	IO_BEGIN();
	io_uring_prep_socket(sqe, domain, type, protocol, 0);
	return io_wait(t, 1);
}

int ql_shutdown(int fd, int how)
{
	struct ql_task *cur = cur_task();

	if (fd < 0)
		return -EBADF;
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return -EINVAL;
	if (!cur)
		return -EPERM;
	if (!ql__ring_op_supported(&cur->w->ring, IORING_OP_SHUTDOWN)) {
		int r = cancel_reason(cur);

		if (r)
			return -r;
		return shutdown(fd, how) < 0 ? -errno : 0;
	}
	IO_BEGIN();
	io_uring_prep_shutdown(sqe, fd, how);
	return io_wait(t, 0);
}

int ql_openat(int dfd, const char *path, int flags, mode_t mode)
{
	if (!path)
		return -EINVAL;
	IO_BEGIN();
	io_uring_prep_openat(sqe, dfd, path, flags, mode);
	return io_wait(t, 1);
}

int ql_close(int fd)
{
	if (fd < 0)
		return -EBADF;
	IO_BEGIN();
	io_uring_prep_close(sqe, fd);
	return io_wait(t, 0);
}

int ql_fsync(int fd)
{
	if (fd < 0)
		return -EBADF;
	IO_BEGIN();
	io_uring_prep_fsync(sqe, fd, 0);
	return io_wait(t, 0);
}

int ql_poll(int fd, unsigned events)
{
	if (fd < 0)
		return -EBADF;
	if (!events || events > 0xffff)
		return -EINVAL;
	IO_BEGIN();
	io_uring_prep_poll_add(sqe, fd, events);
	return io_wait(t, 0);
}

int ql_sleep(uint64_t ns)
{
	struct __kernel_timespec ts = { .tv_sec = (long long)(ns / 1000000000ull),
					.tv_nsec = (long long)(ns % 1000000000ull) };
	int res;

	IO_BEGIN();
	/* ts lives on this stack, which stays put until the CQE: the kernel may read it late. */
	io_uring_prep_timeout(sqe, &ts, 0, 0);
	res = io_wait(t, 0);
	return res == -ETIME ? 0 : res;
}

/* ------------------------------------------------------------ stack overflow */

static struct sigaction old_segv;

/* Async-signal-safe formatting of an unsigned number. */
static size_t fmt_u64(char *p, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t put(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return n;
}

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	struct ql_worker *w = ql__self;
	struct ql_task *t = w ? w->cur : NULL;
	char *addr = si ? (char *)si->si_addr : NULL;

	if (t && addr >= (char *)t->map && addr < t->stack_lo) {
		char msg[512];
		size_t n = 0;

		n += put(msg + n, "qilin: stack overflow in task ");
		n += fmt_u64(msg + n, t->id);
		if (t->name) {
			n += put(msg + n, " (");
			size_t k = strnlen(t->name, 128);
			memcpy(msg + n, t->name, k);
			n += k;
			n += put(msg + n, ")");
		}
		n += put(msg + n, ": its ");
		n += fmt_u64(msg + n, t->size_class);
		n += put(msg + n, "-byte stack is exhausted (fault in the guard page, ");
		n += fmt_u64(msg + n, (uint64_t)(t->stack_lo - addr));
		n += put(msg + n, " bytes below the stack); give it a larger "
				  "ql_task_opts.stack_size. Aborting.\n");
		if (write(STDERR_FILENO, msg, n) < 0) {
			/* nothing more can be done */
		}
		abort();
	}
	/* Not ours: hand it to whoever was there before, or crash as usual. */
	if ((old_segv.sa_flags & SA_SIGINFO) && old_segv.sa_sigaction) {
		old_segv.sa_sigaction(sig, si, uc);
		return;
	}
	if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN) {
		old_segv.sa_handler(sig);
		return;
	}
	signal(sig, SIG_DFL); /* the faulting instruction runs again and kills us */
}

static void global_init_once(void)
{
	struct sigaction sa;

	page_size = (size_t)sysconf(_SC_PAGESIZE);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
}

void ql__task_global_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, global_init_once);
}

void ql__task_worker_init(struct ql_worker *w)
{
	stack_t ss;

	chain_init(&w->fn_chain);
#ifdef QL_TSAN
	w->san_fiber = __tsan_get_current_fiber();
#endif
	/* The SIGSEGV handler runs here when a task's stack is exhausted. */
	w->altstack = mmap(NULL, QL_ALTSTACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
	if (w->altstack == MAP_FAILED) {
		w->altstack = NULL;
		return;
	}
	ss.ss_sp = w->altstack;
	ss.ss_size = QL_ALTSTACK;
	ss.ss_flags = 0;
	if (sigaltstack(&ss, NULL) != 0) {
		munmap(w->altstack, QL_ALTSTACK);
		w->altstack = NULL;
	}
}

void ql__task_worker_fini(struct ql_worker *w)
{
	stack_t ss = { .ss_flags = SS_DISABLE };

	if (!w->altstack)
		return;
	sigaltstack(&ss, NULL);
	munmap(w->altstack, QL_ALTSTACK);
	w->altstack = NULL;
}

void ql__task_pools_free(struct ql_worker *w)
{
	/* The shared stack too (any worker may do it: the workers are gone). */
	struct ql_task *f = atomic_exchange_explicit(&w->ex->stack_free, NULL, memory_order_acquire);

	while (f) {
		struct ql_task *t = f;

		f = t->wnext;
		stack_unmap(t);
	}
	while (w->nstack_pool)
		stack_unmap(w->stack_pool[--w->nstack_pool]);
	while (w->stack_spare) {
		struct ql_task *t = w->stack_spare;

		w->stack_spare = t->wnext;
		stack_unmap(t);
	}
	while (w->chunk_pool) {
		struct ql_dchunk *k = w->chunk_pool;

		w->chunk_pool = k->prev;
		free(k);
	}
	w->nchunk_pool = 0;
}
