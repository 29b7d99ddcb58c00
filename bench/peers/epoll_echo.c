/* SPDX-License-Identifier: MIT */
/*
 * bench/peers/epoll_echo.c - the epoll TCP echo server qilin's echo server is measured against.
 *
 * Meant to be a good one, not a strawman: T threads (-t, default one per CPU in the affinity
 * mask), each pinned to its CPU, each with its own SO_REUSEPORT listener and its own epoll
 * instance, so that the kernel spreads connections over the threads and no state is shared
 * between them (no locks, no cross-thread wake-ups). Edge-triggered: a readable socket is read
 * until a short read or EAGAIN and every byte is written straight back from the same buffer (a
 * short read means the queue was empty, so the recv that would only say EAGAIN is skipped, as
 * epoll(7) allows for stream sockets, unless the peer hung up); a write that would block keeps
 * the rest and waits for EPOLLOUT, and the socket is not read again before the rest is out
 * (back-pressure, as any echo server must). Listeners accept in a loop until EAGAIN
 * (accept4 with SOCK_NONBLOCK, no extra fcntl). TCP_NODELAY on every connection, as the qilin
 * and Go servers have it (Go sets it by default).
 *
 * Prints "listening on ADDR:PORT" on stdout once every thread listens. SIGTERM or SIGINT stops
 * it: each thread notices within 100 ms, closes its sockets and the process exits 0.
 *
 *   epoll_echo -p 7001 [-a 127.0.0.1] [-t THREADS]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROG "epoll_echo"
#define BENCH_PROG PROG
#include "../bench_util.h"
#define BUF_SIZE (64 * 1024)

/* One connection: its fd and the bytes read but not yet written back. */
struct conn {
	int fd;
	unsigned off, len; /* pending bytes: buf[off .. off + len) */
	char buf[BUF_SIZE];
};

struct thread {
	pthread_t tid;
	int cpu; /* CPU to pin to, or -1 */
	int lfd, ep;
	int err; /* set when setting up failed */
};

static volatile sig_atomic_t stop;
static struct sockaddr_in bind_addr;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void conn_close(struct thread *t, struct conn *c)
{
	epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
}

/* Write c's pending bytes. Returns 1 when all are out, 0 when the socket is full, -1 on error. */
static int conn_flush(struct conn *c)
{
	while (c->len) {
		ssize_t n = send(c->fd, c->buf + c->off, c->len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		c->off += (unsigned)n;
		c->len -= (unsigned)n;
	}
	c->off = 0;
	return 1;
}

/* Handle readiness of c (edge-triggered: drain until EAGAIN, or until the peer pushes back). */
static void conn_event(struct thread *t, struct conn *c, unsigned events)
{
	int r;

	if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
		conn_close(t, c);
		return;
	}
	/* Finish a blocked write before reading more. */
	r = conn_flush(c);
	if (r < 0) {
		conn_close(t, c);
		return;
	}
	if (r == 0)
		return; /* EPOLLOUT will come (edge: when the send buffer drains) */
	for (;;) {
		ssize_t n = recv(c->fd, c->buf, BUF_SIZE, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				conn_close(t, c);
			return;
		}
		if (n == 0) {
			conn_close(t, c);
			return;
		}
		c->off = 0;
		c->len = (unsigned)n;
		r = conn_flush(c);
		if (r < 0) {
			conn_close(t, c);
			return;
		}
		/*
		 * A short read of a stream socket means its receive queue was empty (epoll(7)):
		 * data arriving later raises a new edge, so the recv that would say EAGAIN is
		 * skipped (one system call per message less).
		 */
		if (r == 0 || (n < BUF_SIZE && !(events & (EPOLLRDHUP | EPOLLHUP))))
			return;
	}
}

static void accept_all(struct thread *t)
{
	for (;;) {
		int one = 1, fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev;
		struct conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				fprintf(stderr, PROG ": accept4: %s\n", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->off = c->len = 0;
		ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		ev.data.ptr = c;
		if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
		}
	}
}

/* Listener and epoll of t. Returns 0 or -1 after saying why. */
static int thread_setup(struct thread *t)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = NULL };
	int one = 1;

	t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->lfd < 0 || setsockopt(t->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(t->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(t->lfd, (struct sockaddr *)&bind_addr, sizeof(bind_addr)) < 0 ||
	    listen(t->lfd, 4096) < 0) {
		fprintf(stderr, PROG ": listener on port %u: %s\n", ntohs(bind_addr.sin_port),
			strerror(errno));
		return -1;
	}
	t->ep = epoll_create1(EPOLL_CLOEXEC);
	if (t->ep < 0 || epoll_ctl(t->ep, EPOLL_CTL_ADD, t->lfd, &ev) < 0) {
		perror(PROG ": epoll");
		return -1;
	}
	return 0;
}

static void *thread_main(void *arg)
{
	struct thread *t = arg;
	struct epoll_event evs[512];

	if (t->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(t->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	while (!stop) {
		int n = epoll_wait(t->ep, evs, 512, 100), i;

		for (i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				accept_all(t);
			else
				conn_event(t, evs[i].data.ptr, evs[i].events);
		}
		if (n < 0 && errno != EINTR) {
			perror(PROG ": epoll_wait");
			t->err = 1;
			break;
		}
	}
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " -p PORT [-a ADDR] [-t THREADS]\n");
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1";
	long port = 0, nthreads = 0;
	struct thread *ts;
	struct sigaction sa;
	cpu_set_t mask;
	int opt, cpu, i, started = 0, rc = 0;
	char *end;

	while ((opt = getopt(argc, argv, "a:p:t:h")) != -1) {
		switch (opt) {
		case 'a':
			addr = optarg;
			break;
		case 'p':
			port = strtol(optarg, &end, 10);
			if (*end || port < 1 || port > 65535) {
				fprintf(stderr, PROG ": -p wants a port, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 't':
			nthreads = strtol(optarg, &end, 10);
			if (*end || nthreads < 1 || nthreads > 1024) {
				fprintf(stderr, PROG ": -t wants 1..1024, not '%s'\n", optarg);
				return 2;
			}
			break;
		default:
			return usage_error_or_help(opt, usage) ? 2 : 0;
		}
	}
	if (!port || optind != argc) { /* -p is required, and no operands */
		usage(stderr);
		return 2;
	}
	memset(&bind_addr, 0, sizeof(bind_addr));
	bind_addr.sin_family = AF_INET;
	bind_addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &bind_addr.sin_addr) != 1) {
		fprintf(stderr, PROG ": -a wants an IPv4 address, not '%s'\n", addr);
		return 2;
	}
	raise_nofile();
	/* One thread per CPU of the affinity mask, pinned in mask order. */
	if (sched_getaffinity(0, sizeof(mask), &mask) < 0)
		CPU_ZERO(&mask);
	if (!nthreads)
		nthreads = CPU_COUNT(&mask) > 0 ? CPU_COUNT(&mask) : 1;
	ts = calloc((size_t)nthreads, sizeof(*ts));
	if (!ts) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (i = 0; i < nthreads; i++)
		ts[i].lfd = ts[i].ep = ts[i].cpu = -1;
	cpu = -1;
	for (i = 0; i < nthreads; i++) {
		if (CPU_COUNT(&mask) > 0) {
			do
				cpu = (cpu + 1) % CPU_SETSIZE;
			while (!CPU_ISSET(cpu, &mask));
			ts[i].cpu = cpu;
		}
		if (thread_setup(&ts[i])) {
			rc = 1;
			goto out;
		}
	}
	for (started = 0; started < nthreads; started++) {
		if (pthread_create(&ts[started].tid, NULL, thread_main, &ts[started])) {
			fprintf(stderr, PROG ": pthread_create failed\n");
			stop = 1;
			rc = 1;
			break;
		}
	}
	if (!rc) {
		printf("listening on %s:%ld\n", addr, port);
		fflush(stdout);
	}
	for (i = 0; i < started; i++) {
		pthread_join(ts[i].tid, NULL);
		rc |= ts[i].err;
	}
out:
	/* Connections still open are closed by the exit; the listeners and epolls here. */
	for (i = 0; i < nthreads; i++) {
		if (ts[i].lfd >= 0)
			close(ts[i].lfd);
		if (ts[i].ep >= 0)
			close(ts[i].ep);
	}
	free(ts);
	return rc;
}
