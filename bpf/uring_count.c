/* SPDX-License-Identifier: MIT */
/*
 * bpf/uring_count.c - user side of uring_count: count the io_uring SQEs,
 * CQEs and io_uring_enter(2) calls of one process, as the kernel sees them.
 *
 *   uring_count -p PID [-i SECS] [-d SECS] [--json] [-v]
 *   uring_count [-v] -- CMD [ARGS...]
 *   (--only-classic / --only-btf force one side of every program pair, so
 *   that tests reach the fallback paths on a new kernel)
 *
 * The first form attaches to a running process and prints its counts when
 * interrupted, after -d seconds or when the process exits; with -i, the
 * counts of each interval instead. The second form starts CMD stopped before
 * exec (the child blocks reading a pipe), attaches with the child's pid,
 * lets it run, waits for it, and prints exactly one JSON line
 * {"sqes":N,"cqes":N,"enters":N} on stdout; its exit status is CMD's (128+N
 * if CMD died of signal N, 127 if CMD could not be run, 1 if uring_count
 * itself failed). This is what tests use to compare a program's own
 * counters with the kernel's.
 *
 * What the numbers mean (details in uring_count.bpf.c):
 *   sqes    SQEs the kernel consumed from the target's SQ rings: accepted
 *           ones plus those rejected while being prepared, i.e. the sum of
 *           io_uring_enter()'s return values when it submits;
 *   cqes    CQEs written into the target's CQ rings (CQEs that overflowed
 *           are reported apart, on stderr);
 *   enters  io_uring_enter(2) calls by any thread of the target.
 * Only the target's own thread group counts: not its children.
 *
 * Which programs: for each event the BPF object has a tp_btf program and a
 * classic tracepoint twin; choose_programs() turns on the tp_btf one when the
 * kernel's BTF has that raw tracepoint and a tracing program loads for it,
 * else the classic one when tracefs lists the event, with
 * bpf_program__set_autoload() before load (the libbpf-tools habit). Event
 * names and raw prototypes changed across kernel versions; the kernel's BTF
 * says which ones this kernel has, and const volatile knobs carry that to
 * the BPF side.
 *
 * Single-threaded; everything here runs on the main thread. Signal handlers
 * only set a flag (and, in the CMD form, forward the signal to the child).
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
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "uring_count.h"
#include "uring_count.skel.h"

#define VMLINUX_BTF "/sys/kernel/btf/vmlinux"
#define TRACEFS_HINT "mount -t tracefs nodev /sys/kernel/tracing"

/* Capability bits, from linux/capability.h (CAP_BPF and CAP_PERFMON are
 * missing from older copies of that header). */
#define UC_CAP_SYS_ADMIN 21
#define UC_CAP_PERFMON 38
#define UC_CAP_BPF 39

static struct env {
	pid_t pid;		/* -p, as given */
	double interval;	/* -i seconds, 0 = one report at the end */
	double duration;	/* -d seconds, 0 = until the target exits or ^C */
	bool json;
	bool verbose;
	bool only_classic;	/* --only-classic: never tp_btf (tests the fallback) */
	bool only_btf;		/* --only-btf: never tracefs (as if it were not mounted) */
	char **cmd;		/* after --, NULL-terminated (argv's own tail) */
} env;

static volatile sig_atomic_t exiting;
static volatile pid_t child_pid;	/* CMD form: where to forward signals */

/* ------------------------------------------------------------ arguments */

const char *argp_program_version = "uring_count (qilin) 0.1";
static const char argp_doc[] =
	"Count one process's io_uring SQEs, CQEs and io_uring_enter calls.\n"
	"\n"
	"USAGE: uring_count -p PID [-i SECS] [-d SECS] [--json] [-v]\n"
	"       uring_count [-v] -- CMD [ARGS...]\n"
	"\n"
	"EXAMPLES:\n"
	"    uring_count -p 1234          # count until ^C or until 1234 exits\n"
	"    uring_count -p 1234 -i 1     # counts of each second\n"
	"    uring_count -p 1234 -d 10 --json\n"
	"    uring_count -- ./prog arg    # run prog, then print one JSON line:\n"
	"                                 # {\"sqes\":N,\"cqes\":N,\"enters\":N}\n";

static const struct argp_option argp_opts[] = {
	{ "pid", 'p', "PID", 0, "Process to count (its whole thread group)", 0 },
	{ "interval", 'i', "SECS", 0, "Print the counts of each interval", 0 },
	{ "duration", 'd', "SECS", 0, "Stop after SECS seconds", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per report", 0 },
	{ "verbose", 'v', NULL, 0, "Say which programs are used; libbpf's log", 0 },
	{ "only-classic", 'C', NULL, 0, "Use classic tracepoints only (tests the fallback)", 0 },
	{ "only-btf", 'B', NULL, 0, "Use tp_btf programs only, no tracefs", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0 },
	{ 0 },
};

static double parse_secs(const char *arg, struct argp_state *state)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v > 0) || v > 1e7)
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
	case 'i':
		env.interval = parse_secs(arg, state);
		break;
	case 'd':
		env.duration = parse_secs(arg, state);
		break;
	case 'j':
		env.json = true;
		break;
	case 'v':
		env.verbose = true;
		break;
	case 'C':
		env.only_classic = true;
		break;
	case 'B':
		env.only_btf = true;
		break;
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case ARGP_KEY_ARG:
		/* Leave the positional arguments to ARGP_KEY_ARGS. */
		return ARGP_ERR_UNKNOWN;
	case ARGP_KEY_ARGS:
		env.cmd = state->argv + state->next;
		state->next = state->argc;
		break;
	case ARGP_KEY_END:
		if (env.cmd && env.pid)
			argp_error(state, "give either -p PID or -- CMD, not both");
		if (!env.cmd && !env.pid)
			argp_error(state, "give -p PID or -- CMD");
		if (env.cmd && (env.interval || env.duration))
			argp_error(state, "-i and -d go with -p only");
		if (env.only_classic && env.only_btf)
			argp_error(state, "--only-classic and --only-btf exclude each other");
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* ------------------------------------------------------------ environment */

static int libbpf_print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (!env.verbose || level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static void on_signal(int sig)
{
	exiting = sig;
	if (child_pid > 0)
		kill(child_pid, sig);
}

static double now_secs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* True when the effective capabilities allow loading and attaching tracing
 * programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (Linux 5.8+). Also
 * true when that cannot be read: then the load itself will tell. */
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
	return (eff >> UC_CAP_SYS_ADMIN & 1) ||
	       ((eff >> UC_CAP_BPF & 1) && (eff >> UC_CAP_PERFMON & 1));
}

static void explain_eperm(void)
{
	fprintf(stderr, "uring_count: permission denied loading BPF programs: run as root, or "
			"with CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8); a "
			"kernel in lockdown mode refuses them even to root\n");
}

/* The thread group of pid, read from /proc: -p may name any thread. Returns
 * the tgid, or -errno (-ENOENT: no such process). */
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

/*
 * The tracefs events folder, where classic tracepoints are listed, or NULL
 * when tracefs is mounted in neither usual place (*err = ENOENT) or cannot
 * be read by this user (*err = EACCES: it is mode 0700, root's). libbpf 1.1
 * reads the same two places, debugfs's first when it exists.
 */
static const char *tracefs_events(int *err)
{
	static const char *const dirs[] = {
		"/sys/kernel/debug/tracing/events",
		"/sys/kernel/tracing/events",
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

/* ------------------------------------------------------------ choosing */

struct chooser {
	struct btf *btf;	/* the running kernel's */
	const char *events;	/* tracefs_events(), or NULL */
	int events_err;		/* why events is NULL: ENOENT or EACCES */
	bool probe_eperm;	/* a tp_btf probe load was refused with EPERM */
};

/* What argument idx (0-based, not counting the leading void *__data) of raw
 * tracepoint tp is, read from the BTF typedef btf_trace_<tp>. */
enum arg_kind {
	ARG_ABSENT,	/* no such tracepoint, or fewer arguments */
	ARG_KIOCB,	/* struct io_kiocb * */
	ARG_PTR,	/* any other pointer (void *, struct io_ring_ctx *) */
	ARG_OTHER,	/* not a pointer */
};

static const struct btf_type *skip_mods(const struct btf *btf, __u32 id)
{
	const struct btf_type *t = btf__type_by_id(btf, id);

	while (t && (btf_is_mod(t) || btf_is_typedef(t)))
		t = btf__type_by_id(btf, t->type);
	return t;
}

static enum arg_kind tp_arg_kind(const struct btf *btf, const char *tp, unsigned int idx)
{
	const struct btf_type *t;
	const struct btf_param *p;
	char name[128];
	int id;

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	id = btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
	if (id < 0)
		return ARG_ABSENT;
	t = skip_mods(btf, id);			/* pointer to the prototype */
	if (!t || !btf_is_ptr(t))
		return ARG_ABSENT;
	t = skip_mods(btf, t->type);
	if (!t || !btf_is_func_proto(t) || btf_vlen(t) < idx + 2)
		return ARG_ABSENT;
	p = btf_params(t) + idx + 1;
	t = skip_mods(btf, p->type);
	if (!t || !btf_is_ptr(t))
		return ARG_OTHER;
	t = skip_mods(btf, t->type);		/* void has id 0: not a struct */
	if (t && btf_is_struct(t) && !strcmp(btf__name_by_offset(btf, t->name_off), "io_kiocb"))
		return ARG_KIOCB;
	return ARG_PTR;
}

/* True when the kernel has raw tracepoint tp in its BTF and loads a minimal
 * tp_btf program for it (the libbpf-tools probe_tp_btf() idea). */
static bool tp_btf_works(struct chooser *c, const char *tp)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_RAW_TP);
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	char name[128];
	int id, fd;

	if (env.only_classic)
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
			fprintf(stderr, "uring_count: tp_btf/%s does not load: %s\n", tp,
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
		fprintf(stderr, "uring_count: %-12s %s\n", what, bpf_program__section_name(prog));
}

/* Neither program of a required pair can run: say why. */
static int missing(const struct chooser *c, const char *event)
{
	const char *why = env.only_classic ? "tp_btf programs are off by --only-classic" :
					     "this kernel has no tp_btf tracepoint for it";

	if (c->probe_eperm) {
		explain_eperm();
	} else if (env.only_btf) {
		fprintf(stderr, "uring_count: %s needs a classic tracepoint, and tracefs is off "
				"(--only-btf)\n", event);
	} else if (!c->events && c->events_err == EACCES) {
		fprintf(stderr, "uring_count: %s needs a classic tracepoint (%s), and tracefs "
				"cannot be read by this user: run as root\n", event, why);
	} else if (!c->events) {
		fprintf(stderr, "uring_count: %s needs a classic tracepoint (%s), and tracefs "
				"is not mounted: %s\n", event, why, TRACEFS_HINT);
	} else {
		fprintf(stderr, "uring_count: this kernel has no tracepoint %s (io_uring "
				"tracepoints need CONFIG_IO_URING and Linux 5.5+)\n", event);
	}
	return -ENOENT;
}

/*
 * Turn on one program of each pair, and set the knobs that describe the raw
 * tracepoint prototypes. Returns 0, or -errno after printing why.
 */
static int choose_programs(struct uring_count_bpf *skel, struct chooser *c)
{
	struct bpf_program *prog;
	enum arg_kind k;

	bpf_object__for_each_program(prog, skel->obj)
		bpf_program__set_autoload(prog, false);

	/* SQEs: io_uring_submit_req since 6.0, io_uring_submit_sqe before. */
	if (tp_arg_kind(c->btf, "io_uring_submit_req", 0) == ARG_KIOCB &&
	    tp_btf_works(c, "io_uring_submit_req")) {
		use(skel->progs.submit_req_btf, "sqes");
	} else if (((k = tp_arg_kind(c->btf, "io_uring_submit_sqe", 0)) == ARG_KIOCB ||
		    k == ARG_PTR) && tp_btf_works(c, "io_uring_submit_sqe")) {
		skel->rodata->submit_sqe_ring_arg = k == ARG_KIOCB ? UC_RING_ARG_REQ : UC_RING_ARG_CTX;
		use(skel->progs.submit_sqe_btf, "sqes");
	} else if (tp_exists(c, "io_uring", "io_uring_submit_req")) {
		use(skel->progs.submit_req_tp, "sqes");
	} else if (tp_exists(c, "io_uring", "io_uring_submit_sqe")) {
		use(skel->progs.submit_sqe_tp, "sqes");
	} else {
		return missing(c, "io_uring:io_uring_submit_req");
	}

	/* SQEs failed at preparation (5.17+); optional. */
	k = tp_arg_kind(c->btf, "io_uring_req_failed", 1);
	if (k != ARG_ABSENT && tp_btf_works(c, "io_uring_req_failed")) {
		skel->rodata->req_failed_ring_arg = k == ARG_KIOCB ? UC_RING_ARG_REQ :
						    k == ARG_PTR   ? UC_RING_ARG_CTX :
								     UC_RING_ARG_NONE;
		use(skel->progs.req_failed_btf, "sqes failed");
	} else if (tp_exists(c, "io_uring", "io_uring_req_failed")) {
		use(skel->progs.req_failed_tp, "sqes failed");
	} else if (env.verbose) {
		fprintf(stderr, "uring_count: no io_uring_req_failed tracepoint (before 5.17): "
				"SQEs rejected at preparation are not counted\n");
	}

	/* CQEs: the ring is the first argument in every version. */
	if (tp_arg_kind(c->btf, "io_uring_complete", 0) == ARG_PTR &&
	    tp_btf_works(c, "io_uring_complete"))
		use(skel->progs.complete_btf, "cqes");
	else if (tp_exists(c, "io_uring", "io_uring_complete"))
		use(skel->progs.complete_tp, "cqes");
	else
		return missing(c, "io_uring:io_uring_complete");

	/* CQ overflows (5.19+); optional. */
	if (tp_arg_kind(c->btf, "io_uring_cqe_overflow", 0) == ARG_PTR &&
	    tp_btf_works(c, "io_uring_cqe_overflow"))
		use(skel->progs.cqe_overflow_btf, "cq overflows");
	else if (tp_exists(c, "io_uring", "io_uring_cqe_overflow"))
		use(skel->progs.cqe_overflow_tp, "cq overflows");
	else if (env.verbose)
		fprintf(stderr, "uring_count: no io_uring_cqe_overflow tracepoint (before "
				"5.19): CQ overflows are not reported\n");

	/* Enters: the syscall's own event first (fires for io_uring_enter
	 * only); raw sys_enter (fires for every syscall) as the fallback. */
	if (tp_exists(c, "syscalls", "sys_enter_io_uring_enter"))
		use(skel->progs.enter_tp, "enters");
	else if (tp_arg_kind(c->btf, "sys_enter", 1) == ARG_OTHER && tp_btf_works(c, "sys_enter"))
		use(skel->progs.enter_btf, "enters");
	else if (!c->events || env.only_btf || c->probe_eperm)
		return missing(c, "syscalls:sys_enter_io_uring_enter");
	else {
		fprintf(stderr, "uring_count: this kernel has neither syscalls:sys_enter_io_uring_enter "
				"(CONFIG_FTRACE_SYSCALLS) nor a usable raw sys_enter tracepoint\n");
		return -ENOENT;
	}
	return 0;
}

/* ------------------------------------------------------------ counting */

struct counts {
	unsigned long long v[UC_NR_COUNTERS];
};

/* Sum each counter over the possible CPUs. Returns 0 or -errno. */
static int read_counts(int map_fd, struct counts *out)
{
	static unsigned long long *percpu;
	static int ncpu;

	if (!percpu) {
		ncpu = libbpf_num_possible_cpus();
		if (ncpu <= 0)
			return ncpu ? ncpu : -EINVAL;
		percpu = calloc(ncpu, sizeof(*percpu));
		if (!percpu)
			return -ENOMEM;
	}
	for (__u32 key = 0; key < UC_NR_COUNTERS; key++) {
		if (bpf_map_lookup_elem(map_fd, &key, percpu))
			return -errno;
		out->v[key] = 0;
		for (int cpu = 0; cpu < ncpu; cpu++)
			out->v[key] += percpu[cpu];
	}
	return 0;
}

static void print_header(void)
{
	if (!env.json)
		printf("%-8s %12s %12s %12s\n", "TIME", "SQES", "CQES", "ENTERS");
}

/* One report: the difference cur - prev. */
static void print_counts(const struct counts *cur, const struct counts *prev)
{
	unsigned long long d[UC_NR_COUNTERS];
	char ts[16];
	time_t t;

	for (int i = 0; i < UC_NR_COUNTERS; i++)
		d[i] = cur->v[i] - (prev ? prev->v[i] : 0);
	if (env.json) {
		printf("{\"sqes\":%llu,\"cqes\":%llu,\"enters\":%llu}\n",
		       d[UC_SQES] + d[UC_SQES_FAILED], d[UC_CQES], d[UC_ENTERS]);
	} else {
		t = time(NULL);
		strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&t));
		printf("%-8s %12llu %12llu %12llu\n", ts, d[UC_SQES] + d[UC_SQES_FAILED],
		       d[UC_CQES], d[UC_ENTERS]);
	}
	fflush(stdout);
}

/* Kernel-side runs skipped because another BPF program was running on that
 * CPU (bpf_prog_info.recursion_misses, Linux 5.12+). Counted events are lost
 * when this is not 0. */
static unsigned long long prog_misses(struct uring_count_bpf *skel)
{
	unsigned long long misses = 0;
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, skel->obj) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(prog);

		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &info, &len))
			misses += info.recursion_misses;
	}
	return misses;
}

/* Say on stderr when the counts printed cannot be exact. */
static void print_caveats(struct uring_count_bpf *skel, const struct counts *c)
{
	unsigned long long misses = prog_misses(skel);

	if (c->v[UC_CQ_OVERFLOWS])
		fprintf(stderr, "uring_count: warning: %llu CQEs overflowed the CQ ring; recent "
				"kernels (6.18 checked) copy them in later without an "
				"io_uring_complete event, so cqes may be short by that many\n",
			c->v[UC_CQ_OVERFLOWS]);
	if (c->v[UC_RINGS_LOST])
		fprintf(stderr, "uring_count: warning: more than %d rings; completions of %llu "
				"of them were not counted\n", UC_MAX_RINGS, c->v[UC_RINGS_LOST]);
	if (misses)
		fprintf(stderr, "uring_count: warning: the kernel skipped %llu runs of these "
				"programs (another BPF program was running on that CPU); the counts "
				"are low\n", misses);
	if (env.verbose)
		fprintf(stderr, "uring_count: sqes %llu accepted + %llu failed at preparation, "
				"cq overflows %llu\n", c->v[UC_SQES], c->v[UC_SQES_FAILED],
			c->v[UC_CQ_OVERFLOWS]);
}

/* ------------------------------------------------------------ the CMD form */

/*
 * Fork a child that waits, before exec'ing cmd, until a byte arrives on a
 * pipe. *go_fd is that pipe's write end; *err_fd reads errno from the child
 * if exec fails (it closes on a successful exec). Returns the child's pid or
 * -errno.
 */
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
		/* EOF instead of a byte: the parent gave up or died. */
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

static int run_cmd(struct uring_count_bpf *skel, pid_t pid, int go_fd, int err_fd)
{
	struct counts c;
	int status, e, ret;
	ssize_t n;

	/* Attached: let the child exec. */
	if (write(go_fd, "g", 1) != 1) {
		fprintf(stderr, "uring_count: cannot release the child: %s\n", strerror(errno));
		kill(pid, SIGKILL);
	}
	close(go_fd);
	do
		n = read(err_fd, &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(err_fd);

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			fprintf(stderr, "uring_count: waitpid: %s\n", strerror(errno));
			return 1;
		}
	child_pid = 0;
	if (n == sizeof(e)) {
		fprintf(stderr, "uring_count: cannot run %s: %s\n", env.cmd[0], strerror(e));
		return 127;
	}

	ret = read_counts(bpf_map__fd(skel->maps.counters), &c);
	if (ret) {
		fprintf(stderr, "uring_count: reading the counters: %s\n", strerror(-ret));
		return 1;
	}
	env.json = true;
	print_counts(&c, NULL);
	print_caveats(skel, &c);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* ------------------------------------------------------------ the -p form */

/* Until ^C, -d, or the target's exit; prints per -i or once at the end. */
static int run_pid(struct uring_count_bpf *skel, pid_t tgid)
{
	int map_fd = bpf_map__fd(skel->maps.counters);
	double start = now_secs(), next = 0, end = 0;
	struct counts prev = { 0 }, cur;
	struct pollfd pfd;
	bool gone = false;
	int pidfd, ret;

	/* A pidfd becomes readable when the process exits (5.3+); without
	 * one, poll every 200 ms with kill(pid, 0). */
	pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
	pfd.fd = pidfd;
	pfd.events = POLLIN;
	if (env.interval)
		next = start + env.interval;
	if (env.duration)
		end = start + env.duration;
	print_header();

	while (!exiting) {
		double now = now_secs(), wake = 0;
		int timeout;

		if (next)
			wake = next;
		if (end && (!wake || end < wake))
			wake = end;
		timeout = wake ? (int)((wake - now) * 1000 + 1) : -1;
		if (timeout < 0 && wake)
			timeout = 0;
		if (pidfd < 0 && (timeout < 0 || timeout > 200))
			timeout = 200;

		ret = poll(&pfd, pidfd >= 0 ? 1 : 0, timeout);
		if (ret < 0 && errno != EINTR) {
			fprintf(stderr, "uring_count: poll: %s\n", strerror(errno));
			break;
		}
		if ((pidfd >= 0 && ret > 0) || (pidfd < 0 && kill(tgid, 0) && errno == ESRCH)) {
			gone = true;
			break;
		}
		now = now_secs();
		if (next && now >= next) {
			if (read_counts(map_fd, &cur) == 0) {
				print_counts(&cur, &prev);
				prev = cur;
			}
			next += env.interval;
		}
		if (end && now >= end)
			break;
	}
	if (pidfd >= 0)
		close(pidfd);

	ret = read_counts(map_fd, &cur);
	if (ret) {
		fprintf(stderr, "uring_count: reading the counters: %s\n", strerror(-ret));
		return 1;
	}
	/* With -i, the last partial interval; without, the whole run. */
	print_counts(&cur, env.interval ? &prev : NULL);
	if (gone)
		fprintf(stderr, "uring_count: process %d exited\n", (int)tgid);
	print_caveats(skel, &cur);
	return 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	static const struct argp argp = {
		.options = argp_opts,
		.parser = parse_arg,
		.doc = argp_doc,
	};
	struct chooser ch = { 0 };
	struct uring_count_bpf *skel = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	int go_fd = -1, err_fd = -1, ret = 1, err;
	pid_t target;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return 1;
	libbpf_set_print(libbpf_print_fn);

	/* Check what can be checked before touching the target. */
	if (!have_bpf_caps()) {
		explain_eperm();
		return 1;
	}
	if (access(VMLINUX_BTF, R_OK)) {
		fprintf(stderr, "uring_count: no kernel BTF at %s (%s): the kernel needs "
				"CONFIG_DEBUG_INFO_BTF=y for these CO-RE programs\n",
			VMLINUX_BTF, strerror(errno));
		return 1;
	}
	ch.btf = btf__load_vmlinux_btf();
	if (!ch.btf) {
		fprintf(stderr, "uring_count: cannot read the kernel BTF at %s: %s\n",
			VMLINUX_BTF, strerror(errno));
		return 1;
	}
	ch.events = tracefs_events(&ch.events_err);

	if (env.pid) {
		target = pid_to_tgid(env.pid);
		if (target == -ENOENT || target == -ESRCH) {
			fprintf(stderr, "uring_count: no process with pid %d\n", (int)env.pid);
			goto out;
		}
		if (target < 0) {
			fprintf(stderr, "uring_count: cannot read /proc/%d/status: %s\n",
				(int)env.pid, strerror(-target));
			goto out;
		}
		if (target != env.pid)
			fprintf(stderr, "uring_count: %d is a thread of process %d; counting "
					"the whole process\n", (int)env.pid, (int)target);
	} else {
		target = spawn_paused(env.cmd, &go_fd, &err_fd);
		if (target < 0) {
			fprintf(stderr, "uring_count: cannot start %s: %s\n", env.cmd[0],
				strerror(-target));
			goto out;
		}
		child_pid = target;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	skel = uring_count_bpf__open();
	if (!skel) {
		fprintf(stderr, "uring_count: cannot open the BPF object: %s\n", strerror(errno));
		goto out;
	}
	skel->rodata->target_tgid = (__u32)target;
	if (choose_programs(skel, &ch))
		goto out;

	err = uring_count_bpf__load(skel);
	if (err) {
		if (err == -EPERM || err == -EACCES)
			explain_eperm();
		else
			fprintf(stderr, "uring_count: loading the BPF programs failed: %s "
					"(-v shows libbpf's log)\n", strerror(-err));
		goto out;
	}
	err = uring_count_bpf__attach(skel);
	if (err) {
		fprintf(stderr, "uring_count: attaching the BPF programs failed: %s%s\n",
			strerror(-err), err == -ENOENT ? "; is tracefs mounted? " TRACEFS_HINT : "");
		goto out;
	}

	if (env.cmd) {
		ret = run_cmd(skel, target, go_fd, err_fd);
		go_fd = err_fd = -1;
	} else {
		ret = run_pid(skel, target);
	}

out:
	/* CMD form, failed before the child was released: closing go_fd makes
	 * its read() see EOF and _exit(127); reap it. */
	if (go_fd >= 0) {
		close(go_fd);
		close(err_fd);
		waitpid(child_pid, NULL, 0);
	}
	uring_count_bpf__destroy(skel);
	btf__free(ch.btf);
	return ret;
}
