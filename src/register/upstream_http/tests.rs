//! The adapter's tests: a scripted upstream on loopback, and register's side of the pipes.

use super::*;
use serde_json::json;
use std::collections::HashMap;
use std::io::BufRead;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver, Sender};

const WAIT: Duration = Duration::from_secs(10);

/// What the scripted upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The path and query.
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn rpc(&self) -> String {
        self.json()["method"].as_str().unwrap_or("").to_string()
    }
}

/// A scripted upstream on 127.0.0.1: `script` answers each request (one per connection), for
/// at most 64 connections and 30 s. Returns its address and what it saw, in order.
fn upstream(script: impl Fn(&Seen, &mut TcpStream) + Send + Sync + 'static) -> (String, Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < 64 && Instant::now() < deadline {
            let Ok((sock, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            let (script, seen_tx) = (script.clone(), seen_tx.clone());
            std::thread::spawn(move || serve_one(sock, &*script, &seen_tx));
        }
    });
    (addr, seen)
}

fn serve_one(mut sock: TcpStream, script: &(dyn Fn(&Seen, &mut TcpStream) + Sync), seen: &Sender<Seen>) {
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let Some(request) = read_request(&mut sock) else { return };
    let _ = seen.send(request.clone());
    script(&request, &mut sock);
}

fn read_request(sock: &mut TcpStream) -> Option<Seen> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") && raw.len() < 64 * 1024 {
        if sock.read(&mut byte).ok()? == 0 {
            return None;
        }
        raw.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&raw).ok()?;
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).to_string()))
        .collect();
    let length = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    let mut body = vec![0u8; length.map_or(0, |(_, v)| v.parse().unwrap())];
    sock.read_exact(&mut body).ok()?;
    Some(Seen { method: req.method?.into(), path: req.path?.into(), headers, body })
}

fn respond(sock: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let _ = sock.write_all(text.as_bytes());
}

fn answer(sock: &mut TcpStream, seen: &Seen, headers: &[(&str, &str)], result: Value) {
    let body = json!({"jsonrpc": "2.0", "id": seen.json()["id"], "result": result}).to_string();
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    respond(sock, "200 OK", &all, &body);
}

/// Starts an event stream; chunked or until the close.
fn sse_head(sock: &mut TcpStream, chunked: bool) {
    let framing = if chunked { "Transfer-Encoding: chunked\r\n" } else { "" };
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{framing}\r\n");
    let _ = sock.write_all(head.as_bytes());
}

fn chunk(sock: &mut TcpStream, text: &str) {
    let _ = sock.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes());
}

/// Waits (10 s at most) for the client to close the connection; whether it did.
fn closed_by_client(sock: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match sock.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
    }
}

/// The adapter as register sees it, with deadlines on every read.
struct Register {
    stdin: Option<ChildStdin>,
    out: BufReader<UnixStream>,
    ended: Arc<Ended>,
}

fn adapter(url: &str, transport: HttpTransport, max_message: usize) -> Register {
    let headers = vec![("Authorization".to_string(), "Bearer t0ken".to_string())];
    let spec = HttpSpec { url: url.into(), headers, transport, tls: Default::default(), max_message };
    let child = start(spec, "test").unwrap();
    let out = UnixStream::from(OwnedFd::from(child.stdout));
    out.set_read_timeout(Some(WAIT)).unwrap();
    Register { stdin: Some(child.stdin), out: BufReader::new(out), ended: child.ended }
}

impl Register {
    fn send(&mut self, msg: Value) {
        writeln!(self.stdin.as_mut().unwrap(), "{msg}").unwrap();
    }

    /// The next line (10 s at most).
    fn line(&mut self) -> Value {
        let mut line = String::new();
        assert!(self.out.read_line(&mut line).unwrap() > 0, "the adapter ended: {:?}", self.ended.get());
        serde_json::from_str(&line).unwrap()
    }

    /// Reads to the end (10 s at most): the lines still said, and why the adapter ended.
    fn end(&mut self) -> (Vec<Value>, (i32, String)) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).expect("the adapter ends within 10 s") == 0 {
                break;
            }
            lines.push(serde_json::from_str(&line).unwrap());
        }
        (lines, self.ended.get().expect("`ended` is set before stdout closes"))
    }
}

fn request(id: u64, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}})
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// An upstream with a session: `initialize` gives `s-1` and 2025-06-18, notifications get 202,
/// GET 405, DELETE 200, and any other request `{"ok": method}`.
fn session_script(seen: &Seen, sock: &mut TcpStream) {
    match (seen.method.as_str(), seen.rpc().as_str()) {
        ("GET", _) => respond(sock, "405 Method Not Allowed", &[], ""),
        ("DELETE", _) => respond(sock, "200 OK", &[], ""),
        (_, "initialize") => {
            let result = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "u", "version": "1"}});
            answer(sock, seen, &[("Mcp-Session-Id", "s-1")], result);
        }
        _ if seen.json().get("id").is_none() => respond(sock, "202 Accepted", &[], ""),
        (_, method) => answer(sock, seen, &[], json!({"ok": method})),
    }
}

fn next(seen: &Receiver<Seen>) -> Seen {
    seen.recv_timeout(WAIT).expect("the upstream saw a request")
}

#[test]
fn json_answers_and_the_session_headers_after_initialize_with_202_for_notifications() {
    let (addr, seen) = upstream(session_script);
    let mut reg = adapter(&format!("http://{addr}/api/mcp?token=x"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    assert_eq!(reg.line()["result"]["protocolVersion"], "2025-06-18");
    reg.send(initialized());
    reg.send(request(2, "tools/list"));
    assert_eq!(
        reg.line(),
        json!({"jsonrpc": "2.0", "id": 2, "result": {"ok": "tools/list"}}),
        "no line for the 202"
    );

    let init = next(&seen);
    assert_eq!(
        (init.method.as_str(), init.path.as_str(), init.rpc().as_str()),
        ("POST", "/api/mcp?token=x", "initialize")
    );
    assert_eq!(init.header("host"), Some(addr.as_str()), "Host is the upstream's own authority");
    assert_eq!(init.header("origin"), None);
    assert_eq!(init.header("accept"), Some("application/json, text/event-stream"));
    assert_eq!(init.header("content-type"), Some("application/json"));
    assert_eq!(init.header("authorization"), Some("Bearer t0ken"), "the entry's own headers");
    assert_eq!((init.header("mcp-session-id"), init.header("mcp-protocol-version")), (None, None));
    let note = next(&seen);
    assert_eq!(note.rpc(), "notifications/initialized", "initialized goes out before the next request");
    assert_eq!(note.header("mcp-session-id"), Some("s-1"));
    let mut rest = [next(&seen), next(&seen)];
    rest.sort_by_key(|s| s.method.clone());
    let [get, list] = rest;
    assert_eq!((list.rpc().as_str(), list.header("mcp-session-id")), ("tools/list", Some("s-1")));
    assert_eq!(list.header("mcp-protocol-version"), Some("2025-06-18"));
    assert_eq!(list.header("host"), Some(addr.as_str()));
    assert_eq!((get.method.as_str(), get.header("accept")), ("GET", Some("text/event-stream")));
    assert_eq!(
        (get.header("mcp-session-id"), get.header("mcp-protocol-version")),
        (Some("s-1"), Some("2025-06-18"))
    );

    reg.stdin = None;
    let (lines, ended) = reg.end();
    assert_eq!((lines, ended), (vec![], (0, "stopped".to_string())));
    let delete = next(&seen);
    assert_eq!((delete.method.as_str(), delete.header("mcp-session-id")), ("DELETE", Some("s-1")));
}

#[test]
fn an_sse_answer_passes_a_server_request_first_and_its_stream_is_closed_after_the_answer() {
    let (closed_tx, closed) = mpsc::channel();
    let (addr, _seen) = upstream(move |_, sock| {
        sse_head(sock, true);
        chunk(sock, "id: e1\ndata: \n\n: keep-alive\n\n");
        let ask = json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"maxTokens": 5}});
        chunk(sock, &format!("event: message\r\ndata: {ask}\r\n\r\n"));
        chunk(sock, "id: e2\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":7,\"result\":{\"content\":[]}}\n");
        chunk(sock, "\n");
        let _ = closed_tx.send(closed_by_client(sock));
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(7, "tools/call"));
    assert_eq!(reg.line()["method"], "sampling/createMessage");
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 7, "result": {"content": []}}));
    assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the stream is closed once it answered");
}

#[test]
fn the_get_stream_is_reopened_after_the_last_event_id() {
    let gets = AtomicUsize::new(0);
    let (addr, seen) = upstream(move |seen, sock| match seen.method.as_str() {
        "GET" => {
            let n = gets.fetch_add(1, Ordering::SeqCst);
            sse_head(sock, true);
            let note =
                json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"n": n}});
            chunk(sock, &format!("retry: 100\nid: g{n}\ndata: {note}\n\n"));
            match n {
                0 => chunk(sock, ""), // the stream ends: reopened
                _ => {
                    closed_by_client(sock);
                }
            }
        }
        _ => session_script(seen, sock),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    reg.line();
    reg.send(initialized());
    assert_eq!(reg.line()["params"]["n"], 0);
    assert_eq!(reg.line()["params"]["n"], 1);
    let gets: Vec<Seen> = (0..4).map(|_| next(&seen)).filter(|s| s.method == "GET").collect();
    assert_eq!(gets.len(), 2);
    assert_eq!((gets[0].header("last-event-id"), gets[1].header("last-event-id")), (None, Some("g0")));
}

#[test]
fn a_post_stream_that_ends_before_its_answer_is_resumed() {
    let (addr, seen) = upstream(|seen, sock| match (seen.method.as_str(), seen.rpc().as_str()) {
        ("POST", "tools/call") => {
            sse_head(sock, false);
            let _ = sock.write_all(b"retry: 100\nid: p1\ndata:\n\n"); // then the connection closes
        }
        ("GET", _) if seen.header("last-event-id") == Some("p1") => {
            sse_head(sock, false);
            let answer = json!({"jsonrpc": "2.0", "id": 9, "result": {"resumed": true}});
            let _ = sock.write_all(format!("id: p2\ndata: {answer}\n\n").as_bytes());
            closed_by_client(sock);
        }
        _ => session_script(seen, sock),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    reg.line();
    reg.send(request(9, "tools/call"));
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 9, "result": {"resumed": true}}));
    let resumed = (0..3).map(|_| next(&seen)).find(|s| s.method == "GET").unwrap();
    assert_eq!(resumed.header("mcp-session-id"), Some("s-1"));
}

#[test]
fn a_404_for_the_session_ends_the_adapter() {
    let (addr, _seen) = upstream(|seen, sock| match seen.rpc().as_str() {
        "tools/list" => respond(sock, "404 Not Found", &[], "no such session"),
        _ => session_script(seen, sock),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    reg.line();
    reg.send(request(2, "tools/list"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert!(why.contains("answered 404 for its session") && why.contains("restarted"), "{why}");
    assert!(why.starts_with(&format!("the upstream at http://{addr}/mcp ")), "{why}");
}

#[test]
fn a_redirect_is_not_followed_and_the_adapter_stays_usable() {
    let calls = AtomicUsize::new(0);
    let (addr, seen) = upstream(move |seen, sock| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => respond(sock, "302 Found", &[("Location", "http://elsewhere.invalid/mcp")], ""),
        _ => answer(sock, seen, &[], json!({})),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(3, "tools/list"));
    let error = reg.line();
    assert_eq!(error["id"], 3);
    assert!(error["error"]["message"].as_str().unwrap().contains("redirect"), "{error}");
    reg.send(request(4, "tools/list"));
    assert_eq!(reg.line()["id"], 4);
    assert_eq!(next(&seen).rpc(), "tools/list");
    assert_eq!(next(&seen).rpc(), "tools/list");
    assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "nothing went elsewhere");
}

#[test]
fn an_oversized_event_ends_the_adapter_without_reading_it_all() {
    let (sent_tx, sent) = mpsc::channel();
    let (addr, _seen) = upstream(move |_, sock| {
        sse_head(sock, false);
        let block = "x".repeat(64 * 1024);
        let mut written = sock.write_all(b"data: ").map_or(0, |()| 6);
        while written < 64 << 20 && sock.write_all(block.as_bytes()).is_ok() {
            written += block.len();
        }
        let _ = sent_tx.send(written);
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, 1024);
    reg.send(request(1, "tools/list"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert!(why.contains("sent a message over 1 KiB"), "{why}");
    let written = sent.recv_timeout(WAIT).unwrap();
    assert!(written < 32 << 20, "the adapter stopped reading at the bound ({written} bytes sent)");
}

#[test]
fn garbage_ends_the_adapter_with_a_clear_reason() {
    let (addr, _seen) = upstream(|_, sock| {
        respond(sock, "200 OK", &[("Content-Type", "application/json")], "<html>oops</html>");
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(1, "tools/list"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert!(why.contains("not JSON-RPC") && why.contains("<html>oops</html>"), "{why}");

    let (addr, _seen) = upstream(|_, sock| {
        sse_head(sock, true);
        chunk(sock, "data: {\"no\": \"envelope\"}\n\n");
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(1, "tools/list"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert!(why.contains("not JSON-RPC"), "{why}");
}

#[test]
fn errors_answer_the_request_and_the_adapter_stays_usable() {
    let (addr, _seen) = upstream(|seen, sock| match seen.json()["id"].as_u64() {
        Some(1) => respond(sock, "500 Internal Server Error", &[], "boom\n"),
        Some(2) => respond(sock, "401 Unauthorized", &[("WWW-Authenticate", "Bearer")], ""),
        Some(3) => {
            let error =
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32601, "message": "no such method"}});
            respond(sock, "404 Not Found", &[("Content-Type", "application/json")], &error.to_string());
        }
        _ => answer(sock, seen, &[], json!({})),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(1, "tools/list"));
    let error = reg.line();
    assert_eq!((error["id"].clone(), error["error"]["code"].clone()), (json!(1), json!(INTERNAL_ERROR)));
    assert!(error["error"]["message"].as_str().unwrap().contains("HTTP 500: \"boom\""), "{error}");
    reg.send(request(2, "tools/list"));
    assert!(reg.line()["error"]["message"].as_str().unwrap().contains("HTTP 401"));
    reg.send(request(3, "nope"));
    let passed = reg.line();
    assert_eq!(
        (passed["id"].clone(), passed["error"]["code"].clone()),
        (json!(3), json!(-32601)),
        "its own error"
    );
    reg.send(request(4, "tools/list"));
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
}

#[test]
fn a_2026_request_carries_its_own_headers_and_no_session() {
    let (addr, seen) = upstream(|seen, sock| match seen.rpc().as_str() {
        "initialize" => {
            let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "2026-07-28 only",
                               "data": {"supported": ["2026-07-28"], "requested": "2025-06-18"}}});
            respond(sock, "400 Bad Request", &[("Content-Type", "application/json")], &error.to_string());
        }
        _ => answer(sock, seen, &[], json!({"resultType": "complete"})),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    assert_eq!(reg.line()["error"]["code"], -32022, "the refusal passes through as it is");
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}});
    reg.send(json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {"_meta": meta}}));
    assert_eq!(reg.line()["id"], 2);
    reg.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "résumé", "_meta": meta}}));
    assert_eq!(reg.line()["id"], 3);

    assert_eq!(next(&seen).rpc(), "initialize");
    let discover = next(&seen);
    assert_eq!(discover.header("mcp-protocol-version"), Some("2026-07-28"));
    assert_eq!(
        (discover.header("mcp-method"), discover.header("mcp-session-id")),
        (Some("server/discover"), None)
    );
    let call = next(&seen);
    assert_eq!(call.header("mcp-method"), Some("tools/call"));
    let encoded = format!("=?base64?{}?=", crate::codec::base64("résumé".as_bytes()));
    assert_eq!(call.header("mcp-name"), Some(encoded.as_str()));
    assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "no GET stream without initialized");
}

#[test]
fn a_cancelled_call_has_its_stream_closed_and_the_cancellation_posted() {
    let (closed_tx, closed) = mpsc::channel();
    let (addr, seen) = upstream(move |seen, sock| match seen.rpc().as_str() {
        "tools/call" => {
            sse_head(sock, true);
            chunk(sock, "id: 1\ndata:\n\n");
            let _ = closed_tx.send(closed_by_client(sock));
        }
        _ => session_script(seen, sock),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    reg.line();
    reg.send(request(5, "tools/call"));
    assert_eq!(next(&seen).rpc(), "initialize");
    assert_eq!(next(&seen).rpc(), "tools/call");
    reg.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}));
    assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the cancelled call's stream is closed");
    let cancel = next(&seen);
    assert_eq!(
        (cancel.rpc().as_str(), cancel.header("mcp-session-id")),
        ("notifications/cancelled", Some("s-1"))
    );
    reg.send(request(6, "ping"));
    assert_eq!(reg.line()["id"], 6, "no error answer for the cancelled call");
}

/// With every place taken and the queue full, the reader stops (what follows, a
/// cancellation here, is not read), and closing the pipe still ends the adapter at once.
#[test]
fn a_full_queue_stops_the_reading_and_closing_the_pipe_still_ends_the_adapter() {
    let (addr, seen, closed) = hanging_upstream();
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    for id in 0..(MAX_IN_FLIGHT + MAX_QUEUED) as u64 + 1 {
        reg.send(request(id, "tools/call"));
    }
    reg.send(cancel(0));
    for _ in 0..MAX_IN_FLIGHT {
        assert_eq!(next(&seen).rpc(), "tools/call");
    }
    assert!(seen.recv_timeout(Duration::from_millis(500)).is_err(), "at most {MAX_IN_FLIGHT} in flight");
    assert!(closed.try_recv().is_err(), "the cancellation behind the full queue is not read");
    let asked = Instant::now();
    reg.stdin = None;
    let (lines, ended) = reg.end();
    assert_eq!((lines, ended), (vec![], (0, "stopped".to_string())));
    assert!(asked.elapsed() < Duration::from_secs(3), "ended in {:?}", asked.elapsed());
    assert_eq!(closed.recv_timeout(WAIT), Ok(true), "ending closed the calls");
}

#[test]
fn the_queues_are_bounded_in_messages_and_bytes_and_a_cancelled_request_leaves() {
    let call = |id: u64, pad: usize| {
        let msg =
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"pad": "x".repeat(pad)}});
        Call::new(msg.to_string().into_bytes()).unwrap()
    };
    let mut queue = Queue::default();
    let big = call(0, 1000);
    let len = big.body.len();
    assert!(queue.has_room(len, 10), "an empty queue takes any message");
    queue.push(big);
    assert!(!queue.has_room(len, 2 * len - 1) && queue.has_room(len, 2 * len), "bytes");
    for id in 1..MAX_QUEUED as u64 {
        queue.push(call(id, 0));
    }
    assert!(!queue.has_room(1, usize::MAX), "{MAX_QUEUED} messages at most");
    assert!(queue.cancel("0") && !queue.cancel("0") && !queue.cancel("\"0\""));
    let left: usize = (1..MAX_QUEUED as u64).map(|id| call(id, 0).body.len()).sum();
    assert_eq!((queue.waiting.len(), queue.bytes), (MAX_QUEUED - 1, left));
    assert!(queue.has_room(len, usize::MAX));
    let mut init = Call::new(initialize().to_string().into_bytes()).unwrap();
    init.key = Some("init".into());
    queue.push(init);
    assert!(queue.cancel("init"), "an ordered request is cancelled in place");
    let keys: Vec<(Option<String>, bool)> =
        std::iter::from_fn(|| queue.pop()).map(|c| (c.key, c.dropped)).skip(MAX_QUEUED - 2).collect();
    assert_eq!(keys, [(Some("63".into()), false), (Some("init".into()), true)], "in order; marked dropped");
    assert_eq!(queue.bytes, 0);
}

/// What register writes is read without being built: a request's parts, a cancellation's
/// target, a 2026-07-28 request's version and name.
#[test]
fn a_message_from_register_is_read_for_its_parts() {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    let msg = json!({"jsonrpc": "2.0", "id": "a\u{e9}", "method": "tools/call", "params": {"name": "n\u{e9}", "_meta": meta, "arguments": {"deep": [[[1]]]}}});
    let call = Call::new(msg.to_string().into_bytes()).unwrap();
    assert_eq!(
        (call.kind(), call.id.clone(), call.key.as_deref()),
        (Kind::Request, Some(json!("a\u{e9}")), Some("\"a\u{e9}\""))
    );
    assert_eq!(
        (call.method.as_deref(), call.modern.as_deref(), call.name.as_deref()),
        (Some("tools/call"), Some("2026-07-28"), Some("n\u{e9}"))
    );
    let cancel = Call::new(
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId": 7 }}"#.to_vec(),
    )
    .unwrap();
    assert_eq!((cancel.kind(), cancel.cancels.as_deref(), cancel.key), (Kind::Other, Some("7"), None));
    let answer = Call::new(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#.to_vec()).unwrap();
    assert_eq!((answer.kind(), answer.id, answer.method), (Kind::Other, None, None), "a response");
    assert!(Call::new(b"{\"id\":1,}".to_vec()).is_none());
}

#[test]
fn a_batch_is_passed_on_one_line_per_message() {
    let (addr, _seen) = upstream(|seen, sock| match seen.json()["id"].as_u64() {
        Some(5) => {
            let batch = "[{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"x\":\"a\\nb\"}},\n\t{\"jsonrpc\":\"2.0\",\r\n\"id\":5,\"result\":{}}]";
            respond(sock, "200 OK", &[("Content-Type", "application/json")], batch);
        }
        _ => respond(
            sock,
            "200 OK",
            &[("Content-Type", "application/json")],
            "[{\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{}}, 1]",
        ),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(5, "tools/call"));
    assert_eq!(
        reg.line(),
        json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"x": "a\nb"}})
    );
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 5, "result": {}}), "the answer found in the batch");
    reg.send(request(6, "tools/call"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1), "nothing of a batch with an element that is not JSON-RPC");
    assert!(why.contains("not JSON-RPC"), "{why}");
}

#[test]
fn closing_stdin_ends_the_adapter_promptly_while_a_post_and_the_delete_hang() {
    let (closed_tx, closed) = mpsc::channel();
    let (addr, seen) = upstream(move |seen, sock| match (seen.method.as_str(), seen.rpc().as_str()) {
        ("DELETE", _) => std::thread::sleep(Duration::from_secs(6)),
        (_, "tools/call") => {
            let _ = closed_tx.send(closed_by_client(sock));
        }
        _ => session_script(seen, sock),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    reg.line();
    reg.send(request(2, "tools/call"));
    assert_eq!(next(&seen).rpc(), "initialize");
    assert_eq!(next(&seen).rpc(), "tools/call");
    let asked = Instant::now();
    reg.stdin = None;
    let (lines, ended) = reg.end();
    assert_eq!((lines, ended), (vec![], (0, "stopped".to_string())));
    assert!(asked.elapsed() < DELETE_WAIT + Duration::from_secs(1), "ended in {:?}", asked.elapsed());
    assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the hanging POST's connection was closed");
    let delete = next(&seen);
    assert_eq!((delete.method.as_str(), delete.header("mcp-session-id")), ("DELETE", Some("s-1")));
}

/// Keeps an event stream open with a comment every 200 ms and never answers, until the client
/// closes it (15 s at most); whether it did.
fn pinging_until_closed(sock: &mut TcpStream) -> bool {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut byte = [0u8; 1];
    for _ in 0..75 {
        if sock.write_all(b"8\r\n: ping\n\n\r\n").is_err() {
            return true;
        }
        match sock.read(&mut byte) {
            Ok(0) => return true,
            Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return true
            }
            _ => {}
        }
    }
    false
}

fn cancel(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}})
}

/// Every call asks `roots/list` on its stream and answers only once that is answered (a POST of
/// its own): with every place taken by a call, those answers still go.
#[test]
fn server_requests_inside_every_call_are_answered_while_all_places_are_busy() {
    let waiting: Arc<Mutex<HashMap<String, Sender<()>>>> = Arc::default();
    let (addr, _seen) = upstream(move |seen, sock| {
        let msg = seen.json();
        match msg["method"].as_str() {
            Some("tools/call") => {
                let ask = format!("r{}", msg["id"]);
                let (tx, rx) = mpsc::channel();
                lock(&waiting).insert(ask.clone(), tx);
                sse_head(sock, true);
                chunk(
                    sock,
                    &format!("data: {}\n\n", json!({"jsonrpc": "2.0", "id": ask, "method": "roots/list"})),
                );
                if rx.recv_timeout(WAIT).is_ok() {
                    let done = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"roots": "seen"}});
                    chunk(sock, &format!("data: {done}\n\n"));
                }
                closed_by_client(sock);
            }
            Some(_) => answer(sock, seen, &[], json!({})),
            None => {
                respond(sock, "202 Accepted", &[], "");
                let asked = msg["id"].as_str().and_then(|k| lock(&waiting).remove(k));
                if let Some(tx) = asked {
                    let _ = tx.send(());
                }
            }
        }
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    let calls = MAX_IN_FLIGHT as u64;
    for id in 0..calls {
        reg.send(request(id, "tools/call"));
    }
    let mut answered = Vec::new();
    for _ in 0..2 * calls {
        let line = reg.line();
        if line["method"] == "roots/list" {
            reg.send(json!({"jsonrpc": "2.0", "id": line["id"], "result": {"roots": []}}));
        } else {
            assert_eq!(line["result"]["roots"], "seen", "{line}");
            answered.push(line["id"].as_u64().unwrap());
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, (0..calls).collect::<Vec<_>>());
    reg.send(request(99, "tools/list"));
    assert_eq!(reg.line()["id"], 99);
}

/// An upstream whose first `MAX_IN_FLIGHT` calls hang (keep-alives, never an answer) and
/// whose other calls are answered; cancellations get 202. Each hanging call's connection
/// reports whether the client closed it.
fn hanging_upstream() -> (String, Receiver<Seen>, Receiver<bool>) {
    let (closed_tx, closed) = mpsc::channel();
    let closed_tx = Mutex::new(closed_tx);
    let (addr, seen) = upstream(move |seen, sock| match (seen.rpc().as_str(), seen.json()["id"].as_u64()) {
        ("tools/call", Some(id)) if id < MAX_IN_FLIGHT as u64 => {
            sse_head(sock, true);
            let closed = pinging_until_closed(sock);
            let _ = lock(&closed_tx).send(closed);
        }
        ("tools/call", _) => answer(sock, seen, &[], json!({"late": true})),
        _ => respond(sock, "202 Accepted", &[], ""),
    });
    (addr, seen, closed)
}

/// With every place taken by a call that hangs, one more call waits, and the cancellations
/// written after it are still read: each closes its call's stream, and the waiting call goes.
#[test]
fn cancellations_behind_a_waiting_call_are_read_and_free_the_places() {
    let (addr, seen, closed) = hanging_upstream();
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    let busy = MAX_IN_FLIGHT as u64;
    for id in 0..=busy {
        reg.send(request(id, "tools/call"));
    }
    for _ in 0..busy {
        assert_eq!(next(&seen).rpc(), "tools/call");
    }
    for id in 0..busy {
        reg.send(cancel(id));
    }
    for _ in 0..busy {
        assert_eq!(closed.recv_timeout(WAIT), Ok(true), "a cancelled call's stream is closed");
    }
    assert_eq!(
        reg.line(),
        json!({"jsonrpc": "2.0", "id": busy, "result": {"late": true}}),
        "no answer for the cancelled"
    );
    let rest: Vec<Seen> = (0..=busy).map(|_| next(&seen)).collect();
    assert_eq!(rest.iter().filter(|s| s.rpc() == "notifications/cancelled").count(), busy as usize);
}

/// A request cancelled while it waits for a place is dropped: neither it nor its cancellation
/// reaches the upstream, and it gets no answer.
#[test]
fn a_request_cancelled_while_it_waits_is_never_posted_nor_answered() {
    let (addr, seen, closed) = hanging_upstream();
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    let busy = MAX_IN_FLIGHT as u64;
    for id in 0..busy + 2 {
        reg.send(request(id, "tools/call"));
    }
    for _ in 0..busy {
        next(&seen);
    }
    reg.send(cancel(busy));
    reg.send(cancel(0));
    assert_eq!(closed.recv_timeout(WAIT), Ok(true));
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": busy + 1, "result": {"late": true}}));
    let mut rest = vec![next(&seen), next(&seen)];
    rest.extend(seen.recv_timeout(Duration::from_millis(300)));
    let mut got: Vec<(String, Value)> = rest
        .iter()
        .map(|s| {
            let msg = s.json();
            let which =
                if msg["id"].is_null() { msg["params"]["requestId"].clone() } else { msg["id"].clone() };
            (s.rpc(), which)
        })
        .collect();
    got.sort_by_key(|(rpc, _)| rpc.clone());
    assert_eq!(
        got,
        vec![("notifications/cancelled".into(), json!(0)), ("tools/call".into(), json!(busy + 1))]
    );
    reg.stdin = None;
    assert_eq!(reg.end(), (vec![], (0, "stopped".to_string())));
}

/// A notification answered with an event stream: the stream is dropped at once (not read to
/// its end), so the messages after `notifications/initialized` do not wait for it.
#[test]
fn a_notification_answered_with_an_event_stream_holds_nothing() {
    let (closed_tx, closed) = mpsc::channel();
    let closed_tx = Mutex::new(closed_tx);
    let (addr, _seen) = upstream(move |seen, sock| match (seen.method.as_str(), seen.rpc().as_str()) {
        ("POST", "notifications/initialized") => {
            sse_head(sock, true);
            let _ = lock(&closed_tx).send(pinging_until_closed(sock));
        }
        _ => session_script(seen, sock),
    });
    let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(initialize());
    reg.line();
    reg.send(initialized());
    reg.send(request(2, "tools/list"));
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 2, "result": {"ok": "tools/list"}}));
    assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the notification's stream was closed");
}

/// An adapter with no thread of its own, and the far end of its output.
fn bare_adapter(max_message: usize) -> (Arc<Adapter>, UnixStream) {
    let url = Url::parse("http://127.0.0.1:9/mcp").unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let ad = Adapter {
        name: "bare".into(),
        shown: shown(&url),
        url,
        headers: vec![],
        transport: HttpTransport::Streamable,
        tls: None,
        max_message,
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        conns: Mutex::new(Conns::default()),
        ends: [ours.try_clone().unwrap(), ours.try_clone().unwrap()],
        out: Mutex::new(ours),
        stopping: AtomicBool::new(false),
        finishing: AtomicBool::new(false),
        said_credentials: AtomicBool::new(false),
        said_redirect: AtomicBool::new(false),
        ended: Arc::default(),
    };
    (Arc::new(ad), theirs)
}

/// A message of about `len` bytes answering id `id`, whose result holds `[0,0,…]`.
fn zeros(id: u64, len: usize) -> Vec<u8> {
    let mut msg = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"zeros":["#).into_bytes();
    while msg.len() < len {
        msg.extend_from_slice(b"0,\n");
    }
    msg.extend_from_slice(b"0]}}");
    msg
}

/// This process's peak resident memory, in bytes.
fn peak_resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

const LARGE: usize = 14 << 20;
const AT_ONCE: u64 = 4;

/// Run alone in a process of its own by the test below: `AT_ONCE` workers pass on a
/// `LARGE` message each at the same time (the last a batch of two halves); says how much
/// memory that took beyond the messages themselves, and how many lines came out.
#[test]
#[ignore = "run in a process of its own by checking_large_messages_at_once_takes_little_more_than_them"]
fn large_messages_at_once() {
    let mut messages: Vec<Vec<u8>> = (0..AT_ONCE - 1).map(|id| zeros(id, LARGE)).collect();
    let mut batch = b"[".to_vec();
    batch.extend(zeros(AT_ONCE, LARGE / 2));
    batch.extend_from_slice(b",\n");
    batch.extend(zeros(AT_ONCE + 1, LARGE / 2));
    batch.push(b']');
    messages.push(batch);
    let (ad, mut theirs) = bare_adapter(16 << 20);
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = 0;
        while let Ok(n @ 1..) = theirs.read(&mut buf) {
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        }
        lines
    });
    let before = peak_resident();
    let start = Arc::new(std::sync::Barrier::new(messages.len()));
    let workers: Vec<_> = messages
        .into_iter()
        .map(|msg| {
            let (ad, start) = (ad.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                ad.deliver(msg, None).is_ok()
            })
        })
        .collect();
    let delivered = workers.into_iter().all(|w| w.join().unwrap());
    let took = peak_resident().saturating_sub(before);
    drop(ad);
    println!("measured: {delivered} {took} {}", drain.join().unwrap());
}

/// Sixteen workers each checking a 14 MiB `[0,0,…]` at once cost gigabytes when each built
/// a `Value` (32 bytes an element): `AT_ONCE` of them at once, one a batch that is split,
/// take less than two messages' worth of memory beyond the messages themselves.
#[test]
fn checking_large_messages_at_once_takes_little_more_than_them() {
    let name = "register::upstream_http::tests::large_messages_at_once";
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the measuring process took over 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let said = out.split("measured: ").nth(1).and_then(|l| l.lines().next());
    let said = said.unwrap_or_else(|| panic!("{out}"));
    let words: Vec<&str> = said.split_whitespace().collect();
    let (delivered, took, lines) = (words[0], words[1].parse::<usize>().unwrap(), words[2]);
    assert_eq!((delivered, lines), ("true", (AT_ONCE + 1).to_string().as_str()), "{said}");
    assert!(took < 2 * LARGE, "{said}");
}

/// What this module logs that holds `MARK`, and a probe that tells the capture is on.
struct Capture;

static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());
const MARK: &str = "S3CRET";
const PROBE: &str = "probe: the capture is on";
const TARGET: &str = "mcpport::register::upstream_http";

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.target().starts_with(TARGET)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = record.args().to_string();
            if line.to_ascii_lowercase().contains(&MARK.to_ascii_lowercase()) || line == PROBE {
                lock(&CAPTURED).push(line);
            }
        }
    }

    fn flush(&self) {}
}

/// The lines an adapter says and why it ended: `asks` are sent; with `answers`, after that many
/// lines its stdin is closed (else it ends by itself).
fn said_before_the_end(
    url: &str,
    transport: HttpTransport,
    asks: &[Value],
    answers: Option<usize>,
) -> Vec<String> {
    let headers = vec![("Authorization".to_string(), format!("Bearer {MARK}"))];
    let spec =
        HttpSpec { url: url.into(), headers, transport, tls: Default::default(), max_message: MAX_LINE };
    let child = match start(spec, "test") {
        Ok(child) => child,
        Err(e) => return vec![e.to_string()],
    };
    let out = UnixStream::from(OwnedFd::from(child.stdout));
    out.set_read_timeout(Some(WAIT)).unwrap();
    let mut reg = Register { stdin: Some(child.stdin), out: BufReader::new(out), ended: child.ended };
    for ask in asks {
        reg.send(ask.clone());
    }
    let mut lines: Vec<Value> = (0..answers.unwrap_or(0)).map(|_| reg.line()).collect();
    if answers.is_some() {
        reg.stdin = None;
    }
    let (rest, (_, why)) = reg.end();
    lines.extend(rest);
    let mut said: Vec<String> = lines.iter().map(Value::to_string).collect();
    said.push(why);
    said
}

/// A URL's query, a configured header's value, a session id, a `Location` or another header
/// of the upstream's: none shows in a log line, an error answer or why the adapter ended.
#[test]
fn no_log_line_or_error_shows_a_query_or_a_header_value() {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::max_level().max(log::LevelFilter::Debug));
    log::debug!(target: TARGET, "{PROBE}");
    assert_eq!(*lock(&CAPTURED), [PROBE], "the capture is on");

    let (addr, _seen) = upstream(|seen, sock| {
        let id = seen.json()["id"].as_u64();
        let raw = |sock: &mut TcpStream, head: &str| {
            let _ = sock.write_all(format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n{{}}").as_bytes());
        };
        match (seen.method.as_str(), seen.path.split('?').next().unwrap_or(""), id) {
            ("GET", "/sse/other", _) => {
                sse_head(sock, false);
                let _ = sock.write_all(
                    format!("event: endpoint\ndata: http://evil.invalid/m?sid={MARK}\n\n").as_bytes(),
                );
                closed_by_client(sock);
            }
            ("GET", "/sse/bad", _) => {
                sse_head(sock, false);
                let _ =
                    sock.write_all(format!("event: endpoint\ndata: http://a b/m?sid={MARK}\n\n").as_bytes());
                closed_by_client(sock);
            }
            ("GET", "/sse/moved", _) => {
                respond(sock, "302 Found", &[("Location", &format!("/sse?{MARK}"))], "")
            }
            ("GET", _, _) => respond(sock, "405 Method Not Allowed", &[], ""),
            (_, _, Some(1)) => {
                let result = json!({"protocolVersion": "2025-06-18", "capabilities": {}});
                answer(sock, seen, &[("Mcp-Session-Id", &format!("{MARK}-session"))], result);
            }
            (_, _, Some(2)) => respond(
                sock,
                "302 Found",
                &[("Location", &format!("http://elsewhere.invalid/mcp?code={MARK}"))],
                "",
            ),
            (_, _, Some(3)) => {
                respond(sock, "307 Temporary Redirect", &[("Location", &format!("/other?code={MARK}"))], "")
            }
            (_, _, Some(4)) => respond(sock, "404 Not Found", &[], ""),
            (_, _, Some(5)) => raw(sock, &format!("Content-Type: text/{MARK}\r\nContent-Length: 2")),
            (_, _, Some(6)) => {
                raw(sock, &format!("Content-Type: application/json\r\nTransfer-Encoding: {MARK}"))
            }
            (_, _, Some(7)) => {
                raw(sock, &format!("Content-Type: application/json\r\nContent-Length: {MARK}"))
            }
            _ => respond(sock, "202 Accepted", &[], ""),
        }
    });
    let url = format!("http://{addr}/mcp?key={MARK}");
    let asks = [initialize(), request(2, "a"), request(3, "a")];
    let mut said = said_before_the_end(&url, HttpTransport::Streamable, &asks, Some(3));
    said.extend(said_before_the_end(&url, HttpTransport::Streamable, &[initialize(), request(4, "a")], None));
    for id in 5..=7 {
        said.extend(said_before_the_end(&url, HttpTransport::Streamable, &[request(id, "a")], None));
    }
    for path in ["other", "bad", "moved"] {
        let url = format!("http://{addr}/sse/{path}?key={MARK}");
        said.extend(said_before_the_end(&url, HttpTransport::Sse, &[request(8, "a")], None));
    }
    let url = format!("http://a b/mcp?key={MARK}");
    said.extend(said_before_the_end(&url, HttpTransport::Streamable, &[], None));
    assert_eq!(said.len(), 13, "{said:#?}");
    let captured = lock(&CAPTURED).clone();
    let mark = MARK.to_ascii_lowercase();
    let shown: Vec<&String> =
        said.iter().chain(&captured).filter(|s| s.to_ascii_lowercase().contains(&mark)).collect();
    assert!(shown.is_empty(), "{shown:#?}");
}

#[test]
fn a_refused_connection_ends_the_adapter() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut reg = adapter(&format!("http://127.0.0.1:{port}/mcp"), HttpTransport::Streamable, MAX_LINE);
    reg.send(request(1, "tools/list"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert_eq!(why, format!("the upstream at http://127.0.0.1:{port}/mcp refused the connection"));
}

/// A legacy upstream: the GET stream names `endpoint`; POSTs there get 202 and their
/// messages go to the stream, which answers each request with `{"echo": method}`.
fn legacy_upstream(endpoint: &'static str) -> (String, Receiver<Seen>) {
    let (posted_tx, posted) = mpsc::channel::<Value>();
    let posted = Mutex::new(posted);
    upstream(move |seen, sock| match seen.method.as_str() {
        "GET" => {
            sse_head(sock, false);
            let _ = sock.write_all(format!("event: endpoint\ndata: {endpoint}\n\n").as_bytes());
            let posted = lock(&posted);
            while let Ok(msg) = posted.recv_timeout(WAIT) {
                let answer = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"echo": msg["method"]}});
                let _ = sock.write_all(format!("event: message\ndata: {answer}\n\n").as_bytes());
            }
        }
        _ => {
            respond(sock, "202 Accepted", &[], "Accepted");
            let _ = posted_tx.send(seen.json());
        }
    })
}

#[test]
fn legacy_sse_posts_to_the_endpoint_and_answers_come_on_the_stream() {
    let (addr, seen) = legacy_upstream("/messages?session_id=abc");
    let mut reg = adapter(&format!("http://{addr}/sse"), HttpTransport::Sse, MAX_LINE);
    reg.send(request(1, "tools/list"));
    assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 1, "result": {"echo": "tools/list"}}));
    let get = next(&seen);
    assert_eq!(
        (get.method.as_str(), get.path.as_str(), get.header("accept")),
        ("GET", "/sse", Some("text/event-stream"))
    );
    let post = next(&seen);
    assert_eq!((post.method.as_str(), post.path.as_str()), ("POST", "/messages?session_id=abc"));
    assert_eq!(
        (post.header("host"), post.header("authorization")),
        (Some(addr.as_str()), Some("Bearer t0ken"))
    );
    reg.stdin = None;
    assert_eq!(reg.end(), (vec![], (0, "stopped".to_string())));
}

#[test]
fn a_legacy_endpoint_on_another_host_is_refused() {
    let (addr, seen) = legacy_upstream("http://evil.invalid:8080/messages?session_id=abc");
    let mut reg = adapter(&format!("http://{addr}/sse"), HttpTransport::Sse, MAX_LINE);
    reg.send(request(1, "tools/list"));
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert!(why.contains("endpoint on another host (http://evil.invalid:8080/messages)"), "{why}");
    assert_eq!(next(&seen).method, "GET");
    assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "nothing was posted");
}

#[test]
fn a_legacy_stream_that_ends_ends_the_adapter() {
    let (addr, _seen) = upstream(|_, sock| {
        sse_head(sock, true);
        chunk(sock, "event: endpoint\ndata: messages/?session_id=1\n\n");
        chunk(sock, "");
    });
    let mut reg = adapter(&format!("http://{addr}/sse"), HttpTransport::Sse, MAX_LINE);
    let (lines, (code, why)) = reg.end();
    assert_eq!((lines, code), (vec![], 1));
    assert!(why.ends_with("closed its event stream: the session is gone"), "{why}");
}

#[test]
fn endpoints_resolve_on_the_upstream_itself_only() {
    let base = Url::parse("http://10.0.0.2:8123/mcp_server/sse?x=1").unwrap();
    let at = |reference: &str| {
        resolve(&base, reference).map(|u| shown(&u) + &u.path[u.path.find('?').unwrap_or(u.path.len())..])
    };
    assert_eq!(at("/mcp_server/messages/abc").unwrap(), "http://10.0.0.2:8123/mcp_server/messages/abc");
    assert_eq!(
        at("messages/?session_id=1").unwrap(),
        "http://10.0.0.2:8123/mcp_server/messages/?session_id=1"
    );
    assert_eq!(at("?s=2").unwrap(), "http://10.0.0.2:8123/mcp_server/sse?s=2");
    assert_eq!(at("/m?next=http://x").unwrap(), "http://10.0.0.2:8123/m?next=http://x");
    assert_eq!(at("http://10.0.0.2:8123/m").unwrap(), "http://10.0.0.2:8123/m");
    for elsewhere in
        ["http://10.0.0.3:8123/m", "https://10.0.0.2:8123/m", "//evil.example/m", "http://10.0.0.2/m"]
    {
        assert!(at(elsewhere).unwrap_err().contains("another host"), "{elsewhere}");
    }
    assert!(at("").is_err() && at("/a b").is_err());
}

#[test]
fn header_values_go_plain_or_in_base64() {
    assert_eq!(header_safe("tools/call"), "tools/call");
    assert_eq!(header_safe("file:///a b.txt"), "file:///a b.txt");
    for odd in ["résumé", " lead", "trail ", "line\r\nX-Evil: 1", "=?base64?x?=", ""] {
        let encoded = header_safe(odd);
        assert!(encoded.starts_with("=?base64?") && encoded.bytes().all(|b| b.is_ascii_graphic()), "{odd:?}");
        assert_eq!(crate::gateway::front::modern::header_value(&encoded).as_deref(), Some(odd));
    }
    assert!(visible("s-1", MAX_TOKEN) && !visible("a b", MAX_TOKEN) && !visible("", MAX_TOKEN));
}
