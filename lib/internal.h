/* SPDX-License-Identifier: MIT */
/*
 * lib/internal.h - declarations shared by the executor's files. Not
 * installed, not API.
 *
 * The objects:
 *  - struct ql_job: a runnable unit. Stackless tasks (ql_spawn) and I/O
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

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ctx.h"
#include "qilin.h"

/* Sanitizer builds: tasks tell ASan and TSan about each stack switch (task.c). */
#if defined(__SANITIZE_ADDRESS__)
#define QL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define QL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define QL_TSAN 1
#endif
#endif
#include "queue.h"
#include "ring.h"

enum ql_job_kind {
	QL_JOB_FN = 0, /* stackless: fn(arg) */
	QL_JOB_IO = 1, /* I/O continuation: cb(cbarg, res) */
	QL_JOB_KINDS,  /* kinds with pooled records (the above) */
	QL_JOB_GO = QL_JOB_KINDS, /* a stackful task (struct ql_task, lib/task.c) */
};

/*
 * The head of every queued record: 32 bytes, so that a stackful task's
 * record can keep everything its spawn, run, end and join touch in the one
 * cache line this head starts (see struct ql_task in task.c). The spawn
 * time sampled for the task_run probe lives further on, in each kind's own
 * record (ql__job_t_ready), and `sampled` says whether it was taken.
 */
struct ql_job {
	struct ql_qnode node; /* inbox, global and ready-list link */
	void (*fn)(void *);   /* QL_JOB_FN, QL_JOB_GO */
	void *arg;
	uint8_t kind;	      /* enum ql_job_kind */
	uint8_t slab;	      /* lives in a worker's slab (else malloc'ed alone) */
	uint8_t sys;	      /* the library's own job: run even when shutdown drops the rest */
	uint8_t sampled;      /* its spawn was timed for the task_run probe */
	int status;	      /* QL_JOB_GO: what ql_join reports; unused by the others */
};

_Static_assert(sizeof(struct ql_job) == 32, "struct ql_job outgrew half a cache line");

/* A stackless task's record. */
struct ql_fn_job {
	struct ql_job task;
	uint64_t t_ready; /* when sampled: the spawn's time */
};

/* An operation in callback form: a task that becomes runnable on its CQE. */
struct ql_io_job {
	struct ql_job task;
	struct ql_op op;	  /* the ring's completion record */
	ql_io_fn cb;
	void *cbarg;
	int64_t res;		  /* the CQE result */
	uint64_t t_ready;	  /* when sampled: the time it became runnable */
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

/* One deferred call. */
struct ql_defer_ent {
	void (*fn)(void *);
	void *arg;
};

/* Entries kept inside every chain, and per chunk beyond them. */
#define QL_CHAIN_INLINE 4
/* Idle task stacks a worker keeps (more go to the executor's shared list). */
#define QL_STACK_POOL_MAX 1024
#define QL_CHUNK_ENTS 31

struct ql_dchunk {
	struct ql_dchunk *prev; /* the chunk below, or NULL: the inline entries */
	struct ql_defer_ent e[QL_CHUNK_ENTS];
};

/*
 * A defer chain (lib/task.c): a LIFO stack of deferred calls in segments,
 * the inline entries first, then chunks. Only the segment on top is partly
 * full; the ones below are full. Owned by one task; touched only by the
 * thread running it.
 */
struct ql_chain {
	struct ql_defer_ent *ents; /* the top segment */
	unsigned n, cap;	   /* used and total entries of the top segment */
	struct ql_dchunk *chunk;   /* the top chunk, or NULL: the inline entries */
	uint16_t in_defer;	   /* nesting depth of deferred calls now running */
	uint8_t panicking;	   /* a panic is unwinding this task */
	uint8_t recovered;	   /* a panic was recovered; panic_code is the status */
	int panic_code;
	const char *panic_msg;
	struct ql_defer_ent inl[QL_CHAIN_INLINE];
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
	struct ql_job *lifo;	/* the task made runnable last */
	unsigned lifo_streak;	/* consecutive LIFO runs this tick */
	struct ql_job *ready_head, *ready_tail; /* continuations, FIFO, not stealable */
	unsigned nready;
	struct ql_batch *bl_head, *bl_tail; /* backlog: batches from the global queue */
	struct ql_qnode *ib_rest; /* backlog: the rest of a chain taken from the inbox */
	uint64_t nbl;		/* backlog length (relaxed stores, read by stats) */
	struct ql_job *pool[QL_JOB_KINDS]; /* free task records, per kind */
	struct ql_slab *slabs;	/* slabs this worker allocated (freed at destroy) */
	unsigned npool[QL_JOB_KINDS];
	uint32_t rng;		/* xorshift state for victim choice */
	uint64_t next_sample_ns; /* tick probe: at most one per millisecond */
	uint32_t sample_ctr;	/* task probes: one task in QL_SAMPLE_EVERY */
	int init_err;		/* ring setup result, for ql_exec_create */
	int started;		/* thread created */
	/* ---- stackful tasks (lib/task.c) ---- */
	struct ql_ctx sched;	/* the scheduler's context while a task runs */
	struct ql_task *cur;	/* the stackful task running now, or NULL */
	unsigned direct;	/* task-to-task yields since the scheduler ran */
	unsigned yielded;	/* a task just yielded: queued tasks go first */
	struct ql_job *cur_job; /* the stackless job running now (for panics) */
	jmp_buf *panic_jb;	/* where a stackless task's panic lands */
	struct ql_chain fn_chain; /* the defer chain of stackless jobs */
	/*
	 * Idle default-size task records with their stacks, a LIFO array so
	 * that taking one does not read the (cold) record itself.
	 */
	struct ql_task *stack_pool[QL_STACK_POOL_MAX];
	unsigned nstack_pool;
	struct ql_task *stack_spare; /* taken from the shared list, linked by wnext */
	struct ql_dchunk *chunk_pool; /* idle defer chunks */
	unsigned nchunk_pool;
	uint64_t task_seq;	/* task ids made here (and stackful tasks spawned here) */
	uint64_t tasks_ended;	/* stackful tasks that ended here */
	void *altstack;		/* the SIGSEGV handler's stack */
	void *san_fiber;	/* sanitizers: the scheduler's fiber / fake stack */
	const void *san_stack_lo; /* ASan: the worker thread's stack */
	size_t san_stack_size;
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
	/* Parked tasks made runnable here by other threads: begun and done. */
	_Atomic uint64_t ready_remote, ready_remote_done;
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
	_Alignas(QL_CACHELINE) struct ql_qnode *_Atomic free_head[QL_JOB_KINDS];
	_Atomic uint64_t free_count[QL_JOB_KINDS];
	_Atomic uint64_t dropped_global;		/* tasks dropped from the global queue */
	_Atomic uint64_t global_tasks;			/* tasks in the global queue (gauge) */
	pthread_mutex_t start_lock;			/* start-up hand-shake */
	pthread_cond_t start_cond;
	unsigned nstarted;				/* workers that reported their ring */
	unsigned nrunning;				/* of those, with a working ring */
	unsigned nstopped;				/* workers out of their loop */
	int wakes_done;					/* shutdown's wake-ups all sent */
	int shut;					/* shutdown done (joined) */
	_Atomic uint64_t tasks_outside;			/* stackful tasks spawned by outside threads */
	/* Idle default-size task stacks shared between the workers' pools (task.c). */
	_Alignas(QL_CACHELINE) struct ql_task *_Atomic stack_free;
};

/*
 * The initial-exec TLS model: the library is linked at start-up, never
 * dlopen'ed late, so its thread-locals sit in the static TLS block and are
 * read with one %fs-relative load instead of a __tls_get_addr call (the
 * default for -fPIC code).
 */
#define QL_TLS __thread __attribute__((tls_model("initial-exec")))
/* The worker the calling thread is, or NULL. */
extern QL_TLS struct ql_worker *ql__self;
/* The defer chain ql_defer pushes on: the running task's, or NULL. */
extern QL_TLS struct ql_chain *ql__chain;

/* exec.c, for task.c. All from the owner worker unless said otherwise. */
/* Queue a new job (counted as spawned). Any thread. Returns 0 or -errno. */
int ql__job_spawn(struct ql_exec *ex, struct ql_job *j);
/*
 * The same from self, one of the executor's workers, on its own thread,
 * once the caller has seen that the executor still takes work from it.
 * Returns 0 or -ENOMEM.
 */
int ql__job_spawn_local(struct ql_worker *self, struct ql_job *j);
/* Make a parked stackful task runnable again (not counted). Any thread. */
void ql__job_ready(struct ql_exec *ex, struct ql_worker *home, struct ql_job *j);
/* Put a job in w's LIFO slot / at the end of its ready list. */
void ql__make_ready(struct ql_worker *w, struct ql_job *j);

/* Owner only. At the end of the ready list: behind everything ready now (a yield). */
static inline void ql__ready_append(struct ql_worker *w, struct ql_job *j)
{
	j->node.next = NULL;
	if (w->ready_tail)
		w->ready_tail->node.next = &j->node;
	else
		w->ready_head = j;
	w->ready_tail = j;
	w->nready++;
}

/* Run fn(arg) as a library job on worker w (w's inbox from another thread). Any thread. */
int ql__run_on(struct ql_worker *w, void (*fn)(void *), void *arg);
/* Arm a one-shot absolute CLOCK_MONOTONIC timeout whose continuation is cb(arg, res). */
int ql__timer_arm(struct ql_worker *w, uint64_t abs_ns, ql_io_fn cb, void *arg,
		  struct ql_op **op);
/*
 * The buffer operations (read, write, recv, send) of both I/O forms, callback
 * (exec.c) and blocking (task.c): one set of argument checks, one prep per
 * opcode. ql__buf_check returns 0 or -errno.
 */
static inline int ql__buf_check(int fd, const void *buf, size_t n)
{
	if (fd < 0)
		return -EBADF;
	if ((!buf && n) || n > UINT32_MAX)
		return -EINVAL;
	return 0;
}

static inline void ql__buf_prep(struct io_uring_sqe *sqe, unsigned opcode, int fd,
				const void *buf, size_t n, int64_t off, int flags)
{
	switch (opcode) {
	case IORING_OP_READ:
		io_uring_prep_read(sqe, fd, (void *)buf, (unsigned)n, (uint64_t)off);
		break;
	case IORING_OP_WRITE:
		io_uring_prep_write(sqe, fd, buf, (unsigned)n, (uint64_t)off);
		break;
	case IORING_OP_RECV:
		io_uring_prep_recv(sqe, fd, (void *)buf, n, flags);
		break;
	default: /* IORING_OP_SEND */
		io_uring_prep_send(sqe, fd, buf, n, flags);
		break;
	}
}

/* Executor state. Acquire: a worker that sees STOPPING also sees what shutdown wrote before. */
static inline int ql__exec_state(const struct ql_exec *ex)
{
	return atomic_load_explicit(&ex->state, memory_order_acquire);
}

/* task.c, for exec.c. */
/*
 * Running stackful task t, in steps, so that exec.c's worker loop makes the
 * switch from its own frame (see run_task): ql__go_enter makes t current and
 * returns the context to switch to, or NULL for a task that never ran, which
 * is started with ql__ctx_start(&w->sched, t, ql__task_entry, t) instead;
 * after the switch returns, ql__go_back finishes what the task asked for and
 * returns 1 if it ended (then it is gone), 0 if it parked or yielded.
 */
struct ql_ctx *ql__go_enter(struct ql_worker *w, struct ql_task *t);
void ql__task_entry(void *arg);
/* Where a stackful task's record keeps its sampled spawn time (traced paths only). */
uint64_t *ql__task_t_ready(struct ql_job *j);
int ql__go_back(struct ql_worker *w);
#if defined(QL_ASAN) || defined(QL_TSAN)
/* The sanitizers' fiber hand-over must come right before the switch, in the same frame. */
void ql__go_switch_san(struct ql_worker *w, struct ql_task *t, struct ql_ctx *c);
#endif

/* The switch between ql__go_enter and ql__go_back, made in the caller's frame. */
static inline __attribute__((always_inline)) void ql__go_switch(struct ql_worker *w,
								struct ql_task *t,
								struct ql_ctx *c)
{
#if defined(QL_ASAN) || defined(QL_TSAN)
	ql__go_switch_san(w, t, c);
#else
	if (__builtin_expect(c != NULL, 1))
		ql__ctx_switch(&w->sched, c);
	else
		ql__ctx_start(&w->sched, t, ql__task_entry, t);
#endif
}
/* Run a stackless job's chain after its function returned. */
void ql__chain_run(struct ql_chain *c);
/* A worker's per-thread set-up and tear-down for tasks (alt stack, fibers). */
void ql__task_worker_init(struct ql_worker *w);
void ql__task_worker_fini(struct ql_worker *w);
/* Free a worker's idle stacks and chunks. */
void ql__task_pools_free(struct ql_worker *w);
/* Process-wide set-up (the SIGSEGV handler), once. */
void ql__task_global_init(void);
/* After a stackless job panicked and its chain ran: reset the chain. */
void ql__chain_reset(struct ql_chain *c);

#endif
