"""OUR `mcpport register` relaying today's servers into the ORIGINAL Python gateway 0.1.4, whose
MCP SDK (1.9.4) knows protocol 2025-03-26 at the newest: our sample server, the npm
server-everything and server-filesystem, each answering the version the gateway asked for. The
SDK client connected to the original's /sse lists `{server}_{tool}` tools (after the original's
fixed 5 s delay) and calls one through it.
"""

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
