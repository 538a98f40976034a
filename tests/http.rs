//! The gateway's HTTP surface: health, routing, and the status a client gets for each mistake,
//! while the gateway keeps serving everyone else.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::util::{http, read_response, Gateway, SseClient, Watchdog};

#[test]
fn health_and_unknown_paths() {
    let _w = Watchdog::new("health_and_unknown_paths", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let health = gw.http("GET", "/health", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["servers"], 0);
    let missing = gw.http("GET", "/nope", &[], b"");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["message"].as_str().unwrap().contains("/nope"));
    assert_eq!(gw.http("POST", "/sse", &[], b"").status, 405);
    assert_eq!(gw.http("GET", "/messages/", &[], b"").status, 405);
    // A plain GET on the registration path is told to speak WebSocket.
    assert_eq!(gw.http("GET", "/mcp/register", &[], b"").status, 426);
}

#[test]
fn message_endpoint_rejects_bad_input_with_the_right_status() {
    let _w = Watchdog::new("message_endpoint_rejects_bad_input", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let mut client = gw.client();
    assert!(client.endpoint.starts_with("/messages/?session_id="), "{}", client.endpoint);
    let sid = client.endpoint.rsplit('=').next().unwrap().to_string();
    assert_eq!(sid.len(), 32);

    assert_eq!(gw.http("POST", "/messages/", &[], b"{}").status, 400);
    let unknown = gw.http("POST", "/messages/?session_id=00000000000000000000000000000000", &[], b"{}");
    assert_eq!(unknown.status, 404);

    let path = format!("/messages/?session_id={sid}");
    let not_json = gw.http("POST", &path, &[], b"{not json");
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["error"]["code"], -32700);
    let not_rpc = gw.http("POST", &path, &[], br#"{"jsonrpc":"2.0","id":7}"#);
    assert_eq!(not_rpc.status, 400);
    assert_eq!(not_rpc.json()["error"]["code"], -32600);
    assert_eq!(not_rpc.json()["id"], 7);

    // The session survived all of that, and an unknown method is a JSON-RPC error on the stream.
    let resp = client.call("no/such/method", json!({}));
    assert_eq!(resp["error"]["code"], -32601);
    assert_eq!(client.call("ping", json!({}))["result"], json!({}));
}

#[test]
fn malformed_and_oversized_requests() {
    let _w = Watchdog::new("malformed_and_oversized_requests", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 400);

    let big = format!("/messages/?session_id=x&pad={}", "a".repeat(20_000));
    assert_eq!(gw.http("GET", &big, &[], b"").status, 431);

    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /messages/?session_id=x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 413);
    assert_eq!(gw.http("GET", "/health", &[], b"").status, 200);
}

#[test]
fn bearer_tokens_guard_everything_but_health() {
    let _w = Watchdog::new("bearer_tokens", Duration::from_secs(30));
    let gw = Gateway::start_env(&["--auth-token", "s3cret"], &[("MCP_GATEWAY_AUTH_TOKENS", "other, second")]);
    assert_eq!(gw.http("GET", "/health", &[], b"").status, 200);
    let denied = gw.http("GET", "/sse", &[], b"");
    assert_eq!(denied.status, 401);
    let challenge = denied.header("WWW-Authenticate").unwrap();
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("no bearer token was sent"), "{challenge}");
    assert!(denied.json()["message"].as_str().unwrap().contains("--auth-token"));
    let wrong = gw.http("GET", "/sse", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(wrong.status, 401);
    let challenge = wrong.header("WWW-Authenticate").unwrap();
    assert!(
        challenge.contains("error=\"invalid_token\"") && challenge.contains("not one this gateway accepts")
    );
    assert_eq!(gw.http("POST", "/messages/?session_id=x", &[], b"{}").status, 401);
    assert!(!gw.proc.log_text().contains("s3cret"), "a token reached the log");

    for token in ["s3cret", "second"] {
        let auth = format!("Bearer {token}");
        let mut client = SseClient::connect(gw.port, "/sse", &[("Authorization", &auth)]);
        client.initialize("2024-11-05");
        assert_eq!(client.call("ping", json!({}))["result"], json!({}));
    }

    // An edge without the token is refused before the upgrade; with it, it registers.
    let mut refused = gw.register("pi", &["--require-gateway"]);
    assert!(!refused.wait_exit(Duration::from_secs(10)).success());
    assert!(refused.log_text().contains("401"), "{}", refused.log_text());
    let ok = gw.register("pi", &["--header", "Authorization: Bearer s3cret"]);
    ok.wait_log("registered as");
    let _ = http(gw.port, "GET", "/health", &[], b"");
}

/// A client that gets 401 and starts OAuth discovery (mcp-remote does) is told plainly that this
/// gateway takes a static bearer token, not OAuth, instead of a bare "no such endpoint".
#[test]
fn oauth_discovery_is_told_to_send_a_bearer_token() {
    let _w = Watchdog::new("oauth_discovery_is_told_to_send_a_bearer_token", Duration::from_secs(30));
    let gw = Gateway::start(&["--auth-token", "s3cret"]);
    for (method, path) in [
        ("GET", "/.well-known/oauth-protected-resource"),
        ("GET", "/.well-known/oauth-protected-resource/mcp"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("GET", "/.well-known/openid-configuration"),
        ("POST", "/register"),
        ("GET", "/authorize"),
        ("POST", "/token"),
    ] {
        let resp = gw.http(method, path, &[], b"");
        assert_eq!(resp.status, 404, "{path}");
        let message = resp.json()["message"].as_str().unwrap().to_string();
        for needle in ["does not do OAuth", "Authorization: Bearer <token>", "--header", "missing or wrong"] {
            assert!(message.contains(needle), "{path}: {message}");
        }
    }
    gw.proc.wait_log("does not do");
    // Without tokens too: the paths are not endpoints of this gateway.
    let open = Gateway::start(&[]);
    assert_eq!(open.http("GET", "/.well-known/oauth-authorization-server", &[], b"").status, 404);
}
