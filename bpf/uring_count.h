/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpf/uring_count.h - what the two halves of uring_count share.
 *
 * Included by the BPF side (bpf/uring_count.bpf.c, compiled against
 * vmlinux.h) and by the user side (bpf/uring_count.c, compiled against the
 * system headers), so it uses no type from either: plain enums and macros.
 *
 * The counters live in a per-CPU array indexed by enum uc_counter; user space
 * sums the per-CPU slots when it reads them. Nothing else crosses.
 */
#ifndef QILIN_BPF_URING_COUNT_H
#define QILIN_BPF_URING_COUNT_H

enum uc_counter {
	/* SQEs the kernel accepted: io_uring:io_uring_submit_req
	 * (io_uring_submit_sqe before Linux 6.0). */
	UC_SQES,
	/* SQEs the kernel consumed but rejected while preparing them
	 * (io_uring:io_uring_req_failed, Linux 5.17+). They count as
	 * submitted in io_uring_enter()'s return value and each still gets
	 * a CQE, so user space reports sqes = UC_SQES + UC_SQES_FAILED. */
	UC_SQES_FAILED,
	/* CQEs written into the CQ ring of one of the target's rings:
	 * io_uring:io_uring_complete. */
	UC_CQES,
	/* CQEs that did not fit in the CQ ring and went to the overflow
	 * list (or were dropped): io_uring:io_uring_cqe_overflow. On
	 * current kernels they are not in UC_CQES (see the .bpf.c). */
	UC_CQ_OVERFLOWS,
	/* io_uring_enter(2) calls by any thread of the target. */
	UC_ENTERS,
	/* Rings that could not be remembered because the ring map was full;
	 * their completions are missing from UC_CQES. Should stay 0. */
	UC_RINGS_LOST,
	UC_NR_COUNTERS,
};

/* How many distinct rings (struct io_ring_ctx) the ring map remembers. */
#define UC_MAX_RINGS 4096

/*
 * How a tp_btf program finds the ring in its first tracepoint arguments.
 * The raw tracepoint prototypes changed across kernel versions while the
 * classic (tracefs) records kept a "ctx" field; user space reads the
 * prototype from the kernel's BTF and sets the matching value in a
 * const volatile knob before load.
 */
enum uc_ring_arg {
	UC_RING_ARG_NONE = 0,	/* no ring among the arguments */
	UC_RING_ARG_CTX = 1,	/* the argument is the ring (void * or io_ring_ctx *) */
	UC_RING_ARG_REQ = 2,	/* the argument is a struct io_kiocb *; ring = req->ctx */
};

#endif /* QILIN_BPF_URING_COUNT_H */
