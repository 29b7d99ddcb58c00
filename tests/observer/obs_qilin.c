/* SPDX-License-Identifier: MIT */
/*
 * tests/observer/obs_qilin.c - a libqilin program with a known number of
 * tasks blocked in reads, for the observer's worker section (USDT probes)
 * and its ring counts of a real executor.
 *
 *   obs_qilin [--wait] [--hold SECS] [-w WORKERS] K
 *
 * An executor of WORKERS workers (default 1, not pinned); on go, K stackful
 * tasks (ql_go) each block in ql_read() on a pipe nobody writes. The program
 * waits until the executor's own counters say K operations are in flight
 * and nothing is queued, lets 50 ms pass (the workers park), and prints one
 * JSON line of ql_exec_stats() per worker, taken at go and now:
 *   {"k":K,"workers":[{"worker":I,"go":{"sqes":..,"cqes":..,"enters":..},
 *     "now":{"sqes":..,"cqes":..,"enters":..,"inflight":..,"runq_depth":..,
 *     "parks":..}}, ...]}
 * Output: "ready PID", that line, then "submitted". With --wait nothing is
 * spawned before SIGUSR1; with --hold SECS it then stays until SIGTERM or
 * SECS, and shuts the executor down (the reads are cancelled). Main thread:
 * signals, output and the stats; the workers run the tasks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qilin.h>

#include "obs_prog.h"

#define PROG "obs_qilin"
#define MAX_K 4096
#define MAX_WORKERS 64

static int (*pipes)[2];

/* One task: block in a read that never completes until shutdown cancels it. */
static void reader(void *arg)
{
	char buf[16];
	int *p = arg;

	(void)ql_read(p[0], buf, sizeof(buf));
}

static void snap(struct ql_exec *ex, struct ql_worker_stats *w, unsigned n)
{
	struct ql_stats st = { .sz = sizeof(st), .workers = w, .workers_len = n };
	int ret = ql_exec_stats(ex, &st);

	if (ret < 0)
		obs_die(PROG, "ql_exec_stats: %s", strerror(-ret));
}

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [--wait] [--hold SECS] [-w WORKERS] K\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static struct ql_worker_stats go[MAX_WORKERS], now[MAX_WORKERS];
	struct ql_exec_opts o = { .sz = sizeof(o), .workers = 1, .flags = QL_EXEC_NO_PIN };
	struct ql_exec *ex;
	unsigned k = 0;
	double hold = 0;
	int wait_go = 0, ret;
	unsigned long long end;

	obs_block_signals();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait_go = 1;
		else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc)
			hold = obs_parse_num(PROG, "--hold", argv[++i], 1);
		else if (strcmp(argv[i], "-w") == 0 && i + 1 < argc)
			o.workers = (unsigned)obs_parse_num(PROG, "-w", argv[++i], 0);
		else if (argv[i][0] != '-' && !k)
			k = (unsigned)obs_parse_num(PROG, "K", argv[i], 0);
		else
			usage();
	}
	if (k < 1 || k > MAX_K || o.workers < 1 || o.workers > MAX_WORKERS)
		usage();
	pipes = calloc(k, sizeof(*pipes));
	if (!pipes)
		obs_die(PROG, "out of memory");
	for (unsigned i = 0; i < k; i++)
		if (pipe(pipes[i]) < 0)
			obs_die(PROG, "pipe: %s", strerror(errno));
	ret = ql_exec_create(&o, &ex);
	if (ret < 0) {
		char why[256];

		ql_uring_diagnose(why, sizeof(why));
		obs_die(PROG, "ql_exec_create: %s (%s)", strerror(-ret), why);
	}
	printf("ready %d\n", (int)getpid());
	if (wait_go)
		obs_wait_go(PROG, 60);

	snap(ex, go, o.workers);
	for (unsigned i = 0; i < k; i++) {
		ret = ql_go(ex, reader, pipes[i], NULL, NULL);
		if (ret < 0)
			obs_die(PROG, "ql_go: %s", strerror(-ret));
	}
	/* Until every read is in the kernel and nothing is queued. */
	end = obs_now_ns() + 5000000000ull;
	for (;;) {
		unsigned long long inflight = 0, depth = 0;

		snap(ex, now, o.workers);
		for (unsigned w = 0; w < o.workers; w++) {
			inflight += now[w].inflight;
			depth += now[w].runq_depth;
		}
		if (inflight >= k && depth == 0)
			break;
		if (obs_now_ns() > end)
			obs_die(PROG, "%llu in flight, %llu queued after 5 s, want %u and 0",
				inflight, depth, k);
		usleep(1000);
	}
	usleep(50000);
	snap(ex, now, o.workers);
	printf("{\"k\":%u,\"workers\":[", k);
	for (unsigned w = 0; w < o.workers; w++)
		printf("%s{\"worker\":%u,\"go\":{\"sqes\":%llu,\"cqes\":%llu,\"enters\":%llu},"
		       "\"now\":{\"sqes\":%llu,\"cqes\":%llu,\"enters\":%llu,\"inflight\":%llu,"
		       "\"runq_depth\":%llu,\"parks\":%llu}}",
		       w ? "," : "", w, (unsigned long long)go[w].sqes,
		       (unsigned long long)go[w].cqes, (unsigned long long)go[w].enters,
		       (unsigned long long)now[w].sqes, (unsigned long long)now[w].cqes,
		       (unsigned long long)now[w].enters, (unsigned long long)now[w].inflight,
		       (unsigned long long)now[w].runq_depth, (unsigned long long)now[w].parks);
	printf("]}\nsubmitted %u\n", k);
	obs_hold(hold);
	ql_exec_shutdown(ex, 1000000000ull);
	ql_exec_destroy(ex);
	for (unsigned i = 0; i < k; i++) {
		close(pipes[i][0]);
		close(pipes[i][1]);
	}
	free(pipes);
	return 0;
}
