/* SPDX-License-Identifier: MIT */
/*
 * bpf/obs_http.h - the smallest HTTP/1.1 server qilin-observer needs to serve
 * GET /metrics to Prometheus: one listening socket, one client at a time,
 * served to completion from the observer's main loop (a scrape is a few
 * kilobytes). Single-threaded.
 */
#ifndef QILIN_BPF_OBS_HTTP_H
#define QILIN_BPF_OBS_HTTP_H

#include <stdio.h>

/* Listen on "HOST:PORT" ("[ADDR]:PORT" for IPv6; HOST may be a name or empty
 * for every address). Returns the listening fd (non-blocking, close-on-exec)
 * or -errno; *why gets a short description of the failing step. */
int obs_http_listen(const char *hostport, const char **why);

/* Accept one pending client on lfd and answer it: GET /metrics gets 200 with
 * what render(f, arg) writes (Prometheus text format 0.0.4), any other path
 * 404, any other method 405. The client has 2 s to send its request and to
 * take the answer. Returns 0 (also when no client was pending or the client
 * went away) or -errno when render failed. */
int obs_http_serve_one(int lfd, int (*render)(FILE *f, void *arg), void *arg);

#endif /* QILIN_BPF_OBS_HTTP_H */
