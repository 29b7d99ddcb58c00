/* SPDX-License-Identifier: MIT */
/*
 * tests/observer/obs_prog.h - what the observer's target programs share.
 *
 * The target programs (obs_depth, obs_latency, obs_tcp) are driven by
 * tests/observer/run_observer.py through their standard output and signals:
 * each prints "ready ..." once it is set up, waits for SIGUSR1 when started
 * with --wait (so that the observer is attached before the first operation
 * the test counts), prints what it did, and with --hold SECS stays alive until
 * SIGTERM or SIGINT (or SECS seconds) so that the observer can read it before
 * it exits. Everything here runs on the main thread, which owns the signals:
 * they are blocked in every thread before any thread is created, and taken
 * with sigtimedwait(), never with a handler.
 */
#ifndef QILIN_OBS_PROG_H
#define QILIN_OBS_PROG_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Print "PROG: message" on stderr and exit 1. */
static inline void __attribute__((noreturn, format(printf, 2, 3)))
obs_die(const char *prog, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Monotonic clock in nanoseconds. */
static inline unsigned long long obs_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

/*
 * Block the signals the driver sends (USR1: go; TERM, INT, HUP: leave) in
 * the calling thread; call it first in main(), before creating any thread,
 * so that every thread inherits the mask and only sigtimedwait() takes them.
 */
static inline void obs_block_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/*
 * Wait up to secs seconds for one of the blocked signals. Returns the
 * signal's number, or 0 when the time ran out.
 */
static inline int obs_wait_signal(double secs)
{
	sigset_t set;
	struct timespec ts;
	unsigned long long end = obs_now_ns() + (unsigned long long)(secs * 1e9);

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		unsigned long long now = obs_now_ns(), left;
		int sig;

		if (now >= end)
			return 0;
		left = end - now;
		ts.tv_sec = (time_t)(left / 1000000000ull);
		ts.tv_nsec = (long)(left % 1000000000ull);
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig > 0)
			return sig;
		if (errno == EAGAIN)
			return 0;
		/* EINTR: a signal we do not wait for (SIGSTOP/SIGCONT); go on. */
	}
}

/*
 * Wait for SIGUSR1 (the go signal) for at most secs seconds. Exits 1 with a
 * message when it does not come, and 0 at once on TERM/INT/HUP.
 */
static inline void obs_wait_go(const char *prog, double secs)
{
	int sig = obs_wait_signal(secs);

	if (sig == SIGUSR1)
		return;
	if (sig == 0)
		obs_die(prog, "no SIGUSR1 within %.0f s", secs);
	exit(0);
}

/*
 * Stay alive until TERM/INT/HUP or secs seconds (0: return at once); a
 * SIGUSR1 now is ignored.
 */
static inline void obs_hold(double secs)
{
	unsigned long long end = obs_now_ns() + (unsigned long long)(secs * 1e9);

	while (secs > 0) {
		unsigned long long now = obs_now_ns();

		if (now >= end || obs_wait_signal((double)(end - now) / 1e9) != SIGUSR1)
			return;
	}
}

/* Parse a non-negative number (with fractions when frac) or die. */
static inline double obs_parse_num(const char *prog, const char *what, const char *s, int frac)
{
	char *end;
	double v;

	errno = 0;
	v = frac ? strtod(s, &end) : (double)strtoull(s, &end, 10);
	if (errno || end == s || *end || v < 0 || (s[0] == '-'))
		obs_die(prog, "bad %s '%s'", what, s);
	return v;
}

#endif
