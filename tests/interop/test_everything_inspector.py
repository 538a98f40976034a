"""The MCP Inspector's command line (`@modelcontextprotocol/inspector` --cli, the npm package's
`mcp-inspector` bin, which is what `npx @modelcontextprotocol/inspector` runs) against our
gateway with the npm server-everything registered as `everything`: tools/list and tools/call
over Streamable HTTP (--transport http) on /mcp and /servers/everything/mcp, and over legacy SSE
(--transport sse) on /sse and /servers/everything/sse.
"""

import json
import os
import subprocess

import pytest

from conftest import NODE_MODULES, start_everything

INSPECTOR = NODE_MODULES / ".bin/mcp-inspector"
ENDPOINTS = {
    "mcp-aggregated": ("/mcp", "http", "everything_"),
    "mcp-per-server": ("/servers/everything/mcp", "http", ""),
    "sse-aggregated": ("/sse", "sse", "everything_"),
    "sse-per-server": ("/servers/everything/sse", "sse", ""),
}


@pytest.fixture(scope="module")
def port(procs):
    return start_everything(procs)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A HOME of its own: the inspector keeps a catalog and storage under ~/.mcp-inspector."""
    return tmp_path_factory.mktemp("inspector-home")


def inspector(home, port, endpoint, *args):
    """Runs `mcp-inspector --cli URL --transport T ARGS...`; returns its JSON output."""
    path, transport, _ = ENDPOINTS[endpoint]
    argv = [str(INSPECTOR), "--cli", f"http://127.0.0.1:{port}{path}", "--transport", transport, *args]
    env = dict(os.environ, HOME=str(home), MCP_CATALOG_PATH=str(home / "catalog.json"), NO_COLOR="1")
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    report = f"{argv[1:]}: exit status {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode == 0, report
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"output is not JSON; {report}") from None


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tools_list(home, port, endpoint):
    prefix = ENDPOINTS[endpoint][2]
    tools = [t["name"] for t in inspector(home, port, endpoint, "--method", "tools/list")["tools"]]
    assert {f"{prefix}echo", f"{prefix}get-sum", f"{prefix}get-tiny-image"} <= set(tools), tools
    if prefix:
        assert tools[0] == "list_servers" and all(t.startswith(prefix) for t in tools[1:]), tools
    else:
        assert "list_servers" not in tools and not any(t.startswith("everything_") for t in tools), tools


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tools_call(home, port, endpoint):
    prefix = ENDPOINTS[endpoint][2]
    args = ["--method", "tools/call", "--tool-name", f"{prefix}echo", "--tool-arg", f"message=via {endpoint}"]
    r = inspector(home, port, endpoint, *args)
    assert r["content"] == [{"type": "text", "text": f"Echo: via {endpoint}"}], r
    # Numbers given as key=value reach the server as numbers.
    args = ["--method", "tools/call", "--tool-name", f"{prefix}get-sum", "--tool-arg", "a=2", "b=3"]
    r = inspector(home, port, endpoint, *args)
    assert r["content"] == [{"type": "text", "text": "The sum of 2 and 3 is 5."}], r
