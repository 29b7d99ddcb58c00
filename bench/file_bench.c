/* SPDX-License-Identifier: MIT */
/*
 * bench/file_bench.c - random 4 KiB file reads at a fixed queue depth, qilin's side of the
 * file scenario (bench/run.sh file; the peer is fio's io_uring engine with the same job).
 *
 * What it measures. Q reads (-q, 64) of B bytes (-b, 4096) are kept in flight on one worker
 * (-w, 1; with W workers each keeps Q/W) against FILE (-f), each at a uniformly random
 * B-aligned offset below the file's size. They are stackless continuations: a starter task
 * issues its Q ql_read_cb() calls, and each completion's continuation counts the read, takes
 * its latency, draws the next offset and issues the next ql_read_cb() with the same buffer. So
 * the depth never drops below Q while the run lasts. The reads a continuation issues go to
 * the kernel as they are made, four per io_uring_enter (the ring layer submits file I/O early,
 * QL_RING_FILE_BATCH in uring/ring.h), not in one enter at the tick's end: the device starts
 * on the first ones while the tick is still running, as it does for fio, whose default
 * (iodepth_batch_submit=1) submits each read at once. Opened with O_DIRECT when --direct is
 * given (the filesystem must support it; run.sh checks and says which), buffered otherwise;
 * fio gets the same flag.
 *
 * Timing: W seconds of warm-up (-W, 1), then D seconds (-d, 5) during which completed reads
 * are counted and their submit-to-completion latencies go into a log-linear histogram (one
 * per worker, no sharing); then the continuations stop reissuing, the main thread waits until
 * every read has completed, and shuts the executor down.
 *
 * Output: one JSON line on stdout
 *   {"iops":..,"mib_per_s":..,"p50_us":..,"p99_us":..,"p999_us":..,"reads":..,"secs":..,
 *    "depth":..,"bs":..,"workers":..,"direct":0|1,"errors":..}
 * Any failed read (res != B) counts as an error and makes the exit status 1.
 *
 *   file_bench -f /path/to/1GiB.file --direct -q 64 -d 5
 */
#define BENCH_PROG "file_bench"
#include "bench_util.h"

#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <qilin.h>

#include "lat_hist.h"

struct worker_ctx;

/* One read kept in flight: its buffer, its offset and when it was issued. */
struct slot {
	struct worker_ctx *w;
	void *buf;
	uint64_t t0;
	uint64_t rng;
};

/* The reads of one starter task, all on the worker that runs it. */
struct worker_ctx {
	struct slot *slots;
	unsigned nslots;
	uint64_t reads, errors;
	uint64_t hist[LAT_NBUCKETS];
};

static int file_fd = -1;
static uint64_t file_blocks; /* file size / bs */
static size_t bs = 4096;
static uint64_t window_start, window_end;
static atomic_uint live; /* reads in flight, over all workers */

/* xorshift64*: a per-slot stream of offsets. */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static void on_read(void *arg, ssize_t res);

/* Issue the next read of s. On failure the slot stops (counted as an error). */
static void issue(struct slot *s)
{
	int64_t off = (int64_t)((next_rand(&s->rng) % file_blocks) * bs);
	int err;

	s->t0 = ql_now();
	err = ql_read_cb(file_fd, s->buf, bs, off, on_read, s);
	if (err < 0) {
		if (s->w->errors++ < 3)
			fprintf(stderr, BENCH_PROG ": ql_read_cb: %s\n", strerror(-err));
		/* Release: the main thread reads the counters once live reaches 0. */
		atomic_fetch_sub_explicit(&live, 1, memory_order_release);
	}
}

/* The continuation of every read: count it, then keep the depth unless the run is over. */
static void on_read(void *arg, ssize_t res)
{
	struct slot *s = arg;
	uint64_t t = ql_now();

	if (res != (ssize_t)bs) {
		if (s->w->errors++ < 3)
			fprintf(stderr, BENCH_PROG ": read: %s\n",
				res < 0 ? strerror((int)-res) : "short read");
	} else if (s->t0 >= window_start && t <= window_end) {
		s->w->reads++;
		s->w->hist[lat_bucket_of(t - s->t0)]++;
	}
	if (t < window_end && res == (ssize_t)bs) {
		issue(s);
		return;
	}
	/* Release: the main thread reads the counters once live reaches 0. */
	atomic_fetch_sub_explicit(&live, 1, memory_order_release);
}

/* The starter: issue every slot's first read from this worker. */
static void start_task(void *arg)
{
	struct worker_ctx *w = arg;
	unsigned i;

	for (i = 0; i < w->nslots; i++)
		issue(&w->slots[i]);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: " BENCH_PROG " -f FILE [--direct] [-q DEPTH] [-b BYTES] [-w WORKERS]"
		   " [-W WARMUP_SECS] [-d SECS]\n"
		   "  random reads at a fixed depth with ql_read_cb; prints one JSON line\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "direct", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ql_exec_opts eo = { .sz = sizeof(eo) };
	const char *path = NULL;
	uint64_t depth = 64, workers = 1, warm = 1, secs = 5, v;
	struct worker_ctx *ws = NULL;
	uint64_t *hist = NULL, reads = 0, errors = 0, total = 0;
	struct ql_exec *ex = NULL;
	int direct = 0, opt, err, rc = 1;
	unsigned i, b, k;
	struct stat st;
	double span;

	while ((opt = getopt_long(argc, argv, "f:q:b:w:W:d:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			path = optarg;
			break;
		case 'D':
			direct = 1;
			break;
		case 'q':
			if (parse_num("-q", optarg, 1, 4096, &depth))
				return 2;
			break;
		case 'b':
			if (parse_num("-b", optarg, 512, 1 << 20, &v))
				return 2;
			bs = (size_t)v;
			break;
		case 'w':
			if (parse_num("-w", optarg, 1, 256, &workers))
				return 2;
			break;
		case 'W':
			if (parse_num("-W", optarg, 0, 3600, &warm))
				return 2;
			break;
		case 'd':
			if (parse_num("-d", optarg, 1, 3600, &secs))
				return 2;
			break;
		default:
			return usage_error_or_help(opt, usage) ? 2 : 0;
		}
	}
	if (!path || no_operands(argc, usage))
		return 2;
	if (workers > depth)
		workers = depth;
	file_fd = open(path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
	if (file_fd < 0) {
		fprintf(stderr, BENCH_PROG ": open %s%s: %s\n", path, direct ? " (O_DIRECT)" : "",
			strerror(errno));
		return 1;
	}
	if (fstat(file_fd, &st) < 0 || (uint64_t)st.st_size < bs) {
		fprintf(stderr, BENCH_PROG ": %s: smaller than one %zu-byte block\n", path, bs);
		goto out;
	}
	file_blocks = (uint64_t)st.st_size / bs;

	ws = calloc(workers, sizeof(*ws));
	hist = calloc(LAT_NBUCKETS, sizeof(*hist));
	if (!ws || !hist)
		goto oom;
	for (i = 0; i < workers; i++) {
		ws[i].nslots = (unsigned)(depth / workers + (i < depth % workers));
		ws[i].slots = calloc(ws[i].nslots, sizeof(*ws[i].slots));
		if (!ws[i].slots)
			goto oom;
		for (k = 0; k < ws[i].nslots; k++) {
			struct slot *s = &ws[i].slots[k];

			s->w = &ws[i];
			s->rng = 0x9e3779b97f4a7c15ull * (i * 4096 + k + 1);
			if (posix_memalign(&s->buf, 4096, bs))
				goto oom;
		}
	}
	eo.workers = (unsigned)workers;
	/* The ring must hold the depth: SQ entries of at least the reads in flight. */
	eo.ring_size = depth < 256 ? 256 : (unsigned)depth * 2;
	if (eo.ring_size > 16384)
		eo.ring_size = 16384;
	err = ql_exec_create(&eo, &ex);
	if (err < 0) {
		char why[256];

		ql_uring_diagnose(why, sizeof(why));
		fprintf(stderr, BENCH_PROG ": ql_exec_create: %s (%s)\n", strerror(-err), why);
		goto out;
	}
	window_start = ql_now() + warm * NS_PER_S;
	window_end = window_start + secs * NS_PER_S;
	atomic_store(&live, (unsigned)depth);
	for (i = 0; i < workers; i++) {
		/* From outside the executor ql_spawn goes round-robin: one starter per worker. */
		err = ql_spawn(ex, start_task, &ws[i]);
		if (err < 0) {
			fprintf(stderr, BENCH_PROG ": ql_spawn: %s\n", strerror(-err));
			atomic_fetch_sub(&live, ws[i].nslots);
			errors++;
		}
	}
	/* Acquire: pairs with the continuations' release, so their counters are visible. */
	while (atomic_load_explicit(&live, memory_order_acquire))
		usleep(10000);
	ql_exec_shutdown(ex, NS_PER_S);
	for (i = 0; i < workers; i++) {
		reads += ws[i].reads;
		errors += ws[i].errors;
		for (b = 0; b < LAT_NBUCKETS; b++)
			hist[b] += ws[i].hist[b];
	}
	for (b = 0; b < LAT_NBUCKETS; b++)
		total += hist[b];
	span = (double)(window_end - window_start) / NSEC_PER_SEC;
	printf("{\"iops\":%.1f,\"mib_per_s\":%.2f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	       "\"p999_us\":%.1f,\"reads\":%" PRIu64 ",\"secs\":%.3f,\"depth\":%" PRIu64
	       ",\"bs\":%zu,\"workers\":%" PRIu64 ",\"direct\":%d,\"errors\":%" PRIu64 "}\n",
	       (double)reads / span, (double)reads * (double)bs / span / 1048576.0,
	       lat_quantile_us(hist, total, 0.5), lat_quantile_us(hist, total, 0.99),
	       lat_quantile_us(hist, total, 0.999), reads, span, depth, bs, workers, direct, errors);
	rc = errors || !reads;
	goto out;
oom:
	fprintf(stderr, BENCH_PROG ": out of memory\n");
out:
	ql_exec_destroy(ex);
	for (i = 0; ws && i < workers; i++) {
		for (k = 0; ws[i].slots && k < ws[i].nslots; k++)
			free(ws[i].slots[k].buf);
		free(ws[i].slots);
	}
	free(ws);
	free(hist);
	if (file_fd >= 0)
		close(file_fd);
	return rc;
}
