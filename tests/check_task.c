/* SPDX-License-Identifier: MIT */
/*
 * tests/check_task.c - stackful tasks (lib/task.c): ql_go, join, cancel,
 * yield, sleep, defer chains, panic/recover, scopes with deadlines, and the
 * blocking-style I/O calls, on real threads, real sockets, pipes and files,
 * and a real io_uring. No mocks.
 *
 * How tasks report. A task never calls ck_assert: it runs on a worker
 * thread, and in fork mode every passing check is a write to Check's pipe.
 * Tasks record what they saw (results, times, the order deferred functions
 * ran in) and EXPECT() counts mismatches, keeping the first one's text; the
 * test thread asserts once, after joining. Hot loops count failures and
 * assert once at the end, as in check_exec.c.
 *
 * How each case ends. Every task has ended (joined, or a flag its last
 * deferred function sets), the executor is destroyed, and the process has
 * exactly the file descriptors it had when the case began (t_fd_count).
 * Panics log to stderr: cases that panic capture stderr, check what was
 * logged, and keep the suite's output clean.
 *
 * Timing. "Promptly" in the header means within a millisecond; the cases
 * allow PROMPT (100 ms) so that a loaded machine does not fail them, and
 * print what they measured.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "qilin.h"

#define MS 1000000ull
#define SEC 1000000000ull
/* How late a cancelled or expired call may return (the contract says 1 ms). */
#define PROMPT (100 * MS)

/* ------------------------------------------------------------ expectations in tasks */

static _Atomic int expect_fails;
static char expect_first[512];
static pthread_mutex_t expect_lock = PTHREAD_MUTEX_INITIALIZER;

static void expect_failed(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect_failed(int line, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&expect_lock);
	if (atomic_fetch_add(&expect_fails, 1) == 0) {
		int n = snprintf(expect_first, sizeof(expect_first), "line %d: ", line);

		va_start(ap, fmt);
		vsnprintf(expect_first + n, sizeof(expect_first) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&expect_lock);
}

/* Record a failed expectation (from any thread, any task); asserted later. */
#define EXPECT(cond, ...)                                     \
	do {                                                  \
		if (!(cond))                                  \
			expect_failed(__LINE__, __VA_ARGS__); \
	} while (0)

#define EXPECT_EQ(got, want)                                                                   \
	do {                                                                                   \
		long long g_ = (long long)(got), w_ = (long long)(want);                       \
		if (g_ != w_)                                                                  \
			expect_failed(__LINE__, "%s is %lld, want %s (%lld)", #got, g_, #want, \
				      w_);                                                     \
	} while (0)

static void check_expects(void)
{
	pthread_mutex_lock(&expect_lock);
	ck_assert_msg(atomic_load(&expect_fails) == 0,
		      "%d expectation(s) failed in tasks; first: %s", atomic_load(&expect_fails),
		      expect_first);
	pthread_mutex_unlock(&expect_lock);
}

/* ------------------------------------------------------------ the defer log */

/*
 * Deferred functions and task bodies append ids here; each id also counts
 * its runs, so "exactly once" and "in this order" are both checked.
 */
enum { LOG_MAX = 4096, BODY_END = 3000, AFTER_PANIC = 3001, PANIC2 = 3002 };
static _Atomic int log_n;
static int log_ids[LOG_MAX];
static _Atomic int log_runs[LOG_MAX];

static void log_id(int id)
{
	int i = atomic_fetch_add(&log_n, 1);

	if (i < LOG_MAX)
		log_ids[i] = id;
	if (id >= 0 && id < LOG_MAX)
		atomic_fetch_add(&log_runs[id], 1);
}

static void d_log(void *arg)
{
	log_id((int)(intptr_t)arg);
}

static const char *fmt_log(void)
{
	static char buf[400];
	int n = atomic_load(&log_n), off = 0;

	buf[0] = '\0';
	for (int i = 0; i < n && i < LOG_MAX && off < (int)sizeof(buf) - 16; i++)
		off += snprintf(buf + off, sizeof(buf) - (size_t)off, "%d ", log_ids[i]);
	return buf;
}

/* The log is exactly want[0..n). */
static void check_log(const int *want, int n, const char *what)
{
	int got = atomic_load(&log_n), bad = 0, first = -1;

	ck_assert_msg(got == n, "%s: %d entries in the defer log, want %d: %s", what, got, n,
		      fmt_log());
	for (int i = 0; i < n; i++)
		if (log_ids[i] != want[i] && bad++ == 0)
			first = i;
	ck_assert_msg(bad == 0, "%s: %d entries out of order, first at %d (got %d, want %d): %s",
		      what, bad, first, first >= 0 ? log_ids[first] : 0,
		      first >= 0 ? want[first] : 0, fmt_log());
}

/* ------------------------------------------------------------ common helpers */

static struct ql_exec *g_ex;

static struct ql_exec *make_exec(unsigned workers)
{
	struct ql_exec_opts o = { .sz = sizeof(o), .workers = workers };
	struct ql_exec *ex = NULL;
	int ret = ql_exec_create(&o, &ex);

	ck_assert_msg(ret == 0, "ql_exec_create: %d (%s)", ret, strerror(-ret));
	g_ex = ex;
	return ex;
}

/* Start of a case: fresh shared state; returns the fd count to end with. */
static int begin(void)
{
	atomic_store(&expect_fails, 0);
	expect_first[0] = '\0';
	atomic_store(&log_n, 0);
	for (int i = 0; i < LOG_MAX; i++)
		atomic_store(&log_runs[i], 0);
	return t_fd_count();
}

/* End of a case: executor gone, no failed expectation, no fd left open. */
static void finish(struct ql_exec *ex, int fds0)
{
	ql_exec_destroy(ex);
	g_ex = NULL;
	check_expects();
	ck_assert_int_eq(t_fd_count(), fds0);
}

/* ql_go from the test thread, asserting success. */
static struct ql_task *go_in(struct ql_exec *ex, void (*fn)(void *), void *arg,
			     struct ql_scope *scope)
{
	struct ql_task_opts o = { .sz = sizeof(o), .scope = scope };
	struct ql_task *t = NULL;
	int ret = ql_go(ex, fn, arg, &o, &t);

	ck_assert_msg(ret == 0, "ql_go: %d (%s)", ret, strerror(-ret));
	ck_assert_ptr_nonnull(t);
	return t;
}

static struct ql_task *go(struct ql_exec *ex, void (*fn)(void *), void *arg)
{
	return go_in(ex, fn, arg, NULL);
}

/* Join from the test thread and check both the return and the status. */
static void join_is(struct ql_task *t, int want_ret, int want_status, const char *what)
{
	int status = 123456;
	int ret = ql_join(t, &status);

	ck_assert_msg(ret == want_ret && status == want_status,
		      "%s: ql_join returned %d with status %d, want %d with status %d", what, ret,
		      status, want_ret, want_status);
}

static void wait_flag(_Atomic int *f, int want, const char *what)
{
	uint64_t end = ql_now() + 20 * SEC;

	while (atomic_load(f) < want) {
		ck_assert_msg(ql_now() < end, "%s: %d after 20 s, want %d", what, atomic_load(f),
			      want);
		usleep(200);
	}
}

/*
 * Give tasks that announced they are about to block the time to do it: wait
 * until the executor has at least `inflight` operations in the kernel (at
 * most 2 s: not every blocking wait is an operation), then 10 ms more.
 */
static void settle(struct ql_exec *ex, uint64_t inflight)
{
	struct ql_stats st = { .sz = sizeof(st) };
	uint64_t end = ql_now() + 2 * SEC;

	while (ql_now() < end) {
		if (ql_exec_stats(ex, &st) == 0 && st.total.inflight >= inflight)
			break;
		usleep(500);
	}
	usleep(10 * 1000);
}

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* ------------------------------------------------------------ capturing stderr */

/*
 * Panics are logged on stderr. A case that panics sends fd 2 to a memfd,
 * reads it back at the end and restores it. Should a sanitizer kill the
 * process meanwhile, its death callback copies what was captured (its own
 * report included) to the real stderr first.
 */
static int cap_fd = -1, cap_saved = -1;

extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void cap_dump(void)
{
	char buf[4096];
	ssize_t n;
	off_t off = 0;

	if (cap_fd < 0 || cap_saved < 0)
		return;
	while ((n = pread(cap_fd, buf, sizeof(buf), off)) > 0) {
		if (write(cap_saved, buf, (size_t)n) != n)
			break;
		off += n;
	}
}

static void capture_begin(void)
{
	fflush(stderr);
	cap_fd = memfd_create("check_task-stderr", MFD_CLOEXEC);
	ck_assert_int_ge(cap_fd, 0);
	cap_saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
	ck_assert_int_ge(cap_saved, 0);
	ck_assert_int_eq(dup2(cap_fd, 2), 2);
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(cap_dump);
}

/* Restore stderr; returns what was written to it (malloc'ed, NUL-terminated). */
static char *capture_end(void)
{
	struct stat sb;
	char *out;
	ssize_t n;

	fflush(stderr);
	ck_assert_int_eq(fstat(cap_fd, &sb), 0);
	out = calloc(1, (size_t)sb.st_size + 1);
	ck_assert_ptr_nonnull(out);
	n = pread(cap_fd, out, (size_t)sb.st_size, 0);
	ck_assert_int_eq(n, sb.st_size);
	ck_assert_int_eq(dup2(cap_saved, 2), 2);
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(NULL);
	close(cap_saved);
	close(cap_fd);
	cap_fd = cap_saved = -1;
	return out;
}

static int count_substr(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* ------------------------------------------------------------ a task that blocks */

enum op { OP_RECV, OP_ACCEPT, OP_SLEEP, OP_READ, OP_POLL, OP_JOIN };
static const char *const op_name[] = { "recv", "accept", "sleep", "read", "poll", "join" };

enum { BLOCK_BUF = 256 };

/*
 * A task that blocks in one call (on fd, or on target for OP_JOIN) with a
 * malloc'ed buffer its deferred cleanup frees: if the kernel still wrote
 * into it after the call returned, ASan's quarantine would not notice, so
 * the cases also check that data sent afterwards is still there for
 * someone else to read (the cancelled operation took nothing).
 */
struct blocker {
	enum op op;
	int fd;
	struct ql_task *target; /* OP_JOIN */
	int second;		/* after the call, block once more (ql_sleep 10 s) */
	char *buf;
	_Atomic int started;  /* about to block */
	_Atomic int ended;    /* the call returned */
	long res;	      /* what it returned */
	int status;	      /* OP_JOIN: the status */
	long again;	      /* the second call's result */
	int recovered;	      /* ql_recover() in the cleanup (no panic: 0) */
	uint64_t t_ret;	      /* ql_now() when the call returned */
	_Atomic int cleanups; /* runs of the deferred cleanup */
};

static void blocker_cleanup(void *arg)
{
	struct blocker *b = arg;

	b->recovered = ql_recover();
	free(b->buf);
	b->buf = NULL;
	atomic_fetch_add(&b->cleanups, 1);
}

static void blocker_task(void *arg)
{
	struct blocker *b = arg;
	long r = 0;

	b->buf = malloc(BLOCK_BUF);
	EXPECT(b->buf != NULL, "malloc");
	EXPECT_EQ(ql_defer(blocker_cleanup, b), 0);
	atomic_store(&b->started, 1);
	switch (b->op) {
	case OP_RECV:
		r = ql_recv(b->fd, b->buf, BLOCK_BUF, 0);
		break;
	case OP_ACCEPT:
		r = ql_accept(b->fd, NULL, NULL, SOCK_CLOEXEC);
		break;
	case OP_SLEEP:
		r = ql_sleep(10 * SEC);
		break;
	case OP_READ:
		r = ql_read(b->fd, b->buf, BLOCK_BUF);
		break;
	case OP_POLL:
		r = ql_poll(b->fd, POLLIN);
		break;
	case OP_JOIN:
		r = ql_join(b->target, &b->status);
		break;
	}
	b->t_ret = ql_now();
	b->res = r;
	/* An accept that won the race against the cancel: the fd is ours. */
	if (b->op == OP_ACCEPT && r >= 0)
		close((int)r);
	if (b->second)
		b->again = ql_sleep(10 * SEC);
	atomic_store(&b->ended, 1);
}

/* A socketpair, a pipe or a listener for a blocker of kind op; fd[] gets what to close. */
static void blocker_fds(struct blocker *b, enum op op, int fd[2], uint16_t *port)
{
	memset(b, 0, sizeof(*b));
	b->op = op;
	fd[0] = fd[1] = -1;
	switch (op) {
	case OP_RECV:
	case OP_POLL:
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd), 0);
		b->fd = fd[1];
		break;
	case OP_ACCEPT:
		fd[0] = t_listen_tcp(port);
		b->fd = fd[0];
		break;
	case OP_READ:
		ck_assert_int_eq(pipe2(fd, O_CLOEXEC), 0);
		b->fd = fd[0];
		break;
	default:
		break;
	}
}

/*
 * After the blocked call was cancelled: data (a connection) arriving now
 * must still be there; a cancelled operation that was in fact still armed
 * would take it (into a buffer already freed).
 */
static void check_not_taken(struct blocker *b, int fd[2], uint16_t port)
{
	char buf[8];
	struct pollfd p = { .events = POLLIN };

	switch (b->op) {
	case OP_RECV:
	case OP_POLL:
		ck_assert_int_eq(write(fd[0], "late", 4), 4);
		usleep(20 * 1000);
		ck_assert_int_eq(recv(fd[1], buf, sizeof(buf), MSG_DONTWAIT), 4);
		ck_assert_int_eq(memcmp(buf, "late", 4), 0);
		break;
	case OP_READ:
		ck_assert_int_eq(write(fd[1], "late", 4), 4);
		usleep(20 * 1000);
		p.fd = fd[0];
		ck_assert_msg(poll(&p, 1, 0) == 1, "the pipe's data was taken");
		ck_assert_int_eq(read(fd[0], buf, sizeof(buf)), 4);
		ck_assert_int_eq(memcmp(buf, "late", 4), 0);
		break;
	case OP_ACCEPT: {
		int c = t_connect_tcp(port), a;

		usleep(20 * 1000);
		p.fd = fd[0];
		ck_assert_msg(poll(&p, 1, 1000) == 1, "the connection was taken");
		a = accept4(fd[0], NULL, NULL, SOCK_CLOEXEC);
		ck_assert_int_ge(a, 0);
		close(a);
		close(c);
		break;
	}
	default:
		break;
	}
}

static void close_pair(int fd[2])
{
	if (fd[0] >= 0)
		close(fd[0]);
	if (fd[1] >= 0)
		close(fd[1]);
	fd[0] = fd[1] = -1;
}

static void noop_task(void *arg)
{
}

/* ------------------------------------------------------------ recover helpers */

/* A deferred function that recovers: what ql_recover() said, twice. */
struct recov {
	int code, again;
	_Atomic int runs;
};

static void d_recover(void *arg)
{
	struct recov *r = arg;

	r->code = ql_recover();
	/* The panic is stopped: nothing left to recover. */
	r->again = ql_recover();
	atomic_fetch_add(&r->runs, 1);
}

/* A deferred function that logs what ql_recover() says, without being the one to stop it. */
static int probe_recover;
static void d_probe_recover(void *arg)
{
	probe_recover = ql_recover();
	log_id((int)(intptr_t)arg);
}

/* A deferred function that panics itself. */
struct repanic {
	int code;
	const char *msg;
};

static void d_panic_again(void *arg)
{
	struct repanic *p = arg;

	log_id(PANIC2);
	ql_panic(p->code, p->msg);
	log_id(AFTER_PANIC);
}

static _Atomic int sl_done;
static void d_done(void *arg)
{
	atomic_store(&sl_done, 1);
}

/* ------------------------------------------------------------ defer */

static void defer_ids(int from, int to)
{
	for (int i = from; i < to; i++)
		EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)i), 0);
}

static void defer_return_task(void *arg)
{
	EXPECT_EQ(ql_defer(d_probe_recover, (void *)(intptr_t)100), 0);
	/* Each entry keeps the argument it had when it was deferred. */
	defer_ids(0, 5);
	EXPECT_EQ(ql_recover(), 0);
	log_id(BODY_END);
}

START_TEST(test_defer_on_return)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	const int want[] = { BODY_END, 4, 3, 2, 1, 0, 100 };
	struct ql_task *t;

	probe_recover = -1;
	t = go(ex, defer_return_task, NULL);
	join_is(t, 0, 0, "defer_return");
	/* The chain ran before ql_join reported the end, LIFO, args intact. */
	check_log(want, 7, "return");
	ck_assert_int_eq(probe_recover, 0);
	/* ... and only once. */
	usleep(20 * 1000);
	ck_assert_int_eq(atomic_load(&log_n), 7);
	ql_task_release(t);
	finish(ex, fds0);
}
END_TEST

struct defer_block {
	int fd;
	long res;
};

static void defer_block_task(void *arg)
{
	struct defer_block *d = arg;
	char *buf = malloc(64);

	EXPECT_EQ(ql_defer(d_probe_recover, (void *)(intptr_t)100), 0);
	EXPECT_EQ(ql_defer(free, buf), 0);
	defer_ids(0, 5);
	d->res = ql_recv(d->fd, buf, 64, 0);
	log_id(BODY_END);
}

START_TEST(test_defer_on_cancel)
{
	int fds0 = begin(), sp[2];
	struct ql_exec *ex = make_exec(2);
	const int want[] = { BODY_END, 4, 3, 2, 1, 0, 100 };
	struct defer_block d = { 0 };
	struct ql_task *t;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	d.fd = sp[1];
	probe_recover = -1;
	t = go(ex, defer_block_task, &d);
	settle(ex, 1);
	ck_assert_int_eq(atomic_load(&log_n), 0);
	ck_assert_int_eq(ql_cancel(t), 0);
	join_is(t, 0, -ECANCELED, "cancelled task");
	ck_assert_int_eq(d.res, -ECANCELED);
	check_log(want, 7, "cancel");
	ck_assert_int_eq(probe_recover, 0);
	usleep(20 * 1000);
	ck_assert_int_eq(atomic_load(&log_n), 7);
	ql_task_release(t);
	close_pair(sp);
	finish(ex, fds0);
}
END_TEST

static void defer_panic_task(void *arg)
{
	defer_ids(0, 5);
	ql_panic(4242, "defer-panic-unrecovered");
	log_id(AFTER_PANIC);
}

START_TEST(test_defer_on_panic)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	const int want[] = { 4, 3, 2, 1, 0 };
	struct ql_task *t;
	char *err;

	capture_begin();
	t = go(ex, defer_panic_task, NULL);
	join_is(t, -EOWNERDEAD, 4242, "panicked task");
	check_log(want, 5, "panic");
	usleep(20 * 1000);
	ck_assert_int_eq(atomic_load(&log_n), 5);
	ql_task_release(t);
	err = capture_end();
	ck_assert_msg(count_substr(err, "defer-panic-unrecovered") == 1,
		      "the panic should be logged once: %s", err);
	free(err);
	finish(ex, fds0);
}
END_TEST

START_TEST(test_defer_on_deadline)
{
	int fds0 = begin(), sp[2];
	struct ql_exec *ex = make_exec(2);
	const int want[] = { BODY_END, 4, 3, 2, 1, 0, 100 };
	struct defer_block d = { 0 };
	struct ql_scope *s;
	struct ql_task *t;
	uint64_t deadline = ql_now() + 50 * MS;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	d.fd = sp[1];
	probe_recover = -1;
	ck_assert_int_eq(ql_scope_open(&s, deadline), 0);
	t = go_in(ex, defer_block_task, &d, s);
	join_is(t, 0, -ETIMEDOUT, "task past its deadline");
	ck_assert_uint_ge(ql_now(), deadline);
	ck_assert_int_eq(d.res, -ETIMEDOUT);
	check_log(want, 7, "deadline");
	ck_assert_int_eq(probe_recover, 0);
	usleep(20 * 1000);
	ck_assert_int_eq(atomic_load(&log_n), 7);
	ql_task_release(t);
	ql_scope_close(s);
	close_pair(sp);
	finish(ex, fds0);
}
END_TEST

static void stackless_defers(void *arg)
{
	long n = (long)(intptr_t)arg;

	/* Pushed first, runs last: tells the test the chain is done. */
	EXPECT_EQ(ql_defer(d_done, NULL), 0);
	defer_ids(0, (int)n);
	log_id(BODY_END);
}

START_TEST(test_defer_stackless)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	const int want[] = { BODY_END, 4, 3, 2, 1, 0 };

	atomic_store(&sl_done, 0);
	ck_assert_int_eq(ql_spawn(ex, stackless_defers, (void *)(intptr_t)5), 0);
	wait_flag(&sl_done, 1, "stackless chain");
	check_log(want, 6, "stackless");
	usleep(20 * 1000);
	ck_assert_int_eq(atomic_load(&log_n), 6);
	finish(ex, fds0);
}
END_TEST

enum { MANY_DEFERS = 1000 };

static void many_defers_task(void *arg)
{
	defer_ids(0, MANY_DEFERS);
	log_id(BODY_END);
}

static void check_many_log(const char *what)
{
	int bad = 0, twice = 0;

	ck_assert_int_eq(atomic_load(&log_n), MANY_DEFERS + 1);
	ck_assert_int_eq(log_ids[0], BODY_END);
	for (int i = 0; i < MANY_DEFERS; i++) {
		bad += log_ids[1 + i] != MANY_DEFERS - 1 - i;
		twice += atomic_load(&log_runs[i]) != 1;
	}
	ck_assert_msg(bad == 0 && twice == 0, "%s: %d entries out of order, %d not run once", what,
		      bad, twice);
}

START_TEST(test_defer_many)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct ql_task *t;

	/* Stackful: far beyond any chunk kept inside the task. */
	t = go(ex, many_defers_task, NULL);
	join_is(t, 0, 0, "1000 defers");
	check_many_log("stackful");
	ql_task_release(t);
	/* Stackless. */
	atomic_store(&log_n, 0);
	for (int i = 0; i < LOG_MAX; i++)
		atomic_store(&log_runs[i], 0);
	atomic_store(&sl_done, 0);
	ck_assert_int_eq(ql_spawn(ex, stackless_defers, (void *)(intptr_t)MANY_DEFERS), 0);
	wait_flag(&sl_done, 1, "stackless chain");
	check_many_log("stackless");
	/* Again on the same workers: chunks that were used come back clean. */
	atomic_store(&log_n, 0);
	for (int i = 0; i < LOG_MAX; i++)
		atomic_store(&log_runs[i], 0);
	t = go(ex, many_defers_task, NULL);
	join_is(t, 0, 0, "1000 defers again");
	check_many_log("stackful, second time");
	ql_task_release(t);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ recover, panic */

static struct recov rec_a, rec_b, rec_c;
static int body_recover = -1;

static void recover_normal_task(void *arg)
{
	body_recover = ql_recover();
	EXPECT_EQ(ql_defer(d_probe_recover, (void *)(intptr_t)1), 0);
}

static void recover_panic_task(void *arg)
{
	EXPECT_EQ(ql_defer(d_probe_recover, (void *)(intptr_t)1), 0);
	EXPECT_EQ(ql_defer(d_recover, &rec_a), 0);
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)2), 0);
	/* Not in a deferred function: nothing to recover yet. */
	EXPECT_EQ(ql_recover(), 0);
	ql_panic(7, "recover-recovered");
	log_id(AFTER_PANIC);
}

static void recover_zero_task(void *arg)
{
	EXPECT_EQ(ql_defer(d_recover, &rec_b), 0);
	ql_panic(0, "recover-zero-recovered");
}

static void recover_stackless(void *arg)
{
	EXPECT_EQ(ql_defer(d_recover, &rec_c), 0);
	EXPECT_EQ(ql_recover(), 0);
	ql_panic(8, "recover-stackless-recovered");
}

START_TEST(test_recover_semantics)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	const int want[] = { 2, 1 };
	struct ql_task *t;
	char *err;

	/* Outside any task. */
	ck_assert_int_eq(ql_recover(), 0);
	capture_begin();

	/* No panic: 0 in the body and in a deferred function. */
	probe_recover = -1;
	t = go(ex, recover_normal_task, NULL);
	join_is(t, 0, 0, "no panic");
	ql_task_release(t);
	ck_assert_int_eq(body_recover, 0);
	ck_assert_int_eq(probe_recover, 0);

	/* Recovered: status is the code; the rest of the chain runs, with no panic left. */
	atomic_store(&log_n, 0);
	probe_recover = -1;
	t = go(ex, recover_panic_task, NULL);
	join_is(t, 0, 7, "recovered panic");
	ql_task_release(t);
	ck_assert_int_eq(atomic_load(&rec_a.runs), 1);
	ck_assert_int_eq(rec_a.code, 7);
	ck_assert_int_eq(rec_a.again, 0);
	ck_assert_int_eq(probe_recover, 0);
	check_log(want, 2, "recovered");

	/* Code 0 is reported as -1. */
	t = go(ex, recover_zero_task, NULL);
	join_is(t, 0, -1, "recovered panic(0)");
	ql_task_release(t);
	ck_assert_int_eq(rec_b.code, -1);

	/* A stackless task recovers too. */
	ck_assert_int_eq(ql_spawn(ex, recover_stackless, NULL), 0);
	wait_flag(&rec_c.runs, 1, "stackless recover");
	ck_assert_int_eq(rec_c.code, 8);
	ck_assert_int_eq(rec_c.again, 0);

	err = capture_end();
	ck_assert_msg(count_substr(err, "-recovered") == 0, "a recovered panic was logged: %s",
		      err);
	free(err);
	finish(ex, fds0);
}
END_TEST

static _Atomic int other_done;
static long other_sleep = 1;

static void other_task(void *arg)
{
	other_sleep = ql_sleep(100 * MS);
	atomic_store(&other_done, 1);
}

static void unrecovered_task(void *arg)
{
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)1), 0);
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)2), 0);
	ql_panic(4242, "unrecovered-panic-message");
	log_id(AFTER_PANIC);
}

static void unrecovered_zero_task(void *arg)
{
	ql_panic(0, "unrecovered-zero-message");
}

START_TEST(test_panic_unrecovered)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	const int want[] = { 2, 1 };
	struct ql_task *t, *other, *after;
	char *err, id[32];

	capture_begin();
	other = go(ex, other_task, NULL);
	t = go(ex, unrecovered_task, NULL);
	snprintf(id, sizeof(id), "%llu", (unsigned long long)ql_task_id(t));
	join_is(t, -EOWNERDEAD, 4242, "unrecovered panic");
	join_is(t, -EOWNERDEAD, 4242, "unrecovered panic, joined again");
	check_log(want, 2, "unrecovered");
	ql_task_release(t);
	t = go(ex, unrecovered_zero_task, NULL);
	join_is(t, -EOWNERDEAD, -1, "unrecovered panic(0)");
	ql_task_release(t);
	/* The other task and the executor went on. */
	join_is(other, 0, 0, "the other task");
	ck_assert_int_eq(other_sleep, 0);
	ql_task_release(other);
	after = go(ex, noop_task, NULL);
	join_is(after, 0, 0, "a task after the panic");
	ql_task_release(after);
	err = capture_end();
	ck_assert_msg(count_substr(err, "unrecovered-panic-message") == 1,
		      "the panic should be logged exactly once: %s", err);
	ck_assert_msg(strstr(err, "4242") && strstr(err, id),
		      "the log should name the code 4242 and the task id %s: %s", id, err);
	free(err);
	finish(ex, fds0);
}
END_TEST

static struct recov rec_n1;
static struct repanic second_recovered = { 2, "nested-second-recovered" };
static struct repanic second_unrecovered = { 3, "nested-second-unrecovered" };

static void nested_recovered_task(void *arg)
{
	EXPECT_EQ(ql_defer(d_recover, &rec_n1), 0);
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)1), 0);
	EXPECT_EQ(ql_defer(d_panic_again, &second_recovered), 0);
	ql_panic(1, "nested-first-recovered");
}

static void nested_unrecovered_task(void *arg)
{
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)1), 0);
	EXPECT_EQ(ql_defer(d_panic_again, &second_unrecovered), 0);
	ql_panic(1, "nested-first-replaced");
}

START_TEST(test_panic_nested)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	const int want[] = { PANIC2, 1 };
	struct ql_task *t;
	char *err;

	capture_begin();
	/* The second panic replaces the first; a later deferred function recovers it. */
	t = go(ex, nested_recovered_task, NULL);
	join_is(t, 0, 2, "nested panic, recovered");
	ql_task_release(t);
	check_log(want, 2, "nested, recovered");
	ck_assert_int_eq(atomic_load(&rec_n1.runs), 1);
	ck_assert_int_eq(rec_n1.code, 2);
	ck_assert_int_eq(rec_n1.again, 0);
	/* Nobody recovers: the task ends with the second code. */
	atomic_store(&log_n, 0);
	t = go(ex, nested_unrecovered_task, NULL);
	join_is(t, -EOWNERDEAD, 3, "nested panic, unrecovered");
	ql_task_release(t);
	check_log(want, 2, "nested, unrecovered");
	err = capture_end();
	ck_assert_msg(count_substr(err, "nested-second-unrecovered") == 1,
		      "the replacing panic should be logged once: %s", err);
	ck_assert_msg(count_substr(err, "-recovered") == 0, "a recovered panic was logged: %s",
		      err);
	free(err);
	finish(ex, fds0);
}
END_TEST

static _Atomic int after_ran;

static void stackless_panic(void *arg)
{
	EXPECT_EQ(ql_defer(d_done, NULL), 0);
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)1), 0);
	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)2), 0);
	ql_panic(77, "stackless-unrecovered");
	log_id(AFTER_PANIC);
}

static void stackless_after(void *arg)
{
	atomic_store(&after_ran, 1);
}

START_TEST(test_panic_stackless)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(1);
	const int want[] = { 2, 1 };
	struct ql_task *t;
	char *err;

	capture_begin();
	atomic_store(&sl_done, 0);
	ck_assert_int_eq(ql_spawn(ex, stackless_panic, NULL), 0);
	ck_assert_int_eq(ql_spawn(ex, stackless_after, NULL), 0);
	wait_flag(&sl_done, 1, "stackless panic chain");
	/* The one worker went on with the next task, and with stackful ones. */
	wait_flag(&after_ran, 1, "task after the stackless panic");
	t = go(ex, noop_task, NULL);
	join_is(t, 0, 0, "stackful task after a stackless panic");
	ql_task_release(t);
	check_log(want, 2, "stackless panic");
	err = capture_end();
	ck_assert_msg(count_substr(err, "stackless-unrecovered") == 1,
		      "the stackless panic should be logged once: %s", err);
	free(err);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ cancel while blocked */

static void cancel_blocked(enum op op)
{
	int fds0 = begin(), fd[2];
	uint16_t port = 0;
	struct ql_exec *ex = make_exec(2);
	struct blocker b;
	struct ql_task *t;
	uint64_t t0, lat;

	blocker_fds(&b, op, fd, &port);
	t = go(ex, blocker_task, &b);
	wait_flag(&b.started, 1, "blocker");
	settle(ex, 1);
	ck_assert_msg(atomic_load(&b.ended) == 0, "%s returned %ld before any cancel", op_name[op],
		      b.res);
	t0 = ql_now();
	ck_assert_int_eq(ql_cancel(t), 0);
	join_is(t, 0, -ECANCELED, op_name[op]);
	lat = b.t_ret - t0;
	note("task/cancel_%s: the call returned %.3f ms after ql_cancel", op_name[op], ms(lat));
	ck_assert_int_eq(b.res, -ECANCELED);
	ck_assert_msg(lat < PROMPT, "%s returned %.3f ms after the cancel", op_name[op], ms(lat));
	ck_assert_int_eq(atomic_load(&b.cleanups), 1);
	ck_assert_int_eq(b.recovered, 0);
	ck_assert_int_eq(ql_cancel(t), -EALREADY);
	ql_task_release(t);
	/* The buffer is freed; the kernel must not have kept the operation. */
	check_not_taken(&b, fd, port);
	close_pair(fd);
	finish(ex, fds0);
}

START_TEST(test_cancel_recv)
{
	cancel_blocked(OP_RECV);
}
END_TEST

START_TEST(test_cancel_accept)
{
	cancel_blocked(OP_ACCEPT);
}
END_TEST

START_TEST(test_cancel_sleep)
{
	cancel_blocked(OP_SLEEP);
}
END_TEST

START_TEST(test_cancel_read)
{
	cancel_blocked(OP_READ);
}
END_TEST

START_TEST(test_cancel_poll)
{
	cancel_blocked(OP_POLL);
}
END_TEST

/* Cancelled before blocking: every later call fails, even one that could complete at once. */
struct sticky {
	int fd;
	long yields, yield_res, recv_res, sleep_res, defer_res;
	_Atomic int started;
};

static void d_log_sticky(void *arg)
{
	log_id(1);
}

static void sticky_task(void *arg)
{
	struct sticky *s = arg;
	char c;
	int r;

	atomic_store(&s->started, 1);
	while ((r = ql_yield()) == 0)
		s->yields++;
	s->yield_res = r;
	s->recv_res = ql_recv(s->fd, &c, 1, 0); /* a byte is waiting */
	s->sleep_res = ql_sleep(0);
	/* The chain still works after a cancel. */
	s->defer_res = ql_defer(d_log_sticky, NULL);
}

START_TEST(test_cancel_sticky)
{
	int fds0 = begin(), sp[2];
	struct ql_exec *ex = make_exec(2);
	struct sticky s = { 0 };
	struct ql_task *t;
	char c;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	ck_assert_int_eq(write(sp[0], "x", 1), 1);
	s.fd = sp[1];
	t = go(ex, sticky_task, &s);
	wait_flag(&s.started, 1, "yielding task");
	usleep(5 * 1000);
	ck_assert_int_eq(ql_cancel(t), 0);
	join_is(t, 0, -ECANCELED, "cancelled yielder");
	ck_assert_int_eq(s.yield_res, -ECANCELED);
	ck_assert_int_eq(s.recv_res, -ECANCELED);
	ck_assert_int_eq(s.sleep_res, -ECANCELED);
	ck_assert_int_eq(s.defer_res, 0);
	ck_assert_int_eq(atomic_load(&log_runs[1]), 1);
	/* The byte is still there: the cancelled recv did not take it. */
	ck_assert_int_eq(recv(sp[1], &c, 1, MSG_DONTWAIT), 1);
	ql_task_release(t);
	/* A task cancelled before it ever ran. */
	struct blocker b;
	int fd[2];
	uint16_t port;

	blocker_fds(&b, OP_RECV, fd, &port);
	t = go(ex, blocker_task, &b);
	ck_assert_int_eq(ql_cancel(t), 0);
	join_is(t, 0, -ECANCELED, "cancelled at once");
	ck_assert_int_eq(b.res, -ECANCELED);
	ck_assert_int_eq(atomic_load(&b.cleanups), 1);
	ql_task_release(t);
	close_pair(fd);
	close_pair(sp);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ accept vs cancel race */

START_TEST(test_accept_cancel_race)
{
	int fds0 = begin();
	int rounds = T_TSAN ? 100 : 400;
	long won = 0, cancelled = 0, other = 0, bad_cancel = 0, bad_join = 0, left = 0;
	uint16_t port;
	struct ql_exec *ex = make_exec(2);
	int lfd = t_listen_tcp(&port);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int fds1 = t_fd_count();

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < rounds; i++) {
		struct blocker b = { .op = OP_ACCEPT, .fd = lfd };
		struct ql_task *t;
		int c, r = 0, status;

		t = go(ex, blocker_task, &b);
		while (!atomic_load(&b.started))
			;
		/* Vary where in the accept's life the cancel lands. */
		if (i % 4 == 1)
			usleep(200);
		else if (i % 4 == 2)
			usleep(1000);
		c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (i % 2)
			r = ql_cancel(t);
		connect(c, (struct sockaddr *)&a, sizeof(a));
		if (!(i % 2))
			r = ql_cancel(t);
		bad_cancel += r != 0 && r != -EALREADY;
		bad_join += ql_join(t, &status) != 0;
		if (b.res >= 0)
			won++;
		else if (b.res == -ECANCELED)
			cancelled++;
		else
			other++;
		ql_task_release(t);
		close(c);
		/* Connections nobody accepted wait in the backlog: drop them. */
		while (poll(&p, 1, 0) == 1) {
			int s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			if (s < 0)
				break;
			close(s);
			left++;
		}
	}
	note("task/accept_cancel_race: %d rounds: %ld accepted, %ld cancelled, %ld left in the "
	     "backlog",
	     rounds, won, cancelled, left);
	ck_assert_int_eq(bad_cancel, 0);
	ck_assert_int_eq(bad_join, 0);
	ck_assert_msg(other == 0, "%ld accepts ended with neither an fd nor -ECANCELED", other);
	/* An fd the kernel produced for a cancelled accept was closed, not leaked. */
	ck_assert_int_eq(t_fd_count(), fds1);
	close(lfd);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ scopes */

struct scope_child {
	uint64_t d_parent, d_child, d_far, d_after, dc;
	int open_c, open_late, open_far;
	long sleep_res, after_sleep;
	uint64_t sleep_ret;
	int join_ret[3], join_status[3];
	struct blocker kids[3];
	int kid_fd[3][2];
};

static void scope_child_task(void *arg)
{
	struct scope_child *s = arg;
	struct ql_scope *c = NULL, *late = NULL, *far = NULL;
	struct ql_task *k[3] = { 0 };

	s->d_parent = ql_deadline();
	s->dc = ql_now() + 60 * MS;
	s->open_c = ql_scope_open(&c, s->dc);
	s->d_child = ql_deadline();
	/* Tasks spawned now belong to the child scope. */
	for (int i = 0; i < 3; i++)
		EXPECT_EQ(ql_go(g_ex, blocker_task, &s->kids[i], NULL, &k[i]), 0);
	/* The task's own calls obey its current scope too. */
	s->sleep_res = ql_sleep(10 * SEC);
	s->sleep_ret = ql_now();
	/* Under an expired scope nothing new opens. */
	s->open_late = ql_scope_open(&late, QL_NO_DEADLINE);
	if (s->open_late == 0)
		ql_scope_close(late);
	if (s->open_c == 0)
		ql_scope_close(c);
	/* Back in the parent scope, which has time left: joining works again. */
	s->d_after = ql_deadline();
	for (int i = 0; i < 3; i++) {
		if (!k[i])
			continue;
		s->join_ret[i] = ql_join(k[i], &s->join_status[i]);
		ql_task_release(k[i]);
	}
	s->after_sleep = ql_sleep(1 * MS);
	/* A child whose own deadline is later still has the parent's. */
	s->open_far = ql_scope_open(&far, ql_now() + 3600 * SEC);
	s->d_far = ql_deadline();
	if (s->open_far == 0)
		ql_scope_close(far);
}

START_TEST(test_scope_child_deadline_first)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	static struct scope_child s;
	struct blocker sib;
	int sib_fd[2];
	uint16_t port;
	struct ql_scope *root;
	uint64_t droot = ql_now() + 5 * SEC;
	struct ql_task *p, *st;

	memset(&s, 0, sizeof(s));
	for (int i = 0; i < 3; i++) {
		blocker_fds(&s.kids[i], OP_RECV, s.kid_fd[i], &port);
		s.join_ret[i] = s.join_status[i] = 99;
	}
	blocker_fds(&sib, OP_RECV, sib_fd, &port);
	ck_assert_int_eq(ql_scope_open(&root, droot), 0);
	st = go_in(ex, blocker_task, &sib, root);
	p = go_in(ex, scope_child_task, &s, root);
	join_is(p, 0, 0, "the task that opened the child scope");
	ck_assert_int_eq(s.open_c, 0);
	ck_assert_uint_eq(s.d_parent, droot);
	ck_assert_uint_eq(s.d_child, s.dc);
	ck_assert_int_eq(s.sleep_res, -ETIMEDOUT);
	ck_assert_uint_ge(s.sleep_ret, s.dc);
	ck_assert_msg(s.sleep_ret - s.dc < PROMPT, "sleep woke %.3f ms after the deadline",
		      ms(s.sleep_ret - s.dc));
	note("task/scope_child_deadline: woken %.3f ms after the child scope's deadline",
	     ms(s.sleep_ret - s.dc));
	ck_assert_int_eq(s.open_late, -ETIMEDOUT);
	for (int i = 0; i < 3; i++) {
		struct blocker *k = &s.kids[i];

		ck_assert_msg(s.join_ret[i] == 0 && s.join_status[i] == -ETIMEDOUT,
			      "kid %d: join %d status %d", i, s.join_ret[i], s.join_status[i]);
		ck_assert_int_eq(k->res, -ETIMEDOUT);
		ck_assert_uint_ge(k->t_ret, s.dc);
		ck_assert_uint_lt(k->t_ret - s.dc, PROMPT);
		ck_assert_int_eq(atomic_load(&k->cleanups), 1);
		check_not_taken(k, s.kid_fd[i], 0);
		close_pair(s.kid_fd[i]);
	}
	ck_assert_uint_eq(s.d_after, droot);
	ck_assert_int_eq(s.after_sleep, 0);
	ck_assert_int_eq(s.open_far, 0);
	ck_assert_uint_eq(s.d_far, droot);
	/* The parent scope's own task is still blocked, and still works. */
	ck_assert_msg(atomic_load(&sib.ended) == 0, "the parent scope's task returned %ld",
		      sib.res);
	ck_assert_int_eq(write(sib_fd[0], "k", 1), 1);
	join_is(st, 0, 0, "the parent scope's task");
	ck_assert_int_eq(sib.res, 1);
	ql_task_release(st);
	ql_task_release(p);
	ql_scope_close(root);
	close_pair(sib_fd);
	finish(ex, fds0);
}
END_TEST

struct scope_parent {
	uint64_t d_child;
	int open_c, open_g;
	long res;
	uint64_t t_ret;
	struct ql_task *kid_task; /* joined by the test: this task's own calls fail now */
	struct blocker kid;
	int kid_fd[2];
	int recv_fd; /* block here instead of sleeping (-1: sleep) */
};

static void scope_parent_task(void *arg)
{
	struct scope_parent *s = arg;
	struct ql_scope *c = NULL, *g = NULL;
	char buf[4];

	s->open_c = ql_scope_open(&c, QL_NO_DEADLINE);
	s->open_g = ql_scope_open(&g, QL_NO_DEADLINE);
	s->d_child = ql_deadline();
	EXPECT_EQ(ql_go(g_ex, blocker_task, &s->kid, NULL, &s->kid_task), 0);
	if (s->recv_fd >= 0)
		s->res = ql_recv(s->recv_fd, buf, sizeof(buf), 0);
	else
		s->res = ql_sleep(10 * SEC);
	s->t_ret = ql_now();
	if (s->open_g == 0)
		ql_scope_close(g);
	if (s->open_c == 0)
		ql_scope_close(c);
}

START_TEST(test_scope_parent_ends_children)
{
	int fds0 = begin(), sp[2];
	struct ql_exec *ex = make_exec(2);
	static struct scope_parent d, c;
	struct ql_scope *rd, *rc;
	uint64_t deadline = ql_now() + 150 * MS, t0;
	struct ql_task *pd, *pc;
	uint16_t port;

	/* A parent's deadline reaches tasks two scopes down. */
	memset(&d, 0, sizeof(d));
	blocker_fds(&d.kid, OP_RECV, d.kid_fd, &port);
	d.recv_fd = -1;
	ck_assert_int_eq(ql_scope_open(&rd, deadline), 0);
	pd = go_in(ex, scope_parent_task, &d, rd);
	join_is(pd, 0, -ETIMEDOUT, "task in a grandchild scope of an expired scope");
	ck_assert_int_eq(d.open_c, 0);
	ck_assert_int_eq(d.open_g, 0);
	ck_assert_uint_eq(d.d_child, deadline);
	ck_assert_int_eq(d.res, -ETIMEDOUT);
	ck_assert_uint_ge(d.t_ret, deadline);
	ck_assert_uint_lt(d.t_ret - deadline, PROMPT);
	ck_assert_ptr_nonnull(d.kid_task);
	join_is(d.kid_task, 0, -ETIMEDOUT, "kid in the grandchild scope");
	ql_task_release(d.kid_task);
	ck_assert_int_eq(d.kid.res, -ETIMEDOUT);
	ck_assert_uint_lt(d.kid.t_ret - deadline, PROMPT);
	ck_assert_int_eq(atomic_load(&d.kid.cleanups), 1);
	check_not_taken(&d.kid, d.kid_fd, 0);
	close_pair(d.kid_fd);
	ql_task_release(pd);
	ql_scope_close(rd);

	/* A parent's cancel too; here the parent blocks in a recv. */
	memset(&c, 0, sizeof(c));
	blocker_fds(&c.kid, OP_RECV, c.kid_fd, &port);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	c.recv_fd = sp[1];
	ck_assert_int_eq(ql_scope_open(&rc, QL_NO_DEADLINE), 0);
	pc = go_in(ex, scope_parent_task, &c, rc);
	wait_flag(&c.kid.started, 1, "kid in the grandchild scope");
	settle(ex, 2);
	t0 = ql_now();
	ck_assert_int_eq(ql_scope_cancel(rc), 0);
	join_is(pc, 0, -ECANCELED, "task in a cancelled scope");
	ck_assert_uint_eq(c.d_child, QL_NO_DEADLINE);
	ck_assert_int_eq(c.res, -ECANCELED);
	ck_assert_uint_lt(c.t_ret - t0, PROMPT);
	ck_assert_ptr_nonnull(c.kid_task);
	join_is(c.kid_task, 0, -ECANCELED, "kid in the grandchild scope");
	ql_task_release(c.kid_task);
	ck_assert_int_eq(c.kid.res, -ECANCELED);
	ck_assert_uint_lt(c.kid.t_ret - t0, PROMPT);
	check_not_taken(&c.kid, c.kid_fd, 0);
	close_pair(c.kid_fd);
	ql_task_release(pc);
	ql_scope_close(rc);
	close_pair(sp);
	finish(ex, fds0);
}
END_TEST

struct scope_cancel_arg {
	struct ql_scope *s;
	uint64_t t0;
	int ret;
};

static void *scope_cancel_thread(void *arg)
{
	struct scope_cancel_arg *a = arg;

	a->t0 = ql_now();
	a->ret = ql_scope_cancel(a->s);
	return NULL;
}

/*
 * One round: four tasks blocked in one root scope (recv, accept, sleep,
 * read), one in another; an outside thread cancels the first scope. A cancel
 * that does not reach a task is reported by name, rather than as a hang.
 */
static void scope_cancel_round(int round)
{
	enum { NB = 4 };
	const enum op ops[NB] = { OP_RECV, OP_ACCEPT, OP_SLEEP, OP_READ };
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct blocker b[NB], other;
	int fd[NB][2], ofd[2];
	uint16_t port[NB] = { 0 }, oport;
	struct ql_task *t[NB], *ot, *late = (void *)1;
	struct ql_scope *root, *root2;
	struct scope_cancel_arg ca;
	struct ql_task_opts o = { .sz = sizeof(o) };
	pthread_t th;
	uint64_t end;

	ck_assert_int_eq(ql_scope_open(&root, QL_NO_DEADLINE), 0);
	ck_assert_int_eq(ql_scope_open(&root2, QL_NO_DEADLINE), 0);
	for (int i = 0; i < NB; i++) {
		blocker_fds(&b[i], ops[i], fd[i], &port[i]);
		t[i] = go_in(ex, blocker_task, &b[i], root);
	}
	blocker_fds(&other, OP_RECV, ofd, &oport);
	ot = go_in(ex, blocker_task, &other, root2);
	for (int i = 0; i < NB; i++)
		wait_flag(&b[i].started, 1, op_name[ops[i]]);
	wait_flag(&other.started, 1, "task in the other scope");
	settle(ex, NB + 1);
	ca.s = root;
	ck_assert_int_eq(pthread_create(&th, NULL, scope_cancel_thread, &ca), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(ca.ret, 0);
	/* Every call returns promptly: wait a second at most, then name the ones that did not. */
	end = ql_now() + SEC;
	for (int i = 0; i < NB; i++) {
		while (!atomic_load(&b[i].ended) && ql_now() < end)
			usleep(200);
		ck_assert_msg(atomic_load(&b[i].ended),
			      "round %d: the task blocked in %s was not woken by ql_scope_cancel "
			      "(1 s later)",
			      round, op_name[ops[i]]);
	}
	for (int i = 0; i < NB; i++) {
		join_is(t[i], 0, -ECANCELED, op_name[ops[i]]);
		ck_assert_msg(b[i].res == -ECANCELED, "%s returned %ld", op_name[ops[i]], b[i].res);
		ck_assert_msg(b[i].t_ret - ca.t0 < PROMPT, "%s returned %.3f ms after the cancel",
			      op_name[ops[i]], ms(b[i].t_ret - ca.t0));
		ck_assert_int_eq(atomic_load(&b[i].cleanups), 1);
		if (round == 0)
			check_not_taken(&b[i], fd[i], port[i]);
		ql_task_release(t[i]);
		close_pair(fd[i]);
	}
	/* Nothing new starts in it. */
	o.scope = root;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &late), -ECANCELED);
	ck_assert_int_eq(ql_scope_cancel(root), 0);
	/* The other root scope was not touched. */
	ck_assert_msg(atomic_load(&other.ended) == 0, "a task in another scope returned %ld",
		      other.res);
	ck_assert_int_eq(write(ofd[0], "o", 1), 1);
	join_is(ot, 0, 0, "task in the other scope");
	ck_assert_int_eq(other.res, 1);
	ql_task_release(ot);
	ql_scope_close(root);
	ql_scope_close(root2);
	close_pair(ofd);
	finish(ex, fds0);
}

START_TEST(test_scope_cancel_from_thread)
{
	/* Fresh executors: a lost wake-up shows in a few percent of rounds. */
	int rounds = T_TSAN ? 4 : 16;

	for (int r = 0; r < rounds; r++)
		scope_cancel_round(r);
}
END_TEST

START_TEST(test_scope_close_cancels)
{
	int fds0 = begin(), fd[2];
	struct ql_exec *ex = make_exec(2);
	struct blocker b;
	struct ql_scope *root;
	struct ql_task *t;
	uint16_t port;
	uint64_t t0;

	ck_assert_int_eq(ql_scope_open(&root, QL_NO_DEADLINE), 0);
	blocker_fds(&b, OP_RECV, fd, &port);
	t = go_in(ex, blocker_task, &b, root);
	wait_flag(&b.started, 1, "blocker");
	settle(ex, 1);
	t0 = ql_now();
	/* Closing gives the handle back and cancels what is still in the scope. */
	ql_scope_close(root);
	join_is(t, 0, -ECANCELED, "task in a closed scope");
	ck_assert_int_eq(b.res, -ECANCELED);
	ck_assert_uint_lt(b.t_ret - t0, PROMPT);
	check_not_taken(&b, fd, port);
	ql_task_release(t);
	close_pair(fd);
	finish(ex, fds0);
}
END_TEST

struct go_late {
	long sleep_res;
	int go_res, open_res;
};

static void go_late_task(void *arg)
{
	struct go_late *g = arg;
	struct ql_task *t = (void *)1;
	struct ql_scope *s = NULL;

	g->sleep_res = ql_sleep(10 * SEC);
	g->go_res = ql_go(g_ex, noop_task, NULL, NULL, &t);
	g->open_res = ql_scope_open(&s, QL_NO_DEADLINE);
	if (g->open_res == 0)
		ql_scope_close(s);
}

START_TEST(test_scope_go_cancelled)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct ql_task_opts o = { .sz = sizeof(o) };
	struct ql_scope *c, *e, *r;
	struct ql_task *t = NULL;
	struct go_late g = { 0 };

	/* A cancelled root scope. */
	ck_assert_int_eq(ql_scope_open(&c, QL_NO_DEADLINE), 0);
	ck_assert_int_eq(ql_scope_cancel(c), 0);
	o.scope = c;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -ECANCELED);
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, NULL), -ECANCELED);
	/* From inside a task whose scope was cancelled. */
	ck_assert_int_eq(ql_scope_open(&r, QL_NO_DEADLINE), 0);
	t = go_in(ex, go_late_task, &g, r);
	settle(ex, 1);
	ck_assert_int_eq(ql_scope_cancel(r), 0);
	join_is(t, 0, -ECANCELED, "task in a cancelled scope");
	ck_assert_int_eq(g.sleep_res, -ECANCELED);
	ck_assert_int_eq(g.go_res, -ECANCELED);
	ck_assert_int_eq(g.open_res, -ECANCELED);
	ql_task_release(t);
	/* A root scope past its deadline. */
	ck_assert_int_eq(ql_scope_open(&e, ql_now() + 1 * MS), 0);
	usleep(5 * 1000);
	o.scope = e;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -ETIMEDOUT);
	ql_scope_close(c);
	ql_scope_close(e);
	ql_scope_close(r);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ 100,000 tasks */

/*
 * How many tasks: 100,000 (4000 under TSan, twice as many under
 * QILIN_STRESS); QILIN_TEST_TASKS=N overrides it, to try the case where the
 * fd limit is too low for the real size.
 */
static long many_n(void)
{
	const char *e = getenv("QILIN_TEST_TASKS");

	if (e && atol(e) > 0)
		return atol(e);
	if (getenv("QILIN_STRESS"))
		return 200000;
	/* TSan counts every fiber against its limit of 8128 threads. */
	return T_TSAN ? 4000 : 100000;
}

/*
 * Socketpairs for the tasks: one each when the fd limit allows (raised if
 * root can), else as many as fit, shared by several tasks (each recv takes
 * one byte, so k tasks on a pair need k bytes there). A hard limit that
 * cannot be raised (root without CAP_SYS_RESOURCE, as in some containers)
 * then still runs the full 100,000 tasks.
 */
static long many_pairs;

static rlim_t many_fds(void)
{
	return (rlim_t)(2 * many_n() + 4096);
}

static long pairs_for(rlim_t fds)
{
	long p = fds > 4096 + 2 ? (long)((fds - 4096) / 2) : 1;

	return p < many_n() ? p : many_n();
}

static long many_maps(void)
{
	return 2 * many_n() + 65536;
}

static const char map_count_path[] = "/proc/sys/vm/max_map_count";

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -errno;
	ok = fprintf(f, "%ld\n", v) > 0;
	ok = (fclose(f) == 0) && ok;
	return ok ? 0 : -EIO;
}

/* Why the 100,000-task case cannot run here, or NULL; raises the hard fd limit if root. */
static const char *many_skip_reason(void)
{
	static char why[256];
	struct rlimit rl;
	long maps;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return "getrlimit(RLIMIT_NOFILE) failed";
	if (rl.rlim_max < many_fds()) {
		if (geteuid() != 0 && rl.rlim_max < 4096 + 2 * 1000) {
			snprintf(
				why, sizeof(why),
				"needs %llu file descriptors; the RLIMIT_NOFILE hard limit is %llu "
				"and only root can raise it",
				(unsigned long long)many_fds(), (unsigned long long)rl.rlim_max);
			return why;
		}
		/* Root: raise the hard limit for this process (children inherit it). */
		rlim_t hard = rl.rlim_max;

		rl.rlim_max = many_fds();
		if (rl.rlim_cur > rl.rlim_max)
			rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			/* Not allowed (no CAP_SYS_RESOURCE): share socketpairs instead. */
			fprintf(stderr,
				"task/hundred_thousand: RLIMIT_NOFILE hard limit %llu cannot be "
				"raised (%s): tasks share socketpairs\n",
				(unsigned long long)hard, strerror(errno));
			many_pairs = pairs_for(hard);
		} else {
			many_pairs = many_n();
		}
	} else {
		many_pairs = many_n();
	}
	maps = read_long(map_count_path);
	if (maps >= 0 && maps < many_maps()) {
		if (geteuid() != 0 || access(map_count_path, W_OK) != 0) {
			snprintf(why, sizeof(why),
				 "vm.max_map_count is %ld, below the %ld that %ld task stacks need "
				 "(two mappings each), and it cannot be raised here",
				 maps, many_maps(), many_n());
			return why;
		}
	}
	return NULL;
}

struct sock_task {
	int fd;
	_Atomic int res;
	unsigned char byte;
};

static _Atomic long many_started;

static void many_recv(void *arg)
{
	struct sock_task *s = arg;

	atomic_fetch_add_explicit(&many_started, 1, memory_order_relaxed);
	atomic_store_explicit(&s->res, (int)ql_recv(s->fd, &s->byte, 1, 0), memory_order_relaxed);
}

START_TEST(test_hundred_thousand_blocked)
{
	long n = many_n(), go_fail = 0, pair_fail = 0, early = 0, write_fail = 0, bad = 0;
	int first_go = 0;
	long np = many_pairs > 0 ? many_pairs : n;
	int(*sv)[2] = calloc((size_t)np, sizeof(*sv));
	struct sock_task *st = calloc((size_t)n, sizeof(*st));
	struct ql_task **h = calloc((size_t)n, sizeof(*h));
	struct ql_task_opts o = { .sz = sizeof(o), .stack_size = QL_STACK_MIN };
	struct rlimit rl;
	long maps0 = read_long(map_count_path);
	uint64_t t0, t1, t2, t3;
	struct ql_exec *ex;
	int fds0;

	ck_assert(sv && st && h);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * (rlim_t)np + 4096) {
		rl.rlim_cur = 2 * (rlim_t)np + 4096 < rl.rlim_max ? 2 * (rlim_t)np + 4096 : rl.rlim_max;
		ck_assert_msg(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit NOFILE %llu: %s",
			      (unsigned long long)rl.rlim_cur, strerror(errno));
	}
	if (maps0 >= 0 && maps0 < many_maps())
		ck_assert_int_eq(write_long(map_count_path, many_maps()), 0);
	fds0 = begin();
	atomic_store(&many_started, 0);
	for (long i = 0; i < np; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]) != 0) {
			pair_fail++;
			sv[i][0] = sv[i][1] = -1;
		}
	}
	/* Task i waits on pair i % np; every byte sent on pair p is (unsigned char)p. */
	for (long i = 0; i < n; i++) {
		st[i].fd = sv[i % np][1];
		atomic_init(&st[i].res, INT_MIN);
	}
	ck_assert_msg(pair_fail == 0, "%ld socketpairs failed", pair_fail);
	ex = make_exec(0);
	t0 = ql_now();
	for (long i = 0; i < n; i++) {
		int r = ql_go(ex, many_recv, &st[i], &o, &h[i]);

		if (r != 0 && go_fail++ == 0)
			first_go = r;
	}
	ck_assert_msg(go_fail == 0, "%ld of %ld ql_go failed, first with %d (%s)", go_fail, n,
		      first_go, strerror(-first_go));
	uint64_t end = ql_now() + 60 * SEC;
	while (atomic_load(&many_started) < n) {
		ck_assert_msg(ql_now() < end, "%ld of %ld tasks started after 60 s",
			      atomic_load(&many_started), n);
		usleep(1000);
	}
	t1 = ql_now();
	usleep(100 * 1000);
	/* All of them are blocked at once: none has returned. */
	for (long i = 0; i < n; i++)
		early += atomic_load_explicit(&st[i].res, memory_order_relaxed) != INT_MIN;
	ck_assert_msg(early == 0, "%ld recvs returned before any data was sent", early);
	t2 = ql_now();
	for (long i = 0; i < n; i++) {
		unsigned char c = (unsigned char)(i % np);

		write_fail += write(sv[i % np][0], &c, 1) != 1;
	}
	ck_assert_int_eq(write_fail, 0);
	for (long i = 0; i < n; i++) {
		int status = -1;

		bad += ql_join(h[i], &status) != 0 || status != 0;
		bad += atomic_load(&st[i].res) != 1 || st[i].byte != (unsigned char)(i % np);
		ql_task_release(h[i]);
	}
	t3 = ql_now();
	note("task/hundred_thousand: %ld tasks on %ld socketpairs: spawned and blocked in %.0f ms, "
	     "woken and joined in %.0f ms",
	     n, np, ms(t1 - t0), ms(t3 - t2));
	ck_assert_msg(bad == 0, "%ld wrong joins or results", bad);
	ql_exec_destroy(ex);
	g_ex = NULL;
	for (long i = 0; i < np; i++) {
		close(sv[i][0]);
		close(sv[i][1]);
	}
	/* Put it back, unless someone else changed it meanwhile. */
	if (maps0 >= 0 && maps0 < many_maps() && read_long(map_count_path) == many_maps())
		ck_assert_int_eq(write_long(map_count_path, maps0), 0);
	free(sv);
	free(st);
	free(h);
	check_expects();
	ck_assert_int_eq(t_fd_count(), fds0);
}
END_TEST

/* ------------------------------------------------------------ stack overflow */

static volatile int deep_stop;

static __attribute__((noinline)) long deep_recurse(long n)
{
	volatile char pad[256];

	pad[n & 255] = (char)n;
	if (deep_stop)
		return pad[0];
	return deep_recurse(n + 1) + pad[n & 255];
}

static void deep_task(void *arg)
{
	deep_recurse(0);
}

/*
 * Does the report give the stack size? The size asked for ("32768",
 * "32 KiB", "32k"), or a byte count the stack really had: at least that,
 * and less than two pages more (the library may round up, or report the
 * usable part of what it mapped).
 */
static int names_stack_size(const char *out, unsigned long want)
{
	char w[32];

	snprintf(w, sizeof(w), "%lu", want);
	if (strstr(out, w))
		return 1;
	snprintf(w, sizeof(w), "%lu k", want / 1024);
	if (strcasestr(out, w))
		return 1;
	snprintf(w, sizeof(w), "%luk", want / 1024);
	if (strcasestr(out, w))
		return 1;
	for (const char *p = out; *p; p++) {
		if (*p >= '0' && *p <= '9' && (p == out || p[-1] < '0' || p[-1] > '9')) {
			unsigned long v = strtoul(p, NULL, 10);

			if (v >= want && v < want + 2 * 4096)
				return 1;
		}
	}
	return 0;
}

START_TEST(test_stack_overflow_reported)
{
	int fds0 = t_fd_count(), errp[2], idp[2], status;
	char out[8192];
	size_t len = 0;
	unsigned long long id = 0;
	char idstr[32] = "";
	pid_t pid;

	ck_assert_int_eq(pipe2(errp, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(idp, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct ql_exec_opts eo = { .sz = sizeof(eo), .workers = 1 };
		struct ql_task_opts o = { .sz = sizeof(o), .stack_size = 32768, .name = "deep" };
		struct rlimit nocore = { 0, 0 };
		struct ql_exec *ex;
		struct ql_task *t;
		uint64_t tid;

		setrlimit(RLIMIT_CORE, &nocore);
		dup2(errp[1], 2);
		if (ql_exec_create(&eo, &ex) != 0)
			_exit(3);
		if (ql_go(ex, deep_task, NULL, &o, &t) != 0)
			_exit(4);
		tid = ql_task_id(t);
		if (write(idp[1], &tid, sizeof(tid)) != sizeof(tid))
			_exit(5);
		ql_join(t, NULL);
		_exit(0); /* the overflow went unnoticed */
	}
	close(errp[1]);
	close(idp[1]);
	/* Read what the child says until it exits (or 30 s pass). */
	uint64_t end = ql_now() + 30 * SEC;
	for (;;) {
		struct pollfd p = { .fd = errp[0], .events = POLLIN };
		ssize_t n;

		if (ql_now() > end) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(errp[0], out + len, sizeof(out) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(out) - 1)
			break;
	}
	out[len] = '\0';
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	if (read(idp[0], &id, sizeof(id)) == sizeof(id))
		snprintf(idstr, sizeof(idstr), "%llu", id);
	close(errp[0]);
	close(idp[0]);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
		      "child status 0x%x (%s %d), want death by SIGABRT; its stderr: %s", status,
		      WIFSIGNALED(status) ? "signal" : "exit",
		      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), out);
	ck_assert_msg(strcasestr(out, "overflow"), "no \"stack overflow\" in: %s", out);
	ck_assert_msg(strstr(out, "deep") || (idstr[0] && strstr(out, idstr)),
		      "neither the name \"deep\" nor the id %s in: %s", idstr, out);
	ck_assert_msg(names_stack_size(out, 32768), "the stack size (32768 bytes) is not in: %s",
		      out);
	ck_assert_int_eq(t_fd_count(), fds0);
}
END_TEST

/* ------------------------------------------------------------ join */

enum { JOIN_THREADS = 8, JOIN_TASKS = 4 };
static struct ql_task *jt[JOIN_TASKS];
static struct recov jt_rec;

struct join_res {
	int idx;
	int ret[JOIN_TASKS], status[JOIN_TASKS];
};

static void *join_thread(void *arg)
{
	struct join_res *r = arg;

	/* Each thread in its own order: at any moment, several tasks are joined. */
	for (int k = 0; k < JOIN_TASKS; k++) {
		int i = (k + r->idx) % JOIN_TASKS;

		r->ret[i] = ql_join(jt[i], &r->status[i]);
	}
	return NULL;
}

static void jt_ok(void *arg)
{
	EXPECT_EQ(ql_sleep(80 * MS), 0);
}

static void jt_recovered(void *arg)
{
	EXPECT_EQ(ql_defer(d_recover, &jt_rec), 0);
	EXPECT_EQ(ql_sleep(80 * MS), 0);
	ql_panic(11, "join-recovered");
}

static void jt_dead(void *arg)
{
	EXPECT_EQ(ql_sleep(80 * MS), 0);
	ql_panic(12, "join-unrecovered");
}

START_TEST(test_join_outside_threads)
{
	int fds0 = begin(), fd[2];
	struct ql_exec *ex = make_exec(2);
	const int want_ret[JOIN_TASKS] = { 0, 0, -EOWNERDEAD, 0 };
	const int want_status[JOIN_TASKS] = { 0, 11, 12, -ECANCELED };
	struct join_res res[JOIN_THREADS];
	pthread_t th[JOIN_THREADS];
	struct blocker b;
	uint16_t port;
	char *err;

	capture_begin();
	blocker_fds(&b, OP_RECV, fd, &port);
	jt[0] = go(ex, jt_ok, NULL);
	jt[1] = go(ex, jt_recovered, NULL);
	jt[2] = go(ex, jt_dead, NULL);
	jt[3] = go(ex, blocker_task, &b);
	for (int i = 0; i < JOIN_THREADS; i++) {
		memset(&res[i], 0, sizeof(res[i]));
		res[i].idx = i;
		for (int k = 0; k < JOIN_TASKS; k++)
			res[i].ret[k] = res[i].status[k] = 99;
		ck_assert_int_eq(pthread_create(&th[i], NULL, join_thread, &res[i]), 0);
	}
	usleep(40 * 1000);
	ck_assert_int_eq(ql_cancel(jt[3]), 0);
	for (int i = 0; i < JOIN_THREADS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < JOIN_THREADS; i++)
		for (int k = 0; k < JOIN_TASKS; k++)
			ck_assert_msg(
				res[i].ret[k] == want_ret[k] && res[i].status[k] == want_status[k],
				"thread %d, task %d: join %d status %d, want %d status %d", i, k,
				res[i].ret[k], res[i].status[k], want_ret[k], want_status[k]);
	/* And again, after the end: any number of times until released. */
	for (int k = 0; k < JOIN_TASKS; k++) {
		join_is(jt[k], want_ret[k], want_status[k], "joined again");
		ck_assert_int_eq(ql_join(jt[k], NULL), want_ret[k]);
		ql_task_release(jt[k]);
	}
	ck_assert_int_eq(atomic_load(&b.cleanups), 1);
	err = capture_end();
	ck_assert_msg(count_substr(err, "join-unrecovered") == 1, "panic log: %s", err);
	free(err);
	close_pair(fd);
	finish(ex, fds0);
}
END_TEST

static struct ql_task *jf_b, *jf_c;
static struct ql_task *_Atomic jf_a;
static struct recov jf_rec;
static uint64_t jf_waited;

static void jf_b_fn(void *arg)
{
	EXPECT_EQ(ql_defer(d_recover, &jf_rec), 0);
	EXPECT_EQ(ql_sleep(30 * MS), 0);
	ql_panic(9, "jf-recovered");
}

static void jf_c_fn(void *arg)
{
	EXPECT_EQ(ql_sleep(10 * MS), 0);
	ql_panic(13, "jf-unrecovered");
}

static void jf_a_fn(void *arg)
{
	struct ql_task *me;
	int st = 777;
	uint64_t t0;

	EXPECT_EQ(ql_join(ql_self(), &st), -EDEADLK);
	while (!(me = atomic_load(&jf_a)))
		ql_yield();
	EXPECT_EQ(ql_join(me, &st), -EDEADLK);
	EXPECT_EQ(ql_join(NULL, &st), -EINVAL);
	t0 = ql_now();
	/* One worker: if joining blocked the worker, b and c could never run. */
	st = 777;
	EXPECT_EQ(ql_join(jf_b, &st), 0);
	EXPECT_EQ(st, 9);
	jf_waited = ql_now() - t0;
	st = 777;
	EXPECT_EQ(ql_join(jf_b, &st), 0);
	EXPECT_EQ(st, 9);
	st = 777;
	EXPECT_EQ(ql_join(jf_c, &st), -EOWNERDEAD);
	EXPECT_EQ(st, 13);
	EXPECT_EQ(ql_join(jf_c, NULL), -EOWNERDEAD);
}

START_TEST(test_join_from_task)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(1);
	struct ql_task *a;
	char *err;

	capture_begin();
	jf_b = go(ex, jf_b_fn, NULL);
	jf_c = go(ex, jf_c_fn, NULL);
	a = go(ex, jf_a_fn, NULL);
	atomic_store(&jf_a, a);
	join_is(a, 0, 0, "the joining task");
	check_expects();
	ck_assert_msg(jf_waited >= 15 * MS, "the join returned after %.3f ms, before b ended",
		      ms(jf_waited));
	join_is(jf_b, 0, 9, "b");
	join_is(jf_c, -EOWNERDEAD, 13, "c");
	ql_task_release(a);
	ql_task_release(jf_b);
	ql_task_release(jf_c);
	err = capture_end();
	ck_assert_msg(count_substr(err, "jf-unrecovered") == 1, "panic log: %s", err);
	free(err);
	finish(ex, fds0);
}
END_TEST

/*
 * The end of a task racing its joiners: tasks that end at once or after a
 * yield or two, each joined at the same moment by a task on the other
 * worker and by the test thread, half of them ending in a recovered panic
 * (the status comes from the chain). Every join must return the right
 * status, none may hang, and the sanitizer builds check that no record is
 * touched after it was freed.
 */
#define JR_BATCH 64

static struct recov jr_rec[JR_BATCH];
static struct ql_task *jr_t[JR_BATCH];
static int jr_seen[JR_BATCH];

static void jr_body(void *arg)
{
	long i = (long)(intptr_t)arg;

	for (long k = 0; k < i % 3; k++)
		ql_yield();
	if (i & 1) {
		EXPECT_EQ(ql_defer(d_recover, &jr_rec[i % JR_BATCH]), 0);
		ql_panic((int)(i % 1000) + 1, "join-race");
	}
}

static void jr_joiner(void *arg)
{
	long k = (long)(intptr_t)arg;
	int st = -1;

	EXPECT_EQ(ql_join(jr_t[k], &st), 0);
	jr_seen[k] = st;
}

START_TEST(test_join_end_race)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct ql_task *j[JR_BATCH];
	long rounds = T_TSAN ? 40 : 300;

	for (long r = 0; r < rounds; r++) {
		for (long k = 0; k < JR_BATCH; k++) {
			jr_t[k] = go(ex, jr_body, (void *)(intptr_t)(r * JR_BATCH + k));
			jr_seen[k] = -1;
		}
		for (long k = 0; k < JR_BATCH; k++)
			j[k] = go(ex, jr_joiner, (void *)(intptr_t)k);
		for (long k = 0; k < JR_BATCH; k++) {
			long i = r * JR_BATCH + k;

			join_is(jr_t[k], 0, (i & 1) ? (int)(i % 1000) + 1 : 0, "raced task");
		}
		for (long k = 0; k < JR_BATCH; k++) {
			long i = r * JR_BATCH + k;

			join_is(j[k], 0, 0, "joiner");
			ck_assert_int_eq(jr_seen[k], (i & 1) ? (int)(i % 1000) + 1 : 0);
			ql_task_release(j[k]);
			ql_task_release(jr_t[k]);
		}
	}
	check_expects();
	finish(ex, fds0);
}
END_TEST

START_TEST(test_join_cancelled_joiner)
{
	int fds0 = begin(), fd[2], nofd[2];
	struct ql_exec *ex = make_exec(2);
	struct blocker target, joiner;
	struct ql_task *tt, *tj;
	uint16_t port;
	uint64_t t0;

	blocker_fds(&target, OP_RECV, fd, &port);
	blocker_fds(&joiner, OP_JOIN, nofd, &port);
	tt = go(ex, blocker_task, &target);
	joiner.target = tt;
	joiner.status = 99;
	tj = go(ex, blocker_task, &joiner);
	wait_flag(&joiner.started, 1, "joiner");
	wait_flag(&target.started, 1, "target");
	settle(ex, 1);
	ck_assert_int_eq(atomic_load(&joiner.ended), 0);
	t0 = ql_now();
	ck_assert_int_eq(ql_cancel(tj), 0);
	join_is(tj, 0, -ECANCELED, "cancelled joiner");
	ck_assert_int_eq(joiner.res, -ECANCELED);
	ck_assert_uint_lt(joiner.t_ret - t0, PROMPT);
	/* The target is still running and its handle still valid. */
	ck_assert_int_eq(atomic_load(&target.ended), 0);
	ck_assert_int_eq(ql_cancel(tt), 0);
	join_is(tt, 0, -ECANCELED, "target");
	ck_assert_int_eq(ql_cancel(tt), -EALREADY);
	ql_task_release(tj);
	ql_task_release(tt);
	close_pair(fd);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ yield, sleep */

enum { YIELDS = 8 };
static int y_log[4 * YIELDS];
static _Atomic int y_n, y_bad;

static void yielder(void *arg)
{
	for (int i = 0; i < YIELDS; i++) {
		y_log[atomic_fetch_add(&y_n, 1)] = (int)(intptr_t)arg;
		if (ql_yield() != 0)
			atomic_fetch_add(&y_bad, 1);
	}
}

static void yield_launcher(void *arg)
{
	struct ql_task *a = NULL, *b = NULL;

	/* Both are queued before either runs. */
	EXPECT_EQ(ql_go(g_ex, yielder, (void *)(intptr_t)1, NULL, &a), 0);
	EXPECT_EQ(ql_go(g_ex, yielder, (void *)(intptr_t)2, NULL, &b), 0);
	EXPECT_EQ(ql_join(a, NULL), 0);
	EXPECT_EQ(ql_join(b, NULL), 0);
	ql_task_release(a);
	ql_task_release(b);
}

START_TEST(test_yield_alternates)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(1);
	struct ql_task *t;
	char seq[4 * YIELDS + 1];
	int n, same = 0;

	t = go(ex, yield_launcher, NULL);
	join_is(t, 0, 0, "launcher");
	ql_task_release(t);
	n = atomic_load(&y_n);
	for (int i = 0; i < n; i++)
		seq[i] = (char)('0' + y_log[i]);
	seq[n] = '\0';
	for (int i = 1; i < n; i++)
		same += y_log[i] == y_log[i - 1];
	note("task/yield_alternates: %s", seq);
	ck_assert_int_eq(n, 2 * YIELDS);
	ck_assert_int_eq(atomic_load(&y_bad), 0);
	ck_assert_msg(same == 0, "two yielding tasks on one worker did not alternate: %s", seq);
	finish(ex, fds0);
}
END_TEST

enum { SLEEPERS = 50 };
static uint64_t slept[SLEEPERS];
static long sleep_res[SLEEPERS];

static void sleeper(void *arg)
{
	long i = (long)(intptr_t)arg;
	uint64_t t0 = ql_now();

	sleep_res[i] = ql_sleep(20 * MS);
	slept[i] = ql_now() - t0;
}

static void sleep_series(void *arg)
{
	uint64_t *out = arg;

	for (int i = 0; i < 5; i++) {
		uint64_t t0 = ql_now();
		int r = ql_sleep(20 * MS);

		out[i] = ql_now() - t0;
		EXPECT_EQ(r, 0);
	}
	uint64_t t0 = ql_now();
	EXPECT_EQ(ql_sleep(0), 0);
	out[5] = ql_now() - t0;
}

START_TEST(test_sleep_duration)
{
	int fds0 = begin(), bad = 0;
	struct ql_exec *ex = make_exec(1);
	uint64_t series[6], t0, all, minv = UINT64_MAX, maxv = 0;
	struct ql_task *t, *h[SLEEPERS];

	t = go(ex, sleep_series, series);
	join_is(t, 0, 0, "sleeper");
	ql_task_release(t);
	check_expects();
	for (int i = 0; i < 5; i++) {
		ck_assert_msg(series[i] >= 20 * MS, "ql_sleep(20 ms) slept %.3f ms", ms(series[i]));
		ck_assert_msg(series[i] < 20 * MS + SEC, "ql_sleep(20 ms) slept %.3f ms",
			      ms(series[i]));
	}
	ck_assert_msg(series[5] < PROMPT, "ql_sleep(0) took %.3f ms", ms(series[5]));
	/* Many sleepers on one worker sleep together, not one after another. */
	t0 = ql_now();
	for (long i = 0; i < SLEEPERS; i++)
		h[i] = go(ex, sleeper, (void *)(intptr_t)i);
	for (int i = 0; i < SLEEPERS; i++) {
		join_is(h[i], 0, 0, "sleeper");
		ql_task_release(h[i]);
		bad += sleep_res[i] != 0 || slept[i] < 20 * MS;
		minv = slept[i] < minv ? slept[i] : minv;
		maxv = slept[i] > maxv ? slept[i] : maxv;
	}
	all = ql_now() - t0;
	note("task/sleep_duration: 20 ms slept %.3f .. %.3f ms; %d sleepers on one worker took "
	     "%.3f ms",
	     ms(series[0]), ms(series[4]), SLEEPERS, ms(all));
	ck_assert_msg(bad == 0, "%d sleepers returned early or failed (min %.3f ms)", bad,
		      ms(minv));
	ck_assert_msg(all < 20 * MS * SLEEPERS / 2, "%d sleepers of 20 ms took %.3f ms: serialised",
		      SLEEPERS, ms(all));
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ outside a task, bad arguments */

struct eperm {
	int pfd[2], sp[2];
	long r[8];
	int self_null, defer_res;
	_Atomic int done;
};

static void stackless_eperm(void *arg)
{
	struct eperm *e = arg;
	char c;

	e->r[0] = ql_read(e->pfd[0], &c, 1);
	e->r[1] = ql_sleep(1 * MS);
	e->r[2] = ql_yield();
	e->r[3] = ql_recv(e->sp[1], &c, 1, 0);
	e->r[4] = ql_write(e->pfd[1], "x", 1);
	e->self_null = ql_self() == NULL;
	/* Defer, unlike blocking, works in a stackless task. */
	e->defer_res = ql_defer(d_log, (void *)(intptr_t)5);
	atomic_store(&e->done, 1);
}

START_TEST(test_outside_task_eperm)
{
	int fds0 = begin(), lfd;
	struct ql_exec *ex = make_exec(2);
	struct eperm e = { 0 };
	char b[8] = { 0 };
	struct iovec iov = { .iov_base = b, .iov_len = sizeof(b) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct pollfd p;
	uint16_t port;

	ck_assert_int_eq(pipe2(e.pfd, O_CLOEXEC), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, e.sp), 0);
	lfd = t_listen_tcp(&port);
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	/* From the test's own thread, which is no task. */
	ck_assert_int_eq(ql_read(e.pfd[0], b, 1), -EPERM);
	ck_assert_int_eq(ql_write(e.pfd[1], b, 1), -EPERM);
	ck_assert_int_eq(ql_pread(e.pfd[0], b, 1, 0), -EPERM);
	ck_assert_int_eq(ql_pwrite(e.pfd[1], b, 1, 0), -EPERM);
	ck_assert_int_eq(ql_readv(e.pfd[0], &iov, 1, -1), -EPERM);
	ck_assert_int_eq(ql_writev(e.pfd[1], &iov, 1, -1), -EPERM);
	ck_assert_int_eq(ql_recv(e.sp[1], b, 1, 0), -EPERM);
	ck_assert_int_eq(ql_send(e.sp[0], b, 1, 0), -EPERM);
	ck_assert_int_eq(ql_recvmsg(e.sp[1], &mh, 0), -EPERM);
	ck_assert_int_eq(ql_sendmsg(e.sp[0], &mh, 0), -EPERM);
	ck_assert_int_eq(ql_accept(lfd, NULL, NULL, 0), -EPERM);
	ck_assert_int_eq(ql_connect(e.sp[0], (struct sockaddr *)&a, sizeof(a)), -EPERM);
	ck_assert_int_eq(ql_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), -EPERM);
	ck_assert_int_eq(ql_shutdown(e.sp[0], SHUT_RDWR), -EPERM);
	ck_assert_int_eq(ql_openat(AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC, 0), -EPERM);
	ck_assert_int_eq(ql_close(e.pfd[0]), -EPERM);
	ck_assert_int_eq(ql_fsync(e.pfd[1]), -EPERM);
	ck_assert_int_eq(ql_poll(e.pfd[0], POLLIN), -EPERM);
	ck_assert_int_eq(ql_sleep(1 * MS), -EPERM);
	ck_assert_int_eq(ql_yield(), -EPERM);
	ck_assert_int_eq(ql_defer(d_log, NULL), -EPERM);
	ck_assert_ptr_null(ql_self());
	ck_assert_int_eq(ql_recover(), 0);
	/* Nothing happened: the fd is open, no byte moved, nobody connected. */
	ck_assert_int_ne(fcntl(e.pfd[0], F_GETFD), -1);
	p = (struct pollfd){ .fd = e.pfd[0], .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, 0), 0);
	p = (struct pollfd){ .fd = e.sp[1], .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, 0), 0);
	p = (struct pollfd){ .fd = lfd, .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, 0), 0);
	ck_assert_int_eq(atomic_load(&log_n), 0);

	/* From a stackless task. */
	ck_assert_int_eq(ql_spawn(ex, stackless_eperm, &e), 0);
	wait_flag(&e.done, 1, "stackless task");
	for (int i = 0; i < 5; i++)
		ck_assert_msg(e.r[i] == -EPERM, "call %d in a stackless task returned %ld", i,
			      e.r[i]);
	ck_assert_int_eq(e.self_null, 1);
	ck_assert_int_eq(e.defer_res, 0);
	p = (struct pollfd){ .fd = e.pfd[0], .events = POLLIN };
	ck_assert_int_eq(poll(&p, 1, 0), 0);
	close(lfd);
	close_pair(e.pfd);
	close_pair(e.sp);
	finish(ex, fds0);
}
END_TEST

struct in_task_args {
	int defer_null, go_null_ex, go_null_fn, join_null, cancel_null, scope_null;
	int readv_neg;
	int fd;
};

static void bad_args_task(void *arg)
{
	struct in_task_args *a = arg;
	struct iovec iov = { 0 };

	a->defer_null = ql_defer(NULL, NULL);
	a->go_null_ex = ql_go(NULL, noop_task, NULL, NULL, NULL);
	a->go_null_fn = ql_go(g_ex, NULL, NULL, NULL, NULL);
	a->join_null = ql_join(NULL, NULL);
	a->cancel_null = ql_cancel(NULL);
	a->scope_null = ql_scope_open(NULL, QL_NO_DEADLINE);
	a->readv_neg = (int)ql_readv(a->fd, &iov, -1, 0);
}

START_TEST(test_bad_arguments)
{
	int fds0 = begin(), sp[2];
	struct ql_exec *ex = make_exec(1);
	struct ql_task_opts o = { .sz = sizeof(o) };
	struct ql_task *t = NULL;
	struct in_task_args a = { 0 };
	int st;

	ck_assert_int_eq(ql_go(NULL, noop_task, NULL, NULL, &t), -EINVAL);
	ck_assert_int_eq(ql_go(ex, NULL, NULL, NULL, &t), -EINVAL);
	o.sz = 1;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -EINVAL);
	o.sz = sizeof(o);
	o.stack_size = QL_STACK_MIN - 1;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -EINVAL);
	o.stack_size = 4096;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -EINVAL);
	o.stack_size = (1ul << 30) + 1;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -EINVAL);
	o.stack_size = ~(size_t)0;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), -EINVAL);
	ck_assert_int_eq(ql_join(NULL, &st), -EINVAL);
	ck_assert_int_eq(ql_cancel(NULL), -EINVAL);
	ql_task_release(NULL);
	ck_assert_uint_eq(ql_task_id(NULL), 0);
	ck_assert_int_eq(ql_scope_open(NULL, QL_NO_DEADLINE), -EINVAL);
	ck_assert_int_eq(ql_scope_cancel(NULL), -EINVAL);
	ql_scope_close(NULL);
	/* The edges that are fine. */
	o.stack_size = QL_STACK_MIN;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), 0);
	join_is(t, 0, 0, "QL_STACK_MIN");
	ql_task_release(t);
	o.stack_size = 0;
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, &o, &t), 0);
	join_is(t, 0, 0, "default stack");
	ql_task_release(t);
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, NULL, &t), 0);
	join_is(t, 0, 0, "NULL opts");
	ql_task_release(t);
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, NULL, NULL), 0); /* detached */
	/* Inside a task. */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	a.fd = sp[1];
	t = go(ex, bad_args_task, &a);
	join_is(t, 0, 0, "bad arguments inside a task");
	ql_task_release(t);
	ck_assert_int_eq(a.defer_null, -EINVAL);
	ck_assert_int_eq(a.go_null_ex, -EINVAL);
	ck_assert_int_eq(a.go_null_fn, -EINVAL);
	ck_assert_int_eq(a.join_null, -EINVAL);
	ck_assert_int_eq(a.cancel_null, -EINVAL);
	ck_assert_int_eq(a.scope_null, -EINVAL);
	ck_assert_int_eq(a.readv_neg, -EINVAL);
	close_pair(sp);
	/* After shutdown. */
	ck_assert_int_eq(ql_exec_shutdown(ex, SEC), 0);
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, NULL, &t), -ESHUTDOWN);
	finish(ex, fds0);
}
END_TEST

enum { IDS = 64 };
static uint64_t self_id[IDS];
static int self_in_stackless = -1;

static void id_task(void *arg)
{
	self_id[(intptr_t)arg] = ql_task_id(ql_self());
}

static void id_stackless(void *arg)
{
	self_in_stackless = ql_self() == NULL;
	atomic_store(&sl_done, 1);
}

START_TEST(test_task_identity)
{
	int fds0 = begin(), dup = 0;
	struct ql_exec *ex = make_exec(2);
	struct ql_task *h[IDS];

	for (long i = 0; i < IDS; i++)
		h[i] = go(ex, id_task, (void *)(intptr_t)i);
	for (int i = 0; i < IDS; i++) {
		join_is(h[i], 0, 0, "id task");
		ck_assert_uint_ne(ql_task_id(h[i]), 0);
		ck_assert_uint_eq(self_id[i], ql_task_id(h[i]));
		for (int j = 0; j < i; j++)
			dup += ql_task_id(h[i]) == ql_task_id(h[j]);
	}
	ck_assert_int_eq(dup, 0);
	for (int i = 0; i < IDS; i++)
		ql_task_release(h[i]);
	atomic_store(&sl_done, 0);
	ck_assert_int_eq(ql_spawn(ex, id_stackless, NULL), 0);
	wait_flag(&sl_done, 1, "stackless");
	ck_assert_int_eq(self_in_stackless, 1);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ blocking I/O round trips */

static long recv_all(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = ql_recv(fd, (char *)buf + got, n - got, 0);

		if (r <= 0)
			return r < 0 ? (long)r : (long)got;
		got += (size_t)r;
	}
	return (long)got;
}

static long send_all(int fd, const void *buf, size_t n)
{
	size_t put = 0;

	while (put < n) {
		ssize_t r = ql_send(fd, (const char *)buf + put, n - put, MSG_NOSIGNAL);

		if (r <= 0)
			return r < 0 ? (long)r : (long)put;
		put += (size_t)r;
	}
	return (long)put;
}

struct tcp_io {
	uint16_t port;
	char *big;
	size_t bign;
};

static void tcp_client(void *arg)
{
	struct tcp_io *io = arg;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(io->port) };
	char buf[8];
	int fd, rev;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = ql_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	EXPECT(fd >= 0, "ql_socket: %d", fd);
	if (fd < 0)
		return;
	EXPECT_EQ(ql_connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	EXPECT_EQ(ql_send(fd, "ping", 4, MSG_NOSIGNAL), 4);
	rev = ql_poll(fd, POLLIN);
	EXPECT(rev > 0 && (rev & POLLIN), "ql_poll(POLLIN) returned %d", rev);
	EXPECT_EQ(recv_all(fd, buf, 4), 4);
	EXPECT(memcmp(buf, "pong", 4) == 0, "the client got \"%.4s\"", buf);
	EXPECT_EQ(send_all(fd, io->big, io->bign), (long)io->bign);
	/* The server shut its writing side: end of stream. */
	EXPECT_EQ(ql_recv(fd, buf, 1, 0), 0);
	EXPECT_EQ(ql_close(fd), 0);
}

static void tcp_server(void *arg)
{
	struct tcp_io *io = arg;
	struct sockaddr_in a = { .sin_family = AF_INET }, peer;
	socklen_t len = sizeof(a), plen = sizeof(peer);
	struct ql_task *client = NULL;
	char buf[8], *got;
	int one = 1, lfd, fd;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = ql_socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	EXPECT(lfd >= 0, "ql_socket: %d", lfd);
	if (lfd < 0)
		return;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	EXPECT_EQ(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	EXPECT_EQ(listen(lfd, 16), 0);
	EXPECT_EQ(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
	io->port = ntohs(a.sin_port);
	EXPECT_EQ(ql_go(g_ex, tcp_client, io, NULL, &client), 0);
	fd = ql_accept(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
	EXPECT(fd >= 0, "ql_accept: %d", fd);
	if (fd >= 0) {
		EXPECT_EQ(plen, sizeof(peer));
		EXPECT_EQ(peer.sin_family, AF_INET);
		EXPECT_EQ(peer.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
		EXPECT_EQ(recv_all(fd, buf, 4), 4);
		EXPECT(memcmp(buf, "ping", 4) == 0, "the server got \"%.4s\"", buf);
		EXPECT_EQ(ql_send(fd, "pong", 4, MSG_NOSIGNAL), 4);
		got = malloc(io->bign);
		EXPECT_EQ(recv_all(fd, got, io->bign), (long)io->bign);
		EXPECT(memcmp(got, io->big, io->bign) == 0, "1 MiB arrived altered");
		free(got);
		EXPECT_EQ(ql_shutdown(fd, SHUT_WR), 0);
		/* The client closed after reading our end of stream. */
		EXPECT_EQ(ql_recv(fd, buf, 1, 0), 0);
		EXPECT_EQ(ql_close(fd), 0);
	} else if (client) {
		ql_cancel(client);
	}
	if (client) {
		int st = 99;

		EXPECT_EQ(ql_join(client, &st), 0);
		EXPECT_EQ(st, 0);
		ql_task_release(client);
	}
	EXPECT_EQ(ql_close(lfd), 0);
}

START_TEST(test_io_tcp)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct tcp_io io = { .bign = 1 << 20 };
	struct ql_task *t;

	io.big = malloc(io.bign);
	ck_assert_ptr_nonnull(io.big);
	for (size_t i = 0; i < io.bign; i++)
		io.big[i] = (char)(i * 2654435761u >> 13);
	t = go(ex, tcp_server, &io);
	join_is(t, 0, 0, "server");
	ql_task_release(t);
	free(io.big);
	finish(ex, fds0);
}
END_TEST

struct file_io {
	char path[128], missing[128];
	int fd;
};

static void file_task(void *arg)
{
	struct file_io *f = arg;
	char buf[64] = { 0 }, a[4] = { 0 }, b[4] = { 0 };
	struct iovec w[3] = { { "ab", 2 }, { "cde", 3 }, { "f", 1 } };
	struct iovec r[2] = { { a, 3 }, { b, 3 } };
	int fd;

	fd = ql_openat(AT_FDCWD, f->path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	EXPECT(fd >= 0, "ql_openat: %d", fd);
	if (fd < 0)
		return;
	f->fd = fd;
	EXPECT_EQ(ql_pwrite(fd, "hello, world", 12, 0), 12);
	EXPECT_EQ(ql_pwrite(fd, "tail", 4, 4096), 4);
	EXPECT_EQ(ql_fsync(fd), 0);
	EXPECT_EQ(ql_pread(fd, buf, 12, 0), 12);
	EXPECT(memcmp(buf, "hello, world", 12) == 0, "pread got \"%.12s\"", buf);
	EXPECT_EQ(ql_pread(fd, buf, sizeof(buf), 4096), 4); /* short, at the end */
	EXPECT(memcmp(buf, "tail", 4) == 0, "pread got \"%.4s\"", buf);
	EXPECT_EQ(ql_pread(fd, buf, sizeof(buf), 8192), 0); /* past the end */
	EXPECT_EQ(ql_writev(fd, w, 3, 100), 6);
	EXPECT_EQ(ql_readv(fd, r, 2, 100), 6);
	EXPECT(memcmp(a, "abc", 3) == 0 && memcmp(b, "def", 3) == 0, "readv got \"%.3s\" \"%.3s\"",
	       a, b);
	/* Without an offset: the file position, which moves. */
	EXPECT_EQ(lseek(fd, 0, SEEK_SET), 0);
	EXPECT_EQ(ql_write(fd, "XY", 2), 2);
	EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 2);
	memset(buf, 0, sizeof(buf));
	EXPECT_EQ(ql_read(fd, buf, 3), 3);
	EXPECT(memcmp(buf, "llo", 3) == 0, "read at the position got \"%.3s\"", buf);
	EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 5);
	memset(a, 0, sizeof(a));
	r[0].iov_len = 2;
	EXPECT_EQ(ql_readv(fd, r, 1, -1), 2);
	EXPECT(memcmp(a, ", ", 2) == 0, "readv at the position got \"%.2s\"", a);
	EXPECT_EQ(ql_close(fd), 0);
	EXPECT(fcntl(fd, F_GETFD) == -1 && errno == EBADF, "the fd is still open after ql_close");
	EXPECT_EQ(ql_close(fd), -EBADF);
	EXPECT_EQ(ql_openat(AT_FDCWD, f->missing, O_RDONLY | O_CLOEXEC, 0), -ENOENT);
}

START_TEST(test_io_file)
{
	int fds0 = begin(), fd;
	struct ql_exec *ex = make_exec(2);
	char dir[] = "/tmp/qilin-check-task-XXXXXX", buf[16] = { 0 };
	struct file_io f = { .fd = -1 };
	struct ql_task *t;
	struct stat sb;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(f.path, sizeof(f.path), "%s/f", dir);
	snprintf(f.missing, sizeof(f.missing), "%s/missing", dir);
	t = go(ex, file_task, &f);
	join_is(t, 0, 0, "file task");
	ql_task_release(t);
	/* What the task wrote is in the file. */
	fd = open(f.path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &sb), 0);
	ck_assert_int_eq(sb.st_size, 4100);
	ck_assert_int_eq(pread(fd, buf, 12, 0), 12);
	ck_assert_int_eq(memcmp(buf, "XYllo, world", 12), 0);
	ck_assert_int_eq(pread(fd, buf, 6, 100), 6);
	ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
	close(fd);
	unlink(f.path);
	rmdir(dir);
	finish(ex, fds0);
}
END_TEST

struct pipe_io {
	int p[2];
	int out_rev, in_rev;
	long nread, nwritten;
	char buf[16];
	_Atomic int started, polled;
};

static void pipe_task(void *arg)
{
	struct pipe_io *io = arg;

	io->out_rev = ql_poll(io->p[1], POLLOUT);
	atomic_store(&io->started, 1);
	io->in_rev = ql_poll(io->p[0], POLLIN);
	atomic_store(&io->polled, 1);
	io->nread = ql_read(io->p[0], io->buf, sizeof(io->buf));
	io->nwritten = ql_write(io->p[1], "back", 4);
}

START_TEST(test_io_pipe_poll)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct pipe_io io = { 0 };
	struct ql_task *t;
	char buf[8];

	ck_assert_int_eq(pipe2(io.p, O_CLOEXEC), 0);
	t = go(ex, pipe_task, &io);
	wait_flag(&io.started, 1, "pipe task");
	settle(ex, 1);
	ck_assert_int_eq(atomic_load(&io.polled), 0); /* still waiting */
	ck_assert_int_eq(write(io.p[1], "hello", 5), 5);
	join_is(t, 0, 0, "pipe task");
	ql_task_release(t);
	ck_assert_msg(io.out_rev > 0 && (io.out_rev & POLLOUT), "POLLOUT: %d", io.out_rev);
	ck_assert_msg(io.in_rev > 0 && (io.in_rev & POLLIN), "POLLIN: %d", io.in_rev);
	ck_assert_int_eq(io.nread, 5);
	ck_assert_int_eq(memcmp(io.buf, "hello", 5), 0);
	ck_assert_int_eq(io.nwritten, 4);
	ck_assert_int_eq(read(io.p[0], buf, sizeof(buf)), 4);
	ck_assert_int_eq(memcmp(buf, "back", 4), 0);
	close_pair(io.p);
	finish(ex, fds0);
}
END_TEST

struct msg_io {
	int sp[2];
	long sent, got, peek, after_peek, wv, rv, sh;
	char a[4], b[4], pk[4], pk2[4], c[8];
};

static void msg_task(void *arg)
{
	struct msg_io *m = arg;
	struct iovec out[2] = { { "ab", 2 }, { "cdef", 4 } };
	struct iovec in[2] = { { m->a, 3 }, { m->b, 3 } };
	struct msghdr mo = { .msg_iov = out, .msg_iovlen = 2 };
	struct msghdr mi = { .msg_iov = in, .msg_iovlen = 2 };
	struct iovec wv[2] = { { "12", 2 }, { "345", 3 } };
	struct iovec rv = { m->c, 5 };

	m->sent = ql_sendmsg(m->sp[0], &mo, MSG_NOSIGNAL);
	m->got = ql_recvmsg(m->sp[1], &mi, MSG_WAITALL);
	/* Flags reach the kernel: a peek leaves the data in place. */
	EXPECT_EQ(ql_send(m->sp[0], "xyz", 3, MSG_NOSIGNAL), 3);
	m->peek = ql_recv(m->sp[1], m->pk, 3, MSG_PEEK);
	m->after_peek = ql_recv(m->sp[1], m->pk2, 3, MSG_WAITALL);
	m->wv = ql_writev(m->sp[0], wv, 2, -1);
	m->rv = ql_readv(m->sp[1], &rv, 1, -1);
	m->sh = ql_shutdown(m->sp[0], SHUT_WR);
}

START_TEST(test_io_msg)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(2);
	struct msg_io m = { 0 };
	struct ql_task *t;
	char c;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, m.sp), 0);
	t = go(ex, msg_task, &m);
	join_is(t, 0, 0, "msg task");
	ql_task_release(t);
	ck_assert_int_eq(m.sent, 6);
	ck_assert_int_eq(m.got, 6);
	ck_assert_int_eq(memcmp(m.a, "abc", 3), 0);
	ck_assert_int_eq(memcmp(m.b, "def", 3), 0);
	ck_assert_int_eq(m.peek, 3);
	ck_assert_int_eq(m.after_peek, 3);
	ck_assert_int_eq(memcmp(m.pk, "xyz", 3), 0);
	ck_assert_int_eq(memcmp(m.pk2, "xyz", 3), 0);
	ck_assert_int_eq(m.wv, 5);
	ck_assert_int_eq(m.rv, 5);
	ck_assert_int_eq(memcmp(m.c, "12345", 5), 0);
	ck_assert_int_eq(m.sh, 0);
	/* The shutdown took effect: end of stream on the other side. */
	ck_assert_int_eq(recv(m.sp[1], &c, 1, MSG_DONTWAIT), 0);
	close_pair(m.sp);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

START_TEST(test_shutdown_parked_tasks)
{
	enum { NB = 6 };
	const enum op ops[NB] = { OP_RECV, OP_ACCEPT, OP_SLEEP, OP_READ, OP_POLL, OP_JOIN };
	int fds0 = begin(), fd[NB][2];
	uint16_t port[NB] = { 0 };
	struct ql_exec *ex = make_exec(2);
	struct blocker b[NB];
	struct ql_task *t[NB];
	uint64_t t0, took;
	int ret;

	for (int i = 0; i < NB; i++) {
		blocker_fds(&b[i], ops[i], fd[i], &port[i]);
		b[i].second = 1;
		if (ops[i] == OP_JOIN)
			b[i].target = t[0];
		t[i] = go(ex, blocker_task, &b[i]);
	}
	for (int i = 0; i < NB; i++)
		wait_flag(&b[i].started, 1, op_name[ops[i]]);
	settle(ex, NB - 1);
	t0 = ql_now();
	ret = ql_exec_shutdown(ex, 100 * MS);
	took = ql_now() - t0;
	note("task/shutdown_parked: ql_exec_shutdown returned %d after %.3f ms", ret, ms(took));
	ck_assert_int_eq(ret, -ETIMEDOUT);
	ck_assert_msg(took < 5 * SEC, "shutdown took %.3f ms", ms(took));
	for (int i = 0; i < NB; i++) {
		/* Blocked calls failed; so did the next one, at once; the chain ran. */
		ck_assert_int_eq(atomic_load(&b[i].ended), 1);
		if (ops[i] == OP_JOIN)
			ck_assert_msg(b[i].res <= 0, "join: %ld", b[i].res);
		else
			ck_assert_msg(b[i].res < 0, "%s returned %ld after shutdown",
				      op_name[ops[i]], b[i].res);
		ck_assert_msg(b[i].again < 0, "%s: a sleep after shutdown returned %ld",
			      op_name[ops[i]], b[i].again);
		ck_assert_int_eq(atomic_load(&b[i].cleanups), 1);
	}
	for (int i = 0; i < NB; i++) {
		int status;

		ck_assert_int_eq(ql_join(t[i], &status), 0);
		check_not_taken(&b[i], fd[i], port[i]);
	}
	for (int i = 0; i < NB; i++) {
		ql_task_release(t[i]);
		close_pair(fd[i]);
	}
	ck_assert_int_eq(ql_go(ex, noop_task, NULL, NULL, NULL), -ESHUTDOWN);
	finish(ex, fds0);
}
END_TEST

static long spin_res, spin_yields;

static void spin_task(void *arg)
{
	int r;

	EXPECT_EQ(ql_defer(d_log, (void *)(intptr_t)1), 0);
	while ((r = ql_yield()) == 0)
		spin_yields++;
	spin_res = r;
}

START_TEST(test_shutdown_running_tasks)
{
	int fds0 = begin();
	struct ql_exec *ex = make_exec(1);
	struct ql_task *t;
	int ret, status;

	t = go(ex, spin_task, NULL);
	usleep(20 * 1000);
	/* A task that never blocks is cancelled too: its yield fails. */
	ret = ql_exec_shutdown(ex, 50 * MS);
	ck_assert_int_eq(ret, -ETIMEDOUT);
	ck_assert_int_eq(ql_join(t, &status), 0);
	ck_assert_msg(spin_res < 0, "ql_yield returned %ld", spin_res);
	ck_assert_int_gt(spin_yields, 0);
	ck_assert_int_eq(atomic_load(&log_runs[1]), 1);
	ql_task_release(t);
	finish(ex, fds0);
}
END_TEST

/* ------------------------------------------------------------ main */

int main(void)
{
	Suite *s = suite_create("task");
	long maps0 = read_long(map_count_path);
	const char *many_skip = many_skip_reason();
	const char *overflow_skip =
		T_TSAN ? "ThreadSanitizer: a stack overflow death test is not meaningful" : NULL;
	const struct t_case cases[] = {
		{ "defer_return", test_defer_on_return, 10, NULL },
		{ "defer_cancel", test_defer_on_cancel, 10, NULL },
		{ "defer_panic", test_defer_on_panic, 10, NULL },
		{ "defer_deadline", test_defer_on_deadline, 10, NULL },
		{ "defer_stackless", test_defer_stackless, 10, NULL },
		{ "defer_many", test_defer_many, 20, NULL },
		{ "recover", test_recover_semantics, 10, NULL },
		{ "panic_unrecovered", test_panic_unrecovered, 10, NULL },
		{ "panic_nested", test_panic_nested, 10, NULL },
		{ "panic_stackless", test_panic_stackless, 10, NULL },
		{ "cancel_recv", test_cancel_recv, 10, NULL },
		{ "cancel_accept", test_cancel_accept, 10, NULL },
		{ "cancel_sleep", test_cancel_sleep, 10, NULL },
		{ "cancel_read", test_cancel_read, 10, NULL },
		{ "cancel_poll", test_cancel_poll, 10, NULL },
		{ "cancel_sticky", test_cancel_sticky, 10, NULL },
		{ "accept_cancel_race", test_accept_cancel_race, 60, NULL },
		{ "scope_child_deadline", test_scope_child_deadline_first, 10, NULL },
		{ "scope_parent_ends_children", test_scope_parent_ends_children, 10, NULL },
		{ "scope_cancel_from_thread", test_scope_cancel_from_thread, 30, NULL },
		{ "scope_close_cancels", test_scope_close_cancels, 10, NULL },
		{ "scope_go_cancelled", test_scope_go_cancelled, 10, NULL },
		{ "hundred_thousand", test_hundred_thousand_blocked, 120, many_skip },
		{ "stack_overflow", test_stack_overflow_reported, 60, overflow_skip },
		{ "join_outside_threads", test_join_outside_threads, 10, NULL },
		{ "join_from_task", test_join_from_task, 10, NULL },
		{ "join_cancelled_joiner", test_join_cancelled_joiner, 10, NULL },
		{ "join_end_race", test_join_end_race, 60, NULL },
		{ "yield_alternates", test_yield_alternates, 10, NULL },
		{ "sleep_duration", test_sleep_duration, 10, NULL },
		{ "outside_task_eperm", test_outside_task_eperm, 10, NULL },
		{ "bad_args", test_bad_arguments, 10, NULL },
		{ "identity", test_task_identity, 10, NULL },
		{ "io_tcp", test_io_tcp, 20, NULL },
		{ "io_file", test_io_file, 10, NULL },
		{ "io_pipe_poll", test_io_pipe_poll, 10, NULL },
		{ "io_msg", test_io_msg, 10, NULL },
		{ "shutdown_parked", test_shutdown_parked_tasks, 20, NULL },
		{ "shutdown_running", test_shutdown_running_tasks, 10, NULL },
	};
	int ret;

	t_add_cases(s, "task", cases, sizeof(cases) / sizeof(cases[0]));
	ret = t_run_suite(s);
	/*
	 * The 100,000-task case restores vm.max_map_count itself; this covers
	 * a case that died: the value it wrote is still there.
	 */
	if (maps0 > 0 && maps0 < many_maps() && read_long(map_count_path) == many_maps())
		write_long(map_count_path, maps0);
	return ret;
}
