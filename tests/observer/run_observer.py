#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tests/observer/run_observer.py BUILD_DIR - the tests of qilin-observer.

Runs BUILD_DIR/bpf/qilin-observer, for real, against the target programs in
BUILD_DIR/tests/observer (obs_depth, obs_latency, obs_tcp, obs_qilin,
obs_overflow: see each .c) and against the kernel's own accounting, and prints one line per
test case and a Check-style summary that tests/run.sh adds up:

    PASS: observer/CASE
    FAIL: observer/CASE: why            (a Failure)
    ERROR: observer/CASE: why           (an Error: the harness itself broke)
    SKIP: observer/CASE: why            (not counted in Checks)
    100%: Checks: N, Failures: F, Errors: E

Cases (what each asserts is in its docstring below), in order: depth,
depth_cmd, depth_classic, depth_sqpoll, cgroup, attach_running, workers, latency,
errors, cq_overflow, retrans_alone, retrans_ipv6, retrans_close, retrans_classic,
retrans_lossless_target, retrans_two, retrans_stale_socket, prometheus,
prometheus_retrans, target_exit, cmd_status, cli, no_such_pid,
unprivileged, json_schema (last: it validates every line printed before).

Nothing here is mocked: the observer loads its BPF programs into the running
kernel, the targets use io_uring through liburing, TCP runs over the
loopback of a network namespace made lossy with nftables, and the ground truth
is the kernel's own count (TcpRetransSegs of that namespace through nstat,
TCP_INFO of each socket), the programs' own clocks and counters
(clock_gettime, ql_exec_stats), the observer's BPF links in /proc/PID/fdinfo,
promtool and the JSON Schema. Each case that cannot run here (not root, no
kernel BTF, no tracefs, a tool missing) prints SKIP with the exact reason and
is not counted as passed. Namespaces made here are named qlobs-PID-N and are
deleted on every exit path (finally, SIGTERM, SIGINT, SIGHUP). Every process
started here is killed by its own pid, never by name.

Environment: QILIN_OBS_ONLY="case case..." runs only those cases;
QILIN_OBS_KEEP=1 keeps the scratch folder (observer outputs) for a look.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCHEMA = os.path.join(REPO, "docs", "observer-schema.json")

# tests/observer/*.c program names -> paths, set in main().
PROG = {}
OBSERVER = None
SCRATCH = None

# Every JSON line any observer run printed, for the json_schema case:
# (where it came from, the line).
ALL_JSON = []

# The processes and namespaces to clean up whatever happens.
LIVE = []
NAMESPACES = []


class Fail(Exception):
    """An assertion of a test case did not hold."""


class Skip(Exception):
    """The case cannot run here; the message says why."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# ------------------------------------------------------------ processes


class Proc:
    """A process started here, its stdout and stderr going to files."""

    def __init__(self, name, argv, env=None, preexec=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(SCRATCH, f"{name}.out")
        self.err_path = os.path.join(SCRATCH, f"{name}.err")
        n = 1
        while os.path.exists(self.out_path):
            n += 1
            self.out_path = os.path.join(SCRATCH, f"{name}.{n}.out")
            self.err_path = os.path.join(SCRATCH, f"{name}.{n}.err")
        e = dict(os.environ)
        e.update(env or {})
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                      env=e, preexec_fn=preexec)
        self.pid = self.p.pid
        LIVE.append(self)

    def out(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def err(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def errmsg(self):
        """The gist of stderr: a sanitizer's report line, else its end."""
        err = self.err()
        m = re.search(r"^.*(?:runtime error|Sanitizer|LeakSanitizer).*$", err, re.M)
        if m:
            return repr(m.group(0).strip()[:400])
        return repr(err.strip()[-400:])

    def lines(self):
        return [l for l in self.out().split("\n") if l != ""]

    def wait_line(self, pred, timeout, what):
        """Wait for an output line pred() accepts; return it."""
        end = time.monotonic() + timeout
        while True:
            for l in self.lines():
                if pred(l):
                    return l
            if self.p.poll() is not None:
                # It may have printed the line just before exiting.
                for l in self.lines():
                    if pred(l):
                        return l
                raise Fail(f"{self.name} exited ({self.describe()}) before {what}; "
                           f"stderr: {self.errmsg()}")
            if time.monotonic() > end:
                raise Fail(f"{self.name}: no {what} within {timeout} s; "
                           f"stderr: {self.errmsg()}")
            time.sleep(0.02)

    def wait(self, timeout):
        """Wait for the exit; returns the status or raises Fail on timeout."""
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"{self.name} did not exit within {timeout} s "
                       f"(command: {' '.join(self.argv)})")

    def describe(self):
        rc = self.p.returncode
        if rc is None:
            return "running"
        if rc < 0:
            return f"killed by signal {-rc}"
        return f"exit status {rc}"

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def reap_all():
    while LIVE:
        LIVE.pop().kill()


class Observer(Proc):
    """qilin-observer with --json; its stdout lines are JSON objects."""

    def __init__(self, name, args, env=None, preexec=None, argv=None):
        """argv, when given, is the whole command (a wrapper that runs the
        observer as its last step); else qilin-observer ARGS."""
        self.collected = 0  # lines already added to ALL_JSON
        super().__init__(name, argv or [OBSERVER] + args, env=env, preexec=preexec)

    def records(self):
        """The JSON lines so far (all of stdout must be JSON lines)."""
        recs = []
        for l in self.lines():
            try:
                recs.append(json.loads(l))
            except ValueError:
                raise Fail(f"{self.name}: a line on stdout is not JSON: {l[:200]!r}")
            if len(recs) > self.collected:
                ALL_JSON.append((self.out_path, l))
                self.collected += 1
        return recs

    def wait_records(self, n, timeout):
        """Wait until at least n JSON lines were printed; return them all."""
        end = time.monotonic() + timeout
        while True:
            recs = self.records()
            if len(recs) >= n:
                return recs
            if self.p.poll() is not None:
                raise Fail(f"{self.name} exited ({self.describe()}) after {len(recs)} lines; "
                           f"stderr: {self.errmsg()}")
            if time.monotonic() > end:
                raise Fail(f"{self.name}: {len(recs)} JSON lines after {timeout} s, "
                           f"wanted {n}; stderr: {self.errmsg()}")
            time.sleep(0.02)

    def finish(self, target_pid, timeout=5):
        """After the target exited: the observer must print its last interval,
        say so on stderr and exit 0. Returns the last record."""
        rc = self.wait(timeout)
        recs = self.records()
        check(rc == 0, f"{self.name}: {self.describe()} after the target exited, not 0; "
                       f"stderr: {self.errmsg()}")
        msg = f"qilin-observer: target {target_pid} exited"
        check(msg in self.err(), f"{self.name}: stderr lacks {msg!r}: {self.errmsg()}")
        check(recs, f"{self.name}: no JSON line at all")
        check(recs[-1].get("target_exited") is True,
              f"{self.name}: last line has target_exited={recs[-1].get('target_exited')!r}")
        check_intervals(self.name, recs)
        return recs[-1]


def check_intervals(name, recs):
    """What every run's lines must satisfy: ts increases; counters never go
    down; sqes_per_enter is this interval's SQEs over its enters (0 when it
    had none), the first interval starting at attach."""
    prev = None
    for i, r in enumerate(recs):
        e = r["errors"]
        ps, pe = (prev["errors"]["sqes_total"], prev["errors"]["enters_total"]) if prev \
            else (0, 0)
        check(e["sqes_total"] >= ps and e["enters_total"] >= pe,
              f"{name}: line {i + 1}: sqes_total/enters_total went down")
        ds, de = e["sqes_total"] - ps, e["enters_total"] - pe
        want = ds / de if de else 0
        check(abs(e["sqes_per_enter"] - want) < 0.0011,
              f"{name}: line {i + 1}: sqes_per_enter {e['sqes_per_enter']}, but the interval "
              f"had {ds} SQEs in {de} enters (totals {e['sqes_total']}/{e['enters_total']})")
        if prev:
            check(r["ts"] > prev["ts"], f"{name}: line {i + 1}: ts does not increase")
            check(r["retransmits"]["total"] >= prev["retransmits"]["total"],
                  f"{name}: line {i + 1}: retransmits.total went down")
        prev = r


def observer_attached(obs, timeout=15):
    """Wait for the first interval: the programs are loaded and attached."""
    obs.wait_records(1, timeout)


def attach_json(t, name, env=None):
    """An observer of target t (-p, a JSON record every 0.2 s), attached."""
    obs = Observer(name, ["-p", str(t.pid), "-i", "0.2", "--json"], env=env)
    observer_attached(obs)
    return obs


def trigger(t, obs, line):
    """SIGUSR1 the waiting target t, wait for its line starting with `line`,
    and return the last of the two whole intervals that follow."""
    t.signal(signal.SIGUSR1)
    t.wait_line(lambda l: l.startswith(line), 10, f"{line} line")
    n0 = len(obs.records())
    return obs.wait_records(n0 + 2, 10)[-1]


def run(argv, timeout=30, check_rc=True, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, **kw)
    if check_rc and r.returncode != 0:
        raise Fail(f"{' '.join(argv)}: exit status {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


# ------------------------------------------------------------ helpers on records


def rings_of(rec):
    return rec.get("rings") or []


def lat_of(rec, op):
    for h in rec.get("latency") or []:
        if h.get("op") == op:
            return h
    return None


def bucket_le(v):
    """The le_ns of the log2 bucket holding v (2^(i-1) < v <= 2^i)."""
    le = 1
    while le < v:
        le *= 2
    return le


def bpf_links(pid):
    """The BPF links pid holds, from /proc/PID/fdinfo: [(link_type, tp_name)],
    link_type "raw_tracepoint" for a tp_btf program, "perf" for a classic
    tracepoint (or kprobe/uprobe), "iter", "uprobe_multi"..."""
    links = []
    fddir = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fddir):
        try:
            with open(os.path.join(fddir, fd)) as f:
                info = f.read()
        except OSError:
            continue
        m = re.search(r"^link_type:\s*(\S+)", info, re.M)
        if m:
            t = re.search(r"^tp_name:\s*(\S+)", info, re.M)
            links.append((m.group(1), t.group(1) if t else None))
    return links


def recursion_misses(pid):
    """{prog_id: recursion_misses} of pid's BPF programs that missed events
    because one of them was already running on that CPU (a diagnosis aid)."""
    out = {}
    fddir = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(fddir)
    except OSError:
        return out
    for fd in fds:
        try:
            with open(os.path.join(fddir, fd)) as f:
                info = f.read()
        except OSError:
            continue
        m = re.search(r"^prog_id:\s*(\d+)", info, re.M)
        r = re.search(r"^recursion_misses:\s*(\d+)", info, re.M)
        if m and r and int(r.group(1)) and "prog_type" in info:
            out[prog_name(int(m.group(1)))] = int(r.group(1))
    return out


def prog_name(prog_id):
    """'ID name' of a loaded BPF program (bpftool), or just its id."""
    try:
        r = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           timeout=10)
        return f"{prog_id} {json.loads(r.stdout).get('name', '?')}"
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return str(prog_id)


def check_tracepoint_kind(pid, classic):
    """tp_btf by default, classic tracepoints only when forced: the io_uring
    submit and complete events are attached through the expected kind of
    link, and with classic forced no raw_tracepoint (tp_btf) link is left."""
    links = bpf_links(pid)
    check(links, "the observer holds no BPF link (/proc/PID/fdinfo)")
    want = "perf" if classic else "raw_tracepoint"
    for tp in ("io_uring_submit_req", "io_uring_complete", "tcp_retransmit_skb"):
        kinds = {k for k, name in links if name == tp}
        check(want in kinds, f"{tp} is attached as {kinds or 'nothing'}, want {want}"
                             f"{' (QILIN_OBSERVER_NO_BTF_TP=1)' if classic else ''}")
    if classic:
        btf = sorted(name for k, name in links if k == "raw_tracepoint")
        check(not btf, f"QILIN_OBSERVER_NO_BTF_TP=1, yet tp_btf links remain: {btf}")


# ------------------------------------------------------------ depth


def depth_case(name, env=None, classic=False):
    """Two threads of obs_depth hold 7 and 64 reads on pipes nobody writes,
    submitted only once the observer (-p) is attached. The ring whose tid is
    each thread's reports inflight == K, sqes_total == K, cqes_total == 0,
    cq_backlog 0, inflight_max == K; there are exactly two rings; the
    process made exactly two enters and 71 SQEs. Then the target exits: the
    observer says so and exits 0."""
    t = Proc(f"{name}-target", [PROG["obs_depth"], "--wait", "--hold", "30", "7", "64"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    tids = {}
    for l in t.lines():
        if l.startswith("ring "):
            _, _, tid, k = l.split()
            tids[int(tid)] = int(k)
    obs = attach_json(t, f"{name}-observer", env=env)
    check_tracepoint_kind(obs.pid, classic)
    # Two whole intervals after the submissions returned.
    last = trigger(t, obs, "submitted")
    check(last.get("pid") == t.pid, f"pid {last.get('pid')} in the record, target is {t.pid}")
    rings = rings_of(last)
    check(len(rings) == 2, f"{len(rings)} rings reported, the target has 2: {rings}")
    for tid, k in tids.items():
        mine = [r for r in rings if r.get("tid") == tid]
        check(len(mine) == 1, f"no ring (or several) with tid {tid}; rings: {rings}")
        r = mine[0]
        for field, want in (("inflight", k), ("inflight_max", k), ("sqes_total", k),
                            ("cqes_total", 0), ("cq_backlog", 0)):
            check(r.get(field) == want, f"ring of tid {tid} (K={k}): {field} = "
                                        f"{r.get(field)}, want {want}; ring: {r}")
    err = last.get("errors") or {}
    check(err.get("sqes_total") == 71, f"errors.sqes_total = {err.get('sqes_total')}, want 71")
    check(err.get("enters_total") == 2, f"errors.enters_total = {err.get('enters_total')}, "
                                        "want 2 (one io_uring_submit per thread)")
    rd = lat_of(last, "READ")
    check(rd is None or rd.get("count") == 0, f"READ latency has completions: {rd}")
    t.signal(signal.SIGTERM)
    check(t.wait(5) == 0, f"obs_depth: {t.describe()}")
    fin = obs.finish(t.pid)
    fr = [r for r in rings_of(fin) if r.get("tid") in tids]
    check(len(fr) == 2, f"final record: rings {rings_of(fin)}")


def case_depth():
    depth_case("depth", classic=False)


def case_depth_classic():
    """The depth case again with QILIN_OBSERVER_NO_BTF_TP=1: the observer
    must attach classic tracepoint programs only (checked in the observer's
    /proc/PID/fdinfo: perf links, no raw_tracepoint link) and report the
    same."""
    if not os.path.isdir("/sys/kernel/tracing/events/io_uring") and \
            not os.path.isdir("/sys/kernel/debug/tracing/events/io_uring"):
        raise Skip("classic tracepoints need tracefs with events/io_uring "
                   "(mount -t tracefs nodev /sys/kernel/tracing)")
    depth_case("depth_classic", env={"QILIN_OBSERVER_NO_BTF_TP": "1"}, classic=True)


def case_depth_cmd():
    """qilin-observer -- obs_depth 7: the observer starts the command and is
    attached before it runs; it reports the ring with inflight 7 while the
    command holds, and exits with the command's status (0)."""
    obs = Observer("depth_cmd", ["-i", "0.2", "--json", "--", "/bin/sh", "-c",
                                 f'exec "$0" --hold 3 7 >"{SCRATCH}/depth_cmd.target"',
                                 PROG["obs_depth"]])
    obs.wait_records(1, 15)
    end = time.monotonic() + 10
    seen = None
    while time.monotonic() < end and obs.p.poll() is None:
        for rec in obs.records():
            for r in rings_of(rec):
                if r.get("inflight") == 7 and r.get("sqes_total") == 7:
                    seen = rec
        if seen:
            break
        time.sleep(0.05)
    check(seen, f"no interval showed a ring with inflight 7 and 7 SQEs; last lines: "
                f"{obs.records()[-2:]}")
    check(len(rings_of(seen)) == 1, f"{len(rings_of(seen))} rings, obs_depth 7 has one")
    rc = obs.wait(10)
    check(rc == 0, f"observer exit status {rc}, the command exited 0; "
                   f"stderr {obs.errmsg()}")
    check_intervals("depth_cmd", obs.records())


def case_depth_sqpoll():
    """A ring with IORING_SETUP_SQPOLL: the kernel's SQ thread (a thread of
    the target) takes the 7 SQEs, not an io_uring_enter. The only ring has 7
    in flight and 7 SQEs, and its tid is a thread of the target."""
    t = Proc("sqpoll-target", [PROG["obs_depth"], "--wait", "--sqpoll", "--hold", "30", "7"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    obs = attach_json(t, "sqpoll-observer")
    last = trigger(t, obs, "submitted")
    tids = {int(x) for x in os.listdir(f"/proc/{t.pid}/task")}
    t.signal(signal.SIGTERM)
    check(t.wait(5) == 0, f"obs_depth: {t.describe()}")
    obs.finish(t.pid)
    rings = rings_of(last)
    check(len(rings) == 1, f"{len(rings)} rings, want 1: {rings}")
    r = rings[0]
    check(r["inflight"] == 7 and r["sqes_total"] == 7 and r["cqes_total"] == 0,
          f"SQPOLL ring {r}: want 7 in flight, 7 SQEs, 0 CQEs")
    check(r["tid"] in tids, f"ring tid {r['tid']} is not a thread of the target {sorted(tids)}")


def cgroup2_root():
    """A mounted cgroup v2 hierarchy, or None."""
    with open("/proc/self/mounts") as f:
        for l in f:
            parts = l.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    return None


def case_cgroup():
    """-c CGROUP_PATH: two obs_depth processes, one moved into a fresh cgroup
    v2 folder (3 reads), one left outside (5 reads). The observer of the
    folder reports the member's ring only (inflight 3, 3 SQEs), pid null and
    cgroup the path. Without a cgroup v2 hierarchy mounted (this machine
    mounts v1 controllers only), one is mounted for the test in a private
    mount namespace (unshare -m), where the observer runs; the folder is
    removed at the end."""
    if not shutil.which("unshare"):
        raise Skip("unshare is not installed (util-linux)")
    inside = Proc("cg-inside", [PROG["obs_depth"], "--wait", "--hold", "30", "3"])
    outside = Proc("cg-outside", [PROG["obs_depth"], "--wait", "--hold", "30", "5"])
    for t in (inside, outside):
        t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    root = cgroup2_root()
    mnt = root or tempfile.mkdtemp(prefix="qlobs-cg.", dir=SCRATCH)
    cg = os.path.join(mnt, f"qlobs-{os.getpid()}")
    script = (("" if root else f'mount -t cgroup2 none "{mnt}" || exit 97; ') +
              f'mkdir "{cg}" && echo {inside.pid} > "{cg}/cgroup.procs" || exit 98; '
              f'"{OBSERVER}" -c "{cg}" --json -i 0.2 -d 2.5; rc=$?; '
              f'echo {inside.pid} > "{mnt}/cgroup.procs"; rmdir "{cg}"; exit $rc')
    argv = ["sh", "-c", script]
    if not root:
        argv = ["unshare", "-m", "--propagation", "private"] + argv
    obs = Observer("cg-observer", None, argv=argv)
    try:
        observer_attached(obs)
    except Fail:
        if obs.p.poll() in (97, 98):
            raise Skip(f"cannot make a cgroup v2 folder here: {obs.err().strip()[:200]}")
        raise
    for t in (inside, outside):
        t.signal(signal.SIGUSR1)
        t.wait_line(lambda l: l.startswith("submitted"), 10, "submitted line")
    rc = obs.wait(10)
    check(rc == 0, f"observer -c: {obs.describe()}; {obs.errmsg()}")
    last = obs.records()[-1]
    check(last["pid"] is None and last["cgroup"] == cg,
          f"pid {last['pid']!r}, cgroup {last['cgroup']!r}: want null and {cg}")
    rings = rings_of(last)
    check(len(rings) == 1 and rings[0]["inflight"] == 3 and rings[0]["sqes_total"] == 3,
          f"rings {rings}: want only the member's, 3 in flight and 3 SQEs (the other "
          "process, outside the folder, has 5)")
    for t in (inside, outside):
        t.signal(signal.SIGTERM)
        t.wait(5)


def case_attach_running():
    """Attach to a process whose rings predate the observer: obs_depth --late
    submits 3 and 5 reads on two rings, the observer attaches (-p), then each
    thread writes one byte into each pipe and reaps the completions without
    submitting anything. Every CQE posted after attach counts: both rings are
    listed, with cqes_total 3 and 5, none in flight (the reads were submitted
    before attach, so they are not counted in flight, and never negative),
    and no SQE."""
    t = Proc("late-target", [PROG["obs_depth"], "--late", "--hold", "30", "3", "5"])
    t.wait_line(lambda l: l.startswith("submitted"), 10, "submitted line")
    obs = attach_json(t, "late-observer")
    last = trigger(t, obs, "completed")
    t.signal(signal.SIGTERM)
    check(t.wait(5) == 0, f"obs_depth: {t.describe()}")
    obs.finish(t.pid)
    rings = rings_of(last)
    got = sorted(r["cqes_total"] for r in rings)
    check(got == [3, 5], f"rings' cqes_total {got}, want [3, 5]: CQEs posted after attach on "
                         f"rings that submitted nothing since attach; rings: {rings}")
    for r in rings:
        check(r["inflight"] == 0 and r["sqes_total"] == 0, f"ring {r}: want 0 in flight, 0 SQEs")
    check(last["errors"]["sqes_total"] == 0, f"errors.sqes_total {last['errors']['sqes_total']}")


def case_workers():
    """A libqilin program (obs_qilin: 2 workers, 64 stackful tasks blocked
    in ql_read) observed from before its tasks start: the worker section
    (USDT qilin:tick) lists exactly workers 0 and 1, each with the in-flight
    count and run-queue depth the executor itself reports (ql_exec_stats)
    once it is parked, and no pending SQE; each worker thread's ring has
    exactly the SQEs, enters and CQEs the executor counted since go."""
    t = Proc("qilin-target", [PROG["obs_qilin"], "--wait", "--hold", "30", "-w", "2", "64"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    obs = attach_json(t, "qilin-observer")
    last = trigger(t, obs, "submitted")
    me = json.loads([l for l in t.lines() if l.startswith("{")][0])
    t.signal(signal.SIGTERM)
    check(t.wait(10) == 0, f"obs_qilin: {t.describe()}; {t.errmsg()}")
    obs.finish(t.pid, timeout=10)
    ws = {w["worker"]: w for w in last["workers"]}
    check(sorted(ws) == [0, 1], f"workers {sorted(ws)}, the executor has 0 and 1")
    for mw in me["workers"]:
        w = ws[mw["worker"]]
        now = mw["now"]
        for field, want in (("inflight", now["inflight"]), ("runq_depth", now["runq_depth"]),
                            ("pending_sqes", 0)):
            check(w[field] == want, f"worker {mw['worker']}: {field} {w[field]}, the executor "
                                    f"says {want}")
    # Each worker's ring: the only ring with exactly its SQE count since go.
    sq = sorted(mw["now"]["sqes"] - mw["go"]["sqes"] for mw in me["workers"])
    cq = sorted(mw["now"]["cqes"] - mw["go"]["cqes"] for mw in me["workers"])
    en = sum(mw["now"]["enters"] - mw["go"]["enters"] for mw in me["workers"])
    rings = rings_of(last)
    check(sorted(r["sqes_total"] for r in rings) == sq,
          f"rings' SQEs {[r['sqes_total'] for r in rings]}, the executor submitted {sq}")
    check(last["errors"]["enters_total"] == en,
          f"enters_total {last['errors']['enters_total']}, the executor made {en}")
    check(sorted(r["cqes_total"] for r in rings) == cq,
          f"rings' CQEs {[r['cqes_total'] for r in rings]}, the executor reaped {cq} since go")


# ------------------------------------------------------------ latency, errors

LAT_SPEC = [(300, 1), (100, 10)]
LAT_EBADF = 20


def run_latency(name):
    """obs_latency under qilin-observer -- CMD; returns (self report, last record)."""
    out = os.path.join(SCRATCH, f"{name}.target")
    args = ["--ebadf", str(LAT_EBADF)] + [f"{n}:{ms}" for n, ms in LAT_SPEC]
    obs = Observer(name, ["-i", "0.5", "--json", "--", "/bin/sh", "-c",
                          f'exec "$0" "$@" >"{out}"', PROG["obs_latency"]] + args)
    rc = obs.wait(20)
    check(rc == 0, f"observer: {obs.describe()}; stderr {obs.errmsg()}")
    with open(out) as f:
        lines = [l for l in f.read().split("\n") if l.startswith("{")]
    check(lines, "obs_latency printed no report")
    recs = obs.records()
    check(recs, "observer printed no JSON line")
    check_intervals(name, recs)
    return json.loads(lines[0]), recs[-1]


def case_latency():
    """300 timeouts of 1 ms and 100 of 10 ms, one at a time (not 200 and
    200: the median's rank would fall right between the two groups). The kernel's
    submit-to-complete interval of each lies inside the program's own
    (clock read before the submit and after the CQE), and a timeout cannot
    complete early, so for every bucket bound L:
        program's count <= L  <=  observer's count <= L  <=  count of nominal <= L
    (the observer's histogram is between the two). Every sample is in it
    (count 400), sum_ns is between the nominal and the program's sums, the
    percentiles are bucket bounds consistent with the observer's own buckets,
    and p50/p99 match the program's own within one bucket (never above it)."""
    me, last = run_latency("latency")
    samples = []
    for g in me["groups"]:
        samples += [(v, g["ms"] * 1e6) for v in g["samples_ns"]]
    n = len(samples)
    h = lat_of(last, "TIMEOUT")
    check(h is not None, f"no TIMEOUT latency; ops: {[x.get('op') for x in last['latency']]}")
    check(h["count"] == n, f"TIMEOUT count {h['count']}, the program completed {n}")
    nominal_sum = sum(nom for _, nom in samples)
    own_sum = sum(v for v, _ in samples)
    check(nominal_sum <= h["sum_ns"] <= own_sum,
          f"sum_ns {h['sum_ns']} not within [{nominal_sum:.0f} nominal, {own_sum} measured]")
    buckets = h["buckets"]
    les = [b["le_ns"] for b in buckets]
    check(les == [2 ** i for i in range(len(les))],
          f"buckets are not the log2 series 1, 2, 4...: {les[:8]}...")
    check(sum(b["count"] for b in buckets) == n, "bucket counts do not add up to count")
    cum = 0
    for b in buckets:
        cum += b["count"]
        L = b["le_ns"]
        own = sum(1 for v, _ in samples if v <= L)
        nom = sum(1 for _, nom in samples if nom <= L)
        check(own <= cum <= nom,
              f"bucket le_ns={L}: observer has {cum} samples <= L, the program measured "
              f"{own} and only {nom} timeouts are that short")

    def pct_le(q):
        """The bucket bounds the observer may report for q (rank ceil or floor)."""
        ok = set()
        for rank in {max(1, -(-int(q * n * 1000) // 1000)), max(1, int(q * n))}:
            c = 0
            for b in buckets:
                c += b["count"]
                if c >= rank:
                    ok.add(b["le_ns"])
                    break
        return ok

    for q, key in ((0.5, "p50_ns"), (0.9, "p90_ns"), (0.99, "p99_ns"), (0.999, "p999_ns")):
        check(h[key] in pct_le(q), f"{key} = {h[key]} is not the bound of the bucket holding "
                                   f"that rank in the observer's own buckets ({pct_le(q)})")
    for key in ("p50_ns", "p99_ns"):
        own_le = bucket_le(me[key])
        check(own_le // 2 <= h[key] <= own_le,
              f"{key}: observer {h[key]}, the program measured {me[key]} (bucket {own_le}): "
              "more than one bucket apart")
    print(f"  latency: program p50 {me['p50_ns']} p99 {me['p99_ns']} ns; observer p50 "
          f"{h['p50_ns']} p90 {h['p90_ns']} p99 {h['p99_ns']} p999 {h['p999_ns']}")


def case_errors():
    """The same run's error and submission accounting, exactly: 20 reads on
    fd -1 complete with EBADF and 400 timeouts with ETIME (the only negative
    completions); every submission was one SQE in one enter, so sqes_total ==
    enters_total == 420; one ring, 420 SQEs and CQEs, nothing in flight at
    the end, no CQ overflow."""
    me, last = run_latency("errors")
    total = me["sqes"]
    comps = {(c["op"], c["errno"]): c["count"] for c in last["errors"]["completions"]}
    want = {("READ", "EBADF"): LAT_EBADF, ("TIMEOUT", "ETIME"): total - LAT_EBADF}
    check(comps == want, f"errors.completions {comps}, want {want}")
    e = last["errors"]
    check(e["sqes_total"] == total and e["enters_total"] == me["enters"],
          f"sqes_total {e['sqes_total']} enters_total {e['enters_total']}, the program made "
          f"{total} SQEs in {me['enters']} enters")
    check(e["cq_overflows_total"] == 0, f"cq_overflows_total {e['cq_overflows_total']}")
    rings = rings_of(last)
    check(len(rings) == 1, f"{len(rings)} rings, obs_latency has one")
    r = rings[0]
    check(r["sqes_total"] == total and r["cqes_total"] == total and r["inflight"] == 0,
          f"ring {r}: want {total} SQEs and CQEs, 0 in flight")
    check(r["tid"] == me["tid"], f"ring tid {r['tid']}, the program's thread is {me['tid']}")
    rd = lat_of(last, "READ")
    check(rd is not None and rd["count"] == LAT_EBADF, f"READ latency {rd}, want {LAT_EBADF}")


def case_cq_overflow():
    """A completion queue that overflows a known number of times: obs_overflow
    submits 20 NOPs on a ring with 8 CQ entries before reaping any, so 12
    CQEs go to the kernel's overflow list. cq_overflows_total is 12, every
    CQE is counted once (posted to the ring or overflowed: 8 + 12), all 20
    SQEs are seen and nothing stays in flight once all are reaped."""
    out = os.path.join(SCRATCH, "overflow.target")
    obs = Observer("overflow", ["-i", "0.2", "--json", "--", "/bin/sh", "-c",
                                f'exec "$0" "$@" >"{out}"', PROG["obs_overflow"], "20"])
    rc = obs.wait(15)
    check(rc == 0, f"observer: {obs.describe()}; {obs.errmsg()}")
    with open(out) as f:
        me = json.loads([l for l in f.read().split("\n") if l.startswith("{")][0])
    recs = obs.records()
    check_intervals("overflow", recs)
    last = recs[-1]
    e, rings = last["errors"], rings_of(last)
    check(e["cq_overflows_total"] == me["overflowed"],
          f"cq_overflows_total {e['cq_overflows_total']}, {me['overflowed']} CQEs overflowed")
    check(len(rings) == 1, f"{len(rings)} rings, obs_overflow has one")
    r = rings[0]
    check(r["sqes_total"] == me["nops"] and e["sqes_total"] == me["nops"],
          f"SQEs: ring {r['sqes_total']}, total {e['sqes_total']}; {me['nops']} NOPs")
    check(r["cqes_total"] + e["cq_overflows_total"] == me["nops"],
          f"CQEs {r['cqes_total']} + overflowed {e['cq_overflows_total']} != {me['nops']}")
    check(r["inflight"] == 0, f"ring {r}: {r['inflight']} in flight after all were reaped")


# ------------------------------------------------------------ retransmits
#
# Each case makes its own namespace with only lo, and an nftables input rule
# set that drops, for the lossy ports only (packets whose destination port
# is the receiver's):
#   - the first SYN of every other connection (an nft set remembers which
#     connections had their first SYN; numgen inc counts only those):
#     exactly one SYN retransmit, 1 s later, by a socket in SYN_SENT that has
#     sent nothing yet; deterministic, and bounded in time;
#   - the first FIN of every other connection, the same way: with -x the
#     sender closed the socket before its FIN went out, so that FIN is
#     retransmitted by the orphaned socket after its owner let go of it: a
#     retransmit after close is certain, not left to chance;
#   - 5% of data segments (ip length > 100), at random.
# What the rules never drop: anything sent by the receiving side (its
# packets go to the sender's ephemeral port), and the short segments sent to
# it that carry neither SYN, FIN nor data: the third segment of the
# handshake and pure ACKs. So the receiving sockets can never retransmit:
# their SYN-ACK is acknowledged by a segment that is never dropped, their FIN
# likewise, and they send no data. The namespace's TcpRetransSegs therefore
# counts the sending sockets' retransmits only, and the senders are in the
# observed processes (the receivers are too: obs_tcp -l runs them as a
# thread of the same process, so a receiver retransmit, if one ever
# happened, would still be the observed process's own).

NS_SEQ = [0]
INSTANCES = []


class RetransTrace:
    """A diagnosis aid, not the ground truth: a tracefs instance recording
    tcp:tcp_retransmit_skb for our ports, so that a count that does not match
    can be broken down by socket and state. Quietly absent without tracefs.
    The event is global, so the ports are ones nothing else here uses."""

    def __init__(self, ports):
        self.path = None
        base = "/sys/kernel/tracing/instances"
        if not os.path.isdir(base):
            return
        path = os.path.join(base, f"qlobs-{os.getpid()}-{NS_SEQ[0]}")
        try:
            os.mkdir(path)
            INSTANCES.append(path)
            self.path = path
            ev = os.path.join(path, "events", "tcp", "tcp_retransmit_skb")
            flt = " || ".join(f"dport == {p} || sport == {p}" for p in ports)
            with open(os.path.join(ev, "filter"), "w") as f:
                f.write(flt)
            with open(os.path.join(ev, "enable"), "w") as f:
                f.write("1")
        except OSError:
            self.close()

    def summary(self):
        """{(sport, state, err): count} of the events recorded so far."""
        if not self.path:
            return None
        out = {}
        with open(os.path.join(self.path, "trace"), errors="replace") as f:
            for l in f:
                m = re.search(r"sport=(\d+) dport=(\d+).*state=(\w+)(?: err=(-?\d+))?", l)
                if m:
                    k = (int(m.group(1)), m.group(3).replace("TCP_", ""), m.group(4) or "0")
                    out[k] = out.get(k, 0) + 1
        return out

    def close(self):
        if self.path:
            remove_instance(self.path)
            self.path = None


def remove_instance(path):
    try:
        with open(os.path.join(path, "events", "tcp", "tcp_retransmit_skb", "enable"), "w") as f:
            f.write("0")
    except OSError:
        pass
    try:
        os.rmdir(path)
    except OSError:
        pass
    if path in INSTANCES:
        INSTANCES.remove(path)


class Netns:
    def __init__(self, lossy_ports):
        NS_SEQ[0] += 1
        self.name = f"qlobs-{os.getpid()}-{NS_SEQ[0]}"
        run(["ip", "netns", "add", self.name])
        NAMESPACES.append(self.name)
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        ports = ", ".join(str(p) for p in lossy_ports)
        # The first SYN and the first FIN of every other connection (numgen
        # inc counts first ones only; the sets remember which connections
        # already had theirs), and 5% of data segments at random.
        # One rule per family: IPv4 and IPv6 (obs_tcp -6) alike.
        chain = ""
        for ip, addr, length in (("ip", "ipv4_addr", "ip length > 100"),
                                 ("ip6", "ipv6_addr", "ip6 length > 80")):
            first = f"{ip} saddr . tcp sport != @{{0}}{ip} add @{{0}}{ip} " \
                    f"{{{{ {ip} saddr . tcp sport }}}}"
            chain += f"""
		tcp dport {{ {ports} }} tcp flags & (syn | ack) == syn {first.format("synseen")} \\
			numgen inc mod 2 == 0 drop
		tcp dport {{ {ports} }} tcp flags & fin == fin {first.format("finseen")} \\
			numgen inc mod 2 == 0 drop
		tcp dport {{ {ports} }} {length} numgen random mod 100 < 5 drop"""
        sets = "".join(f"""
	set {name}{ip} {{ type {addr} . inet_service; flags dynamic; timeout 120s; }}"""
                       for name in ("synseen", "finseen")
                       for ip, addr in (("ip", "ipv4_addr"), ("ip6", "ipv6_addr")))
        rules = f"""table inet qlobs {{{sets}
	chain input {{
		type filter hook input priority 0; policy accept;{chain}
	}}
}}
"""
        r = subprocess.run(["ip", "netns", "exec", self.name, "nft", "-f", "-"], input=rules,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        if r.returncode != 0:
            raise Skip(f"nft cannot load the loss rules in a namespace: {r.stderr.strip()}")

    def exec(self, argv):
        return ["ip", "netns", "exec", self.name] + argv

    def retrans(self):
        """TcpRetransSegs of the namespace, from nstat (the kernel's count)."""
        r = run(self.exec(["nstat", "-asz", "TcpRetransSegs"]))
        m = re.search(r"^TcpRetransSegs\s+(\d+)", r.stdout, re.M)
        if not m:
            raise Fail(f"nstat gave no TcpRetransSegs: {r.stdout!r}")
        return int(m.group(1))

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=20)
        if self.name in NAMESPACES:
            NAMESPACES.remove(self.name)


def tcp_target(ns, name, args):
    t = Proc(name, ns.exec([PROG["obs_tcp"], "--wait", "--hold", "20", "--settle"] + args))
    ready = t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    # ip netns exec execs the program: the pid we started is the target's.
    check(int(ready.split()[1]) == t.pid, f"{name}: pid {ready.split()[1]}, started {t.pid}")
    return t


def retrans_run(lossy, targets, observe, env=None, prom=None):
    """Start each obs_tcp (name, args) in a fresh namespace, an observer on
    those named in observe, let them go, wait until their sockets settled,
    stop them. Returns (nstat delta, {name: final record}, {name: Proc})."""
    LAST_MISSES[0], LAST_WARNED[0] = {}, {}
    ns = Netns(lossy)
    procs, obss = {}, {}
    trace = RetransTrace(lossy + [int(a[a.index("-c") + 1]) for _, a in targets])
    try:
        for name, args in targets:
            procs[name] = tcp_target(ns, name, args)
        for name in observe:
            obss[name] = Observer(f"{name}-observer",
                                  ["-p", str(procs[name].pid), "-i", "0.2", "--json"], env=env)
        for o in obss.values():
            observer_attached(o)
            check_tracepoint_kind(o.pid, classic=bool(env))
        scraper = None
        if prom:
            url = f"http://127.0.0.1:{free_port()}/metrics"
            po = Proc(f"{prom}-prom", [OBSERVER, "-p", str(procs[prom].pid), "-i", "0.2",
                                       "--prometheus", url[7:-8]])
            obss[f"{prom}-prom"] = po
            wait_metrics(po, url)
            scraper = Scraper(url)
        before = ns.retrans()
        for p in procs.values():
            p.signal(signal.SIGUSR1)
        for p in procs.values():
            p.wait_line(lambda l: l.startswith("done"), 20, "done line")
        after = ns.retrans()
        LAST_PAGES[0] = scraper.stop() if scraper else []
        LAST_MISSES[0] = {name: recursion_misses(o.pid) for name, o in obss.items()}
        for p in procs.values():
            p.signal(signal.SIGTERM)
            check(p.wait(5) == 0, f"{p.name}: {p.describe()}; {p.errmsg()}")
        finals = {name: o.finish(procs[name].pid) for name, o in obss.items()
                  if isinstance(o, Observer)}
        if prom:
            po = obss[f"{prom}-prom"]
            check(po.wait(5) == 0, f"--prometheus observer: {po.describe()} after the target "
                                   f"exited; {po.errmsg()}")
        LAST_TRACE[0] = trace.summary()
        LAST_WARNED[0] = {name: "the kernel skipped" in o.err() for name, o in obss.items()}
        return after - before, finals, procs
    finally:
        for p in list(procs.values()) + list(obss.values()):
            p.kill()
        trace.close()
        ns.delete()


LAST_TRACE = [None]
LAST_MISSES = [{}]
LAST_WARNED = [{}]
LAST_PAGES = [[]]


def diagnosis(fin):
    """What tracefs saw per socket next to what the observer reported."""
    s = LAST_TRACE[0]
    misses = {n: m for n, m in LAST_MISSES[0].items() if m}
    misses = f"; BPF recursion misses (prog id: count) {misses}" if misses else ""
    if s is None:
        return misses
    seen = {}
    for rec in fin.values():
        for e in rec["retransmits"]["endpoints"]:
            port = int(e["local"].rsplit(":", 1)[1])
            seen[port] = seen.get(port, 0) + e["count"]
    per = {}
    for (sport, state, err), n in s.items():
        per.setdefault(sport, []).append(f"{state}{'' if err == '0' else ' err=' + err}:{n}")
    rows = [f"{sport} trace[{' '.join(v)}] observer {seen.get(sport, 0)}"
            for sport, v in sorted(per.items())
            if sum(int(x.rsplit(':', 1)[1]) for x in v) != seen.get(sport, 0)]
    return ("; tracefs tcp_retransmit_skb events " + str(sum(s.values())) +
            (", sockets that differ: " + "; ".join(rows) if rows else ", same per socket") +
            misses)


def own_retrans(proc):
    """What obs_tcp read from TCP_INFO for its own sockets: (senders, receivers)."""
    m = re.search(r"own retrans=(\d+) sink=(\d+)", proc.out())
    check(m, f"{proc.name} printed no own retrans line")
    return int(m.group(1)), int(m.group(2))


def endpoints_sum(rec):
    return sum(e["count"] for e in rec["retransmits"]["endpoints"])


def check_retrans_rec(name, rec, port, addr="127.0.0.1"):
    rt = rec["retransmits"]
    check(endpoints_sum(rec) == rt["total"],
          f"{name}: endpoint counts add up to {endpoints_sum(rec)}, total is {rt['total']}")
    for e in rt["endpoints"]:
        check(e["remote"] == f"{addr}:{port}" or e["local"] == f"{addr}:{port}",
              f"{name}: endpoint {e} is not {addr}:{port}")
        check(e["local"].startswith(f"{addr}:"), f"{name}: endpoint {e}: local is not {addr}")


def case_retrans_alone():
    """The target alone pushes 4 x 1 MB in 1 KiB io_uring sends through the
    lossy port (its receiver is a thread of its own): the observer's
    retransmits.total equals the namespace's TcpRetransSegs delta exactly,
    and its endpoints add up to it."""
    delta, fin, procs = retrans_run([47301], [("tx", ["-l", "47301", "-c", "47301", "-n", "4",
                                                     "-b", "1000000"])], ["tx"])
    check(delta > 0, "nstat shows no retransmit at all: the loss rules did not work")
    own = sum(own_retrans(procs["tx"]))
    check(own == delta, f"TCP_INFO of the target's sockets says {own}, the namespace {delta}: "
                        "something else in the namespace retransmitted")
    got = fin["tx"]["retransmits"]["total"]
    check(got == delta, f"observer counted {got} retransmits, the kernel {delta}"
                        f"{diagnosis(fin)}")
    check_retrans_rec("tx", fin["tx"], 47301)
    print(f"  retrans_alone: kernel {delta}, observer {got}")


def case_retrans_ipv6():
    """retrans_alone over IPv6 ([::1]; the loss rules have their ip6 twins):
    the total equals the kernel's delta (TcpRetransSegs counts both
    families) and the endpoints are written [::1]:PORT."""
    delta, fin, procs = retrans_run([47301], [("tx6", ["-6", "-l", "47301", "-c", "47301",
                                                      "-n", "4", "-b", "1000000"])], ["tx6"])
    check(delta > 0, "nstat shows no retransmit at all: the ip6 loss rules did not work")
    own = sum(own_retrans(procs["tx6"]))
    check(own == delta, f"TCP_INFO of the target's sockets says {own}, the namespace {delta}")
    got = fin["tx6"]["retransmits"]["total"]
    check(got == delta, f"observer counted {got} retransmits, the kernel {delta}"
                        f"{diagnosis(fin)}")
    check_retrans_rec("tx6", fin["tx6"], 47301, addr="[::1]")
    print(f"  retrans_ipv6: kernel {delta}, observer {got}")


def case_retrans_close(env=None, label="retrans_close"):
    """As retrans_alone, but each socket is closed right after its last send
    (data still queued; every other FIN dropped), so the orphaned sockets
    retransmit after close; the target stays alive until they settle. The
    total still equals the kernel's delta, the retransmits after the last
    close (the program reads TcpRetransSegs itself at that moment) number at
    least one, and an endpoint's last retransmit was in a closing state."""
    delta, fin, procs = retrans_run([47301], [("txclose", ["-l", "47301", "-c", "47301",
                                                          "-n", "4", "-b", "1000000", "-x"])],
                                    ["txclose"], env=env)
    out = procs["txclose"].out()
    closed = int(re.search(r"closed retrans=(-?\d+)", out).group(1))
    settled = int(re.search(r"settled retrans=(-?\d+)", out).group(1))
    check(settled - closed > 0, f"no retransmit after the last close (closed {closed}, "
                                f"settled {settled}): the FIN drop rule did not work")
    got = fin["txclose"]["retransmits"]["total"]
    check(got == delta, f"observer counted {got} retransmits, the kernel {delta} "
                        f"({settled - closed} after the sockets were closed){diagnosis(fin)}")
    check_retrans_rec("txclose", fin["txclose"], 47301)
    states = {e["state"] for e in fin["txclose"]["retransmits"]["endpoints"]}
    check(states & {"FIN_WAIT1", "CLOSING", "LAST_ACK"},
          f"no endpoint whose last retransmit was after close; states {states}")
    print(f"  {label}: kernel {delta} ({settled - closed} after close), observer {got}")


def case_retrans_classic():
    """retrans_close again with QILIN_OBSERVER_NO_BTF_TP=1 (classic
    tcp_retransmit_skb and socket tracepoints)."""
    case_retrans_close(env={"QILIN_OBSERVER_NO_BTF_TP": "1"}, label="retrans_classic")


def case_prometheus_retrans():
    """retrans_close's traffic (states go from SYN_SENT through ESTABLISHED
    to FIN_WAIT1) with a second observer serving /metrics, scraped every
    0.1 s: every qilin_observer_tcp_retransmits_total series stays and never
    goes down from one scrape to the next, and at the end the series add up
    to the kernel's delta and to the JSON observer's total; the last page
    passes promtool."""
    for tool in ("curl", "promtool"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (scripts/deps.sh bpf)")
    delta, fin, _ = retrans_run([47301], [("promtx", ["-l", "47301", "-c", "47301", "-n", "4",
                                                      "-b", "1000000", "-x"])],
                                ["promtx"], prom="promtx")
    pages = LAST_PAGES[0]
    check(len(pages) >= 3, f"only {len(pages)} scrapes")
    last = check_counter_series(pages, "qilin_observer_tcp_retransmits_total")
    got = sum(last.values())
    check(got == delta, f"/metrics retransmits add up to {got}, the kernel counted {delta}; "
                        f"JSON observer {fin['promtx']['retransmits']['total']}")
    for k in last:
        labels = dict(k[1])
        check(set(labels) >= {"remote", "state"} and "pid" not in labels,
              f"retransmit series labels {labels}: want remote and state, no pid")
    pc = subprocess.run(["promtool", "check", "metrics"], input=pages[-1], text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    check(pc.returncode == 0, f"promtool check metrics: {(pc.stdout + pc.stderr).strip()[:600]}")
    print(f"  prometheus_retrans: kernel {delta}, /metrics {got} over {len(last)} series, "
          f"{len(pages)} scrapes")


def case_retrans_lossless_target():
    """The target pushes through a lossless port while another process in
    the same namespace pushes through the lossy one: the target's count is
    exactly 0 although the kernel counted retransmits, and an observer on
    the other process counts all of them."""
    delta, fin, procs = retrans_run([47301], [
        ("clean", ["-l", "47302", "-c", "47302", "-n", "4", "-b", "1000000"]),
        ("lossy", ["-l", "47301", "-c", "47301", "-n", "4", "-b", "1000000"])],
        ["clean", "lossy"])
    check(delta > 0, "nstat shows no retransmit at all: the loss rules did not work")
    # Nothing is dropped on the lossless port, but on a loaded machine a
    # late ACK can still make a socket send a tail loss probe, which the
    # kernel counts as a retransmit: the target's own sockets (TCP_INFO) say
    # how many it really made, almost always 0, and that is what it must get.
    own_clean, own_lossy = sum(own_retrans(procs["clean"])), sum(own_retrans(procs["lossy"]))
    check(own_clean + own_lossy == delta,
          f"TCP_INFO says {own_clean} + {own_lossy}, the namespace {delta}")
    c = fin["clean"]["retransmits"]
    check(c["total"] == own_clean,
          f"the target on the lossless port got {c['total']} retransmits "
          f"({c['endpoints'][:3]}); its sockets made {own_clean}, the kernel's other "
          f"{delta - own_clean} were the other process's{diagnosis(fin)}")
    got = fin["lossy"]["retransmits"]["total"]
    check(got == own_lossy, f"observer of the lossy process counted {got}, its sockets made "
                            f"{own_lossy} (kernel {delta}){diagnosis(fin)}")
    print(f"  retrans_lossless_target: kernel {delta}, target {c['total']}, other {got}"
          + (f" (the lossless port made {own_clean} tail loss probes)" if own_clean else ""))


def case_retrans_stale_socket():
    """Sockets the target closed must stop counting once freed. The target
    (on the lossless port) ends 8 connections the common way: shutdown, read
    until the peer's EOF (which comes after the socket reached TCP_CLOSE on
    the way to TIME_WAIT), close. Then, while the target lives on, another
    process on the same CPU (so that the kernel's slab hands it the memory of
    the freed sockets) opens 16 connections through the lossy port. The
    target's count stays 0 (what its own sockets made: TCP_INFO) although
    the kernel counted retransmits."""
    ns = Netns([47301])
    procs = []
    try:
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        t = Proc("stale-target", ns.exec(pin + [PROG["obs_tcp"], "--wait", "--hold", "20",
                                                "--settle", "-l", "47302", "-c", "47302",
                                                "-n", "8", "-b", "100000"]))
        procs.append(t)
        t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
        obs = Observer("stale-observer", ["-p", str(t.pid), "-i", "0.2", "--json"])
        procs.append(obs)
        observer_attached(obs)
        t.signal(signal.SIGUSR1)
        t.wait_line(lambda l: l.startswith("done"), 20, "done line")
        before = ns.retrans()
        o = Proc("stale-other", ns.exec(pin + [PROG["obs_tcp"], "--settle", "-l", "47301",
                                                "-c", "47301", "-n", "16", "-b", "500000"]))
        procs.append(o)
        check(o.wait(20) == 0, f"the other process: {o.describe()}; {o.errmsg()}")
        delta = ns.retrans() - before
        t.signal(signal.SIGTERM)
        check(t.wait(5) == 0, f"stale-target: {t.describe()}")
        fin = obs.finish(t.pid)
        rt = fin["retransmits"]
        check(delta > 0, "nstat shows no retransmit at all: the loss rules did not work")
        own = sum(own_retrans(t))
        check(rt["total"] == own, f"the target, whose sockets were all closed and freed "
                                  f"(having made {own} retransmits themselves), got "
                                f"{rt['total']} retransmits of another process's sockets "
                                f"(kernel {delta}): {rt['endpoints'][:4]}")
        print(f"  retrans_stale_socket: kernel {delta}, target 0")
    finally:
        for p in procs:
            p.kill()
        ns.delete()


def case_retrans_two():
    """Two processes push through two lossy ports (one closing right after
    its last write), one observer each: the two counts add up to the
    kernel's delta, and each names only its own port."""
    delta, fin, procs = retrans_run([47301, 47303], [
        ("a", ["-l", "47301", "-c", "47301", "-n", "3", "-b", "1000000"]),
        ("b", ["-l", "47303", "-c", "47303", "-n", "3", "-b", "1000000", "-x"])], ["a", "b"])
    a, b = fin["a"]["retransmits"]["total"], fin["b"]["retransmits"]["total"]
    check(a > 0 and b > 0, f"a process saw no retransmit (a {a}, b {b}, kernel {delta})")
    check(a + b == delta, f"observers counted {a} + {b} = {a + b}, the kernel {delta}"
                          f"{diagnosis(fin)}")
    own_a = sum(own_retrans(procs["a"]))
    check(a == own_a, f"process a's sockets made {own_a} retransmits (TCP_INFO), its observer "
                      f"counted {a}")
    check_retrans_rec("a", fin["a"], 47301)
    check_retrans_rec("b", fin["b"], 47303)
    print(f"  retrans_two: kernel {delta} = {a} + {b}")


# ------------------------------------------------------------ prometheus


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_labels(s):
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', s or ""))


def parse_metrics(text):
    """{(metric, frozenset(labels)): value} of a Prometheus text page."""
    out = {}
    for l in text.split("\n"):
        m = re.match(r"^(\w+)(?:\{(.*)\})?\s+(\S+)", l)
        if m and not l.startswith("#"):
            out[(m.group(1), frozenset(parse_labels(m.group(2)).items()))] = float(m.group(3))
    return out


def scrape(url):
    r = run(["curl", "-sS", "-m", "5", url], check_rc=False)
    return r.stdout if r.returncode == 0 else None


def wait_metrics(obs, url):
    end = time.monotonic() + 15
    while scrape(url) is None:
        check(obs.p.poll() is None, f"observer exited ({obs.describe()}): {obs.errmsg()}")
        check(time.monotonic() < end, f"{url}: nothing within 15 s")
        time.sleep(0.1)


class Scraper:
    """Scrape url every 0.1 s on a thread until stop(); keeps every page."""

    def __init__(self, url):
        import threading
        self.url, self.pages, self.done = url, [], threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.done.is_set():
            page = scrape(self.url)
            if page is not None:
                self.pages.append(page)
            self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.t.join(10)
        page = scrape(self.url)
        if page is not None:
            self.pages.append(page)
        return self.pages


def check_counter_series(pages, metric):
    """A counter series, once on the page, stays on every later page and
    never goes down (its labels name what it counts, not a changing state)."""
    prev = {}
    for i, page in enumerate(pages):
        cur = {k: v for k, v in parse_metrics(page).items() if k[0] == metric}
        for k, v in prev.items():
            check(k in cur, f"scrape {i + 1}: {metric}{dict(k[1])} (was {v}) is gone; now: "
                            f"{[(dict(x[1]), y) for x, y in cur.items()]}")
            check(cur[k] >= v, f"scrape {i + 1}: {metric}{dict(k[1])} went down {v} -> {cur[k]}")
        prev = cur
    return prev


def case_prometheus():
    """--prometheus: /metrics, scraped with curl while the target runs, passes
    `promtool check metrics`; qilin_observer_op_latency_seconds has, for
    TIMEOUT, every bucket (consecutive powers of two in seconds, cumulative)
    up to +Inf, and +Inf == _count == the timeouts the program completed;
    qilin_observer_ring_inflight is there."""
    for tool in ("curl", "promtool"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (scripts/deps.sh bpf)")
    t = Proc("prom-target", [PROG["obs_latency"], "--wait", "--hold", "20", "60:1", "20:5"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    port = free_port()
    obs = Proc("prom-observer", [OBSERVER, "-p", str(t.pid), "-i", "0.5",
                                 "--prometheus", f"127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}/metrics"
    end = time.monotonic() + 15
    while True:
        r = run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url],
                check_rc=False)
        if r.stdout == "200":
            break
        check(obs.p.poll() is None, f"observer exited ({obs.describe()}): {obs.errmsg()}")
        check(time.monotonic() < end, f"{url}: no 200 within 15 s ({r.stderr.strip()})")
        time.sleep(0.1)
    t.signal(signal.SIGUSR1)
    t.wait_line(lambda l: l.startswith("done"), 20, "done line")
    time.sleep(0.3)
    r = run(["curl", "-sS", "-m", "5", "-D", os.path.join(SCRATCH, "prom.headers"), url])
    text = r.stdout
    with open(os.path.join(SCRATCH, "prom.metrics"), "w") as f:
        f.write(text)
    pc = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    check(pc.returncode == 0, f"promtool check metrics: {(pc.stdout + pc.stderr).strip()[:600]}")
    with open(os.path.join(SCRATCH, "prom.headers")) as f:
        ctype = re.search(r"(?im)^content-type:\s*(.*)$", f.read())
    check(ctype and ctype.group(1).startswith("text/plain"),
          f"Content-Type {ctype.group(1) if ctype else None}, want text/plain")
    buckets, count, total = [], None, None
    for l in text.split("\n"):
        m = re.match(r"^(\w+)(?:\{(.*)\})?\s+(\S+)", l)
        if not m or l.startswith("#"):
            continue
        metric, labels, val = m.group(1), parse_labels(m.group(2)), float(m.group(3))
        if labels.get("op") != "TIMEOUT":
            continue
        if metric == "qilin_observer_op_latency_seconds_bucket":
            buckets.append((labels["le"], val))
        elif metric == "qilin_observer_op_latency_seconds_count":
            count = val
        elif metric == "qilin_observer_op_latency_seconds_sum":
            total = val
    check(buckets, "no qilin_observer_op_latency_seconds_bucket{op=\"TIMEOUT\"} series")
    check(buckets[-1][0] == "+Inf", f"last bucket is le={buckets[-1][0]}, not +Inf")
    les = [float(le) for le, _ in buckets[:-1]]
    check(len(les) >= 2 and all(abs(les[i + 1] / les[i] - 2) < 1e-6 for i in range(len(les) - 1)),
          f"bucket bounds are not consecutive powers of two: {les[:6]}...")
    check(abs(les[0] - 1e-9) < 1e-15, f"first bucket le={les[0]}, want 1e-09 (1 ns)")
    check(les[-1] >= 0.005, f"last finite bucket le={les[-1]} s is below the 5 ms timeouts")
    vals = [v for _, v in buckets]
    check(all(vals[i] <= vals[i + 1] for i in range(len(vals) - 1)), "buckets not cumulative")
    check(vals[-1] == count == 80, f"+Inf {vals[-1]}, _count {count}, the program made 80")
    check(total is not None and 0.06 + 0.1 <= total, f"_sum {total} s below the nominal 0.16 s")
    check(re.search(r"^qilin_observer_ring_inflight(\{.*\})?\s", text, re.M),
          "no qilin_observer_ring_inflight sample")
    t.signal(signal.SIGTERM)
    t.wait(5)
    check(obs.wait(5) == 0, f"observer with --prometheus: {obs.describe()} after the target "
                            f"exited; {obs.errmsg()}")


# ------------------------------------------------------------ schema


def case_json_schema():
    """Every JSON line printed by every observer run above validates against
    docs/observer-schema.json (and stdout held nothing but JSON lines)."""
    try:
        import jsonschema
    except ImportError:
        raise Skip("python3-jsonschema is not installed (scripts/deps.sh bpf)")
    if not os.path.exists(SCHEMA):
        raise Fail(f"{SCHEMA} does not exist")
    with open(SCHEMA) as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    v = cls(schema)
    if not ALL_JSON:
        # Run something of our own when the other cases were left out.
        obs = Observer("schema", ["-i", "0.2", "--json", "--", "/bin/sh", "-c",
                                  'exec "$0" --hold 0.5 3 >/dev/null', PROG["obs_depth"]])
        obs.wait(10)
        obs.records()
    check(ALL_JSON, "no JSON line to validate")
    for where, line in ALL_JSON:
        errs = sorted(v.iter_errors(json.loads(line)), key=lambda e: list(e.path))
        check(not errs, f"{os.path.basename(where)}: {errs[0].message} at "
                        f"{'/'.join(str(p) for p in errs[0].path)}" if errs else "")
    print(f"  json_schema: {len(ALL_JSON)} lines valid")


# ------------------------------------------------------------ robustness


def case_target_exit():
    """The target exits while the observer runs with -d 30: the observer
    prints the last interval (target_exited true, earlier lines false), says
    `qilin-observer: target PID exited` on stderr and exits 0 at once."""
    t = Proc("exit-target", [PROG["obs_depth"], "--hold", "1.5", "2"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    obs = Observer("exit-observer", ["-p", str(t.pid), "-i", "0.2", "-d", "30", "--json"])
    check(t.wait(10) == 0, f"obs_depth: {t.describe()}")
    t_exit = time.monotonic()
    fin = obs.finish(t.pid, timeout=10)
    lag = time.monotonic() - t_exit
    check(lag < 3, f"the observer took {lag:.1f} s to notice the exit")
    recs = obs.records()
    check(all(r.get("target_exited") is False for r in recs[:-1]),
          "target_exited true before the last line")
    check(fin.get("pid") == t.pid, f"pid {fin.get('pid')}, target {t.pid}")


def case_cmd_status():
    """-- CMD: the observer runs the command and exits with its status (3),
    its last line saying target_exited."""
    obs = Observer("cmd-status", ["-i", "0.2", "--json", "--", "/bin/sh", "-c",
                                  "sleep 0.5; exit 3"])
    rc = obs.wait(10)
    check(rc == 3, f"observer exit status {rc}, the command exited 3; {obs.errmsg()}")
    recs = obs.records()
    check(recs and recs[-1]["target_exited"] is True, "the last line has target_exited false")


def case_cli():
    """Usage errors exit 2 with a message; `interval count` prints exactly
    count lines and exits 0; -d exits 0 after its duration."""
    for args in (["--no-such-option"], ["-i", "abc", "-p", "1"], ["-p", "notapid"],
                 ["-p", str(os.getpid()), "-i", "0.2", "--json", "0.2", "2", "extra"]):
        r = run([OBSERVER] + args, timeout=10, check_rc=False)
        check(r.returncode == 2, f"qilin-observer {' '.join(args)}: exit status "
                                 f"{r.returncode}, want 2 (usage)")
        check(r.stderr.strip(), f"qilin-observer {' '.join(args)}: no message on stderr")
    t = Proc("cli-target", [PROG["obs_depth"], "--hold", "30", "1"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    obs = Observer("cli-count", ["-p", str(t.pid), "--json", "0.2", "3"])
    check(obs.wait(10) == 0, f"interval 0.2 count 3: {obs.describe()}; {obs.errmsg()}")
    check(len(obs.records()) == 3, f"interval 0.2 count 3 printed {len(obs.records())} lines")
    start = time.monotonic()
    obs = Observer("cli-duration", ["-p", str(t.pid), "--json", "-i", "0.25", "-d", "1"])
    check(obs.wait(10) == 0, f"-d 1: {obs.describe()}; {obs.errmsg()}")
    took = time.monotonic() - start
    check(0.9 <= took < 5, f"-d 1 took {took:.1f} s")
    n = len(obs.records())
    check(3 <= n <= 5, f"-i 0.25 -d 1 printed {n} lines")
    t.signal(signal.SIGTERM)
    t.wait(5)


def case_no_such_pid():
    """-p with a pid that does not exist (a reaped child's): exit 1 and a
    message naming the pid."""
    p = subprocess.Popen(["true"])
    p.wait()
    pid = p.pid
    if os.path.exists(f"/proc/{pid}"):
        raise Fail(f"pid {pid} was reused at once; rerun")
    r = run([OBSERVER, "-p", str(pid), "--json"], timeout=10, check_rc=False)
    check(r.returncode == 1, f"exit status {r.returncode}, want 1")
    check(str(pid) in r.stderr, f"the message does not name pid {pid}: {r.stderr.strip()!r}")
    check(r.stdout == "", f"something on stdout: {r.stdout[:200]!r}")


def case_unprivileged():
    """As nobody (setpriv: uid and gid 65534, no groups, no capabilities):
    exit 1 with a message saying root or CAP_BPF+CAP_PERFMON is needed."""
    if not shutil.which("setpriv"):
        raise Skip("setpriv is not installed (util-linux)")
    t = Proc("unpriv-target", [PROG["obs_depth"], "--hold", "30", "1"])
    t.wait_line(lambda l: l.startswith("ready"), 10, "ready line")
    r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", OBSERVER, "-p", str(t.pid), "--json"], timeout=15,
            check_rc=False)
    t.signal(signal.SIGTERM)
    t.wait(5)
    check(r.returncode == 1, f"exit status {r.returncode}, want 1; stderr {r.stderr.strip()!r}")
    check(re.search(r"root", r.stderr) and re.search(r"CAP_BPF", r.stderr),
          f"the message does not say root or CAP_BPF+CAP_PERFMON: {r.stderr.strip()!r}")


# ------------------------------------------------------------ driver

CASES = [
    ("depth", case_depth),
    ("depth_cmd", case_depth_cmd),
    ("depth_classic", case_depth_classic),
    ("depth_sqpoll", case_depth_sqpoll),
    ("cgroup", case_cgroup),
    ("attach_running", case_attach_running),
    ("workers", case_workers),
    ("latency", case_latency),
    ("errors", case_errors),
    ("cq_overflow", case_cq_overflow),
    ("retrans_alone", case_retrans_alone),
    ("retrans_ipv6", case_retrans_ipv6),
    ("retrans_close", case_retrans_close),
    ("retrans_classic", case_retrans_classic),
    ("retrans_lossless_target", case_retrans_lossless_target),
    ("retrans_two", case_retrans_two),
    ("retrans_stale_socket", case_retrans_stale_socket),
    ("prometheus", case_prometheus),
    ("prometheus_retrans", case_prometheus_retrans),
    ("target_exit", case_target_exit),
    ("cmd_status", case_cmd_status),
    ("cli", case_cli),
    ("no_such_pid", case_no_such_pid),
    ("unprivileged", case_unprivileged),
    # Last: it validates every line the cases above printed.
    ("json_schema", case_json_schema),
]
# Seconds a case may take, a rerun included (a healthy one takes 1-4 s).
CASE_TIMEOUT = 60
NETNS_CASES = {"retrans_alone", "retrans_ipv6", "retrans_close", "retrans_classic",
               "retrans_lossless_target", "retrans_two", "prometheus_retrans",
               "retrans_stale_socket"}


def global_skip(build):
    """Why no case can run here, or None."""
    if os.geteuid() != 0:
        return ("needs root (BPF programs, uprobes, network namespaces); "
                "run make test as root")
    if not os.path.exists(OBSERVER):
        return f"{OBSERVER} is not built (make bpf)"
    for p in PROG.values():
        if not os.path.exists(p):
            return f"{p} is not built (make tests)"
    if not os.access("/sys/kernel/btf/vmlinux", os.R_OK):
        return ("no kernel BTF at /sys/kernel/btf/vmlinux (the observer needs "
                "CONFIG_DEBUG_INFO_BTF=y)")
    return None


def preflight_skip():
    """Why nothing can run although we are root: io_uring refused to the
    targets, or the kernel refusing the observer's BPF programs for a reason
    of its environment (lockdown, missing BTF or tracefs). None when a short
    run of both works. Any other failure is left to the cases to report."""
    r = run([PROG["obs_depth"], "1"], timeout=20, check_rc=False)
    if r.returncode != 0:
        return f"io_uring does not work here: {r.stderr.strip()[:300]}"
    r = run([OBSERVER, "--json", "-i", "0.1", "-d", "0.3", "--", "/bin/true"], timeout=30,
            check_rc=False)
    env_causes = ("lockdown", "BTF", "tracefs", "not permitted", "CAP_BPF")
    if r.returncode != 0 and any(c in r.stderr for c in env_causes):
        return f"the kernel refuses the observer's programs: {r.stderr.strip()[:300]}"
    return None


def netns_skip():
    for tool in ("ip", "nft", "nstat"):
        if not shutil.which(tool):
            return f"{tool} is not installed (scripts/deps.sh bpf: iproute2, nftables)"
    return None


def cleanup(*_):
    reap_all()
    for path in list(INSTANCES):
        remove_instance(path)
    for ns in list(NAMESPACES):
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        NAMESPACES.remove(ns)


class CaseTimeout(Exception):
    pass


def on_alarm(_sig, _frame):
    raise CaseTimeout(f"the case took more than {CASE_TIMEOUT} s")


def on_signal(sig, _frame):
    cleanup()
    print(f"run_observer: interrupted by signal {sig}", flush=True)
    os._exit(128 + sig)


def stale_namespaces():
    """Delete qlobs-PID-N namespaces left by a run that was SIGKILLed."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return
    for n in names:
        m = re.match(r"^qlobs-(\d+)-\d+$", n)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", n], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def main():
    global OBSERVER, SCRATCH
    build = os.environ.get("QILIN_BUILD") or (sys.argv[1] if len(sys.argv) > 1 else None)
    if not build:
        print("usage: tests/observer/run_observer.py BUILD_DIR (or QILIN_BUILD=...)",
              file=sys.stderr)
        return 2
    build = os.path.abspath(build)
    OBSERVER = os.path.join(build, "bpf", "qilin-observer")
    for p in ("obs_depth", "obs_latency", "obs_tcp", "obs_qilin", "obs_overflow"):
        PROG[p] = os.path.join(build, "tests", "observer", p)
    only = (os.environ.get("QILIN_OBS_ONLY") or "").split()
    cases = [(n, f) for n, f in CASES if not only or n in only]

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    sys.stdout.reconfigure(line_buffering=True)
    checks = fails = errors = 0
    why = global_skip(build)
    if why:
        for n, _ in cases:
            print(f"SKIP: observer/{n}: {why}")
        print("100%: Checks: 0, Failures: 0, Errors: 0")
        return 0
    why = preflight_skip()
    if why:
        for n, _ in cases:
            print(f"SKIP: observer/{n}: {why}")
        print("100%: Checks: 0, Failures: 0, Errors: 0")
        return 0
    stale_namespaces()
    SCRATCH = tempfile.mkdtemp(prefix="qilin-observer-test.")
    ns_why = netns_skip()
    t_all = time.monotonic()
    try:
        for n, fn in cases:
            if n in NETNS_CASES and ns_why:
                print(f"SKIP: observer/{n}: {ns_why}")
                continue
            t0 = time.monotonic()
            # A case that hangs is stopped here, not by run.sh's suite timeout.
            signal.alarm(CASE_TIMEOUT)
            try:
                try:
                    fn()
                except Fail as e:
                    # The kernel skips a BPF program that would run while
                    # another one runs on that CPU (recursion_misses): with
                    # other people's BPF tools busy on this machine a
                    # retransmit can be lost that way, through no fault of
                    # the observer's logic, and it warns about it. Such a
                    # run proves nothing either way: run the case once more.
                    misses = {k: v for k, v in LAST_MISSES[0].items() if v}
                    if n not in NETNS_CASES or not misses:
                        raise
                    silent = [k for k in misses if not LAST_WARNED[0].get(k)]
                    check(not silent, f"{e}; and the observer of {silent} did not warn that "
                                      f"the kernel skipped its programs ({misses})")
                    print(f"  {n}: {e}")
                    print(f"  {n}: the kernel skipped the observer's programs during that run "
                          f"({misses}): once more")
                    fn()
            except Skip as e:
                print(f"SKIP: observer/{n}: {e}")
                continue
            except Fail as e:
                checks += 1
                fails += 1
                print(f"FAIL: observer/{n}: {e}")
            except Exception as e:
                checks += 1
                errors += 1
                print(f"ERROR: observer/{n}: {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stdout)
            else:
                checks += 1
                print(f"PASS: observer/{n} ({time.monotonic() - t0:.1f} s)")
            finally:
                signal.alarm(0)
                reap_all()
    finally:
        cleanup()
        if os.environ.get("QILIN_OBS_KEEP") == "1" or fails or errors:
            print(f"run_observer: outputs kept in {SCRATCH}")
        else:
            shutil.rmtree(SCRATCH, ignore_errors=True)
    pct = 100 * (checks - fails - errors) // checks if checks else 100
    print(f"observer suite: {time.monotonic() - t_all:.0f} s")
    print(f"{pct}%: Checks: {checks}, Failures: {fails}, Errors: {errors}")
    return 1 if fails or errors else 0


if __name__ == "__main__":
    sys.exit(main())
