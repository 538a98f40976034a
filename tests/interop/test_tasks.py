"""Long-running tools through the gateway: the tasks extension (io.modelcontextprotocol/tasks,
SEP-2663) end to end, with real processes: our gateway with two client tokens, and the
conformance fixture in its 2026-07-28 era (`tests/conformance/fixture_server.py --modern`, the
official Python SDK with `tasks_layer.py` in front) registered as `t` through `mcpport register`.

Raw 2026-07-28 HTTP requests (`_meta`, the standard headers) on both endpoints: a task created,
polled to its result and cancelled; another client's look-ups, updates and cancels refused as for
an unknown task; a client that did not declare the extension (-32021); a legacy session (served
ordinary calls); the bounds per client; `--task-ttl`; and an edge that disconnects mid-task (its
client learns the task failed).
"""

import json
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, REPO

EXT = "io.modelcontextprotocol/tasks"
FIXTURE = REPO / "tests/conformance/fixture_server.py"
TOKENS = {"A": "token-alice", "B": "token-bob"}
EDGE_TOKEN = "token-edge"


def start(procs, *flags):
    """A gateway with two client tokens and `flags`, and the fixture registered as `t`; the port
    and the register process."""
    argv = [BIN, "gateway", "--host", "127.0.0.1", "--port", "0", "--register-token", EDGE_TOKEN]
    for token in TOKENS.values():
        argv += ["--auth-token", token]
    gw = procs("gateway", argv + list(flags))
    port = int(gw.wait_for(r"listening on http://127\.0\.0\.1:(\d+)")[1])
    edge = register(procs, port)
    return port, edge, gw


def register(procs, port):
    stdio = f"exec {sys.executable} {FIXTURE} --modern"
    url = f"ws://127.0.0.1:{port}/mcp/register"
    header = f"Authorization: Bearer {EDGE_TOKEN}"
    edge = procs("register-t", [BIN, "register", "--stdio", stdio, "--gateway-url", url, "--server-name", "t", "--header", header])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = call(port, "/servers/t/mcp", "A", "tools/list", {})
        if status == 200 and any(t["name"] == "slow_compute" for t in (body.get("result") or {}).get("tools", [])):
            return edge
        time.sleep(0.2)
    raise AssertionError("the fixture did not register with its task tools")


def call(port, path, who, method, params, declares=True, headers=None):
    """One 2026-07-28 request as client `who`: (HTTP status, the JSON-RPC answer)."""
    capabilities = {"elicitation": {}, "extensions": {EXT: {}}} if declares else {}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": capabilities}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    sent = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
        "Authorization": f"Bearer {TOKENS[who]}",
    }
    name = params.get("taskId") if method.startswith("tasks/") else params.get("name")
    if name is not None:
        sent["Mcp-Name"] = name
    sent.update(headers or {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), sent, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, answer_of(resp.headers.get("Content-Type", ""), resp.read())
    except urllib.error.HTTPError as e:
        return e.code, answer_of(e.headers.get("Content-Type", ""), e.read())


def answer_of(content_type, raw):
    """The JSON-RPC answer in a JSON body or an event stream."""
    if "text/event-stream" not in content_type:
        return json.loads(raw) if raw else None
    messages = [json.loads(line[5:]) for line in raw.decode().splitlines() if line.startswith("data:") and line[5:].strip()]
    return next(m for m in reversed(messages) if "id" in m)


def tool(path, name):
    return name if path.startswith("/servers/") else f"t_{name}"


def poll(port, path, who, task_id, until=("completed", "failed", "cancelled"), timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, got = call(port, path, who, "tasks/get", {"taskId": task_id})
        assert status == 200, got
        if got["result"]["status"] in until:
            return got["result"]
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} not {until} within {timeout}s: {got}")


@pytest.fixture(scope="module")
def gateway(procs):
    port, _, gw = start(procs, "--max-tasks-per-client", "2")
    return port, gw


PATHS = ["/servers/t/mcp", "/mcp"]


@pytest.mark.parametrize("path", PATHS)
def test_a_task_is_created_polled_and_ends_with_its_result(gateway, path):
    port, gw = gateway
    status, created = call(port, path, "A", "tools/call", {"name": tool(path, "slow_compute"), "arguments": {"seconds": 0.5, "label": "x"}})
    assert status == 200, created
    result = created["result"]
    assert result["resultType"] == "task" and result["status"] == "working"
    assert result["taskId"].startswith("mcpport."), "the gateway's id, not the edge's"
    assert 0 < result["ttlMs"] <= 3_600_000
    done = poll(port, path, "A", result["taskId"])
    assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "computed x"
    assert done["taskId"] == result["taskId"]
    # A tool error is a completed task with isError; a protocol error a failed one.
    _, failing = call(port, path, "A", "tools/call", {"name": tool(path, "failing_job")})
    assert poll(port, path, "A", failing["result"]["taskId"])["result"]["isError"] is True
    _, broken = call(port, path, "A", "tools/call", {"name": tool(path, "protocol_error_job")})
    failed = poll(port, path, "A", broken["result"]["taskId"])
    assert failed["status"] == "failed" and isinstance(failed["error"]["code"], int)
    assert "task" in gw.text()


@pytest.mark.parametrize("path", PATHS)
def test_another_client_cannot_read_update_or_cancel_a_task(gateway, path):
    port, _ = gateway
    _, created = call(port, path, "A", "tools/call", {"name": tool(path, "confirm_delete"), "arguments": {"filename": "f"}})
    task_id = created["result"]["taskId"]
    waiting = poll(port, path, "A", task_id, until=("input_required",))
    key = next(iter(waiting["inputRequests"]))
    for method, params in [
        ("tasks/get", {"taskId": task_id}),
        ("tasks/update", {"taskId": task_id, "inputResponses": {key: {"action": "accept", "content": {"confirm": True}}}}),
        ("tasks/cancel", {"taskId": task_id}),
    ]:
        status, refused = call(port, path, "B", method, params)
        assert refused["error"]["code"] == -32602, (method, status, refused)
        assert "unknown task" in refused["error"]["message"]
    # Untouched by B: still waiting on A's answer, which completes it.
    assert poll(port, path, "A", task_id, until=("input_required",))["status"] == "input_required"
    answer = {key: {"action": "accept", "content": {"confirm": True}}}
    _, ack = call(port, path, "A", "tasks/update", {"taskId": task_id, "inputResponses": answer})
    assert ack["result"]["resultType"] == "complete" and "taskId" not in ack["result"]
    assert poll(port, path, "A", task_id)["result"]["content"][0]["text"] == "deleted f"
    # And A cancels its own.
    _, slow = call(port, path, "A", "tools/call", {"name": tool(path, "slow_compute"), "arguments": {"seconds": 60}})
    slow_id = slow["result"]["taskId"]
    status, refused = call(port, path, "B", "tasks/cancel", {"taskId": slow_id})
    assert refused["error"]["code"] == -32602
    _, ack = call(port, path, "A", "tasks/cancel", {"taskId": slow_id})
    assert ack["result"]["resultType"] == "complete"
    assert poll(port, path, "A", slow_id)["status"] == "cancelled"


def test_a_task_id_leads_only_to_its_own_server_endpoint(gateway):
    port, _ = gateway
    _, created = call(port, "/mcp", "A", "tools/call", {"name": "t_slow_compute", "arguments": {"seconds": 0}})
    task_id = created["result"]["taskId"]
    assert poll(port, "/servers/t/mcp", "A", task_id)["status"] == "completed", "the same server's endpoint"
    status, wrong = call(port, "/mcp", "A", "tasks/get", {"taskId": task_id}, headers={"Mcp-Name": "another"})
    assert (status, wrong["error"]["code"]) == (400, -32020), "Mcp-Name must be the task id"


@pytest.mark.parametrize("path", PATHS)
def test_a_client_without_the_extension_runs_ordinary_calls(gateway, path):
    port, _ = gateway
    status, gated = call(port, path, "A", "tasks/get", {"taskId": "mcpport.1.1.1.00"}, declares=False)
    assert (status, gated["error"]["code"]) == (400, -32021)
    assert EXT in gated["error"]["data"]["requiredCapabilities"]["extensions"]
    _, plain = call(port, path, "A", "tools/call", {"name": tool(path, "slow_compute"), "arguments": {"seconds": 0.2, "label": "sync"}}, declares=False)
    assert plain["result"]["resultType"] == "complete" and plain["result"]["content"][0]["text"] == "computed sync"
    status, required = call(port, path, "A", "tools/call", {"name": tool(path, "failing_job")}, declares=False)
    assert required["error"]["code"] == -32021, "the server's own answer for a tool that needs a task"
    # The extension is offered on both endpoints' discovery.
    _, discovered = call(port, path, "A", "server/discover", {})
    assert EXT in discovered["result"]["capabilities"]["extensions"]


def test_a_legacy_session_is_served_ordinary_calls(gateway):
    port, _ = gateway
    url = f"http://127.0.0.1:{port}/servers/t/mcp"
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Authorization": f"Bearer {TOKENS['A']}"}

    def post(message, sid=None):
        h = dict(headers, **({"Mcp-Session-Id": sid} if sid else {}))
        req = urllib.request.Request(url, json.dumps(message).encode(), h, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.headers.get("Mcp-Session-Id"), answer_of(resp.headers.get("Content-Type", ""), resp.read())

    init = {"protocolVersion": "2025-11-25", "capabilities": {"tasks": {}, "extensions": {EXT: {}}}, "clientInfo": {"name": "legacy", "version": "1"}}
    sid, hello = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
    capabilities = hello["result"]["capabilities"]
    assert "tasks" not in capabilities and EXT not in capabilities["extensions"], capabilities
    assert "io.modelcontextprotocol/skills" in capabilities["extensions"], "other extensions stay"
    post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    params = {"name": "slow_compute", "arguments": {"seconds": 0.2, "label": "legacy"}, "task": {"ttl": 60000}}
    _, got = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}, sid)
    assert got["result"]["content"][0]["text"] == "computed legacy", "an ordinary call, not a task"
    for i, method in enumerate(["tasks/get", "tasks/list", "tasks/result", "notifications/cancelled"]):
        _, refused = post({"jsonrpc": "2.0", "id": 3 + i, "method": method, "params": {"taskId": "x"}}, sid)
        assert refused["error"]["code"] == -32601, (method, refused)
        assert refused["error"]["message"] == f"method not found: {method}", "the gateway's answer, not the edge's"


def test_past_its_bound_a_client_gets_ordinary_calls_and_others_still_tasks(gateway):
    port, _ = gateway
    path = "/servers/t/mcp"
    held = []
    for _ in range(2):
        _, created = call(port, path, "B", "tools/call", {"name": "slow_compute", "arguments": {"seconds": 60}})
        held.append(created["result"]["taskId"])
    _, third = call(port, path, "B", "tools/call", {"name": "slow_compute", "arguments": {"seconds": 0.1, "label": "over"}})
    assert third["result"]["resultType"] == "complete", f"past --max-tasks-per-client 2: {third}"
    _, other = call(port, path, "A", "tools/call", {"name": "slow_compute", "arguments": {"seconds": 60}})
    assert other["result"]["resultType"] == "task"
    for task_id in held + [other["result"]["taskId"]]:
        call(port, path, "A" if task_id == other["result"]["taskId"] else "B", "tasks/cancel", {"taskId": task_id})


def test_an_extension_the_gateway_does_not_know_passes_through_a_server_endpoint(gateway):
    port, _ = gateway
    _, discovered = call(port, "/servers/t/mcp", "A", "server/discover", {})
    assert discovered["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/skills"] == {"directoryRead": False}
    status, skills = call(port, "/servers/t/mcp", "A", "skills/list", {})
    assert status == 200 and skills["result"]["skills"] == [{"name": "hello", "uri": "skill://hello/SKILL.md"}], skills
    # The aggregated view offers only what it can route.
    _, aggregated = call(port, "/mcp", "A", "server/discover", {})
    assert "io.modelcontextprotocol/skills" not in aggregated["result"]["capabilities"]["extensions"]
    status, refused = call(port, "/mcp", "A", "skills/list", {})
    assert (status, refused["error"]["code"]) == (404, -32601)


def test_a_modern_clients_call_to_an_edge_without_tasks_is_an_ordinary_call(procs):
    port, _, _ = start(procs)
    stdio = f"exec {BIN} sample-server"
    url = f"ws://127.0.0.1:{port}/mcp/register"
    procs("register-pi", [BIN, "register", "--stdio", stdio, "--gateway-url", url, "--server-name", "pi", "--header", f"Authorization: Bearer {EDGE_TOKEN}"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, listed = call(port, "/servers/pi/mcp", "A", "tools/list", {})
        if "result" in listed:
            break
        time.sleep(0.2)
    _, discovered = call(port, "/servers/pi/mcp", "A", "server/discover", {})
    assert EXT not in discovered["result"]["capabilities"].get("extensions", {}), "a legacy edge offers no tasks"
    _, slept = call(port, "/servers/pi/mcp", "A", "tools/call", {"name": "sleep", "arguments": {"seconds": 1}})
    assert slept["result"]["resultType"] == "complete" and "taskId" not in slept["result"], slept
    _, slept = call(port, "/mcp", "A", "tools/call", {"name": "pi_sleep", "arguments": {"seconds": 0}})
    assert slept["result"]["resultType"] == "complete", slept


def test_a_task_past_its_life_is_forgotten(procs):
    port, _, _ = start(procs, "--task-ttl", "1")
    _, created = call(port, "/servers/t/mcp", "A", "tools/call", {"name": "slow_compute", "arguments": {"seconds": 60}})
    assert created["result"]["ttlMs"] == 1000
    time.sleep(1.5)
    _, gone = call(port, "/servers/t/mcp", "A", "tasks/get", {"taskId": created["result"]["taskId"]})
    assert gone["error"]["code"] == -32602


def test_a_task_whose_edge_disconnects_has_failed(procs):
    port, edge, _ = start(procs)
    _, created = call(port, "/mcp", "A", "tools/call", {"name": "t_slow_compute", "arguments": {"seconds": 60}})
    task_id = created["result"]["taskId"]
    _, own = call(port, "/servers/t/mcp", "A", "tools/call", {"name": "slow_compute", "arguments": {"seconds": 60}})
    own_id = own["result"]["taskId"]
    assert poll(port, "/mcp", "A", task_id, until=("working",))["status"] == "working"
    edge.stop()
    failed = poll(port, "/mcp", "A", task_id, until=("failed",))
    assert "outcome is unknown" in failed["error"]["message"], failed
    # On the server's own endpoint too, while the server is away.
    assert poll(port, "/servers/t/mcp", "A", own_id, until=("failed",))["status"] == "failed"
    # The edge comes back (a new link): the task it lost stays failed, and new ones work.
    register(procs, port)
    assert poll(port, "/mcp", "A", task_id, until=("failed",))["status"] == "failed"
    _, again = call(port, "/mcp", "A", "tools/call", {"name": "t_slow_compute", "arguments": {"seconds": 0}})
    assert poll(port, "/mcp", "A", again["result"]["taskId"])["status"] == "completed"
    # Another client cannot learn even that.
    _, refused = call(port, "/mcp", "B", "tasks/get", {"taskId": task_id})
    assert refused["error"]["code"] == -32602
