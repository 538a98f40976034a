//! Streamable HTTP at /mcp and /servers/NAME/mcp: sessions, every status code of the transport,
//! JSON versus SSE answers, batches, the GET stream, and server-to-client requests routed back to
//! the client whose call caused them.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{http, post_stream, Gateway, HttpResponse, SseReader, Watchdog, WAIT};

const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A Streamable HTTP client session, spoken by hand.
struct Client {
    port: u16,
    path: String,
    session: Option<String>,
    version: String,
}

impl Client {
    fn new(gw: &Gateway, path: &str) -> Client {
        Client { port: gw.port, path: path.into(), session: None, version: "2025-06-18".into() }
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let mut h = vec![ACCEPT, JSON, ("MCP-Protocol-Version", self.version.as_str())];
        if let Some(s) = &self.session {
            h.push(("Mcp-Session-Id", s));
        }
        h
    }

    fn post(&self, body: &Value) -> HttpResponse {
        http(self.port, "POST", &self.path, &self.headers(), body.to_string().as_bytes())
    }

    fn initialize(&mut self, capabilities: Value) -> Value {
        let params = json!({"protocolVersion": self.version, "capabilities": capabilities, "clientInfo": {"name": "t", "version": "0"}});
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}));
        assert_eq!(resp.status, 200, "{resp:?}");
        self.session = Some(resp.header("Mcp-Session-Id").expect("a session id"));
        let ok = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(ok.status, 202);
        resp.json()
    }

    /// A request answered with JSON.
    fn call(&self, id: u64, method: &str, params: Value) -> Value {
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.header("Content-Type").as_deref(), Some("application/json"), "{resp:?}");
        resp.json()
    }

    /// A request whose answer is read as a stream, event by event.
    fn stream(&self, body: &Value) -> SseReader {
        post_stream(self.port, &self.path, &self.headers(), &body.to_string())
    }
}

#[test]
fn session_lifecycle_and_status_codes() {
    let _w = Watchdog::new("session_lifecycle", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = Client::new(&gw, "/mcp");
    let init = c.initialize(json!({}));
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    let sid = c.session.clone().unwrap();
    assert!(sid.len() == 32 && sid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{sid}");

    let tools = c.call(1, "tools/list", json!({}));
    assert!(tools["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "pi_echo"));
    let echo = c.call(2, "tools/call", json!({"name": "pi_echo", "arguments": {"text": "hey"}}));
    assert_eq!(echo["result"]["content"][0]["text"], "hey");

    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}).to_string();
    let ping = ping.as_bytes();
    let status = |headers: &[(&str, &str)], body: &[u8]| http(gw.port, "POST", "/mcp", headers, body).status;
    let with_sid = ("Mcp-Session-Id", sid.as_str());
    assert_eq!(status(&[ACCEPT, JSON], ping), 400, "no session id");
    assert_eq!(status(&[ACCEPT, JSON, ("Mcp-Session-Id", "feedface")], ping), 404, "unknown session");
    assert_eq!(status(&[ACCEPT, JSON, with_sid, ("MCP-Protocol-Version", "1999-01-01")], ping), 400);
    assert_eq!(status(&[("Accept", "application/json"), JSON, with_sid], ping), 406);
    assert_eq!(status(&[ACCEPT, ("Content-Type", "text/plain"), with_sid], ping), 415);
    let bad = http(gw.port, "POST", "/mcp", &[ACCEPT, JSON, with_sid], b"{oops");
    assert_eq!((bad.status, bad.json()["error"]["code"].clone()), (400, json!(-32700)));
    let not_rpc = http(gw.port, "POST", "/mcp", &[ACCEPT, JSON, with_sid], b"{\"jsonrpc\":\"2.0\"}");
    assert_eq!((not_rpc.status, not_rpc.json()["error"]["code"].clone()), (400, json!(-32600)));
    assert_eq!(http(gw.port, "PUT", "/mcp", &[], b"").status, 405);
    assert_eq!(http(gw.port, "GET", "/mcp", &[("Accept", "text/event-stream")], b"").status, 400);

    // Batches belong to 2025-03-26 only.
    let batch = json!([{"jsonrpc": "2.0", "id": 4, "method": "ping"}]);
    assert_eq!(c.post(&batch).status, 400);

    assert_eq!(http(gw.port, "DELETE", "/mcp", &[with_sid], b"").status, 200);
    assert_eq!(c.post(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"})).status, 404);
}

#[test]
fn progress_turns_the_answer_into_a_stream() {
    let _w = Watchdog::new("progress_stream", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = Client::new(&gw, "/mcp");
    c.initialize(json!({}));
    let params = json!({"name": "pi_sleep", "arguments": {"seconds": 1.2}, "_meta": {"progressToken": "p1"}});
    let mut s = c.stream(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}));
    let progress = s.next_message().unwrap();
    assert_eq!(progress["method"], "notifications/progress");
    assert_eq!(progress["params"]["progressToken"], "p1");
    let done = s.next_message().unwrap();
    assert_eq!(done["id"], 7);
    assert_eq!(done["result"]["isError"], false);
    assert!(s.next_event().is_none(), "the stream ends after the answer");
}

#[test]
fn batches_for_2025_03_26_sessions() {
    let _w = Watchdog::new("batches", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = Client::new(&gw, "/mcp");
    c.version = "2025-03-26".into();
    c.initialize(json!({}));
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "pi_echo", "arguments": {"text": "a"}}},
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]);
    let mut s = c.stream(&batch);
    let mut ids: Vec<u64> = (0..2).map(|_| s.next_message().unwrap()["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, [1, 2]);
}

#[test]
fn get_stream_carries_list_changed_and_is_one_per_session() {
    let _w = Watchdog::new("get_stream", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let mut c = Client::new(&gw, "/mcp");
    c.initialize(json!({}));
    let sid = c.session.clone().unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n\r\n"
    );
    s.write_all(get.as_bytes()).unwrap();
    let mut stream = SseReader::new(s);
    assert_eq!(stream.head().status, 200);
    let second =
        http(gw.port, "GET", "/mcp", &[("Accept", "text/event-stream"), ("Mcp-Session-Id", &sid)], b"");
    assert_eq!(second.status, 409);
    let _pi = gw.register_ready("pi");
    assert_eq!(stream.next_message().unwrap()["method"], "notifications/tools/list_changed");
}

#[test]
fn per_server_endpoint_is_the_server_itself() {
    let _w = Watchdog::new("per_server_endpoint", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = Client::new(&gw, "/servers/pi/mcp");
    let init = c.initialize(json!({}));
    assert_eq!(init["result"]["serverInfo"]["name"], "mcpport-sample");
    let names: Vec<Value> = c.call(1, "tools/list", json!({}))["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(names.contains(&json!("echo")) && !names.contains(&json!("list_servers")), "{names:?}");
    let echo = c.call(2, "tools/call", json!({"name": "echo", "arguments": {"text": "direct"}}));
    assert_eq!(echo["result"]["content"][0]["text"], "direct");
    // Everything else is the server's own, errors included.
    assert_eq!(c.call(3, "prompts/list", json!({}))["result"]["prompts"][0]["name"], "greet");
    assert_eq!(c.call(4, "no/such/method", json!({}))["error"]["code"], -32601);

    let nobody = http(
        gw.port,
        "POST",
        "/servers/nobody/mcp",
        &[ACCEPT, JSON],
        br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#,
    );
    assert_eq!(nobody.status, 404);
    assert!(nobody.body.contains("nobody"));
    // Sessions do not cross endpoints.
    let sid = c.session.clone().unwrap();
    let other = http(
        gw.port,
        "POST",
        "/mcp",
        &[ACCEPT, JSON, ("Mcp-Session-Id", &sid)],
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    assert_eq!(other.status, 404);
    // The legacy transport has a per-server endpoint too.
    let mut legacy = crate::util::SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    assert!(legacy.endpoint.starts_with("/servers/pi/messages/?session_id="), "{}", legacy.endpoint);
    legacy.initialize("2024-11-05");
    assert_eq!(legacy.tool("echo", json!({"text": "old"}))["result"]["content"][0]["text"], "old");
}

#[test]
fn foreign_origins_are_refused() {
    let _w = Watchdog::new("foreign_origins", Duration::from_secs(30));
    let gw = Gateway::start(&["--allow-origin", "https://app.example.org"]);
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    // (`http` sends `Host: 127.0.0.1:PORT`; a second Host is a 400, another name a 421.)
    let post = |origin: &str| http(gw.port, "POST", "/mcp", &[ACCEPT, JSON, ("Origin", origin)], init).status;
    assert_eq!(post("http://evil.example.com"), 403);
    assert_eq!(post("null"), 403);
    assert_eq!(post("http://localhost:6274"), 200);
    assert_eq!(post("http://127.0.0.1:9"), 200);
    assert_eq!(post("https://app.example.org"), 200);
    let sse = http(gw.port, "GET", "/sse", &[("Origin", "http://evil.example.com")], b"");
    assert_eq!(sse.status, 403);
}

#[test]
fn server_requests_reach_the_client_that_asked_and_answers_go_back() {
    let _w = Watchdog::new("server_requests", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = Client::new(&gw, "/mcp");
    c.initialize(json!({"sampling": {}}));
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "pi_ask_client", "arguments": {"method": "sampling/createMessage"}}});
    let mut s = c.stream(&call);
    let ask = s.next_message().unwrap();
    assert_eq!(ask["method"], "sampling/createMessage");
    let minted = ask["id"].as_str().unwrap_or_default();
    assert!(minted.starts_with("mcpport-"), "the gateway mints its own id, naming the link: {ask}");
    let answer = json!({"jsonrpc": "2.0", "id": ask["id"], "result": {"role": "assistant", "content": {"type": "text", "text": "hi!"}, "model": "m"}});
    assert_eq!(c.post(&answer).status, 202);
    let done = s.next_message().unwrap();
    assert_eq!(done["id"], 9);
    assert!(done["result"]["content"][0]["text"].as_str().unwrap().contains("hi!"), "{done}");

    // A client without the capability is never asked; the server gets an error instead.
    let mut plain = Client::new(&gw, "/mcp");
    plain.initialize(json!({}));
    let resp = plain.call(
        1,
        "tools/call",
        json!({"name": "pi_ask_client", "arguments": {"method": "elicitation/create"}}),
    );
    assert_eq!(resp["result"]["isError"], true);
    assert!(resp["result"]["content"][0]["text"].as_str().unwrap().contains("elicitation"), "{resp}");
}
