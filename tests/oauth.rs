//! OAuth against the real binary: the gateway as a resource server (protected resource
//! metadata, challenges, audiences) and as its own authorization server (`--oauth-builtin`):
//! registration, the owner's consent page, codes, refresh rotation, restarts, revocation from
//! the command line; and per-client policies. Every HTTP exchange is raw, so each status and
//! header is what a client sees. (Real third-party clients and authorization servers are in
//! tests/interop/test_oauth.py.)

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{bin, http, messages_of, Gateway, HttpResponse, Proc, StreamableClient, Watchdog};

const PASSWORD: &str = "correct horse battery";

/// A scratch directory for one test's state, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mcpport-oauth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on now (the gateway's public URL must name its port before it starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gateway with the built-in authorization server on `port`, its state in `scratch`.
fn builtin(scratch: &Scratch, port: u16, extra: &[&str]) -> Gateway {
    let (port_text, url) = (port.to_string(), format!("http://127.0.0.1:{port}"));
    let (state, password) = (scratch.path("state"), scratch.path("password"));
    let mut args = vec!["--port", &port_text, "--oauth-builtin", "--public-url", &url];
    args.extend_from_slice(&[
        "--state-dir",
        &state,
        "--owner-password-file",
        &password,
        "--register-token",
        "edge",
    ]);
    args.extend_from_slice(extra);
    let mut all = vec!["gateway", "--host", "127.0.0.1"];
    all.extend_from_slice(&args);
    let proc = Proc::start(&all);
    proc.wait_log("listening on http");
    Gateway { proc, port }
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&").into_bytes()
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// A hidden input's value on a page.
fn hidden(page: &str, name: &str) -> String {
    let at = page.find(&format!("name={name} value=\"")).unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + name.len() + 13..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A query parameter of a URL (decoding only %XX).
fn query(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
    })
}

/// PKCE: a verifier and its S256 challenge (computed by `openssl`-free means: sha256sum).
fn pkce() -> (String, String) {
    let verifier = "a".repeat(20) + "-._~" + &"Z9".repeat(12);
    let out = Command::new("python3")
        .args(["-c", "import sys,hashlib,base64;print(base64.urlsafe_b64encode(hashlib.sha256(sys.argv[1].encode()).digest()).decode().rstrip('='))", &verifier])
        .output()
        .expect("python3");
    (verifier, String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// One client of the built-in server, through registration and the owner's consent.
struct Client {
    port: u16,
    id: String,
    redirect: String,
}

impl Client {
    fn register(gw: &Gateway, name: &str) -> Client {
        let redirect = "http://127.0.0.1:9/callback".to_string();
        let meta = json!({"client_name": name, "redirect_uris": [redirect], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]});
        let resp = gw.http(
            "POST",
            "/oauth/register",
            &[("Content-Type", "application/json")],
            meta.to_string().as_bytes(),
        );
        assert_eq!(resp.status, 201, "{resp:?}");
        let id = resp.json()["client_id"].as_str().unwrap().to_string();
        Client { port: gw.port, id, redirect }
    }

    /// The consent page of an authorization request for `resource`.
    fn ask(&self, resource: &str, challenge: &str) -> HttpResponse {
        let q = String::from_utf8(form(&[
            ("response_type", "code"),
            ("client_id", &self.id),
            ("redirect_uri", &self.redirect),
            ("state", "st4te"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("scope", "mcp"),
            ("resource", resource),
        ]))
        .unwrap();
        http(self.port, "GET", &format!("/oauth/authorize?{q}"), &[], b"")
    }

    /// The owner's answer to a consent page; the response (a 303 to the client, or a page).
    fn answer(&self, page: &HttpResponse, password: &str, decision: &str) -> HttpResponse {
        let body = form(&[
            ("request", &hidden(&page.body, "request")),
            ("csrf", &hidden(&page.body, "csrf")),
            ("password", password),
            ("decision", decision),
        ]);
        let origin = format!("http://127.0.0.1:{}", self.port);
        http(self.port, "POST", "/oauth/authorize", &[FORM, ("Origin", &origin)], &body)
    }

    /// A code for `resource`, approved by the owner.
    fn code(&self, resource: &str) -> (String, String) {
        let (verifier, challenge) = pkce();
        let page = self.ask(resource, &challenge);
        assert_eq!(page.status, 200, "{page:?}");
        let back = self.answer(&page, PASSWORD, "approve");
        assert_eq!(back.status, 303, "{back:?}");
        let location = back.header("Location").unwrap();
        assert!(location.starts_with(&self.redirect), "{location}");
        assert_eq!(query(&location, "state").as_deref(), Some("st4te"));
        assert_eq!(query(&location, "iss"), Some(format!("http://127.0.0.1:{}", self.port)));
        (query(&location, "code").expect("a code"), verifier)
    }

    fn token(&self, pairs: &[(&str, &str)]) -> HttpResponse {
        let mut all = vec![("client_id", self.id.as_str())];
        all.extend_from_slice(pairs);
        http(self.port, "POST", "/oauth/token", &[FORM], &form(&all))
    }

    fn exchange(&self, code: &str, verifier: &str) -> HttpResponse {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect),
            ("code_verifier", verifier),
        ])
    }

    /// Access and refresh tokens for `resource`.
    fn tokens(&self, resource: &str) -> (String, String) {
        let (code, verifier) = self.code(resource);
        let resp = self.exchange(&code, &verifier);
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp.header("Cache-Control").is_some_and(|c| c.contains("no-store")));
        let t = resp.json();
        assert_eq!((t["token_type"].as_str(), t["scope"].as_str()), (Some("Bearer"), Some("mcp")));
        (t["access_token"].as_str().unwrap().into(), t["refresh_token"].as_str().unwrap().into())
    }
}

/// A Streamable HTTP client with a bearer token.
fn mcp(port: u16, path: &str, token: &str) -> StreamableClient {
    let mut c = StreamableClient::new(port, path, "2025-06-18");
    c.bearer = Some(format!("Bearer {token}"));
    c
}

fn tool_names(c: &StreamableClient) -> Vec<String> {
    let list = c.call(1, "tools/list", json!({}));
    list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn challenge_of(resp: &HttpResponse) -> String {
    resp.header("WWW-Authenticate").unwrap_or_else(|| panic!("no challenge in {resp:?}"))
}

/// Every MCP endpoint is its own protected resource: its metadata names it and the server, and
/// a request without a token is told where that metadata is.
#[test]
fn every_endpoint_names_its_resource_and_where_to_get_a_token() {
    let _w = Watchdog::new("oauth_prm", Duration::from_secs(40));
    let scratch = Scratch::new("prm");
    let port = free_port();
    let gw = builtin(&scratch, port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    for (path, resource) in [
        ("", base.clone()),
        ("/mcp", format!("{base}/mcp")),
        ("/sse", format!("{base}/sse")),
        ("/servers/pi/mcp", format!("{base}/servers/pi/mcp")),
        ("/servers/pi/sse", format!("{base}/servers/pi/sse")),
    ] {
        let resp = gw.http("GET", &format!("/.well-known/oauth-protected-resource{path}"), &[], b"");
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        let prm = resp.json();
        assert_eq!(prm["resource"], json!(resource));
        assert_eq!(prm["authorization_servers"], json!([base]));
        assert_eq!(prm["scopes_supported"], json!(["mcp"]));
    }
    assert_eq!(gw.http("GET", "/.well-known/oauth-protected-resource/nope", &[], b"").status, 404);
    for (method, path, resource_path) in [
        ("POST", "/mcp", "/mcp"),
        ("GET", "/sse", "/sse"),
        ("POST", "/messages/?session_id=x", "/sse"),
        ("POST", "/servers/pi/mcp", "/servers/pi/mcp"),
        ("GET", "/servers/pi/sse", "/servers/pi/sse"),
        ("POST", "/servers/pi/messages/?session_id=x", "/servers/pi/sse"),
        ("GET", "/status.json", ""),
    ] {
        let resp = gw.http(method, path, &[("Content-Type", "application/json")], b"{}");
        assert_eq!(resp.status, 401, "{method} {path}: {resp:?}");
        let expected = format!(
            "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource{resource_path}\", scope=\"mcp\""
        );
        assert_eq!(challenge_of(&resp), expected, "{method} {path}");
        assert_eq!(resp.json()["error"], "invalid_request");
    }
    let bad = gw.http("POST", "/mcp", &[("Authorization", "Bearer not.a.jwt")], b"{}");
    assert_eq!(bad.status, 401);
    assert!(challenge_of(&bad).starts_with("Bearer error=\"invalid_token\", error_description="), "{bad:?}");
    let meta = gw.http("GET", "/.well-known/oauth-authorization-server", &[], b"").json();
    assert_eq!(meta["issuer"], json!(base));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], json!(true));
    assert_eq!(meta["client_id_metadata_document_supported"], json!(true));
    // Edges keep their own tokens: OAuth is for clients.
    let _pi = gw.register("pi", &["--header", "Authorization: Bearer edge"]);
    gw.wait_servers(1, Duration::from_secs(20));
}

/// The whole flow with the built-in server: registration, consent, code, token, calls; a token
/// is for its resource only; a code is good once; refresh tokens rotate and a replayed one
/// revokes its family.
#[test]
fn the_builtin_server_issues_tokens_for_one_resource_and_rotates_refresh_tokens() {
    let _w = Watchdog::new("oauth_flow", Duration::from_secs(60));
    let scratch = Scratch::new("flow");
    let port = free_port();
    let gw = builtin(&scratch, port, &[]);
    let _pi = gw.register("pi", &["--header", "Authorization: Bearer edge"]);
    gw.wait_servers(1, Duration::from_secs(20));
    let client = Client::register(&gw, "Test client");
    let base = format!("http://127.0.0.1:{port}");
    // The consent page names the client, where its code goes, and the servers.
    let (_, challenge) = pkce();
    let page = client.ask(&format!("{base}/mcp"), &challenge);
    assert!(page.body.contains("Test client") && page.body.contains("<code>pi</code>"), "{}", page.body);
    assert!(page.body.contains("<code>127.0.0.1</code>"));
    assert_eq!(page.header("X-Frame-Options").as_deref(), Some("DENY"));
    // Deny: the client hears access_denied.
    let denied = client.answer(&page, PASSWORD, "deny");
    assert_eq!(query(&denied.header("Location").unwrap(), "error").as_deref(), Some("access_denied"));
    // A code, exchanged once; the second time it is refused, and what it gave is revoked.
    let (code, verifier) = client.code(&format!("{base}/mcp"));
    let first = client.exchange(&code, &verifier);
    assert_eq!(first.status, 200, "{first:?}");
    let (access, refresh) = (
        first.json()["access_token"].as_str().unwrap().to_string(),
        first.json()["refresh_token"].as_str().unwrap().to_string(),
    );
    let mut c = mcp(port, "/mcp", &access);
    c.initialize(json!({}));
    assert!(tool_names(&c).contains(&"pi_echo".to_string()));
    let echo = c.call(2, "tools/call", json!({"name": "pi_echo", "arguments": {"text": "hi"}}));
    assert_eq!(echo["result"]["content"][0]["text"], "hi", "{echo}");
    let replay = client.exchange(&code, &verifier);
    assert_eq!((replay.status, replay.json()["error"].as_str()), (400, Some("invalid_grant")));
    let after_replay = client.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(after_replay.status, 400, "the replayed code's refresh family is revoked: {after_replay:?}");
    // A wrong verifier, a wrong redirect: refused.
    let (code, verifier) = client.code(&format!("{base}/mcp"));
    let wrong = client.token(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &client.redirect),
        ("code_verifier", &"b".repeat(43)),
    ]);
    assert_eq!(wrong.json()["error"], "invalid_grant");
    let _ = verifier;
    // A token for one server's endpoint does not open the aggregated one.
    let (pi_token, refresh) = client.tokens(&format!("{base}/servers/pi/mcp"));
    let mut pi = mcp(port, "/servers/pi/mcp", &pi_token);
    pi.initialize(json!({}));
    let elsewhere =
        mcp(port, "/mcp", &pi_token).try_post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).unwrap();
    assert_eq!(elsewhere.status, 401);
    assert!(challenge_of(&elsewhere).contains("not for this resource"), "{elsewhere:?}");
    // Refresh: a new pair; the old refresh token coming back revokes the family.
    let next = client.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(next.status, 200, "{next:?}");
    let newer = next.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(newer, refresh);
    let reused = client.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(reused.json()["error"], "invalid_grant");
    let revoked = client.token(&[("grant_type", "refresh_token"), ("refresh_token", &newer)]);
    assert_eq!(revoked.json()["error"], "invalid_grant", "the whole family went: {revoked:?}");
    // Another client cannot use this client's refresh tokens, nor its codes.
    let other = Client::register(&gw, "Other");
    let (code, verifier) = client.code(&format!("{base}/mcp"));
    let stolen = other.token(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &other.redirect),
        ("code_verifier", &verifier),
    ]);
    assert_eq!(stolen.json()["error"], "invalid_grant");
    // The access token of the replayed code's family is refused too; a fresh one opens /metrics.
    let replayed =
        mcp(port, "/mcp", &access).try_post(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"})).unwrap();
    assert!(replayed.status == 401 && challenge_of(&replayed).contains("revoked"), "{replayed:?}");
    let (fresh, _) = client.tokens(&format!("{base}/mcp"));
    let metrics = gw.http("GET", "/metrics", &[("Authorization", &format!("Bearer {fresh}"))], b"");
    assert!(metrics.body.contains("mcpport_oauth_tokens_total{result=\"accepted\"}"), "{metrics:?}");
}

/// A restart loses no client and no refresh token, and keeps the signing key; a revocation from
/// the command line applies to a running gateway at the next request.
#[test]
fn a_restart_keeps_clients_and_tokens_and_the_command_line_revokes() {
    let _w = Watchdog::new("oauth_restart", Duration::from_secs(60));
    let scratch = Scratch::new("restart");
    let port = free_port();
    let gw = builtin(&scratch, port, &[]);
    let client = Client::register(&gw, "Survivor");
    let base = format!("http://127.0.0.1:{port}");
    let (access, refresh) = client.tokens(&format!("{base}/mcp"));
    drop(gw);
    let gw = builtin(&scratch, port, &[]);
    let mut c = mcp(port, "/mcp", &access);
    c.initialize(json!({}));
    let next = client.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(next.status, 200, "the refresh token survived the restart: {next:?}");
    let (access, refresh) = (
        next.json()["access_token"].as_str().unwrap().to_string(),
        next.json()["refresh_token"].as_str().unwrap().to_string(),
    );
    let list =
        Command::new(bin()).args(["oauth", "list", "--state-dir", &scratch.path("state")]).output().unwrap();
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed["clients"][0]["client_id"], json!(client.id));
    assert_eq!(listed["clients"][0]["refresh_tokens"], json!(1));
    assert!(listed["clients"][0]["approved"].is_u64());
    let revoke = Command::new(bin())
        .args(["oauth", "revoke", "--state-dir", &scratch.path("state"), &client.id])
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{revoke:?}");
    let refused =
        mcp(port, "/mcp", &access).try_post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).unwrap();
    assert_eq!(refused.status, 401);
    assert!(challenge_of(&refused).contains("revoked"), "{refused:?}");
    let gone = client.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
    assert_eq!(gone.status, 401, "a revoked client is forgotten: {gone:?}");
    drop(gw);
}

/// The consent page holds against the usual attacks: a wrong password (limited, then 429), a
/// request id without its CSRF token, a post from another origin, an unknown redirect URI.
#[test]
fn the_consent_page_refuses_guesses_forgeries_and_strange_redirects() {
    let _w = Watchdog::new("oauth_consent", Duration::from_secs(40));
    let scratch = Scratch::new("consent");
    let port = free_port();
    let gw = builtin(&scratch, port, &[]);
    let client = Client::register(&gw, "<script>alert(1)</script>");
    let base = format!("http://127.0.0.1:{port}");
    let (_, challenge) = pkce();
    let page = client.ask(&format!("{base}/mcp"), &challenge);
    assert!(
        !page.body.contains("<script>alert") && page.body.contains("&lt;script&gt;"),
        "the name is escaped"
    );
    let forged = http(
        port,
        "POST",
        "/oauth/authorize",
        &[FORM],
        &form(&[
            ("request", &hidden(&page.body, "request")),
            ("csrf", "guess"),
            ("password", PASSWORD),
            ("decision", "approve"),
        ]),
    );
    assert_eq!(forged.status, 400, "{forged:?}");
    let foreign = http(
        port,
        "POST",
        "/oauth/authorize",
        &[FORM, ("Origin", "https://evil.example")],
        &form(&[
            ("request", &hidden(&page.body, "request")),
            ("csrf", &hidden(&page.body, "csrf")),
            ("password", PASSWORD),
            ("decision", "approve"),
        ]),
    );
    assert_eq!(foreign.status, 403, "{foreign:?}");
    // Three wrong passwords use a request up; five from one address lock it out for a while.
    for attempt in 1..=3 {
        let wrong = client.answer(&page, "not the password", "approve");
        assert_eq!(wrong.status, 401, "{wrong:?}");
        let says = if attempt < 3 { "not the owner" } else { "start again from the client" };
        assert!(wrong.body.contains(says), "attempt {attempt}: {}", wrong.body);
    }
    assert_eq!(client.answer(&page, PASSWORD, "approve").status, 400, "the used-up request is gone");
    let page = client.ask(&format!("{base}/mcp"), &challenge);
    for _ in 0..2 {
        assert_eq!(client.answer(&page, "not the password", "approve").status, 401);
    }
    let limited = client.answer(&page, PASSWORD, "approve");
    assert_eq!(limited.status, 429, "even the right password waits now: {limited:?}");
    let q = format!("response_type=code&client_id={}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&code_challenge={challenge}&code_challenge_method=S256", client.id);
    let strange = http(port, "GET", &format!("/oauth/authorize?{q}"), &[], b"");
    assert_eq!(strange.status, 400, "no redirect to an unregistered URI: {strange:?}");
    assert!(strange.header("Location").is_none());
    let unknown = http(port, "GET", "/oauth/authorize?response_type=code&client_id=nobody", &[], b"");
    assert_eq!(unknown.status, 400);
    let plain = format!(
        "response_type=code&client_id={}&code_challenge={challenge}&code_challenge_method=plain",
        client.id
    );
    // A client never approved gets its errors on a page: the gateway is no open redirector.
    let resp = http(port, "GET", &format!("/oauth/authorize?{plain}"), &[], b"");
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.header("Location").is_none() && resp.body.contains("invalid_request"), "{resp:?}");
    let bad_redirect = json!({"redirect_uris": ["javascript:alert(1)"]});
    let resp = gw.http(
        "POST",
        "/oauth/register",
        &[("Content-Type", "application/json")],
        bad_redirect.to_string().as_bytes(),
    );
    assert_eq!((resp.status, resp.json()["error"].as_str()), (400, Some("invalid_redirect_uri")));
    // Registrations are open, but not without end: ten per address per ten minutes
    // (the first client and the refused one above counted).
    for _ in 0..8 {
        Client::register(&gw, "another");
    }
    let meta = json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"});
    let more = gw.http(
        "POST",
        "/oauth/register",
        &[("Content-Type", "application/json")],
        meta.to_string().as_bytes(),
    );
    assert_eq!(more.status, 429, "{more:?}");
}

/// Policies: two static tokens see different tools from the same gateway, neither can call what
/// it does not see (the error of an unknown tool), a server shut out is a 404, and SIGHUP
/// applies a new policy to everyone's next request.
#[test]
fn policies_show_each_client_its_own_tools_and_reload_on_sighup() {
    let _w = Watchdog::new("oauth_policy", Duration::from_secs(60));
    let scratch = Scratch::new("policy");
    let sha = |t: &str| {
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        out.stdin.as_ref().unwrap().write_all(t.as_bytes()).unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()[..64].to_string()
    };
    let policy = |alice_allows: &str| {
        json!({"default": "deny", "rules": [
            {"match": {"token_sha256": sha("alice")}, "allow": [alice_allows], "deny": ["pi/sleep"]},
            {"match": {"token_sha256": sha("bob")}, "allow": ["nas/*"]},
            {"match": {"token_sha256": sha("ops")}, "allow": ["*"]}
        ]})
        .to_string()
    };
    std::fs::write(scratch.path("policy.json"), policy("pi/*")).unwrap();
    let path = scratch.path("policy.json");
    let gw = Gateway::start(&[
        "--auth-token",
        "alice",
        "--auth-token",
        "bob",
        "--auth-token",
        "ops",
        "--register-token",
        "edge",
        "--policy",
        &path,
    ]);
    let _pi = gw.register("pi", &["--header", "Authorization: Bearer edge"]);
    let _nas = gw.register("nas", &["--header", "Authorization: Bearer edge"]);
    gw.wait_servers(2, Duration::from_secs(20));
    let mut alice = mcp(gw.port, "/mcp", "alice");
    alice.initialize(json!({}));
    let mut bob = mcp(gw.port, "/mcp", "bob");
    bob.initialize(json!({}));
    let (a, b) = (tool_names(&alice), tool_names(&bob));
    assert!(
        a.contains(&"pi_echo".into())
            && !a.contains(&"pi_sleep".into())
            && !a.iter().any(|t| t.starts_with("nas_")),
        "{a:?}"
    );
    assert!(b.contains(&"nas_echo".into()) && !b.iter().any(|t| t.starts_with("pi_")), "{b:?}");
    let denied = bob.call(2, "tools/call", json!({"name": "pi_echo", "arguments": {"text": "x"}}));
    let unknown = bob.call(3, "tools/call", json!({"name": "pi_nonexistent", "arguments": {}}));
    assert_eq!(denied["error"]["code"], unknown["error"]["code"], "{denied} {unknown}");
    assert_eq!(denied["error"]["message"], "Unknown tool: pi_echo");
    let hidden_sleep = alice.call(4, "tools/call", json!({"name": "pi_sleep", "arguments": {"seconds": 0}}));
    assert_eq!(hidden_sleep["error"]["message"], "Unknown tool: pi_sleep");
    // A server shut out entirely does not exist for bob: its endpoint is a 404.
    let mut to_pi = mcp(gw.port, "/servers/pi/mcp", "bob");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    assert_eq!(to_pi.post(&init).status, 404);
    // Alice on pi's own endpoint sees pi's tools under their own names, sleep filtered out.
    let mut alice_pi = mcp(gw.port, "/servers/pi/mcp", "alice");
    alice_pi.initialize(json!({}));
    let own = tool_names(&alice_pi);
    assert!(own.contains(&"echo".into()) && !own.contains(&"sleep".into()), "{own:?}");
    let sleep = alice_pi.call(5, "tools/call", json!({"name": "sleep", "arguments": {"seconds": 0}}));
    assert_eq!(sleep["error"]["message"], "Unknown tool: sleep");
    let odd = alice_pi.call(7, "tools/call", json!({"name": ["sleep"], "arguments": {}}));
    assert!(odd["error"]["message"].as_str().unwrap().contains("must be a string"), "{odd}");
    // Bob's view of the gateway names no server he cannot see, nor where servers connect from.
    let listed = bob.call(8, "tools/call", json!({"name": "list_servers", "arguments": {}}));
    let servers = &listed["result"]["structuredContent"]["servers"];
    assert_eq!(servers.as_array().map(Vec::len), Some(1), "{listed}");
    assert!(servers[0]["name"] == "nas" && servers[0].get("remote").is_none(), "{listed}");
    // A new policy: alice loses pi, on her next request, without reconnecting.
    std::fs::write(&path, policy("nas/*")).unwrap();
    crate::util::signal(gw.proc.pid(), libc::SIGHUP);
    gw.proc.wait_log("reloaded the policy");
    let a = tool_names(&alice);
    assert!(a.contains(&"nas_echo".into()) && !a.iter().any(|t| t.starts_with("pi_")), "{a:?}");
    to_pi = alice_pi;
    let gone = to_pi.post(&json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}));
    assert_eq!(gone.status, 404, "{gone:?}");
    // A policy that does not parse leaves the one in force.
    std::fs::write(&path, "{not json").unwrap();
    crate::util::signal(gw.proc.pid(), libc::SIGHUP);
    gw.proc.wait_log("the policy in force is kept");
    assert!(tool_names(&alice).contains(&"nas_echo".into()));
    // The operator views show every server: not to a client a policy restricts.
    for path in ["/metrics", "/servers", "/status.json"] {
        assert_eq!(gw.http("GET", path, &[("Authorization", "Bearer alice")], b"").status, 403, "{path}");
    }
    let metrics = gw.http("GET", "/metrics", &[("Authorization", "Bearer ops")], b"").body;
    assert!(metrics.contains("mcpport_policy_decisions_total{kind=\"tool\",decision=\"deny\"}"), "{metrics}");
    let _ = messages_of;
}

/// Serves the document `body` makes of its own URL (`…/client.json`), for `n` requests; the URL.
fn serve_document(body: impl FnOnce(&str) -> String, n: usize) -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/client.json", listener.local_addr().unwrap().port());
    let doc = body(&url);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut [0u8; 2048]);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}",
                doc.len()
            );
            let _ = s.write_all(answer.as_bytes());
        }
    });
    url
}

/// A client that names itself by the URL of its metadata document (Client ID Metadata
/// Document): the gateway fetches it, shows its name, and sends the code only to a redirect URI
/// it lists; a document that names another client id is refused.
#[test]
fn a_client_id_metadata_document_is_fetched_and_must_name_itself() {
    let _w = Watchdog::new("oauth_cimd", Duration::from_secs(40));
    let scratch = Scratch::new("cimd");
    let port = free_port();
    let _gw = builtin(&scratch, port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let redirect = "http://127.0.0.1:9/cb";
    let body = |client_id: &str| {
        json!({"client_id": client_id, "client_name": "Metadata Client", "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none"})
        .to_string()
    };
    // A document that names another id: refused with an error page, no redirect.
    let (_, challenge) = pkce();
    let liar = Client {
        port,
        id: serve_document(|_| body("https://elsewhere.example/c.json"), 1),
        redirect: redirect.into(),
    };
    let page = liar.ask(&format!("{base}/mcp"), &challenge);
    assert_eq!(page.status, 400, "{page:?}");
    assert!(page.body.contains("names another client_id") && page.header("Location").is_none(), "{page:?}");
    // An honest one: its name on the page, a code, a token that works.
    let client = Client { port, id: serve_document(body, 4), redirect: redirect.into() };
    let page = client.ask(&format!("{base}/mcp"), &challenge);
    assert!(page.body.contains("Metadata Client"), "{page:?}");
    let (access, _) = client.tokens(&format!("{base}/mcp"));
    mcp(port, "/mcp", &access).initialize(json!({}));
}
