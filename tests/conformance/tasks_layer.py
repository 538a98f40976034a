"""The tasks extension (io.modelcontextprotocol/tasks, SEP-2663) for the conformance fixture's
2026-07-28 era, as the suite's `tasks-*` scenarios describe their server (0.2.0-alpha.12).

The MCP Python SDK 2.3 has no tasks extension, so this layer sits in front of the SDK's server in
`fixture_server.py --modern`: it answers the task tools' `tools/call`s and `tasks/get`,
`tasks/update` and `tasks/cancel` itself, adds the tools to the SDK's `tools/list` result and the
extension to its `server/discover` result, and passes everything else through.

Tools (names as the suite asks, never prefixed):
- `greet` {name}: sync only, "Hello, {name}!".
- `slow_compute` {seconds, label}: a task (for a client that declared the extension) that sleeps
  `seconds` and returns a text; cancelled while it sleeps, it ends `cancelled`. Without the
  extension it runs as an ordinary call.
- `failing_job`: task support `required` (-32021 without the extension); completes after ~1 s
  with a tool error (`isError`).
- `protocol_error_job`: a task that fails with a JSON-RPC error.
- `confirm_delete` {filename}: a task that waits on one `elicitation/create` input request.
- `multi_input`: a task that waits on two input requests at once (answerable one at a time).
- `test_tool_with_task`: task support `required`; round 1 is an `input_required` result (MRTR)
  asking `user_name`; the retry with the answer becomes a task whose result names the user.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

EXTENSION = "io.modelcontextprotocol/tasks"
# Another extension, which the gateway does not know: offered, and its one method answered, so
# that a test can see it pass through a per-server endpoint untouched.
OTHER_EXTENSION = "io.modelcontextprotocol/skills"
SKILLS = {"resultType": "complete", "skills": [{"name": "hello", "uri": "skill://hello/SKILL.md"}]}
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
MISSING_CAPABILITY = -32021
INVALID_PARAMS = -32602
TTL_MS = 60_000
POLL_MS = 200
TERMINAL = ("completed", "failed", "cancelled")
# What `inbound` returns for a request it took whose answer comes later.
LATER: dict[str, Any] = {}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text(value: str, is_error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": value}]}
    if is_error:
        result["isError"] = True
    return result


def elicit(message: str, field: str, kind: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"mode": "form", "message": message, "requestedSchema": schema}}


def tool(name: str, description: str, properties: dict[str, Any], support: str | None) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties},
    }
    if support is not None:
        definition["execution"] = {"taskSupport": support}
    return definition


TOOLS = [
    tool("greet", "Says hello (never a task)", {"name": {"type": "string"}}, None),
    tool(
        "slow_compute",
        "Sleeps `seconds`, then answers (a task)",
        {"seconds": {"type": "number"}, "label": {"type": "string"}},
        "optional",
    ),
    tool("failing_job", "Fails as a tool after about a second (task required)", {}, "required"),
    tool("protocol_error_job", "Fails with a protocol error (a task)", {}, "optional"),
    tool("confirm_delete", "Asks to confirm, then deletes (a task)", {"filename": {"type": "string"}}, "optional"),
    tool("multi_input", "Asks two questions at once (a task)", {}, "optional"),
    tool("test_tool_with_task", "Asks a name (input_required), then runs as a task", {}, "required"),
]
TOOL_NAMES = {t["name"] for t in TOOLS}


def declared(params: dict[str, Any]) -> bool:
    capabilities = ((params.get("_meta") or {}).get(META_CAPABILITIES)) or {}
    return isinstance((capabilities.get("extensions") or {}).get(EXTENSION), dict)


def error(code: int, message: str, data: Any = None) -> dict[str, Any]:
    e: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        e["data"] = data
    return e


def missing_extension() -> dict[str, Any]:
    return error(
        MISSING_CAPABILITY,
        f"this request needs the client capability extension {EXTENSION}",
        {"requiredCapabilities": {"extensions": {EXTENSION: {}}}},
    )


class Task:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.status = "working"
        self.created = now()
        self.updated = self.created
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.pending: dict[str, Any] = {}
        self.answers: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self.runner: asyncio.Task[Any] | None = None

    def set(self, status: str) -> None:
        self.status = status
        self.updated = now()

    def envelope(self) -> dict[str, Any]:
        return {
            "taskId": self.id,
            "status": self.status,
            "createdAt": self.created,
            "lastUpdatedAt": self.updated,
            "ttlMs": TTL_MS,
            "pollIntervalMs": POLL_MS,
        }

    def detailed(self) -> dict[str, Any]:
        detail = {"resultType": "complete", **self.envelope()}
        if self.status == "completed" and self.result is not None:
            detail["result"] = self.result
        if self.status == "failed" and self.error is not None:
            detail["error"] = self.error
        if self.status == "input_required":
            detail["inputRequests"] = dict(self.pending)
        return detail

    async def ask(self, questions: dict[str, Any]) -> dict[str, Any]:
        """Parks the task on `questions` until every one is answered; returns the answers."""
        self.pending = dict(questions)
        self.set("input_required")
        while self.pending:
            self.changed.clear()
            await self.changed.wait()
        self.set("working")
        return {k: self.answers[k] for k in questions}


class TasksLayer:
    """Answers the task tools and methods; `send` writes a JSON-RPC message to the client."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.send = send
        self.tasks: dict[str, Task] = {}
        self.list_ids: set[Any] = set()
        self.discover_ids: set[Any] = set()

    # ---- inbound ----

    async def inbound(self, method: str | None, rid: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a request this layer serves (`LATER`: it will send one), or None (the SDK
        serves it)."""
        if method == "tools/list":
            self.list_ids.add(rid)
        elif method == "server/discover":
            self.discover_ids.add(rid)
        elif method == "tools/call" and params.get("name") in TOOL_NAMES:
            outcome = self.call(rid, params)
            return LATER if outcome is None else self.wrap(rid, outcome)
        elif method in ("tasks/get", "tasks/update", "tasks/cancel"):
            return self.wrap(rid, self.task_method(method, params))
        elif method == "skills/list":
            return self.wrap(rid, ("result", dict(SKILLS)))
        return None

    @staticmethod
    def wrap(rid: Any, outcome: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        kind, body = outcome
        return {"jsonrpc": "2.0", "id": rid, kind: body}

    def call(self, rid: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The answer to a task tool's call, or None when it is sent later."""
        name = params["name"]
        args = params.get("arguments") or {}
        ext = declared(params)
        if name == "greet":
            return "result", {"resultType": "complete", **text(f"Hello, {args.get('name', 'stranger')}!")}
        if name in ("failing_job", "test_tool_with_task") and not ext:
            return "error", missing_extension()
        if name == "slow_compute" and not ext:
            # An ordinary call: answered when done, without holding up the pump.
            asyncio.get_running_loop().create_task(self.answer_later(rid, args))
            return None
        if name == "test_tool_with_task":
            answer = (params.get("inputResponses") or {}).get("user_name") or {}
            user = (answer.get("content") or {}).get("name") if isinstance(answer, dict) else None
            if not user:
                return "result", {
                    "resultType": "input_required",
                    "inputRequests": {"user_name": elicit("What is your name?", "name", "string")},
                }
            return "result", self.start(self.greet_later(user))
        if not ext:  # protocol_error_job, confirm_delete, multi_input run as tasks only
            return "result", {"resultType": "complete", **text(f"{name} runs as a task only", is_error=True)}
        works: dict[str, Any] = {
            "slow_compute": self.compute(args),
            "failing_job": self.fail_as_tool,
            "protocol_error_job": self.fail_as_protocol,
            "confirm_delete": self.confirm(args),
            "multi_input": self.two_questions,
        }
        return "result", self.start(works[name])

    async def answer_later(self, rid: Any, args: dict[str, Any]) -> None:
        await asyncio.sleep(float(args.get("seconds") or 0))
        body = {"resultType": "complete", **text(f"computed {args.get('label', '')}")}
        await self.send({"jsonrpc": "2.0", "id": rid, "result": body})

    def start(self, work: Any) -> dict[str, Any]:
        """Creates a task running `work` (a coroutine taking the task); its CreateTaskResult."""
        task = Task()
        self.tasks[task.id] = task

        async def run() -> None:
            try:
                task.result = await work(task)
                task.set("completed")
            except asyncio.CancelledError:
                task.set("cancelled")
            except ProtocolError as e:
                task.error = error(e.code, str(e))
                task.set("failed")

        task.runner = asyncio.get_running_loop().create_task(run())
        return {"resultType": "task", **task.envelope()}

    # ---- what the tasks do ----

    @staticmethod
    def compute(args: dict[str, Any]) -> Callable[[Task], Awaitable[dict[str, Any]]]:
        async def work(task: Task) -> dict[str, Any]:
            await asyncio.sleep(float(args.get("seconds") or 0))
            return text(f"computed {args.get('label', '')}")

        return work

    @staticmethod
    async def fail_as_tool(task: Task) -> dict[str, Any]:
        await asyncio.sleep(1)
        return text("the job failed", is_error=True)

    @staticmethod
    async def fail_as_protocol(task: Task) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        raise ProtocolError(-32603, "internal failure while running the job")

    @staticmethod
    def confirm(args: dict[str, Any]) -> Callable[[Task], Awaitable[dict[str, Any]]]:
        async def work(task: Task) -> dict[str, Any]:
            filename = args.get("filename", "a file")
            got = await task.ask({"confirm": elicit(f"Delete {filename}?", "confirm", "boolean")})
            answer = got["confirm"] if isinstance(got["confirm"], dict) else {}
            yes = answer.get("action") == "accept" and (answer.get("content") or {}).get("confirm") is True
            return text(f"deleted {filename}" if yes else f"kept {filename}")

        return work

    @staticmethod
    async def two_questions(task: Task) -> dict[str, Any]:
        got = await task.ask(
            {"first": elicit("Your name?", "name", "string"), "second": elicit("Sure?", "confirm", "boolean")}
        )
        names = [((a.get("content") or {}).get("name", "") if isinstance(a, dict) else "") for a in got.values()]
        return text("answered: " + ", ".join(names))

    @staticmethod
    def greet_later(user: str) -> Callable[[Task], Awaitable[dict[str, Any]]]:
        async def work(task: Task) -> dict[str, Any]:
            await asyncio.sleep(0.5)
            return text(f"Hello, {user}! (from a task)")

        return work

    # ---- the tasks methods ----

    def task_method(self, method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if not declared(params):
            return "error", missing_extension()
        task = self.tasks.get(params.get("taskId"))  # type: ignore[arg-type]
        if task is None:
            return "error", error(INVALID_PARAMS, f"unknown task {params.get('taskId')!r}")
        if method == "tasks/get":
            return "result", task.detailed()
        if method == "tasks/cancel":
            if task.status not in TERMINAL and task.runner is not None:
                task.runner.cancel()
                task.set("cancelled")
            return "result", {"resultType": "complete"}
        responses = params.get("inputResponses")
        if not isinstance(responses, dict):
            return "error", error(INVALID_PARAMS, "inputResponses must be an object")
        for key, answer in responses.items():
            if key in task.pending:
                del task.pending[key]
                task.answers[key] = answer
        task.changed.set()
        return "result", {"resultType": "complete"}

    # ---- outbound ----

    def outbound(self, message: dict[str, Any]) -> dict[str, Any]:
        """The SDK's answer, with the task tools listed and the extension offered."""
        rid = message.get("id")
        result = message.get("result")
        if not isinstance(result, dict):
            return message
        if rid in self.list_ids:
            self.list_ids.discard(rid)
            result["tools"] = list(result.get("tools") or []) + TOOLS
        elif rid in self.discover_ids:
            self.discover_ids.discard(rid)
            capabilities = result.setdefault("capabilities", {})
            capabilities.setdefault("extensions", {})[EXTENSION] = {}
            capabilities["extensions"][OTHER_EXTENSION] = {"directoryRead": False}
        return message


class ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
