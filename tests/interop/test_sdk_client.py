"""The official MCP Python SDK client against our gateway, with our `mcpport register` relaying
`mcpport sample-server --test-tools` as server `pi`: handshake, tool listing, calls (text,
structured, image/audio, tool error), list_servers, ping, unknown tool, and tools/list_changed
when another server registers and leaves.
"""

import shlex

import pytest

from conftest import BIN, client, start_gateway, start_register, wait_for_tools, wait_until, wire

pytestmark = pytest.mark.anyio

SAMPLE = f"{shlex.quote(BIN)} sample-server --test-tools"
# At least these; the sample server may grow more test tools.
PI_TOOLS = {"pi_echo", "pi_system_info", "pi_sleep", "pi_fail", "pi_image", "pi_add_tool"}
# What sample_server.rs returns from `image`.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="


@pytest.fixture(scope="module")
def port(procs):
    port = start_gateway(procs)
    start_register(procs, "pi", port, SAMPLE)
    return port


async def test_initialize_and_list_tools(port):
    async with client(port) as s:
        assert s.init_result["capabilities"]["tools"]["listChanged"] is True, s.init_result
        tools = await wait_for_tools(s, PI_TOOLS)
        assert tools[0] == "list_servers", tools
        assert all(t.startswith("pi_") for t in tools[1:]), tools


async def test_echo(port):
    async with client(port) as s:
        await wait_for_tools(s, PI_TOOLS)
        r = wire(await s.call_tool("pi_echo", {"text": "héllo ✓ interop"}))
        assert r["content"] == [{"type": "text", "text": "héllo ✓ interop"}], r
        assert not r.get("isError"), r


async def test_system_info_is_structured(port):
    async with client(port) as s:
        await wait_for_tools(s, PI_TOOLS)
        r = wire(await s.call_tool("pi_system_info", {}))
        assert isinstance(r["structuredContent"]["uptime_seconds"], (int, float)), r
        assert r["content"][0]["type"] == "text", r


async def test_image_and_audio_pass_untouched(port):
    async with client(port) as s:
        await wait_for_tools(s, PI_TOOLS)
        r = wire(await s.call_tool("pi_image", {}))
        assert r["content"] == [
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "audio", "data": WAV, "mimeType": "audio/wav"},
        ], r


async def test_tool_error_keeps_is_error(port):
    async with client(port) as s:
        await wait_for_tools(s, PI_TOOLS)
        r = wire(await s.call_tool("pi_fail", {"message": "boom"}))
        assert r["isError"] is True, r
        assert r["content"] == [{"type": "text", "text": "boom"}], r


async def test_list_servers(port):
    async with client(port) as s:
        tools = await wait_for_tools(s, PI_TOOLS)
        r = wire(await s.call_tool("list_servers", {}))
        servers = r["structuredContent"]["servers"]
        assert [x["name"] for x in servers] == ["pi"], r
        assert servers[0]["ready"] is True and servers[0]["tools"] == tools[1:], (r, tools)


async def test_ping(port):
    async with client(port) as s:
        await s.send_ping()


async def test_unknown_tool_is_an_error(port):
    async with client(port) as s:
        await wait_for_tools(s, PI_TOOLS)
        with pytest.raises(Exception) as e:
            await s.call_tool("pi_no_such_tool", {})
        assert e.value.error.code == -32602, repr(e.value)
        assert "pi_no_such_tool" in e.value.error.message, repr(e.value)


async def test_list_changed_when_a_server_registers_and_leaves(port, procs):
    seen = []

    def changed():
        return sum(n["method"] == "notifications/tools/list_changed" for n in seen)

    async with client(port, notifications=seen) as s:
        await wait_for_tools(s, PI_TOOLS)
        before = changed()
        second = start_register(procs, "pi2", port, SAMPLE)
        await wait_until(lambda: changed() > before, "tools/list_changed after pi2 registered")
        await wait_for_tools(s, PI_TOOLS | {"pi2_echo"})
        r = wire(await s.call_tool("pi2_echo", {"text": "from pi2"}))
        assert r["content"] == [{"type": "text", "text": "from pi2"}], r

        before = changed()
        second.stop()
        await wait_until(lambda: changed() > before, "tools/list_changed after pi2 left")
        assert not any(t.name.startswith("pi2_") for t in (await s.list_tools()).tools)
