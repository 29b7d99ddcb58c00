/* SPDX-License-Identifier: MIT */
/*
 * bpf/obs_report.c - read qilin-observer's maps into a snapshot and render it
 * as a table, a JSON line (docs/observer-schema.json) or Prometheus text
 * (format 0.0.4).
 *
 * What the numbers are, once more, from the reader's side:
 *   - counters are cumulative since attach (the maps are never cleared);
 *   - gauges (inflight, cq_backlog, runq_depth...) are the last value the
 *     kernel side stored;
 *   - _max gauges hold for the current epoch: the caller bumps the BPF
 *     side's epoch after each interval report, and a ring or worker whose
 *     max_epoch is older had no event since, so its max is its current value.
 * Per-CPU maps are summed here. The maps change while they are read; a
 * snapshot is not atomic across maps (a CQE may be in cqes_total and not yet
 * in the latency histogram), which the docs say.
 *
 * Single-threaded: called from the observer's main loop only. The opcode
 * name table is filled once at start (obs_names_init) and read after.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>

#include "obs_report.h"

/* ------------------------------------------------------------ names */

static char op_names[OBS_NR_OPS][32];

void obs_names_init(const struct btf *btf)
{
	const struct btf_type *t;
	const struct btf_enum *e;
	int id;

	for (unsigned int i = 0; i < OBS_NR_OPS; i++)
		snprintf(op_names[i], sizeof(op_names[i]), "OP_%u", i);
	if (!btf)
		return;
	id = btf__find_by_name_kind(btf, "io_uring_op", BTF_KIND_ENUM);
	if (id < 0)
		return;
	t = btf__type_by_id(btf, id);
	e = btf_enum(t);
	for (unsigned int i = 0; i < btf_vlen(t); i++, e++) {
		const char *n = btf__name_by_offset(btf, e->name_off);

		if (!n || strncmp(n, "IORING_OP_", 10) || e->val < 0 || e->val >= OBS_NR_OPS ||
		    !strcmp(n, "IORING_OP_LAST"))
			continue;
		snprintf(op_names[e->val], sizeof(op_names[e->val]), "%s", n + 10);
	}
}

const char *obs_op_name(unsigned int op)
{
	return op < OBS_NR_OPS ? op_names[op] : "OP_UNKNOWN";
}

static const char *errno_name(unsigned int e, char *buf, size_t len)
{
	const char *n = strerrorname_np((int)e);

	if (n)
		return n;
	snprintf(buf, len, "E%u", e);
	return buf;
}

static const char *tcp_state_name(unsigned int s)
{
	/* clang-format off */
	static const char *const names[] = {
		[1] = "ESTABLISHED", [2] = "SYN_SENT", [3] = "SYN_RECV", [4] = "FIN_WAIT1",
		[5] = "FIN_WAIT2", [6] = "TIME_WAIT", [7] = "CLOSE", [8] = "CLOSE_WAIT",
		[9] = "LAST_ACK", [10] = "LISTEN", [11] = "CLOSING", [12] = "NEW_SYN_RECV",
	};
	/* clang-format on */

	if (s < sizeof(names) / sizeof(names[0]) && names[s])
		return names[s];
	return "UNKNOWN";
}

/* "ADDR:PORT", IPv6 as "[ADDR]:PORT". */
static void fmt_endpoint(char *buf, size_t len, int family, const __u8 *addr, unsigned int port)
{
	char a[INET6_ADDRSTRLEN];

	if (family == AF_INET6) {
		inet_ntop(AF_INET6, addr, a, sizeof(a));
		snprintf(buf, len, "[%s]:%u", a, port);
	} else {
		inet_ntop(AF_INET, addr, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, port);
	}
}

/* ------------------------------------------------------------ reading */

static void hist_merge(struct obs_hist *dst, const struct obs_hist *src)
{
	for (int i = 0; i < OBS_HIST_SLOTS; i++)
		dst->slots[i] += src->slots[i];
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
}

/* Grow *arr (elements of size sz) to hold n + 1. Returns 0 or -ENOMEM. */
static int grow(void **arr, size_t *cap, size_t n, size_t sz)
{
	void *p;

	if (n < *cap)
		return 0;
	*cap = *cap ? *cap * 2 : 16;
	p = realloc(*arr, *cap * sz);
	if (!p)
		return -ENOMEM;
	*arr = p;
	return 0;
}

static int read_counters(const struct obs_maps *m, int ncpus, struct obs_snap *s)
{
	__u64 *v = calloc(ncpus, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (__u32 k = 0; k < OBS_NR_COUNTERS; k++) {
		if (bpf_map_lookup_elem(m->counters, &k, v)) {
			free(v);
			return -errno;
		}
		for (int c = 0; c < ncpus; c++)
			s->c[k] += v[c];
	}
	free(v);
	return 0;
}

static int read_per_op(const struct obs_maps *m, int ncpus, struct obs_snap *s)
{
	struct obs_hist *h = calloc(ncpus, sizeof(*h));
	__u64 *v = calloc(ncpus, sizeof(*v));
	int ret = 0;

	if (!h || !v) {
		ret = -ENOMEM;
		goto out;
	}
	for (__u32 k = 0; k < OBS_NR_OPS; k++) {
		if (bpf_map_lookup_elem(m->op_lat, &k, h) || bpf_map_lookup_elem(m->punts, &k, v)) {
			ret = -errno;
			goto out;
		}
		for (int c = 0; c < ncpus; c++) {
			hist_merge(&s->lat[k], &h[c]);
			s->punts[k] += v[c];
		}
	}
out:
	free(h);
	free(v);
	return ret;
}

static int read_rings(const struct obs_maps *m, struct obs_snap *s)
{
	__u64 key, prev;
	bool first = true;
	size_t cap = 0;
	int ret;

	while (bpf_map_get_next_key(m->rings, first ? NULL : &prev, &key) == 0) {
		first = false;
		prev = key;
		ret = grow((void **)&s->rings, &cap, s->nr_rings, sizeof(*s->rings));
		if (ret)
			return ret;
		s->rings[s->nr_rings].ring = key;
		if (bpf_map_lookup_elem(m->rings, &key, &s->rings[s->nr_rings].v) == 0)
			s->nr_rings++;
	}
	return 0;
}

static int read_errs(const struct obs_maps *m, int ncpus, struct obs_snap *s)
{
	struct obs_err_key key, prev;
	bool first = true;
	size_t cap = 0;
	__u64 *v = calloc(ncpus, sizeof(*v));
	int ret = 0;

	if (!v)
		return -ENOMEM;
	while (bpf_map_get_next_key(m->errs, first ? NULL : &prev, &key) == 0) {
		first = false;
		prev = key;
		if (bpf_map_lookup_elem(m->errs, &key, v))
			continue;
		ret = grow((void **)&s->errs, &cap, s->nr_errs, sizeof(*s->errs));
		if (ret)
			break;
		s->errs[s->nr_errs].k = key;
		s->errs[s->nr_errs].count = 0;
		for (int c = 0; c < ncpus; c++)
			s->errs[s->nr_errs].count += v[c];
		s->nr_errs++;
	}
	free(v);
	return ret;
}

static struct obs_snap_worker *worker_slot(struct obs_snap *s, size_t *cap, __s32 w)
{
	for (size_t i = 0; i < s->nr_workers; i++)
		if (s->workers[i].worker == w)
			return &s->workers[i];
	if (grow((void **)&s->workers, cap, s->nr_workers, sizeof(*s->workers)))
		return NULL;
	memset(&s->workers[s->nr_workers], 0, sizeof(s->workers[0]));
	s->workers[s->nr_workers].worker = w;
	return &s->workers[s->nr_workers++];
}

static int read_workers(const struct obs_maps *m, struct obs_snap *s)
{
	__s32 key, prev;
	bool first = true;
	size_t cap = 0;
	struct obs_snap_worker *sw;
	struct obs_worker wv;
	struct obs_hist h;

	while (bpf_map_get_next_key(m->workers, first ? NULL : &prev, &key) == 0) {
		first = false;
		prev = key;
		if (bpf_map_lookup_elem(m->workers, &key, &wv))
			continue;
		sw = worker_slot(s, &cap, key);
		if (!sw)
			return -ENOMEM;
		sw->v = wv;
		sw->has_worker = true;
	}
	first = true;
	while (bpf_map_get_next_key(m->sched_delay, first ? NULL : &prev, &key) == 0) {
		first = false;
		prev = key;
		if (bpf_map_lookup_elem(m->sched_delay, &key, &h))
			continue;
		sw = worker_slot(s, &cap, key);
		if (!sw)
			return -ENOMEM;
		sw->delay = h;
	}
	return 0;
}

static int read_eps(const struct obs_maps *m, struct obs_snap *s)
{
	struct obs_ep_key key, prev;
	bool first = true;
	size_t cap = 0;
	struct obs_ep v;

	while (bpf_map_get_next_key(m->endpoints, first ? NULL : &prev, &key) == 0) {
		first = false;
		prev = key;
		if (bpf_map_lookup_elem(m->endpoints, &key, &v))
			continue;
		if (grow((void **)&s->eps, &cap, s->nr_eps, sizeof(*s->eps)))
			return -ENOMEM;
		s->eps[s->nr_eps].k = key;
		s->eps[s->nr_eps].v = v;
		s->nr_eps++;
	}
	return 0;
}

static int cmp_ring(const void *a, const void *b)
{
	const struct obs_snap_ring *x = a, *y = b;

	if (x->v.tid != y->v.tid)
		return x->v.tid < y->v.tid ? -1 : 1;
	return x->ring < y->ring ? -1 : x->ring > y->ring;
}

static int cmp_worker(const void *a, const void *b)
{
	const struct obs_snap_worker *x = a, *y = b;

	return (x->worker > y->worker) - (x->worker < y->worker);
}

static int cmp_err(const void *a, const void *b)
{
	const struct obs_snap_err *x = a, *y = b;

	if (x->k.opcode != y->k.opcode)
		return x->k.opcode < y->k.opcode ? -1 : 1;
	return (x->k.err > y->k.err) - (x->k.err < y->k.err);
}

static int cmp_ep(const void *a, const void *b)
{
	const struct obs_snap_ep *x = a, *y = b;

	if (x->v.count != y->v.count)
		return x->v.count > y->v.count ? -1 : 1;
	return memcmp(&x->k, &y->k, sizeof(x->k));
}

int obs_snap_read(const struct obs_maps *m, __u64 epoch, int ncpus, struct obs_snap *s)
{
	struct timespec ts;
	int ret;

	memset(s, 0, sizeof(*s));
	clock_gettime(CLOCK_REALTIME, &ts);
	s->ts = ts.tv_sec + ts.tv_nsec / 1e9;
	s->epoch = epoch;
	ret = read_counters(m, ncpus, s);
	if (!ret)
		ret = read_per_op(m, ncpus, s);
	if (!ret)
		ret = read_rings(m, s);
	if (!ret)
		ret = read_errs(m, ncpus, s);
	if (!ret)
		ret = read_workers(m, s);
	if (!ret)
		ret = read_eps(m, s);
	if (ret) {
		obs_snap_free(s);
		return ret;
	}
	/* A worker's in-flight count: the library's at its last tick plus
	 * what its ring did since (the tick is rate-limited in the library and
	 * a parked worker does not tick). */
	for (size_t w = 0; w < s->nr_workers; w++) {
		struct obs_worker *wv = &s->workers[w].v;

		for (size_t i = 0; i < s->nr_rings && wv->ring; i++) {
			__s64 n;

			if (s->rings[i].ring != wv->ring)
				continue;
			n = (__s64)wv->inflight + s->rings[i].v.inflight - wv->ring_inflight;
			wv->inflight = n > 0 ? (__u32)n : 0;
		}
	}
	s->sqes = s->c[OBS_SQES_UNKNOWN_RING];
	for (size_t i = 0; i < s->nr_rings; i++) {
		s->sqes += s->rings[i].v.sqes;
		s->cqes += s->rings[i].v.cqes;
	}
	/* qsort's array may not be NULL, even for 0 elements. */
	if (s->nr_rings)
		qsort(s->rings, s->nr_rings, sizeof(*s->rings), cmp_ring);
	if (s->nr_workers)
		qsort(s->workers, s->nr_workers, sizeof(*s->workers), cmp_worker);
	if (s->nr_errs)
		qsort(s->errs, s->nr_errs, sizeof(*s->errs), cmp_err);
	if (s->nr_eps)
		qsort(s->eps, s->nr_eps, sizeof(*s->eps), cmp_ep);
	return 0;
}

void obs_snap_free(struct obs_snap *s)
{
	if (!s)
		return;
	free(s->rings);
	free(s->errs);
	free(s->workers);
	free(s->eps);
	s->rings = NULL;
	s->errs = NULL;
	s->workers = NULL;
	s->eps = NULL;
	s->nr_rings = s->nr_errs = s->nr_workers = s->nr_eps = 0;
}

/* ------------------------------------------------------------ derived values */

static __u64 slot_le(int i)
{
	return 1ULL << i;
}

__u64 obs_hist_percentile(const struct obs_hist *h, double p)
{
	__u64 total = 0, rank, seen = 0;

	for (int i = 0; i < OBS_HIST_SLOTS; i++)
		total += h->slots[i];
	if (!total)
		return 0;
	rank = (__u64)ceil(p * (double)total);
	if (rank < 1)
		rank = 1;
	for (int i = 0; i < OBS_HIST_SLOTS; i++) {
		seen += h->slots[i];
		if (seen >= rank)
			return slot_le(i);
	}
	return slot_le(OBS_HIST_SLOTS - 1);
}

static __u64 ring_inflight(const struct obs_ring *r)
{
	return r->inflight > 0 ? (__u64)r->inflight : 0;
}

static __u64 ring_inflight_max(const struct obs_ring *r, __u64 epoch)
{
	__s64 m = r->max_epoch == epoch && r->inflight_max > r->inflight ? r->inflight_max :
									   r->inflight;

	return m > 0 ? (__u64)m : 0;
}

static __u64 worker_runq_max(const struct obs_worker *w, __u64 epoch)
{
	return w->max_epoch == epoch && w->runq_depth_max > w->runq_depth ? w->runq_depth_max :
									    w->runq_depth;
}

static __u64 sqes_total(const struct obs_snap *s)
{
	return s->sqes;
}

static double sqes_per_enter(const struct obs_snap *s, const struct obs_report_ctx *rc)
{
	__u64 sq = sqes_total(s) - rc->prev_sqes, en = s->c[OBS_ENTERS] - rc->prev_enters;

	return en ? (double)sq / (double)en : 0.0;
}

/* ------------------------------------------------------------ table */

static void fmt_ns(char *buf, size_t len, __u64 ns)
{
	if (ns >= 1000000000ULL)
		snprintf(buf, len, "%.1fs", ns / 1e9);
	else if (ns >= 1000000)
		snprintf(buf, len, "%.1fms", ns / 1e6);
	else if (ns >= 1000)
		snprintf(buf, len, "%.1fus", ns / 1e3);
	else
		snprintf(buf, len, "%lluns", (unsigned long long)ns);
}

int obs_print_table(FILE *f, const struct obs_snap *s, const struct obs_report_ctx *rc)
{
	char ts[16], a[16], b[16], c[16], d[16], e[48], r[64], l[64];
	time_t t = (time_t)s->ts;
	bool any;

	strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&t));
	if (rc->cgroup)
		fprintf(f, "%s cgroup %s", ts, rc->cgroup);
	else
		fprintf(f, "%s pid %d", ts, rc->pid);
	fprintf(f,
		"  sqes %llu  cqes %llu  enters %llu  sqes/enter %.2f  cq_overflows %llu  "
		"retransmits %llu%s\n",
		(unsigned long long)sqes_total(s), (unsigned long long)s->cqes,
		(unsigned long long)s->c[OBS_ENTERS], sqes_per_enter(s, rc),
		(unsigned long long)s->c[OBS_CQ_OVERFLOWS], (unsigned long long)s->c[OBS_RETRANS],
		rc->target_exited ? "  (target exited)" : "");

	if (s->nr_rings) {
		fprintf(f, "  %-18s %-8s %-16s %9s %9s %10s %12s %12s\n", "RING", "TID", "COMM",
			"INFLIGHT", "MAX", "CQ_BACKLOG", "SQES", "CQES");
		for (size_t i = 0; i < s->nr_rings; i++) {
			const struct obs_ring *v = &s->rings[i].v;

			fprintf(f, "  0x%-16llx %-8u %-16.16s %9llu %9llu %10u %12llu %12llu\n",
				(unsigned long long)s->rings[i].ring, v->tid, v->comm,
				(unsigned long long)ring_inflight(v),
				(unsigned long long)ring_inflight_max(v, s->epoch), v->cq_backlog,
				(unsigned long long)v->sqes, (unsigned long long)v->cqes);
		}
	}
	if (s->nr_workers) {
		fprintf(f, "  %-6s %9s %9s %8s %9s %9s %9s %9s\n", "WORKER", "RUNQ", "RUNQ_MAX",
			"PENDING", "INFLIGHT", "SAMPLES", "DELAY_P50", "DELAY_P99");
		for (size_t i = 0; i < s->nr_workers; i++) {
			const struct obs_snap_worker *w = &s->workers[i];

			fmt_ns(a, sizeof(a), obs_hist_percentile(&w->delay, 0.5));
			fmt_ns(b, sizeof(b), obs_hist_percentile(&w->delay, 0.99));
			fprintf(f, "  %-6d %9llu %9llu %8u %9u %9llu %9s %9s\n", w->worker,
				(unsigned long long)w->v.runq_depth,
				(unsigned long long)worker_runq_max(&w->v, s->epoch),
				w->v.pending_sqes, w->v.inflight,
				(unsigned long long)w->delay.count, a, b);
		}
	}
	any = false;
	for (unsigned int op = 0; op < OBS_NR_OPS; op++) {
		const struct obs_hist *h = &s->lat[op];

		if (!h->count)
			continue;
		if (!any)
			fprintf(f, "  %-16s %10s %9s %9s %9s %9s %9s\n", "OP", "COUNT", "AVG",
				"P50", "P90", "P99", "P999");
		any = true;
		fmt_ns(e, sizeof(e), h->sum_ns / h->count);
		fmt_ns(a, sizeof(a), obs_hist_percentile(h, 0.5));
		fmt_ns(b, sizeof(b), obs_hist_percentile(h, 0.9));
		fmt_ns(c, sizeof(c), obs_hist_percentile(h, 0.99));
		fmt_ns(d, sizeof(d), obs_hist_percentile(h, 0.999));
		fprintf(f, "  %-16s %10llu %9s %9s %9s %9s %9s\n", obs_op_name(op),
			(unsigned long long)h->count, e, a, b, c, d);
	}
	for (size_t i = 0; i < s->nr_errs; i++) {
		if (!i)
			fprintf(f, "  %-16s %-16s %10s\n", "ERROR_OP", "ERRNO", "COUNT");
		fprintf(f, "  %-16s %-16s %10llu\n", obs_op_name(s->errs[i].k.opcode),
			errno_name(s->errs[i].k.err, e, sizeof(e)),
			(unsigned long long)s->errs[i].count);
	}
	any = false;
	for (unsigned int op = 0; op < OBS_NR_OPS; op++) {
		if (!s->punts[op])
			continue;
		if (!any)
			fprintf(f, "  %-16s %10s\n", "IOWQ_PUNT_OP", "COUNT");
		any = true;
		fprintf(f, "  %-16s %10llu\n", obs_op_name(op), (unsigned long long)s->punts[op]);
	}
	for (size_t i = 0; i < s->nr_eps; i++) {
		const struct obs_snap_ep *ep = &s->eps[i];

		if (!i)
			fprintf(f, "  %-47s %-47s %-12s %8s\n", "RETRANS_REMOTE", "LOCAL", "STATE",
				"SEGS");
		fmt_endpoint(r, sizeof(r), ep->k.family, ep->k.raddr, ep->k.rport);
		fmt_endpoint(l, sizeof(l), ep->k.family, ep->k.laddr, ep->k.lport);
		fprintf(f, "  %-47s %-47s %-12s %8llu\n", r, l, tcp_state_name(ep->k.state),
			(unsigned long long)ep->v.count);
	}
	fprintf(f, "\n");
	return ferror(f) ? -EIO : 0;
}

/* ------------------------------------------------------------ JSON */

static void json_str(FILE *f, const char *s, size_t max)
{
	fputc('"', f);
	for (size_t i = 0; i < max && s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void json_hist(FILE *f, const struct obs_hist *h)
{
	int top = -1;

	for (int i = 0; i < OBS_HIST_SLOTS; i++)
		if (h->slots[i])
			top = i;
	fprintf(f, "\"count\":%llu,\"sum_ns\":%llu,\"buckets\":[", (unsigned long long)h->count,
		(unsigned long long)h->sum_ns);
	for (int i = 0; i <= top; i++)
		fprintf(f, "%s{\"le_ns\":%llu,\"count\":%llu}", i ? "," : "",
			(unsigned long long)slot_le(i), (unsigned long long)h->slots[i]);
	fprintf(f, "],\"p50_ns\":%llu,\"p90_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu",
		(unsigned long long)obs_hist_percentile(h, 0.5),
		(unsigned long long)obs_hist_percentile(h, 0.9),
		(unsigned long long)obs_hist_percentile(h, 0.99),
		(unsigned long long)obs_hist_percentile(h, 0.999));
}

int obs_print_json(FILE *f, const struct obs_snap *s, const struct obs_report_ctx *rc)
{
	char e[48], r[64], l[64];
	bool first;

	fprintf(f, "{\"ts\":%.6f,\"interval_s\":%.6f,", s->ts, rc->interval_s);
	if (rc->cgroup) {
		fprintf(f, "\"pid\":null,\"cgroup\":");
		json_str(f, rc->cgroup, 4096);
	} else {
		fprintf(f, "\"pid\":%d,\"cgroup\":null", rc->pid);
	}
	fprintf(f, ",\"rings\":[");
	for (size_t i = 0; i < s->nr_rings; i++) {
		const struct obs_ring *v = &s->rings[i].v;

		fprintf(f, "%s{\"ring\":\"0x%llx\",\"tid\":%u,\"comm\":", i ? "," : "",
			(unsigned long long)s->rings[i].ring, v->tid);
		json_str(f, v->comm, sizeof(v->comm));
		fprintf(f,
			",\"inflight\":%llu,\"inflight_max\":%llu,\"cq_backlog\":%u,"
			"\"sqes_total\":%llu,\"cqes_total\":%llu}",
			(unsigned long long)ring_inflight(v),
			(unsigned long long)ring_inflight_max(v, s->epoch), v->cq_backlog,
			(unsigned long long)v->sqes, (unsigned long long)v->cqes);
	}
	fprintf(f, "],\"workers\":[");
	for (size_t i = 0; i < s->nr_workers; i++) {
		const struct obs_snap_worker *w = &s->workers[i];

		fprintf(f,
			"%s{\"worker\":%d,\"runq_depth\":%llu,\"runq_depth_max\":%llu,"
			"\"pending_sqes\":%u,\"inflight\":%u,\"ticks_total\":%llu,"
			"\"parks_total\":%llu,\"sched_delay\":{",
			i ? "," : "", w->worker, (unsigned long long)w->v.runq_depth,
			(unsigned long long)worker_runq_max(&w->v, s->epoch), w->v.pending_sqes,
			w->v.inflight, (unsigned long long)w->v.ticks,
			(unsigned long long)w->v.parks);
		json_hist(f, &w->delay);
		fprintf(f, "}}");
	}
	fprintf(f, "],\"latency\":[");
	first = true;
	for (unsigned int op = 0; op < OBS_NR_OPS; op++) {
		if (!s->lat[op].count)
			continue;
		fprintf(f, "%s{\"op\":", first ? "" : ",");
		json_str(f, obs_op_name(op), 32);
		fputc(',', f);
		json_hist(f, &s->lat[op]);
		fputc('}', f);
		first = false;
	}
	fprintf(f, "],\"retransmits\":{\"total\":%llu,\"endpoints\":[",
		(unsigned long long)s->c[OBS_RETRANS]);
	for (size_t i = 0; i < s->nr_eps; i++) {
		const struct obs_snap_ep *ep = &s->eps[i];

		fmt_endpoint(r, sizeof(r), ep->k.family, ep->k.raddr, ep->k.rport);
		fmt_endpoint(l, sizeof(l), ep->k.family, ep->k.laddr, ep->k.lport);
		fprintf(f, "%s{\"remote\":\"%s\",\"local\":\"%s\",\"state\":\"%s\",\"count\":%llu}",
			i ? "," : "", r, l, tcp_state_name(ep->k.state),
			(unsigned long long)ep->v.count);
	}
	fprintf(f, "]},\"errors\":{\"completions\":[");
	for (size_t i = 0; i < s->nr_errs; i++)
		fprintf(f, "%s{\"op\":\"%s\",\"errno\":\"%s\",\"count\":%llu}", i ? "," : "",
			obs_op_name(s->errs[i].k.opcode),
			errno_name(s->errs[i].k.err, e, sizeof(e)),
			(unsigned long long)s->errs[i].count);
	fprintf(f, "],\"cq_overflows_total\":%llu,\"iowq_punts\":[",
		(unsigned long long)s->c[OBS_CQ_OVERFLOWS]);
	first = true;
	for (unsigned int op = 0; op < OBS_NR_OPS; op++) {
		if (!s->punts[op])
			continue;
		fprintf(f, "%s{\"op\":\"%s\",\"count\":%llu}", first ? "" : ",", obs_op_name(op),
			(unsigned long long)s->punts[op]);
		first = false;
	}
	fprintf(f,
		"],\"sqes_total\":%llu,\"enters_total\":%llu,\"sqes_per_enter\":%.3f},"
		"\"target_exited\":%s}\n",
		(unsigned long long)sqes_total(s), (unsigned long long)s->c[OBS_ENTERS],
		sqes_per_enter(s, rc), rc->target_exited ? "true" : "false");
	return ferror(f) ? -EIO : 0;
}

/* ------------------------------------------------------------ Prometheus */

static void prom_head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP qilin_observer_%s %s\n# TYPE qilin_observer_%s %s\n", name, help, name,
		type);
}

/* Label values: backslash, double quote and newline escaped. */
static void prom_label(FILE *f, const char *name, const char *v, bool comma)
{
	fprintf(f, "%s%s=\"", comma ? "," : "", name);
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
	fputc('"', f);
}

/* A histogram series: every bucket, cumulative, le in seconds, +Inf. */
static void prom_hist(FILE *f, const char *name, const char *lname, const char *lval,
		      const struct obs_hist *h)
{
	__u64 cum = 0;

	for (int i = 0; i < OBS_HIST_SLOTS; i++) {
		cum += h->slots[i];
		fprintf(f, "qilin_observer_%s_bucket{", name);
		prom_label(f, lname, lval, false);
		fprintf(f, ",le=\"%.10g\"} %llu\n", (double)slot_le(i) / 1e9,
			(unsigned long long)cum);
	}
	fprintf(f, "qilin_observer_%s_bucket{", name);
	prom_label(f, lname, lval, false);
	fprintf(f, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	fprintf(f, "qilin_observer_%s_sum{", name);
	prom_label(f, lname, lval, false);
	fprintf(f, "} %.9f\n", (double)h->sum_ns / 1e9);
	fprintf(f, "qilin_observer_%s_count{", name);
	prom_label(f, lname, lval, false);
	fprintf(f, "} %llu\n", (unsigned long long)cum);
}

/* One gauge or counter per ring. */
static void prom_rings(FILE *f, const struct obs_snap *s, const char *name, const char *type,
		       const char *help, int which)
{
	char ring[32], tid[16];

	prom_head(f, name, type, help);
	for (size_t i = 0; i < s->nr_rings; i++) {
		const struct obs_ring *v = &s->rings[i].v;
		unsigned long long x = which == 0 ? ring_inflight(v) :
				       which == 1 ? ring_inflight_max(v, s->epoch) :
				       which == 2 ? v->cq_backlog :
				       which == 3 ? v->sqes :
						    v->cqes;

		snprintf(ring, sizeof(ring), "0x%llx", (unsigned long long)s->rings[i].ring);
		snprintf(tid, sizeof(tid), "%u", v->tid);
		fprintf(f, "qilin_observer_%s{", name);
		prom_label(f, "ring", ring, false);
		prom_label(f, "tid", tid, true);
		fprintf(f, "} %llu\n", x);
	}
}

static void prom_workers(FILE *f, const struct obs_snap *s, const char *name, const char *type,
			 const char *help, int which)
{
	prom_head(f, name, type, help);
	for (size_t i = 0; i < s->nr_workers; i++) {
		const struct obs_snap_worker *w = &s->workers[i];
		unsigned long long x = which == 0 ? w->v.runq_depth :
				       which == 1 ? worker_runq_max(&w->v, s->epoch) :
				       which == 2 ? w->v.pending_sqes :
				       which == 3 ? w->v.inflight :
						    w->v.parks;

		if (!w->has_worker)
			continue;
		fprintf(f, "qilin_observer_%s{worker=\"%d\"} %llu\n", name, w->worker, x);
	}
}

int obs_print_prometheus(FILE *f, const struct obs_snap *s, const struct obs_report_ctx *rc)
{
	char e[48], r[64];

	prom_rings(f, s, "ring_inflight", "gauge",
		   "io_uring requests submitted since attach and not yet completed, per ring.", 0);
	prom_rings(f, s, "ring_inflight_max", "gauge",
		   "Maximum of ring_inflight within the current report interval.", 1);
	prom_rings(f, s, "ring_cq_backlog", "gauge",
		   "CQEs posted and not yet consumed, at the ring's last completion.", 2);
	prom_rings(f, s, "ring_sqes_total", "counter", "SQEs submitted on the ring.", 3);
	prom_rings(f, s, "ring_cqes_total", "counter", "CQEs posted on the ring.", 4);

	prom_workers(f, s, "worker_runq_depth", "gauge",
		     "qilin worker run-queue depth at its last scheduler tick.", 0);
	prom_workers(f, s, "worker_runq_depth_max", "gauge",
		     "Maximum worker_runq_depth within the current report interval.", 1);
	prom_workers(f, s, "worker_pending_sqes", "gauge",
		     "SQEs prepared by the worker and not yet submitted, at its last tick.", 2);
	prom_workers(f, s, "worker_inflight", "gauge",
		     "Operations of the worker in the kernel, at its last tick.", 3);
	prom_workers(f, s, "worker_parks_total", "counter",
		     "Times the worker blocked for lack of work.", 4);

	prom_head(f, "sched_delay_seconds", "histogram",
		  "Task scheduling delay (runnable to running), sampled one task in 64.");
	for (size_t i = 0; i < s->nr_workers; i++) {
		snprintf(r, sizeof(r), "%d", s->workers[i].worker);
		prom_hist(f, "sched_delay_seconds", "worker", r, &s->workers[i].delay);
	}

	prom_head(f, "op_latency_seconds", "histogram",
		  "io_uring submit-to-complete latency per opcode (requests submitted since "
		  "attach).");
	for (unsigned int op = 0; op < OBS_NR_OPS; op++)
		if (s->lat[op].count)
			prom_hist(f, "op_latency_seconds", "op", obs_op_name(op), &s->lat[op]);

	prom_head(f, "completion_errors_total", "counter",
		  "Completions with a negative result, per opcode and errno.");
	for (size_t i = 0; i < s->nr_errs; i++) {
		fprintf(f, "qilin_observer_completion_errors_total{");
		prom_label(f, "op", obs_op_name(s->errs[i].k.opcode), false);
		prom_label(f, "errno", errno_name(s->errs[i].k.err, e, sizeof(e)), true);
		fprintf(f, "} %llu\n", (unsigned long long)s->errs[i].count);
	}
	prom_head(f, "iowq_punts_total", "counter", "Requests punted to io-wq, per opcode.");
	for (unsigned int op = 0; op < OBS_NR_OPS; op++) {
		if (!s->punts[op])
			continue;
		fprintf(f, "qilin_observer_iowq_punts_total{");
		prom_label(f, "op", obs_op_name(op), false);
		fprintf(f, "} %llu\n", (unsigned long long)s->punts[op]);
	}
	prom_head(f, "cq_overflows_total", "counter", "CQEs that did not fit in the CQ ring.");
	fprintf(f, "qilin_observer_cq_overflows_total %llu\n",
		(unsigned long long)s->c[OBS_CQ_OVERFLOWS]);
	prom_head(f, "sqes_total", "counter", "SQEs the kernel consumed from the target's rings.");
	fprintf(f, "qilin_observer_sqes_total %llu\n", (unsigned long long)sqes_total(s));
	prom_head(f, "cqes_total", "counter", "CQEs posted on the target's rings.");
	fprintf(f, "qilin_observer_cqes_total %llu\n", (unsigned long long)s->cqes);
	prom_head(f, "enters_total", "counter", "io_uring_enter(2) calls by the target.");
	fprintf(f, "qilin_observer_enters_total %llu\n", (unsigned long long)s->c[OBS_ENTERS]);

	/* Per (remote, state): two connections to one server share a series. */
	prom_head(f, "tcp_retransmits_total", "counter",
		  "TCP segments retransmitted on the target's sockets, per remote endpoint and "
		  "socket state at the last retransmit.");
	for (size_t i = 0; i < s->nr_eps; i++) {
		unsigned long long sum = 0;
		bool dup = false;
		char ri[64];

		fmt_endpoint(r, sizeof(r), s->eps[i].k.family, s->eps[i].k.raddr,
			     s->eps[i].k.rport);
		for (size_t j = 0; j < s->nr_eps && !dup; j++) {
			fmt_endpoint(ri, sizeof(ri), s->eps[j].k.family, s->eps[j].k.raddr,
				     s->eps[j].k.rport);
			if (strcmp(r, ri) || s->eps[j].k.state != s->eps[i].k.state)
				continue;
			if (j < i)
				dup = true; /* printed with the first of its group */
			else
				sum += s->eps[j].v.count;
		}
		if (dup)
			continue;
		fprintf(f, "qilin_observer_tcp_retransmits_total{");
		prom_label(f, "remote", r, false);
		prom_label(f, "state", tcp_state_name(s->eps[i].k.state), true);
		fprintf(f, "} %llu\n", sum);
	}
	prom_head(f, "target_exited", "gauge", "1 once the target process has exited.");
	fprintf(f, "qilin_observer_target_exited %d\n", rc->target_exited ? 1 : 0);
	return ferror(f) ? -EIO : 0;
}
