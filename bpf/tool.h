/* SPDX-License-Identifier: MIT */
/*
 * bpf/tool.h - the user-side plumbing every BPF tool of bpf/ shares:
 * bpf/uring_count and bpf/qilin-observer. The Makefile links bpf/tool.c into
 * every program built from a pair bpf/X.bpf.c + bpf/X.c.
 *
 * What lives here is what does not depend on a tool's own programs or maps:
 *   - the command line both tools share: -p PID, -i/-d SECS, --json, -v,
 *     classic-only (-C) and tp_btf-only (-B), their argp entries and parser
 *     (usage errors exit with the tool's argp_err_exit_status);
 *   - the environment: privileges, kernel BTF, tracefs, libbpf's log;
 *   - the program chooser: which raw tracepoints the kernel's BTF has and
 *     what their arguments are, whether a tp_btf program loads, whether
 *     tracefs lists the classic twin, one program of each pair turned on
 *     (tp_btf first, the classic tracepoint as the fallback: the
 *     libbpf-tools habit, bpf_program__set_autoload() before load), the
 *     io_uring submission events both tools count, and the messages saying
 *     why neither program of a pair can run;
 *   - the target: a pid's thread group, or a command started stopped before
 *     its exec so that nothing it does is missed;
 *   - signals (set a flag, forward to the command) and reporting helpers.
 * Which other events each tool follows, what its tp_btf programs need from
 * the raw arguments and what its knobs mean stay in each tool's X.c: it
 * calls these small functions in its own order. Programs are found by name:
 * a pair is <prefix>_btf and <prefix>_tp in the tool's BPF object.
 *
 * Every message goes to stderr and starts with the tool's name; a function
 * that prints says so in its contract. Single-threaded: these functions run
 * on the tool's main thread; the signal handler only writes tool_exiting and
 * forwards the signal to tool_child_pid.
 */
#ifndef QILIN_BPF_TOOL_H
#define QILIN_BPF_TOOL_H

#include <argp.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define TOOL_VMLINUX_BTF "/sys/kernel/btf/vmlinux"
#define TOOL_TRACEFS_HINT "mount -t tracefs nodev /sys/kernel/tracing"

/* A tool: its name and the options that steer the chooser and the log. The
 * tool owns it (usually a static) and sets the flags while parsing
 * arguments; nothing here frees it. */
struct tool {
	const char *name;	/* every message starts "<name>: " */
	const char *doing;	/* "counting", "observing": the thread-of-process note */
	const char *no_btf_why; /* why tp_btf is off, when no_btf_tp (for tool_missing) */
	const char *no_btf_opt; /* the long option that sets no_btf_tp ('C') */
	int what_width;		/* width of the "what" column of -v's program lines */
	bool verbose;		/* -v: say which programs are used; libbpf's warnings */
	bool no_btf_tp;		/* never tp_btf: the classic twins only */
	bool only_btf;		/* never tracefs, as if it were not mounted */
	bool quiet_libbpf;	/* mute libbpf's warnings for a while (even with -v) */
	/* The options every tool has, set by tool_parse_key(). */
	pid_t pid;	 /* -p PID, as given; 0 = none */
	double interval; /* -i SECS (the tool's default until then) */
	double duration; /* -d SECS, 0 = unbounded */
	double min_secs; /* the least -i and -d accept (and more than 0) */
	bool json;	 /* --json */
};

/* What the running kernel offers, for choosing one program of each pair.
 * Filled by tool_chooser_init(), released by tool_chooser_fini(). */
struct tool_chooser {
	struct tool *tool;
	struct btf *btf;    /* the running kernel's */
	const char *events; /* tool_tracefs_events(), or NULL */
	int events_err;	    /* why events is NULL: ENOENT or EACCES */
	bool probe_eperm;   /* a tp_btf probe load was refused with EPERM */
};

/* What argument idx (0-based, not counting the leading void *__data) of a
 * raw tracepoint is, read from the BTF typedef btf_trace_<tp>. */
enum tool_arg_kind {
	TOOL_ARG_ABSENT, /* no such tracepoint, or fewer arguments */
	TOOL_ARG_KIOCB,	 /* struct io_kiocb * */
	TOOL_ARG_CQE,	 /* struct io_uring_cqe * */
	TOOL_ARG_PTR,	 /* any other pointer (void *, struct io_ring_ctx *) */
	TOOL_ARG_OTHER,	 /* not a pointer */
};

/* A command started by tool_child_start(), blocked before its exec. */
struct tool_child {
	pid_t pid;  /* 0 when there is none (or it was reaped) */
	int go_fd;  /* write end: one byte lets it exec; -1 once released */
	int err_fd; /* read end: errno when its exec failed; -1 once released */
};

/* Set by the handler tool_catch_signals() installs: the signal's number. */
extern volatile sig_atomic_t tool_exiting;
/* Where that handler forwards SIGINT and SIGTERM (0: nowhere). Set and
 * cleared by the tool_child_* functions. */
extern volatile pid_t tool_child_pid;

/* ------------------------------------------------------------ arguments */

/* Parse a number of seconds for argp: more than 0, at least min, at most
 * 1e7, fractions allowed. On a bad one argp_error() prints "invalid number
 * of seconds: ARG" and exits with argp_err_exit_status. */
double tool_parse_secs(struct argp_state *state, const char *arg, double min);

/* Parse a pid (1..INT_MAX) for argp; on a bad one argp_error() prints
 * "invalid PID: ARG" and exits. */
pid_t tool_parse_pid(struct argp_state *state, const char *arg);

/*
 * The argp_option entries of the options tool_parse_key() parses, with the
 * tool's own help texts: -p (pid_doc), -i (interval_doc), -d, --json
 * (json_doc), -v (verbose_doc), -C (long name classic_opt, classic_doc),
 * --only-btf (flags btf_flags, btf_doc), and a hidden -h the tool handles
 * (help on stdout or stderr). argp sorts them with the tool's own.
 */
#define TOOL_ARGP_OPTIONS(pid_doc, interval_doc, json_doc, verbose_doc, classic_opt, classic_doc, \
			  btf_flags, btf_doc)                                                     \
	{ "pid", 'p', "PID", 0, pid_doc, 0 }, { "interval", 'i', "SECS", 0, interval_doc, 0 },    \
		{ "duration", 'd', "SECS", 0, "Stop after SECS seconds", 0 },                     \
		{ "json", 'j', NULL, 0, json_doc, 0 },                                            \
		{ "verbose", 'v', NULL, 0, verbose_doc, 0 },                                      \
		{ classic_opt, 'C', NULL, 0, classic_doc, 0 },                                    \
		{ "only-btf", 'B', NULL, btf_flags, btf_doc, 0 },                                 \
	{                                                                                         \
		NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0                           \
	}

/*
 * The option keys every tool gives the same meaning: 'p' PID (t->pid), 'i'
 * and 'd' SECS (t->interval, t->duration: tool_parse_secs() with
 * t->min_secs), 'j' (t->json), 'v' (t->verbose), 'C' (t->no_btf_tp: classic
 * tracepoints only), 'B' (t->only_btf: tp_btf only, as if tracefs were
 * absent); at ARGP_KEY_END, argp_error() when both C and B were given.
 * Returns true when key was one of these; for an argp parser's default case
 * (ARGP_KEY_END falling through to it). A bad value exits through
 * argp_error().
 */
bool tool_parse_key(struct tool *t, int key, char *arg, struct argp_state *state);

/* ------------------------------------------------------------ environment */

/* Route libbpf's log through t: warnings and info only with t->verbose and
 * not t->quiet_libbpf, debug never. t must outlive every libbpf call. */
void tool_libbpf_print_to(struct tool *t);

/* True when the effective capabilities allow loading and attaching tracing
 * programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (Linux 5.8+). Also
 * true when that cannot be read: then the load itself will tell. */
bool tool_have_bpf_caps(void);

/* Print why loading BPF programs was refused (privileges, lockdown). */
void tool_explain_eperm(const struct tool *t);

/* Print why the skeleton's load or attach failed; err is its -errno. */
void tool_say_load_failed(const struct tool *t, int err);
void tool_say_attach_failed(const struct tool *t, int err);

/* The thread group of pid, read from /proc: -p may name any thread. Returns
 * the tgid, or -errno (-ENOENT or -ESRCH: no such process). */
pid_t tool_pid_to_tgid(pid_t pid);

/* The thread group to follow for -p pid. Prints "no process with pid N" or
 * why /proc could not be read and returns -errno; prints a note when pid is
 * a thread of another process (then the whole process is followed). */
pid_t tool_target_pid(const struct tool *t, pid_t pid);

/* The tracefs events folder, where classic tracepoints are listed, or NULL
 * when tracefs is mounted in neither usual place (*err = ENOENT) or cannot
 * be read by this user (*err = EACCES: it is mode 0700, root's). */
const char *tool_tracefs_events(int *err);

/* Monotonic time in seconds. */
double tool_now(void);

/* Install the SIGINT and SIGTERM handler (sets tool_exiting, forwards to
 * tool_child_pid). */
void tool_catch_signals(void);

/* ------------------------------------------------------------ choosing */

/*
 * Everything that can be checked before touching a target: privileges, the
 * kernel's BTF (read into c->btf), where tracefs is. Returns 0, or -errno
 * after printing why the tool cannot run here. c->btf is NULL on failure;
 * tool_chooser_fini() is harmless either way.
 */
int tool_chooser_init(struct tool_chooser *c, struct tool *t);
void tool_chooser_fini(struct tool_chooser *c);

/* Turn autoload off for every program of obj: the chooser turns on one of
 * each pair with tool_use(). */
void tool_autoload_none(struct bpf_object *obj);

/* What argument idx of raw tracepoint tp is (see enum tool_arg_kind). */
enum tool_arg_kind tool_tp_arg(const struct btf *btf, const char *tp, unsigned int idx);

/* True when tp_btf is allowed, the kernel has raw tracepoint tp in its BTF
 * and loads a minimal tp_btf program for it (libbpf-tools' probe_tp_btf()
 * idea). Remembers an EPERM refusal in c->probe_eperm; with -v, says why a
 * probe failed. */
bool tool_tp_btf_works(struct tool_chooser *c, const char *tp);

/* True when tracefs is allowed and lists the classic tracepoint
 * category:event. */
bool tool_tp_exists(const struct tool_chooser *c, const char *category, const char *event);

/* Turn on prog; with -v, say it serves `what`. */
void tool_use(const struct tool_chooser *c, struct bpf_program *prog, const char *what);

/* Neither program of a required pair for event can run: print why (no
 * privileges, tracefs off, unreadable or not mounted, no such tracepoint).
 * Returns -ENOENT. */
int tool_missing(const struct tool_chooser *c, const char *event);

/* One event's pair of programs in a tool's BPF object, named <prog>_btf
 * (tp_btf) and <prog>_tp (classic tracepoint); either may be absent. */
struct tool_pair {
	const char *what;   /* -v label: what the chosen program counts */
	const char *prog;   /* the programs' common prefix: "complete" */
	const char *event;  /* the classic twin, "category:event" */
	const char *raw;    /* the raw tracepoint, when not event's name */
	bool fits;	    /* <prog>_btf reads this kernel's raw arguments right */
	bool classic_first; /* try the classic twin before the tp_btf program */
};

/* What tool_pick() turned on. */
enum tool_picked {
	TOOL_PICKED_BTF = 1,
	TOOL_PICKED_CLASSIC = 2,
};

/*
 * Turn on one program of the pair p of obj: <prog>_btf when p->fits and
 * tool_tp_btf_works(), else <prog>_tp when tool_tp_exists() (the other way
 * round with classic_first). Returns TOOL_PICKED_BTF or TOOL_PICKED_CLASSIC,
 * -ENOENT when neither can run (prints nothing then: tool_missing() says
 * why for a required event, the tool what is lost for an optional one), or
 * -EINVAL when an argument is NULL or p->event is not "category:event".
 */
int tool_pick(struct tool_chooser *c, struct bpf_object *obj, const struct tool_pair *p);

/* How a tp_btf program finds the ring in its tracepoint's arguments; the
 * values of each tool's own copy of this enum in its X.h (the BPF side
 * cannot include this header) must be these. */
enum tool_ring_arg {
	TOOL_RING_ARG_NONE = 0, /* no ring among the arguments */
	TOOL_RING_ARG_CTX = 1,	/* the argument is the ring (void *, struct io_ring_ctx *) */
	TOOL_RING_ARG_REQ = 2,	/* the argument is a struct io_kiocb *; ring = req->ctx */
};

/*
 * The submissions every io_uring tool counts, with the programs named as
 * both tools name them: io_uring_submit_req (Linux 6.0+; submit_req_btf,
 * submit_req_tp) or io_uring_submit_sqe before (submit_sqe_btf,
 * submit_sqe_tp), tp_btf first for both, then the classic twins; and the
 * SQEs rejected at preparation, io_uring_req_failed (5.17+, optional;
 * req_failed_btf, req_failed_tp). Stores the ring argument of the chosen
 * tp_btf programs (enum tool_ring_arg) in *sqe_ring and *failed_ring, the
 * const volatile knobs of the skeleton's rodata, and leaves them alone when
 * a classic twin runs. Returns 0, or -ENOENT after printing why no
 * submission program can run.
 */
int tool_choose_submit(struct tool_chooser *c, struct bpf_object *obj, const char *what,
		       const char *what_failed, __u32 *sqe_ring, __u32 *failed_ring);

/* ------------------------------------------------------------ the CMD form */

/*
 * Fork a child that waits, before exec'ing cmd, until tool_child_release()
 * lets it go (it blocks reading a pipe). Fills *c and sets tool_child_pid.
 * Returns the child's pid, or -errno after printing "cannot start CMD".
 */
pid_t tool_child_start(const struct tool *t, struct tool_child *c, char **cmd);

/*
 * Let the child exec cmd[0], and learn whether the exec worked. Closes both
 * pipes. Returns 0 once cmd runs; when the exec failed, prints "cannot run
 * CMD: why", reaps the child and returns the exec's -errno (the tool then
 * exits 127). When the byte cannot be sent, prints why and kills the child
 * (its wait then reports SIGKILL).
 */
int tool_child_release(const struct tool *t, struct tool_child *c, const char *cmd);

/* Wait for the released child. Returns what a shell would report: its exit
 * status, or 128+N when signal N killed it; -errno after printing when
 * waitpid fails. */
int tool_child_wait(const struct tool *t, struct tool_child *c);

/* A child never released: closing its pipe makes it _exit(127); reap it. A
 * no-op when c holds no such child (zeroed, failed to start, or released). */
void tool_child_abort(struct tool_child *c);

/* ------------------------------------------------------------ reporting */

/* Kernel-side runs of obj's programs skipped because another BPF program was
 * running on that CPU (bpf_prog_info.recursion_misses, Linux 5.12+): events
 * were lost when this is not 0. */
unsigned long long tool_prog_misses(struct bpf_object *obj);

#endif /* QILIN_BPF_TOOL_H */
