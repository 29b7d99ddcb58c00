/* SPDX-License-Identifier: MIT */
/*
 * bpf/obs_report.h - qilin-observer's snapshot of the BPF maps and its three
 * renderings (table, JSON line, Prometheus text).
 *
 * obs_snap_read() copies every map of the observer into a struct obs_snap
 * (per-CPU values summed); the renderers only read a snapshot, so the same
 * snapshot code serves the interval reports and the /metrics scrapes. All of
 * it runs on the observer's main thread.
 */
#ifndef QILIN_BPF_OBS_REPORT_H
#define QILIN_BPF_OBS_REPORT_H

#include <stdbool.h>
#include <stdio.h>
#include <linux/types.h>

#include "qilin-observer.h"

struct btf;

/* File descriptors of the maps a snapshot reads. */
struct obs_maps {
	int counters, rings, op_lat, punts, errs, workers, sched_delay, endpoints;
};

struct obs_snap_ring {
	__u64 ring;
	struct obs_ring v;
};

struct obs_snap_err {
	struct obs_err_key k;
	__u64 count;
};

struct obs_snap_worker {
	__s32 worker;
	bool has_worker;
	struct obs_worker v;
	struct obs_hist delay;
};

struct obs_snap_ep {
	struct obs_ep_key k;
	struct obs_ep v;
};

struct obs_snap {
	double ts;   /* unix time of the read */
	__u64 epoch; /* the epoch this snapshot belongs to */
	__u64 c[OBS_NR_COUNTERS];
	__u64 sqes, cqes; /* totals: sums over the rings (+ SQEs on unknown rings) */
	struct obs_snap_ring *rings;
	size_t nr_rings;
	struct obs_hist lat[OBS_NR_OPS];
	__u64 punts[OBS_NR_OPS];
	struct obs_snap_err *errs;
	size_t nr_errs;
	struct obs_snap_worker *workers;
	size_t nr_workers;
	struct obs_snap_ep *eps;
	size_t nr_eps;
};

/* What the report says about its target and interval. */
struct obs_report_ctx {
	int pid;	    /* 0 in cgroup mode */
	const char *cgroup; /* NULL in pid mode */
	double interval_s;  /* length of the interval just ended */
	bool target_exited;
	__u64 prev_sqes, prev_enters; /* at the previous report: sqes/enter per interval */
};

/* Read every map into *s (allocates; free with obs_snap_free). epoch is the
 * current epoch (rings/workers whose max_epoch differs had no event in it).
 * Returns 0 or -errno. */
int obs_snap_read(const struct obs_maps *m, __u64 epoch, int ncpus, struct obs_snap *s);
void obs_snap_free(struct obs_snap *s);

/* Opcode names from the kernel BTF (enum io_uring_op); NULL btf or a missing
 * enum leaves OP_<n>. */
void obs_names_init(const struct btf *btf);
const char *obs_op_name(unsigned int op);

/* The three renderings. Each writes to f and returns 0 or -errno. */
int obs_print_table(FILE *f, const struct obs_snap *s, const struct obs_report_ctx *rc);
int obs_print_json(FILE *f, const struct obs_snap *s, const struct obs_report_ctx *rc);
int obs_print_prometheus(FILE *f, const struct obs_snap *s, const struct obs_report_ctx *rc);

/* Percentile p (0 < p < 1) of a log2 histogram: the upper bound in ns of the
 * bucket holding rank ceil(p * count); 0 for an empty histogram. */
__u64 obs_hist_percentile(const struct obs_hist *h, double p);

#endif /* QILIN_BPF_OBS_REPORT_H */
