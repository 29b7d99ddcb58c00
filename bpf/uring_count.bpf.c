/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpf/uring_count.bpf.c - kernel side of uring_count: count one process's
 * io_uring SQEs, CQEs and io_uring_enter(2) calls.
 *
 * What is counted, and where:
 *
 *   sqes    io_uring:io_uring_submit_req, fired once per SQE the kernel takes
 *           off the SQ ring and starts (io_submit_sqe()). Before Linux 6.0
 *           the same event was called io_uring_submit_sqe; user space looks
 *           up which of the two names the running kernel has (in its BTF for
 *           tp_btf, in tracefs for the classic twin) and loads only that one.
 *           SQEs that fail while being prepared (bad opcode, bad flags) do
 *           not reach that event but io_uring:io_uring_req_failed (5.17+);
 *           they are counted apart and added in user space, because
 *           io_uring_enter() counts them as submitted and posts a CQE for
 *           each.
 *   cqes    io_uring:io_uring_complete, fired for each CQE written into a
 *           CQ ring, with the ring (ctx) as first argument.
 *   enters  syscalls:sys_enter_io_uring_enter.
 *
 * Whose events: the target is one process, its tgid set by user space in
 * target_tgid between open and load (0 means every process). Submissions and
 * enters happen in a thread of the process (the SQPOLL thread too: since
 * 5.12 it is an io thread inside the process), so they are filtered on the
 * current tgid. Completions are not: a CQE may be posted from an io-wq
 * worker, from task work, from another process's msg_ring, or on old kernels
 * from interrupt context. So the submit events record the ring pointer of
 * every ring the target submits on in the `rings` hash map, and a completion
 * counts when its ring is in that map. A ring shared with another process
 * counts that process's completions too; a ring that receives CQEs but never
 * sees a submission from the target (a pure msg_ring target) is not seen.
 *
 * Overflow: on current kernels io_uring_complete fires only when the CQE
 * found room in the CQ ring; a CQE that did not goes to the overflow list
 * (io_uring:io_uring_cqe_overflow, 5.19+) and is copied into the ring later
 * without any event. Those are counted apart (UC_CQ_OVERFLOWS) so user space
 * can say that `cqes` may be short (checked on 6.18: 8 + 32 overflowed for 40
 * CQEs). 5.x kernels fired io_uring_complete before the room check, so there
 * an overflowed CQE is in both counters; by 6.6 the event had moved after it.
 * The JSON keeps `cqes` = io_uring_complete events on every kernel.
 *
 * Program pairs: each event has a tp_btf program (raw tracepoint with typed
 * arguments, cheapest, no tracefs needed) and a classic `tracepoint/` twin
 * (works without BTF-typed raw tracepoints, needs tracefs). User space turns
 * exactly one of each pair on with bpf_program__set_autoload() before load.
 * The syscall event is the exception: syscalls:sys_enter_io_uring_enter has
 * no raw tracepoint of its own, so the classic program comes first there and
 * the fallback is tp_btf/sys_enter (every syscall of the system, filtered on
 * the syscall number), used when tracefs or CONFIG_FTRACE_SYSCALLS is absent.
 *
 * Classic tracepoint records are declared here with a ___x flavour and only
 * the fields read, so this file builds against a vmlinux.h from any kernel
 * (the one it was generated from may lack some of these events) and CO-RE
 * relocates the field offsets at load time. Field relied on: `ctx`, the first
 * field after struct trace_entry in every io_uring record.
 *
 * Counters are per-CPU; increments are atomic all the same because on old
 * kernels a completion could fire from an interrupt that landed in the middle
 * of another of these programs on the same CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "uring_count.h"

/* io_uring_enter's number: 426 on every architecture (it was among the first
 * system calls given one common number across architectures). */
#define NR_io_uring_enter 426

#define E2BIG 7

/* Knobs, set by user space between __open() and __load(). */
const volatile __u32 target_tgid = 0;
/* enum uc_ring_arg: what the first argument of tp_btf/io_uring_submit_sqe
 * is (5.19: struct io_kiocb *; before: void *ctx). */
const volatile __u32 submit_sqe_ring_arg = UC_RING_ARG_CTX;
/* enum uc_ring_arg: what the second argument of tp_btf/io_uring_req_failed
 * is (6.0+: struct io_kiocb *; 5.19: void *ctx; 5.17-5.18: int error). */
const volatile __u32 req_failed_ring_arg = UC_RING_ARG_NONE;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UC_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Rings (struct io_ring_ctx addresses) the target has submitted on. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UC_MAX_RINGS);
	__type(key, __u64);
	__type(value, __u8);
} rings SEC(".maps");

/* Classic tracepoint records, only the fields used (see the top comment). */
struct trace_event_raw_io_uring_submit_req___x {
	struct trace_entry ent;
	void *ctx;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_submit_sqe___x {
	struct trace_entry ent;
	void *ctx;
} __attribute__((preserve_access_index));

/* 5.17 and 5.18 records had no ctx; checked with bpf_core_field_exists. */
struct trace_event_raw_io_uring_req_failed___x {
	struct trace_entry ent;
	void *ctx;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_complete___x {
	struct trace_entry ent;
	void *ctx;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_cqe_overflow___x {
	struct trace_entry ent;
	void *ctx;
} __attribute__((preserve_access_index));

static __always_inline bool is_target(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	return !target_tgid || tgid == target_tgid;
}

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Remember a ring of the target's. Looked up first: an SQE on a known ring,
 * the common case, then costs one lookup and no update. */
static __always_inline void note_ring(__u64 ring)
{
	__u8 one = 1;

	if (!ring || bpf_map_lookup_elem(&rings, &ring))
		return;
	/* -EEXIST (another CPU got there first) is fine; -E2BIG is not. */
	if (bpf_map_update_elem(&rings, &ring, &one, BPF_NOEXIST) == -E2BIG)
		count(UC_RINGS_LOST);
}

static __always_inline bool is_target_ring(__u64 ring)
{
	return !target_tgid || bpf_map_lookup_elem(&rings, &ring);
}

/* Caller has checked is_target(). */
static __always_inline int on_submit(__u64 ring, __u32 which)
{
	note_ring(ring);
	count(which);
	return 0;
}

static __always_inline int on_cqe(__u64 ring, __u32 which)
{
	if (is_target_ring(ring))
		count(which);
	return 0;
}

/* ---- submissions ----------------------------------------------------- */

/* 6.0+: io_uring_submit_req(struct io_kiocb *req) */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(submit_req_btf, struct io_kiocb *req)
{
	if (!is_target())
		return 0;
	return on_submit((__u64)BPF_CORE_READ(req, ctx), UC_SQES);
}

SEC("tracepoint/io_uring/io_uring_submit_req")
int submit_req_tp(struct trace_event_raw_io_uring_submit_req___x *ctx)
{
	if (!is_target())
		return 0;
	return on_submit((__u64)ctx->ctx, UC_SQES);
}

/* Before 6.0: io_uring_submit_sqe(struct io_kiocb *req, bool force_nonblock)
 * in 5.19, io_uring_submit_sqe(void *ctx, ...) before that. */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(submit_sqe_btf, void *arg0)
{
	__u64 ring = (__u64)arg0;

	if (!is_target())
		return 0;
	if (submit_sqe_ring_arg == UC_RING_ARG_REQ)
		ring = (__u64)BPF_CORE_READ((struct io_kiocb *)arg0, ctx);
	return on_submit(ring, UC_SQES);
}

SEC("tracepoint/io_uring/io_uring_submit_sqe")
int submit_sqe_tp(struct trace_event_raw_io_uring_submit_sqe___x *ctx)
{
	if (!is_target())
		return 0;
	return on_submit((__u64)ctx->ctx, UC_SQES);
}

/* 6.0+: io_uring_req_failed(const struct io_uring_sqe *sqe,
 * struct io_kiocb *req, int error); see req_failed_ring_arg for older ones. */
SEC("tp_btf/io_uring_req_failed")
int BPF_PROG(req_failed_btf, const void *sqe, void *arg1)
{
	__u64 ring = 0;

	if (!is_target())
		return 0;
	if (req_failed_ring_arg == UC_RING_ARG_REQ)
		ring = (__u64)BPF_CORE_READ((struct io_kiocb *)arg1, ctx);
	else if (req_failed_ring_arg == UC_RING_ARG_CTX)
		ring = (__u64)arg1;
	return on_submit(ring, UC_SQES_FAILED);
}

SEC("tracepoint/io_uring/io_uring_req_failed")
int req_failed_tp(struct trace_event_raw_io_uring_req_failed___x *ctx)
{
	__u64 ring = 0;

	if (!is_target())
		return 0;
	if (bpf_core_field_exists(ctx->ctx))
		ring = (__u64)ctx->ctx;
	return on_submit(ring, UC_SQES_FAILED);
}

/* ---- completions ----------------------------------------------------- */

/* The ring is the first argument in every version: (void *ctx, void *req,
 * u64 user_data, ...) up to 6.2, (struct io_ring_ctx *ctx, void *req,
 * struct io_uring_cqe *cqe) since. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(complete_btf, void *ring)
{
	return on_cqe((__u64)ring, UC_CQES);
}

SEC("tracepoint/io_uring/io_uring_complete")
int complete_tp(struct trace_event_raw_io_uring_complete___x *ctx)
{
	return on_cqe((__u64)ctx->ctx, UC_CQES);
}

/* (void *ctx, u64 user_data, s32 res, u32 cflags, void *ocqe), 5.19+. */
SEC("tp_btf/io_uring_cqe_overflow")
int BPF_PROG(cqe_overflow_btf, void *ring)
{
	return on_cqe((__u64)ring, UC_CQ_OVERFLOWS);
}

SEC("tracepoint/io_uring/io_uring_cqe_overflow")
int cqe_overflow_tp(struct trace_event_raw_io_uring_cqe_overflow___x *ctx)
{
	return on_cqe((__u64)ctx->ctx, UC_CQ_OVERFLOWS);
}

/* ---- io_uring_enter(2) ----------------------------------------------- */

/* First choice: fires for io_uring_enter only. Needs tracefs and
 * CONFIG_FTRACE_SYSCALLS. No field is read. */
SEC("tracepoint/syscalls/sys_enter_io_uring_enter")
int enter_tp(void *ctx)
{
	if (is_target())
		count(UC_ENTERS);
	return 0;
}

/* Fallback: the raw sys_enter tracepoint, (struct pt_regs *regs, long id),
 * fires for every system call on the machine; the id test comes first. */
SEC("tp_btf/sys_enter")
int BPF_PROG(enter_btf, struct pt_regs *regs, long id)
{
	if (id == NR_io_uring_enter && is_target())
		count(UC_ENTERS);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
