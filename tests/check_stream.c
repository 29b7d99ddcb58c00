/* SPDX-License-Identifier: MIT */
/*
 * tests/check_stream.c - multishot streams (lib/stream.c): ql_accept_multi,
 * ql_recv_multi, ql_stream_cancel, ql_stream_buffers, ql_stream_stats and
 * ql_spawn_on, on a real executor, a real io_uring and real TCP sockets.
 *
 * tests/run.sh runs it twice: as is (kernel multishot, ring-mapped buffers
 * on this kernel) and with QILIN_URING_DISABLE=all (re-armed single shots,
 * IORING_OP_PROVIDE_BUFFERS), so both paths of the ring layer are checked
 * through the public API.
 *
 * The stream callbacks run on a worker; the test thread waits for what they
 * record (atomics, or a mutex for data) with a deadline.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "qilin.h"

#define SEC 1000000000ull

/* Open fds before the test's executor was made: what must be open at the end. */
static int base;

static struct ql_exec *make_exec(unsigned workers)
{
	base = t_fd_count();
	struct ql_exec_opts o = { .sz = sizeof(o), .workers = workers, .flags = QL_EXEC_NO_PIN };
	struct ql_exec *ex = NULL;
	int ret = ql_exec_create(&o, &ex);

	ck_assert_msg(ret == 0, "ql_exec_create: %d (%s)", ret, strerror(-ret));
	return ex;
}

/* Poll until *v reaches want, failing after 30 s. */
static void wait_for(_Atomic long *v, long want, const char *what)
{
	uint64_t deadline = ql_now() + 30 * SEC;

	while (atomic_load(v) < want) {
		ck_assert_msg(ql_now() < deadline, "%s: stuck at %ld of %ld", what,
			      atomic_load(v), want);
		usleep(1000);
	}
}

/* Run fn(arg) on worker 0 and wait until it has run. */
struct on_worker {
	void (*fn)(void *);
	void *arg;
	_Atomic long done;
};

static void on_worker_tramp(void *p)
{
	struct on_worker *ow = p;

	ow->fn(ow->arg);
	atomic_store(&ow->done, 1);
}

static void run_on(struct ql_exec *ex, unsigned worker, void (*fn)(void *), void *arg)
{
	struct on_worker ow = { .fn = fn, .arg = arg };
	int ret = ql_spawn_on(ex, worker, on_worker_tramp, &ow);

	ck_assert_msg(ret == 0, "ql_spawn_on: %d", ret);
	wait_for(&ow.done, 1, "run_on");
}

/* ------------------------------------------------------------ accept */

struct acc {
	int lfd;
	struct ql_stream *s;
	int arm_ret;
	_Atomic long nfds;	 /* connections delivered */
	_Atomic long final;	 /* 1 once the final call came */
	_Atomic long final_res;
	_Atomic long bad_flags;	 /* calls whose flags or buf were wrong */
	int fds[4096];
};

static void acc_fn(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct acc *a = arg;

	if (flags & QL_STREAM_MORE) {
		long i = atomic_load(&a->nfds);

		if (res < 0 || buf != NULL || i >= 4096) {
			atomic_fetch_add(&a->bad_flags, 1);
			if (res >= 0)
				close((int)res);
			return;
		}
		a->fds[i] = (int)res;
		atomic_store(&a->nfds, i + 1);
		return;
	}
	if (flags != 0 || buf != NULL)
		atomic_fetch_add(&a->bad_flags, 1);
	atomic_store(&a->final_res, res);
	atomic_store(&a->final, 1);
}

static void acc_arm(void *p)
{
	struct acc *a = p;

	a->arm_ret = ql_accept_multi(a->lfd, acc_fn, a, &a->s);
}

static void acc_cancel(void *p)
{
	struct acc *a = p;

	a->arm_ret = ql_stream_cancel(a->s);
}

START_TEST(test_many_accepts_one_stream)
{
	struct ql_exec *ex = make_exec(1);
	struct acc *a = calloc(1, sizeof(*a));
	uint16_t port;
	int n = T_TSAN ? 100 : 500;
	int *cfd = calloc((size_t)n, sizeof(int));

	a->lfd = t_listen_tcp(&port);
	run_on(ex, 0, acc_arm, a);
	ck_assert_int_eq(a->arm_ret, 0);
	ck_assert_ptr_nonnull(a->s);
	for (int i = 0; i < n; i++)
		cfd[i] = t_connect_tcp(port);
	wait_for(&a->nfds, n, "accepted");
	ck_assert_int_eq(atomic_load(&a->bad_flags), 0);
	ck_assert_int_eq(atomic_load(&a->final), 0);
	/* Each delivered fd is a distinct, connected socket. */
	for (int i = 0; i < n; i++) {
		struct sockaddr_in peer;
		socklen_t len = sizeof(peer);

		ck_assert_int_eq(getpeername(a->fds[i], (struct sockaddr *)&peer, &len), 0);
		for (int j = 0; j < i; j++)
			ck_assert_int_ne(a->fds[i], a->fds[j]);
	}
	run_on(ex, 0, acc_cancel, a);
	ck_assert_int_eq(a->arm_ret, 0);
	wait_for(&a->final, 1, "final");
	ck_assert_int_eq(atomic_load(&a->final_res), -ECANCELED);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	for (int i = 0; i < n; i++) {
		close(a->fds[i]);
		close(cfd[i]);
	}
	close(a->lfd);
	ck_assert_int_eq(t_fd_count(), base);
	free(cfd);
	free(a);
}
END_TEST

/* ------------------------------------------------------------ recv */

struct rcv {
	int fd;
	struct ql_stream *s;
	int arm_ret;
	pthread_mutex_t mu;
	unsigned char *data; /* what arrived, in order */
	size_t len, cap;
	_Atomic long got;    /* bytes */
	_Atomic long calls;
	_Atomic long maxcall; /* largest single result */
	_Atomic long final;
	_Atomic long final_res;
	_Atomic long bad;
	int cancel_in_fn;    /* cancel from inside fn after this many calls */
	int cancel_ret;
};

static void rcv_fn(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct rcv *r = arg;

	if (!(flags & QL_STREAM_MORE)) {
		if (buf || flags)
			atomic_fetch_add(&r->bad, 1);
		atomic_store(&r->final_res, res);
		atomic_store(&r->final, 1);
		return;
	}
	if (res <= 0 || !buf) {
		atomic_fetch_add(&r->bad, 1);
		return;
	}
	pthread_mutex_lock(&r->mu);
	if (r->len + (size_t)res <= r->cap)
		memcpy(r->data + r->len, buf, (size_t)res);
	r->len += (size_t)res;
	pthread_mutex_unlock(&r->mu);
	if (res > atomic_load(&r->maxcall))
		atomic_store(&r->maxcall, res);
	long c = atomic_fetch_add(&r->calls, 1) + 1;
	atomic_fetch_add(&r->got, res);
	if (r->cancel_in_fn && c == r->cancel_in_fn)
		r->cancel_ret = ql_stream_cancel(r->s);
}

static void rcv_arm(void *p)
{
	struct rcv *r = p;

	r->arm_ret = ql_recv_multi(r->fd, rcv_fn, r, &r->s);
}

static void rcv_cancel(void *p)
{
	struct rcv *r = p;

	r->arm_ret = ql_stream_cancel(r->s);
	/* A second cancel is refused (the record lives until the final call). */
	r->cancel_ret = ql_stream_cancel(r->s);
}

static void rcv_init(struct rcv *r, int fd, size_t cap)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	r->fd = fd;
	r->cap = cap;
	r->data = malloc(cap ? cap : 1);
}

static void rcv_fini(struct rcv *r)
{
	pthread_mutex_destroy(&r->mu);
	free(r->data);
}

/* A connected TCP pair: *srv is the accepted end. */
static void tcp_pair(int *srv, int *cli)
{
	uint16_t port;
	int lfd = t_listen_tcp(&port);

	*cli = t_connect_tcp(port);
	*srv = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(*srv, 0);
	close(lfd);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (unsigned char)x;
	}
}

static void send_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		ck_assert_msg(k > 0, "send: %s", strerror(errno));
		p += k;
		n -= (size_t)k;
	}
}

struct stats_req {
	struct ql_stream_stats st;
	int ret;
};

static void stats_get(void *p)
{
	struct stats_req *q = p;

	q->st.sz = sizeof(q->st);
	q->ret = ql_stream_stats(&q->st);
}

START_TEST(test_recv_larger_than_a_buffer_then_eof)
{
	struct ql_exec *ex = make_exec(1);
	size_t n = 1u << 20;
	unsigned char *src = malloc(n);
	struct rcv r;
	struct stats_req q;
	int srv, cli;

	fill_pattern(src, n, 7);
	tcp_pair(&srv, &cli);
	rcv_init(&r, srv, n);
	run_on(ex, 0, rcv_arm, &r);
	ck_assert_int_eq(r.arm_ret, 0);
	send_all(cli, src, n);
	wait_for(&r.got, (long)n, "received");
	/* End of file: the final call has res 0. */
	close(cli);
	wait_for(&r.final, 1, "final");
	ck_assert_int_eq(atomic_load(&r.final_res), 0);
	ck_assert_int_eq(atomic_load(&r.bad), 0);
	ck_assert_uint_eq(r.len, n);
	ck_assert_msg(memcmp(r.data, src, n) == 0, "data differs");
	/* 1 MiB cannot fit one 4 KiB buffer: many calls, none larger than a buffer. */
	ck_assert_int_gt(atomic_load(&r.calls), (long)(n / QL_STREAM_BUF_SIZE_DEFAULT) - 1);
	ck_assert_int_le(atomic_load(&r.maxcall), QL_STREAM_BUF_SIZE_DEFAULT);
	run_on(ex, 0, stats_get, &q);
	ck_assert_int_eq(q.ret, 0);
	ck_assert_uint_eq(q.st.nbufs, QL_STREAM_BUFS_DEFAULT);
	ck_assert_uint_eq(q.st.buf_size, QL_STREAM_BUF_SIZE_DEFAULT);
	ck_assert_uint_eq(q.st.avail, QL_STREAM_BUFS_DEFAULT); /* every buffer came back */
	ck_assert_uint_eq(q.st.live, 0);
	ck_assert_uint_eq(q.st.results, (uint64_t)atomic_load(&r.calls));
	close(srv);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), base);
	rcv_fini(&r);
	free(src);
}
END_TEST

/* Several connections share 4 buffers of 64 bytes: they stall and recover. */
#define EXH_CONNS 8
#define EXH_BYTES (256u * 1024u)

struct exh {
	struct rcv r[EXH_CONNS];
	int geo_ret, geo_again;
};

static void exh_arm(void *p)
{
	struct exh *e = p;

	e->geo_ret = ql_stream_buffers(4, 64);
	for (int i = 0; i < EXH_CONNS; i++)
		e->r[i].arm_ret = ql_recv_multi(e->r[i].fd, rcv_fn, &e->r[i], &e->r[i].s);
	/* The group exists now: the geometry is fixed. */
	e->geo_again = ql_stream_buffers(8, 64);
}

START_TEST(test_buffer_exhaustion_then_recovery)
{
	struct ql_exec *ex = make_exec(1);
	struct exh *e = calloc(1, sizeof(*e));
	int srv[EXH_CONNS], cli[EXH_CONNS];
	unsigned char *src = malloc(EXH_BYTES);
	struct stats_req q;

	for (int i = 0; i < EXH_CONNS; i++) {
		tcp_pair(&srv[i], &cli[i]);
		rcv_init(&e->r[i], srv[i], EXH_BYTES);
	}
	run_on(ex, 0, exh_arm, e);
	ck_assert_int_eq(e->geo_ret, 0);
	ck_assert_int_eq(e->geo_again, -EBUSY);
	for (int i = 0; i < EXH_CONNS; i++)
		ck_assert_int_eq(e->r[i].arm_ret, 0);
	/* All connections at once: far more data in flight than 256 bytes of buffers. */
	for (int i = 0; i < EXH_CONNS; i++) {
		fill_pattern(src, EXH_BYTES, (unsigned)i + 100);
		send_all(cli[i], src, EXH_BYTES);
	}
	for (int i = 0; i < EXH_CONNS; i++) {
		wait_for(&e->r[i].got, EXH_BYTES, "received");
		fill_pattern(src, EXH_BYTES, (unsigned)i + 100);
		ck_assert_uint_eq(e->r[i].len, EXH_BYTES);
		ck_assert_msg(memcmp(e->r[i].data, src, EXH_BYTES) == 0, "conn %d: data differs",
			      i);
		ck_assert_int_le(atomic_load(&e->r[i].maxcall), 64);
		ck_assert_int_eq(atomic_load(&e->r[i].final), 0);
	}
	run_on(ex, 0, stats_get, &q);
	ck_assert_int_eq(q.ret, 0);
	ck_assert_uint_eq(q.st.nbufs, 4);
	ck_assert_uint_eq(q.st.buf_size, 64);
	ck_assert_msg(q.st.stalls > 0, "no stall with 4 buffers for %d busy connections",
		      EXH_CONNS);
	ck_assert_uint_eq(q.st.avail, 4);
	ck_assert_uint_eq(q.st.live, EXH_CONNS);
	for (int i = 0; i < EXH_CONNS; i++) {
		close(cli[i]);
		wait_for(&e->r[i].final, 1, "final");
		ck_assert_int_eq(atomic_load(&e->r[i].final_res), 0);
		ck_assert_int_eq(atomic_load(&e->r[i].bad), 0);
		close(srv[i]);
		rcv_fini(&e->r[i]);
	}
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), base);
	free(src);
	free(e);
}
END_TEST

START_TEST(test_cancel)
{
	struct ql_exec *ex = make_exec(1);
	struct rcv r;
	struct stats_req q;
	int srv, cli;
	unsigned char msg[100];

	/* Cancel from another job, while the stream is armed and idle. */
	tcp_pair(&srv, &cli);
	rcv_init(&r, srv, sizeof(msg));
	run_on(ex, 0, rcv_arm, &r);
	ck_assert_int_eq(r.arm_ret, 0);
	memset(msg, 'x', sizeof(msg));
	send_all(cli, msg, sizeof(msg));
	wait_for(&r.got, sizeof(msg), "received");
	run_on(ex, 0, rcv_cancel, &r);
	ck_assert_int_eq(r.arm_ret, 0);
	ck_assert_int_eq(r.cancel_ret, -EALREADY);
	wait_for(&r.final, 1, "final");
	ck_assert_int_eq(atomic_load(&r.final_res), -ECANCELED);
	/* Data sent after the cancel reaches nobody; the socket is still ours. */
	send_all(cli, msg, sizeof(msg));
	usleep(50000);
	ck_assert_int_eq(atomic_load(&r.got), sizeof(msg));
	ck_assert_int_eq(recv(srv, msg, sizeof(msg), MSG_DONTWAIT), sizeof(msg));
	rcv_fini(&r);

	/* Cancel from inside fn, with more data queued behind: none of it is delivered. */
	rcv_init(&r, srv, 1u << 20);
	r.cancel_in_fn = 1;
	run_on(ex, 0, rcv_arm, &r);
	ck_assert_int_eq(r.arm_ret, 0);
	{
		unsigned char *big = calloc(1, 32 * 1024);

		send_all(cli, big, 32 * 1024);
		free(big);
	}
	wait_for(&r.final, 1, "final after a cancel in fn");
	ck_assert_int_eq(r.cancel_ret, 0);
	ck_assert_int_eq(atomic_load(&r.final_res), -ECANCELED);
	ck_assert_int_eq(atomic_load(&r.calls), 1);
	run_on(ex, 0, stats_get, &q);
	ck_assert_uint_eq(q.st.live, 0);
	ck_assert_uint_eq(q.st.avail, q.st.nbufs);
	rcv_fini(&r);
	close(cli);
	close(srv);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), base);
}
END_TEST

START_TEST(test_peer_reset)
{
	struct ql_exec *ex = make_exec(1);
	struct rcv r;
	int srv, cli;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	unsigned char msg[10] = "0123456789";

	tcp_pair(&srv, &cli);
	rcv_init(&r, srv, 64);
	run_on(ex, 0, rcv_arm, &r);
	ck_assert_int_eq(r.arm_ret, 0);
	send_all(cli, msg, sizeof(msg));
	wait_for(&r.got, sizeof(msg), "received");
	/* Linger 0: close sends an RST instead of a FIN. */
	ck_assert_int_eq(setsockopt(cli, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(cli);
	wait_for(&r.final, 1, "final");
	ck_assert_int_eq(atomic_load(&r.final_res), -ECONNRESET);
	ck_assert_int_eq(memcmp(r.data, msg, sizeof(msg)), 0);
	close(srv);
	rcv_fini(&r);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), base);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

START_TEST(test_shutdown_cancels_streams)
{
	struct ql_exec *ex = make_exec(2);
	struct acc *a = calloc(1, sizeof(*a));
	struct rcv r[2];
	int srv[2], cli[2];
	uint16_t port;

	a->lfd = t_listen_tcp(&port);
	run_on(ex, 1, acc_arm, a);
	ck_assert_int_eq(a->arm_ret, 0);
	for (int i = 0; i < 2; i++) {
		tcp_pair(&srv[i], &cli[i]);
		rcv_init(&r[i], srv[i], 16);
		run_on(ex, (unsigned)i, rcv_arm, &r[i]);
		ck_assert_int_eq(r[i].arm_ret, 0);
	}
	/* Every stream ends with -ECANCELED, and shutdown does not time out for them. */
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ck_assert_int_eq(atomic_load(&a->final), 1);
	ck_assert_int_eq(atomic_load(&a->final_res), -ECANCELED);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(atomic_load(&r[i].final), 1);
		ck_assert_int_eq(atomic_load(&r[i].final_res), -ECANCELED);
		close(srv[i]);
		close(cli[i]);
		rcv_fini(&r[i]);
	}
	ck_assert_int_eq(ql_spawn_on(ex, 0, on_worker_tramp, NULL), -ESHUTDOWN);
	ql_exec_destroy(ex);
	close(a->lfd);
	ck_assert_int_eq(t_fd_count(), base);
	free(a);
}
END_TEST

/* ------------------------------------------------------------ spawn_on, arguments */

static _Atomic long where[2];

static void note_worker(void *p)
{
	long *slot = p;

	(void)slot;
	atomic_fetch_add(&where[ql_worker_id()], 1);
}

static void nop_stream_fn(void *arg, ssize_t res, const void *buf, unsigned flags)
{
}

struct badargs {
	int r[16];
};

static void bad_on_worker(void *p)
{
	struct badargs *b = p;
	struct ql_stream_stats st = { .sz = sizeof(st) - 1 };

	b->r[0] = ql_accept_multi(-1, nop_stream_fn, NULL, NULL);
	b->r[1] = ql_accept_multi(0, NULL, NULL, NULL);
	b->r[2] = ql_recv_multi(-5, nop_stream_fn, NULL, NULL);
	b->r[3] = ql_recv_multi(0, NULL, NULL, NULL);
	b->r[4] = ql_stream_cancel(NULL);
	b->r[5] = ql_stream_buffers(3, 4096);		   /* not a power of 2 */
	b->r[6] = ql_stream_buffers(0, 4096);
	b->r[7] = ql_stream_buffers(1024, 8);		   /* below the minimum */
	b->r[8] = ql_stream_buffers(QL_STREAM_BUFS_MAX * 2, 4096);
	b->r[9] = ql_stream_buffers(32768, 1u << 20);	   /* 32 GiB in all */
	b->r[10] = ql_stream_stats(NULL);
	b->r[11] = ql_stream_stats(&st);
	b->r[12] = ql_stream_buffers(256, 2048);	   /* fine: no group yet */
}

START_TEST(test_spawn_on_and_bad_arguments)
{
	struct ql_exec *ex = make_exec(2);
	struct badargs b;
	struct ql_stream_stats st = { .sz = sizeof(st) };
	long each = T_TSAN ? 100 : 2000;

	/* ql_spawn_on runs each job on the worker asked for, never stolen. */
	for (long i = 0; i < each; i++) {
		ck_assert_int_eq(ql_spawn_on(ex, 0, note_worker, NULL), 0);
		ck_assert_int_eq(ql_spawn_on(ex, 1, note_worker, NULL), 0);
	}
	uint64_t deadline = ql_now() + 30 * SEC;
	while (atomic_load(&where[0]) + atomic_load(&where[1]) < 2 * each)
		ck_assert(ql_now() < deadline);
	ck_assert_int_eq(atomic_load(&where[0]), each);
	ck_assert_int_eq(atomic_load(&where[1]), each);

	ck_assert_int_eq(ql_spawn_on(NULL, 0, note_worker, NULL), -EINVAL);
	ck_assert_int_eq(ql_spawn_on(ex, 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(ql_spawn_on(ex, 2, note_worker, NULL), -EINVAL);
	/* Outside a worker. */
	ck_assert_int_eq(ql_accept_multi(0, nop_stream_fn, NULL, NULL), -EPERM);
	ck_assert_int_eq(ql_recv_multi(0, nop_stream_fn, NULL, NULL), -EPERM);
	ck_assert_int_eq(ql_stream_buffers(1024, 4096), -EPERM);
	ck_assert_int_eq(ql_stream_stats(&st), -EPERM);
	ck_assert_int_eq(ql_stream_cancel(NULL), -EINVAL);

	memset(&b, 0x55, sizeof(b));
	run_on(ex, 0, bad_on_worker, &b);
	ck_assert_int_eq(b.r[0], -EBADF);
	ck_assert_int_eq(b.r[1], -EINVAL);
	ck_assert_int_eq(b.r[2], -EBADF);
	ck_assert_int_eq(b.r[3], -EINVAL);
	ck_assert_int_eq(b.r[4], -EINVAL);
	for (int i = 5; i <= 11; i++)
		ck_assert_msg(b.r[i] == -EINVAL, "case %d: %d", i, b.r[i]);
	ck_assert_int_eq(b.r[12], 0);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
}
END_TEST

/* ------------------------------------------------------------ I/O and panics in fn */

/* An echo server in stream form: fn copies what it got and sends it back with ql_send_cb. */
struct echo {
	int fd;
	struct ql_stream *s;
	int arm_ret;
	_Atomic long sends, send_errs, final, final_res, panics_left;
	_Atomic long recovered;
};

struct echo_out {
	struct echo *e;
	size_t len;
	char data[];
};

static void echo_sent(void *arg, ssize_t res)
{
	struct echo_out *o = arg;

	if (res != (ssize_t)o->len)
		atomic_fetch_add(&o->e->send_errs, 1);
	atomic_fetch_add(&o->e->sends, 1);
	free(o);
}

static void echo_recover(void *arg)
{
	struct echo *e = arg;

	if (ql_recover() == 42)
		atomic_fetch_add(&e->recovered, 1);
}

static void echo_fn(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct echo *e = arg;
	struct echo_out *o;

	if (!(flags & QL_STREAM_MORE)) {
		atomic_store(&e->final_res, res);
		atomic_store(&e->final, 1);
		return;
	}
	/* A byte '!' panics (recovered by a deferred call): that result is lost, not the stream. */
	if (memchr(buf, '!', (size_t)res) && atomic_fetch_sub(&e->panics_left, 1) > 0) {
		ql_defer(echo_recover, e);
		ql_panic(42, "test panic in a stream callback");
	}
	o = malloc(sizeof(*o) + (size_t)res);
	o->e = e;
	o->len = (size_t)res;
	memcpy(o->data, buf, (size_t)res);
	if (ql_send_cb(e->fd, o->data, o->len, MSG_NOSIGNAL, echo_sent, o) < 0) {
		atomic_fetch_add(&e->send_errs, 1);
		free(o);
	}
}

static void echo_arm(void *p)
{
	struct echo *e = p;

	e->arm_ret = ql_recv_multi(e->fd, echo_fn, e, &e->s);
}

START_TEST(test_echo_and_panic_in_fn)
{
	struct ql_exec *ex = make_exec(1);
	struct echo e = { 0 };
	struct stats_req q;
	int srv, cli;
	char out[64], in[64];

	tcp_pair(&srv, &cli);
	e.fd = srv;
	atomic_store(&e.panics_left, 1);
	run_on(ex, 0, echo_arm, &e);
	ck_assert_int_eq(e.arm_ret, 0);
	for (int i = 0; i < 20; i++) {
		int n = snprintf(out, sizeof(out), "message %d", i);

		send_all(cli, (unsigned char *)out, (size_t)n);
		size_t got = 0;
		while (got < (size_t)n) {
			ssize_t k = recv(cli, in + got, sizeof(in) - got, 0);

			ck_assert_int_gt(k, 0);
			got += (size_t)k;
		}
		ck_assert_int_eq(memcmp(in, out, (size_t)n), 0);
	}
	/* The panicking result is not echoed; the next one is. */
	send_all(cli, (const unsigned char *)"!", 1);
	wait_for(&e.recovered, 1, "recovered panic");
	send_all(cli, (const unsigned char *)"after", 5);
	ck_assert_int_eq(recv(cli, in, sizeof(in), 0), 5);
	ck_assert_int_eq(memcmp(in, "after", 5), 0);
	ck_assert_int_eq(atomic_load(&e.send_errs), 0);
	run_on(ex, 0, stats_get, &q);
	ck_assert_uint_eq(q.st.avail, q.st.nbufs); /* the panicking call's buffer came back */
	close(cli);
	wait_for(&e.final, 1, "final");
	ck_assert_int_eq(atomic_load(&e.final_res), 0);
	close(srv);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), base);
}
END_TEST

/* ------------------------------------------------------------ keeping buffers */

/* A recv stream whose fn keeps every buffer (mode 0) or echoes straight from it (mode 1). */
struct kp {
	int fd, arm_ret, geo_ret, mode;
	struct ql_stream *s;
	const void *buf[8];		/* the buffer of each result */
	char data[8][16];		/* a copy of each result's bytes */
	int keep_ret[8];		/* what ql_stream_keep said for each result */
	_Atomic long results, bad, final, final_res, sent, rel_bad;
	int rel_ret[4];			/* from the release job */
};

/* A send straight from a kept buffer. */
struct kp_send {
	struct kp *k;
	const void *buf;
};

static void kp_sent(void *arg, ssize_t res)
{
	struct kp_send *ks = arg;

	(void)res;
	/* The send is back: the buffer goes back, once. */
	if (ql_stream_release(ks->buf) != 0 || ql_stream_release(ks->buf) != -EINVAL)
		atomic_fetch_add(&ks->k->rel_bad, 1);
	atomic_fetch_add(&ks->k->sent, 1);
	free(ks);
}

static void kp_fn(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct kp *k = arg;
	long i = atomic_load(&k->results);
	int ret;

	if (!(flags & QL_STREAM_MORE)) {
		atomic_store(&k->final_res, res);
		atomic_store(&k->final, 1);
		return;
	}
	if (ql_stream_keep(NULL) != -EINVAL || ql_stream_keep((const char *)buf + 1) != -EINVAL)
		atomic_fetch_add(&k->bad, 1);
	ret = ql_stream_keep(buf);
	if (ret == 0 && ql_stream_keep(buf) != -EINVAL)
		atomic_fetch_add(&k->bad, 1);
	if (k->mode == 1) {
		struct kp_send *ks = malloc(sizeof(*ks));

		ks->k = k;
		ks->buf = buf;
		if (ret != 0 ||
		    ql_send_cb(k->fd, buf, (size_t)res, MSG_NOSIGNAL, kp_sent, ks) < 0) {
			atomic_fetch_add(&k->bad, 1);
			free(ks);
		}
	} else if (i < 8 && res <= 16) {
		k->keep_ret[i] = ret;
		k->buf[i] = buf;
		memcpy(k->data[i], buf, (size_t)res);
	} else {
		atomic_fetch_add(&k->bad, 1);
	}
	atomic_fetch_add(&k->results, 1);
}

static void kp_arm(void *p)
{
	struct kp *k = p;

	k->geo_ret = ql_stream_buffers(4, 64);
	k->arm_ret = ql_recv_multi(k->fd, kp_fn, k, &k->s);
}

/* Outside fn: keep is refused; release gives back buffer 0, and only once. */
static void kp_release_first(void *p)
{
	struct kp *k = p;

	k->rel_ret[0] = ql_stream_keep(k->buf[1]);
	k->rel_ret[1] = ql_stream_release(k->buf[0]);
	k->rel_ret[2] = ql_stream_release(k->buf[0]);
	k->rel_ret[3] = ql_stream_release(k->buf[3]); /* refused at keep: went back already */
}

/* Release the rest of what phase one kept (buffers 1, 2 and result 4's), then echo. */
static void kp_release_rest(void *p)
{
	struct kp *k = p;

	for (int i = 1; i < 5; i++)
		if (i != 3 && ql_stream_release(k->buf[i]) != 0)
			atomic_fetch_add(&k->rel_bad, 1);
	k->mode = 1;
}

/* Send one 16-byte message and wait until fn has seen it. */
static void kp_send(struct kp *k, int cli, int i, long want)
{
	char m[16];

	memset(m, 'a' + i, sizeof(m));
	send_all(cli, (const unsigned char *)m, sizeof(m));
	if (want)
		wait_for(&k->results, want, "kept result");
}

START_TEST(test_keep_and_release)
{
	struct ql_exec *ex = make_exec(1);
	struct kp *k = calloc(1, sizeof(*k));
	struct stats_req q;
	int srv, cli;
	char in[16];

	tcp_pair(&srv, &cli);
	k->fd = srv;
	/* Not on a worker, not in fn. */
	ck_assert_int_eq(ql_stream_keep(in), -EPERM);
	ck_assert_int_eq(ql_stream_release(in), -EPERM);
	ck_assert_int_eq(ql_stream_keep(NULL), -EINVAL);
	ck_assert_int_eq(ql_stream_release(NULL), -EINVAL);
	run_on(ex, 0, kp_arm, k);
	ck_assert_int_eq(k->geo_ret, 0);
	ck_assert_int_eq(k->arm_ret, 0);
	/*
	 * Four results into a group of four: three are kept; the fourth finds
	 * the group empty (under the quarter the kernel keeps) and is refused.
	 */
	for (int i = 0; i < 4; i++)
		kp_send(k, cli, i, i + 1);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(k->keep_ret[i], 0);
	ck_assert_int_eq(k->keep_ret[3], -ENOBUFS);
	run_on(ex, 0, stats_get, &q);
	ck_assert_uint_eq(q.st.avail, 1); /* the refused one came back, the kept ones did not */
	/* The kept bytes stay as they were while more data goes through the last buffer. */
	kp_send(k, cli, 4, 5);
	ck_assert_int_eq(k->keep_ret[4], -ENOBUFS);
	ck_assert_ptr_eq(k->buf[4], k->buf[3]);
	for (int i = 0; i < 5; i++) {
		char m[16];

		memset(m, 'a' + i, sizeof(m));
		ck_assert_int_eq(memcmp(k->data[i], m, 16), 0);
		if (i < 3)
			ck_assert_int_eq(memcmp(k->buf[i], m, 16), 0);
		for (int j = 0; j < i && i < 3; j++)
			ck_assert_ptr_ne(k->buf[i], k->buf[j]);
	}
	ck_assert_int_eq(ql_stream_release(k->buf[0]), -EPERM); /* not a worker thread */
	run_on(ex, 0, kp_release_first, k);
	ck_assert_int_eq(k->rel_ret[0], -EPERM);
	ck_assert_int_eq(k->rel_ret[1], 0);
	ck_assert_int_eq(k->rel_ret[2], -EINVAL);
	ck_assert_int_eq(k->rel_ret[3], -EINVAL);
	/* Two left to the kernel now: the next one is kept again. */
	kp_send(k, cli, 5, 6);
	ck_assert_int_eq(k->keep_ret[5], 0);
	k->buf[4] = k->buf[5];
	run_on(ex, 0, kp_release_rest, k);
	run_on(ex, 0, stats_get, &q);
	ck_assert_uint_eq(q.st.avail, 4);
	/* Mode 1: echo straight from the kept buffer, released when the send is back. */
	for (int i = 0; i < 20; i++) {
		size_t got = 0;

		kp_send(k, cli, i % 8, 0);
		while (got < 16) {
			ssize_t n = recv(cli, in + got, sizeof(in) - got, 0);

			ck_assert_int_gt(n, 0);
			got += (size_t)n;
		}
		ck_assert_int_eq(in[0], 'a' + i % 8);
		ck_assert_int_eq(in[15], 'a' + i % 8);
	}
	wait_for(&k->sent, 20, "sends");
	run_on(ex, 0, stats_get, &q);
	ck_assert_uint_eq(q.st.avail, 4);
	ck_assert_int_eq(atomic_load(&k->bad), 0);
	ck_assert_int_eq(atomic_load(&k->rel_bad), 0);
	close(cli);
	wait_for(&k->final, 1, "final");
	ck_assert_int_eq(atomic_load(&k->final_res), 0);
	close(srv);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), base);
	free(k);
}
END_TEST

/* A recv stream on a socket that is not connected ends with the kernel's error, once. */
START_TEST(test_error_is_a_final_call)
{
	struct ql_exec *ex = make_exec(1);
	struct rcv r;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	rcv_init(&r, fd, 16);
	run_on(ex, 0, rcv_arm, &r);
	ck_assert_int_eq(r.arm_ret, 0);
	wait_for(&r.final, 1, "final");
	ck_assert_int_eq(atomic_load(&r.final_res), -ENOTCONN);
	ck_assert_int_eq(atomic_load(&r.calls), 0);
	close(fd);
	rcv_fini(&r);
	ck_assert_int_eq(ql_exec_shutdown(ex, 10 * SEC), 0);
	ql_exec_destroy(ex);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("stream");
	const struct t_case cases[] = {
		{ "many_accepts", test_many_accepts_one_stream, 60, NULL },
		{ "recv_large_eof", test_recv_larger_than_a_buffer_then_eof, 60, NULL },
		{ "exhaustion", test_buffer_exhaustion_then_recovery, 60, NULL },
		{ "keep_release", test_keep_and_release, 60, NULL },
		{ "cancel", test_cancel, 60, NULL },
		{ "peer_reset", test_peer_reset, 60, NULL },
		{ "shutdown", test_shutdown_cancels_streams, 60, NULL },
		{ "spawn_on_bad_args", test_spawn_on_and_bad_arguments, 60, NULL },
		{ "error_final", test_error_is_a_final_call, 60, NULL },
		{ "echo_panic", test_echo_and_panic_in_fn, 60, NULL },
	};

	t_add_cases(s, "stream", cases, sizeof(cases) / sizeof(cases[0]));
	return t_run_suite(s);
}
