/* SPDX-License-Identifier: MIT */
/*
 * bench/bench_util.h - small helpers the benchmark programs share.
 *
 * The Makefile builds each C file in bench/ as a program of its own, linked only with the
 * library, so what the programs have in common lives here as static inline functions: each
 * program gets its own copy, and one that does not use a helper gets no warning for it.
 * Nothing here is part of the library or its API.
 *
 * A program defines BENCH_PROG, its name as it prefixes error messages, before including
 * this header; parse_num() uses it.
 */
#ifndef QILIN_BENCH_UTIL_H
#define QILIN_BENCH_UTIL_H

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_PROG
#error "define BENCH_PROG (the program's name, for error messages) before bench_util.h"
#endif

#define NS_PER_S 1000000000ull
#define NSEC_PER_SEC 1000000000.0

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ------------------------------------------------------------------ clocks */

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC goes through the vDSO; it cannot fail with a valid clock id. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The time of a CPU-time clock in ns, such as CLOCK_THREAD_CPUTIME_ID; 0 if it cannot be read. */
static inline uint64_t cpu_clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ statistics */

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of v[0..n) (n > 0); sorts v. */
static inline double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* num / den, or 0 when den is not positive (a system that did not run). */
static inline double ratio_of(double num, double den)
{
	return den > 0 ? num / den : 0;
}

/* The word a report prints after a target. */
static inline const char *verdict(int met)
{
	return met ? "met" : "MISSED";
}

/* ------------------------------------------------------------------ JSON */

/* Write s as a JSON string (quotes included), escaping what JSON requires. */
static inline void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/*
 * Open the "machine" member of a result object: its cores and kernel. The caller adds any
 * further members and closes it with '}'.
 */
static inline void json_machine_open(FILE *f, long cores, const char *kernel)
{
	fprintf(f, "  \"machine\": {\"cores\": %ld, \"kernel\": ", cores);
	json_string(f, kernel);
}

/* Find "key": in a one-line JSON object and parse the number after it. Returns 0 or -1. */
static inline int json_number(const char *line, const char *key, double *out)
{
	char pat[256];
	const char *p;
	char *end;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(line, pat);
	if (!p)
		return -1;
	p += strlen(pat);
	*out = strtod(p, &end);
	return end == p ? -1 : 0;
}

/* ------------------------------------------------------------------ peers */

/*
 * Run the program bin with args (trusted: made by the caller, already quoted for the shell)
 * and keep the first line it prints, which must be a JSON object, in line. Its stderr goes
 * to ours. Returns 0, or -1 after saying why: it could not start, exited non-zero, was
 * killed by a signal, or printed no JSON object.
 */
static inline int run_peer(const char *bin, const char *args, char *line, size_t len)
{
	char cmd[4096];
	size_t n = 0;
	const char *s;
	FILE *f;
	int status;

	/* Single-quote the binary's path for the shell: ' becomes '\''. */
	cmd[n++] = '\'';
	for (s = bin; *s && n + sizeof("'\\''") < sizeof(cmd); s++) {
		if (*s == '\'') {
			memcpy(cmd + n, "'\\''", 4);
			n += 4;
		} else {
			cmd[n++] = *s;
		}
	}
	if (snprintf(cmd + n, sizeof(cmd) - n, "' %s", args) >= (int)(sizeof(cmd) - n)) {
		fprintf(stderr, BENCH_PROG ": command line too long for %s\n", bin);
		return -1;
	}
	/* What the caller printed must come out before anything the child prints. */
	fflush(NULL);
	f = popen(cmd, "r");
	if (!f) {
		fprintf(stderr, BENCH_PROG ": popen(%s): %s\n", cmd, strerror(errno));
		return -1;
	}
	if (!fgets(line, (int)len, f))
		line[0] = '\0';
	status = pclose(f);
	if (status != -1 && WIFSIGNALED(status)) {
		fprintf(stderr, BENCH_PROG ": %s was killed by signal %d (%s)\n", cmd,
			WTERMSIG(status), strsignal(WTERMSIG(status)));
		return -1;
	}
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) || line[0] != '{') {
		fprintf(stderr, BENCH_PROG ": %s failed (status 0x%x, output '%s')\n", cmd, status,
			line);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ options */

/* Parse a decimal number in [lo, hi]. Returns 0, or -1 after printing why not. */
static inline int parse_num(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > hi) {
		fprintf(stderr,
			BENCH_PROG ": %s wants a number from %" PRIu64 " to %" PRIu64
				   ", not '%s'\n",
			opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

/*
 * The end of every program's getopt() switch: -h prints the usage on stdout and exits 0, any
 * other option the switch did not take prints it on stderr. Returns -1 (a usage error).
 */
static inline int usage_error_or_help(int opt, void (*usage)(FILE *))
{
	if (opt == 'h') {
		usage(stdout);
		exit(0);
	}
	usage(stderr);
	return -1;
}

/* After getopt(): the programs take no operands. Returns 0, or -1 after printing the usage. */
static inline int no_operands(int argc, void (*usage)(FILE *))
{
	if (optind != argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/*
 * Servers and load generators hold an fd per connection: raise the soft
 * RLIMIT_NOFILE to the hard limit (silently; a later socket() says EMFILE).
 */
static inline void raise_nofile(void)
{
	struct rlimit rl;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * Block SIGINT and SIGTERM in the calling thread, and so in every thread it
 * creates afterwards (they inherit the mask), and put them in *set: the
 * program takes them with sigwait(set).
 */
static inline void block_stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
}

/*
 * Write the scenarios' JSON objects (json[i] of json_len[i] bytes, NULL for a
 * scenario that did not run) to path: one object alone, several as an array.
 * prog names the program in error messages. Returns 0 or -1.
 */
static inline int write_json_objects(const char *prog, char *const *json, const size_t *json_len,
				     unsigned count, const char *path)
{
	unsigned i, n = 0;
	int many = 0;
	FILE *f;

	for (i = 0; i < count; i++)
		many += json[i] != NULL;
	many = many > 1;
	f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		return -1;
	}
	if (many)
		fputs("[\n", f);
	for (i = 0; i < count; i++) {
		if (!json[i])
			continue;
		if (n++)
			fputs(",\n", f);
		fwrite(json[i], 1, json_len[i], f);
	}
	fputs(many ? "\n]\n" : "\n", f);
	if (ferror(f) | fclose(f)) {
		fprintf(stderr, "%s: writing %s failed\n", prog, path);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ rounds */

#define MS_PER_S 1000

static inline void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / NS_PER_S),
			       .tv_nsec = (long)(ns % NS_PER_S) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static inline double rate_of(uint64_t n, uint64_t ns)
{
	return ns ? (double)n * NSEC_PER_SEC / (double)ns : 0;
}

/* Store err as the first error of a round unless one is there already (any thread). */
static inline void set_err(_Atomic int *slot, int err)
{
	int none = 0;

	/* Relaxed: the main thread reads it after the round's eventfd signal, a syscall pair. */
	atomic_compare_exchange_strong_explicit(slot, &none, err, memory_order_relaxed,
						memory_order_relaxed);
}

/* Wake the main thread (from a task). */
static inline void signal_main(int efd)
{
	uint64_t one = 1;

	/* An eventfd write of 1 cannot block or fail short of a counter overflow. */
	if (write(efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		abort();
}

/*
 * Wait for a task's signal on efd, at most timeout_s seconds. Returns 0, -errno, or
 * -ETIMEDOUT after saying what hung (the caller then prints the executor's counters and
 * gives up: the round's tasks may still run, so nothing they can reach may be freed).
 */
static inline int wait_efd(int efd, unsigned timeout_s, const char *what)
{
	struct pollfd pfd = { .fd = efd, .events = POLLIN };
	uint64_t v;
	int ret;

	do
		ret = poll(&pfd, 1, (int)timeout_s * MS_PER_S);
	while (ret < 0 && errno == EINTR);
	if (ret < 0) {
		ret = -errno;
		fprintf(stderr, BENCH_PROG ": poll: %s\n", strerror(-ret));
		return ret;
	}
	if (ret == 0) {
		fprintf(stderr, BENCH_PROG ": HANG: %s did not finish within %u s\n", what,
			timeout_s);
		return -ETIMEDOUT;
	}
	if (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
		fprintf(stderr, BENCH_PROG ": eventfd read: %s\n", strerror(errno));
		return -EIO;
	}
	return 0;
}

#ifdef QILIN_H
static inline void print_counters(const char *what, const struct ql_stats *st)
{
	const struct ql_worker_stats *t = &st->total;

	fprintf(stderr,
		BENCH_PROG ": %s: spawned %" PRIu64 " run %" PRIu64 " stolen %" PRIu64
		" parks %" PRIu64 " wakeups %" PRIu64 " ticks %" PRIu64 " sqes %" PRIu64
		" enters %" PRIu64 " cqes %" PRIu64 " dropped %" PRIu64 " runq %" PRIu64
		" inflight %" PRIu64 " global %" PRIu64 "\n",
		what, t->spawned, t->run, t->stolen, t->parks, t->wakeups, t->ticks, t->sqes,
		t->enters, t->cqes, t->dropped, t->runq_depth, t->inflight, st->global_depth);
}
#endif

#endif /* QILIN_BENCH_UTIL_H */
