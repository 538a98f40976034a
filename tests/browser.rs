//! What a browser meets: CORS preflights answered from the head without a token, 403 and no
//! CORS headers for an origin that is not allowed, the CORS headers on every answer to an allowed
//! one (JSON, SSE streams, refusals), and the status page with its JSON, which needs the
//! gateway's token like every client endpoint.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::util::{messages_of, Gateway, HttpResponse, SseReader, StreamableClient, Watchdog, WAIT};

const APP: &str = "http://app.example";
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const GZIP: (&str, &str) = ("Accept-Encoding", "gzip, deflate");
const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

fn preflight(gw: &Gateway, path: &str, origin: &str) -> HttpResponse {
    let headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization,content-type,mcp-session-id,mcp-param-region"),
    ];
    gw.http("OPTIONS", path, &headers, b"")
}

/// Whether a response carries any CORS header.
fn has_cors(resp: &HttpResponse) -> bool {
    resp.head.lines().any(|l| l.to_ascii_lowercase().starts_with("access-control-"))
}

/// Asserts the headers every answer to an allowed origin carries.
fn assert_cors(resp: &HttpResponse, origin: &str, what: &str) {
    assert_eq!(resp.header("Access-Control-Allow-Origin").as_deref(), Some(origin), "{what}: {resp:?}");
    assert_eq!(resp.header("Vary").as_deref(), Some("Origin"), "{what}");
    let exposed = resp.header("Access-Control-Expose-Headers").unwrap_or_default();
    for h in ["Mcp-Session-Id", "WWW-Authenticate", "MCP-Protocol-Version"] {
        assert!(exposed.contains(h), "{what}: {h} not exposed in {exposed:?}");
    }
}

#[test]
fn preflights_need_no_token_and_name_no_server() {
    let _w = Watchdog::new("preflights", Duration::from_secs(30));
    let gw = Gateway::start(&["--auth-token", "tok", "--allow-origin", APP]);
    for path in
        ["/mcp", "/sse", "/messages/", "/servers/nobody/mcp", "/servers/nobody/sse", "/status.json", "/"]
    {
        let resp = preflight(&gw, path, APP);
        assert_eq!(resp.status, 204, "{path}: {resp:?}");
        assert!(resp.body.is_empty(), "{path}");
        assert_cors(&resp, APP, path);
        let methods = resp.header("Access-Control-Allow-Methods").unwrap();
        assert_eq!(methods, "GET, POST, DELETE, OPTIONS");
        let headers = resp.header("Access-Control-Allow-Headers").unwrap();
        for h in ["Authorization", "Content-Type", "Mcp-Session-Id", "MCP-Protocol-Version", "Last-Event-ID"]
        {
            assert!(headers.contains(h), "{path}: {h} not allowed in {headers:?}");
        }
        assert!(headers.contains("mcp-param-region"), "the asked Mcp-Param header is echoed: {headers}");
        assert!(resp.header("Access-Control-Max-Age").is_some());
    }
    // A loopback page is allowed without --allow-origin, as in the Origin check.
    assert_cors(&preflight(&gw, "/mcp", "http://localhost:5173"), "http://localhost:5173", "loopback");

    // Another origin: 403, and nothing that would let its page read the answer.
    for path in ["/mcp", "/servers/nobody/mcp", "/status.json"] {
        let resp = preflight(&gw, path, "http://evil.example");
        assert_eq!(resp.status, 403, "{path}: {resp:?}");
        assert!(!has_cors(&resp), "{path}: {resp:?}");
        assert!(resp.header("Vary").is_none());
    }
    // Edge registration is no browser route: its OPTIONS is the usual 401 (then 405).
    let reg = preflight(&gw, "/mcp/register", APP);
    assert_eq!(reg.status, 401, "{reg:?}");
    assert!(!has_cors(&reg));
}

#[test]
fn answers_to_an_allowed_origin_carry_cors_headers() {
    let _w = Watchdog::new("cors_answers", Duration::from_secs(30));
    let gw = Gateway::start(&["--auth-token", "tok", "--allow-origin", APP]);
    let origin = ("Origin", APP);
    let auth = ("Authorization", "Bearer tok");

    // Refused for want of a token: the page can read the 401 and its WWW-Authenticate.
    let refused = gw.http("POST", "/mcp", &[origin, ACCEPT, JSON], INIT);
    assert_eq!(refused.status, 401);
    assert_cors(&refused, APP, "401");
    assert!(refused.header("WWW-Authenticate").unwrap().starts_with("Bearer"));

    // A JSON answer, with the session id a page must be allowed to read.
    let init = gw.http("POST", "/mcp", &[origin, auth, ACCEPT, JSON], INIT);
    assert_eq!(init.status, 200, "{init:?}");
    assert_cors(&init, APP, "initialize");
    let sid = init.header("Mcp-Session-Id").expect("a session id");
    assert_eq!(messages_of(&init)[0]["result"]["protocolVersion"], "2025-06-18");
    let session = ("Mcp-Session-Id", sid.as_str());
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let accepted = gw.http("POST", "/mcp", &[origin, auth, ACCEPT, JSON, session], note);
    assert_eq!(accepted.status, 202);
    assert_cors(&accepted, APP, "202");

    // An SSE stream's head (the session's GET stream).
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: {APP}\r\nAuthorization: Bearer tok\r\n\
         Accept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n\r\n",
        gw.port
    );
    s.write_all(get.as_bytes()).unwrap();
    let head = SseReader::new(s).head();
    assert_eq!(head.status, 200, "{head:?}");
    assert_cors(&head, APP, "SSE stream");

    // The legacy stream too.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let get = format!(
        "GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: {APP}\r\nAuthorization: Bearer tok\r\n\
         Accept: text/event-stream\r\n\r\n",
        gw.port
    );
    s.write_all(get.as_bytes()).unwrap();
    let head = SseReader::new(s).head();
    assert_eq!(head.status, 200, "{head:?}");
    assert_cors(&head, APP, "legacy SSE stream");

    // Other answers: an unknown session (404), the status JSON, a plain 404.
    let gone = gw.http(
        "POST",
        "/mcp",
        &[origin, auth, ACCEPT, JSON, ("Mcp-Session-Id", "0".repeat(32).as_str())],
        note,
    );
    assert_eq!(gone.status, 404);
    assert_cors(&gone, APP, "404 session");
    let status = gw.http("GET", "/status.json", &[origin, auth], b"");
    assert_eq!(status.status, 200);
    assert_cors(&status, APP, "status.json");

    // Without an Origin (not a browser page) or from another one: no CORS headers.
    let plain = gw.http("GET", "/status.json", &[auth], b"");
    assert_eq!(plain.status, 200);
    assert!(!has_cors(&plain), "{plain:?}");
    let evil = gw.http("POST", "/mcp", &[("Origin", "http://evil.example"), auth, ACCEPT, JSON], INIT);
    assert_eq!(evil.status, 403);
    assert!(!has_cors(&evil), "{evil:?}");
}

#[test]
fn the_status_page_and_its_json() {
    let _w = Watchdog::new("status_page", Duration::from_secs(40));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");

    let page = gw.http("GET", "/", &[("Accept", "text/html"), GZIP], b"");
    assert_eq!(page.status, 200);
    assert!(page.header("Content-Type").unwrap().starts_with("text/html"));
    assert_eq!(page.header("Content-Encoding").as_deref(), Some("gzip"));
    let csp = page.header("Content-Security-Policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"), "{csp}");
    let length: usize = page.header("Content-Length").unwrap().parse().unwrap();
    assert!(length > 1000 && length < 8 * 1024, "{length} bytes");
    // A client that takes no gzip (the page is carried compressed) is told where the data is.
    let plain = gw.http("GET", "/", &[("Accept", "text/html")], b"");
    assert_eq!(plain.status, 406);
    assert!(plain.body.contains("/status.json"), "{plain:?}");
    let head = gw.http("HEAD", "/", &[GZIP], b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(gw.http("GET", "/", &[("Origin", "http://evil.example")], b"").status, 403);
    // An MCP client given the bare URL is told where to go.
    let sse = gw.http("GET", "/", &[("Accept", "text/event-stream")], b"");
    assert_eq!(sse.status, 404);
    assert!(sse.body.contains("/mcp (Streamable HTTP)"), "{sse:?}");
    let post = gw.http("POST", "/", &[ACCEPT, JSON], INIT);
    assert_eq!(post.status, 405);
    assert!(post.body.contains("/sse (legacy SSE)"), "{post:?}");

    // Traffic: two echoes and an unknown tool through the aggregated view (the gateway answers
    // that one), an unknown tool at pi itself (pi answers with an error), a legacy session.
    let mut c = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    c.initialize(json!({}));
    for id in 1..=2 {
        let echo = c.call(id, "tools/call", json!({"name": "pi_echo", "arguments": {"text": "hi"}}));
        assert_eq!(echo["result"]["content"][0]["text"], "hi");
    }
    assert!(c.call(3, "tools/call", json!({"name": "pi_nothing"}))["error"].is_object());
    let mut own = StreamableClient::new(gw.port, "/servers/pi/mcp", "2025-06-18");
    own.initialize(json!({}));
    assert!(own.call(1, "tools/call", json!({"name": "nothing"}))["error"].is_object());
    let _legacy = gw.client();

    let status = gw.http("GET", "/status.json", &[], b"").json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["mcpPath"], "/mcp");
    assert_eq!(status["sessions"], json!({"legacySse": 1, "streamableHttp": 2}));
    let pi = &status["servers"][0];
    assert_eq!((&pi["name"], &pi["ready"]), (&json!("pi"), &json!(true)));
    assert_eq!((&pi["era"], &pi["protocolVersion"]), (&json!("legacy"), &json!("2025-11-25")), "{pi}");
    assert!(pi["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(pi["connectedSince"].as_str().unwrap().ends_with('Z'));
    assert!(pi["lastSeen"].as_str().unwrap().ends_with('Z'));
    assert!(pi["counts"]["tools"].as_u64().unwrap() >= 9);
    assert_eq!(pi["counts"]["prompts"], 1);
    assert_eq!((&pi["requests"], &pi["errors"]), (&json!(3), &json!(1)), "{pi}");
    assert_eq!(status["gateway"]["errors"], 1, "{status}");

    // A POST answered as an SSE stream (progress first) carries the CORS headers in its head.
    let mut headers = c.headers();
    headers.push(("Origin", "http://localhost:5173"));
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "pi_sleep",
        "arguments": {"seconds": 1.2}, "_meta": {"progressToken": "p"}}});
    let streamed = gw.http("POST", "/mcp", &headers, call.to_string().as_bytes());
    assert_eq!(streamed.header("Content-Type").as_deref(), Some("text/event-stream"), "{streamed:?}");
    assert_cors(&streamed, "http://localhost:5173", "a POST's SSE answer");
    assert!(messages_of(&streamed).iter().any(|m| m["id"] == 9 && m["result"].is_object()));
}

#[test]
fn with_tokens_the_page_is_open_and_its_json_is_not() {
    let _w = Watchdog::new("status_tokens", Duration::from_secs(30));
    let gw = Gateway::start(&["--auth-token", "tok"]);
    let page = gw.http("GET", "/", &[GZIP], b"");
    assert_eq!(page.status, 200, "the page holds no data and asks for the token");
    let refused = gw.http("GET", "/status.json", &[], b"");
    assert_eq!(refused.status, 401);
    assert!(!refused.body.contains("servers\""), "{refused:?}");
    assert_eq!(gw.http("GET", "/status.json", &[("Authorization", "Bearer nope")], b"").status, 401);
    let ok = gw.http("GET", "/status.json", &[("Authorization", "Bearer tok")], b"");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["servers"], json!([]));
}
