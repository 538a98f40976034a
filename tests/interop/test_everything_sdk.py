"""The official MCP Python SDK client over Streamable HTTP against our gateway, with the npm
`@modelcontextprotocol/server-everything` (stdio mode) behind it, registered by our `mcpport
register` as server `everything`. Every test runs on both views: the aggregated /mcp (tools and
prompts named `everything_<name>`, plus list_servers) and the per-server /servers/everything/mcp
(the server's own names): handshake, lists, calls (text, image, structured), prompts with
arguments, resources (static, through a template, and one a tool call just created), completion,
logging, progress, sampling, elicitation, and resource subscriptions.
"""

import base64

import anyio
import pytest
from mcp import types

from conftest import http_client, start_everything, wait_for_tools, wait_until, wire

# logging/setLevel and resources/(un)subscribe are what 2025-era servers speak; SDK 2.x warns that
# its 2026 revision replaces them.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")]

AGGREGATED, PER_SERVER = "aggregated", "per-server"
PATHS = {AGGREGATED: "/mcp", PER_SERVER: "/servers/everything/mcp"}
# What server-everything 2026.8.31 offers whatever its client declared (at least these).
TOOLS = {
    "echo",
    "get-sum",
    "get-tiny-image",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
}
PROMPTS = {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"}
FEATURES = "demo://resource/static/document/features.md"
TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"
BLOB_TEMPLATE = "demo://resource/dynamic/blob/{resourceId}"

def views():
    """Both views as test parameters."""
    return [pytest.param(AGGREGATED, id=AGGREGATED), pytest.param(PER_SERVER, id=PER_SERVER)]


@pytest.fixture(scope="module")
def port(procs):
    return start_everything(procs)


def url(port, view):
    return f"http://127.0.0.1:{port}{PATHS[view]}"


def name(view, original):
    """The name under which the view exposes one of the server's tools or prompts."""
    return f"everything_{original}" if view == AGGREGATED else original


def text_of(result):
    return "\n".join(c["text"] for c in wire(result)["content"] if c["type"] == "text")


@pytest.mark.parametrize("view", views())
async def test_initialize(port, view):
    async with http_client(url(port, view)) as s:
        r = s.init_result
        assert r["protocolVersion"] == "2025-11-25", r
        caps = r["capabilities"]
        assert {"tools", "prompts", "resources", "logging", "completions"} <= set(caps), r
        assert caps["resources"].get("subscribe") is True, r
        if view == AGGREGATED:
            assert r["serverInfo"]["name"] == "mcpport", r
            assert "[everything]" in r["instructions"], r
        else:
            assert r["serverInfo"]["name"] == "mcp-servers/everything", r
            assert r["instructions"].startswith("# Everything Server"), r


@pytest.mark.parametrize("view", views())
async def test_lists(port, view):
    async with http_client(url(port, view)) as s:
        tools = await wait_for_tools(s, {name(view, t) for t in TOOLS})
        if view == AGGREGATED:
            assert tools[0] == "list_servers", tools
            assert all(t.startswith("everything_") for t in tools[1:]), tools
        else:
            assert "list_servers" not in tools, tools
            assert not any(t.startswith("everything_") for t in tools), tools

        prompts = {p.name: wire(p) for p in (await s.list_prompts()).prompts}
        assert set(prompts) == {name(view, p) for p in PROMPTS}, prompts
        args = prompts[name(view, "args-prompt")]["arguments"]
        assert [(a["name"], a.get("required")) for a in args] == [("city", True), ("state", False)], args

        resources = {r.uri: wire(r) for r in (await s.list_resources()).resources}
        assert resources[FEATURES]["mimeType"] == "text/markdown", resources
        assert all(u.startswith("demo://resource/static/document/") for u in resources), resources

        templates = [t.uri_template for t in (await s.list_resource_templates()).resource_templates]
        assert set(templates) == {TEXT_TEMPLATE, BLOB_TEMPLATE}, templates


@pytest.mark.parametrize("view", views())
async def test_echo(port, view):
    async with http_client(url(port, view)) as s:
        r = wire(await s.call_tool(name(view, "echo"), {"message": "héllo ✓ interop"}))
        assert r["content"] == [{"type": "text", "text": "Echo: héllo ✓ interop"}], r
        assert not r.get("isError"), r


@pytest.mark.parametrize("view", views())
async def test_tool_returns_an_image(port, view):
    async with http_client(url(port, view)) as s:
        r = wire(await s.call_tool(name(view, "get-tiny-image"), {}))
        images = [c for c in r["content"] if c["type"] == "image"]
        assert len(images) == 1 and images[0]["mimeType"] == "image/png", r
        assert base64.b64decode(images[0]["data"]).startswith(b"\x89PNG\r\n\x1a\n"), r
        assert [c["type"] for c in r["content"]] == ["text", "image", "text"], r


@pytest.mark.parametrize("view", views())
async def test_structured_content_and_numbers(port, view):
    async with http_client(url(port, view)) as s:
        await s.list_tools()  # the SDK checks structuredContent against the listed outputSchema
        r = wire(await s.call_tool(name(view, "get-structured-content"), {"location": "Chicago"}))
        weather = {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}
        assert r["structuredContent"] == weather, r
        r = wire(await s.call_tool(name(view, "get-sum"), {"a": 2, "b": 40.5}))
        assert r["content"] == [{"type": "text", "text": "The sum of 2 and 40.5 is 42.5."}], r


@pytest.mark.parametrize("view", views())
async def test_prompt_with_arguments(port, view):
    async with http_client(url(port, view)) as s:
        r = wire(await s.get_prompt(name(view, "args-prompt"), {"city": "Paris", "state": "TX"}))
        assert r["messages"] == [{"role": "user", "content": {"type": "text", "text": "What's weather in Paris, TX?"}}], r


@pytest.mark.parametrize("view", views())
async def test_read_static_resource(port, view):
    async with http_client(url(port, view)) as s:
        r = wire(await s.read_resource(FEATURES))
        [content] = r["contents"]
        assert content["uri"] == FEATURES and content["mimeType"] == "text/markdown", r
        assert content["text"].startswith("# Everything Server - Features"), r


@pytest.mark.parametrize("view", views())
async def test_read_resources_through_templates(port, view):
    async with http_client(url(port, view)) as s:
        r = wire(await s.read_resource("demo://resource/dynamic/text/7"))
        [content] = r["contents"]
        assert content["uri"] == "demo://resource/dynamic/text/7", r
        assert content["text"].startswith("Resource 7: This is a plaintext resource"), r

        r = wire(await s.read_resource("demo://resource/dynamic/blob/8"))
        [content] = r["contents"]
        assert content["uri"] == "demo://resource/dynamic/blob/8", r
        assert base64.b64decode(content["blob"]).startswith(b"Resource 8: This is a base64 blob"), r


@pytest.mark.parametrize("view", views())
async def test_completion(port, view):
    async with http_client(url(port, view)) as s:
        prompt = types.PromptReference(type="ref/prompt", name=name(view, "completable-prompt"))
        r = await s.complete(prompt, {"name": "department", "value": "S"})
        assert r.completion.values == ["Sales", "Support"], wire(r)
        r = await s.complete(prompt, {"name": "name", "value": ""}, context_arguments={"department": "Engineering"})
        assert r.completion.values == ["Alice", "Bob", "Charlie"], wire(r)

        template = types.ResourceTemplateReference(type="ref/resource", uri=TEXT_TEMPLATE)
        r = await s.complete(template, {"name": "resourceId", "value": "3"})
        assert r.completion.values == ["3"], wire(r)


@pytest.mark.parametrize("view", views())
async def test_read_a_resource_the_server_just_created(port, view):
    """gzip-file-as-resource registers demo://resource/session/NAME (announcing
    resources/list_changed first) and returns a resource_link to it; the client reads it at once.
    Thirty rounds: the catalog refresh races the read, and the gateway must win every time."""
    async with http_client(url(port, view)) as s:
        for i in range(30):
            gz = f"{view}-{i}-{anyio.current_time():.6f}.txt"
            r = wire(await s.call_tool(name(view, "gzip-file-as-resource"), {"name": gz, "data": "data:,hello"}))
            [link] = [c for c in r["content"] if c["type"] == "resource_link"]
            assert link["uri"] == f"demo://resource/session/{gz}", r
            try:
                read = wire(await s.read_resource(link["uri"]))
            except Exception as e:
                raise AssertionError(f"round {i}: reading {link['uri']} right after the tool returned it: {e!r}")
            assert read["contents"][0]["mimeType"] == "application/gzip", read


async def toggle(session, tool, want):
    """Calls an on/off toggle tool of the server until it reports `want` ("Started"/"Stopped"):
    the state is the server's, and a test that failed half-way may have left it on."""
    for _ in range(2):
        text = text_of(await session.call_tool(tool, {}))
        if text.startswith(want):
            return text
    raise AssertionError(f"{tool}: never reported {want!r}; last: {text!r}")


@pytest.mark.parametrize("view", views())
async def test_logging(port, view):
    logs = []

    async def on_log(params):
        logs.append(wire(params))

    async with http_client(url(port, view), logging_callback=on_log) as s:
        await s.set_logging_level("debug")
        tool = name(view, "toggle-simulated-logging")
        await toggle(s, tool, "Started")
        try:
            # The server logs once at once, then every 5 s.
            await wait_until(lambda: logs, "a notifications/message after toggle-simulated-logging", timeout=10)
        finally:
            await toggle(s, tool, "Stopped")
        levels = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}
        assert logs[0]["level"] in levels and "message" in logs[0]["data"], logs
        if view == AGGREGATED:  # the gateway names the server in front of the logger
            assert logs[0]["logger"] == "everything", logs


@pytest.mark.parametrize("view", views())
async def test_progress_of_a_long_running_tool(port, view):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, total))

    async with http_client(url(port, view)) as s:
        r = await s.call_tool(
            name(view, "trigger-long-running-operation"), {"duration": 1, "steps": 4}, progress_callback=on_progress
        )
        assert text_of(r).startswith("Long running operation completed. Duration: 1 seconds, Steps: 4."), wire(r)
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)], seen


@pytest.mark.parametrize("view", views())
async def test_sampling(port, view):
    asked = []

    async def sampling(context, params):
        asked.append(wire(params))
        text = types.TextContent(type="text", text="sampled by the interop client ✓")
        return types.CreateMessageResult(role="assistant", content=text, model="interop-model", stop_reason="endTurn")

    async with http_client(url(port, view), sampling_callback=sampling) as s:
        assert s.init_result["protocolVersion"]
        await wait_for_tools(s, {name(view, "trigger-sampling-request")}, timeout=10)
        r = await s.call_tool(name(view, "trigger-sampling-request"), {"prompt": "say hi", "maxTokens": 20})
        assert len(asked) == 1, asked
        assert asked[0]["messages"][0]["content"]["text"].endswith("say hi"), asked
        assert "sampled by the interop client ✓" in text_of(r) and "interop-model" in text_of(r), wire(r)


@pytest.mark.parametrize("view", views())
async def test_elicitation(port, view):
    asked = []

    async def elicitation(context, params):
        asked.append(wire(params))
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True, "integer": 7})

    async with http_client(url(port, view), elicitation_callback=elicitation) as s:
        await wait_for_tools(s, {name(view, "trigger-elicitation-request")}, timeout=10)
        r = await s.call_tool(name(view, "trigger-elicitation-request"), {})
        assert len(asked) == 1 and "requestedSchema" in asked[0], asked
        text = text_of(r)
        assert "User provided the requested information" in text, wire(r)
        assert "- Name: Ada Lovelace" in text and "- Favorite Integer: 7" in text, wire(r)


@pytest.mark.parametrize("view", views())
async def test_subscribe_and_resource_updated(port, view):
    seen = []

    def updates():
        return [n for n in seen if n["method"] == "notifications/resources/updated"]

    async with http_client(url(port, view), notifications=seen) as s:
        await s.subscribe_resource(FEATURES)
        tool = name(view, "toggle-subscriber-updates")
        await toggle(s, tool, "Started")
        try:
            # The server notifies its subscribed URIs at once, then every 5 s.
            with anyio.move_on_after(5):
                while not updates():
                    await anyio.sleep(0.05)
        finally:
            await toggle(s, tool, "Stopped")
            await s.unsubscribe_resource(FEATURES)
        assert updates(), f"no notifications/resources/updated within 5 s; notifications seen: {seen}"
        assert updates()[0]["params"]["uri"] == FEATURES, seen
