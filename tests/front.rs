//! The front end's defects found by the 2026-12-07 review, one test per class, each against the
//! real binary (each failed on the code before its fix):
//!
//! 1. `requests_for_unregistered_servers_leave_no_trace`: a per-server endpoint of a name no edge
//!    registered is 404 for every transport and era, and no table, label or page keeps the name.
//! 2. `a_stream_that_died_with_a_notice_pending_does_not_silence_the_next`: per-stream state goes
//!    with the stream, however it goes.
//! 3. `a_big_answer_slower_than_the_ping_timeout_keeps_its_link`: bytes arriving are life.
//! 4. `a_slow_call_gives_its_body_back_once_parsed`: the body budget is held while a body is read
//!    and parsed, not while its call runs.
//! 5. `silent_sockets_on_a_tls_port_make_room`: a socket that sends nothing holds no cap on a TLS
//!    port either.
//! 6. `request_state_opens_only_for_the_client_it_was_given_to`.
//! 9. `a_session_listening_on_its_stream_does_not_expire`.
//! 10. `a_failed_initialize_leaves_no_session_and_idle_sessions_make_room`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::modern::{answer, meta, post as modern_post, post_to, stream as modern_stream};
use crate::util::{messages_of, Gateway, SseReader, StreamableClient, Watchdog, WAIT};

/// A per-server endpoint of a name nobody registered is 404 whatever comes: 2026-07-28 requests
/// of every kind, a Streamable HTTP `initialize`, a legacy SSE stream. Nothing keeps the name:
/// `/metrics` and `/status.json` stay the same size however many names are tried.
#[test]
fn requests_for_unregistered_servers_leave_no_trace() {
    let _w = Watchdog::new("front_no_trace", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let sizes = |gw: &Gateway| {
        let metrics = gw.http("GET", "/metrics", &[], b"").body;
        let status = gw.http("GET", "/status.json", &[], b"").body;
        (metrics, status)
    };
    // A first request of each kind that counts, so the sizes below are steady.
    let seen = answer(&modern_post(&gw, "/servers/pi/mcp", 1, "tools/list", json!({}), &[]));
    assert!(seen["result"]["tools"].is_array(), "{seen}");
    let (metrics_before, status_before) = sizes(&gw);
    for i in 0..60u64 {
        let path = format!("/servers/ghost-{i}-{}/mcp", "x".repeat(200));
        for method in
            ["tools/call", "tools/list", "server/discover", "resources/read", "subscriptions/listen"]
        {
            let params = match method {
                "tools/call" => json!({"name": "echo", "arguments": {}}),
                "resources/read" => json!({"uri": "sample://readme"}),
                _ => json!({}),
            };
            let resp = modern_post(&gw, &path, i, method, params, &[]);
            assert_eq!(resp.status, 404, "{method} on {path}: {resp:?}");
            assert_eq!(resp.json()["id"], json!(i), "the error answers the request: {resp:?}");
        }
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
        let resp = StreamableClient::new(gw.port, &path, "2025-06-18").post(&init);
        assert_eq!(resp.status, 404, "initialize on {path}: {resp:?}");
        let sse = path.replace("/mcp", "/sse");
        let resp = gw.http("GET", &sse, &[("Accept", "text/event-stream")], b"");
        assert_eq!(resp.status, 404, "GET {sse}: {resp:?}");
    }
    let (metrics_after, status_after) = sizes(&gw);
    assert!(!metrics_after.contains("ghost") && !status_after.contains("ghost"), "{metrics_after}");
    let steady = |before: &str, after: &str| {
        // Counter values may grow by a few digits; the series may not.
        let lines = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
        lines(before) == lines(after)
    };
    assert!(steady(&metrics_before, &metrics_after), "new series:\n{metrics_before}\n---\n{metrics_after}");
    assert!(status_after.len() < status_before.len() + 64, "{status_before}\n---\n{status_after}");
    let health = gw.http("GET", "/health", &[], b"").json();
    assert_eq!(health["sessions"], 0, "nothing was left open: {health}");
}

/// A GET request on a Streamable HTTP session's stream, its answer unread; with a small receive
/// buffer, so the gateway's writer soon blocks on it.
fn stalled_stream(port: u16, session: &str) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let small: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket, and a c_int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    write_get(&s, port, session);
    s
}

fn write_get(mut s: &TcpStream, port: u16, session: &str) {
    let req = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {session}\r\n\
         MCP-Protocol-Version: 2025-06-18\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
}

/// The next message on `stream` whose method is `method`, within `limit`.
fn notice(stream: &mut SseReader, method: &str, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        stream.set_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        let msg = stream.next_message()?;
        if msg["method"] == method {
            return Some(msg);
        }
    }
    None
}

/// A session's stream dies (its client stopped reading, then went away) while a `list_changed`
/// waits in it: the session's next stream still hears of the next change. Before, the notice
/// stayed "unsent" for good and every later change of that list was swallowed.
#[test]
fn a_stream_that_died_with_a_notice_pending_does_not_silence_the_next() {
    let _w = Watchdog::new("front_lost_list_changed", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut client = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    client.initialize(json!({}));
    let session = client.session.clone().unwrap();
    // Updates of URIs under a subscribed one reach the subscriber: megabyte-sized ones.
    let big = format!("sample://readme?{}", "b".repeat(1024 * 1024));
    let sub = client.call(1, "resources/subscribe", json!({"uri": "sample://readme"}));
    assert!(sub.get("result").is_some(), "{sub}");
    // The stream fills: megabyte-sized updates the client does not read, more than its socket
    // holds, so the gateway's writer blocks with the rest queued behind it.
    let stalled = stalled_stream(gw.port, &session);
    for id in 0..8 {
        let args = json!({"uri": big, "force": true});
        let touched = client.call(10 + id, "tools/call", json!({"name": "pi_touch", "arguments": args}));
        assert!(touched.get("result").is_some(), "{touched}");
    }
    // A change of the tools list: its notice waits behind the updates.
    let added = client.call(30, "tools/call", json!({"name": "pi_add_tool", "arguments": {}}));
    assert!(added.get("result").is_some(), "{added}");
    // The client leaves without reading (a reset): the writer's blocked write fails.
    drop(stalled);
    // A new stream attaches once the old one is gone.
    let deadline = Instant::now() + WAIT;
    let mut stream = loop {
        let s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write_get(&s, gw.port, &session);
        let mut reader = SseReader::new(s);
        let head = reader.head();
        if head.status == 200 {
            break reader;
        }
        assert_eq!(head.status, 409, "{head:?}");
        assert!(Instant::now() < deadline, "the dead stream was never detached");
        std::thread::sleep(Duration::from_millis(50));
    };
    let added = client.call(31, "tools/call", json!({"name": "pi_add_tool", "arguments": {}}));
    assert!(added.get("result").is_some(), "{added}");
    let heard = notice(&mut stream, "notifications/tools/list_changed", Duration::from_secs(10));
    assert!(heard.is_some(), "the new stream heard nothing of the tools' change");
}

/// A fake edge over a raw WebSocket: it registers `name` with `tools`, and answers the gateway's
/// handshake; then it is handed back to the test to answer calls by hand.
fn raw_edge(port: u16, name: &str, tools: Value) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!("ws://127.0.0.1:{port}/mcp/register").into_client_request().unwrap();
    let (mut ws, _) = tungstenite::client(req, stream).expect("WebSocket upgrade");
    let register =
        json!({"jsonrpc": "2.0", "id": format!("{name}-id"), "method": "register", "params": {"name": name}});
    ws.send(Message::text(register.to_string())).unwrap();
    loop {
        let Message::Text(text) = ws.read().expect("the gateway's handshake") else { continue };
        let msg: Value = serde_json::from_str(text.as_str()).unwrap();
        if msg["status"] == "registered" {
            return ws;
        }
        assert_ne!(msg["status"], "error", "{msg}");
        let id = msg["id"].clone();
        let answer = match msg["method"].as_str() {
            Some("initialize") => json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": name, "version": "1"}}}),
            Some("tools/list") => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}}),
            Some(_) if !id.is_null() => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "not here"}})
            }
            _ => continue,
        };
        ws.send(Message::text(answer.to_string())).unwrap();
    }
}

/// A client's (masked) text frame of `payload`, to write by hand.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81, 0x80 | 127];
    f.extend((payload.len() as u64).to_be_bytes());
    let mask = [0x3c, 0xa5, 0x0f, 0x71];
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// An edge on a slow uplink answers with a frame that takes longer to arrive than the gateway's
/// `--ping-timeout` (its pongs wait behind it): the link stays up and the answer arrives whole.
/// Before, the gateway counted only whole messages as life and dropped the link mid-answer.
#[test]
fn a_big_answer_slower_than_the_ping_timeout_keeps_its_link() {
    let _w = Watchdog::new("front_slow_uplink", Duration::from_secs(60));
    let gw = Gateway::start(&["--ping-interval", "1", "--ping-timeout", "2"]);
    let mut edge = raw_edge(gw.port, "slow", json!([{"name": "big", "inputSchema": {"type": "object"}}]));
    let port = gw.port;
    let call = std::thread::spawn(move || {
        let params = json!({"name": "big", "arguments": {}});
        post_to(port, "/servers/slow/mcp", 7, "tools/call", params, &[])
    });
    // The call arrives; the answer goes out over five seconds, two and a half ping timeouts.
    let id = loop {
        let Message::Text(text) = edge.read().expect("the call") else { continue };
        let msg: Value = serde_json::from_str(text.as_str()).unwrap();
        if msg["method"] == "tools/call" {
            break msg["id"].clone();
        }
    };
    let text = "y".repeat(2 * 1024 * 1024);
    let result = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}});
    let frame = client_frame(result.to_string().as_bytes());
    let socket = edge.get_mut();
    for piece in frame.chunks(frame.len().div_ceil(50)) {
        socket.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = call.join().unwrap();
    let got = answer(&resp);
    assert_eq!(
        got["result"]["content"][0]["text"].as_str().map(str::len),
        Some(text.len()),
        "{:?}",
        &resp.head
    );
    assert_eq!(gw.proc.count_log("no answer to pings"), 0, "{}", gw.proc.log_text());
    let health = gw.http("GET", "/health", &[], b"").json();
    assert_eq!(health["servers"], 1, "the link is still up: {health}");
}

/// An edge listing thousands of tools the catalog cannot expose (no name) costs one log line,
/// written after the registry's lock is released, not one per item under it.
#[test]
fn what_an_edge_lists_wrongly_is_told_once() {
    let _w = Watchdog::new("front_nameless_tools", Duration::from_secs(40));
    let gw = Gateway::start(&[]);
    let mut tools: Vec<Value> = (0..5000).map(|i| json!({"description": format!("nameless {i}")})).collect();
    tools.push(json!({"name": "named", "inputSchema": {"type": "object"}}));
    let _edge = raw_edge(gw.port, "careless", Value::Array(tools));
    gw.proc.wait_log("ignoring 5000 list items without a name");
    assert_eq!(gw.proc.count_log("without a name"), 1, "one line, not one per item");
    let mut list = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    list.initialize(json!({}));
    let tools = list.call(1, "tools/list", json!({}));
    let names: Vec<&str> =
        tools["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["list_servers", "careless_named"]);
}

/// A tool call with a big argument that runs long gives its body's share of the body budget back
/// once the body is parsed: other clients' POSTs are not locked out for the call's length.
#[test]
fn a_slow_call_gives_its_body_back_once_parsed() {
    let _w = Watchdog::new("front_body_budget", Duration::from_secs(60));
    let gw = Gateway::start(&["--max-body-budget", "1000000", "--max-body-bytes", "900000"]);
    let _pi = gw.register_ready("pi");
    let padding = "p".repeat(600_000);
    // A slow call with a big argument, which reports progress: once its stream starts, the call
    // runs at the server.
    let mut meta_progress = meta(json!({}));
    meta_progress["progressToken"] = json!("slow");
    let params =
        json!({"name": "sleep", "arguments": {"seconds": 3, "padding": padding}, "_meta": meta_progress});
    let mut slow = modern_stream(&gw, "/servers/pi/mcp", 1, "tools/call", params);
    let progress = slow.next_message().expect("progress of the slow call");
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    // While it runs, another POST of the same size is read and answered.
    let params = json!({"name": "echo", "arguments": {"text": "quick", "padding": padding}});
    let quick = modern_post(&gw, "/servers/pi/mcp", 2, "tools/call", params, &[]);
    assert_eq!(quick.status, 200, "a POST was locked out while another call ran: {quick:?}");
    assert_eq!(answer(&quick)["result"]["content"][0]["text"], "quick");
    let metrics = gw.http("GET", "/metrics", &[], b"").body;
    let held =
        metrics.lines().find(|l| l.starts_with("mcpport_request_body_bytes_held ")).unwrap().to_string();
    assert_eq!(held, "mcpport_request_body_bytes_held 0", "while the slow call runs");
    let mut last = None;
    while let Some(msg) = slow.next_message() {
        last = Some(msg);
    }
    let last = last.expect("the slow call's answer");
    assert_eq!(last["id"], 1, "{last}");
    assert!(last.get("result").is_some(), "{last}");
}

/// Sockets that connect to a TLS port and send nothing (no ClientHello) are idle like any other:
/// at the per-address cap, the one silent the longest is closed for a newcomer. Before, they were
/// listed idle only after the handshake, so each held its place for up to twenty seconds.
#[test]
fn silent_sockets_on_a_tls_port_make_room() {
    let _w = Watchdog::new("front_tls_silent", Duration::from_secs(60));
    let dir = crate::tls::certs("ec");
    let file = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (cert, key) = (file("server.crt"), file("server.key"));
    let gw = Gateway::start(&[
        "--ssl-enabled",
        "--ssl-certfile",
        &cert,
        "--ssl-keyfile",
        &key,
        "--max-connections-per-ip",
        "4",
    ]);
    let silent: Vec<TcpStream> =
        (0..4).map(|_| TcpStream::connect(("127.0.0.1", gw.port)).unwrap()).collect();
    // Past the eviction grace (2 s), a TLS client gets through.
    std::thread::sleep(Duration::from_millis(2300));
    let health = crate::tls::https_health(gw.port, &dir, false);
    assert!(health.as_ref().is_ok_and(|h| h.starts_with("HTTP/1.1 200")), "{health:?}");
    // The silent socket closed to make room reads its end at once.
    let closed = silent.iter().filter(|s| ended(s)).count();
    assert_eq!(closed, 1, "one silent socket made room");
}

/// Whether the gateway closed `s` (an end of stream, or a reset, within 200 ms).
fn ended(mut s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    match s.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        Ok(_) => false,
    }
}

/// A `requestState` is bound to the client it was given to: another client (another token)
/// presenting it is refused and cannot take the parked call's result; the client it was given to
/// still resumes the call.
#[test]
fn request_state_opens_only_for_the_client_it_was_given_to() {
    let _w = Watchdog::new("front_state_owner", Duration::from_secs(40));
    let gw = Gateway::start(&["--auth-token", "alice", "--auth-token", "mallory"]);
    let _pi = crate::util::Proc::start(&[
        "register",
        "--stdio",
        &format!("{} sample-server --test-tools", crate::util::bin()),
        "--gateway-url",
        &gw.ws_url(),
        "--server-name",
        "pi",
        "--header",
        "Authorization: Bearer alice",
    ]);
    gw.wait_servers(1, WAIT);
    let caps = json!({"elicitation": {}});
    let params = json!({"name": "ask_client", "arguments": {"method": "elicitation/create"}, "_meta": meta(caps.clone())});
    let alice = [("Authorization", "Bearer alice")];
    let first = answer(&modern_post(&gw, "/servers/pi/mcp", 1, "tools/call", params.clone(), &alice));
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let (key, _) = first["result"]["inputRequests"].as_object().unwrap().iter().next().unwrap();
    let mut retry = params.clone();
    retry["requestState"] = first["result"]["requestState"].clone();
    retry["inputResponses"] = json!({key: {"action": "accept", "content": {"name": "Mallory"}}});
    let mallory = [("Authorization", "Bearer mallory")];
    let taken = answer(&modern_post(&gw, "/servers/pi/mcp", 2, "tools/call", retry.clone(), &mallory));
    assert_eq!(taken["error"]["code"], -32602, "another client resumed the call: {taken}");
    assert!(taken["error"]["message"].as_str().unwrap().contains("another client"), "{taken}");
    retry["inputResponses"] = json!({key: {"action": "accept", "content": {"name": "Alice"}}});
    let done = answer(&modern_post(&gw, "/servers/pi/mcp", 3, "tools/call", retry, &alice));
    let text = done["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("Alice"), "the client it was given to resumes it: {done}");
}

/// A session whose client only listens on its `GET` stream is in use: it outlives
/// `--session-timeout`, and a request after that finds it.
#[test]
fn a_session_listening_on_its_stream_does_not_expire() {
    let _w = Watchdog::new("front_listening_session", Duration::from_secs(40));
    let gw = Gateway::start(&["--session-timeout", "1"]);
    let _pi = gw.register_ready("pi");
    let mut listener = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    listener.initialize(json!({}));
    let mut idle = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    idle.initialize(json!({}));
    let s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write_get(&s, gw.port, listener.session.as_deref().unwrap());
    let mut stream = SseReader::new(s);
    assert_eq!(stream.head().status, 200);
    // The reaper wakes every second; the idle session goes, the listening one stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.proc.count_log("idle for over") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.proc.count_log("idle for over") > 0, "the reaper never ran");
    let gone = idle.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(gone.status, 404, "the idle session expired: {gone:?}");
    let alive = listener.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(alive.status, 200, "the listening session expired: {alive:?}");
    assert!(messages_of(&alive)[0]["result"]["tools"].is_array());
}

/// An `initialize` that fails (its server is registered but not ready) leaves no session behind:
/// no id is handed out and nothing counts against the caps. At `--max-sessions`, the session
/// unused the longest (for half the session timeout) makes room for a new one; sessions in use
/// do not.
#[test]
fn a_failed_initialize_leaves_no_session_and_idle_sessions_make_room() {
    let _w = Watchdog::new("front_failed_initialize", Duration::from_secs(40));
    let gw = Gateway::start(&["--max-sessions", "2", "--session-timeout", "6"]);
    // An edge that registers and never answers the handshake: registered, never ready.
    let stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let req = format!("ws://127.0.0.1:{}/mcp/register", gw.port).into_client_request().unwrap();
    let (mut ws, _) = tungstenite::client(req, stream).unwrap();
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": "w", "method": "register", "params": {"name": "wait"}}).to_string(),
    ))
    .unwrap();
    gw.proc.wait_log("server wait (w): registering");
    for _ in 0..4 {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
        let resp = StreamableClient::new(gw.port, "/servers/wait/mcp", "2025-06-18").post(&init);
        assert_eq!(resp.header("Mcp-Session-Id"), None, "a session id for a failed initialize: {resp:?}");
        assert!(messages_of(&resp)[0].get("error").is_some(), "{resp:?}");
    }
    assert_eq!(gw.http("GET", "/health", &[], b"").json()["sessions"], 0);
    // The caps are all there for sessions that do initialize.
    let _pi = gw.register_ready("pi");
    let mut first = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    first.initialize(json!({}));
    let started = Instant::now();
    let mut second = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    second.initialize(json!({}));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let refused = StreamableClient::new(gw.port, "/mcp", "2025-06-18").post(&init);
    assert_eq!(refused.status, 503, "both sessions were just used: {refused:?}");
    // Three seconds later (half the timeout) the first, still unused, makes room; the second is
    // used meanwhile and stays.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        second.call(1, "tools/list", json!({}))["result"]["tools"].as_array().map(Vec::is_empty),
        Some(false)
    );
    std::thread::sleep((started + Duration::from_millis(3200)).saturating_duration_since(Instant::now()));
    let mut third = StreamableClient::new(gw.port, "/mcp", "2025-06-18");
    third.initialize(json!({}));
    assert!(started.elapsed() < Duration::from_secs(6), "before the reaper could have ended it");
    let gone = first.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(gone.status, 404, "the unused session made room: {gone:?}");
    assert_eq!(second.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).status, 200);
    drop(ws);
}

/// A JSON-RPC batch (2025-03-26) holds at most 64 messages: the answers the gateway makes itself
/// are queued for the POST whatever `--max-queue-bytes` says, so their number is bounded at the
/// door, and the queue budget holds while a batch is answered.
#[test]
fn a_batch_is_bounded_so_its_answers_are_too() {
    let _w = Watchdog::new("front_batch_cap", Duration::from_secs(40));
    let gw = Gateway::start(&["--max-queue-bytes", "1048576"]);
    let _pi = gw.register_ready("pi");
    let mut client = StreamableClient::new(gw.port, "/mcp", "2025-03-26");
    client.initialize(json!({}));
    let batch = |n: u64| {
        Value::Array((0..n).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "tools/list"})).collect())
    };
    let refused = client.post(&batch(65));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("at most 64"), "{}", refused.body);
    let answered = client.post(&batch(64));
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(messages_of(&answered).len(), 64);
    let metrics = gw.http("GET", "/metrics", &[], b"").body;
    let queued = metrics.lines().find(|l| l.starts_with("mcpport_queued_bytes ")).unwrap().to_string();
    assert_eq!(queued, "mcpport_queued_bytes 0", "everything queued was given back");
}
