/* SPDX-License-Identifier: MIT */
/*
 * bpf/qilin-observer.c - user side of qilin-observer: attach to a running
 * process (or a cgroup, or a command it starts), load the BPF programs of
 * qilin-observer.bpf.c, and report queue depth, latency, retransmits and
 * errors per interval as a table, JSON lines, and/or a Prometheus /metrics
 * endpoint.
 *
 *   qilin-observer [-p PID | -c CGROUP_PATH | -- CMD [ARGS...]] [-i SECS]
 *                  [-d SECS] [--json] [--prometheus HOST:PORT] [-v]
 *                  [interval [count]]
 *
 * The life of a run, top to bottom in main():
 *   1. arguments (usage errors exit 2), then what can be checked before
 *      touching anything: privileges, kernel BTF, tracefs;
 *   2. the target: a pid (must exist), a cgroup v2 folder, or CMD started
 *      blocked on a pipe before its exec so that nothing it does is missed;
 *   3. choose one program of each tp_btf/classic pair from the kernel's BTF
 *      and tracefs (QILIN_OBSERVER_NO_BTF_TP=1 or --no-btf-tp forces the
 *      classic twins), set the layout knobs, load, attach;
 *   4. seed the socket map with the target's open TCP sockets (task_file
 *      iterator), attach the library's USDT probes where libqilin is (the
 *      executable or a libqilin.so in /proc/PID/maps; retried each interval
 *      until found, so a library loaded later is picked up);
 *   5. release CMD; loop: report each interval, answer scrapes, stop on
 *      SIGINT/SIGTERM, -d, the count, or the target's exit (final interval,
 *      then "target PID exited" on stderr).
 * Exit status: 0, 1 on a runtime error, 2 on a usage error; in the CMD form,
 * CMD's own status (128+N if it died of signal N, 127 if it could not run).
 *
 * The plumbing it shares with uring_count (the common options, privileges,
 * BTF, tracefs, the tp_btf-first program chooser and its messages, the
 * paused CMD, signals) is bpf/tool.c's; what stays here is which programs
 * the observer has, what its knobs mean, and the observing itself.
 *
 * Single-threaded: the main loop does everything, signal handlers only set
 * a flag (and forward the signal to CMD).
 */
#include <argp.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "qilin-observer.h"
#include "qilin-observer.skel.h"
#include "qilin-observer-scan.skel.h"
#include "obs_http.h"
#include "obs_report.h"
#include "tool.h"

/* The knobs take tool_choose_submit()'s values. */
_Static_assert((int)OBS_ARG_NONE == TOOL_RING_ARG_NONE && (int)OBS_ARG_CTX == TOOL_RING_ARG_CTX &&
		       (int)OBS_ARG_REQ == TOOL_RING_ARG_REQ,
	       "enum obs_arg and enum tool_ring_arg disagree");

#define NAME "qilin-observer"
#define CGROUP2_MAGIC 0x63677270

static struct env {
	const char *cgroup; /* -c */
	char **cmd;	    /* after --, NULL-terminated */
	long count;	    /* second positional, 0 = unbounded */
	int npos;	    /* positionals seen */
	const char *prom; /* --prometheus HOST:PORT */
	bool self_cost; /* --self-cost: kernel run time of each program, at exit */
} env;

/* -p sets pid; -i or the first positional interval (default 1); -d
 * duration (0 = unbounded); --json json; -v verbose; --no-btf-tp or
 * QILIN_OBSERVER_NO_BTF_TP=1 no_btf_tp (the classic twins only); --only-btf
 * only_btf (as if tracefs were absent). */
static struct tool tool = {
	.name = NAME,
	.doing = "observing",
	.no_btf_why = "tp_btf programs are off (QILIN_OBSERVER_NO_BTF_TP)",
	.no_btf_opt = "--no-btf-tp",
	.what_width = 14,
	.interval = 1.0,
	.min_secs = 0.001,
};

/* ------------------------------------------------------------ arguments */

const char *argp_program_version = "qilin-observer (qilin) 0.2";
static const char argp_doc[] =
	"Watch a process's io_uring queues, latency, TCP retransmits and errors, and its\n"
	"qilin workers when it links libqilin. No restart, no flag, no code change.\n"
	"\n"
	"USAGE: qilin-observer [-p PID | -c CGROUP | -- CMD [ARGS...]] [-i SECS] [-d SECS]\n"
	"                      [--json] [--prometheus HOST:PORT] [-v] [interval [count]]\n"
	"\n"
	"EXAMPLES:\n"
	"    qilin-observer -p 1234              # a table every second until ^C\n"
	"    qilin-observer -p 1234 0.5 10       # every 0.5 s, 10 times\n"
	"    qilin-observer -p 1234 --json -d 5  # JSON lines (docs/observer-schema.json)\n"
	"    qilin-observer -p 1234 --prometheus 127.0.0.1:9435\n"
	"    qilin-observer -c /sys/fs/cgroup/system.slice/nginx.service\n"
	"    qilin-observer -- ./server --port 8080   # run it, observe it, exit with it\n"
	"\n"
	"Environment: QILIN_OBSERVER_NO_BTF_TP=1 uses classic tracepoints only.\n";

static const struct argp_option argp_opts[] = {
	TOOL_ARGP_OPTIONS("Process to observe (its whole thread group)",
			  "Report interval (default 1, fractions allowed)",
			  "One JSON object per interval on stdout",
			  "Say which programs and probes are used; libbpf warnings", "no-btf-tp",
			  "Classic tracepoints only (the fallback), no tp_btf", OPTION_HIDDEN,
			  "tp_btf only, as if tracefs were absent"),
	{ "cgroup", 'c', "CGROUP_PATH", 0, "Observe the tasks of this cgroup v2 folder", 0 },
	{ "prometheus", 'P', "HOST:PORT", 0, "Serve GET /metrics (Prometheus text) there", 0 },
	{ "self-cost", 'S', NULL, 0,
	  "At exit, print each BPF program's runs and ns per run (stderr)", 0 },
	{ 0 },
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	long v;
	char *end;

	switch (key) {
	case 'c':
		env.cgroup = arg;
		break;
	case 'P':
		env.prom = arg;
		break;
	case 'S':
		env.self_cost = true;
		break;
	case 'h':
		argp_state_help(state, stdout, ARGP_HELP_STD_HELP);
		break;
	case ARGP_KEY_ARG:
		if (env.npos == 0) {
			tool.interval = tool_parse_secs(state, arg, tool.min_secs);
		} else if (env.npos == 1) {
			errno = 0;
			v = strtol(arg, &end, 10);
			if (errno || end == arg || *end || v <= 0)
				argp_error(state, "invalid count: %s", arg);
			env.count = v;
		} else {
			argp_error(state, "unexpected argument: %s", arg);
		}
		env.npos++;
		break;
	case ARGP_KEY_END:
		if ((tool.pid != 0) + (env.cgroup != NULL) + (env.cmd != NULL) != 1)
			argp_error(state, "give one of -p PID, -c CGROUP_PATH or -- CMD");
		/* fall through - tool_parse_key() checks -C against -B */
	default:
		/* -p, -i, -d, --json, -v, --no-btf-tp (C), --only-btf (B). */
		return tool_parse_key(&tool, key, arg, state) ? 0 : ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* ------------------------------------------------------------ choosing programs */

/* An optional event has neither program: say what is lost (always: the
 * report would otherwise show a silent zero). */
static void lost(const char *event, const char *what)
{
	fprintf(stderr, NAME ": warning: no usable tracepoint %s: %s\n", event, what);
}

/*
 * Turn on one program of each pair, and set the knobs that describe the raw
 * tracepoint prototypes. Returns 0, or -errno after printing why.
 */
static int choose_programs(struct qilin_observer_bpf *skel, struct tool_chooser *c)
{
	/* Optional events on sockets: the tp_btf programs read typed
	 * arguments that every kernel with these raw tracepoints has. */
	static const struct {
		struct tool_pair pair;
		const char *lost;
	} sock_events[] = {
		{ { "sock state", "set_state", "sock:inet_sock_set_state", .fits = true },
		  "sockets opened after attach are not seen" },
		{ { "retransmit", "retransmit", "tcp:tcp_retransmit_skb", .fits = true },
		  "retransmits are not counted" },
		{ { "synack retrans", "retransmit_synack", "tcp:tcp_retransmit_synack",
		    .fits = true },
		  "SYN-ACK retransmits are not counted" },
	};
	struct bpf_object *obj = skel->obj;
	struct tool_pair complete = { .what = "complete",
				      .prog = "complete",
				      .event = "io_uring:io_uring_complete" };
	struct tool_pair overflow = { .what = "cq overflow",
				      .prog = "cqe_overflow",
				      .event = "io_uring:io_uring_cqe_overflow" };
	struct tool_pair punt = { .what = "iowq punt",
				  .prog = "queue_async_work",
				  .event = "io_uring:io_uring_queue_async_work" };
	struct tool_pair enter = { .what = "enter",
				   .prog = "enter",
				   .event = "syscalls:sys_enter_io_uring_enter",
				   .raw = "sys_enter",
				   .fits = true,
				   .classic_first = true };
	enum tool_arg_kind k;
	int ret;

	tool_autoload_none(obj);

	/* Submissions (required); rejected at preparation (5.17+, optional). */
	if (tool_choose_submit(c, obj, "submit", "submit failed",
			       &skel->rodata->submit_sqe_ring_arg,
			       &skel->rodata->req_failed_ring_arg))
		return -ENOENT;

	/* Completions (required). The tp_btf form needs req as a pointer. */
	k = tool_tp_arg(c->btf, "io_uring_complete", 2);
	complete.fits = (k == TOOL_ARG_CQE || k == TOOL_ARG_OTHER) &&
			tool_tp_arg(c->btf, "io_uring_complete", 1) == TOOL_ARG_PTR;
	ret = tool_pick(c, obj, &complete);
	if (ret < 0)
		return tool_missing(c, complete.event);
	if (ret == TOOL_PICKED_BTF)
		skel->rodata->complete_layout = k == TOOL_ARG_CQE ? OBS_COMPLETE_CQE :
								    OBS_COMPLETE_ARGS;

	/* CQ overflow (5.19+, optional). */
	overflow.fits = tool_tp_arg(c->btf, "io_uring_cqe_overflow", 3) == TOOL_ARG_OTHER;
	if (tool_pick(c, obj, &overflow) < 0)
		lost(overflow.event, "CQ overflows are not counted");

	/* io-wq punts (optional): the request is the first argument, or the
	 * third on older kernels. */
	k = tool_tp_arg(c->btf, "io_uring_queue_async_work", 0);
	punt.fits = k == TOOL_ARG_KIOCB ||
		    tool_tp_arg(c->btf, "io_uring_queue_async_work", 2) == TOOL_ARG_PTR;
	ret = tool_pick(c, obj, &punt);
	if (ret == TOOL_PICKED_BTF)
		skel->rodata->punt_req_arg = k == TOOL_ARG_KIOCB ? 0 : 2;
	else if (ret < 0)
		lost(punt.event, "io-wq punts are not counted");

	/* io_uring_enter: the syscall tracepoint first (it fires for this one
	 * system call only), the raw sys_enter (every system call) second. */
	if (tool_pick(c, obj, &enter) < 0)
		return tool_missing(c, enter.event);

	/* Sockets: state changes (connect, listen, close), retransmits. */
	for (size_t i = 0; i < sizeof(sock_events) / sizeof(sock_events[0]); i++)
		if (tool_pick(c, obj, &sock_events[i].pair) < 0)
			lost(sock_events[i].pair.event, sock_events[i].lost);

	/* Always: the USDT programs (attached by hand to wherever libqilin is). */
	bpf_program__set_autoload(skel->progs.usdt_tick, true);
	bpf_program__set_autoload(skel->progs.usdt_task_run, true);
	bpf_program__set_autoload(skel->progs.usdt_park, true);
	return 0;
}

/* ------------------------------------------------------------ attach helpers */

/*
 * Load qilin-observer-scan.bpf.c on the main object's socket map, run its
 * task_file iterator once (it puts the target's open TCP sockets in the map),
 * and unload it. Returns the number of sockets added, or -errno.
 */
static long scan_sockets(struct qilin_observer_bpf *main_skel, __u32 tgid, __u64 cgid)
{
	struct qilin_observer_scan_bpf *skel;
	struct bpf_link *link = NULL;
	char buf[256];
	long ret = 0;
	ssize_t n;
	int fd;

	skel = qilin_observer_scan_bpf__open();
	if (!skel)
		return -errno;
	skel->rodata->target_tgid = tgid;
	skel->rodata->target_cgid = cgid;
	ret = bpf_map__reuse_fd(skel->maps.socks, bpf_map__fd(main_skel->maps.socks));
	if (!ret)
		ret = bpf_map__reuse_fd(skel->maps.listeners,
					bpf_map__fd(main_skel->maps.listeners));
	if (!ret)
		ret = qilin_observer_scan_bpf__load(skel);
	if (ret)
		goto out;
	link = bpf_program__attach_iter(skel->progs.scan_files, NULL);
	if (!link) {
		ret = -errno;
		goto out;
	}
	fd = bpf_iter_create(bpf_link__fd(link));
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	ret = n < 0 ? -errno : (long)skel->bss->scanned;
	close(fd);
out:
	bpf_link__destroy(link);
	qilin_observer_scan_bpf__destroy(skel);
	return ret;
}

struct usdt_state {
	struct bpf_link *links[3];
	bool attached;
	bool said; /* the "no libqilin" note was printed */
	char path[PATH_MAX];
};

/* Where the target's libqilin is: a libqilin.so* mapped in /proc/PID/maps,
 * else the executable itself (static link). */
static void qilin_path(pid_t pid, char *out, size_t len)
{
	char maps[64], line[PATH_MAX + 128];
	FILE *f;

	snprintf(out, len, "/proc/%d/exe", (int)pid);
	snprintf(maps, sizeof(maps), "/proc/%d/maps", (int)pid);
	f = fopen(maps, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *p = strchr(line, '/'), *base;

		if (!p)
			continue;
		p[strcspn(p, "\n")] = 0;
		base = strrchr(p, '/') + 1;
		if (!strncmp(base, "libqilin.so", 11) || !strncmp(base, "libqilin-", 9)) {
			snprintf(out, len, "/proc/%d/root%s", (int)pid, p);
			break;
		}
	}
	fclose(f);
}

/* Attach the three USDT programs to path for pid; all or none. */
static int usdt_attach_path(struct qilin_observer_bpf *skel, struct usdt_state *u, pid_t pid,
			    const char *path)
{
	struct bpf_program *progs[3] = { skel->progs.usdt_tick, skel->progs.usdt_task_run,
					 skel->progs.usdt_park };
	static const char *const names[3] = { "tick", "task_run", "worker_park" };
	int err = 0;

	for (int i = 0; i < 3; i++) {
		u->links[i] =
			bpf_program__attach_usdt(progs[i], pid, path, "qilin", names[i], NULL);
		if (!u->links[i]) {
			err = -errno;
			for (int j = 0; j < i; j++) {
				bpf_link__destroy(u->links[j]);
				u->links[j] = NULL;
			}
			return err;
		}
	}
	u->attached = true;
	snprintf(u->path, sizeof(u->path), "%s", path);
	if (tool.verbose)
		fprintf(stderr, NAME ": qilin USDT probes attached in %s\n", path);
	return 0;
}

/* Try (again) to find libqilin in the target. Quiet unless -v. */
static void usdt_try(struct qilin_observer_bpf *skel, struct usdt_state *u, pid_t pid,
		     const char *path_hint)
{
	char path[PATH_MAX];
	int err;

	if (u->attached || !pid)
		return;
	if (path_hint)
		snprintf(path, sizeof(path), "%s", path_hint);
	else
		qilin_path(pid, path, sizeof(path));
	tool.quiet_libbpf = u->said; /* libbpf's own complaint: once, like ours */
	err = usdt_attach_path(skel, u, pid, path);
	tool.quiet_libbpf = false;
	if (err && !u->said && tool.verbose) {
		fprintf(stderr,
			NAME ": the target does not link libqilin (no qilin USDT probes in "
			     "%s: %s): the worker section stays empty; rings, latency, "
			     "retransmits and errors are still reported\n",
			path, strerror(-err));
	}
	if (err)
		u->said = true;
}

static void usdt_detach(struct usdt_state *u)
{
	for (int i = 0; i < 3; i++) {
		bpf_link__destroy(u->links[i]);
		u->links[i] = NULL;
	}
	u->attached = false;
}

/* cmd[0] as execvp would find it, for the static-link USDT attach before
 * exec. Returns false when it is not found (execvp will report). */
static bool resolve_cmd(const char *cmd, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (strchr(cmd, '/')) {
		snprintf(out, len, "%s", cmd);
		return access(out, X_OK) == 0;
	}
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, n ? path : ".", cmd);
		if (access(buf, X_OK) == 0) {
			snprintf(out, len, "%s", buf);
			return true;
		}
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

/* ------------------------------------------------------------ reporting */

struct run {
	struct qilin_observer_bpf *skel;
	struct obs_maps maps;
	struct obs_report_ctx rc;
	int ncpus;
	double last_report; /* monotonic */
};

static int render_prom(FILE *f, void *arg)
{
	struct run *r = arg;
	struct obs_snap s;
	int ret = obs_snap_read(&r->maps, r->skel->bss->epoch, r->ncpus, &s);

	if (ret)
		return ret;
	ret = obs_print_prometheus(f, &s, &r->rc);
	obs_snap_free(&s);
	return ret;
}

/* One interval report on stdout; then a new epoch for the _max gauges. */
static int report(struct run *r)
{
	double now = tool_now();
	struct obs_snap s;
	int ret;

	ret = obs_snap_read(&r->maps, r->skel->bss->epoch, r->ncpus, &s);
	if (ret) {
		fprintf(stderr, NAME ": reading the BPF maps: %s\n", strerror(-ret));
		return ret;
	}
	r->rc.interval_s = now - r->last_report;
	if (tool.json)
		ret = obs_print_json(stdout, &s, &r->rc);
	else
		ret = obs_print_table(stdout, &s, &r->rc);
	fflush(stdout);
	r->rc.prev_sqes = s.sqes;
	r->rc.prev_enters = s.c[OBS_ENTERS];
	r->skel->bss->epoch++;
	r->last_report = now;
	obs_snap_free(&s);
	return ret;
}

/* --self-cost: what each program cost in the kernel while attached
 * (BPF_STATS_RUN_TIME, enabled for the life of this process only). */
static void print_self_cost(struct qilin_observer_bpf *skel)
{
	unsigned long long runs = 0, ns = 0;
	struct bpf_program *prog;

	fprintf(stderr, NAME ": self-cost %-24s %12s %14s %8s\n", "PROGRAM", "RUNS", "NS",
		"NS/RUN");
	bpf_object__for_each_program(prog, skel->obj)
	{
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(prog);

		if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len) || !info.run_cnt)
			continue;
		fprintf(stderr, NAME ": self-cost %-24s %12llu %14llu %8.1f\n",
			bpf_program__name(prog), (unsigned long long)info.run_cnt,
			(unsigned long long)info.run_time_ns,
			(double)info.run_time_ns / (double)info.run_cnt);
		runs += info.run_cnt;
		ns += info.run_time_ns;
	}
	fprintf(stderr, NAME ": self-cost %-24s %12llu %14llu %8.1f\n", "all", runs, ns,
		runs ? (double)ns / (double)runs : 0.0);
}

static void print_caveats(struct run *r)
{
	struct obs_snap s;
	unsigned long long misses = tool_prog_misses(r->skel->obj);

	if (obs_snap_read(&r->maps, r->skel->bss->epoch, r->ncpus, &s))
		return;
	if (s.c[OBS_RINGS_LOST])
		fprintf(stderr, NAME ": warning: more than %d rings; %llu were not followed\n",
			OBS_MAX_RINGS, (unsigned long long)s.c[OBS_RINGS_LOST]);
	if (s.c[OBS_SOCKS_LOST])
		fprintf(stderr, NAME ": warning: socket map full; %llu sockets not followed\n",
			(unsigned long long)s.c[OBS_SOCKS_LOST]);
	if (s.c[OBS_ENDPOINTS_LOST])
		fprintf(stderr,
			NAME ": warning: endpoint map full; %llu retransmits are in the "
			     "total only\n",
			(unsigned long long)s.c[OBS_ENDPOINTS_LOST]);
	if (s.c[OBS_LAT_LOST] && tool.verbose)
		fprintf(stderr,
			NAME ": %llu requests shared a latency slot with another in "
			     "flight; the earlier one was not timed\n",
			(unsigned long long)s.c[OBS_LAT_LOST]);
	if (misses)
		fprintf(stderr,
			NAME ": warning: the kernel skipped %llu runs of these programs "
			     "(another BPF program was running on that CPU)\n",
			misses);
	if (tool.verbose)
		fprintf(stderr, NAME ": %llu target sockets followed, %llu CQ overflows\n",
			(unsigned long long)s.c[OBS_SOCKS_SEEN],
			(unsigned long long)s.c[OBS_CQ_OVERFLOWS]);
	if (tool.verbose && s.c[OBS_RETRANS_LATE])
		fprintf(stderr,
			NAME ": %llu of the %llu retransmitted segments were counted at a "
			     "state change of their socket: their tcp_retransmit_skb event did "
			     "not reach the observer\n",
			(unsigned long long)s.c[OBS_RETRANS_LATE],
			(unsigned long long)s.c[OBS_RETRANS]);
	obs_snap_free(&s);
}

/*
 * The main loop. Returns 0 when it ended normally (signal, -d, count, target
 * exit: *exited says which), 1 on a runtime error.
 */
static int loop(struct run *r, struct usdt_state *u, pid_t tgid, int lfd, bool *exited)
{
	double start = tool_now(), next = start + tool.interval, end = 0;
	struct pollfd pfd[2];
	int pidfd = -1, npfd = 0, pid_idx = -1, http_idx = -1, ret;
	long reports = 0;

	*exited = false;
	r->last_report = start;
	if (tool.duration)
		end = start + tool.duration;
	if (tgid) {
		pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
		if (pidfd >= 0) {
			pid_idx = npfd;
			pfd[npfd++] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
		}
	}
	if (lfd >= 0) {
		http_idx = npfd;
		pfd[npfd++] = (struct pollfd){ .fd = lfd, .events = POLLIN };
	}
	if (!tool.json) {
		if (env.cgroup)
			printf("Observing cgroup %s", env.cgroup);
		else
			printf("Observing pid %d", (int)tgid);
		printf("; interval %.3g s. Ctrl-C to stop.\n\n", tool.interval);
		fflush(stdout);
	}
	for (;;) {
		double now = tool_now(), wake = next;
		int timeout;

		if (tool_exiting)
			break;
		if (end && end < wake)
			wake = end;
		timeout = (int)((wake - now) * 1000 + 1);
		if (timeout < 0)
			timeout = 0;
		if (tgid && pidfd < 0 && timeout > 200)
			timeout = 200;
		ret = poll(pfd, npfd, timeout);
		if (ret < 0 && errno != EINTR) {
			fprintf(stderr, NAME ": poll: %s\n", strerror(errno));
			goto fail;
		}
		if (ret > 0 && http_idx >= 0 && (pfd[http_idx].revents & POLLIN)) {
			ret = obs_http_serve_one(lfd, render_prom, r);
			if (ret)
				fprintf(stderr, NAME ": /metrics: %s\n", strerror(-ret));
		}
		if ((pid_idx >= 0 && (pfd[pid_idx].revents & POLLIN)) ||
		    (tgid && pidfd < 0 && kill(tgid, 0) && errno == ESRCH)) {
			*exited = true;
			break;
		}
		now = tool_now();
		if (now >= next - 0.0005 || (end && now >= end - 0.0005)) {
			if (report(r))
				goto fail;
			reports++;
			next += tool.interval;
			if (next < now)
				next = now + tool.interval;
			if (u && !u->attached)
				usdt_try(r->skel, u, tgid, NULL);
			if ((env.count && reports >= env.count) || (end && now >= end - 0.0005))
				goto done;
		}
	}
	/* Target gone, or a signal: the last (partial) interval. */
	r->rc.target_exited = *exited;
	if (report(r))
		goto fail;
done:
	if (pidfd >= 0)
		close(pidfd);
	return 0;
fail:
	if (pidfd >= 0)
		close(pidfd);
	return 1;
}

/* ------------------------------------------------------------ main */

/* Split argv at the first "--": what follows is CMD. Returns the new argc. */
static int split_cmd(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			if (i + 1 < argc)
				env.cmd = argv + i + 1;
			argv[i] = NULL;
			return i;
		}
	return argc;
}

int main(int argc, char **argv)
{
	static const struct argp argp = {
		.options = argp_opts,
		.parser = parse_arg,
		.doc = argp_doc,
	};
	struct qilin_observer_bpf *skel = NULL;
	struct usdt_state usdt = { 0 };
	struct tool_chooser ch = { 0 };
	struct tool_child child = { 0 };
	struct run run = { 0 };
	const char *nb = getenv("QILIN_OBSERVER_NO_BTF_TP"), *why;
	int cg_fd = -1, lfd = -1, stats_fd = -1, ret = 1, err, status;
	char cmd_path[PATH_MAX];
	bool exited = false, have_cmd_path = false;
	long scanned;
	pid_t tgid = 0;

	argp_err_exit_status = 2;
	argc = split_cmd(argc, argv);
	if (argp_parse(&argp, argc, argv, 0, NULL, NULL))
		return 2;
	if (nb && *nb && strcmp(nb, "0"))
		tool.no_btf_tp = true;
	tool_libbpf_print_to(&tool);

	if (tool_chooser_init(&ch, &tool))
		return 1;
	obs_names_init(ch.btf);

	/* The target. */
	if (tool.pid) {
		tgid = tool_target_pid(&tool, tool.pid);
		if (tgid < 0)
			goto out;
	} else if (env.cgroup) {
		struct statfs sfs;

		cg_fd = open(env.cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (cg_fd < 0) {
			fprintf(stderr, NAME ": cannot open cgroup %s: %s\n", env.cgroup,
				strerror(errno));
			goto out;
		}
		if (fstatfs(cg_fd, &sfs) || sfs.f_type != CGROUP2_MAGIC) {
			fprintf(stderr,
				NAME ": %s is not a cgroup v2 folder (mounted at "
				     "/sys/fs/cgroup on most systems)\n",
				env.cgroup);
			goto out;
		}
	} else {
		have_cmd_path = resolve_cmd(env.cmd[0], cmd_path, sizeof(cmd_path));
		tgid = tool_child_start(&tool, &child, env.cmd);
		if (tgid < 0)
			goto out;
	}
	tool_catch_signals();

	/* Before loading anything: a bad address fails fast. */
	if (env.prom) {
		lfd = obs_http_listen(env.prom, &why);
		if (lfd < 0) {
			fprintf(stderr, NAME ": cannot serve /metrics on %s: %s (%s)\n", env.prom,
				strerror(-lfd), why);
			goto out;
		}
	}

	skel = qilin_observer_bpf__open();
	if (!skel) {
		fprintf(stderr, NAME ": cannot open the BPF object: %s\n", strerror(errno));
		goto out;
	}
	skel->rodata->target_tgid = (__u32)tgid;
	if (cg_fd >= 0) {
		struct stat st;

		if (fstat(cg_fd, &st) == 0)
			skel->rodata->target_cgid = st.st_ino;
	}
	if (choose_programs(skel, &ch))
		goto out;
	if (env.self_cost) {
		stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
		if (stats_fd < 0)
			fprintf(stderr,
				NAME ": warning: --self-cost: cannot enable BPF run-time "
				     "statistics: %s\n",
				strerror(errno));
	}
	err = qilin_observer_bpf__load(skel);
	if (err) {
		tool_say_load_failed(&tool, err);
		goto out;
	}
	if (cg_fd >= 0) {
		__u32 zero = 0;

		if (bpf_map_update_elem(bpf_map__fd(skel->maps.cgroup_map), &zero, &cg_fd, 0)) {
			fprintf(stderr, NAME ": cannot use cgroup %s: %s\n", env.cgroup,
				strerror(errno));
			goto out;
		}
	}
	err = qilin_observer_bpf__attach(skel);
	if (err) {
		tool_say_attach_failed(&tool, err);
		goto out;
	}
	scanned = scan_sockets(skel, (__u32)tgid, skel->rodata->target_cgid);
	if (scanned < 0)
		fprintf(stderr,
			NAME ": warning: cannot scan the target's open sockets (%s): "
			     "retransmits on sockets idle since attach are missed\n",
			strerror((int)-scanned));
	else if (tool.verbose)
		fprintf(stderr, NAME ": %ld open TCP sockets of the target found at attach\n",
			scanned);
	if (tgid && tool.pid && kill(tgid, 0) && errno == ESRCH) {
		fprintf(stderr, NAME ": no process with pid %d (it exited while attaching)\n",
			(int)tgid);
		goto out;
	}
	if (env.cgroup && tool.verbose)
		fprintf(stderr, NAME ": cgroup mode: the qilin worker section is per process and "
				     "stays empty\n");
	if (tgid)
		usdt_try(skel, &usdt, tgid, have_cmd_path ? cmd_path : NULL);


	run.skel = skel;
	run.ncpus = libbpf_num_possible_cpus();
	run.maps = (struct obs_maps){
		.counters = bpf_map__fd(skel->maps.counters),
		.rings = bpf_map__fd(skel->maps.rings),
		.op_lat = bpf_map__fd(skel->maps.op_lat),
		.punts = bpf_map__fd(skel->maps.punts),
		.errs = bpf_map__fd(skel->maps.errs),
		.workers = bpf_map__fd(skel->maps.workers),
		.sched_delay = bpf_map__fd(skel->maps.sched_delay),
		.endpoints = bpf_map__fd(skel->maps.endpoints),
	};
	run.rc.pid = env.cgroup ? 0 : tgid;
	run.rc.cgroup = env.cgroup;

	/* Attached: let CMD exec; learn whether exec failed. */
	if (env.cmd && tool_child_release(&tool, &child, env.cmd[0])) {
		ret = 127;
		goto out;
	}

	ret = loop(&run, env.cgroup ? NULL : &usdt, tgid, lfd, &exited);
	if (exited)
		fprintf(stderr, NAME ": target %d exited\n", (int)tgid);
	print_caveats(&run);
	if (env.self_cost)
		print_self_cost(skel);

	if (env.cmd) {
		/* Stop observing, then wait for CMD whatever ended the loop. */
		usdt_detach(&usdt);
		qilin_observer_bpf__destroy(skel);
		skel = NULL;
		status = tool_child_wait(&tool, &child);
		if (ret == 0 && status >= 0)
			ret = status;
	}

out:
	/* CMD never released: EOF on its pipe makes it _exit(127). */
	tool_child_abort(&child);
	if (lfd >= 0)
		close(lfd);
	if (stats_fd >= 0)
		close(stats_fd);
	if (cg_fd >= 0)
		close(cg_fd);
	usdt_detach(&usdt);
	qilin_observer_bpf__destroy(skel);
	tool_chooser_fini(&ch);
	return ret;
}
