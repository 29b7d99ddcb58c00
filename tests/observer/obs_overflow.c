/* SPDX-License-Identifier: MIT */
/*
 * tests/observer/obs_overflow.c - a ring whose completion queue overflows a
 * known number of times, for the observer's CQ overflow count.
 *
 *   obs_overflow [--wait] [--hold SECS] N
 *
 * One ring (liburing) of 4 SQ entries and 8 CQ entries (IORING_SETUP_CQSIZE).
 * N NOPs (N > 8, a multiple of 4) are submitted 4 at a time and none is
 * reaped until all are submitted: the CQ ring takes the first 8 CQEs and the
 * kernel keeps the other N - 8 on its overflow list (IORING_FEAT_NODROP), one
 * io_uring:io_uring_cqe_overflow event each. Then all N are reaped (liburing
 * flushes the overflow list into the CQ ring as room appears) and each must
 * be a NOP's 0. Output: "ready PID", then one JSON line
 *   {"nops":N,"cq_entries":8,"overflowed":N-8,"reaped":N}
 * and "done". With --wait nothing is submitted before SIGUSR1; with --hold
 * SECS it then stays until SIGTERM/SIGINT or SECS. Single-threaded.
 */
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs_prog.h"

#define PROG "obs_overflow"
#define SQ_ENTRIES 4
#define CQ_ENTRIES 8

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [--wait] [--hold SECS] N   (N > %d, a multiple of %d)\n",
		CQ_ENTRIES, SQ_ENTRIES);
	exit(2);
}

int main(int argc, char **argv)
{
	struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE, .cq_entries = CQ_ENTRIES };
	struct io_uring ring;
	unsigned n = 0, reaped = 0;
	double hold = 0;
	int wait_go = 0, ret;

	obs_block_signals();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait_go = 1;
		else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc)
			hold = obs_parse_num(PROG, "--hold", argv[++i], 1);
		else if (argv[i][0] != '-' && !n)
			n = (unsigned)obs_parse_num(PROG, "N", argv[i], 0);
		else
			usage();
	}
	if (n <= CQ_ENTRIES || n % SQ_ENTRIES || n > 1 << 20)
		usage();
	ret = io_uring_queue_init_params(SQ_ENTRIES, &ring, &p);
	if (ret < 0)
		obs_die(PROG, "io_uring_queue_init_params: %s", strerror(-ret));
	if (p.cq_entries != CQ_ENTRIES || !(p.features & IORING_FEAT_NODROP))
		obs_die(PROG, "the kernel gave %u CQ entries%s; the test needs %d and NODROP",
			p.cq_entries, p.features & IORING_FEAT_NODROP ? "" : " without NODROP",
			CQ_ENTRIES);
	printf("ready %d\n", (int)getpid());
	if (wait_go)
		obs_wait_go(PROG, 60);

	for (unsigned i = 0; i < n; i += SQ_ENTRIES) {
		for (unsigned j = 0; j < SQ_ENTRIES; j++)
			io_uring_prep_nop(io_uring_get_sqe(&ring));
		ret = io_uring_submit(&ring);
		if (ret != SQ_ENTRIES)
			obs_die(PROG, "io_uring_submit returned %d, not %d (%s)", ret, SQ_ENTRIES,
				ret < 0 ? strerror(-ret) : "short");
	}
	while (reaped < n) {
		struct io_uring_cqe *cqe;

		ret = io_uring_wait_cqe(&ring, &cqe);
		if (ret < 0)
			obs_die(PROG, "io_uring_wait_cqe after %u CQEs: %s", reaped,
				strerror(-ret));
		if (cqe->res != 0)
			obs_die(PROG, "a NOP completed with %d", cqe->res);
		io_uring_cqe_seen(&ring, cqe);
		reaped++;
	}
	printf("{\"nops\":%u,\"cq_entries\":%d,\"overflowed\":%u,\"reaped\":%u}\n", n, CQ_ENTRIES,
	       n - CQ_ENTRIES, reaped);
	printf("done\n");
	obs_hold(hold);
	io_uring_queue_exit(&ring);
	return 0;
}
