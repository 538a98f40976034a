"""A stdio MCP server offering what the official MCP conformance suite's server scenarios ask for.

Written for mcpport's conformance run (scripts/conformance.sh): mcpport registers it with a
gateway, and the suite (`@modelcontextprotocol/conformance server`) tests it through the gateway's
HTTP endpoints. It is built on the low-level `Server` of the official MCP Python SDK (`pip install
mcp`, 2.x), so what goes on the wire is exactly what the handlers below return.

What it offers follows the "Server Implementation Requirements" of the suite's scenarios for
protocol 2025-11-25 (`src/scenarios/server/*.ts` in modelcontextprotocol/conformance):

- tools: test_simple_text, test_image_content, test_audio_content, test_embedded_resource,
  test_multiple_content_types, test_tool_with_logging, test_tool_with_progress,
  test_error_handling, test_sampling, test_elicitation, test_elicitation_sep1034_defaults,
  test_elicitation_sep1330_enums
- resources: test://static-text, test://static-binary, test://watched-resource (subscribable);
  template test://template/{id}/data
- prompts: test_simple_prompt, test_prompt_with_arguments, test_prompt_with_embedded_resource,
  test_prompt_with_image
- logging/setLevel, completion/complete, ping

and, for the 2026-07-28 requirements (served to the gateway as a legacy, initialize-era server;
the gateway translates for 2026-07-28 clients): test_missing_capability, test_streaming_elicitation,
test_logging_tool, test_trigger_tool_change, test_trigger_prompt_change, test_custom_header
(x-mcp-header), json_schema_2020_12_tool, the SEP-2322 tools test_input_required_result_* and the
prompt test_input_required_result_prompt, which ask their questions the legacy way (server requests
during the call, each naming its key in params._meta["mcpport/inputKey"]).

`--legacy` (the default) keeps it a server of the initialize era, as above: it refuses
`server/discover` (before the SDK sees it, since the SDK's stdio server serves the era of the
first request it gets, and would otherwise answer the gateway's probe as a 2026-07-28 server).
`--modern` makes it a server of protocol 2026-07-28 only: it refuses `initialize` (naming the
versions it speaks), answers `server/discover`, seals
its `requestState` (the SDK's `RequestStateBoundary`, so a tampered state is refused), serves
`subscriptions/listen` (list changes are published on its bus), and asks its questions the
2026-07-28 way: the MRTR tools and prompt return `input_required` results and read the retry's
`inputResponses` and `requestState` (the sampling and elicitation tools of the legacy scenarios
too, which the gateway turns into server requests for legacy clients); log lines only at the
request's `logLevel`; `test_missing_capability` answers -32021 itself when the request's client
capabilities lack sampling.

In its modern era it also offers the tasks extension (io.modelcontextprotocol/tasks, SEP-2663) with
the tools the suite's `tasks-*` scenarios name (greet, slow_compute, failing_job,
protocol_error_job, confirm_delete, multi_input, test_tool_with_task): `tasks_layer.py`, in front
of the SDK's server (the SDK has no tasks extension).

`--prefix-free` drops the leading `test_` of every tool and prompt name (not the task tools').
Registered with a gateway under the server name `test`, the aggregated endpoint (which exposes
`{server}_{name}`) then shows the names the suite expects; scripts/conformance.sh instead runs the
gateway with `--aggregate-names bare`, which shows every name as the fixture gives it.

Server-to-client requests (sampling, elicitation) are sent only when the client declared the
capability, as the suite's scenarios and the spec require; otherwise the tool answers with
`isError: true` and says why.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import struct
import sys
import warnings
import wave
import zlib
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, PromptsListChanged, ToolsListChanged
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.exceptions import MCPError

# logging/setLevel, sampling and the handler-side logging helpers are deprecated as of protocol
# 2026-07-28; this fixture speaks the dated versions, where they are current.
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated as of 2026-07-28.*")

RESOURCE_NOT_FOUND = -32002  # 2024-11-05 … 2025-11-25
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


def png_1x1_red() -> str:
    """A 1x1 red PNG, base64."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte, then R G B
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def wav_silence() -> str:
    """10 ms of 8 kHz mono 16-bit silence as a WAV file, base64."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 80)
    return base64.b64encode(buf.getvalue()).decode()


PNG = png_1x1_red()
WAV = wav_silence()

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}

# The suite's JSON_SCHEMA_2020_12_FIXTURE (src/scenarios/server/json-schema-2020-12.ts), which the
# gateway must pass through untouched.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


# The forms the elicitation tools ask for (the suite's scenarios name these fields).
USER_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

DEFAULTS_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

ENUMS_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Pick one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Pick one titled option",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Pick one (legacy titled enum)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Pick several options",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Pick several titled options",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


class Fixture:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.log_level: str | None = None  # none set: everything is sent
        self.subscriptions: set[str] = set()
        self.tools = {
            self.name("simple_text"): ("Returns a simple text response.", NO_ARGS, self.simple_text),
            self.name("image_content"): ("Returns a 1x1 PNG image.", NO_ARGS, self.image_content),
            self.name("audio_content"): ("Returns a short WAV clip.", NO_ARGS, self.audio_content),
            self.name("embedded_resource"): (
                "Returns an embedded text resource.",
                NO_ARGS,
                self.embedded_resource,
            ),
            self.name("multiple_content_types"): (
                "Returns text, an image and an embedded resource.",
                NO_ARGS,
                self.multiple_content_types,
            ),
            self.name("tool_with_logging"): (
                "Sends three log messages while it runs.",
                NO_ARGS,
                self.tool_with_logging,
            ),
            self.name("tool_with_progress"): (
                "Reports progress 0, 50 and 100 of 100 while it runs.",
                NO_ARGS,
                self.tool_with_progress,
            ),
            self.name("error_handling"): ("Always fails with isError: true.", NO_ARGS, self.error_handling),
            self.name("sampling"): (
                "Asks the client's LLM to answer a prompt (sampling/createMessage).",
                {
                    "type": "object",
                    "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
                    "required": ["prompt"],
                },
                self.sampling,
            ),
            self.name("elicitation"): (
                "Asks the user for a username and an email address (elicitation/create).",
                {
                    "type": "object",
                    "properties": {"message": {"type": "string", "description": "The message to show the user"}},
                    "required": ["message"],
                },
                self.elicitation,
            ),
            self.name("elicitation_sep1034_defaults"): (
                "Elicits a form whose fields all have default values (SEP-1034).",
                NO_ARGS,
                self.elicitation_defaults,
            ),
            self.name("elicitation_sep1330_enums"): (
                "Elicits a form with every kind of enum field (SEP-1330).",
                NO_ARGS,
                self.elicitation_enums,
            ),
            # What the 2026-07-28 scenarios (server-stateless) probe, served by a legacy server:
            # the gateway translates.
            self.name("missing_capability"): (
                "Asks the client's LLM (sampling) unconditionally: a 2026-07-28 client that did not "
                "declare sampling gets -32021 from the gateway.",
                NO_ARGS,
                self.missing_capability,
            ),
            self.name("streaming_elicitation"): (
                "Reports progress once, then answers.",
                NO_ARGS,
                self.streaming_elicitation,
            ),
            self.name("logging_tool"): ("Logs one info line, then answers.", NO_ARGS, self.logging_tool),
            # SEP-2243: an argument the client must mirror in an Mcp-Param-Region header.
            self.name("custom_header"): (
                "Echoes its region, which clients also send as the Mcp-Param-Region header.",
                {
                    "type": "object",
                    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                    "required": ["region"],
                },
                self.custom_header,
            ),
            # json-schema-2020-12 (pending): the suite looks for this exact name, unprefixed; the
            # aggregated endpoint shows it as test_json_schema_2020_12_tool, which it cannot find.
            "json_schema_2020_12_tool": (
                "Takes a contact described with JSON Schema 2020-12 keywords.",
                JSON_SCHEMA_2020_12,
                self.simple_text,
            ),
            self.name("trigger_tool_change"): (
                "Adds or removes the tool dynamic_tool and announces tools/list_changed.",
                NO_ARGS,
                self.trigger_tool_change,
            ),
            # SEP-2322 (MRTR) scenarios, asked the legacy way: server requests during the call,
            # each naming its input key in params._meta["mcpport/inputKey"]; the gateway turns
            # them into input_required results for 2026-07-28 clients.
            self.name("input_required_result_elicitation"): (
                "Asks the user's name (elicitation, key user_name).",
                NO_ARGS,
                self.mrtr_elicitation,
            ),
            self.name("input_required_result_sampling"): (
                "Asks the client's LLM a question (sampling, key capital_question).",
                NO_ARGS,
                self.mrtr_sampling,
            ),
            self.name("input_required_result_list_roots"): (
                "Asks the client's roots (roots/list, key client_roots).",
                NO_ARGS,
                self.mrtr_roots,
            ),
            self.name("input_required_result_request_state"): (
                "Asks for a confirmation (elicitation, key confirm); answers state-ok.",
                NO_ARGS,
                self.mrtr_confirm,
            ),
            self.name("input_required_result_tampered_state"): (
                "Asks for a confirmation (elicitation, key confirm).",
                NO_ARGS,
                self.mrtr_confirm,
            ),
            self.name("input_required_result_multiple_inputs"): (
                "Asks three things at once: user_name, greeting and client_roots.",
                NO_ARGS,
                self.mrtr_multiple,
            ),
            self.name("input_required_result_multi_round"): (
                "Asks step1 (a name), then step2 (a colour).",
                NO_ARGS,
                self.mrtr_multi_round,
            ),
            self.name("input_required_result_capabilities"): (
                "Asks only what the client's declared capabilities allow.",
                NO_ARGS,
                self.mrtr_capabilities,
            ),
            self.name("trigger_prompt_change"): (
                "Adds or removes the prompt dynamic_prompt and announces prompts/list_changed.",
                NO_ARGS,
                self.trigger_prompt_change,
            ),
        }
        self.prompts = {
            self.name("simple_prompt"): ("A prompt without arguments.", [], self.simple_prompt),
            self.name("prompt_with_arguments"): (
                "A prompt with two required arguments.",
                [
                    {"name": "arg1", "description": "First test argument", "required": True},
                    {"name": "arg2", "description": "Second test argument", "required": True},
                ],
                self.prompt_with_arguments,
            ),
            self.name("prompt_with_embedded_resource"): (
                "A prompt that embeds a resource.",
                [{"name": "resourceUri", "description": "URI of the resource to embed", "required": True}],
                self.prompt_with_embedded_resource,
            ),
            self.name("prompt_with_image"): ("A prompt with an image.", [], self.prompt_with_image),
            self.name("input_required_result_prompt"): (
                "A prompt that asks the user for context first (elicitation, key user_context).",
                [],
                None,
            ),
        }

    def name(self, base: str) -> str:
        return self.prefix + base

    # ---- tools ----

    async def list_tools(self, ctx: Any, params: Any) -> dict[str, Any]:
        return {
            "tools": [
                {"name": name, "description": description, "inputSchema": schema}
                for name, (description, schema, _) in self.tools.items()
            ]
        }

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
        entry = self.tools.get(params.name)
        if entry is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        if entry[2] == self.mrtr_capabilities:
            meta = params.model_dump(by_alias=True, exclude_none=True).get("_meta") or {}
            return await self.mrtr_capabilities(ctx, params.arguments or {}, meta)
        return await entry[2](ctx, params.arguments or {})

    @staticmethod
    def text(text: str, is_error: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
        if is_error:
            result["isError"] = True
        return result

    async def simple_text(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self.text("This is a simple text response for testing.")

    async def image_content(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}

    async def audio_content(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}

    async def embedded_resource(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        resource = {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }
        return {"content": [{"type": "resource", "resource": resource}]}

    async def multiple_content_types(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        resource = {
            "uri": "test://mixed-content-resource",
            "mimeType": "application/json",
            "text": json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
        }
        return {
            "content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {"type": "resource", "resource": resource},
            ]
        }

    async def log(self, ctx: Any, level: str, data: Any) -> None:
        """A log message related to the request being handled, if the level is enabled."""
        if self.log_level is not None and LEVELS.index(level) < LEVELS.index(self.log_level):
            return
        await ctx.session.send_log_message(level, data, logger="fixture", related_request_id=ctx.request_id)

    async def tool_with_logging(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        await self.log(ctx, "info", "Tool execution started")
        await anyio.sleep(0.05)
        await self.log(ctx, "info", "Tool processing data")
        await anyio.sleep(0.05)
        await self.log(ctx, "info", "Tool execution completed")
        return self.text("Tool with logging executed successfully")

    async def tool_with_progress(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        # report_progress uses the request's own progress token, and does nothing without one.
        for i, progress in enumerate((0, 50, 100)):
            if i:
                await anyio.sleep(0.05)
            await ctx.session.report_progress(progress, 100, f"step {i + 1} of 3")
        return self.text("Tool with progress executed successfully")

    async def error_handling(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self.text("This tool intentionally returns an error for testing", is_error=True)

    @staticmethod
    def client_can(ctx: Any, capability: str) -> bool:
        caps = ctx.session.client_capabilities
        return caps is not None and getattr(caps, capability, None) is not None

    async def sampling(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        if not self.client_can(ctx, "sampling"):
            return self.text("Cannot sample: the client did not declare the sampling capability", is_error=True)
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text=str(args.get("prompt", ""))))
        result = await ctx.session.create_message([message], max_tokens=100, related_request_id=ctx.request_id)
        content = result.content
        text = getattr(content, "text", None) if not isinstance(content, list) else None
        return self.text(f"LLM response: {text if text is not None else content}")

    async def elicit(self, ctx: Any, message: str, schema: dict[str, Any]) -> types.ElicitResult | None:
        if not self.client_can(ctx, "elicitation"):
            return None
        return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)

    NO_ELICITATION = "Cannot elicit: the client did not declare the elicitation capability"

    async def elicitation(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.elicit(ctx, str(args.get("message", "")), USER_FORM)
        if result is None:
            return self.text(self.NO_ELICITATION, is_error=True)
        return self.text(f"User response: action={result.action}, content={json.dumps(result.content)}")

    async def elicitation_defaults(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.elicit(ctx, "Please review and update the form fields with defaults", DEFAULTS_FORM)
        if result is None:
            return self.text(self.NO_ELICITATION, is_error=True)
        return self.text(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")

    async def elicitation_enums(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.elicit(ctx, "Please choose from the enum fields", ENUMS_FORM)
        if result is None:
            return self.text(self.NO_ELICITATION, is_error=True)
        return self.text(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")

    async def missing_capability(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        message = types.SamplingMessage(role="user", content=types.TextContent(type="text", text="ping"))
        try:
            await ctx.session.create_message([message], max_tokens=10, related_request_id=ctx.request_id)
        except MCPError as e:
            return self.text(f"Sampling refused: {e}", is_error=True)
        return self.text("Sampling answered")

    async def custom_header(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return self.text(f"region={args.get('region')}")

    async def streaming_elicitation(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.session.report_progress(50, 100, "half way")
        return self.text("Streaming complete")

    async def logging_tool(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        await self.log(ctx, "info", "Diagnostic trace logging activated")
        return self.text("Logging evaluated")

    # ---- MRTR, the legacy way ----

    async def ask(self, ctx: Any, request: Any, result_type: Any) -> Any:
        """A server request related to the call being handled."""
        metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
        return await ctx.session.send_request(request, result_type, metadata=metadata)

    async def ask_elicit(self, ctx: Any, key: str, message: str, field: str, kind: str = "string") -> Any:
        params = types.ElicitRequestFormParams.model_validate(
            {
                "message": message,
                "requestedSchema": {
                    "type": "object",
                    "properties": {field: {"type": kind}},
                    "required": [field],
                },
                "_meta": {"mcpport/inputKey": key},
            }
        )
        return await self.ask(ctx, types.ElicitRequest(params=params), types.ElicitResult)

    async def ask_sample(self, ctx: Any, key: str, text: str, max_tokens: int) -> Any:
        params = types.CreateMessageRequestParams.model_validate(
            {
                "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
                "maxTokens": max_tokens,
                "_meta": {"mcpport/inputKey": key},
            }
        )
        return await self.ask(ctx, types.CreateMessageRequest(params=params), types.CreateMessageResult)

    async def ask_roots(self, ctx: Any, key: str) -> Any:
        params = types.RequestParams.model_validate({"_meta": {"mcpport/inputKey": key}})
        return await self.ask(ctx, types.ListRootsRequest(params=params), types.ListRootsResult)

    async def mrtr_elicitation(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.ask_elicit(ctx, "user_name", "What is your name?", "name")
        return self.text(f"Hello, {(result.content or {}).get('name', 'stranger')}!")

    async def mrtr_sampling(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.ask_sample(ctx, "capital_question", "What is the capital of France?", 100)
        return self.text(f"LLM response: {getattr(result.content, 'text', result.content)}")

    async def mrtr_roots(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.ask_roots(ctx, "client_roots")
        return self.text("Roots: " + ", ".join(str(r.uri) for r in result.roots))

    async def mrtr_confirm(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.ask_elicit(ctx, "confirm", "Please confirm", "ok", "boolean")
        return self.text(f"state-ok: confirmed={(result.content or {}).get('ok')}")

    async def mrtr_multiple(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        name, greeting, roots = await asyncio.gather(
            self.ask_elicit(ctx, "user_name", "What is your name?", "name"),
            self.ask_sample(ctx, "greeting", "Generate a greeting", 50),
            self.ask_roots(ctx, "client_roots"),
        )
        return self.text(
            f"name={(name.content or {}).get('name')}, greeting={getattr(greeting.content, 'text', '')}, "
            f"roots={len(roots.roots)}"
        )

    async def mrtr_multi_round(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        first = await self.ask_elicit(ctx, "step1", "Step 1: What is your name?", "name")
        second = await self.ask_elicit(ctx, "step2", "Step 2: What is your favorite color?", "color")
        name, color = (first.content or {}).get("name"), (second.content or {}).get("color")
        return self.text(f"{name} likes {color}")

    async def mrtr_capabilities(self, ctx: Any, args: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        # The gateway passes the 2026-07-28 client's own capabilities along in _meta.
        caps = meta.get("io.modelcontextprotocol/clientCapabilities")
        if caps is None:
            caps = {"sampling": {}, "elicitation": {}} if self.client_can(ctx, "sampling") else {}
        asks = []
        if "sampling" in caps:
            asks.append(self.ask_sample(ctx, "question", "What is 2 + 2?", 10))
        if "elicitation" in caps:
            asks.append(self.ask_elicit(ctx, "user_name", "What is your name?", "name"))
        if not asks:
            return self.text("Nothing to ask: the client declared neither sampling nor elicitation")
        await asyncio.gather(*asks)
        return self.text("Asked only what the client can answer")

    async def trigger_tool_change(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        name = self.name("dynamic_tool")
        if self.tools.pop(name, None) is None:
            self.tools[name] = ("Appears and disappears with trigger_tool_change.", NO_ARGS, self.simple_text)
        await ctx.session.send_tool_list_changed()
        return self.text("Mutation triggered")

    async def trigger_prompt_change(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        name = self.name("dynamic_prompt")
        if self.prompts.pop(name, None) is None:
            self.prompts[name] = ("Appears and disappears with trigger_prompt_change.", [], self.simple_prompt)
        await ctx.session.send_prompt_list_changed()
        return self.text("Mutation triggered")

    # ---- resources ----

    STATIC = {
        "test://static-text": {
            "name": "static-text",
            "description": "A static text resource",
            "mimeType": "text/plain",
            "text": "This is the content of the static text resource.",
        },
        "test://static-binary": {
            "name": "static-binary",
            "description": "A static binary resource (a 1x1 PNG)",
            "mimeType": "image/png",
            "blob": PNG,
        },
        "test://watched-resource": {
            "name": "watched-resource",
            "description": "A resource clients may subscribe to",
            "mimeType": "text/plain",
            "text": "This is a watched resource.",
        },
    }
    TEMPLATE = "test://template/{id}/data"

    async def list_resources(self, ctx: Any, params: Any) -> dict[str, Any]:
        resources = [
            {"uri": uri, "name": r["name"], "description": r["description"], "mimeType": r["mimeType"]}
            for uri, r in self.STATIC.items()
        ]
        return {"resources": resources}

    async def list_templates(self, ctx: Any, params: Any) -> dict[str, Any]:
        template = {
            "uriTemplate": self.TEMPLATE,
            "name": "template-data",
            "description": "Data for an id, substituted into the template",
            "mimeType": "application/json",
        }
        return {"resourceTemplates": [template]}

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> dict[str, Any]:
        uri = str(params.uri)
        if uri in self.STATIC:
            r = self.STATIC[uri]
            body = {k: r[k] for k in ("mimeType", "text", "blob") if k in r}
            return {"contents": [{"uri": uri, **body}]}
        prefix, suffix = "test://template/", "/data"
        if uri.startswith(prefix) and uri.endswith(suffix) and len(uri) > len(prefix) + len(suffix):
            item_id = uri[len(prefix) : -len(suffix)]
            if "/" not in item_id:
                data = {"id": item_id, "templateTest": True, "data": f"Data for ID: {item_id}"}
                text = json.dumps(data, separators=(",", ":"))
                return {"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]}
        raise MCPError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})

    async def subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> dict[str, Any]:
        self.subscriptions.add(str(params.uri))
        return {}

    async def unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> dict[str, Any]:
        self.subscriptions.discard(str(params.uri))
        return {}

    # ---- prompts ----

    async def list_prompts(self, ctx: Any, params: Any) -> dict[str, Any]:
        prompts = []
        for name, (description, arguments, _) in self.prompts.items():
            prompt: dict[str, Any] = {"name": name, "description": description}
            if arguments:
                prompt["arguments"] = arguments
            prompts.append(prompt)
        return {"prompts": prompts}

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> dict[str, Any]:
        entry = self.prompts.get(params.name)
        if entry is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        args = params.arguments or {}
        missing = [a["name"] for a in entry[1] if a.get("required") and a["name"] not in args]
        if missing:
            raise MCPError(types.INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")
        if entry[2] is None:  # input_required_result_prompt
            result = await self.ask_elicit(ctx, "user_context", "What context should the prompt use?", "context")
            context = (result.content or {}).get("context", "")
            return {"messages": [self.user({"type": "text", "text": f"Prompt with context: {context}"})]}
        return entry[2](args)

    @staticmethod
    def user(content: dict[str, Any]) -> dict[str, Any]:
        return {"role": "user", "content": content}

    def simple_prompt(self, args: dict[str, str]) -> dict[str, Any]:
        return {"messages": [self.user({"type": "text", "text": "This is a simple prompt for testing."})]}

    def prompt_with_arguments(self, args: dict[str, str]) -> dict[str, Any]:
        text = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
        return {"messages": [self.user({"type": "text", "text": text})]}

    def prompt_with_embedded_resource(self, args: dict[str, str]) -> dict[str, Any]:
        resource = {
            "uri": args["resourceUri"],
            "mimeType": "text/plain",
            "text": "Embedded resource content for testing.",
        }
        return {
            "messages": [
                self.user({"type": "resource", "resource": resource}),
                self.user({"type": "text", "text": "Please process the embedded resource above."}),
            ]
        }

    def prompt_with_image(self, args: dict[str, str]) -> dict[str, Any]:
        return {
            "messages": [
                self.user({"type": "image", "data": PNG, "mimeType": "image/png"}),
                self.user({"type": "text", "text": "Please analyze the image above."}),
            ]
        }

    # ---- logging and completion ----

    async def set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> dict[str, Any]:
        self.log_level = params.level
        return {}

    COMPLETIONS = {
        "arg1": ["paris", "park", "party", "test-value", "testing"],
        "arg2": ["world", "wonder", "test-value"],
        "resourceUri": ["test://static-text", "test://static-binary", "test://watched-resource"],
        "id": ["1", "2", "3", "123", "456"],
    }

    async def complete(self, ctx: Any, params: types.CompleteRequestParams) -> dict[str, Any]:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            if ref.name not in self.prompts:
                raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {ref.name}")
        elif str(ref.uri) != self.TEMPLATE:
            raise MCPError(types.INVALID_PARAMS, f"Unknown resource template: {ref.uri}")
        typed = params.argument.value
        values = [v for v in self.COMPLETIONS.get(params.argument.name, []) if v.startswith(typed)]
        return {"completion": {"values": values, "total": len(values), "hasMore": False}}


# ---- the 2026-07-28 era (--modern) ----

META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"


def elicit_request(message: str, field: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def sample_request(text: str, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": {"type": "text", "text": text}}]
    return {"method": "sampling/createMessage", "params": {"messages": messages, "maxTokens": max_tokens}}


ROOTS_REQUEST: dict[str, Any] = {"method": "roots/list", "params": {}}


def answers_shape(method: str, answer: Any) -> bool:
    """Whether `answer` has the shape of a client's answer to `method`."""
    if not isinstance(answer, dict):
        return False
    if method == "elicitation/create":
        return isinstance(answer.get("action"), str)
    if method == "sampling/createMessage":
        return "content" in answer and isinstance(answer.get("role"), str)
    return isinstance(answer.get("roots"), list)


class NeedInput(Exception):
    """The handler needs answers from the client: an `input_required` result."""

    def __init__(self, requests: dict[str, Any], state: str | None = None) -> None:
        super().__init__("input required")
        self.requests = requests
        self.state = state

    def result(self) -> dict[str, Any]:
        result: dict[str, Any] = {"resultType": "input_required", "inputRequests": self.requests}
        if self.state is not None:
            result["requestState"] = self.state
        return result


class ModernFixture(Fixture):
    """The fixture as a 2026-07-28-only server: questions are `input_required` results, and the
    retry's `inputResponses` and (verified, plaintext) `requestState` carry the answers."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.bus = InMemorySubscriptionBus()
        modern = {
            "input_required_result_elicitation": self.m_elicitation,
            "input_required_result_sampling": self.m_sampling,
            "input_required_result_list_roots": self.m_roots,
            "input_required_result_request_state": self.m_confirm,
            "input_required_result_tampered_state": self.m_confirm,
            "input_required_result_multiple_inputs": self.m_multiple,
            "input_required_result_multi_round": self.m_multi_round,
            "input_required_result_capabilities": self.m_capabilities,
            "missing_capability": self.m_missing_capability,
            "sampling": self.m_sampling_tool,
            "elicitation": self.m_elicitation_form,
            "elicitation_sep1034_defaults": self.m_elicitation_defaults,
            "elicitation_sep1330_enums": self.m_elicitation_enums,
            "tool_with_logging": self.m_tool_with_logging,
            "logging_tool": self.m_logging,
        }
        self.modern_tools = {self.name(base): handler for base, handler in modern.items()}

    @staticmethod
    def wire(params: Any) -> dict[str, Any]:
        return params.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def ask(cls, params: Any, wanted: dict[str, Any], state: str | None = None) -> dict[str, Any]:
        """The answers to `wanted` (by key) that came with the request, or `NeedInput` for the
        ones missing or malformed (extra keys are ignored)."""
        given = cls.wire(params).get("inputResponses") or {}
        given = given if isinstance(given, dict) else {}
        missing = {k: req for k, req in wanted.items() if not answers_shape(req["method"], given.get(k))}
        if missing:
            raise NeedInput(missing, state)
        return given

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
        handler = self.modern_tools.get(params.name)
        try:
            if handler is not None:
                return await handler(ctx, params)
            return await super().call_tool(ctx, params)
        except NeedInput as need:
            return need.result()

    async def m_elicitation(self, ctx: Any, params: Any) -> dict[str, Any]:
        got = self.ask(params, {"user_name": elicit_request("What is your name?", "name")})
        return self.text(f"Hello, {(got['user_name'].get('content') or {}).get('name', 'stranger')}!")

    async def m_sampling(self, ctx: Any, params: Any) -> dict[str, Any]:
        got = self.ask(params, {"capital_question": sample_request("What is the capital of France?", 100)})
        content = got["capital_question"].get("content") or {}
        return self.text(f"LLM response: {content.get('text', '') if isinstance(content, dict) else content}")

    async def m_roots(self, ctx: Any, params: Any) -> dict[str, Any]:
        got = self.ask(params, {"client_roots": ROOTS_REQUEST})
        return self.text("Roots: " + ", ".join(str(r.get("uri")) for r in got["client_roots"]["roots"]))

    async def m_confirm(self, ctx: Any, params: Any) -> dict[str, Any]:
        state = "confirm-round-1"
        wanted = {"confirm": elicit_request("Please confirm", "ok", "boolean")}
        if params.request_state != state:
            raise NeedInput(wanted, state)
        got = self.ask(params, wanted, state)
        return self.text(f"state-ok: confirmed={(got['confirm'].get('content') or {}).get('ok')}")

    async def m_multiple(self, ctx: Any, params: Any) -> dict[str, Any]:
        state = "multiple-round-1"
        wanted = {
            "user_name": elicit_request("What is your name?", "name"),
            "greeting": sample_request("Generate a greeting", 50),
            "client_roots": ROOTS_REQUEST,
        }
        if params.request_state != state:
            raise NeedInput(wanted, state)
        got = self.ask(params, wanted, state)
        name = (got["user_name"].get("content") or {}).get("name")
        return self.text(f"name={name}, roots={len(got['client_roots']['roots'])}")

    async def m_multi_round(self, ctx: Any, params: Any) -> dict[str, Any]:
        step1 = {"step1": elicit_request("Step 1: What is your name?", "name")}
        step2 = {"step2": elicit_request("Step 2: What is your favorite color?", "color")}
        state = params.request_state or ""
        if state == "round-1":
            got = self.ask(params, step1, state)
            name = (got["step1"].get("content") or {}).get("name", "")
            raise NeedInput(step2, "round-2:" + json.dumps(name))
        if state.startswith("round-2:"):
            got = self.ask(params, step2, state)
            color = (got["step2"].get("content") or {}).get("color")
            return self.text(f"{json.loads(state[len('round-2:'):])} likes {color}")
        raise NeedInput(step1, "round-1")

    async def m_capabilities(self, ctx: Any, params: Any) -> dict[str, Any]:
        caps = (self.wire(params).get("_meta") or {}).get(META_CAPABILITIES) or {}
        wanted: dict[str, Any] = {}
        if "sampling" in caps:
            wanted["question"] = sample_request("What is 2 + 2?", 10)
        if "elicitation" in caps:
            wanted["user_name"] = elicit_request("What is your name?", "name")
        if not wanted:
            return self.text("Nothing to ask: the client declared neither sampling nor elicitation")
        self.ask(params, wanted)
        return self.text("Asked only what the client can answer")

    async def m_missing_capability(self, ctx: Any, params: Any) -> dict[str, Any]:
        caps = (self.wire(params).get("_meta") or {}).get(META_CAPABILITIES) or {}
        if "sampling" not in caps:
            raise MCPError(
                -32021,
                "This tool needs the client capability sampling",
                {"requiredCapabilities": {"sampling": {}}},
            )
        got = self.ask(params, {"ping": sample_request("ping", 10)})
        return self.text(f"Sampling answered: {bool(got)}")

    async def m_log(self, ctx: Any, params: Any, level: str, data: Any) -> None:
        """2026-07-28: a log line only when the request asked for them, at its level or above."""
        wanted = (self.wire(params).get("_meta") or {}).get(META_LOG_LEVEL)
        if wanted in LEVELS and LEVELS.index(level) >= LEVELS.index(wanted):
            await ctx.session.send_log_message(level, data, logger="fixture", related_request_id=ctx.request_id)

    async def m_logging(self, ctx: Any, params: Any) -> dict[str, Any]:
        await self.m_log(ctx, params, "info", "Diagnostic trace logging activated")
        return self.text("Logging evaluated")

    async def m_tool_with_logging(self, ctx: Any, params: Any) -> dict[str, Any]:
        for i, step in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if i:
                await anyio.sleep(0.05)
            await self.m_log(ctx, params, "info", step)
        return self.text("Tool with logging executed successfully")

    def caps(self, params: Any) -> dict[str, Any]:
        return (self.wire(params).get("_meta") or {}).get(META_CAPABILITIES) or {}

    async def m_sampling_tool(self, ctx: Any, params: Any) -> dict[str, Any]:
        if "sampling" not in self.caps(params):
            return self.text("Cannot sample: the client did not declare the sampling capability", is_error=True)
        prompt = str((params.arguments or {}).get("prompt", ""))
        got = self.ask(params, {"sample": sample_request(prompt, 100)})
        content = got["sample"].get("content")
        text = content.get("text") if isinstance(content, dict) else None
        return self.text(f"LLM response: {text if text is not None else content}")

    async def m_form(self, params: Any, message: str, form: dict[str, Any], said: str) -> dict[str, Any]:
        if "elicitation" not in self.caps(params):
            return self.text(self.NO_ELICITATION, is_error=True)
        request = {"method": "elicitation/create", "params": {"message": message, "requestedSchema": form}}
        got = self.ask(params, {"form": request})["form"]
        return self.text(f"{said}: action={got.get('action')}, content={json.dumps(got.get('content'))}")

    async def m_elicitation_form(self, ctx: Any, params: Any) -> dict[str, Any]:
        message = str((params.arguments or {}).get("message", ""))
        return await self.m_form(params, message, USER_FORM, "User response")

    async def m_elicitation_defaults(self, ctx: Any, params: Any) -> dict[str, Any]:
        message = "Please review and update the form fields with defaults"
        return await self.m_form(params, message, DEFAULTS_FORM, "Elicitation completed")

    async def m_elicitation_enums(self, ctx: Any, params: Any) -> dict[str, Any]:
        return await self.m_form(params, "Please choose from the enum fields", ENUMS_FORM, "Elicitation completed")

    async def trigger_tool_change(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        name = self.name("dynamic_tool")
        if self.tools.pop(name, None) is None:
            self.tools[name] = ("Appears and disappears with trigger_tool_change.", NO_ARGS, self.simple_text)
        await self.bus.publish(ToolsListChanged())
        return self.text("Mutation triggered")

    async def trigger_prompt_change(self, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        name = self.name("dynamic_prompt")
        if self.prompts.pop(name, None) is None:
            self.prompts[name] = ("Appears and disappears with trigger_prompt_change.", [], self.simple_prompt)
        await self.bus.publish(PromptsListChanged())
        return self.text("Mutation triggered")

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> dict[str, Any]:
        try:
            return await super().read_resource(ctx, params)
        except MCPError as e:
            if e.error.code != RESOURCE_NOT_FOUND:
                raise
            # 2026-07-28: an unknown resource is invalid params (SEP-2164).
            raise MCPError(types.INVALID_PARAMS, e.error.message, e.error.data) from None

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> dict[str, Any]:
        if params.name != self.name("input_required_result_prompt"):
            return await super().get_prompt(ctx, params)
        wanted = {"user_context": elicit_request("What context should the prompt use?", "context")}
        try:
            got = self.ask(params, wanted)
        except NeedInput as need:
            return need.result()
        context = (got["user_context"].get("content") or {}).get("context", "")
        return {"messages": [self.user({"type": "text", "text": f"Prompt with context: {context}"})]}


def completing(handler: Any, cached: bool = False) -> Any:
    """A 2026-07-28 handler: every result it returns has a `resultType` (`complete` unless it says),
    and lists and reads (`cached`) say how long they may be kept: not at all (the fixture changes)."""

    async def wrapped(ctx: Any, params: Any) -> Any:
        result = await handler(ctx, params)
        if isinstance(result, dict):
            result.setdefault("resultType", "complete")
            if cached and result["resultType"] == "complete":
                result.setdefault("ttlMs", 0)
                result.setdefault("cacheScope", "private")
        return result

    return wrapped


def build_server(fixture: Fixture) -> Server[Any]:
    modern = isinstance(fixture, ModernFixture)
    era = completing if modern else (lambda handler, cached=False: handler)
    server = Server(
        "mcpport-conformance-fixture",
        version="1.0.0",
        instructions="Conformance fixture for mcpport: the names and behaviour the official MCP "
        "conformance suite's server scenarios expect.",
        on_list_tools=era(fixture.list_tools, True),
        on_call_tool=era(fixture.call_tool),
        on_list_resources=era(fixture.list_resources, True),
        on_list_resource_templates=era(fixture.list_templates, True),
        on_read_resource=era(fixture.read_resource, True),
        on_subscribe_resource=fixture.subscribe,
        on_unsubscribe_resource=fixture.unsubscribe,
        on_list_prompts=era(fixture.list_prompts, True),
        on_get_prompt=era(fixture.get_prompt),
        on_completion=era(fixture.complete),
        on_set_logging_level=fixture.set_level,
        on_subscriptions_listen=ListenHandler(fixture.bus) if modern else None,
    )
    if modern:
        # The fixture's requestState is sealed and checked by the SDK: a tampered one is refused.
        security = RequestStateSecurity.ephemeral()
        server.middleware.append(RequestStateBoundary(security, default_audience="mcpport-conformance-fixture"))
    return server


MODERN_VERSIONS = ["2026-07-28"]


def refusal(msg: Any, modern: bool) -> dict[str, Any] | None:
    """What the fixture answers itself, before the SDK sees it (the SDK's stdio server serves the
    era of the first request it gets): in its modern era, `initialize` (naming the versions it
    speaks); in its legacy era, `server/discover` (so the gateway's probe finds a legacy server
    and initializes it, as before the probe)."""
    request = getattr(msg, "message", None)
    method = getattr(request, "method", None)
    if modern and method == "initialize":
        requested = (getattr(request, "params", None) or {}).get("protocolVersion")
        error = {
            "code": -32022,
            "message": "Unsupported protocol version: this server speaks 2026-07-28 only (no initialize)",
            "data": {"supported": MODERN_VERSIONS, "requested": requested},
        }
    elif not modern and method == "server/discover":
        error = {"code": -32601, "message": "Method not found: server/discover (this server speaks the initialize era)"}
    else:
        return None
    return {"jsonrpc": "2.0", "id": request.id, "error": error}


async def serve(server: Server[Any], read_stream: Any, write_stream: Any, options: Any, modern: bool) -> None:
    """Runs `server` behind a filter that answers the other era's opening request itself and, in
    the modern era, puts the tasks extension (`tasks_layer.py`) in front of it."""
    from mcp.shared.message import SessionMessage
    from mcp_types.jsonrpc import jsonrpc_message_adapter

    from tasks_layer import LATER, TasksLayer

    send, receive = anyio.create_memory_object_stream[Any](64)
    lock = anyio.Lock()

    async def write(message: dict[str, Any]) -> None:
        async with lock:
            await write_stream.send(SessionMessage(jsonrpc_message_adapter.validate_python(message)))

    layer = TasksLayer(write) if modern else None

    class Out:
        """The SDK's side of the output: its answers pass through the layer."""

        async def send(self, msg: Any) -> None:
            message = getattr(msg, "message", None)
            if layer is not None and getattr(message, "id", None) in (layer.list_ids | layer.discover_ids):
                dumped = message.model_dump(by_alias=True, exclude_none=True, mode="json")
                msg = SessionMessage(jsonrpc_message_adapter.validate_python(layer.outbound(dumped)))
            async with lock:
                await write_stream.send(msg)

        def __getattr__(self, name: str) -> Any:
            return getattr(write_stream, name)

        async def __aenter__(self) -> Any:
            await write_stream.__aenter__()
            return self

        async def __aexit__(self, *exc: Any) -> Any:
            return await write_stream.__aexit__(*exc)

    async def pump() -> None:
        async with send:
            async for msg in read_stream:
                answer = refusal(msg, modern)
                request = getattr(msg, "message", None)
                if answer is None and layer is not None and hasattr(request, "method"):
                    params = getattr(request, "params", None) or {}
                    answer = await layer.inbound(request.method, getattr(request, "id", None), params)
                    if answer is LATER:
                        continue
                if answer is None:
                    await send.send(msg)
                else:
                    await write(answer)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        await server.run(receive, Out(), options)
        tg.cancel_scope.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prefix-free",
        action="store_true",
        help="drop the leading test_ of tool and prompt names (for the gateway's aggregated endpoint, "
        "with the server registered as 'test')",
    )
    era = parser.add_mutually_exclusive_group()
    era.add_argument(
        "--legacy",
        dest="modern",
        action="store_false",
        help="speak the initialize era, and ask the legacy way (the default)",
    )
    era.add_argument(
        "--modern",
        dest="modern",
        action="store_true",
        help="speak protocol 2026-07-28 only: refuse initialize, answer input_required",
    )
    parser.set_defaults(modern=False)
    args = parser.parse_args()
    prefix = "" if args.prefix_free else "test_"
    fixture = ModernFixture(prefix) if args.modern else Fixture(prefix)
    server = build_server(fixture)
    async with stdio_server() as (read_stream, write_stream):
        options = server.create_initialization_options(
            NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        )
        await serve(server, read_stream, write_stream, options, args.modern)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
