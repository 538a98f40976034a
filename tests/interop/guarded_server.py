"""An MCP server built with the official Python SDK, served over Streamable HTTP the way careful
servers on a LAN are: the SDK's DNS-rebinding guard admits only requests whose `Host` is its own
address (127.0.0.1:PORT) and that carry no foreign `Origin`, and every request must carry
`Authorization: Bearer TOKEN` (TOKEN from the environment, GUARD_TOKEN). Its one tool, `echo`,
answers what it was given. With `--json` it answers every POST with one JSON body and keeps no
session (`json_response` and `stateless_http`), as Home Assistant's `/api/mcp` does.
Usage: python guarded_server.py PORT [--json] (it prints `ready` once it listens).
"""

import os
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

PORT = int(sys.argv[1])
TOKEN = os.environ["GUARD_TOKEN"]

server = MCPServer("guarded")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


guard = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=[f"127.0.0.1:{PORT}"],
    allowed_origins=[f"http://127.0.0.1:{PORT}"],
)
JSON_ONLY = "--json" in sys.argv[2:]
app = server.streamable_http_app(transport_security=guard, json_response=JSON_ONLY, stateless_http=JSON_ONLY)


async def bearer_only(scope, receive, send):
    """Refuses with 401 any HTTP request without the bearer token, before the MCP app sees it."""
    if scope["type"] == "http":
        headers = dict(scope["headers"])
        if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b"a bearer token is required"})
            return
    await app(scope, receive, send)


if __name__ == "__main__":
    print("ready", flush=True)
    uvicorn.run(bearer_only, host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
