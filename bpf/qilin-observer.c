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

#define NAME "qilin-observer"
#define VMLINUX_BTF "/sys/kernel/btf/vmlinux"
#define TRACEFS_HINT "mount -t tracefs nodev /sys/kernel/tracing"
#define CGROUP2_MAGIC 0x63677270

/* Capability bits (linux/capability.h copies may lack the last two). */
#define OBS_CAP_SYS_ADMIN 21
#define OBS_CAP_PERFMON 38
#define OBS_CAP_BPF 39

static struct env {
	pid_t pid;	    /* -p */
	const char *cgroup; /* -c */
	char **cmd;	    /* after --, NULL-terminated */
	double interval;    /* -i or the first positional; default 1 */
	double duration;    /* -d, 0 = unbounded */
	long count;	    /* second positional, 0 = unbounded */
	int npos;	    /* positionals seen */
	bool json;
	const char *prom; /* --prometheus HOST:PORT */
	bool verbose;
	bool no_btf_tp; /* --no-btf-tp or QILIN_OBSERVER_NO_BTF_TP=1 */
	bool only_btf;	/* --only-btf: as if tracefs were absent */
	bool self_cost; /* --self-cost: kernel run time of each program, at exit */
} env = { .interval = 1.0 };

static volatile sig_atomic_t exiting;
static bool quiet_libbpf;
static volatile pid_t child_pid;

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
	{ "pid", 'p', "PID", 0, "Process to observe (its whole thread group)", 0 },
	{ "cgroup", 'c', "CGROUP_PATH", 0, "Observe the tasks of this cgroup v2 folder", 0 },
	{ "interval", 'i', "SECS", 0, "Report interval (default 1, fractions allowed)", 0 },
	{ "duration", 'd', "SECS", 0, "Stop after SECS seconds", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per interval on stdout", 0 },
	{ "prometheus", 'P', "HOST:PORT", 0, "Serve GET /metrics (Prometheus text) there", 0 },
	{ "verbose", 'v', NULL, 0, "Say which programs and probes are used; libbpf warnings", 0 },
	{ "no-btf-tp", 'C', NULL, 0, "Classic tracepoints only (the fallback), no tp_btf", 0 },
	{ "only-btf", 'B', NULL, OPTION_HIDDEN, "tp_btf only, as if tracefs were absent", 0 },
	{ "self-cost", 'S', NULL, 0,
	  "At exit, print each BPF program's runs and ns per run (stderr)", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0 },
	{ 0 },
};

static double parse_secs(const char *arg, struct argp_state *state)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v >= 0.001) || v > 1e7)
		argp_error(state, "invalid number of seconds: %s", arg);
	return v;
}

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	long v;
	char *end;

	switch (key) {
	case 'p':
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || end == arg || *end || v <= 0 || v > INT_MAX)
			argp_error(state, "invalid PID: %s", arg);
		env.pid = (pid_t)v;
		break;
	case 'c':
		env.cgroup = arg;
		break;
	case 'i':
		env.interval = parse_secs(arg, state);
		break;
	case 'd':
		env.duration = parse_secs(arg, state);
		break;
	case 'j':
		env.json = true;
		break;
	case 'P':
		env.prom = arg;
		break;
	case 'v':
		env.verbose = true;
		break;
	case 'C':
		env.no_btf_tp = true;
		break;
	case 'B':
		env.only_btf = true;
		break;
	case 'S':
		env.self_cost = true;
		break;
	case 'h':
		argp_state_help(state, stdout, ARGP_HELP_STD_HELP);
		break;
	case ARGP_KEY_ARG:
		if (env.npos == 0) {
			env.interval = parse_secs(arg, state);
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
		if ((env.pid != 0) + (env.cgroup != NULL) + (env.cmd != NULL) != 1)
			argp_error(state, "give one of -p PID, -c CGROUP_PATH or -- CMD");
		if (env.no_btf_tp && env.only_btf)
			argp_error(state, "--no-btf-tp and --only-btf exclude each other");
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* ------------------------------------------------------------ environment */

static int libbpf_print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (!env.verbose || level == LIBBPF_DEBUG || quiet_libbpf)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static void on_signal(int sig)
{
	exiting = sig;
	if (child_pid > 0)
		kill(child_pid, sig);
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON. True when unreadable: the
 * load will tell then. */
static bool have_bpf_caps(void)
{
	unsigned long long eff;
	char line[256];
	bool found = false;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return true;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			found = true;
			break;
		}
	fclose(f);
	if (!found)
		return true;
	return (eff >> OBS_CAP_SYS_ADMIN & 1) ||
	       ((eff >> OBS_CAP_BPF & 1) && (eff >> OBS_CAP_PERFMON & 1));
}

static void explain_eperm(void)
{
	fprintf(stderr, NAME ": permission denied loading BPF programs: run as root, or with "
			     "CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8); a kernel "
			     "in lockdown mode refuses them even to root\n");
}

/* The thread group of pid, or -errno (-ENOENT: no such process). */
static pid_t pid_to_tgid(pid_t pid)
{
	char path[64], line[256];
	pid_t tgid = -ESRCH;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

static const char *tracefs_events(int *err)
{
	static const char *const dirs[] = {
		"/sys/kernel/tracing/events",
		"/sys/kernel/debug/tracing/events",
	};

	*err = ENOENT;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (access(dirs[i], F_OK) == 0)
			return dirs[i];
		if (errno == EACCES)
			*err = EACCES;
	}
	return NULL;
}

/* ------------------------------------------------------------ choosing programs */

struct chooser {
	struct btf *btf;
	const char *events;
	int events_err;
	bool probe_eperm;
};

enum arg_kind { ARG_ABSENT, ARG_KIOCB, ARG_CQE, ARG_PTR, ARG_OTHER };

static const struct btf_type *skip_mods(const struct btf *btf, __u32 id)
{
	const struct btf_type *t = btf__type_by_id(btf, id);

	while (t && (btf_is_mod(t) || btf_is_typedef(t)))
		t = btf__type_by_id(btf, t->type);
	return t;
}

/* What argument idx (0-based, after the hidden void *__data) of raw
 * tracepoint tp is, from the BTF typedef btf_trace_<tp>. */
static enum arg_kind tp_arg(const struct btf *btf, const char *tp, unsigned int idx)
{
	const struct btf_type *t;
	const struct btf_param *p;
	const char *n;
	char name[128];
	int id;

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	id = btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
	if (id < 0)
		return ARG_ABSENT;
	t = skip_mods(btf, id);
	if (!t || !btf_is_ptr(t))
		return ARG_ABSENT;
	t = skip_mods(btf, t->type);
	if (!t || !btf_is_func_proto(t) || btf_vlen(t) < idx + 2)
		return ARG_ABSENT;
	p = btf_params(t) + idx + 1;
	t = skip_mods(btf, p->type);
	if (!t || !btf_is_ptr(t))
		return ARG_OTHER;
	t = skip_mods(btf, t->type);
	if (!t || !btf_is_struct(t))
		return ARG_PTR;
	n = btf__name_by_offset(btf, t->name_off);
	if (!strcmp(n, "io_kiocb"))
		return ARG_KIOCB;
	if (!strcmp(n, "io_uring_cqe"))
		return ARG_CQE;
	return ARG_PTR;
}

/* The kernel has raw tracepoint tp and loads a minimal tp_btf program on it. */
static bool tp_btf_works(struct chooser *c, const char *tp)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_RAW_TP);
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	char name[128];
	int id, fd;

	if (env.no_btf_tp)
		return false;
	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	id = btf__find_by_name_kind(c->btf, name, BTF_KIND_TYPEDEF);
	if (id < 0)
		return false;
	opts.attach_btf_id = id;
	fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, NULL, "Dual MIT/GPL", insns, 2, &opts);
	if (fd < 0) {
		if (errno == EPERM)
			c->probe_eperm = true;
		if (env.verbose)
			fprintf(stderr, NAME ": tp_btf/%s does not load: %s\n", tp,
				strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

static bool tp_exists(const struct chooser *c, const char *category, const char *event)
{
	char path[PATH_MAX];

	if (!c->events || env.only_btf)
		return false;
	snprintf(path, sizeof(path), "%s/%s/%s", c->events, category, event);
	return access(path, F_OK) == 0;
}

static void use(struct bpf_program *prog, const char *what)
{
	bpf_program__set_autoload(prog, true);
	if (env.verbose)
		fprintf(stderr, NAME ": %-14s %s\n", what, bpf_program__section_name(prog));
}

/* A required event has neither program: say why, return -ENOENT. */
static int missing(const struct chooser *c, const char *event)
{
	const char *why = env.no_btf_tp ? "tp_btf programs are off (QILIN_OBSERVER_NO_BTF_TP)" :
					  "this kernel has no tp_btf tracepoint for it";

	if (c->probe_eperm)
		explain_eperm();
	else if (env.only_btf)
		fprintf(stderr,
			NAME ": %s needs a classic tracepoint and tracefs is off "
			     "(--only-btf)\n",
			event);
	else if (!c->events && c->events_err == EACCES)
		fprintf(stderr,
			NAME ": %s needs a classic tracepoint (%s) and tracefs cannot be "
			     "read by this user: run as root\n",
			event, why);
	else if (!c->events)
		fprintf(stderr,
			NAME ": %s needs a classic tracepoint (%s) and tracefs is not "
			     "mounted: %s\n",
			event, why, TRACEFS_HINT);
	else
		fprintf(stderr,
			NAME ": this kernel has no tracepoint %s (io_uring tracepoints "
			     "need CONFIG_IO_URING and Linux 5.5+)\n",
			event);
	return -ENOENT;
}

/* An optional event has neither program: say what is lost (always: the
 * report would otherwise show a silent zero). */
static void lost(const char *event, const char *what)
{
	fprintf(stderr, NAME ": warning: no usable tracepoint %s: %s\n", event, what);
}

static int choose_programs(struct qilin_observer_bpf *skel, struct chooser *c)
{
	struct bpf_program *prog;
	enum arg_kind k;

	bpf_object__for_each_program(prog, skel->obj) bpf_program__set_autoload(prog, false);

	/* Submissions (required). */
	if (tp_arg(c->btf, "io_uring_submit_req", 0) == ARG_KIOCB &&
	    tp_btf_works(c, "io_uring_submit_req")) {
		use(skel->progs.submit_req_btf, "submit");
	} else if (((k = tp_arg(c->btf, "io_uring_submit_sqe", 0)) == ARG_KIOCB || k == ARG_PTR) &&
		   tp_btf_works(c, "io_uring_submit_sqe")) {
		skel->rodata->submit_sqe_ring_arg = k == ARG_KIOCB ? OBS_ARG_REQ : OBS_ARG_CTX;
		use(skel->progs.submit_sqe_btf, "submit");
	} else if (tp_exists(c, "io_uring", "io_uring_submit_req")) {
		use(skel->progs.submit_req_tp, "submit");
	} else if (tp_exists(c, "io_uring", "io_uring_submit_sqe")) {
		use(skel->progs.submit_sqe_tp, "submit");
	} else {
		return missing(c, "io_uring:io_uring_submit_req");
	}

	/* Rejected at preparation (5.17+, optional). */
	k = tp_arg(c->btf, "io_uring_req_failed", 1);
	if (k != ARG_ABSENT && tp_btf_works(c, "io_uring_req_failed")) {
		skel->rodata->req_failed_ring_arg = k == ARG_KIOCB ? OBS_ARG_REQ :
						    k == ARG_PTR   ? OBS_ARG_CTX :
								     OBS_ARG_NONE;
		use(skel->progs.req_failed_btf, "submit failed");
	} else if (tp_exists(c, "io_uring", "io_uring_req_failed")) {
		use(skel->progs.req_failed_tp, "submit failed");
	} else if (env.verbose) {
		fprintf(stderr, NAME ": no io_uring_req_failed (before 5.17): SQEs rejected at "
				     "preparation are not counted\n");
	}

	/* Completions (required). The tp_btf form needs req as a pointer. */
	k = tp_arg(c->btf, "io_uring_complete", 2);
	if ((k == ARG_CQE || k == ARG_OTHER) && tp_arg(c->btf, "io_uring_complete", 1) == ARG_PTR &&
	    tp_btf_works(c, "io_uring_complete")) {
		skel->rodata->complete_layout = k == ARG_CQE ? OBS_COMPLETE_CQE : OBS_COMPLETE_ARGS;
		use(skel->progs.complete_btf, "complete");
	} else if (tp_exists(c, "io_uring", "io_uring_complete")) {
		use(skel->progs.complete_tp, "complete");
	} else {
		return missing(c, "io_uring:io_uring_complete");
	}

	/* CQ overflow (5.19+, optional). */
	if (tp_arg(c->btf, "io_uring_cqe_overflow", 3) == ARG_OTHER &&
	    tp_btf_works(c, "io_uring_cqe_overflow"))
		use(skel->progs.cqe_overflow_btf, "cq overflow");
	else if (tp_exists(c, "io_uring", "io_uring_cqe_overflow"))
		use(skel->progs.cqe_overflow_tp, "cq overflow");
	else
		lost("io_uring:io_uring_cqe_overflow", "CQ overflows are not counted");

	/* io-wq punts (optional). */
	if (tp_arg(c->btf, "io_uring_queue_async_work", 0) == ARG_KIOCB &&
	    tp_btf_works(c, "io_uring_queue_async_work")) {
		skel->rodata->punt_req_arg = 0;
		use(skel->progs.queue_async_work_btf, "iowq punt");
	} else if (tp_arg(c->btf, "io_uring_queue_async_work", 2) == ARG_PTR &&
		   tp_btf_works(c, "io_uring_queue_async_work")) {
		skel->rodata->punt_req_arg = 2;
		use(skel->progs.queue_async_work_btf, "iowq punt");
	} else if (tp_exists(c, "io_uring", "io_uring_queue_async_work")) {
		use(skel->progs.queue_async_work_tp, "iowq punt");
	} else {
		lost("io_uring:io_uring_queue_async_work", "io-wq punts are not counted");
	}

	/* io_uring_enter: the syscall tracepoint first (it fires for this one
	 * system call only), the raw sys_enter (every system call) second. */
	if (tp_exists(c, "syscalls", "sys_enter_io_uring_enter"))
		use(skel->progs.enter_tp, "enter");
	else if (tp_btf_works(c, "sys_enter"))
		use(skel->progs.enter_btf, "enter");
	else
		return missing(c, "syscalls:sys_enter_io_uring_enter");

	/* Sockets: state changes (connect, listen, close), sends/receives. */
	if (tp_btf_works(c, "inet_sock_set_state"))
		use(skel->progs.set_state_btf, "sock state");
	else if (tp_exists(c, "sock", "inet_sock_set_state"))
		use(skel->progs.set_state_tp, "sock state");
	else
		lost("sock:inet_sock_set_state", "sockets opened after attach are not seen");
	if (tp_btf_works(c, "tcp_retransmit_skb"))
		use(skel->progs.retransmit_btf, "retransmit");
	else if (tp_exists(c, "tcp", "tcp_retransmit_skb"))
		use(skel->progs.retransmit_tp, "retransmit");
	else
		lost("tcp:tcp_retransmit_skb", "retransmits are not counted");
	if (tp_btf_works(c, "tcp_retransmit_synack"))
		use(skel->progs.retransmit_synack_btf, "synack retrans");
	else if (tp_exists(c, "tcp", "tcp_retransmit_synack"))
		use(skel->progs.retransmit_synack_tp, "synack retrans");
	else
		lost("tcp:tcp_retransmit_synack", "SYN-ACK retransmits are not counted");

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
	if (env.verbose)
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
	quiet_libbpf = u->said; /* libbpf's own complaint: once, like ours */
	err = usdt_attach_path(skel, u, pid, path);
	quiet_libbpf = false;
	if (err && !u->said && env.verbose) {
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

/* ------------------------------------------------------------ the CMD form */

/* Fork a child that blocks on a pipe before exec'ing cmd. *go_fd releases
 * it; *err_fd gets errno if exec fails. Returns the pid or -errno. */
static pid_t spawn_paused(char **cmd, int *go_fd, int *err_fd)
{
	int go[2], err[2];
	pid_t pid;

	if (pipe2(go, O_CLOEXEC))
		return -errno;
	if (pipe2(err, O_CLOEXEC)) {
		int e = errno;

		close(go[0]);
		close(go[1]);
		return -e;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(go[0]);
		close(go[1]);
		close(err[0]);
		close(err[1]);
		return -e;
	}
	if (pid == 0) {
		char c;
		int e;

		close(go[1]);
		close(err[0]);
		if (read(go[0], &c, 1) != 1)
			_exit(127);
		close(go[0]);
		execvp(cmd[0], cmd);
		e = errno;
		if (write(err[1], &e, sizeof(e)) < 0)
			_exit(127);
		_exit(127);
	}
	close(go[0]);
	close(err[1]);
	*go_fd = go[1];
	*err_fd = err[0];
	return pid;
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
	double now = mono_now();
	struct obs_snap s;
	int ret;

	ret = obs_snap_read(&r->maps, r->skel->bss->epoch, r->ncpus, &s);
	if (ret) {
		fprintf(stderr, NAME ": reading the BPF maps: %s\n", strerror(-ret));
		return ret;
	}
	r->rc.interval_s = now - r->last_report;
	if (env.json)
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

/* Kernel-side runs skipped (another BPF program was running on that CPU). */
static unsigned long long prog_misses(struct qilin_observer_bpf *skel)
{
	unsigned long long misses = 0;
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, skel->obj)
	{
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(prog);

		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &info, &len))
			misses += info.recursion_misses;
	}
	return misses;
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
	unsigned long long misses = prog_misses(r->skel);

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
	if (s.c[OBS_LAT_LOST] && env.verbose)
		fprintf(stderr,
			NAME ": %llu requests shared a latency slot with another in "
			     "flight; the earlier one was not timed\n",
			(unsigned long long)s.c[OBS_LAT_LOST]);
	if (misses)
		fprintf(stderr,
			NAME ": warning: the kernel skipped %llu runs of these programs "
			     "(another BPF program was running on that CPU)\n",
			misses);
	if (env.verbose)
		fprintf(stderr, NAME ": %llu target sockets followed, %llu CQ overflows\n",
			(unsigned long long)s.c[OBS_SOCKS_SEEN],
			(unsigned long long)s.c[OBS_CQ_OVERFLOWS]);
	if (env.verbose && s.c[OBS_RETRANS_LATE])
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
	double start = mono_now(), next = start + env.interval, end = 0;
	struct pollfd pfd[2];
	int pidfd = -1, npfd = 0, pid_idx = -1, http_idx = -1, ret;
	long reports = 0;

	*exited = false;
	r->last_report = start;
	if (env.duration)
		end = start + env.duration;
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
	if (!env.json) {
		if (env.cgroup)
			printf("Observing cgroup %s", env.cgroup);
		else
			printf("Observing pid %d", (int)tgid);
		printf("; interval %.3g s. Ctrl-C to stop.\n\n", env.interval);
		fflush(stdout);
	}
	for (;;) {
		double now = mono_now(), wake = next;
		int timeout;

		if (exiting)
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
		now = mono_now();
		if (now >= next - 0.0005 || (end && now >= end - 0.0005)) {
			if (report(r))
				goto fail;
			reports++;
			next += env.interval;
			if (next < now)
				next = now + env.interval;
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
	struct sigaction sa = { .sa_handler = on_signal };
	struct usdt_state usdt = { 0 };
	struct chooser ch = { 0 };
	struct run run = { 0 };
	const char *nb = getenv("QILIN_OBSERVER_NO_BTF_TP"), *why;
	int go_fd = -1, err_fd = -1, cg_fd = -1, lfd = -1, stats_fd = -1, ret = 1, err, status;
	char cmd_path[PATH_MAX];
	bool exited = false, have_cmd_path = false;
	long scanned;
	pid_t tgid = 0;

	argp_err_exit_status = 2;
	argc = split_cmd(argc, argv);
	if (argp_parse(&argp, argc, argv, 0, NULL, NULL))
		return 2;
	if (nb && *nb && strcmp(nb, "0"))
		env.no_btf_tp = true;
	libbpf_set_print(libbpf_print_fn);

	if (!have_bpf_caps()) {
		explain_eperm();
		return 1;
	}
	if (access(VMLINUX_BTF, R_OK)) {
		fprintf(stderr,
			NAME ": no kernel BTF at %s (%s): the kernel needs "
			     "CONFIG_DEBUG_INFO_BTF=y for these CO-RE programs\n",
			VMLINUX_BTF, strerror(errno));
		return 1;
	}
	ch.btf = btf__load_vmlinux_btf();
	if (!ch.btf) {
		fprintf(stderr, NAME ": cannot read the kernel BTF at %s: %s\n", VMLINUX_BTF,
			strerror(errno));
		return 1;
	}
	ch.events = tracefs_events(&ch.events_err);
	obs_names_init(ch.btf);

	/* The target. */
	if (env.pid) {
		tgid = pid_to_tgid(env.pid);
		if (tgid == -ENOENT || tgid == -ESRCH) {
			fprintf(stderr, NAME ": no process with pid %d\n", (int)env.pid);
			goto out;
		}
		if (tgid < 0) {
			fprintf(stderr, NAME ": cannot read /proc/%d/status: %s\n", (int)env.pid,
				strerror(-tgid));
			goto out;
		}
		if (tgid != env.pid)
			fprintf(stderr,
				NAME ": %d is a thread of process %d; observing the whole "
				     "process\n",
				(int)env.pid, (int)tgid);
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
		tgid = spawn_paused(env.cmd, &go_fd, &err_fd);
		if (tgid < 0) {
			fprintf(stderr, NAME ": cannot start %s: %s\n", env.cmd[0],
				strerror(-tgid));
			tgid = 0;
			goto out;
		}
		child_pid = tgid;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

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
		if (err == -EPERM || err == -EACCES)
			explain_eperm();
		else
			fprintf(stderr,
				NAME ": loading the BPF programs failed: %s (-v shows "
				     "libbpf's log)\n",
				strerror(-err));
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
		fprintf(stderr, NAME ": attaching the BPF programs failed: %s%s\n", strerror(-err),
			err == -ENOENT ? "; is tracefs mounted? " TRACEFS_HINT : "");
		goto out;
	}
	scanned = scan_sockets(skel, (__u32)tgid, skel->rodata->target_cgid);
	if (scanned < 0)
		fprintf(stderr,
			NAME ": warning: cannot scan the target's open sockets (%s): "
			     "retransmits on sockets idle since attach are missed\n",
			strerror((int)-scanned));
	else if (env.verbose)
		fprintf(stderr, NAME ": %ld open TCP sockets of the target found at attach\n",
			scanned);
	if (tgid && env.pid && kill(tgid, 0) && errno == ESRCH) {
		fprintf(stderr, NAME ": no process with pid %d (it exited while attaching)\n",
			(int)tgid);
		goto out;
	}
	if (env.cgroup && env.verbose)
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

	if (env.cmd) {
		ssize_t n;
		int e;

		/* Attached: let CMD exec; learn whether exec failed. */
		if (write(go_fd, "g", 1) != 1) {
			fprintf(stderr, NAME ": cannot release %s: %s\n", env.cmd[0],
				strerror(errno));
			kill(tgid, SIGKILL);
		}
		close(go_fd);
		go_fd = -1;
		do
			n = read(err_fd, &e, sizeof(e));
		while (n < 0 && errno == EINTR);
		close(err_fd);
		err_fd = -1;
		if (n == sizeof(e)) {
			fprintf(stderr, NAME ": cannot run %s: %s\n", env.cmd[0], strerror(e));
			waitpid(tgid, NULL, 0);
			child_pid = 0;
			ret = 127;
			goto out;
		}
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
		while (waitpid(tgid, &status, 0) < 0)
			if (errno != EINTR) {
				fprintf(stderr, NAME ": waitpid: %s\n", strerror(errno));
				status = -1;
				break;
			}
		child_pid = 0;
		if (ret == 0 && status != -1)
			ret = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
	}

out:
	if (go_fd >= 0) {
		/* CMD never released: EOF on its pipe makes it _exit(127). */
		close(go_fd);
		close(err_fd);
		waitpid(child_pid, NULL, 0);
	}
	if (lfd >= 0)
		close(lfd);
	if (stats_fd >= 0)
		close(stats_fd);
	if (cg_fd >= 0)
		close(cg_fd);
	usdt_detach(&usdt);
	qilin_observer_bpf__destroy(skel);
	btf__free(ch.btf);
	return ret;
}
