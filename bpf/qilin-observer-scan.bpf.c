/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpf/qilin-observer-scan.bpf.c - qilin-observer's attach-time socket scan.
 *
 * One iterator program, loaded by qilin-observer right after the main object
 * (qilin-observer.bpf.c), run once, and unloaded: it walks every task's file
 * table (iter/task_file), and puts each TCP socket the target holds open into
 * the main object's `socks` map (and each listener into its `listeners` map),
 * which user space hands to this object with bpf_map__reuse_fd() before
 * load. That is how sockets opened before attach, and idle since, are
 * attributed when they retransmit (a FIN after close, for one). It lives in an object of its own so that nothing of it stays loaded
 * after the scan: the observer then holds tracepoint programs only (with
 * QILIN_OBSERVER_NO_BTF_TP=1, classic ones only; an iterator is a program of
 * the tracing type, like tp_btf).
 *
 * Which files: sockets (S_IFSOCK inode) whose struct sock is AF_INET or
 * AF_INET6 with protocol TCP, not in TCP_CLOSE (a socket neither connected
 * nor listening may be freed without a state change, which would leave a
 * stale pointer in the map; it is learnt at connect or listen if it gets
 * there). Whose: thread group target_tgid, or in cgroup mode the tasks whose
 * default-hierarchy cgroup is target_cgid itself (not its descendants: the
 * tracepoint side uses bpf_current_task_under_cgroup, which has no iterator
 * equivalent on every kernel; see docs/observer.md).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "qilin-observer.h"

#define OBS_TCP_CLOSE 7
#define OBS_TCP_LISTEN 10
#define OBS_IPPROTO_TCP 6
#define OBS_AF_INET 2
#define OBS_AF_INET6 10
#define OBS_S_IFMT 00170000
#define OBS_S_IFSOCK 0140000

const volatile __u32 target_tgid = 0;
const volatile __u64 target_cgid = 0;

/* The main object's maps (reused fds): one definition for both. */
#include "qilin-observer-socks.bpf.h"

/* Sockets this scan added, read by user space after the run. */
__u64 scanned = 0;

SEC("iter/task_file")
int scan_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct socket *sock;
	struct obs_sock v = {};
	struct sock *sk;
	__u16 family;
	__u32 tgid;
	__u64 key;

	if (!task || !file)
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	if (target_tgid ? tgid != target_tgid :
			  BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id) != target_cgid)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & OBS_S_IFMT) != OBS_S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != OBS_AF_INET && family != OBS_AF_INET6) ||
	    BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != OBS_IPPROTO_TCP ||
	    BPF_CORE_READ(sk, __sk_common.skc_state) == OBS_TCP_CLOSE)
		return 0;
	key = (__u64)sk;
	/* Counted from here on: what it retransmitted before attach is not. */
	v.tgid = tgid;
	v.retrans = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	if (bpf_map_update_elem(&socks, &key, &v, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&scanned, 1);
	/* A listener: its new connections are the target's (see the main
	 * object's on_set_state). */
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == OBS_TCP_LISTEN) {
		struct obs_listen_key lk = {};

		lk.net = (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net);
		lk.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		bpf_map_update_elem(&listeners, &lk, &tgid, BPF_ANY);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
