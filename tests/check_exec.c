/* SPDX-License-Identifier: MIT */
/*
 * tests/check_exec.c - the executor (lib/exec.c): stackless tasks, outside
 * spawns, work stealing, I/O in callback form, parking, shutdown, stats,
 * USDT probes, and argument checking, on real threads and a real io_uring.
 *
 * Sizes shrink under ThreadSanitizer (which runs this suite in CI) and grow
 * with QILIN_STRESS; what is checked does not change.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "qilin.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* Scale a size for the build: a tenth under TSan, 4x under QILIN_STRESS. */
static long scaled(long n)
{
	if (getenv("QILIN_STRESS"))
		return n * 4;
	return T_TSAN ? n / 10 : n;
}

static struct ql_exec *make_exec(unsigned workers)
{
	struct ql_exec_opts o = { .sz = sizeof(o), .workers = workers };
	struct ql_exec *ex = NULL;
	int ret = ql_exec_create(&o, &ex);

	ck_assert_msg(ret == 0, "ql_exec_create: %d (%s)", ret, strerror(-ret));
	return ex;
}

/* Poll until *v reaches want, failing after 60 s. */
static void wait_for(_Atomic long *v, long want)
{
	uint64_t deadline = ql_now() + 60 * SEC;

	while (atomic_load(v) < want) {
		ck_assert_msg(ql_now() < deadline, "stuck at %ld of %ld", atomic_load(v), want);
		usleep(1000);
	}
}

/* ------------------------------------------------------------ exactly once */

static _Atomic unsigned char *hits;
static _Atomic long ndone;
static struct ql_exec *g_ex;

static void hit(void *arg)
{
	atomic_fetch_add_explicit(&hits[(uintptr_t)arg], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ndone, 1, memory_order_release);
}

struct range {
	long from, to;
};

/*
 * Failed calls in hot loops are counted and asserted once at the end: a
 * passing ck_assert is a write to Check's pipe in fork mode, a system call
 * per task that would change what is measured.
 */
static _Atomic long spawn_failures;

static void spawn_range(void *arg)
{
	struct range *r = arg;

	for (long i = r->from; i < r->to; i++)
		if (ql_spawn(g_ex, hit, (void *)(uintptr_t)i) != 0)
			atomic_fetch_add(&spawn_failures, 1);
}

static void check_hits(long n)
{
	for (long i = 0; i < n; i++)
		ck_assert_msg(hits[i] == 1, "task %ld ran %d times", i, hits[i]);
}

START_TEST(test_ten_million_tasks_exactly_once)
{
	long n = scaled(10 * 1000 * 1000);
	enum { SPAWNERS = 8 };
	struct range r[SPAWNERS];
	struct ql_stats st = { .sz = sizeof(st) };

	hits = calloc((size_t)n, 1);
	ck_assert_ptr_nonnull(hits);
	atomic_store(&ndone, 0);
	g_ex = make_exec(0);
	/* Spawned from inside tasks, spread over the workers. */
	for (int s = 0; s < SPAWNERS; s++) {
		r[s].from = n / SPAWNERS * s;
		r[s].to = s == SPAWNERS - 1 ? n : n / SPAWNERS * (s + 1);
		ck_assert_int_eq(ql_spawn(g_ex, spawn_range, &r[s]), 0);
	}
	wait_for(&ndone, n);
	ck_assert_int_eq(atomic_load(&spawn_failures), 0);
	ck_assert_int_eq(ql_exec_shutdown(g_ex, 10 * SEC), 0);
	check_hits(n);
	ck_assert_int_eq(ql_exec_stats(g_ex, &st), 0);
	ck_assert_uint_eq(st.total.run, (uint64_t)n + SPAWNERS);
	ck_assert_uint_eq(st.total.spawned, (uint64_t)n + SPAWNERS);
	ck_assert_uint_eq(st.total.dropped, 0);
	ql_exec_destroy(g_ex);
	free((void *)hits);
}
END_TEST

struct outside_arg {
	long from, to;
};

static void *outside_spawner(void *arg)
{
	struct outside_arg *a = arg;

	for (long i = a->from; i < a->to; i++)
		if (ql_spawn(g_ex, hit, (void *)(uintptr_t)i) != 0)
			atomic_fetch_add(&spawn_failures, 1);
	return NULL;
}

START_TEST(test_eight_outside_threads)
{
	enum { THREADS = 8 };
	long n = scaled(2 * 1000 * 1000);
	pthread_t th[THREADS];
	struct outside_arg a[THREADS];

	hits = calloc((size_t)n, 1);
	ck_assert_ptr_nonnull(hits);
	atomic_store(&ndone, 0);
	g_ex = make_exec(0);
	for (int t = 0; t < THREADS; t++) {
		a[t].from = n / THREADS * t;
		a[t].to = t == THREADS - 1 ? n : n / THREADS * (t + 1);
		ck_assert_int_eq(pthread_create(&th[t], NULL, outside_spawner, &a[t]), 0);
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	ck_assert_int_eq(atomic_load(&spawn_failures), 0);
	wait_for(&ndone, n);
	check_hits(n);
	ql_exec_destroy(g_ex);
	free((void *)hits);
}
END_TEST

/* ------------------------------------------------------------ stealing */

static _Atomic long ran_on[64];

static void cpu_bound(void *arg)
{
	/* ql_worker_id() is checked in aggregate: ran_on[] sums to the total. */
	/* About a microsecond of arithmetic the compiler cannot drop. */
	volatile uint64_t x = (uintptr_t)arg;

	/*
	 * TSan slows spawning (all atomics) far more than this loop: the tasks
	 * get heavier there so that spawning stays small next to the work, as
	 * it is in a normal build, and the test still measures stealing.
	 */
	for (int i = 0; i < (T_TSAN ? 6000 : 300); i++)
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	atomic_fetch_add_explicit(&ran_on[ql_worker_id()], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ndone, 1, memory_order_release);
}

static long steal_n;

static void spawn_all_here(void *arg)
{
	for (long i = 0; i < steal_n; i++)
		if (ql_spawn(g_ex, cpu_bound, (void *)(uintptr_t)i) != 0)
			atomic_fetch_add(&spawn_failures, 1);
}

START_TEST(test_stealing_spreads_work)
{
	struct ql_worker_stats ws[2];
	struct ql_stats st = { .sz = sizeof(st), .workers = ws, .workers_len = 2 };

	steal_n = scaled(1000 * 1000);
	atomic_store(&ndone, 0);
	memset(ran_on, 0, sizeof(ran_on));
	g_ex = make_exec(2);
	/* Every task is spawned onto the one worker the spawner runs on. */
	ck_assert_int_eq(ql_spawn(g_ex, spawn_all_here, NULL), 0);
	wait_for(&ndone, steal_n);
	ck_assert_int_eq(atomic_load(&spawn_failures), 0);
	ck_assert_int_eq(ql_exec_stats(g_ex, &st), 0);
	for (int w = 0; w < 2; w++)
		ck_assert_msg(atomic_load(&ran_on[w]) >= steal_n / 4,
			      "worker %d ran %ld of %ld tasks", w, atomic_load(&ran_on[w]), steal_n);
	ck_assert_uint_ge(ws[0].stolen + ws[1].stolen, 1);
	ql_exec_destroy(g_ex);
}
END_TEST

/* ------------------------------------------------------------ callback I/O */

enum { CHAINS = 4 };

struct chain {
	long next;	/* sequence number the next completion must carry */
	long len;	/* NOPs in the chain */
	int worker;	/* where the chain started */
	int moved;	/* a continuation ran on another worker */
	long bad;	/* failed NOPs or failed submissions (asserted at the end) */
	_Atomic int done;
};

static struct chain chains[CHAINS];

static void chain_step(void *arg, ssize_t res)
{
	struct chain *c = arg;

	if (res != 0)
		c->bad++;
	if (ql_worker_id() != c->worker)
		c->moved = 1;
	if (++c->next < c->len) {
		if (ql_nop_cb(chain_step, c) != 0) {
			c->bad++;
			atomic_store(&c->done, 1);
		}
	} else {
		atomic_store(&c->done, 1);
	}
}

static void chain_start(void *arg)
{
	struct chain *c = arg;

	c->worker = ql_worker_id();
	ck_assert_int_eq(ql_nop_cb(chain_step, c), 0);
}

START_TEST(test_nop_chains_in_order)
{
	long total = scaled(1000 * 1000);

	g_ex = make_exec(0);
	for (int i = 0; i < CHAINS; i++) {
		memset(&chains[i], 0, sizeof(chains[i]));
		chains[i].len = total / CHAINS;
		ck_assert_int_eq(ql_spawn(g_ex, chain_start, &chains[i]), 0);
	}
	uint64_t deadline = ql_now() + 120 * SEC;
	for (int i = 0; i < CHAINS; i++) {
		while (!atomic_load(&chains[i].done)) {
			ck_assert_msg(ql_now() < deadline, "chain %d at %ld", i, chains[i].next);
			usleep(1000);
		}
		ck_assert_int_eq(chains[i].bad, 0);
		ck_assert_int_eq(chains[i].next, chains[i].len);
		/* A continuation runs on the worker whose ring completed it. */
		ck_assert_int_eq(chains[i].moved, 0);
	}
	ck_assert_int_eq(ql_exec_shutdown(g_ex, 10 * SEC), 0);
	ql_exec_destroy(g_ex);
}
END_TEST

/* A small echo over loopback with accept/recv/send/read/write/timeout. */
struct io_check {
	int lfd, cfd, sfd, pipe[2];
	char rbuf[16], pbuf[16];
	_Atomic long steps;
	ssize_t accept_res, recv_res, send_res, write_res, read_res, tmo_res;
};

static struct io_check ioc;

static void on_read(void *arg, ssize_t res)
{
	ioc.read_res = res;
	atomic_fetch_add(&ioc.steps, 1);
}

static void on_write(void *arg, ssize_t res)
{
	ioc.write_res = res;
	ck_assert_int_eq(ql_read_cb(ioc.pipe[0], ioc.pbuf, 5, -1, on_read, NULL), 0);
}

static void on_recv(void *arg, ssize_t res)
{
	ioc.recv_res = res;
	ck_assert_int_eq(ql_write_cb(ioc.pipe[1], ioc.rbuf, (size_t)res, -1, on_write, NULL), 0);
}

static void on_send(void *arg, ssize_t res)
{
	ioc.send_res = res;
	atomic_fetch_add(&ioc.steps, 1);
}

static void on_accept(void *arg, ssize_t res)
{
	ioc.accept_res = res;
	ioc.sfd = (int)res;
	ck_assert_int_ge(res, 0);
	ck_assert_int_eq(ql_recv_cb(ioc.sfd, ioc.rbuf, sizeof(ioc.rbuf), 0, on_recv, NULL), 0);
	ck_assert_int_eq(ql_send_cb(ioc.sfd, "pong!", 5, MSG_NOSIGNAL, on_send, NULL), 0);
}

static void on_timeout(void *arg, ssize_t res)
{
	ioc.tmo_res = res;
	atomic_fetch_add(&ioc.steps, 1);
}

static void io_start(void *arg)
{
	ck_assert_int_eq(ql_accept_cb(ioc.lfd, on_accept, NULL), 0);
	ck_assert_int_eq(ql_timeout_cb(5 * MS, on_timeout, NULL), 0);
}

START_TEST(test_callback_io)
{
	uint16_t port;
	char buf[8];
	int fds0 = t_fd_count();

	memset(&ioc, 0, sizeof(ioc));
	ioc.lfd = t_listen_tcp(&port);
	ck_assert_int_eq(pipe2(ioc.pipe, O_CLOEXEC), 0);
	g_ex = make_exec(0);
	ck_assert_int_eq(ql_spawn(g_ex, io_start, NULL), 0);
	ioc.cfd = t_connect_tcp(port);
	ck_assert_int_eq(write(ioc.cfd, "hello", 5), 5);
	ck_assert_int_eq(read(ioc.cfd, buf, 5), 5);
	ck_assert_int_eq(memcmp(buf, "pong!", 5), 0);
	wait_for(&ioc.steps, 3);
	ck_assert_int_eq(ioc.recv_res, 5);
	ck_assert_int_eq(ioc.send_res, 5);
	ck_assert_int_eq(ioc.write_res, 5);
	ck_assert_int_eq(ioc.read_res, 5);
	ck_assert_int_eq(memcmp(ioc.pbuf, "hello", 5), 0);
	ck_assert_int_eq(ioc.tmo_res, -ETIME);
	ck_assert_int_eq(ql_exec_shutdown(g_ex, 10 * SEC), 0);
	ql_exec_destroy(g_ex);
	close(ioc.sfd);
	close(ioc.cfd);
	close(ioc.lfd);
	close(ioc.pipe[0]);
	close(ioc.pipe[1]);
	ck_assert_int_eq(t_fd_count(), fds0);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

static _Atomic long cancelled, completed;
static char never_buf[4];

static void count_result(void *arg, ssize_t res)
{
	if (res == -ECANCELED)
		atomic_fetch_add(&cancelled, 1);
	else
		atomic_fetch_add(&completed, 1);
	/* New work after shutdown began is refused, never half-accepted. */
	ck_assert_int_eq(ql_nop_cb(count_result, NULL), -ESHUTDOWN);
}

static void blocked_io(void *arg)
{
	int fd = (int)(uintptr_t)arg;

	/* A read nobody will satisfy and a timeout far away. */
	ck_assert_int_eq(ql_read_cb(fd, never_buf, 1, -1, count_result, NULL), 0);
	ck_assert_int_eq(ql_timeout_cb(60 * SEC, count_result, NULL), 0);
	atomic_fetch_add(&ndone, 1);
}

static void slow_task(void *arg)
{
	usleep(1000);
	atomic_fetch_add(&ndone, 1);
}

/* From inside a worker: more than a deque holds, so batches spill to the global queue. */
static void spill_spawner(void *arg)
{
	long n = (long)(uintptr_t)arg, fails = 0;

	for (long i = 0; i < n; i++)
		fails += ql_spawn(g_ex, slow_task, NULL) != 0;
	ck_assert_int_eq(fails, 0);
	atomic_fetch_add(&ndone, 1);
}

START_TEST(test_shutdown_with_work_in_flight)
{
	int p[2], fds0 = t_fd_count();
	struct ql_stats st = { .sz = sizeof(st) };
	enum { BLOCKED = 4, SLOW = 2000 };

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	atomic_store(&cancelled, 0);
	atomic_store(&completed, 0);
	atomic_store(&ndone, 0);
	g_ex = make_exec(0);
	for (int i = 0; i < BLOCKED; i++)
		ck_assert_int_eq(ql_spawn(g_ex, blocked_io, (void *)(uintptr_t)p[0]), 0);
	wait_for(&ndone, BLOCKED);
	/* Tasks queued in the global queue too (dropped there count per task). */
	ck_assert_int_eq(ql_spawn(g_ex, spill_spawner, (void *)(uintptr_t)SLOW), 0);
	wait_for(&ndone, BLOCKED + 1);
	/* Plenty of queued tasks too: some run, the rest are dropped. */
	for (int i = 0; i < SLOW; i++)
		ck_assert_int_eq(ql_spawn(g_ex, slow_task, NULL), 0);
	uint64_t t0 = ql_now();
	ck_assert_int_eq(ql_exec_shutdown(g_ex, 100 * MS), -ETIMEDOUT);
	ck_assert_uint_lt(ql_now() - t0, 10 * SEC);
	/* Each blocked operation's continuation ran exactly once, cancelled. */
	ck_assert_int_eq(atomic_load(&cancelled), 2 * BLOCKED);
	ck_assert_int_eq(atomic_load(&completed), 0);
	ck_assert_int_eq(ql_exec_stats(g_ex, &st), 0);
	ck_assert_uint_eq(st.total.run + st.total.dropped, st.total.spawned);
	ck_assert_uint_eq(st.global_depth, 0);
	ck_assert_int_eq(ql_spawn(g_ex, slow_task, NULL), -ESHUTDOWN);
	ck_assert_int_eq(ql_exec_shutdown(g_ex, 0), -EALREADY);
	ql_exec_destroy(g_ex);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(t_fd_count(), fds0);
}
END_TEST

START_TEST(test_destroy_without_shutdown)
{
	int fds0 = t_fd_count();

	atomic_store(&ndone, 0);
	g_ex = make_exec(0);
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(ql_spawn(g_ex, slow_task, NULL), 0);
	/* Destroy waits for the queued work (no limit) and frees everything. */
	ql_exec_destroy(g_ex);
	ck_assert_int_eq(atomic_load(&ndone), 1000);
	ck_assert_int_eq(t_fd_count(), fds0);
}
END_TEST

/* ------------------------------------------------------------ idle, wake-up */

/* utime + stime of this process in clock ticks, from /proc/self/stat. */
static long cpu_ticks(void)
{
	char buf[1024];
	FILE *f = fopen("/proc/self/stat", "r");
	long ut = 0, st = 0;

	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
	fclose(f);
	/* Fields after the command name (which may hold spaces) start past ')'. */
	char *p = strrchr(buf, ')');
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut,
				&st),
			 2);
	return ut + st;
}

START_TEST(test_idle_executor_uses_no_cpu)
{
	long hz = sysconf(_SC_CLK_TCK);
	struct ql_stats a = { .sz = sizeof(a) }, b = { .sz = sizeof(b) };

	atomic_store(&ndone, 0);
	g_ex = make_exec(0);
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(ql_spawn(g_ex, slow_task, NULL), 0);
	wait_for(&ndone, 1000);
	usleep(200 * 1000);
	ck_assert_int_eq(ql_exec_stats(g_ex, &a), 0);
	long t0 = cpu_ticks();
	sleep(3);
	long used = cpu_ticks() - t0;
	ck_assert_int_eq(ql_exec_stats(g_ex, &b), 0);
	/* Under 1% of one CPU over 3 s: fewer than 3 ticks of 1/100 s. */
	ck_assert_msg(used * 100 < 3 * hz, "idle executor used %ld ticks (%ld Hz) in 3 s", used,
		      hz);
	ck_assert_msg(b.total.ticks - a.total.ticks < 100, "%llu ticks while idle",
		      (unsigned long long)(b.total.ticks - a.total.ticks));
	/* Parked workers wake for an outside spawn. */
	ck_assert_int_eq(ql_spawn(g_ex, slow_task, NULL), 0);
	wait_for(&ndone, 1001);
	ql_exec_destroy(g_ex);
}
END_TEST

/* ------------------------------------------------------------ probes */

START_TEST(test_usdt_probes_present)
{
	const char *probes[] = { "worker_park", "worker_unpark", "tick", "task_spawn", "task_run" };
	char cmd[256], line[512];
	int found[5] = { 0 };
	FILE *f;

	/* This binary links libqilin.a: its notes are the library's. */
	snprintf(cmd, sizeof(cmd), "readelf -n /proc/%d/exe 2>/dev/null", (int)getpid());
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		for (int i = 0; i < 5; i++) {
			char want[64];

			snprintf(want, sizeof(want), "Name: %s\n", probes[i]);
			if (strstr(line, want))
				found[i]++;
		}
	}
	pclose(f);
	for (int i = 0; i < 5; i++)
		ck_assert_msg(found[i] >= 1, "USDT probe qilin:%s missing", probes[i]);
}
END_TEST

/* ------------------------------------------------------------ bad arguments */

static void noop_task(void *arg)
{
}

static void noop_cb(void *arg, ssize_t res)
{
}

START_TEST(test_bad_arguments)
{
	struct ql_exec_opts o = { .sz = 1 };
	struct ql_exec *ex = (void *)1;
	struct ql_stats st = { .sz = sizeof(st) };
	int fds0 = t_fd_count();
	char b[4];

	ck_assert_int_eq(ql_exec_create(NULL, NULL), -EINVAL);
	ck_assert_int_eq(ql_exec_create(&o, &ex), -EINVAL);
	ck_assert_ptr_null(ex);
	o.sz = sizeof(o);
	o.flags = 1u << 20;
	ck_assert_int_eq(ql_exec_create(&o, &ex), -EINVAL);
	o.flags = 0;
	o.workers = 100000;
	ck_assert_int_eq(ql_exec_create(&o, &ex), -EINVAL);
	ck_assert_int_eq(ql_spawn(NULL, noop_task, NULL), -EINVAL);
	ck_assert_int_eq(ql_exec_stats(NULL, &st), -EINVAL);
	ck_assert_int_eq(ql_exec_shutdown(NULL, 0), -EINVAL);
	ql_exec_destroy(NULL);
	ck_assert_int_eq(ql_worker_id(), -EPERM);
	/* Callback I/O belongs to workers. */
	ck_assert_int_eq(ql_nop_cb(noop_cb, NULL), -EPERM);
	ck_assert_int_eq(ql_timeout_cb(1, noop_cb, NULL), -EPERM);
	ck_assert_int_eq(ql_read_cb(0, b, 1, 0, noop_cb, NULL), -EPERM);
	ck_assert_int_eq(ql_read_cb(-1, b, 1, 0, noop_cb, NULL), -EBADF);
	ck_assert_int_eq(ql_write_cb(1, NULL, 1, 0, noop_cb, NULL), -EINVAL);
	ck_assert_int_eq(ql_recv_cb(-3, b, 1, 0, noop_cb, NULL), -EBADF);
	ck_assert_int_eq(ql_send_cb(0, NULL, 4, 0, noop_cb, NULL), -EINVAL);
	ck_assert_int_eq(ql_accept_cb(-1, noop_cb, NULL), -EBADF);

	ex = make_exec(1);
	ck_assert_int_eq(ql_spawn(ex, NULL, NULL), -EINVAL);
	struct ql_stats bad = { .sz = 8 };
	ck_assert_int_eq(ql_exec_stats(ex, &bad), -EINVAL);
	struct ql_stats nolist = { .sz = sizeof(nolist), .workers_len = 4 };
	ck_assert_int_eq(ql_exec_stats(ex, &nolist), -EINVAL);
	ck_assert_int_eq(ql_exec_stats(ex, &st), 0);
	ck_assert_uint_eq(st.nworkers, 1);
	ck_assert_int_eq(ql_exec_shutdown(ex, SEC), 0);
	ck_assert_int_eq(ql_spawn(ex, noop_task, NULL), -ESHUTDOWN);
	ql_exec_destroy(ex);
	ck_assert_int_eq(t_fd_count(), fds0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("exec");
	const struct t_case cases[] = {
		{ "ten_million", test_ten_million_tasks_exactly_once, 300, NULL },
		{ "outside_threads", test_eight_outside_threads, 300, NULL },
		{ "stealing", test_stealing_spreads_work, 300, NULL },
		{ "nop_chains", test_nop_chains_in_order, 300, NULL },
		{ "callback_io", test_callback_io, 60, NULL },
		{ "shutdown_in_flight", test_shutdown_with_work_in_flight, 60, NULL },
		{ "destroy", test_destroy_without_shutdown, 60, NULL },
		{ "idle", test_idle_executor_uses_no_cpu, 60, NULL },
		{ "usdt", test_usdt_probes_present, 30, NULL },
		{ "bad_args", test_bad_arguments, 30, NULL },
	};

	t_add_cases(s, "exec", cases, sizeof(cases) / sizeof(cases[0]));
	return t_run_suite(s);
}
