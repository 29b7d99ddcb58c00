/* SPDX-License-Identifier: MIT */
/*
 * tests/helpers.h - shared test helpers (prefix t_).
 *
 * The ring configurations every ring-layer feature is tested under live
 * here: like liburing's FOR_ALL_TEST_CONFIGS, T_FOR_ALL_CONFIGS(cfg) runs a
 * block once per configuration, each forcing a different set of features
 * off, so that the paths an older kernel takes are exercised on this one.
 */
#ifndef QILIN_TEST_HELPERS_H
#define QILIN_TEST_HELPERS_H

#include <stdint.h>
#include <check.h>

#include "ring.h"

/* 1 in a ThreadSanitizer build (suites scale their sizes down by it). */
#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_TSAN 1
#endif
#endif
#ifndef T_TSAN
#define T_TSAN 0
#endif

struct t_config {
	const char *name;   /* QILIN_URING_DISABLE spelling */
	unsigned disable;   /* QL_RING_F_* forced off */
};

extern const struct t_config t_configs[];
extern const unsigned t_nconfigs;

#define T_FOR_ALL_CONFIGS(cfg)                                                    \
	for (const struct t_config *cfg = t_configs; cfg < t_configs + t_nconfigs; cfg++)

/* Set up a ring for cfg (environment ignored); fails the test on error. */
void t_ring_init(struct ql_ring *r, const struct t_config *cfg, unsigned sq, unsigned flags);

/* Features QILIN_URING_DISABLE forces off (0 when unset). */
unsigned t_env_disable(void);

/* Monotonic clock in nanoseconds. */
uint64_t t_now_ns(void);

/* Number of open file descriptors of this process (from /proc/self/fd). */
int t_fd_count(void);

/* A TCP listener on 127.0.0.1 with an ephemeral port; returns fd, sets *port. */
int t_listen_tcp(uint16_t *port);

/* A blocking TCP connection to 127.0.0.1:port. */
int t_connect_tcp(uint16_t port);

/* One test case of a suite table: its own TCase, with its own timeout. */
struct t_case {
	const char *name;
	const TTest *test;
	int timeout;	  /* seconds */
	const char *skip; /* why it cannot run here, or NULL */
};

/*
 * Add each case to s as a TCase of its own. A case with a skip reason is left
 * out and printed as "SKIP: suite/name: reason", which tests/run.sh counts as
 * a skipped test (never as a passed one).
 */
void t_add_cases(Suite *s, const char *suite, const struct t_case *cases, size_t n);

/* Run the Check suite built by make_suite; exit status for main(). */
int t_run_suite(Suite *s);

#endif
