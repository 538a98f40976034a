#!/usr/bin/env python3
"""Driver of the scale scenarios of scripts/bench.sh (issue 11), run after bench.py: the load
generator (tools/loadgen) against our gateway, as the glibc release build and as the static musl
build, beside the original Python mcpport 0.1.4 where it can take part and beside the floor (the
same generator calling the same stdio server directly). Prints Markdown on stdout and writes the
raw JSON of every run to --work.

Scenarios, each on a fresh gateway:
  - idle RSS: a gateway nobody has talked to, then gateway and register idle with one server;
  - latency added: one session, sequential `echo` calls, direct vs through gateway + register
    (targets take turns in rounds, so noise lands on all of them);
  - throughput: --conc sessions at once for --seconds against the sample server, with CPU per
    call of gateway, register and server from /proc;
  - mesh: --edges fake edges registered one after another (timed; --watchers SSE sessions count
    the list_changed they get), then --sessions legacy SSE sessions at once, each making --calls
    checked calls to different edges; the gateway's RSS and threads sampled every 50 ms;
  - big: as many edges as the descriptor limit allows up to --big-edges (a link holds 2
    descriptors in the gateway, a session up to 3), with --big-sessions sessions.

Every process started is recorded in --pidfile and stopped by PID; every wait is bounded.
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import Procs, cpu_seconds, descendants, fmt, free_port, log, status  # noqa: E402

MIB = 1024.0


def wait_port(p, port, timeout=20.0):
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise RuntimeError(f"{p.bench_name} exited with status {p.returncode}; see its log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{p.bench_name}: nothing listening on {port} after {timeout} s")


class Runner:
    def __init__(self, args):
        self.args = args
        self.procs = Procs(args.pidfile, args.work)
        self.raw = []
        self.n = 0
        self.cmds = []

    def start(self, name, argv, stdout=None):
        names = [(str(self.args.ours), "mcpport"), (str(self.args.loadgen), "loadgen"),
                 (str(self.args.peer), "mcpport-0.1.4")]
        names += [(str(self.args.musl), "mcpport-musl")] if self.args.musl else []
        names += [(b, f"mcpport-opt-{lvl}") for lvl, _, b in (x.partition("=") for x in self.args.opt_bins)]
        shown = list(argv)
        for path, short in names:
            shown = [a.replace(path, short) for a in shown]
        line = " ".join(a if a and " " not in a else repr(a) for a in shown)
        if line not in self.cmds:
            self.cmds.append(line)
        return self.procs.start(name, argv, stdout=stdout)

    def name(self, what):
        self.n += 1
        return f"scale{self.n:02d}-{what}"

    def gateway(self, binary, python=False, big=False):
        port = free_port()
        argv = [binary, "gateway", "--host", "127.0.0.1", "--port", str(port)]
        if not python:
            argv += ["--max-connections", "100000", "--max-sessions", "100000"]
            if big:
                argv += ["--log-level", "WARNING"]
        p = self.start(self.name("python-gateway" if python else "gateway"), argv)
        wait_port(p, port)
        return p, port

    def register(self, binary, port, name="bench"):
        stdio = f"{self.args.ours} sample-server --protocol-version 2025-03-26"
        argv = [binary, "register", "--stdio", stdio, "--gateway-url", f"ws://127.0.0.1:{port}/mcp/register",
                "--server-name", name]
        reg = self.start(self.name("register"), argv)
        self.loadgen(["wait-tool", "--tool", f"{name}_echo", "--timeout", "30", f"sse:127.0.0.1:{port}/sse"], 40)
        for k in descendants(reg.pid):
            self.procs.record(k, "register-child")
        return reg

    def loadgen(self, argv, timeout):
        tag = self.name(f"loadgen-{argv[0]}")
        with open(self.args.work / f"{tag}.json", "wb") as out:
            p = self.start(tag, [self.args.loadgen] + argv, stdout=out)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"loadgen {argv[0]} took over {timeout} s")
            finally:
                self.procs.stop(p)
        if p.returncode != 0:
            raise RuntimeError(f"loadgen {' '.join(argv[:3])}… failed (status {p.returncode}); see {tag}.log")
        rows = [json.loads(line) for line in (self.args.work / f"{tag}.json").read_text().splitlines() if line]
        self.raw += rows
        return rows

    def stop(self, *ps):
        for p in ps:
            self.procs.stop(p)


def rss_mib(pid):
    return status(pid)["VmRSS"] / MIB


def rss_split(pid):
    """(anonymous, file-backed) resident MiB: the file part is the executable and shared libraries."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                vals[key] = int(rest.split()[0]) / MIB
    return vals.get("RssAnon", 0.0), vals.get("RssFile", 0.0)


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def idle(r, binary, python=False):
    """RSS of a fresh gateway, then of gateway and register idle with one server registered."""
    gw, port = r.gateway(binary, python)
    time.sleep(r.args.settle)
    fresh, fresh_split = rss_mib(gw.pid), rss_split(gw.pid)
    reg = r.register(binary, port)
    time.sleep(r.args.settle)
    out = {"gw_fresh": fresh, "gw_fresh_split": fresh_split, "gw_one": rss_mib(gw.pid), "reg": rss_mib(reg.pid),
           "reg_split": rss_split(reg.pid), "kids": sum(rss_mib(k) for k in descendants(reg.pid))}
    return out, gw, reg, port


def cpu_split(pid):
    """(user, system) CPU seconds of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_parts(gw, reg):
    return [cpu_seconds([gw.pid]), cpu_seconds([reg.pid]), cpu_seconds(descendants(reg.pid))]


def throughput(r, gw, reg, target, tool="bench_echo"):
    a = r.args
    before = cpu_parts(gw, reg)
    (row,) = r.loadgen(["load", "--tool", tool, "--sessions", str(a.conc), "--seconds", str(a.seconds),
                        "--warmup", "20", target], a.seconds + 60)
    after = cpu_parts(gw, reg)
    calls = row["calls"] + 20 * a.conc
    row["cpu_us"] = [(y - x) / calls * 1e6 for x, y in zip(before, after)]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True, help="our glibc release binary")
    ap.add_argument("--musl", help="our static x86_64 musl binary (its rows are skipped without it)")
    ap.add_argument("--peer", required=True, help="the original's mcpport entry point")
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--pidfile", required=True, type=Path)
    ap.add_argument("--edges", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=20, help="calls per session in the mesh")
    ap.add_argument("--watchers", type=int, default=4)
    ap.add_argument("--big-edges", type=int, default=10000)
    ap.add_argument("--big-sessions", type=int, default=200)
    ap.add_argument("--big-time", type=int, default=240, help="seconds the big run may spend registering")
    ap.add_argument("--conc", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--lat-calls", type=int, default=3000)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--opt-bins", nargs="*", default=[], help="LEVEL=BINARY builds to compare CPU per call")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    r = Runner(args)
    res = {}
    builds = [("glibc", args.ours)] + ([("musl", args.musl)] if args.musl else [])
    server = f"{args.ours} sample-server --protocol-version 2025-03-26"
    try:
        # ---- idle, latency, throughput: one gateway + register per build, and the original ----
        live = {}
        for label, binary in builds:
            log(f"scale: {label}: idle RSS")
            res[f"idle_{label}"], gw, reg, port = idle(r, binary)
            live[label] = (gw, reg, port)
        log("scale: python: idle RSS")
        res["idle_python"], pgw, preg, pport = idle(r, args.peer, python=True)
        log("scale: latency (direct vs through the gateways), one session, sequential")
        gport = live["glibc"][2]
        targets = [f"sse:127.0.0.1:{gport}/sse", f"http:127.0.0.1:{gport}/mcp"]
        if "musl" in live:
            targets.append(f"http:127.0.0.1:{live['musl'][2]}/mcp")
        targets.append(f"sse:127.0.0.1:{pport}/sse")
        rows = r.loadgen(["compare", "--tool", "bench_echo", "--calls", str(args.lat_calls), "--rounds", "5",
                          "--warmup", "300", "--direct", server] + targets, 300)
        names = ["direct", "glibc_sse", "glibc_http"] + (["musl_http"] if "musl" in live else []) + ["python_sse"]
        res["latency"] = dict(zip(names, rows))
        log("scale: latency of the gateway alone (a fake edge in the load generator answers)")
        res["gw_only"] = {}
        for transport in ("sse", "http"):
            (row,) = r.loadgen(["mesh", "--addr", f"127.0.0.1:{gport}", "--edges", "1", "--prefix", f"lat{transport}",
                                "--sessions", "1", "--calls", str(args.lat_calls), "--transport", transport], 120)
            res["gw_only"][transport] = row
        log(f"scale: throughput, {args.conc} sessions, {args.seconds} s each")
        res["tput"] = {}
        for label, (gw, reg, port) in live.items():
            res["tput"][f"{label}_http"] = throughput(r, gw, reg, f"http:127.0.0.1:{port}/mcp")
        gw, reg, port = live["glibc"]
        res["tput"]["glibc_sse"] = throughput(r, gw, reg, f"sse:127.0.0.1:{port}/sse")
        res["tput"]["python_sse"] = throughput(r, pgw, preg, f"sse:127.0.0.1:{pport}/sse")
        (res["tput"]["direct"],) = r.loadgen(["load", "--tool", "echo", "--sessions", str(args.conc), "--seconds",
                                              str(args.seconds), "--warmup", "20", f"stdio:{server}"],
                                             args.seconds + 60)
        for label, (gw, reg, _) in live.items():
            res[f"after_{label}"] = {"gw": rss_mib(gw.pid), "gw_hwm": status(gw.pid)["VmHWM"] / MIB,
                                     "reg": rss_mib(reg.pid)}
            r.stop(reg, gw)
        r.stop(preg, pgw)

        # ---- mesh: registration, then sessions calling edges ----
        for label, binary in builds:
            for transport, suffix in (("sse", ""), ("http", "_http")):
                log(f"scale: {label}: mesh of {args.edges} edges and {args.sessions} {transport} sessions")
                gw, port = r.gateway(binary)
                (row,) = r.loadgen(["mesh", "--addr", f"127.0.0.1:{port}", "--edges", str(args.edges), "--sessions",
                                    str(args.sessions), "--calls", str(args.calls), "--watchers", str(args.watchers),
                                    "--transport", transport, "--watch-pid", str(gw.pid), "--time-limit", "240"], 400)
                res[f"mesh_{label}{suffix}"] = row
                r.stop(gw)

        # ---- big: as many edges as the descriptor limit allows ----
        if not args.skip_big:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            # A link: its socket and its eventfd. A legacy SSE session: its stream, its keep-alive
            # POST connection, and that connection's duplicate while it waits for a request (the
            # admission keeps it, to close an idle connection when room is needed).
            fit = (soft - 64 - 3 * args.big_sessions) // 2
            edges = min(args.big_edges, fit)
            log(f"scale: big run: {edges} edges (of {args.big_edges}; descriptor limit {soft}/{hard}), "
                f"{args.big_sessions} sessions")
            gw, port = r.gateway(args.ours, big=True)
            (row,) = r.loadgen(["mesh", "--addr", f"127.0.0.1:{port}", "--edges", str(edges), "--sessions",
                                str(args.big_sessions), "--calls", "10", "--edge-threads", "4", "--watch-pid",
                                str(gw.pid), "--time-limit", str(args.big_time)], args.big_time + 200)
            row["nofile"] = [soft, hard]
            row["wanted_edges"] = args.big_edges
            res["big"] = row
            r.stop(gw)
        # ---- opt-level: CPU per call of the same load on builds that differ only in opt-level ----
        if args.opt_bins:
            res["opt"] = {}
            for rep in range(2):
                for spec in args.opt_bins:
                    level, binary = spec.split("=", 1)
                    log(f"scale: opt-level {level}, pass {rep + 1}")
                    gw, port = r.gateway(binary)
                    reg = r.register(binary, port)
                    before = [cpu_split(gw.pid), cpu_split(reg.pid)]
                    (row,) = r.loadgen(["load", "--tool", "bench_echo", "--sessions", "8", "--seconds",
                                        str(args.seconds), "--warmup", "20", f"http:127.0.0.1:{port}/mcp"], 120)
                    after = [cpu_split(gw.pid), cpu_split(reg.pid)]
                    calls = row["calls"] + 20 * 8
                    us = [[(y - x) / calls * 1e6 for x, y in zip(b, a)] for b, a in zip(before, after)]
                    res["opt"].setdefault(level, {"size": os.path.getsize(binary), "runs": []})["runs"].append(
                        {"calls_per_s": row["calls_per_s"], "gw_user": us[0][0], "gw_sys": us[0][1],
                         "reg_user": us[1][0], "reg_sys": us[1][1]})
                    r.stop(reg, gw)
    finally:
        r.procs.stop_all()
        (args.work / "scale-raw.json").write_text(json.dumps({"results": res, "runs": r.raw}, indent=1))
    report(args, res, r.cmds)
    return 0


# ---- report ----


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.3g}×"


def verdict(ok):
    return "met" if ok else "**missed**"


def by_phase(m):
    """The gateway's RSS and threads in each phase of a mesh run, as one line."""
    return "; ".join(f"{k} {v['rss_kib'] / MIB:.1f} MiB, {v['threads']:,} threads" for k, v in m["phases"].items())


def per_edge_kib(m):
    """The gateway's RSS per registered edge (KiB), or None when nothing registered."""
    reg = m["phases"].get("registered")
    if not reg or not m["registered"]:
        return None
    return (reg["rss_kib"] - m["phases"].get("start", {}).get("rss_kib", 0)) / m["registered"]


def report(args, res, cmds):
    out = []
    w = out.append
    lat = res["latency"]
    lat_rows = [("direct (floor)", "direct"), ("glibc, legacy SSE", "glibc_sse"), ("glibc, Streamable HTTP", "glibc_http"),
                ("musl, Streamable HTTP", "musl_http"), ("Python 0.1.4, legacy SSE", "python_sse")]
    d50 = lat["direct"]["p50_ms"] * 1000
    tgt = []  # (figure, target, measured, ratio, verdict)

    # targets
    for label in ("glibc", "musl"):
        for suffix, kind in (("", "legacy SSE"), ("_http", "Streamable HTTP")):
            m = res.get(f"mesh_{label}{suffix}")
            if not m:
                continue
            peak = max(v.get("hwm_kib", v["rss_kib"]) for v in m["phases"].values()) / MIB
            ok = peak <= 64 and m.get("errors", 1) == 0 and m.get("registered") == m["edges"]
            tgt.append((f"peak RSS, {m['edges']:,} edges + {m.get('sessions', 0):,} {kind} sessions calling ({label})",
                        "≤ 64 MiB", f"{peak:.1f} MiB ({m.get('calls', 0):,} calls, {m.get('errors', '?')} wrong)",
                        ratio(peak, 64), verdict(ok)))
    g = res.get("mesh_glibc")
    if g:
        tgt.append((f"register {g['edges']:,} edges one after another (glibc)", "≤ 2 s", f"{g['reg_total_s']:.2f} s",
                    ratio(g["reg_total_s"], 2), verdict(g["reg_total_s"] <= 2)))
        grow = g["reg_last_tenth_ms"] / g["reg_first_tenth_ms"] if g["reg_first_tenth_ms"] else 0
        tgt.append(("time per registration, last tenth ÷ first tenth (flat if proportional to the server's own lists)",
                    "≈ 1×", f"{g['reg_first_tenth_ms']:.2f} → {g['reg_last_tenth_ms']:.2f} ms", f"{grow:.3g}×",
                    verdict(grow < 1.5)))
        tgt.append((f"`list_changed` per client over {g['edges']:,} registrations", "coalesced (≪ 1 per edge)",
                    f"{g['list_changed_min']}–{g['list_changed_max']}", ratio(g["list_changed_max"], g["edges"]),
                    verdict(g["list_changed_max"] <= g["edges"] / 10)))
    for key, label in (("glibc_sse", "legacy SSE"), ("glibc_http", "Streamable HTTP")):
        added = lat[key]["p50_ms"] * 1000 - d50
        tgt.append((f"latency added at p50, gateway + register, {label}", "≤ 100 µs", f"{added:.0f} µs",
                    ratio(added, 100), verdict(added <= 100)))
    t = res["tput"]
    best = max(t["glibc_http"]["calls_per_s"], t["glibc_sse"]["calls_per_s"])
    tgt.append((f"calls/s, {args.conc} sessions, sample server (glibc, best transport)", "≥ 20,000",
                f"{best:,.0f}", ratio(best, 20000), verdict(best >= 20000)))
    for label in ("glibc", "musl"):
        i = res.get(f"idle_{label}")
        if i:
            fa, ff = i["gw_fresh_split"]
            ra, rf = i["reg_split"]
            tgt.append((f"idle RSS, gateway ({label}; fresh / one server registered)", "≤ 2 MiB",
                        f"{i['gw_fresh']:.2f} / {i['gw_one']:.2f} MiB (fresh: {fa:.2f} anonymous + {ff:.2f} file-backed)",
                        ratio(i["gw_one"], 2), verdict(i["gw_one"] <= 2)))
            tgt.append((f"idle RSS, register ({label})", "≤ 2 MiB",
                        f"{i['reg']:.2f} MiB ({ra:.2f} anonymous + {rf:.2f} file-backed)", ratio(i["reg"], 2),
                        verdict(i["reg"] <= 2)))

    w("### Targets of issue 11\n")
    w("| figure | target | measured | ratio to target | |")
    w("|---|---|---:|---:|---|")
    for f_, t_, m_, r_, v_ in tgt:
        w(f"| {f_} | {t_} | {m_} | {r_} | {v_} |")

    w("\n### Latency: one session, sequential `echo` calls to the sample server\n")
    w(f"{lat['direct']['calls']:,} calls per target in 5 rounds, the targets taking turns; the floor is the same generator "
      "writing to the server's stdin and reading its stdout.\n")
    w("| path | p50 (µs) | p90 (µs) | p99 (µs) | added at p50 (µs) | p50 ÷ floor | p50 ÷ Python |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    py50 = lat["python_sse"]["p50_ms"] * 1000
    for label, key in lat_rows:
        x = lat.get(key)
        if not x:
            continue
        p50 = x["p50_ms"] * 1000
        w(f"| {label} | {p50:.0f} | {x['p90_ms'] * 1000:.0f} | {x['p99_ms'] * 1000:.0f} | "
          f"{p50 - d50 if key != 'direct' else 0:.0f} | {ratio(p50, d50)} | {ratio(p50, py50)} |")

    go = res.get("gw_only", {})
    if go:
        w("")
        w("The gateway alone, without register and the stdio server: one session calling a fake edge that answers "
          "in the load generator (`loadgen mesh --edges 1 --sessions 1`), so the edge side costs one thread hop and "
          "no process of its own.\n")
        w("| path | p50 (µs) | p90 (µs) | p99 (µs) |")
        w("|---|---:|---:|---:|")
        for t_, label in (("sse", "gateway alone, legacy SSE"), ("http", "gateway alone, Streamable HTTP")):
            x = go.get(t_)
            if x:
                w(f"| {label} | {x['p50_ms'] * 1000:.0f} | {x['p90_ms'] * 1000:.0f} | {x['p99_ms'] * 1000:.0f} |")

    w(f"\n### Throughput: {args.conc} sessions at once for {args.seconds} s, sample server\n")
    w("CPU per call is user + system time of each process over the run, warm-up included, divided by the calls.\n")
    w("| path | calls/s | p50 (ms) | p99 (ms) | errors | CPU/call gateway (µs) | register (µs) | server (µs) | ÷ Python calls/s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    pcs = t["python_sse"]["calls_per_s"]
    for label, key in (("direct (floor: the server alone, 64 in flight on its stdio)", "direct"),
                       ("glibc, Streamable HTTP", "glibc_http"), ("glibc, legacy SSE", "glibc_sse"),
                       ("musl, Streamable HTTP", "musl_http"), ("Python 0.1.4, legacy SSE", "python_sse")):
        x = t.get(key)
        if not x:
            continue
        cpu = x.get("cpu_us", [None, None, None])
        w(f"| {label} | {x['calls_per_s']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['errors']} | "
          f"{fmt(cpu[0], 0)} | {fmt(cpu[1], 0)} | {fmt(cpu[2], 0)} | {ratio(x['calls_per_s'], pcs)} |")

    w("\n### Memory (MiB)\n")
    w("| process | glibc | musl | Python 0.1.4 |")
    w("|---|---:|---:|---:|")
    ig, im, ip = res.get("idle_glibc", {}), res.get("idle_musl", {}), res.get("idle_python", {})
    ag, am = res.get("after_glibc", {}), res.get("after_musl", {})
    for label, key, src in (("gateway, fresh", "gw_fresh", None), ("gateway, one server registered", "gw_one", None),
                            ("register, idle", "reg", None), ("register's child (the sample server)", "kids", None)):
        w(f"| {label} | {fmt(ig.get(key), 2)} | {fmt(im.get(key), 2)} | {fmt(ip.get(key), 2)} |")
    w(f"| gateway after the throughput loads (peak) | {fmt(ag.get('gw'), 2)} ({fmt(ag.get('gw_hwm'), 2)}) | "
      f"{fmt(am.get('gw'), 2)} ({fmt(am.get('gw_hwm'), 2)}) | — |")

    for key in ("glibc", "glibc_http", "musl", "musl_http"):
        m = res.get(f"mesh_{key}")
        if not m:
            continue
        label, kind = key.split("_")[0], ("Streamable HTTP" if key.endswith("_http") else "legacy SSE")
        w(f"\n### Mesh ({label}, {kind}): {m['edges']:,} fake edges, then {m.get('sessions', 0):,} {kind} sessions × "
          f"{args.calls} checked calls, call k of session i to edge (i + k) mod {m['edges']:,}\n")
        w(f"- registration, one after another: {m['registered']:,} in {m['reg_total_s']:.2f} s "
          f"(p50 {m['reg_p50_ms']:.2f} ms, p99 {m['reg_p99_ms']:.2f} ms; first tenth {m['reg_first_tenth_ms']:.2f} ms "
          f"each, last tenth {m['reg_last_tenth_ms']:.2f} ms), {m['reg_errors']} failed; "
          f"{m['list_changed_min']}–{m['list_changed_max']} `tools/list_changed` per watching session "
          f"({m['watchers']} watching); aggregated `tools/list` then held {m['catalog_tools']:,} tools")
        if m.get("sessions"):
            w(f"- sessions: {m['sessions']:,} opened in {m['open_s']:.2f} s ({m['sessions_failed']} failed); "
              f"{m['calls']:,} calls, {m['errors']} wrong or failed, {m['calls_per_s']:,.0f} calls/s, "
              f"p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms (all sessions at once on 2 CPUs)")
        w("- gateway by phase (max of 50 ms samples): " + by_phase(m))
        per = per_edge_kib(m)
        if per is not None:
            w(f"- per edge: {per:.1f} KiB of gateway RSS once registered")
    b = res.get("big")
    if b:
        w(f"\n### Big run (glibc): {b['registered']:,} edges (wanted {b['wanted_edges']:,}), "
          f"{b.get('sessions', 0)} SSE sessions × 10 calls\n")
        if b["registered"] < b["wanted_edges"]:
            w(f"Fewer than {b['wanted_edges']:,}: the descriptor limit here is {b['nofile'][0]:,} (hard "
              f"{b['nofile'][1]:,}, and this container may not raise it), and each link holds 2 descriptors in the "
              "gateway (its socket and its eventfd wake-up), each session up to 3 (its stream, its POST connection and "
              "that connection's duplicate kept by the admission while it waits); or registration hit its time limit "
              f"({b['reg_errors']} registrations not done: {b['first_reg_error'] or '—'}).\n")
        w(f"- registration: {b['registered']:,} in {b['reg_total_s']:.1f} s (first tenth {b['reg_first_tenth_ms']:.2f} ms "
          f"each, last tenth {b['reg_last_tenth_ms']:.2f} ms)")
        if b.get("sessions"):
            w(f"- sessions: {b['calls']:,} calls, {b['errors']} wrong or failed, p50 {b['p50_ms']:.1f} ms")
            if b["errors"]:
                w(f"- **{b['errors']} calls failed**; the first: {b.get('first_error')}")
        w("- gateway by phase: " + by_phase(b))
        per = per_edge_kib(b)
        if per is not None:
            threads = b["phases"]["registered"]["threads"] / b["registered"]
            w(f"- per edge: {per:.1f} KiB of RSS and {threads:.2f} threads")
    o = res.get("opt")
    if o:
        w("\n### opt-level: CPU per call, 8 Streamable HTTP sessions, same load, two passes each\n")
        w("| opt-level | binary (x86_64 glibc, bytes) | calls/s | gateway user / sys (µs per call) | register user / sys (µs) |")
        w("|---|---:|---:|---:|---:|")
        for level, x in o.items():
            runs = x["runs"]
            avg = lambda k: sum(run[k] for run in runs) / len(runs)
            w(f"| {level} | {x['size']:,} | {avg('calls_per_s'):,.0f} | {avg('gw_user'):.1f} / {avg('gw_sys'):.1f} | "
              f"{avg('reg_user'):.1f} / {avg('reg_sys'):.1f} |")
    w("\n### Commands the scale scenarios ran\n")
    w("`mcpport` is the glibc release build, `mcpport-musl` the static x86_64 musl build, `mcpport-opt-LEVEL` the "
      "opt-level variants, `mcpport-0.1.4` the original, `loadgen` tools/loadgen; ports are free ones picked at run "
      "time.\n")
    w("```")
    out.extend(cmds)
    w("```")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
