"""The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk`, Client over
StreamableHTTPClientTransport, in ts_client.mjs run by node) against our gateway, with the npm
server-everything registered as `everything`, on the aggregated /mcp and on
/servers/everything/mcp: initialize, tools/list, tools/call echo, prompts/list and prompts/get,
resources/read (static and through a template), and DELETE of the session at the end.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import NODE_MODULES, start_everything

SCRIPT = Path(__file__).with_name("ts_client.mjs")
VIEWS = {"aggregated": ("/mcp", "everything_"), "per-server": ("/servers/everything/mcp", "")}


@pytest.fixture(scope="module")
def port(procs):
    return start_everything(procs)


def run_client(url, prefix):
    env = dict(os.environ, MCPPORT_NODE_MODULES=str(NODE_MODULES))
    argv = [shutil.which("node"), str(SCRIPT), url, prefix]
    # The script stops itself after 30 s; this is the backstop.
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    report = f"exit status {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stdout.strip(), report
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and "error" not in out, report
    return out


@pytest.mark.parametrize("view", VIEWS)
def test_typescript_sdk_client(port, view):
    path, prefix = VIEWS[view]
    out = run_client(f"http://127.0.0.1:{port}{path}", prefix)

    assert out["protocolVersion"] == "2025-11-25", out
    assert len(out["sessionId"]) == 32, out
    caps = out["serverCapabilities"]
    assert {"tools", "prompts", "resources"} <= set(caps), out
    expected_server = "mcpport" if view == "aggregated" else "mcp-servers/everything"
    assert out["serverVersion"]["name"] == expected_server, out

    tools = out["tools"]
    assert {f"{prefix}echo", f"{prefix}get-tiny-image", f"{prefix}trigger-long-running-operation"} <= set(tools), tools
    assert ("list_servers" in tools) == (view == "aggregated"), tools
    assert all(t == "list_servers" or t.startswith(prefix) for t in tools), tools

    assert out["echo"]["content"] == [{"type": "text", "text": "Echo: from TypeScript ✓"}], out["echo"]
    assert not out["echo"].get("isError"), out["echo"]

    prompts = out["prompts"]
    names = ["simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"]
    assert set(prompts) == {prefix + p for p in names}, prompts
    assert out["prompt"]["messages"] == [
        {"role": "user", "content": {"type": "text", "text": "What's weather in Lyon, Rhône?"}}
    ], out["prompt"]

    [static] = out["staticResource"]["contents"]
    assert static["uri"] == "demo://resource/static/document/features.md", static
    assert static["mimeType"] == "text/markdown" and static["text"].startswith("# Everything Server - Features"), static
    [dynamic] = out["templatedResource"]["contents"]
    assert dynamic["uri"] == "demo://resource/dynamic/text/42", dynamic
    assert dynamic["text"].startswith("Resource 42: This is a plaintext resource"), dynamic

    assert out["terminated"] is True, out
