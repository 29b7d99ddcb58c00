/* SPDX-License-Identifier: MIT */
/*
 * bench/task_bench.c - stackful tasks, defer chains and pending operations, against Go.
 *
 * What it measures. Five scenarios; each runs qilin and, where there is one, its Go peer
 * (build/bench/go-spawn, bench/go/spawn/main.go) in the same run:
 *
 *   yield    Two stackful tasks on an executor with ONE worker (ql_exec_create, workers = 1)
 *            each call ql_yield() Y times (1M by default), so that every yield switches to
 *            the other task. A stackless starter takes t0 = ql_now() and ql_go()s both; the
 *            task that finishes last reads the clock. ns per switch = span / (2 Y).
 *            Peer: go-spawn -mode pingpong, two goroutines bouncing a token over unbuffered
 *            channels with GOMAXPROCS=1, ns per hand-off (Y round trips, 2Y hand-offs); and,
 *            for information, -mode yield (two goroutines calling runtime.Gosched()).
 *            Target: at most 20 ns per switch.
 *   spawn    Stackful spawn + join: a stackful driver task on an executor with the default
 *            worker count (one per CPU) runs N tasks (1M) in batches of B (1000): it
 *            ql_go()s B tasks with handles, then ql_join()s and ql_task_release()s each
 *            (every status must be 0). The tasks do nothing. tasks/s over the driver's
 *            span. Batches bound the stacks alive at once (each costs two memory mappings).
 *            Peer: go-spawn -mode spawn -batch B (B goroutines doing wg.Done(), wg.Wait(),
 *            repeated), GOMAXPROCS = workers. Target: qilin >= 5x Go.
 *   park     Memory of a parked stackful task with the default stack (QL_STACK_DEFAULT):
 *            for each size N (100,000 and 1,000,000), a fresh process (this program, run
 *            again with --child park) creates an executor (default workers), runs one task
 *            to warm up, starts a gate task blocked in ql_recv() on a socketpair, waits
 *            50 ms, reads VmRSS and VmPTE from /proc/self/status, then a driver task
 *            ql_go()s N detached tasks that each ql_join() the gate (they park: no I/O of
 *            their own, like a goroutine blocked on a channel). Once all N have started
 *            and the run queues are empty it reads the figures again: bytes per task =
 *            (after - before) / N. One byte written to the socketpair ends the gate, which
 *            wakes all N; the process checks that every join returned 0, joins the gate,
 *            shuts down and prints its figures. With --park-mode sleep the tasks block in
 *            ql_sleep(1 h) instead, in a root scope that ql_scope_cancel() then cancels
 *            (each sleep is then an io_uring timeout in flight, so the ring must be big
 *            enough: see --ring; with more than one worker the library has lost some of
 *            those cancellations, see docs/benchmarks.md, hence join by default). 1M tasks need about 2M mappings: as root the benchmark
 *            raises vm.max_map_count for the run and restores it afterwards (on SIGINT
 *            and SIGTERM too); otherwise it skips the sizes that do not fit. A size is
 *            also skipped when MemAvailable is short, and a child stops itself if its RSS
 *            passes 70% of MemAvailable. Peer: go-spawn -mode park (N goroutines blocked
 *            on one channel receive, fresh process, after a GC). Target: <= 5 KiB a task.
 *   pending  Memory of a pending stackless operation: a fresh process creates an executor
 *            (default workers) whose rings are big enough to hold N operations in flight
 *            (the ring layer bounds in-flight operations by the CQ size, 65536 at most per
 *            ring), warms each ring with a chain of NOPs that walks every SQ and CQ slot,
 *            reads VmRSS, then has one stackless task per worker issue its share of N
 *            (100,000) ql_timeout_cb() with a 1 h timeout, waits until the executor counts
 *            them in flight, reads VmRSS again: bytes per operation. ql_exec_shutdown()
 *            then cancels them; every continuation must run, with -ECANCELED. No peer (the
 *            kernel's side of each operation is not in RSS). Target: <= 256 bytes.
 *   defer    ql_defer plus its run: on a one-worker executor, a chain of M (200,000) tasks
 *            (each spawns the next) pushes K (32) deferred calls each; the chain runs when
 *            the task ends. The same chain with one deferred call per task is timed too,
 *            and ns per entry = (time(K) - time(1)) / (M (K - 1)), which leaves out the
 *            task's own cost. Once with stackless tasks (ql_spawn; the target applies to
 *            these) and once with stackful ones (ql_go). Every deferred call must run once.
 *            Peer, for scale: go-spawn -mode defer: a function deferring K calls in a loop
 *            (Go's dynamic defer records, the same shape), the same difference method; and
 *            a function with one open-coded defer called M K times. Target: <= 10 ns.
 *
 * Fairness. Rounds alternate which system goes first (qilin first in even rounds); the
 * figures are medians over the rounds. In yield, spawn and defer qilin runs one discarded
 * warm-up round on the scenario's executor, and go-spawn warms up inside its process (one
 * untimed repetition). The memory scenarios have no warm-up on either side beyond the
 * first task: pools that a warm-up filled would hide the very cost being measured, so each
 * round, qilin's and Go's, is a fresh process. While one system runs the other is idle.
 *
 * Output. A Markdown table per scenario on stdout (medians, minimum and maximum over the
 * rounds, each round's pair, the ratio and the target), anything that looked wrong, and
 * with --json FILE one JSON object per scenario (an array of them for -s all):
 *   {"scenario":"task_yield","machine":{..},"config":{..},
 *    "systems":{"qilin":{"median_ns_per_switch":..,"runs":[..]},"go":{..}},
 *    "ratios":{"qilin/go":..},"target":{"max_ns_per_switch":20,"met":true},"anomalies":[..]}
 * Every ratio is an advantage: above 1 means qilin is better. For rates it is qilin's rate
 * over the peer's; for times and bytes, the peer's figure over qilin's. Scenarios without
 * a peer give the target over qilin's figure ("target/qilin").
 *
 * Run it:
 *   make lib benches go-peers && build/bench/task_bench
 *   build/bench/task_bench -s park --park 100000 --json park.json
 *   build/bench/task_bench --quick           (fewer rounds and smaller counts, no 1M park)
 * Options: -s yield|spawn|park|pending|defer|all (all), -r ROUNDS (5), -w WORKERS (0: CPUs;
 * yield and defer always use 1), --no-pin, --yields Y, --tasks N, --batch B, --park LIST
 * (sizes, comma-separated), --park-rounds R (3), --big-rounds R (1, for sizes above
 * 200,000), --park-mode join|sleep, --pending N, --defer-tasks M, --defers K, --ring SQ,
 * --go BIN, --no-peer, --timeout S (60), --json FILE, --quick.
 *
 * Exit status: 0 when every round ran (targets met or not), 1 on an error or a hang, 2 on
 * a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "qilin.h"

#define BENCH_PROG "task_bench"
#include "bench_util.h"

/* Defaults for the command-line options (see the top of the file). */
#define DEFAULT_ROUNDS 5
#define DEFAULT_YIELDS 1000000ull
#define DEFAULT_TASKS 1000000ull
#define DEFAULT_BATCH 1000ull
#define DEFAULT_PARK_ROUNDS 3
#define DEFAULT_BIG_ROUNDS 1
#define DEFAULT_PENDING 100000ull
#define DEFAULT_DEFER_TASKS 200000ull
#define DEFAULT_DEFERS 32ull
#define DEFAULT_TIMEOUT_S 60
#define DEFAULT_GO_BIN "build/bench/go-spawn"
static const uint64_t default_park_sizes[] = { 100000, 1000000 };

/* --quick: fewer rounds, a quarter of the counts, no 1M park. */
#define QUICK_ROUNDS 3
#define QUICK_DIV 4

/* Park sizes above this run --big-rounds rounds (a 1M round takes seconds per system). */
#define BIG_PARK 200000ull

/* Upper bounds the options are checked against. */
#define MAX_ROUNDS 1000
#define MAX_WORKERS 4096
#define MAX_PARK_SIZES 8
#define MAX_PARK 10000000ull
#define MAX_BATCH 1000000ull
#define MAX_DEFERS 100000ull
#define MAX_TIMEOUT_S 86400
#define MAX_RING 16384

/* The targets. */
#define TARGET_SWITCH_NS 20.0
#define TARGET_SPAWN 5.0
#define TARGET_PARK_BYTES 5120.0
#define TARGET_PENDING_BYTES 256.0
#define TARGET_DEFER_NS 10.0

/* park: how long parked tasks sleep in --park-mode sleep (they are cancelled long before). */
#define PARK_SLEEP_NS (3600ull * NS_PER_S)
/* park: the driver yields after this many spawns so that the new tasks run and park. */
#define PARK_CHUNK 128
/* pending: each operation's timeout. */
#define PENDING_TIMEOUT_NS (3600ull * NS_PER_S)
/* pending: NOPs in flight per worker while warming the rings. */
#define WARM_DEPTH 64
/* In-flight operations the executor may keep for itself per ring (wake-ups, timers). */
#define RING_MARGIN 256
/* The executor's default SQ size and the ring layer's CQ/SQ ratio (qilin.h, uring/). */
#define EXEC_DEFAULT_RING 256
#define CQ_PER_SQ 4
/* Times a per-worker starter task re-spawns itself to find a worker without one. */
#define MAX_RESPAWNS 10000

/* Settling pauses: before a memory reading, and before an executor's final check. */
#define SETTLE_NS (50 * NS_PER_MS)
#define POLL_NS (2 * NS_PER_MS)
/* How long ql_exec_shutdown() may take at the end of a scenario. */
#define SHUTDOWN_TIMEOUT_NS (10 * NS_PER_S)
/* pending: the shutdown that cancels the pending operations waits this long first. */
#define PENDING_SHUTDOWN_NS NS_PER_MS

/* vm.max_map_count: mappings per stack, and head room for everything else. */
#define MAPS_PER_TASK 2
#define MAP_COUNT_SLACK 65536ull
#define MAX_MAP_COUNT_PATH "/proc/sys/vm/max_map_count"
/* park: memory a size needs before it is tried (a generous guess per task), and the RSS
 * cap of a child, as a share of MemAvailable. */
#define PARK_NEED_BYTES (16ull * 1024)
#define RSS_CAP_PCT 70

#define NS_PER_MS 1000000ull
#define KIB 1024.0

#define LINE_LEN 1024
#define CMD_LEN 4096
#define ANOMALY_LEN 256
#define MAX_ANOMALIES 32
#define CACHE_LINE 64

enum scenario { SC_YIELD, SC_SPAWN, SC_PARK, SC_PENDING, SC_DEFER, SC_COUNT };

static const char *const scenario_names[SC_COUNT] = { "yield", "spawn", "park", "pending",
						      "defer" };

enum park_mode { PARK_JOIN, PARK_SLEEP };

struct config {
	unsigned scenarios; /* bit per enum scenario */
	unsigned rounds;
	unsigned workers; /* -w, 0: CPUs (spawn, park, pending) */
	int no_pin;
	uint64_t yields; /* per task */
	uint64_t tasks;	 /* spawn: tasks per round */
	uint64_t batch;
	uint64_t park[MAX_PARK_SIZES];
	unsigned npark;
	unsigned park_rounds, big_rounds;
	enum park_mode park_mode;
	uint64_t pending;
	uint64_t defer_tasks, defers;
	unsigned ring_size; /* --ring, 0: chosen per scenario */
	unsigned timeout_s;
	const char *go;
	int no_peer;
	const char *json;
	/* --child park|pending: this process is one memory round (see child_main()). */
	const char *child;
	uint64_t child_n;
	uint64_t rss_cap_kb;
};

/* State shared by every scenario. */
struct bench {
	const struct config *c;
	struct ql_exec *ex; /* the current scenario's executor, if it has one */
	unsigned nworkers;
	int efd; /* eventfd through which tasks signal the main thread */
	long cores;
	unsigned ncpus; /* CPUs in the affinity mask */
	const char *kernel;
	char self[LINE_LEN]; /* this program, for the memory rounds' child processes */
	char anomalies[MAX_ANOMALIES][ANOMALY_LEN];
	unsigned nanomalies;
	char *json[SC_COUNT];
	size_t json_len[SC_COUNT];
};

/* ------------------------------------------------------------------ small helpers */

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

static int read_stats(struct ql_exec *ex, struct ql_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->sz = sizeof(*st);
	return ql_exec_stats(ex, st);
}

/*
 * wait_efd() (bench_util.h), then on a hang the executor's counters. Returns what
 * wait_efd() returned.
 */
static int wait_exec(int efd, struct ql_exec *ex, unsigned timeout_s, const char *what)
{
	struct ql_stats st;
	int ret = wait_efd(efd, timeout_s, what);

	if (ret == -ETIMEDOUT && ex && !read_stats(ex, &st))
		print_counters("counters at the hang", &st);
	return ret;
}

static int wait_signal(struct bench *b, const char *what)
{
	return wait_exec(b->efd, b->ex, b->c->timeout_s, what);
}

/* Median, minimum and maximum of v[0..n) without reordering v. */
struct stat3 {
	double median, min, max;
};

static struct stat3 stat3_of(const double *v, unsigned n)
{
	double *w = malloc(n * sizeof(*w));
	struct stat3 s = { 0, 0, 0 };

	if (!w || !n) {
		free(w);
		return s;
	}
	memcpy(w, v, n * sizeof(*w));
	s.median = median(w, n);
	s.min = w[0];
	s.max = w[n - 1];
	free(w);
	return s;
}

/* The median of the rounds' own ratios a[i] / b[i] (b[i] / a[i] when inverse). */
static double paired_ratio(const double *a, const double *b, unsigned n, int inverse)
{
	double *w = malloc(n * sizeof(*w)), m;
	unsigned i;

	if (!w || !n) {
		free(w);
		return 0;
	}
	for (i = 0; i < n; i++)
		w[i] = inverse ? ratio_of(b[i], a[i]) : ratio_of(a[i], b[i]);
	m = median(w, n);
	free(w);
	return m;
}

/* ------------------------------------------------------------------ JSON */

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

/* One system's figure in the JSON: "name": {"median_KEY": .., "min_KEY", "max_KEY", "runs"}. */
static void json_series(FILE *f, const char *name, const char *key, const double *v, unsigned n,
			const char *extra, int last)
{
	struct stat3 s = stat3_of(v, n);
	unsigned i;

	fprintf(f, "    ");
	json_string(f, name);
	fprintf(f, ": {\"median_%s\": %.3f, \"min_%s\": %.3f, \"max_%s\": %.3f, \"runs\": [", key,
		s.median, key, s.min, key, s.max);
	for (i = 0; i < n; i++)
		fprintf(f, "%s%.3f", i ? ", " : "", v[i]);
	fprintf(f, "]%s}%s\n", extra ? extra : "", last ? "" : ",");
}

/* Open a scenario's JSON object; the caller writes "config" on. */
static FILE *json_open(struct bench *b, enum scenario sc)
{
	FILE *f = open_memstream(&b->json[sc], &b->json_len[sc]);

	if (!f)
		return NULL;
	fprintf(f, "{\n  \"scenario\": \"task_%s\",\n", scenario_names[sc]);
	json_machine(f, b);
	return f;
}

static int json_close(struct bench *b, FILE *f)
{
	json_anomalies(f, b);
	return ferror(f) | fclose(f) ? -EIO : 0;
}

/* ------------------------------------------------------------------ executor lifetime */

/* Create the scenario's executor with this many workers (0: CPUs). Returns 0 or -errno. */
static int exec_open(struct bench *b, unsigned workers, unsigned ring_size)
{
	struct ql_exec_opts opts;
	struct ql_stats st;
	char why[LINE_LEN];
	int ret;

	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	opts.workers = workers;
	opts.ring_size = ring_size;
	opts.flags = b->c->no_pin ? QL_EXEC_NO_PIN : 0;
	ret = ql_exec_create(&opts, &b->ex);
	if (ret) {
		ql_uring_diagnose(why, sizeof(why));
		fprintf(stderr, "task_bench: ql_exec_create: %s (%s)\n", strerror(-ret), why);
		b->ex = NULL;
		return ret;
	}
	ret = read_stats(b->ex, &st);
	if (ret || !st.nworkers) {
		fprintf(stderr, "task_bench: ql_exec_stats: %s\n",
			ret ? strerror(-ret) : "0 workers");
		return ret ? ret : -EINVAL;
	}
	b->nworkers = st.nworkers;
	return 0;
}

/*
 * Check an executor whose work is all done, shut it down and free it. After a hang it is
 * neither shut down nor freed: its workers may be stuck.
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
	sleep_ns(SETTLE_NS);
	if (!read_stats(b->ex, &st)) {
		if (st.total.runq_depth || st.global_depth)
			anomaly(b,
				"%" PRIu64 " tasks still queued (%" PRIu64
				" global) after every round",
				st.total.runq_depth, st.global_depth);
		if (st.total.inflight)
			anomaly(b, "%" PRIu64 " I/O operations still in flight after every round",
				st.total.inflight);
	}
	t0 = now_ns();
	ret = ql_exec_shutdown(b->ex, SHUTDOWN_TIMEOUT_NS);
	if (ret)
		anomaly(b, "ql_exec_shutdown: %s", strerror(-ret));
	if (now_ns() - t0 > NS_PER_S)
		anomaly(b, "ql_exec_shutdown of an idle executor took %.2f s",
			(double)(now_ns() - t0) / NSEC_PER_SEC);
	if (!read_stats(b->ex, &st) && st.total.dropped)
		anomaly(b, "%" PRIu64 " tasks dropped at shutdown", st.total.dropped);
	ql_exec_destroy(b->ex);
	b->ex = NULL;
}

/* Run the Go peer with args and keep its JSON line. Returns 0 or -1. */
static int run_go(const struct bench *b, const char *args, char *line, size_t len)
{
	return run_peer(b->c->go, args, line, len);
}

/* Parse the named numbers of a peer's JSON line; NULL-terminated key/out pairs. */
static int parse_line(const char *who, const char *line, ...)
{
	const char *key;
	va_list ap;
	int ret = 0;

	va_start(ap, line);
	while ((key = va_arg(ap, const char *))) {
		double *out = va_arg(ap, double *);

		if (json_number(line, key, out)) {
			fprintf(stderr, "task_bench: no \"%s\" in %s's output '%s'\n", key, who,
				line);
			ret = -1;
		}
	}
	va_end(ap);
	return ret;
}

/* ------------------------------------------------------------------ yield */

/*
 * One yield round. Static, not on the stack: after a hang the main thread returns while
 * tasks may still run, and they must not find freed memory. Both tasks run on the one
 * worker, so only the counter the main thread also reads is atomic.
 */
static struct {
	struct ql_exec *ex;
	uint64_t yields;
	uint64_t t0, t_end;
	_Atomic unsigned left;
	_Atomic int err;
	int efd;
} yr;

static void yield_task(void *arg)
{
	uint64_t i;
	int ret;

	for (i = 0; i < yr.yields; i++) {
		ret = ql_yield();
		if (__builtin_expect(ret != 0, 0)) {
			set_err(&yr.err, ret);
			break;
		}
	}
	/* Relaxed: the eventfd write and read order t_end for the main thread. */
	if (atomic_fetch_sub_explicit(&yr.left, 1, memory_order_relaxed) == 1) {
		yr.t_end = ql_now();
		signal_main(yr.efd);
	}
}

/* The stackless starter: both yielders are queued before either runs. */
static void yield_starter(void *arg)
{
	int i, ret;

	yr.t0 = ql_now();
	for (i = 0; i < 2; i++) {
		ret = ql_go(yr.ex, yield_task, NULL, NULL, NULL);
		if (ret) {
			set_err(&yr.err, ret);
			if (atomic_fetch_sub_explicit(&yr.left, 1, memory_order_relaxed) == 1) {
				yr.t_end = ql_now();
				signal_main(yr.efd);
			}
		}
	}
}

/* One qilin yield round: ns per switch into *ns. Returns 0 or -errno. */
static int qilin_yield_round(struct bench *b, double *ns)
{
	int ret, err;

	yr.ex = b->ex;
	yr.yields = b->c->yields;
	yr.efd = b->efd;
	yr.t0 = yr.t_end = 0;
	atomic_store_explicit(&yr.left, 2, memory_order_relaxed);
	atomic_store_explicit(&yr.err, 0, memory_order_relaxed);
	ret = ql_spawn(b->ex, yield_starter, NULL);
	if (ret) {
		fprintf(stderr, "task_bench: ql_spawn: %s\n", strerror(-ret));
		return ret;
	}
	ret = wait_signal(b, "the yield round");
	if (ret)
		return ret;
	err = atomic_load_explicit(&yr.err, memory_order_relaxed);
	if (err) {
		fprintf(stderr, "task_bench: yield round: ql_go or ql_yield failed: %s\n",
			strerror(-err));
		return err;
	}
	*ns = (double)(yr.t_end - yr.t0) / (double)(2 * yr.yields);
	return 0;
}

/* One Go round: ns per hand-off (pingpong) and per Gosched switch (info). Returns 0 or -1. */
static int go_yield_round(struct bench *b, double *handoff, double *gosched)
{
	char args[CMD_LEN], line[LINE_LEN];

	snprintf(args, sizeof(args), "-mode pingpong -n %" PRIu64 " -procs 1", b->c->yields);
	if (run_go(b, args, line, sizeof(line)) ||
	    parse_line("go-spawn", line, "ns_per_switch", handoff, NULL))
		return -1;
	snprintf(args, sizeof(args), "-mode yield -n %" PRIu64 " -procs 1", b->c->yields);
	if (run_go(b, args, line, sizeof(line)) ||
	    parse_line("go-spawn", line, "ns_per_switch", gosched, NULL))
		return -1;
	return 0;
}

static int run_yield(struct bench *b)
{
	const struct config *c = b->c;
	unsigned n = c->rounds, i;
	double *q = calloc(n, sizeof(double)), *g = calloc(n, sizeof(double));
	double *y = calloc(n, sizeof(double)), warm;
	struct stat3 qs, gs, ys;
	double ratio = 0, paired = 0;
	FILE *f;
	int ret;

	if (!q || !g || !y) {
		ret = -ENOMEM;
		goto out;
	}
	ret = exec_open(b, 1, c->ring_size);
	if (ret)
		goto out;
	ret = qilin_yield_round(b, &warm);
	for (i = 0; !ret && i < n; i++) {
		if (i % 2 == 0) {
			ret = qilin_yield_round(b, &q[i]);
			if (!ret && !c->no_peer)
				ret = go_yield_round(b, &g[i], &y[i]) ? -EIO : 0;
		} else {
			if (!c->no_peer)
				ret = go_yield_round(b, &g[i], &y[i]) ? -EIO : 0;
			if (!ret)
				ret = qilin_yield_round(b, &q[i]);
		}
	}
	if (ret)
		goto out;
	qs = stat3_of(q, n);
	gs = stat3_of(g, n);
	ys = stat3_of(y, n);
	if (!c->no_peer) {
		ratio = ratio_of(gs.median, qs.median);
		paired = paired_ratio(q, g, n, 1);
	}

	printf("## yield: two stackful tasks on one worker alternating with ql_yield(), "
	       "%" PRIu64 " yields each, %u rounds\n\n",
	       c->yields, n);
	printf("| system | median ns/switch | min | max |\n|---|---:|---:|---:|\n");
	printf("| qilin ql_yield | %.1f | %.1f | %.1f |\n", qs.median, qs.min, qs.max);
	if (!c->no_peer) {
		printf("| go channel ping-pong, GOMAXPROCS=1 | %.1f | %.1f | %.1f |\n", gs.median,
		       gs.min, gs.max);
		printf("| go runtime.Gosched, GOMAXPROCS=1 (info) | %.1f | %.1f | %.1f |\n",
		       ys.median, ys.min, ys.max);
	}
	if (!c->no_peer) {
		printf("\n| round | qilin ns | go hand-off ns | go/qilin |\n|---:|---:|---:|---:|\n");
		for (i = 0; i < n; i++)
			printf("| %u | %.1f | %.1f | %.2f |\n", i + 1, q[i], g[i],
			       ratio_of(g[i], q[i]));
	}
	printf("\nqilin: %.1f ns per switch (target <= %.0f: %s)", qs.median, TARGET_SWITCH_NS,
	       verdict(qs.median <= TARGET_SWITCH_NS));
	if (!c->no_peer)
		printf("; Go hand-off / qilin switch: %.2fx (median of rounds' ratios %.2fx)",
		       ratio, paired);
	printf("\n");

	f = json_open(b, SC_YIELD);
	if (!f) {
		ret = -ENOMEM;
		goto out;
	}
	fprintf(f,
		"  \"config\": {\"workers\": 1, \"pinned\": %s, \"rounds\": %u, "
		"\"yields_per_task\": %" PRIu64 ", \"go_procs\": 1},\n  \"systems\": {\n",
		c->no_pin ? "false" : "true", n, c->yields);
	json_series(f, "qilin", "ns_per_switch", q, n, NULL, c->no_peer);
	if (!c->no_peer) {
		json_series(f, "go", "ns_per_switch", g, n, ", \"what\": \"channel ping-pong\"", 0);
		json_series(f, "go_gosched", "ns_per_switch", y, n, NULL, 1);
	}
	fprintf(f, "  },\n  \"ratios\": {");
	if (!c->no_peer)
		fprintf(f,
			"\"qilin/go\": %.4f, \"qilin/go_paired\": %.4f, \"qilin/go_gosched\": %.4f",
			ratio, paired, ratio_of(ys.median, qs.median));
	fprintf(f, "},\n  \"target\": {\"max_ns_per_switch\": %.0f, \"met\": %s},\n",
		TARGET_SWITCH_NS, qs.median <= TARGET_SWITCH_NS ? "true" : "false");
	ret = json_close(b, f);
out:
	exec_close(b, ret == -ETIMEDOUT);
	free(q);
	free(g);
	free(y);
	return ret;
}

/* ------------------------------------------------------------------ spawn + join */

/* One spawn+join round; static for the same reason as yr. Only the driver touches it. */
static struct {
	struct ql_exec *ex;
	struct ql_task **h; /* batch handles */
	uint64_t tasks, batch;
	uint64_t t0, t_end;
	_Atomic int err;
	int efd;
	int bad_status; /* first non-zero status of a joined task */
} sr;

static void empty_task(void *arg)
{
}

/* The stackful driver: N tasks, B at a time, each joined and released. */
static void spawn_driver(void *arg)
{
	uint64_t done = 0, k, i;
	int ret, st;

	sr.t0 = ql_now();
	while (done < sr.tasks) {
		k = sr.tasks - done < sr.batch ? sr.tasks - done : sr.batch;
		for (i = 0; i < k; i++) {
			ret = ql_go(sr.ex, empty_task, NULL, NULL, &sr.h[i]);
			if (__builtin_expect(ret != 0, 0)) {
				set_err(&sr.err, ret);
				k = i;
				break;
			}
		}
		for (i = 0; i < k; i++) {
			st = 0;
			ret = ql_join(sr.h[i], &st);
			if (__builtin_expect(ret != 0 || st != 0, 0)) {
				set_err(&sr.err, ret ? ret : -EPROTO);
				if (!sr.bad_status)
					sr.bad_status = st;
			}
			ql_task_release(sr.h[i]);
		}
		if (atomic_load_explicit(&sr.err, memory_order_relaxed))
			break;
		done += k;
	}
	sr.t_end = ql_now();
	signal_main(sr.efd);
}

/* One qilin spawn+join round: tasks/s into *rate. Returns 0 or -errno. */
static int qilin_spawn_round(struct bench *b, double *rate)
{
	int ret, err;

	sr.ex = b->ex;
	sr.tasks = b->c->tasks;
	sr.batch = b->c->batch;
	sr.efd = b->efd;
	sr.bad_status = 0;
	atomic_store_explicit(&sr.err, 0, memory_order_relaxed);
	ret = ql_go(b->ex, spawn_driver, NULL, NULL, NULL);
	if (ret) {
		fprintf(stderr, "task_bench: ql_go (driver): %s\n", strerror(-ret));
		return ret;
	}
	ret = wait_signal(b, "the spawn+join round");
	if (ret)
		return ret;
	err = atomic_load_explicit(&sr.err, memory_order_relaxed);
	if (err) {
		fprintf(stderr, "task_bench: spawn+join round: %s (status %d)\n",
			err == -EPROTO ? "a joined task had a non-zero status" : strerror(-err),
			sr.bad_status);
		return err;
	}
	*rate = rate_of(sr.tasks, sr.t_end - sr.t0);
	return 0;
}

static int go_spawn_round(struct bench *b, double *rate)
{
	char args[CMD_LEN], line[LINE_LEN];

	snprintf(args, sizeof(args), "-mode spawn -n %" PRIu64 " -batch %" PRIu64 " -procs %u",
		 b->c->tasks, b->c->batch, b->nworkers);
	if (run_go(b, args, line, sizeof(line)) ||
	    parse_line("go-spawn", line, "per_sec", rate, NULL))
		return -1;
	return 0;
}

static int run_spawn(struct bench *b)
{
	const struct config *c = b->c;
	unsigned n = c->rounds, i;
	double *q = calloc(n, sizeof(double)), *g = calloc(n, sizeof(double)), warm;
	struct stat3 qs, gs;
	double ratio = 0, paired = 0;
	struct ql_stats s0, s1;
	FILE *f;
	int ret;

	sr.h = calloc(c->batch, sizeof(*sr.h));
	if (!q || !g || !sr.h) {
		ret = -ENOMEM;
		goto out;
	}
	ret = exec_open(b, c->workers, c->ring_size);
	if (ret)
		goto out;
	ret = qilin_spawn_round(b, &warm);
	if (!ret)
		ret = read_stats(b->ex, &s0);
	for (i = 0; !ret && i < n; i++) {
		if (i % 2 == 0) {
			ret = qilin_spawn_round(b, &q[i]);
			if (!ret && !c->no_peer)
				ret = go_spawn_round(b, &g[i]) ? -EIO : 0;
		} else {
			if (!c->no_peer)
				ret = go_spawn_round(b, &g[i]) ? -EIO : 0;
			if (!ret)
				ret = qilin_spawn_round(b, &q[i]);
		}
	}
	if (!ret)
		ret = read_stats(b->ex, &s1);
	if (ret)
		goto out;
	qs = stat3_of(q, n);
	gs = stat3_of(g, n);
	if (!c->no_peer) {
		ratio = ratio_of(qs.median, gs.median);
		paired = paired_ratio(q, g, n, 0);
	}

	printf("## spawn: stackful spawn+join from inside a task, %" PRIu64
	       " tasks in batches of %" PRIu64 ", %u workers, %u rounds\n\n",
	       c->tasks, c->batch, b->nworkers, n);
	printf("| system | median tasks/s | min | max | ns/task |\n|---|---:|---:|---:|---:|\n");
	printf("| qilin ql_go + ql_join + ql_task_release | %.0f | %.0f | %.0f | %.1f |\n",
	       qs.median, qs.min, qs.max, ratio_of(NSEC_PER_SEC, qs.median));
	if (!c->no_peer)
		printf("| go `go f()` + wg.Wait, GOMAXPROCS=%u | %.0f | %.0f | %.0f | %.1f |\n",
		       b->nworkers, gs.median, gs.min, gs.max, ratio_of(NSEC_PER_SEC, gs.median));
	if (!c->no_peer) {
		printf("\n| round | qilin tasks/s | go tasks/s | qilin/go |\n|---:|---:|---:|---:|\n");
		for (i = 0; i < n; i++)
			printf("| %u | %.0f | %.0f | %.2f |\n", i + 1, q[i], g[i],
			       ratio_of(q[i], g[i]));
		printf("\nRatio qilin/go: %.2f (target >= %.0f: %s); median of the rounds' "
		       "ratios: %.2f\n",
		       ratio, TARGET_SPAWN, verdict(ratio >= TARGET_SPAWN), paired);
	}
	printf("\nqilin tasks stolen between workers: %.1f%% of those spawned\n",
	       (double)(s1.total.stolen - s0.total.stolen) * 100.0 / (double)(c->tasks * n + n));

	f = json_open(b, SC_SPAWN);
	if (!f) {
		ret = -ENOMEM;
		goto out;
	}
	fprintf(f,
		"  \"config\": {\"workers\": %u, \"pinned\": %s, \"rounds\": %u, \"tasks\": "
		"%" PRIu64 ", \"batch\": %" PRIu64 "},\n  \"systems\": {\n",
		b->nworkers, c->no_pin ? "false" : "true", n, c->tasks, c->batch);
	json_series(f, "qilin", "tasks_s", q, n, NULL, c->no_peer);
	if (!c->no_peer)
		json_series(f, "go", "tasks_s", g, n, NULL, 1);
	fprintf(f, "  },\n  \"ratios\": {");
	if (!c->no_peer)
		fprintf(f, "\"qilin/go\": %.4f, \"qilin/go_paired\": %.4f", ratio, paired);
	fprintf(f, "},\n  \"target\": {\"min_qilin/go\": %.0f, \"met\": %s},\n", TARGET_SPAWN,
		!c->no_peer && ratio >= TARGET_SPAWN ? "true" : "false");
	ret = json_close(b, f);
out:
	exec_close(b, ret == -ETIMEDOUT);
	if (ret != -ETIMEDOUT) {
		free(sr.h);
		sr.h = NULL;
	}
	free(q);
	free(g);
	return ret;
}

/* ------------------------------------------------------------------ /proc helpers */

/* VmRSS and VmPTE of this process, in kB. Returns 0 or -1. */
static int mem_status(uint64_t *rss_kb, uint64_t *pte_kb)
{
	char line[LINE_LEN];
	unsigned long long v;
	FILE *f = fopen("/proc/self/status", "r");
	int seen = 0;

	if (!f)
		return -1;
	*rss_kb = *pte_kb = 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
			*rss_kb = v;
			seen |= 1;
		} else if (sscanf(line, "VmPTE: %llu kB", &v) == 1) {
			*pte_kb = v;
			seen |= 2;
		}
	}
	fclose(f);
	return seen & 1 ? 0 : -1;
}

/* MemAvailable in kB, or 0 if unknown. */
static uint64_t mem_available_kb(void)
{
	char line[LINE_LEN];
	unsigned long long v = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/*
 * vm.max_map_count as it was before this program raised it, and the value it wrote; -1 when
 * it has not raised it. Written only while no child runs; the signal handler reads them.
 */
static volatile long long saved_map_count = -1, raised_map_count = -1;

/* Read vm.max_map_count with async-signal-safe calls only; -1 if it cannot be read. */
static long long read_map_count(void)
{
	char buf[32];
	long long v = 0;
	ssize_t n;
	int fd = open(MAX_MAP_COUNT_PATH, O_RDONLY | O_CLOEXEC), i;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0 || buf[0] < '0' || buf[0] > '9')
		return -1;
	for (i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
		v = v * 10 + (buf[i] - '0');
	return v;
}

/* Write v to vm.max_map_count with async-signal-safe calls only. Returns 0 or -1. */
static int write_map_count(long long v)
{
	char buf[32], tmp[32];
	int fd, n = 0, len;
	long long x = v;

	/* Format without stdio: digits backwards, then reversed into place. */
	do {
		tmp[n++] = (char)('0' + x % 10);
		x /= 10;
	} while (x && n < (int)sizeof(tmp));
	for (len = 0; len < n; len++)
		buf[len] = tmp[n - 1 - len];
	buf[len++] = '\n';
	fd = open(MAX_MAP_COUNT_PATH, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = (int)write(fd, buf, (size_t)len);
	close(fd);
	return n == len ? 0 : -1;
}

/*
 * Put back the value found before raising it, unless someone else has changed the sysctl
 * since (another program raising it for itself): then theirs stays.
 */
static void restore_map_count(void)
{
	if (saved_map_count >= 0) {
		if (read_map_count() == raised_map_count)
			write_map_count(saved_map_count);
		saved_map_count = raised_map_count = -1;
	}
}

static void restore_and_die(int sig)
{
	restore_map_count();
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Make room for n tasks' stacks in vm.max_map_count. Returns 0 when there is room (raised
 * if needed: the old value comes back with restore_map_count(), at exit and on SIGINT,
 * SIGTERM and SIGHUP), or -1 after saying why the size must be skipped.
 */
static int ensure_map_count(uint64_t n)
{
	long long cur = read_map_count();
	uint64_t need = n * MAPS_PER_TASK + MAP_COUNT_SLACK;
	static int handlers;

	if (cur < 0) {
		printf("Skipping %" PRIu64 " tasks: cannot read %s.\n", n, MAX_MAP_COUNT_PATH);
		return -1;
	}
	if ((uint64_t)cur >= need)
		return 0;
	if (geteuid() != 0) {
		printf("Skipping %" PRIu64 " tasks: they need vm.max_map_count >= %" PRIu64
		       " (each stack is %d mappings), it is %lld, and only root may raise it "
		       "(run as root, or sysctl -w vm.max_map_count=%" PRIu64 " first).\n",
		       n, need, MAPS_PER_TASK, cur, need);
		return -1;
	}
	if (!handlers) {
		signal(SIGINT, restore_and_die);
		signal(SIGTERM, restore_and_die);
		signal(SIGHUP, restore_and_die);
		atexit(restore_map_count);
		handlers = 1;
	}
	if (saved_map_count < 0)
		saved_map_count = cur;
	raised_map_count = (long long)need;
	if (write_map_count((long long)need)) {
		printf("Skipping %" PRIu64 " tasks: cannot raise vm.max_map_count to %" PRIu64
		       ": %s.\n",
		       n, need, strerror(errno));
		restore_map_count();
		return -1;
	}
	printf("vm.max_map_count raised from %lld to %" PRIu64 " for %" PRIu64
	       " tasks (restored afterwards).\n",
	       cur, need, n);
	return 0;
}

/* ------------------------------------------------------------------ park: the child */

/*
 * The park child's state. The driver and the parked tasks run on every worker, hence the
 * atomics; the counters they all write have cache lines of their own.
 */
static struct {
	_Alignas(CACHE_LINE) _Atomic uint64_t parked; /* tasks that reached their wait */
	_Alignas(CACHE_LINE) _Atomic uint64_t left;   /* tasks not finished */
	_Alignas(CACHE_LINE) _Atomic uint64_t bad;    /* waits that returned the wrong thing */
	_Atomic int err;			      /* first failure */
	_Atomic int bad_ret;			      /* the first wrong return */
	int efd;
	int sock[2];
	enum park_mode mode;
	struct ql_exec *ex;
	struct ql_task *gate;
	struct ql_scope *scope;
	uint64_t n;
	_Atomic int gate_ret;
} pk;

/* The gate: blocks until a byte arrives on the socketpair. */
static void gate_task(void *arg)
{
	char ch;

	atomic_store_explicit(&pk.gate_ret, (int)ql_recv(pk.sock[0], &ch, 1, 0),
			      memory_order_relaxed);
}

static void parked_done(void)
{
	/* Acq_rel: the last one's signal then covers every task's counters for the main thread. */
	if (atomic_fetch_sub_explicit(&pk.left, 1, memory_order_acq_rel) == 1)
		signal_main(pk.efd);
}

/* One parked task: wait on the gate (join) or in a long sleep, until released. */
static void parked_task(void *arg)
{
	int st = 0, ret, ok;

	/* Relaxed: a count the main thread polls; nothing is published through it. */
	atomic_fetch_add_explicit(&pk.parked, 1, memory_order_relaxed);
	if (pk.mode == PARK_JOIN) {
		ret = ql_join(pk.gate, &st);
		ok = ret == 0 && st == 0;
	} else {
		ret = ql_sleep(PARK_SLEEP_NS);
		ok = ret == -ECANCELED;
	}
	if (!ok) {
		atomic_fetch_add_explicit(&pk.bad, 1, memory_order_relaxed);
		set_err(&pk.bad_ret, ret ? ret : -EPROTO);
	}
	parked_done();
}

/* The driver: N detached tasks, yielding now and then so that they run and park. */
static void park_driver(void *arg)
{
	uint64_t i;
	int ret;

	for (i = 0; i < pk.n; i++) {
		ret = ql_go(pk.ex, parked_task, NULL, NULL, NULL);
		if (__builtin_expect(ret != 0, 0)) {
			uint64_t rest = pk.n - i;

			set_err(&pk.err, ret);
			/* Count the tasks never spawned as parked and finished, so that waits end. */
			atomic_fetch_add_explicit(&pk.parked, rest, memory_order_relaxed);
			if (atomic_fetch_sub_explicit(&pk.left, rest, memory_order_acq_rel) == rest)
				signal_main(pk.efd);
			return;
		}
		if ((i + 1) % PARK_CHUNK == 0)
			ql_yield();
	}
}

/* The figures a memory child prints, as one JSON line. */
struct mem_result {
	uint64_t rss_before_kb, rss_after_kb, pte_before_kb, pte_after_kb, rss_end_kb;
	uint64_t park_ns;    /* spawn to all parked (park) / issue time (pending) */
	uint64_t release_ns; /* release to all done (park) / cancel time (pending) */
	uint64_t extra;	     /* pending: operations counted in flight */
};

/* The RSS once everything has ended (what the pools kept), for information. */
static void child_rss_end(struct mem_result *r)
{
	uint64_t pte;

	if (mem_status(&r->rss_end_kb, &pte))
		r->rss_end_kb = 0;
}

static void child_print(const struct config *c, const struct mem_result *r)
{
	uint64_t n = c->child_n;

	printf("{\"n\":%" PRIu64 ",\"rss_before_kb\":%" PRIu64 ",\"rss_after_kb\":%" PRIu64
	       ",\"pte_before_kb\":%" PRIu64 ",\"pte_after_kb\":%" PRIu64 ",\"rss_end_kb\":%" PRIu64
	       ",\"rss_bytes_per\":%.3f,\"pte_bytes_per\":%.3f"
	       ",\"ns\":%" PRIu64 ",\"release_ns\":%" PRIu64 ",\"extra\":%" PRIu64 "}\n",
	       n, r->rss_before_kb, r->rss_after_kb, r->pte_before_kb, r->pte_after_kb,
	       r->rss_end_kb, ((double)r->rss_after_kb - (double)r->rss_before_kb) * KIB / n,
	       ((double)r->pte_after_kb - (double)r->pte_before_kb) * KIB / n, r->park_ns,
	       r->release_ns, r->extra);
	fflush(stdout);
}

/*
 * Wait until cond() holds, checking the RSS cap and the timeout every POLL_NS. Returns 0,
 * or -1 after saying why not.
 */
static int child_wait(const struct config *c, struct ql_exec *ex, int (*cond)(void),
		      const char *what)
{
	uint64_t deadline = now_ns() + (uint64_t)c->timeout_s * NS_PER_S, rss, pte;
	struct ql_stats st;

	while (!cond()) {
		if (now_ns() > deadline) {
			fprintf(stderr, "task_bench: child: HANG: %s not reached within %u s\n",
				what, c->timeout_s);
			if (!read_stats(ex, &st))
				print_counters("counters at the hang", &st);
			return -1;
		}
		if (c->rss_cap_kb && !mem_status(&rss, &pte) && rss > c->rss_cap_kb) {
			fprintf(stderr,
				"task_bench: child: RSS %" PRIu64 " MiB passed the cap of %" PRIu64
				" MiB (%d%% of MemAvailable) while waiting for %s: stopping\n",
				rss / 1024, c->rss_cap_kb / 1024, RSS_CAP_PCT, what);
			return -1;
		}
		sleep_ns(POLL_NS);
	}
	return 0;
}

static int all_parked(void)
{
	struct ql_stats st;

	if (atomic_load_explicit(&pk.parked, memory_order_relaxed) < pk.n)
		return 0;
	/* Every task has reached its wait; the run queues empty once they are all parked. */
	return !read_stats(pk.ex, &st) && !st.total.runq_depth && !st.global_depth;
}

/* A fresh executor for a child: default workers unless -w. Returns 0 or -1. */
static int child_exec(const struct config *c, unsigned ring_size, struct ql_exec **ex)
{
	struct ql_exec_opts opts;
	char why[LINE_LEN];
	int ret;

	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	opts.workers = c->workers;
	opts.ring_size = ring_size;
	opts.flags = c->no_pin ? QL_EXEC_NO_PIN : 0;
	ret = ql_exec_create(&opts, ex);
	if (ret) {
		ql_uring_diagnose(why, sizeof(why));
		fprintf(stderr, "task_bench: child: ql_exec_create (ring %u): %s (%s)\n", ring_size,
			strerror(-ret), why);
		return -1;
	}
	return 0;
}

/* The SQ size that lets each of nworkers rings hold per_worker operations in flight. */
static unsigned ring_for(uint64_t per_worker)
{
	uint64_t need = (per_worker + RING_MARGIN + CQ_PER_SQ - 1) / CQ_PER_SQ;
	unsigned sq = EXEC_DEFAULT_RING;

	while (sq < need && sq < MAX_RING)
		sq *= 2;
	return sq;
}

/* The CPUs of the affinity mask (the executor's default worker count). */
static unsigned affinity_count(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set))
		return 1;
	return (unsigned)CPU_COUNT(&set);
}

/* One park round in this (fresh) process. Returns the exit status. */
static int child_park(const struct config *c)
{
	struct mem_result r;
	struct ql_task_opts o;
	struct ql_task *warm;
	unsigned ring = c->ring_size, workers;
	uint64_t t0;
	int ret, st = 0;

	memset(&r, 0, sizeof(r));
	pk.n = c->child_n;
	pk.mode = c->park_mode;
	workers = c->workers ? c->workers : affinity_count();
	if (pk.mode == PARK_SLEEP && !ring)
		ring = ring_for(pk.n / workers + 1);
	pk.efd = eventfd(0, EFD_CLOEXEC);
	if (pk.efd < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pk.sock)) {
		perror("task_bench: child: eventfd/socketpair");
		return 1;
	}
	if (child_exec(c, ring, &pk.ex))
		return 1;
	/* Warm-up: one task started and joined, so that lazily made state exists. */
	ret = ql_go(pk.ex, empty_task, NULL, NULL, &warm);
	if (!ret) {
		ret = ql_join(warm, &st);
		ql_task_release(warm);
	}
	if (ret || st) {
		fprintf(stderr, "task_bench: child: warm-up task: %s (status %d)\n", strerror(-ret),
			st);
		return 1;
	}
	if (pk.mode == PARK_JOIN) {
		ret = ql_go(pk.ex, gate_task, NULL, NULL, &pk.gate);
	} else {
		ret = ql_scope_open(&pk.scope, QL_NO_DEADLINE);
	}
	if (ret) {
		fprintf(stderr, "task_bench: child: %s: %s\n",
			pk.mode == PARK_JOIN ? "ql_go (gate)" : "ql_scope_open", strerror(-ret));
		return 1;
	}
	atomic_store_explicit(&pk.left, pk.n, memory_order_relaxed);
	sleep_ns(SETTLE_NS);
	if (mem_status(&r.rss_before_kb, &r.pte_before_kb)) {
		fprintf(stderr, "task_bench: child: cannot read /proc/self/status\n");
		return 1;
	}
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.scope = pk.scope;
	t0 = now_ns();
	ret = ql_go(pk.ex, park_driver, NULL, pk.scope ? &o : NULL, NULL);
	if (ret) {
		fprintf(stderr, "task_bench: child: ql_go (driver): %s\n", strerror(-ret));
		return 1;
	}
	if (child_wait(c, pk.ex, all_parked, "all tasks parked"))
		return 1;
	r.park_ns = now_ns() - t0;
	ret = atomic_load_explicit(&pk.err, memory_order_relaxed);
	if (ret) {
		fprintf(stderr, "task_bench: child: ql_go failed after some tasks: %s\n",
			strerror(-ret));
		return 1;
	}
	/* The last tasks counted themselves just before parking: let them get there. */
	sleep_ns(SETTLE_NS);
	mem_status(&r.rss_after_kb, &r.pte_after_kb);

	t0 = now_ns();
	if (pk.mode == PARK_JOIN) {
		if (write(pk.sock[1], "x", 1) != 1) {
			perror("task_bench: child: write");
			return 1;
		}
	} else {
		ret = ql_scope_cancel(pk.scope);
		if (ret) {
			fprintf(stderr, "task_bench: child: ql_scope_cancel: %s\n", strerror(-ret));
			return 1;
		}
	}
	if (wait_exec(pk.efd, pk.ex, c->timeout_s, "the release of the parked tasks"))
		return 1;
	r.release_ns = now_ns() - t0;
	/* Acquire: pairs with the last parked_done()'s acq_rel decrement. */
	(void)atomic_load_explicit(&pk.left, memory_order_acquire);
	if (atomic_load_explicit(&pk.bad, memory_order_relaxed)) {
		fprintf(stderr,
			"task_bench: child: %" PRIu64 " of %" PRIu64
			" parked tasks' waits returned wrongly (first: %d, %s; expected %s)\n",
			atomic_load_explicit(&pk.bad, memory_order_relaxed), pk.n,
			atomic_load_explicit(&pk.bad_ret, memory_order_relaxed),
			strerror(-atomic_load_explicit(&pk.bad_ret, memory_order_relaxed)),
			pk.mode == PARK_JOIN ? "0 with status 0" : "-ECANCELED");
		return 1;
	}
	if (pk.mode == PARK_JOIN) {
		st = 0;
		ret = ql_join(pk.gate, &st);
		ql_task_release(pk.gate);
		if (ret || st || atomic_load_explicit(&pk.gate_ret, memory_order_relaxed) != 1) {
			fprintf(stderr,
				"task_bench: child: gate: join %d, status %d, ql_recv returned %d\n",
				ret, st, atomic_load_explicit(&pk.gate_ret, memory_order_relaxed));
			return 1;
		}
	} else {
		ql_scope_close(pk.scope);
	}
	child_rss_end(&r);
	ret = ql_exec_shutdown(pk.ex, SHUTDOWN_TIMEOUT_NS);
	if (ret) {
		fprintf(stderr, "task_bench: child: ql_exec_shutdown: %s\n", strerror(-ret));
		return 1;
	}
	ql_exec_destroy(pk.ex);
	child_print(c, &r);
	return 0;
}

/* ------------------------------------------------------------------ pending: the child */

/* One worker's share; only its worker touches it while the executor runs. */
struct pend_worker {
	_Alignas(CACHE_LINE) uint64_t share; /* timeouts to issue */
	uint64_t issued, done, canceled, other;
	int64_t other_res; /* the first result that was not -ECANCELED */
	uint64_t warm_left;
	unsigned warm_inflight;
	int err;
	_Atomic int claimed; /* a starter took this worker in the current phase */
};

enum pend_phase { PHASE_WARM, PHASE_ISSUE };

static struct {
	_Alignas(CACHE_LINE) _Atomic unsigned left; /* workers not done with the phase */
	_Atomic unsigned respawns;
	_Atomic int err;
	enum pend_phase phase;
	int efd;
	struct ql_exec *ex;
	unsigned nworkers;
	struct pend_worker *w;
} pd;

static void pend_worker_done(struct pend_worker *w)
{
	if (w->err)
		set_err(&pd.err, w->err);
	/* Acq_rel: the last worker's release covers every worker's results for the main thread. */
	if (atomic_fetch_sub_explicit(&pd.left, 1, memory_order_acq_rel) == 1)
		signal_main(pd.efd);
}

/* A warm-up NOP completed: keep WARM_DEPTH in flight until the chain has walked the rings. */
static void warm_nop(void *arg, ssize_t res)
{
	struct pend_worker *w = arg;
	int ret;

	if (res < 0 && !w->err)
		w->err = (int)res;
	if (w->warm_left && !w->err) {
		ret = ql_nop_cb(warm_nop, w);
		if (!ret) {
			w->warm_left--;
			return;
		}
		w->err = ret;
	}
	if (--w->warm_inflight == 0)
		pend_worker_done(w);
}

/* A pending timeout's continuation: at shutdown, with -ECANCELED. */
static void pend_done(void *arg, ssize_t res)
{
	struct pend_worker *w = arg;

	w->done++;
	if (res == -ECANCELED) {
		w->canceled++;
	} else {
		if (!w->other++)
			w->other_res = res;
	}
}

/* One per worker: warm its ring or issue its share, after claiming the worker. */
static void pend_starter(void *arg)
{
	struct pend_worker *w;
	uint64_t i;
	int id = ql_worker_id(), ret;

	if (id < 0 || (unsigned)id >= pd.nworkers) {
		set_err(&pd.err, id < 0 ? id : -ERANGE);
		if (atomic_fetch_sub_explicit(&pd.left, 1, memory_order_acq_rel) == 1)
			signal_main(pd.efd);
		return;
	}
	w = &pd.w[id];
	/* Relaxed: only the exchange's atomicity matters; the worker's state is its own. */
	if (atomic_exchange_explicit(&w->claimed, 1, memory_order_relaxed)) {
		/* Another starter runs here already: try again, hoping an idle worker steals it. */
		if (atomic_fetch_add_explicit(&pd.respawns, 1, memory_order_relaxed) <
		    MAX_RESPAWNS) {
			ret = ql_spawn(pd.ex, pend_starter, NULL);
			if (!ret)
				return;
			set_err(&pd.err, ret);
		} else {
			set_err(&pd.err, -EAGAIN);
		}
		if (atomic_fetch_sub_explicit(&pd.left, 1, memory_order_acq_rel) == 1)
			signal_main(pd.efd);
		return;
	}
	if (pd.phase == PHASE_WARM) {
		for (i = 0; i < WARM_DEPTH && w->warm_left; i++) {
			ret = ql_nop_cb(warm_nop, w);
			if (ret) {
				w->err = ret;
				break;
			}
			w->warm_left--;
			w->warm_inflight++;
		}
		if (!w->warm_inflight)
			pend_worker_done(w);
		return;
	}
	for (i = 0; i < w->share; i++) {
		ret = ql_timeout_cb(PENDING_TIMEOUT_NS, pend_done, w);
		if (ret) {
			w->err = ret;
			break;
		}
		w->issued++;
	}
	pend_worker_done(w);
}

/* Run one phase: a starter per worker, then wait for them all. Returns 0 or -1. */
static int pend_phase(const struct config *c, enum pend_phase phase)
{
	unsigned i;
	int ret;

	pd.phase = phase;
	atomic_store_explicit(&pd.left, pd.nworkers, memory_order_relaxed);
	atomic_store_explicit(&pd.respawns, 0, memory_order_relaxed);
	for (i = 0; i < pd.nworkers; i++)
		atomic_store_explicit(&pd.w[i].claimed, 0, memory_order_relaxed);
	for (i = 0; i < pd.nworkers; i++) {
		ret = ql_spawn(pd.ex, pend_starter, NULL);
		if (ret) {
			fprintf(stderr, "task_bench: child: ql_spawn: %s\n", strerror(-ret));
			return -1;
		}
	}
	if (wait_exec(pd.efd, pd.ex, c->timeout_s,
		     phase == PHASE_WARM ? "the ring warm-up" : "issuing the timeouts"))
		return -1;
	/* Acquire: pairs with the last pend_worker_done()'s acq_rel decrement. */
	(void)atomic_load_explicit(&pd.left, memory_order_acquire);
	ret = atomic_load_explicit(&pd.err, memory_order_relaxed);
	if (ret) {
		fprintf(stderr, "task_bench: child: %s failed: %s%s\n",
			phase == PHASE_WARM ? "the ring warm-up" : "ql_timeout_cb", strerror(-ret),
			ret == -EAGAIN ? " (could not place one starter per worker)" : "");
		return -1;
	}
	return 0;
}

static uint64_t pend_target_inflight;

static int pend_all_inflight(void)
{
	struct ql_stats st;

	return !read_stats(pd.ex, &st) && st.total.inflight >= pend_target_inflight;
}

/* One pending round in this (fresh) process. Returns the exit status. */
static int child_pending(const struct config *c)
{
	uint64_t n = c->child_n, inflight0, t0, done = 0, canceled = 0, other = 0;
	unsigned workers = c->workers ? c->workers : affinity_count(), ring, i;
	int64_t other_res = 0;
	struct mem_result r;
	struct ql_stats st;
	int ret;

	memset(&r, 0, sizeof(r));
	ring = c->ring_size ? c->ring_size : ring_for(n / workers + 1);
	if (n / workers + 1 + RING_MARGIN > (uint64_t)ring * CQ_PER_SQ) {
		fprintf(stderr,
			"task_bench: child: %" PRIu64 " pending operations do not fit %u rings of "
			"%u SQ entries (in flight is bounded by the CQ, %u entries): use fewer or "
			"more workers\n",
			n, workers, ring, ring * CQ_PER_SQ);
		return 1;
	}
	pd.efd = eventfd(0, EFD_CLOEXEC);
	if (pd.efd < 0) {
		perror("task_bench: child: eventfd");
		return 1;
	}
	if (child_exec(c, ring, &pd.ex))
		return 1;
	if (read_stats(pd.ex, &st) || !st.nworkers)
		return 1;
	pd.nworkers = st.nworkers;
	pd.w = aligned_alloc(CACHE_LINE, pd.nworkers * sizeof(*pd.w));
	if (!pd.w)
		return 1;
	memset(pd.w, 0, pd.nworkers * sizeof(*pd.w));
	for (i = 0; i < pd.nworkers; i++) {
		/* Walk every CQ slot (and so every SQ slot, the SQ being smaller) once. */
		pd.w[i].warm_left = (uint64_t)ring * CQ_PER_SQ + WARM_DEPTH;
		pd.w[i].share = n / pd.nworkers + (i ? 0 : n % pd.nworkers);
	}
	if (pend_phase(c, PHASE_WARM))
		return 1;
	sleep_ns(SETTLE_NS);
	read_stats(pd.ex, &st);
	inflight0 = st.total.inflight;
	if (mem_status(&r.rss_before_kb, &r.pte_before_kb)) {
		fprintf(stderr, "task_bench: child: cannot read /proc/self/status\n");
		return 1;
	}
	t0 = now_ns();
	if (pend_phase(c, PHASE_ISSUE))
		return 1;
	/* They reach the kernel in each worker's end-of-tick batch: wait until all are in flight. */
	pend_target_inflight = inflight0 + n;
	if (child_wait(c, pd.ex, pend_all_inflight, "all timeouts in flight"))
		return 1;
	r.park_ns = now_ns() - t0;
	sleep_ns(SETTLE_NS);
	mem_status(&r.rss_after_kb, &r.pte_after_kb);
	read_stats(pd.ex, &st);
	r.extra = st.total.inflight - inflight0;

	/* Cancel them: shutdown cancels what is in flight once the (short) grace has passed. */
	t0 = now_ns();
	ret = ql_exec_shutdown(pd.ex, PENDING_SHUTDOWN_NS);
	r.release_ns = now_ns() - t0;
	if (ret && ret != -ETIMEDOUT) {
		fprintf(stderr, "task_bench: child: ql_exec_shutdown: %s\n", strerror(-ret));
		return 1;
	}
	/* The workers are joined: their counters are final and visible. */
	for (i = 0; i < pd.nworkers; i++) {
		done += pd.w[i].done;
		canceled += pd.w[i].canceled;
		if (pd.w[i].other && !other)
			other_res = pd.w[i].other_res;
		other += pd.w[i].other;
	}
	if (done != n || canceled != n) {
		fprintf(stderr,
			"task_bench: child: after ql_exec_shutdown %" PRIu64 " of %" PRIu64
			" pending timeouts' continuations ran, %" PRIu64
			" with -ECANCELED, %" PRIu64 " with something else (first: %" PRId64
			"); shutdown returned %d\n",
			done, n, canceled, other, other_res, ret);
		return 1;
	}
	child_rss_end(&r);
	ql_exec_destroy(pd.ex);
	free(pd.w);
	child_print(c, &r);
	return 0;
}

/* A memory child: one round in a fresh process; prints one JSON line. */
static int child_main(const struct config *c)
{
	/* The parent waits for the output line: a hung child must end by itself. */
	alarm(c->timeout_s * 2 + 10);
	if (!strcmp(c->child, "park"))
		return child_park(c);
	if (!strcmp(c->child, "pending"))
		return child_pending(c);
	fprintf(stderr, "task_bench: unknown --child '%s'\n", c->child);
	return 2;
}

/* ------------------------------------------------------------------ park and pending: parent */

/* What one memory round gives. */
struct mem_round {
	double bytes, pte_bytes; /* RSS and page-table bytes per task or operation */
	double ns;		 /* time to start and park them all, or to issue them */
	double release_ns;
	double rss_end_kb;
};

/* One qilin memory round: this program again, as a child. Returns 0 or -1. */
static int qilin_mem_round(struct bench *b, const char *kind, uint64_t n, uint64_t cap_kb,
			   struct mem_round *m)
{
	const struct config *c = b->c;
	char args[CMD_LEN], line[LINE_LEN];

	snprintf(args, sizeof(args),
		 "--child %s -n %" PRIu64 " -w %u --ring %u --park-mode %s --timeout %u "
		 "--rss-cap-kb %" PRIu64 "%s",
		 kind, n, c->workers, c->ring_size, c->park_mode == PARK_JOIN ? "join" : "sleep",
		 c->timeout_s, cap_kb, c->no_pin ? " --no-pin" : "");
	if (run_peer(b->self, args, line, sizeof(line)))
		return -1;
	return parse_line("the qilin child", line, "rss_bytes_per", &m->bytes, "pte_bytes_per",
			  &m->pte_bytes, "ns", &m->ns, "release_ns", &m->release_ns, "rss_end_kb",
			  &m->rss_end_kb, NULL);
}

static int go_park_round(struct bench *b, uint64_t n, unsigned procs, struct mem_round *m)
{
	char args[CMD_LEN], line[LINE_LEN];

	memset(m, 0, sizeof(*m));
	snprintf(args, sizeof(args), "-mode park -n %" PRIu64 " -procs %u", n, procs);
	if (run_go(b, args, line, sizeof(line)))
		return -1;
	return parse_line("go-spawn", line, "rss_bytes_per", &m->bytes, "pte_bytes_per",
			  &m->pte_bytes, "ns", &m->ns, NULL);
}

/* Pull one field of every round into v. */
static void mem_field(const struct mem_round *m, unsigned n, size_t off, double *v)
{
	unsigned i;

	for (i = 0; i < n; i++)
		v[i] = *(const double *)((const char *)&m[i] + off);
}

/* The figures of one park size, for the report and the JSON. */
struct park_size {
	uint64_t n;
	unsigned rounds;
	int skipped;
	char why[LINE_LEN];
	struct mem_round *q, *g;
	struct stat3 qb, gb, qpte, gpte, qns, gns, qrel;
	double ratio, paired;
};

static int park_one_size(struct bench *b, struct park_size *p, unsigned procs)
{
	const struct config *c = b->c;
	uint64_t avail = mem_available_kb(), cap = avail * RSS_CAP_PCT / 100;
	double *v;
	unsigned i, n = p->rounds;
	int ret = 0;

	if (avail && p->n * PARK_NEED_BYTES / 1024 > avail) {
		p->skipped = 1;
		snprintf(p->why, sizeof(p->why),
			 "needs about %" PRIu64 " MiB (%llu KiB a task, generously), only %" PRIu64
			 " MiB available",
			 (uint64_t)(p->n * PARK_NEED_BYTES >> 20), PARK_NEED_BYTES / 1024,
			 avail / 1024);
		printf("Skipping %" PRIu64 " tasks: %s.\n", p->n, p->why);
		return 0;
	}
	if (ensure_map_count(p->n)) {
		p->skipped = 1;
		snprintf(p->why, sizeof(p->why), "vm.max_map_count too low and not raised");
		return 0;
	}
	p->q = calloc(n, sizeof(*p->q));
	p->g = calloc(n, sizeof(*p->g));
	v = calloc(n, sizeof(*v));
	if (!p->q || !p->g || !v) {
		free(v);
		return -ENOMEM;
	}
	for (i = 0; !ret && i < n; i++) {
		if (i % 2 == 0) {
			ret = qilin_mem_round(b, "park", p->n, cap, &p->q[i]);
			if (!ret && !c->no_peer)
				ret = go_park_round(b, p->n, procs, &p->g[i]);
		} else {
			if (!c->no_peer)
				ret = go_park_round(b, p->n, procs, &p->g[i]);
			if (!ret)
				ret = qilin_mem_round(b, "park", p->n, cap, &p->q[i]);
		}
	}
	restore_map_count();
	if (ret) {
		free(v);
		return -EIO;
	}
	mem_field(p->q, n, offsetof(struct mem_round, bytes), v);
	p->qb = stat3_of(v, n);
	mem_field(p->q, n, offsetof(struct mem_round, pte_bytes), v);
	p->qpte = stat3_of(v, n);
	mem_field(p->q, n, offsetof(struct mem_round, ns), v);
	p->qns = stat3_of(v, n);
	mem_field(p->q, n, offsetof(struct mem_round, release_ns), v);
	p->qrel = stat3_of(v, n);
	if (!c->no_peer) {
		double *w = calloc(n, sizeof(*w));

		mem_field(p->g, n, offsetof(struct mem_round, bytes), v);
		p->gb = stat3_of(v, n);
		if (w) {
			mem_field(p->q, n, offsetof(struct mem_round, bytes), w);
			p->paired = paired_ratio(w, v, n, 1);
		}
		free(w);
		mem_field(p->g, n, offsetof(struct mem_round, pte_bytes), v);
		p->gpte = stat3_of(v, n);
		mem_field(p->g, n, offsetof(struct mem_round, ns), v);
		p->gns = stat3_of(v, n);
		p->ratio = ratio_of(p->gb.median, p->qb.median);
	}
	free(v);
	return 0;
}

static void json_mem_runs(FILE *f, const char *key, const struct mem_round *m, unsigned n,
			  size_t off)
{
	unsigned i;

	fprintf(f, ", \"%s\": [", key);
	for (i = 0; i < n; i++)
		fprintf(f, "%s%.1f", i ? ", " : "", *(const double *)((const char *)&m[i] + off));
	fprintf(f, "]");
}

static int run_park(struct bench *b)
{
	const struct config *c = b->c;
	unsigned procs = c->workers ? c->workers : b->ncpus, i, j, met = 1, any = 0;
	struct park_size *ps = calloc(c->npark, sizeof(*ps));
	FILE *f;
	int ret = 0;

	if (!ps)
		return -ENOMEM;
	printf("## park: memory per parked stackful task (default %u KiB stack), %s, "
	       "%u workers, a fresh process per round\n\n",
	       QL_STACK_DEFAULT / 1024,
	       c->park_mode == PARK_JOIN ? "each blocked in ql_join() on a gate task" :
					   "each blocked in ql_sleep(1 h) in a scope",
	       procs);
	for (i = 0; !ret && i < c->npark; i++) {
		ps[i].n = c->park[i];
		ps[i].rounds = c->park[i] > BIG_PARK ? c->big_rounds : c->park_rounds;
		ret = park_one_size(b, &ps[i], procs);
	}
	if (ret)
		goto out;
	printf("\n| tasks | system | rounds | median bytes/task | min | max | page tables "
	       "bytes/task | start+park ms |\n|---:|---|---:|---:|---:|---:|---:|---:|\n");
	for (i = 0; i < c->npark; i++) {
		struct park_size *p = &ps[i];

		if (p->skipped) {
			printf("| %" PRIu64 " | skipped: %s | | | | | | |\n", p->n, p->why);
			continue;
		}
		any = 1;
		met &= p->qb.median <= TARGET_PARK_BYTES;
		printf("| %" PRIu64 " | qilin | %u | %.0f | %.0f | %.0f | %.0f | %.0f |\n", p->n,
		       p->rounds, p->qb.median, p->qb.min, p->qb.max, p->qpte.median,
		       p->qns.median / NS_PER_MS);
		if (!c->no_peer)
			printf("| %" PRIu64 " | go | %u | %.0f | %.0f | %.0f | %.0f | %.0f |\n",
			       p->n, p->rounds, p->gb.median, p->gb.min, p->gb.max, p->gpte.median,
			       p->gns.median / NS_PER_MS);
	}
	printf("\n");
	for (i = 0; i < c->npark; i++) {
		struct park_size *p = &ps[i];

		if (p->skipped)
			continue;
		printf("%" PRIu64 " tasks: qilin %.2f KiB a task (target <= %.0f KiB: %s)", p->n,
		       p->qb.median / KIB, TARGET_PARK_BYTES / KIB,
		       verdict(p->qb.median <= TARGET_PARK_BYTES));
		if (!c->no_peer)
			printf("; Go %.2f KiB a goroutine; go/qilin %.2f (paired %.2f)",
			       p->gb.median / KIB, p->ratio, p->paired);
		printf("; waking all took %.0f ms.\n", p->qrel.median / NS_PER_MS);
	}
	printf("Bytes are VmRSS deltas over the count; page tables (VmPTE) are not in VmRSS and "
	       "are shown apart. Kernel memory (each stack's two VMAs) is in neither.\n");

	f = json_open(b, SC_PARK);
	if (!f) {
		ret = -ENOMEM;
		goto out;
	}
	fprintf(f,
		"  \"config\": {\"workers\": %u, \"pinned\": %s, \"stack_size\": %u, "
		"\"park_mode\": \"%s\"},\n  \"sizes\": [\n",
		procs, c->no_pin ? "false" : "true", QL_STACK_DEFAULT,
		c->park_mode == PARK_JOIN ? "join" : "sleep");
	for (i = 0, j = 0; i < c->npark; i++) {
		struct park_size *p = &ps[i];

		fprintf(f, "%s    {\"tasks\": %" PRIu64, j++ ? ",\n" : "", p->n);
		if (p->skipped) {
			fprintf(f, ", \"skipped\": ");
			json_string(f, p->why);
			fprintf(f, "}");
			continue;
		}
		fprintf(f,
			", \"rounds\": %u, \"qilin\": {\"median_bytes_per_task\": %.1f, "
			"\"min_bytes_per_task\": %.1f, \"max_bytes_per_task\": %.1f, "
			"\"median_pte_bytes_per_task\": %.1f",
			p->rounds, p->qb.median, p->qb.min, p->qb.max, p->qpte.median);
		json_mem_runs(f, "runs", p->q, p->rounds, offsetof(struct mem_round, bytes));
		json_mem_runs(f, "runs_start_park_ns", p->q, p->rounds,
			      offsetof(struct mem_round, ns));
		json_mem_runs(f, "runs_release_ns", p->q, p->rounds,
			      offsetof(struct mem_round, release_ns));
		fprintf(f, "}");
		if (!c->no_peer) {
			fprintf(f,
				", \"go\": {\"median_bytes_per_task\": %.1f, "
				"\"min_bytes_per_task\": %.1f, \"max_bytes_per_task\": %.1f, "
				"\"median_pte_bytes_per_task\": %.1f",
				p->gb.median, p->gb.min, p->gb.max, p->gpte.median);
			json_mem_runs(f, "runs", p->g, p->rounds,
				      offsetof(struct mem_round, bytes));
			json_mem_runs(f, "runs_start_park_ns", p->g, p->rounds,
				      offsetof(struct mem_round, ns));
			fprintf(f, "}, \"qilin/go\": %.4f, \"qilin/go_paired\": %.4f", p->ratio,
				p->paired);
		}
		fprintf(f, ", \"target_met\": %s}",
			p->qb.median <= TARGET_PARK_BYTES ? "true" : "false");
	}
	fprintf(f, "\n  ],\n  \"ratios\": {");
	for (i = 0, j = 0; i < c->npark && !c->no_peer; i++) {
		if (ps[i].skipped)
			continue;
		fprintf(f, "%s\"qilin/go_%" PRIu64 "\": %.4f", j++ ? ", " : "", ps[i].n,
			ps[i].ratio);
	}
	fprintf(f, "},\n  \"target\": {\"max_bytes_per_task\": %.0f, \"met\": %s},\n",
		TARGET_PARK_BYTES, any && met ? "true" : "false");
	ret = json_close(b, f);
out:
	for (i = 0; i < c->npark; i++) {
		free(ps[i].q);
		free(ps[i].g);
	}
	free(ps);
	return ret;
}

static int run_pending(struct bench *b)
{
	const struct config *c = b->c;
	unsigned n = c->park_rounds, i, workers = c->workers ? c->workers : b->ncpus;
	uint64_t cap = mem_available_kb() * RSS_CAP_PCT / 100;
	struct mem_round *q = calloc(n, sizeof(*q));
	double *v = calloc(n, sizeof(*v)), target_ratio;
	struct stat3 qb, qpte;
	unsigned ring = c->ring_size ? c->ring_size : ring_for(c->pending / workers + 1);
	FILE *f;
	int ret = 0;

	if (!q || !v) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; !ret && i < n; i++)
		ret = qilin_mem_round(b, "pending", c->pending, cap, &q[i]) ? -EIO : 0;
	if (ret)
		goto out;
	mem_field(q, n, offsetof(struct mem_round, bytes), v);
	qb = stat3_of(v, n);
	mem_field(q, n, offsetof(struct mem_round, pte_bytes), v);
	qpte = stat3_of(v, n);
	target_ratio = ratio_of(TARGET_PENDING_BYTES, qb.median);

	printf("## pending: memory per pending stackless operation (ql_timeout_cb, 1 h), "
	       "%" PRIu64 " in flight over %u workers (rings of %u SQ entries), %u rounds\n\n",
	       c->pending, workers, ring, n);
	printf("| round | bytes/op | page tables bytes/op | issue+submit ms | cancel ms |\n"
	       "|---:|---:|---:|---:|---:|\n");
	for (i = 0; i < n; i++)
		printf("| %u | %.1f | %.1f | %.1f | %.1f |\n", i + 1, q[i].bytes, q[i].pte_bytes,
		       q[i].ns / NS_PER_MS, q[i].release_ns / NS_PER_MS);
	printf("\nqilin: %.1f bytes per pending operation (min %.1f, max %.1f; target <= %.0f: "
	       "%s). No peer.\n",
	       qb.median, qb.min, qb.max, TARGET_PENDING_BYTES,
	       verdict(qb.median <= TARGET_PENDING_BYTES));

	f = json_open(b, SC_PENDING);
	if (!f) {
		ret = -ENOMEM;
		goto out;
	}
	fprintf(f,
		"  \"config\": {\"workers\": %u, \"pinned\": %s, \"rounds\": %u, \"ops\": "
		"%" PRIu64 ", \"ring_size\": %u, \"op\": \"ql_timeout_cb\"},\n  \"systems\": {\n",
		workers, c->no_pin ? "false" : "true", n, c->pending, ring);
	mem_field(q, n, offsetof(struct mem_round, bytes), v);
	json_series(f, "qilin", "bytes_per_op", v, n, NULL, 1);
	fprintf(f,
		"  },\n  \"median_pte_bytes_per_op\": %.1f,\n  \"ratios\": {\"target/qilin\": "
		"%.4f},\n  \"target\": {\"max_bytes_per_op\": %.0f, \"met\": %s},\n",
		qpte.median, target_ratio, TARGET_PENDING_BYTES,
		qb.median <= TARGET_PENDING_BYTES ? "true" : "false");
	ret = json_close(b, f);
out:
	free(q);
	free(v);
	return ret;
}

/* ------------------------------------------------------------------ defer */

/*
 * One defer chain. All its tasks run on the one worker, one after the other, so plain
 * fields do; static for the same reason as yr.
 */
static struct {
	struct ql_exec *ex;
	uint64_t m, k;	/* tasks, deferred calls per task */
	uint64_t next;	/* index of the next task to run */
	uint64_t bumps; /* deferred calls run */
	uint64_t t0, t_end;
	int stackful;
	int err;
	int efd;
} dr;

static void defer_bump(void *arg)
{
	(*(uint64_t *)arg)++;
}

static void defer_finish(void)
{
	dr.t_end = ql_now();
	signal_main(dr.efd);
}

/* The first entry each task pushes, so the last to run: ends the chain after its last task. */
static void defer_first(void *arg)
{
	dr.bumps++;
	if ((uintptr_t)arg + 1 == dr.m || dr.err)
		defer_finish();
}

static void defer_task(void *arg)
{
	uint64_t idx = dr.next++, j;
	int ret;

	if (idx == 0)
		dr.t0 = ql_now();
	ret = ql_defer(defer_first, (void *)(uintptr_t)idx);
	if (__builtin_expect(ret != 0, 0)) {
		dr.err = ret;
		defer_finish();
		return;
	}
	for (j = 1; j < dr.k; j++) {
		ret = ql_defer(defer_bump, &dr.bumps);
		if (__builtin_expect(ret != 0, 0)) {
			dr.err = ret;
			return;
		}
	}
	if (idx + 1 < dr.m) {
		ret = dr.stackful ? ql_go(dr.ex, defer_task, NULL, NULL, NULL) :
				    ql_spawn(dr.ex, defer_task, NULL);
		if (__builtin_expect(ret != 0, 0))
			dr.err = ret; /* defer_first sees it and ends the chain */
	}
}

/* Time one chain of m tasks with k deferred calls each. Returns 0 or -errno. */
static int defer_chain(struct bench *b, int stackful, uint64_t k, uint64_t *ns)
{
	int ret;

	dr.ex = b->ex;
	dr.m = b->c->defer_tasks;
	dr.k = k;
	dr.next = dr.bumps = 0;
	dr.t0 = dr.t_end = 0;
	dr.stackful = stackful;
	dr.err = 0;
	dr.efd = b->efd;
	ret = stackful ? ql_go(b->ex, defer_task, NULL, NULL, NULL) :
			 ql_spawn(b->ex, defer_task, NULL);
	if (ret) {
		fprintf(stderr, "task_bench: spawning the defer chain: %s\n", strerror(-ret));
		return ret;
	}
	ret = wait_signal(b, "the defer chain");
	if (ret)
		return ret;
	if (dr.err) {
		fprintf(stderr, "task_bench: defer chain (%s): %s\n",
			stackful ? "stackful" : "stackless", strerror(-dr.err));
		return dr.err;
	}
	if (dr.bumps != dr.m * k) {
		fprintf(stderr,
			"task_bench: defer chain (%s): %" PRIu64 " deferred calls ran, not %" PRIu64
			"\n",
			stackful ? "stackful" : "stackless", dr.bumps, dr.m * k);
		return -EPROTO;
	}
	*ns = dr.t_end - dr.t0;
	return 0;
}

/* ns per entry for one kind of task: (time(K) - time(1)) / (M (K - 1)). */
static int qilin_defer_round(struct bench *b, int stackful, int k_first, double *ns)
{
	uint64_t tk = 0, t1 = 0, k = b->c->defers;
	int ret;

	if (k_first) {
		ret = defer_chain(b, stackful, k, &tk);
		if (!ret)
			ret = defer_chain(b, stackful, 1, &t1);
	} else {
		ret = defer_chain(b, stackful, 1, &t1);
		if (!ret)
			ret = defer_chain(b, stackful, k, &tk);
	}
	if (ret)
		return ret;
	*ns = ((double)tk - (double)t1) / ((double)b->c->defer_tasks * (double)(k - 1));
	return 0;
}

static int qilin_defer_pair(struct bench *b, unsigned round, double *sl, double *sf)
{
	int ret = qilin_defer_round(b, 0, round % 2 == 0, sl);

	return ret ? ret : qilin_defer_round(b, 1, round % 2 == 0, sf);
}

static int go_defer_round(struct bench *b, double *loop, double *open)
{
	char args[CMD_LEN], line[LINE_LEN];

	snprintf(args, sizeof(args), "-mode defer -n %" PRIu64 " -k %" PRIu64 " -procs 1",
		 b->c->defer_tasks, b->c->defers);
	if (run_go(b, args, line, sizeof(line)))
		return -1;
	return parse_line("go-spawn", line, "ns_per_defer", loop, "ns_per_defer_open", open, NULL);
}

static int run_defer(struct bench *b)
{
	const struct config *c = b->c;
	unsigned n = c->rounds, i;
	double *sl = calloc(n, sizeof(double)), *sf = calloc(n, sizeof(double));
	double *gl = calloc(n, sizeof(double)), *go = calloc(n, sizeof(double)), w1, w2;
	struct stat3 sls, sfs, gls, gos;
	double ratio = 0, paired = 0;
	FILE *f;
	int ret;

	if (!sl || !sf || !gl || !go) {
		ret = -ENOMEM;
		goto out;
	}
	ret = exec_open(b, 1, c->ring_size);
	if (ret)
		goto out;
	ret = qilin_defer_pair(b, 0, &w1, &w2);
	for (i = 0; !ret && i < n; i++) {
		if (i % 2 == 0) {
			ret = qilin_defer_pair(b, i, &sl[i], &sf[i]);
			if (!ret && !c->no_peer)
				ret = go_defer_round(b, &gl[i], &go[i]) ? -EIO : 0;
		} else {
			if (!c->no_peer)
				ret = go_defer_round(b, &gl[i], &go[i]) ? -EIO : 0;
			if (!ret)
				ret = qilin_defer_pair(b, i, &sl[i], &sf[i]);
		}
	}
	if (ret)
		goto out;
	sls = stat3_of(sl, n);
	sfs = stat3_of(sf, n);
	gls = stat3_of(gl, n);
	gos = stat3_of(go, n);
	if (!c->no_peer) {
		ratio = ratio_of(gls.median, sls.median);
		paired = paired_ratio(sl, gl, n, 1);
	}

	printf("## defer: ql_defer plus its run, %" PRIu64 " tasks x %" PRIu64
	       " deferred calls (minus the same with 1), one worker, %u rounds\n\n",
	       c->defer_tasks, c->defers, n);
	printf("| system | median ns/entry | min | max |\n|---|---:|---:|---:|\n");
	printf("| qilin, stackless tasks | %.2f | %.2f | %.2f |\n", sls.median, sls.min, sls.max);
	printf("| qilin, stackful tasks | %.2f | %.2f | %.2f |\n", sfs.median, sfs.min, sfs.max);
	if (!c->no_peer) {
		printf("| go, %" PRIu64 " defers in a loop | %.2f | %.2f | %.2f |\n", c->defers,
		       gls.median, gls.min, gls.max);
		printf("| go, one open-coded defer per call (call included) | %.2f | %.2f | %.2f "
		       "|\n",
		       gos.median, gos.min, gos.max);
	}
	printf("\n| round | qilin stackless | qilin stackful |%s\n|---:|---:|---:|%s\n",
	       c->no_peer ? "" : " go loop | go open-coded |", c->no_peer ? "" : "---:|---:|");
	for (i = 0; i < n; i++) {
		printf("| %u | %.2f | %.2f |", i + 1, sl[i], sf[i]);
		if (!c->no_peer)
			printf(" %.2f | %.2f |", gl[i], go[i]);
		printf("\n");
	}
	printf("\nqilin: %.2f ns per entry in stackless tasks (target <= %.0f: %s), %.2f in "
	       "stackful ones",
	       sls.median, TARGET_DEFER_NS, verdict(sls.median <= TARGET_DEFER_NS), sfs.median);
	if (!c->no_peer)
		printf("; Go loop defer / qilin: %.2fx (paired %.2fx); Go open-coded / qilin: "
		       "%.2fx",
		       ratio, paired, ratio_of(gos.median, sls.median));
	printf("\n");

	f = json_open(b, SC_DEFER);
	if (!f) {
		ret = -ENOMEM;
		goto out;
	}
	fprintf(f,
		"  \"config\": {\"workers\": 1, \"pinned\": %s, \"rounds\": %u, \"tasks\": "
		"%" PRIu64 ", \"defers_per_task\": %" PRIu64 "},\n  \"systems\": {\n",
		c->no_pin ? "false" : "true", n, c->defer_tasks, c->defers);
	json_series(f, "qilin", "ns_per_entry", sl, n, ", \"tasks\": \"stackless\"", 0);
	json_series(f, "qilin_stackful", "ns_per_entry", sf, n, NULL, c->no_peer);
	if (!c->no_peer) {
		json_series(f, "go", "ns_per_entry", gl, n, ", \"what\": \"defers in a loop\"", 0);
		json_series(f, "go_open_coded", "ns_per_entry", go, n, NULL, 1);
	}
	fprintf(f, "  },\n  \"ratios\": {");
	if (!c->no_peer)
		fprintf(f,
			"\"qilin/go\": %.4f, \"qilin/go_paired\": %.4f, \"qilin/go_open_coded\": "
			"%.4f, \"qilin_stackful/go\": %.4f",
			ratio, paired, ratio_of(gos.median, sls.median),
			ratio_of(gls.median, sfs.median));
	fprintf(f, "},\n  \"target\": {\"max_ns_per_entry\": %.0f, \"met\": %s},\n",
		TARGET_DEFER_NS, sls.median <= TARGET_DEFER_NS ? "true" : "false");
	ret = json_close(b, f);
out:
	exec_close(b, ret == -ETIMEDOUT);
	free(sl);
	free(sf);
	free(gl);
	free(go);
	return ret;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: task_bench [-s SCENARIO] [-r ROUNDS] [-w WORKERS] [options]\n"
		"  -s SCENARIO       yield, spawn, park, pending, defer or all (default all)\n"
		"  -r ROUNDS         measured rounds per system (default %d)\n"
		"  -w WORKERS        workers for spawn, park, pending (default 0: one per CPU;\n"
		"                    yield and defer always use one)\n"
		"  --no-pin          do not pin the workers\n"
		"  --quick           %d rounds, a quarter of the counts, park at 100000 only\n"
		"  --yields Y        yields per task in yield (default %llu)\n"
		"  --tasks N         tasks per spawn+join round (default %llu)\n"
		"  --batch B         tasks spawned before joining them (default %llu)\n"
		"  --park LIST       parked-task counts, comma-separated (default 100000,1000000)\n"
		"  --park-rounds R   rounds for park sizes up to %llu and pending (default %d)\n"
		"  --big-rounds R    rounds for larger park sizes (default %d)\n"
		"  --park-mode M     join (on a gate task) or sleep (ql_sleep in a scope)\n"
		"  --pending N       pending ql_timeout_cb operations (default %llu)\n"
		"  --defer-tasks M   tasks per defer chain (default %llu)\n"
		"  --defers K        deferred calls per task (default %llu)\n"
		"  --ring SQ         SQ entries per worker ring (default: the executor's, or what\n"
		"                    pending / park-mode sleep need)\n"
		"  --go BIN          the go-spawn peer (default %s; bench/go/build.sh builds it)\n"
		"  --no-peer         run qilin only\n"
		"  --timeout S       give up on a round after S seconds (default %d)\n"
		"  --json FILE       also write the results as JSON\n",
		DEFAULT_ROUNDS, QUICK_ROUNDS, DEFAULT_YIELDS, DEFAULT_TASKS, DEFAULT_BATCH,
		BIG_PARK, DEFAULT_PARK_ROUNDS, DEFAULT_BIG_ROUNDS, DEFAULT_PENDING,
		DEFAULT_DEFER_TASKS, DEFAULT_DEFERS, DEFAULT_GO_BIN, DEFAULT_TIMEOUT_S);
}

/* Long options without a short form. */
enum {
	OPT_NO_PIN = 256,
	OPT_QUICK,
	OPT_YIELDS,
	OPT_TASKS,
	OPT_BATCH,
	OPT_PARK,
	OPT_PARK_ROUNDS,
	OPT_BIG_ROUNDS,
	OPT_PARK_MODE,
	OPT_PENDING,
	OPT_DEFER_TASKS,
	OPT_DEFERS,
	OPT_RING,
	OPT_GO,
	OPT_NO_PEER,
	OPT_TIMEOUT,
	OPT_JSON,
	OPT_CHILD,
	OPT_RSS_CAP
};

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
	fprintf(stderr,
		"task_bench: unknown scenario '%s' (yield, spawn, park, pending, defer, all)\n", s);
	return -1;
}

static int parse_park(const char *s, struct config *c)
{
	char buf[LINE_LEN], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	c->npark = 0;
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (c->npark == MAX_PARK_SIZES) {
			fprintf(stderr, "task_bench: --park takes at most %d sizes\n",
				MAX_PARK_SIZES);
			return -1;
		}
		if (parse_num("--park", tok, 1, MAX_PARK, &c->park[c->npark]))
			return -1;
		c->npark++;
	}
	if (!c->npark) {
		fprintf(stderr, "task_bench: --park wants at least one size\n");
		return -1;
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct config *c)
{
	static const struct option longopts[] = {
		{ "no-pin", no_argument, NULL, OPT_NO_PIN },
		{ "quick", no_argument, NULL, OPT_QUICK },
		{ "yields", required_argument, NULL, OPT_YIELDS },
		{ "tasks", required_argument, NULL, OPT_TASKS },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "park", required_argument, NULL, OPT_PARK },
		{ "park-rounds", required_argument, NULL, OPT_PARK_ROUNDS },
		{ "big-rounds", required_argument, NULL, OPT_BIG_ROUNDS },
		{ "park-mode", required_argument, NULL, OPT_PARK_MODE },
		{ "pending", required_argument, NULL, OPT_PENDING },
		{ "defer-tasks", required_argument, NULL, OPT_DEFER_TASKS },
		{ "defers", required_argument, NULL, OPT_DEFERS },
		{ "ring", required_argument, NULL, OPT_RING },
		{ "go", required_argument, NULL, OPT_GO },
		{ "no-peer", no_argument, NULL, OPT_NO_PEER },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "json", required_argument, NULL, OPT_JSON },
		{ "child", required_argument, NULL, OPT_CHILD },
		{ "rss-cap-kb", required_argument, NULL, OPT_RSS_CAP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int quick = 0, set_rounds = 0, set_yields = 0, set_tasks = 0, set_park = 0, set_defer = 0,
	    opt;
	uint64_t v;
	unsigned i;

	memset(c, 0, sizeof(*c));
	c->scenarios = (1u << SC_COUNT) - 1;
	c->rounds = DEFAULT_ROUNDS;
	c->yields = DEFAULT_YIELDS;
	c->tasks = DEFAULT_TASKS;
	c->batch = DEFAULT_BATCH;
	for (i = 0; i < sizeof(default_park_sizes) / sizeof(default_park_sizes[0]); i++)
		c->park[c->npark++] = default_park_sizes[i];
	c->park_rounds = DEFAULT_PARK_ROUNDS;
	c->big_rounds = DEFAULT_BIG_ROUNDS;
	c->park_mode = PARK_JOIN;
	c->pending = DEFAULT_PENDING;
	c->defer_tasks = DEFAULT_DEFER_TASKS;
	c->defers = DEFAULT_DEFERS;
	c->timeout_s = DEFAULT_TIMEOUT_S;
	c->go = DEFAULT_GO_BIN;
	while ((opt = getopt_long(argc, argv, "s:r:w:n:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (parse_scenarios(optarg, &c->scenarios))
				return -1;
			break;
		case 'r':
			if (parse_num("-r", optarg, 1, MAX_ROUNDS, &v))
				return -1;
			c->rounds = (unsigned)v;
			set_rounds = 1;
			break;
		case 'w':
			if (parse_num("-w", optarg, 0, MAX_WORKERS, &v))
				return -1;
			c->workers = (unsigned)v;
			break;
		case 'n': /* --child's count */
			if (parse_num("-n", optarg, 1, MAX_PARK, &c->child_n))
				return -1;
			break;
		case OPT_NO_PIN:
			c->no_pin = 1;
			break;
		case OPT_QUICK:
			quick = 1;
			break;
		case OPT_YIELDS:
			if (parse_num("--yields", optarg, 1, UINT64_MAX / 4, &c->yields))
				return -1;
			set_yields = 1;
			break;
		case OPT_TASKS:
			if (parse_num("--tasks", optarg, 1, UINT64_MAX / 4, &c->tasks))
				return -1;
			set_tasks = 1;
			break;
		case OPT_BATCH:
			if (parse_num("--batch", optarg, 1, MAX_BATCH, &c->batch))
				return -1;
			break;
		case OPT_PARK:
			if (parse_park(optarg, c))
				return -1;
			set_park = 1;
			break;
		case OPT_PARK_ROUNDS:
			if (parse_num("--park-rounds", optarg, 1, MAX_ROUNDS, &v))
				return -1;
			c->park_rounds = (unsigned)v;
			break;
		case OPT_BIG_ROUNDS:
			if (parse_num("--big-rounds", optarg, 1, MAX_ROUNDS, &v))
				return -1;
			c->big_rounds = (unsigned)v;
			break;
		case OPT_PARK_MODE:
			if (!strcmp(optarg, "join")) {
				c->park_mode = PARK_JOIN;
			} else if (!strcmp(optarg, "sleep")) {
				c->park_mode = PARK_SLEEP;
			} else {
				fprintf(stderr, "task_bench: --park-mode is join or sleep\n");
				return -1;
			}
			break;
		case OPT_PENDING:
			if (parse_num("--pending", optarg, 1, MAX_PARK, &c->pending))
				return -1;
			break;
		case OPT_DEFER_TASKS:
			if (parse_num("--defer-tasks", optarg, 1, UINT64_MAX / 4, &c->defer_tasks))
				return -1;
			set_defer = 1;
			break;
		case OPT_DEFERS:
			if (parse_num("--defers", optarg, 2, MAX_DEFERS, &c->defers))
				return -1;
			break;
		case OPT_RING:
			if (parse_num("--ring", optarg, 0, MAX_RING, &v))
				return -1;
			c->ring_size = (unsigned)v;
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
		case OPT_CHILD:
			c->child = optarg;
			break;
		case OPT_RSS_CAP:
			if (parse_num("--rss-cap-kb", optarg, 0, UINT64_MAX / 2, &c->rss_cap_kb))
				return -1;
			break;
		default:
			return usage_error_or_help(opt, usage);
		}
	}
	if (quick) {
		/* Only what was not given explicitly. */
		if (!set_rounds)
			c->rounds = QUICK_ROUNDS;
		if (!set_yields)
			c->yields /= QUICK_DIV;
		if (!set_tasks)
			c->tasks /= QUICK_DIV;
		if (!set_defer)
			c->defer_tasks /= QUICK_DIV;
		if (!set_park)
			c->npark = 1;
	}
	if (c->child && !c->child_n) {
		fprintf(stderr, "task_bench: --child needs -n\n");
		return -1;
	}
	return no_operands(argc, usage);
}

/* Write every scenario's JSON object: alone, or as an array when there are several. */
static int write_json(const struct bench *b, const char *path)
{
	return write_json_objects("task_bench", b->json, b->json_len, SC_COUNT, path);
}

static int run_scenario(struct bench *b, enum scenario sc)
{
	unsigned i;
	int ret;

	b->nanomalies = 0;
	switch (sc) {
	case SC_YIELD:
		ret = run_yield(b);
		break;
	case SC_SPAWN:
		ret = run_spawn(b);
		break;
	case SC_PARK:
		ret = run_park(b);
		break;
	case SC_PENDING:
		ret = run_pending(b);
		break;
	default:
		ret = run_defer(b);
		break;
	}
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
	ssize_t len;
	int ret = 0, status = 1;

	if (parse_args(argc, argv, &c))
		return 2;
	if (c.child)
		return child_main(&c);
	memset(&b, 0, sizeof(b));
	b.c = &c;
	b.efd = -1;
	if (uname(&uts)) {
		perror("task_bench: uname");
		return 1;
	}
	b.kernel = uts.release;
	b.cores = sysconf(_SC_NPROCESSORS_ONLN);
	b.ncpus = affinity_count();
	len = readlink("/proc/self/exe", b.self, sizeof(b.self) - 1);
	if (len <= 0) {
		perror("task_bench: readlink /proc/self/exe");
		return 1;
	}
	b.self[len] = '\0';
	if (!c.no_peer && access(c.go, X_OK)) {
		fprintf(stderr,
			"task_bench: no Go peer at %s (%s): build it with bench/go/build.sh "
			"build/bench, name it with --go, or run qilin alone with --no-peer\n",
			c.go, strerror(errno));
		goto out;
	}
	b.efd = eventfd(0, EFD_CLOEXEC);
	if (b.efd < 0) {
		perror("task_bench: eventfd");
		goto out;
	}
	printf("# qilin %s stackful-task benchmarks\n\nMachine: %ld cores, kernel %s; %u CPUs "
	       "in the affinity mask. Workers %s, %s.\n\n",
	       ql_version(), b.cores, b.kernel, b.ncpus,
	       c.workers ? "as -w says" : "one per CPU (1 for yield and defer)",
	       c.no_pin ? "not pinned" : "pinned");
	for (i = 0; i < SC_COUNT && !ret; i++)
		if (c.scenarios & (1u << i))
			ret = run_scenario(&b, (enum scenario)i);
	if (ret == -ETIMEDOUT) {
		fprintf(stderr, "task_bench: stopped after a hang\n");
		/* Workers may still touch the rounds' state: neither free it nor exit cleanly. */
		restore_map_count();
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
	return status;
}
