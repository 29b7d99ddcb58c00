/* SPDX-License-Identifier: MIT */
/*
 * lib/queue.h - the executor's run queues: a work-stealing deque per worker,
 * an MPSC inbox per worker and one global overflow queue.
 *
 * Three structures, three concurrency contracts; the suffix of each function
 * says which threads may call it (the Concurrency Kit convention):
 *
 *   struct ql_deque    bounded Chase-Lev deque of non-NULL `void *` items.
 *                      `_local` functions belong to the owner (the worker the
 *                      deque is part of); ql__deque_steal() and
 *                      ql__deque_len() may run on any thread;
 *                      ql__deque_steal_half() runs on the thread that owns
 *                      the destination deque.
 *   struct ql_inbox    intrusive MPSC stack of struct ql_qnode: `_mpsc`
 *                      pushes from any thread, `_local` take-all by the one
 *                      consumer (the worker that owns the inbox).
 *   struct ql_global   intrusive MPMC stack of struct ql_qnode: push a batch
 *                      and take everything, both from any thread.
 *
 * None of them takes a lock, and none allocates after init: the inbox and the
 * global queue are intrusive (the caller embeds a struct ql_qnode in its own
 * object), the deque has a fixed array sized at init. Why each one is correct
 * is argued at length in lib/queue.c.
 *
 * Layout. Fields that different threads write sit on different cache lines
 * (QL_CACHELINE bytes apart), so each structure is over-aligned: a
 * struct ql_deque, ql_inbox or ql_global must live in memory aligned to
 * QL_CACHELINE (a static, automatic or embedded object is; heap memory must
 * come from aligned_alloc() or posix_memalign(), not plain malloc()).
 *
 * Not installed, not API: lib/ includes it, nothing outside the tree does.
 */
#ifndef QILIN_LIB_QUEUE_H
#define QILIN_LIB_QUEUE_H

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

/* A spin-wait hint to the CPU (lets the sibling hyper-thread run): thieves, lost CASes. */
static inline void ql__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/*
 * Ask for the line holding p in exclusive state, ready to be written: when
 * another core has it modified, the transfer starts now instead of at the
 * store or atomic that needs it. Never faults (p may be stale). x86_64's
 * PREFETCHW is a no-op on the few CPUs without it; __builtin_prefetch would
 * emit a plain read prefetch there unless the whole build targets PRFCHW.
 */
static inline void ql__prefetch_w(const void *p)
{
#if defined(__x86_64__)
	__asm__("prefetchw %0" ::"m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

/* The cache-line size qilin pads to, in bytes. */
#define QL_CACHELINE 64

/*
 * How many times ql__deque_steal() retries after losing a race for the top
 * item (to another thief, or to the owner taking the last item) before it
 * gives up and returns NULL. A lost race means some other thread made
 * progress, so giving up is never a livelock: the caller simply looks
 * elsewhere (another victim, the inbox, the global queue) and comes back.
 */
#define QL_DEQUE_STEAL_TRIES 4

/* The largest capacity ql__deque_init() accepts. */
#define QL_DEQUE_MAX_CAPACITY (1u << 30)

/*
 * A bounded work-stealing deque. The owner pushes and pops at the bottom
 * (LIFO, for cache locality); thieves take from the top (the oldest item).
 * Indices grow without bound (64-bit, they never wrap in practice) and are
 * reduced modulo the capacity to address the slot array.
 *
 * Line 0 holds what the owner writes (bottom) together with what nobody
 * writes after init (slots, mask): a thief needs all three anyway, so it
 * pays one line transfer, not two. The owner's top_seen rides there too
 * (written in the same operations as bottom). Line 1 holds top, which
 * every thief's CAS writes, and which the owner loads only when it must:
 * top_seen, the last top it loaded, is a lower bound of top (top only
 * grows), good enough to know there is room for a push.
 */
struct ql_deque {
	alignas(QL_CACHELINE) _Atomic(int64_t) bottom; /* next free index; owner writes */
	_Atomic(void *) *slots; /* capacity slots; read-only pointer after init */
	uint64_t mask;		/* capacity - 1 */
	int64_t top_seen;	/* owner only: a top it loaded, a lower bound of top */
	alignas(QL_CACHELINE) _Atomic(int64_t) top; /* oldest item's index; CAS by all */
};

/*
 * Set up an empty deque of `capacity` slots, a power of 2, at least 2 and at
 * most QL_DEQUE_MAX_CAPACITY. Returns 0, -EINVAL for a bad capacity or
 * -ENOMEM. Single-threaded: publish the deque to other threads afterwards
 * (thread creation or any release/acquire hand-off does).
 */
int ql__deque_init(struct ql_deque *d, unsigned capacity);

/*
 * Release the slot array. The deque must be quiescent (no thread inside any
 * deque function); items still in it are forgotten, not freed. Calling it on
 * a zeroed or already finished deque is a harmless no-op.
 */
void ql__deque_fini(struct ql_deque *d);

/*
 * Owner only. Push a non-NULL item at the bottom. Returns 0, or -ENOSPC when
 * the deque is full (the caller then moves half of its items elsewhere with
 * ql__deque_pop_half_local() and pushes again), or -EINVAL for NULL.
 */
int ql__deque_push_local(struct ql_deque *d, void *item);

/* The same for a caller that knows item is not NULL; inline, for the executor's spawn path. */
static inline int ql__deque_push_inline(struct ql_deque *d, void *item)
{
	int64_t b, t;

	/* relaxed: only this thread, the owner, ever writes bottom. */
	b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
	/*
	 * Room is judged against the top this thread saw last, and top is
	 * loaded again only when that says full. While thieves work on the
	 * deque their CASes keep top's line in their caches, and loading it
	 * on every push would cost the spawner a transfer per spawn. top only
	 * grows, so an old value makes the deque look fuller, never emptier.
	 */
	if (b - d->top_seen > (int64_t)d->mask) {
		/*
		 * acquire: pairs with the CAS (seq_cst, hence release) by
		 * which a thief took the item that last used the slot we are
		 * about to fill (index b - capacity), or with a later CAS of
		 * top, which continues that CAS's release sequence. Its
		 * relaxed read of the slot happened before that CAS, so it
		 * happens before our store (this load precedes it, and so do
		 * the earlier loads top_seen came from) and cannot see the
		 * new item. A stale, smaller top only makes the deque look
		 * fuller: a spurious -ENOSPC at worst, never an overwrite.
		 */
		t = atomic_load_explicit(&d->top, memory_order_acquire);
		d->top_seen = t;
		if (b - t > (int64_t)d->mask)
			return -ENOSPC;
	}
	/* relaxed: published by the release store of bottom just below. */
	atomic_store_explicit(&d->slots[b & d->mask], item, memory_order_relaxed);
	/*
	 * release: a thief that loads this bottom (seq_cst, so acquire) and
	 * finds index b below it also sees the slot write above. (The paper's
	 * release fence + relaxed store; the fence had no other store to
	 * order.)
	 */
	atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
	return 0;
}

/*
 * Owner only, a hint: the item the next ql__deque_pop_local() would return,
 * or NULL when the deque looked empty. A thief may take it meanwhile, run
 * it and free it, so the result is only ever an address to prefetch, never
 * to dereference. It judges emptiness by top_seen, not top, whose line a
 * busy thief keeps in its own cache: an item already stolen may come back
 * (a stale pointer, which a prefetch never faults on). relaxed: nothing is
 * read on the strength of it.
 */
static inline void *ql__deque_peek_local(const struct ql_deque *d)
{
	int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);

	if (b <= d->top_seen)
		return NULL;
	return atomic_load_explicit(&d->slots[(b - 1) & d->mask], memory_order_relaxed);
}

/*
 * Owner only. Pop the most recently pushed item (LIFO). Returns it, or NULL
 * when the deque is empty (or a thief won the race for the last item).
 */
void *ql__deque_pop_local(struct ql_deque *d);

/*
 * Owner only. Remove up to half of the items, at most `max`, from the top
 * (the oldest ones, the end thieves take from) and store them into out[] in
 * FIFO order, oldest first. Returns how many: floor(len / 2) capped at max,
 * fewer if thieves took some meanwhile, 0 when fewer than 2 items are left.
 * Safe against concurrent thieves. Meant for overflow: on -ENOSPC from a
 * push, hand the returned items to the global queue.
 */
unsigned ql__deque_pop_half_local(struct ql_deque *d, void **out, unsigned max);

/*
 * Any thread. Take the oldest item. Returns it, or NULL when the deque is
 * empty or when the thread lost the race for the top item
 * QL_DEQUE_STEAL_TRIES times in a row (other thieves or the owner are
 * emptying it: look elsewhere). NULL is therefore "nothing for you now", not
 * a proof of emptiness.
 */
void *ql__deque_steal(struct ql_deque *d);

/*
 * The owner of `dst`, stealing from another deque. Move about half of the
 * victim's items, ceil(len / 2) as sampled at the start (at least 1 when the
 * victim has any) and no more than dst has room for, from the victim's top
 * into dst's bottom, oldest first, one classic single-item steal each.
 * Returns how many moved (0 when the victim looked empty, when dst is full or
 * when every attempt lost its race). victim != dst.
 */
unsigned ql__deque_steal_half(struct ql_deque *victim, struct ql_deque *dst);

/*
 * Any thread. The number of items, approximately: a snapshot of two
 * counters that other threads move, clamped to [0, capacity]. Exact only
 * when called by the owner while no thief is active.
 */
unsigned ql__deque_len(const struct ql_deque *d);

/*
 * Any thread, a hint like ql__deque_len: nonzero when the deque looked
 * non-empty. Inline, for the hot paths that only ask "is anything queued?"
 * (relaxed loads: nothing is read on the strength of the answer).
 */
static inline int ql__deque_any(const struct ql_deque *d)
{
	return atomic_load_explicit(&d->bottom, memory_order_relaxed) >
	       atomic_load_explicit(&d->top, memory_order_relaxed);
}

/*
 * An intrusive queue node, embedded in the caller's object (a task, say),
 * which the caller recovers with container_of(). A node is in at most one
 * queue at a time, and belongs to that queue from the push that puts it in
 * until the take that hands it out.
 */
struct ql_qnode {
	struct ql_qnode *next;
};

/*
 * A worker's inbox: any thread pushes, the worker takes everything at once.
 * The head is alone on its cache line. Zeroed memory is an empty inbox.
 */
struct ql_inbox {
	alignas(QL_CACHELINE) _Atomic(struct ql_qnode *) head; /* newest node, or NULL */
};

/* Set up an empty inbox (same as zeroing it). Single-threaded. */
void ql__inbox_init(struct ql_inbox *q);

/*
 * Any thread. Push one node. Returns 1 when the inbox was empty just before
 * (this push made it non-empty: the caller should wake the consumer if it
 * may be parked), else 0. Never fails, never allocates. The push is
 * sequentially consistent, so "push, then load the consumer's parked flag"
 * pairs with the consumer's "store parked flag, then ql__inbox_empty()"
 * (the flag's store and load seq_cst too): at least one side sees the other,
 * and no push is left behind a parked consumer.
 */
int ql__inbox_push_mpsc(struct ql_inbox *q, struct ql_qnode *n);

/*
 * Any thread. Push a chain of nodes linked first->next->...->last (last's
 * next is ignored and overwritten) with a single CAS, as if each had been
 * pushed in turn from first to last: the consumer sees them in that order,
 * contiguously. Returns 1 when the inbox was empty just before, else 0.
 */
int ql__inbox_push_batch_mpsc(struct ql_inbox *q, struct ql_qnode *first, struct ql_qnode *last);

/*
 * Consumer only. Take every node pushed so far. Returns the first of a
 * NULL-terminated chain in push (FIFO) order, or NULL when empty. Nodes
 * pushed by one thread come out in the order that thread pushed them.
 */
struct ql_qnode *ql__inbox_take_all_local(struct ql_inbox *q);

/*
 * Any thread. Nonzero when the inbox is empty at the time of the
 * (sequentially consistent) load; see ql__inbox_push_mpsc() for parking.
 */
int ql__inbox_empty(const struct ql_inbox *q);

/*
 * The global overflow queue: any thread pushes batches, any thread takes
 * everything. head and count share one line: the same threads write both,
 * in the same operation. Zeroed memory is an empty queue.
 */
struct ql_global {
	alignas(QL_CACHELINE) _Atomic(struct ql_qnode *) head; /* newest node, or NULL */
	_Atomic(unsigned long) count; /* nodes in the queue, approximately */
};

/* Set up an empty global queue (same as zeroing it). Single-threaded. */
void ql__global_init(struct ql_global *q);

/*
 * Any thread. Push `count` nodes linked first->next->...->last (last's next
 * is ignored) with a single CAS; a later take returns them in that order,
 * contiguously. count must be the chain's length (it feeds
 * ql__global_len()); count == 0 with first == NULL is a no-op.
 */
void ql__global_push_batch(struct ql_global *q, struct ql_qnode *first, struct ql_qnode *last,
			   unsigned count);

/*
 * Any thread. Take everything. Returns the first of a NULL-terminated chain
 * in push (FIFO) order, or NULL, and stores the chain's length in *count
 * (if count is not NULL). A caller that cannot keep all of it pushes the
 * rest back with ql__global_push_batch(); the rest then comes after whatever
 * was pushed in between (the queue is FIFO per batch, not globally fair).
 */
struct ql_qnode *ql__global_take(struct ql_global *q, unsigned *count);

/*
 * Any thread. Nodes in the queue, approximately: a relaxed load of a counter
 * that may briefly include a batch whose push has not completed yet. It
 * never underflows (see lib/queue.c), and it is exact when the queue is
 * quiescent.
 */
unsigned ql__global_len(const struct ql_global *q);

#endif
