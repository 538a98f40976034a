#!/usr/bin/env python3
"""Driver of scripts/bench.sh: our gateway + register against the original Python mcpport 0.1.4,
in the same run, on 127.0.0.1, with the same client (scripts/bench/client.rs) for both.

Every process it starts is written to --pidfile ("PID STARTTIME NAME" per line) so that
scripts/bench.sh can kill what is left by PID if this driver dies; the driver itself stops them
(SIGTERM, then SIGKILL) on every way out, SIGTERM included. Every wait is bounded.

Both stacks relay the same stdio server, `mcpport sample-server --protocol-version 2025-03-26`
(the original gateway rejects newer versions), under the same name. Measures:
  - gateway start-up: from spawning it to the first accepted TCP connection, and to the first
    HTTP response on it (GET of an unknown path); the median of --startup-reps starts;
  - register start-up: from spawning it to NAME_echo in tools/list (a session polls every
    --poll-ms over legacy SSE);
  - RSS (VmRSS) of the gateway, of register and of register's child processes, idle once
    registered; the gateway's again after the load, with its peak (VmHWM);
  - tool calls: one session calling NAME_echo back to back, then --sessions sessions at once,
    over legacy SSE for both and over Streamable HTTP for ours; targets take turns in rounds so
    that a noisy moment on this shared machine does not land on one side only;
  - CPU time (user + system) of gateway, register and server per call, over the whole load.
"""

import argparse
import json
import os
import platform
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---- processes ----


def stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3, state, is index 0)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def start_time(pid):
    return stat_fields(pid)[19]  # field 22


class Procs:
    """Processes we started: recorded in the pid file, stopped by PID."""

    def __init__(self, pidfile, logdir):
        self.pidfile, self.logdir, self.live = pidfile, logdir, []

    def record(self, pid, name):
        try:
            with open(self.pidfile, "a") as f:
                f.write(f"{pid} {start_time(pid)} {name}\n")
        except OSError:
            pass  # already gone

    def start(self, name, argv, stdout=None):
        logf = open(self.logdir / f"{name}.log", "ab")
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else logf,
            stderr=logf,
        )
        p.bench_name, p.bench_log = name, logf
        self.record(p.pid, name)
        self.live.append(p)
        return p

    def stop(self, p, grace=5.0):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{p.bench_name} (pid {p.pid}) ignored SIGTERM for {grace} s: SIGKILL")
                p.kill()
                p.wait(5)
        p.bench_log.close()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in reversed(list(self.live)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping {p.bench_name}: {e}")


def descendants(pid):
    """PIDs of every descendant of pid, by /proc/*/task/*/children."""
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{cur}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{cur}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def status(pid):
    """VmRSS and VmHWM in KiB, and the process name, from /proc/PID/status."""
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0])
            elif key == "Name":
                vals["Name"] = rest.strip()
    return vals


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            f = stat_fields(pid)
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    return total / CLK_TCK


# ---- measurements ----


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(procs, name, argv_for_port, timeout=20.0):
    """Spawns a gateway on a free port; returns (proc, port, ms to connect, ms to HTTP answer)."""
    port = free_port()
    t0 = time.monotonic()
    p = procs.start(name, argv_for_port(port))
    deadline = t0 + timeout
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with status {p.returncode} before accepting; see its log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} accepted no connection on port {port} within {timeout} s")
            time.sleep(0.001)
    t_conn = time.monotonic() - t0
    with s:
        s.settimeout(10)
        s.sendall(b"GET /bench-probe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        first = s.recv(64)
        if not first.startswith(b"HTTP/1."):
            raise RuntimeError(f"{name}: no HTTP answer: {first!r}")
    t_http = time.monotonic() - t0
    return p, port, t_conn * 1000, t_http * 1000


def read_line(p, timeout, what):
    """One line of p's stdout within timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{what}: nothing within {timeout} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"{what}: the client exited (status {p.wait(5)}); see its log")
            buf += chunk
    return buf.decode().strip()


def measure(args, procs, side, stdio):
    """Starts one side (gateway, then register) and measures its start-up and idle memory."""
    name = args.name
    if side == "rust":
        gw_argv = lambda port: [args.ours, "gateway", "--host", "127.0.0.1", "--port", str(port)]
        reg_bin = args.ours
    else:
        gw_argv = lambda port: [args.peer, "gateway", "--host", "127.0.0.1", "--port", str(port)]
        reg_bin = args.peer
    conns, https = [], []
    for i in range(args.startup_reps):
        p, _, t_conn, t_http = start_gateway(procs, f"{side}-gateway-startup{i}", gw_argv)
        procs.stop(p)
        conns.append(t_conn)
        https.append(t_http)
    gw, port, t_conn, t_http = start_gateway(procs, f"{side}-gateway", gw_argv)
    conns.append(t_conn)
    https.append(t_http)
    log(f"{side}: gateway on port {port}; start-up to connect {[round(c, 1) for c in conns]} ms")

    waiter = procs.start(
        f"{side}-wait-tool",
        [args.client, "wait-tool", f"127.0.0.1:{port}", "/sse", f"{name}_echo", "30", str(args.poll_ms)],
        stdout=subprocess.PIPE,
    )
    if read_line(waiter, 15, f"{side} wait-tool") != "ready":
        raise RuntimeError(f"{side}: the wait-tool client did not get ready")
    url = f"ws://127.0.0.1:{port}/mcp/register"
    t0 = time.monotonic()
    reg = procs.start(
        f"{side}-register", [reg_bin, "register", "--stdio", stdio, "--gateway-url", url, "--server-name", name]
    )
    line = read_line(waiter, 35, f"{side}: waiting for {name}_echo in tools/list")
    t_tools = (time.monotonic() - t0) * 1000
    waiter.wait(5)
    procs.stop(waiter)
    if not line.startswith("found"):
        raise RuntimeError(f"{side}: {line}")
    log(f"{side}: register to {name}_echo listed: {t_tools:.0f} ms ({line.split()[1]} lists)")
    return {
        "gw": gw,
        "reg": reg,
        "port": port,
        "gw_connect_ms": statistics.median(conns),
        "gw_connect_all": conns,
        "gw_http_ms": statistics.median(https),
        "gw_http_all": https,
        "register_ms": t_tools,
    }


def idle_memory(procs, st):
    """RSS of gateway, register, and register's children (recorded for cleanup too)."""
    kids = descendants(st["reg"].pid)
    for k in kids:
        procs.record(k, "register-child")
    kid_status = [status(k) for k in kids]
    st["kids"] = kids
    st["kid_names"] = [k["Name"] for k in kid_status]
    st["gw_rss_idle"] = status(st["gw"].pid)["VmRSS"]
    st["reg_rss_idle"] = status(st["reg"].pid)["VmRSS"]
    st["kids_rss_idle"] = sum(k["VmRSS"] for k in kid_status)
    st["kids_rss_each"] = [k["VmRSS"] for k in kid_status]


def machine_busy():
    """CPU seconds the whole machine spent busy so far (steal included), from /proc/stat."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(t) - t[3] - t[4]) / CLK_TCK


def children_cpu():
    """CPU seconds of our finished (waited-for) children: the clients."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_parts(st):
    """CPU seconds used so far by the gateway, register, and register's children."""
    return [cpu_seconds([st["gw"].pid]), cpu_seconds([st["reg"].pid]), cpu_seconds(st["kids"])]


def run_load(args, procs, targets, sessions, calls, rounds, warmup, tag):
    out_path = args.work / f"load-{tag}.json"
    dump = args.work / f"latencies-{tag}.txt"
    with open(out_path, "wb") as out:
        p = procs.start(
            f"client-{tag}",
            [args.client, "load", "--tool", f"{args.name}_echo", "--calls", str(calls), "--rounds", str(rounds),
             "--warmup", str(warmup), "--sessions", str(sessions), "--dump", str(dump)] + targets,
            stdout=out,
        )
        try:
            p.wait(args.load_timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the {tag} load took over {args.load_timeout} s")
        finally:
            procs.stop(p)
    if p.returncode != 0:
        raise RuntimeError(f"the {tag} load failed (status {p.returncode}); see {args.work}/client-{tag}.log")
    return {r["target"]: r for r in map(json.loads, out_path.read_text().splitlines())}


# ---- report ----


def fmt(v, digits=None):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 1 else 3
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    return f"{r:.3g}×"


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return model


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True, help="our mcpport binary")
    ap.add_argument("--peer", required=True, help="the original's mcpport entry point")
    ap.add_argument("--client", required=True, help="the benchclient binary")
    ap.add_argument("--work", required=True, type=Path, help="directory for logs and raw results")
    ap.add_argument("--pidfile", required=True, type=Path)
    ap.add_argument("--cmdline", default="bash scripts/bench.sh")
    ap.add_argument("--name", default="bench", help="server name to register under")
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls per target (after warm-up)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds the calls are split into, targets taking turns")
    ap.add_argument("--warmup", type=int, default=100, help="calls per session before measuring")
    ap.add_argument("--sessions", type=int, default=8, help="sessions of the concurrent load")
    ap.add_argument("--conc-calls", type=int, default=300, help="calls per session in the concurrent load")
    ap.add_argument("--conc-rounds", type=int, default=3)
    ap.add_argument("--startup-reps", type=int, default=3, help="extra gateway starts for the start-up median")
    ap.add_argument("--poll-ms", type=int, default=5, help="tools/list interval while waiting for registration")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS")
    ap.add_argument("--load-timeout", type=float, default=120.0)
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    procs = Procs(args.pidfile, args.work)
    began = time.monotonic()
    load_before = loadavg()
    stdio = f"{shlex.quote(args.ours)} sample-server --protocol-version 2025-03-26"
    try:
        rs = measure(args, procs, "rust", stdio)
        py = measure(args, procs, "python", stdio)
        time.sleep(args.settle)
        idle_memory(procs, rs)
        idle_memory(procs, py)

        cpu0 = {s: cpu_parts(st) for s, st in (("rust", rs), ("python", py))}
        busy0, kids0, t_load0 = machine_busy(), children_cpu(), time.monotonic()
        targets = [f"rust-sse=sse:127.0.0.1:{rs['port']}/sse", f"python-sse=sse:127.0.0.1:{py['port']}/sse",
                   f"rust-http=http:127.0.0.1:{rs['port']}/mcp"]
        log(f"load: 1 session per target, {args.calls} calls each in {args.rounds} rounds")
        seq = run_load(args, procs, targets, 1, args.calls, args.rounds, args.warmup, "seq")
        log(f"load: {args.sessions} sessions per target, {args.conc_calls} calls each in {args.conc_rounds} rounds")
        conc_warmup = max(1, args.warmup // 10)
        conc = run_load(args, procs, targets, args.sessions, args.conc_calls, args.conc_rounds, conc_warmup, "conc")
        cpu1 = {s: cpu_parts(st) for s, st in (("rust", rs), ("python", py))}
        busy1, kids1, t_load1 = machine_busy(), children_cpu(), time.monotonic()
        # CPU the rest of the machine used meanwhile: all busy time, less our stacks and clients.
        ours = sum(sum(cpu1[s]) - sum(cpu0[s]) for s in cpu0) + (kids1 - kids0)
        others = max(0.0, (busy1 - busy0) - ours) / (t_load1 - t_load0)
        warm = args.warmup + args.sessions * conc_warmup  # per target, in the CPU figures too
        served = {
            "rust": sum(r[t]["calls"] for r in (seq, conc) for t in ("rust-sse", "rust-http")) + 2 * warm,
            "python": sum(r["python-sse"]["calls"] for r in (seq, conc)) + warm,
        }
        # µs of CPU per call, by part: gateway, register, register's children (the server).
        cpu_per_call = {s: [(b - a) / served[s] * 1e6 for a, b in zip(cpu0[s], cpu1[s])] for s in served}
        time.sleep(args.settle)
        for st in (rs, py):
            s = status(st["gw"].pid)
            st["gw_rss_after"], st["gw_hwm"] = s["VmRSS"], s["VmHWM"]
            st["reg_rss_after"] = status(st["reg"].pid)["VmRSS"]
        load_after = loadavg()
    finally:
        procs.stop_all()
    elapsed = time.monotonic() - began

    # ---- the table ----
    mb = lambda kib: kib / 1024
    rows = []

    def row(metric, a, b, digits=None):
        rows.append(f"| {metric} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio(a, b)} |")

    n_start = args.startup_reps + 1
    row(f"gateway start → first TCP connection accepted (ms, median of {n_start})", rs["gw_connect_ms"], py["gw_connect_ms"])
    row(f"gateway start → first HTTP response (ms, median of {n_start})", rs["gw_http_ms"], py["gw_http_ms"])
    row(f"register start → `{args.name}_echo` in tools/list (ms)", rs["register_ms"], py["register_ms"])
    s_rs, s_py, h_rs = seq["rust-sse"], seq["python-sse"], seq["rust-http"]
    c_rs, c_py, ch_rs = conc["rust-sse"], conc["python-sse"], conc["rust-http"]
    for p in ("p50", "p90", "p99"):
        row(f"SSE, 1 session, {s_rs['calls']} calls: {p} (ms)", s_rs[f"{p}_ms"], s_py[f"{p}_ms"])
    row("SSE, 1 session: calls/s", s_rs["calls_per_s"], s_py["calls_per_s"], 0)
    row(f"SSE, {args.sessions} sessions, {c_rs['calls']} calls: calls/s total", c_rs["calls_per_s"], c_py["calls_per_s"], 0)
    for p in ("p50", "p99"):
        row(f"SSE, {args.sessions} sessions: {p} (ms)", c_rs[f"{p}_ms"], c_py[f"{p}_ms"])
    for p in ("p50", "p90", "p99"):
        row(f"Streamable HTTP, 1 session, {h_rs['calls']} calls: {p} (ms)", h_rs[f"{p}_ms"], None)
    row("Streamable HTTP, 1 session: calls/s", h_rs["calls_per_s"], None, 0)
    row(f"Streamable HTTP, {args.sessions} sessions: calls/s total", ch_rs["calls_per_s"], None, 0)
    for p in ("p50", "p99"):
        row(f"Streamable HTTP, {args.sessions} sessions: {p} (ms)", ch_rs[f"{p}_ms"], None)
    cr, cp = cpu_per_call["rust"], cpu_per_call["python"]
    row("CPU per call, gateway (µs, user + system, over all loads)", cr[0], cp[0], 0)
    row("CPU per call, register (µs)", cr[1], cp[1], 0)
    row("CPU per call, register's children: the same sample server (µs)", cr[2], cp[2], 0)
    row("CPU per call, all three (µs)", sum(cr), sum(cp), 0)
    row("RSS gateway, idle after registration (MB)", mb(rs["gw_rss_idle"]), mb(py["gw_rss_idle"]))
    row("RSS register, idle (MB)", mb(rs["reg_rss_idle"]), mb(py["reg_rss_idle"]))
    kid_names = "+".join(rs["kid_names"]) or "none"
    row(f"RSS register's children ({kid_names}, the same for both) (MB)", mb(rs["kids_rss_idle"]), mb(py["kids_rss_idle"]))
    row("RSS gateway after the load (MB)", mb(rs["gw_rss_after"]), mb(py["gw_rss_after"]))
    row("peak RSS gateway, VmHWM (MB)", mb(rs["gw_hwm"]), mb(py["gw_hwm"]))
    row("RSS register after the load (MB)", mb(rs["reg_rss_after"]), mb(py["reg_rss_after"]))
    errors = {s: sum(r[t]["errors"] for r in (seq, conc) for t in r if t.startswith(s)) for s in ("rust", "python")}
    row("failed calls", errors["rust"], errors["python"], 0)

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"command: {args.cmdline}")
    print(f"date:    {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {machine()}, "
          f"Linux {platform.release()}; load average {load_before} before, {load_after} after")
    # Paths as the repository names them: no machine's absolute paths in BENCHMARKS.md.
    repo = Path(__file__).resolve().parents[2]
    rel = lambda path: os.path.relpath(path, repo)  # noqa: E731
    print(f"ours:    {rel(args.ours)} (git {rev or '?'}); original: mcpport 0.1.4 ({rel(args.peer)})")
    print(f"client:  scripts/bench/client.rs, the same for both; server: {stdio.replace(args.ours, rel(args.ours))}")
    print()
    print("| metric | mcpport (Rust) | original (Python) | ratio (Rust ÷ Python) |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("Ratio below 1: Rust needs less time or memory (but for calls/s: fewer calls).")
    print("Per-round calls/s (targets took turns each round):")
    for label, r in (("1 session", seq), (f"{args.sessions} sessions", conc)):
        for t in ("rust-sse", "python-sse", "rust-http"):
            x = r[t]
            print(f"  {label:>11} {t:<10} {', '.join(fmt(v, 0) for v in x['round_calls_per_s'])}"
                  f"   max {fmt(x['max_ms'])} ms, {x['over_10ms']} calls ≥ 10 ms, {x['over_50ms']} ≥ 50 ms")
    print(f"  gateway start-up samples (ms to connect): Rust {', '.join(fmt(v) for v in rs['gw_connect_all'])}; "
          f"Python {', '.join(fmt(v) for v in py['gw_connect_all'])}")
    for label, st in (("Rust", rs), ("Python", py)):
        print(f"  {label} register children: " +
              ", ".join(f"{n} {fmt(mb(k))} MB" for n, k in zip(st["kid_names"], st["kids_rss_each"])))
    firsts = [f"{t}: {x['first_error']}" for r in (seq, conc) for t, x in r.items() if x["first_error"]]
    for e in firsts:
        print(f"  first error {e}")
    print(f"  other processes on this machine used {others:.2f} of its {os.cpu_count()} CPUs on average during the "
          f"load ({t_load1 - t_load0:.0f} s): the noise")
    print(f"  whole run {elapsed:.0f} s; raw latencies in the work directory's latencies-*.txt (kept with BENCH_KEEP=1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
