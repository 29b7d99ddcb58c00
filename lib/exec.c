/* SPDX-License-Identifier: MIT */
/*
 * lib/exec.c - the executor: workers, their scheduler ticks, parking and
 * waking, work stealing, stackless tasks, I/O in callback form, shutdown,
 * counters and USDT probes.
 *
 * What it owns. An executor is N worker threads, each pinned to a CPU and
 * owning one io_uring (uring/) and four places a task can wait in:
 *   - the LIFO slot: the task made runnable last (an I/O continuation); it
 *     runs next, for cache warmth, but at most QL_LIFO_MAX times in a row
 *     per tick so that it cannot starve the rest;
 *   - the ready list: earlier continuations, FIFO; owner only, never stolen,
 *     so a continuation runs on the worker whose ring completed it;
 *   - the deque (lib/queue.c): tasks spawned on this worker; the owner pushes
 *     and pops at the bottom, idle workers steal half from the top;
 *   - the inbox (lib/queue.c): tasks handed over by other threads, MPSC.
 * Plus one global overflow queue shared by all: a full deque spills half of
 * itself there, and every worker looks at it at least every QL_GLOBAL_EVERY
 * ticks, and whenever it has nothing else.
 *
 * One tick of a worker: run up to QL_TICK_BUDGET tasks (continuations and
 * queued tasks interleaved so neither starves the other), then hand every
 * SQE those tasks prepared to the kernel in one io_uring_enter and reap every
 * CQE (each completion puts its continuation in the LIFO slot). With nothing
 * to run it tries to steal; with nothing to steal it parks: it announces
 * itself parked, looks once more at its inbox and the global queue, and
 * blocks in io_uring_enter until a CQE comes: an I/O completion or a wake-up
 * (eventfd, or msg_ring from another worker). An idle executor therefore uses
 * no CPU.
 *
 * Parking and waking (the lost-wake-up argument). A producer publishes its
 * task (inbox push, seq_cst) and then reads the target's `parked` flag
 * (seq_cst); the worker stores `parked` = 1 (seq_cst) and then reads its
 * inbox and the global queue (seq_cst). In any interleaving of these four
 * sequentially consistent operations at least one side sees the other's
 * write: either the worker sees the task and does not block, or the producer
 * sees the flag and wakes it. The producer clears the flag with an exchange,
 * so of many producers only one sends a wake-up per park: no storm. A
 * wake-up sent after the worker woke for another reason is harmless (its CQE
 * only ends a later wait early).
 *
 * Who may call what. ql_exec_create/shutdown/destroy: any thread but a
 * worker. ql_spawn, ql_exec_stats, ql_now: any thread. The *_cb functions
 * and ql_worker_id: from a worker (a task or a continuation). Every worker
 * field is written by its owner only, except inbox, spawned_remote and
 * parked, which sit on cache lines of their own.
 *
 * Termination accounting. A task is counted when it is queued (the owner's
 * st.spawned, or the target's spawned_remote for a hand-off from another
 * thread) and when it ends (the runner's st.run, or st.dropped). Shutdown reads every
 * `run` and `dropped` and then every spawned count; equal sums mean nothing was
 * running or queued at the moment of the first read, because a task counted
 * as spawned but unfinished then would make the spawned sum larger, and
 * tasks are only spawned by running tasks (or by outside threads, refused
 * once closing).
 */
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

#include "internal.h"

/* Tasks run per tick before the batch goes to the kernel. */
#define QL_TICK_BUDGET 128
/* Consecutive runs of the LIFO slot allowed within one tick. */
#define QL_LIFO_MAX 3
/* Ticks between two looks at the global queue (a prime, as in Go and Tokio). */
#define QL_GLOBAL_EVERY 61
/* Slots in each worker's deque; spills and refills move half of it. */
#define QL_DEQUE_SIZE 256
#define QL_BATCH QL_BATCH_MAX
_Static_assert(QL_BATCH_MAX == QL_DEQUE_SIZE / 2, "a batch is half a deque");
/* The backlog tops the deque up to this, leaving room for the owner's spawns. */
#define QL_REFILL (QL_DEQUE_SIZE * 3 / 4)
/* Task records kept per worker for reuse. */
#define QL_POOL_MAX 4096
/* Records per slab (one malloc). */
#define QL_SLAB_RECORDS 256
/* One task in this many is timed for the task_run probe (when traced). */
#define QL_SAMPLE_EVERY 64
/* At most one tick probe per worker per this many nanoseconds. */
#define QL_TICK_PROBE_NS 1000000ull
/* Steal rounds (with a short pause between) an idle worker makes before parking. */
#define QL_SPIN_ROUNDS 16
#define QL_SPIN_PAUSES 64
/* How often shutdown looks whether the work has drained. */
#define QL_DRAIN_POLL_NS 200000ull

QL_TLS struct ql_worker *ql__self;
QL_TLS struct ql_chain *ql__chain;

/*
 * USDT probes, provider "qilin". Each has a semaphore the tracer increments
 * when it attaches, so an untraced process pays one load and a
 * never-taken branch. Names and arguments are documented in docs/probes.md.
 */
#define QL_SEMAPHORE(name)                                                                \
	__extension__ unsigned short qilin_##name##_semaphore __attribute__((unused))     \
	__attribute__((section(".probes")))
QL_SEMAPHORE(worker_park);
QL_SEMAPHORE(worker_unpark);
QL_SEMAPHORE(tick);
QL_SEMAPHORE(task_spawn);
QL_SEMAPHORE(task_run);
#define QL_TRACED(name) __builtin_expect(qilin_##name##_semaphore != 0, 0)

/* Counters: written by the owner only, read anywhere (see ql__counter_add). */
#define WST_ADD(w, f, n) ql__counter_add(&(w)->st.f, (n))

uint64_t ql_now(void)
{
	return ql__now_ns();
}

int ql_worker_id(void)
{
	return ql__self ? (int)ql__self->id : -EPERM;
}


/* ------------------------------------------------------------ task records */

/* Where a sampled job keeps its time: in its kind's own record. Traced paths only. */
static uint64_t *job_t_ready(struct ql_job *t)
{
	switch (t->kind) {
	case QL_JOB_FN:
		return &((struct ql_fn_job *)t)->t_ready;
	case QL_JOB_IO:
		return &((struct ql_io_job *)t)->t_ready;
	default:
		return ql__task_t_ready(t);
	}
}

static inline struct ql_job *node_task(struct ql_qnode *n)
{
	return (struct ql_job *)((char *)n - offsetof(struct ql_job, node));
}


/*
 * Task records. Each worker keeps a pool (owner only). Records are freed by
 * the worker that ran the task, often not the one that made it, so pools
 * drift: a worker that only runs fills up, one that only spawns runs dry.
 * Full pools give half their records to the executor's free stack, and
 * empty pools take the whole stack: records flow back to where they are
 * needed without malloc and free crossing threads (glibc locks an arena
 * for that). The free stack is a Treiber stack with batch push and take-all
 * by exchange, which has no ABA problem because nothing pops one node.
 * Outside threads allocate with malloc; their records then join the pools.
 */
/* Bytes of a record of each kind (pool index = enum ql_job_kind). */
static const size_t record_size[QL_JOB_KINDS] = {
	[QL_JOB_FN] = sizeof(struct ql_fn_job),
	[QL_JOB_IO] = sizeof(struct ql_io_job),
};

static struct ql_job *pool_refill(struct ql_worker *w, unsigned kind)
{
	struct ql_exec *ex = w->ex;
	/* Acquire: the records' links, written by the pusher, are visible. */
	struct ql_qnode *n = atomic_exchange_explicit(&ex->free_head[kind], NULL,
						      memory_order_acquire);

	if (!n)
		return NULL;
	/* Relaxed: only a bound for pool sizes, never a correctness input. */
	uint64_t got = atomic_exchange_explicit(&ex->free_count[kind], 0, memory_order_relaxed);
	w->pool[kind] = node_task(n);
	w->npool[kind] = got > QL_POOL_MAX ? QL_POOL_MAX : (unsigned)got;
	return w->pool[kind];
}

/* Record size rounded for alignment within a slab. */
static size_t slab_stride(unsigned kind)
{
	return (record_size[kind] + 15) & ~(size_t)15;
}

/*
 * A new slab of QL_SLAB_RECORDS records: one malloc instead of 256. Slab
 * records are never freed one by one; they circulate through the pools and
 * the free stacks and go with their slab when the executor is destroyed. So
 * an executor keeps the memory of the most tasks it ever had queued at once
 * (as Go keeps its goroutine structures), at 48 bytes per stackless task.
 */
static struct ql_job *slab_alloc(struct ql_worker *w, unsigned kind)
{
	size_t stride = slab_stride(kind);
	struct ql_slab *sl = malloc(sizeof(*sl) + QL_SLAB_RECORDS * stride);

	if (!sl)
		return NULL;
	sl->next = w->slabs;
	w->slabs = sl;
	for (unsigned i = QL_SLAB_RECORDS - 1; i > 0; i--) {
		struct ql_job *t = (struct ql_job *)(sl->data + i * stride);

		t->slab = 1;
		t->kind = (uint8_t)kind;
		t->node.next = w->pool[kind] ? &w->pool[kind]->node : NULL;
		w->pool[kind] = t;
	}
	w->npool[kind] += QL_SLAB_RECORDS - 1;
	struct ql_job *t = (struct ql_job *)sl->data;
	t->slab = 1;
	return t;
}

static struct ql_job *task_alloc(struct ql_worker *w, unsigned kind)
{
	struct ql_job *t;

	if (w && (w->pool[kind] || pool_refill(w, kind))) {
		t = w->pool[kind];
		w->pool[kind] = t->node.next ? node_task(t->node.next) : NULL;
		/*
		 * Records often come back from another core's cache; fetch the
		 * next one now (for writing) so that the next allocation's read
		 * of its link does not stall.
		 */
		if (w->pool[kind])
			__builtin_prefetch(w->pool[kind], 1, 3);
		if (w->npool[kind])
			w->npool[kind]--;
	} else if (w) {
		t = slab_alloc(w, kind);
		if (!t)
			return NULL;
	} else {
		/* Outside threads own no pool: a record of their own, freed alone. */
		t = malloc(record_size[kind]);
		if (!t)
			return NULL;
		t->slab = 0;
	}
	t->kind = (uint8_t)kind;
	return t;
}

/* Give a record's memory back, unless it belongs to a slab. */
static void record_release(struct ql_job *t)
{
	if (!t->slab)
		free(t);
}

/* Give half of a full pool to the executor's free stack. */
static void pool_spill(struct ql_worker *w, unsigned kind)
{
	struct ql_exec *ex = w->ex;
	struct ql_job *first = w->pool[kind], *last = first;
	unsigned n = 1;

	while (n < QL_POOL_MAX / 2 && last->node.next) {
		last = node_task(last->node.next);
		n++;
	}
	w->pool[kind] = last->node.next ? node_task(last->node.next) : NULL;
	w->npool[kind] -= n;
	struct ql_qnode *head = atomic_load_explicit(&ex->free_head[kind], memory_order_relaxed);
	do {
		last->node.next = head;
		/* Release: the chain's links are visible to whoever takes it. */
	} while (!atomic_compare_exchange_weak_explicit(&ex->free_head[kind], &head, &first->node,
							memory_order_release, memory_order_relaxed));
	atomic_fetch_add_explicit(&ex->free_count[kind], n, memory_order_relaxed);
}

static void task_free(struct ql_worker *w, struct ql_job *t)
{
	unsigned kind = t->kind;

	if (!w || (!t->slab && w->npool[kind] >= QL_POOL_MAX / 2)) {
		/* A malloc'ed record in a pool that has plenty: let it go. */
		record_release(t);
		return;
	}
	t->node.next = w->pool[kind] ? &w->pool[kind]->node : NULL;
	w->pool[kind] = t;
	if (++w->npool[kind] >= QL_POOL_MAX)
		pool_spill(w, kind);
}

static void free_chain(struct ql_qnode *n)
{
	while (n) {
		struct ql_qnode *next = n->next;

		record_release(node_task(n));
		n = next;
	}
}

static void pool_drain(struct ql_worker *w)
{
	for (unsigned k = 0; k < QL_JOB_KINDS; k++) {
		free_chain(w->pool[k] ? &w->pool[k]->node : NULL);
		w->pool[k] = NULL;
		w->npool[k] = 0;
	}
}

/* ------------------------------------------------------------ queues */

/* Put a continuation where it runs next; the previous one waits its turn. */
static void make_ready(struct ql_worker *w, struct ql_job *t)
{
	struct ql_job *prev = w->lifo;

	w->lifo = t;
	if (!prev)
		return;
	prev->node.next = NULL;
	if (w->ready_tail)
		w->ready_tail->node.next = &prev->node;
	else
		w->ready_head = prev;
	w->ready_tail = prev;
	w->nready++;
}

void ql__make_ready(struct ql_worker *w, struct ql_job *t)
{
	make_ready(w, t);
}

static struct ql_job *ready_pop(struct ql_worker *w)
{
	struct ql_job *t = w->ready_head;

	if (!t)
		return NULL;
	if (t->node.next) {
		w->ready_head = node_task(t->node.next);
	} else {
		w->ready_head = NULL;
		w->ready_tail = NULL;
	}
	w->nready--;
	return t;
}

/*
 * Batches. Tasks leave a deque for the global queue, and come back from it,
 * as arrays of pointers (struct ql_batch), not as chains of task records: a
 * spill copies 128 pointers and a refill copies them back, so the records
 * themselves are touched only when they are spawned and when they run. With
 * a million tasks queued (far more than any cache holds) every walk over
 * records would be a cache miss per task.
 */
static struct ql_batch *batch_of(struct ql_qnode *n)
{
	return (struct ql_batch *)((char *)n - offsetof(struct ql_batch, node));
}

/*
 * The global queue holds batches: its own counter counts nodes (batches),
 * which is exact for "is it empty"; global_tasks counts the tasks in them
 * for the statistics (relaxed: a gauge).
 */
static void global_push(struct ql_exec *ex, struct ql_batch *b)
{
	atomic_fetch_add_explicit(&ex->global_tasks, b->n - b->pos, memory_order_relaxed);
	ql__global_push_batch(&ex->global, &b->node, &b->node, 1);
}

/* local_push's deque was full: move its older half to the global queue first. */
static __attribute__((noinline)) int local_push_spill(struct ql_worker *w, struct ql_job *t)
{
	struct ql_batch *b;

	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->pos = 0;
	b->n = ql__deque_pop_half_local(&w->dq, b->items, QL_BATCH);
	if (b->n)
		global_push(w->ex, b);
	else
		free(b);
	if (ql__deque_push_local(&w->dq, t) == 0)
		return 0;
	/* Thieves emptied nothing and the spill took nothing: cannot happen. */
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->pos = 0;
	b->n = 1;
	b->items[0] = t;
	global_push(w->ex, b);
	return 0;
}

/*
 * Queue a task on the calling worker's deque. A full deque moves its older
 * half to the global queue first (Go's runqputslow). Returns 0 or -ENOMEM
 * (no memory for the batch: the task is not queued).
 */
static inline int local_push(struct ql_worker *w, struct ql_job *t)
{
	if (__builtin_expect(ql__deque_push_inline(&w->dq, t) == 0, 1))
		return 0;
	return local_push_spill(w, t);
}

/*
 * The backlog: what a worker took in bulk and has not yet moved into its
 * deque: batches taken from the global queue (FIFO) and the rest of a chain
 * taken from the inbox. Owner only. It feeds the deque half a deque at a
 * time (at every tick, up to three quarters full), where thieves can reach
 * it.
 */
static void backlog_refill(struct ql_worker *w)
{
	unsigned len = ql__deque_len(&w->dq);
	uint64_t moved = 0;

	while (len + moved < QL_REFILL && w->ib_rest) {
		struct ql_qnode *n = w->ib_rest, *next = n->next;

		/*
		 * `next` is read before the push: once in the deque the task can
		 * be stolen, run and its record reused by another worker at once.
		 * The library's own jobs were sent to this worker for its ring:
		 * they go to the ready list, which nobody steals from.
		 */
		if (node_task(n)->sys) {
			w->ib_rest = next;
			ql__ready_append(w, node_task(n));
			moved++;
			continue;
		}
		if (ql__deque_push_local(&w->dq, node_task(n)) != 0)
			break;
		w->ib_rest = next;
		moved++;
	}
	while (len + moved < QL_REFILL && w->bl_head) {
		struct ql_batch *b = w->bl_head;

		while (b->pos < b->n && len + moved < QL_REFILL) {
			if (ql__deque_push_local(&w->dq, b->items[b->pos]) != 0)
				goto out;
			b->pos++;
			moved++;
		}
		if (b->pos == b->n) {
			w->bl_head = b->node.next ? batch_of(b->node.next) : NULL;
			if (!w->bl_head)
				w->bl_tail = NULL;
			free(b);
		}
	}
out:
	/* Relaxed store: ql_exec_stats reads it from other threads. */
	__atomic_store_n(&w->nbl, w->nbl >= moved ? w->nbl - moved : 0, __ATOMIC_RELAXED);
}

/*
 * The first backlog task, straight from the batch (or inbox chain), without
 * a trip through the deque: no barrier per task. Used while the tick's
 * refill keeps the deque stocked for thieves.
 */
static struct ql_job *backlog_direct(struct ql_worker *w)
{
	struct ql_job *t;

	if (w->ib_rest) {
		struct ql_qnode *n = w->ib_rest;

		w->ib_rest = n->next;
		t = node_task(n);
	} else if (w->bl_head) {
		struct ql_batch *b = w->bl_head;

		t = b->items[b->pos++];
		if (b->pos == b->n) {
			w->bl_head = b->node.next ? batch_of(b->node.next) : NULL;
			if (!w->bl_head)
				w->bl_tail = NULL;
			free(b);
		}
	} else {
		return NULL;
	}
	__atomic_store_n(&w->nbl, w->nbl ? w->nbl - 1 : 0, __ATOMIC_RELAXED);
	return t;
}

/*
 * After a bulk take: stock the deque for thieves, and run the next backlog
 * task directly (not through the deque).
 */
static struct ql_job *backlog_take(struct ql_worker *w)
{
	struct ql_job *t;

	backlog_refill(w);
	/* A take small enough to fit went whole into the deque: pop it there. */
	if (!(t = backlog_direct(w)))
		t = ql__deque_pop_local(&w->dq);
	return t;
}

/* Take the whole global queue into the backlog; returns a task or NULL. */
static struct ql_job *global_take(struct ql_worker *w)
{
	unsigned count = 0;
	struct ql_qnode *n = ql__global_take(&w->ex->global, &count);
	struct ql_qnode *last = n;

	if (!n)
		return NULL;
	/*
	 * Keep a fair share, as Go's globrunqget does: the batches divided by
	 * the workers, at least one. The rest goes back in one push, for the
	 * other workers (its order among newer batches is approximate).
	 */
	unsigned nb = 1, keep;
	for (struct ql_qnode *x = n; x->next; x = x->next)
		nb++; /* one step per batch of up to 128 tasks */
	keep = nb / w->ex->nworkers;
	if (keep == 0)
		keep = 1;
	count = batch_of(last)->n - batch_of(last)->pos;
	for (unsigned i = 1; i < keep; i++) {
		last = last->next;
		count += batch_of(last)->n - batch_of(last)->pos;
	}
	if (last->next) {
		struct ql_qnode *rest = last->next, *rest_last = rest;

		while (rest_last->next)
			rest_last = rest_last->next;
		last->next = NULL;
		ql__global_push_batch(&w->ex->global, rest, rest_last, nb - keep);
	}
	atomic_fetch_sub_explicit(&w->ex->global_tasks, count, memory_order_relaxed);
	if (w->bl_tail)
		w->bl_tail->node.next = n;
	else
		w->bl_head = batch_of(n);
	w->bl_tail = batch_of(last);
	__atomic_store_n(&w->nbl, w->nbl + count, __ATOMIC_RELAXED);
	return backlog_take(w);
}

/* Take the whole inbox: the first part into the deque, the rest kept aside. */
static struct ql_job *inbox_take(struct ql_worker *w)
{
	struct ql_qnode *n = ql__inbox_take_all_local(&w->inbox);

	if (!n)
		return NULL;
	if (w->ib_rest) {
		/* Older leftovers first: append the new chain after them. */
		struct ql_qnode *last = w->ib_rest;

		while (last->next)
			last = last->next;
		last->next = n;
	} else {
		w->ib_rest = n;
	}
	return backlog_take(w);
}

/* Steal half of a random other worker's deque. Returns a task or NULL. */
static struct ql_job *steal(struct ql_worker *w)
{
	struct ql_exec *ex = w->ex;
	unsigned n = ex->nworkers, start;

	if (n < 2)
		return NULL;
	/* xorshift32: a cheap, per-worker random start so thieves spread out. */
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 17;
	w->rng ^= w->rng << 5;
	start = w->rng % n;
	for (unsigned i = 0; i < n; i++) {
		struct ql_worker *v = ex->workers[(start + i) % n];
		unsigned got;

		if (v == w)
			continue;
		got = ql__deque_steal_half(&v->dq, &w->dq);
		if (got) {
			WST_ADD(w, stolen, got);
			return ql__deque_pop_local(&w->dq);
		}
	}
	return NULL;
}

/* The next task to run, or NULL. `fair` picks continuations before queued tasks. */
static struct ql_job *next_task(struct ql_worker *w, int fair)
{
	struct ql_job *t;

	if (w->st.ticks % QL_GLOBAL_EVERY == 0 && w->lifo_streak == 0 && ql__global_len(&w->ex->global)) {
		/* Every so often the global queue goes first, so it cannot starve. */
		t = global_take(w);
		if (t)
			return t;
	}
	if (w->lifo && w->lifo_streak < QL_LIFO_MAX) {
		t = w->lifo;
		w->lifo = NULL;
		w->lifo_streak++;
		return t;
	}
	if (fair && (t = ready_pop(w)))
		return t;
	/* Bulk work first, and without deque traffic (see backlog_direct). */
	if ((w->ib_rest || w->bl_head) && (t = backlog_direct(w)))
		return t;
	if ((t = ql__deque_pop_local(&w->dq)))
		return t;
	if ((t = inbox_take(w)))
		return t;
	if (!fair && (t = ready_pop(w)))
		return t;
	if (w->lifo) {
		/* Over its streak but nothing else waits: run it anyway. */
		t = w->lifo;
		w->lifo = NULL;
		return t;
	}
	if ((t = ready_pop(w)))
		return t;
	return global_take(w);
}

/* ------------------------------------------------------------ waking */

/*
 * Wake w if it is parked. `from` is the calling worker when it is at the end
 * of its tick, about to submit: then the wake-up is an IORING_OP_MSG_RING
 * riding in that batch, with no system call of its own. Anywhere else (an
 * outside thread, or a task in the middle of a long run) it is an eventfd
 * write, which reaches the worker at once.
 */
static void wake(struct ql_worker *w, struct ql_worker *from)
{
	/*
	 * seq_cst load, then exchange: pairs with the worker's seq_cst store of
	 * parked = 1 before its last look at its queues (see the essay). The
	 * exchange makes exactly one waker responsible for each park.
	 */
	if (!atomic_load_explicit(&w->parked, memory_order_seq_cst))
		return;
	if (!atomic_exchange_explicit(&w->parked, 0, memory_order_seq_cst))
		return;
	/*
	 * The parked count goes down with the flag, here, not when w gets to
	 * run: a vCPU can take tens of microseconds to wake, and meanwhile
	 * every spawn elsewhere would read the count as "someone to wake" and
	 * walk the workers (wake_thief). Relaxed: a hint (see wake_thief).
	 */
	atomic_fetch_sub_explicit(&w->ex->nparked, 1, memory_order_relaxed);
	if (from && from != w)
		ql__ring_wake_from(&from->ring, &w->ring);
	else
		ql__ring_wake(&w->ring);
}

/* A worker with surplus work wakes one parked worker to steal it. */
static void wake_thief(struct ql_worker *w, struct ql_worker *from)
{
	struct ql_exec *ex = w->ex;

	/* Relaxed: a hint; a wrong guess costs one look, never a lost task. */
	if (!atomic_load_explicit(&ex->nparked, memory_order_relaxed))
		return;
	for (unsigned i = 1, j = w->id; i < ex->nworkers; i++) {
		struct ql_worker *v;

		if (++j == ex->nworkers)
			j = 0;
		v = ex->workers[j];
		if (atomic_load_explicit(&v->parked, memory_order_relaxed)) {
			wake(v, from);
			return;
		}
	}
}

/* ------------------------------------------------------------ running */

/*
 * Inlined into the worker loop on purpose: a stackful task comes back to the
 * scheduler by a context switch, after which the return-stack predictor
 * holds the task's return addresses, and each function return on the way
 * back to the loop is mispredicted. One level less saved about 10 ns per
 * spawn+join (bench/task_bench -s spawn -w 1 --batch 16).
 */
static inline __attribute__((always_inline)) void run_task(struct ql_worker *w, struct ql_job *t)
{
	if (QL_TRACED(task_run) && t->sampled) {
		uint64_t delay = ql_now() - *job_t_ready(t);

		/* Once: a stackful task resumed later was not spawned then. */
		t->sampled = 0;

		STAP_PROBE3(qilin, task_run, t, w->id, delay);
	}
	if (t->kind == QL_JOB_GO) {
		struct ql_task *g = (struct ql_task *)t;
		struct ql_ctx *c = ql__go_enter(w, g);

		/* Switched from here: the only return after it is the switch's own. */
		ql__go_switch(w, g, c);
		/* A stackful task counts as run once, when it ends. */
		if (!ql__go_back(w))
			return;
	} else {
		w->cur_job = t;
		if (t->kind == QL_JOB_IO) {
			struct ql_io_job *io = (struct ql_io_job *)t;

			io->cb(io->cbarg, (ssize_t)io->res);
		} else {
			t->fn(t->arg);
		}
		/* Its defer chain, if it made one (ql_defer from a stackless task). */
		if (__builtin_expect(w->fn_chain.n != 0 || w->fn_chain.chunk != NULL, 0))
			ql__chain_run(&w->fn_chain);
		w->cur_job = NULL;
		task_free(w, t);
	}
	/*
	 * Release: the task's effects happen before shutdown, reading `run`
	 * (its drain test), can see the task ended. Owner-only writer.
	 */
	__atomic_store_n(&w->st.run, w->st.run + 1, __ATOMIC_RELEASE);
}

static void maybe_probe_tick(struct ql_worker *w)
{
	uint64_t now;

	if (!QL_TRACED(tick))
		return;
	now = ql_now();
	if (now < w->next_sample_ns)
		return;
	w->next_sample_ns = now + QL_TICK_PROBE_NS;
	STAP_PROBE4(qilin, tick, w->id,
		    ql__deque_len(&w->dq) + w->nbl + w->nready + (w->lifo != NULL),
		    ql__ring_pending(&w->ring), w->ring.inflight);
}

/*
 * While a task runs, bring in the record of the one likely to run after it:
 * the next in the backlog, or else at the bottom of the deque. A queue of
 * tasks that were spawned on another worker (stolen, or taken from the
 * global queue) would otherwise miss on each record in turn, a cross-core
 * transfer every time, one after the other; prefetched, the next miss
 * overlaps the current task. For writing: running a stackful task writes
 * its record's first line (the worker, the saved context, the state at its
 * end), and its first frames go into the line just below the record.
 * A wrong guess costs two prefetches; the address may even be stale (a
 * thief took that task and it ended), which a prefetch never faults on.
 * Only while stackful tasks run: a stream of callbacks and continuations
 * (records from a warm slab, no stack) lost 3% to it (bench enop).
 */
static inline void prefetch_next(struct ql_worker *w)
{
	const char *p;

	if (w->bl_head) {
		struct ql_batch *b = w->bl_head;

		p = b->pos < b->n ? b->items[b->pos] : NULL;
	} else {
		p = ql__deque_peek_local(&w->dq);
	}
	if (!p)
		return;
	ql__prefetch_w(p);
	ql__prefetch_w(p - 64);
}

/* One tick's tasks. Returns how many ran. */
static unsigned run_tick(struct ql_worker *w)
{
	unsigned ran = 0;

	w->lifo_streak = 0;
	/* Keep the backlog where thieves can see it: in the deque. */
	if (w->bl_head || w->ib_rest)
		backlog_refill(w);
	while (ran < QL_TICK_BUDGET) {
		/*
		 * Alternate: continuations first on even picks, queued tasks
		 * on odd; right after a yield, queued tasks (the yielder went
		 * to the ready list and must come after them).
		 */
		struct ql_job *t = next_task(w, !(ran & 1) && !w->yielded);

		w->yielded = 0;

		if (!t)
			break;
		if (t->kind == QL_JOB_GO)
			prefetch_next(w);
		run_task(w, t);
		ran++;
	}
	return ran;
}

/* Anything this worker could run without stealing? */
static int has_work(struct ql_worker *w)
{
	/* seq_cst loads: the second half of the parking hand-shake. */
	return w->lifo || w->ready_head || w->bl_head || w->ib_rest || ql__deque_len(&w->dq) ||
	       !ql__inbox_empty(&w->inbox) || ql__global_len(&w->ex->global);
}

static void park(struct ql_worker *w)
{
	struct ql_exec *ex = w->ex;
	int woken;

	/* seq_cst: ordered before the looks below (the hand-shake's first half). */
	atomic_store_explicit(&w->parked, 1, memory_order_seq_cst);
	atomic_fetch_add_explicit(&ex->nparked, 1, memory_order_relaxed);
	if (has_work(w) || ql__exec_state(ex) == QL_EXEC_STOPPING) {
		/*
		 * Take the flag back. A waker that cleared it first also took
		 * the count down (see wake), and its wake-up stays pending in
		 * the ring: the next park returns at once, harmlessly.
		 */
		if (atomic_exchange_explicit(&w->parked, 0, memory_order_seq_cst))
			atomic_fetch_sub_explicit(&ex->nparked, 1, memory_order_relaxed);
		return;
	}
	WST_ADD(w, parks, 1);
	/*
	 * The gauges as they will stay while it sleeps, whatever the tick
	 * sampling skipped: the enter below submits what is pending, so that
	 * counts as in flight.
	 */
	if (QL_TRACED(tick))
		STAP_PROBE4(qilin, tick, w->id,
			    ql__deque_len(&w->dq) + w->nbl + w->nready + (w->lifo != NULL), 0,
			    w->ring.inflight + ql__ring_pending(&w->ring));
	if (QL_TRACED(worker_park))
		STAP_PROBE1(qilin, worker_park, w->id);
	/* Blocks until a CQE: an I/O completion or a wake-up. */
	ql__ring_run(&w->ring, 1, 0);
	/* Whoever clears the flag first: 0 here means a waker did (and took the count down). */
	woken = !atomic_exchange_explicit(&w->parked, 0, memory_order_seq_cst);
	if (woken)
		WST_ADD(w, wakeups, 1);
	else
		atomic_fetch_sub_explicit(&ex->nparked, 1, memory_order_relaxed);
	if (QL_TRACED(worker_unpark))
		STAP_PROBE2(qilin, worker_unpark, w->id, woken);
}

/* ------------------------------------------------------------ worker thread */

static void pin(struct ql_worker *w)
{
	cpu_set_t set;

	if (w->cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(w->cpu, &set);
	/* Best effort: a cpuset that changed under us is not fatal. */
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Stop: cancel the ring's I/O, run the continuations, drop the queued tasks. */
static void worker_stop(struct ql_worker *w)
{
	struct ql_job *t;
	unsigned long dropped = 0;

	/*
	 * ql__ring_exit cancels what is in flight and dispatches every final
	 * CQE: the continuations land in the LIFO slot and ready list, and run
	 * below with their results (-ECANCELED for the cancelled ones).
	 */
	ql__ring_exit(&w->ring, 0);
	for (;;) {
		if ((t = w->lifo) || (t = ready_pop(w))) {
			if (t == w->lifo)
				w->lifo = NULL;
			run_task(w, t);
			continue;
		}
		t = ql__deque_pop_local(&w->dq);
		if (!t && !(t = backlog_direct(w)) && !(t = inbox_take(w)) && !(t = global_take(w)))
			break;
		/*
		 * Stackful tasks run on: their calls now fail (-ESHUTDOWN) and
		 * they end through their defer chains. So do the library's
		 * own jobs (they hold references). Plain stackless ones are
		 * dropped.
		 */
		if (t->kind == QL_JOB_GO || t->sys) {
			run_task(w, t);
			continue;
		}
		task_free(w, t);
		dropped++;
	}
	WST_ADD(w, dropped, dropped);
}

/* A stackless job panicked and its chain ran: finish it as run_task would. */
static void panic_landed(struct ql_worker *w)
{
	struct ql_job *t = w->cur_job;

	ql__chain_reset(&w->fn_chain);
	w->cur_job = NULL;
	if (t) {
		task_free(w, t);
		__atomic_store_n(&w->st.run, w->st.run + 1, __ATOMIC_RELEASE);
	}
}

static void *worker_main(void *arg)
{
	struct ql_worker *w = arg;
	struct ql_exec *ex = w->ex;
	struct ql_ring_opts ro = { .sz = sizeof(ro), .sq_entries = ex->ring_size };
	int ret;

	ql__self = w;
	ql__chain = &w->fn_chain;
	ql__task_worker_init(w);
	pin(w);
	/* The ring is made here: DEFER_TASKRUN binds it to the creating thread. */
	ret = ql__ring_init(&w->ring, &ro);
	/*
	 * Stackful tasks keep an operation in flight for as long as they are
	 * parked (an idle connection: for hours), so a bound tied to the CQ
	 * size would stall a server at a few thousand connections. With
	 * IORING_FEAT_NODROP (Linux 5.5) the kernel keeps completions that do
	 * not fit in the CQ and the ring layer flushes and counts them, so no
	 * completion is lost: the bound goes. Without it, it stays.
	 */
	if (ret == 0 && (w->ring.uring.features & IORING_FEAT_NODROP))
		w->ring.flags |= QL_RING_O_UNBOUNDED;
	pthread_mutex_lock(&ex->start_lock);
	w->init_err = ret;
	ex->nstarted++;
	if (ret == 0)
		ex->nrunning++;
	pthread_cond_broadcast(&ex->start_cond);
	pthread_mutex_unlock(&ex->start_lock);
	if (ret < 0) {
		ql__task_worker_fini(w);
		return NULL;
	}

	/*
	 * A stackless task that panics lands here (after its chain ran): it
	 * ended, and the loop goes on. Nothing below is kept in registers
	 * across the jump but ex and w, which never change.
	 */
	jmp_buf jb;
	if (setjmp(jb))
		panic_landed(w);
	w->panic_jb = &jb;
	while (ql__exec_state(ex) != QL_EXEC_STOPPING) {
		unsigned ran;
		int r;

		WST_ADD(w, ticks, 1);
		ran = run_tick(w);
		/* The batch: every SQE of the tick in one enter, then every CQE. */
		r = ql__ring_run(&w->ring, 0, 0);
		(void)r;
		maybe_probe_tick(w);
		if (ql__deque_len(&w->dq) > 1 || w->bl_head)
			wake_thief(w, w); /* the msg_ring goes out with the next batch */
		if (ran || w->lifo || w->ready_head)
			continue;
		/*
		 * Nothing here: look around a few times before parking (Go's
		 * spinning M). A victim between two refills, or a lost race,
		 * would otherwise cost a park and a wake-up a tick later.
		 */
		struct ql_job *t = NULL;
		for (unsigned spin = 0; spin < QL_SPIN_ROUNDS && !t; spin++) {
			t = steal(w);
			if (!t && ql__global_len(&ex->global))
				t = global_take(w);
			if (!t && !ql__inbox_empty(&w->inbox))
				t = inbox_take(w);
			for (unsigned i = 0; !t && i < QL_SPIN_PAUSES; i++)
				ql__cpu_relax();
		}
		if (t) {
			/* It came out of a deque with room for it: this push cannot fail. */
			if (local_push(w, t) < 0)
				run_task(w, t);
			continue;
		}
		if (!has_work(w))
			park(w);
	}
	/*
	 * Out of the loop: this worker wakes nobody any more. Its ring (and the
	 * eventfd other threads write to wake it) may go only when no one else
	 * can still be waking it: every worker out of its loop, and shutdown's
	 * own wake-ups sent.
	 */
	pthread_mutex_lock(&ex->start_lock);
	ex->nstopped++;
	pthread_cond_broadcast(&ex->start_cond);
	while (ex->nstopped < ex->nrunning || !ex->wakes_done)
		pthread_cond_wait(&ex->start_cond, &ex->start_lock);
	pthread_mutex_unlock(&ex->start_lock);
	/* Shutdown runs tasks too: panics there land here. */
	jmp_buf jb_stop;
	if (setjmp(jb_stop))
		panic_landed(w);
	w->panic_jb = &jb_stop;
	worker_stop(w);
	w->panic_jb = NULL;
	ql__task_worker_fini(w);
	pool_drain(w);
	return NULL;
}

/* ------------------------------------------------------------ create, shutdown */

static void exec_free(struct ql_exec *ex)
{
	if (!ex)
		return;
	/* Stackful tasks spawned and never ended (each counted where it happened). */
	int64_t live = (int64_t)atomic_load_explicit(&ex->tasks_outside, memory_order_relaxed);
	for (unsigned i = 0; ex->workers && i < ex->nworkers; i++)
		if (ex->workers[i])
			live += (int64_t)ex->workers[i]->task_seq - (int64_t)ex->workers[i]->tasks_ended;
	/* Malloc'ed records idle in the free stacks (slab records go below). */
	for (unsigned k = 0; k < QL_JOB_KINDS; k++)
		free_chain(atomic_exchange_explicit(&ex->free_head[k], NULL, memory_order_acquire));
	for (unsigned i = 0; ex->workers && i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];

		if (!w)
			continue;
		ql__task_pools_free(w);
		/* Every slab record is idle once the workers are gone. */
		while (w->slabs) {
			struct ql_slab *sl = w->slabs;

			w->slabs = sl->next;
			free(sl);
		}
		ql__deque_fini(&w->dq);
		free(w);
	}
	if (live)
		fprintf(stderr,
			"qilin: %lld stackful task(s) never ended (parked for good at shutdown); "
			"their stacks stay mapped\n",
			(long long)live);
	free(ex->workers);
	pthread_mutex_destroy(&ex->start_lock);
	pthread_cond_destroy(&ex->start_cond);
	free(ex);
}

/* Stop every started worker and join it. */
static void exec_stop_join(struct ql_exec *ex)
{
	atomic_store_explicit(&ex->state, QL_EXEC_STOPPING, memory_order_seq_cst);
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];

		if (w && w->started && w->init_err == 0) {
			/* Unconditional: a worker between its checks must not block. */
			atomic_store_explicit(&w->parked, 0, memory_order_seq_cst);
			ql__ring_wake(&w->ring);
		}
	}
	/* Workers tear their rings down only after this (see worker_main). */
	pthread_mutex_lock(&ex->start_lock);
	ex->wakes_done = 1;
	pthread_cond_broadcast(&ex->start_cond);
	pthread_mutex_unlock(&ex->start_lock);
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];

		if (w && w->started)
			pthread_join(w->thread, NULL);
	}
	/* Tasks still in the global queue were never run: drop them. */
	unsigned long count = 0;
	struct ql_qnode *n = ql__global_take(&ex->global, NULL);
	while (n) {
		struct ql_qnode *next = n->next;
		struct ql_batch *b = batch_of(n);

		/* Count tasks, not batches: the queue's own count is of nodes. */
		for (unsigned i = b->pos; i < b->n; i++, count++)
			record_release(b->items[i]);
		free(b);
		n = next;
	}
	atomic_fetch_add_explicit(&ex->dropped_global, count, memory_order_relaxed);
	atomic_fetch_sub_explicit(&ex->global_tasks, count, memory_order_relaxed);
}

int ql_exec_create(const struct ql_exec_opts *opts, struct ql_exec **out)
{
	struct ql_exec_opts o = { .sz = sizeof(o) };
	struct ql_exec *ex;
	cpu_set_t set;
	int cpus[CPU_SETSIZE], ncpu = 0, ret = 0;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (opts) {
		if (opts->sz < sizeof(size_t) || opts->sz > sizeof(o))
			return -EINVAL;
		memcpy(&o, opts, opts->sz);
	}
	if (o.flags & ~QL_EXEC_NO_PIN)
		return -EINVAL;
	/* The CQ is 4 x ring_size, and the kernel allows at most 65536 CQ entries. */
	if (o.workers > 1024 || o.ring_size > 16384)
		return -EINVAL;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpu++] = c;
	}
	if (ncpu == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		for (int c = 0; c < (n > 0 ? n : 1) && c < CPU_SETSIZE; c++)
			cpus[ncpu++] = c;
	}

	ql__task_global_init();
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	ex->nworkers = o.workers ? o.workers : (unsigned)ncpu;
	ex->ring_size = o.ring_size;
	ex->flags = o.flags;
	pthread_mutex_init(&ex->start_lock, NULL);
	pthread_cond_init(&ex->start_cond, NULL);
	ql__global_init(&ex->global);
	ex->workers = calloc(ex->nworkers, sizeof(*ex->workers));
	if (!ex->workers) {
		exec_free(ex);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = aligned_alloc(QL_CACHELINE,
						    (sizeof(*w) + QL_CACHELINE - 1) &
							    ~(size_t)(QL_CACHELINE - 1));

		if (!w) {
			exec_free(ex);
			return -ENOMEM;
		}
		memset(w, 0, sizeof(*w));
		ex->workers[i] = w;
		w->ex = ex;
		w->id = i;
		w->cpu = (o.flags & QL_EXEC_NO_PIN) ? -1 : cpus[i % (unsigned)ncpu];
		w->rng = 0x9e3779b9u * (i + 1);
		ql__inbox_init(&w->inbox);
		ret = ql__deque_init(&w->dq, QL_DEQUE_SIZE);
		if (ret < 0) {
			exec_free(ex);
			return ret;
		}
	}
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];

		ret = -pthread_create(&w->thread, NULL, worker_main, w);
		if (ret < 0)
			break;
		w->started = 1;
	}
	/* Wait for every started worker to report its ring. */
	pthread_mutex_lock(&ex->start_lock);
	unsigned started = 0;
	for (unsigned i = 0; i < ex->nworkers; i++)
		started += ex->workers[i]->started;
	while (ex->nstarted < started)
		pthread_cond_wait(&ex->start_cond, &ex->start_lock);
	pthread_mutex_unlock(&ex->start_lock);
	for (unsigned i = 0; ret == 0 && i < ex->nworkers; i++)
		if (ex->workers[i]->init_err < 0)
			ret = ex->workers[i]->init_err;
	if (ret < 0) {
		exec_stop_join(ex);
		exec_free(ex);
		return ret;
	}
	*out = ex;
	return 0;
}

/* Sum of tasks ended, then of tasks queued: equal means drained. */
static int drained(struct ql_exec *ex)
{
	uint64_t fin = 0, spawned = 0;

	for (unsigned i = 0; i < ex->nworkers; i++) {
		fin += __atomic_load_n(&ex->workers[i]->st.run, __ATOMIC_SEQ_CST);
		fin += __atomic_load_n(&ex->workers[i]->st.dropped, __ATOMIC_SEQ_CST);
	}
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];

		spawned += __atomic_load_n(&w->st.spawned, __ATOMIC_SEQ_CST);
		spawned += atomic_load_explicit(&w->spawned_remote, memory_order_seq_cst);
	}
	return fin == spawned;
}

/* Outside spawns that got past the state check but have not finished waking. */
static int outside_spawns_busy(struct ql_exec *ex)
{
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];

		/* seq_cst: pairs with the spawner's increment before its state check. */
		if (atomic_load_explicit(&w->remote_done, memory_order_seq_cst) !=
		    atomic_load_explicit(&w->spawned_remote, memory_order_seq_cst))
			return 1;
		if (atomic_load_explicit(&w->ready_remote_done, memory_order_seq_cst) !=
		    atomic_load_explicit(&w->ready_remote, memory_order_seq_cst))
			return 1;
	}
	return 0;
}

int ql_exec_shutdown(struct ql_exec *ex, uint64_t timeout_ns)
{
	int expected = QL_EXEC_RUNNING;
	uint64_t deadline;
	int ret = 0;

	if (!ex)
		return -EINVAL;
	if (ql__self && ql__self->ex == ex)
		return -EDEADLK;
	if (!atomic_compare_exchange_strong_explicit(&ex->state, &expected, QL_EXEC_CLOSING,
						     memory_order_seq_cst, memory_order_seq_cst))
		return -EALREADY;
	deadline = timeout_ns ? ql_now() + timeout_ns : UINT64_MAX;
	while (!drained(ex) || outside_spawns_busy(ex)) {
		if (ql_now() >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		struct timespec ts = { 0, (long)QL_DRAIN_POLL_NS };
		nanosleep(&ts, NULL);
	}
	/*
	 * Even after a timeout, an outside spawn that passed its state check
	 * may still be writing a worker's eventfd: it is a few instructions
	 * from done, and the eventfd must outlive it.
	 */
	while (outside_spawns_busy(ex))
		sched_yield();
	exec_stop_join(ex);
	/* Release: destroy in another thread may free once it sees this. */
	__atomic_store_n(&ex->shut, 1, __ATOMIC_RELEASE);
	return ret;
}

void ql_exec_destroy(struct ql_exec *ex)
{
	if (!ex)
		return;
	if (ql__self && ql__self->ex == ex) {
		fprintf(stderr, "qilin: ql_exec_destroy called from one of its own workers\n");
		abort();
	}
	if (!__atomic_load_n(&ex->shut, __ATOMIC_ACQUIRE) && ql__exec_state(ex) == QL_EXEC_RUNNING)
		ql_exec_shutdown(ex, 0);
	else if (!__atomic_load_n(&ex->shut, __ATOMIC_ACQUIRE)) {
		/* A shutdown is running in another thread: nothing safe to do but wait. */
		while (!__atomic_load_n(&ex->shut, __ATOMIC_ACQUIRE))
			sched_yield();
	}
	exec_free(ex);
}

int ql_exec_stats(struct ql_exec *ex, struct ql_stats *out)
{
	struct ql_worker_stats *tot;

	if (!ex || !out || out->sz < offsetof(struct ql_stats, global_depth) + sizeof(uint64_t))
		return -EINVAL;
	if (out->workers_len && !out->workers)
		return -EINVAL;
	tot = &out->total;
	memset(tot, 0, sizeof(*tot));
	out->nworkers = ex->nworkers;
	for (unsigned i = 0; i < ex->nworkers; i++) {
		struct ql_worker *w = ex->workers[i];
		struct ql_worker_stats s;
		struct ql_ring_stats rs;
		ql__counters_load(&s, &w->st, sizeof(s));
		s.spawned += atomic_load_explicit(&w->spawned_remote, memory_order_relaxed);
		ql__ring_stats(&w->ring, &rs);
		s.sqes = rs.sqes;
		s.enters = rs.enters;
		s.cqes = rs.cqes;
		s.inflight = rs.inflight;
		/* Deque, backlog, and 1 for a non-empty inbox: approximate. */
		s.runq_depth = ql__deque_len(&w->dq) + __atomic_load_n(&w->nbl, __ATOMIC_RELAXED) +
			       !ql__inbox_empty(&w->inbox);
		if (i < out->workers_len)
			out->workers[i] = s;
		for (size_t k = 0; k < sizeof(s) / sizeof(uint64_t); k++)
			((uint64_t *)tot)[k] += ((const uint64_t *)&s)[k];
	}
	tot->dropped += atomic_load_explicit(&ex->dropped_global, memory_order_relaxed);
	out->global_depth = atomic_load_explicit(&ex->global_tasks, memory_order_relaxed);
	return 0;
}

/* ------------------------------------------------------------ spawning */

/* Traced only: one spawn in QL_SAMPLE_EVERY is timed (task_run's delay) and fires task_spawn. */
static __attribute__((noinline)) void sample_spawn_traced(struct ql_worker *w, struct ql_job *t)
{
	static __thread uint32_t outside_ctr;
	uint32_t *ctr = w ? &w->sample_ctr : &outside_ctr;

	if (++*ctr % QL_SAMPLE_EVERY)
		return;
	*job_t_ready(t) = ql_now();
	t->sampled = 1;
	STAP_PROBE2(qilin, task_spawn, t, w ? (int)w->id : -1);
}

/* Untraced, a spawn pays two semaphore loads here and nothing else. */
static inline void sample_spawn(struct ql_worker *w, struct ql_job *t)
{
	t->sampled = 0;
	if (QL_TRACED(task_run) || QL_TRACED(task_spawn))
		sample_spawn_traced(w, t);
}

/*
 * A spawn from a thread that is not one of ex's workers: round-robin over the
 * workers' inboxes. The spawn is bracketed by spawned_remote (before the
 * state check) and remote_done (after the wake-up), so that shutdown, which
 * sets the state and then waits for the two to match, never frees a worker's
 * eventfd under a spawner still writing it (a Dekker pair: both seq_cst).
 * `to` picks the worker (a library job for that worker's ring), else
 * round-robin. The job is allocated only past the state check (alloc).
 */
static int spawn_outside(struct ql_exec *ex, struct ql_worker *to, struct ql_job *t,
			 void (*fn)(void *), void *arg)
{
	unsigned i = to ? to->id
			: atomic_fetch_add_explicit(&ex->rr, 1, memory_order_relaxed) % ex->nworkers;
	struct ql_worker *w = ex->workers[i];

	atomic_fetch_add_explicit(&w->spawned_remote, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&ex->state, memory_order_seq_cst) != QL_EXEC_RUNNING &&
	    !(to && atomic_load_explicit(&ex->state, memory_order_seq_cst) == QL_EXEC_CLOSING)) {
		atomic_fetch_sub_explicit(&w->spawned_remote, 1, memory_order_seq_cst);
		return -ESHUTDOWN;
	}
	if (!t) {
		t = task_alloc(NULL, QL_JOB_FN);
		if (!t) {
			atomic_fetch_sub_explicit(&w->spawned_remote, 1, memory_order_seq_cst);
			return -ENOMEM;
		}
		t->fn = fn;
		t->arg = arg;
		t->sys = to != NULL;
	}
	t->node.next = NULL;
	sample_spawn(NULL, t);
	/*
	 * If the inbox was not empty, whoever made it non-empty already made
	 * sure the worker will look (it re-checks its inbox before blocking).
	 */
	if (ql__inbox_push_mpsc(&w->inbox, &t->node))
		wake(w, NULL);
	/* Release: shutdown, seeing this, knows the wake-up is behind us. */
	atomic_fetch_add_explicit(&w->remote_done, 1, memory_order_seq_cst);
	return 0;
}

/* Queue t on the calling worker: counted, then pushed, then a thief woken. */
static inline int spawn_local(struct ql_worker *self, struct ql_job *t)
{
	t->node.next = NULL;
	sample_spawn(self, t);
	/*
	 * Counted before it is visible (release): once queued it may be stolen
	 * and finished at once, and shutdown's drain test must never see it
	 * finished but not spawned.
	 */
	__atomic_store_n(&self->st.spawned, self->st.spawned + 1, __ATOMIC_RELEASE);
	if (local_push(self, t) < 0) {
		__atomic_store_n(&self->st.spawned, self->st.spawned - 1, __ATOMIC_RELEASE);
		return -ENOMEM;
	}
	/*
	 * Idle workers could take some of this now, not after the spawner's
	 * tick (which may be long): wake one (Go's wakep). Relaxed: a hint,
	 * see wake_thief.
	 */
	if (atomic_load_explicit(&self->ex->nparked, memory_order_relaxed))
		wake_thief(self, NULL);
	return 0;
}

/* The calling worker if it belongs to ex (else the caller is "outside"). */
static inline struct ql_worker *self_of(struct ql_exec *ex)
{
	struct ql_worker *self = ql__self;

	return self && self->ex == ex ? self : NULL;
}

int ql_spawn(struct ql_exec *ex, void (*fn)(void *), void *arg)
{
	struct ql_worker *self;
	struct ql_job *t;
	int ret;

	if (!ex || !fn)
		return -EINVAL;
	self = self_of(ex);
	if (!self)
		return spawn_outside(ex, NULL, NULL, fn, arg);
	/* Tasks may still spawn while shutdown lets the running work finish. */
	if (ql__exec_state(ex) == QL_EXEC_STOPPING)
		return -ESHUTDOWN;
	t = task_alloc(self, QL_JOB_FN);
	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->sys = 0;
	ret = spawn_local(self, t);
	if (ret < 0)
		task_free(self, t);
	return ret;
}

int ql__job_spawn_local(struct ql_worker *self, struct ql_job *j)
{
	return spawn_local(self, j);
}

int ql__job_spawn(struct ql_exec *ex, struct ql_job *j)
{
	struct ql_worker *self = self_of(ex);

	if (!self)
		return spawn_outside(ex, NULL, j, NULL, NULL);
	if (ql__exec_state(ex) == QL_EXEC_STOPPING)
		return -ESHUTDOWN;
	return spawn_local(self, j);
}

int ql__run_on(struct ql_worker *w, void (*fn)(void *), void *arg)
{
	struct ql_worker *self = ql__self;
	struct ql_job *t;

	if (self != w)
		return spawn_outside(w->ex, w, NULL, fn, arg);
	t = task_alloc(self, QL_JOB_FN);
	if (!t)
		return -ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->sys = 1;
	t->sampled = 0;
	/* Counted like a spawn, queued where no thief reaches: it is for this ring. */
	__atomic_store_n(&self->st.spawned, self->st.spawned + 1, __ATOMIC_RELEASE);
	ql__ready_append(self, t);
	return 0;
}

/*
 * A parked task becomes runnable: it was counted when spawned and is not
 * counted again. It goes back to `home`, its last worker: straight into the
 * queue when the caller is that worker, otherwise through home's inbox,
 * bracketed like an outside spawn so that shutdown never frees the eventfd
 * under us (during shutdown it stays on the waking worker). Not to the
 * waker's queue (Go's choice): the wakee's stack,
 * record and pooled stacks are hot on home, and a task joining tasks that
 * were stolen would otherwise hop between workers at every wake, dragging
 * every record it spawns after it (spawn+join, 2 workers: 370 -> 170-290
 * ns/task). An idle thief may still take it from home's queue.
 */
void ql__job_ready(struct ql_exec *ex, struct ql_worker *home, struct ql_job *j)
{
	struct ql_worker *self = self_of(ex);

	j->node.next = NULL;
	/*
	 * Once shutdown has begun, home may already be past its last look at
	 * its inbox: the task stays with the worker that woke it, to end there.
	 */
	if (self && (self == home || ql__exec_state(ex) != QL_EXEC_RUNNING)) {
		if (local_push(self, j) < 0)
			ql__ready_append(self, j); /* no memory to spill: keep it close */
		else if (atomic_load_explicit(&ex->nparked, memory_order_relaxed))
			wake_thief(self, NULL);
		return;
	}
	atomic_fetch_add_explicit(&home->ready_remote, 1, memory_order_seq_cst);
	if (ql__inbox_push_mpsc(&home->inbox, &j->node))
		wake(home, NULL);
	atomic_fetch_add_explicit(&home->ready_remote_done, 1, memory_order_seq_cst);
}

/* ------------------------------------------------------------ callback I/O */

static void io_complete(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct ql_io_job *io = (struct ql_io_job *)((char *)op - offsetof(struct ql_io_job, op));
	struct ql_worker *w = (struct ql_worker *)((char *)r - offsetof(struct ql_worker, ring));

	io->res = res;
	make_ready(w, &io->task);
}

/* Start an operation record; *sqe is the SQE to prepare, or an error returns. */
static inline __attribute__((always_inline)) int io_begin(ql_io_fn fn, void *arg,
							  struct ql_io_job **out,
							  struct io_uring_sqe **sqe)
{
	struct ql_worker *w = ql__self;
	struct ql_io_job *io;

	if (!w)
		return -EPERM;
	if (!fn)
		return -EINVAL;
	if (ql__exec_state(w->ex) == QL_EXEC_STOPPING)
		return -ESHUTDOWN;
	io = (struct ql_io_job *)task_alloc(w, QL_JOB_IO);
	if (!io)
		return -ENOMEM;
	io->task.node.next = NULL;
	io->task.sampled = 0;
	io->task.sys = 0;
	io->cb = fn;
	io->cbarg = arg;
	/* Only fn and flags matter for a plain (non-stream) operation. */
	io->op.fn = io_complete;
	io->op.flags = 0;
	/* A continuation counts as a task from now until it has run. */
	__atomic_store_n(&w->st.spawned, w->st.spawned + 1, __ATOMIC_RELEASE);
	*sqe = ql__ring_sqe(&w->ring, &io->op);
	*out = io;
	return 0;
}

int ql_nop_cb(ql_io_fn fn, void *arg)
{
	struct ql_io_job *io;
	struct io_uring_sqe *sqe;
	int ret = io_begin(fn, arg, &io, &sqe);

	if (ret < 0)
		return ret;
	io_uring_prep_nop(sqe);
	return 0;
}

/* The buffer-style operations share their checks and their prep. */
static int io_buffer_op(unsigned opcode, int fd, const void *buf, size_t n, int64_t off, int flags,
			ql_io_fn fn, void *arg)
{
	struct ql_io_job *io;
	struct io_uring_sqe *sqe;
	int ret;

	ret = ql__buf_check(fd, buf, n);
	if (ret < 0)
		return ret;
	ret = io_begin(fn, arg, &io, &sqe);
	if (ret < 0)
		return ret;
	ql__buf_prep(sqe, opcode, fd, buf, n, off, flags);
	return 0;
}

int ql_read_cb(int fd, void *buf, size_t n, int64_t off, ql_io_fn fn, void *arg)
{
	return io_buffer_op(IORING_OP_READ, fd, buf, n, off, 0, fn, arg);
}

int ql_write_cb(int fd, const void *buf, size_t n, int64_t off, ql_io_fn fn, void *arg)
{
	return io_buffer_op(IORING_OP_WRITE, fd, buf, n, off, 0, fn, arg);
}

int ql_recv_cb(int fd, void *buf, size_t n, int flags, ql_io_fn fn, void *arg)
{
	return io_buffer_op(IORING_OP_RECV, fd, buf, n, 0, flags, fn, arg);
}

int ql_send_cb(int fd, const void *buf, size_t n, int flags, ql_io_fn fn, void *arg)
{
	return io_buffer_op(IORING_OP_SEND, fd, buf, n, 0, flags, fn, arg);
}

int ql_accept_cb(int fd, ql_io_fn fn, void *arg)
{
	struct ql_io_job *io;
	struct io_uring_sqe *sqe;
	int ret;

	if (fd < 0)
		return -EBADF;
	ret = io_begin(fn, arg, &io, &sqe);
	if (ret < 0)
		return ret;
	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	return 0;
}

int ql_timeout_cb(uint64_t ns, ql_io_fn fn, void *arg)
{
	struct ql_io_job *io;
	struct io_uring_sqe *sqe;
	int ret = io_begin(fn, arg, &io, &sqe);

	if (ret < 0)
		return ret;
	io->ts.tv_sec = (long long)(ns / 1000000000ull);
	io->ts.tv_nsec = (long long)(ns % 1000000000ull);
	io_uring_prep_timeout(sqe, &io->ts, 0, 0);
	return 0;
}

int ql__timer_arm(struct ql_worker *w, uint64_t abs_ns, ql_io_fn cb, void *arg, struct ql_op **op)
{
	struct ql_io_job *io;
	struct io_uring_sqe *sqe;
	int ret = io_begin(cb, arg, &io, &sqe);

	if (ret < 0)
		return ret;
	(void)w; /* io_begin uses the calling worker, which is w */
	io->task.sys = 1;
	io->ts.tv_sec = (long long)(abs_ns / 1000000000ull);
	io->ts.tv_nsec = (long long)(abs_ns % 1000000000ull);
	io_uring_prep_timeout(sqe, &io->ts, 0, IORING_TIMEOUT_ABS);
	*op = &io->op;
	return 0;
}
