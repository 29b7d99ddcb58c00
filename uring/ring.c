/* SPDX-License-Identifier: MIT */
/*
 * uring/ring.c - the ring layer: every io_uring system call qilin makes.
 *
 * What it owns. One struct ql_ring is one io_uring instance plus the
 * bookkeeping that makes it safe to drive from an executor: how many
 * operations are in flight, which features the kernel granted, the eventfd
 * that lets other threads wake the owner, the buffer groups and the streams
 * stalled on them. liburing is used for setup, registration and the SQE
 * "prep" helpers; submission and reaping are done here, against the shared
 * ring memory, so that the layer knows exactly when it enters the kernel
 * (every io_uring_enter is counted) and can dispatch CQEs re-entrantly.
 *
 * Who may call it. The owner thread only (the thread that ran
 * ql__ring_init()), with two exceptions: ql__ring_wake() (an eventfd write)
 * and ql__ring_stats() (relaxed loads). No locks are taken anywhere.
 *
 * Invariants.
 *  - r->inflight counts SQEs acquired for the caller (through ql__ring_sqe*)
 *    whose final CQE has not been reaped. Every such SQE produces exactly one
 *    CQE without IORING_CQE_F_MORE; multishot operations produce more, with
 *    F_MORE on all but the last. Internal operations the owner does not
 *    control the number of (the eventfd read, the wait timeout, drain
 *    cancels) use small tagged user_data values and are not counted.
 *  - A record is "armed" (QL_OP_ARMED) from the SQE acquisition that names it
 *    to the dispatch of its final CQE. ql__ring_cancel() on an unarmed record
 *    is refused, so a cancel never names a record the kernel no longer knows.
 *  - Reaping reads a CQE and publishes the new CQ head before its
 *    continuation runs, so continuations may submit, reap and wait themselves
 *    (re-entrancy) without a CQE being seen twice.
 *  - Memory the kernel may write (buffers, records, the eventfd counter, the
 *    buffer rings) is released only after the CQE that ends the kernel's use
 *    of it has been reaped; ql__ring_exit() drains before it unmaps.
 */
#include <errno.h>
#include <fcntl.h>
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"

/* Tagged user_data values below this bound are internal, never records. */
enum {
	UD_NONE = 0,	   /* counted operation whose CQE nobody wants */
	UD_WAKE_MSG = 1,   /* a msg_ring wake-up posted by another ring */
	UD_WAKE_READ = 2,  /* the armed eventfd read */
	UD_WAIT_TMO = 3,   /* the wait timeout (no EXT_ARG) */
	UD_UNCOUNTED = 4,  /* internal, not counted: timeout removal */
	UD_CANCEL_ALL = 5, /* drain-time cancel of everything */
	UD_TAG_LIMIT = 16,
};

#define DEFAULT_SQ_ENTRIES 256u
#define MAX_SQ_ENTRIES 32768u
#define CQ_PER_SQ 4u
#define NSEC_PER_SEC 1000000000ull

const char *const ql__ring_feature_names[QL_RING_NFEATURES] = {
	"single_issuer", "defer_taskrun", "coop_taskrun", "submit_all", "multishot",
	"msg_ring",	 "bufring",	  "ext_arg",	  "reg_ring",
};

struct ql_bufgroup {
	struct ql_ring *r;
	uint16_t bgid;
	unsigned nbufs;		 /* power of 2 */
	size_t size;		 /* bytes per buffer */
	char *base;		 /* nbufs * size bytes */
	size_t base_len;	 /* mapping length of base */
	struct io_uring_buf_ring *br; /* ring-mapped buffers, or NULL (legacy) */
	size_t br_len;		 /* mapping length of br */
	unsigned avail;		 /* buffers the kernel may pick now */
	struct ql_op *starved;	 /* streams stalled on this group */
	struct ql_bufgroup *next; /* the ring's list of groups */
};

/* ------------------------------------------------------------ counters */


/* Counters are written by the owner only (see ql__counter_add). */
#define ST_ADD(r, f, n) ql__counter_add(&(r)->st.f, (n))
#define ST_SET(r, f, v) __atomic_store_n(&(r)->st.f, (v), __ATOMIC_RELAXED)

static inline void inflight_inc(struct ql_ring *r)
{
	r->inflight++;
}

static void inflight_underflow(void) __attribute__((noreturn, cold));
static void inflight_underflow(void)
{
	/* A CQE we did not account for: a bug in this file. */
	fprintf(stderr, "qilin: ring in-flight count underflow\n");
	abort();
}

static inline void inflight_dec(struct ql_ring *r)
{
	if (__builtin_expect(r->inflight == 0, 0))
		inflight_underflow();
	r->inflight--;
}

/*
 * Publish the in-flight gauge and its peak. In-flight only grows through SQE
 * acquisition and only shrinks in reap, so sampling it on the way into every
 * submit and reap (and on the way out of reap) sees every peak.
 */
static inline void inflight_publish(struct ql_ring *r)
{
	ST_SET(r, inflight, r->inflight);
	if (r->inflight > r->st.inflight_peak)
		ST_SET(r, inflight_peak, r->inflight);
}

void ql__ring_stats(const struct ql_ring *r, struct ql_ring_stats *out)
{
	ql__counters_load(out, &r->st, sizeof(*out));
}

/* ------------------------------------------------------------ errors */

static __thread char last_error[512];

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
}

const char *ql__ring_last_error(void)
{
	return last_error[0] ? last_error : "no error";
}

/* Read a small integer from a /proc file; -1 if it cannot be read. */
static long read_proc_long(const char *path)
{
	char buf[64];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

/* The thread's seccomp mode from /proc/thread-self/status (0, 1, 2; -1). */
static int seccomp_mode(void)
{
	char line[256];
	int mode = -1;
	FILE *f = fopen("/proc/thread-self/status", "re");

	if (!f)
		f = fopen("/proc/self/status", "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Seccomp:", 8) == 0) {
			mode = atoi(line + 8);
			break;
		}
	}
	fclose(f);
	return mode;
}

int ql__ring_explain(int err, char *buf, size_t len)
{
	long disabled = read_proc_long("/proc/sys/kernel/io_uring_disabled");
	int seccomp = seccomp_mode();
	struct rlimit ml = { 0, 0 };

	getrlimit(RLIMIT_MEMLOCK, &ml);
	switch (err) {
	case -ENOSYS:
		if (seccomp == 2)
			snprintf(buf, len,
				 "io_uring_setup failed with ENOSYS and a seccomp filter is active "
				 "on this thread: the filter blocks io_uring (a container or sandbox "
				 "profile); allow io_uring_setup, io_uring_enter and "
				 "io_uring_register, or run without the filter");
		else if (disabled >= 0)
			snprintf(buf, len,
				 "io_uring_setup failed with ENOSYS although the kernel has "
				 "io_uring (kernel.io_uring_disabled exists): something intercepts "
				 "the system call");
		else
			snprintf(buf, len,
				 "this kernel has no io_uring (ENOSYS): it is older than 5.1 or "
				 "built without CONFIG_IO_URING; qilin needs Linux 5.11 or later");
		break;
	case -EPERM:
	case -EACCES:
		if (disabled == 2)
			snprintf(buf, len,
				 "io_uring is disabled for every process by the sysctl "
				 "kernel.io_uring_disabled=2 (EPERM); set it to 0 to allow it");
		else if (disabled == 1)
			snprintf(buf, len,
				 "io_uring is restricted by the sysctl kernel.io_uring_disabled=1 "
				 "(EPERM): only CAP_SYS_ADMIN and members of the group in "
				 "kernel.io_uring_group (%ld) may use it",
				 read_proc_long("/proc/sys/kernel/io_uring_group"));
		else if (seccomp == 2)
			snprintf(buf, len,
				 "a seccomp filter denies io_uring_setup (EPERM), as Docker's "
				 "default profile does; allow io_uring_setup, io_uring_enter and "
				 "io_uring_register (e.g. a custom --security-opt seccomp=profile)");
		else
			snprintf(buf, len,
				 "io_uring_setup was refused with %s and neither the "
				 "io_uring_disabled sysctl nor seccomp explains it: check the LSM "
				 "policy (SELinux, AppArmor)",
				 err == -EPERM ? "EPERM" : "EACCES");
		break;
	case -ENOMEM:
		if (ml.rlim_cur != RLIM_INFINITY)
			snprintf(buf, len,
				 "the kernel could not allocate the ring (ENOMEM): kernels before "
				 "5.12 charge ring memory to RLIMIT_MEMLOCK, which is %llu KiB "
				 "here; raise it (ulimit -l, limits.conf, LimitMEMLOCK=) or use "
				 "fewer or smaller rings",
				 (unsigned long long)ml.rlim_cur / 1024);
		else
			snprintf(buf, len,
				 "the kernel could not allocate the ring (ENOMEM) although "
				 "RLIMIT_MEMLOCK is unlimited: memory is short");
		break;
	case -EMFILE:
	case -ENFILE:
		snprintf(buf, len,
			 "no file descriptor is left for the ring (%s): raise RLIMIT_NOFILE",
			 err == -EMFILE ? "EMFILE" : "ENFILE");
		break;
	case -EINVAL:
		snprintf(buf, len,
			 "the kernel rejected every ring configuration tried (EINVAL), even "
			 "without optional flags: the SQ or CQ size may be too large");
		break;
	default:
		snprintf(buf, len, "io_uring_setup failed: %s", strerror(-err));
		break;
	}
	return err;
}

/* ------------------------------------------------------------ features */

int ql__ring_parse_features(const char *list, unsigned *mask)
{
	unsigned m = 0;
	const char *p = list;

	if (!mask)
		return -EINVAL;
	*mask = 0;
	if (!list)
		return 0;
	while (*p) {
		size_t n = strcspn(p, ", ");
		int found = 0;

		if (n == 3 && strncmp(p, "all", 3) == 0) {
			m |= QL_RING_F_ALL;
			found = 1;
		}
		for (unsigned i = 0; !found && n && i < QL_RING_NFEATURES; i++) {
			if (strlen(ql__ring_feature_names[i]) == n &&
			    strncmp(p, ql__ring_feature_names[i], n) == 0) {
				m |= 1u << i;
				found = 1;
			}
		}
		if (n && !found) {
			char known[256];

			ql__ring_features_str(QL_RING_F_ALL, known, sizeof(known));
			set_error("%s: unknown feature '%.*s' (known: all,%s)",
				  QL_RING_DISABLE_ENV, (int)n, p, known);
			return -EINVAL;
		}
		p += n;
		p += strspn(p, ", ");
	}
	*mask = m;
	return 0;
}

void ql__ring_features_str(unsigned mask, char *buf, size_t len)
{
	size_t off = 0;

	if (!len)
		return;
	buf[0] = '\0';
	for (unsigned i = 0; i < QL_RING_NFEATURES; i++) {
		if (!(mask & (1u << i)))
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? "," : "",
				 ql__ring_feature_names[i]);
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	if (off == 0)
		snprintf(buf, len, "none");
}

/*
 * Capabilities no setup flag or opcode probe reveals (multishot recv and
 * accept, ring-mapped buffers) are tested once per process on a scratch ring
 * and cached.
 */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static unsigned probe_caps;

static int try_setup(struct ql_ring *r, unsigned entries, unsigned cq, unsigned flags);
static int do_enter(struct ql_ring *r, unsigned submit, unsigned wait, unsigned flags, void *arg,
		    size_t argsz);
static unsigned flush_sq(struct ql_ring *r);

struct ql_ring_stats ql__ring_probe_stats;

static void probe_kernel(void)
{
	struct ql_ring pr;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int sv[2];
	unsigned caps = 0;

	/*
	 * A bare scratch ring, driven through the same counted enter as every
	 * other ring, so that the process's io_uring work adds up exactly
	 * (ql__ring_probe_stats); tests compare it with the kernel's count.
	 */
	memset(&pr, 0, sizeof(pr));
	if (try_setup(&pr, 8, 16, 0) < 0)
		return;
	pr.enter_fd = pr.uring.ring_fd;

	/* Ring-mapped provided buffers: register a one-page, one-entry ring. */
	long page = sysconf(_SC_PAGESIZE);
	void *br = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			-1, 0);
	if (br != MAP_FAILED) {
		struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)br,
						.ring_entries = 1,
						.bgid = 0xfffe };
		if (io_uring_register_buf_ring(&pr.uring, &reg, 0) == 0) {
			caps |= QL_RING_F_BUFRING;
			io_uring_unregister_buf_ring(&pr.uring, 0xfffe);
		}
		munmap(br, (size_t)page);
	}

	/*
	 * Multishot recv: with a byte waiting and an empty buffer group, a kernel
	 * that knows multishot answers -ENOBUFS at once; an older one rejects
	 * the flag with -EINVAL. Either way the CQE is there when the enter
	 * returns; the one-second timeout only guards against a kernel that
	 * does neither.
	 */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		if (write(sv[1], "x", 1) == 1 && (sqe = io_uring_get_sqe(&pr.uring))) {
			struct __kernel_timespec ts = { .tv_sec = 1 };
			struct io_uring_getevents_arg arg = { .sigmask_sz = _NSIG / 8,
							      .ts = (uint64_t)(uintptr_t)&ts };
			int ext = (pr.uring.features & IORING_FEAT_EXT_ARG) != 0;

			io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
			sqe->flags |= IOSQE_BUFFER_SELECT;
			sqe->buf_group = 0xfffd;
			io_uring_sqe_set_data64(sqe, 1);
			flush_sq(&pr);
			do_enter(&pr, 1, 1,
				 IORING_ENTER_GETEVENTS | (ext ? IORING_ENTER_EXT_ARG : 0),
				 ext ? &arg : NULL, sizeof(arg));
			while (io_uring_peek_batch_cqe(&pr.uring, &cqe, 1) == 1) {
				ST_ADD(&pr, cqes, 1);
				if (cqe->res == -ENOBUFS)
					caps |= QL_RING_F_MULTISHOT;
				io_uring_cqe_seen(&pr.uring, cqe);
			}
		}
		close(sv[0]);
		close(sv[1]);
	}
	io_uring_queue_exit(&pr.uring);
	ql__ring_probe_stats = pr.st;
	probe_caps = caps;
}

/* ------------------------------------------------------------ setup */

static int try_setup(struct ql_ring *r, unsigned entries, unsigned cq, unsigned flags)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	p.flags = flags | IORING_SETUP_CQSIZE;
	p.cq_entries = cq;
	int ret = io_uring_queue_init_params(entries, &r->uring, &p);
	if (ret == 0) {
		r->setup_flags = p.flags;
		r->sq_entries = p.sq_entries;
		r->cq_entries = p.cq_entries;
		/* Remember the kernel's feature word for EXT_ARG. */
		r->uring.features = p.features;
	}
	return ret;
}

static struct io_uring_sqe *sqe_internal(struct ql_ring *r, uint64_t ud);
static void arm_wake(struct ql_ring *r);

int ql__ring_init(struct ql_ring *r, const struct ql_ring_opts *opts)
{
	struct ql_ring_opts o = { .sz = sizeof(o) };
	unsigned disable = 0, env_disable = 0;
	unsigned entries, cq, want, attempt[5];
	int ret = -EINVAL, n = 0;

	last_error[0] = '\0';
	if (!r) {
		set_error("ql__ring_init: NULL ring");
		return -EINVAL;
	}
	memset(r, 0, sizeof(*r));
	r->wake_fd = -1;
	r->uring.ring_fd = -1;
	if (opts) {
		if (opts->sz < sizeof(size_t) || opts->sz > sizeof(o)) {
			set_error("ql__ring_init: options size %zu not understood", opts->sz);
			return -EINVAL;
		}
		memcpy(&o, opts, opts->sz);
	}
	if (o.disable & ~QL_RING_F_ALL) {
		set_error("ql__ring_init: unknown feature bits 0x%x", o.disable);
		return -EINVAL;
	}
	if (!(o.flags & QL_RING_O_NO_ENV)) {
		ret = ql__ring_parse_features(getenv(QL_RING_DISABLE_ENV), &env_disable);
		if (ret < 0)
			return ret;
	}
	disable = o.disable | env_disable;
	/*
	 * Under valgrind, waits go through poll(2) first (see do_enter), and
	 * a DEFER_TASKRUN ring keeps its completions as task work that only an
	 * enter runs, which poll might not see: valgrind runs check, they do
	 * not measure, so they use a plain ring.
	 */
	if (RUNNING_ON_VALGRIND)
		disable |= QL_RING_F_DEFER_TASKRUN;
	/* DEFER_TASKRUN requires SINGLE_ISSUER: one off means both off. */
	if (disable & QL_RING_F_SINGLE_ISSUER)
		disable |= QL_RING_F_DEFER_TASKRUN;

	entries = o.sq_entries ? o.sq_entries : DEFAULT_SQ_ENTRIES;
	if (entries > MAX_SQ_ENTRIES) {
		set_error("ql__ring_init: %u SQ entries is more than the kernel's %u", entries,
			  MAX_SQ_ENTRIES);
		return -EINVAL;
	}
	cq = o.cq_entries ? o.cq_entries : entries * CQ_PER_SQ;
	if (cq < entries) {
		set_error("ql__ring_init: CQ (%u) smaller than SQ (%u)", cq, entries);
		return -EINVAL;
	}

	/*
	 * The flags worth having, then the same set with the newest flags
	 * stripped one step at a time: a kernel that does not know a flag
	 * answers EINVAL, and we try the next older configuration.
	 */
	want = 0;
	if (!(disable & QL_RING_F_SUBMIT_ALL))
		want |= IORING_SETUP_SUBMIT_ALL;
	if (!(disable & QL_RING_F_COOP_TASKRUN))
		want |= IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	if (!(disable & QL_RING_F_SINGLE_ISSUER))
		want |= IORING_SETUP_SINGLE_ISSUER;
	if (!(disable & QL_RING_F_DEFER_TASKRUN))
		want |= IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	attempt[n++] = want;
	want &= ~IORING_SETUP_DEFER_TASKRUN;
	if (!(want & IORING_SETUP_COOP_TASKRUN))
		want &= ~IORING_SETUP_TASKRUN_FLAG;
	attempt[n++] = want;
	want &= ~IORING_SETUP_SINGLE_ISSUER;
	attempt[n++] = want;
	want &= ~(IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
	attempt[n++] = want;
	want &= ~IORING_SETUP_SUBMIT_ALL;
	attempt[n++] = want;
	for (int i = 0; i < n; i++) {
		if (i > 0 && attempt[i] == attempt[i - 1])
			continue;
		ret = try_setup(r, entries, cq, attempt[i]);
		if (ret != -EINVAL)
			break;
	}
	if (ret < 0) {
		char why[400];

		ql__ring_explain(ret, why, sizeof(why));
		set_error("%s", why);
		r->uring.ring_fd = -1;
		return ret;
	}

	pthread_once(&probe_once, probe_kernel);

	if (r->setup_flags & IORING_SETUP_SINGLE_ISSUER)
		r->features |= QL_RING_F_SINGLE_ISSUER;
	if (r->setup_flags & IORING_SETUP_DEFER_TASKRUN)
		r->features |= QL_RING_F_DEFER_TASKRUN;
	if (r->setup_flags & IORING_SETUP_COOP_TASKRUN)
		r->features |= QL_RING_F_COOP_TASKRUN;
	if (r->setup_flags & IORING_SETUP_SUBMIT_ALL)
		r->features |= QL_RING_F_SUBMIT_ALL;
	if ((r->uring.features & IORING_FEAT_EXT_ARG) && !(disable & QL_RING_F_EXT_ARG))
		r->features |= QL_RING_F_EXT_ARG;
	r->features |= probe_caps & ~disable & (QL_RING_F_MULTISHOT | QL_RING_F_BUFRING);

	struct io_uring_probe *probe = io_uring_get_probe_ring(&r->uring);
	if (probe) {
		for (unsigned op = 0; op < sizeof(r->ops) && op <= probe->last_op; op++)
			r->ops[op] = io_uring_opcode_supported(probe, (int)op) ? 1 : 0;
		io_uring_free_probe(probe);
	} else {
		/* No probe (before 5.6): only the opcodes every kernel had. */
		for (unsigned op = IORING_OP_NOP; op <= IORING_OP_SYNC_FILE_RANGE; op++)
			r->ops[op] = 1;
	}
	if (ql__ring_op_supported(r, IORING_OP_MSG_RING) && !(disable & QL_RING_F_MSG_RING))
		r->features |= QL_RING_F_MSG_RING;

	r->enter_fd = r->uring.ring_fd;
	if (!(disable & QL_RING_F_REG_RING) && io_uring_register_ring_fd(&r->uring) == 1) {
		r->features |= QL_RING_F_REG_RING;
		r->enter_fd = r->uring.enter_ring_fd;
		r->enter_flags = IORING_ENTER_REGISTERED_RING;
	}

	r->flags = o.flags;
	r->file_batch = o.file_batch ? o.file_batch : QL_RING_FILE_BATCH;
	/* A power of two, so that the fast path tests it with a mask: round down. */
	while (r->file_batch & (r->file_batch - 1))
		r->file_batch &= r->file_batch - 1;
	r->inflight_cap = o.inflight_max ? o.inflight_max : r->cq_entries;
	if (r->inflight_cap > r->cq_entries && !(o.flags & QL_RING_O_UNBOUNDED))
		r->inflight_cap = r->cq_entries;

	if (!(o.flags & QL_RING_O_NO_WAKE)) {
		/*
		 * Blocking on purpose: io_uring hands -EAGAIN straight back for
		 * O_NONBLOCK files instead of polling them, which would turn the
		 * armed read into a busy loop. Writers never block (the counter
		 * cannot reach its 2^64-2 limit one wake-up at a time).
		 */
		r->wake_fd = eventfd(0, EFD_CLOEXEC);
		if (r->wake_fd < 0) {
			ret = -errno;
			set_error("ql__ring_init: eventfd for wake-ups: %s", strerror(errno));
			io_uring_queue_exit(&r->uring);
			r->uring.ring_fd = -1;
			return ret;
		}
		arm_wake(r);
	}
	r->live = 1;
	return 0;
}

/* ------------------------------------------------------------ submission */

unsigned ql__ring_pending(const struct ql_ring *r)
{
	return r->uring.sq.sqe_tail - r->uring.sq.sqe_head;
}

/* Publish prepared SQEs to the kernel; returns how many it has not consumed. */
static unsigned flush_sq(struct ql_ring *r)
{
	struct io_uring_sq *sq = &r->uring.sq;
	unsigned tail = sq->sqe_tail;

	if (sq->sqe_head != tail) {
		sq->sqe_head = tail;
		/*
		 * Release: the SQE contents written above must be visible before
		 * the kernel can observe the new tail (it reads ktail, then SQEs).
		 */
		io_uring_smp_store_release(sq->ktail, tail);
	}
	/* Acquire pairs with the kernel's release of khead after consuming. */
	return tail - io_uring_smp_load_acquire(sq->khead);
}

/*
 * Valgrind (3.19 at least) runs io_uring_enter as a system call that cannot
 * block: a thread waiting in it keeps valgrind's one big lock, and every
 * other thread of the program stops, so a worker that parks hangs the whole
 * process (liburing issue 657). Under valgrind a wait first blocks in
 * poll(2) on the ring's fd, which valgrind lets block, until a completion
 * is there or the wait's timeout (EXT_ARG) passes; the enter then finds it.
 */
static void valgrind_wait(struct ql_ring *r, unsigned flags, void *arg)
{
	struct pollfd p = { .fd = r->uring.ring_fd, .events = POLLIN };
	int ms = -1;

	if ((flags & IORING_ENTER_EXT_ARG) && arg) {
		const struct io_uring_getevents_arg *ga = arg;
		const struct __kernel_timespec *ts =
			(const struct __kernel_timespec *)(uintptr_t)ga->ts;

		if (ts) {
			long long t = ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;

			ms = t > INT_MAX ? INT_MAX : (int)t;
		}
	}
	(void)poll(&p, 1, ms);
}

/* One io_uring_enter, counted. Returns its result or -errno. */
static int do_enter(struct ql_ring *r, unsigned submit, unsigned wait, unsigned flags, void *arg,
		    size_t argsz)
{
	int ret, pre = 0;

	if (__builtin_expect(RUNNING_ON_VALGRIND != 0, 0) && wait &&
	    (flags & IORING_ENTER_GETEVENTS) && io_uring_cq_ready(&r->uring) < wait) {
		/* Submit first (without waiting), so that what we wait for is in flight. */
		if (submit) {
			pre = do_enter(r, submit, 0, flags & ~IORING_ENTER_GETEVENTS, NULL, 0);
			if (pre < 0)
				return pre;
			submit = 0;
		}
		valgrind_wait(r, flags, arg);
	}
	flags |= r->enter_flags;
	ST_ADD(r, enters, 1);
	/*
	 * Through libc's syscall(): -1 and errno on failure, whatever liburing
	 * build is installed (its own wrappers return -errno on some builds).
	 */
	ret = (int)syscall(__NR_io_uring_enter, r->enter_fd, submit, wait, flags, arg,
			   arg ? argsz : (size_t)(_NSIG / 8));
	if (ret > 0 && submit)
		ST_ADD(r, sqes, (unsigned)ret > submit ? submit : (unsigned)ret);
	/* Valgrind's split enter: the SQEs submitted first count as this call's. */
	if (pre && ret >= 0)
		return ret + pre;
	if (pre && (errno == ETIME || errno == EINTR))
		return pre;
	return ret;
}

static inline unsigned sq_flags(const struct ql_ring *r)
{
	return IO_URING_READ_ONCE(*r->uring.sq.kflags);
}

int ql__ring_submit(struct ql_ring *r, unsigned wait_nr, uint64_t timeout_ns)
{
	struct __kernel_timespec ts;
	struct io_uring_getevents_arg arg;
	unsigned flags = 0, submitted = 0, want;
	int ret;

	if (!r || !r->live)
		return -EINVAL;
	inflight_publish(r);
	if (wait_nr && timeout_ns) {
		ts.tv_sec = (long long)(timeout_ns / NSEC_PER_SEC);
		ts.tv_nsec = (long long)(timeout_ns % NSEC_PER_SEC);
		if (!(r->features & QL_RING_F_EXT_ARG)) {
			/*
			 * No timeout argument to enter: a timeout operation ends
			 * the wait instead. One stays armed across waits: if it
			 * expires no later than this wait's deadline it serves
			 * (ending the wait early is allowed); otherwise it is
			 * removed and a nearer one armed. Re-arming on every wait
			 * would make each wait end at once on the removed
			 * timeout's CQE, and an idle loop spin.
			 */
			uint64_t deadline = ql__now_ns() + timeout_ns;
			struct io_uring_sqe *sqe;

			if (!r->tmo_live || r->tmo_deadline > deadline) {
				if (r->tmo_live) {
					sqe = sqe_internal(r, UD_UNCOUNTED);
					io_uring_prep_timeout_remove(sqe, UD_WAIT_TMO, 0);
					io_uring_sqe_set_data64(sqe, UD_UNCOUNTED);
				}
				r->tmo_ts = ts;
				sqe = sqe_internal(r, UD_WAIT_TMO);
				io_uring_prep_timeout(sqe, &r->tmo_ts, 0, 0);
				io_uring_sqe_set_data64(sqe, UD_WAIT_TMO);
				r->tmo_armed++;
				r->tmo_live = 1;
				r->tmo_deadline = deadline;
			}
		}
	}

	for (;;) {
		/* Work only an enter can run: deferred task work, overflowed CQEs. */
		unsigned kernel_work = sq_flags(r) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW);

		want = flush_sq(r);
		if (!want && !wait_nr && !kernel_work)
			return (int)submitted;
		/* GETEVENTS when waiting, for that kernel work, and always with
		 * DEFER_TASKRUN (completions are posted only then). */
		flags = 0;
		if (wait_nr || kernel_work || (r->setup_flags & IORING_SETUP_DEFER_TASKRUN))
			flags |= IORING_ENTER_GETEVENTS;
		if (wait_nr && timeout_ns && (r->features & QL_RING_F_EXT_ARG)) {
			memset(&arg, 0, sizeof(arg));
			arg.sigmask_sz = _NSIG / 8;
			arg.ts = (uint64_t)(uintptr_t)&ts;
			ret = do_enter(r, want, wait_nr, flags | IORING_ENTER_EXT_ARG, &arg,
				       sizeof(arg));
		} else {
			ret = do_enter(r, want, wait_nr, flags, NULL, 0);
		}
		if (ret < 0) {
			ret = -errno;
			if (ret == -ETIME || ret == -EINTR)
				return (int)submitted;
			if (ret == -EAGAIN || ret == -EBUSY) {
				/*
				 * The kernel is short of resources or its CQ
				 * overflow list is full: the caller must reap
				 * before more can be submitted.
				 */
				ST_ADD(r, overflows, (sq_flags(r) & IORING_SQ_CQ_OVERFLOW) ? 1 : 0);
				return (int)submitted;
			}
			return ret;
		}
		submitted += (unsigned)ret;
		/*
		 * Without SUBMIT_ALL the kernel stops at an SQE that fails to
		 * submit (it posts that SQE's error CQE): go on with the rest.
		 */
		if ((unsigned)ret >= want || ret == 0)
			return (int)submitted;
		wait_nr = 0;
	}
}

/*
 * Make room for one more SQE: submit what is queued, and if the kernel could
 * not take it (resources), reap to let it make progress.
 */
static void make_sq_room(struct ql_ring *r)
{
	ST_ADD(r, sq_full, 1);
	for (int tries = 0; io_uring_sq_space_left(&r->uring) == 0; tries++) {
		int ret = ql__ring_submit(r, 0, 0);

		if (ret < 0 && ret != -EAGAIN && ret != -EBUSY) {
			fprintf(stderr, "qilin: io_uring_enter failed while the SQ was full: %s\n",
				strerror(-ret));
			abort();
		}
		if (io_uring_sq_space_left(&r->uring) == 0) {
			ql__ring_reap(r);
			if (tries > 0)
				ql__ring_submit(r, 1, NSEC_PER_SEC / 1000);
		}
	}
}

/* An SQE for an internal, uncounted or counted-but-untracked operation. */
static struct io_uring_sqe *sqe_internal(struct ql_ring *r, uint64_t ud)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);

	if (!sqe) {
		make_sq_room(r);
		sqe = io_uring_get_sqe(&r->uring);
	}
	io_uring_sqe_set_data64(sqe, ud);
	return sqe;
}

static inline void arm_record(struct ql_op *op, struct io_uring_sqe *sqe)
{
	io_uring_sqe_set_data(sqe, op);
	if (op)
		op->flags |= QL_OP_ARMED;
}

struct io_uring_sqe *ql__ring_sqe_try(struct ql_ring *r, struct ql_op *op)
{
	struct io_uring_sqe *sqe;

	if (!r->reserved && !(r->flags & QL_RING_O_UNBOUNDED) && r->inflight >= r->inflight_cap)
		return NULL;
	sqe = io_uring_get_sqe(&r->uring);
	if (!sqe)
		return NULL;
	if (r->reserved)
		r->reserved--;
	inflight_inc(r);
	arm_record(op, sqe);
	return sqe;
}

/* Wait until fewer than `room` slots short of the in-flight bound are used. */
static void backpressure(struct ql_ring *r, unsigned room)
{
	if (r->flags & QL_RING_O_UNBOUNDED)
		return;
	/*
	 * Inside a continuation the CQE being dispatched has already freed
	 * its slot; waiting here would nest reaps without bound, so the bound
	 * is enforced only from the top level.
	 */
	if (r->reaping)
		return;
	if (r->inflight + room <= r->inflight_cap)
		return;
	ST_ADD(r, backpressure, 1);
	while (r->inflight + room > r->inflight_cap) {
		int ret = ql__ring_submit(r, 1, 0);

		if (ret < 0 && ret != -EAGAIN && ret != -EBUSY) {
			fprintf(stderr, "qilin: io_uring_enter failed under backpressure: %s\n",
				strerror(-ret));
			abort();
		}
		ql__ring_reap(r);
	}
}

struct io_uring_sqe *ql__ring_sqe_slow(struct ql_ring *r, struct ql_op *op)
{
	struct io_uring_sqe *sqe;

	if (!r->reserved && ql__ring_file_due(r)) {
		/*
		 * File I/O goes out now, not at the tick's end (QL_RING_FILE_BATCH).
		 * Submit only: nothing is dispatched under the caller. A failure
		 * leaves the SQEs queued for the tick's enter, which reports it.
		 */
		ST_ADD(r, early_submits, 1);
		(void)ql__ring_submit(r, 0, 0);
	}
	if (r->reserved) {
		/* ql__ring_reserve() guaranteed both the slot and the room. */
		sqe = io_uring_get_sqe(&r->uring);
		r->reserved--;
	} else {
		backpressure(r, 1);
		sqe = io_uring_get_sqe(&r->uring);
		if (!sqe) {
			make_sq_room(r);
			sqe = io_uring_get_sqe(&r->uring);
		}
	}
	inflight_inc(r);
	arm_record(op, sqe);
	return sqe;
}

int ql__ring_reserve(struct ql_ring *r, unsigned n)
{
	if (!r || n == 0 || n > r->sq_entries || n > r->inflight_cap)
		return -EINVAL;
	backpressure(r, n);
	while (io_uring_sq_space_left(&r->uring) < n)
		make_sq_room(r);
	r->reserved = n;
	return 0;
}

int ql__ring_link_timeout(struct ql_ring *r, struct io_uring_sqe *sqe, struct ql_op *op,
			  uint64_t ns)
{
	struct io_uring_sq *sq = &r->uring.sq;
	struct io_uring_sqe *t;

	if (!r || !sqe || !op)
		return -EINVAL;
	/* The timeout must follow its target directly, in the same batch. */
	if (sqe != &sq->sqes[(sq->sqe_tail - 1) & sq->ring_mask] || sq->sqe_head == sq->sqe_tail)
		return -EINVAL;
	if (!r->reserved)
		return -EINVAL;
	op->ts.tv_sec = (long long)(ns / NSEC_PER_SEC);
	op->ts.tv_nsec = (long long)(ns % NSEC_PER_SEC);
	sqe->flags |= IOSQE_IO_LINK;
	t = ql__ring_sqe(r, NULL);
	io_uring_prep_link_timeout(t, &op->ts, 0);
	io_uring_sqe_set_data64(t, UD_NONE);
	return 0;
}

/* ------------------------------------------------------------ streams */

static void stream_prep(struct ql_ring *r, struct ql_op *op, struct io_uring_sqe *sqe)
{
	int multi = (r->features & QL_RING_F_MULTISHOT) != 0;

	if (op->stream == QL_STREAM_ACCEPT) {
		if (multi)
			io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL, SOCK_CLOEXEC);
		else
			io_uring_prep_accept(sqe, op->fd, NULL, NULL, SOCK_CLOEXEC);
	} else {
		if (multi)
			io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
		else
			io_uring_prep_recv(sqe, op->fd, NULL, op->bg->size, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = op->bg->bgid;
	}
	if (multi)
		op->flags |= QL_OP_MULTISHOT;
	else
		op->flags &= ~QL_OP_MULTISHOT;
}

static void stream_arm(struct ql_ring *r, struct ql_op *op)
{
	struct io_uring_sqe *sqe = ql__ring_sqe(r, op);

	stream_prep(r, op, sqe);
	io_uring_sqe_set_data(sqe, op);
}

static int stream_start(struct ql_ring *r, struct ql_op *op, int fd, enum ql_stream_kind kind,
			struct ql_bufgroup *bg, ql_op_fn fn)
{
	if (!r || !r->live || !op || !fn || fd < 0)
		return -EINVAL;
	if (op->flags & (QL_OP_ARMED | QL_OP_STARVED))
		return -EBUSY;
	op->fn = fn;
	op->flags = QL_OP_STREAM;
	op->stream = (uint8_t)kind;
	op->fd = fd;
	op->bg = bg;
	op->next = NULL;
	stream_arm(r, op);
	return 0;
}

int ql__ring_accept_stream(struct ql_ring *r, struct ql_op *op, int fd, ql_op_fn fn)
{
	return stream_start(r, op, fd, QL_STREAM_ACCEPT, NULL, fn);
}

int ql__ring_recv_stream(struct ql_ring *r, struct ql_op *op, int fd, struct ql_bufgroup *bg,
			 ql_op_fn fn)
{
	if (!bg || (r && bg->r != r))
		return -EINVAL;
	return stream_start(r, op, fd, QL_STREAM_RECV, bg, fn);
}

/* Park a stream on its group's starved list until a buffer comes back. */
static void stream_starve(struct ql_ring *r, struct ql_op *op)
{
	ST_ADD(r, enobufs, 1);
	op->flags |= QL_OP_STARVED;
	op->next = op->bg->starved;
	op->bg->starved = op;
}

static void stream_end(struct ql_ring *r, struct ql_op *op, int res)
{
	op->flags &= ~(QL_OP_STREAM | QL_OP_STARVED | QL_OP_MULTISHOT);
	op->fn(r, op, res, 0);
}

/*
 * A stream's CQE. res/flags are the kernel's; what the continuation sees is
 * a result with F_MORE while the stream goes on, and one final call.
 */
static void stream_cqe(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	int more = (flags & IORING_CQE_F_MORE) != 0;
	int is_recv = op->stream == QL_STREAM_RECV;

	if (is_recv && (flags & IORING_CQE_F_BUFFER) && op->bg->avail)
		op->bg->avail--;
	if (more) {
		/* A multishot result; the kernel keeps the operation armed. */
		op->fn(r, op, res, flags);
		return;
	}
	/* The kernel is done with this arming. */
	op->flags &= ~QL_OP_ARMED;

	if (op->flags & QL_OP_STARVED) {
		/* The NOP queued by a cancel of a stalled stream. */
		stream_end(r, op, -ECANCELED);
		return;
	}
	int data = is_recv ? res > 0 : res >= 0;
	if (data) {
		/* A result the caller must get (an fd to close, a buffer to put back). */
		op->fn(r, op, res, flags | IORING_CQE_F_MORE);
		if (op->flags & QL_OP_CANCELLED || r->exiting) {
			stream_end(r, op, -ECANCELED);
			return;
		}
		ST_ADD(r, rearms, 1);
		stream_arm(r, op);
		return;
	}
	if (res == -ENOBUFS && !(op->flags & QL_OP_CANCELLED) && !r->exiting) {
		if (op->bg->avail) {
			/* Buffers came back between the stall and this CQE. */
			ST_ADD(r, enobufs, 1);
			ST_ADD(r, rearms, 1);
			stream_arm(r, op);
		} else {
			stream_starve(r, op);
		}
		return;
	}
	if (!is_recv && (res == -ECONNABORTED || res == -EINTR) &&
	    !(op->flags & QL_OP_CANCELLED) && !r->exiting) {
		/* A connection that died in the backlog is not the listener's end. */
		ST_ADD(r, rearms, 1);
		stream_arm(r, op);
		return;
	}
	if (res == -ENOBUFS)
		res = -ECANCELED;
	stream_end(r, op, res);
}

/* ------------------------------------------------------------ reaping */

static void wake_cqe(struct ql_ring *r, int res)
{
	r->wake_armed = 0;
	if (res == -ECANCELED || r->exiting)
		return;
	if (res < 0) {
		/* The eventfd read cannot fail short of a bug; do not spin on it. */
		fprintf(stderr, "qilin: wake-up read failed: %s\n", strerror(-res));
		return;
	}
	ST_ADD(r, wakeups, 1);
	arm_wake(r);
}

static void arm_wake(struct ql_ring *r)
{
	struct io_uring_sqe *sqe = sqe_internal(r, UD_WAKE_READ);

	io_uring_prep_read(sqe, r->wake_fd, &r->wake_val, sizeof(r->wake_val), 0);
	io_uring_sqe_set_data64(sqe, UD_WAKE_READ);
	r->wake_armed = 1;
}

static void dispatch(struct ql_ring *r, uint64_t ud, int res, unsigned flags)
{
	struct ql_op *op;

	if (ud < UD_TAG_LIMIT) {
		switch (ud) {
		case UD_NONE:
			if (!(flags & IORING_CQE_F_MORE))
				inflight_dec(r);
			break;
		case UD_WAKE_MSG:
			ST_ADD(r, wakeups, 1);
			break;
		case UD_WAKE_READ:
			wake_cqe(r, res);
			break;
		case UD_WAIT_TMO:
			if (r->tmo_armed)
				r->tmo_armed--;
			if (!r->tmo_armed)
				r->tmo_live = 0;
			break;
		case UD_CANCEL_ALL:
			if (res == -EINVAL)
				r->cancel_any_broken = 1;
			r->cancel_all_armed = 0;
			break;
		default:
			break;
		}
		return;
	}
	op = (struct ql_op *)(uintptr_t)ud;
	if (!(flags & IORING_CQE_F_MORE))
		inflight_dec(r);
	if (op->flags & QL_OP_STREAM) {
		stream_cqe(r, op, res, flags);
		return;
	}
	if (!(flags & IORING_CQE_F_MORE))
		op->flags &= ~(QL_OP_ARMED | QL_OP_CANCELLED);
	/* Last: the continuation may free or re-arm the record. */
	op->fn(r, op, res, flags);
}

unsigned ql__ring_reap(struct ql_ring *r)
{
	struct io_uring_cq *cq = &r->uring.cq;
	unsigned total = 0, flushes = 0;

	if (!r || !r->live)
		return 0;
	inflight_publish(r);
	r->reaping++;
	for (;;) {
		unsigned head = *cq->khead;
		/* Acquire: CQE contents are valid once we see the kernel's tail. */
		unsigned tail = io_uring_smp_load_acquire(cq->ktail);

		if (head == tail) {
			unsigned f = sq_flags(r);

			/*
			 * CQEs parked on the kernel's overflow list, or task work
			 * only an enter runs: one GETEVENTS enter moves them into
			 * the ring. Bounded, so a busy kernel cannot pin us here.
			 */
			if ((f & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) && flushes < 64) {
				if (f & IORING_SQ_CQ_OVERFLOW)
					ST_ADD(r, overflows, 1);
				flushes++;
				do_enter(r, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
				continue;
			}
			break;
		}
		unsigned n = 0;

		while (head != tail) {
			const struct io_uring_cqe *c = &cq->cqes[head & cq->ring_mask];
			uint64_t ud = c->user_data;
			int res = c->res;
			unsigned flags = c->flags;

			/*
			 * Release: our reads of this CQE complete before the kernel
			 * may reuse its slot. Published before the continuation
			 * runs, so one that reaps in turn never sees it again (it
			 * may see, and dispatch, the rest of this batch: the loop
			 * re-reads the head below rather than trusting `tail`).
			 */
			io_uring_smp_store_release(cq->khead, ++head);
			n++;
			dispatch(r, ud, res, flags);
			if (__builtin_expect(*cq->khead != head, 0))
				break; /* a nested reap moved on; start over */
		}
		ST_ADD(r, cqes, n);
		total += n;
	}
	ST_SET(r, cq_dropped, IO_URING_READ_ONCE(*cq->koverflow));
	ST_SET(r, inflight, r->inflight);
	r->reaping--;
	return total;
}

int ql__ring_run(struct ql_ring *r, unsigned wait_nr, uint64_t timeout_ns)
{
	int ret;

	if (!r || !r->live)
		return -EINVAL;
	/* Do not sleep on CQEs that are already there. */
	if (wait_nr && io_uring_cq_ready(&r->uring) >= wait_nr)
		wait_nr = 0;
	ret = ql__ring_submit(r, wait_nr, timeout_ns);
	if (ret < 0)
		return ret;
	return (int)ql__ring_reap(r);
}

/* ------------------------------------------------------------ cancel */

int ql__ring_cancel(struct ql_ring *r, struct ql_op *op)
{
	struct io_uring_sqe *sqe;

	if (!r || !op || !r->live)
		return -EINVAL;
	if (op->flags & QL_OP_STARVED) {
		/*
		 * No kernel operation exists to cancel: leave the starved list
		 * and let a NOP deliver the final -ECANCELED through dispatch,
		 * so the continuation never runs under the caller.
		 */
		struct ql_op **pp = &op->bg->starved;

		while (*pp && *pp != op)
			pp = &(*pp)->next;
		if (*pp)
			*pp = op->next;
		op->next = NULL;
		op->flags |= QL_OP_CANCELLED;
		sqe = ql__ring_sqe(r, op);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, op);
		return 0;
	}
	if (!(op->flags & QL_OP_ARMED)) {
		if (op->flags & QL_OP_STREAM) {
			/* Inside its own continuation: the stream ends after it. */
			op->flags |= QL_OP_CANCELLED;
			return 0;
		}
		return -EALREADY;
	}
	if (op->flags & QL_OP_CANCELLED)
		return 0;
	op->flags |= QL_OP_CANCELLED;
	sqe = ql__ring_sqe(r, NULL);
	io_uring_prep_cancel(sqe, op, 0);
	io_uring_sqe_set_data64(sqe, UD_NONE);
	return 0;
}

/* ------------------------------------------------------------ wake-ups */

int ql__ring_wake(struct ql_ring *to)
{
	uint64_t one = 1;

	if (!to || to->wake_fd < 0)
		return to ? -ENOTSUP : -EINVAL;
	/* EAGAIN: the counter is saturated, a wake-up is already pending. */
	if (write(to->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

int ql__ring_wake_from(struct ql_ring *r, struct ql_ring *to)
{
	struct io_uring_sqe *sqe;

	if (!r || !to || !r->live || r == to)
		return -EINVAL;
	if (!(r->features & QL_RING_F_MSG_RING))
		return ql__ring_wake(to);
	sqe = ql__ring_sqe(r, NULL);
	io_uring_prep_msg_ring(sqe, to->uring.ring_fd, 0, UD_WAKE_MSG, 0);
	io_uring_sqe_set_data64(sqe, UD_NONE);
	return 0;
}

/* ------------------------------------------------------------ buffers */

/* Wait for op's single CQE, reaping everything else meanwhile. */
struct sync_op {
	struct ql_op op;
	int done;
	int res;
};

static void sync_done(struct ql_ring *r, struct ql_op *op, int res, unsigned flags)
{
	struct sync_op *s = (struct sync_op *)op;

	s->done = 1;
	s->res = res;
}

static int sync_wait(struct ql_ring *r, struct sync_op *s)
{
	while (!s->done) {
		int ret = ql__ring_run(r, 1, 0);

		if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)
			return ret;
	}
	return s->res;
}

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int ql__bufgroup_create(struct ql_ring *r, uint16_t bgid, unsigned nbufs, size_t size,
			struct ql_bufgroup **out)
{
	struct ql_bufgroup *bg;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!r || !r->live || nbufs == 0 || nbufs > 32768 || (nbufs & (nbufs - 1)) || size == 0 ||
	    size > INT_MAX || nbufs * size / nbufs != size)
		return -EINVAL;
	bg = calloc(1, sizeof(*bg));
	if (!bg)
		return -ENOMEM;
	bg->r = r;
	bg->bgid = bgid;
	bg->nbufs = nbufs;
	bg->size = size;
	bg->base_len = (nbufs * size + page - 1) & ~(page - 1);
	bg->base = map_anon(bg->base_len);
	if (!bg->base) {
		free(bg);
		return -ENOMEM;
	}

	if (r->features & QL_RING_F_BUFRING) {
		struct io_uring_buf_reg reg;

		bg->br_len = (nbufs * sizeof(struct io_uring_buf) + page - 1) & ~(page - 1);
		bg->br = map_anon(bg->br_len);
		if (!bg->br) {
			ret = -ENOMEM;
			goto fail;
		}
		io_uring_buf_ring_init(bg->br);
		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (uintptr_t)bg->br;
		reg.ring_entries = nbufs;
		reg.bgid = bgid;
		ret = io_uring_register_buf_ring(&r->uring, &reg, 0);
		if (ret < 0) {
			munmap(bg->br, bg->br_len);
			bg->br = NULL;
			if (ret != -EINVAL)
				goto fail;
			/* EINVAL: this kernel lacks ring-mapped buffers. */
		} else {
			int mask = io_uring_buf_ring_mask(nbufs);

			for (unsigned i = 0; i < nbufs; i++)
				io_uring_buf_ring_add(bg->br, bg->base + i * size, (unsigned)size,
						      (unsigned short)i, mask, (int)i);
			/* Release store of the tail: the kernel sees full entries. */
			io_uring_buf_ring_advance(bg->br, (int)nbufs);
			bg->avail = nbufs;
			bg->next = r->groups;
			r->groups = bg;
			*out = bg;
			return 0;
		}
	}

	/* Legacy provided buffers: one PROVIDE_BUFFERS for the whole group. */
	struct sync_op s = { .op = { .fn = sync_done } };
	struct io_uring_sqe *sqe = ql__ring_sqe(r, &s.op);

	io_uring_prep_provide_buffers(sqe, bg->base, (int)size, (int)nbufs, bgid, 0);
	io_uring_sqe_set_data(sqe, &s.op);
	ret = sync_wait(r, &s);
	if (ret < 0)
		goto fail;
	bg->avail = nbufs;
	bg->next = r->groups;
	r->groups = bg;
	*out = bg;
	return 0;
fail:
	munmap(bg->base, bg->base_len);
	free(bg);
	return ret;
}

void *ql__bufgroup_buf(struct ql_bufgroup *bg, unsigned cqe_flags)
{
	unsigned bid;

	if (!bg || !(cqe_flags & IORING_CQE_F_BUFFER))
		return NULL;
	bid = ql__bufgroup_bid(cqe_flags);
	if (bid >= bg->nbufs)
		return NULL;
	return bg->base + (size_t)bid * bg->size;
}

int ql__bufgroup_bid_of(const struct ql_bufgroup *bg, const void *p)
{
	uintptr_t base, at = (uintptr_t)p;

	if (!bg || !p)
		return -EINVAL;
	base = (uintptr_t)bg->base;
	if (at < base || at - base >= (uintptr_t)bg->nbufs * bg->size ||
	    (at - base) % bg->size != 0)
		return -EINVAL;
	return (int)((at - base) / bg->size);
}

unsigned ql__bufgroup_avail(const struct ql_bufgroup *bg)
{
	return bg ? bg->avail : 0;
}

void ql__bufgroup_put(struct ql_bufgroup *bg, unsigned bid)
{
	struct ql_ring *r;
	struct ql_op *op;

	if (!bg || bid >= bg->nbufs || !bg->r)
		return;
	r = bg->r;
	if (bg->br) {
		io_uring_buf_ring_add(bg->br, bg->base + (size_t)bid * bg->size,
				      (unsigned)bg->size, (unsigned short)bid,
				      io_uring_buf_ring_mask(bg->nbufs), 0);
		/* Release store of the tail: the entry is complete before it shows. */
		io_uring_buf_ring_advance(bg->br, 1);
	} else {
		/*
		 * Legacy: the buffer goes back with a PROVIDE_BUFFERS SQE, queued
		 * before any re-armed recv below, so the kernel sees it first.
		 */
		struct io_uring_sqe *sqe = ql__ring_sqe(r, NULL);

		io_uring_prep_provide_buffers(sqe, bg->base + (size_t)bid * bg->size,
					      (int)bg->size, 1, bg->bgid, (int)bid);
		io_uring_sqe_set_data64(sqe, UD_NONE);
	}
	bg->avail++;
	/* Streams stalled on this group go again. */
	while ((op = bg->starved) != NULL) {
		bg->starved = op->next;
		op->next = NULL;
		op->flags &= ~QL_OP_STARVED;
		ST_ADD(r, rearms, 1);
		stream_arm(r, op);
	}
}

void ql__bufgroup_destroy(struct ql_bufgroup *bg)
{
	struct ql_ring *r;

	if (!bg)
		return;
	r = bg->r;
	if (!r) {
		/* Orphaned by ql__ring_exit(): the kernel side is gone already. */
		if (bg->br)
			munmap(bg->br, bg->br_len);
		munmap(bg->base, bg->base_len);
		free(bg);
		return;
	}
	if (bg->starved) {
		fprintf(stderr, "qilin: buffer group %u destroyed with streams stalled on it\n",
			bg->bgid);
		abort();
	}
	for (struct ql_bufgroup **pp = &r->groups; *pp; pp = &(*pp)->next) {
		if (*pp == bg) {
			*pp = bg->next;
			break;
		}
	}
	if (bg->br) {
		io_uring_unregister_buf_ring(&r->uring, bg->bgid);
		munmap(bg->br, bg->br_len);
	} else if (r->live) {
		/* The kernel owns provided buffers until REMOVE_BUFFERS completes. */
		struct sync_op s = { .op = { .fn = sync_done } };
		struct io_uring_sqe *sqe = ql__ring_sqe(r, &s.op);

		io_uring_prep_remove_buffers(sqe, (int)bg->nbufs, bg->bgid);
		io_uring_sqe_set_data(sqe, &s.op);
		sync_wait(r, &s);
	}
	munmap(bg->base, bg->base_len);
	free(bg);
}

/* ------------------------------------------------------------ files, io-wq */

int ql__ring_files_init(struct ql_ring *r, unsigned n)
{
	int *fds, ret;

	if (!r || !r->live || n == 0 || r->nfiles)
		return -EINVAL;
	fds = malloc(n * sizeof(int));
	if (!fds)
		return -ENOMEM;
	/* -1 slots: an empty table that works back to 5.5 (no SPARSE flag). */
	for (unsigned i = 0; i < n; i++)
		fds[i] = -1;
	ret = io_uring_register_files(&r->uring, fds, n);
	free(fds);
	if (ret == 0)
		r->nfiles = n;
	return ret;
}

int ql__ring_file_set(struct ql_ring *r, unsigned idx, int fd)
{
	int ret;

	if (!r || !r->live || idx >= r->nfiles || fd < -1)
		return -EINVAL;
	ret = io_uring_register_files_update(&r->uring, idx, &fd, 1);
	return ret < 0 ? ret : 0;
}

int ql__ring_iowq_cap(struct ql_ring *r, unsigned bounded, unsigned unbounded)
{
	unsigned vals[2] = { bounded, unbounded };

	if (!r || !r->live)
		return -EINVAL;
	return io_uring_register_iowq_max_workers(&r->uring, vals);
}

/* ------------------------------------------------------------ teardown */

int ql__ring_exit(struct ql_ring *r, uint64_t timeout_ns)
{
	uint64_t deadline;
	int ret = 0;

	if (!r || !r->live)
		return 0;
	r->exiting = 1;
	deadline = timeout_ns ? ql__now_ns() + timeout_ns : UINT64_MAX;

	/* Streams stalled on empty groups end now, through dispatch. */
	for (struct ql_bufgroup *bg = r->groups; bg; bg = bg->next)
		while (bg->starved)
			ql__ring_cancel(r, bg->starved);
	while (r->inflight || r->wake_armed || r->tmo_armed || r->cancel_all_armed ||
	       ql__ring_pending(r)) {
		uint64_t now = ql__now_ns();

		if (now >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		if (!r->cancel_all_armed && !r->cancel_any_broken &&
		    (r->inflight || r->wake_armed || r->tmo_armed)) {
			/* One cancel for everything still in the kernel. */
			struct io_uring_sqe *sqe = sqe_internal(r, UD_CANCEL_ALL);

			io_uring_prep_cancel64(sqe, 0,
					       IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
			io_uring_sqe_set_data64(sqe, UD_CANCEL_ALL);
			r->cancel_all_armed = 1;
		} else if (r->cancel_any_broken && r->wake_armed && !r->wake_cancel_sent) {
			/* Before 5.19: cancel at least our own eventfd read. */
			struct io_uring_sqe *sqe = sqe_internal(r, UD_UNCOUNTED);

			io_uring_prep_cancel64(sqe, UD_WAKE_READ, 0);
			io_uring_sqe_set_data64(sqe, UD_UNCOUNTED);
			r->wake_cancel_sent = 1;
		}
		/*
		 * The cancel above ends everything promptly, so wait without a
		 * timeout when one would need a timeout operation (no EXT_ARG):
		 * arming those here would be one more thing to drain.
		 */
		uint64_t left = deadline == UINT64_MAX ? 0 : deadline - now;
		if (!(r->features & QL_RING_F_EXT_ARG) && !r->cancel_any_broken)
			left = 0;
		ret = ql__ring_run(r, 1, left);
		if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && ret != -EINTR)
			break;
		ret = 0;
	}
	if (ret == -ETIMEDOUT)
		set_error("ql__ring_exit: %u operations still in flight after the timeout",
			  r->inflight);
	/*
	 * Buffer groups outlive the ring only as memory: nothing in flight can
	 * use them any more, so drop the kernel's side and orphan them; their
	 * owners still call ql__bufgroup_destroy() to free the memory.
	 */
	while (r->groups) {
		struct ql_bufgroup *bg = r->groups;

		r->groups = bg->next;
		if (bg->br)
			io_uring_unregister_buf_ring(&r->uring, bg->bgid);
		bg->r = NULL;
		bg->next = NULL;
	}
	io_uring_queue_exit(&r->uring);
	r->uring.ring_fd = -1;
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	r->wake_fd = -1;
	r->live = 0;
	return ret;
}
