/* SPDX-License-Identifier: MIT */
/*
 * bpf/obs_http.c - qilin-observer's /metrics endpoint.
 *
 * Owns the listening socket (created by obs_http_listen, closed by the
 * caller) and each accepted client socket for the span of one
 * obs_http_serve_one() call: the request is read (up to 8 KiB, until the
 * blank line), answered with Connection: close, and the socket closed. No
 * keep-alive, no threads: the main loop polls the listening socket next to
 * its timers, and a scrape costs one snapshot of the BPF maps. Timeouts on
 * the client socket bound how long a slow client can hold the loop (2 s).
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "obs_http.h"

int obs_http_listen(const char *hostport, const char **why)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *res = NULL, *ai;
	char host[256];
	const char *port, *colon;
	size_t hl;
	int fd = -EINVAL, one = 1, err;

	*why = "HOST:PORT expected";
	if (!hostport || !(colon = strrchr(hostport, ':')) || !colon[1])
		return -EINVAL;
	port = colon + 1;
	hl = (size_t)(colon - hostport);
	if (hl >= 2 && hostport[0] == '[' && hostport[hl - 1] == ']') {
		hostport++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, hl);
	host[hl] = 0;
	err = getaddrinfo(hl ? host : NULL, port, &hints, &res);
	if (err) {
		*why = gai_strerror(err);
		return -EINVAL;
	}
	*why = "socket/bind/listen";
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			fd = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
			break;
		err = -errno;
		close(fd);
		fd = err;
	}
	freeaddrinfo(res);
	return fd;
}

/* Write all of buf; gives up on error or timeout (the client's loss). */
static void send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static void answer(int fd, const char *status, const char *type, const char *body, size_t len)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n",
			 status, type, len);

	send_all(fd, head, (size_t)n);
	send_all(fd, body, len);
}

int obs_http_serve_one(int lfd, int (*render)(FILE *f, void *arg), void *arg)
{
	struct timeval tv = { .tv_sec = 2 };
	char req[8192], method[16], path[1024];
	size_t got = 0;
	char *body = NULL;
	size_t blen = 0;
	FILE *f;
	int fd, ret = 0;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return 0; /* EAGAIN, or the client gave up: nothing to do */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (got < sizeof(req) - 1) {
		ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		req[got] = 0;
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	req[got] = 0;
	if (sscanf(req, "%15s %1023s", method, path) != 2) {
		answer(fd, "400 Bad Request", "text/plain", "bad request\n", 12);
		goto out;
	}
	if (strcmp(method, "GET")) {
		answer(fd, "405 Method Not Allowed", "text/plain", "GET only\n", 9);
		goto out;
	}
	path[strcspn(path, "?")] = 0;
	if (strcmp(path, "/metrics")) {
		answer(fd, "404 Not Found", "text/plain", "not found; try /metrics\n", 24);
		goto out;
	}
	f = open_memstream(&body, &blen);
	if (!f) {
		ret = -errno;
		answer(fd, "500 Internal Server Error", "text/plain", "out of memory\n", 14);
		goto out;
	}
	ret = render(f, arg);
	if (fclose(f) && !ret)
		ret = -EIO;
	if (ret)
		answer(fd, "500 Internal Server Error", "text/plain", "cannot read the maps\n", 21);
	else
		answer(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, blen);
	free(body);
out:
	close(fd);
	return ret;
}
