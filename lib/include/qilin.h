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
 * Contents: the executor; stackless tasks and I/O in callback form;
 * stackful tasks with defer chains, panic/recover, cancellation scopes with
 * deadlines, and blocking-style I/O. docs/api.md is the guide.
 */
#ifndef QILIN_H
#define QILIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

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
struct ql_task;
struct ql_scope;

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
	unsigned ring_size;  /* SQ entries per worker ring, at most 16384; 0: 256 */
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

/* ------------------------------------------------------------ stackful tasks */

/* Options for ql_go(); every field may be left 0. */
struct ql_task_opts {
	size_t sz;		 /* sizeof(struct ql_task_opts) */
	size_t stack_size;	 /* usable stack bytes; 0: QL_STACK_DEFAULT */
	const char *name;	 /* for panic and stack-overflow reports; not copied */
	struct ql_scope *scope;	 /* scope to run in; NULL: the spawner's current one */
};

/* The default stack: 64 KiB of address space, of which only the touched pages cost memory. */
#define QL_STACK_DEFAULT (64u * 1024u)
/* The smallest stack ql_go accepts. */
#define QL_STACK_MIN (16u * 1024u)

/*
 * Spawn a stackful task: fn(arg) runs on a stack of its own (mmap'd, with a
 * guard page below it, pooled per worker) and may block in any qilin call:
 * ql_join, ql_yield, ql_sleep and the blocking I/O below park the task, not
 * the worker. It belongs to opts->scope, or to the spawner's current scope
 * when called from a task. If out is not NULL, *out is a handle for
 * ql_join/ql_cancel that must be given back with ql_task_release(); with out
 * NULL the task is detached. Returns 0, or -errno: -EINVAL (NULL ex or fn,
 * bad opts, stack size below QL_STACK_MIN or above 1 GiB), -ESHUTDOWN after
 * ql_exec_shutdown(), -ECANCELED / -ETIMEDOUT (the scope is already cancelled
 * / past its deadline), -ENOMEM (no memory, or vm.max_map_count reached: each task stack
 * costs two memory mappings; the message on stderr names the limit). Any
 * thread; from a worker of ex no system call is made in steady state.
 */
QL_API int ql_go(struct ql_exec *ex, void (*fn)(void *), void *arg,
		 const struct ql_task_opts *opts, struct ql_task **out);

/*
 * Wait until t has ended. From a stackful task the task parks; from any other
 * thread (a stackless task counts as one: avoid it there) the thread blocks.
 * Returns 0 and sets *status (if not NULL) to how fn ended:
 *   0                        it returned;
 *   -ECANCELED / -ETIMEDOUT  it returned after being cancelled / after its
 *                            scope's deadline passed;
 *   code                     it panicked with this code and a deferred
 *                            function recovered;
 * or returns -EOWNERDEAD with *status = the code of a panic nobody
 * recovered. Errors: -EINVAL (NULL t), -EDEADLK (a task joining itself),
 * -ECANCELED / -ETIMEDOUT (the joining task was cancelled while waiting: t
 * is still running and the handle still valid). A task may be joined any
 * number of times, until released.
 */
QL_API int ql_join(struct ql_task *t, int *status);

/*
 * Cancel t: every qilin call it is blocked in, or makes from now on, returns
 * -ECANCELED (the kernel operation is cancelled first), promptly. The task
 * decides how to end, as with Go's contexts; its defer chain runs when it
 * does. Returns 0, -EINVAL for NULL, -EALREADY if t has already ended. Any
 * thread.
 */
QL_API int ql_cancel(struct ql_task *t);

/* Give a handle back; the task keeps running if it has not ended. NULL is a no-op. Any thread. */
QL_API void ql_task_release(struct ql_task *t);

/* The task's id (unique among its executor's tasks), or 0 for NULL. Any thread. */
QL_API uint64_t ql_task_id(const struct ql_task *t);

/*
 * The calling stackful task, or NULL outside one. The pointer is valid while
 * the task runs; it is not a handle (do not release it).
 */
QL_API struct ql_task *ql_self(void);

/*
 * Let other tasks run: the calling stackful task goes behind the tasks that
 * are ready on its worker. Returns 0, -ECANCELED / -ETIMEDOUT if the task is
 * cancelled or past its deadline (it still yielded), or -EPERM outside a
 * stackful task.
 */
QL_API int ql_yield(void);

/*
 * Park the calling task for ns nanoseconds (an io_uring timeout in the
 * worker's batch). Returns 0, -ECANCELED or -ETIMEDOUT (woken early by a
 * cancel or a deadline), -EPERM outside a stackful task.
 */
QL_API int ql_sleep(uint64_t ns);

/* ------------------------------------------------------------ defer, panic, recover */

/*
 * Push fn(arg) on the current task's defer chain. arg is the value given
 * now; the chain runs last-in first-out exactly once when the task ends: by
 * returning, after a cancellation, or by a panic. Works in stackful and
 * stackless tasks (for a stackless task, when fn returns). No allocation in
 * steady state. Returns 0, -EINVAL (NULL fn), -EPERM outside a task, -ENOMEM.
 */
QL_API int ql_defer(void (*fn)(void *), void *arg);

/*
 * Panic: stop the current task here and run its defer chain. If a deferred
 * function calls ql_recover(), the panic stops and the task ends normally
 * with status code; otherwise the task ends as panicked (ql_join returns
 * -EOWNERDEAD) and the panic is logged once on stderr with the task's id,
 * code and message. The process and the other tasks go on. A panic inside a
 * deferred function replaces the one being handled. code 0 is reported as
 * -1. Outside a task it prints the message and aborts the process. Does not
 * return.
 */
QL_API void ql_panic(int code, const char *msg) __attribute__((noreturn));

/*
 * In a deferred function run because of a panic: stop the panic and return
 * its code. Anywhere else (no panic, not in a deferred function, outside a
 * task): returns 0 and does nothing.
 */
QL_API int ql_recover(void);

/* ------------------------------------------------------------ scopes and deadlines */

/* No deadline. */
#define QL_NO_DEADLINE UINT64_MAX

/*
 * Open a scope (Go's context.WithCancel / WithDeadline). deadline_ns is an
 * absolute ql_now() time, or QL_NO_DEADLINE. Inside a stackful task the new
 * scope is a child of the task's current scope and becomes the current one:
 * the task's own calls obey it, and tasks it spawns belong to it. From any
 * other thread it is a root scope, used through ql_task_opts.scope.
 * Cancelling a scope, or reaching its deadline (or an ancestor's), cancels
 * every task in it and in its child scopes: their blocked calls return
 * -ECANCELED (-ETIMEDOUT for a deadline) within a millisecond, with the
 * kernel operation cancelled. Returns 0 and sets *out, or -EINVAL, -ENOMEM,
 * -ECANCELED / -ETIMEDOUT (the parent is already cancelled / expired).
 */
QL_API int ql_scope_open(struct ql_scope **out, uint64_t deadline_ns);

/* Cancel s and everything in it. Returns 0, -EINVAL for NULL. Any thread. */
QL_API int ql_scope_cancel(struct ql_scope *s);

/*
 * Close s: it is cancelled (tasks still in it are cancelled) and the handle
 * is given back; in the task that opened it, the previous scope becomes
 * current again (close scopes in reverse order of opening). NULL is a no-op.
 * Any thread for a root scope; the opening task for the others.
 */
QL_API void ql_scope_close(struct ql_scope *s);

/* The current deadline of the calling task (the nearest of its scopes), or QL_NO_DEADLINE. */
QL_API uint64_t ql_deadline(void);

/* ------------------------------------------------------------ blocking-style I/O */

/*
 * Blocking-style I/O for stackful tasks. Each call prepares one io_uring
 * operation on the worker's ring, parks the task, and returns when the
 * operation's CQE has arrived: the result (a count, an fd, or 0) or -errno.
 * The operation goes to the kernel in the worker's end-of-tick batch with
 * everything the other tasks prepared. If the task is cancelled or its
 * deadline passes, the operation is cancelled (IORING_OP_ASYNC_CANCEL) and
 * the call returns -ECANCELED or -ETIMEDOUT once the kernel has let go of
 * the buffers; an fd that an accept, openat or socket produced despite the
 * cancel is closed, never leaked. Outside a stackful task every call returns
 * -EPERM; after shutdown, -ESHUTDOWN. Offsets of -1 mean "the file position".
 * ql_shutdown and ql_socket fall back to the plain system call on kernels
 * without the opcode.
 */
QL_API ssize_t ql_read(int fd, void *buf, size_t n);
QL_API ssize_t ql_write(int fd, const void *buf, size_t n);
QL_API ssize_t ql_pread(int fd, void *buf, size_t n, off_t off);
QL_API ssize_t ql_pwrite(int fd, const void *buf, size_t n, off_t off);
QL_API ssize_t ql_readv(int fd, const struct iovec *iov, int iovcnt, off_t off);
QL_API ssize_t ql_writev(int fd, const struct iovec *iov, int iovcnt, off_t off);
QL_API ssize_t ql_recv(int fd, void *buf, size_t n, int flags);
QL_API ssize_t ql_send(int fd, const void *buf, size_t n, int flags);
QL_API ssize_t ql_recvmsg(int fd, struct msghdr *msg, int flags);
QL_API ssize_t ql_sendmsg(int fd, const struct msghdr *msg, int flags);
/* flags: accept4's (SOCK_CLOEXEC, SOCK_NONBLOCK). */
QL_API int ql_accept(int fd, struct sockaddr *addr, socklen_t *len, int flags);
QL_API int ql_connect(int fd, const struct sockaddr *addr, socklen_t len);
QL_API int ql_socket(int domain, int type, int protocol);
QL_API int ql_shutdown(int fd, int how);
QL_API int ql_openat(int dfd, const char *path, int flags, mode_t mode);
QL_API int ql_close(int fd);
QL_API int ql_fsync(int fd);
/* Wait until fd is ready for events (POLLIN, POLLOUT, ...); returns the revents. */
QL_API int ql_poll(int fd, unsigned events);

/* ------------------------------------------------------------ multishot streams */

/*
 * Streams, for stackless code: one armed operation that keeps producing
 * results (kernel multishot accept / recv with ring-mapped provided
 * buffers; on kernels without them, a single-shot operation re-armed after
 * each result). Each result reaches fn as a stackless job on the worker that
 * armed the stream, in the order the kernel produced them.
 */
struct ql_stream;

/* fn's flags: more calls will follow (absent on the final call). */
#define QL_STREAM_MORE 1u

/*
 * Called once per result. With QL_STREAM_MORE: for an accept stream res is
 * a new connected socket (SOCK_CLOEXEC, owned by fn from now on) and buf is
 * NULL; for a recv stream res > 0 bytes are at buf, valid only during the
 * call (the provided buffer goes back to the kernel when fn returns, unless
 * fn keeps it with ql_stream_keep). The final call has flags 0, buf NULL
 * and res 0 (recv: end of file), -errno (the socket's error, e.g.
 * -ECONNRESET), or -ECANCELED (ql_stream_cancel,
 * or executor shutdown); the stream is freed after it returns. A panic in
 * fn ends that call only: the buffer goes back (unless kept already) and the
 * stream goes on.
 */
typedef void (*ql_stream_fn)(void *arg, ssize_t res, const void *buf, unsigned flags);

/* Provided-buffer geometry of a worker's recv streams. */
#define QL_STREAM_BUFS_DEFAULT 1024u	    /* buffers per worker */
#define QL_STREAM_BUF_SIZE_DEFAULT 4096u    /* bytes per buffer */
#define QL_STREAM_BUFS_MAX 32768u	    /* a power of 2, at most this */
#define QL_STREAM_BUF_SIZE_MIN 64u
#define QL_STREAM_BUF_SIZE_MAX (1u << 20)
#define QL_STREAM_BUF_TOTAL_MAX (1ull << 30) /* count x size */

/*
 * Arm a multishot accept on listening socket fd. *out (if out is not NULL)
 * is the handle for ql_stream_cancel, valid until fn's final call returns.
 * Connections that die in the backlog do not end the stream. Returns 0 (fn
 * will be called until a final call), or -errno and fn is never called:
 * -EBADF (fd < 0), -EINVAL (NULL fn), -EPERM outside a worker, -ESHUTDOWN
 * once the executor is stopping, -ENOMEM. Only from a worker thread.
 */
QL_API int ql_accept_multi(int fd, ql_stream_fn fn, void *arg, struct ql_stream **out);

/*
 * Arm a multishot recv on connected socket fd, into the calling worker's
 * provided buffers (a group of QL_STREAM_BUFS_DEFAULT x
 * QL_STREAM_BUF_SIZE_DEFAULT bytes, or what ql_stream_buffers set, created
 * on the worker's first call). Data larger than a buffer arrives in several
 * calls. When every buffer is in use the stream stalls and resumes by
 * itself as buffers come back (counted in ql_stream_stats.stalls); that is
 * never an error. Close fd only after the final call. Returns and errors as
 * ql_accept_multi, plus the error of registering the buffers.
 */
QL_API int ql_recv_multi(int fd, ql_stream_fn fn, void *arg, struct ql_stream **out);

/*
 * Cancel s: results not yet delivered are dropped (accepted sockets are
 * closed), and fn's next call is its final one, with -ECANCELED (even if
 * the stream was ending anyway). Returns 0, -EINVAL (NULL), -EPERM (not on
 * the stream's worker), -EALREADY (already cancelled). Only from the
 * stream's worker, before its final call has returned (fn may call it).
 */
QL_API int ql_stream_cancel(struct ql_stream *s);

/*
 * Keep the buffer of the recv result fn is handling: called inside fn with
 * the buf fn got, it stops the buffer from going back to the kernel when fn
 * returns; it stays valid (and out of the worker's group, so hold few and
 * briefly: when all are kept the worker's recv streams stall) until
 * ql_stream_release. For sending the bytes straight from it, e.g. with
 * ql_send_cb, releasing it in the send's continuation. Returns 0, -EINVAL
 * (NULL, or not the buffer of the call in progress), -ENOBUFS (less than a
 * quarter of the group is left to the kernel: copy the bytes instead),
 * -EPERM (not inside a recv stream's fn called with data). Only from that
 * fn.
 */
QL_API int ql_stream_keep(const void *buf);

/*
 * Give a buffer kept with ql_stream_keep back to the worker's group (a
 * stalled recv stream resumes). Returns 0, -EINVAL (NULL, or not a buffer
 * of this worker kept now: each kept buffer is released once), -EPERM (not
 * on a worker). Only from the worker whose stream delivered it.
 */
QL_API int ql_stream_release(const void *buf);

/*
 * Set the calling worker's provided-buffer geometry: count buffers (a power
 * of 2, at most QL_STREAM_BUFS_MAX) of size bytes (QL_STREAM_BUF_SIZE_MIN ..
 * QL_STREAM_BUF_SIZE_MAX, count x size at most QL_STREAM_BUF_TOTAL_MAX).
 * Before the worker's first ql_recv_multi (ql_spawn_on reaches each
 * worker). Returns 0, -EINVAL, -EBUSY (the group exists already), -EPERM
 * outside a worker, -ESHUTDOWN.
 */
QL_API int ql_stream_buffers(unsigned count, size_t size);

/* The calling worker's stream counters. */
struct ql_stream_stats {
	size_t sz;	  /* in: sizeof(struct ql_stream_stats) */
	unsigned nbufs;	  /* buffer geometry */
	size_t buf_size;
	unsigned avail;	  /* buffers the kernel may fill now (0 before the group exists) */
	uint64_t live;	  /* streams armed or with their final call pending */
	uint64_t results; /* results delivered with QL_STREAM_MORE */
	uint64_t dropped; /* results dropped after a cancel */
	uint64_t stalls;  /* times a recv stream found no buffer (the worker's ring) */
	uint64_t rearms;  /* re-arms of streams (the worker's ring) */
};

/*
 * Read the calling worker's counters. Returns 0, -EINVAL (NULL, or out->sz
 * too small), -EPERM outside a worker, -ESHUTDOWN.
 */
QL_API int ql_stream_stats(struct ql_stream_stats *out);

/*
 * Run fn(arg) as a stackless job on worker `worker` (0 .. workers-1) of ex,
 * never stolen by another worker: for work tied to that worker's ring (its
 * listeners, its buffer geometry). Such a job is never dropped: once
 * queued it runs, even if shutdown begins. Returns 0, -EINVAL (NULL ex or
 * fn, worker out of range), -ESHUTDOWN (after shutdown began; from a worker
 * of ex, once it is stopping), -ENOMEM. Any thread.
 */
QL_API int ql_spawn_on(struct ql_exec *ex, unsigned worker, void (*fn)(void *), void *arg);

#ifdef __cplusplus
}
#endif

#endif
