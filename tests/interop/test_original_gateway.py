"""OUR `mcpport register` relaying our sample server (pinned to protocol 2025-03-26, which the
original knows) into the ORIGINAL Python gateway 0.1.4: the SDK client connected to its /sse lists
`{server}_{tool}` tools (after the original's fixed 5 s delay) and calls echo through it.
"""

import shlex

import pytest

from conftest import BIN, PEER, client, free_port, start_register, wait_for_port, wait_for_tools, wire

pytestmark = pytest.mark.anyio


async def test_our_register_into_original_gateway(procs):
    port = free_port()
    procs("original-gateway", [PEER, "gateway", "--host", "127.0.0.1", "--port", str(port)])
    wait_for_port(port)
    start_register(procs, "pi", port, f"{shlex.quote(BIN)} sample-server --protocol-version 2025-03-26")
    async with client(port) as s:
        # The original lists a new server's tools only after a fixed 5 s sleep.
        tools = await wait_for_tools(s, {"pi_echo", "pi_system_info", "pi_sleep"}, timeout=20)
        r = wire(await s.call_tool("pi_echo", {"text": "into the original gateway"}))
        assert r["content"] == [{"type": "text", "text": "into the original gateway"}], (r, tools)
        assert not r.get("isError"), r
