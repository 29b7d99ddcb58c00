/* SPDX-License-Identifier: MIT */
/*
 * bench/exec_bench.c - the executor against its peers: spawning, hand-offs, NOPs, wake-ups.
 *
 * What it measures. Four scenarios, each run on a fresh executor (ql_exec_create() with -w
 * workers, pinned unless --no-pin) and each, except the last, compared with the system a
 * program would otherwise use:
 *
 *   spawn     One task on a worker calls ql_spawn() N times (2M by default). Each spawned
 *             stackless task does one atomic decrement of a shared counter; the task that
 *             brings it to 0 reads the clock and signals the main thread through an eventfd.
 *             Timed from just before the first spawn to that clock reading: tasks/s.
 *             Peer: go-spawn -mode spawn (one goroutine starts N goroutines that each call
 *             wg.Done()), GOMAXPROCS = workers. Target: qilin >= 10x Go.
 *   outside   T = workers plain pthreads (not pinned, like Go's), released together by a
 *             barrier, each call ql_spawn() N/T times from outside the executor; the same
 *             counter task. Timed from the release to the last decrement. Peer: go-spawn
 *             -mode outside -threads T (T goroutines locked to OS threads). Target >= 3x.
 *   nop       Each worker runs one task that keeps DEPTH (64) NOPs in flight with
 *             ql_nop_cb(); each continuation issues the next NOP, until the round's ~1 s is
 *             up (or --nop-ops NOPs in all). ops/s = all NOPs over the span from the first
 *             worker's start to the last one's end. Peer: nop_bench's plain liburing loop
 *             (DEPTH in flight, io_uring_submit_and_wait, io_uring_peek_batch_cqe) on as
 *             many threads, each with its own ring, pinned to the CPUs the workers use
 *             (the i-th CPU of the affinity mask), with the SQ size, CQ size and setup flags
 *             the ring layer gets for an SQ of the executor's ring size (a probe ring, set
 *             up and closed before the rounds), and a registered ring fd if the layer uses
 *             one. Target: qilin >= 60% of liburing.
 *   wake      Wake-up latency of a parked worker. The executor is idle: the main thread
 *             sleeps 2 ms before each sample so that the workers park, then takes t0 =
 *             ql_now() and ql_spawn()s a task that stores ql_now() - t0. 2000 samples after
 *             50 discarded ones; p50, p99, p999 and max in microseconds, and the workers'
 *             wake-ups and parks per sample (about 1 when every sample found them parked).
 *             For information only, go-spawn -mode wake: a goroutine blocked on a channel,
 *             woken by a goroutine locked to its OS thread (which, unlike qilin's outside
 *             thread, holds a P of its own).
 *
 * Fairness. Rounds alternate which system goes first (qilin first in even rounds). qilin
 * runs one discarded warm-up round per scenario so that its task pools are warm; go-spawn
 * starts a fresh process per round and warms up inside it (one untimed repetition before
 * the timed one), and times itself, so process start-up is never counted. While one system
 * runs the other is idle: go-spawn and the plain threads run while the executor's workers
 * are parked, and the plain threads are joined before qilin's rounds. One asymmetry, in
 * Go's disfavour and small next to the ~100 ms rounds: qilin's end time is read by the last
 * task, Go's after wg.Wait() has woken the main goroutine.
 *
 * Output. A Markdown table per scenario on stdout: median, minimum and maximum rates over
 * the rounds (default 5), each round's pair and ratio, the ratio of the medians against its
 * target, and the median of the rounds' own ratios (the two halves of a round run back to
 * back, so they share the machine's conditions). For nop also ops per CPU-second of the
 * whole process (CLOCK_PROCESS_CPUTIME_ID, which leaves out time stolen by neighbours) and
 * SQEs per io_uring_enter. After each scenario the executor's counters, and a list of
 * anything that looked wrong: an idle executor using CPU, a failed or slow shutdown, tasks
 * dropped, queues or I/O left over, a round that hung (the main thread waits --timeout
 * seconds for each signal, then prints the counters and exits 1 without freeing state the
 * workers may still touch). With --json FILE the figures are written as one JSON object
 * per scenario, in nop_bench's shape (a JSON array of them for -s all):
 *   {"scenario":"spawn","machine":{"cores":..,"kernel":..},"config":{..},
 *    "systems":{"qilin":{"median_tasks_s":..,"runs":[..],..},"go":{..}},
 *    "ratios":{"qilin/go":..,"qilin/go_paired":..},"target":10,
 *    "qilin_worker_share_pct":[..],"anomalies":[..]}
 * where qilin_worker_share_pct is each worker's share of the tasks and continuations run over
 * the scenario (printed too: a scenario whose work stays on one worker measures one core).
 *
 * Run it:
 *   make lib benches && bench/go/build.sh build/bench && build/bench/exec_bench -s all
 *   build/bench/exec_bench -s spawn -n 500000 -r 7 --json spawn.json
 * Options: -s spawn|outside|nop|wake|all (all), -n TASKS (2000000), -r ROUNDS (5), -w
 * WORKERS (0: CPUs), --ring SQ (0: the executor's default), --no-pin, -d DEPTH (64),
 * --nop-ops OPS (0: rounds of --nop-ms, 1000), --samples N (2000), --gap-us US (2000),
 * --go BIN (build/bench/go-spawn), --no-peer (qilin only), --timeout S (60), --json FILE.
 *
 * Exit status: 0 when every round ran (targets met or not, anomalies or not), 1 on an error
 * or a hang, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qilin.h"
/* The ring layer, only to learn the ring setup the executor's rings get (the nop peer). */
#include "ring.h"

#define BENCH_PROG "exec_bench"
#include "bench_util.h"

/* Defaults for the command-line options. */
#define DEFAULT_ROUNDS 5
#define DEFAULT_TASKS 2000000ull
#define DEFAULT_DEPTH 64
#define DEFAULT_NOP_MS 1000ull
#define DEFAULT_SAMPLES 2000
#define DEFAULT_GAP_US 2000ull
#define DEFAULT_TIMEOUT_S 60
#define DEFAULT_GO_BIN "build/bench/go-spawn"

/* Upper bounds the options are checked against. */
#define MAX_ROUNDS 1000
#define MAX_DEPTH 4096
#define MAX_WORKERS 4096
#define MAX_SAMPLES 10000000
#define MAX_TIMEOUT_S 86400

/* The SQ size an executor ring gets when ql_exec_opts.ring_size is 0 (qilin.h). */
#define EXEC_DEFAULT_RING 256

/* Discarded warm-up: one nop round of this length, and this many wake-up samples. */
#define NOP_WARMUP_NS (100 * NS_PER_MS)
#define WAKE_WARMUP_SAMPLES 50

/*
 * How long a fresh executor is watched for idle CPU use, after a settling pause in which
 * its workers should park, and how much CPU it may use meanwhile before that is reported.
 */
#define IDLE_SETTLE_NS (50 * NS_PER_MS)
#define IDLE_WATCH_NS (200 * NS_PER_MS)
#define IDLE_CPU_MAX_NS (5 * NS_PER_MS)

/* How long ql_exec_shutdown() may take at the end of a scenario before it is reported. */
#define SHUTDOWN_TIMEOUT_NS (10 * NS_PER_S)

/* Times a nop starter task re-spawns itself to find a worker that has no starter yet. */
#define NOP_MAX_RESPAWNS 10000

/* The targets (see the top of this file). */
#define TARGET_SPAWN 10.0
#define TARGET_OUTSIDE 3.0
#define TARGET_NOP 0.60

/* Wake-up percentiles reported, as fractions. */
#define P50 0.50
#define P99 0.99
#define P999 0.999

#define NS_PER_MS 1000000ull
#define NS_PER_US 1000ull
#define NSEC_PER_USEC 1000.0

/* Room for one line of go-spawn output, a shell command, and one anomaly message. */
#define LINE_LEN 1024
#define CMD_LEN 4096
#define ANOMALY_LEN 256
#define MAX_ANOMALIES 32

/* Room for ql__ring_features_str(): every feature name, comma-separated. */
#define FEATURES_STR_LEN 256

/* Setup flags that cannot simply be copied to a second ring: they need more parameters. */
#define UNCOPYABLE_SETUP_FLAGS (IORING_SETUP_ATTACH_WQ | IORING_SETUP_R_DISABLED)

/* A cache line, to keep fields that different threads write apart. */
#define CACHE_LINE 64

enum scenario { SC_SPAWN, SC_OUTSIDE, SC_NOP, SC_WAKE, SC_COUNT };

static const char *const scenario_names[SC_COUNT] = { "spawn", "outside", "nop", "wake" };

struct config {
	unsigned scenarios; /* bit per enum scenario */
	uint64_t tasks;	    /* -n: tasks per spawn/outside round */
	unsigned rounds;
	unsigned workers;   /* -w, 0: CPUs */
	unsigned ring_size; /* --ring, 0: the executor's default */
	int no_pin;
	unsigned depth;	  /* NOPs in flight per worker or thread */
	uint64_t nop_ops; /* NOPs per round in all, 0: rounds of nop_ns */
	uint64_t nop_ns;
	unsigned samples;
	uint64_t gap_ns;
	unsigned timeout_s;
	const char *go; /* go-spawn binary */
	int no_peer;
	const char *json; /* --json FILE, or NULL */
};

/* State shared by every scenario. */
struct bench {
	const struct config *c;
	struct ql_exec *ex; /* the current scenario's executor */
	unsigned nworkers;
	int efd;	/* eventfd through which tasks signal the main thread */
	int *cpus;	/* the CPUs of the affinity mask, in order */
	unsigned ncpus;
	long cores;
	const char *kernel;
	struct ql_stats st0; /* counters when the scenario's executor was created */
	char anomalies[MAX_ANOMALIES][ANOMALY_LEN];
	unsigned nanomalies;
	char *json[SC_COUNT]; /* each scenario's JSON object */
	size_t json_len[SC_COUNT];
};

/* What one round of one system measured (rates scenarios). */
struct round_result {
	double rate;	 /* tasks or operations per second of wall-clock time */
	double cpu_rate; /* per second of process CPU time (nop only; 0 otherwise) */
	uint64_t n;	 /* tasks or operations done */
	uint64_t ns;	 /* wall-clock time */
	uint64_t sqes;	 /* nop: SQEs submitted and io_uring_enter calls */
	uint64_t enters;
	uint64_t stolen; /* qilin: tasks stolen between workers */
};

/* ------------------------------------------------------------------ small helpers */

/* CPU time of the whole process (every thread), in ns; 0 if the clock cannot be read. */
static uint64_t process_cpu_ns(void)
{
	return cpu_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile p (0..1) of sorted v[0..n), n > 0: the same rule as go-spawn. */
static uint64_t percentile(const uint64_t *v, size_t n, double p)
{
	size_t i = (size_t)(p * (double)n);

	return v[i < n ? i : n - 1];
}

/* Record something that looked wrong; printed after the scenario and kept in the JSON. */
__attribute__((format(printf, 2, 3))) static void anomaly(struct bench *b, const char *fmt, ...)
{
	va_list ap;

	if (b->nanomalies == MAX_ANOMALIES)
		return;
	va_start(ap, fmt);
	vsnprintf(b->anomalies[b->nanomalies++], ANOMALY_LEN, fmt, ap);
	va_end(ap);
}

static void read_stats(struct bench *b, struct ql_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->sz = sizeof(*st);
	if (ql_exec_stats(b->ex, st))
		anomaly(b, "ql_exec_stats failed");
}

/*
 * How the work spread over the workers since the executor was created (warm-up included):
 * each worker's share, in percent, of the tasks and continuations run, into
 * share[0..nworkers). Returns 0 or -errno.
 */
static int worker_shares(struct bench *b, double *share)
{
	struct ql_worker_stats *ws = calloc(b->nworkers, sizeof(*ws));
	struct ql_stats st;
	unsigned i;
	int ret;

	if (!ws)
		return -ENOMEM;
	memset(&st, 0, sizeof(st));
	st.sz = sizeof(st);
	st.workers = ws;
	st.workers_len = b->nworkers;
	ret = ql_exec_stats(b->ex, &st);
	for (i = 0; !ret && i < b->nworkers; i++)
		share[i] = st.total.run ? (double)ws[i].run * 100.0 / (double)st.total.run : 0;
	free(ws);
	return ret;
}

/*
 * Wait for a task's signal on the eventfd, at most --timeout seconds. Returns 0, or
 * -ETIMEDOUT after printing the executor's counters (the caller then gives up: the round's
 * tasks may still run, so nothing they can reach may be freed).
 */
static int wait_signal(struct bench *b, const char *what)
{
	int ret = wait_efd(b->efd, b->c->timeout_s, what);

	if (ret == -ETIMEDOUT) {
		struct ql_stats st;

		read_stats(b, &st);
		print_counters("counters at the hang", &st);
	}
	return ret;
}

/* ------------------------------------------------------------------ executor lifetime */

/*
 * Create the scenario's executor and check that, once its workers have had time to park,
 * it uses no CPU while idle. Returns 0 or -errno.
 */
static int exec_open(struct bench *b)
{
	const struct config *c = b->c;
	struct ql_exec_opts opts;
	uint64_t cpu0, cpu1;
	char why[LINE_LEN];
	int ret;

	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	opts.workers = c->workers;
	opts.ring_size = c->ring_size;
	opts.flags = c->no_pin ? QL_EXEC_NO_PIN : 0;
	ret = ql_exec_create(&opts, &b->ex);
	if (ret) {
		ql_uring_diagnose(why, sizeof(why));
		fprintf(stderr, "exec_bench: ql_exec_create: %s (%s)\n", strerror(-ret), why);
		b->ex = NULL;
		return ret;
	}
	read_stats(b, &b->st0);
	b->nworkers = b->st0.nworkers;
	if (!b->nworkers) {
		fprintf(stderr, "exec_bench: the executor reports 0 workers\n");
		return -EINVAL;
	}
	sleep_ns(IDLE_SETTLE_NS);
	cpu0 = process_cpu_ns();
	sleep_ns(IDLE_WATCH_NS);
	cpu1 = process_cpu_ns();
	if (cpu1 - cpu0 > IDLE_CPU_MAX_NS)
		anomaly(b, "idle executor used %.1f ms of CPU in %.0f ms (workers not parking?)",
			(double)(cpu1 - cpu0) / NS_PER_MS, (double)IDLE_WATCH_NS / NS_PER_MS);
	return 0;
}

/* Spawned only after shutdown, where ql_spawn must refuse it. */
static void never_task(void *arg)
{
	abort();
}

/*
 * Check the counters of an executor whose work is all done, shut it down and free it.
 * After a hang it is neither shut down nor freed: its workers may be stuck.
 */
static void exec_close(struct bench *b, int hung)
{
	struct ql_stats st;
	uint64_t t0;
	int ret;

	if (!b->ex)
		return;
	if (hung) {
		anomaly(b, "a round hung; the executor was left running");
		b->ex = NULL;
		return;
	}
	/* The last task signals before its worker counts it as run: let the counters settle. */
	sleep_ns(IDLE_SETTLE_NS);
	read_stats(b, &st);
	print_counters("counters over the scenario", &st);
	if (st.total.runq_depth || st.global_depth)
		anomaly(b, "%" PRIu64 " tasks still queued (%" PRIu64 " global) after every round",
			st.total.runq_depth, st.global_depth);
	if (st.total.inflight)
		anomaly(b, "%" PRIu64 " I/O operations still in flight after every round",
			st.total.inflight);
	t0 = now_ns();
	ret = ql_exec_shutdown(b->ex, SHUTDOWN_TIMEOUT_NS);
	if (ret)
		anomaly(b, "ql_exec_shutdown: %s", strerror(-ret));
	if (now_ns() - t0 > NS_PER_S)
		anomaly(b, "ql_exec_shutdown of an idle executor took %.2f s",
			(double)(now_ns() - t0) / NSEC_PER_SEC);
	read_stats(b, &st);
	if (st.total.dropped)
		anomaly(b, "%" PRIu64 " tasks dropped at shutdown", st.total.dropped);
	ret = ql_exec_shutdown(b->ex, SHUTDOWN_TIMEOUT_NS);
	if (ret != -EALREADY)
		anomaly(b, "a second ql_exec_shutdown returned %d, not -EALREADY", ret);
	ret = ql_spawn(b->ex, never_task, NULL);
	if (ret != -ESHUTDOWN)
		anomaly(b, "ql_spawn after shutdown returned %d, not -ESHUTDOWN", ret);
	ql_exec_destroy(b->ex);
	b->ex = NULL;
}

/* ------------------------------------------------------------------ the Go peer */

/* Run the Go peer with args (made here) and keep its one JSON line. Returns 0 or -1. */
static int run_go(const struct config *c, const char *args, char *line, size_t len)
{
	return run_peer(c->go, args, line, len);
}

/* One Go round of a rate scenario: mode spawn or outside. Returns 0 or -1. */
static int go_rate_round(const struct bench *b, const char *mode, unsigned threads,
			 struct round_result *out)
{
	char args[CMD_LEN], line[LINE_LEN];
	double ns, per_sec;

	snprintf(args, sizeof(args), "-mode %s -n %" PRIu64 " -procs %u -threads %u", mode,
		 b->c->tasks, b->nworkers, threads ? threads : b->nworkers);
	if (run_go(b->c, args, line, sizeof(line)))
		return -1;
	if (json_number(line, "ns", &ns) || json_number(line, "per_sec", &per_sec)) {
		fprintf(stderr, "exec_bench: cannot parse go-spawn output '%s'\n", line);
		return -1;
	}
	memset(out, 0, sizeof(*out));
	out->n = b->c->tasks;
	out->ns = (uint64_t)ns;
	out->rate = per_sec;
	return 0;
}

/* ------------------------------------------------------------------ spawn and outside */

/*
 * The countdown the spawned tasks share. left is written by every task on every worker,
 * so it has a cache line to itself; the rest is written once per round.
 */
struct countdown {
	_Alignas(CACHE_LINE) _Atomic uint64_t left;
	_Alignas(CACHE_LINE) _Atomic uint64_t t_end; /* ql_now() of the last decrement */
	_Atomic int err;			     /* first ql_spawn failure, or 0 */
	int efd;
	struct ql_exec *ex;
	uint64_t n;  /* tasks per round */
	uint64_t t0; /* start of the timed part */
};

/*
 * Static, not on the stack: after a hang the main thread returns while tasks may still
 * run, and they must not find freed memory.
 */
static struct countdown cd;

/* The last decrement: read the clock, publish it, wake the main thread. */
static void countdown_done(struct countdown *d)
{
	/* Release: the main thread's acquire load then sees the value (and t0, set before). */
	atomic_store_explicit(&d->t_end, ql_now(), memory_order_release);
	signal_main(d->efd);
}

/* Take k off the countdown (k tasks done or never spawned); the one that reaches 0 ends it. */
static void countdown_sub(struct countdown *d, uint64_t k)
{
	/*
	 * Relaxed: the count is all that matters, and the RMWs on left form one total order, so
	 * exactly one of them takes it from k to 0. What the last one reads (t0) was written
	 * before the spawns that led to it, which ql_spawn's hand-off orders.
	 */
	if (atomic_fetch_sub_explicit(&d->left, k, memory_order_relaxed) == k)
		countdown_done(d);
}

/* The spawned task: one decrement. */
static void count_task(void *arg)
{
	countdown_sub(arg, 1);
}

/* Spawn share count tasks; on a failure, count the rest as done so that the round ends. */
static void spawn_share(struct countdown *d, uint64_t share)
{
	uint64_t i;
	int ret;

	for (i = 0; i < share; i++) {
		ret = ql_spawn(d->ex, count_task, d);
		if (__builtin_expect(ret != 0, 0)) {
			set_err(&d->err, ret);
			countdown_sub(d, share - i);
			return;
		}
	}
}

/* The spawn scenario's first task: on a worker, it spawns all the others. */
static void spawner_task(void *arg)
{
	struct countdown *d = arg;

	if (ql_worker_id() < 0)
		set_err(&d->err, -EPERM);
	d->t0 = ql_now();
	spawn_share(d, d->n);
}

static void countdown_reset(struct bench *b, struct countdown *d)
{
	atomic_store_explicit(&d->left, b->c->tasks, memory_order_relaxed);
	atomic_store_explicit(&d->t_end, 0, memory_order_relaxed);
	atomic_store_explicit(&d->err, 0, memory_order_relaxed);
	d->efd = b->efd;
	d->ex = b->ex;
	d->n = b->c->tasks;
	d->t0 = 0;
}

/* Wait for the countdown's end and turn it into a result. Returns 0 or -errno. */
static int countdown_finish(struct bench *b, struct countdown *d, const char *what,
			    const struct ql_stats *before, struct round_result *out)
{
	struct ql_stats after;
	uint64_t t_end;
	int ret, err;

	ret = wait_signal(b, what);
	if (ret)
		return ret;
	/* Acquire pairs with countdown_done()'s release store. */
	t_end = atomic_load_explicit(&d->t_end, memory_order_acquire);
	err = atomic_load_explicit(&d->err, memory_order_relaxed);
	if (err) {
		fprintf(stderr, "exec_bench: %s: ql_spawn failed: %s\n", what, strerror(-err));
		return err;
	}
	read_stats(b, &after);
	memset(out, 0, sizeof(*out));
	out->n = d->n;
	out->ns = t_end - d->t0;
	out->rate = rate_of(out->n, out->ns);
	out->stolen = after.total.stolen - before->total.stolen;
	return 0;
}

/* One qilin round of the spawn scenario. Returns 0 or -errno. */
static int qilin_spawn_round(struct bench *b, struct round_result *out)
{
	struct ql_stats before;
	int ret;

	countdown_reset(b, &cd);
	read_stats(b, &before);
	ret = ql_spawn(b->ex, spawner_task, &cd);
	if (ret) {
		fprintf(stderr, "exec_bench: ql_spawn: %s\n", strerror(-ret));
		return ret;
	}
	return countdown_finish(b, &cd, "the spawn round", &before, out);
}

/* The outside scenario's spawner threads, released together by a barrier. */
struct outside_thread {
	pthread_t thread;
	pthread_barrier_t *start;
	uint64_t share;
};

static void *outside_main(void *arg)
{
	struct outside_thread *t = arg;

	pthread_barrier_wait(t->start);
	spawn_share(&cd, t->share);
	return NULL;
}

/* One qilin round of the outside scenario. Returns 0 or -errno. */
static int qilin_outside_round(struct bench *b, struct round_result *out)
{
	unsigned nt = b->nworkers, i, started;
	struct outside_thread *ts;
	pthread_barrier_t start;
	struct ql_stats before;
	int ret;

	if (b->c->tasks < nt) {
		fprintf(stderr, "exec_bench: -n must be at least the %u threads\n", nt);
		return -EINVAL;
	}
	ts = calloc(nt, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	ret = -pthread_barrier_init(&start, NULL, nt + 1);
	if (ret) {
		free(ts);
		return ret;
	}
	countdown_reset(b, &cd);
	read_stats(b, &before);
	for (started = 0; started < nt; started++) {
		ts[started].start = &start;
		ts[started].share = b->c->tasks / nt + (started ? 0 : b->c->tasks % nt);
		ret = -pthread_create(&ts[started].thread, NULL, outside_main, &ts[started]);
		if (ret) {
			/* The barrier can never open now: nothing more can be cleaned up. */
			fprintf(stderr, "exec_bench: pthread_create: %s\n", strerror(-ret));
			exit(1);
		}
	}
	cd.t0 = ql_now();
	pthread_barrier_wait(&start);
	ret = countdown_finish(b, &cd, "the outside round", &before, out);
	if (ret == -ETIMEDOUT)
		return ret; /* threads may be stuck in ql_spawn: leave them, and their state */
	for (i = 0; i < nt; i++)
		pthread_join(ts[i].thread, NULL);
	pthread_barrier_destroy(&start);
	free(ts);
	return ret;
}

/* ------------------------------------------------------------------ nop: qilin */

/* One worker's NOP loop. Only its worker touches it during the round, hence the alignment. */
struct nop_worker {
	_Alignas(CACHE_LINE) struct nop_round *round;
	uint64_t budget;   /* NOPs still to issue (UINT64_MAX for time-bound rounds) */
	uint64_t deadline; /* end of a time-bound round, or 0 */
	uint64_t done;
	unsigned inflight;
	unsigned until_check; /* completions until the next look at the clock */
	int err;
	_Atomic int claimed; /* a starter task took this worker */
	uint64_t t_start, t_end;
};

struct nop_round {
	_Alignas(CACHE_LINE) _Atomic unsigned left; /* workers not finished */
	_Atomic unsigned respawns;
	_Atomic int err;
	int efd;
	struct ql_exec *ex;
	unsigned depth;
	unsigned nworkers;
	uint64_t ops;	   /* NOPs per round in all, or 0 */
	uint64_t round_ns; /* length of a time-bound round */
	struct nop_worker *w;
};

/* Static for the same reason as cd: continuations may outlive a hung round. */
static struct nop_round nr;

/* A worker's loop has drained: record its end; the last worker wakes the main thread. */
static void nop_worker_done(struct nop_worker *w)
{
	struct nop_round *r = w->round;

	w->t_end = ql_now();
	if (w->err)
		set_err(&r->err, w->err);
	/* Acq_rel: the last worker's release covers every worker's results for the main thread. */
	if (atomic_fetch_sub_explicit(&r->left, 1, memory_order_acq_rel) == 1)
		signal_main(r->efd);
}

/*
 * The continuation: count the NOP and, while the round goes on, issue the next one. The
 * clock is read once per DEPTH completions, about as often as the plain loop reads it (once
 * per enter).
 */
static void nop_done(void *arg, ssize_t res)
{
	struct nop_worker *w = arg;
	int ret;

	w->done++;
	if (__builtin_expect(res < 0, 0) && !w->err) {
		w->err = (int)res;
		w->budget = 0;
	}
	if (--w->until_check == 0) {
		w->until_check = w->round->depth;
		if (w->deadline && ql_now() >= w->deadline)
			w->budget = 0;
	}
	if (w->budget) {
		ret = ql_nop_cb(nop_done, w);
		if (__builtin_expect(ret == 0, 1)) {
			w->budget--;
			return;
		}
		w->err = ret;
		w->budget = 0;
	}
	if (--w->inflight == 0)
		nop_worker_done(w);
}

/* The task that starts one worker's loop; it first makes sure no other starter has. */
static void nop_starter(void *arg)
{
	struct nop_round *r = arg;
	struct nop_worker *w;
	unsigned i;
	int id = ql_worker_id(), ret;

	if (id < 0 || (unsigned)id >= r->nworkers) {
		set_err(&r->err, id < 0 ? id : -ERANGE);
		/* Some worker will then miss its loop: finish on its behalf (left counts them). */
		if (atomic_fetch_sub_explicit(&r->left, 1, memory_order_acq_rel) == 1)
			signal_main(r->efd);
		return;
	}
	w = &r->w[id];
	/* Relaxed: only the exchange's atomicity matters, the worker's own state is local. */
	if (atomic_exchange_explicit(&w->claimed, 1, memory_order_relaxed)) {
		/* Another starter runs here already: try again, hoping an idle worker steals it. */
		if (atomic_fetch_add_explicit(&r->respawns, 1, memory_order_relaxed) <
		    NOP_MAX_RESPAWNS) {
			ret = ql_spawn(r->ex, nop_starter, r);
			if (!ret)
				return;
			set_err(&r->err, ret);
		} else {
			set_err(&r->err, -EAGAIN);
		}
		if (atomic_fetch_sub_explicit(&r->left, 1, memory_order_acq_rel) == 1)
			signal_main(r->efd);
		return;
	}
	w->t_start = ql_now();
	w->deadline = r->ops ? 0 : w->t_start + r->round_ns;
	w->until_check = r->depth;
	for (i = 0; i < r->depth && w->budget; i++) {
		ret = ql_nop_cb(nop_done, w);
		if (ret) {
			w->err = ret;
			w->budget = 0;
			break;
		}
		w->budget--;
		w->inflight++;
	}
	if (!w->inflight)
		nop_worker_done(w);
}

/*
 * One qilin nop round: ops NOPs in all, or round_ns per worker when ops is 0. Returns 0 or
 * -errno.
 */
static int qilin_nop_round(struct bench *b, uint64_t ops, uint64_t round_ns,
			   struct round_result *out)
{
	struct ql_stats before, after;
	uint64_t cpu0, cpu1, first = UINT64_MAX, last = 0, done = 0;
	unsigned i;
	int ret, err;

	nr.efd = b->efd;
	nr.ex = b->ex;
	nr.depth = b->c->depth;
	nr.nworkers = b->nworkers;
	nr.ops = ops;
	nr.round_ns = round_ns;
	atomic_store_explicit(&nr.left, b->nworkers, memory_order_relaxed);
	atomic_store_explicit(&nr.respawns, 0, memory_order_relaxed);
	atomic_store_explicit(&nr.err, 0, memory_order_relaxed);
	for (i = 0; i < b->nworkers; i++) {
		memset(&nr.w[i], 0, sizeof(nr.w[i]));
		nr.w[i].round = &nr;
		nr.w[i].budget = ops ? ops / b->nworkers + (i ? 0 : ops % b->nworkers) : UINT64_MAX;
	}
	read_stats(b, &before);
	cpu0 = process_cpu_ns();
	for (i = 0; i < b->nworkers; i++) {
		ret = ql_spawn(b->ex, nop_starter, &nr);
		if (ret) {
			fprintf(stderr, "exec_bench: ql_spawn: %s\n", strerror(-ret));
			/*
			 * The starters already spawned will run: count the others as finished
			 * and, unless that was the last count, wait for them before failing.
			 * Acq_rel, as in nop_worker_done().
			 */
			if (atomic_fetch_sub_explicit(&nr.left, b->nworkers - i,
						      memory_order_acq_rel) != b->nworkers - i &&
			    wait_signal(b, "the nop round") == -ETIMEDOUT)
				return -ETIMEDOUT;
			return ret;
		}
	}
	ret = wait_signal(b, "the nop round");
	if (ret)
		return ret;
	cpu1 = process_cpu_ns();
	/* Acquire: pairs with the last nop_worker_done()'s acq_rel decrement. */
	(void)atomic_load_explicit(&nr.left, memory_order_acquire);
	err = atomic_load_explicit(&nr.err, memory_order_relaxed);
	if (err) {
		fprintf(stderr, "exec_bench: qilin nop round failed: %s%s\n", strerror(-err),
			err == -EAGAIN ? " (could not place one NOP loop per worker)" : "");
		return err;
	}
	read_stats(b, &after);
	for (i = 0; i < b->nworkers; i++) {
		done += nr.w[i].done;
		first = nr.w[i].t_start < first ? nr.w[i].t_start : first;
		last = nr.w[i].t_end > last ? nr.w[i].t_end : last;
	}
	memset(out, 0, sizeof(*out));
	out->n = done;
	out->ns = last - first;
	out->rate = rate_of(done, out->ns);
	out->cpu_rate = cpu0 && cpu1 > cpu0 ? rate_of(done, cpu1 - cpu0) : 0;
	out->sqes = after.total.sqes - before.total.sqes;
	out->enters = after.total.enters - before.total.enters;
	out->stolen = atomic_load_explicit(&nr.respawns, memory_order_relaxed);
	return 0;
}

/* ------------------------------------------------------------------ nop: plain liburing */

/* The ring setup the plain threads copy, learnt from a ring-layer probe ring. */
struct ring_setup {
	unsigned flags;
	unsigned sq_entries, cq_entries;
	int register_fd;
	char features[FEATURES_STR_LEN];
};

/* One plain thread: its own ring, pinned to one CPU. */
struct plain_thread {
	_Alignas(CACHE_LINE) pthread_t thread;
	const struct ring_setup *setup;
	pthread_barrier_t *start;
	int cpu;
	unsigned depth;
	uint64_t budget; /* NOPs to issue, or 0 for a time-bound round */
	uint64_t round_ns;
	uint64_t done, sqes, enters;
	uint64_t t_start, t_end;
	int err;
};

/* Set up the ring layer's twin ring on the calling thread. Returns 0 or -errno. */
static int plain_ring_init(struct plain_thread *t, struct io_uring *ring)
{
	struct io_uring_params params;
	int ret;

	memset(&params, 0, sizeof(params));
	params.flags = (t->setup->flags & ~UNCOPYABLE_SETUP_FLAGS) | IORING_SETUP_CQSIZE;
	params.cq_entries = t->setup->cq_entries;
	ret = io_uring_queue_init_params(t->setup->sq_entries, ring, &params);
	if (ret < 0)
		return ret;
	if (t->setup->register_fd) {
		/* Returns the number of fds registered, so 1 on success. */
		ret = io_uring_register_ring_fd(ring);
		if (ret != 1) {
			io_uring_queue_exit(ring);
			return ret < 0 ? ret : -EIO;
		}
	}
	return 0;
}

/* nop_bench's raw loop: DEPTH in flight, one submit_and_wait per batch, peek all CQEs. */
static int plain_loop(struct plain_thread *t, struct io_uring *ring, struct io_uring_cqe **cqes)
{
	uint64_t limit = t->budget, issued = 0, deadline;
	unsigned inflight = 0;
	int stop = 0, err = 0;

	t->t_start = now_ns();
	deadline = t->t_start + t->round_ns;
	while (inflight < t->depth && (!limit || issued < limit)) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		if (!sqe)
			return -EBUSY;
		io_uring_prep_nop(sqe);
		inflight++;
		issued++;
	}
	while (inflight) {
		unsigned n, i;
		int ret = io_uring_submit_and_wait(ring, 1);

		if (ret < 0) {
			if (ret == -EINTR)
				continue;
			return ret;
		}
		t->enters++;
		n = io_uring_peek_batch_cqe(ring, cqes, t->depth);
		for (i = 0; i < n; i++)
			if (cqes[i]->res < 0 && !err)
				err = cqes[i]->res;
		io_uring_cq_advance(ring, n);
		inflight -= n;
		t->done += n;
		if (err || (!limit && now_ns() >= deadline))
			stop = 1;
		for (i = 0; i < n && !stop && (!limit || issued < limit); i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

			/* The SQ holds at least DEPTH entries and at most DEPTH are ever queued. */
			if (!sqe)
				return -EBUSY;
			io_uring_prep_nop(sqe);
			inflight++;
			issued++;
		}
	}
	t->t_end = now_ns();
	t->sqes = issued;
	return err;
}

static void *plain_main(void *arg)
{
	struct plain_thread *t = arg;
	struct io_uring_cqe **cqes = calloc(t->depth, sizeof(*cqes));
	struct io_uring ring;
	cpu_set_t set;
	int ret;

	CPU_ZERO(&set);
	CPU_SET(t->cpu, &set);
	ret = -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (!ret)
		ret = cqes ? plain_ring_init(t, &ring) : -ENOMEM;
	/* Every thread reaches the barrier, failed or not, so that the main thread goes on. */
	pthread_barrier_wait(t->start);
	if (!ret) {
		ret = plain_loop(t, &ring, cqes);
		io_uring_queue_exit(&ring);
	}
	free(cqes);
	t->err = ret;
	return NULL;
}

/* One plain round on nworkers threads; same contract as qilin_nop_round(). */
static int plain_nop_round(struct bench *b, const struct ring_setup *setup, uint64_t ops,
			   uint64_t round_ns, struct round_result *out)
{
	unsigned nt = b->nworkers, i;
	uint64_t cpu0, cpu1, first = UINT64_MAX, last = 0, done = 0, sqes = 0, enters = 0;
	struct plain_thread *ts;
	pthread_barrier_t start;
	int ret, err = 0;

	ts = aligned_alloc(CACHE_LINE, nt * sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	memset(ts, 0, nt * sizeof(*ts));
	ret = -pthread_barrier_init(&start, NULL, nt + 1);
	if (ret) {
		free(ts);
		return ret;
	}
	for (i = 0; i < nt; i++) {
		ts[i].setup = setup;
		ts[i].start = &start;
		ts[i].cpu = b->cpus[i % b->ncpus];
		ts[i].depth = b->c->depth;
		ts[i].budget = ops ? ops / nt + (i ? 0 : ops % nt) : 0;
		ts[i].round_ns = round_ns;
		ret = -pthread_create(&ts[i].thread, NULL, plain_main, &ts[i]);
		if (ret) {
			/* The barrier can never open now: nothing more can be cleaned up. */
			fprintf(stderr, "exec_bench: pthread_create: %s\n", strerror(-ret));
			exit(1);
		}
	}
	/* The threads have set up their rings once the barrier opens; only the loops count. */
	pthread_barrier_wait(&start);
	cpu0 = process_cpu_ns();
	for (i = 0; i < nt; i++)
		pthread_join(ts[i].thread, NULL);
	cpu1 = process_cpu_ns();
	pthread_barrier_destroy(&start);
	for (i = 0; i < nt; i++) {
		if (ts[i].err && !err)
			err = ts[i].err;
		done += ts[i].done;
		sqes += ts[i].sqes;
		enters += ts[i].enters;
		first = ts[i].t_start < first ? ts[i].t_start : first;
		last = ts[i].t_end > last ? ts[i].t_end : last;
	}
	free(ts);
	if (err) {
		fprintf(stderr, "exec_bench: plain liburing nop round failed: %s\n",
			strerror(-err));
		return err;
	}
	memset(out, 0, sizeof(*out));
	out->n = done;
	out->ns = last - first;
	out->rate = rate_of(done, out->ns);
	out->cpu_rate = cpu0 && cpu1 > cpu0 ? rate_of(done, cpu1 - cpu0) : 0;
	out->sqes = sqes;
	out->enters = enters;
	return 0;
}

/*
 * Learn the ring setup the executor's rings get: a probe ring through the ring layer, with
 * the executor's SQ size, closed at once. Returns 0 or -errno.
 */
static int probe_ring_setup(const struct config *c, struct ring_setup *out)
{
	struct ql_ring_opts opts;
	struct ql_ring r;
	int ret;

	memset(&opts, 0, sizeof(opts));
	memset(&r, 0, sizeof(r));
	opts.sz = sizeof(opts);
	opts.sq_entries = c->ring_size ? c->ring_size : EXEC_DEFAULT_RING;
	opts.flags = QL_RING_O_NO_WAKE;
	ret = ql__ring_init(&r, &opts);
	if (ret) {
		fprintf(stderr, "exec_bench: probe ring: %s\n", ql__ring_last_error());
		return ret;
	}
	out->flags = r.setup_flags;
	out->sq_entries = r.sq_entries;
	out->cq_entries = r.cq_entries;
	out->register_fd = !!(r.enter_flags & IORING_ENTER_REGISTERED_RING);
	ql__ring_features_str(r.features, out->features, sizeof(out->features));
	ql__ring_exit(&r, 0);
	if (out->sq_entries < c->depth) {
		fprintf(stderr, "exec_bench: -d %u exceeds the ring's %u SQ entries\n", c->depth,
			out->sq_entries);
		return -EINVAL;
	}
	return 0;
}

/* ------------------------------------------------------------------ rate scenarios */

/* Summary of one system over all rounds. */
struct summary {
	double median, min, max; /* wall-clock rates */
	double cpu_median;	 /* per CPU-second (nop) */
	double sqes_per_enter;	 /* nop */
	uint64_t stolen;	 /* qilin: tasks stolen, all rounds */
};

/* What a rate scenario needs to know about itself. */
struct rate_desc {
	enum scenario sc;
	const char *title; /* Markdown heading after "## " */
	const char *unit;  /* "tasks" or "ops" */
	const char *peer;  /* the peer's name in tables and JSON */
	double target;	   /* qilin/peer */
	int has_cpu;	   /* CPU-time rates and SQEs/enter are meaningful */
};

static void summarize(const struct round_result *res, unsigned n, double *v, struct summary *s)
{
	uint64_t sqes = 0, enters = 0;
	unsigned i;

	memset(s, 0, sizeof(*s));
	for (i = 0; i < n; i++) {
		v[i] = res[i].rate;
		sqes += res[i].sqes;
		enters += res[i].enters;
		s->stolen += res[i].stolen;
	}
	s->median = median(v, n);
	s->min = v[0];
	s->max = v[n - 1];
	s->sqes_per_enter = enters ? (double)sqes / (double)enters : 0;
	for (i = 0; i < n; i++)
		v[i] = res[i].cpu_rate;
	s->cpu_median = median(v, n);
}

static void json_machine(FILE *f, const struct bench *b)
{
	json_machine_open(f, b->cores, b->kernel);
	fprintf(f, ", \"qilin\": ");
	json_string(f, ql_version());
	fprintf(f, "},\n");
}

static void json_anomalies(FILE *f, const struct bench *b)
{
	unsigned i;

	fprintf(f, "  \"anomalies\": [");
	for (i = 0; i < b->nanomalies; i++) {
		fprintf(f, "%s", i ? ", " : "");
		json_string(f, b->anomalies[i]);
	}
	fprintf(f, "]\n}");
}

static void json_rate_system(FILE *f, const struct rate_desc *d, const char *name,
			     const struct round_result *res, unsigned n, const struct summary *s,
			     int last)
{
	unsigned i;

	fprintf(f, "    ");
	json_string(f, name);
	fprintf(f, ": {\"median_%s_s\": %.0f, \"min_%s_s\": %.0f, \"max_%s_s\": %.0f, ", d->unit,
		s->median, d->unit, s->min, d->unit, s->max);
	if (d->has_cpu)
		fprintf(f, "\"median_%s_per_cpu_s\": %.0f, \"sqes_per_enter\": %.2f, ", d->unit,
			s->cpu_median, s->sqes_per_enter);
	fprintf(f, "\"runs\": [");
	for (i = 0; i < n; i++)
		fprintf(f, "%s%.0f", i ? ", " : "", res[i].rate);
	fprintf(f, "]");
	if (d->has_cpu) {
		fprintf(f, ", \"runs_%s_per_cpu_s\": [", d->unit);
		for (i = 0; i < n; i++)
			fprintf(f, "%s%.0f", i ? ", " : "", res[i].cpu_rate);
		fprintf(f, "]");
	}
	fprintf(f, "}%s\n", last ? "" : ",");
}

/* Keep a scenario's JSON object (see the top of the file) for the --json file. */
static int rate_json(struct bench *b, const struct rate_desc *d, const struct round_result *q,
		     const struct round_result *p, const struct summary *qs,
		     const struct summary *ps, double ratio, double paired,
		     const struct ring_setup *setup, const double *share)
{
	const struct config *c = b->c;
	FILE *f = open_memstream(&b->json[d->sc], &b->json_len[d->sc]);
	unsigned i;

	if (!f)
		return -ENOMEM;
	fprintf(f, "{\n  \"scenario\": \"%s\",\n", scenario_names[d->sc]);
	json_machine(f, b);
	fprintf(f, "  \"config\": {\"workers\": %u, \"pinned\": %s, \"rounds\": %u, ",
		b->nworkers, c->no_pin ? "false" : "true", c->rounds);
	if (d->sc == SC_NOP) {
		fprintf(f,
			"\"depth\": %u, \"ops_per_round\": %" PRIu64 ", \"round_seconds\": %.1f, "
			"\"setup_flags\": %u, \"sq_entries\": %u, \"cq_entries\": %u, "
			"\"features\": ",
			c->depth, c->nop_ops, c->nop_ops ? 0.0 : c->nop_ns / NSEC_PER_SEC,
			setup->flags, setup->sq_entries, setup->cq_entries);
		json_string(f, setup->features);
	} else {
		fprintf(f, "\"tasks\": %" PRIu64 ", \"threads\": %u", c->tasks,
			d->sc == SC_OUTSIDE ? b->nworkers : 0);
	}
	fprintf(f, "},\n  \"systems\": {\n");
	json_rate_system(f, d, "qilin", q, c->rounds, qs, c->no_peer);
	if (!c->no_peer)
		json_rate_system(f, d, d->peer, p, c->rounds, ps, 1);
	fprintf(f, "  },\n  \"ratios\": {");
	if (!c->no_peer)
		fprintf(f, "\"qilin/%s\": %.4f, \"qilin/%s_paired\": %.4f", d->peer, ratio, d->peer,
			paired);
	if (!c->no_peer && d->has_cpu)
		fprintf(f, ", \"qilin/%s_cpu\": %.4f", d->peer,
			ratio_of(qs->cpu_median, ps->cpu_median));
	fprintf(f, "},\n  \"target\": %.2f,\n  \"qilin_worker_share_pct\": [", d->target);
	for (i = 0; share && i < b->nworkers; i++)
		fprintf(f, "%s%.1f", i ? ", " : "", share[i]);
	fprintf(f, "],\n");
	json_anomalies(f, b);
	if (ferror(f) | fclose(f))
		return -EIO;
	return 0;
}

static void print_rate_system(const struct rate_desc *d, const char *name,
			      const struct summary *s)
{
	printf("| %s | %.0f | %.0f | %.0f |", name, s->median, s->min, s->max);
	if (d->has_cpu)
		printf(" %.0f | %.1f |", s->cpu_median, s->sqes_per_enter);
	printf("\n");
}

/* The Markdown report of a rate scenario, then its JSON. Returns 0 or -errno. */
static int rate_report(struct bench *b, const struct rate_desc *d, const struct round_result *q,
		       const struct round_result *p, const struct ring_setup *setup)
{
	const struct config *c = b->c;
	unsigned n = c->rounds, i;
	struct summary qs, ps;
	double ratio = 0, paired = 0, *share;
	double *v = malloc(n * sizeof(*v));
	int ret;

	if (!v)
		return -ENOMEM;
	summarize(q, n, v, &qs);
	memset(&ps, 0, sizeof(ps));
	if (!c->no_peer) {
		summarize(p, n, v, &ps);
		for (i = 0; i < n; i++)
			v[i] = ratio_of(q[i].rate, p[i].rate);
		paired = median(v, n);
		ratio = ratio_of(qs.median, ps.median);
	}
	free(v);

	printf("## %s\n\n", d->title);
	printf("| system | median %s/s | min %s/s | max %s/s |", d->unit, d->unit, d->unit);
	if (d->has_cpu)
		printf(" median %s/CPU-s | SQEs/enter |", d->unit);
	printf("\n|---|---:|---:|---:|%s\n", d->has_cpu ? "---:|---:|" : "");
	print_rate_system(d, "qilin", &qs);
	if (!c->no_peer)
		print_rate_system(d, d->peer, &ps);
	printf("\n| round | qilin %s/s |", d->unit);
	if (!c->no_peer)
		printf(" %s %s/s | ratio |", d->peer, d->unit);
	printf("\n|---:|---:|%s\n", c->no_peer ? "" : "---:|---:|");
	for (i = 0; i < n; i++) {
		printf("| %u | %.0f |", i + 1, q[i].rate);
		if (!c->no_peer)
			printf(" %.0f | %.3f |", p[i].rate, ratio_of(q[i].rate, p[i].rate));
		printf("\n");
	}
	if (!c->no_peer) {
		printf("\nRatio qilin/%s (median %s/s): %.3f (target >= %.2f: %s)\n", d->peer,
		       d->unit, ratio, d->target, verdict(ratio >= d->target));
		printf("  median of the rounds' ratios: %.3f", paired);
		if (d->has_cpu)
			printf("; per CPU-second: %.3f", ratio_of(qs.cpu_median, ps.cpu_median));
		printf("\n");
	} else {
		printf("\nNo peer run (--no-peer); target qilin/%s >= %.2f.\n", d->peer, d->target);
	}
	printf("qilin work per worker (tasks and continuations run, warm-up included):");
	share = calloc(b->nworkers, sizeof(*share));
	if (share && !worker_shares(b, share)) {
		for (i = 0; i < b->nworkers; i++)
			printf("%s %.1f%%", i ? " /" : "", share[i]);
	} else {
		free(share);
		share = NULL;
		printf(" unknown");
	}
	if (d->sc == SC_NOP)
		printf("; NOP loops re-spawned to find a free worker: %" PRIu64 "\n", qs.stolen);
	else
		printf("; tasks stolen: %.1f%% of those spawned\n",
		       (double)qs.stolen * 100.0 / (double)(c->tasks * n));
	ret = rate_json(b, d, q, p, &qs, &ps, ratio, paired, setup, share);
	free(share);
	return ret;
}

/* Run the rounds of spawn or outside, alternating qilin and Go. Returns 0 or -errno. */
static int run_task_scenario(struct bench *b, enum scenario sc)
{
	const struct config *c = b->c;
	int outside = sc == SC_OUTSIDE;
	int (*qround)(struct bench *, struct round_result *) =
		outside ? qilin_outside_round : qilin_spawn_round;
	const char *mode = outside ? "outside" : "spawn";
	struct round_result warm, *q, *p;
	char title[LINE_LEN];
	struct rate_desc d;
	unsigned i;
	int ret;

	if (outside)
		snprintf(title, sizeof(title),
			 "outside: %" PRIu64 " tasks spawned by %u plain threads, %u workers, "
			 "%u rounds",
			 c->tasks, b->nworkers, b->nworkers, c->rounds);
	else
		snprintf(title, sizeof(title),
			 "spawn: %" PRIu64 " tasks spawned from inside a task, %u workers, "
			 "%u rounds",
			 c->tasks, b->nworkers, c->rounds);
	d = (struct rate_desc){ .sc = sc, .title = title, .unit = "tasks", .peer = "go",
				.target = outside ? TARGET_OUTSIDE : TARGET_SPAWN };
	q = calloc(c->rounds, sizeof(*q));
	p = calloc(c->rounds, sizeof(*p));
	if (!q || !p) {
		free(q);
		free(p);
		return -ENOMEM;
	}
	ret = qround(b, &warm);
	for (i = 0; !ret && i < c->rounds; i++) {
		if (i % 2 == 0) {
			ret = qround(b, &q[i]);
			if (!ret && !c->no_peer)
				ret = go_rate_round(b, mode, 0, &p[i]) ? -EIO : 0;
		} else {
			if (!c->no_peer)
				ret = go_rate_round(b, mode, 0, &p[i]) ? -EIO : 0;
			if (!ret)
				ret = qround(b, &q[i]);
		}
	}
	if (!ret)
		ret = rate_report(b, &d, q, p, NULL);
	free(q);
	free(p);
	return ret;
}

/* Run the nop rounds, alternating qilin and plain liburing. Returns 0 or -errno. */
static int run_nop_scenario(struct bench *b)
{
	const struct config *c = b->c;
	struct round_result warm, *q, *p;
	struct ring_setup setup;
	char title[LINE_LEN];
	struct rate_desc d;
	unsigned i;
	int ret;

	ret = probe_ring_setup(c, &setup);
	if (ret)
		return ret;
	if (c->nop_ops)
		snprintf(title, sizeof(title),
			 "nop: %u NOPs in flight per worker, %u workers, %u rounds of %" PRIu64
			 " ops",
			 c->depth, b->nworkers, c->rounds, c->nop_ops);
	else
		snprintf(title, sizeof(title),
			 "nop: %u NOPs in flight per worker, %u workers, %u rounds of ~%.1f s",
			 c->depth, b->nworkers, c->rounds, c->nop_ns / NSEC_PER_SEC);
	d = (struct rate_desc){ .sc = SC_NOP, .title = title, .unit = "ops", .peer = "liburing",
				.target = TARGET_NOP, .has_cpu = 1 };
	/* Each worker's state on its own cache lines; static pointer for the hang case. */
	nr.w = aligned_alloc(CACHE_LINE, b->nworkers * sizeof(*nr.w));
	q = calloc(c->rounds, sizeof(*q));
	p = calloc(c->rounds, sizeof(*p));
	if (!nr.w || !q || !p) {
		free(nr.w);
		free(q);
		free(p);
		nr.w = NULL;
		return -ENOMEM;
	}
	printf("Rings of both systems: sq %u, cq %u, setup flags 0x%x, registered ring fd %s; "
	       "features: %s.\n\n",
	       setup.sq_entries, setup.cq_entries, setup.flags, setup.register_fd ? "yes" : "no",
	       setup.features);
	ret = qilin_nop_round(b, 0, NOP_WARMUP_NS, &warm);
	if (!ret && !c->no_peer)
		ret = plain_nop_round(b, &setup, 0, NOP_WARMUP_NS, &warm);
	for (i = 0; !ret && i < c->rounds; i++) {
		if (i % 2 == 0) {
			ret = qilin_nop_round(b, c->nop_ops, c->nop_ns, &q[i]);
			if (!ret && !c->no_peer)
				ret = plain_nop_round(b, &setup, c->nop_ops, c->nop_ns, &p[i]);
		} else {
			if (!c->no_peer)
				ret = plain_nop_round(b, &setup, c->nop_ops, c->nop_ns, &p[i]);
			if (!ret)
				ret = qilin_nop_round(b, c->nop_ops, c->nop_ns, &q[i]);
		}
	}
	if (!ret)
		ret = rate_report(b, &d, q, p, &setup);
	if (ret != -ETIMEDOUT) {
		free(nr.w);
		nr.w = NULL;
	}
	free(q);
	free(p);
	return ret;
}

/* ------------------------------------------------------------------ wake */

/* One wake-up sample in flight. Static for the same reason as cd. */
static struct {
	uint64_t t0;
	_Atomic uint64_t lat;
	int efd;
} ws;

static void wake_task(void *arg)
{
	uint64_t lat = ql_now() - ws.t0;

	/* Relaxed: the eventfd write and read that follow order it for the main thread. */
	atomic_store_explicit(&ws.lat, lat, memory_order_relaxed);
	signal_main(ws.efd);
}

/* Take n samples into lat (sorted on return). Returns 0 or -errno. */
static int qilin_wake_samples(struct bench *b, uint64_t *lat, unsigned n)
{
	unsigned i;
	int ret;

	ws.efd = b->efd;
	for (i = 0; i < n; i++) {
		sleep_ns(b->c->gap_ns);
		ws.t0 = ql_now();
		ret = ql_spawn(b->ex, wake_task, NULL);
		if (ret) {
			fprintf(stderr, "exec_bench: ql_spawn: %s\n", strerror(-ret));
			return ret;
		}
		ret = wait_signal(b, "a wake-up sample");
		if (ret)
			return ret;
		lat[i] = atomic_load_explicit(&ws.lat, memory_order_relaxed);
	}
	qsort(lat, n, sizeof(*lat), cmp_u64);
	return 0;
}

/* Latency figures of one system, in ns. */
struct wake_summary {
	double p50, p99, p999, max, mean;
	double wakeups, parks; /* per sample (qilin) */
};

static void print_wake_row(const char *name, const struct wake_summary *s, int counters)
{
	printf("| %s | %.1f | %.1f | %.1f | %.1f | %.1f |", name, s->p50 / NSEC_PER_USEC,
	       s->p99 / NSEC_PER_USEC, s->p999 / NSEC_PER_USEC, s->max / NSEC_PER_USEC,
	       s->mean / NSEC_PER_USEC);
	if (counters)
		printf(" %.2f | %.2f |\n", s->wakeups, s->parks);
	else
		printf(" - | - |\n");
}

static void json_wake_system(FILE *f, const char *name, const struct wake_summary *s,
			     unsigned n, int counters, int last)
{
	fprintf(f, "    ");
	json_string(f, name);
	fprintf(f,
		": {\"p50_us\": %.2f, \"p99_us\": %.2f, \"p999_us\": %.2f, \"max_us\": %.2f, "
		"\"mean_us\": %.2f, \"samples\": %u",
		s->p50 / NSEC_PER_USEC, s->p99 / NSEC_PER_USEC, s->p999 / NSEC_PER_USEC,
		s->max / NSEC_PER_USEC, s->mean / NSEC_PER_USEC, n);
	if (counters)
		fprintf(f, ", \"wakeups_per_sample\": %.3f, \"parks_per_sample\": %.3f", s->wakeups,
			s->parks);
	fprintf(f, "}%s\n", last ? "" : ",");
}

/* The Go peer's wake-up figures. Returns 0 or -1. */
static int go_wake(const struct bench *b, struct wake_summary *s)
{
	char args[CMD_LEN], line[LINE_LEN];

	snprintf(args, sizeof(args), "-mode wake -n %u -procs %u -gap %" PRIu64 "us",
		 b->c->samples, b->nworkers, (uint64_t)(b->c->gap_ns / NS_PER_US));
	if (run_go(b->c, args, line, sizeof(line)))
		return -1;
	memset(s, 0, sizeof(*s));
	if (json_number(line, "p50_ns", &s->p50) || json_number(line, "p99_ns", &s->p99) ||
	    json_number(line, "p999_ns", &s->p999) || json_number(line, "max_ns", &s->max) ||
	    json_number(line, "mean_ns", &s->mean)) {
		fprintf(stderr, "exec_bench: cannot parse go-spawn output '%s'\n", line);
		return -1;
	}
	return 0;
}

static int run_wake_scenario(struct bench *b)
{
	const struct config *c = b->c;
	unsigned n = c->samples, i;
	struct ql_stats before, after;
	struct wake_summary qs, gs;
	uint64_t *lat, sum = 0;
	FILE *f;
	int ret;

	lat = calloc(n > WAKE_WARMUP_SAMPLES ? n : WAKE_WARMUP_SAMPLES, sizeof(*lat));
	if (!lat)
		return -ENOMEM;
	ret = qilin_wake_samples(b, lat, WAKE_WARMUP_SAMPLES);
	if (!ret) {
		read_stats(b, &before);
		ret = qilin_wake_samples(b, lat, n);
		read_stats(b, &after);
	}
	if (ret) {
		free(lat);
		return ret;
	}
	memset(&qs, 0, sizeof(qs));
	for (i = 0; i < n; i++)
		sum += lat[i];
	qs.p50 = (double)percentile(lat, n, P50);
	qs.p99 = (double)percentile(lat, n, P99);
	qs.p999 = (double)percentile(lat, n, P999);
	qs.max = (double)lat[n - 1];
	qs.mean = (double)sum / n;
	qs.wakeups = (double)(after.total.wakeups - before.total.wakeups) / n;
	qs.parks = (double)(after.total.parks - before.total.parks) / n;
	free(lat);
	if (!c->no_peer && go_wake(b, &gs))
		return -EIO;

	printf("## wake: latency from ql_spawn() by an outside thread to the task running on an "
	       "idle executor, %u workers, %u samples %.1f ms apart\n\n",
	       b->nworkers, n, (double)c->gap_ns / NS_PER_MS);
	printf("| system | p50 us | p99 us | p999 us | max us | mean us | wake-ups/sample | "
	       "parks/sample |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
	print_wake_row("qilin", &qs, 1);
	if (!c->no_peer)
		print_wake_row("go (info)", &gs, 0);
	printf("\nNo target. Wake-ups/sample near 1 means each sample found the workers parked; "
	       "near 0, that they were still spinning after %.1f ms.\n",
	       (double)c->gap_ns / NS_PER_MS);
	if (qs.wakeups < 0.5)
		anomaly(b, "only %.2f worker wake-ups per sample: workers did not park within "
			   "%.1f ms, or wake-ups are not counted",
			qs.wakeups, (double)c->gap_ns / NS_PER_MS);

	f = open_memstream(&b->json[SC_WAKE], &b->json_len[SC_WAKE]);
	if (!f)
		return -ENOMEM;
	fprintf(f, "{\n  \"scenario\": \"wake\",\n");
	json_machine(f, b);
	fprintf(f,
		"  \"config\": {\"workers\": %u, \"pinned\": %s, \"samples\": %u, "
		"\"gap_us\": %" PRIu64 "},\n  \"systems\": {\n",
		b->nworkers, c->no_pin ? "false" : "true", n, (uint64_t)(c->gap_ns / NS_PER_US));
	json_wake_system(f, "qilin", &qs, n, 1, c->no_peer);
	if (!c->no_peer)
		json_wake_system(f, "go", &gs, n, 0, 1);
	fprintf(f, "  },\n  \"ratios\": {");
	if (!c->no_peer)
		fprintf(f, "\"qilin/go_p50\": %.4f, \"qilin/go_p99\": %.4f",
			ratio_of(qs.p50, gs.p50), ratio_of(qs.p99, gs.p99));
	fprintf(f, "},\n");
	json_anomalies(f, b);
	if (ferror(f) | fclose(f))
		return -EIO;
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: exec_bench [-s SCENARIO] [-n TASKS] [-r ROUNDS] [-w WORKERS] [options]\n"
		"  -s SCENARIO    spawn, outside, nop, wake or all (default all)\n"
		"  -n TASKS       tasks per spawn/outside round (default %llu)\n"
		"  -r ROUNDS      measured rounds per system (default %d)\n"
		"  -w WORKERS     executor workers (default 0: one per CPU)\n"
		"  --ring SQ      SQ entries per worker ring (default: the executor's, %d)\n"
		"  --no-pin       do not pin the workers\n"
		"  -d DEPTH       NOPs in flight per worker or thread (default %d)\n"
		"  --nop-ops OPS  NOPs per nop round in all (default: rounds of --nop-ms)\n"
		"  --nop-ms MS    length of a nop round (default %llu)\n"
		"  --samples N    wake-up samples (default %d)\n"
		"  --gap-us US    idle time before each wake-up sample (default %llu)\n"
		"  --go BIN       the go-spawn peer (default %s; bench/go/build.sh builds it)\n"
		"  --no-peer      run qilin only\n"
		"  --timeout S    give up on a round after S seconds (default %d)\n"
		"  --json FILE    also write the results as JSON\n",
		DEFAULT_TASKS, DEFAULT_ROUNDS, EXEC_DEFAULT_RING, DEFAULT_DEPTH, DEFAULT_NOP_MS,
		DEFAULT_SAMPLES, DEFAULT_GAP_US, DEFAULT_GO_BIN, DEFAULT_TIMEOUT_S);
}

/* Long options without a short form. */
enum { OPT_RING = 256, OPT_NO_PIN, OPT_NOP_OPS, OPT_NOP_MS, OPT_SAMPLES, OPT_GAP_US, OPT_GO,
       OPT_NO_PEER, OPT_TIMEOUT, OPT_JSON };

static int parse_scenarios(const char *s, unsigned *out)
{
	unsigned i;

	if (!strcmp(s, "all")) {
		*out = (1u << SC_COUNT) - 1;
		return 0;
	}
	for (i = 0; i < SC_COUNT; i++) {
		if (!strcmp(s, scenario_names[i])) {
			*out = 1u << i;
			return 0;
		}
	}
	fprintf(stderr, "exec_bench: unknown scenario '%s' (spawn, outside, nop, wake, all)\n",
		s);
	return -1;
}

static int parse_args(int argc, char **argv, struct config *c)
{
	static const struct option longopts[] = {
		{ "ring", required_argument, NULL, OPT_RING },
		{ "no-pin", no_argument, NULL, OPT_NO_PIN },
		{ "nop-ops", required_argument, NULL, OPT_NOP_OPS },
		{ "nop-ms", required_argument, NULL, OPT_NOP_MS },
		{ "samples", required_argument, NULL, OPT_SAMPLES },
		{ "gap-us", required_argument, NULL, OPT_GAP_US },
		{ "go", required_argument, NULL, OPT_GO },
		{ "no-peer", no_argument, NULL, OPT_NO_PEER },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "json", required_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int opt;

	memset(c, 0, sizeof(*c));
	c->scenarios = (1u << SC_COUNT) - 1;
	c->tasks = DEFAULT_TASKS;
	c->rounds = DEFAULT_ROUNDS;
	c->depth = DEFAULT_DEPTH;
	c->nop_ns = DEFAULT_NOP_MS * NS_PER_MS;
	c->samples = DEFAULT_SAMPLES;
	c->gap_ns = DEFAULT_GAP_US * NS_PER_US;
	c->timeout_s = DEFAULT_TIMEOUT_S;
	c->go = DEFAULT_GO_BIN;
	while ((opt = getopt_long(argc, argv, "s:n:r:w:d:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (parse_scenarios(optarg, &c->scenarios))
				return -1;
			break;
		case 'n':
			if (parse_num("-n", optarg, 1, UINT64_MAX / 2, &c->tasks))
				return -1;
			break;
		case 'r':
			if (parse_num("-r", optarg, 1, MAX_ROUNDS, &v))
				return -1;
			c->rounds = (unsigned)v;
			break;
		case 'w':
			if (parse_num("-w", optarg, 0, MAX_WORKERS, &v))
				return -1;
			c->workers = (unsigned)v;
			break;
		case 'd':
			if (parse_num("-d", optarg, 1, MAX_DEPTH, &v))
				return -1;
			c->depth = (unsigned)v;
			break;
		case OPT_RING:
			if (parse_num("--ring", optarg, 0, MAX_DEPTH, &v))
				return -1;
			c->ring_size = (unsigned)v;
			break;
		case OPT_NO_PIN:
			c->no_pin = 1;
			break;
		case OPT_NOP_OPS:
			if (parse_num("--nop-ops", optarg, 1, UINT64_MAX / 2, &c->nop_ops))
				return -1;
			break;
		case OPT_NOP_MS:
			if (parse_num("--nop-ms", optarg, 1, UINT64_MAX / NS_PER_MS, &v))
				return -1;
			c->nop_ns = v * NS_PER_MS;
			break;
		case OPT_SAMPLES:
			if (parse_num("--samples", optarg, 1, MAX_SAMPLES, &v))
				return -1;
			c->samples = (unsigned)v;
			break;
		case OPT_GAP_US:
			if (parse_num("--gap-us", optarg, 0, UINT64_MAX / NS_PER_US, &v))
				return -1;
			c->gap_ns = v * NS_PER_US;
			break;
		case OPT_GO:
			c->go = optarg;
			break;
		case OPT_NO_PEER:
			c->no_peer = 1;
			break;
		case OPT_TIMEOUT:
			if (parse_num("--timeout", optarg, 1, MAX_TIMEOUT_S, &v))
				return -1;
			c->timeout_s = (unsigned)v;
			break;
		case OPT_JSON:
			c->json = optarg;
			break;
		default:
			return usage_error_or_help(opt, usage);
		}
	}
	return no_operands(argc, usage);
}

/* The CPUs of the calling thread's affinity mask, in order. Returns 0 or -errno. */
static int affinity_cpus(struct bench *b)
{
	cpu_set_t set;
	int cpu;

	if (sched_getaffinity(0, sizeof(set), &set))
		return -errno;
	b->cpus = calloc((size_t)CPU_COUNT(&set), sizeof(*b->cpus));
	if (!b->cpus)
		return -ENOMEM;
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &set))
			b->cpus[b->ncpus++] = cpu;
	return b->ncpus ? 0 : -EINVAL;
}

/* Write every scenario's JSON object: alone, or as an array when there are several. */
static int write_json(const struct bench *b, const char *path)
{
	return write_json_objects("exec_bench", b->json, b->json_len, SC_COUNT, path);
}

/* Run one scenario on a fresh executor. Returns 0 or -errno (-ETIMEDOUT after a hang). */
static int run_scenario(struct bench *b, enum scenario sc)
{
	unsigned i;
	int ret;

	b->nanomalies = 0;
	ret = exec_open(b);
	if (ret) {
		ql_exec_destroy(b->ex);
		b->ex = NULL;
		return ret;
	}
	switch (sc) {
	case SC_SPAWN:
	case SC_OUTSIDE:
		ret = run_task_scenario(b, sc);
		break;
	case SC_NOP:
		ret = run_nop_scenario(b);
		break;
	default:
		ret = run_wake_scenario(b);
		break;
	}
	exec_close(b, ret == -ETIMEDOUT);
	if (b->nanomalies) {
		printf("\nAnomalies in %s:\n", scenario_names[sc]);
		for (i = 0; i < b->nanomalies; i++)
			printf("- %s\n", b->anomalies[i]);
	}
	printf("\n");
	fflush(stdout);
	return ret;
}

int main(int argc, char **argv)
{
	struct config c;
	struct bench b;
	struct utsname uts;
	unsigned i;
	int ret = 0, status = 1;

	if (parse_args(argc, argv, &c))
		return 2;
	memset(&b, 0, sizeof(b));
	b.c = &c;
	b.efd = -1;
	if (uname(&uts)) {
		perror("exec_bench: uname");
		return 1;
	}
	b.kernel = uts.release;
	b.cores = sysconf(_SC_NPROCESSORS_ONLN);
	if (affinity_cpus(&b)) {
		fprintf(stderr, "exec_bench: cannot read the CPU affinity mask\n");
		return 1;
	}
	if (!c.no_peer && access(c.go, X_OK)) {
		fprintf(stderr,
			"exec_bench: no Go peer at %s (%s): build it with bench/go/build.sh "
			"build/bench, name it with --go, or run qilin alone with --no-peer\n",
			c.go, strerror(errno));
		goto out;
	}
	b.efd = eventfd(0, EFD_CLOEXEC);
	if (b.efd < 0) {
		perror("exec_bench: eventfd");
		goto out;
	}
	printf("# qilin %s executor benchmarks\n\nMachine: %ld cores, kernel %s; %u CPUs in the "
	       "affinity mask. Executor: a fresh one per scenario, ",
	       ql_version(), b.cores, b.kernel, b.ncpus);
	if (c.workers)
		printf("%u workers", c.workers);
	else
		printf("one worker per CPU");
	printf(", %s, ring size %u.\n\n", c.no_pin ? "not pinned" : "pinned",
	       c.ring_size ? c.ring_size : EXEC_DEFAULT_RING);
	for (i = 0; i < SC_COUNT && !ret; i++)
		if (c.scenarios & (1u << i))
			ret = run_scenario(&b, (enum scenario)i);
	if (ret == -ETIMEDOUT) {
		fprintf(stderr, "exec_bench: stopped after a hang\n");
		/* Workers may still touch the rounds' state: neither free it nor exit cleanly. */
		fflush(NULL);
		_exit(1);
	}
	if (ret)
		goto out;
	if (c.json && write_json(&b, c.json))
		goto out;
	status = 0;
out:
	for (i = 0; i < SC_COUNT; i++)
		free(b.json[i]);
	if (b.efd >= 0)
		close(b.efd);
	free(b.cpus);
	return status;
}
