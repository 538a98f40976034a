"""OUR `mcpport register` relaying today's servers into the ORIGINAL Python gateway 0.1.4, whose
MCP SDK (1.9.4) knows protocol 2025-03-26 at the newest: our sample server, the npm
server-everything and server-filesystem, each answering the version the gateway asked for. The
SDK client connected to the original's /sse lists `{server}_{tool}` tools (after the original's
fixed 5 s delay) and calls one through it.
"""

import json
import shlex
import shutil

import pytest

from conftest import (BIN, EVERYTHING_JS, FILESYSTEM_JS, PEER, client, free_port, need_node_modules,
                      start_register, wait_for_port, wait_for_tools, wire)

pytestmark = pytest.mark.anyio


def node(script, *args):
    need_node_modules()
    return " ".join(["exec", shlex.quote(shutil.which("node")), shlex.quote(str(script)), *map(shlex.quote, args)])


async def relayed_into_original(procs, stdio, tools, call, arguments):
    """Registers `stdio` as `pi` into a fresh original gateway; calls `pi_{call}`; its content."""
    port = free_port()
    procs("original-gateway", [PEER, "gateway", "--host", "127.0.0.1", "--port", str(port)])
    wait_for_port(port)
    start_register(procs, "pi", port, stdio)
    async with client(port) as s:
        # The original lists a new server's tools only after a fixed 5 s sleep.
        listed = await wait_for_tools(s, {f"pi_{t}" for t in tools}, timeout=20)
        r = wire(await s.call_tool(f"pi_{call}", arguments))
        assert not r.get("isError"), (r, listed)
        return r["content"]


async def test_the_sample_server_pinned_to_2025_03_26(procs):
    stdio = f"{shlex.quote(BIN)} sample-server --protocol-version 2025-03-26"
    content = await relayed_into_original(procs, stdio, ["echo", "system_info"], "echo", {"text": "pinned"})
    assert content == [{"type": "text", "text": "pinned"}]


async def test_the_sample_server_as_it_starts(procs):
    stdio = f"{shlex.quote(BIN)} sample-server"
    content = await relayed_into_original(procs, stdio, ["echo", "sleep"], "echo", {"text": "today's"})
    assert content == [{"type": "text", "text": "today's"}]


async def test_server_everything(procs):
    content = await relayed_into_original(procs, node(EVERYTHING_JS, "stdio"), ["echo"], "echo", {"message": "hi"})
    assert "hi" in content[0]["text"], content


async def test_server_filesystem(procs, tmp_path):
    (tmp_path / "note.txt").write_text("from the edge")
    stdio = node(FILESYSTEM_JS, str(tmp_path))
    path = str(tmp_path / "note.txt")
    content = await relayed_into_original(procs, stdio, ["read_text_file"], "read_text_file", {"path": path})
    assert "from the edge" in content[0]["text"], content


async def test_a_config_file_edge_registers_each_server(procs, tmp_path):
    """`register --config` with two servers (the sample server over stdio, server-everything over
    stdio): the original gateway accepts each link's `register` frame (it reads the name and
    ignores which edge and transport our frame adds) and serves both servers' tools."""
    need_node_modules()
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "pi": {"command": BIN, "args": ["sample-server"]},
        "ev": {"command": shutil.which("node"), "args": [str(EVERYTHING_JS), "stdio"]},
    }}))
    port = free_port()
    procs("original-gateway", [PEER, "gateway", "--host", "127.0.0.1", "--port", str(port)])
    wait_for_port(port)
    url = f"ws://127.0.0.1:{port}/mcp/register"
    procs("edge", [BIN, "register", "--config", str(config), "--gateway-url", url])
    async with client(port) as s:
        await wait_for_tools(s, {"pi_echo", "ev_echo"}, timeout=30)
        r = wire(await s.call_tool("pi_echo", {"text": "one of two"}))
        assert r["content"] == [{"type": "text", "text": "one of two"}], r
        r = wire(await s.call_tool("ev_echo", {"message": "two of two"}))
        assert "two of two" in r["content"][0]["text"], r
