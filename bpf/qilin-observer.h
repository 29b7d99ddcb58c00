/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpf/qilin-observer.h - what the two halves of qilin-observer share.
 *
 * Included by the BPF side (bpf/qilin-observer.bpf.c, compiled against
 * vmlinux.h) and by the user side (bpf/qilin-observer.c and bpf/obs_*.c,
 * compiled against the system headers), so it uses only the fixed-width
 * __u8..__u64 / __s32 types both sides have (linux/types.h on the user side).
 *
 * Every structure here is a map key or value. The kernel side aggregates
 * (per-CPU counters, log2 histograms, per-ring and per-worker records);
 * user space only reads the maps, once per interval or per scrape. No
 * per-event record crosses to user space.
 */
#ifndef QILIN_BPF_OBSERVER_H
#define QILIN_BPF_OBSERVER_H

/* Per-CPU counters, indexed by enum obs_counter. */
enum obs_counter {
	/* Accepted SQEs and CQEs are counted per ring (struct obs_ring), not
	 * here: the totals are the sums over the rings. */
	OBS_SQES_UNKNOWN_RING, /* SQEs on a ring not remembered (map full) */
	OBS_SQES_FAILED,       /* io_uring_req_failed: consumed, rejected at prep */
	OBS_CQ_OVERFLOWS,      /* io_uring_cqe_overflow on a target ring */
	OBS_ENTERS,	       /* io_uring_enter(2) by the target */
	OBS_RINGS_LOST,	       /* ring map full: a ring was not remembered */
	OBS_LAT_LOST,	       /* completion whose submit slot another request took */
	OBS_RETRANS,	       /* retransmitted segments of target sockets */
	OBS_SOCKS_LOST,	       /* socket map full: a target socket not remembered */
	OBS_SOCKS_SEEN,	       /* target sockets learnt after attach (connect, listen, accept) */
	OBS_ENDPOINTS_LOST,    /* retransmits not in `endpoints` (map full) */
	OBS_RETRANS_LATE,      /* of OBS_RETRANS: found at a state change of their socket,
				* their tcp_retransmit_skb event never reached us (a lost
				* event followed by another one on that socket is made up
				* there, and not counted here) */
	OBS_NR_COUNTERS,
};

/* Map sizes. */
#define OBS_MAX_RINGS 4096
#define OBS_SLOT_BITS 14 /* 16384 submit-time slots (see struct obs_slot) */
#define OBS_MAX_SOCKS 65536
#define OBS_MAX_ENDPOINTS 4096
#define OBS_MAX_ERRS 4096
#define OBS_MAX_WORKERS 1024
#define OBS_NR_OPS 256 /* opcode is a u8 */

/* log2 histogram: slot i counts values v (ns) with 2^(i-1) < v <= 2^i
 * (slot 0: v <= 1). 2^40 ns is 18 minutes; longer goes to the last slot. */
#define OBS_HIST_SLOTS 41
struct obs_hist {
	__u64 slots[OBS_HIST_SLOTS];
	__u64 count;
	__u64 sum_ns;
};

/*
 * One io_uring ring (struct io_ring_ctx) of the target. Written in place by
 * the BPF programs (atomic adds on inflight/sqes/cqes; plain stores for the
 * rest, last writer wins). inflight_max is kept per epoch: user space bumps
 * the global `epoch` after reading an interval, and the first event of the
 * next epoch restarts the maximum from the current value.
 */
struct obs_ring {
	__s64 inflight;	    /* in flight at attach (estimated) + submitted - finished */
	__s64 inflight_max; /* max of inflight within max_epoch */
	__u64 max_epoch;
	__u64 sqes;
	__u64 cqes;
	__u64 backlog_ns; /* when cq_backlog was last read */
	__u32 cq_backlog; /* cached_cq_tail - rings->cq.head, read at most every 50 us */
	__u32 tid;	  /* last submitting thread */
	char comm[16];
};

/*
 * Submit time of a request, in a direct-mapped table indexed by a hash of
 * its struct io_kiocb pointer (an array: lookups are inlined, no lock, no
 * allocation; a hash map insert and delete per request cost 5x more). Two
 * requests in flight on the same slot: the later one wins and the earlier
 * one's latency is not measured (OBS_LAT_LOST), so latency is a sample,
 * a near-complete one while fewer than a few thousand requests are in flight.
 */
struct obs_slot {
	__u64 req; /* owner, 0 when free */
	__u64 ts;  /* bpf_ktime_get_ns() at submit */
	__u64 ring;
	__u32 opcode;
	__u32 pad;
};

/* Completion errors: key {opcode, -res}, value a per-CPU count. */
struct obs_err_key {
	__u32 opcode;
	__u32 err; /* positive errno */
};

/* One qilin worker, from the USDT probes. */
struct obs_worker {
	__u64 runq_depth;
	__u64 runq_depth_max;
	__u64 max_epoch;
	__u32 pending_sqes;
	__u32 inflight;
	__u64 ticks;
	__u64 parks;
	__u64 last_ns;	     /* bpf_ktime_get_ns() of the last tick */
	__u32 tid;	     /* the worker's thread (its ring's submitter) */
	__u32 parked;	     /* 1 between worker_park and the next tick */
	__s64 ring_inflight; /* its ring's inflight at the last tick */
	__u64 ring;	     /* that ring, 0 when not known */
};

/* A TCP connection the target retransmitted on, and the socket's state at
 * those retransmits (addresses in network order, IPv4 in the first 4
 * bytes). The state is part of the key so that every count only grows: a
 * connection that retransmitted in SYN_SENT, then ESTABLISHED, then
 * FIN_WAIT1 has three entries, each a counter. */
struct obs_ep_key {
	__u8 raddr[16];
	__u8 laddr[16];
	__u16 rport;  /* host order */
	__u16 lport;  /* host order */
	__u16 family; /* AF_INET or AF_INET6 */
	__u8 state;   /* TCP_ESTABLISHED = 1, ... TCP_NEW_SYN_RECV = 12 */
	__u8 pad;
};

struct obs_ep {
	__u64 count; /* retransmitted segments */
};

/*
 * A TCP socket of the target (value of `socks`, keyed by its struct sock *).
 * retrans is the socket's own count of retransmitted segments
 * (tcp_sock.total_retrans, what the kernel adds to TcpRetransSegs, in the
 * same statement) as far as it has been counted here: when the socket was
 * first seen, and after each retransmit or state change seen since. What the
 * socket retransmitted beyond it is the difference, so a retransmit whose
 * event was not delivered is still counted at the socket's next event or
 * state change (at the latest at TCP_CLOSE).
 */
struct obs_sock {
	__u32 tgid;    /* the owner when first seen */
	__u32 retrans; /* tcp_sock.total_retrans counted so far */
	__u32 flags;   /* OBS_SOCK_* */
	__u32 pad;
};
/* Born of a listener (SYN_RECV), not looked at since: the kernel sets its
 * total_retrans to the request's SYN-ACK retransmits (counted on the
 * listener already) only after the SYN_RECV event, so `retrans` is taken at
 * the first look instead. */
#define OBS_SOCK_FRESH 1u

/* A listening socket of the target: its network namespace (struct net *)
 * and port. A new connection's socket is born (TCP_SYN_RECV) in softirq,
 * where only this says whose it is. */
struct obs_listen_key {
	__u64 net;
	__u16 lport; /* host order */
	__u16 pad[3];
};
#define OBS_MAX_LISTENERS 1024

/* What a tp_btf argument is, read by user space from the kernel BTF. */
enum obs_arg {
	OBS_ARG_NONE = 0, /* absent or not a pointer */
	OBS_ARG_CTX = 1,  /* the ring itself (void * / struct io_ring_ctx *) */
	OBS_ARG_REQ = 2,  /* struct io_kiocb * */
};

/* Layout of tp_btf/io_uring_complete after (ctx, req): */
enum obs_complete_layout {
	OBS_COMPLETE_CQE = 0, /* 6.3+: (ctx, req, struct io_uring_cqe *cqe) */
	OBS_COMPLETE_ARGS =
		1, /* 5.x-6.2: (ctx, req, u64 user_data, int res, unsigned cflags, ...) */
};

#endif /* QILIN_BPF_OBSERVER_H */
