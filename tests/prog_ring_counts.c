/* SPDX-License-Identifier: MIT */
/*
 * tests/prog_ring_counts.c - a ring-layer workload that reports its own
 * counters, for tests/check_bpf.c to compare with the kernel's count of the
 * same process (bpf/uring_count).
 *
 * The workload touches every kind of traffic the layer generates: batches of
 * NOPs, pipe reads cancelled while blocked, a linked timeout that fires, a
 * recv stream on a buffer group that runs dry and re-arms, a msg_ring and an
 * eventfd wake-up from a second thread with its own ring, and the drain in
 * ql__ring_exit(). Then it prints one line:
 *   self {"sqes":N,"cqes":N,"enters":N}
 * summing both rings and the once-per-process probe. No CQ may overflow
 * (the kernel's completion event does not fire for overflowed CQEs), so the
 * in-flight bound stays on.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ring.h"

#define MS 1000000ull
#define NOP_BATCHES 20
#define NOPS_PER_BATCH 50

static struct ql_ring_stats total;
static pthread_mutex_t total_lock = PTHREAD_MUTEX_INITIALIZER;

static void add_stats(const struct ql_ring *r)
{
	struct ql_ring_stats st;

	ql__ring_stats(r, &st);
	pthread_mutex_lock(&total_lock);
	total.sqes += st.sqes;
	total.cqes += st.cqes;
	total.enters += st.enters;
	pthread_mutex_unlock(&total_lock);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "prog_ring_counts: %s: %s (%s)\n", what, strerror(err < 0 ? -err : err),
		ql__ring_last_error());
	exit(1);
}

struct rec {
	struct ql_op op;
	int finals;
	int res;
};

static void rec_fn(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct rec *c = (struct rec *)op;

	if (!(flags & IORING_CQE_F_MORE))
		c->finals++;
	c->res = res;
}

static void run_until(struct ql_ring *r, struct rec *c)
{
	while (!c->finals) {
		int ret = ql__ring_run(r, 1, 100 * MS);

		if (ret < 0)
			die("run", ret);
	}
}

struct streamer {
	struct ql_op op;
	struct ql_bufgroup *bg;
	size_t got;
	int ended;
};

static void stream_fn(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct streamer *s = (struct streamer *)op;

	if (res > 0) {
		s->got += (size_t)res;
		/* Give the buffer back at once, except every fourth: it runs dry. */
		if (s->got % 512)
			ql__bufgroup_put(s->bg, ql__bufgroup_bid(flags));
	}
	if (!(flags & IORING_CQE_F_MORE))
		s->ended = 1;
}

struct remote {
	struct ql_ring *target;
	int go;
};

/* A second thread with its own ring wakes the main one twice. */
static void *waker(void *arg)
{
	struct remote *rm = arg;
	struct ql_ring r;
	int ret;

	if ((ret = ql__ring_init(&r, NULL)) < 0)
		die("waker ring", ret);
	while (!__atomic_load_n(&rm->go, __ATOMIC_ACQUIRE))
		usleep(1000);
	usleep(20 * 1000);
	if ((ret = ql__ring_wake_from(&r, rm->target)) < 0)
		die("wake_from", ret);
	ql__ring_submit(&r, 0, 0);
	usleep(20 * 1000);
	if ((ret = ql__ring_wake(rm->target)) < 0)
		die("wake", ret);
	if ((ret = ql__ring_exit(&r, 5000 * MS)) < 0)
		die("waker exit", ret);
	add_stats(&r);
	return NULL;
}

int main(void)
{
	static struct rec nops[NOPS_PER_BATCH];
	struct ql_ring r;
	struct rec c[4];
	struct streamer s;
	struct remote rm;
	struct ql_ring_stats st;
	pthread_t th;
	char buf[4];
	int p[2], sv[2], ret;

	if ((ret = ql__ring_init(&r, NULL)) < 0)
		die("ring", ret);

	/* Batches of NOPs. */
	for (int b = 0; b < NOP_BATCHES; b++) {
		for (int i = 0; i < NOPS_PER_BATCH; i++) {
			struct io_uring_sqe *sqe;

			memset(&nops[i], 0, sizeof(nops[i]));
			nops[i].op.fn = rec_fn;
			sqe = ql__ring_sqe(&r, &nops[i].op);
			io_uring_prep_nop(sqe);
			ql__ring_sqe_op(sqe, &nops[i].op);
		}
		for (int i = 0; i < NOPS_PER_BATCH; i++)
			run_until(&r, &nops[i]);
	}

	/* Reads blocked on a pipe, cancelled. */
	if (pipe2(p, O_CLOEXEC))
		die("pipe", errno);
	for (int i = 0; i < 3; i++) {
		struct io_uring_sqe *sqe;

		memset(&c[i], 0, sizeof(c[i]));
		c[i].op.fn = rec_fn;
		sqe = ql__ring_sqe(&r, &c[i].op);
		io_uring_prep_read(sqe, p[0], &buf[i], 1, 0);
		ql__ring_sqe_op(sqe, &c[i].op);
	}
	ql__ring_submit(&r, 0, 0);
	for (int i = 0; i < 3; i++)
		ql__ring_cancel(&r, &c[i].op);
	for (int i = 0; i < 3; i++)
		run_until(&r, &c[i]);

	/* A linked timeout that fires. */
	memset(&c[3], 0, sizeof(c[3]));
	c[3].op.fn = rec_fn;
	ql__ring_reserve(&r, 2);
	struct io_uring_sqe *sqe = ql__ring_sqe(&r, &c[3].op);
	io_uring_prep_read(sqe, p[0], &buf[3], 1, 0);
	ql__ring_sqe_op(sqe, &c[3].op);
	ql__ring_link_timeout(&r, sqe, &c[3].op, 5 * MS);
	run_until(&r, &c[3]);

	/* A recv stream that runs dry and re-arms, then ends at EOF. */
	memset(&s, 0, sizeof(s));
	if ((ret = ql__bufgroup_create(&r, 1, 4, 128, &s.bg)) < 0)
		die("bufgroup", ret);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		die("socketpair", errno);
	if ((ret = ql__ring_recv_stream(&r, &s.op, sv[0], s.bg, stream_fn)) < 0)
		die("recv stream", ret);
	for (int i = 0; i < 32; i++) {
		char chunk[128];

		memset(chunk, 'a' + i % 26, sizeof(chunk));
		if (write(sv[1], chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk))
			die("write", errno);
		ql__ring_run(&r, 0, 0);
		/* Return whatever the callback kept, so the stream goes on. */
		for (unsigned bid = 0; bid < 4 && ql__bufgroup_avail(s.bg) == 0; bid++)
			ql__bufgroup_put(s.bg, bid);
	}
	close(sv[1]);
	while (!s.ended) {
		ql__ring_run(&r, 1, 100 * MS);
		for (unsigned bid = 0; bid < 4 && ql__bufgroup_avail(s.bg) == 0; bid++)
			ql__bufgroup_put(s.bg, bid);
	}

	/* Wake-ups from another thread: msg_ring (or eventfd), then eventfd. */
	rm.target = &r;
	rm.go = 0;
	pthread_create(&th, NULL, waker, &rm);
	__atomic_store_n(&rm.go, 1, __ATOMIC_RELEASE);
	for (;;) {
		ql__ring_run(&r, 1, 100 * MS);
		ql__ring_stats(&r, &st);
		if (st.wakeups >= 2)
			break;
	}
	pthread_join(th, NULL);

	ql__bufgroup_destroy(s.bg);
	if ((ret = ql__ring_exit(&r, 5000 * MS)) < 0)
		die("exit", ret);
	add_stats(&r);
	close(sv[0]);
	close(p[0]);
	close(p[1]);
	total.sqes += ql__ring_probe_stats.sqes;
	total.cqes += ql__ring_probe_stats.cqes;
	total.enters += ql__ring_probe_stats.enters;
	printf("self {\"sqes\":%llu,\"cqes\":%llu,\"enters\":%llu}\n",
	       (unsigned long long)total.sqes, (unsigned long long)total.cqes,
	       (unsigned long long)total.enters);
	return 0;
}
