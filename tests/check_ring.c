/* SPDX-License-Identifier: MIT */
/*
 * tests/check_ring.c - the ring layer (uring/) against the running kernel.
 *
 * Every feature test runs once per ring configuration in t_configs (each
 * forcing a different set of kernel features off), so the fallback paths an
 * older kernel would take run here too. Nothing is mocked: real rings, real
 * pipes and sockets, real seccomp filters and the real io_uring_disabled
 * sysctl. Each test ends by checking the ring holds nothing in flight and
 * that no file descriptor leaked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "qilin.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* A record that counts its CQEs. */
struct rec {
	struct ql_op op;
	int calls;	/* continuation calls */
	int finals;	/* calls without F_MORE */
	int res;	/* last result */
	unsigned flags; /* last flags */
};

static void rec_fn(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct rec *c = (struct rec *)op;

	c->calls++;
	if (!(flags & IORING_CQE_F_MORE))
		c->finals++;
	c->res = res;
	c->flags = flags;
}

static void rec_init(struct rec *c)
{
	memset(c, 0, sizeof(*c));
	c->op.fn = rec_fn;
}

static void nop(struct ql_ring *r, struct rec *c)
{
	struct io_uring_sqe *sqe = ql__ring_sqe(r, &c->op);

	io_uring_prep_nop(sqe);
	ql__ring_sqe_op(sqe, &c->op);
}

/* Run the ring until every record in recs has had its final CQE. */
static void run_until_final(struct ql_ring *r, struct rec *recs, int n)
{
	uint64_t deadline = t_now_ns() + 10 * SEC;

	for (;;) {
		int pending = 0;

		for (int i = 0; i < n; i++)
			pending += recs[i].finals == 0;
		if (!pending)
			return;
		ck_assert_msg(t_now_ns() < deadline, "%d operations never completed (features 0x%x)",
			      pending, r->features);
		ck_assert_int_ge(ql__ring_run(r, 1, 100 * MS), 0);
	}
}

static void ring_done(struct ql_ring *r, const struct t_config *cfg)
{
	ck_assert_msg(r->inflight == 0, "config %s: %u operations still in flight", cfg->name,
		      r->inflight);
	ck_assert_int_eq(ql__ring_exit(r, 5 * SEC), 0);
}

/* ------------------------------------------------------------ setup */

static int kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return 0;
	return ma > major || (ma == major && mi >= minor);
}

START_TEST(test_setup_each_config)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		struct ql_ring r;

		t_ring_init(&r, cfg, 64, 0);
		ck_assert(ql__ring_op_supported(&r, IORING_OP_NOP));
		ck_assert_uint_ge(r.cq_entries, r.sq_entries);
		ck_assert_uint_eq(r.inflight_cap, r.cq_entries);
		if (cfg->disable & QL_RING_F_DEFER_TASKRUN)
			ck_assert(!(r.setup_flags & IORING_SETUP_DEFER_TASKRUN));
		if (cfg->disable & QL_RING_F_SINGLE_ISSUER)
			ck_assert(!(r.setup_flags & IORING_SETUP_SINGLE_ISSUER));
		if (cfg->disable & QL_RING_F_COOP_TASKRUN)
			ck_assert(!(r.setup_flags & IORING_SETUP_COOP_TASKRUN));
		if (cfg->disable & QL_RING_F_SUBMIT_ALL)
			ck_assert(!(r.setup_flags & IORING_SETUP_SUBMIT_ALL));
		if (cfg->disable & QL_RING_F_REG_RING)
			ck_assert_uint_eq(r.enter_flags, 0);
		/* Whatever is not disabled, a 6.1+ kernel grants. */
		if (cfg->disable == 0 && !t_env_disable() && kernel_at_least(6, 1))
			ck_assert_msg(r.features == QL_RING_F_ALL, "features 0x%x", r.features);
		ring_done(&r, cfg);
	}
}
END_TEST

START_TEST(test_env_disable)
{
	struct ql_ring r;
	unsigned mask;

	ck_assert_int_eq(setenv(QL_RING_DISABLE_ENV, "msg_ring, bufring", 1), 0);
	ck_assert_int_eq(ql__ring_init(&r, NULL), 0);
	ck_assert(!(r.features & (QL_RING_F_MSG_RING | QL_RING_F_BUFRING)));
	ck_assert_int_eq(ql__ring_exit(&r, SEC), 0);

	ck_assert_int_eq(setenv(QL_RING_DISABLE_ENV, "all", 1), 0);
	ck_assert_int_eq(ql__ring_init(&r, NULL), 0);
	ck_assert_uint_eq(r.features & ~0u, 0);
	ck_assert_uint_eq(r.setup_flags & (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
					   IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL),
			  0);
	ck_assert_int_eq(ql__ring_exit(&r, SEC), 0);

	/* The environment is ignored when the caller says so. */
	struct ql_ring_opts o = { .sz = sizeof(o), .flags = QL_RING_O_NO_ENV };
	ck_assert_int_eq(ql__ring_init(&r, &o), 0);
	ck_assert(r.features & QL_RING_F_MSG_RING);
	ck_assert_int_eq(ql__ring_exit(&r, SEC), 0);

	/* A typo is a clear error, not a silently ignored knob. */
	ck_assert_int_eq(setenv(QL_RING_DISABLE_ENV, "multishot,defer-taskrun", 1), 0);
	ck_assert_int_eq(ql__ring_init(&r, NULL), -EINVAL);
	ck_assert_ptr_nonnull(strstr(ql__ring_last_error(), "'defer-taskrun'"));
	ck_assert_ptr_nonnull(strstr(ql__ring_last_error(), "defer_taskrun"));
	char why[512];
	ck_assert_int_eq(ql_uring_diagnose(why, sizeof(why)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, QL_RING_DISABLE_ENV));
	unsetenv(QL_RING_DISABLE_ENV);

	ck_assert_int_eq(ql__ring_parse_features("", &mask), 0);
	ck_assert_uint_eq(mask, 0);
	ck_assert_int_eq(ql__ring_parse_features("ext_arg,,reg_ring", &mask), 0);
	ck_assert_uint_eq(mask, QL_RING_F_EXT_ARG | QL_RING_F_REG_RING);
	ck_assert_int_eq(ql_uring_diagnose(why, sizeof(why)), 0);
	ck_assert_ptr_nonnull(strstr(why, "usable"));
}
END_TEST

/* ------------------------------------------------------------ submission */

START_TEST(test_sq_overcommit)
{
	/* 10x the SQ size queued before anything is submitted explicitly. */
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { SQ = 32, N = 10 * SQ };
		static struct rec recs[N];
		struct ql_ring_stats st;
		struct ql_ring r;

		t_ring_init(&r, cfg, SQ, 0);
		for (int i = 0; i < N; i++) {
			rec_init(&recs[i]);
			nop(&r, &recs[i]);
		}
		run_until_final(&r, recs, N);
		for (int i = 0; i < N; i++) {
			ck_assert_int_eq(recs[i].calls, 1);
			ck_assert_int_eq(recs[i].res, 0);
		}
		ql__ring_stats(&r, &st);
		ck_assert_uint_ge(st.sq_full, 1);
		ck_assert_uint_ge(st.cqes, N);
		ring_done(&r, cfg);
	}
}
END_TEST

START_TEST(test_batching)
{
	/* N operations prepared in a tick reach the kernel in one enter. */
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { N = 64 };
		struct rec recs[N];
		struct ql_ring_stats a, b;
		struct ql_ring r;

		t_ring_init(&r, cfg, 128, 0);
		ql__ring_submit(&r, 0, 0); /* the wake-up read armed at init */
		ql__ring_reap(&r);
		for (int i = 0; i < N; i++) {
			rec_init(&recs[i]);
			nop(&r, &recs[i]);
		}
		ck_assert_uint_eq(ql__ring_pending(&r), N);
		ql__ring_stats(&r, &a);
		ck_assert_int_eq(ql__ring_run(&r, N, 0), N);
		ql__ring_stats(&r, &b);
		ck_assert_msg(b.enters - a.enters == 1, "config %s: %llu enters for one batch",
			      cfg->name, (unsigned long long)(b.enters - a.enters));
		ck_assert_uint_eq(b.sqes - a.sqes, N);
		ck_assert_uint_eq(b.cqes - a.cqes, N);
		for (int i = 0; i < N; i++)
			ck_assert_int_eq(recs[i].finals, 1);
		ring_done(&r, cfg);
	}
}
END_TEST

/* A temporary file of n bytes, byte i being (i * 7) & 0xff; returns its fd. */
static int file_of(size_t n)
{
	char path[] = "/tmp/check_ring_fileXXXXXX";
	int fd = mkstemp(path);
	unsigned char *p = malloc(n);

	ck_assert_int_ge(fd, 0);
	ck_assert_ptr_nonnull(p);
	unlink(path);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 7);
	ck_assert_int_eq(pwrite(fd, p, n, 0), (ssize_t)n);
	free(p);
	return fd;
}

START_TEST(test_file_batch)
{
	/*
	 * Reads at a file offset go to the kernel every file_batch SQEs (the
	 * next acquisition submits them), not at the end of the batch; reads at
	 * offset -1 and NOPs wait for the batch; a reservation is never split.
	 */
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { N = 16, BS = 4096, K = 4 };
		static unsigned char bufs[N][BS];
		struct rec recs[N];
		struct ql_ring_opts o = { .sz = sizeof(o), .sq_entries = 64, .file_batch = K,
					  .disable = cfg->disable | t_env_disable(),
					  .flags = QL_RING_O_NO_ENV };
		struct ql_ring_stats a, b;
		struct ql_ring r;
		int fd = file_of((size_t)N * BS), fds0 = t_fd_count();

		/* 0 asks for the default. */
		t_ring_init(&r, cfg, 16, 0);
		ck_assert_uint_eq(r.file_batch, QL_RING_FILE_BATCH);
		ck_assert_int_eq(ql__ring_exit(&r, 5 * SEC), 0);
		/* Not a power of two: rounded down to one. */
		o.file_batch = 6;
		ck_assert_int_eq(ql__ring_init(&r, &o), 0);
		ck_assert_uint_eq(r.file_batch, 4);
		ck_assert_int_eq(ql__ring_exit(&r, 5 * SEC), 0);
		o.file_batch = K;
		ck_assert_int_eq(ql__ring_init(&r, &o), 0);
		ck_assert_uint_eq(r.file_batch, K);
		ql__ring_submit(&r, 0, 0); /* the wake-up read armed at init */
		ql__ring_reap(&r);

		/* Positional reads: an early enter at each K-th held SQE. */
		ql__ring_stats(&r, &a);
		for (int i = 0; i < N; i++) {
			struct io_uring_sqe *sqe;

			rec_init(&recs[i]);
			memset(bufs[i], 0xee, BS);
			sqe = ql__ring_sqe(&r, &recs[i].op);
			io_uring_prep_read(sqe, fd, bufs[i], BS, (uint64_t)(N - 1 - i) * BS);
			ql__ring_sqe_op(sqe, &recs[i].op);
			ck_assert_uint_le(ql__ring_pending(&r), K);
		}
		ql__ring_stats(&r, &b);
		ck_assert_msg(b.early_submits - a.early_submits == N / K - 1,
			      "config %s: %llu early submits for %d reads at batch %d", cfg->name,
			      (unsigned long long)(b.early_submits - a.early_submits), N, K);
		ck_assert_uint_eq(b.enters - a.enters, N / K - 1);
		ck_assert_uint_eq(b.sqes - a.sqes, N - K);
		ck_assert_uint_eq(ql__ring_pending(&r), K);
		run_until_final(&r, recs, N);
		for (int i = 0; i < N; i++) {
			size_t base = (size_t)(N - 1 - i) * BS;

			ck_assert_int_eq(recs[i].res, BS);
			for (int k = 0; k < BS; k += 511)
				ck_assert_uint_eq(bufs[i][k], (unsigned char)((base + k) * 7));
		}

		/* Offset -1 (the file position: how sockets and pipes are read) and NOPs batch. */
		ql__ring_stats(&r, &a);
		for (int i = 0; i < N; i++) {
			struct io_uring_sqe *sqe;

			rec_init(&recs[i]);
			sqe = ql__ring_sqe(&r, &recs[i].op);
			if (i & 1)
				io_uring_prep_read(sqe, fd, bufs[i], 1, (uint64_t)-1);
			else
				io_uring_prep_nop(sqe);
			ql__ring_sqe_op(sqe, &recs[i].op);
		}
		ck_assert_uint_eq(ql__ring_pending(&r), N);
		ql__ring_stats(&r, &b);
		ck_assert_uint_eq(b.early_submits, a.early_submits);
		ck_assert_uint_eq(b.enters, a.enters);
		run_until_final(&r, recs, N);
		for (int i = 0; i < N; i++)
			ck_assert_int_ge(recs[i].res, 0);

		/* A reservation keeps its SQEs together even past the batch. */
		ql__ring_stats(&r, &a);
		ck_assert_int_eq(ql__ring_reserve(&r, 2 * K), 0);
		for (int i = 0; i < 2 * K; i++) {
			struct io_uring_sqe *sqe;

			rec_init(&recs[i]);
			sqe = ql__ring_sqe(&r, &recs[i].op);
			io_uring_prep_read(sqe, fd, bufs[i], BS, (uint64_t)i * BS);
			ql__ring_sqe_op(sqe, &recs[i].op);
		}
		ck_assert_uint_eq(ql__ring_pending(&r), 2 * K);
		ql__ring_stats(&r, &b);
		ck_assert_uint_eq(b.early_submits, a.early_submits);
		run_until_final(&r, recs, 2 * K);
		for (int i = 0; i < 2 * K; i++)
			ck_assert_int_eq(recs[i].res, BS);
		ring_done(&r, cfg);
		ck_assert_int_eq(t_fd_count(), fds0);
		close(fd);
	}
}
END_TEST

START_TEST(test_inflight_bound)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { CAP = 16, N = 200 };
		static struct rec recs[N];
		struct ql_ring_opts o = { .sz = sizeof(o), .sq_entries = 64, .inflight_max = CAP,
					  .disable = cfg->disable | t_env_disable(), .flags = QL_RING_O_NO_ENV };
		struct ql_ring_stats st;
		struct ql_ring r;

		ck_assert_int_eq(ql__ring_init(&r, &o), 0);
		for (int i = 0; i < N; i++) {
			rec_init(&recs[i]);
			nop(&r, &recs[i]);
			ck_assert_uint_le(r.inflight, CAP);
		}
		run_until_final(&r, recs, N);
		ql__ring_stats(&r, &st);
		ck_assert_uint_le(st.inflight_peak, CAP);
		ck_assert_uint_ge(st.backpressure, 1);
		/* The try variant refuses instead of waiting. */
		for (int i = 0; i < CAP; i++)
			ck_assert_ptr_nonnull(ql__ring_sqe_try(&r, NULL));
		ck_assert_ptr_null(ql__ring_sqe_try(&r, NULL));
		ql__ring_submit(&r, 0, 0);
		while (r.inflight)
			ql__ring_run(&r, 1, 100 * MS);
		ring_done(&r, cfg);
	}
}
END_TEST

START_TEST(test_cq_overflow_counted)
{
	/*
	 * Unbounded on purpose: 8x the CQ size completes before anyone reaps.
	 * The kernel parks the excess on its overflow list; the ring must
	 * notice, count it and still deliver every CQE.
	 */
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { SQ = 16, N = 16 * SQ };
		static struct rec recs[N];
		struct ql_ring_opts o = { .sz = sizeof(o), .sq_entries = SQ, .cq_entries = 2 * SQ,
					  .disable = cfg->disable | t_env_disable(),
					  .flags = QL_RING_O_NO_ENV | QL_RING_O_UNBOUNDED |
						   QL_RING_O_NO_WAKE };
		struct ql_ring_stats st;
		struct ql_ring r;

		ck_assert_int_eq(ql__ring_init(&r, &o), 0);
		for (int i = 0; i < N; i++) {
			rec_init(&recs[i]);
			nop(&r, &recs[i]);
			if ((i + 1) % SQ == 0)
				ck_assert_int_ge(ql__ring_submit(&r, 0, 0), 0);
		}
		run_until_final(&r, recs, N);
		for (int i = 0; i < N; i++)
			ck_assert_int_eq(recs[i].calls, 1);
		ql__ring_stats(&r, &st);
		ck_assert_msg(st.overflows >= 1, "config %s: overflow not seen", cfg->name);
		ck_assert_uint_eq(st.cq_dropped, 0);
		ring_done(&r, cfg);
	}
}
END_TEST

/* ------------------------------------------------------------ streams */

static int accepted_fds[64];
static int naccepted;

static void accept_fn(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct rec *c = (struct rec *)op;

	rec_fn(r, op, res, flags);
	if (res >= 0) {
		ck_assert_msg(flags & IORING_CQE_F_MORE, "an accepted fd arrived as final");
		ck_assert_int_lt(naccepted, 64);
		accepted_fds[naccepted++] = res;
	}
	(void)c;
}

START_TEST(test_accept_stream)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { CONNS = 8 };
		int fds0 = t_fd_count();
		int clients[CONNS];
		struct ql_ring r;
		struct rec acc;
		uint16_t port;
		int lfd = t_listen_tcp(&port);

		t_ring_init(&r, cfg, 32, 0);
		rec_init(&acc);
		naccepted = 0;
		ck_assert_int_eq(ql__ring_accept_stream(&r, &acc.op, lfd, accept_fn), 0);
		ck_assert_int_eq(ql__ring_accept_stream(&r, &acc.op, lfd, accept_fn), -EBUSY);
		for (int i = 0; i < CONNS; i++)
			clients[i] = t_connect_tcp(port);
		uint64_t deadline = t_now_ns() + 5 * SEC;
		while (naccepted < CONNS && t_now_ns() < deadline)
			ql__ring_run(&r, 1, 100 * MS);
		ck_assert_int_eq(naccepted, CONNS);
		ck_assert_int_eq(acc.finals, 0);
		if (r.features & QL_RING_F_MULTISHOT)
			ck_assert(acc.op.flags & QL_OP_MULTISHOT);
		/* Each accepted fd is a live, connected socket. */
		for (int i = 0; i < CONNS; i++) {
			ck_assert_int_eq(write(clients[i], "p", 1), 1);
			char c;
			ck_assert_int_eq(read(accepted_fds[i], &c, 1), 1);
			close(accepted_fds[i]);
			close(clients[i]);
		}
		ck_assert_int_eq(ql__ring_cancel(&r, &acc.op), 0);
		run_until_final(&r, &acc, 1);
		ck_assert_int_eq(acc.res, -ECANCELED);
		ck_assert_int_eq(acc.finals, 1);
		ck_assert_int_eq(ql__ring_cancel(&r, &acc.op), -EALREADY);
		ring_done(&r, cfg);
		close(lfd);
		ck_assert_int_eq(t_fd_count(), fds0);
	}
}
END_TEST

struct recv_ctx {
	struct rec c;
	struct ql_bufgroup *bg;
	unsigned held[64];
	unsigned nheld;
	char data[16384];
	size_t got;
};

static void recv_fn(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct recv_ctx *x = (struct recv_ctx *)op;

	rec_fn(r, op, res, flags);
	if (res > 0) {
		char *buf = ql__bufgroup_buf(x->bg, flags);

		ck_assert_ptr_nonnull(buf);
		ck_assert_uint_le(x->got + (size_t)res, sizeof(x->data));
		memcpy(x->data + x->got, buf, (size_t)res);
		x->got += (size_t)res;
		/* Keep the buffer: the group runs dry and the stream must stall. */
		x->held[x->nheld++] = ql__bufgroup_bid(flags);
	}
}

START_TEST(test_recv_stream_runs_dry_and_rearms)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { NBUFS = 4, BUFSZ = 128, TOTAL = 8192 };
		static struct recv_ctx x;
		static char sent[TOTAL];
		struct ql_ring_stats st;
		struct ql_ring r;
		int sv[2];
		int fds0 = t_fd_count();

		t_ring_init(&r, cfg, 32, 0);
		memset(&x, 0, sizeof(x));
		x.c.op.fn = recv_fn;
		ck_assert_int_eq(ql__bufgroup_create(&r, 7, NBUFS, BUFSZ, &x.bg), 0);
		ck_assert_uint_eq(ql__bufgroup_avail(x.bg), NBUFS);
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		for (int i = 0; i < TOTAL; i++)
			sent[i] = (char)(i * 31 + i / 7);
		ck_assert_int_eq(write(sv[1], sent, TOTAL), TOTAL);
		ck_assert_int_eq(ql__ring_recv_stream(&r, &x.c.op, sv[0], x.bg, recv_fn), 0);

		uint64_t deadline = t_now_ns() + 10 * SEC;
		int stalls_seen = 0;
		while (x.got < TOTAL) {
			ck_assert_msg(t_now_ns() < deadline, "config %s: got %zu of %d", cfg->name,
				      x.got, TOTAL);
			ql__ring_run(&r, 1, 50 * MS);
			if (x.c.op.flags & QL_OP_STARVED)
				stalls_seen++;
			/* Only once it stalls, give the buffers back: it re-arms. */
			if (x.c.op.flags & QL_OP_STARVED) {
				for (unsigned i = 0; i < x.nheld; i++)
					ql__bufgroup_put(x.bg, x.held[i]);
				x.nheld = 0;
			}
		}
		ck_assert_int_eq(memcmp(x.data, sent, TOTAL), 0);
		ck_assert_int_eq(x.c.finals, 0);
		ql__ring_stats(&r, &st);
		ck_assert_msg(st.enobufs >= 1 && stalls_seen >= 1,
			      "config %s: the group never ran dry (enobufs %llu)", cfg->name,
			      (unsigned long long)st.enobufs);
		ck_assert_uint_ge(st.rearms, 1);

		/* End of file ends the stream with a final 0. */
		for (unsigned i = 0; i < x.nheld; i++)
			ql__bufgroup_put(x.bg, x.held[i]);
		x.nheld = 0;
		close(sv[1]);
		run_until_final(&r, &x.c, 1);
		ck_assert_int_eq(x.c.res, 0);
		ck_assert_int_eq(x.c.finals, 1);
		ql__bufgroup_destroy(x.bg);
		close(sv[0]);
		ring_done(&r, cfg);
		ck_assert_int_eq(t_fd_count(), fds0);
	}
}
END_TEST

START_TEST(test_recv_stream_cancel_while_starved)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		static struct recv_ctx x;
		struct ql_ring r;
		int sv[2];

		t_ring_init(&r, cfg, 32, 0);
		memset(&x, 0, sizeof(x));
		ck_assert_int_eq(ql__bufgroup_create(&r, 1, 1, 64, &x.bg), 0);
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		ck_assert_int_eq(write(sv[1], "0123456789abcdef0123456789abcdef0123456789abcdef"
					      "0123456789abcdef0123456789abcdef",
				       80),
				 80);
		ck_assert_int_eq(ql__ring_recv_stream(&r, &x.c.op, sv[0], x.bg, recv_fn), 0);
		uint64_t deadline = t_now_ns() + 5 * SEC;
		while (!(x.c.op.flags & QL_OP_STARVED) && t_now_ns() < deadline)
			ql__ring_run(&r, 1, 50 * MS);
		ck_assert(x.c.op.flags & QL_OP_STARVED);
		ck_assert_int_eq(ql__ring_cancel(&r, &x.c.op), 0);
		ck_assert_int_eq(x.c.finals, 0); /* never under the caller */
		run_until_final(&r, &x.c, 1);
		ck_assert_int_eq(x.c.res, -ECANCELED);
		for (unsigned i = 0; i < x.nheld; i++)
			ql__bufgroup_put(x.bg, x.held[i]);
		ql__bufgroup_destroy(x.bg);
		close(sv[0]);
		close(sv[1]);
		ring_done(&r, cfg);
	}
}
END_TEST

/* ------------------------------------------------------------ cancel, timeouts */

START_TEST(test_cancel_races_completion)
{
	/*
	 * A read on a pipe is cancelled in the same tick as the byte it waits
	 * for is written. Whichever wins, the read's record sees exactly one
	 * final CQE, and no byte is lost: if the cancel won, the byte is still
	 * in the pipe.
	 */
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { ROUNDS = 300 };
		int fds0 = t_fd_count();
		int won_cancel = 0, won_data = 0;
		struct ql_ring r;
		int p[2];

		t_ring_init(&r, cfg, 32, 0);
		ck_assert_int_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
		for (int i = 0; i < ROUNDS; i++) {
			struct rec c;
			char byte = 0;
			struct io_uring_sqe *sqe;

			rec_init(&c);
			sqe = ql__ring_sqe(&r, &c.op);
			io_uring_prep_read(sqe, p[0], &byte, 1, 0);
			ql__ring_sqe_op(sqe, &c.op);
			if (i % 3 != 0)
				ql__ring_submit(&r, 0, 0); /* armed in the kernel first */
			ck_assert_int_eq(write(p[1], "x", 1), 1);
			if (i % 2)
				ql__ring_submit(&r, 0, 0);
			ck_assert_int_eq(ql__ring_cancel(&r, &c.op), 0);
			run_until_final(&r, &c, 1);
			ck_assert_int_eq(c.finals, 1);
			ck_assert_int_eq(c.calls, 1);
			if (c.res == 1) {
				ck_assert_int_eq(byte, 'x');
				won_data++;
			} else {
				ck_assert_msg(c.res == -ECANCELED || c.res == -EINTR,
					      "config %s: read ended with %d", cfg->name, c.res);
				char b;
				ck_assert_int_eq(read(p[0], &b, 1), 1); /* not lost */
				won_cancel++;
			}
			ck_assert_int_eq(ql__ring_cancel(&r, &c.op), -EALREADY);
		}
		/* Drain the cancels' own CQEs. */
		while (r.inflight)
			ql__ring_run(&r, 1, 100 * MS);
		ck_assert_int_eq(won_cancel + won_data, ROUNDS);
		close(p[0]);
		close(p[1]);
		ring_done(&r, cfg);
		ck_assert_int_eq(t_fd_count(), fds0);
	}
}
END_TEST

START_TEST(test_cancel_blocked_ops)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { N = 16 };
		struct rec c[N];
		struct ql_ring r;
		int p[2];
		char buf[N];

		t_ring_init(&r, cfg, 32, 0);
		ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
		for (int i = 0; i < N; i++) {
			struct io_uring_sqe *sqe;

			rec_init(&c[i]);
			sqe = ql__ring_sqe(&r, &c[i].op);
			io_uring_prep_read(sqe, p[0], &buf[i], 1, 0);
			ql__ring_sqe_op(sqe, &c[i].op);
		}
		ql__ring_run(&r, 0, 0);
		for (int i = 0; i < N; i++)
			ck_assert_int_eq(ql__ring_cancel(&r, &c[i].op), 0);
		/* A second cancel of the same record is harmless. */
		ck_assert_int_eq(ql__ring_cancel(&r, &c[0].op), 0);
		run_until_final(&r, c, N);
		for (int i = 0; i < N; i++) {
			ck_assert_int_eq(c[i].finals, 1);
			ck_assert_int_eq(c[i].res, -ECANCELED);
		}
		while (r.inflight)
			ql__ring_run(&r, 1, 100 * MS);
		close(p[0]);
		close(p[1]);
		ring_done(&r, cfg);
	}
}
END_TEST

START_TEST(test_linked_timeout)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		struct ql_ring r;
		struct rec c;
		struct io_uring_sqe *sqe;
		char byte;
		int p[2];

		t_ring_init(&r, cfg, 32, 0);
		ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);

		/* Fires: nobody writes, the read is cancelled after 20 ms. */
		rec_init(&c);
		ck_assert_int_eq(ql__ring_reserve(&r, 2), 0);
		sqe = ql__ring_sqe(&r, &c.op);
		io_uring_prep_read(sqe, p[0], &byte, 1, 0);
		ql__ring_sqe_op(sqe, &c.op);
		ck_assert_int_eq(ql__ring_link_timeout(&r, sqe, &c.op, 20 * MS), 0);
		uint64_t t0 = t_now_ns();
		run_until_final(&r, &c, 1);
		uint64_t took = t_now_ns() - t0;
		ck_assert_int_eq(c.res, -ECANCELED);
		ck_assert_msg(took >= 15 * MS, "timed out after %llu ns", (unsigned long long)took);
		while (r.inflight)
			ql__ring_run(&r, 1, 100 * MS);

		/* Does not fire: the data is there, the read wins at once. */
		rec_init(&c);
		ck_assert_int_eq(write(p[1], "k", 1), 1);
		ck_assert_int_eq(ql__ring_reserve(&r, 2), 0);
		sqe = ql__ring_sqe(&r, &c.op);
		io_uring_prep_read(sqe, p[0], &byte, 1, 0);
		ql__ring_sqe_op(sqe, &c.op);
		ck_assert_int_eq(ql__ring_link_timeout(&r, sqe, &c.op, 10 * SEC), 0);
		t0 = t_now_ns();
		run_until_final(&r, &c, 1);
		while (r.inflight) /* the timeout's own -ECANCELED CQE */
			ql__ring_run(&r, 1, 100 * MS);
		ck_assert_int_eq(c.res, 1);
		ck_assert_int_eq(byte, 'k');
		ck_assert_uint_lt(t_now_ns() - t0, 5 * SEC);

		/* Misuse: a timeout must follow its operation directly. */
		ck_assert_int_eq(ql__ring_link_timeout(&r, sqe, &c.op, MS), -EINVAL);
		close(p[0]);
		close(p[1]);
		ring_done(&r, cfg);
	}
}
END_TEST

START_TEST(test_wait_timeout)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		struct ql_ring r;

		t_ring_init(&r, cfg, 16, 0);
		ql__ring_run(&r, 0, 0);
		struct ql_ring_stats a, b;
		uint64_t t0 = t_now_ns();

		ql__ring_stats(&r, &a);
		/*
		 * Nothing will complete: each wait ends on its timeout. An idle
		 * loop must sleep, not spin: 10 waits of 20 ms take about 10
		 * enters (a few more without EXT_ARG, never thousands).
		 */
		for (int i = 0; i < 10; i++)
			ck_assert_int_ge(ql__ring_run(&r, 1, 20 * MS), 0);
		ql__ring_stats(&r, &b);
		ck_assert_msg(b.enters - a.enters <= 30, "config %s: %llu enters for 10 idle waits",
			      cfg->name, (unsigned long long)(b.enters - a.enters));
		ck_assert_uint_lt(t_now_ns() - t0, 2 * SEC);
		ring_done(&r, cfg);
	}
}
END_TEST

/* ------------------------------------------------------------ wake-ups */

struct waker {
	const struct t_config *cfg;
	struct ql_ring *target;
	int use_msg_ring;
	int ready;		/* target parked (release/acquire) */
	uint64_t woke_after;	/* ns the target's wait lasted */
	uint64_t wakeups;
};

static void *parked_owner(void *arg)
{
	struct waker *w = arg;
	struct ql_ring r;
	struct ql_ring_stats st;

	t_ring_init(&r, w->cfg, 16, 0);
	ql__ring_run(&r, 0, 0); /* arm the eventfd read */
	w->target = &r;
	__atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
	uint64_t t0 = t_now_ns();
	while (1) {
		ql__ring_run(&r, 1, 10 * SEC);
		ql__ring_stats(&r, &st);
		if (st.wakeups || t_now_ns() - t0 > 10 * SEC)
			break;
	}
	w->woke_after = t_now_ns() - t0;
	w->wakeups = st.wakeups;
	/* Wait for the waker to be done with the ring before it goes. */
	while (__atomic_load_n(&w->ready, __ATOMIC_ACQUIRE) != 2)
		usleep(1000);
	ck_assert_int_eq(ql__ring_exit(&r, 5 * SEC), 0);
	return NULL;
}

static void wake_across_threads(const struct t_config *cfg, int use_msg_ring)
{
	struct waker w = { .cfg = cfg, .use_msg_ring = use_msg_ring };
	pthread_t th;

	ck_assert_int_eq(pthread_create(&th, NULL, parked_owner, &w), 0);
	while (!__atomic_load_n(&w.ready, __ATOMIC_ACQUIRE))
		usleep(1000);
	usleep(50 * 1000); /* let it block in io_uring_enter */
	if (use_msg_ring) {
		struct ql_ring mine;

		t_ring_init(&mine, cfg, 16, 0);
		ck_assert_int_eq(ql__ring_wake_from(&mine, w.target), 0);
		ck_assert_int_ge(ql__ring_submit(&mine, 0, 0), 0);
		while (mine.inflight)
			ql__ring_run(&mine, 1, 100 * MS);
		ck_assert_int_eq(ql__ring_exit(&mine, 5 * SEC), 0);
	} else {
		ck_assert_int_eq(ql__ring_wake(w.target), 0);
	}
	__atomic_store_n(&w.ready, 2, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	ck_assert_msg(w.wakeups >= 1, "config %s: no wake-up counted", cfg->name);
	ck_assert_msg(w.woke_after < 5 * SEC, "config %s: woke after %llu ms", cfg->name,
		      (unsigned long long)(w.woke_after / MS));
}

START_TEST(test_wake_eventfd)
{
	T_FOR_ALL_CONFIGS(cfg)
	wake_across_threads(cfg, 0);
}
END_TEST

START_TEST(test_wake_msg_ring)
{
	/* With msg_ring off this is the eventfd fallback, on purpose. */
	T_FOR_ALL_CONFIGS(cfg)
	wake_across_threads(cfg, 1);
}
END_TEST

/* ------------------------------------------------------------ registered files, io-wq */

START_TEST(test_registered_files_and_iowq)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		struct ql_ring r;
		struct rec c;
		char byte = 0;
		int p[2];

		t_ring_init(&r, cfg, 16, 0);
		ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
		ck_assert_int_eq(ql__ring_files_init(&r, 4), 0);
		ck_assert_int_eq(ql__ring_files_init(&r, 4), -EINVAL);
		ck_assert_int_eq(ql__ring_file_set(&r, 2, p[0]), 0);
		ck_assert_int_eq(ql__ring_file_set(&r, 4, p[0]), -EINVAL);
		ck_assert_int_eq(write(p[1], "f", 1), 1);
		rec_init(&c);
		struct io_uring_sqe *sqe = ql__ring_sqe(&r, &c.op);
		io_uring_prep_read(sqe, 2, &byte, 1, 0);
		sqe->flags |= IOSQE_FIXED_FILE;
		ql__ring_sqe_op(sqe, &c.op);
		run_until_final(&r, &c, 1);
		ck_assert_int_eq(c.res, 1);
		ck_assert_int_eq(byte, 'f');
		ck_assert_int_eq(ql__ring_file_set(&r, 2, -1), 0);
		ck_assert_int_eq(ql__ring_iowq_cap(&r, 2, 4), 0);
		close(p[0]);
		close(p[1]);
		ring_done(&r, cfg);
	}
}
END_TEST

/* ------------------------------------------------------------ teardown */

START_TEST(test_exit_drains_everything)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		enum { READS = 4 };
		int fds0 = t_fd_count();
		struct rec reads[READS];
		struct rec acc;
		static struct recv_ctx x;
		struct ql_ring r;
		uint16_t port;
		int lfd = t_listen_tcp(&port);
		int p[2], sv[2];
		char buf[READS];

		t_ring_init(&r, cfg, 32, 0);
		ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
		for (int i = 0; i < READS; i++) {
			rec_init(&reads[i]);
			struct io_uring_sqe *sqe = ql__ring_sqe(&r, &reads[i].op);
			io_uring_prep_read(sqe, p[0], &buf[i], 1, 0);
			ql__ring_sqe_op(sqe, &reads[i].op);
		}
		rec_init(&acc);
		naccepted = 0;
		ck_assert_int_eq(ql__ring_accept_stream(&r, &acc.op, lfd, accept_fn), 0);
		/* A recv stream stalled on an empty group. */
		memset(&x, 0, sizeof(x));
		ck_assert_int_eq(ql__bufgroup_create(&r, 3, 1, 16, &x.bg), 0);
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		ck_assert_int_eq(write(sv[1], "0123456789abcdef0123456789abcdef", 32), 32);
		ck_assert_int_eq(ql__ring_recv_stream(&r, &x.c.op, sv[0], x.bg, recv_fn), 0);
		uint64_t deadline = t_now_ns() + 5 * SEC;
		while (!(x.c.op.flags & QL_OP_STARVED) && t_now_ns() < deadline)
			ql__ring_run(&r, 1, 50 * MS);
		ck_assert(x.c.op.flags & QL_OP_STARVED);

		ck_assert_int_eq(ql__ring_exit(&r, 5 * SEC), 0);
		for (int i = 0; i < READS; i++) {
			ck_assert_int_eq(reads[i].finals, 1);
			ck_assert_int_eq(reads[i].res, -ECANCELED);
		}
		ck_assert_int_eq(acc.finals, 1);
		ck_assert_int_eq(acc.res, -ECANCELED);
		ck_assert_int_eq(x.c.finals, 1);
		ck_assert_int_eq(x.c.res, -ECANCELED);
		/* The group outlives the ring only as memory; destroy frees it. */
		ql__bufgroup_destroy(x.bg);
		close(p[0]);
		close(p[1]);
		close(sv[0]);
		close(sv[1]);
		close(lfd);
		ck_assert_int_eq(t_fd_count(), fds0);
		/* Exit twice, or on a zeroed ring, is harmless. */
		ck_assert_int_eq(ql__ring_exit(&r, SEC), 0);
	}
}
END_TEST

/* ------------------------------------------------------------ unusable io_uring */

/* Install a seccomp filter that fails io_uring_setup with err. */
static void deny_io_uring_setup(int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		_exit(99);
}

/*
 * In a child: optionally deny io_uring_setup with deny_err and drop to
 * uid 65534, then try to create a ring; the parent gets the result and the
 * message. Returns the child's ql_uring_diagnose() result.
 */
static int unusable_child(int deny_err, int drop_root, char *msg, size_t len)
{
	int p[2], status, ret = 0;
	pid_t pid;

	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char why[512];

		close(p[0]);
		if (drop_root && setuid(65534) != 0)
			_exit(98);
		if (deny_err)
			deny_io_uring_setup(deny_err);
		int r = ql_uring_diagnose(why, sizeof(why));
		struct ql_ring ring;
		int r2 = ql__ring_init(&ring, NULL);
		if (r2 == 0)
			ql__ring_exit(&ring, 0);
		if (write(p[1], &r, sizeof(r)) != sizeof(r) || write(p[1], &r2, sizeof(r2)) != sizeof(r2) ||
		    write(p[1], why, strlen(why) + 1) < 0)
			_exit(97);
		_exit(0);
	}
	close(p[1]);
	int r2 = 0;
	ck_assert_int_eq(read(p[0], &ret, sizeof(ret)), sizeof(ret));
	ck_assert_int_eq(read(p[0], &r2, sizeof(r2)), sizeof(r2));
	ssize_t n = read(p[0], msg, len - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
	ck_assert_int_eq(ret, r2); /* the internal and public paths agree */
	return ret;
}

START_TEST(test_unusable_seccomp_eperm)
{
	char msg[512];

	ck_assert_int_eq(unusable_child(EPERM, 0, msg, sizeof(msg)), -EPERM);
	ck_assert_msg(strstr(msg, "seccomp") && strstr(msg, "EPERM"), "message: %s", msg);
}
END_TEST

START_TEST(test_unusable_seccomp_enosys)
{
	char msg[512];

	ck_assert_int_eq(unusable_child(ENOSYS, 0, msg, sizeof(msg)), -ENOSYS);
	ck_assert_msg(strstr(msg, "ENOSYS") && strstr(msg, "seccomp"), "message: %s", msg);
	/* Without a filter, ENOSYS means a kernel without io_uring (or an interceptor). */
	char why[512];
	ql__ring_explain(-ENOSYS, why, sizeof(why));
	ck_assert_msg(strstr(why, "ENOSYS"), "message: %s", why);
}
END_TEST

START_TEST(test_unusable_enomem_memlock)
{
	char msg[512];
	struct rlimit small = { 64 * 1024, 64 * 1024 };

	/* Old kernels charge rings to RLIMIT_MEMLOCK; the message must say so. */
	ck_assert_int_eq(setrlimit(RLIMIT_MEMLOCK, &small), 0);
	ck_assert_int_eq(unusable_child(ENOMEM, 0, msg, sizeof(msg)), -ENOMEM);
	ck_assert_msg(strstr(msg, "RLIMIT_MEMLOCK") && strstr(msg, "64 KiB"), "message: %s", msg);
}
END_TEST

#define SYSCTL_PATH "/proc/sys/kernel/io_uring_disabled"

/* Why the sysctl test cannot run here, or NULL if it can. */
static const char *sysctl_test_unavailable(void)
{
	if (access(SYSCTL_PATH, F_OK) != 0)
		return "the kernel has no kernel.io_uring_disabled sysctl (before 6.6)";
	if (geteuid() != 0)
		return "changing kernel.io_uring_disabled needs root";
	return NULL;
}

static int write_sysctl(const char *path, long v)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fprintf(f, "%ld\n", v);
	return fclose(f);
}

START_TEST(test_unusable_sysctl)
{
	const char *path = SYSCTL_PATH;
	char msg[512];
	long old;
	FILE *f = fopen(path, "r");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%ld", &old), 1);
	fclose(f);

	/* 2: nobody may use io_uring. Restored right after the child's try. */
	ck_assert_int_eq(write_sysctl(path, 2), 0);
	int ret = unusable_child(0, 0, msg, sizeof(msg));
	ck_assert_int_eq(write_sysctl(path, old), 0);
	ck_assert_int_eq(ret, -EPERM);
	ck_assert_msg(strstr(msg, "io_uring_disabled=2"), "message: %s", msg);

	/* 1: only privileged users or the io_uring_group. */
	ck_assert_int_eq(write_sysctl(path, 1), 0);
	ret = unusable_child(0, 1, msg, sizeof(msg));
	ck_assert_int_eq(write_sysctl(path, old), 0);
	ck_assert_int_eq(ret, -EPERM);
	ck_assert_msg(strstr(msg, "io_uring_disabled=1") && strstr(msg, "io_uring_group"),
		      "message: %s", msg);
}
END_TEST

/* ------------------------------------------------------------ bad arguments */

START_TEST(test_bad_arguments)
{
	struct ql_ring r;
	struct ql_ring_opts o = { .sz = 3 };
	struct ql_bufgroup *bg = (void *)1;
	int fds0 = t_fd_count();

	ck_assert_int_eq(ql__ring_init(NULL, NULL), -EINVAL);
	ck_assert_int_eq(ql__ring_init(&r, &o), -EINVAL);
	o.sz = sizeof(o);
	o.disable = 1u << 30;
	ck_assert_int_eq(ql__ring_init(&r, &o), -EINVAL);
	o.disable = 0;
	o.sq_entries = 1u << 20;
	ck_assert_int_eq(ql__ring_init(&r, &o), -EINVAL);
	o.sq_entries = 64;
	o.cq_entries = 8;
	ck_assert_int_eq(ql__ring_init(&r, &o), -EINVAL);
	ck_assert_ptr_nonnull(strstr(ql__ring_last_error(), "CQ"));
	ck_assert_int_eq(ql__ring_parse_features("x", NULL), -EINVAL);

	ck_assert_int_eq(ql__ring_init(&r, NULL), 0);
	ck_assert_int_eq(ql__ring_reserve(&r, 0), -EINVAL);
	ck_assert_int_eq(ql__ring_reserve(&r, r.sq_entries + 1), -EINVAL);
	ck_assert_int_eq(ql__ring_cancel(&r, NULL), -EINVAL);
	ck_assert_int_eq(ql__ring_cancel(NULL, NULL), -EINVAL);
	struct rec c;
	rec_init(&c);
	ck_assert_int_eq(ql__ring_cancel(&r, &c.op), -EALREADY);
	ck_assert_int_eq(ql__ring_accept_stream(&r, &c.op, -1, rec_fn), -EINVAL);
	ck_assert_int_eq(ql__ring_accept_stream(&r, &c.op, 0, NULL), -EINVAL);
	ck_assert_int_eq(ql__ring_recv_stream(&r, &c.op, 0, NULL, rec_fn), -EINVAL);
	ck_assert_int_eq(ql__bufgroup_create(&r, 1, 3, 64, &bg), -EINVAL);
	ck_assert_ptr_null(bg);
	ck_assert_int_eq(ql__bufgroup_create(&r, 1, 0, 64, &bg), -EINVAL);
	ck_assert_int_eq(ql__bufgroup_create(&r, 1, 4, 0, &bg), -EINVAL);
	ck_assert_int_eq(ql__bufgroup_create(&r, 1, 65536, 64, &bg), -EINVAL);
	ck_assert_int_eq(ql__bufgroup_create(&r, 1, 4, 64, NULL), -EINVAL);
	ck_assert_ptr_null(ql__bufgroup_buf(NULL, IORING_CQE_F_BUFFER));
	ql__bufgroup_put(NULL, 0);
	ql__bufgroup_destroy(NULL);
	ck_assert_int_eq(ql__ring_file_set(&r, 0, 0), -EINVAL);
	ck_assert_int_eq(ql__ring_files_init(&r, 0), -EINVAL);
	ck_assert_int_eq(ql__ring_wake_from(&r, &r), -EINVAL);
	ck_assert_int_eq(ql__ring_wake(NULL), -EINVAL);
	ck_assert_int_eq(ql_uring_diagnose(NULL, 5), -EINVAL);
	ck_assert_int_eq(ql__ring_exit(&r, SEC), 0);
	ck_assert_int_eq(ql__ring_submit(&r, 0, 0), -EINVAL);
	ck_assert_int_eq(ql__ring_run(&r, 0, 0), -EINVAL);

	struct ql_ring_opts nw = { .sz = sizeof(nw), .flags = QL_RING_O_NO_WAKE };
	ck_assert_int_eq(ql__ring_init(&r, &nw), 0);
	ck_assert_int_eq(ql__ring_wake(&r), -ENOTSUP);
	ck_assert_int_eq(ql__ring_exit(&r, SEC), 0);
	ck_assert_int_eq(t_fd_count(), fds0);
	ck_assert_str_eq(ql_version(), "0.1.0");
}
END_TEST

static Suite *ring_suite(void)
{
	Suite *s = suite_create("ring");
	const struct t_case cases[] = {
		{ "setup", test_setup_each_config, 120, NULL },
		{ "env", test_env_disable, 120, NULL },
		{ "sq_overcommit", test_sq_overcommit, 120, NULL },
		{ "batching", test_batching, 120, NULL },
		{ "file_batch", test_file_batch, 120, NULL },
		{ "inflight_bound", test_inflight_bound, 120, NULL },
		{ "cq_overflow", test_cq_overflow_counted, 120, NULL },
		{ "accept_stream", test_accept_stream, 120, NULL },
		{ "recv_stream", test_recv_stream_runs_dry_and_rearms, 120, NULL },
		{ "recv_cancel_starved", test_recv_stream_cancel_while_starved, 120, NULL },
		{ "cancel_race", test_cancel_races_completion, 120, NULL },
		{ "cancel_blocked", test_cancel_blocked_ops, 120, NULL },
		{ "linked_timeout", test_linked_timeout, 120, NULL },
		{ "wait_timeout", test_wait_timeout, 120, NULL },
		{ "wake_eventfd", test_wake_eventfd, 120, NULL },
		{ "wake_msg_ring", test_wake_msg_ring, 120, NULL },
		{ "files_iowq", test_registered_files_and_iowq, 120, NULL },
		{ "exit_drains", test_exit_drains_everything, 120, NULL },
		{ "unusable_eperm", test_unusable_seccomp_eperm, 120, NULL },
		{ "unusable_enosys", test_unusable_seccomp_enosys, 120, NULL },
		{ "unusable_enomem", test_unusable_enomem_memlock, 120, NULL },
		{ "unusable_sysctl", test_unusable_sysctl, 120, sysctl_test_unavailable() },
		{ "bad_args", test_bad_arguments, 120, NULL },
	};

	t_add_cases(s, "ring", cases, sizeof(cases) / sizeof(cases[0]));
	return s;
}

int main(void)
{
	return t_run_suite(ring_suite());
}
