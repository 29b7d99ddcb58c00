/* SPDX-License-Identifier: MIT */
/*
 * uring/ring.h - the ring layer's internal interface.
 *
 * Everything in qilin that touches io_uring goes through this header. The
 * layer owns ring setup (with feature probing and fallback), SQE acquisition,
 * batched submission, CQE dispatch to completion records, multishot streams,
 * provided buffers, registered files, linked timeouts, async cancel and
 * cross-thread wake-ups. It knows nothing about tasks: its unit of work is a
 * completion record (struct ql_op) and a continuation function.
 *
 * Threading: a struct ql_ring belongs to one thread, its owner, which is the
 * thread that called ql__ring_init(). Every function here must be called by
 * the owner, except:
 *   - ql__ring_wake(): any thread, at any time while the ring exists;
 *   - ql__ring_stats(): any thread (counters are read with relaxed loads and
 *     may be a few events stale).
 * The owner restriction is real: with IORING_SETUP_SINGLE_ISSUER and
 * DEFER_TASKRUN the kernel rejects submissions from any other thread.
 *
 * Lifetime rule (the one that keeps the kernel from touching freed memory):
 * a completion record, and every buffer its operation names, must stay valid
 * until the record's final CQE has been dispatched (the CQE without
 * IORING_CQE_F_MORE). ql__ring_exit() cancels everything still in flight and
 * waits for those final CQEs before it releases the ring.
 *
 * Not installed, not API: lib/ includes it, nothing outside the tree does.
 */
#ifndef QILIN_URING_RING_H
#define QILIN_URING_RING_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <liburing.h>

/*
 * Features. Each bit is something the kernel may or may not offer; the ring
 * probes them at init and records what it got in ring->features. Any of them
 * can be forced off, either through opts->disable or through the environment
 * variable QILIN_URING_DISABLE (a comma-separated list of the names below, or
 * "all"), so the tests can run the paths an older kernel would take.
 */
enum ql_ring_feature {
	QL_RING_F_SINGLE_ISSUER = 1u << 0, /* IORING_SETUP_SINGLE_ISSUER, 6.0 */
	QL_RING_F_DEFER_TASKRUN = 1u << 1, /* IORING_SETUP_DEFER_TASKRUN, 6.1 */
	QL_RING_F_COOP_TASKRUN = 1u << 2,  /* IORING_SETUP_COOP_TASKRUN, 5.19 */
	QL_RING_F_SUBMIT_ALL = 1u << 3,	   /* IORING_SETUP_SUBMIT_ALL, 5.18 */
	QL_RING_F_MULTISHOT = 1u << 4,	   /* multishot accept and recv, 6.0 */
	QL_RING_F_MSG_RING = 1u << 5,	   /* IORING_OP_MSG_RING, 5.18 */
	QL_RING_F_BUFRING = 1u << 6,	   /* ring-mapped provided buffers, 5.19 */
	QL_RING_F_EXT_ARG = 1u << 7,	   /* timeout passed to enter, 5.11 */
	QL_RING_F_REG_RING = 1u << 8,	   /* registered ring fd, 5.18 */
	QL_RING_F_ALL = (1u << 9) - 1,
};

/* Number of entries in ql__ring_feature_names (one per feature bit). */
#define QL_RING_NFEATURES 9

/* Feature names as QILIN_URING_DISABLE spells them, indexed by bit number. */
extern const char *const ql__ring_feature_names[QL_RING_NFEATURES];

/* Name of the environment variable that forces features off. */
#define QL_RING_DISABLE_ENV "QILIN_URING_DISABLE"

/*
 * Parse a feature list ("defer_taskrun,msg_ring", "all", "" or NULL) into a
 * mask of QL_RING_F_* bits. Returns 0, or -EINVAL for an unknown name (the
 * thread's last-error message then names it and lists the known ones).
 */
int ql__ring_parse_features(const char *list, unsigned *mask);

/* Option flags for struct ql_ring_opts.flags. */
enum {
	/* No eventfd wake-up channel: ql__ring_wake() returns -ENOTSUP. */
	QL_RING_O_NO_WAKE = 1u << 0,
	/* No bound on in-flight operations (tests use it to overflow the CQ). */
	QL_RING_O_UNBOUNDED = 1u << 1,
	/* Ignore QILIN_URING_DISABLE (the tests' explicit configurations). */
	QL_RING_O_NO_ENV = 1u << 2,
};

struct ql_ring_opts {
	size_t sz;		/* sizeof(struct ql_ring_opts) */
	unsigned sq_entries;	/* SQ size, rounded up to a power of 2; 0: 256 */
	unsigned cq_entries;	/* CQ size; 0: 4 x sq_entries */
	unsigned disable;	/* QL_RING_F_* forced off, on top of the env */
	unsigned inflight_max;	/* bound on operations in flight; 0: CQ size */
	unsigned flags;		/* QL_RING_O_* */
	unsigned file_batch;	/* early submit of file I/O at this many SQEs (a power of two,
				 * others are rounded down); 0: default */
};

/*
 * Early submission of file I/O. The batch of a tick goes to the kernel in one
 * enter at the tick's end; for sockets that is the point (one system call for
 * many operations). For storage it is not: a device serves requests as they
 * arrive, and a batch it gets only at the end of the tick (the kernel plugs
 * what one enter submits, and dispatches it when the enter is done) leaves it
 * idle for as long as the tick takes, so a read at depth Q takes longer and
 * fewer are served per second (bench/run.sh file measured 0.83x fio, whose
 * default submits each read at once, before this; docs/benchmarks.md). So
 * when the newest SQE of the batch is a read or write at an explicit file
 * offset (IORING_OP_READ/WRITE/READV/WRITEV/READ_FIXED/WRITE_FIXED with an
 * offset other than -1: storage I/O; sockets and pipes use -1 or other
 * opcodes) and a multiple of file_batch SQEs are held, the next SQE
 * acquisition submits them first. Enters only submit there: no CQE is
 * dispatched, so this is safe inside continuations. Never while
 * ql__ring_reserve() holds slots.
 */
#define QL_RING_FILE_BATCH 4u

/* Counters. Written by the owner only, readable from any thread. */
struct ql_ring_stats {
	uint64_t sqes;		/* SQEs handed to the kernel */
	uint64_t enters;	/* io_uring_enter system calls */
	uint64_t cqes;		/* CQEs reaped */
	uint64_t overflows;	/* times the kernel flagged a CQ overflow */
	uint64_t cq_dropped;	/* CQEs the kernel dropped (koverflow) */
	uint64_t sq_full;	/* SQE requests that found the SQ full */
	uint64_t backpressure;	/* waits because in-flight hit its bound */
	uint64_t wakeups;	/* wake-ups received (eventfd or msg_ring) */
	uint64_t rearms;	/* multishot/stream re-arms */
	uint64_t enobufs;	/* stream stalls on an empty buffer group */
	uint64_t inflight;	/* operations in flight now */
	uint64_t inflight_peak; /* highest value of inflight seen */
	uint64_t early_submits; /* enters made early for file I/O (QL_RING_FILE_BATCH) */
};

struct ql_ring;
struct ql_op;
struct ql_bufgroup;

/*
 * A continuation. Called by the owner thread from ql__ring_reap() (or from a
 * function documented to reap), once per CQE of the record. res is the CQE
 * result (a count or -errno); flags are the CQE flags, in which
 * IORING_CQE_F_MORE means "more CQEs will come for this record, it stays
 * live". Without F_MORE the call is the record's last and the function may
 * free or reuse the record.
 */
typedef void (*ql_op_fn)(struct ql_ring *r, struct ql_op *op, int res, unsigned flags);

/* Record flags (op->flags); the ring layer manages the ones marked "ring". */
enum {
	QL_OP_ARMED = 1u << 0,	   /* ring: an SQE or stall targets it now */
	QL_OP_STREAM = 1u << 1,	   /* ring: a stream, re-armed until it ends */
	QL_OP_CANCELLED = 1u << 2, /* ring: ql__ring_cancel() was called */
	QL_OP_STARVED = 1u << 3,   /* ring: stream stalled, no buffers */
	QL_OP_MULTISHOT = 1u << 4, /* ring: armed as a kernel multishot */
};

enum ql_stream_kind { QL_STREAM_NONE, QL_STREAM_RECV, QL_STREAM_ACCEPT };

/*
 * A completion record. user_data of the SQE points here. Embed it in
 * whatever owns the operation (a task, a connection); the ring never
 * allocates or frees one. Zero-initialise before first use.
 */
struct ql_op {
	ql_op_fn fn;		  /* continuation */
	uint32_t flags;		  /* QL_OP_* */
	uint8_t stream;		  /* enum ql_stream_kind */
	int32_t fd;		  /* stream: the socket */
	struct ql_bufgroup *bg;	  /* recv stream: the buffer group */
	struct ql_op *next;	  /* ring: starved-stream list link */
	struct __kernel_timespec ts; /* storage for a linked timeout */
};

struct ql_ring {
	struct io_uring uring;	 /* liburing's view; read-only outside ring.c */
	unsigned features;	 /* QL_RING_F_* granted after probing */
	unsigned setup_flags;	 /* IORING_SETUP_* the kernel accepted */
	unsigned inflight_cap;	 /* bound on in-flight operations */
	unsigned sq_entries;	 /* SQ size granted */
	unsigned cq_entries;	 /* CQ size granted */
	unsigned enter_flags;	 /* IORING_ENTER_REGISTERED_RING or 0 */
	int enter_fd;		 /* fd or registered index for enter */
	unsigned inflight;	 /* operations in flight (owner-only copy) */
	unsigned flags;		 /* QL_RING_O_* */
	unsigned reaping;	 /* reap nesting depth */
	unsigned reserved;	 /* SQEs promised by ql__ring_reserve() */
	unsigned file_batch;	 /* early submit of file I/O at this many held SQEs */
	unsigned tmo_armed;	 /* wait timeouts in flight (no EXT_ARG) */
	uint8_t tmo_live;	 /* the newest wait timeout is armed */
	uint64_t tmo_deadline;	 /* when it expires (monotonic ns) */
	uint8_t live;		 /* init succeeded, exit not done */
	uint8_t exiting;	 /* ql__ring_exit() is draining */
	uint8_t wake_armed;	 /* the eventfd read is in flight */
	uint8_t cancel_all_armed; /* a drain cancel is in flight */
	uint8_t cancel_any_broken; /* kernel refused IORING_ASYNC_CANCEL_ANY */
	uint8_t wake_cancel_sent; /* drain fallback: eventfd read cancelled */
	int wake_fd;		 /* eventfd, or -1 */
	uint64_t wake_val;	 /* eventfd read target (kernel writes it) */
	struct __kernel_timespec tmo_ts; /* wait timeout (kernel reads it) */
	struct ql_bufgroup *groups; /* every buffer group of this ring */
	unsigned nfiles;	 /* registered file table size */
	uint8_t ops[64];	 /* opcode supported (probe), by IORING_OP_* */
	struct ql_ring_stats st; /* counters, written with relaxed stores */
};

/*
 * Set up a ring. The calling thread becomes its owner. opts may be NULL.
 * Returns 0, or -errno: -ENOSYS, -EPERM, -ENOMEM and -EINVAL name their cause
 * in the thread's last-error message (ql__ring_last_error()).
 */
int ql__ring_init(struct ql_ring *r, const struct ql_ring_opts *opts);

/*
 * Cancel everything in flight, wait (up to timeout_ns, 0 = forever) for every
 * final CQE, dispatching them, then release the ring. Returns 0, or -ETIMEDOUT
 * if operations were still in flight (the ring is released regardless: the
 * kernel cancels what is left, but their records must then stay valid until
 * process exit). Safe to call on a ring whose init failed or was zeroed.
 */
int ql__ring_exit(struct ql_ring *r, uint64_t timeout_ns);

/* The message that describes the calling thread's last ring failure. */
const char *ql__ring_last_error(void);

/*
 * Describe why io_uring cannot be used after setup failed with err (a
 * negative errno): reads the io_uring_disabled sysctl, the thread's seccomp
 * mode and RLIMIT_MEMLOCK. Writes one sentence to buf. Returns err.
 */
int ql__ring_explain(int err, char *buf, size_t len);

/*
 * Add n to a counter only the calling thread writes. A relaxed load-add-store
 * is enough (no other writer can interleave) and, unlike a plain add, lets
 * other threads read the counter with relaxed loads without a data race.
 */
static inline void ql__counter_add(uint64_t *c, uint64_t n)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/*
 * Copy a struct made only of such counters (len bytes) with relaxed loads:
 * each value exact, the set not a snapshot.
 */
static inline void ql__counters_load(void *dst, const void *src, size_t len)
{
	const uint64_t *from = src;
	uint64_t *to = dst;

	for (size_t i = 0; i < len / sizeof(uint64_t); i++)
		to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* The monotonic clock in nanoseconds (ql_now() is this, exported). */
static inline uint64_t ql__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Non-zero if the kernel supports opcode op (IORING_OP_*). */
static inline int ql__ring_op_supported(const struct ql_ring *r, unsigned op)
{
	return op < sizeof(r->ops) && r->ops[op];
}

/*
 * SQE acquisition. Never fails for lack of room: if the SQ is full the queued
 * SQEs are submitted and the request retried; if in-flight operations have
 * reached their bound, it submits and reaps (dispatching continuations) until
 * there is room. op may be NULL for an operation whose CQE nobody wants (its
 * CQE is still counted and reaped). The returned SQE has user_data set to op
 * (liburing's io_uring_prep_* helpers leave user_data alone; code that writes
 * whole SQEs must call ql__ring_sqe_op() afterwards).
 */
static inline struct io_uring_sqe *ql__ring_sqe(struct ql_ring *r, struct ql_op *op);

/* The out-of-line part of ql__ring_sqe(): reservations, early submits, backpressure, full SQ. */
struct io_uring_sqe *ql__ring_sqe_slow(struct ql_ring *r, struct ql_op *op);

/*
 * Like ql__ring_sqe() but never submits or reaps: returns NULL if the SQ is
 * full or the in-flight bound is reached. For callers that cannot tolerate
 * continuations running under them.
 */
struct io_uring_sqe *ql__ring_sqe_try(struct ql_ring *r, struct ql_op *op);

/*
 * Is an early submission of file I/O due (see QL_RING_FILE_BATCH)? Looks at
 * the newest SQE the owner prepared (complete by now: it asks for the next).
 */
static inline int ql__ring_file_due(const struct ql_ring *r)
{
	const struct io_uring_sq *sq = &r->uring.sq;
	const struct io_uring_sqe *last;

	unsigned held = sq->sqe_tail - sq->sqe_head;

	/* Only at each file_batch-th held SQE (a power of two): one test for the rest. */
	if (held < r->file_batch || (held & (r->file_batch - 1)))
		return 0;
	last = &sq->sqes[(sq->sqe_tail - 1) & sq->ring_mask];
	/* Tagged user_data (below 16) is the layer's own, e.g. the eventfd read: not file I/O. */
	if (last->user_data < 16)
		return 0;
	switch (last->opcode) {
	case IORING_OP_READ:
	case IORING_OP_WRITE:
	case IORING_OP_READV:
	case IORING_OP_WRITEV:
	case IORING_OP_READ_FIXED:
	case IORING_OP_WRITE_FIXED:
		return last->off != (uint64_t)-1;
	default:
		return 0;
	}
}

/*
 * The fast path, inline because it runs once per operation: room in the SQ,
 * no reservation pending, in-flight below its bound, no early file
 * submission due. The in-flight gauge in
 * r->st is published at each submit and reap, not here.
 */
static inline struct io_uring_sqe *ql__ring_sqe(struct ql_ring *r, struct ql_op *op)
{
	struct io_uring_sq *sq = &r->uring.sq;

	if (__builtin_expect(!r->reserved && r->inflight < r->inflight_cap && !ql__ring_file_due(r),
			     1)) {
		/*
		 * Acquire pairs with the kernel's release of khead: SQ slots it
		 * has consumed may be reused.
		 */
		unsigned head = io_uring_smp_load_acquire(sq->khead);

		if (__builtin_expect(sq->sqe_tail - head < sq->ring_entries, 1)) {
			struct io_uring_sqe *sqe = &sq->sqes[sq->sqe_tail & sq->ring_mask];

			sq->sqe_tail++;
			r->inflight++;
			sqe->user_data = (uint64_t)(uintptr_t)op;
			if (op)
				op->flags |= QL_OP_ARMED;
			return sqe;
		}
	}
	return ql__ring_sqe_slow(r, op);
}

/* Point sqe at op (after an io_uring_prep_* call cleared user_data). */
static inline void ql__ring_sqe_op(struct io_uring_sqe *sqe, struct ql_op *op)
{
	io_uring_sqe_set_data(sqe, op);
}

/*
 * Make sure the next n calls to ql__ring_sqe() succeed without a submission
 * in between (needed for linked SQEs, which must reach the kernel in one
 * batch). n must not exceed the SQ size. Returns 0 or -EINVAL.
 */
int ql__ring_reserve(struct ql_ring *r, unsigned n);

/* SQEs prepared and not yet submitted. */
unsigned ql__ring_pending(const struct ql_ring *r);

/*
 * Link a timeout to the SQE just prepared (it must be the last one acquired,
 * and ql__ring_reserve(r, 2) must have been called before acquiring it). If
 * the operation is still running after ns nanoseconds it is cancelled and
 * completes with -ECANCELED; the timeout's own CQE is reaped internally. The
 * timespec is stored in op->ts. Returns 0 or -errno.
 */
int ql__ring_link_timeout(struct ql_ring *r, struct io_uring_sqe *sqe, struct ql_op *op,
			  uint64_t ns);

/*
 * Ask the kernel to cancel op's operation. Both the cancel and the target
 * produce a CQE, in either order; the cancel's CQE is reaped internally, the
 * target's final CQE reaches op->fn as usual (-ECANCELED if the cancel won,
 * its real result if the operation finished first). A stream that is stalled
 * on an empty buffer group ends with a final -ECANCELED too. Returns 0,
 * -EALREADY if op is not armed, -EINVAL for a NULL op.
 */
int ql__ring_cancel(struct ql_ring *r, struct ql_op *op);

/*
 * Submit every prepared SQE in one io_uring_enter and, if wait_nr > 0, wait
 * until at least wait_nr CQEs are available, timeout_ns passes (0 = no
 * limit), or a wake-up arrives. Does not dispatch. Returns the number of SQEs
 * submitted, or -errno (-ETIME when the wait timed out is reported as 0).
 * Spurious early returns are possible: callers loop.
 */
int ql__ring_submit(struct ql_ring *r, unsigned wait_nr, uint64_t timeout_ns);

/*
 * Dispatch every available CQE to its record's continuation (flushing
 * overflowed CQEs and running deferred task work when the kernel says it
 * has some). Returns the number of CQEs dispatched.
 */
unsigned ql__ring_reap(struct ql_ring *r);

/*
 * One scheduler tick's worth of ring work: submit the batch, wait as
 * ql__ring_submit() does, then reap. Returns CQEs dispatched or -errno.
 */
int ql__ring_run(struct ql_ring *r, unsigned wait_nr, uint64_t timeout_ns);

/*
 * Wake the owner if it is blocked waiting in this ring (any thread). Writes
 * the ring's eventfd; the armed read completes and ends the wait. Returns 0,
 * or -ENOTSUP if the ring was made with QL_RING_O_NO_WAKE.
 */
int ql__ring_wake(struct ql_ring *to);

/*
 * Wake another ring from this ring's owner: an IORING_OP_MSG_RING SQE posted
 * to `to`, submitted with this ring's next batch; without MSG_RING support
 * (or forced off) it falls back to ql__ring_wake(to). Returns 0 or -errno.
 */
int ql__ring_wake_from(struct ql_ring *r, struct ql_ring *to);

/*
 * Streams: an accept or recv that keeps producing results until it fails, is
 * cancelled, or (recv) reaches end of file. Kernel multishot when available,
 * otherwise a single-shot operation re-armed after each completion; either
 * way op->fn sees IORING_CQE_F_MORE on every result but the last. A recv
 * stream reads into buffers of group bg (the CQE flags carry the buffer id,
 * see ql__bufgroup_bid()); when the group runs dry the stream stalls (counted
 * as enobufs) and re-arms itself as soon as a buffer is returned: -ENOBUFS is
 * never a failure. Returns 0 or -errno (and then op->fn is never called).
 */
int ql__ring_accept_stream(struct ql_ring *r, struct ql_op *op, int fd, ql_op_fn fn);
int ql__ring_recv_stream(struct ql_ring *r, struct ql_op *op, int fd, struct ql_bufgroup *bg,
			 ql_op_fn fn);

/*
 * Provided buffers: a group of nbufs buffers of size bytes each (nbufs a
 * power of 2, at most 32768), handed to the kernel for recv streams to pick
 * from. Ring-mapped (IORING_REGISTER_PBUF_RING) when available, otherwise the
 * IORING_OP_PROVIDE_BUFFERS path. Returns 0 or -errno.
 */
int ql__bufgroup_create(struct ql_ring *r, uint16_t bgid, unsigned nbufs, size_t size,
			struct ql_bufgroup **out);

/* The buffer a CQE names, or NULL if the CQE carries no buffer. */
void *ql__bufgroup_buf(struct ql_bufgroup *bg, unsigned cqe_flags);

/*
 * The buffer id of p, which must be the start of one of bg's buffers (as
 * ql__bufgroup_buf returned it). Returns the id, or -EINVAL (NULL bg, or p
 * not the start of a buffer of bg).
 */
int ql__bufgroup_bid_of(const struct ql_bufgroup *bg, const void *p);

/* Buffer id carried by CQE flags (IORING_CQE_F_BUFFER must be set). */
static inline unsigned ql__bufgroup_bid(unsigned cqe_flags)
{
	return cqe_flags >> IORING_CQE_BUFFER_SHIFT;
}

/* Give buffer bid back to the kernel; re-arms streams stalled on the group. */
void ql__bufgroup_put(struct ql_bufgroup *bg, unsigned bid);

/* Buffers currently available to the kernel. */
unsigned ql__bufgroup_avail(const struct ql_bufgroup *bg);

/*
 * Release a group. No stream may be using it. Waits for the kernel to drop
 * the buffers (legacy path) before freeing them. NULL is a no-op.
 */
void ql__bufgroup_destroy(struct ql_bufgroup *bg);

/* Registered files: a table of n slots, all empty. Returns 0 or -errno. */
int ql__ring_files_init(struct ql_ring *r, unsigned n);
/* Put fd in slot idx (-1 empties it). Returns 0 or -errno. */
int ql__ring_file_set(struct ql_ring *r, unsigned idx, int fd);

/*
 * Cap io-wq worker threads for this ring (0 leaves a limit unchanged).
 * Returns 0 or -errno.
 */
int ql__ring_iowq_cap(struct ql_ring *r, unsigned bounded, unsigned unbounded);

/*
 * The kernel work of the once-per-process feature probe (a scratch ring made
 * by the first ql__ring_init()), counted like a ring's. Adding it to every
 * ring's counters gives the process's whole io_uring activity. Written once,
 * before the first ql__ring_init() returns.
 */
extern struct ql_ring_stats ql__ring_probe_stats;

/* Copy the ring's counters (any thread). */
void ql__ring_stats(const struct ql_ring *r, struct ql_ring_stats *out);

/* The granted features as text ("single_issuer,defer_taskrun,..."). */
void ql__ring_features_str(unsigned mask, char *buf, size_t len);

#endif
