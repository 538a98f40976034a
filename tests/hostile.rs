//! Hostile and careless input, one test each: slow headers, idle keep-alive, too many
//! connections or sessions, oversized WebSocket messages, stolen session ids, the wrong kind of
//! token. In every case the offender gets a clear answer and everyone else keeps being served.
//! Also IPv6 listening and dialing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;

use crate::util::{http, read_response, Gateway, Proc, SseClient, Watchdog};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn slow_headers_get_408_and_idle_connections_are_closed() {
    let _w = Watchdog::new("slow_headers", Duration::from_secs(30));
    let gw = Gateway::start(&["--header-timeout", "1", "--idle-timeout", "1"]);
    let mut slow = connect(gw.port);
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    assert_eq!(gw.http("GET", "/health", &[], b"").status, 200, "others are served meanwhile");
    assert_eq!(read_response(&mut slow).status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut idle = connect(gw.port);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    assert!(idle.read(&mut buf).unwrap() > 0, "the first answer");
    let started = Instant::now();
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed after the idle timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn past_the_connection_cap_new_connections_get_503() {
    let _w = Watchdog::new("connection_cap", Duration::from_secs(30));
    let gw = Gateway::start(&["--max-connections", "3"]);
    let held: Vec<TcpStream> = (0..3).map(|_| connect(gw.port)).collect();
    // Once the acceptor has taken the three (a request may still get in before that), the next
    // connection is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let resp = http(gw.port, "GET", "/health", &[], b"");
        if resp.status != 200 || std::time::Instant::now() > deadline {
            break resp;
        }
    };
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After").as_deref(), Some("1"));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while http(gw.port, "GET", "/health", &[], b"").status != 200 {
        assert!(Instant::now() < deadline, "the gateway did not recover");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn past_the_session_cap_new_sessions_get_503() {
    let _w = Watchdog::new("session_cap", Duration::from_secs(30));
    let gw = Gateway::start(&["--max-sessions", "1"]);
    let mut first = gw.client();
    first.initialize("2024-11-05");
    assert_eq!(http(gw.port, "GET", "/sse", &[], b"").status, 503);
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let headers = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")];
    assert_eq!(http(gw.port, "POST", "/mcp", &headers, init).status, 503);
    assert_eq!(first.call("ping", json!({}))["result"], json!({}), "the first session is untouched");
}

#[test]
fn an_oversized_websocket_message_closes_that_edge_only() {
    let _w = Watchdog::new("oversized_ws", Duration::from_secs(30));
    let gw = Gateway::start(&["--max-ws-message-bytes", "4096"]);
    let _pi = gw.register_ready("pi");
    let stream = connect(gw.port);
    let (mut ws, _) = tungstenite::client(gw.ws_url(), stream).unwrap();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":"x","method":"register","params":{{"name":"big","pad":"{}"}}}}"#,
        "a".repeat(10_000)
    );
    ws.send(Message::text(big)).unwrap();
    let (_, code) = crate::registration::read_until_close(&mut ws);
    assert_eq!(code, Some(1009), "message too big");

    // The same for a server that registered fine and then sends too much.
    let (mut ws, _) = tungstenite::client(gw.ws_url(), connect(gw.port)).unwrap();
    ws.send(crate::registration::register_frame("id-big", "big")).unwrap();
    crate::registration::complete_handshake(&mut ws);
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{}"}}}}"#,
        "a".repeat(10_000)
    );
    ws.send(Message::text(note)).unwrap();
    let (_, code) = crate::registration::read_until_close(&mut ws);
    assert_eq!(code, Some(1009));
    gw.proc.wait_log("message too big");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    assert_eq!(
        c.tool("pi_echo", json!({"text": "still here"}))["result"]["content"][0]["text"],
        "still here"
    );
}

#[test]
fn a_session_belongs_to_the_token_that_opened_it() {
    let _w = Watchdog::new("session_owner", Duration::from_secs(30));
    let gw = Gateway::start(&["--auth-token", "alice", "--auth-token", "bob"]);
    let mut alice = SseClient::connect(gw.port, "/sse", &[("Authorization", "Bearer alice")]);
    alice.initialize("2024-11-05");
    let ping = json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}).to_string();
    let as_bob = http(gw.port, "POST", &alice.endpoint, &[("Authorization", "Bearer bob")], ping.as_bytes());
    assert_eq!(as_bob.status, 404, "bob cannot use alice's session");
    assert_eq!(alice.call("ping", json!({}))["result"], json!({}));

    let accept = ("Accept", "application/json, text/event-stream");
    let json_type = ("Content-Type", "application/json");
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let opened = http(gw.port, "POST", "/mcp", &[accept, json_type, ("Authorization", "Bearer alice")], init);
    let sid = opened.header("Mcp-Session-Id").unwrap();
    let with = |token: &str| {
        let auth = format!("Bearer {token}");
        let headers = [accept, json_type, ("Authorization", auth.as_str()), ("Mcp-Session-Id", sid.as_str())];
        http(gw.port, "POST", "/mcp", &headers, ping.as_bytes()).status
    };
    assert_eq!(with("bob"), 404);
    assert_eq!(with("alice"), 200);
}

#[test]
fn edge_tokens_and_client_tokens_do_not_mix() {
    let _w = Watchdog::new("token_roles", Duration::from_secs(30));
    let dir = std::env::temp_dir().join(format!("mcpport-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("client-tokens");
    std::fs::write(&tokens, "# clients\nclient-secret\n").unwrap();
    let headers = dir.join("edge-headers");
    std::fs::write(&headers, "Authorization: Bearer edge-secret\n").unwrap();
    // At DEBUG, the most talkative level, no token may reach a log either.
    let token_file = tokens.to_str().unwrap();
    let args = ["--auth-token-file", token_file, "--register-token", "edge-secret", "--log-level", "DEBUG"];
    let gw = Gateway::start(&args);

    let mut with_client_token =
        gw.register("a", &["--header", "Authorization: Bearer client-secret", "--require-gateway"]);
    assert_eq!(with_client_token.wait_exit(Duration::from_secs(10)).code(), Some(1));
    let edge = gw.register("b", &["--header-file", headers.to_str().unwrap(), "--log-level", "DEBUG"]);
    edge.wait_log("registered as");

    assert_eq!(http(gw.port, "GET", "/sse", &[("Authorization", "Bearer edge-secret")], b"").status, 401);
    let mut c = SseClient::connect(gw.port, "/sse", &[("Authorization", "Bearer client-secret")]);
    c.initialize("2025-06-18");
    assert_eq!(c.tool("b_echo", json!({"text": "ok"}))["result"]["content"][0]["text"], "ok");
    assert!(!gw.proc.log_text().contains("secret"), "a token reached the log");
    assert!(!edge.log_text().contains("secret"), "a token reached the log");
}

#[test]
fn ipv6_dual_stack_and_v6_only() {
    let _w = Watchdog::new("ipv6", Duration::from_secs(30));
    let dual = Gateway::start(&["--host", "::", "--ipv6"]);
    for host in ["127.0.0.1", "[::1]"] {
        let mut s = TcpStream::connect(format!("{host}:{}", dual.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).status, 200, "{host}");
    }
    let v6 = Gateway::start(&["--host", "::1"]);
    assert!(TcpStream::connect(("127.0.0.1", v6.port)).is_err(), "::1 is IPv6 only");
    let url = format!("ws://[::1]:{}/mcp/register", v6.port);
    let stdio = format!("{} sample-server", crate::util::BIN);
    let edge = Proc::start(&["register", "--stdio", &stdio, "--gateway-url", &url, "--server-name", "six"]);
    edge.wait_log("registered as");
}

/// `--ipv6` with the default host listens on `::`, dual-stack: [::1] and 127.0.0.1 both reach it.
#[test]
fn ipv6_flag_with_the_default_host_listens_dual_stack() {
    let _w = Watchdog::new("ipv6_flag", Duration::from_secs(30));
    let gw = Proc::start(&["gateway", "--port", "0", "--ipv6"]);
    let line = gw.wait_log("listening on http");
    assert!(line.contains("http://[::]:"), "{line}");
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    for host in ["[::1]", "127.0.0.1"] {
        let mut s = TcpStream::connect(format!("{host}:{port}")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).status, 200, "{host}");
    }
}
