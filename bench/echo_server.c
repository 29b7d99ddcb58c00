/* SPDX-License-Identifier: MIT */
/*
 * bench/echo_server.c - qilin's TCP echo server for the echo scenario (bench/run.sh echo).
 *
 * Written on the public API only, the way a user would, in one of two styles (-m):
 *
 *   stream (default)  stackless, the way qilin-httpd is written: per worker (ql_spawn_on) one
 *            SO_REUSEPORT listener with a multishot accept (ql_accept_multi); each connection
 *            gets a multishot recv into the worker's provided buffers (ql_recv_multi). A
 *            result that finds nothing queued and no send in flight (the usual case) is sent
 *            back with ql_send_cb straight from the provided buffer, kept (ql_stream_keep)
 *            until the send's continuation releases it (ql_stream_release): no copy. Otherwise
 *            it is appended to the connection's pending bytes, one send in flight per
 *            connection (what arrives meanwhile goes out in the next one), in buffers from a
 *            per-worker pool held only while there is something to send. No stack, no
 *            context switch, no re-arm per message.
 *   task     stackful, the blocking style: per worker one SO_REUSEPORT listener and one
 *            acceptor task blocked in ql_accept(); each connection a ql_go task (started on
 *            the acceptor's worker) that loops ql_recv() into a buffer on its stack and
 *            ql_send()s every byte back.
 *
 * Either way the workers are pinned one per CPU of the affinity mask (or -w N), each
 * connection lives on the worker that accepted it, and every recv and send that a worker
 * prepares in one scheduler tick goes to the kernel in that tick's single io_uring_enter: the
 * batching the library does by itself, which is what this server measures against epoll's
 * one system call per read and per write.
 *
 * Threads: main() only sets up, then waits in sigwait() for SIGTERM or SIGINT (blocked in
 * every thread: the workers inherit the mask). Task mode: it cancels the root scope (the
 * acceptors and every connection return -ECANCELED from their blocked call); connections close
 * their socket with a deferred close(2), which runs however the task ends. Stream mode: a job
 * on each worker cancels its accept stream and every connection's recv stream; a connection
 * is freed once its final recv call and its last send are both done. Then main() shuts the
 * executor down and closes the listeners. All stream-mode state of a worker (struct sw) is
 * touched only by that worker.
 *
 * Prints "listening on ADDR:PORT" once every acceptor runs, and at exit one line on stderr with
 * the executor's counters (jobs run, ticks, io_uring_enter calls, SQEs, CQEs, parks, wake-ups:
 * per message, how well the work was batched and how often the worker slept). Exit 0 after a
 * clean shutdown, 1 when setting up failed (the reason on stderr), 2 on a usage error.
 *
 * Where its time goes (perf record -g on the server under bench/run.sh echo's load, 64 B): about
 * 90% in the kernel, nearly all of it the TCP send path (including the loopback delivery to the
 * client's socket, which runs in the sender's context) and the recv in the ring's task work;
 * the library and this file are the rest. With 1000 connections the default 1024 provided
 * buffers of 4 KiB do not stall; 256 stalled millions of times and cost a quarter of the
 * throughput (-b and -B set the geometry, for such experiments).
 *
 *   echo_server -p 7000 [-a 127.0.0.1] [-w WORKERS] [-r RING_SIZE] [-m stream|task]
 *               [-b BUFFERS] [-B BUFFER_SIZE]
 */
#define BENCH_PROG "echo_server"
#include "bench_util.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <qilin.h>

#define CONN_BUF (16 * 1024)

static struct ql_exec *ex;

static void close_fd(void *arg)
{
	close((int)(intptr_t)arg);
}

/* Write all n bytes of p. Returns 0 or the -errno of ql_send. */
static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = ql_send(fd, p, n, MSG_NOSIGNAL);

		if (k < 0)
			return (int)k;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* One stackful task per connection: echo until the peer closes, an error, or cancellation. */
static void conn_task(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[CONN_BUF];
	ssize_t n;

	if (ql_defer(close_fd, arg) < 0) {
		close(fd);
		return;
	}
	while ((n = ql_recv(fd, buf, sizeof(buf), 0)) > 0)
		if (send_all(fd, buf, (size_t)n) < 0)
			break;
}

/* One acceptor per listener; its connections are started on its worker. */
static void acceptor_task(void *arg)
{
	struct ql_task_opts o = { .sz = sizeof(o), .name = "echo-conn" };
	int lfd = (int)(intptr_t)arg, one = 1;

	for (;;) {
		int fd = ql_accept(lfd, NULL, NULL, SOCK_CLOEXEC), err;

		if (fd == -EMFILE || fd == -ENFILE || fd == -ECONNABORTED || fd == -ENOMEM) {
			if (fd != -ECONNABORTED)
				fprintf(stderr, BENCH_PROG ": accept: %s (backing off 10 ms)\n",
					strerror(-fd));
			if (ql_sleep(10000000) < 0)
				return;
			continue;
		}
		if (fd < 0) {
			if (fd != -ECANCELED && fd != -ESHUTDOWN)
				fprintf(stderr, BENCH_PROG ": accept: %s\n", strerror(-fd));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		err = ql_go(ex, conn_task, (void *)(intptr_t)fd, &o, NULL);
		if (err < 0) {
			fprintf(stderr, BENCH_PROG ": ql_go: %s\n", strerror(-err));
			close(fd);
		}
	}
}

/* ------------------------------------------------------------ stream mode */

/* A connection in stream mode: bytes received and not yet sent, and the send in flight. */
struct sconn {
	int fd;
	struct sw *w;
	struct ql_stream *rs;	   /* the recv stream, until its final call */
	struct sconn *prev, *next; /* the worker's live list */
	char *pend, *fly;	   /* pending bytes; bytes being sent */
	size_t pend_len, pend_cap, fly_len, fly_cap, fly_off;
	unsigned char recv_done; /* the recv stream made its final call */
	unsigned char sending;	 /* a ql_send_cb is in flight */
	unsigned char fly_kept;	 /* fly is a provided buffer kept with ql_stream_keep */
};

/* One per worker, touched only by that worker. */
struct sw {
	int lfd;
	unsigned idx;
	struct ql_stream *acc; /* the accept stream, until its final call */
	struct sconn *live;    /* connections not yet freed */
	char *pool;	       /* idle SLOT-byte buffers, linked through their first bytes */
	unsigned npool;
	int setup_err;	       /* 0, or the -errno of arming the accept stream */
	atomic_int ready;      /* 1 once the setup job has run (release; main acquires) */
};

#define PEND_MAX (4u << 20) /* pending bytes per connection before it is closed */
#define SLOT 4096u	    /* a pooled buffer: what one message of the scenario needs */
#define POOL_KEEP 4096u	    /* idle buffers kept per worker */

static struct sw *sws;
/* Provided-buffer geometry of every worker (-b, -B); 0: the library's default. */
static unsigned g_nbufs;
static size_t g_bufsize;

/*
 * Buffers. A connection holds a buffer only while it has bytes to send:
 * on_recv takes one from the worker's pool (LIFO, so the buffer is warm in
 * the cache), the send takes it over, and it goes back when the send has
 * completed. The memory touched per message is then that of the few sends
 * in flight, not 2 buffers x 1000 connections. More than SLOT pending bytes
 * grow the buffer with realloc; such a buffer is freed, not pooled.
 */
static char *slot_get(struct sw *w)
{
	char *p = w->pool;

	if (!p)
		return malloc(SLOT);
	memcpy(&w->pool, p, sizeof(char *));
	w->npool--;
	return p;
}

/* Give back *p (of capacity *cap); *p, *cap and *len are then 0. */
static void buf_put(struct sw *w, char **p, size_t *cap, size_t *len)
{
	if (*p && *cap == SLOT && w->npool < POOL_KEEP) {
		memcpy(*p, &w->pool, sizeof(char *));
		w->pool = *p;
		w->npool++;
	} else {
		free(*p);
	}
	*p = NULL;
	*cap = *len = 0;
}

/* Give back the buffer that was in flight: a kept provided buffer, or a pooled one. */
static void fly_put(struct sconn *c)
{
	if (c->fly_kept) {
		ql_stream_release(c->fly);
		c->fly_kept = 0;
		c->fly = NULL;
		c->fly_cap = c->fly_len = 0;
		return;
	}
	buf_put(c->w, &c->fly, &c->fly_cap, &c->fly_len);
}

static void sconn_free(struct sconn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		c->w->live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	buf_put(c->w, &c->pend, &c->pend_cap, &c->pend_len);
	fly_put(c);
	free(c);
}

static void on_sent(void *arg, ssize_t res);

/* Send the buffer now in flight (fly_len bytes) from its start; a failure stops the reading. */
static void fly_send(struct sconn *c)
{
	int err;

	c->fly_off = 0;
	err = ql_send_cb(c->fd, c->fly, c->fly_len, MSG_NOSIGNAL, on_sent, c);
	if (err < 0) {
		fprintf(stderr, BENCH_PROG ": ql_send_cb: %s\n", strerror(-err));
		if (!c->recv_done)
			ql_stream_cancel(c->rs);
		return;
	}
	c->sending = 1;
}

/* Send what is pending, if nothing is in flight: the pending buffer goes out. */
static void sconn_flush(struct sconn *c)
{
	if (c->sending || !c->pend_len)
		return;
	/* Nothing in flight: the pending buffer becomes the one in flight. */
	fly_put(c);
	c->fly = c->pend;
	c->fly_cap = c->pend_cap;
	c->fly_len = c->pend_len;
	c->pend = NULL;
	c->pend_cap = c->pend_len = 0;
	fly_send(c);
}

static void on_sent(void *arg, ssize_t res)
{
	struct sconn *c = arg;
	int err;

	c->sending = 0;
	if (res <= 0) {
		/* The peer is gone: stop reading; the final recv call frees. */
		c->pend_len = 0;
		if (!c->recv_done)
			ql_stream_cancel(c->rs);
		else
			sconn_free(c);
		return;
	}
	c->fly_off += (size_t)res;
	if (c->fly_off < c->fly_len) {
		err = ql_send_cb(c->fd, c->fly + c->fly_off, c->fly_len - c->fly_off, MSG_NOSIGNAL,
				 on_sent, c);
		if (err == 0) {
			c->sending = 1;
			return;
		}
		c->pend_len = 0;
		if (!c->recv_done)
			ql_stream_cancel(c->rs);
	}
	/* All of it sent (or given up): the buffer goes back to the pool. */
	fly_put(c);
	sconn_flush(c);
	if (c->recv_done && !c->sending)
		sconn_free(c);
}

static void on_recv(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct sconn *c = arg;

	if (!(flags & QL_STREAM_MORE)) {
		/* Final call: end of file, an error or a cancel. Free once the last send is back. */
		c->recv_done = 1;
		c->rs = NULL;
		if (!c->sending)
			sconn_free(c);
		return;
	}
	if (!c->sending && !c->pend_len && ql_stream_keep(buf) == 0) {
		/*
		 * Nothing queued and nothing in flight (the usual case): send
		 * straight from the provided buffer, kept until the send is back
		 * (or, if the send fails, until the connection is freed).
		 */
		fly_put(c);
		c->fly = (char *)buf;
		c->fly_kept = 1;
		c->fly_cap = c->fly_len = (size_t)res;
		fly_send(c);
		return;
	}
	if (!c->pend && (size_t)res <= SLOT) {
		c->pend = slot_get(c->w);
		if (!c->pend) {
			ql_stream_cancel(c->rs);
			return;
		}
		c->pend_cap = SLOT;
	}
	if (c->pend_len + (size_t)res > c->pend_cap) {
		size_t cap = c->pend_cap ? c->pend_cap : SLOT;
		char *p;

		while (cap < c->pend_len + (size_t)res)
			cap *= 2;
		p = cap <= PEND_MAX ? realloc(c->pend, cap) : NULL;
		if (!p) {
			ql_stream_cancel(c->rs);
			return;
		}
		c->pend = p;
		c->pend_cap = cap;
	}
	memcpy(c->pend + c->pend_len, buf, (size_t)res);
	c->pend_len += (size_t)res;
	sconn_flush(c);
}

static void on_accept(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct sw *w = arg;
	struct sconn *c;
	int one = 1, err;

	if (!(flags & QL_STREAM_MORE)) {
		w->acc = NULL;
		if (res != -ECANCELED && res != -ESHUTDOWN)
			fprintf(stderr, BENCH_PROG ": accept stream ended: %s\n",
				strerror((int)-res));
		return;
	}
	setsockopt((int)res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c) {
		close((int)res);
		return;
	}
	c->fd = (int)res;
	c->w = w;
	err = ql_recv_multi(c->fd, on_recv, c, &c->rs);
	if (err < 0) {
		fprintf(stderr, BENCH_PROG ": ql_recv_multi: %s\n", strerror(-err));
		close(c->fd);
		free(c);
		return;
	}
	c->next = w->live;
	if (w->live)
		w->live->prev = c;
	w->live = c;
}

/* On worker w->idx: arm the accept stream. */
static void sw_start(void *arg)
{
	struct sw *w = arg;

	/* Before the worker's first ql_recv_multi, which creates its buffer group. */
	w->setup_err = g_nbufs ? ql_stream_buffers(g_nbufs, g_bufsize) : 0;
	if (w->setup_err == 0)
		w->setup_err = ql_accept_multi(w->lfd, on_accept, w, &w->acc);
	/* Release: main reads setup_err after seeing ready. */
	atomic_store_explicit(&w->ready, 1, memory_order_release);
}

/* On worker w->idx: stop accepting, cancel every connection's recv stream. */
static void sw_stop(void *arg)
{
	struct ql_stream_stats ss = { .sz = sizeof(ss) };
	struct sw *w = arg;
	struct sconn *c, *next;

	/* Say whether the provided buffers ever ran out (the recv streams then stalled). */
	if (ql_stream_stats(&ss) == 0 && ss.stalls)
		fprintf(stderr,
			BENCH_PROG ": worker %u: recv streams stalled %" PRIu64 " times (%u buffers"
				   " of %zu bytes)\n",
			w->idx, ss.stalls, ss.nbufs, ss.buf_size);
	if (w->acc)
		ql_stream_cancel(w->acc);
	/* Take next first, should a final call ever come synchronously and free c. */
	for (c = w->live; c; c = next) {
		next = c->next;
		if (!c->recv_done && c->rs)
			ql_stream_cancel(c->rs);
	}
	atomic_store_explicit(&w->ready, 2, memory_order_release);
}

static int listen_on(const struct sockaddr_in *a)
{
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)a, sizeof(*a)) < 0 || listen(fd, 4096) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: " BENCH_PROG " -p PORT [-a ADDR] [-w WORKERS] [-r RING_SIZE]"
		   " [-m stream|task] [-b BUFFERS] [-B BUFFER_SIZE]\n"
		   "  TCP echo server on qilin: multishot streams and send callbacks (stream,\n"
		   "  the default) or a stackful task per connection (task)\n"
		   "  -b, -B: provided buffers per worker (a power of 2) and their size in\n"
		   "  stream mode (default: the library's, 1024 x 4096)\n");
}

int main(int argc, char **argv)
{
	struct ql_exec_opts eo = { .sz = sizeof(eo), .ring_size = 4096 };
	struct ql_task_opts ao = { .sz = sizeof(ao), .name = "echo-acceptor" };
	struct sockaddr_in a = { .sin_family = AF_INET };
	const char *addr = "127.0.0.1";
	struct ql_task **acc = NULL;
	struct ql_scope *top = NULL;
	struct ql_stats st = { .sz = sizeof(st) };
	uint64_t port = 0, v;
	int *lfds = NULL, opt, sig, err, rc = 1, stream_mode = 1;
	unsigned i, n = 0, started = 0;
	sigset_t sigs;

	while ((opt = getopt(argc, argv, "a:p:w:r:m:b:B:h")) != -1) {
		switch (opt) {
		case 'b':
			if (parse_num("-b", optarg, 1, QL_STREAM_BUFS_MAX, &v))
				return 2;
			if (v & (v - 1)) {
				fprintf(stderr, BENCH_PROG ": -b wants a power of 2\n");
				return 2;
			}
			g_nbufs = (unsigned)v;
			break;
		case 'B':
			if (parse_num("-B", optarg, QL_STREAM_BUF_SIZE_MIN,
				      QL_STREAM_BUF_SIZE_MAX, &v))
				return 2;
			g_bufsize = (size_t)v;
			break;
		case 'm':
			if (strcmp(optarg, "stream") && strcmp(optarg, "task")) {
				fprintf(stderr, BENCH_PROG ": -m wants stream or task, not '%s'\n",
					optarg);
				return 2;
			}
			stream_mode = !strcmp(optarg, "stream");
			break;
		case 'a':
			addr = optarg;
			break;
		case 'p':
			if (parse_num("-p", optarg, 1, 65535, &port))
				return 2;
			break;
		case 'w':
			if (parse_num("-w", optarg, 0, 1024, &v))
				return 2;
			eo.workers = (unsigned)v;
			break;
		case 'r':
			if (parse_num("-r", optarg, 8, 16384, &v))
				return 2;
			eo.ring_size = (unsigned)v;
			break;
		default:
			return usage_error_or_help(opt, usage) ? 2 : 0;
		}
	}
	if (!port || no_operands(argc, usage))
		return 2;
	if (g_nbufs || g_bufsize) {
		g_nbufs = g_nbufs ? g_nbufs : QL_STREAM_BUFS_DEFAULT;
		g_bufsize = g_bufsize ? g_bufsize : QL_STREAM_BUF_SIZE_DEFAULT;
		if ((uint64_t)g_nbufs * g_bufsize > QL_STREAM_BUF_TOTAL_MAX) {
			fprintf(stderr, BENCH_PROG ": -b x -B is over %llu bytes\n",
				(unsigned long long)QL_STREAM_BUF_TOTAL_MAX);
			return 2;
		}
	}
	a.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
		fprintf(stderr, BENCH_PROG ": -a wants an IPv4 address, not '%s'\n", addr);
		return 2;
	}
	raise_nofile();

	/* SIGTERM and SIGINT are taken with sigwait; the workers inherit this mask. */
	block_stop_signals(&sigs);

	err = ql_exec_create(&eo, &ex);
	if (err < 0) {
		char why[256];

		ql_uring_diagnose(why, sizeof(why));
		fprintf(stderr, BENCH_PROG ": ql_exec_create: %s (%s)\n", strerror(-err), why);
		return 1;
	}
	if (ql_exec_stats(ex, &st) == 0)
		n = st.nworkers;
	if (!n)
		n = 1;
	lfds = calloc(n, sizeof(*lfds));
	acc = calloc(n, sizeof(*acc));
	if (!lfds || !acc) {
		fprintf(stderr, BENCH_PROG ": out of memory\n");
		goto out;
	}
	for (i = 0; i < n; i++)
		lfds[i] = -1;
	for (i = 0; i < n; i++) {
		lfds[i] = listen_on(&a);
		if (lfds[i] < 0) {
			fprintf(stderr, BENCH_PROG ": listen on %s:%" PRIu64 ": %s\n", addr, port,
				strerror(-lfds[i]));
			goto out;
		}
	}
	if (stream_mode) {
		sws = calloc(n, sizeof(*sws));
		if (!sws) {
			fprintf(stderr, BENCH_PROG ": out of memory\n");
			goto out;
		}
		for (started = 0; started < n; started++) {
			sws[started].lfd = lfds[started];
			sws[started].idx = started;
			err = ql_spawn_on(ex, started, sw_start, &sws[started]);
			if (err < 0) {
				fprintf(stderr, BENCH_PROG ": ql_spawn_on: %s\n", strerror(-err));
				goto out;
			}
		}
		for (i = 0; i < n; i++) {
			/* Acquire: pairs with sw_start's release of ready. */
			while (!atomic_load_explicit(&sws[i].ready, memory_order_acquire))
				usleep(1000);
			if (sws[i].setup_err < 0) {
				fprintf(stderr,
					BENCH_PROG ": worker %u: ql_stream_buffers or"
						   " ql_accept_multi: %s\n",
					i, strerror(-sws[i].setup_err));
				goto out;
			}
		}
		printf("listening on %s:%" PRIu64 " (%u workers, streams)\n", addr, port, n);
		fflush(stdout);
		sigwait(&sigs, &sig);
		rc = 0;
		goto out;
	}
	err = ql_scope_open(&top, QL_NO_DEADLINE);
	if (err < 0) {
		fprintf(stderr, BENCH_PROG ": ql_scope_open: %s\n", strerror(-err));
		goto out;
	}
	ao.scope = top;
	/* From outside the executor, ql_go hands the acceptors to the workers round-robin. */
	for (started = 0; started < n; started++) {
		err = ql_go(ex, acceptor_task, (void *)(intptr_t)lfds[started], &ao, &acc[started]);
		if (err < 0) {
			fprintf(stderr, BENCH_PROG ": ql_go(acceptor): %s\n", strerror(-err));
			goto out;
		}
	}
	printf("listening on %s:%" PRIu64 " (%u workers, tasks)\n", addr, port, n);
	fflush(stdout);
	sigwait(&sigs, &sig);
	rc = 0;
out:
	/* The executor's view of the run, for tuning: jobs, batches and parks per message. */
	if (rc == 0 && ql_exec_stats(ex, &st) == 0)
		fprintf(stderr,
			BENCH_PROG ": run %" PRIu64 " ticks %" PRIu64 " enters %" PRIu64
				   " sqes %" PRIu64 " cqes %" PRIu64 " parks %" PRIu64
				   " wakeups %" PRIu64 "\n",
			st.total.run, st.total.ticks, st.total.enters, st.total.sqes,
			st.total.cqes, st.total.parks, st.total.wakeups);
	/* Stream mode: each started worker cancels its streams; wait until it has. */
	for (i = 0; sws && i < started; i++)
		if (ql_spawn_on(ex, i, sw_stop, &sws[i]) == 0)
			while (atomic_load_explicit(&sws[i].ready, memory_order_acquire) != 2)
				usleep(1000);
	if (top)
		ql_scope_cancel(top);
	for (i = 0; !sws && i < started; i++) {
		ql_join(acc[i], NULL);
		ql_task_release(acc[i]);
	}
	ql_scope_close(top);
	/* Connections end on their cancelled calls; give them a second, then cancel the rest. */
	ql_exec_shutdown(ex, NS_PER_S);
	ql_exec_destroy(ex);
	for (i = 0; lfds && i < n; i++)
		if (lfds[i] >= 0)
			close(lfds[i]);
	free(lfds);
	free(acc);
	/* The workers are gone: their buffer pools can go too. */
	for (i = 0; sws && i < n; i++)
		while (sws[i].pool) {
			char *p = sws[i].pool;

			memcpy(&sws[i].pool, p, sizeof(char *));
			free(p);
		}
	free(sws);
	return rc;
}
