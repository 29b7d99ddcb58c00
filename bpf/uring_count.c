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
 * the BPF side. The plumbing (privileges, BTF, tracefs, the probes, the
 * paused child, signals) is bpf/tool.c's, shared with qilin-observer; what
 * stays here is which programs uring_count has and how it counts.
 *
 * Single-threaded; everything here runs on the main thread. Signal handlers
 * only set a flag (and, in the CMD form, forward the signal to the child).
 */
#include <argp.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tool.h"
#include "uring_count.h"
#include "uring_count.skel.h"

/* The knobs take tool_choose_submit()'s values. */
_Static_assert((int)UC_RING_ARG_NONE == TOOL_RING_ARG_NONE &&
		       (int)UC_RING_ARG_CTX == TOOL_RING_ARG_CTX &&
		       (int)UC_RING_ARG_REQ == TOOL_RING_ARG_REQ,
	       "enum uc_ring_arg and enum tool_ring_arg disagree");

static struct env {
	char **cmd;		/* after --, NULL-terminated (argv's own tail) */
} env;

/* -p sets pid; -i interval (0 = one report at the end); -d duration (0 =
 * until the target exits or ^C); --json json; -v verbose; --only-classic
 * no_btf_tp (never tp_btf: tests the fallback); --only-btf only_btf (never
 * tracefs, as if it were not mounted). */
static struct tool tool = {
	.name = "uring_count",
	.doing = "counting",
	.no_btf_why = "tp_btf programs are off by --only-classic",
	.no_btf_opt = "--only-classic",
	.what_width = 12,
};

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
	TOOL_ARGP_OPTIONS("Process to count (its whole thread group)",
			  "Print the counts of each interval", "One JSON object per report",
			  "Say which programs are used; libbpf's log", "only-classic",
			  "Use classic tracepoints only (tests the fallback)", 0,
			  "Use tp_btf programs only, no tracefs"),
	{ 0 },
};

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	switch (key) {
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
		if (env.cmd && tool.pid)
			argp_error(state, "give either -p PID or -- CMD, not both");
		if (!env.cmd && !tool.pid)
			argp_error(state, "give -p PID or -- CMD");
		if (env.cmd && (tool.interval || tool.duration))
			argp_error(state, "-i and -d go with -p only");
		/* fall through - tool_parse_key() checks -C against -B */
	default:
		/* -p, -i, -d, --json, -v, --only-classic (C), --only-btf (B). */
		return tool_parse_key(&tool, key, arg, state) ? 0 : ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* ------------------------------------------------------------ choosing */

/*
 * Turn on one program of each pair, and set the knobs that describe the raw
 * tracepoint prototypes. Returns 0, or -errno after printing why.
 */
static int choose_programs(struct uring_count_bpf *skel, struct tool_chooser *c)
{
	struct bpf_object *obj = skel->obj;
	struct tool_pair cqes = { .what = "cqes", .prog = "complete",
				  .event = "io_uring:io_uring_complete" };
	struct tool_pair overflows = { .what = "cq overflows", .prog = "cqe_overflow",
				       .event = "io_uring:io_uring_cqe_overflow" };
	struct tool_pair enters = { .what = "enters", .prog = "enter",
				    .event = "syscalls:sys_enter_io_uring_enter", .raw = "sys_enter",
				    .classic_first = true };

	tool_autoload_none(obj);

	/* SQEs: io_uring_submit_req since 6.0, io_uring_submit_sqe before;
	 * those failed at preparation (5.17+) apart, optional. */
	if (tool_choose_submit(c, obj, "sqes", "sqes failed", &skel->rodata->submit_sqe_ring_arg,
			       &skel->rodata->req_failed_ring_arg))
		return -ENOENT;

	/* CQEs: the ring is the first argument in every version. */
	cqes.fits = tool_tp_arg(c->btf, "io_uring_complete", 0) == TOOL_ARG_PTR;
	if (tool_pick(c, obj, &cqes) < 0)
		return tool_missing(c, cqes.event);

	/* CQ overflows (5.19+); optional. */
	overflows.fits = tool_tp_arg(c->btf, "io_uring_cqe_overflow", 0) == TOOL_ARG_PTR;
	if (tool_pick(c, obj, &overflows) < 0 && tool.verbose)
		fprintf(stderr, "uring_count: no io_uring_cqe_overflow tracepoint (before "
				"5.19): CQ overflows are not reported\n");

	/* Enters: the syscall's own event first (fires for io_uring_enter
	 * only); raw sys_enter (fires for every syscall) as the fallback. */
	enters.fits = tool_tp_arg(c->btf, "sys_enter", 1) == TOOL_ARG_OTHER;
	if (tool_pick(c, obj, &enters) > 0)
		return 0;
	if (!c->events || tool.only_btf || c->probe_eperm)
		return tool_missing(c, enters.event);
	fprintf(stderr, "uring_count: this kernel has neither syscalls:sys_enter_io_uring_enter "
			"(CONFIG_FTRACE_SYSCALLS) nor a usable raw sys_enter tracepoint\n");
	return -ENOENT;
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
	if (!tool.json)
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
	if (tool.json) {
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

/* Say on stderr when the counts printed cannot be exact. */
static void print_caveats(struct uring_count_bpf *skel, const struct counts *c)
{
	unsigned long long misses = tool_prog_misses(skel->obj);

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
	if (tool.verbose)
		fprintf(stderr, "uring_count: sqes %llu accepted + %llu failed at preparation, "
				"cq overflows %llu\n", c->v[UC_SQES], c->v[UC_SQES_FAILED],
			c->v[UC_CQ_OVERFLOWS]);
}

/* ------------------------------------------------------------ the CMD form */

/* Let the paused child exec, wait for it, print its counts. Returns the
 * exit status uring_count exits with: CMD's, 127 if it could not run, 1 if
 * the counters could not be read. */
static int run_cmd(struct uring_count_bpf *skel, struct tool_child *child)
{
	struct counts c;
	int status, ret;

	/* Attached: let the child exec. */
	if (tool_child_release(&tool, child, env.cmd[0]))
		return 127;
	status = tool_child_wait(&tool, child);
	if (status < 0)
		return 1;

	ret = read_counts(bpf_map__fd(skel->maps.counters), &c);
	if (ret) {
		fprintf(stderr, "uring_count: reading the counters: %s\n", strerror(-ret));
		return 1;
	}
	tool.json = true;
	print_counts(&c, NULL);
	print_caveats(skel, &c);
	return status;
}

/* ------------------------------------------------------------ the -p form */

/* Until ^C, -d, or the target's exit; prints per -i or once at the end. */
static int run_pid(struct uring_count_bpf *skel, pid_t tgid)
{
	int map_fd = bpf_map__fd(skel->maps.counters);
	double start = tool_now(), next = 0, end = 0;
	struct counts prev = { 0 }, cur;
	struct pollfd pfd;
	bool gone = false;
	int pidfd, ret;

	/* A pidfd becomes readable when the process exits (5.3+); without
	 * one, poll every 200 ms with kill(pid, 0). */
	pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
	pfd.fd = pidfd;
	pfd.events = POLLIN;
	if (tool.interval)
		next = start + tool.interval;
	if (tool.duration)
		end = start + tool.duration;
	print_header();

	while (!tool_exiting) {
		double now = tool_now(), wake = 0;
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
		now = tool_now();
		if (next && now >= next) {
			if (read_counts(map_fd, &cur) == 0) {
				print_counts(&cur, &prev);
				prev = cur;
			}
			next += tool.interval;
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
	print_counts(&cur, tool.interval ? &prev : NULL);
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
	struct tool_chooser ch = { 0 };
	struct tool_child child = { 0 };
	struct uring_count_bpf *skel = NULL;
	int ret = 1, err;
	pid_t target;

	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return 1;
	tool_libbpf_print_to(&tool);

	/* Check what can be checked before touching the target. */
	if (tool_chooser_init(&ch, &tool))
		return 1;

	if (tool.pid)
		target = tool_target_pid(&tool, tool.pid);
	else
		target = tool_child_start(&tool, &child, env.cmd);
	if (target < 0)
		goto out;
	tool_catch_signals();

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
		tool_say_load_failed(&tool, err);
		goto out;
	}
	err = uring_count_bpf__attach(skel);
	if (err) {
		tool_say_attach_failed(&tool, err);
		goto out;
	}

	if (env.cmd)
		ret = run_cmd(skel, &child);
	else
		ret = run_pid(skel, target);

out:
	/* CMD form, failed before the child was released: it exits 127. */
	tool_child_abort(&child);
	uring_count_bpf__destroy(skel);
	tool_chooser_fini(&ch);
	return ret;
}
