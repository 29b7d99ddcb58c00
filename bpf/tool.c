/* SPDX-License-Identifier: MIT */
/*
 * bpf/tool.c - the user-side plumbing of the BPF tools in bpf/ (uring_count,
 * qilin-observer): arguments, privileges, BTF and tracefs, the tp_btf-first
 * program chooser, the target process, the paused command, signals.
 *
 * Owns nothing between calls but three things: the struct tool that libbpf's
 * log goes through (set once by tool_libbpf_print_to()), and the two words
 * the signal handler shares with the main thread (tool_exiting,
 * tool_child_pid). Everything else belongs to the caller: the struct tool
 * and struct tool_chooser it passes in (the chooser's BTF is freed by
 * tool_chooser_fini()), the struct tool_child whose pipes and process the
 * tool_child_* functions open, close and reap, the BPF objects whose
 * programs are switched on.
 *
 * Why the chooser looks where it does: for each event a tool's BPF object
 * has a tp_btf program and a classic tracepoint twin. The tp_btf one is
 * cheaper and sees typed arguments, but needs the raw tracepoint in the
 * kernel's BTF and a kernel that loads tracing programs for it; the classic
 * one needs tracefs, which may be absent, unmounted or root's only. Event
 * names and raw prototypes changed across kernel versions, so the BTF
 * typedef btf_trace_<event> says which arguments this kernel passes, and
 * each tool turns that into const volatile knobs before load.
 *
 * Single-threaded: everything runs on the tool's main thread, except
 * on_signal(), which only stores a flag and forwards the signal.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "tool.h"

/* Capability bits, from linux/capability.h (CAP_BPF and CAP_PERFMON are
 * missing from older copies of that header). */
#define TOOL_CAP_SYS_ADMIN 21
#define TOOL_CAP_PERFMON 38
#define TOOL_CAP_BPF 39

volatile sig_atomic_t tool_exiting;
volatile pid_t tool_child_pid;

/* The tool libbpf's log goes through; libbpf's callback has no argument. */
static struct tool *log_tool;

/* ------------------------------------------------------------ arguments */

double tool_parse_secs(struct argp_state *state, const char *arg, double min)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	/* Written so that NaN fails every comparison and is refused. */
	if (errno || end == arg || *end || !(v > 0) || !(v >= min) || v > 1e7)
		argp_error(state, "invalid number of seconds: %s", arg);
	return v;
}

pid_t tool_parse_pid(struct argp_state *state, const char *arg)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v <= 0 || v > INT_MAX)
		argp_error(state, "invalid PID: %s", arg);
	return (pid_t)v;
}

bool tool_parse_key(struct tool *t, int key, char *arg, struct argp_state *state)
{
	switch (key) {
	case 'p':
		t->pid = tool_parse_pid(state, arg);
		return true;
	case 'i':
		t->interval = tool_parse_secs(state, arg, t->min_secs);
		return true;
	case 'd':
		t->duration = tool_parse_secs(state, arg, t->min_secs);
		return true;
	case 'j':
		t->json = true;
		return true;
	case ARGP_KEY_END:
		if (t->no_btf_tp && t->only_btf)
			argp_error(state, "%s and --only-btf exclude each other", t->no_btf_opt);
		return false;
	case 'v':
		t->verbose = true;
		return true;
	case 'C':
		t->no_btf_tp = true;
		return true;
	case 'B':
		t->only_btf = true;
		return true;
	default:
		return false;
	}
}

/* ------------------------------------------------------------ environment */

static int libbpf_print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (!log_tool || !log_tool->verbose || log_tool->quiet_libbpf || level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, args);
}

void tool_libbpf_print_to(struct tool *t)
{
	log_tool = t;
	libbpf_set_print(libbpf_print_fn);
}

bool tool_have_bpf_caps(void)
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
	return (eff >> TOOL_CAP_SYS_ADMIN & 1) ||
	       ((eff >> TOOL_CAP_BPF & 1) && (eff >> TOOL_CAP_PERFMON & 1));
}

void tool_explain_eperm(const struct tool *t)
{
	fprintf(stderr,
		"%s: permission denied loading BPF programs: run as root, or with "
		"CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8); a kernel in "
		"lockdown mode refuses them even to root\n",
		t->name);
}

void tool_say_load_failed(const struct tool *t, int err)
{
	if (err == -EPERM || err == -EACCES)
		tool_explain_eperm(t);
	else
		fprintf(stderr,
			"%s: loading the BPF programs failed: %s (-v shows libbpf's "
			"log)\n",
			t->name, strerror(-err));
}

void tool_say_attach_failed(const struct tool *t, int err)
{
	fprintf(stderr, "%s: attaching the BPF programs failed: %s%s\n", t->name, strerror(-err),
		err == -ENOENT ? "; is tracefs mounted? " TOOL_TRACEFS_HINT : "");
}

pid_t tool_pid_to_tgid(pid_t pid)
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

pid_t tool_target_pid(const struct tool *t, pid_t pid)
{
	pid_t tgid = tool_pid_to_tgid(pid);

	if (tgid == -ENOENT || tgid == -ESRCH) {
		fprintf(stderr, "%s: no process with pid %d\n", t->name, (int)pid);
		return -ESRCH;
	}
	if (tgid < 0) {
		fprintf(stderr, "%s: cannot read /proc/%d/status: %s\n", t->name, (int)pid,
			strerror(-tgid));
		return tgid;
	}
	if (tgid != pid)
		fprintf(stderr, "%s: %d is a thread of process %d; %s the whole process\n", t->name,
			(int)pid, (int)tgid, t->doing);
	return tgid;
}

/*
 * libbpf 1.1 attaches classic tracepoints through the same two places,
 * debugfs's first when it exists, so look where it will.
 */
const char *tool_tracefs_events(int *err)
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

double tool_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Async-signal-safe: a store and kill(2). */
static void on_signal(int sig)
{
	tool_exiting = sig;
	if (tool_child_pid > 0)
		kill(tool_child_pid, sig);
}

void tool_catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* ------------------------------------------------------------ choosing */

int tool_chooser_init(struct tool_chooser *c, struct tool *t)
{
	*c = (struct tool_chooser){ .tool = t };
	if (!tool_have_bpf_caps()) {
		tool_explain_eperm(t);
		return -EPERM;
	}
	if (access(TOOL_VMLINUX_BTF, R_OK)) {
		int e = errno;

		fprintf(stderr,
			"%s: no kernel BTF at %s (%s): the kernel needs "
			"CONFIG_DEBUG_INFO_BTF=y for these CO-RE programs\n",
			t->name, TOOL_VMLINUX_BTF, strerror(e));
		return -e;
	}
	c->btf = btf__load_vmlinux_btf();
	if (!c->btf) {
		int e = errno;

		fprintf(stderr, "%s: cannot read the kernel BTF at %s: %s\n", t->name,
			TOOL_VMLINUX_BTF, strerror(e));
		return -e;
	}
	c->events = tool_tracefs_events(&c->events_err);
	return 0;
}

void tool_chooser_fini(struct tool_chooser *c)
{
	btf__free(c->btf);
	c->btf = NULL;
}

void tool_autoload_none(struct bpf_object *obj)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, obj) bpf_program__set_autoload(prog, false);
}

/* The type id leads to, past const/volatile/restrict and typedefs. */
static const struct btf_type *skip_mods(const struct btf *btf, __u32 id)
{
	const struct btf_type *t = btf__type_by_id(btf, id);

	while (t && (btf_is_mod(t) || btf_is_typedef(t)))
		t = btf__type_by_id(btf, t->type);
	return t;
}

enum tool_arg_kind tool_tp_arg(const struct btf *btf, const char *tp, unsigned int idx)
{
	const struct btf_type *t;
	const struct btf_param *p;
	const char *n;
	char name[128];
	int id;

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	id = btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF);
	if (id < 0)
		return TOOL_ARG_ABSENT;
	t = skip_mods(btf, id); /* pointer to the prototype */
	if (!t || !btf_is_ptr(t))
		return TOOL_ARG_ABSENT;
	t = skip_mods(btf, t->type);
	if (!t || !btf_is_func_proto(t) || btf_vlen(t) < idx + 2)
		return TOOL_ARG_ABSENT;
	p = btf_params(t) + idx + 1;
	t = skip_mods(btf, p->type);
	if (!t || !btf_is_ptr(t))
		return TOOL_ARG_OTHER;
	t = skip_mods(btf, t->type); /* void has id 0: not a struct */
	if (!t || !btf_is_struct(t))
		return TOOL_ARG_PTR;
	n = btf__name_by_offset(btf, t->name_off);
	if (!strcmp(n, "io_kiocb"))
		return TOOL_ARG_KIOCB;
	if (!strcmp(n, "io_uring_cqe"))
		return TOOL_ARG_CQE;
	return TOOL_ARG_PTR;
}

bool tool_tp_btf_works(struct tool_chooser *c, const char *tp)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_RAW_TP);
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	char name[128];
	int id, fd;

	if (c->tool->no_btf_tp)
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
		if (c->tool->verbose)
			fprintf(stderr, "%s: tp_btf/%s does not load: %s\n", c->tool->name, tp,
				strerror(errno));
		return false;
	}
	close(fd);
	return true;
}

bool tool_tp_exists(const struct tool_chooser *c, const char *category, const char *event)
{
	char path[PATH_MAX];

	if (!c->events || c->tool->only_btf)
		return false;
	snprintf(path, sizeof(path), "%s/%s/%s", c->events, category, event);
	return access(path, F_OK) == 0;
}

void tool_use(const struct tool_chooser *c, struct bpf_program *prog, const char *what)
{
	bpf_program__set_autoload(prog, true);
	if (c->tool->verbose)
		fprintf(stderr, "%s: %-*s %s\n", c->tool->name, c->tool->what_width, what,
			bpf_program__section_name(prog));
}

int tool_missing(const struct tool_chooser *c, const char *event)
{
	const struct tool *t = c->tool;
	const char *why = t->no_btf_tp ? t->no_btf_why :
					 "this kernel has no tp_btf tracepoint for it";

	if (c->probe_eperm)
		tool_explain_eperm(t);
	else if (t->only_btf)
		fprintf(stderr,
			"%s: %s needs a classic tracepoint and tracefs is off "
			"(--only-btf)\n",
			t->name, event);
	else if (!c->events && c->events_err == EACCES)
		fprintf(stderr,
			"%s: %s needs a classic tracepoint (%s) and tracefs cannot be "
			"read by this user: run as root\n",
			t->name, event, why);
	else if (!c->events)
		fprintf(stderr,
			"%s: %s needs a classic tracepoint (%s) and tracefs is not "
			"mounted: %s\n",
			t->name, event, why, TOOL_TRACEFS_HINT);
	else
		fprintf(stderr,
			"%s: this kernel has no tracepoint %s (io_uring tracepoints "
			"need CONFIG_IO_URING and Linux 5.5+)\n",
			t->name, event);
	return -ENOENT;
}

/* The program named <prefix><suffix> in obj, or NULL. */
static struct bpf_program *find_prog(struct bpf_object *obj, const char *prefix, const char *suffix)
{
	char name[128];

	snprintf(name, sizeof(name), "%s%s", prefix, suffix);
	return bpf_object__find_program_by_name(obj, name);
}

int tool_pick(struct tool_chooser *c, struct bpf_object *obj, const struct tool_pair *p)
{
	struct bpf_program *btf, *tp;
	const char *colon, *event, *raw;
	char category[64];

	if (!c || !obj || !p || !p->prog || !p->event || !p->what)
		return -EINVAL;
	colon = strchr(p->event, ':');
	if (!colon || (size_t)(colon - p->event) >= sizeof(category))
		return -EINVAL;
	snprintf(category, sizeof(category), "%.*s", (int)(colon - p->event), p->event);
	event = colon + 1;
	raw = p->raw ? p->raw : event;
	btf = find_prog(obj, p->prog, "_btf");
	tp = find_prog(obj, p->prog, "_tp");

	if (p->classic_first && tp && tool_tp_exists(c, category, event)) {
		tool_use(c, tp, p->what);
		return TOOL_PICKED_CLASSIC;
	}
	if (btf && p->fits && tool_tp_btf_works(c, raw)) {
		tool_use(c, btf, p->what);
		return TOOL_PICKED_BTF;
	}
	if (!p->classic_first && tp && tool_tp_exists(c, category, event)) {
		tool_use(c, tp, p->what);
		return TOOL_PICKED_CLASSIC;
	}
	return -ENOENT;
}

/* The ring argument a tp_btf program reads, from that argument's kind. */
static __u32 ring_arg(enum tool_arg_kind k)
{
	return k == TOOL_ARG_KIOCB ? TOOL_RING_ARG_REQ :
	       k == TOOL_ARG_PTR   ? TOOL_RING_ARG_CTX :
				     TOOL_RING_ARG_NONE;
}

int tool_choose_submit(struct tool_chooser *c, struct bpf_object *obj, const char *what,
		       const char *what_failed, __u32 *sqe_ring, __u32 *failed_ring)
{
	enum tool_arg_kind req = tool_tp_arg(c->btf, "io_uring_submit_req", 0);
	enum tool_arg_kind sqe = tool_tp_arg(c->btf, "io_uring_submit_sqe", 0);
	enum tool_arg_kind failed = tool_tp_arg(c->btf, "io_uring_req_failed", 1);
	static const char *const progs[] = { "submit_req_btf", "submit_sqe_btf", "submit_req_tp",
					     "submit_sqe_tp",  "req_failed_btf", "req_failed_tp" };
	struct tool_pair p = { .what = what };
	int ret;

	for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++)
		if (!bpf_object__find_program_by_name(obj, progs[i])) {
			fprintf(stderr, "%s: the BPF object has no program %s\n", c->tool->name,
				progs[i]);
			return -EINVAL;
		}

	/* Both tp_btf programs before either classic twin: the tp_btf pair is
	 * cheaper, and one of the two events exists on every kernel. */
	p.prog = "submit_req";
	p.event = "io_uring:io_uring_submit_req";
	p.fits = req == TOOL_ARG_KIOCB;
	if (p.fits && tool_tp_btf_works(c, "io_uring_submit_req")) {
		tool_use(c, find_prog(obj, p.prog, "_btf"), what);
	} else if ((sqe == TOOL_ARG_KIOCB || sqe == TOOL_ARG_PTR) &&
		   tool_tp_btf_works(c, "io_uring_submit_sqe")) {
		*sqe_ring = ring_arg(sqe);
		tool_use(c, find_prog(obj, "submit_sqe", "_btf"), what);
	} else {
		p.fits = false;
		ret = tool_pick(c, obj, &p);
		p.prog = "submit_sqe";
		p.event = "io_uring:io_uring_submit_sqe";
		if (ret < 0 && tool_pick(c, obj, &p) < 0)
			return tool_missing(c, "io_uring:io_uring_submit_req");
	}

	p = (struct tool_pair){ .what = what_failed,
				.prog = "req_failed",
				.event = "io_uring:io_uring_req_failed",
				.fits = failed != TOOL_ARG_ABSENT };
	ret = tool_pick(c, obj, &p);
	if (ret == TOOL_PICKED_BTF)
		*failed_ring = ring_arg(failed);
	else if (ret < 0 && c->tool->verbose)
		fprintf(stderr,
			"%s: no io_uring_req_failed tracepoint (before 5.17): SQEs "
			"rejected at preparation are not counted\n",
			c->tool->name);
	return 0;
}

/* ------------------------------------------------------------ the CMD form */

/* Close both ends of a pipe, keeping errno. */
static void close_pipe(int p[2])
{
	int e = errno;

	close(p[0]);
	close(p[1]);
	errno = e;
}

pid_t tool_child_start(const struct tool *t, struct tool_child *c, char **cmd)
{
	int go[2], err[2];
	pid_t pid;

	*c = (struct tool_child){ .go_fd = -1, .err_fd = -1 };
	if (pipe2(go, O_CLOEXEC))
		goto fail;
	if (pipe2(err, O_CLOEXEC)) {
		close_pipe(go);
		goto fail;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close_pipe(go);
		close_pipe(err);
		goto fail;
	}
	if (pid == 0) {
		char b;
		int e;

		close(go[1]);
		close(err[0]);
		/* EOF instead of a byte: the parent gave up or died. */
		if (read(go[0], &b, 1) != 1)
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
	c->pid = pid;
	c->go_fd = go[1];
	c->err_fd = err[0];
	tool_child_pid = pid;
	return pid;
fail:
	pid = -errno;
	fprintf(stderr, "%s: cannot start %s: %s\n", t->name, cmd[0], strerror((int)-pid));
	return pid;
}

int tool_child_release(const struct tool *t, struct tool_child *c, const char *cmd)
{
	ssize_t n;
	int e;

	if (write(c->go_fd, "g", 1) != 1) {
		fprintf(stderr, "%s: cannot release %s: %s\n", t->name, cmd, strerror(errno));
		kill(c->pid, SIGKILL);
	}
	close(c->go_fd);
	c->go_fd = -1;
	/* The write end closes on a successful exec (O_CLOEXEC): EOF. */
	do
		n = read(c->err_fd, &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(c->err_fd);
	c->err_fd = -1;
	if (n != sizeof(e))
		return 0;
	fprintf(stderr, "%s: cannot run %s: %s\n", t->name, cmd, strerror(e));
	waitpid(c->pid, NULL, 0);
	c->pid = 0;
	tool_child_pid = 0;
	return -e;
}

int tool_child_wait(const struct tool *t, struct tool_child *c)
{
	int status, e;

	while (waitpid(c->pid, &status, 0) < 0)
		if (errno != EINTR) {
			e = errno;
			fprintf(stderr, "%s: waitpid: %s\n", t->name, strerror(e));
			return -e;
		}
	c->pid = 0;
	tool_child_pid = 0;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void tool_child_abort(struct tool_child *c)
{
	if (!c->pid || c->go_fd < 0)
		return;
	close(c->go_fd);
	close(c->err_fd);
	c->go_fd = c->err_fd = -1;
	waitpid(c->pid, NULL, 0);
	c->pid = 0;
	tool_child_pid = 0;
}

/* ------------------------------------------------------------ reporting */

unsigned long long tool_prog_misses(struct bpf_object *obj)
{
	unsigned long long misses = 0;
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, obj)
	{
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(prog);

		if (fd >= 0 && !bpf_obj_get_info_by_fd(fd, &info, &len))
			misses += info.recursion_misses;
	}
	return misses;
}
