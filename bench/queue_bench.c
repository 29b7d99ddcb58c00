/* SPDX-License-Identifier: MIT */
/*
 * bench/queue_bench.c - micro-benchmarks of the run queues (lib/queue.c).
 *
 * What it measures, one line per scenario:
 *
 *   deque push+pop       the owner alone: push one item, pop it, repeat. The
 *                        scheduler's hot path when a task wakes a task. The
 *                        pop pays the one seq_cst store of Chase-Lev.
 *   deque burst 128      the owner alone: push 128 items, pop 128 (ns per
 *                        push+pop pair).
 *   deque steal (solo)   one thread: push 128, steal 128 (ns per pair); the
 *                        cost of a steal without contention.
 *   steal, contended     an owner keeps its deque full (pushing whenever
 *                        there is room) while T thieves call
 *                        ql__deque_steal() in a loop: steals per second, in
 *                        total and per thief, and the share of steal calls
 *                        that came back empty-handed. A thief yields its
 *                        CPU after 64 misses in a row, as a worker would
 *                        park.
 *   steal-half, cont.    the same, but each thief calls
 *                        ql__deque_steal_half() into its own deque and pops
 *                        what it got: items moved per second.
 *   inbox, P producers   P threads push nodes one by one into one inbox, one
 *                        consumer takes all: nodes per second.
 *   global, 4+4          4 threads push batches of 16, 4 take everything:
 *                        nodes per second.
 *
 * The single-thread figures are the median over ROUNDS rounds (min and max
 * beside it); the contended ones run for SECONDS each. On a machine with
 * fewer free CPUs than threads the contended figures measure the scheduler
 * as much as the queues: the CPU count is printed with them.
 *
 * Run it:
 *   make benches && build/bench/queue_bench
 *   build/bench/queue_bench -n 20000000 -r 7 -d 2 -t 3
 * Options: -n PAIRS (single-thread iterations per round, 10,000,000),
 * -r ROUNDS (5), -d SECONDS (per contended scenario, 1), -t THIEVES (3),
 * -p PRODUCERS (inbox, 4).
 *
 * Exit status: 0, or 1 on a bad option or a failed setup.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue.h"

#define MAX_THREADS 64
#define BURST 128
#define DEQUE_CAP 256

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "queue_bench: %s: %s\n", what, strerror(err));
	exit(1);
}

/* ------------------------------------------------------------- single thread */

enum solo { SOLO_PAIR, SOLO_BURST, SOLO_STEAL };

/* One round of a single-thread scenario; returns ns per push + pop/steal pair. */
static double solo_round(struct ql_deque *d, enum solo kind, uint64_t pairs)
{
	void *item = (void *)(uintptr_t)1;
	uint64_t sink = 0, t0, t1;

	t0 = now_ns();
	switch (kind) {
	case SOLO_PAIR:
		for (uint64_t i = 0; i < pairs; i++) {
			ql__deque_push_local(d, item);
			sink += (uintptr_t)ql__deque_pop_local(d);
		}
		break;
	case SOLO_BURST:
	case SOLO_STEAL:
		for (uint64_t i = 0; i + BURST <= pairs; i += BURST) {
			for (int j = 0; j < BURST; j++)
				ql__deque_push_local(d, item);
			for (int j = 0; j < BURST; j++)
				sink += (uintptr_t)(kind == SOLO_BURST ? ql__deque_pop_local(d) :
									 ql__deque_steal(d));
		}
		pairs = pairs / BURST * BURST;
		break;
	}
	t1 = now_ns();
	if (sink != pairs) {
		fprintf(stderr, "queue_bench: lost items (%llu of %llu)\n",
			(unsigned long long)sink, (unsigned long long)pairs);
		exit(1);
	}
	return (double)(t1 - t0) / (double)pairs;
}

static void solo(const char *name, enum solo kind, uint64_t pairs, int rounds)
{
	static struct ql_deque d;
	double r[64];
	int ret;

	if ((ret = ql__deque_init(&d, DEQUE_CAP)) < 0)
		die("deque init", -ret);
	solo_round(&d, kind, pairs / 10 + 1); /* warm-up */
	for (int i = 0; i < rounds; i++)
		r[i] = solo_round(&d, kind, pairs);
	qsort(r, (size_t)rounds, sizeof(r[0]), cmp_double);
	printf("%-22s %8.2f ns/pair   (min %.2f, max %.2f, %d rounds of %llu)\n", name,
	       r[rounds / 2], r[0], r[rounds - 1], rounds, (unsigned long long)pairs);
	ql__deque_fini(&d);
}

/* ------------------------------------------------------------- contended steals */

struct bthief {
	struct ql_deque dq; /* steal-half destination */
	pthread_t th;
	uint64_t got;	/* items stolen */
	uint64_t calls; /* steal or steal-half calls */
	uint64_t empty; /* calls that got nothing */
	int half;
};

static struct {
	struct ql_deque owner;
	struct bthief thieves[MAX_THREADS];
	atomic_int stop;
	pthread_barrier_t start;
} cs;

static void *cs_owner(void *arg)
{
	void *item = (void *)(uintptr_t)1;
	uint64_t *pushed = arg, n = 0;

	pthread_barrier_wait(&cs.start);
	/* relaxed: a stop flag; the join orders everything else. */
	while (!atomic_load_explicit(&cs.stop, memory_order_relaxed)) {
		if (ql__deque_push_local(&cs.owner, item) == 0)
			n++;
		else
			sched_yield(); /* full: the thieves are the bottleneck */
	}
	*pushed = n;
	return NULL;
}

static void *cs_thief(void *arg)
{
	struct bthief *me = arg;
	unsigned misses = 0;

	pthread_barrier_wait(&cs.start);
	/* relaxed: a stop flag; the join orders everything else. */
	while (!atomic_load_explicit(&cs.stop, memory_order_relaxed)) {
		unsigned n;

		me->calls++;
		if (me->half) {
			n = ql__deque_steal_half(&cs.owner, &me->dq);
			while (ql__deque_pop_local(&me->dq))
				;
		} else {
			n = ql__deque_steal(&cs.owner) != NULL;
		}
		me->got += n;
		if (n) {
			misses = 0;
			continue;
		}
		me->empty++;
		/*
		 * Back off after a run of misses, as a worker would park: with
		 * more threads than free CPUs, spinning thieves would otherwise
		 * keep the owner off the CPU for whole time slices.
		 */
		if (++misses % 64 == 0)
			sched_yield();
	}
	return NULL;
}

static void contended(int nthieves, int half, double seconds)
{
	pthread_t owner;
	uint64_t pushed = 0, got = 0, calls = 0, empty = 0, t0, t1;
	int ret;

	if ((ret = ql__deque_init(&cs.owner, DEQUE_CAP)) < 0)
		die("deque init", -ret);
	atomic_store_explicit(&cs.stop, 0, memory_order_relaxed); /* before the threads exist */
	pthread_barrier_init(&cs.start, NULL, (unsigned)nthieves + 2);
	for (int i = 0; i < nthieves; i++) {
		struct bthief *t = &cs.thieves[i];

		memset(&t->got, 0, sizeof(*t) - offsetof(struct bthief, got));
		t->half = half;
		if ((ret = ql__deque_init(&t->dq, DEQUE_CAP)) < 0)
			die("deque init", -ret);
		if ((ret = pthread_create(&t->th, NULL, cs_thief, t)))
			die("pthread_create", ret);
	}
	if ((ret = pthread_create(&owner, NULL, cs_owner, &pushed)))
		die("pthread_create", ret);
	pthread_barrier_wait(&cs.start);
	t0 = now_ns();
	usleep((useconds_t)(seconds * 1e6));
	/* relaxed: see the loads. */
	atomic_store_explicit(&cs.stop, 1, memory_order_relaxed);
	pthread_join(owner, NULL);
	for (int i = 0; i < nthieves; i++)
		pthread_join(cs.thieves[i].th, NULL);
	t1 = now_ns();
	for (int i = 0; i < nthieves; i++) {
		got += cs.thieves[i].got;
		calls += cs.thieves[i].calls;
		empty += cs.thieves[i].empty;
		ql__deque_fini(&cs.thieves[i].dq);
	}
	printf("%-22s %8.2f M%s/s   (%.2f M/s per thief, %d thieves, %.1f%% of calls empty, "
	       "owner pushed %.2f M/s)\n",
	       half ? "steal-half, contended" : "steal, contended",
	       (double)got / ((double)(t1 - t0) / 1e9) / 1e6, half ? "items" : "steals",
	       (double)got / ((double)(t1 - t0) / 1e9) / 1e6 / nthieves, nthieves,
	       calls ? 100.0 * (double)empty / (double)calls : 0.0,
	       (double)pushed / ((double)(t1 - t0) / 1e9) / 1e6);
	pthread_barrier_destroy(&cs.start);
	ql__deque_fini(&cs.owner);
}

/* ------------------------------------------------------------- inbox, global */

static struct {
	struct ql_inbox inbox;
	struct ql_global global;
	struct ql_qnode *nodes; /* per thread: per_thread nodes */
	uint64_t per_thread;
	atomic_ulong taken;
	uint64_t total;
	pthread_barrier_t start;
} qs;

static void *inbox_producer(void *arg)
{
	struct ql_qnode *nodes = qs.nodes + (uintptr_t)arg * qs.per_thread;

	pthread_barrier_wait(&qs.start);
	for (uint64_t i = 0; i < qs.per_thread; i++)
		ql__inbox_push_mpsc(&qs.inbox, &nodes[i]);
	return NULL;
}

static void inbox_bench(int producers, uint64_t per_thread)
{
	pthread_t th[MAX_THREADS];
	uint64_t got = 0, batches = 0, t0, t1;
	int ret;

	qs.per_thread = per_thread;
	qs.nodes = calloc((size_t)producers * per_thread, sizeof(*qs.nodes));
	if (!qs.nodes)
		die("calloc", ENOMEM);
	ql__inbox_init(&qs.inbox);
	pthread_barrier_init(&qs.start, NULL, (unsigned)producers + 1);
	for (int i = 0; i < producers; i++)
		if ((ret = pthread_create(&th[i], NULL, inbox_producer, (void *)(uintptr_t)i)))
			die("pthread_create", ret);
	pthread_barrier_wait(&qs.start);
	t0 = now_ns();
	while (got < (uint64_t)producers * per_thread) {
		struct ql_qnode *n = ql__inbox_take_all_local(&qs.inbox);

		if (!n)
			continue;
		batches++;
		for (; n; n = n->next)
			got++;
	}
	t1 = now_ns();
	for (int i = 0; i < producers; i++)
		pthread_join(th[i], NULL);
	printf("%-22s %8.2f M nodes/s (%d producers, 1 consumer, %.0f nodes per take)\n", "inbox",
	       (double)got / ((double)(t1 - t0) / 1e9) / 1e6, producers,
	       (double)got / (double)batches);
	pthread_barrier_destroy(&qs.start);
	free(qs.nodes);
}

static void *global_pusher(void *arg)
{
	struct ql_qnode *nodes = qs.nodes + (uintptr_t)arg * qs.per_thread;

	pthread_barrier_wait(&qs.start);
	for (uint64_t i = 0; i + 16 <= qs.per_thread; i += 16) {
		for (int j = 0; j < 15; j++)
			nodes[i + j].next = &nodes[i + j + 1];
		ql__global_push_batch(&qs.global, &nodes[i], &nodes[i + 15], 16);
	}
	return NULL;
}

static void *global_taker(void *arg)
{
	pthread_barrier_wait(&qs.start);
	/* relaxed: an exit test; the join orders everything else. */
	while (atomic_load_explicit(&qs.taken, memory_order_relaxed) < qs.total) {
		unsigned count;

		if (ql__global_take(&qs.global, &count))
			/* relaxed: a counter, for the exit test. */
			atomic_fetch_add_explicit(&qs.taken, count, memory_order_relaxed);
	}
	return NULL;
}

static void global_bench(uint64_t per_thread)
{
	pthread_t th[8];
	uint64_t t0, t1;
	int ret;

	per_thread = per_thread / 16 * 16;
	qs.per_thread = per_thread;
	qs.total = 4 * per_thread;
	qs.nodes = calloc(4 * per_thread, sizeof(*qs.nodes));
	if (!qs.nodes)
		die("calloc", ENOMEM);
	ql__global_init(&qs.global);
	atomic_store_explicit(&qs.taken, 0, memory_order_relaxed); /* before the threads exist */
	pthread_barrier_init(&qs.start, NULL, 9);
	for (uintptr_t i = 0; i < 8; i++)
		if ((ret = pthread_create(&th[i], NULL, i < 4 ? global_pusher : global_taker,
					  (void *)(i % 4))))
			die("pthread_create", ret);
	pthread_barrier_wait(&qs.start);
	t0 = now_ns();
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	t1 = now_ns();
	printf("%-22s %8.2f M nodes/s (4 pushers in batches of 16, 4 takers)\n", "global",
	       (double)qs.total / ((double)(t1 - t0) / 1e9) / 1e6);
	pthread_barrier_destroy(&qs.start);
	free(qs.nodes);
}

/* ------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	uint64_t pairs = 10000000;
	int rounds = 5, thieves = 3, producers = 4, opt;
	double seconds = 1.0;

	while ((opt = getopt(argc, argv, "n:r:d:t:p:h")) != -1) {
		switch (opt) {
		case 'n':
			pairs = strtoull(optarg, NULL, 0);
			break;
		case 'r':
			rounds = atoi(optarg);
			break;
		case 'd':
			seconds = atof(optarg);
			break;
		case 't':
			thieves = atoi(optarg);
			break;
		case 'p':
			producers = atoi(optarg);
			break;
		default:
			fprintf(stderr,
				"usage: %s [-n PAIRS] [-r ROUNDS] [-d SECONDS] [-t THIEVES] "
				"[-p PRODUCERS]\n",
				argv[0]);
			return opt == 'h' ? 0 : 1;
		}
	}
	if (pairs < BURST || rounds < 1 || rounds > 64 || seconds <= 0 || thieves < 1 ||
	    thieves > MAX_THREADS || producers < 1 || producers > MAX_THREADS) {
		fprintf(stderr, "queue_bench: option out of range\n");
		return 1;
	}
	printf("qilin run-queue micro-benchmarks: %ld CPUs online, deque capacity %d\n",
	       sysconf(_SC_NPROCESSORS_ONLN), DEQUE_CAP);
	solo("deque push+pop", SOLO_PAIR, pairs, rounds);
	solo("deque burst 128", SOLO_BURST, pairs, rounds);
	solo("deque steal (solo)", SOLO_STEAL, pairs, rounds);
	contended(thieves, 0, seconds);
	contended(thieves, 1, seconds);
	inbox_bench(producers, pairs / (uint64_t)producers / 4 + 1);
	global_bench(pairs / 16 + 16);
	return 0;
}
