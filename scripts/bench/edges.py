#!/usr/bin/env python3
"""Driver of the edge scenarios of scripts/bench.sh (issue 21): the memory of one `register`
process fronting one server against the same process fronting ten, as the glibc release build
and as the static musl build, run after one another on one gateway so the noise lands on all.

Rows (register's own VmRSS, idle: its children are not counted, they are the servers):
  - `--stdio` with the sample server (the one-server edge, the baseline);
  - `--config` with one stdio entry (the same server, through the file);
  - `--config` with ten stdio entries;
  - `--config` with ten HTTP entries (Streamable HTTP: an upstream mcpport gateway's per-server
    endpoints, in front of ten sample servers registered there), the adapter's threads included;
  - `--config` with ten legacy SSE entries, the same way.
Each edge is measured once every server is registered and the process has rested (--settle s).

Prints Markdown on stdout; every process started is recorded in --pidfile and stopped by PID.
"""

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import Procs, free_port, log, status  # noqa: E402

MIB = 1024.0


def wait_servers(port, n, timeout=60.0):
    """Waits until the gateway on `port` has `n` servers registered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if json.load(r).get("servers") == n:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the gateway on {port} did not reach {n} servers in {timeout} s")


def gateway(procs, binary, name):
    port = free_port()
    procs.start(name, [binary, "gateway", "--host", "127.0.0.1", "--port", str(port)])
    wait_servers(port, 0)
    return port


def edge_rss(procs, binary, work, name, argv, port, n, settle):
    """Starts register with `argv`, waits for `n` servers at the gateway on `port` and `settle`
    seconds more; register's own VmRSS in KiB."""
    p = procs.start(name, [binary, "register", *argv, "--gateway-url", f"ws://127.0.0.1:{port}/mcp/register"])
    try:
        wait_servers(port, n)
        time.sleep(settle)
        return status(p.pid)["VmRSS"]
    finally:
        procs.stop(p)
        wait_servers(port, 0)


def config(work, name, entries):
    path = work / f"{name}.json"
    path.write_text(json.dumps({"mcpServers": entries}))
    return str(path)


def measure(procs, binary, tag, work, settle):
    sample = {"command": binary, "args": ["sample-server"]}
    up = gateway(procs, binary, f"edges-upstream-{tag}")
    ups = [procs.start(f"edges-up{i}-{tag}", [binary, "register", "--stdio", f"{binary} sample-server",
                                               "--server-name", f"s{i}", "--gateway-url",
                                               f"ws://127.0.0.1:{up}/mcp/register"]) for i in range(10)]
    wait_servers(up, 10)
    gw = gateway(procs, binary, f"edges-gateway-{tag}")
    rows = {}
    rows["one"] = edge_rss(procs, binary, work, f"edge-one-{tag}",
                           ["--stdio", f"{binary} sample-server"], gw, 1, settle)
    rows["file1"] = edge_rss(procs, binary, work, f"edge-file1-{tag}",
                             ["--config", config(work, f"one-{tag}", {"s0": sample})], gw, 1, settle)
    ten = {f"s{i}": sample for i in range(10)}
    rows["stdio10"] = edge_rss(procs, binary, work, f"edge-stdio10-{tag}",
                               ["--config", config(work, f"stdio10-{tag}", ten)], gw, 10, settle)
    http = {f"h{i}": {"url": f"http://127.0.0.1:{up}/servers/s{i}/mcp"} for i in range(10)}
    rows["http10"] = edge_rss(procs, binary, work, f"edge-http10-{tag}",
                              ["--config", config(work, f"http10-{tag}", http)], gw, 10, settle)
    sse = {f"e{i}": {"url": f"http://127.0.0.1:{up}/servers/s{i}/sse"} for i in range(10)}
    rows["sse10"] = edge_rss(procs, binary, work, f"edge-sse10-{tag}",
                             ["--config", config(work, f"sse10-{tag}", sse)], gw, 10, settle)
    for p in ups:
        procs.stop(p)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--musl")
    ap.add_argument("--work", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading RSS")
    args = ap.parse_args()
    work = Path(args.work)
    procs = Procs(args.pidfile, work)
    builds = [("glibc", args.ours)] + ([("static musl", args.musl)] if args.musl else [])
    results = {}
    try:
        for tag, binary in builds:
            log(f"edges: {tag}")
            results[tag] = measure(procs, binary, tag.replace(" ", "-"), work, args.settle)
    finally:
        procs.stop_all()
    (work / "edges.json").write_text(json.dumps(results, indent=1))
    names = [tag for tag, _ in builds]
    print(f"register's own RSS, idle {args.settle:g} s after every server registered (MiB; its servers not counted):")
    print()
    print("| edge | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    labels = [
        ("one", "`--stdio`, one sample server (the one-server edge)"),
        ("file1", "`--config`, one stdio entry"),
        ("stdio10", "`--config`, ten stdio entries"),
        ("http10", "`--config`, ten Streamable HTTP entries"),
        ("sse10", "`--config`, ten legacy SSE entries"),
    ]
    for key, label in labels:
        cells = [f"{results[t][key] / MIB:.2f}" for t in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    worst = {t: max(results[t][k] for k in ("stdio10", "http10", "sse10")) / results[t]["one"] for t in names}
    print("| ten servers against one, the worst of the three (target under 2×) | "
          + " | ".join(f"{worst[t]:.2f}×" for t in names) + " |")


if __name__ == "__main__":
    main()
