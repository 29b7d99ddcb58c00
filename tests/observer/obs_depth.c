/* SPDX-License-Identifier: MIT */
/*
 * tests/observer/obs_depth.c - rings holding an exact number of reads in
 * flight, for the observer's queue-depth test.
 *
 *   obs_depth [--wait | --late] [--sqpoll] [--hold SECS] K [K...]
 *
 * One thread per K, each with an io_uring of its own (liburing, default
 * setup flags) and K pipes whose write ends stay open and are never written:
 * the thread submits one read on each read end, in a single io_uring_enter,
 * and the K reads stay in the kernel (armed on the pipe's poll queue) until
 * the process exits. Nothing else is ever submitted on these rings, so the
 * observer must see, for the ring whose submitter is that thread, exactly K
 * SQEs, no CQE and K in flight. With --sqpoll the rings are created with
 * IORING_SETUP_SQPOLL: the kernel's SQ thread (a thread of this process)
 * takes the SQEs, and the program waits until it has (the SQ is empty)
 * before saying "submitted".
 *
 * Output (stdout, line-buffered), in order:
 *   ring I TID K        one per thread, before anything is submitted
 *   ready PID
 *   submitted TOTAL     after every thread's submit returned K
 * With --wait the reads are submitted only on SIGUSR1 (so that an observer
 * attached with -p sees the submissions); without it at once. With --late
 * they are submitted at once, and on SIGUSR1 (an observer attached in
 * between: the reads predate it) each thread writes one byte into each of
 * its pipes and reaps the K completions (io_uring_wait_cqe, enters without
 * SQEs), then main prints "completed TOTAL". Then the program holds until
 * SIGTERM/SIGINT or --hold SECS (default 0: exit at once). Threads: main
 * owns the signals and the output; each ring thread owns its ring and
 * pipes, and only the barriers connect them.
 */
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "obs_prog.h"

#define PROG "obs_depth"
#define MAX_RINGS 16
#define MAX_K 4096

struct ring_thread {
	pthread_t thread;
	unsigned k;
	pid_t tid;
	int err;	  /* first error, -errno; read by main after a barrier */
	const char *what; /* what failed */
	int submitted;	  /* io_uring_submit()'s result */
	int reaped;	  /* CQEs reaped with the byte read (--late) */
	struct io_uring ring;
	int (*pipes)[2];
	char (*bufs)[16];
};

static pthread_barrier_t ready_barrier, go_barrier, submitted_barrier, complete_barrier,
	completed_barrier;
static int late, sqpoll;

/* Set up the ring and the pipes of t; on failure record why in t. */
static void ring_thread_setup(struct ring_thread *t)
{
	unsigned entries = 8;
	int ret;

	while (entries < t->k)
		entries *= 2;
	if (sqpoll) {
		struct io_uring_params p = { .flags = IORING_SETUP_SQPOLL, .sq_thread_idle = 2000 };

		ret = io_uring_queue_init_params(entries, &t->ring, &p);
	} else {
		ret = io_uring_queue_init(entries, &t->ring, 0);
	}
	if (ret < 0) {
		t->err = ret;
		t->what = "io_uring_queue_init";
		return;
	}
	t->pipes = calloc(t->k, sizeof(*t->pipes));
	t->bufs = calloc(t->k, sizeof(*t->bufs));
	if (!t->pipes || !t->bufs) {
		t->err = -ENOMEM;
		t->what = "calloc";
		return;
	}
	for (unsigned i = 0; i < t->k; i++) {
		if (pipe(t->pipes[i]) < 0) {
			t->err = -errno;
			t->what = "pipe";
			return;
		}
	}
}

/* --late: make every read complete with one byte, and reap the CQEs. */
static void ring_thread_complete(struct ring_thread *t)
{
	for (unsigned i = 0; i < t->k; i++) {
		if (write(t->pipes[i][1], "q", 1) != 1) {
			t->err = -errno;
			t->what = "write";
			return;
		}
	}
	while (t->reaped < (int)t->k) {
		struct io_uring_cqe *cqe;
		int ret = io_uring_wait_cqe(&t->ring, &cqe);

		if (ret < 0) {
			t->err = ret;
			t->what = "io_uring_wait_cqe";
			return;
		}
		if (cqe->res != 1) {
			t->err = cqe->res < 0 ? cqe->res : -EIO;
			t->what = "read";
			return;
		}
		io_uring_cqe_seen(&t->ring, cqe);
		t->reaped++;
	}
}

/*
 * The ring thread: set up, wait for go, submit K reads at once, then stay
 * alive (the reads belong to its ring, and the observer names it by tid).
 */
static void *ring_thread_main(void *arg)
{
	struct ring_thread *t = arg;

	t->tid = (pid_t)syscall(SYS_gettid);
	ring_thread_setup(t);
	pthread_barrier_wait(&ready_barrier);
	pthread_barrier_wait(&go_barrier);
	if (!t->err) {
		for (unsigned i = 0; i < t->k; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);

			io_uring_prep_read(sqe, t->pipes[i][0], t->bufs[i], sizeof(t->bufs[i]), 0);
			sqe->user_data = i;
		}
		t->submitted = io_uring_submit(&t->ring);
		/* SQPOLL: submitted means queued; wait until the kernel took them. */
		for (int i = 0; sqpoll && i < 5000 && io_uring_sq_ready(&t->ring); i++)
			usleep(1000);
		if (sqpoll && io_uring_sq_ready(&t->ring))
			t->submitted = -ETIMEDOUT;
	}
	pthread_barrier_wait(&submitted_barrier);
	if (late) {
		pthread_barrier_wait(&complete_barrier);
		if (t->submitted == (int)t->k)
			ring_thread_complete(t);
		pthread_barrier_wait(&completed_barrier);
	}
	for (;;)
		pause();
	return NULL;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: " PROG " [--wait | --late] [--sqpoll] [--hold SECS] K [K...]\n"
		"  (1 <= K <= %d, at most %d rings)\n",
		MAX_K, MAX_RINGS);
	exit(2);
}

int main(int argc, char **argv)
{
	static struct ring_thread threads[MAX_RINGS];
	unsigned n = 0, total = 0;
	double hold = 0;
	int wait_go = 0;

	obs_block_signals();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0) {
			wait_go = 1;
		} else if (strcmp(argv[i], "--late") == 0) {
			late = 1;
		} else if (strcmp(argv[i], "--sqpoll") == 0) {
			sqpoll = 1;
		} else if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc) {
			hold = obs_parse_num(PROG, "--hold", argv[++i], 1);
		} else if (argv[i][0] == '-' || n == MAX_RINGS) {
			usage();
		} else {
			double k = obs_parse_num(PROG, "K", argv[i], 0);

			if (k < 1 || k > MAX_K)
				usage();
			threads[n++].k = (unsigned)k;
			total += (unsigned)k;
		}
	}
	if (n == 0)
		usage();

	pthread_barrier_init(&ready_barrier, NULL, n + 1);
	pthread_barrier_init(&go_barrier, NULL, n + 1);
	pthread_barrier_init(&submitted_barrier, NULL, n + 1);
	pthread_barrier_init(&complete_barrier, NULL, n + 1);
	pthread_barrier_init(&completed_barrier, NULL, n + 1);
	if (late && wait_go)
		usage();
	for (unsigned i = 0; i < n; i++) {
		int ret = pthread_create(&threads[i].thread, NULL, ring_thread_main, &threads[i]);

		if (ret)
			obs_die(PROG, "pthread_create: %s", strerror(ret));
	}
	pthread_barrier_wait(&ready_barrier);
	for (unsigned i = 0; i < n; i++) {
		if (threads[i].err)
			obs_die(PROG, "ring %u: %s: %s", i, threads[i].what,
				strerror(-threads[i].err));
		printf("ring %u %d %u\n", i, (int)threads[i].tid, threads[i].k);
	}
	printf("ready %d\n", (int)getpid());
	if (wait_go)
		obs_wait_go(PROG, 60);
	pthread_barrier_wait(&go_barrier);
	pthread_barrier_wait(&submitted_barrier);
	for (unsigned i = 0; i < n; i++) {
		if (threads[i].submitted != (int)threads[i].k)
			obs_die(PROG, "ring %u: io_uring_submit returned %d, not %u", i,
				threads[i].submitted, threads[i].k);
	}
	printf("submitted %u\n", total);
	if (late) {
		obs_wait_go(PROG, 60);
		pthread_barrier_wait(&complete_barrier);
		pthread_barrier_wait(&completed_barrier);
		for (unsigned i = 0; i < n; i++) {
			if (threads[i].err)
				obs_die(PROG, "ring %u: %s: %s", i, threads[i].what,
					strerror(-threads[i].err));
		}
		printf("completed %u\n", total);
	}
	obs_hold(hold);
	/* The reads are still in flight: exit_group tears the rings down. */
	return 0;
}
