/* SPDX-License-Identifier: MIT */
/*
 * bench/uring_demo.c - a short tour of the ring layer, and what `make demo` runs.
 *
 * It does three things with one ring (uring/ring.h) and prints a short report:
 *
 *   1. A batched file copy. A temporary file of pseudo-random data (64 MiB by default) is made
 *      in $TMPDIR (or /tmp) and copied to a second temporary file by COPY_QD slots, each
 *      reading CHUNK_SIZE bytes at a fixed offset; a read's continuation issues the write of
 *      the same chunk, the write's continuation takes the next chunk. Short reads and writes
 *      are continued where they stopped. The copy is then compared with the source byte for
 *      byte, and the report gives MB/s, io_uring operations/s and SQEs per io_uring_enter.
 *      Both files are unlinked as soon as they are created, so no path leaves them behind:
 *      they live only as long as their descriptors.
 *   2. NOP throughput: NOP_DEPTH NOPs kept in flight for about a second, each completion's
 *      continuation queueing the next; ops/s and SQEs per enter. This is the ring layer's
 *      fixed cost per operation (bench/nop_bench compares it with plain liburing).
 *   3. The features the ring was granted, and the value of QILIN_URING_DISABLE when it is
 *      set (the features it names were forced off, as on an older kernel).
 *
 * Run it:
 *   make demo                              builds the library and benches, then runs this
 *   build/bench/uring_demo [-s MiB] [-t SECONDS]
 *   QILIN_URING_DISABLE=all build/bench/uring_demo       the fallback paths
 *   valgrind --leak-check=full --error-exitcode=1 build/bench/uring_demo -s 4 -t 0.2
 *
 * Lifetime: a record and its buffer must outlive the record's final CQE (see ring.h), so the
 * copy slots, their buffers and the NOP records all live in one struct demo that is freed
 * only after ql__ring_exit() has dispatched everything still in flight. If that exit times
 * out, the buffers are deliberately leaked rather than handed back while the kernel may
 * still write into them.
 *
 * Exit status: 0 when everything ran and the copy matched, 1 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

#define BENCH_PROG "uring_demo"
#include "bench_util.h"

/* Units. */
#define KIB 1024
#define MIB (KIB * KIB)
#define BYTES_PER_MB 1e6

/* The copy: default file size, queue depth, chunk size and the buffers' alignment. */
#define DEFAULT_FILE_MIB 64
#define MAX_FILE_MIB (64 * KIB)
#define COPY_QD 32
/* Completions each tick of the copy waits for (at most the slots active). */
#define COPY_WAIT_BATCH 8
#define CHUNK_SIZE (128 * KIB)
#define BUF_ALIGN 4096

/* Block size used to write the source file and to compare the two files. */
#define IO_BLOCK MIB

/* Seed of the xorshift64* generator that fills the source file. */
#define RANDOM_SEED 0x9e3779b97f4a7c15ull
#define XORSHIFT_MULT 0x2545f4914f6cdd1dull

/* The NOP phase: operations in flight and default duration. */
#define NOP_DEPTH 64
#define DEFAULT_NOP_SECONDS 1.0
#define MAX_NOP_SECONDS 60.0

/* How long ql__ring_exit() may wait for in-flight operations. */
#define EXIT_TIMEOUT_NS (5 * NS_PER_S)

/* Room for ql__ring_features_str(): every feature name, comma-separated. */
#define FEATURES_STR_LEN 256

/* The copy's shared state. */
struct copy_job {
	int src, dst;
	uint64_t size;
	uint64_t next_off; /* first byte of the next chunk to hand out */
	unsigned active;   /* slots with an operation in flight */
	uint64_t ops;	   /* read and write CQEs received */
	int err;	   /* first failure (a negative errno), or 0: stops new operations */
};

/* One of COPY_QD copy slots: a chunk being read, then written. */
struct copy_slot {
	struct ql_op op;
	struct copy_job *job;
	unsigned char *buf;
	uint64_t off; /* the chunk's offset, the same in both files */
	size_t len;   /* the chunk's length */
	size_t done;  /* bytes of the current phase transferred so far */
	int writing;  /* 0: reading the chunk, 1: writing it */
};

/* The NOP phase's shared state and records. */
struct nop_run {
	unsigned inflight;
	uint64_t done;
	int stop;
	int err;
};

struct nop_slot {
	struct ql_op op;
	struct nop_run *run;
};

/* Everything whose lifetime is bound to the ring's (see the top of this file). */
struct demo {
	struct ql_ring r;
	struct copy_job job;
	struct copy_slot slots[COPY_QD];
	unsigned char *bufs; /* COPY_QD * CHUNK_SIZE bytes, one chunk per slot */
	struct nop_run nop;
	struct nop_slot nops[NOP_DEPTH];
};

static double sqes_per_enter(const struct ql_ring_stats *a, const struct ql_ring_stats *b)
{
	uint64_t enters = b->enters - a->enters;

	return enters ? (double)(b->sqes - a->sqes) / (double)enters : 0;
}

/* ------------------------------------------------------------------ temporary files */

/*
 * Create a temporary file in dir and unlink it at once: the descriptor keeps it alive, and
 * no exit path, not even a crash, can leave it behind. Returns the fd or -1.
 */
static int temp_file(const char *dir)
{
	char path[PATH_MAX];
	int n, fd;

	n = snprintf(path, sizeof(path), "%s/qilin-demo-XXXXXX", dir);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		fprintf(stderr, "uring_demo: temporary directory name too long: %s\n", dir);
		return -1;
	}
	fd = mkstemp(path);
	if (fd < 0) {
		fprintf(stderr, "uring_demo: mkstemp %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (unlink(path)) {
		fprintf(stderr, "uring_demo: unlink %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Write all n bytes at off, continuing after short writes. Returns 0 or -1. */
static int pwrite_all(int fd, const unsigned char *buf, size_t n, off_t off)
{
	while (n) {
		ssize_t w = pwrite(fd, buf, n, off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "uring_demo: write: %s\n", w ? strerror(errno) : "wrote 0");
			return -1;
		}
		buf += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

/* Read all n bytes at off, continuing after short reads. Returns 0 or -1. */
static int pread_all(int fd, unsigned char *buf, size_t n, off_t off)
{
	while (n) {
		ssize_t got = pread(fd, buf, n, off);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			fprintf(stderr, "uring_demo: read: %s\n",
				got ? strerror(errno) : "unexpected end of file");
			return -1;
		}
		buf += got;
		n -= (size_t)got;
		off += got;
	}
	return 0;
}

/* Fill fd with size bytes from a xorshift64* generator. Returns 0 or -1. */
static int fill_random(int fd, uint64_t size)
{
	unsigned char *block = malloc(IO_BLOCK);
	uint64_t state = RANDOM_SEED, off = 0;
	int ret = 0;

	if (!block) {
		fprintf(stderr, "uring_demo: out of memory\n");
		return -1;
	}
	while (!ret && off < size) {
		size_t n = size - off < IO_BLOCK ? (size_t)(size - off) : IO_BLOCK;
		size_t i;

		for (i = 0; i < n; i += sizeof(state)) {
			uint64_t v;

			state ^= state >> 12;
			state ^= state << 25;
			state ^= state >> 27;
			v = state * XORSHIFT_MULT;
			memcpy(block + i, &v, n - i < sizeof(v) ? n - i : sizeof(v));
		}
		ret = pwrite_all(fd, block, n, (off_t)off);
		off += n;
	}
	free(block);
	return ret;
}

/* Compare the first size bytes of two files, and the copy's length. Returns 0 or -1. */
static int verify_copy(int src, int dst, uint64_t size)
{
	unsigned char *a = malloc(IO_BLOCK), *b = malloc(IO_BLOCK);
	struct stat st;
	uint64_t off;
	int ret = -1;

	if (!a || !b) {
		fprintf(stderr, "uring_demo: out of memory\n");
		goto out;
	}
	if (fstat(dst, &st)) {
		fprintf(stderr, "uring_demo: fstat: %s\n", strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size != size) {
		fprintf(stderr, "uring_demo: the copy has %jd bytes, not %" PRIu64 "\n",
			(intmax_t)st.st_size, size);
		goto out;
	}
	for (off = 0; off < size; off += IO_BLOCK) {
		size_t n = size - off < IO_BLOCK ? (size_t)(size - off) : IO_BLOCK;

		if (pread_all(src, a, n, (off_t)off) || pread_all(dst, b, n, (off_t)off))
			goto out;
		if (memcmp(a, b, n)) {
			fprintf(stderr,
				"uring_demo: the copy differs in the block at %" PRIu64 "\n", off);
			goto out;
		}
	}
	ret = 0;
out:
	free(a);
	free(b);
	return ret;
}

/* ------------------------------------------------------------------ the copy */

static void copy_done(struct ql_ring *r, struct ql_op *op, int res, unsigned flags);

/* Queue the slot's current read or write, from where it stopped. Returns 0 or -errno. */
static int copy_issue(struct ql_ring *r, struct copy_slot *s)
{
	struct io_uring_sqe *sqe = ql__ring_sqe(r, &s->op);
	unsigned char *p = s->buf + s->done;
	unsigned n = (unsigned)(s->len - s->done);
	uint64_t off = s->off + s->done;

	if (!sqe)
		return -EBUSY;
	if (s->writing)
		io_uring_prep_write(sqe, s->job->dst, p, n, off);
	else
		io_uring_prep_read(sqe, s->job->src, p, n, off);
	ql__ring_sqe_op(sqe, &s->op);
	return 0;
}

/* Give the slot the next chunk, or retire it when there is none or the copy failed. */
static void copy_next(struct ql_ring *r, struct copy_slot *s)
{
	struct copy_job *job = s->job;
	int ret;

	if (job->err || job->next_off >= job->size) {
		job->active--;
		return;
	}
	s->off = job->next_off;
	s->len = job->size - s->off < CHUNK_SIZE ? (size_t)(job->size - s->off) : CHUNK_SIZE;
	s->done = 0;
	s->writing = 0;
	job->next_off += s->len;
	ret = copy_issue(r, s);
	if (ret) {
		job->err = ret;
		job->active--;
	}
}

/* A read or write of a slot's chunk completed. */
static void copy_done(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct copy_slot *s = container_of(op, struct copy_slot, op);
	struct copy_job *job = s->job;
	int ret;

	job->ops++;
	if (res <= 0 || job->err) {
		/* Zero means the source ended early or the target took nothing: both wrong. */
		if (!job->err)
			job->err = res ? res : -EIO;
		job->active--;
		return;
	}
	s->done += (size_t)res;
	if (s->done == s->len && !s->writing) {
		/* The chunk is in the buffer: write it at the same offset. */
		s->writing = 1;
		s->done = 0;
	} else if (s->done == s->len) {
		copy_next(r, s);
		return;
	}
	/* A new write, or the rest of a short read or write. */
	ret = copy_issue(r, s);
	if (ret) {
		job->err = ret;
		job->active--;
	}
}

/* Copy src to dst through the ring and report. Returns 0 or -1. */
static int demo_copy(struct demo *d, const char *dir, uint64_t size)
{
	struct copy_job *job = &d->job;
	struct ql_ring_stats before, after;
	uint64_t start, elapsed;
	unsigned i;
	int ret;

	printf("File copy: %" PRIu64 " MiB in %s, %d reads of %d KiB in flight, each followed "
	       "by its write\n",
	       size / MIB, dir, COPY_QD, CHUNK_SIZE / KIB);
	if (fill_random(job->src, size))
		return -1;
	job->size = size;
	for (i = 0; i < COPY_QD; i++) {
		d->slots[i].op.fn = copy_done;
		d->slots[i].job = job;
		d->slots[i].buf = d->bufs + (size_t)i * CHUNK_SIZE;
	}
	ql__ring_stats(&d->r, &before);
	start = now_ns();
	for (i = 0; i < COPY_QD; i++) {
		job->active++;
		copy_next(&d->r, &d->slots[i]);
	}
	while (job->active) {
		/*
		 * Each active slot has exactly one read or write in flight, so
		 * waiting for up to COPY_WAIT_BATCH of them cannot hang; the
		 * continuations of a batch queue the next operations, which go
		 * to the kernel together in the next enter.
		 */
		ret = ql__ring_run(&d->r, job->active < COPY_WAIT_BATCH ? job->active : COPY_WAIT_BATCH,
				   0);
		if (ret < 0 && ret != -EINTR) {
			/* What is still in flight is reaped by ql__ring_exit() in main. */
			fprintf(stderr, "uring_demo: ql__ring_run: %s\n", strerror(-ret));
			job->err = ret;
			return -1;
		}
	}
	elapsed = now_ns() - start;
	ql__ring_stats(&d->r, &after);
	if (job->err) {
		fprintf(stderr, "uring_demo: copy failed: %s\n", strerror(-job->err));
		return -1;
	}
	if (verify_copy(job->src, job->dst, size))
		return -1;
	if (!elapsed)
		elapsed = 1;
	printf("  copied and verified byte for byte: %.3f s, %.0f MB/s, %.0f operations/s, "
	       "%.1f SQEs per enter\n",
	       elapsed / NSEC_PER_SEC, (double)size / BYTES_PER_MB / (elapsed / NSEC_PER_SEC),
	       (double)job->ops / (elapsed / NSEC_PER_SEC), sqes_per_enter(&before, &after));
	return 0;
}

/* ------------------------------------------------------------------ NOPs */

static int nop_queue(struct ql_ring *r, struct nop_slot *s)
{
	struct io_uring_sqe *sqe = ql__ring_sqe(r, &s->op);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_nop(sqe);
	ql__ring_sqe_op(sqe, &s->op);
	s->run->inflight++;
	return 0;
}

/* A NOP completed: count it and, until the time is up, send it again. */
static void nop_done(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct nop_slot *s = container_of(op, struct nop_slot, op);
	struct nop_run *run = s->run;
	int ret;

	run->inflight--;
	run->done++;
	if (res < 0 && !run->err)
		run->err = res;
	if (run->stop || run->err)
		return;
	ret = nop_queue(r, s);
	if (ret)
		run->err = ret;
}

static int demo_nop(struct demo *d, double seconds)
{
	struct nop_run *run = &d->nop;
	struct ql_ring_stats before, after;
	uint64_t start, deadline, elapsed;
	unsigned i;
	int ret;

	printf("NOPs: %d in flight for %.1f s, each completion queueing the next\n", NOP_DEPTH,
	       seconds);
	ql__ring_stats(&d->r, &before);
	start = now_ns();
	deadline = start + (uint64_t)(seconds * NSEC_PER_SEC);
	for (i = 0; i < NOP_DEPTH && !run->err; i++) {
		d->nops[i].op.fn = nop_done;
		d->nops[i].run = run;
		ret = nop_queue(&d->r, &d->nops[i]);
		if (ret)
			run->err = ret;
	}
	while (run->inflight) {
		ret = ql__ring_run(&d->r, 1, 0);
		if (ret < 0 && ret != -EINTR) {
			fprintf(stderr, "uring_demo: ql__ring_run: %s\n", strerror(-ret));
			run->err = ret;
			return -1;
		}
		if (now_ns() >= deadline)
			run->stop = 1;
	}
	elapsed = now_ns() - start;
	ql__ring_stats(&d->r, &after);
	if (run->err) {
		fprintf(stderr, "uring_demo: NOP failed: %s\n", strerror(-run->err));
		return -1;
	}
	printf("  %" PRIu64 " NOPs: %.0f ops/s, %.1f SQEs per enter\n", run->done,
	       (double)run->done / (elapsed / NSEC_PER_SEC), sqes_per_enter(&before, &after));
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uring_demo [-s MiB] [-t SECONDS]\n"
		"  -s MiB      size of the file copied (default %d)\n"
		"  -t SECONDS  duration of the NOP run (default %.0f)\n",
		DEFAULT_FILE_MIB, DEFAULT_NOP_SECONDS);
}

static int parse_args(int argc, char **argv, uint64_t *size, double *seconds)
{
	unsigned long mib = DEFAULT_FILE_MIB;
	char *end;
	int opt;

	*seconds = DEFAULT_NOP_SECONDS;
	while ((opt = getopt(argc, argv, "s:t:h")) != -1) {
		switch (opt) {
		case 's':
			errno = 0;
			mib = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || *optarg == '-' || !mib ||
			    mib > MAX_FILE_MIB) {
				fprintf(stderr, "uring_demo: -s wants MiB from 1 to %d\n",
					MAX_FILE_MIB);
				return -1;
			}
			break;
		case 't':
			errno = 0;
			*seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(*seconds > 0) ||
			    *seconds > MAX_NOP_SECONDS) {
				fprintf(stderr,
					"uring_demo: -t wants seconds, above 0 and at "
					"most %.0f\n",
					MAX_NOP_SECONDS);
				return -1;
			}
			break;
		default:
			return usage_error_or_help(opt, usage);
		}
	}
	if (no_operands(argc, usage))
		return -1;
	*size = (uint64_t)mib * MIB;
	return 0;
}

static void print_ring(const struct ql_ring *r)
{
	const char *env = getenv(QL_RING_DISABLE_ENV);
	char features[FEATURES_STR_LEN];

	ql__ring_features_str(r->features, features, sizeof(features));
	printf("Ring: sq %u, cq %u, setup flags 0x%x, at most %u operations in flight\n",
	       r->sq_entries, r->cq_entries, r->setup_flags, r->inflight_cap);
	printf("  features granted: %s\n", features[0] ? features : "none");
	if (env)
		printf("  %s=%s is set: the features it names were forced off\n",
		       QL_RING_DISABLE_ENV, env);
}

int main(int argc, char **argv)
{
	struct demo *d;
	const char *dir = getenv("TMPDIR");
	uint64_t size;
	double seconds;
	int status = 1, ret;

	if (parse_args(argc, argv, &size, &seconds))
		return 2;
	if (!dir || !*dir)
		dir = "/tmp";
	d = calloc(1, sizeof(*d));
	if (!d) {
		fprintf(stderr, "uring_demo: out of memory\n");
		return 1;
	}
	d->job.src = d->job.dst = -1;
	ret = ql__ring_init(&d->r, NULL);
	if (ret) {
		fprintf(stderr, "uring_demo: cannot set up io_uring: %s\n", ql__ring_last_error());
		free(d);
		return 1;
	}
	print_ring(&d->r);
	ret = posix_memalign((void **)&d->bufs, BUF_ALIGN, (size_t)COPY_QD * CHUNK_SIZE);
	if (ret) {
		fprintf(stderr, "uring_demo: out of memory\n");
		d->bufs = NULL;
		goto out;
	}
	memset(d->bufs, 0, (size_t)COPY_QD * CHUNK_SIZE);
	d->job.src = temp_file(dir);
	if (d->job.src < 0)
		goto out;
	d->job.dst = temp_file(dir);
	if (d->job.dst < 0)
		goto out;
	if (demo_copy(d, dir, size) || demo_nop(d, seconds))
		goto out;
	status = 0;
out:
	/* Dispatch whatever is still in flight before its records and buffers go away. */
	ret = ql__ring_exit(&d->r, EXIT_TIMEOUT_NS);
	if (ret) {
		fprintf(stderr, "uring_demo: ql__ring_exit: %s; leaking the buffers\n",
			strerror(-ret));
		return 1;
	}
	if (d->job.src >= 0 && close(d->job.src))
		status = 1;
	if (d->job.dst >= 0 && close(d->job.dst))
		status = 1;
	free(d->bufs);
	free(d);
	if (status == 0)
		printf("OK\n");
	return status;
}
