"""The official MCP Python SDK 2.3 high-level `Client`, left on its default (`mode="auto"`: it
probes `server/discover` and falls back to `initialize` only for legacy servers), against both
Streamable HTTP endpoints of our gateway, with `mcpport sample-server --test-tools` (a legacy,
initialize-era server) registered as `pi`: it ends up speaking 2026-07-28, lists and calls tools
under the names a legacy client sees, and answers an elicitation the legacy edge asked for, which
the gateway carried as an `input_required` result and resumed with the SDK's retry (MRTR).
"""

import shlex

import pytest

mcp = pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
import mcp_types as types  # noqa: E402

from conftest import BIN, client as legacy_client, start_gateway, start_register, wait_for_tools  # noqa: E402

pytestmark = pytest.mark.anyio

SAMPLE = f"{shlex.quote(BIN)} sample-server --test-tools"


@pytest.fixture(scope="module")
def port(procs):
    port = start_gateway(procs)
    start_register(procs, "pi", port, SAMPLE)
    return port


async def elicit(context, params):
    return types.ElicitResult(action="accept", content={"name": "Ada"})


@pytest.mark.parametrize("path,prefix", [("/mcp", "pi_"), ("/servers/pi/mcp", "")])
async def test_default_client_speaks_2026_07_28_and_answers_a_legacy_elicitation(port, path, prefix):
    async with legacy_client(port) as legacy:  # the legacy view, for comparison
        await wait_for_tools(legacy, {"pi_echo"})
        legacy_names = sorted(t.name for t in (await legacy.list_tools()).tools)
    async with Client(f"http://127.0.0.1:{port}{path}", elicitation_callback=elicit) as c:
        assert c.session.protocol_version == "2026-07-28", c.session.protocol_version
        names = sorted(t.name for t in (await c.list_tools()).tools)
        if prefix:
            assert names == legacy_names, "the same tools under the same names as a legacy client"
        else:
            assert sorted(f"pi_{n}" for n in names) == sorted(n for n in legacy_names if n != "list_servers")
        echoed = await c.call_tool(f"{prefix}echo", {"text": "modern ✓"})
        assert echoed.content[0].text == "modern ✓", echoed
        asked = await c.call_tool(f"{prefix}ask_client", {"method": "elicitation/create"})
        text = asked.content[0].text
        assert "Ada" in text and "accept" in text, text
