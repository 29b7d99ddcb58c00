/* SPDX-License-Identifier: MIT */
/*
 * qilin.h - the whole public API of qilin, a task executor on io_uring.
 *
 * What is not declared in this header is not API: internal headers
 * (lib/internal.h, uring/ring.h) and every symbol not named ql_* may change
 * or disappear in any release. Only ql_* symbols are exported from
 * libqilin.so.
 *
 * Conventions: every function returns 0 or a count on success and a
 * negative errno on failure; each says whether it may be called from outside
 * a task. Link with `pkg-config --cflags --libs qilin`.
 *
 * This release contains the executor with stackless tasks and I/O in
 * callback form; stackful tasks, defer chains and scopes arrive in later
 * releases under the names reserved in docs/api.md.
 */
#ifndef QILIN_H
#define QILIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define QL_API __attribute__((visibility("default")))
#else
#define QL_API
#endif

#define QL_VERSION_MAJOR 0
#define QL_VERSION_MINOR 1
#define QL_VERSION_PATCH 0

struct ql_exec;

/*
 * The library's version, "MAJOR.MINOR.PATCH". Any thread, any time.
 */
QL_API const char *ql_version(void);

/*
 * Can this process use io_uring? Creates and destroys a small ring, with
 * the same probing and fallbacks the executor uses. Returns 0 if io_uring
 * works, or the negative errno of the failure: -ENOSYS (no io_uring in the
 * kernel, or a seccomp filter answering ENOSYS), -EPERM (seccomp, as in
 * Docker's default profile, or the kernel.io_uring_disabled sysctl), -ENOMEM
 * (RLIMIT_MEMLOCK on kernels before 5.12), -EINVAL (a bad QILIN_URING_DISABLE
 * value). If why is not NULL, writes one sentence naming the cause there
 * (or, on success, the features the kernel granted), truncated to len bytes
 * and always NUL-terminated when len > 0. Any thread, outside tasks too.
 */
QL_API int ql_uring_diagnose(char *why, size_t len);

/* ------------------------------------------------------------ executor */

/* Flags for struct ql_exec_opts.flags. */
enum {
	QL_EXEC_NO_PIN = 1u << 0, /* do not pin workers to CPUs */
};

struct ql_exec_opts {
	size_t sz;	     /* sizeof(struct ql_exec_opts) */
	unsigned workers;    /* worker threads; 0: CPUs in the affinity mask */
	unsigned ring_size;  /* SQ entries per worker ring; 0: 256 */
	unsigned flags;	     /* QL_EXEC_* */
};

/*
 * Create an executor: one worker thread per CPU of the calling thread's
 * affinity mask (or opts->workers), each pinned to its CPU and owning one
 * io_uring. opts may be NULL. Returns 0 and sets *out, or -errno: -EINVAL
 * (bad options, NULL out), -ENOMEM, or the io_uring setup error (see
 * ql_uring_diagnose() for its cause). Any thread; not from inside a task.
 */
QL_API int ql_exec_create(const struct ql_exec_opts *opts, struct ql_exec **out);

/*
 * Stop accepting work (ql_spawn and I/O calls then fail with -ESHUTDOWN),
 * let queued and running work finish for up to timeout_ns (0: no limit),
 * then cancel what is left: tasks that never started are dropped (counted in
 * the stats), I/O still in flight is cancelled and its continuation runs
 * with -ECANCELED. Joins the workers. Returns 0 if everything finished in
 * time, -ETIMEDOUT if work had to be cancelled, -EINVAL for NULL, -EALREADY
 * if already shut down. Any thread except a worker of ex (-EDEADLK).
 */
QL_API int ql_exec_shutdown(struct ql_exec *ex, uint64_t timeout_ns);

/*
 * Shut down (with no time limit) if not done yet, then free everything.
 * NULL is a no-op. Any thread except a worker of ex.
 */
QL_API void ql_exec_destroy(struct ql_exec *ex);

/* Counters of one worker, or of all of them added up. */
struct ql_worker_stats {
	uint64_t spawned;    /* tasks queued on this worker (spawns, hand-offs) */
	uint64_t run;	     /* tasks and continuations run */
	uint64_t stolen;     /* tasks this worker stole from others */
	uint64_t parks;	     /* times it blocked waiting for work */
	uint64_t wakeups;    /* times it was woken by another thread */
	uint64_t ticks;	     /* scheduler ticks */
	uint64_t sqes;	     /* SQEs submitted by its ring */
	uint64_t enters;     /* io_uring_enter calls of its ring */
	uint64_t cqes;	     /* CQEs reaped by its ring */
	uint64_t dropped;    /* tasks dropped at shutdown */
	uint64_t runq_depth; /* tasks queued on it now (deque, inbox, LIFO) */
	uint64_t inflight;   /* I/O operations in flight on its ring now */
};

struct ql_stats {
	size_t sz;		       /* sizeof(struct ql_stats) */
	unsigned nworkers;	       /* out: number of workers */
	struct ql_worker_stats total;  /* out: all workers added up */
	struct ql_worker_stats *workers; /* in: optional array for per-worker counters */
	unsigned workers_len;	       /* in: its length (entries filled: min of both) */
	uint64_t global_depth;	       /* out: tasks in the global overflow queue */
};

/*
 * Read the counters (relaxed reads: each counter is exact, the set is not a
 * snapshot). out->sz must be set. Returns 0 or -EINVAL. Any thread.
 */
QL_API int ql_exec_stats(struct ql_exec *ex, struct ql_stats *out);

/* ------------------------------------------------------------ tasks */

/*
 * Spawn a stackless task: fn(arg) runs exactly once, to completion, on one of
 * ex's workers. From a worker of ex it goes to that worker's local queue
 * (other workers may steal it); from any other thread to a worker's inbox,
 * round-robin, waking that worker if it is parked. Never blocks. Returns 0,
 * -EINVAL (NULL ex or fn), -ESHUTDOWN after ql_exec_shutdown(), -ENOMEM.
 * Any thread.
 */
QL_API int ql_spawn(struct ql_exec *ex, void (*fn)(void *), void *arg);

/* Monotonic clock in nanoseconds. Any thread. */
QL_API uint64_t ql_now(void);

/*
 * The index of the calling worker (0 .. nworkers-1), or -EPERM when called
 * from a thread that is not a worker of any executor.
 */
QL_API int ql_worker_id(void);

/* ------------------------------------------------------------ callback I/O */

/*
 * A continuation: called once with the operation's result (a count or
 * -errno), as a task on the worker that submitted the operation.
 */
typedef void (*ql_io_fn)(void *arg, ssize_t res);

/*
 * I/O in callback form, for stackless tasks and continuations. Each call
 * prepares one io_uring operation on the calling worker's ring; every
 * operation prepared during a scheduler tick is submitted in one batch at the
 * end of the tick, and when its CQE arrives, fn(arg, res) becomes a runnable
 * task on the same worker. Buffers must stay valid until fn runs. Returns 0
 * (fn will be called exactly once), or -errno and fn is never called:
 * -EPERM outside a worker, -EINVAL for bad arguments, -ESHUTDOWN after
 * shutdown, -ENOMEM. Only from a worker thread (a task or continuation).
 */
QL_API int ql_nop_cb(ql_io_fn fn, void *arg);
QL_API int ql_read_cb(int fd, void *buf, size_t n, int64_t off, ql_io_fn fn, void *arg);
QL_API int ql_write_cb(int fd, const void *buf, size_t n, int64_t off, ql_io_fn fn, void *arg);
QL_API int ql_recv_cb(int fd, void *buf, size_t n, int flags, ql_io_fn fn, void *arg);
QL_API int ql_send_cb(int fd, const void *buf, size_t n, int flags, ql_io_fn fn, void *arg);
QL_API int ql_accept_cb(int fd, ql_io_fn fn, void *arg);
/* Completes with -ETIME after ns nanoseconds (at once when ns is 0). */
QL_API int ql_timeout_cb(uint64_t ns, ql_io_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif
