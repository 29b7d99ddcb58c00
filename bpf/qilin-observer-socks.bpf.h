/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpf/qilin-observer-socks.bpf.h - the two maps that the observer's main
 * object (qilin-observer.bpf.c) and its attach-time scan
 * (qilin-observer-scan.bpf.c) share: user space hands the main object's map
 * fds to the scan (bpf_map__reuse_fd), which libbpf accepts only when the
 * definitions match, so both objects take them from here. Kernel side only.
 *
 *   socks      the target's TCP sockets (struct sock *) -> struct obs_sock; a
 *              plain hash, deleted from at TCP_CLOSE: a full map is counted and
 *              warned about, where an LRU map would evict a live socket silently
 *   listeners  the target's listening sockets, by network namespace and port
 */
#ifndef QILIN_OBSERVER_SOCKS_BPF_H
#define QILIN_OBSERVER_SOCKS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_SOCKS);
	__type(key, __u64);
	__type(value, struct obs_sock);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_LISTENERS);
	__type(key, struct obs_listen_key);
	__type(value, __u32);
} listeners SEC(".maps");

#endif
