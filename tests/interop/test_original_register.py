"""The original Python `mcpport register` 0.1.4 relaying our `mcpport sample-server` into OUR
gateway: the SDK client sees the tools prefixed with the server name and can call echo through it.
"""

import shlex

import pytest

from conftest import BIN, PEER, client, start_gateway, start_register, wait_for_tools, wire

pytestmark = pytest.mark.anyio


async def test_original_register_into_our_gateway(procs):
    port = start_gateway(procs)
    start_register(procs, "edge", port, f"{shlex.quote(BIN)} sample-server", mcpport=PEER)
    async with client(port) as s:
        tools = await wait_for_tools(s, {"edge_echo", "edge_system_info", "edge_sleep"}, timeout=20)
        assert all(t.startswith("edge_") for t in tools[1:]), tools
        r = wire(await s.call_tool("edge_echo", {"text": "via the original register"}))
        assert r["content"] == [{"type": "text", "text": "via the original register"}], r
        assert not r.get("isError"), r
