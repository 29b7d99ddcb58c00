/* SPDX-License-Identifier: MIT */
/*
 * bench/peers/loadgen.c - closed-loop TCP echo load generator (epoll), for the echo scenario.
 *
 * What it does. Opens C connections (-c, 1000 by default) to ADDR:PORT, spread over T threads
 * (-t, 1 by default; each thread owns its share of the connections and one epoll instance,
 * level-triggered). Every connection is a closed loop: it sends one message of S bytes (-s,
 * 64 by default), waits until the whole echo has come back and checks it byte for byte, takes
 * the round trip's latency, and sends the next message at once. So C messages are in flight
 * at any time, never more. The messages carry a per-connection counter so that a server
 * echoing stale or mixed data is caught.
 *
 * Timing. After all connections are up it runs W seconds of warm-up (-w, 1) whose messages
 * are not counted, then D seconds of measurement (-d, 5). Only round trips that complete
 * inside the measurement window count; the latency of each goes into a log-linear histogram
 * (128 sub-buckets per power of two: under 1% error) per thread, merged at the end.
 *
 * Output. One JSON object on one line on stdout:
 *   {"msgs_per_s":..,"msgs":..,"secs":..,"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..,
 *    "conns":..,"size":..,"threads":..,"errors":..}
 * and a human line on stderr. errors counts connections that failed (connect refused, reset,
 * early close, a wrong echo); any error makes the exit status 1 after the JSON line, so that
 * a failing server is reported rather than averaged away. Exit 2 on a usage error.
 *
 * The connections are made before the clock starts, with a listen backlog at the server's
 * mercy: they are made in batches of 100 with a wait for each batch, so that a server with a
 * small backlog is not flooded with SYNs (which would cost seconds of SYN retries).
 *
 * Pin it away from the server (run.sh runs it under taskset on another CPU) and raise
 * RLIMIT_NOFILE for C above ~1000 (it raises its soft limit to the hard limit itself).
 *
 *   loadgen -p 7000 -c 1000 -s 4096 -d 5
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../lat_hist.h"

#define PROG "loadgen"
#define BENCH_PROG PROG
#include "../bench_util.h"

struct conn {
	int fd;
	uint32_t id;
	uint32_t seq;	   /* message counter, written into each message */
	size_t sent;	   /* bytes of the current message written */
	size_t got;	   /* bytes of its echo read */
	uint64_t t0;	   /* when the current message started */
	unsigned char *tx; /* the current message */
	unsigned char *rx; /* its echo */
};

struct worker {
	pthread_t thread;
	unsigned idx;
	unsigned nconns;
	struct conn *conns;
	int ep;
	uint64_t msgs; /* round trips completed in the window */
	uint64_t errors;
	uint64_t *hist; /* LAT_NBUCKETS latency counts (ns, log-linear) */
};

static struct sockaddr_in target;
static size_t msg_size = 64;
static atomic_int phase; /* 0 warm-up, 1 measuring, 2 done */
static uint64_t window_start, window_end;

/* Fill the message of c for its next round trip: its id and counter, then a pattern. */
static void next_message(struct conn *c)
{
	size_t i;

	/* The pattern once per connection; then only the id and counter change (bytes 0..7). */
	if (!c->seq)
		for (i = 8; i < msg_size; i++)
			c->tx[i] = (unsigned char)(c->id * 31u + i);
	c->seq++;
	memcpy(c->tx, &c->id, 4);
	memcpy(c->tx + 4, &c->seq, 4);
	c->sent = 0;
	c->got = 0;
	c->t0 = now_ns();
}

static void conn_fail(struct worker *w, struct conn *c, const char *what, int err)
{
	if (w->errors++ < 5)
		fprintf(stderr, PROG ": connection %u: %s: %s\n", c->id, what,
			err ? strerror(err) : "closed by the server");
	epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
}

/* Write what is left of c's message. Returns 0, or -1 after failing the connection. */
static int conn_send(struct worker *w, struct conn *c)
{
	while (c->sent < msg_size) {
		ssize_t n = send(c->fd, c->tx + c->sent, msg_size - c->sent, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT,
							  .data.ptr = c };

				epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
				return 0;
			}
			if (errno == EINTR)
				continue;
			conn_fail(w, c, "send", errno);
			return -1;
		}
		c->sent += (size_t)n;
	}
	return 0;
}

/* Read what the socket has; on a complete, correct echo, count it and start the next one. */
static void conn_recv(struct worker *w, struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->rx + c->got, msg_size - c->got, 0);
		uint64_t t;

		if (n < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR)
				continue;
			conn_fail(w, c, "recv", errno);
			return;
		}
		if (n == 0) {
			conn_fail(w, c, "recv", 0);
			return;
		}
		c->got += (size_t)n;
		if (c->got < msg_size)
			continue;
		if (c->sent < msg_size || memcmp(c->tx, c->rx, msg_size)) {
			conn_fail(w, c, "the echo differs from the message", EPROTO);
			return;
		}
		t = now_ns();
		if (atomic_load_explicit(&phase, memory_order_relaxed) == 1 &&
		    c->t0 >= window_start && t <= window_end) {
			w->msgs++;
			w->hist[lat_bucket_of(t - c->t0)]++;
		}
		next_message(c);
		/*
		 * Return rather than read again: the echo of the new message cannot be back before
		 * the server has run, and the recv would only say EAGAIN (a system call per
		 * message, a third of the client's). Level-triggered epoll reports the echo.
		 */
		conn_send(w, c);
		return;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	unsigned i;

	for (i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		next_message(c);
		if (conn_send(w, c))
			continue;
	}
	while (atomic_load_explicit(&phase, memory_order_relaxed) != 2) {
		int n = epoll_wait(w->ep, evs, 256, 100), k;

		if (n < 0 && errno != EINTR) {
			perror(PROG ": epoll_wait");
			w->errors++;
			break;
		}
		for (k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;

			if (c->fd < 0)
				continue;
			if (evs[k].events & EPOLLOUT) {
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

				epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
				if (conn_send(w, c))
					continue;
			}
			if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_recv(w, c);
		}
	}
	return NULL;
}

/* Connect c (blocking connect, then non-blocking). Returns 0 or -errno. */
static int conn_open(struct worker *w, struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	int one = 1, fd, err;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	c->fd = fd;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " -p PORT [-a ADDR] [-c CONNS] [-s BYTES] [-t THREADS]"
		   " [-w WARMUP_SECS] [-d SECS]\n"
		   "  closed-loop TCP echo load: prints one JSON line (msgs/s, p50/p99/p999)\n");
}

static long num_arg(const char *opt, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, PROG ": %s wants a number from %ld to %ld, not '%s'\n", opt, lo, hi,
			s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1";
	long port = 0, nconns = 1000, nthreads = 1, warm = 1, secs = 5, started;
	struct worker *ws = NULL;
	uint64_t *hist = NULL, msgs = 0, errors = 0, total = 0;
	unsigned i, b, made = 0;
	struct rlimit rl;
	double span;
	int opt, rc = 1;

	while ((opt = getopt(argc, argv, "a:p:c:s:t:w:d:h")) != -1) {
		switch (opt) {
		case 'a':
			addr = optarg;
			break;
		case 'p':
			port = num_arg("-p", optarg, 1, 65535);
			break;
		case 'c':
			nconns = num_arg("-c", optarg, 1, 1000000);
			break;
		case 's':
			msg_size = (size_t)num_arg("-s", optarg, 16, 1 << 20);
			break;
		case 't':
			nthreads = num_arg("-t", optarg, 1, 256);
			break;
		case 'w':
			warm = num_arg("-w", optarg, 0, 3600);
			break;
		case 'd':
			secs = num_arg("-d", optarg, 1, 3600);
			break;
		default:
			return usage_error_or_help(opt, usage) ? 2 : 0;
		}
	}
	if (!port || optind != argc) { /* -p is required, and no operands */
		usage(stderr);
		return 2;
	}
	if (nthreads > nconns)
		nthreads = nconns;
	memset(&target, 0, sizeof(target));
	target.sin_family = AF_INET;
	target.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &target.sin_addr) != 1) {
		fprintf(stderr, PROG ": -a wants an IPv4 address, not '%s'\n", addr);
		return 2;
	}
	/* C sockets plus a few: raise the soft limit to the hard one. */
	raise_nofile();
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < (rlim_t)nconns + 16) {
		fprintf(stderr, PROG ": %ld connections need RLIMIT_NOFILE >= %ld (it is %llu)\n",
			nconns, nconns + 16, (unsigned long long)rl.rlim_cur);
		return 1;
	}

	ws = calloc((size_t)nthreads, sizeof(*ws));
	hist = calloc(LAT_NBUCKETS, sizeof(*hist));
	if (!ws || !hist)
		goto oom;
	for (i = 0; i < nthreads; i++) {
		struct worker *w = &ws[i];
		unsigned k;

		w->idx = i;
		w->ep = -1;
		w->nconns = (unsigned)(nconns / nthreads + (i < nconns % nthreads));
		w->conns = calloc(w->nconns, sizeof(*w->conns));
		w->hist = calloc(LAT_NBUCKETS, sizeof(*w->hist));
		if (!w->conns || !w->hist)
			goto oom;
		for (k = 0; k < w->nconns; k++) {
			w->conns[k].fd = -1;
			w->conns[k].tx = malloc(msg_size);
			w->conns[k].rx = malloc(msg_size);
			if (!w->conns[k].tx || !w->conns[k].rx)
				goto oom;
		}
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		if (w->ep < 0) {
			perror(PROG ": epoll_create1");
			goto out;
		}
	}
	/* Connect every connection before the clock starts, in batches of 100. */
	for (i = 0; i < nthreads; i++) {
		unsigned k;

		for (k = 0; k < ws[i].nconns; k++, made++) {
			int err = conn_open(&ws[i], &ws[i].conns[k]);

			ws[i].conns[k].id = made;
			if (err) {
				fprintf(stderr, PROG ": connect to %s:%ld (connection %u): %s\n",
					addr, port, made, strerror(-err));
				goto out;
			}
			if (made % 100 == 99)
				usleep(2000);
		}
	}

	window_start = now_ns() + (uint64_t)warm * 1000000000ull;
	window_end = window_start + (uint64_t)secs * 1000000000ull;
	for (started = 0; started < nthreads; started++) {
		if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started])) {
			fprintf(stderr, PROG ": pthread_create failed\n");
			atomic_store(&phase, 2);
			errors++;
			goto join;
		}
	}
	while (now_ns() < window_start)
		usleep(10000);
	atomic_store(&phase, 1);
	while (now_ns() < window_end)
		usleep(10000);
	/* A round trip that ends after window_end is not counted; stop everyone. */
	usleep(20000);
	atomic_store(&phase, 2);
join:
	for (i = 0; i < started; i++)
		pthread_join(ws[i].thread, NULL);
	for (i = 0; i < nthreads; i++) {
		msgs += ws[i].msgs;
		errors += ws[i].errors;
		for (b = 0; b < LAT_NBUCKETS; b++)
			hist[b] += ws[i].hist[b];
	}
	for (b = 0; b < LAT_NBUCKETS; b++)
		total += hist[b];
	span = (double)(window_end - window_start) / 1e9;
	{
		unsigned top = 0;

		for (b = 0; b < LAT_NBUCKETS; b++)
			if (hist[b])
				top = b;
		printf("{\"msgs_per_s\":%.1f,\"msgs\":%" PRIu64 ",\"secs\":%.3f,\"p50_us\":%.1f,"
		       "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"conns\":%ld,"
		       "\"size\":%zu,\"threads\":%ld,\"errors\":%" PRIu64 "}\n",
		       (double)msgs / span, msgs, span, lat_quantile_us(hist, total, 0.50),
		       lat_quantile_us(hist, total, 0.99), lat_quantile_us(hist, total, 0.999),
		       total ? (double)lat_bucket_top(top) / 1000.0 : 0.0, nconns, msg_size, nthreads,
		       errors);
		fprintf(stderr,
			PROG ": %ld conns x %zu B: %.0f msgs/s, p50 %.1f us, p99 %.1f us, "
			     "%" PRIu64 " errors\n",
			nconns, msg_size, (double)msgs / span, lat_quantile_us(hist, total, 0.50),
			lat_quantile_us(hist, total, 0.99), errors);
	}
	rc = errors || !msgs ? 1 : 0;
	if (!msgs)
		fprintf(stderr, PROG ": no round trip completed in the window\n");
	goto out;
oom:
	fprintf(stderr, PROG ": out of memory\n");
out:
	if (ws) {
		for (i = 0; i < (unsigned)nthreads; i++) {
			unsigned k;

			for (k = 0; ws[i].conns && k < ws[i].nconns; k++) {
				if (ws[i].conns[k].fd >= 0)
					close(ws[i].conns[k].fd);
				free(ws[i].conns[k].tx);
				free(ws[i].conns[k].rx);
			}
			if (ws[i].ep >= 0)
				close(ws[i].ep);
			free(ws[i].conns);
			free(ws[i].hist);
		}
	}
	free(ws);
	free(hist);
	return rc;
}
