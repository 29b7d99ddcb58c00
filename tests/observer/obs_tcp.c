/* SPDX-License-Identifier: MIT */
/*
 * tests/observer/obs_tcp.c - TCP traffic through io_uring on 127.0.0.1, for
 * the observer's retransmit test (run inside the network namespace the test
 * made lossy with nftables).
 *
 *   obs_tcp [--wait] [--hold SECS] [-6] [-l PORT] [-c PORT] [-n CONNS]
 *           [-b BYTES] [-w CHUNK] [-x] [--settle]
 *
 * -6        IPv6: [::1] instead of 127.0.0.1 (and /proc/net/tcp6 below).
 * -c PORT   open CONNS (-n, default 1) connections to 127.0.0.1:PORT with
 *           IORING_OP_CONNECT, all at once, then push BYTES (-b, default
 *           4 MiB) through each with IORING_OP_SEND of CHUNK bytes (-w,
 *           default 1024), one send in flight per connection. Without -x
 *           each connection then shuts down its sending side and reads until
 *           the peer's EOF, so nothing of it is left unacknowledged when it
 *           is closed. With -x it is closed (close(2)) right after its last
 *           send completed, with data most likely still queued: the kernel
 *           goes on sending and retransmitting for the orphaned socket, data
 *           and FIN, after the owner let go of it.
 * -l PORT   the receiving side, in this process: listen on 127.0.0.1:PORT and
 *           read CONNS connections until EOF (one thread, poll(2), plain
 *           recv), closing each at its EOF; checks that CONNS * BYTES bytes
 *           arrived.
 * --settle  at the end, wait (at most 15 s) until no socket of this
 *           namespace on either port may still (re)transmit: every one is
 *           LISTEN, FIN_WAIT2, TIME_WAIT or CLOSE in /proc/net/tcp.
 *
 * Output (stdout, line-buffered): "ready PID"; with -x "closed retrans=N"
 * right after the last close; with --settle "settled retrans=N"; then
 * "own retrans=S sink=R": the retransmitted segments of this process's own
 * sockets as the kernel counted them for each (TCP_INFO tcpi_total_retrans,
 * read just before each close: S the senders', R the receivers'), then
 * "done bytes=N" (bytes sent). N in retrans=N is this namespace's
 * TcpRetransSegs (/proc/net/snmp) at that moment, read by the program itself
 * so that the moment is exact. With --wait nothing is opened before SIGUSR1
 * (the listener is, so that the peer can connect); with --hold SECS it then
 * stays until SIGTERM/SIGINT or SECS. Threads: main owns the ring, the
 * sending sockets and the output; the sink thread owns the accepted sockets.
 */
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "obs_prog.h"

#define PROG "obs_tcp"
#define MAX_CONNS 64

static unsigned nconns = 1;
static unsigned long long bytes_per_conn = 4ull << 20;
static unsigned chunk = 1024;
static int listen_port = -1, connect_port = -1;
static int family = AF_INET;

/* The sink's result, read by main after pthread_join(). */
static unsigned long long sink_bytes, sink_retrans;
static const char *sink_error;

/* Segments the kernel retransmitted on fd so far (TCP_INFO), 0 if unknown. */
static unsigned long long own_retrans(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return 0;
	return ti.tcpi_total_retrans;
}

/* 127.0.0.1:port, or [::1]:port with -6. */
static struct sockaddr_storage loopback(int port, socklen_t *len)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		a->sin6_addr = in6addr_loopback;
		*len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		*len = sizeof(*a);
	}
	return ss;
}

/* This namespace's TcpRetransSegs, from /proc/net/snmp; -1 if unreadable. */
static long long retrans_segs(void)
{
	char head[1024], vals[1024];
	long long v = -1;
	FILE *f = fopen("/proc/net/snmp", "r");

	if (!f)
		return -1;
	while (fgets(head, sizeof(head), f)) {
		char *h, *x, *hs, *xs;

		if (strncmp(head, "Tcp:", 4) || !fgets(vals, sizeof(vals), f))
			continue;
		h = strtok_r(head, " \n", &hs);
		x = strtok_r(vals, " \n", &xs);
		while (h && x) {
			if (strcmp(h, "RetransSegs") == 0)
				v = atoll(x);
			h = strtok_r(NULL, " \n", &hs);
			x = strtok_r(NULL, " \n", &xs);
		}
		break;
	}
	fclose(f);
	return v;
}

/*
 * The receiving side: accept nconns connections on lfd and read each until
 * EOF, then close it. Runs on its own thread; owns every accepted socket.
 */
static void *sink_main(void *arg)
{
	int lfd = *(int *)arg;
	struct pollfd pfd[MAX_CONNS + 1];
	unsigned accepted = 0, open = 0, closed = 0;
	static char buf[1 << 16];

	pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
	while (closed < nconns) {
		if (poll(pfd, 1 + accepted, 30000) <= 0) {
			sink_error = "no progress for 30 s";
			break;
		}
		if ((pfd[0].revents & POLLIN) && accepted < nconns) {
			int fd = accept(lfd, NULL, NULL);

			if (fd < 0) {
				sink_error = "accept failed";
				break;
			}
			pfd[1 + accepted++] = (struct pollfd){ .fd = fd, .events = POLLIN };
			open++;
			if (accepted == nconns)
				pfd[0].events = 0;
		}
		for (unsigned i = 1; i <= accepted; i++) {
			ssize_t n;

			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = recv(pfd[i].fd, buf, sizeof(buf), 0);
			if (n > 0) {
				sink_bytes += (unsigned long long)n;
			} else {
				if (n < 0)
					sink_error = "recv failed";
				sink_retrans += own_retrans(pfd[i].fd);
				close(pfd[i].fd);
				pfd[i].fd = -1;
				open--;
				closed++;
			}
		}
		if (sink_error)
			break;
	}
	return NULL;
}

/* Wait until every socket on our ports is quiet; see the file comment. */
static int settle(double secs)
{
	unsigned long long end = obs_now_ns() + (unsigned long long)(secs * 1e9);

	for (;;) {
		int busy = 0;
		char line[512];
		FILE *f = fopen(family == AF_INET6 ? "/proc/net/tcp6" : "/proc/net/tcp", "r");

		if (!f)
			return -errno;
		while (fgets(line, sizeof(line), f)) {
			unsigned lport, rport, st;

			if (sscanf(line, " %*u: %*x:%x %*x:%x %x", &lport, &rport, &st) != 3)
				continue;
			if ((int)lport != listen_port && (int)lport != connect_port &&
			    (int)rport != listen_port && (int)rport != connect_port)
				continue;
			/* 05 FIN_WAIT2, 06 TIME_WAIT, 07 CLOSE, 0A LISTEN */
			if (st != 0x5 && st != 0x6 && st != 0x7 && st != 0xa)
				busy++;
		}
		fclose(f);
		if (!busy)
			return 0;
		if (obs_now_ns() >= end)
			return -ETIMEDOUT;
		usleep(10000);
	}
}

/*
 * Queue a connect to *to (when to is set) or a send of n bytes of data on fd,
 * tagged with index i. The ring has room for two operations per connection
 * and each connection has at most one queued, so an SQE is always there.
 */
static void queue_op(struct io_uring *r, int fd, unsigned i, const void *data, size_t n,
		     const struct sockaddr_storage *to, socklen_t tolen)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);

	if (!sqe)
		obs_die(PROG, "no free SQE");
	if (to)
		io_uring_prep_connect(sqe, fd, (const struct sockaddr *)to, tolen);
	else
		io_uring_prep_send(sqe, fd, data, n, 0);
	io_uring_sqe_set_data64(sqe, i);
}

/*
 * Connect every socket at once, then push the bytes; see the file comment.
 * *retrans gets the retransmits of the sending sockets while they were open
 * (TCP_INFO; with -x those made after close are not in it).
 */
static unsigned long long push(int close_now, unsigned long long *retrans)
{
	static int fds[MAX_CONNS];
	static unsigned long long left[MAX_CONNS];
	static char data[1 << 16];
	socklen_t tolen;
	struct sockaddr_storage to = loopback(connect_port, &tolen);
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	unsigned long long sent = 0;
	unsigned pending = 0, active = nconns;
	int ret;

	memset(data, 'q', sizeof(data));
	ret = io_uring_queue_init(2 * MAX_CONNS, &ring, 0);
	if (ret < 0)
		obs_die(PROG, "io_uring_queue_init: %s", strerror(-ret));
	for (unsigned i = 0; i < nconns; i++) {
		fds[i] = socket(family, SOCK_STREAM, 0);
		if (fds[i] < 0)
			obs_die(PROG, "socket: %s", strerror(errno));
		queue_op(&ring, fds[i], i, NULL, 0, &to, tolen);
		pending++;
	}
	while (pending) {
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0)
			obs_die(PROG, "io_uring_submit_and_wait: %s", strerror(-ret));
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			if (cqe->res < 0)
				obs_die(PROG, "connect to port %d: %s", connect_port,
					strerror(-cqe->res));
			io_uring_cqe_seen(&ring, cqe);
			pending--;
		}
	}

	/* One send in flight per connection; user_data is its index. */
	for (unsigned i = 0; i < nconns; i++) {
		left[i] = bytes_per_conn;
		queue_op(&ring, fds[i], i, data, left[i] < chunk ? left[i] : chunk, NULL, 0);
	}
	while (active) {
		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0)
			obs_die(PROG, "io_uring_submit_and_wait: %s", strerror(-ret));
		while (io_uring_peek_cqe(&ring, &cqe) == 0) {
			unsigned i = (unsigned)io_uring_cqe_get_data64(cqe);
			int res = cqe->res;

			io_uring_cqe_seen(&ring, cqe);
			if (res <= 0)
				obs_die(PROG, "send: %s", res ? strerror(-res) : "sent nothing");
			left[i] -= (unsigned long long)res;
			sent += (unsigned long long)res;
			if (left[i]) {
				queue_op(&ring, fds[i], i, data, left[i] < chunk ? left[i] : chunk,
					 NULL, 0);
				continue;
			}
			active--;
			if (close_now) {
				/* Orphan it now, data and FIN possibly still queued. */
				*retrans += own_retrans(fds[i]);
				close(fds[i]);
				fds[i] = -1;
			} else if (shutdown(fds[i], SHUT_WR) < 0) {
				obs_die(PROG, "shutdown: %s", strerror(errno));
			}
		}
	}
	if (close_now) {
		printf("closed retrans=%lld\n", retrans_segs());
	} else {
		/* The peer closes at our EOF: everything we sent was acknowledged. */
		for (unsigned i = 0; i < nconns; i++) {
			ssize_t n;

			while ((n = recv(fds[i], data, sizeof(data), 0)) > 0)
				;
			if (n < 0)
				obs_die(PROG, "recv: %s", strerror(errno));
			*retrans += own_retrans(fds[i]);
			close(fds[i]);
		}
	}
	io_uring_queue_exit(&ring);
	return sent;
}

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [--wait] [--hold SECS] [-6] [-l PORT] [-c PORT] "
			"[-n CONNS] [-b BYTES] [-w CHUNK] [-x] [--settle]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int wait_go = 0, close_now = 0, do_settle = 0, lfd = -1, ret;
	unsigned long long sent = 0, retrans = 0;
	double hold = 0;
	pthread_t sink;

	obs_block_signals();
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--wait") == 0) {
			wait_go = 1;
		} else if (strcmp(a, "-x") == 0) {
			close_now = 1;
		} else if (strcmp(a, "-6") == 0) {
			family = AF_INET6;
		} else if (strcmp(a, "--settle") == 0) {
			do_settle = 1;
		} else if (!v) {
			usage();
		} else if (strcmp(a, "--hold") == 0) {
			hold = obs_parse_num(PROG, a, argv[++i], 1);
		} else if (strcmp(a, "-l") == 0) {
			listen_port = (int)obs_parse_num(PROG, a, argv[++i], 0);
		} else if (strcmp(a, "-c") == 0) {
			connect_port = (int)obs_parse_num(PROG, a, argv[++i], 0);
		} else if (strcmp(a, "-n") == 0) {
			nconns = (unsigned)obs_parse_num(PROG, a, argv[++i], 0);
		} else if (strcmp(a, "-b") == 0) {
			bytes_per_conn = (unsigned long long)obs_parse_num(PROG, a, argv[++i], 0);
		} else if (strcmp(a, "-w") == 0) {
			chunk = (unsigned)obs_parse_num(PROG, a, argv[++i], 0);
		} else {
			usage();
		}
	}
	if ((listen_port < 0 && connect_port < 0) || listen_port > 65535 || connect_port > 65535 ||
	    nconns < 1 || nconns > MAX_CONNS || chunk < 1 || chunk > (1 << 16) || !bytes_per_conn)
		usage();

	if (listen_port >= 0) {
		socklen_t alen;
		struct sockaddr_storage a = loopback(listen_port, &alen);
		int one = 1;

		lfd = socket(family, SOCK_STREAM, 0);
		if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(lfd, (struct sockaddr *)&a, alen) < 0 || listen(lfd, 128) < 0)
			obs_die(PROG, "listen on port %d of the loopback: %s", listen_port,
				strerror(errno));
	}
	printf("ready %d\n", (int)getpid());
	if (wait_go)
		obs_wait_go(PROG, 60);
	if (lfd >= 0) {
		ret = pthread_create(&sink, NULL, sink_main, &lfd);
		if (ret)
			obs_die(PROG, "pthread_create: %s", strerror(ret));
	}
	if (connect_port >= 0)
		sent = push(close_now, &retrans);
	if (lfd >= 0) {
		pthread_join(sink, NULL);
		if (sink_error)
			obs_die(PROG, "sink: %s", sink_error);
		if (connect_port == listen_port && sink_bytes != sent)
			obs_die(PROG, "sink got %llu bytes, %llu were sent", sink_bytes, sent);
		close(lfd);
	}
	if (do_settle) {
		ret = settle(15);
		if (ret < 0)
			obs_die(PROG, "sockets did not settle: %s", strerror(-ret));
		printf("settled retrans=%lld\n", retrans_segs());
	}
	printf("own retrans=%llu sink=%llu%s\n", retrans, sink_retrans,
	       close_now ? " (senders: until close)" : "");
	printf("done bytes=%llu\n", sent);
	obs_hold(hold);
	return 0;
}
