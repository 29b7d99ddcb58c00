/* SPDX-License-Identifier: MIT */
/*
 * lib/internal.h - declarations shared by the executor's files. Not
 * installed, not API.
 *
 * The objects:
 *  - struct ql_task: a runnable unit. Stackless tasks (ql_spawn) and I/O
 *    continuations (ql_*_cb) are both tasks; they live in the run queues
 *    through their embedded queue node and never allocate to be queued.
 *  - struct ql_worker: one thread, one ring, one set of run queues. Fields
 *    only the owner touches come first; fields other threads write (the
 *    inbox, the parked flag, the remote spawn counter) sit on cache lines of
 *    their own.
 *  - struct ql_exec: the workers, the global overflow queue and the
 *    executor-wide state.
 */
#ifndef QILIN_LIB_INTERNAL_H
#define QILIN_LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "qilin.h"
#include "queue.h"
#include "ring.h"

enum ql_task_kind {
	QL_TASK_FN = 0, /* stackless: fn(arg) */
	QL_TASK_IO = 1, /* I/O continuation: cb(cbarg, res) */
	QL_TASK_KINDS,
};

struct ql_task {
	struct ql_qnode node; /* inbox, global and ready-list link */
	uint8_t kind;	      /* enum ql_task_kind */
	uint8_t slab;	      /* lives in a worker's slab (else malloc'ed alone) */
	void (*fn)(void *);   /* QL_TASK_FN */
	void *arg;
	uint64_t t_ready;     /* sampled for the task_run probe, else 0 */
};

/* An operation in callback form: a task that becomes runnable on its CQE. */
struct ql_io_task {
	struct ql_task task;
	struct ql_op op;	  /* the ring's completion record */
	ql_io_fn cb;
	void *cbarg;
	int64_t res;		  /* the CQE result */
	struct __kernel_timespec ts; /* ql_timeout_cb's timespec (kernel reads it) */
};

/* Up to QL_BATCH task pointers moving between a deque and the global queue. */
#define QL_BATCH_MAX 128
struct ql_batch {
	struct ql_qnode node; /* global queue and backlog link */
	unsigned pos, n;      /* items[pos..n) are still to run */
	void *items[QL_BATCH_MAX];
};

/* A block of task records allocated at once (see exec.c). */
struct ql_slab {
	struct ql_slab *next;
	_Alignas(16) char data[];
};

/* Executor states, in order. */
enum ql_exec_state {
	QL_EXEC_RUNNING = 0,  /* accepting work */
	QL_EXEC_CLOSING = 1,  /* shutdown: no new work, queued work finishes */
	QL_EXEC_STOPPING = 2, /* shutdown: workers drop what is left and exit */
};

struct ql_worker {
	/* ---- owner only (and read-mostly) ---- */
	struct ql_exec *ex;
	unsigned id;
	int cpu;		/* CPU pinned to, or -1 */
	pthread_t thread;
	struct ql_ring ring;
	struct ql_task *lifo;	/* the task made runnable last */
	unsigned lifo_streak;	/* consecutive LIFO runs this tick */
	struct ql_task *ready_head, *ready_tail; /* continuations, FIFO, not stealable */
	unsigned nready;
	struct ql_batch *bl_head, *bl_tail; /* backlog: batches from the global queue */
	struct ql_qnode *ib_rest; /* backlog: the rest of a chain taken from the inbox */
	uint64_t nbl;		/* backlog length (relaxed stores, read by stats) */
	struct ql_task *pool[QL_TASK_KINDS]; /* free task records, per kind */
	struct ql_slab *slabs;	/* slabs this worker allocated (freed at destroy) */
	unsigned npool[QL_TASK_KINDS];
	uint32_t rng;		/* xorshift state for victim choice */
	uint64_t next_sample_ns; /* tick probe: at most one per millisecond */
	uint32_t sample_ctr;	/* task probes: one task in QL_SAMPLE_EVERY */
	int init_err;		/* ring setup result, for ql_exec_create */
	int started;		/* thread created */
	/*
	 * Counters the owner writes and any thread reads (relaxed), each on
	 * its own, since ql_exec_stats may run anywhere.
	 */
	struct ql_worker_stats st; /* st.run + st.dropped: tasks ended here */

	/* The work-stealing deque: it pads its own top and bottom apart. */
	struct ql_deque dq;

	/* ---- written by other threads ---- */
	_Alignas(QL_CACHELINE) struct ql_inbox inbox;
	/* Tasks spawned onto this worker by other threads (fetch_add). */
	_Alignas(QL_CACHELINE) _Atomic uint64_t spawned_remote;
	/* Of those, the spawns that are completely done (wake-up sent). */
	_Atomic uint64_t remote_done;
	/* 1 while the worker is (about to be) blocked in its ring. */
	_Alignas(QL_CACHELINE) _Atomic int parked;
};

struct ql_exec {
	unsigned nworkers;
	unsigned ring_size;
	unsigned flags;
	struct ql_worker **workers;
	_Alignas(QL_CACHELINE) struct ql_global global;
	_Alignas(QL_CACHELINE) _Atomic unsigned rr;	/* round-robin for outside spawns */
	_Alignas(QL_CACHELINE) _Atomic int state;	/* enum ql_exec_state */
	_Atomic unsigned nparked;			/* workers parked now */
	/* Free task records shared between the workers' pools (see exec.c). */
	_Alignas(QL_CACHELINE) struct ql_qnode *_Atomic free_head[QL_TASK_KINDS];
	_Atomic uint64_t free_count[QL_TASK_KINDS];
	_Atomic uint64_t dropped_global;		/* tasks dropped from the global queue */
	_Atomic uint64_t global_tasks;			/* tasks in the global queue (gauge) */
	pthread_mutex_t start_lock;			/* start-up hand-shake */
	pthread_cond_t start_cond;
	unsigned nstarted;				/* workers that reported their ring */
	unsigned nrunning;				/* of those, with a working ring */
	unsigned nstopped;				/* workers out of their loop */
	int wakes_done;					/* shutdown's wake-ups all sent */
	int shut;					/* shutdown done (joined) */
};

/* The worker the calling thread is, or NULL. */
extern __thread struct ql_worker *ql__self;

#endif
