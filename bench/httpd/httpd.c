/* SPDX-License-Identifier: MIT */
/*
 * bench/httpd/httpd.c - qilin-httpd, the deferred-task HTTP/1.1 server on
 * qilin: the service qilin descends from, on the library's stream API.
 *
 *   POST /defer-task   body hashed by a stackless task (ql_spawn); 202 {"id":N}
 *   GET  /task/ID      {"id":N,"state":"queued"} or "done" with the hash; 404
 *   GET  /healthz      200 ok
 *   GET  /stats        per-worker counters as JSON
 *
 * What it owns, and from which threads. One struct hw per executor worker,
 * touched only by that worker (its listener, connections, free list, idle
 * sweep), except its counters (written by the worker with relaxed atomic
 * stores, read by /stats on any worker), its task log and the return stack
 * of its body pool (below). Each worker
 * has its own SO_REUSEPORT listener with a multishot accept
 * (ql_accept_multi), so the kernel spreads connections and each connection
 * lives on one worker: its multishot recv (ql_recv_multi), its parser, its
 * sends (ql_send_cb) and its timers run there, and the request path takes
 * no lock.
 *
 * A request's life. A recv result is parsed in place, straight from the
 * provided buffer (RECV_BUFS x RECV_BUF_SIZE per worker), by http_parser,
 * which keeps its state between buffers: only what the server needs is
 * copied (the first PATH_KEEP bytes of the path, for routing; the body of
 * a POST, into a body block). Each complete request appends its response
 * to the connection's fill buffer; at the end of the recv result the fill
 * buffer goes out in one send, so a pipelined batch costs one send. While a
 * send is in flight responses keep going to a new fill buffer, which goes
 * next.
 *
 * Memory. What a connection holds while idle is its record (a couple of
 * hundred bytes) and the library's stream record: output buffers come from
 * a per-worker pool only while there are responses to send and go back when
 * the send completes, body blocks from a per-worker pool only while a POST
 * body is read and its task has not run. So memory follows the work in
 * flight, not the number of connections. Connections, output buffers, body
 * blocks and stream records come from per-worker free lists: no malloc per
 * request in steady state.
 *
 * The deferred task. POST /defer-task takes the next record of the worker's
 * task log (a bounded ring of LOG_SIZE records, as many as the Go peer
 * keeps), gives it the body block and spawns a stackless task (ql_spawn:
 * any worker may run it) that hashes the body (FNV-1a, 64 bits), gives the
 * block back to its worker (a lock-free return stack) and marks the record
 * done. A record keeps the id, state, hash and length (32 bytes), which is
 * all GET /task/ID answers from. A record is reused only once its task is
 * done (else 503: the log is full of pending tasks). GET /task/ID may read
 * another worker's log: records are read as a seqlock (tag, hash, tag
 * again), with the tag storing the id and the done bit.
 *
 * Limits: --max-conns (over it, 503 and close at once), 8 KiB of headers and
 * 64 KiB of body (413), 1 KiB of URL (414), malformed requests (400), idle
 * connections closed by a per-worker sweep every 500 ms (--idle-ms), and a
 * request still incomplete after that long answered 408 (slowloris). A
 * connection that must close sends its last response with "Connection:
 * close", then shuts down its write side and drains what the client still
 * sends until it closes (or the idle sweep ends it): no RST eats the reply.
 *
 * Shutdown (SIGINT/SIGTERM): a job on each worker cancels its accept stream
 * and every connection's recv stream; once every connection is closed the
 * executor is shut down and everything is freed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qilin.h"

#define BENCH_PROG "qilin-httpd"
#include "../bench_util.h"

#define MAX_HEADER (8u * 1024u)	 /* request line + headers */
#define MAX_BODY (64u * 1024u)
#define MAX_URL 1024u
#define MAX_OUT (4u << 20)	 /* unsent responses per connection */
#define OUT_SLOT 2048u		 /* an output buffer from the worker's pool */
#define OUT_KEEP 1024u		 /* idle output buffers kept per worker */
#define LOG_SIZE 32768u		 /* task records per worker, a power of 2 (as the Go peer's) */
#define BODY_SLOT 256u		 /* a pooled body block, header included */
#define PATH_KEEP 32u		 /* path bytes kept for routing ("/task/" + 19 digits fit) */
#define RECV_BUFS 1024u		 /* provided buffers per worker (a power of 2) */
#define RECV_BUF_SIZE 1024u	 /* bytes each: a request over it is parsed in pieces */
#define SWEEP_MS 500u
#define FREE_KEEP 4096u		 /* idle connection records kept per worker */

/* ------------------------------------------------------------ state */

struct hw;

/*
 * A request body on its way to its task: a block of the creating worker's
 * body pool (cap == BODY_CAP) or, for a larger body, a block of its own
 * size (freed by the task). The task gives a pool block back to its home
 * worker through that worker's return stack (any thread may push).
 */
struct body {
	struct body *next;	 /* pool and return-stack link */
	struct hw *home;	 /* the worker whose pool it belongs to */
	uint32_t cap, len;
	char data[];
};

#define BODY_CAP ((uint32_t)(BODY_SLOT - offsetof(struct body, data)))

/*
 * A task record: tag 0 (empty), id << 1 (queued) or id << 1 | 1 (done). The
 * record keeps what GET /task/ID answers (state and hash) plus the body's
 * length; the body itself lives only while the task is pending (body is
 * NULL once it has run), so that a log of LOG_SIZE records costs 32 bytes
 * a record, not the body's size.
 */
struct rec {
	_Atomic uint64_t tag;
	_Atomic uint64_t hash;
	struct body *body;	 /* set by the creator, taken by the task */
	uint32_t len;
};

/* Counters: written by the worker (relaxed store), read anywhere (relaxed load). */
struct counters {
	uint64_t accepted, rejected, open, requests, r2xx, r4xx, r5xx;
	uint64_t tasks_queued, tasks_done, idle_closed, bytes_in, bytes_out;
};

/* An output buffer: NULL while the connection has nothing to send (see buf_reserve). */
struct buf {
	char *p;
	size_t len, cap;
};

struct conn {
	int fd;
	struct hw *hw;
	struct ql_stream *rs;	     /* recv stream while live */
	struct conn *prev, *next;    /* the worker's live list, least recently active first */
	http_parser parser;
	uint32_t tick;		     /* sweep tick of the last activity */
	uint8_t rs_live;	     /* recv stream not ended */
	uint8_t sending;	     /* a send is in flight */
	uint8_t closing;	     /* send what is queued, then close */
	uint8_t wr_shut;	     /* write side shut down (draining the client) */
	uint8_t dead;		     /* the socket failed: send nothing more */
	uint8_t killed;		     /* the idle sweep ended it */
	uint16_t err;		     /* status to answer when the parser stops (413, 414) */
	uint8_t route;		     /* enum route of the request being parsed */
	uint8_t want_body;	     /* keep the body (POST /defer-task) */
	uint8_t in_req;		     /* a request has begun and is not complete */
	uint32_t req_tick;	     /* sweep tick when it began */
	uint8_t in_query;	     /* on_url has seen the '?' */
	uint64_t body_seen;	     /* body bytes of this request */
	size_t url_len;		     /* bytes of the URL so far (414 past MAX_URL) */
	size_t path_len;	     /* bytes of its path (before '?'), of which ... */
	char path[PATH_KEEP];	     /* ... the first PATH_KEEP are kept: enough to route */
	struct body *body;	     /* the body of POST /defer-task being read, or NULL */
	struct buf fill, flight;     /* responses being built / being sent (pooled) */
	size_t sent;		     /* bytes of flight sent */
};

struct hw {
	unsigned id;
	int lfd;
	struct ql_stream *acc;	     /* accept stream while live */
	int acc_live;
	struct conn *head, *tail;    /* live connections, LRU order */
	struct conn *free;	     /* idle records (linked through next) */
	unsigned nfree;
	uint32_t tick;		     /* sweeps so far */
	uint64_t seq;		     /* tasks created here */
	struct rec *log;	     /* LOG_SIZE records */
	char *out_pool;		     /* idle OUT_SLOT buffers, linked through their first bytes */
	unsigned nout;
	struct body *body_pool;	     /* idle body blocks of this worker */
	/* Blocks given back by tasks on any worker (Treiber stack; popped whole). */
	_Atomic(struct body *) body_ret;
	char date[64];		     /* "Date: ...\r\n", refreshed by the sweep */
	size_t date_len;
	int stopping;
	int timer_live;
	struct counters c;
};

enum route { R_NONE, R_DEFER, R_TASK, R_HEALTH, R_STATS, R_NOTFOUND, R_METHOD };

static struct ql_exec *g_ex;
static struct hw *g_hw;
static unsigned g_nw;
static unsigned g_idle_ticks;
static unsigned long g_max_conns = 10000;
static _Atomic unsigned long g_conns; /* open connections, all workers */
static _Atomic int g_stopping;
static _Atomic unsigned g_ready;
static http_parser_settings g_settings;

#define CNT_ADD(h, f, n) __atomic_store_n(&(h)->c.f, (h)->c.f + (n), __ATOMIC_RELAXED)
#define CNT_GET(h, f) __atomic_load_n(&(h)->c.f, __ATOMIC_RELAXED)

static void conn_recv(void *arg, ssize_t res, const void *buf, unsigned flags);
static void conn_flush(struct conn *c);

/* ------------------------------------------------------------ buffers */

/*
 * Output buffers. A connection holds one only while it has responses to
 * send: respond() takes an OUT_SLOT buffer from the worker's pool when the
 * connection has none, the send takes it over (fill becomes flight), and it
 * goes back to the pool when the send completes. So the memory is
 * proportional to the sends in flight, not to the open connections. A batch
 * of responses larger than OUT_SLOT grows its buffer with realloc; such a
 * buffer is freed, not pooled, when it comes back.
 */

/* Make room for n more bytes in b; 0, -E2BIG past limit, or -ENOMEM. Worker h only. */
static int buf_reserve(struct hw *h, struct buf *b, size_t n, size_t limit)
{
	size_t need = b->len + n, cap;
	char *p;

	if (need <= b->cap)
		return 0;
	if (need > limit)
		return -E2BIG;
	if (!b->p && need <= OUT_SLOT) {
		p = h->out_pool;
		if (p) {
			memcpy(&h->out_pool, p, sizeof(char *));
			h->nout--;
		} else {
			p = malloc(OUT_SLOT);
			if (!p)
				return -ENOMEM;
		}
		b->p = p;
		b->cap = OUT_SLOT;
		return 0;
	}
	cap = b->cap ? b->cap : OUT_SLOT;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Give b's memory back (to worker h's pool if it is a pool slot); b is then empty. */
static void buf_release(struct hw *h, struct buf *b)
{
	if (b->p && b->cap == OUT_SLOT && h->nout < OUT_KEEP) {
		memcpy(b->p, &h->out_pool, sizeof(char *));
		h->out_pool = b->p;
		h->nout++;
	} else {
		free(b->p);
	}
	b->p = NULL;
	b->cap = b->len = 0;
}

/*
 * Body blocks. The worker reading a POST /defer-task takes a block from its
 * pool (body_get) and hands it to the task with the record; the task, on
 * whatever worker runs it, pushes a pool block onto its home's return stack
 * (body_put_remote) and frees a larger one. The home takes the whole return
 * stack back when its own pool is empty. The pool grows to the peak number
 * of pending tasks and stays there (freed at exit).
 */

/* A block for a body of up to want bytes (at least BODY_CAP); NULL: no memory. Worker h. */
static struct body *body_get(struct hw *h, size_t want)
{
	struct body *b = NULL;

	if (want <= BODY_CAP) {
		b = h->body_pool;
		if (!b) {
			/* Acquire: the pushers' writes of the blocks' links come before. */
			b = atomic_exchange_explicit(&h->body_ret, NULL, memory_order_acquire);
			h->body_pool = b;
		}
		if (b) {
			h->body_pool = b->next;
			b->len = 0;
			return b;
		}
		want = BODY_CAP;
	}
	b = malloc(offsetof(struct body, data) + want);
	if (!b)
		return NULL;
	b->home = h;
	b->cap = (uint32_t)want;
	b->len = 0;
	return b;
}

/* Back to its own worker's pool, from that worker. NULL is a no-op. */
static void body_put(struct body *b)
{
	if (!b)
		return;
	if (b->cap != BODY_CAP) {
		free(b);
		return;
	}
	b->next = b->home->body_pool;
	b->home->body_pool = b;
}

/* Back to its home's return stack, from any thread (the task). NULL is a no-op. */
static void body_put_remote(struct body *b)
{
	struct hw *h;
	struct body *top;

	if (!b)
		return;
	if (b->cap != BODY_CAP) {
		free(b);
		return;
	}
	h = b->home;
	top = atomic_load_explicit(&h->body_ret, memory_order_relaxed);
	do
		b->next = top;
	/* Release: the home, which takes the stack with acquire, sees b->next. */
	while (!atomic_compare_exchange_weak_explicit(&h->body_ret, &top, b, memory_order_release,
						      memory_order_relaxed));
}

/* Grow c's body block to hold n more bytes (up to MAX_BODY); 0 or -ENOMEM / -E2BIG. */
static int body_reserve(struct body **bp, size_t n)
{
	struct body *b = *bp, *nb;
	size_t need = (size_t)b->len + n, cap = b->cap;

	if (need <= cap)
		return 0;
	if (need > MAX_BODY)
		return -E2BIG;
	while (cap < need)
		cap *= 2;
	if (cap > MAX_BODY)
		cap = MAX_BODY;
	/* A pool block becomes a block of its own: it is freed, not pooled, later. */
	nb = realloc(b, offsetof(struct body, data) + cap);
	if (!nb)
		return -ENOMEM;
	nb->cap = (uint32_t)cap;
	*bp = nb;
	return 0;
}

/* Decimal digits of v at p (no NUL); returns the length. */
static size_t fmt_u64(char *p, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

/*
 * Append a response to c's fill buffer. extra is more header lines (each
 * ending in CRLF) or NULL. A connection whose client does not read its
 * responses (MAX_OUT unsent) is closed.
 */
static void respond(struct conn *c, int status, const char *ctype, const char *extra,
		    const char *body, size_t blen)
{
	struct hw *h = c->hw;
	const char *rs = reason(status);
	size_t rl = strlen(rs), el = extra ? strlen(extra) : 0, cl = strlen(ctype);
	size_t max = 128 + rl + h->date_len + cl + el + blen;
	char *p;

	if (c->dead)
		return;
	if (buf_reserve(h, &c->fill, max, MAX_OUT) < 0) {
		c->dead = 1;
		c->closing = 1;
		return;
	}
	p = c->fill.p + c->fill.len;
	memcpy(p, "HTTP/1.1 ", 9);
	p += 9;
	p += fmt_u64(p, (uint64_t)status);
	*p++ = ' ';
	memcpy(p, rs, rl);
	p += rl;
	memcpy(p, "\r\nServer: qilin-httpd\r\n", 23);
	p += 23;
	memcpy(p, h->date, h->date_len);
	p += h->date_len;
	memcpy(p, "Content-Type: ", 14);
	p += 14;
	memcpy(p, ctype, cl);
	p += cl;
	memcpy(p, "\r\nContent-Length: ", 18);
	p += 18;
	p += fmt_u64(p, blen);
	memcpy(p, "\r\n", 2);
	p += 2;
	if (el) {
		memcpy(p, extra, el);
		p += el;
	}
	if (c->closing) {
		memcpy(p, "Connection: close\r\n", 19);
		p += 19;
	}
	memcpy(p, "\r\n", 2);
	p += 2;
	memcpy(p, body, blen);
	p += blen;
	c->fill.len = (size_t)(p - c->fill.p);
	if (status < 300)
		CNT_ADD(h, r2xx, 1);
	else if (status < 500)
		CNT_ADD(h, r4xx, 1);
	else
		CNT_ADD(h, r5xx, 1);
}

static void respond_json(struct conn *c, int status, const char *body, size_t blen)
{
	respond(c, status, "application/json", NULL, body, blen);
}

/* An error answer; the connection closes after it. */
static void respond_error(struct conn *c, int status)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", reason(status));

	c->closing = 1;
	respond_json(c, status, body, (size_t)n);
}

/* ------------------------------------------------------------ the deferred task */

static uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* The stackless task: hash the body, mark the record done. Any worker. */
static void task_run(void *arg)
{
	struct rec *r = arg;
	/* Relaxed: the creator's writes happen before ql_spawn, which ran us. */
	uint64_t tag = atomic_load_explicit(&r->tag, memory_order_relaxed);
	struct body *b = r->body;
	uint64_t h = fnv1a(b ? b->data : "", r->len);
	int w = ql_worker_id();

	/* The body is hashed: its block goes back now, the record keeps the hash. */
	r->body = NULL;
	body_put_remote(b);
	atomic_store_explicit(&r->hash, h, memory_order_relaxed);
	/* Release: a reader (or the creator reusing the slot) that sees done sees the hash. */
	atomic_store_explicit(&r->tag, tag | 1, memory_order_release);
	if (w >= 0 && (unsigned)w < g_nw)
		CNT_ADD(&g_hw[w], tasks_done, 1);
}

static void handle_defer(struct conn *c)
{
	struct hw *h = c->hw;
	uint64_t seq = h->seq, id = seq * g_nw + h->id + 1;
	struct rec *r = &h->log[seq & (LOG_SIZE - 1)];
	/* Acquire: the previous task's reads of the record are over if it is done. */
	uint64_t t = atomic_load_explicit(&r->tag, memory_order_acquire);
	char out[48];
	size_t n;

	if (t && !(t & 1)) {
		/* Every record holds a pending task. */
		respond_json(c, 503, "{\"error\":\"task log full\"}", 25);
		return;
	}
	/*
	 * Seqlock writer: the new tag, then the hash with a release store, so
	 * that a reader whose acquire load sees the new hash sees the new tag.
	 */
	atomic_store_explicit(&r->tag, id << 1, memory_order_relaxed);
	atomic_store_explicit(&r->hash, 0, memory_order_release);
	/* The body block goes with the record (NULL for an empty body). */
	r->len = c->body ? c->body->len : 0;
	r->body = c->body;
	if (ql_spawn(g_ex, task_run, r) < 0) {
		/* The connection keeps the block for its next request. */
		r->body = NULL;
		atomic_store_explicit(&r->tag, 0, memory_order_release);
		respond_json(c, 503, "{\"error\":\"cannot spawn\"}", 24);
		return;
	}
	c->body = NULL;
	h->seq++;
	CNT_ADD(h, tasks_queued, 1);
	memcpy(out, "{\"id\":", 6);
	n = 6 + fmt_u64(out + 6, id);
	out[n++] = '}';
	respond_json(c, 202, out, n);
}

static void handle_task(struct conn *c, const char *idstr, size_t len)
{
	uint64_t id = 0;
	char out[128];
	int n;

	if (len == 0 || len > 19)
		goto unknown;
	for (size_t i = 0; i < len; i++) {
		if (idstr[i] < '0' || idstr[i] > '9')
			goto unknown;
		id = id * 10 + (uint64_t)(idstr[i] - '0');
	}
	if (id == 0)
		goto unknown;
	{
		struct hw *h = &g_hw[(id - 1) % g_nw];
		struct rec *r = &h->log[((id - 1) / g_nw) & (LOG_SIZE - 1)];

		for (int tries = 0; tries < 4; tries++) {
			/*
			 * Seqlock reader: tag, hash (acquire: a hash written for a
			 * newer record brings that record's tag with it), tag again.
			 */
			uint64_t t1 = atomic_load_explicit(&r->tag, memory_order_acquire);
			uint64_t hv = atomic_load_explicit(&r->hash, memory_order_acquire);

			if (atomic_load_explicit(&r->tag, memory_order_relaxed) != t1)
				continue;
			if (t1 >> 1 != id)
				goto unknown;
			if (t1 & 1)
				n = snprintf(out, sizeof(out),
					     "{\"id\":%llu,\"state\":\"done\","
					     "\"hash\":\"%016llx\"}",
					     (unsigned long long)id, (unsigned long long)hv);
			else
				n = snprintf(out, sizeof(out), "{\"id\":%llu,\"state\":\"queued\"}",
					     (unsigned long long)id);
			respond_json(c, 200, out, (size_t)n);
			return;
		}
	}
unknown:
	respond_json(c, 404, "{\"error\":\"unknown task\"}", 24);
}

static void handle_stats(struct conn *c)
{
	char out[16384];
	size_t n = 0;
	struct ql_stream_stats ss = { .sz = sizeof(ss) };
	struct ql_worker_stats ws[64];
	struct ql_stats es = { .sz = sizeof(es), .workers = ws, .workers_len = 64 };
	int have_es = ql_exec_stats(g_ex, &es) == 0;

	n += (size_t)snprintf(out + n, sizeof(out) - n, "{\"conns\":%lu,\"workers\":[",
			      atomic_load_explicit(&g_conns, memory_order_relaxed));
	for (unsigned i = 0; i < g_nw && n < sizeof(out) - 512; i++) {
		struct hw *h = &g_hw[i];

		n += (size_t)snprintf(
			out + n, sizeof(out) - n,
			"%s{\"id\":%u,\"accepted\":%llu,\"rejected\":%llu,\"open\":%llu,"
			"\"requests\":%llu,\"2xx\":%llu,\"4xx\":%llu,\"5xx\":%llu,"
			"\"tasks_queued\":%llu,\"tasks_done\":%llu,\"idle_closed\":%llu,"
			"\"bytes_in\":%llu,\"bytes_out\":%llu",
			i ? "," : "", i, (unsigned long long)CNT_GET(h, accepted),
			(unsigned long long)CNT_GET(h, rejected),
			(unsigned long long)CNT_GET(h, open),
			(unsigned long long)CNT_GET(h, requests),
			(unsigned long long)CNT_GET(h, r2xx),
			(unsigned long long)CNT_GET(h, r4xx), (unsigned long long)CNT_GET(h, r5xx),
			(unsigned long long)CNT_GET(h, tasks_queued),
			(unsigned long long)CNT_GET(h, tasks_done),
			(unsigned long long)CNT_GET(h, idle_closed),
			(unsigned long long)CNT_GET(h, bytes_in),
			(unsigned long long)CNT_GET(h, bytes_out));
		/* The executor's view of the same worker: ticks, syscalls, parks. */
		if (have_es && i < 64)
			n += (size_t)snprintf(
				out + n, sizeof(out) - n,
				",\"exec\":{\"run\":%llu,\"ticks\":%llu,\"enters\":%llu,"
				"\"sqes\":%llu,\"cqes\":%llu,\"parks\":%llu,\"stolen\":%llu}",
				(unsigned long long)ws[i].run, (unsigned long long)ws[i].ticks,
				(unsigned long long)ws[i].enters, (unsigned long long)ws[i].sqes,
				(unsigned long long)ws[i].cqes, (unsigned long long)ws[i].parks,
				(unsigned long long)ws[i].stolen);
		n += (size_t)snprintf(out + n, sizeof(out) - n, "}");
	}
	if (ql_stream_stats(&ss) == 0 && n < sizeof(out) - 256)
		n += (size_t)snprintf(out + n, sizeof(out) - n,
				      "],\"this_worker_streams\":{\"live\":%llu,\"bufs\":%u,"
				      "\"buf_size\":%zu,\"avail\":%u,\"stalls\":%llu}}",
				      (unsigned long long)ss.live, ss.nbufs, ss.buf_size, ss.avail,
				      (unsigned long long)ss.stalls);
	else
		n += (size_t)snprintf(out + n, sizeof(out) - n, "]}");
	respond_json(c, 200, out, n);
}

/* ------------------------------------------------------------ parser callbacks */

static int on_message_begin(http_parser *p)
{
	struct conn *c = p->data;

	c->url_len = 0;
	c->path_len = 0;
	c->in_query = 0;
	if (c->body)
		c->body->len = 0;
	c->body_seen = 0;
	c->route = R_NONE;
	c->want_body = 0;
	c->in_req = 1;
	c->req_tick = c->hw->tick;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (c->url_len + len > MAX_URL) {
		c->err = 414;
		return -1;
	}
	c->url_len += len;
	/*
	 * The URL may come in pieces. Only its path matters (a query is
	 * ignored), and only its first PATH_KEEP bytes: every route is shorter,
	 * and a longer path is told by path_len.
	 */
	for (size_t i = 0; i < len && !c->in_query; i++) {
		if (at[i] == '?') {
			c->in_query = 1;
			break;
		}
		if (c->path_len < PATH_KEEP)
			c->path[c->path_len] = at[i];
		c->path_len++;
	}
	return 0;
}

static int path_is(const struct conn *c, const char *path, size_t plen)
{
	return c->path_len == plen && memcmp(c->path, path, plen) == 0;
}

static int on_headers_complete(http_parser *p)
{
	struct conn *c = p->data;
	int get = p->method == HTTP_GET;

	/* ULLONG_MAX: no Content-Length (chunked or none); counted in on_body. */
	if (p->content_length != UINT64_MAX && p->content_length > MAX_BODY) {
		c->err = 413;
		return -1;
	}
	if (path_is(c, "/defer-task", 11)) {
		c->route = p->method == HTTP_POST ? R_DEFER : R_METHOD;
		c->want_body = c->route == R_DEFER;
		if (c->want_body) {
			/* A block for the body: the pool's, or one of the announced size. */
			size_t want = p->content_length != UINT64_MAX ? p->content_length : 0;

			if (c->body && c->body->cap < want) {
				body_put(c->body);
				c->body = NULL;
			}
			if (!c->body)
				c->body = body_get(c->hw, want);
			if (!c->body) {
				c->err = 503;
				return -1;
			}
		}
	} else if (c->url_len > 6 && c->path_len >= 6 && memcmp(c->path, "/task/", 6) == 0) {
		c->route = get ? R_TASK : R_METHOD;
	} else if (path_is(c, "/healthz", 8)) {
		c->route = get ? R_HEALTH : R_METHOD;
	} else if (path_is(c, "/stats", 6)) {
		c->route = get ? R_STATS : R_METHOD;
	} else {
		c->route = R_NOTFOUND;
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	c->body_seen += len;
	if (c->body_seen > MAX_BODY) {
		c->err = 413;
		return -1;
	}
	if (!c->want_body)
		return 0;
	int err = body_reserve(&c->body, len);

	if (err < 0) {
		c->err = err == -ENOMEM ? 503 : 413;
		return -1;
	}
	memcpy(c->body->data + c->body->len, at, len);
	c->body->len += (uint32_t)len;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct conn *c = p->data;
	struct hw *h = c->hw;

	CNT_ADD(h, requests, 1);
	c->in_req = 0;
	if (!http_should_keep_alive(p) || p->upgrade)
		c->closing = 1;
	switch (c->route) {
	case R_DEFER:
		handle_defer(c);
		break;
	case R_TASK:
		/* An id longer than what the path keeps is longer than any id: 404. */
		handle_task(c, c->path + 6, c->path_len - 6);
		break;
	case R_HEALTH:
		respond(c, 200, "text/plain", NULL, "ok\n", 3);
		break;
	case R_STATS:
		handle_stats(c);
		break;
	case R_METHOD: {
		/* Only /defer-task takes a POST; the other paths take GET. */
		const char *allow = path_is(c, "/defer-task", 11) ? "Allow: POST\r\n"
								   : "Allow: GET\r\n";

		respond(c, 405, "application/json", allow, "{\"error\":\"Method Not Allowed\"}",
			30);
		break;
	}
	default:
		respond_json(c, 404, "{\"error\":\"Not Found\"}", 21);
		break;
	}
	/* No request after one that closes the connection is read. */
	if (c->closing)
		http_parser_pause(p, 1);
	return 0;
}

/* ------------------------------------------------------------ connections */

static void lru_unlink(struct hw *h, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		h->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		h->tail = c->prev;
	c->prev = c->next = NULL;
}

static void lru_append(struct hw *h, struct conn *c)
{
	c->prev = h->tail;
	c->next = NULL;
	if (h->tail)
		h->tail->next = c;
	else
		h->head = c;
	h->tail = c;
}

static void lru_touch(struct hw *h, struct conn *c)
{
	c->tick = h->tick;
	if (h->tail == c)
		return;
	lru_unlink(h, c);
	lru_append(h, c);
}

static struct conn *conn_get(struct hw *h)
{
	struct conn *c = h->free;

	if (c) {
		h->free = c->next;
		h->nfree--;
	} else {
		c = calloc(1, sizeof(*c));
		if (!c)
			return NULL;
	}
	c->hw = h;
	return c;
}

/* Free c once both its recv stream and its send are over. */
static void conn_maybe_free(struct conn *c)
{
	struct hw *h = c->hw;

	if (c->rs_live || c->sending)
		return;
	close(c->fd);
	lru_unlink(h, c);
	/* An idle record holds no buffer: they go back to the worker's pools. */
	buf_release(h, &c->fill);
	buf_release(h, &c->flight);
	body_put(c->body);
	c->body = NULL;
	CNT_ADD(h, open, -1);
	atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
	if (h->nfree >= FREE_KEEP) {
		free(c);
		return;
	}
	memset(c, 0, sizeof(*c));
	c->next = h->free;
	h->free = c;
	h->nfree++;
}

/* Stop reading: the recv stream's final call frees the connection. */
static void conn_stop_reading(struct conn *c)
{
	if (c->rs_live && c->rs)
		ql_stream_cancel(c->rs);
}

/* Everything queued is sent and the connection must close: shut the write side. */
static void conn_finish(struct conn *c)
{
	if (!c->rs_live) {
		conn_maybe_free(c);
		return;
	}
	if (!c->wr_shut) {
		/* The client sees the end of the replies; we drain it until it closes. */
		c->wr_shut = 1;
		shutdown(c->fd, SHUT_WR);
	}
}

static void on_sent(void *arg, ssize_t res)
{
	struct conn *c = arg;

	c->sending = 0;
	if (res <= 0) {
		c->dead = 1;
		c->closing = 1;
		buf_release(c->hw, &c->fill);
		buf_release(c->hw, &c->flight);
		conn_stop_reading(c);
		conn_maybe_free(c);
		return;
	}
	CNT_ADD(c->hw, bytes_out, (uint64_t)res);
	c->sent += (size_t)res;
	if (c->sent < c->flight.len && !c->dead) {
		/* A short send: the rest goes first. */
		if (ql_send_cb(c->fd, c->flight.p + c->sent, c->flight.len - c->sent, MSG_NOSIGNAL,
			       on_sent, c) == 0) {
			c->sending = 1;
			return;
		}
		c->dead = 1;
	}
	/* All sent (or given up): the buffer goes back to the pool. */
	buf_release(c->hw, &c->flight);
	c->sent = 0;
	if (c->dead) {
		conn_stop_reading(c);
		conn_maybe_free(c);
		return;
	}
	if (c->fill.len) {
		conn_flush(c);
		return;
	}
	if (c->closing)
		conn_finish(c);
}

/* Send what the fill buffer holds (one send), unless a send is in flight. */
static void conn_flush(struct conn *c)
{
	if (c->sending || c->dead)
		return;
	if (!c->fill.len) {
		if (c->closing)
			conn_finish(c);
		return;
	}
	/* No send in flight, so flight is empty: the fill buffer becomes it. */
	buf_release(c->hw, &c->flight);
	c->flight = c->fill;
	c->fill = (struct buf){ 0 };
	c->sent = 0;
	if (ql_send_cb(c->fd, c->flight.p, c->flight.len, MSG_NOSIGNAL, on_sent, c) < 0) {
		c->dead = 1;
		buf_release(c->hw, &c->flight);
		conn_stop_reading(c);
		conn_maybe_free(c);
		return;
	}
	c->sending = 1;
}

static void conn_recv(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct conn *c = arg;
	struct hw *h = c->hw;

	if (!(flags & QL_STREAM_MORE)) {
		/* End of file, an error, or a cancel: nothing more to read. */
		c->rs_live = 0;
		c->rs = NULL;
		c->closing = 1;
		/* A reset, or a cancel (idle, failed send, shutdown): nothing more goes out. */
		if (res < 0)
			c->dead = 1;
		if (c->dead || h->stopping || !c->fill.len) {
			/* Frees it now, or when the send in flight completes. */
			conn_maybe_free(c);
			return;
		}
		/* EOF after pipelined requests: their replies still go out, then it closes. */
		conn_flush(c);
		return;
	}
	CNT_ADD(h, bytes_in, (uint64_t)res);
	if (c->closing || c->dead)
		return; /* draining a client we are closing */
	lru_touch(h, c);
	if (c->in_req && h->tick - c->req_tick > g_idle_ticks) {
		/* A request trickling in for longer than the idle time (slowloris). */
		respond_error(c, 408);
		conn_flush(c);
		return;
	}
	size_t n = http_parser_execute(&c->parser, &g_settings, buf, (size_t)res);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);

	if (e != HPE_OK && e != HPE_PAUSED) {
		int status = c->err ? c->err : e == HPE_HEADER_OVERFLOW ? 413 : 400;

		respond_error(c, status);
	} else if (c->parser.upgrade || (e == HPE_OK && n != (size_t)res)) {
		c->closing = 1;
	}
	conn_flush(c);
}

/* ------------------------------------------------------------ accept */

static void listener_arm(struct hw *h);

static void reject(int fd)
{
	static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nServer: qilin-httpd\r\n"
				  "Content-Type: application/json\r\nContent-Length: 26\r\n"
				  "Connection: close\r\n\r\n{\"error\":\"too many conns\"}";
	ssize_t k = send(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);

	(void)k;
	close(fd);
}

static void on_accept(void *arg, ssize_t res, const void *buf, unsigned flags)
{
	struct hw *h = arg;
	struct conn *c;
	int fd = (int)res, one = 1;

	if (!(flags & QL_STREAM_MORE)) {
		h->acc_live = 0;
		h->acc = NULL;
		if (!h->stopping && res != -ECANCELED) {
			/* EMFILE and the like end a multishot accept: try again soon. */
			fprintf(stderr, "qilin-httpd: worker %u: accept: %s; re-arming\n", h->id,
				strerror((int)-res));
			listener_arm(h);
		}
		return;
	}
	if (h->stopping) {
		close(fd);
		return;
	}
	/* Relaxed: a limit, not an ordering; each worker's count is exact. */
	if (atomic_fetch_add_explicit(&g_conns, 1, memory_order_relaxed) >= g_max_conns) {
		atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
		CNT_ADD(h, rejected, 1);
		reject(fd);
		return;
	}
	c = conn_get(h);
	if (!c) {
		atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
		reject(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
	c->tick = h->tick;
	if (ql_recv_multi(fd, conn_recv, c, &c->rs) < 0) {
		atomic_fetch_sub_explicit(&g_conns, 1, memory_order_relaxed);
		c->next = h->free;
		h->free = c;
		h->nfree++;
		reject(fd);
		return;
	}
	c->rs_live = 1;
	lru_append(h, c);
	CNT_ADD(h, accepted, 1);
	CNT_ADD(h, open, 1);
}

static void rearm_later(void *arg, ssize_t res)
{
	struct hw *h = arg;

	if (h->stopping || h->acc_live)
		return;
	if (ql_accept_multi(h->lfd, on_accept, h, &h->acc) == 0)
		h->acc_live = 1;
	else
		ql_timeout_cb(100 * 1000000ull, rearm_later, h);
}

static void listener_arm(struct hw *h)
{
	/* After a failure, wait a little: fds may come back meanwhile. */
	if (ql_timeout_cb(10 * 1000000ull, rearm_later, h) < 0)
		fprintf(stderr, "qilin-httpd: worker %u: cannot re-arm its listener\n", h->id);
}

/* ------------------------------------------------------------ the sweep */

static void date_refresh(struct hw *h)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	h->date_len = strftime(h->date, sizeof(h->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n",
			       &tm);
}

/* Every SWEEP_MS: refresh the Date header, close connections idle too long. */
static void sweep(void *arg, ssize_t res)
{
	struct hw *h = arg;

	h->timer_live = 0;
	h->tick++;
	date_refresh(h);
	while (h->head && h->tick - h->head->tick > g_idle_ticks) {
		struct conn *c = h->head;

		/* To the tail, so that the loop ends; its stream's final call frees it. */
		lru_touch(h, c);
		if (c->killed)
			continue;
		c->killed = 1;
		c->closing = 1;
		CNT_ADD(h, idle_closed, 1);
		/* A stuck send fails too: the client is not reading. */
		shutdown(c->fd, SHUT_RDWR);
		conn_stop_reading(c);
	}
	if (h->stopping || atomic_load_explicit(&g_stopping, memory_order_relaxed))
		return;
	if (ql_timeout_cb(SWEEP_MS * 1000000ull, sweep, h) == 0)
		h->timer_live = 1;
}

/* ------------------------------------------------------------ workers */

static void worker_start(void *arg)
{
	struct hw *h = arg;
	int err;

	date_refresh(h);
	/*
	 * Small provided buffers: a request is a few hundred bytes, and one
	 * that straddles buffers is parsed in pieces anyway. Before the
	 * worker's first ql_recv_multi, which creates the group.
	 */
	err = ql_stream_buffers(RECV_BUFS, RECV_BUF_SIZE);
	if (err < 0)
		fprintf(stderr,
			"qilin-httpd: worker %u: provided buffers %ux%u: %s (default kept)\n",
			h->id, RECV_BUFS, RECV_BUF_SIZE, strerror(-err));
	if (ql_accept_multi(h->lfd, on_accept, h, &h->acc) == 0)
		h->acc_live = 1;
	else
		fprintf(stderr, "qilin-httpd: worker %u: cannot arm its listener\n", h->id);
	if (ql_timeout_cb(SWEEP_MS * 1000000ull, sweep, h) == 0)
		h->timer_live = 1;
	atomic_fetch_add(&g_ready, 1);
}

static void worker_stop(void *arg)
{
	struct hw *h = arg;

	h->stopping = 1;
	if (h->acc_live && h->acc)
		ql_stream_cancel(h->acc);
	for (struct conn *c = h->head; c; c = c->next) {
		c->closing = 1;
		shutdown(c->fd, SHUT_RDWR);
		conn_stop_reading(c);
	}
	atomic_fetch_add(&g_ready, 1);
}

/* ------------------------------------------------------------ main */

static int parse_cpus(const char *s, cpu_set_t *set)
{
	CPU_ZERO(set);
	while (*s) {
		char *end;
		long a = strtol(s, &end, 10), b;

		if (end == s || a < 0 || a >= CPU_SETSIZE)
			return -1;
		b = a;
		if (*end == '-') {
			s = end + 1;
			b = strtol(s, &end, 10);
			if (end == s || b < a || b >= CPU_SETSIZE)
				return -1;
		}
		for (long i = a; i <= b; i++)
			CPU_SET((int)i, set);
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return CPU_COUNT(set) ? 0 : -1;
}

static int listen_on(const char *addr, uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(*port) };
	socklen_t len = sizeof(sa);
	int fd, one = 1;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "qilin-httpd: bad address '%s' (IPv4 dotted quad)\n", addr);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		fprintf(stderr, "qilin-httpd: listen on %s:%u: %s\n", addr, *port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: qilin-httpd [-p PORT] [-a ADDR] [-w WORKERS] [--max-conns N] "
		   "[--idle-ms N] [--cpus LIST]\n"
		   "  -p, --port PORT      TCP port (default 8080; 0: any free port)\n"
		   "  -a, --addr ADDR      IPv4 address to listen on (default 0.0.0.0)\n"
		   "  -w, --workers N      worker threads (default: one per CPU allowed)\n"
		   "      --max-conns N    open connections at most (default 10000)\n"
		   "      --idle-ms N      close connections idle this long (default 30000)\n"
		   "      --cpus LIST      CPUs to run on, e.g. 0-1,3 (default: all allowed)\n");
}

static int wait_count(_Atomic unsigned *v, unsigned want, uint64_t ns)
{
	uint64_t deadline = ql_now() + ns;

	while (atomic_load(v) < want) {
		if (ql_now() > deadline)
			return -1;
		usleep(1000);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "addr", required_argument, NULL, 'a' },
		{ "workers", required_argument, NULL, 'w' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "idle-ms", required_argument, NULL, 'i' },
		{ "cpus", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *addr = "0.0.0.0";
	unsigned long port = 8080, workers = 0, idle_ms = 30000;
	struct ql_exec_opts eo = { .sz = sizeof(eo) };
	struct ql_stats st = { .sz = sizeof(st) };
	sigset_t sigs;
	cpu_set_t cpus;
	char *end;
	int opt, sig, ret, status = 0;

	while ((opt = getopt_long(argc, argv, "p:a:w:h", lopts, NULL)) != -1) {
		unsigned long v = 0;

		if (opt != 'a' && opt != 'c' && opt != 'h' && opt != '?') {
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end) {
				fprintf(stderr, "qilin-httpd: bad number '%s'\n", optarg);
				return 2;
			}
		}
		switch (opt) {
		case 'p':
			if (v > 65535) {
				fprintf(stderr, "qilin-httpd: port out of range\n");
				return 2;
			}
			port = v;
			break;
		case 'a':
			addr = optarg;
			break;
		case 'w':
			if (v == 0 || v > 1024) {
				fprintf(stderr, "qilin-httpd: workers: 1..1024\n");
				return 2;
			}
			workers = v;
			break;
		case 'm':
			if (v == 0) {
				fprintf(stderr, "qilin-httpd: --max-conns must be at least 1\n");
				return 2;
			}
			g_max_conns = v;
			break;
		case 'i':
			if (v < 100 || v > 86400000ul) {
				fprintf(stderr, "qilin-httpd: --idle-ms: 100..86400000\n");
				return 2;
			}
			idle_ms = v;
			break;
		case 'c':
			if (parse_cpus(optarg, &cpus) < 0) {
				fprintf(stderr, "qilin-httpd: bad CPU list '%s'\n", optarg);
				return 2;
			}
			if (sched_setaffinity(0, sizeof(cpus), &cpus) < 0) {
				fprintf(stderr, "qilin-httpd: --cpus %s: %s\n", optarg,
					strerror(errno));
				return 2;
			}
			break;
		default:
			return usage_error_or_help(opt, usage) ? 2 : 0;
		}
	}
	if (no_operands(argc, usage))
		return 2;
	g_idle_ticks = (unsigned)((idle_ms + SWEEP_MS - 1) / SWEEP_MS);
	/* Every connection is an fd: take the whole hard limit. */
	raise_nofile();
	/* The workers inherit this mask: the signals come to sigwait below. */
	block_stop_signals(&sigs);
	signal(SIGPIPE, SIG_IGN);
	http_parser_settings_init(&g_settings);
	g_settings.on_message_begin = on_message_begin;
	g_settings.on_url = on_url;
	g_settings.on_headers_complete = on_headers_complete;
	g_settings.on_body = on_body;
	g_settings.on_message_complete = on_message_complete;
	http_parser_set_max_header_size(MAX_HEADER);

	eo.workers = (unsigned)workers;
	ret = ql_exec_create(&eo, &g_ex);
	if (ret < 0) {
		char why[256];

		ql_uring_diagnose(why, sizeof(why));
		fprintf(stderr, "qilin-httpd: cannot start the executor: %s (%s)\n", strerror(-ret),
			why);
		return 1;
	}
	ql_exec_stats(g_ex, &st);
	g_nw = st.nworkers;
	g_hw = calloc(g_nw, sizeof(*g_hw));
	if (!g_hw) {
		fprintf(stderr, "qilin-httpd: out of memory\n");
		ql_exec_destroy(g_ex);
		return 1;
	}
	uint16_t p16 = (uint16_t)port;
	for (unsigned i = 0; i < g_nw; i++) {
		g_hw[i].id = i;
		g_hw[i].lfd = -1;
	}
	for (unsigned i = 0; i < g_nw; i++) {
		g_hw[i].log = calloc(LOG_SIZE, sizeof(struct rec));
		g_hw[i].lfd = listen_on(addr, &p16);
		if (!g_hw[i].log || g_hw[i].lfd < 0) {
			status = 1;
			goto out;
		}
	}
	for (unsigned i = 0; i < g_nw; i++) {
		if (ql_spawn_on(g_ex, i, worker_start, &g_hw[i]) < 0) {
			fprintf(stderr, "qilin-httpd: cannot start worker %u\n", i);
			status = 1;
			goto out;
		}
	}
	if (wait_count(&g_ready, g_nw, 10ull * 1000000000ull) < 0) {
		fprintf(stderr, "qilin-httpd: workers did not start\n");
		status = 1;
		goto out;
	}
	printf("listening on %s:%u\n", addr, p16);
	fflush(stdout);
	while (sigwait(&sigs, &sig) != 0)
		;

	/* Shutdown: stop accepting and close every connection, on each worker. */
	atomic_store(&g_stopping, 1);
	atomic_store(&g_ready, 0);
	for (unsigned i = 0; i < g_nw; i++)
		if (ql_spawn_on(g_ex, i, worker_stop, &g_hw[i]) < 0)
			atomic_fetch_add(&g_ready, 1);
	wait_count(&g_ready, g_nw, 5ull * 1000000000ull);
	for (uint64_t deadline = ql_now() + 5000000000ull;
	     atomic_load(&g_conns) && ql_now() < deadline;)
		usleep(1000);
out:
	ret = ql_exec_shutdown(g_ex, 5ull * 1000000000ull);
	if (ret < 0 && ret != -EALREADY)
		fprintf(stderr, "qilin-httpd: executor shutdown: %s\n", strerror(-ret));
	ql_exec_destroy(g_ex);
	for (unsigned i = 0; i < g_nw; i++) {
		struct hw *h = &g_hw[i];

		if (h->lfd >= 0)
			close(h->lfd);
		while (h->free) {
			struct conn *c = h->free;

			h->free = c->next;
			free(c);
		}
		while (h->out_pool) {
			char *p = h->out_pool;

			memcpy(&h->out_pool, p, sizeof(char *));
			free(p);
		}
		/* Bodies of tasks dropped by the shutdown (never run), then the pools. */
		for (unsigned k = 0; h->log && k < LOG_SIZE; k++)
			free(h->log[k].body);
		for (int pass = 0; pass < 2; pass++) {
			struct body *b = pass ? atomic_exchange(&h->body_ret, NULL) : h->body_pool;

			while (b) {
				struct body *next = b->next;

				free(b);
				b = next;
			}
		}
		h->body_pool = NULL;
		free(h->log);
	}
	free(g_hw);
	if (status == 0)
		fprintf(stderr, "qilin-httpd: stopped\n");
	return status;
}
