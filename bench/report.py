#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/report.py - medians, ratios, targets, JSON and plots for bench/run.sh's
side-by-side scenarios (echo, http, file, observer).

    report.py SCENARIO RUNS OUT_JSON PLOT_DIR [CONFIG_JSON]

RUNS is the file run.sh wrote while running SCENARIO: one JSON object per
line and per measurement, {"system": S, "case": C, "round": R, metrics...},
or {"system": S, "case": C, "round": R, "failed": "why"} for a run that did
not produce figures (a server that did not start, a load generator that
failed). This program:

  * takes, per system and case, the median of every metric over the rounds
    that produced figures (a failed run is kept in "failed", never averaged
    in, and the system is reported as failed in the table);
  * computes the ratios of the headline metric between qilin and each peer,
    per round (the systems of one round ran back to back, in rotating order)
    and then their median; oriented so that above 1 means qilin is better;
  * checks the issue's targets and prints a Markdown table on stdout with
    PASS / MISS per target (MISS too when a figure is missing);
  * writes OUT_JSON:
      {"scenario", "machine": {"cores", "kernel", "cpu_model"},
       "peers": {name: version line}, "config": {...},
       "systems": {S: {"median": {..}, "runs": [..], "failed": [..]}},
       "ratios": {"qilin/PEER": x}, "targets": [{"name", "value", "target",
       "pass"}], "anomalies": [..]}
    For a scenario with several cases (echo: 64B and 4KiB) "systems" holds
    {S: {"cases": {C: {"median", "runs", "failed"}}}}, "ratios" the
    geometric mean over the cases and "ratios_by_case" {C: {..}};
  * writes PLOT_DIR/SCENARIO.dat and, when gnuplot is there, the PNGs
    SCENARIO_throughput.png (median bars with min..max over the rounds) and
    SCENARIO_latency.png (p50 / p99 / p999 per system, log scale) with the
    scripts in bench/plot/.

Exit status: 0, or 1 when RUNS holds no figure at all for qilin (the
scenario did not run), 2 on a usage error. Targets missed are not an error:
they are reported.
"""
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Per scenario: systems in table order, the headline metric (higher is better
# unless "lower"), the metrics to report, latency metrics to plot, and which
# peers' versions to record.
SPECS = {
    "echo": {
        "systems": ["qilin", "qilin-task", "epoll", "go"],
        "cases": ["64B", "4KiB"],
        "headline": "msgs_per_s",
        "metrics": ["msgs_per_s", "p50_us", "p99_us", "p999_us", "errors", "rss_kb",
                    "server_cpu_pct", "per_cpu_s"],
        "unit": "messages/s",
        "peers": ["go"],
    },
    "http": {
        "systems": ["qilin", "go", "nginx"],
        "cases": [""],
        "headline": "rps",
        "metrics": ["rps", "p50_us", "p99_us", "p999_us", "errors", "rss_kb", "rps_per_core",
                    "server_cpu_pct", "per_cpu_s"],
        "unit": "requests/s",
        "peers": ["go", "nginx", "wrk"],
    },
    "file": {
        "systems": ["qilin", "fio"],
        "cases": [""],
        "headline": "iops",
        "metrics": ["iops", "p50_us", "p99_us", "p999_us", "errors"],
        "unit": "reads/s",
        "peers": ["fio"],
    },
    "observer": {
        "systems": ["qilin", "qilin+observer"],
        "cases": [""],
        "headline": "rps",
        "metrics": ["rps", "p50_us", "p99_us", "p999_us", "errors", "rss_kb", "server_cpu_pct",
                    "per_cpu_s"],
        "unit": "requests/s",
        "peers": ["wrk"],
    },
}
LAT = ["p50_us", "p99_us", "p999_us"]

# The per-core figure of the system qilin descends from (82,300 req/s on 16 cores), times 10.
HTTP_PER_CORE_TARGET = 10 * 82300 / 16


def run_quiet(cmd):
    """The first line a command prints (stdout or stderr), or 'missing'."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    out = (p.stdout or p.stderr).strip().splitlines()
    return out[0] if out else "unknown"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "kernel": platform.release(), "cpu_model": model}


def peer_versions(names):
    cmds = {
        "go": ["go", "version"],
        "nginx": ["nginx", "-v"],
        "wrk": ["wrk", "-v"],
        "fio": ["fio", "--version"],
    }
    return {n: run_quiet(cmds[n]) for n in names}


def median_of(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, key=""):
    if v is None:
        return "-"
    if key.endswith("_us"):
        return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} us"
    if key == "rss_kb":
        return f"{v / 1024:.1f} MiB"
    if key == "server_cpu_pct":
        return f"{v:.0f} %"
    if key == "errors":
        return f"{v:.0f}"
    return f"{v:,.0f}"


def main(argv):
    if len(argv) not in (5, 6) or argv[1] not in SPECS:
        sys.stderr.write(__doc__)
        return 2
    scen, runs_path, out_json, plot_dir = argv[1:5]
    config = {}
    if len(argv) == 6:
        with open(argv[5]) as f:
            config = json.load(f)
    spec = SPECS[scen]
    rows = []
    with open(runs_path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))

    # per_cpu_s: the headline per second of server CPU time (headline / share of a CPU used):
    # the server's own efficiency, meaningful even when the client, not the server, was the
    # bottleneck (server_cpu_pct well below 100 x server CPUs).
    for r in rows:
        pct = r.get("server_cpu_pct")
        if isinstance(pct, (int, float)) and pct > 0 and r.get(spec["headline"]) is not None:
            r["per_cpu_s"] = round(r[spec["headline"]] / (pct / 100.0), 1)

    anomalies = []
    per = {}  # (system, case) -> {"runs": [...], "failed": [...], "median": {...}}
    for s in spec["systems"]:
        for c in spec["cases"]:
            mine = [r for r in rows if r["system"] == s and r.get("case", "") == c]
            ok = [r for r in mine if "failed" not in r]
            bad = [{"round": r["round"], "why": r["failed"]} for r in mine if "failed" in r]
            med = {k: median_of(ok, k) for k in spec["metrics"]}
            per[(s, c)] = {"median": med, "runs": ok, "failed": bad}
            for b in bad:
                anomalies.append(f"{s}{' ' + c if c else ''} round {b['round']}: {b['why']}")

    # Ratios: per round, qilin's headline over the peer's (paired), then the median.
    head = spec["headline"]
    base = spec["systems"][0]
    ratios_by_case = {}
    for c in spec["cases"]:
        rc = {}
        for peer in spec["systems"][1:]:
            pairs = []
            for rq in per[(base, c)]["runs"]:
                rp = [r for r in per[(peer, c)]["runs"] if r["round"] == rq["round"]]
                if rp and rp[0].get(head) and rq.get(head) is not None:
                    pairs.append(rq[head] / rp[0][head])
            if scen == "observer":
                # Observed over plain: above 1 would mean attaching cost nothing.
                key = f"{peer}/{base}"
                pairs = [1 / p for p in pairs if p]
            else:
                key = f"{base}/{peer}"
            rc[key] = round(statistics.median(pairs), 4) if pairs else None
        ratios_by_case[c] = rc
    if len(spec["cases"]) == 1:
        ratios = ratios_by_case[spec["cases"][0]]
    else:
        ratios = {}
        for key in ratios_by_case[spec["cases"][0]]:
            vals = [ratios_by_case[c][key] for c in spec["cases"]]
            ratios[key] = (round(math.exp(sum(math.log(v) for v in vals) / len(vals)), 4)
                           if all(vals) else None)

    # Targets.
    targets = []

    def target(name, value, want, ok, key=""):
        targets.append({"name": name, "value": value, "target": want,
                        "pass": bool(ok) if ok is not None else None,
                        "shown": fmt(value, key) if key else None})

    def m(s, k, c=""):
        return per[(s, c)]["median"].get(k)

    if scen == "http":
        q = lambda k: m("qilin", k)
        g = lambda k: m("go", k)
        r = ratios.get("qilin/go")
        target("req/s vs Go", r, ">= 2x", r is not None and r >= 2)
        target("p99 vs Go (lower)", q("p99_us"), f"< {fmt(g('p99_us'), 'p99_us')}",
               None if q("p99_us") is None or g("p99_us") is None else q("p99_us") < g("p99_us"),
               "p99_us")
        errs = [x.get("errors") for x in per[("qilin", "")]["runs"]]
        target("qilin errors (every run)", sum(errs) if errs else None, "0",
               None if not errs else sum(errs) == 0)
        r = ratios.get("qilin/nginx")
        target("req/s vs nginx (static 202)", r, ">= 1x", r is not None and r >= 1)
        qr, gr = q("rss_kb"), g("rss_kb")
        target("peak RSS vs Go", None if not qr or not gr else round(gr / qr, 2), ">= 4x smaller",
               None if not qr or not gr else qr * 4 <= gr)
        pc = q("rps_per_core")
        target("req/s per server core", pc, f">= {HTTP_PER_CORE_TARGET:,.0f}",
               None if pc is None else pc >= HTTP_PER_CORE_TARGET)
    elif scen == "echo":
        for c in spec["cases"]:
            r = ratios_by_case[c].get("qilin/epoll")
            target(f"{c} msgs/s vs epoll", r, ">= 1.2x", r is not None and r >= 1.2)
            r = ratios_by_case[c].get("qilin/go")
            target(f"{c} msgs/s vs Go", r, ">= 1.5x", r is not None and r >= 1.5)
    elif scen == "file":
        r = ratios.get("qilin/fio")
        target("IOPS vs fio io_uring", r, ">= 0.9x", r is not None and r >= 0.9)
    elif scen == "observer":
        r = ratios.get("qilin+observer/qilin")
        loss = None if r is None else round((1 - r) * 100, 2)
        target("throughput loss with the observer", loss, "<= 5 %",
               None if loss is None else loss <= 5)
        ratios["loss_pct"] = loss
        # For information: the loss in requests per second of server CPU, which still shows
        # the observer's cost when the client, not the server, limited the throughput.
        pairs = []
        for rq in per[("qilin", "")]["runs"]:
            ro = [x for x in per[("qilin+observer", "")]["runs"] if x["round"] == rq["round"]]
            if ro and rq.get("per_cpu_s") and ro[0].get("per_cpu_s"):
                pairs.append(ro[0]["per_cpu_s"] / rq["per_cpu_s"])
        ratios["loss_pct_per_cpu_s"] = (round((1 - statistics.median(pairs)) * 100, 2)
                                        if pairs else None)
    # A server that was far from busy did not set the pace: say so next to the figures.
    ncpu = config.get("server_ncpu") or 1
    for (s, c), p in per.items():
        pct = p["median"].get("server_cpu_pct")
        if pct is not None and pct < 80 * ncpu:
            anomalies.append(f"{s}{' ' + c if c else ''}: the server used {pct:.0f}% of "
                             f"{ncpu} CPU(s): the client or the machine's other load set "
                             f"the pace (see per_cpu_s)")
    for t in targets:
        if t["pass"] is None:
            t["pass"] = False
            anomalies.append(f"target '{t['name']}': no figure (a system failed or did not run)")

    # JSON.
    systems = {}
    for s in spec["systems"]:
        if len(spec["cases"]) == 1:
            systems[s] = per[(s, "")]
        else:
            systems[s] = {"cases": {c: per[(s, c)] for c in spec["cases"]}}
    doc = {
        "scenario": scen,
        "machine": machine(),
        "peers": peer_versions(spec["peers"]),
        "config": config,
        "systems": systems,
        "ratios": ratios,
        "targets": targets,
        "anomalies": anomalies,
    }
    if len(spec["cases"]) > 1:
        doc["ratios_by_case"] = ratios_by_case
    with open(out_json + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(out_json + ".tmp", out_json)

    # Markdown.
    metrics = spec["metrics"]
    print(f"\n### {scen}: medians over {config.get('rounds', '?')} rounds "
          f"({config.get('shape', '')})\n")
    print("| system | " + ("case | " if len(spec["cases"]) > 1 else "") + " | ".join(metrics) +
          " | runs |")
    print("|---" * (len(metrics) + 2 + (len(spec["cases"]) > 1)) + "|")
    for c in spec["cases"]:
        for s in spec["systems"]:
            p = per[(s, c)]
            runs = f"{len(p['runs'])} ok" + (f", {len(p['failed'])} FAILED" if p["failed"] else "")
            cells = [fmt(p["median"][k], k) for k in metrics]
            print(f"| {s} | " + (f"{c} | " if len(spec["cases"]) > 1 else "") +
                  " | ".join(cells) + f" | {runs} |")
    print()
    print("| ratio (median of per-round ratios, > 1: qilin better) | value |")
    print("|---|---|")
    for c in spec["cases"]:
        for k, v in ratios_by_case[c].items():
            print(f"| {k}{' ' + c if c else ''} | {'-' if v is None else f'{v:.2f}'} |")
    print()
    print("| target | value | wanted | verdict |")
    print("|---|---|---|---|")
    for t in targets:
        v = t["value"]
        vs = t.pop("shown") or ("-" if v is None else
                                (f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"))
        print(f"| {t['name']} | {vs} | {t['target']} | {'PASS' if t['pass'] else 'MISS'} |")
    for a in anomalies:
        print(f"\n- anomaly: {a}")

    # Plot data: one row per system (and case): label, headline median, min, max, latencies.
    os.makedirs(plot_dir, exist_ok=True)
    dat = os.path.join(plot_dir, f"{scen}.dat")
    with open(dat, "w") as f:
        f.write(f"# label {head}_median {head}_min {head}_max p50_us p99_us p999_us\n")
        for c in spec["cases"]:
            for s in spec["systems"]:
                p = per[(s, c)]
                vals = [r[head] for r in p["runs"] if r.get(head) is not None]
                lab = f"{s}{'-' + c if c else ''}"
                row = [p["median"][head], min(vals) if vals else None,
                       max(vals) if vals else None] + [p["median"].get(k) for k in LAT]
                f.write(f'"{lab}" ' + " ".join("NaN" if v is None else f"{v:.3f}" for v in row) +
                        "\n")
    have = any(r.get(head) is not None for p in per.values() for r in p["runs"])
    if not have:
        sys.stderr.write(f"report.py: {scen}: no figures at all, so no plots\n")
    elif shutil.which("gnuplot"):
        for kind in ("throughput", "latency"):
            png = os.path.join(plot_dir, f"{scen}_{kind}.png")
            title = f"{scen}: {spec['unit'] if kind == 'throughput' else 'latency'} (medians)"
            cmd = ["gnuplot", "-e",
                   f"datafile='{dat}'; outfile='{png}'; ttl='{title}'; unit='{spec['unit']}'",
                   os.path.join(HERE, "plot", f"{kind}.gp")]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.stderr.write(f"report.py: gnuplot failed for {png}: {p.stderr}\n")
    else:
        sys.stderr.write("report.py: no gnuplot (scripts/deps.sh bench installs it): no PNGs\n")

    if not per[(base, spec["cases"][0])]["runs"]:
        sys.stderr.write(f"report.py: {scen}: qilin produced no figures\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
