"""OAuth with real peers.

- The official MCP Python SDK's OAuth client (`OAuthClientProvider`) completes the whole flow
  against `mcpport gateway --oauth-builtin`: a 401, protected resource metadata, authorization
  server metadata, dynamic registration, the owner's approval on the consent page (filled in
  here as the owner would), the code exchange with PKCE, then tool calls; the gateway restarts,
  and the same client refreshes its token and calls again; the code and the old refresh token,
  replayed, are refused.
- oidc-provider (a certified OpenID provider, from npm) as an external issuer
  (`--oauth-issuer`): its JWT access tokens for the right resource open the gateway, whatever
  the algorithm (RS256, PS256, ES256, EdDSA); a token for another resource, an expired one, one
  from an issuer the gateway does not trust, one with a broken signature and one with
  `alg: none` get 401; one without the scope gets 403 `insufficient_scope`.
"""

import base64
import http.client
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")
import httpx2  # noqa: E402
from mcp.client.auth import OAuthClientProvider, TokenStorage  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata  # noqa: E402

from conftest import BIN, NODE_MODULES, _session, free_port, need_node_modules  # noqa: E402

pytestmark = pytest.mark.anyio

PASSWORD = "owner password for the tests"
SAMPLE = f"{BIN} sample-server --test-tools"
HERE = Path(__file__).resolve().parent


class Memory(TokenStorage):
    """What a client keeps between runs: its registration and its tokens."""

    def __init__(self):
        self.tokens, self.client_info = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def owner_approves(url, password=PASSWORD):
    """What the owner does in a browser: opens the authorization URL, types the password, allows.
    Returns the redirect's query (the code, state and iss), read off the 303 without following it."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        page = resp.read().decode()
    fields = dict(re.findall(r'type=hidden name=(\w+) value="([^"]*)"', page))
    assert {"request", "csrf"} <= set(fields), page
    assert "SDK test client" in page, "the page names the client"
    parts = urllib.parse.urlsplit(url)
    body = urllib.parse.urlencode({**fields, "password": password, "decision": "approve"})
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    origin = f"{parts.scheme}://{parts.netloc}"
    conn.request("POST", "/oauth/authorize", body, {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin})
    resp = conn.getresponse()
    location = resp.getheader("Location")
    conn.close()
    assert resp.status == 303, (resp.status, location)
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def start_builtin(procs, port, tmp, name):
    url = f"http://127.0.0.1:{port}"
    argv = [BIN, "gateway", "--host", "127.0.0.1", "--port", str(port), "--oauth-builtin", "--public-url", url,
            "--state-dir", str(tmp / "state"), "--owner-password-file", str(tmp / "password"), "--register-token", "edge"]
    gw = procs(name, argv)
    gw.wait_for(r"listening on http://127\.0\.0\.1")
    return gw


def start_edge(procs, port, name="pi"):
    url = f"ws://127.0.0.1:{port}/mcp/register"
    argv = [BIN, "register", "--stdio", SAMPLE, "--gateway-url", url, "--server-name", name, "--header", "Authorization: Bearer edge"]
    edge = procs(f"register-{name}", argv)
    edge.wait_for("registered as", timeout=20)
    return edge


def token_request(port, pairs):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/oauth/token", data=urllib.parse.urlencode(pairs).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_the_sdk_client_completes_the_flow_survives_a_restart_and_refreshes(procs, tmp_path):
    (tmp_path / "password").write_text(PASSWORD + "\n")
    port = free_port()
    gw = start_builtin(procs, port, tmp_path, "gateway")
    start_edge(procs, port)
    storage, seen = Memory(), {}

    async def redirect_handler(url):
        seen["url"] = url

    async def callback_handler():
        params = owner_approves(seen["url"])
        seen["code"] = params["code"]
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    metadata = OAuthClientMetadata(client_name="SDK test client", redirect_uris=["http://127.0.0.1:9/callback"],
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                   token_endpoint_auth_method="none")

    def provider(cls=OAuthClientProvider):
        return cls(server_url=f"http://127.0.0.1:{port}/mcp", client_metadata=metadata, storage=storage,
                   redirect_handler=redirect_handler, callback_handler=callback_handler)

    async def call_echo(auth, text):
        async with httpx2.AsyncClient(auth=auth, timeout=20) as http:
            async with _session(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http), None) as s:
                names = [t.name for t in (await s.list_tools()).tools]
                assert "pi_echo" in names, names
                result = await s.call_tool("pi_echo", {"text": text})
                return result.content[0].text

    assert await call_echo(provider(), "first") == "first"
    assert storage.client_info.client_id.startswith("mcpc_") and storage.tokens.refresh_token
    assert "resource=http%3A%2F%2F127.0.0.1" in seen["url"] and "code_challenge_method=S256" in seen["url"]
    first_refresh = storage.tokens.refresh_token

    # The gateway restarts: the client, its refresh token and the signing key are still there.
    gw.stop()
    start_builtin(procs, port, tmp_path, "gateway-again")
    start_edge(procs, port, "pi")

    class Expired(OAuthClientProvider):
        """The stored access token has expired: the SDK refreshes it before its first request."""

        async def _initialize(self):
            await super()._initialize()
            self.context.token_expiry_time = time.time() - 1

    seen.pop("url")
    assert await call_echo(provider(Expired), "after the restart") == "after the restart"
    assert "url" not in seen, "no new authorization: the refresh token did it"
    assert storage.tokens.refresh_token != first_refresh, "the refresh token rotated"

    # Replays: the code, and the refresh token the rotation retired.
    client_id = storage.client_info.client_id
    status, body = token_request(port, {"grant_type": "authorization_code", "code": seen["code"], "client_id": client_id,
                                        "redirect_uri": "http://127.0.0.1:9/callback", "code_verifier": "x" * 43})
    assert (status, body["error"]) == (400, "invalid_grant"), body
    status, body = token_request(port, {"grant_type": "refresh_token", "refresh_token": first_refresh, "client_id": client_id})
    assert (status, body["error"]) == (400, "invalid_grant"), body
    # The reuse revoked the family: the current refresh token is dead too.
    status, body = token_request(port, {"grant_type": "refresh_token", "refresh_token": storage.tokens.refresh_token,
                                        "client_id": client_id})
    assert status == 400, body


# ---- an external issuer: oidc-provider ----


@pytest.fixture(scope="module")
def issuers(procs):
    """Two oidc-provider instances: the one the gateway trusts, and a stranger."""
    need_node_modules()
    urls = []
    for name in ("issuer", "stranger"):
        p = procs(name, ["node", str(HERE / "oidc_issuer.mjs"), str(NODE_MODULES)])
        urls.append(p.wait_for(r"listening on (http://127\.0\.0\.1:\d+)", timeout=20)[1])
    return urls


@pytest.fixture(scope="module")
def external(procs, issuers):
    """A gateway trusting the first issuer, with `pi` registered; its port."""
    port = free_port()
    gw = procs("gateway-external", [BIN, "gateway", "--host", "127.0.0.1", "--port", str(port), "--oauth-issuer", issuers[0],
                                    "--public-url", f"http://127.0.0.1:{port}", "--register-token", "edge"])
    gw.wait_for(r"listening on http://127\.0\.0\.1")
    start_edge(procs, port)
    return port


def client_credentials(issuer, client, resource, scope="mcp"):
    auth = base64.b64encode(f"{client}:secret".encode()).decode()
    body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": scope, "resource": resource}).encode()
    req = urllib.request.Request(f"{issuer}/token", data=body, method="POST",
                                 headers={"Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["access_token"]


def post(port, token, path="/mcp"):
    """An initialize with `token`: (status, WWW-Authenticate, JSON body)."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, json.dumps(init), {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                                                   "Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, resp.getheader("WWW-Authenticate"), body


@pytest.mark.parametrize("client", ["rs256", "ps256", "es256", "eddsa"])
async def test_tokens_of_a_trusted_issuer_open_the_gateway(issuers, external, client):
    token = client_credentials(issuers[0], client, f"http://127.0.0.1:{external}/mcp")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=20) as http:
        async with _session(streamable_http_client(f"http://127.0.0.1:{external}/mcp", http_client=http), None) as s:
            assert "pi_echo" in [t.name for t in (await s.list_tools()).tools]
            assert (await s.call_tool("pi_echo", {"text": client})).content[0].text == client


def tampered(token):
    header, claims, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    return f"{header}.{claims}.{flipped}"


def unsigned(token):
    _, claims, _ = token.split(".")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt"}).encode()).decode().rstrip("=")
    return f"{header}.{claims}."


async def test_wrong_tokens_are_refused_with_the_right_challenge(issuers, external):
    resource = f"http://127.0.0.1:{external}/mcp"
    good = client_credentials(issuers[0], "rs256", resource)
    assert post(external, good)[0] == 200
    short = client_credentials(issuers[0], "short", resource)
    cases = {
        "another resource": client_credentials(issuers[0], "rs256", f"http://127.0.0.1:{external}/servers/other/mcp"),
        "an untrusted issuer": client_credentials(issuers[1], "rs256", resource),
        "a broken signature": tampered(good),
        "alg none": unsigned(good),
    }
    for what, token in cases.items():
        status, challenge, _ = post(external, token)
        assert status == 401, what
        assert challenge.startswith('Bearer error="invalid_token"'), (what, challenge)
        assert f'resource_metadata="http://127.0.0.1:{external}/.well-known/oauth-protected-resource/mcp"' in challenge
    time.sleep(7)  # the short token lived a second; the gateway forgives 5 s of clock skew
    status, challenge, _ = post(external, short)
    assert status == 401 and "expired" in challenge, challenge
    no_scope = client_credentials(issuers[0], "rs256", resource, scope="other")
    status, challenge, body = post(external, no_scope)
    assert status == 403, body
    assert challenge.startswith('Bearer error="insufficient_scope"') and 'scope="mcp"' in challenge, challenge
    assert json.loads(body)["error"] == "insufficient_scope"
    # The metadata names the issuer as the way to get a token.
    with urllib.request.urlopen(f"http://127.0.0.1:{external}/.well-known/oauth-protected-resource/mcp", timeout=10) as r:
        prm = json.loads(r.read())
    assert prm["authorization_servers"] == [issuers[0]] and prm["resource"] == resource
