"""One `mcpport register --config` fronting four servers at once, each on its own link: the npm
server-everything over stdio, the same server over Streamable HTTP and over legacy SSE (its own
HTTP modes), and a server built with the official Python SDK (guarded_server.py) that refuses a
foreign `Host` and wants a bearer token, which the file takes from the environment, twice: with
sessions and SSE answers, and JSON-only without sessions (as Home Assistant serves). All four
appear at our gateway; their tools are called through the aggregated and the per-server endpoint,
by a 2025 client (legacy SSE, and Streamable HTTP) and a 2026-07-28 one (the SDK's `Client`); a
sampling request from the HTTP upstream reaches the client and its answer comes back.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (BIN, EVERYTHING_JS, client, free_port, http_client, need_node_modules, start_gateway,
                      wait_for_aggregated_tools, wait_for_port, wait_for_tools, wire)

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")]

GUARDED = Path(__file__).with_name("guarded_server.py")
TOKEN = "guard-token-from-the-environment"
SERVERS = ["stdio", "http", "sse", "guarded", "ha"]


@pytest.fixture(scope="module")
def port(procs, tmp_path_factory):
    need_node_modules()
    node = shutil.which("node")
    http_port, sse_port, guarded_port, ha_port = free_port(), free_port(), free_port(), free_port()
    procs("everything-http", ["env", f"PORT={http_port}", node, str(EVERYTHING_JS), "streamableHttp"])
    procs("everything-sse", ["env", f"PORT={sse_port}", node, str(EVERYTHING_JS), "sse"])
    procs("guarded", ["env", f"GUARD_TOKEN={TOKEN}", sys.executable, str(GUARDED), str(guarded_port)])
    procs("ha", ["env", f"GUARD_TOKEN={TOKEN}", sys.executable, str(GUARDED), str(ha_port), "--json"])
    for p in (http_port, sse_port, guarded_port, ha_port):
        wait_for_port(p, timeout=20)
    config = tmp_path_factory.mktemp("edge") / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "stdio": {"command": node, "args": [str(EVERYTHING_JS), "stdio"]},
        "http": {"type": "http", "url": f"http://127.0.0.1:{http_port}/mcp"},
        "sse": {"url": f"http://127.0.0.1:{sse_port}/sse"},
        "guarded": {"url": f"http://127.0.0.1:{guarded_port}/mcp",
                    "headers": {"Authorization": "Bearer ${env:GUARD_TOKEN}"}},
        # Like Home Assistant's /api/mcp: JSON answers only, no session, a bearer token.
        "ha": {"url": f"http://127.0.0.1:{ha_port}/mcp", "headers": {"Authorization": "Bearer ${GUARD_TOKEN}"}},
    }}))
    gw = start_gateway(procs)
    url = f"ws://127.0.0.1:{gw}/mcp/register"
    procs("edge", ["env", f"GUARD_TOKEN={TOKEN}", BIN, "register", "--config", str(config), "--gateway-url", url])
    wait_for_aggregated_tools(gw, {f"{s}_echo" for s in SERVERS}, timeout=40)
    return gw


def echo_args(server, text):
    # server-everything's echo takes `message`; the SDK server's takes `text`.
    return {"text": text} if server in ("guarded", "ha") else {"message": text}


def text_of(result):
    return "\n".join(c["text"] for c in wire(result)["content"] if c["type"] == "text")


async def test_a_2025_client_calls_all_four_over_legacy_sse(port):
    async with client(port) as s:
        await wait_for_tools(s, {f"{server}_echo" for server in SERVERS})
        for server in SERVERS:
            r = await s.call_tool(f"{server}_echo", echo_args(server, f"sse via {server}"))
            assert f"sse via {server}" in text_of(r), (server, wire(r))


@pytest.mark.parametrize("server", SERVERS)
async def test_a_2025_client_calls_each_on_both_endpoints(port, server):
    for path, name in [("/mcp", f"{server}_echo"), (f"/servers/{server}/mcp", "echo")]:
        async with http_client(f"http://127.0.0.1:{port}{path}") as s:
            r = await s.call_tool(name, echo_args(server, f"{path} for {server}"))
            assert f"{path} for {server}" in text_of(r), (path, wire(r))


@pytest.mark.parametrize("server", SERVERS)
async def test_a_2026_client_calls_each_on_both_endpoints(port, server):
    from mcp import Client

    for path, name in [("/mcp", f"{server}_echo"), (f"/servers/{server}/mcp", "echo")]:
        async with Client(f"http://127.0.0.1:{port}{path}") as c:
            r = await c.call_tool(name, echo_args(server, f"modern {path} for {server}"))
            assert f"modern {path} for {server}" in text_of(r), (path, wire(r))


async def test_sampling_from_an_http_upstream_reaches_the_client(port):
    from mcp import types

    asked = []

    async def sampling(context, params):
        asked.append(wire(params))
        text = types.TextContent(type="text", text="sampled through the edge")
        return types.CreateMessageResult(role="assistant", content=text, model="edge-model", stop_reason="endTurn")

    async with http_client(f"http://127.0.0.1:{port}/mcp", sampling_callback=sampling) as s:
        await wait_for_tools(s, {"http_trigger-sampling-request"}, timeout=20)
        r = await s.call_tool("http_trigger-sampling-request", {"prompt": "over HTTP", "maxTokens": 20})
        assert len(asked) == 1 and asked[0]["messages"][0]["content"]["text"].endswith("over HTTP"), asked
        assert "sampled through the edge" in text_of(r) and "edge-model" in text_of(r), wire(r)


def test_the_gateway_says_which_edge_and_transport(port):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=10) as resp:
        servers = {s["name"]: s for s in json.load(resp)["servers"]}
    transports = {name: servers[name]["transport"] for name in SERVERS}
    assert transports == {"stdio": "stdio", "http": "streamable-http", "sse": "sse", "guarded": "streamable-http",
                          "ha": "streamable-http"}
    assert len({servers[name]["edge"] for name in SERVERS}) == 1, servers
