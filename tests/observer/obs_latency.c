/* SPDX-License-Identifier: MIT */
/*
 * tests/observer/obs_latency.c - io_uring timeouts of known length, timed
 * by the program itself, for the observer's latency test.
 *
 *   obs_latency [--wait] [--hold SECS] [--ebadf N] COUNT:MS [COUNT:MS...]
 *
 * On one ring (liburing, default flags), for each COUNT:MS in order, COUNT
 * relative timeouts of MS milliseconds (fractions allowed), one at a time:
 * the clock is read (CLOCK_MONOTONIC) before io_uring_submit_and_wait() and
 * after its CQE is in hand, so each sample contains the kernel's own
 * submit-to-complete interval. Each timeout must complete with -ETIME.
 * With --ebadf N it first submits N reads on fd -1, one per enter, each of
 * which must fail with -EBADF (the observer's error counts).
 *
 * Every submission here is exactly one SQE in exactly one io_uring_enter,
 * and the program makes no other enter: the observer's sqes_total and
 * enters_total must both equal N + the sum of the COUNTs.
 *
 * Output (stdout, line-buffered): "ready PID", then one JSON line
 *   {"tid":T,"enters":E,"sqes":S,"ebadf":N,
 *    "groups":[{"ms":M,"count":C,"samples_ns":[...]}, ...],
 *    "count":C,"p50_ns":..,"p90_ns":..,"p99_ns":..,"p999_ns":..}
 * where the percentiles are nearest-rank (the sample of rank ceil(q * C))
 * over all timeouts, then "done". With --wait nothing is submitted before
 * SIGUSR1; with --hold SECS it then stays until SIGTERM/SIGINT or SECS.
 * Single-threaded.
 */
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "obs_prog.h"

#define PROG "obs_latency"
#define MAX_GROUPS 8
#define MAX_COUNT 100000

struct group {
	double ms;
	unsigned count;
	unsigned long long *samples;
};

static int cmp_ull(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

/* Submit the one SQE prepared on r, wait for its CQE; returns its result. */
static int submit_one(struct io_uring *r)
{
	struct io_uring_cqe *cqe;
	int ret, res;

	ret = io_uring_submit_and_wait(r, 1);
	if (ret != 1)
		obs_die(PROG, "io_uring_submit_and_wait returned %d (%s)", ret,
			ret < 0 ? strerror(-ret) : "not one SQE");
	/* The wait above returned with the CQE posted: no further enter. */
	ret = io_uring_peek_cqe(r, &cqe);
	if (ret < 0)
		obs_die(PROG, "no CQE after the wait: %s", strerror(-ret));
	res = cqe->res;
	io_uring_cqe_seen(r, cqe);
	return res;
}

/* Nearest-rank percentile q of n sorted samples. */
static unsigned long long pct(const unsigned long long *s, unsigned n, double q)
{
	unsigned rank = (unsigned)(q * n);

	if (rank < q * n)
		rank++; /* ceil() without libm */

	if (rank < 1)
		rank = 1;
	return s[rank - 1];
}

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [--wait] [--hold SECS] [--ebadf N] COUNT:MS "
			"[COUNT:MS...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct group groups[MAX_GROUPS];
	unsigned ngroups = 0, total = 0, ebadf = 0, k = 0;
	unsigned long long *all;
	double hold = 0;
	int wait_go = 0, ret;
	struct io_uring ring;
	char buf[16];

	obs_block_signals();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		char *colon = strchr(argv[i], ':');

		if (strcmp(argv[i], "--wait") == 0) {
			wait_go = 1;
		} else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc) {
			hold = obs_parse_num(PROG, "--hold", argv[++i], 1);
		} else if (strcmp(argv[i], "--ebadf") == 0 && i + 1 < argc) {
			ebadf = (unsigned)obs_parse_num(PROG, "--ebadf", argv[++i], 0);
		} else if (colon && ngroups < MAX_GROUPS) {
			struct group *g = &groups[ngroups++];
			double c;

			*colon = '\0';
			c = obs_parse_num(PROG, "COUNT", argv[i], 0);
			g->ms = obs_parse_num(PROG, "MS", colon + 1, 1);
			if (c < 1 || c > MAX_COUNT || g->ms <= 0 || g->ms > 10000)
				usage();
			g->count = (unsigned)c;
			g->samples = calloc(g->count, sizeof(*g->samples));
			if (!g->samples)
				obs_die(PROG, "out of memory");
			total += g->count;
		} else {
			usage();
		}
	}
	if (ngroups == 0)
		usage();
	all = calloc(total, sizeof(*all));
	if (!all)
		obs_die(PROG, "out of memory");

	ret = io_uring_queue_init(8, &ring, 0);
	if (ret < 0)
		obs_die(PROG, "io_uring_queue_init: %s", strerror(-ret));
	printf("ready %d\n", (int)getpid());
	if (wait_go)
		obs_wait_go(PROG, 60);

	for (unsigned i = 0; i < ebadf; i++) {
		io_uring_prep_read(io_uring_get_sqe(&ring), -1, buf, sizeof(buf), 0);
		ret = submit_one(&ring);
		if (ret != -EBADF)
			obs_die(PROG, "read on fd -1 completed with %d, not -EBADF", ret);
	}
	for (unsigned g = 0; g < ngroups; g++) {
		unsigned long long ns = (unsigned long long)(groups[g].ms * 1e6 + 0.5);
		struct __kernel_timespec ts = {
			.tv_sec = (long long)(ns / 1000000000ull),
			.tv_nsec = (long long)(ns % 1000000000ull),
		};

		for (unsigned i = 0; i < groups[g].count; i++) {
			unsigned long long t0, t1;

			io_uring_prep_timeout(io_uring_get_sqe(&ring), &ts, 0, 0);
			t0 = obs_now_ns();
			ret = submit_one(&ring);
			t1 = obs_now_ns();
			if (ret != -ETIME)
				obs_die(PROG, "timeout completed with %d, not -ETIME", ret);
			groups[g].samples[i] = t1 - t0;
			all[k++] = t1 - t0;
		}
	}

	qsort(all, total, sizeof(*all), cmp_ull);
	printf("{\"tid\":%d,\"enters\":%u,\"sqes\":%u,\"ebadf\":%u,\"groups\":[",
	       (int)syscall(SYS_gettid), ebadf + total, ebadf + total, ebadf);
	for (unsigned g = 0; g < ngroups; g++) {
		printf("%s{\"ms\":%g,\"count\":%u,\"samples_ns\":[", g ? "," : "", groups[g].ms,
		       groups[g].count);
		for (unsigned i = 0; i < groups[g].count; i++)
			printf("%s%llu", i ? "," : "", groups[g].samples[i]);
		printf("]}");
	}
	printf("],\"count\":%u,\"p50_ns\":%llu,\"p90_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu}\n",
	       total, pct(all, total, 0.5), pct(all, total, 0.9), pct(all, total, 0.99),
	       pct(all, total, 0.999));
	printf("done\n");
	obs_hold(hold);
	io_uring_queue_exit(&ring);
	for (unsigned g = 0; g < ngroups; g++)
		free(groups[g].samples);
	free(all);
	return 0;
}
