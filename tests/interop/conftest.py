"""Shared helpers for the interop tests: start mcpport processes (ours and the original Python one)
on 127.0.0.1, each with a log file and a watchdog, always stopped by PID at the end; connect the
official MCP Python SDK client over legacy SSE or Streamable HTTP; start a gateway with the npm
`@modelcontextprotocol/server-everything` registered over stdio. Logs of the live processes are
attached to failures.
"""

import atexit
import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MCPPORT_BIN", str(REPO / "target/release/mcpport"))
PEER = os.environ.get("MCPPORT_PEER", str(REPO / ".venv-interop/peer/bin/mcpport"))
WATCHDOG_S = 120  # no process outlives this, whatever happens to the test
# npm packages from tests/interop/package.json (scripts/interop.sh installs them with npm ci).
NODE_MODULES = Path(os.environ.get("MCPPORT_NODE_MODULES", str(REPO / ".venv-interop/node/node_modules")))
EVERYTHING_JS = NODE_MODULES / "@modelcontextprotocol/server-everything/dist/index.js"
FILESYSTEM_JS = NODE_MODULES / "@modelcontextprotocol/server-filesystem/dist/index.js"
CLIENT_S = 40  # no client session outlives this

_serial = itertools.count(1)  # makes log names unique
_live = []  # processes not yet stopped: for failure reports, and stopped at exit whatever happens
atexit.register(lambda: [proc.stop() for proc in list(_live)])


class Proc:
    """A child process with stdout and stderr in a log file, killed by the watchdog at the latest."""

    def __init__(self, name, argv, logdir):
        self.name, self.log = name, logdir / f"{next(_serial)}-{name}.log"
        self._out = open(self.log, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT)
        self._watchdog = threading.Timer(WATCHDOG_S, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        _live.append(self)

    def text(self):
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern, timeout=10):
        """Waits for `pattern` in the log; returns the match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text()):
                return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no {pattern!r} in its log within {timeout}s (exit status {self.p.poll()})")

    def stop(self):
        self._watchdog.cancel()
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._out.close()
        with contextlib.suppress(ValueError):  # the watchdog and the test may both stop it
            _live.remove(self)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if rep.failed:
        for proc in list(_live):
            rep.sections.append((f"log of {proc.name} (pid {proc.p.pid})", proc.text()))


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    """Starts processes for a test module: `procs(name, argv)`; stops them all at its end."""
    logdir, started = tmp_path_factory.mktemp("logs"), []

    def start(name, argv):
        started.append(Proc(name, argv, logdir))
        return started[-1]

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def anyio_backend():
    return "asyncio"


def start_gateway(procs):
    """Starts our gateway on a free port of 127.0.0.1; returns the port."""
    gw = procs("gateway", [BIN, "gateway", "--host", "127.0.0.1", "--port", "0"])
    return int(gw.wait_for(r"listening on http://127\.0\.0\.1:(\d+)")[1])


def start_register(procs, name, port, stdio, mcpport=BIN):
    """Registers the stdio server `stdio` under `name` with the gateway on `port`."""
    url = f"ws://127.0.0.1:{port}/mcp/register"
    return procs(f"register-{name}", [mcpport, "register", "--stdio", stdio, "--gateway-url", url, "--server-name", name])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing accepts connections on 127.0.0.1:{port} after {timeout}s")


def wire(model):
    """A result as it was on the wire (camelCase JSON), whatever the SDK version calls its fields."""
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


@asynccontextmanager
async def _session(transport, notifications, **callbacks):
    """An initialized ClientSession over `transport` (an SDK transport context manager), with the
    initialize result (wire form) as `.init_result`; server notifications (wire form) go to
    `notifications` if given; `callbacks` go to the ClientSession."""

    async def on_message(msg):
        msg = getattr(msg, "root", msg)
        if notifications is not None and hasattr(msg, "method"):
            notifications.append(wire(msg))

    try:
        with anyio.fail_after(CLIENT_S):
            async with transport as streams:
                r, w = streams[0], streams[1]
                async with ClientSession(r, w, message_handler=on_message, **callbacks) as session:
                    session.init_result = wire(await session.initialize())
                    yield session
    except Exception as e:  # report the error itself, not the task groups around it
        while len(getattr(e, "exceptions", ())) == 1:
            e = e.exceptions[0]
        raise e from None


@asynccontextmanager
async def client(port, notifications=None):
    """An initialized SDK ClientSession on http://127.0.0.1:PORT/sse (see `_session`)."""
    transport = sse_client(f"http://127.0.0.1:{port}/sse", timeout=5, sse_read_timeout=CLIENT_S)
    async with _session(transport, notifications) as session:
        yield session


async def wait_for_tools(session, names, timeout=10):
    """Lists tools until all of `names` are there; returns the list of tool names."""
    tools = []
    with anyio.move_on_after(timeout):
        while True:
            tools = [t.name for t in (await session.list_tools()).tools]
            if set(names) <= set(tools):
                return tools
            await anyio.sleep(0.2)
    raise AssertionError(f"tools {sorted(names)} not all listed after {timeout}s; last list: {tools}")


async def wait_until(predicate, what, timeout=10):
    with anyio.move_on_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"{what}: not within {timeout}s")


# ---- Streamable HTTP, and the npm server-everything behind the gateway ----


@asynccontextmanager
async def http_client(url, notifications=None, **callbacks):
    """An initialized SDK ClientSession over Streamable HTTP at `url` (see `_session`);
    `callbacks` (sampling_callback, elicitation_callback, logging_callback, ...) go to the
    ClientSession. Leaving it ends the session with DELETE, as the SDK does."""
    from mcp.client.streamable_http import streamable_http_client

    async with _session(streamable_http_client(url), notifications, **callbacks) as session:
        yield session


def need_node_modules():
    """Skips when the npm packages are not installed (pytest run by hand); scripts/interop.sh
    installs them and sets MCPPORT_NODE_MODULES, and then their absence is an error."""
    if EVERYTHING_JS.exists() and shutil.which("node"):
        return
    if "MCPPORT_NODE_MODULES" in os.environ:
        raise AssertionError(f"no {EVERYTHING_JS} (or no node on PATH): npm ci did not install it")
    pytest.skip("npm packages not installed: run scripts/interop.sh (npm ci into .venv-interop/node)")


def rpc(url, message, session_id=None, timeout=10):
    """One raw Streamable HTTP POST with a JSON answer: (status, Mcp-Session-Id, body as JSON)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    req = urllib.request.Request(url, data=json.dumps(message).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
        return resp.status, resp.headers.get("Mcp-Session-Id"), json.loads(body) if body else None


def wait_for_aggregated_tools(port, names, timeout=20):
    """Lists the aggregated tools (raw HTTP, one session) until all of `names` are there."""
    url = f"http://127.0.0.1:{port}/mcp"
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "readiness", "version": "0"}}
    _, sid, _ = rpc(url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
    rpc(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    deadline, tools = time.monotonic() + timeout, []
    try:
        while time.monotonic() < deadline:
            _, _, body = rpc(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)
            tools = [t["name"] for t in body["result"]["tools"]]
            if set(names) <= set(tools):
                return tools
            time.sleep(0.1)
    finally:
        req = urllib.request.Request(url, headers={"Mcp-Session-Id": sid}, method="DELETE")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=5).close()
    raise AssertionError(f"tools {sorted(names)} not all listed after {timeout}s; last list: {tools}")


def start_everything(procs):
    """Starts our gateway on a free port of 127.0.0.1 and registers the npm server-everything
    (stdio mode) with our `mcpport register` as server `everything`; returns the port once its
    tools are in the aggregated list."""
    need_node_modules()
    port = start_gateway(procs)
    stdio = f"exec {shlex.quote(shutil.which('node'))} {shlex.quote(str(EVERYTHING_JS))} stdio"
    start_register(procs, "everything", port, stdio)
    wait_for_aggregated_tools(port, {"everything_echo"})
    return port
