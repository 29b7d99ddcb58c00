/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpf/qilin-observer.bpf.c - kernel side of qilin-observer: queue depth,
 * latency, retransmits and errors of one process (or one cgroup), aggregated
 * in maps. User space (bpf/qilin-observer.c) reads the maps once per
 * interval; no per-event record leaves the kernel.
 *
 * Whose events. The target is a thread group (target_tgid) or, with
 * target_tgid 0, the tasks under the cgroup in cgroup_map[0]. Events that
 * fire in a target thread (submissions, io_uring_enter, io-wq punts,
 * connect, listen) are filtered on the current task. Events that fire
 * elsewhere are attributed through an object the target owns:
 *   - completions through the ring: a submission records its ring
 *     (struct io_ring_ctx *) in `rings`, and a completion counts when its
 *     ring is there (CQEs are posted from io-wq workers, task work, another
 *     process's msg_ring); a CQE posted from a target thread on a ring not
 *     seen yet (set up before attach) adds the ring;
 *   - TCP retransmits (softirq, any current task) through the socket:
 *     `socks` holds the target's struct sock pointers, filled at attach by
 *     the task_file iterator of qilin-observer-scan.bpf.c, then from the
 *     target's own connect and listen, and from new connections on the
 *     target's listeners (see on_set_state), and emptied only when a socket
 *     reaches TCP_CLOSE. A socket the target closed still retransmits its
 *     FIN in FIN_WAIT1 and still counts. What is counted is the socket's own
 *     count of retransmitted segments (tcp_sock.total_retrans, which the
 *     kernel adds to TcpRetransSegs in the same statement): each event adds
 *     what it grew by since it was last read, so an event that never reached
 *     this program (it happens: see count_socket) is made up at the socket's
 *     next event or state change, at the latest at TCP_CLOSE.
 *
 * Queue depth. inflight of a ring is a counter: +1 per request submitted
 * (io_uring_submit_req / io_uring_req_failed), -1 per final CQE (no
 * IORING_CQE_F_MORE), and when the ring is first seen it starts from what
 * the ring itself says was in flight then: SQEs consumed (cached_sq_head,
 * less the one being submitted) minus CQEs posted (cached_cq_tail). That
 * start is exact when every request gives one CQE; multishot requests
 * running at attach make it low. Requests sent with IOSQE_CQE_SKIP_SUCCESS
 * may finish without a CQE, so they are not counted at all. A CQE that
 * overflows the CQ ring gets no io_uring_complete event (6.x): the overflow
 * event finishes the request instead. CQ backlog is read from the ring
 * itself, ctx->cached_cq_tail (the kernel's next CQE) minus rings->cq.head
 * (what user space consumed), at a final completion, at most every 50 us
 * per ring.
 *
 * Latency: struct obs_slot (a direct-mapped array, no hash-map insert or
 * delete on the hot path) holds each request's submit time until its final
 * CQE; the difference goes into a per-CPU log2 histogram of its opcode.
 *
 * Kernel differences are resolved without version numbers: tp_btf argument
 * layouts are read from the kernel BTF by user space and passed in const
 * volatile knobs (dead branches are pruned by the verifier); classic
 * tracepoint records are declared here as ___x flavours holding only the
 * fields read, and bpf_core_field_exists() picks between layouts.
 *
 * Every event has a tp_btf program and a classic tracepoint twin; user space
 * loads exactly one of each pair (bpf_program__set_autoload).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>
#include "qilin-observer.h"

#define NR_io_uring_enter 426
#define IORING_CQE_F_MORE (1U << 1)
#define OBS_TCP_SYN_SENT 2
#define OBS_TCP_SYN_RECV 3
#define OBS_TCP_CLOSE 7
#define OBS_TCP_LISTEN 10
#define OBS_IPPROTO_TCP 6
#define OBS_AF_INET 2
#define OBS_AF_INET6 10
#define OBS_E2BIG 7
#define OBS_EEXIST 17

/* ---- knobs, set by user space between __open() and __load() ----------- */

const volatile __u32 target_tgid = 0;			 /* 0: use cgroup_map */
const volatile __u64 target_cgid = 0;			 /* cgroup mode: its id (kernfs ino) */
const volatile __u32 submit_sqe_ring_arg = OBS_ARG_CTX;	 /* io_uring_submit_sqe arg 0 */
const volatile __u32 req_failed_ring_arg = OBS_ARG_NONE; /* io_uring_req_failed arg 1 */
const volatile __u32 complete_layout = OBS_COMPLETE_CQE;
const volatile __u32 punt_req_arg = 0; /* index of the io_kiocb * in queue_async_work */

/* Bumped by user space after it read an interval; restarts the _max gauges. */
volatile __u64 epoch = 0;

/* ---- maps ---------------------------------------------------------------- */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OBS_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_RINGS);
	__type(key, __u64);
	__type(value, struct obs_ring);
} rings SEC(".maps");

/* Thread -> the ring it last submitted on: ties a qilin worker (USDT, by
 * thread) to its ring. Updated only when a ring's submitter changes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, OBS_MAX_RINGS);
	__type(key, __u32);
	__type(value, __u64);
} tid_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << OBS_SLOT_BITS);
	__type(key, __u32);
	__type(value, struct obs_slot);
} slots SEC(".maps");

/* Submit-to-complete latency per opcode. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OBS_NR_OPS);
	__type(key, __u32);
	__type(value, struct obs_hist);
} op_lat SEC(".maps");

/* io-wq punts per opcode. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OBS_NR_OPS);
	__type(key, __u32);
	__type(value, __u64);
} punts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, OBS_MAX_ERRS);
	__type(key, struct obs_err_key);
	__type(value, __u64);
} errs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_WORKERS);
	__type(key, __s32);
	__type(value, struct obs_worker);
} workers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_WORKERS);
	__type(key, __s32);
	__type(value, struct obs_hist);
} sched_delay SEC(".maps");

/* The target's TCP sockets and listeners (shared with the attach-time scan). */
#include "qilin-observer-socks.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_ENDPOINTS);
	__type(key, struct obs_ep_key);
	__type(value, struct obs_ep);
} endpoints SEC(".maps");

/* Zeroed templates for inserts (too big for the 512-byte stack otherwise). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_hist);
} zero_hist SEC(".maps");

/* ---- classic tracepoint records: only the fields read ------------------ */

struct trace_event_raw_io_uring_submit_req___x {
	struct trace_entry ent;
	void *ctx;
	void *req;
	__u8 opcode;
	unsigned long long flags; /* req->flags */
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_submit_sqe___x {
	struct trace_entry ent;
	void *ctx;
	void *req;
	__u8 opcode;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_req_failed___x {
	struct trace_entry ent;
	void *ctx;
	void *req;
	__u8 opcode;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_complete___x {
	struct trace_entry ent;
	void *ctx;
	void *req;
	int res;
	unsigned int cflags;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_cqe_overflow___x {
	struct trace_entry ent;
	void *ctx;
	unsigned int cflags;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_queue_async_work___x {
	struct trace_entry ent;
	void *req;
	__u8 opcode;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_retransmit_skb___x {
	struct trace_entry ent;
	const void *skaddr;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_retransmit_synack___x {
	struct trace_entry ent;
	const void *skaddr;
	const void *req;
} __attribute__((preserve_access_index));

struct trace_event_raw_inet_sock_set_state___x {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 protocol;
} __attribute__((preserve_access_index));

/* io_ring_ctx before cached_cq_tail existed had only rings->cq.tail. */
struct io_ring_ctx___old {
	struct io_rings *rings;
} __attribute__((preserve_access_index));

/* IOSQE_CQE_SKIP_SUCCESS (5.17+): the low REQ_F_ bits of io_kiocb.flags are
 * the IOSQE_ bits, by design, on every kernel. */
#define OBS_IOSQE_CQE_SKIP_SUCCESS (1U << 6)

/* ---- helpers ------------------------------------------------------------- */

static __always_inline bool is_target(void)
{
	if (target_tgid)
		return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
	return bpf_current_task_under_cgroup(&cgroup_map, 0) == 1;
}

static __always_inline void count_n(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);

	if (v)
		__sync_fetch_and_add(v, n);
}

/* floor(log2(v)) for v > 0, branch-free in five steps. */
static __always_inline __u32 ilog2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

/* Slot i holds 2^(i-1) < v <= 2^i (slot 0: v <= 1): the bucket's upper
 * bound is 2^i, what the JSON calls le_ns. */
static __always_inline __u32 hist_slot(__u64 v)
{
	__u32 s;

	if (v <= 1)
		return 0;
	s = ilog2_u64(v - 1) + 1;
	return s < OBS_HIST_SLOTS ? s : OBS_HIST_SLOTS - 1;
}

/* Add v to a histogram others may update at the same time (atomic adds). */
static __always_inline void hist_add_atomic(struct obs_hist *h, __u64 v)
{
	__u32 s = hist_slot(v);

	if (s < OBS_HIST_SLOTS)
		__sync_fetch_and_add(&h->slots[s], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum_ns, v);
}

/* Raise a _max gauge, restarting it when a new epoch has begun. Racy
 * between CPUs (last writer wins), which can only lose a maximum that
 * another CPU raised in the same instant. */
static __always_inline void raise_max(__s64 *max, __u64 *max_epoch, __s64 cur)
{
	__u64 e = epoch;

	if (*max_epoch != e) {
		*max_epoch = e;
		*max = cur;
	} else if (cur > *max) {
		*max = cur;
	}
}

/* CQEs posted and not yet consumed, read from the ring. */
static __always_inline __u32 cq_backlog(void *ctx_ptr)
{
	struct io_ring_ctx *ctx = ctx_ptr;
	__u32 tail, head;

	if (bpf_core_field_exists(ctx->cached_cq_tail))
		tail = BPF_CORE_READ(ctx, cached_cq_tail);
	else
		tail = BPF_CORE_READ((struct io_ring_ctx___old *)ctx, rings, cq.tail);
	head = BPF_CORE_READ(ctx, rings, cq.head);
	return tail - head;
}

/* Requests in flight on a ring seen for the first time, from the ring's own
 * counters (see the top comment). submitting: the event is the submission
 * of one more (already in cached_sq_head, counted apart); else it is a CQE
 * (already in cached_cq_tail, and its request was in flight before it). */
static __always_inline __s64 inflight_at_attach(void *ctx_ptr, bool submitting)
{
	struct io_ring_ctx *ctx = ctx_ptr;
	__s32 d;

	if (!bpf_core_field_exists(ctx->cached_sq_head) ||
	    !bpf_core_field_exists(ctx->cached_cq_tail))
		return 0;
	d = (__s32)(BPF_CORE_READ(ctx, cached_sq_head) - BPF_CORE_READ(ctx, cached_cq_tail)) +
	    (submitting ? -1 : 1);
	return d > 0 ? d : 0;
}

/* The ring's record, created on first sight. A ring is first seen at a
 * submission by the target, or at a CQE posted from one of the target's
 * threads (task work, io-wq): a ring set up before attach that only
 * completes what it submitted before attach is the target's too. */
static __always_inline struct obs_ring *ring_get(__u64 ring, bool submitting)
{
	struct obs_ring *ri, zero = {};
	long err;

	ri = bpf_map_lookup_elem(&rings, &ring);
	if (ri || !ring)
		return ri;
	zero.max_epoch = epoch;
	zero.tid = submitting ? (__u32)bpf_get_current_pid_tgid() : 0;
	zero.inflight = inflight_at_attach((void *)ring, submitting);
	zero.inflight_max = zero.inflight;
	bpf_get_current_comm(zero.comm, sizeof(zero.comm));
	err = bpf_map_update_elem(&rings, &ring, &zero, BPF_NOEXIST);
	if (err == -OBS_E2BIG)
		count_n(OBS_RINGS_LOST, 1);
	else if (!err && submitting)
		bpf_map_update_elem(&tid_ring, &zero.tid, &ring, BPF_ANY);
	return bpf_map_lookup_elem(&rings, &ring);
}

static __always_inline __u32 slot_of(__u64 req)
{
	return (__u32)((req * 0x9E3779B97F4A7C15ULL) >> (64 - OBS_SLOT_BITS));
}

/*
 * A request was consumed from the SQ by a target thread (caller checked
 * is_target()). failed: rejected at preparation (it still gets a CQE).
 * skip: sent with IOSQE_CQE_SKIP_SUCCESS, may finish without a CQE.
 */
static __always_inline int on_submit(__u64 req, __u64 ring, __u32 opcode, bool failed, bool skip)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct obs_ring *ri;
	struct obs_slot *sl;
	__u32 k;

	/* The total of accepted SQEs is the sum of the rings' sqes (user
	 * space adds them up): one atomic less per request. */
	if (failed)
		count_n(OBS_SQES_FAILED, 1);
	ri = ring_get(ring, true);
	if (!ri) {
		count_n(OBS_SQES_UNKNOWN_RING, 1);
		return 0;
	}
	__sync_fetch_and_add(&ri->sqes, 1);
	if (ri->tid != tid) {
		ri->tid = tid;
		bpf_get_current_comm(ri->comm, sizeof(ri->comm));
		bpf_map_update_elem(&tid_ring, &tid, &ring, BPF_ANY);
	}
	if (skip)
		return 0;
	raise_max(&ri->inflight_max, &ri->max_epoch, __sync_fetch_and_add(&ri->inflight, 1) + 1);
	if (!req)
		return 0; /* before 5.10 no event carries the request */
	k = slot_of(req);
	sl = bpf_map_lookup_elem(&slots, &k);
	if (sl) {
		if (sl->req)
			count_n(OBS_LAT_LOST, 1);
		sl->ts = bpf_ktime_get_ns();
		sl->ring = ring;
		sl->opcode = opcode & 0xff;
		sl->req = req;
	}
	return 0;
}

static __always_inline __u32 req_opcode(__u64 req)
{
	return req ? BPF_CORE_READ((struct io_kiocb *)req, opcode) : 0;
}

/* A CQE was posted on some ring. */
static __always_inline int on_complete(__u64 ring, __u64 req, __s32 res, __u32 cflags)
{
	struct obs_ring *ri = bpf_map_lookup_elem(&rings, &ring);
	__u32 op = OBS_NR_OPS, k; /* OBS_NR_OPS: not known yet */
	bool final = !(cflags & IORING_CQE_F_MORE);
	struct obs_slot *sl;
	struct obs_hist *h;
	__u64 now = 0, *v;

	if (!ri) {
		if (!is_target())
			return 0;
		ri = ring_get(ring, false);
		if (!ri)
			return 0;
	}
	__sync_fetch_and_add(&ri->cqes, 1);
	k = slot_of(req);
	sl = req ? bpf_map_lookup_elem(&slots, &k) : NULL;
	/* Matching the ring too tells a msg_ring CQE (the sender's request,
	 * another ring) from this ring's own. */
	if (sl && sl->req == req && sl->ring == ring) {
		op = sl->opcode;
		if (final) {
			now = bpf_ktime_get_ns();
			k = op;
			h = bpf_map_lookup_elem(&op_lat, &k);
			if (h && now >= sl->ts) {
				__u64 d = now - sl->ts;

				h->slots[hist_slot(d)]++;
				h->count++;
				h->sum_ns += d;
			}
			sl->req = 0;
		}
	}
	if (final) {
		raise_max(&ri->inflight_max, &ri->max_epoch,
			  __sync_fetch_and_add(&ri->inflight, -1) - 1);
		if (!now)
			now = bpf_ktime_get_ns();
		if (now - ri->backlog_ns > 50000) {
			ri->backlog_ns = now;
			ri->cq_backlog = cq_backlog((void *)ring);
		}
	}
	if (res < 0) {
		struct obs_err_key ek = {};

		if (op == OBS_NR_OPS)
			op = req_opcode(req);
		ek.opcode = op;
		ek.err = (__u32)-res;
		v = bpf_map_lookup_elem(&errs, &ek);
		if (v) {
			__sync_fetch_and_add(v, 1);
		} else {
			__u64 one = 1;

			bpf_map_update_elem(&errs, &ek, &one, BPF_NOEXIST);
		}
	}
	return 0;
}

static __always_inline int on_overflow(__u64 ring, __u32 cflags)
{
	struct obs_ring *ri = bpf_map_lookup_elem(&rings, &ring);

	if (!ri)
		return 0;
	count_n(OBS_CQ_OVERFLOWS, 1);
	/* The request behind it is finished but gets no io_uring_complete. */
	if (!(cflags & IORING_CQE_F_MORE))
		__sync_fetch_and_add(&ri->inflight, -1);
	return 0;
}

static __always_inline int on_punt(__u64 req)
{
	__u32 op;
	__u64 *v;

	if (!is_target())
		return 0;
	op = req_opcode(req);
	v = bpf_map_lookup_elem(&punts, &op);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

/* ---- submissions ----------------------------------------------------------- */

/* tp_btf argument i as a plain number. A typed pointer argument allows loads
 * of its fields but no arithmetic (the slot hash needs some): a probe read of
 * the context gives its value as a scalar. */
static __always_inline __u64 arg_num(__u64 *ctx, int i)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &ctx[i]);
	return v;
}

/* 6.0+: io_uring_submit_req(struct io_kiocb *req) */
SEC("tp_btf/io_uring_submit_req")
int submit_req_btf(__u64 *ctx)
{
	struct io_kiocb *req = (void *)ctx[0];

	if (!is_target())
		return 0;
	/* Plain loads of the typed argument's fields: CO-RE, no helper. */
	return on_submit(arg_num(ctx, 0), (__u64)req->ctx, req->opcode, false,
			 req->flags & OBS_IOSQE_CQE_SKIP_SUCCESS);
}

SEC("tracepoint/io_uring/io_uring_submit_req")
int submit_req_tp(struct trace_event_raw_io_uring_submit_req___x *ctx)
{
	if (!is_target())
		return 0;
	return on_submit((__u64)ctx->req, (__u64)ctx->ctx, ctx->opcode, false,
			 ctx->flags & OBS_IOSQE_CQE_SKIP_SUCCESS);
}

/* Before 6.0: io_uring_submit_sqe(struct io_kiocb *req, ...) in 5.19,
 * io_uring_submit_sqe(void *ctx, void *req, u8 opcode, ...) before. */
SEC("tp_btf/io_uring_submit_sqe")
int submit_sqe_btf(__u64 *ctx)
{
	__u64 a0 = arg_num(ctx, 0);

	if (!is_target())
		return 0;
	if (submit_sqe_ring_arg == OBS_ARG_REQ)
		return on_submit(
			a0, (__u64)BPF_CORE_READ((struct io_kiocb *)a0, ctx), req_opcode(a0), false,
			BPF_CORE_READ((struct io_kiocb *)a0, flags) & OBS_IOSQE_CQE_SKIP_SUCCESS);
	return on_submit(0, a0, 0, false, false);
}

SEC("tracepoint/io_uring/io_uring_submit_sqe")
int submit_sqe_tp(struct trace_event_raw_io_uring_submit_sqe___x *ctx)
{
	__u64 req = 0;
	__u32 op = 0;

	if (!is_target())
		return 0;
	if (bpf_core_field_exists(ctx->req))
		req = (__u64)ctx->req;
	if (bpf_core_field_exists(ctx->opcode))
		op = ctx->opcode;
	return on_submit(req, (__u64)ctx->ctx, op, false, false);
}

/* 6.0+: io_uring_req_failed(const struct io_uring_sqe *sqe,
 * struct io_kiocb *req, int error); 5.19: (sqe, void *ctx, ...). */
SEC("tp_btf/io_uring_req_failed")
int req_failed_btf(__u64 *ctx)
{
	__u64 a1;

	if (!is_target())
		return 0;
	if (req_failed_ring_arg == OBS_ARG_REQ) {
		a1 = arg_num(ctx, 1);
		return on_submit(a1, (__u64)BPF_CORE_READ((struct io_kiocb *)a1, ctx),
				 req_opcode(a1), true, false);
	}
	if (req_failed_ring_arg == OBS_ARG_CTX)
		return on_submit(0, arg_num(ctx, 1), 0, true, false);
	count_n(OBS_SQES_FAILED, 1);
	count_n(OBS_SQES_UNKNOWN_RING, 1);
	return 0;
}

SEC("tracepoint/io_uring/io_uring_req_failed")
int req_failed_tp(struct trace_event_raw_io_uring_req_failed___x *ctx)
{
	__u64 req = 0, ring = 0;
	__u32 op = 0;

	if (!is_target())
		return 0;
	if (bpf_core_field_exists(ctx->ctx))
		ring = (__u64)ctx->ctx;
	if (bpf_core_field_exists(ctx->req))
		req = (__u64)ctx->req;
	if (bpf_core_field_exists(ctx->opcode))
		op = ctx->opcode;
	if (!ring) {
		count_n(OBS_SQES_FAILED, 1);
		count_n(OBS_SQES_UNKNOWN_RING, 1);
		return 0;
	}
	return on_submit(req, ring, op, true, false);
}

/* ---- completions ----------------------------------------------------------- */

/* (struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe) since 6.3;
 * (void *ctx, void *req, u64 user_data, int res, unsigned cflags, ...) before. */
SEC("tp_btf/io_uring_complete")
int complete_btf(__u64 *ctx)
{
	__u64 ring = ctx[0], req = ctx[1];
	__s32 res;
	__u32 cflags;

	if (complete_layout == OBS_COMPLETE_CQE) {
		struct io_uring_cqe *cqe = (void *)ctx[2];

		/* Typed argument: plain loads, no helper call. */
		res = cqe->res;
		cflags = cqe->flags;
	} else {
		res = (__s32)ctx[3];
		cflags = (__u32)ctx[4];
	}
	return on_complete(ring, req, res, cflags);
}

SEC("tracepoint/io_uring/io_uring_complete")
int complete_tp(struct trace_event_raw_io_uring_complete___x *ctx)
{
	__u64 req = 0;

	if (bpf_core_field_exists(ctx->req))
		req = (__u64)ctx->req;
	return on_complete((__u64)ctx->ctx, req, ctx->res, ctx->cflags);
}

/* (void *ctx, u64 user_data, s32 res, u32 cflags, void *ocqe), 5.19+. */
SEC("tp_btf/io_uring_cqe_overflow")
int cqe_overflow_btf(__u64 *ctx)
{
	return on_overflow(ctx[0], (__u32)ctx[3]);
}

SEC("tracepoint/io_uring/io_uring_cqe_overflow")
int cqe_overflow_tp(struct trace_event_raw_io_uring_cqe_overflow___x *ctx)
{
	return on_overflow((__u64)ctx->ctx, ctx->cflags);
}

/* ---- io-wq punts ----------------------------------------------------------- */

/* (struct io_kiocb *req, int rw) since 5.19; (void *ctx, int rw, void *req,
 * ...) before: punt_req_arg says which. */
SEC("tp_btf/io_uring_queue_async_work")
int queue_async_work_btf(__u64 *ctx)
{
	return on_punt(punt_req_arg == 2 ? ctx[2] : ctx[0]);
}

SEC("tracepoint/io_uring/io_uring_queue_async_work")
int queue_async_work_tp(struct trace_event_raw_io_uring_queue_async_work___x *ctx)
{
	__u32 op;
	__u64 *v;

	if (!is_target())
		return 0;
	op = bpf_core_field_exists(ctx->opcode) ? ctx->opcode : req_opcode((__u64)ctx->req);
	v = bpf_map_lookup_elem(&punts, &op);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

/* ---- io_uring_enter(2) ----------------------------------------------------- */

SEC("tracepoint/syscalls/sys_enter_io_uring_enter")
int enter_tp(void *ctx)
{
	if (is_target())
		count_n(OBS_ENTERS, 1);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf, struct pt_regs *regs, long id)
{
	if (id == NR_io_uring_enter && is_target())
		count_n(OBS_ENTERS, 1);
	return 0;
}

/* ---- retransmits ------------------------------------------------------------- */

/* tcp_sock.total_retrans of a TCP socket (a listener's is 0). */
static __always_inline __u32 sock_retrans(const struct sock *sk)
{
	return BPF_CORE_READ((const struct tcp_sock *)sk, total_retrans);
}

/* Count segs retransmitted segments on the connection sk describes, in the
 * socket state `state` they were sent in. */
static __always_inline void count_retransmit(const struct sock *sk, __u32 segs, __u8 state)
{
	struct obs_ep_key k = {};
	struct obs_ep *ep, zero = {};

	count_n(OBS_RETRANS, segs);
	k.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	k.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	k.rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (k.family == OBS_AF_INET6) {
		BPF_CORE_READ_INTO(&k.laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&k.raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)k.laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)k.raddr, sk, __sk_common.skc_daddr);
	}
	k.state = state;
	ep = bpf_map_lookup_elem(&endpoints, &k);
	if (!ep) {
		bpf_map_update_elem(&endpoints, &k, &zero, BPF_NOEXIST);
		ep = bpf_map_lookup_elem(&endpoints, &k);
		if (!ep) {
			count_n(OBS_ENDPOINTS_LOST, segs);
			return;
		}
	}
	__sync_fetch_and_add(&ep->count, segs);
}

/*
 * Count what the target's socket sk (its entry e in `socks`) retransmitted
 * since it was last looked at, in state `state`: the growth of its own
 * total_retrans. Called at each tcp_retransmit_skb event (late is 0; what
 * is found may include an earlier retransmit whose event was lost) and at
 * each state change (late is 1: anything found there is a retransmit whose
 * event did not reach this program; its state is the one being left, since
 * every change of state is a look).
 *
 * Why not just count the events: an event can fail to reach this program.
 * Seen on 6.18 about once in 10000 events, with other observers and
 * tracefs instances coming and going: a tracefs instance recorded a
 * tcp_retransmit_skb (err=0, counted in TcpRetransSegs) that the program
 * was never run for (a debug log written first thing in it had every
 * other event of the socket; in one case two observers missed the same
 * event), with the program's recursion_misses still 0, in a softirq that
 * ran on top of an unrelated task. Counting the socket's own count makes
 * such a loss cost only a delay. Also, since 6.12 the event fires for failed
 * attempts too, and whether the kernel counted one depends on where it
 * failed; total_retrans moves exactly when TcpRetransSegs does, so no list
 * of errors is needed.
 *
 * Events and state changes of one socket run under its lock, so the
 * read-compare-store of e->retrans does not race with itself.
 */
static __always_inline void count_socket(const struct sock *sk, struct obs_sock *e, __u8 state,
					 int late)
{
	__u32 now = sock_retrans(sk);
	__s32 segs;

	/* First look at a socket born of a listener: its count now holds the
	 * SYN-ACK retransmits of its request, counted on the listener, except
	 * for a TCP Fast Open child (a full socket from the SYN on, which
	 * starts from 0 like a connect and is counted like one), recognised
	 * by its fastopen_rsk while it is in SYN_RECV. A Fast Open child first
	 * looked at on its way to ESTABLISHED (fastopen_rsk already cleared)
	 * with a retransmit whose event was lost has that retransmit missed. */
	if (e->flags & OBS_SOCK_FRESH) {
		e->flags = 0;
		if (!BPF_CORE_READ((const struct tcp_sock *)sk, fastopen_rsk))
			e->retrans = now;
	}
	segs = (__s32)(now - e->retrans);
	e->retrans = now;
	if (segs <= 0) /* a failed attempt, or a counter reset (tcp_disconnect) */
		return;
	if (late)
		count_n(OBS_RETRANS_LATE, segs);
	count_retransmit(sk, segs, state);
}

/* ---- the target's sockets ---------------------------------------------------- */

/* Follow sk from now on: what it retransmitted before is not counted (an
 * accepted socket's SYN-ACK retransmits were, on its listener: flags
 * OBS_SOCK_FRESH, see count_socket). */
static __always_inline void sock_note(const struct sock *sk, __u32 flags)
{
	struct obs_sock v = {};
	__u64 key = (__u64)sk;
	long err;

	if (!sk || bpf_map_lookup_elem(&socks, &key))
		return;
	v.tgid = bpf_get_current_pid_tgid() >> 32;
	v.retrans = sock_retrans(sk);
	v.flags = flags;
	err = bpf_map_update_elem(&socks, &key, &v, BPF_NOEXIST);
	if (!err)
		count_n(OBS_SOCKS_SEEN, 1);
	else if (err == -OBS_E2BIG)
		count_n(OBS_SOCKS_LOST, 1);
}

/*
 * Whose socket a state change is about:
 *   - connect (-> SYN_SENT) and listen (-> LISTEN) are made by the owner
 *     itself, in process context: the current task says whose it is;
 *   - a passively opened connection's socket is born in softirq (-> SYN_RECV,
 *     cloned from the listener) where the current task is whoever's packet
 *     the CPU happened to be processing (on loopback typically some sender's,
 *     seen taking in a neighbour's connections): it is the target's when its
 *     namespace and local port are those of one of the target's listeners;
 *   - TCP_CLOSE, from any context, ends the tracking (every TCP socket passes
 *     through it before it is freed), and a listener's.
 * No per-message hook is needed, so an established connection costs nothing
 * until it retransmits.
 */
static __always_inline void listen_key(const struct sock *sk, struct obs_listen_key *k)
{
	k->net = (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net);
	k->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
}

static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate)
{
	struct obs_listen_key lk = {};
	__u64 key = (__u64)sk;
	struct obs_sock *e;
	__u32 tgid;

	/* A socket followed: count what it retransmitted since the last
	 * look (normally nothing) before it leaves the state it was sent in,
	 * and before it leaves the map at TCP_CLOSE. */
	e = bpf_map_lookup_elem(&socks, &key);
	if (e)
		count_socket(sk, e, (__u8)oldstate, 1);
	switch (newstate) {
	case OBS_TCP_CLOSE:
		bpf_map_delete_elem(&socks, &key);
		if (oldstate == OBS_TCP_LISTEN) {
			listen_key(sk, &lk);
			bpf_map_delete_elem(&listeners, &lk);
		}
		break;
	case OBS_TCP_SYN_SENT:
		if (is_target())
			sock_note(sk, 0);
		break;
	case OBS_TCP_LISTEN:
		if (!is_target())
			break;
		sock_note(sk, 0);
		listen_key(sk, &lk);
		tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_map_update_elem(&listeners, &lk, &tgid, BPF_ANY);
		break;
	case OBS_TCP_SYN_RECV:
		listen_key(sk, &lk);
		if (bpf_map_lookup_elem(&listeners, &lk))
			sock_note(sk, OBS_SOCK_FRESH);
		break;
	}
	return 0;
}

/* inet_sock_set_state(const struct sock *sk, int oldstate, int newstate) */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(set_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != OBS_IPPROTO_TCP)
		return 0;
	return on_set_state(sk, oldstate, newstate);
}

SEC("tracepoint/sock/inet_sock_set_state")
int set_state_tp(struct trace_event_raw_inet_sock_set_state___x *ctx)
{
	if (ctx->protocol != OBS_IPPROTO_TCP)
		return 0;
	return on_set_state(ctx->skaddr, ctx->oldstate, ctx->newstate);
}

/* A retransmit attempt on sk, successful or not (6.12+ fire the event for
 * failed ones too, with their error): count_socket counts what the kernel
 * counted. */
static __always_inline int on_retransmit(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct obs_sock *e = bpf_map_lookup_elem(&socks, &key);

	if (e)
		count_socket(sk, e, BPF_CORE_READ(sk, __sk_common.skc_state), 0);
	return 0;
}

/* tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb[, int err]) */
SEC("tp_btf/tcp_retransmit_skb")
int retransmit_btf(__u64 *ctx)
{
	return on_retransmit((const struct sock *)ctx[0]);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int retransmit_tp(struct trace_event_raw_tcp_retransmit_skb___x *ctx)
{
	return on_retransmit(ctx->skaddr);
}

/* tcp_retransmit_synack(const struct sock *sk, const struct request_sock *req),
 * fired only for a SYN-ACK sent (and counted in TcpRetransSegs):
 *   - sk a listener (the target's): a connection not yet accepted. One
 *     segment, counted against the endpoint read from the request sock, whose
 *     sock_common has the same layout as a full socket's (its state is
 *     TCP_NEW_SYN_RECV). The socket born of it starts from total_retrans =
 *     these retransmits, which sock_note takes as already counted;
 *   - sk a TCP Fast Open child (SYN_RECV, already a full socket, followed
 *     since its birth): the kernel added the SYN-ACK to its total_retrans,
 *     so it is counted like any other retransmit of a socket. */
static __always_inline int on_synack(const struct sock *sk, const void *req)
{
	const struct sock *rsk = req;
	__u64 key = (__u64)sk;
	struct obs_sock *e = bpf_map_lookup_elem(&socks, &key);

	if (!e)
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == OBS_TCP_LISTEN)
		count_retransmit(rsk, 1, BPF_CORE_READ(rsk, __sk_common.skc_state));
	else
		count_socket(sk, e, BPF_CORE_READ(sk, __sk_common.skc_state), 0);
	return 0;
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(retransmit_synack_btf, const struct sock *sk, const struct request_sock *req)
{
	return on_synack(sk, req);
}

SEC("tracepoint/tcp/tcp_retransmit_synack")
int retransmit_synack_tp(struct trace_event_raw_tcp_retransmit_synack___x *ctx)
{
	return on_synack(ctx->skaddr, ctx->req);
}

/* ---- the library's USDT probes (attached to the target's pid only) ----------- */

static __always_inline struct obs_worker *worker_get(__s32 w)
{
	struct obs_worker *wk = bpf_map_lookup_elem(&workers, &w), zero = {};

	if (wk)
		return wk;
	zero.max_epoch = epoch;
	bpf_map_update_elem(&workers, &w, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&workers, &w);
}

/* qilin:tick(int worker, u64 runq_depth, u32 pending_sqes, u32 inflight) */
SEC("usdt")
int BPF_USDT(usdt_tick, int worker, __u64 runq, __u32 pending, __u32 inflight)
{
	struct obs_worker *wk = worker_get(worker);
	struct obs_ring *ri;
	__u64 *rp;

	if (!wk)
		return 0;
	wk->runq_depth = runq;
	wk->pending_sqes = pending;
	wk->inflight = inflight;
	wk->tid = (__u32)bpf_get_current_pid_tgid();
	wk->parked = 0;
	wk->ticks++;
	/* The library's count at this tick, and its ring's at the same moment:
	 * user space adds what the ring did since (a parked worker ticks no
	 * more, and ticks are rate-limited). */
	rp = bpf_map_lookup_elem(&tid_ring, &wk->tid);
	ri = rp ? bpf_map_lookup_elem(&rings, rp) : NULL;
	wk->ring = ri ? *rp : 0;
	wk->ring_inflight = ri ? ri->inflight : 0;
	wk->last_ns = bpf_ktime_get_ns();
	raise_max((__s64 *)&wk->runq_depth_max, &wk->max_epoch, (__s64)runq);
	return 0;
}

/* qilin:task_run(void *task, int worker, u64 delay_ns): sampled in the
 * library (one task in 64). */
SEC("usdt")
int BPF_USDT(usdt_task_run, void *task, int worker, __u64 delay)
{
	__s32 w = worker;
	struct obs_hist *h = bpf_map_lookup_elem(&sched_delay, &w);
	__u32 zk = 0;

	if (!h) {
		struct obs_hist *z = bpf_map_lookup_elem(&zero_hist, &zk);

		if (!z)
			return 0;
		bpf_map_update_elem(&sched_delay, &w, z, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&sched_delay, &w);
		if (!h)
			return 0;
	}
	hist_add_atomic(h, delay);
	return 0;
}

/* qilin:worker_park(int worker) */
SEC("usdt")
int BPF_USDT(usdt_park, int worker)
{
	struct obs_worker *wk = worker_get(worker);

	if (!wk)
		return 0;
	/* A worker parks for lack of work: its run queue is empty, and the
	 * io_uring_enter it is about to make submits what it prepared. The
	 * last tick (rate-limited in the library) may predate both. */
	__sync_fetch_and_add(&wk->parks, 1);
	wk->runq_depth = 0;
	wk->pending_sqes = 0;
	wk->tid = (__u32)bpf_get_current_pid_tgid();
	wk->parked = 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
