/* SPDX-License-Identifier: MIT */
/*
 * bench/nop_bench.c - NOP round trips: a plain liburing loop against the ring layer.
 *
 * What it measures. IORING_OP_NOP does no work in the kernel, so a loop that keeps DEPTH
 * NOPs in flight measures nothing but the cost of the submission and completion path:
 * filling SQEs, one io_uring_enter per batch, reaping CQEs. That is exactly the overhead
 * the ring layer adds on top of liburing, so this benchmark runs the same workload two ways
 * in one process and compares them:
 *
 *   liburing      the best-practice raw loop. DEPTH NOPs are kept in flight; each iteration
 *                 is one io_uring_submit_and_wait(), then io_uring_peek_batch_cqe() takes
 *                 every CQE available, io_uring_cq_advance() releases them all at once,
 *                 and one new NOP is prepared per CQE reaped.
 *   uring_layer   the same through uring/ring.h. DEPTH struct ql_op records; each record's
 *                 continuation re-queues its NOP (ql__ring_sqe, io_uring_prep_nop,
 *                 ql__ring_sqe_op) and the loop is nothing but ql__ring_run().
 *
 * Fairness. The ring layer's ring is set up first; the plain ring then gets the setup flags
 * the kernel granted it (r->setup_flags), the same SQ and CQ sizes, and a registered ring
 * fd if the layer uses one. Rounds alternate which system goes first, and one warm-up round
 * of each is run and discarded before measuring. Both loops read the clock once per enter.
 *
 * Output. A Markdown table on stdout: median, minimum and maximum ops/s over the rounds,
 * SQEs per io_uring_enter, and the ratio uring_layer/liburing of the median ops/s against
 * its target (>= 0.90, and >= 16 SQEs per enter at depth 64). Two more figures help on a
 * shared machine, where a neighbour can steal the CPU in the middle of a round: ops per
 * second of the thread's own CPU time (CLOCK_THREAD_CPUTIME_ID), and the median of the
 * per-round ratios (the two halves of a round run back to back, so they share conditions).
 * With --json FILE the same figures are written as one JSON object:
 *   {"scenario":"nop","machine":{"cores":..,"kernel":..},"config":{..},
 *    "systems":{"liburing":{"median_ops_s":..,"runs":[..],..},
 *               "uring_layer":{"median_ops_s":..,"runs":[..],"sqes_per_enter":..,..}},
 *    "ratios":{"uring_layer/liburing":..,"uring_layer/liburing_cpu":..,
 *              "uring_layer/liburing_paired":..}}
 *
 * Run it:
 *   make benches && build/bench/nop_bench                  5 rounds of ~1 s each, depth 64
 *   build/bench/nop_bench -n 2000000 -r 7 -d 128 --json nop.json
 * Options: -n OPS (ops per round instead of ~1 s), -r ROUNDS (5), -d DEPTH (64), -b BATCH
 * (CQEs each enter waits for, 1 by default, at most DEPTH), --json FILE. The environment
 * variable QILIN_URING_DISABLE forces ring features off for both systems alike.
 *
 * Exit status: 0 when every round ran (whether or not the targets were met), 1 on any error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

#define BENCH_PROG "nop_bench"
#include "bench_util.h"

/* Defaults for the command-line options. */
#define DEFAULT_ROUNDS 5
#define DEFAULT_DEPTH 64
#define DEFAULT_BATCH 1

/* Upper bounds the options are checked against. */
#define MAX_ROUNDS 1000
#define MAX_DEPTH 4096

/* A round without -n lasts this long (it then drains what is still in flight). */
#define ROUND_NS NS_PER_S

/* Operations in the discarded warm-up round of each system. */
#define WARMUP_OPS 200000ull

/* The SQ size the ring layer picks when asked for 0; a deeper run asks for more. */
#define LAYER_DEFAULT_SQ 256

/* How long ql__ring_exit() may wait for in-flight operations at the end. */
#define EXIT_TIMEOUT_NS NS_PER_S

/* The targets the ring layer is held to (see the top of this file). */
#define TARGET_RATIO 0.90
#define TARGET_SQES_PER_ENTER 16.0
#define TARGET_DEPTH 64

/* Room for ql__ring_features_str(): every feature name, comma-separated. */
#define FEATURES_STR_LEN 256

/* Setup flags that cannot simply be copied to a second ring: they need more parameters. */
#define UNCOPYABLE_SETUP_FLAGS (IORING_SETUP_ATTACH_WQ | IORING_SETUP_R_DISABLED)

struct config {
	uint64_t ops; /* operations per round, 0: time-bound rounds */
	unsigned rounds;
	unsigned depth;
	unsigned batch;	  /* wait_nr of each enter */
	const char *json; /* --json FILE, or NULL */
};

/* What one round of one system measured. */
struct round_result {
	double ops_s;	  /* operations per second of wall-clock time */
	double cpu_ops_s; /* operations per second of this thread's CPU time (user + system) */
	uint64_t ops;
	uint64_t sqes;
	uint64_t enters;
};

/* Wall-clock and CPU-time marks taken at the start of a round. */
struct round_clock {
	uint64_t wall;
	uint64_t cpu;
};

/* The plain liburing side: its ring and the CQE pointer array peek fills. */
struct plain {
	struct io_uring ring;
	struct io_uring_cqe **cqes;
	int registered; /* ring fd registered with io_uring_register_ring_fd() */
};

/*
 * The ring-layer side. Every in-flight NOP is one slot; the round's shared state sits in
 * one struct the continuations reach through their slot.
 */
struct layer_round {
	uint64_t limit; /* operations to issue, 0: until stop */
	uint64_t issued;
	uint64_t done;
	unsigned inflight;
	int stop; /* set once the round's time is up */
	int err;  /* first error seen (a negative errno), or 0 */
	/*
	 * NOPs the continuation may still send out: limit (or "unlimited"),
	 * zeroed by stop or by an error. One decrement per NOP keeps the
	 * harness's own cost per operation as low as the raw loop's.
	 */
	uint64_t budget;
};

struct layer_slot {
	struct ql_op op;
	struct layer_round *round;
};

static void round_clock_start(struct round_clock *rc)
{
	rc->cpu = cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID);
	rc->wall = now_ns();
}

/*
 * Turn ops done since rc into rates. The CPU-time rate leaves out the time other processes
 * took the CPU from this thread, which wall-clock rates on a shared machine include.
 */
static void round_clock_stop(const struct round_clock *rc, uint64_t ops, struct round_result *out)
{
	uint64_t wall = now_ns() - rc->wall, cpu = cpu_clock_ns(CLOCK_THREAD_CPUTIME_ID) - rc->cpu;

	out->ops = ops;
	out->ops_s = wall ? (double)ops * NSEC_PER_SEC / (double)wall : 0;
	out->cpu_ops_s = cpu && rc->cpu ? (double)ops * NSEC_PER_SEC / (double)cpu : 0;
}

static unsigned min_u(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------------------------ plain liburing */

/*
 * Set up the plain ring as the ring layer's twin: same granted setup flags, same SQ and CQ
 * sizes, and a registered ring fd if the layer enters through one.
 */
static int plain_init(struct plain *p, const struct ql_ring *r, unsigned depth)
{
	struct io_uring_params params;
	int ret;

	memset(p, 0, sizeof(*p));
	memset(&params, 0, sizeof(params));
	params.flags = (r->setup_flags & ~UNCOPYABLE_SETUP_FLAGS) | IORING_SETUP_CQSIZE;
	params.cq_entries = r->cq_entries;
	ret = io_uring_queue_init_params(r->sq_entries, &p->ring, &params);
	if (ret < 0) {
		fprintf(stderr, "nop_bench: io_uring_queue_init_params(flags 0x%x): %s\n",
			params.flags, strerror(-ret));
		return ret;
	}
	if (p->ring.sq.ring_entries != r->sq_entries || p->ring.cq.ring_entries != r->cq_entries)
		fprintf(stderr,
			"nop_bench: note: plain ring got sq %u cq %u, ring layer sq %u cq %u\n",
			p->ring.sq.ring_entries, p->ring.cq.ring_entries, r->sq_entries,
			r->cq_entries);
	if (r->enter_flags & IORING_ENTER_REGISTERED_RING) {
		/* Returns the number of fds registered, so 1 on success. */
		ret = io_uring_register_ring_fd(&p->ring);
		if (ret != 1) {
			fprintf(stderr, "nop_bench: io_uring_register_ring_fd: %s\n",
				ret < 0 ? strerror(-ret) : "registered nothing");
			io_uring_queue_exit(&p->ring);
			return ret < 0 ? ret : -EIO;
		}
		p->registered = 1;
	}
	p->cqes = calloc(depth, sizeof(*p->cqes));
	if (!p->cqes) {
		io_uring_queue_exit(&p->ring);
		return -ENOMEM;
	}
	return 0;
}

static void plain_exit(struct plain *p)
{
	free(p->cqes);
	io_uring_queue_exit(&p->ring);
}

/*
 * One round of the raw loop. limit is the number of NOPs to issue (0: run for ROUND_NS).
 * Returns 0 or -errno; a failed NOP (negative res) fails the round after the drain.
 */
static int plain_round(struct plain *p, const struct config *c, uint64_t limit,
		       struct round_result *out)
{
	struct io_uring *ring = &p->ring;
	uint64_t issued = 0, done = 0, enters = 0;
	unsigned inflight = 0;
	int stop = 0, err = 0;
	struct round_clock rc;
	uint64_t deadline;

	round_clock_start(&rc);
	deadline = rc.wall + ROUND_NS;
	while (inflight < c->depth && (!limit || issued < limit)) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

		if (!sqe)
			return -EBUSY;
		io_uring_prep_nop(sqe);
		inflight++;
		issued++;
	}
	while (inflight) {
		unsigned n, i;
		int ret;

		/* Never wait for more CQEs than there are NOPs left to complete. */
		ret = io_uring_submit_and_wait(ring, min_u(c->batch, inflight));
		if (ret < 0) {
			if (ret == -EINTR)
				continue;
			fprintf(stderr, "nop_bench: io_uring_submit_and_wait: %s\n",
				strerror(-ret));
			return ret;
		}
		enters++;
		n = io_uring_peek_batch_cqe(ring, p->cqes, c->depth);
		for (i = 0; i < n; i++)
			if (p->cqes[i]->res < 0 && !err)
				err = p->cqes[i]->res;
		io_uring_cq_advance(ring, n);
		inflight -= n;
		done += n;
		if (err || (!limit && now_ns() >= deadline))
			stop = 1;
		for (i = 0; i < n && !stop && (!limit || issued < limit); i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

			/* The SQ holds DEPTH entries and at most DEPTH are ever queued. */
			if (!sqe)
				return -EBUSY;
			io_uring_prep_nop(sqe);
			inflight++;
			issued++;
		}
	}
	if (err) {
		fprintf(stderr, "nop_bench: liburing NOP failed: %s\n", strerror(-err));
		return err;
	}
	round_clock_stop(&rc, done, out);
	out->sqes = issued;
	out->enters = enters;
	return 0;
}

/* ------------------------------------------------------------------ ring layer */

static int layer_may_issue(const struct layer_round *lr)
{
	return lr->budget != 0;
}

/* Queue a slot's first NOP of a round (the continuation re-queues the later ones itself). */
static int layer_queue_nop(struct ql_ring *r, struct layer_slot *s)
{
	struct io_uring_sqe *sqe = ql__ring_sqe(r, &s->op);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_nop(sqe);
	ql__ring_sqe_op(sqe, &s->op);
	s->round->issued++;
	s->round->budget--;
	s->round->inflight++;
	return 0;
}

/*
 * The continuation: count the NOP and, while the round goes on, send the record out again.
 * Kept as lean as the raw loop's refill: the in-flight count changes only when a NOP is not
 * re-queued, and the error path is out of line.
 */
static void layer_nop_done(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct layer_slot *s = container_of(op, struct layer_slot, op);
	struct layer_round *lr = s->round;
	struct io_uring_sqe *sqe;

	lr->done++;
	if (__builtin_expect(res < 0, 0) && !lr->err) {
		lr->err = res;
		lr->budget = 0;
	}
	if (layer_may_issue(lr)) {
		sqe = ql__ring_sqe(r, op);
		if (sqe) {
			io_uring_prep_nop(sqe);
			ql__ring_sqe_op(sqe, op);
			lr->budget--;
			return;
		}
		lr->err = -EBUSY;
		lr->budget = 0;
	}
	lr->inflight--;
}

/* One round through the ring layer; same contract as plain_round(). */
static int layer_round(struct ql_ring *r, struct layer_round *lr, struct layer_slot *slots,
		       const struct config *c, uint64_t limit, struct round_result *out)
{
	struct ql_ring_stats before, after;
	struct round_clock rc;
	uint64_t deadline;
	unsigned i;
	int ret;

	memset(lr, 0, sizeof(*lr));
	lr->limit = limit;
	lr->budget = limit ? limit : UINT64_MAX;
	for (i = 0; i < c->depth; i++) {
		memset(&slots[i], 0, sizeof(slots[i]));
		slots[i].op.fn = layer_nop_done;
		slots[i].round = lr;
	}
	ql__ring_stats(r, &before);
	round_clock_start(&rc);
	deadline = rc.wall + ROUND_NS;
	for (i = 0; i < c->depth && layer_may_issue(lr); i++) {
		ret = layer_queue_nop(r, &slots[i]);
		if (ret) {
			lr->err = ret;
			break;
		}
	}
	while (lr->inflight) {
		ret = ql__ring_run(r, min_u(c->batch, lr->inflight), 0);
		if (ret < 0) {
			if (ret == -EINTR)
				continue;
			/*
			 * The records stay armed and ql__ring_exit() will dispatch them: lr
			 * outlives this call, and its error stops them from re-queueing.
			 */
			lr->err = ret;
			fprintf(stderr, "nop_bench: ql__ring_run: %s\n", strerror(-ret));
			return ret;
		}
		if (!limit && now_ns() >= deadline)
			lr->stop = 1, lr->budget = 0;
	}
	if (lr->err) {
		fprintf(stderr, "nop_bench: ring layer NOP failed: %s\n", strerror(-lr->err));
		return lr->err;
	}
	round_clock_stop(&rc, lr->done, out);
	ql__ring_stats(r, &after);
	out->sqes = after.sqes - before.sqes;
	out->enters = after.enters - before.enters;
	return 0;
}

/* ------------------------------------------------------------------ reporting */

/* Summary of one system over all rounds. */
struct summary {
	double median, min, max; /* wall-clock ops/s */
	double cpu_median;	 /* ops per CPU-second */
	double sqes_per_enter;	 /* total SQEs / total enters over the measured rounds */
};

/* The layer's figures over liburing's. */
struct ratios {
	double wall;   /* median ops/s over median ops/s: the figure the target is about */
	double cpu;    /* the same with ops per CPU-second */
	double paired; /* median of the rounds' own ratios (each pair ran back to back) */
};

/* Everything the report and the JSON file show. */
struct report {
	const struct config *c;
	const struct ql_ring *r;
	char features[FEATURES_STR_LEN];
	const char *kernel;
	long cores;
	const struct round_result *plain_res, *layer_res;
	struct summary ps, ls;
	struct ratios ratio;
};

/* Fill rep's summaries and ratios from its rounds. Returns 0 or -ENOMEM. */
static int summarize(struct report *rep)
{
	const struct round_result *res[2] = { rep->plain_res, rep->layer_res };
	struct summary *sum[2] = { &rep->ps, &rep->ls };
	unsigned n = rep->c->rounds, i, k;
	double *v = malloc(n * sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (k = 0; k < 2; k++) {
		uint64_t sqes = 0, enters = 0;

		for (i = 0; i < n; i++) {
			v[i] = res[k][i].ops_s;
			sqes += res[k][i].sqes;
			enters += res[k][i].enters;
		}
		sum[k]->median = median(v, n);
		sum[k]->min = v[0];
		sum[k]->max = v[n - 1];
		sum[k]->sqes_per_enter = enters ? (double)sqes / (double)enters : 0;
		for (i = 0; i < n; i++)
			v[i] = res[k][i].cpu_ops_s;
		sum[k]->cpu_median = median(v, n);
	}
	for (i = 0; i < n; i++)
		v[i] = ratio_of(rep->layer_res[i].ops_s, rep->plain_res[i].ops_s);
	rep->ratio.paired = median(v, n);
	rep->ratio.wall = ratio_of(rep->ls.median, rep->ps.median);
	rep->ratio.cpu = ratio_of(rep->ls.cpu_median, rep->ps.cpu_median);
	free(v);
	return 0;
}

static void json_system(FILE *f, const char *name, const struct round_result *res, unsigned n,
			const struct summary *s, int last)
{
	unsigned i;

	fprintf(f, "    ");
	json_string(f, name);
	fprintf(f,
		": {\"median_ops_s\": %.0f, \"min_ops_s\": %.0f, \"max_ops_s\": %.0f, "
		"\"median_ops_per_cpu_s\": %.0f, \"sqes_per_enter\": %.2f, \"runs\": [",
		s->median, s->min, s->max, s->cpu_median, s->sqes_per_enter);
	for (i = 0; i < n; i++)
		fprintf(f, "%s%.0f", i ? ", " : "", res[i].ops_s);
	fprintf(f, "], \"runs_ops_per_cpu_s\": [");
	for (i = 0; i < n; i++)
		fprintf(f, "%s%.0f", i ? ", " : "", res[i].cpu_ops_s);
	fprintf(f, "]}%s\n", last ? "" : ",");
}

static int write_json(const char *path, const struct report *rep)
{
	const struct config *c = rep->c;
	const struct ql_ring *r = rep->r;
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "nop_bench: %s: %s\n", path, strerror(errno));
		return -1;
	}
	fprintf(f, "{\n  \"scenario\": \"nop\",\n");
	json_machine_open(f, rep->cores, rep->kernel);
	fprintf(f,
		"},\n  \"config\": {\"depth\": %u, \"batch\": %u, \"rounds\": %u, "
		"\"ops_per_round\": %" PRIu64 ", \"round_seconds\": %.1f, "
		"\"setup_flags\": %u, \"sq_entries\": %u, \"cq_entries\": %u, \"features\": ",
		c->depth, c->batch, c->rounds, c->ops, c->ops ? 0.0 : ROUND_NS / NSEC_PER_SEC,
		r->setup_flags, r->sq_entries, r->cq_entries);
	json_string(f, rep->features);
	fprintf(f, "},\n  \"systems\": {\n");
	json_system(f, "liburing", rep->plain_res, c->rounds, &rep->ps, 0);
	json_system(f, "uring_layer", rep->layer_res, c->rounds, &rep->ls, 1);
	fprintf(f,
		"  },\n  \"ratios\": {\"uring_layer/liburing\": %.4f, "
		"\"uring_layer/liburing_cpu\": %.4f, \"uring_layer/liburing_paired\": %.4f}\n}\n",
		rep->ratio.wall, rep->ratio.cpu, rep->ratio.paired);
	if (ferror(f) | fclose(f)) {
		fprintf(stderr, "nop_bench: writing %s failed\n", path);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nop_bench [-n OPS] [-r ROUNDS] [-d DEPTH] [-b BATCH] [--json FILE]\n"
		"  -n OPS      NOPs per round (default: rounds of ~1 s)\n"
		"  -r ROUNDS   measured rounds per system (default %d)\n"
		"  -d DEPTH    NOPs kept in flight (default %d)\n"
		"  -b BATCH    CQEs each enter waits for, 1..DEPTH (default %d)\n"
		"  --json FILE also write the results as JSON\n",
		DEFAULT_ROUNDS, DEFAULT_DEPTH, DEFAULT_BATCH);
}

static int parse_args(int argc, char **argv, struct config *c)
{
	static const struct option longopts[] = {
		{ "json", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int opt;

	memset(c, 0, sizeof(*c));
	c->rounds = DEFAULT_ROUNDS;
	c->depth = DEFAULT_DEPTH;
	c->batch = DEFAULT_BATCH;
	while ((opt = getopt_long(argc, argv, "n:r:d:b:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (parse_num("-n", optarg, 1, UINT64_MAX, &c->ops))
				return -1;
			break;
		case 'r':
			if (parse_num("-r", optarg, 1, MAX_ROUNDS, &v))
				return -1;
			c->rounds = (unsigned)v;
			break;
		case 'd':
			if (parse_num("-d", optarg, 1, MAX_DEPTH, &v))
				return -1;
			c->depth = (unsigned)v;
			break;
		case 'b':
			if (parse_num("-b", optarg, 1, MAX_DEPTH, &v))
				return -1;
			c->batch = (unsigned)v;
			break;
		case 'j':
			c->json = optarg;
			break;
		default:
			return usage_error_or_help(opt, usage);
		}
	}
	if (no_operands(argc, usage))
		return -1;
	if (c->batch > c->depth) {
		fprintf(stderr, "nop_bench: -b %u exceeds -d %u\n", c->batch, c->depth);
		return -1;
	}
	return 0;
}

/* Run both systems' rounds, alternating which one goes first. Returns 0 or -errno. */
static int run_rounds(struct ql_ring *r, struct plain *p, struct layer_round *lr,
		      struct layer_slot *slots, const struct config *c,
		      struct round_result *plain_res, struct round_result *layer_res)
{
	struct round_result warm;
	unsigned i;
	int ret;

	ret = plain_round(p, c, WARMUP_OPS, &warm);
	if (!ret)
		ret = layer_round(r, lr, slots, c, WARMUP_OPS, &warm);
	for (i = 0; !ret && i < c->rounds; i++) {
		if (i % 2 == 0) {
			ret = plain_round(p, c, c->ops, &plain_res[i]);
			if (!ret)
				ret = layer_round(r, lr, slots, c, c->ops, &layer_res[i]);
		} else {
			ret = layer_round(r, lr, slots, c, c->ops, &layer_res[i]);
			if (!ret)
				ret = plain_round(p, c, c->ops, &plain_res[i]);
		}
	}
	return ret;
}

static void print_system(const char *name, const struct summary *s)
{
	printf("| %s | %.0f | %.0f | %.0f | %.0f | %.1f |\n", name, s->median, s->min, s->max,
	       s->cpu_median, s->sqes_per_enter);
}

static void print_report(const struct report *rep)
{
	const struct config *c = rep->c;
	const struct ql_ring *r = rep->r;
	const char *env = getenv(QL_RING_DISABLE_ENV);
	unsigned i;

	printf("## NOP round trips: depth %u, wait for %u CQE%s per enter, %u rounds of ", c->depth,
	       c->batch, c->batch == 1 ? "" : "s", c->rounds);
	if (c->ops)
		printf("%" PRIu64 " ops\n\n", c->ops);
	else
		printf("~%.0f s\n\n", ROUND_NS / NSEC_PER_SEC);
	printf("Machine: %ld cores, kernel %s. Both rings: sq %u, cq %u, setup flags 0x%x, "
	       "registered ring fd %s.\nRing features: %s.",
	       rep->cores, rep->kernel, r->sq_entries, r->cq_entries, r->setup_flags,
	       (r->enter_flags & IORING_ENTER_REGISTERED_RING) ? "yes" : "no", rep->features);
	if (env)
		printf(" Forced off by %s=%s.", QL_RING_DISABLE_ENV, env);
	printf("\n\n| system | median ops/s | min ops/s | max ops/s | median ops/CPU-s | "
	       "SQEs/enter |\n|---|---:|---:|---:|---:|---:|\n");
	print_system("liburing", &rep->ps);
	print_system("uring_layer", &rep->ls);
	printf("\n| round | liburing ops/s | uring_layer ops/s | ratio |\n|---:|---:|---:|---:|\n");
	for (i = 0; i < c->rounds; i++)
		printf("| %u | %.0f | %.0f | %.3f |\n", i + 1, rep->plain_res[i].ops_s,
		       rep->layer_res[i].ops_s,
		       ratio_of(rep->layer_res[i].ops_s, rep->plain_res[i].ops_s));
	printf("\nRatio uring_layer/liburing (median ops/s): %.3f (target >= %.2f: %s)\n",
	       rep->ratio.wall, TARGET_RATIO, verdict(rep->ratio.wall >= TARGET_RATIO));
	printf("  same, per CPU-second: %.3f; median of the rounds' ratios: %.3f\n", rep->ratio.cpu,
	       rep->ratio.paired);
	if (c->depth == TARGET_DEPTH)
		printf("uring_layer SQEs per enter: %.1f (target >= %.0f at depth %d: %s)\n",
		       rep->ls.sqes_per_enter, TARGET_SQES_PER_ENTER, TARGET_DEPTH,
		       verdict(rep->ls.sqes_per_enter >= TARGET_SQES_PER_ENTER));
	else
		printf("uring_layer SQEs per enter: %.1f (the target applies at depth %d)\n",
		       rep->ls.sqes_per_enter, TARGET_DEPTH);
}

int main(int argc, char **argv)
{
	struct config c;
	struct ql_ring r;
	struct ql_ring_opts opts;
	struct plain p;
	struct layer_round lr;
	struct layer_slot *slots = NULL;
	struct round_result *plain_res = NULL, *layer_res = NULL;
	struct report rep;
	struct utsname uts;
	int ret, status = 1;

	if (parse_args(argc, argv, &c))
		return 2;
	memset(&r, 0, sizeof(r));
	memset(&lr, 0, sizeof(lr));
	memset(&rep, 0, sizeof(rep));
	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	/* The SQ must hold a whole refill; the layer's default is enough up to depth 256. */
	opts.sq_entries = c.depth > LAYER_DEFAULT_SQ ? c.depth : 0;
	ret = ql__ring_init(&r, &opts);
	if (ret) {
		fprintf(stderr, "nop_bench: ring init failed: %s\n", ql__ring_last_error());
		return 1;
	}
	if (r.inflight_cap && r.inflight_cap < c.depth)
		fprintf(stderr,
			"nop_bench: note: the ring bounds in-flight operations at %u, "
			"below depth %u\n",
			r.inflight_cap, c.depth);
	ret = plain_init(&p, &r, c.depth);
	if (ret) {
		/* Nothing was queued on the ring yet, so its exit has nothing to wait for. */
		if (ql__ring_exit(&r, EXIT_TIMEOUT_NS))
			fprintf(stderr, "nop_bench: ql__ring_exit: %s\n", ql__ring_last_error());
		return 1;
	}
	slots = calloc(c.depth, sizeof(*slots));
	plain_res = calloc(c.rounds, sizeof(*plain_res));
	layer_res = calloc(c.rounds, sizeof(*layer_res));
	if (!slots || !plain_res || !layer_res) {
		fprintf(stderr, "nop_bench: out of memory\n");
		goto out;
	}
	if (uname(&uts)) {
		perror("nop_bench: uname");
		goto out;
	}
	rep.c = &c;
	rep.r = &r;
	rep.kernel = uts.release;
	rep.cores = sysconf(_SC_NPROCESSORS_ONLN);
	rep.plain_res = plain_res;
	rep.layer_res = layer_res;
	ql__ring_features_str(r.features, rep.features, sizeof(rep.features));

	if (run_rounds(&r, &p, &lr, slots, &c, plain_res, layer_res))
		goto out;
	if (summarize(&rep)) {
		fprintf(stderr, "nop_bench: out of memory\n");
		goto out;
	}
	print_report(&rep);
	if (c.json && write_json(c.json, &rep))
		goto out;
	status = 0;
out:
	/* The slots may still be armed after a failed round: exit the ring before freeing them. */
	ret = ql__ring_exit(&r, EXIT_TIMEOUT_NS);
	if (ret) {
		fprintf(stderr, "nop_bench: ql__ring_exit: %s\n", strerror(-ret));
		status = 1;
		/* Records may still be named by the kernel: leak them rather than free them. */
		slots = NULL;
	}
	plain_exit(&p);
	free(slots);
	free(plain_res);
	free(layer_res);
	return status;
}
