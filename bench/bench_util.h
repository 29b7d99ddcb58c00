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
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

#endif /* QILIN_BENCH_UTIL_H */
