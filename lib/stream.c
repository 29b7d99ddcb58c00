/* SPDX-License-Identifier: MIT */
/*
 * lib/stream.c - multishot streams in the public API: ql_accept_multi,
 * ql_recv_multi, ql_stream_cancel, the per-worker provided-buffer group they
 * read into (ql_stream_buffers, ql_stream_stats), and ql_spawn_on, which
 * lets a program put work (a listener, a buffer setting) on one worker.
 *
 * What it owns. A struct ql_stream is one ring-layer stream (uring/ring.h:
 * ql__ring_accept_stream / ql__ring_recv_stream, which do kernel multishot
 * or a re-armed single shot, and treat -ENOBUFS as a stall) plus what the
 * user gave: fn, arg. The ring calls this file's continuation (stream_cqe)
 * inside its reap, once per CQE; user code never runs there. The result is
 * appended to the stream's own FIFO of results and, if none is queued yet,
 * a delivery job is queued on the worker's ready list (ql__run_on: FIFO, not
 * stealable, run even while the executor stops). The job hands the results
 * to fn in the order the kernel produced them, as an ordinary stackless job
 * (so fn may ql_defer, panic, call the *_cb functions), and gives each
 * provided buffer back to the kernel when fn returns, unless fn kept it
 * (ql_stream_keep: then it is the user's until ql_stream_release, e.g. to
 * send straight from it; stream_local.kept marks such buffers so that a
 * release names only a kept one and none goes back twice). A per-stream FIFO is
 * needed because the worker's LIFO slot would reorder two CQEs of one
 * stream reaped in the same batch. The job pushes deliver_end on its defer
 * chain, so that a panic in fn (which ends the job) still gives the buffer
 * back, frees a finished stream and queues a job for the results left: the
 * panic ends that call, not the stream.
 *
 * Per-worker state (struct stream_local) lives in a thread-local pointer of
 * the worker thread: the buffer group (created on the first ql_recv_multi of
 * that worker, since only a ring's owner may register buffers on it), the
 * geometry to create it with, a free list of stream records (no malloc per
 * connection in steady state) and counters. A pthread key destructor frees
 * it when the worker thread exits, which is after the worker's ring was
 * torn down (lib/exec.c: worker_stop runs ql__ring_exit, then the jobs).
 *
 * Lifetime. A stream record holds the ring's completion record, so it is
 * freed only after its final result was delivered, which comes after the
 * ring's final CQE for it: the kernel never touches freed memory. At
 * executor shutdown, ql__ring_exit cancels every stream; their final CQEs
 * queue delivery jobs, which worker_stop runs: each fn gets its final call
 * (-ECANCELED), and every record is freed before the worker exits.
 *
 * Threads. Everything here runs on the stream's worker (the owner of its
 * ring), except ql_spawn_on, which any thread may call. No atomics: nothing
 * in this file is shared between threads.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* The buffer group id of the streams' group on every worker ring. */
#define STREAM_BGID 0x5157u
/* Stream records kept per worker for reuse. */
#define STREAM_POOL_MAX 4096u
/* ql_stream_keep refuses when fewer than 1/this of the group is left to the kernel. */
#define STREAM_KEEP_RESERVE 4u
/* Results a stream queues without a heap array. */
#define STREAM_INLINE_RES 4u

/* One result waiting for delivery: the CQE's res and flags. */
struct stream_res {
	int32_t res;
	uint32_t flags; /* CQE flags: F_MORE (not final), F_BUFFER and the buffer id */
};

struct stream_local;

struct ql_stream {
	struct ql_op op;	  /* the ring's record: lives until the final CQE */
	ql_stream_fn fn;
	void *arg;
	struct stream_local *sl;  /* its worker's state */
	struct ql_stream *next;	  /* free list link */
	uint8_t recv;		  /* recv stream (else accept) */
	uint8_t cancelled;	  /* ql_stream_cancel was called */
	uint8_t ended;		  /* the final result is queued (or delivered) */
	uint8_t scheduled;	  /* a delivery job is queued or running */
	uint8_t done;		  /* the final call was made: free it at the delivery's end */
	uint32_t hand;		  /* buffer id + 1 of the result fn is handling, or 0 */
	unsigned head, n, cap;	  /* queued results: q[head..n) */
	struct stream_res *q;	  /* inl, or a heap array when more are queued */
	struct stream_res inl[STREAM_INLINE_RES];
};

struct stream_local {
	struct ql_worker *w;	  /* the worker this state belongs to */
	struct ql_bufgroup *bg;	  /* the recv streams' buffers, or NULL until needed */
	unsigned nbufs;		  /* geometry for bg */
	size_t bufsize;
	struct ql_stream *pool;	  /* idle stream records */
	unsigned npool;
	struct ql_stream *cur;	  /* the stream whose fn is running with data, or NULL */
	uint8_t *kept;		  /* per buffer id: 1 while the user keeps it */
	uint64_t live;		  /* streams not yet freed */
	uint64_t results;	  /* results delivered to fns */
	uint64_t dropped;	  /* results dropped after a cancel (fds closed) */
};

static __thread struct stream_local *tl_local;
static pthread_key_t local_key;
static pthread_once_t local_once = PTHREAD_ONCE_INIT;
static int local_key_err;

/* ------------------------------------------------------------ per-worker state */

/*
 * Thread exit of a worker: its ring is gone (so the group is orphaned, see
 * ql__ring_exit) and every stream of it has had its final call. Free it all.
 */
static void local_free(void *p)
{
	struct stream_local *sl = p;

	if (!sl)
		return;
	if (sl->live)
		fprintf(stderr, "qilin: %llu stream(s) still live when their worker exited\n",
			(unsigned long long)sl->live);
	ql__bufgroup_destroy(sl->bg);
	free(sl->kept);
	while (sl->pool) {
		struct ql_stream *s = sl->pool;

		sl->pool = s->next;
		free(s);
	}
	if (tl_local == sl)
		tl_local = NULL;
	free(sl);
}

static void local_key_init(void)
{
	local_key_err = -pthread_key_create(&local_key, local_free);
}

/*
 * The calling worker's stream state, made on first use. Sets *err and
 * returns NULL when the caller is not a worker (-EPERM), the executor is
 * stopping (-ESHUTDOWN), or on -ENOMEM.
 */
static struct stream_local *local_get(int *err)
{
	struct ql_worker *w = ql__self;
	struct stream_local *sl = tl_local;

	if (!w) {
		*err = -EPERM;
		return NULL;
	}
	if (ql__exec_state(w->ex) == QL_EXEC_STOPPING || !w->ring.live) {
		*err = -ESHUTDOWN;
		return NULL;
	}
	if (sl && sl->w == w)
		return sl;
	pthread_once(&local_once, local_key_init);
	if (local_key_err) {
		*err = local_key_err;
		return NULL;
	}
	sl = calloc(1, sizeof(*sl));
	if (!sl) {
		*err = -ENOMEM;
		return NULL;
	}
	sl->w = w;
	sl->nbufs = QL_STREAM_BUFS_DEFAULT;
	sl->bufsize = QL_STREAM_BUF_SIZE_DEFAULT;
	if (pthread_setspecific(local_key, sl) != 0) {
		free(sl);
		*err = -ENOMEM;
		return NULL;
	}
	tl_local = sl;
	return sl;
}

static void stream_deliver(void *p);

static struct ql_stream *stream_alloc(struct stream_local *sl)
{
	struct ql_stream *s = sl->pool;

	if (s) {
		sl->pool = s->next;
		sl->npool--;
	} else {
		s = malloc(sizeof(*s));
		if (!s)
			return NULL;
	}
	memset(s, 0, sizeof(*s));
	s->sl = sl;
	s->q = s->inl;
	s->cap = STREAM_INLINE_RES;
	sl->live++;
	return s;
}

static void stream_free(struct ql_stream *s)
{
	struct stream_local *sl = s->sl;

	if (s->q != s->inl)
		free(s->q);
	sl->live--;
	if (sl->npool >= STREAM_POOL_MAX) {
		free(s);
		return;
	}
	s->next = sl->pool;
	sl->pool = s;
	sl->npool++;
}

/* ------------------------------------------------------------ delivery */

/* Give back the buffer a result carries (a no-op once the ring is gone). */
static void res_release(struct ql_stream *s, const struct stream_res *e)
{
	if (s->recv) {
		if (e->flags & IORING_CQE_F_BUFFER)
			ql__bufgroup_put(s->sl->bg, ql__bufgroup_bid(e->flags));
	} else if (e->res >= 0) {
		/* An accepted connection nobody will see: do not leak it. */
		close(e->res);
	}
}

/*
 * Hand every queued result, in order, to fn. Results that arrive while it
 * runs (a reap inside a *_cb call of fn) join the queue and are delivered by
 * this same loop: `scheduled` stays set, so no second job is queued for
 * them. After the final call it stops and marks the stream done.
 */
static void deliver_loop(struct ql_stream *s)
{
	struct stream_local *sl = s->sl;

	while (s->head < s->n) {
		struct stream_res e = s->q[s->head++];

		if (!(e.flags & IORING_CQE_F_MORE)) {
			/* The final result: the ring has let go of the record. */
			ssize_t res = s->cancelled ? -ECANCELED : e.res;

			s->head = s->n = 0;
			s->done = 1;
			s->fn(s->arg, res, NULL, 0);
			return;
		}
		if (s->cancelled || (s->recv ? e.res <= 0 : e.res < 0)) {
			/* Dropped: after a cancel, or a result that is no data. */
			res_release(s, &e);
			sl->dropped++;
			continue;
		}
		const void *buf = NULL;

		if (s->recv) {
			buf = ql__bufgroup_buf(sl->bg, e.flags);
			if (!buf) {
				sl->dropped++;
				continue;
			}
			s->hand = ql__bufgroup_bid(e.flags) + 1;
		}
		sl->results++;
		/* Saved and restored: the out-of-memory path delivers inside another fn. */
		struct ql_stream *outer = sl->cur;

		sl->cur = s;
		s->fn(s->arg, e.res, buf, QL_STREAM_MORE);
		sl->cur = outer;
		/* hand is 0 here if fn kept the buffer (ql_stream_keep): it is the user's now. */
		if (s->hand) {
			s->hand = 0;
			ql__bufgroup_put(sl->bg, ql__bufgroup_bid(e.flags));
		}
	}
	s->head = s->n = 0;
}

/*
 * The end of a delivery, also when fn panicked out of it (a deferred call of
 * the delivery job): the buffer fn held goes back, a done stream is freed,
 * and results still queued get a new job.
 */
static void deliver_end(void *p)
{
	struct ql_stream *s = p;

	/* After a panic in fn (which skipped the restore in deliver_loop): s's delivery is over. */
	if (s->sl->cur == s)
		s->sl->cur = NULL;
	if (s->hand) {
		ql__bufgroup_put(s->sl->bg, s->hand - 1);
		s->hand = 0;
	}
	s->scheduled = 0;
	if (s->done) {
		stream_free(s);
		return;
	}
	/* Only after a panic: the next CQE retries if no job can be had now. */
	if (s->head < s->n && ql__run_on(s->sl->w, stream_deliver, s) == 0)
		s->scheduled = 1;
}

/* The delivery job, queued by stream_cqe. */
static void stream_deliver(void *p)
{
	struct ql_stream *s = p;
	/* A panic in fn unwinds through the job's defer chain: deliver_end runs. */
	int deferred = ql_defer(deliver_end, s) == 0;

	deliver_loop(s);
	if (!deferred)
		deliver_end(s);
}

/* Append a result to the stream's FIFO; 0 or -ENOMEM. */
static int res_push(struct ql_stream *s, int res, unsigned flags)
{
	if (s->n == s->cap) {
		if (s->head) {
			/* Slide the undelivered part down first. */
			memmove(s->q, s->q + s->head, (s->n - s->head) * sizeof(*s->q));
			s->n -= s->head;
			s->head = 0;
		}
		if (s->n == s->cap) {
			unsigned cap = s->cap * 2;
			struct stream_res *q = malloc(cap * sizeof(*q));

			if (!q)
				return -ENOMEM;
			memcpy(q, s->q, s->n * sizeof(*q));
			if (s->q != s->inl)
				free(s->q);
			s->q = q;
			s->cap = cap;
		}
	}
	s->q[s->n].res = res;
	s->q[s->n].flags = flags;
	s->n++;
	return 0;
}

/*
 * The ring's continuation, inside its reap: record the result and make sure
 * a delivery job is queued. Never runs user code.
 */
static void stream_cqe(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct ql_stream *s = (struct ql_stream *)((char *)op - offsetof(struct ql_stream, op));
	int final = !(flags & IORING_CQE_F_MORE);

	if (final)
		s->ended = 1;
	if (res_push(s, res, flags) < 0) {
		/*
		 * No memory to queue it: a data result is dropped (its buffer
		 * or fd released), a final one is never lost, since the inline
		 * slots are used first and a final result replaces the last
		 * queued data result, whose buffer goes back.
		 */
		struct stream_res e = { .res = res, .flags = flags };

		if (!final) {
			res_release(s, &e);
			s->sl->dropped++;
			return;
		}
		res_release(s, &s->q[s->n - 1]);
		s->q[s->n - 1] = e;
		s->sl->dropped++;
	}
	if (s->scheduled)
		return;
	if (ql__run_on(s->sl->w, stream_deliver, s) == 0) {
		s->scheduled = 1;
		return;
	}
	/*
	 * No job record (out of memory): deliver right here. This is inside
	 * the reap, which the ring layer allows its continuations to re-enter
	 * through SQE acquisition; fn runs as it would in a job, but without
	 * the defer chain (a panic in it would skip deliver_end).
	 */
	(void)r;
	s->scheduled = 1;
	deliver_loop(s);
	deliver_end(s);
}

/* ------------------------------------------------------------ public API */

int ql_stream_buffers(unsigned count, size_t size)
{
	struct stream_local *sl;
	int err = 0;

	if (count == 0 || count > QL_STREAM_BUFS_MAX || (count & (count - 1)) ||
	    size < QL_STREAM_BUF_SIZE_MIN || size > QL_STREAM_BUF_SIZE_MAX ||
	    (uint64_t)count * size > QL_STREAM_BUF_TOTAL_MAX)
		return -EINVAL;
	sl = local_get(&err);
	if (!sl)
		return err;
	if (sl->bg)
		return -EBUSY;
	sl->nbufs = count;
	sl->bufsize = size;
	return 0;
}

int ql_stream_stats(struct ql_stream_stats *out)
{
	struct stream_local *sl;
	struct ql_ring_stats rs;
	int err = 0;

	if (!out || out->sz < sizeof(*out))
		return -EINVAL;
	sl = local_get(&err);
	if (!sl)
		return err;
	ql__ring_stats(&sl->w->ring, &rs);
	out->nbufs = sl->nbufs;
	out->buf_size = sl->bufsize;
	out->avail = sl->bg ? ql__bufgroup_avail(sl->bg) : 0;
	out->live = sl->live;
	out->results = sl->results;
	out->dropped = sl->dropped;
	out->stalls = rs.enobufs;
	out->rearms = rs.rearms;
	return 0;
}

/* The checks and set-up both stream kinds share. */
static int stream_begin(int fd, ql_stream_fn fn, struct ql_stream **out,
			struct stream_local **slp, struct ql_stream **sp)
{
	struct stream_local *sl;
	int err = 0;

	if (out)
		*out = NULL;
	if (fd < 0)
		return -EBADF;
	if (!fn)
		return -EINVAL;
	sl = local_get(&err);
	if (!sl)
		return err;
	*sp = stream_alloc(sl);
	if (!*sp)
		return -ENOMEM;
	*slp = sl;
	return 0;
}

int ql_accept_multi(int fd, ql_stream_fn fn, void *arg, struct ql_stream **out)
{
	struct stream_local *sl;
	struct ql_stream *s;
	int ret = stream_begin(fd, fn, out, &sl, &s);

	if (ret < 0)
		return ret;
	s->fn = fn;
	s->arg = arg;
	ret = ql__ring_accept_stream(&sl->w->ring, &s->op, fd, stream_cqe);
	if (ret < 0) {
		stream_free(s);
		return ret;
	}
	if (out)
		*out = s;
	return 0;
}

int ql_recv_multi(int fd, ql_stream_fn fn, void *arg, struct ql_stream **out)
{
	struct stream_local *sl;
	struct ql_stream *s;
	int ret = stream_begin(fd, fn, out, &sl, &s);

	if (ret < 0)
		return ret;
	if (!sl->bg) {
		ret = ql__bufgroup_create(&sl->w->ring, STREAM_BGID, sl->nbufs, sl->bufsize,
					  &sl->bg);
		if (ret < 0) {
			sl->bg = NULL;
			stream_free(s);
			return ret;
		}
		sl->kept = calloc(sl->nbufs, 1);
		if (!sl->kept) {
			ql__bufgroup_destroy(sl->bg);
			sl->bg = NULL;
			stream_free(s);
			return -ENOMEM;
		}
	}
	s->fn = fn;
	s->arg = arg;
	s->recv = 1;
	ret = ql__ring_recv_stream(&sl->w->ring, &s->op, fd, sl->bg, stream_cqe);
	if (ret < 0) {
		stream_free(s);
		return ret;
	}
	if (out)
		*out = s;
	return 0;
}

int ql_stream_keep(const void *buf)
{
	struct stream_local *sl = tl_local;
	struct ql_stream *s;
	int bid;

	if (!buf)
		return -EINVAL;
	if (!ql__self || !sl || sl->w != ql__self || !(s = sl->cur))
		return -EPERM;
	bid = ql__bufgroup_bid_of(sl->bg, buf);
	if (bid < 0 || s->hand != (uint32_t)bid + 1)
		return -EINVAL;
	/*
	 * Keep a quarter of the group for the kernel: kept buffers are out of
	 * it, and a group run dry stalls every recv stream of the worker (each
	 * stall costs a re-arm). The caller copies instead.
	 */
	if (ql__bufgroup_avail(sl->bg) < sl->nbufs / STREAM_KEEP_RESERVE)
		return -ENOBUFS;
	/* The delivery no longer owns it: deliver_loop and deliver_end skip it. */
	s->hand = 0;
	sl->kept[bid] = 1;
	return 0;
}

int ql_stream_release(const void *buf)
{
	struct stream_local *sl = tl_local;
	int bid;

	if (!buf)
		return -EINVAL;
	if (!ql__self || !sl || sl->w != ql__self)
		return -EPERM;
	bid = ql__bufgroup_bid_of(sl->bg, buf);
	if (bid < 0 || !sl->kept[bid])
		return -EINVAL;
	sl->kept[bid] = 0;
	/* Back to the kernel: a stalled stream re-arms (a no-op once the ring is gone). */
	ql__bufgroup_put(sl->bg, (unsigned)bid);
	return 0;
}

int ql_stream_cancel(struct ql_stream *s)
{
	int ret;

	if (!s)
		return -EINVAL;
	if (ql__self != s->sl->w)
		return -EPERM;
	if (s->cancelled)
		return -EALREADY;
	s->cancelled = 1;
	if (s->ended)
		return 0; /* its final result is queued: it will say -ECANCELED */
	ret = ql__ring_cancel(&s->sl->w->ring, &s->op);
	/* -EALREADY: between two armings, inside the ring; it ends after. */
	return ret == -EALREADY ? 0 : ret;
}

int ql_spawn_on(struct ql_exec *ex, unsigned worker, void (*fn)(void *), void *arg)
{
	struct ql_worker *self = ql__self;
	int state;

	if (!ex || !fn || worker >= ex->nworkers)
		return -EINVAL;
	state = ql__exec_state(ex);
	if (self && self->ex == ex) {
		/* Like ql_spawn from a worker: allowed while shutdown drains. */
		if (state == QL_EXEC_STOPPING)
			return -ESHUTDOWN;
	} else if (state != QL_EXEC_RUNNING) {
		return -ESHUTDOWN;
	}
	return ql__run_on(ex->workers[worker], fn, arg);
}
