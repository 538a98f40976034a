//! Edges of either era (issue 13, stage 4): a fake edge that speaks only protocol 2026-07-28
//! (it refuses `initialize` and answers `server/discover`) registers as a modern edge; legacy
//! and 2026-07-28 clients both reach it, every request it gets carries the modern `_meta`, its
//! `input_required` passes to a 2026-07-28 client and the retry brings its own `requestState`
//! back, and a legacy client is asked its questions as server requests; a probe answered with
//! nonsense falls back to `initialize` (refused here, so the registration fails) and the
//! gateway serves on.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::modern::{answer, meta, post};
use crate::util::{Gateway, SseClient, Watchdog};

const VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// How the fake edge answers the probe.
#[derive(Clone, Copy, PartialEq)]
enum Discovery {
    Honest,
    Garbage,
}

/// A 2026-07-28-only edge over a raw WebSocket; every request it got is kept.
struct ModernEdge {
    seen: Arc<Mutex<Vec<Value>>>,
    statuses: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ModernEdge {
    fn start(port: u16, name: &str, discovery: Discovery) -> ModernEdge {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let url = format!("ws://127.0.0.1:{port}/mcp/register");
        let (mut ws, _) = tungstenite::client(url, stream).expect("WebSocket upgrade");
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let register = json!({"jsonrpc": "2.0", "id": format!("id-{name}"), "method": "register",
                              "params": {"name": name}});
        ws.send(Message::text(register.to_string())).unwrap();
        let (seen, statuses, stop): Shared = Default::default();
        let shared = (seen.clone(), statuses.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(ws, discovery, shared));
        ModernEdge { seen, statuses, stop, thread: Some(thread) }
    }

    /// The `registered` or `error` status frame, waiting up to `limit`.
    fn outcome(&self, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let found = self
                .statuses
                .lock()
                .unwrap()
                .iter()
                .find(|s| s["status"] == "registered" || s["status"] == "error")
                .cloned();
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn seen(&self, method: &str) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|m| m["method"] == method).cloned().collect()
    }
}

impl Drop for ModernEdge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Shared = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<Value>>>, Arc<AtomicBool>);

/// The resource a legacy client subscribes to through the gateway's listen.
const WATCHED: &str = "m://watched";

fn serve(mut ws: WebSocket<TcpStream>, discovery: Discovery, (seen, statuses, stop): Shared) {
    let mut listen: Option<(Value, Value)> = None;
    while !stop.load(Ordering::Relaxed) {
        let text = match ws.read() {
            Ok(Message::Text(t)) => t.as_str().to_owned(),
            Ok(Message::Close(_)) => return,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                continue
            }
            Err(_) => return,
        };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else { continue };
        if msg.get("status").is_some() {
            statuses.lock().unwrap().push(msg);
            continue;
        }
        seen.lock().unwrap().push(msg.clone());
        let (Some(method), Some(id)) = (msg["method"].as_str(), msg.get("id")) else { continue };
        let params = &msg["params"];
        if method == "subscriptions/listen" {
            // A long-lived request: acknowledged, answered only when it ends.
            let tag = json!({"io.modelcontextprotocol/subscriptionId": id});
            listen = Some((id.clone(), params["notifications"].clone()));
            let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                             "params": {"notifications": params["notifications"], "_meta": tag}});
            if ws.send(Message::text(ack.to_string())).is_err() {
                return;
            }
            continue;
        }
        if method == "tools/call" && params["name"] == "touch" {
            // An update of the watched resource, on the open listen, if it asks for it.
            if let Some((lid, filter)) = &listen {
                let watched =
                    filter["resourceSubscriptions"].as_array().is_some_and(|u| u.contains(&json!(WATCHED)));
                if watched {
                    let update = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                        "params": {"uri": WATCHED, "_meta": {"io.modelcontextprotocol/subscriptionId": lid}}});
                    if ws.send(Message::text(update.to_string())).is_err() {
                        return;
                    }
                }
            }
        }
        let reply = match respond(method, params, discovery) {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        };
        if ws.send(Message::text(reply.to_string())).is_err() {
            return;
        }
    }
}

/// What a 2026-07-28-only server answers; a request without the modern `_meta` is refused.
fn respond(method: &str, params: &Value, discovery: Discovery) -> Result<Value, Value> {
    if method == "initialize" {
        return Err(json!({"code": -32022, "message": "Unsupported protocol version",
                          "data": {"supported": ["2026-07-28"], "requested": params["protocolVersion"]}}));
    }
    if params["_meta"][VERSION_KEY] != "2026-07-28" {
        return Err(json!({"code": -32602, "message": format!("{method} without the 2026-07-28 _meta")}));
    }
    let complete = |mut v: Value| {
        v["resultType"] = json!("complete");
        v["_meta"] = json!({"io.modelcontextprotocol/serverInfo": {"name": "modern-fake", "version": "1"}});
        Ok(v)
    };
    match method {
        "server/discover" if discovery == Discovery::Garbage => Ok(json!({"supportedVersions": 42})),
        "server/discover" => complete(json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}, "resources": {"subscribe": true}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-fake", "version": "1"}},
        })),
        "tools/list" => complete(json!({"ttlMs": 0, "cacheScope": "public", "tools": [
            {"name": "whoami", "inputSchema": {"type": "object"}},
            {"name": "ask", "inputSchema": {"type": "object"}},
        ]})),
        "resources/list" => complete(json!({"ttlMs": 0, "cacheScope": "public",
                                            "resources": [{"uri": WATCHED, "name": "watched"}]})),
        "resources/templates/list" => {
            complete(json!({"ttlMs": 0, "cacheScope": "public", "resourceTemplates": []}))
        }
        "tools/call" if params["name"] == "touch" => complete(json!({"content": []})),
        "tools/call" if params["name"] == "whoami" => {
            let client = &params["_meta"]["io.modelcontextprotocol/clientInfo"]["name"];
            complete(json!({"content": [{"type": "text", "text": format!("you are {client}")}]}))
        }
        "tools/call" if params["name"] == "ask" => match (&params["requestState"], &params["inputResponses"])
        {
            (Value::String(state), Value::Object(answers)) if state == "edge-round-1" => {
                let name = &answers["who"]["content"]["name"];
                complete(json!({"content": [{"type": "text", "text": format!("Hello, {name}")}]}))
            }
            _ => Ok(json!({
                "resultType": "input_required",
                "inputRequests": {"who": {"method": "elicitation/create",
                    "params": {"message": "Name?", "requestedSchema": {"type": "object"}}}},
                "requestState": "edge-round-1",
            })),
        },
        _ => Err(json!({"code": -32601, "message": format!("Method not found: {method}")})),
    }
}

fn text(resp: &Value) -> String {
    resp["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_2026_only_edge_serves_clients_of_both_eras() {
    let _w = Watchdog::new("a_2026_only_edge_serves_clients_of_both_eras", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let edge = ModernEdge::start(gw.port, "fresh", Discovery::Honest);
    let outcome = edge.outcome(Duration::from_secs(15));
    assert_eq!(outcome.as_ref().map(|s| s["status"].clone()), Some(json!("registered")), "{outcome:?}");
    gw.proc.wait_log("server fresh: speaks the modern era");
    let status = gw.http("GET", "/status.json", &[], b"").json();
    let server = status["servers"].as_array().unwrap().iter().find(|s| s["name"] == "fresh").unwrap().clone();
    assert_eq!(server["era"], "modern", "{server}");

    // A legacy client, on the aggregated view: its call arrives in modern dress.
    let mut legacy = SseClient::connect(gw.port, "/sse", &[]);
    legacy.initialize("2025-06-18");
    assert_eq!(text(&legacy.tool("fresh_whoami", json!({}))), "you are \"tests\"");
    let call = edge.seen("tools/call").pop().unwrap();
    assert_eq!(call["params"]["_meta"][VERSION_KEY], "2026-07-28");
    assert!(call["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"].is_object());
    // A question for a client that did not declare the capability: an error, not a hang.
    let asked = legacy.tool("fresh_ask", json!({}));
    assert!(asked["error"]["message"].as_str().unwrap().contains("elicitation capability"), "{asked}");
    // One that did is asked the edge's question as a server request, and its answer goes back
    // to the edge with the edge's requestState.
    let mut able = SseClient::connect(gw.port, "/servers/fresh/sse", &[]);
    able.initialize_with("2025-06-18", json!({"elicitation": {}}));
    able.send_id(7, "tools/call", json!({"name": "ask", "arguments": {}}));
    let question = loop {
        let msg = able.next(Duration::from_secs(10)).expect("the edge's question");
        if msg["method"] == "elicitation/create" {
            break msg;
        }
    };
    assert_eq!(question["params"]["message"], "Name?");
    able.reply(&question["id"], json!({"action": "accept", "content": {"name": "Grace"}}));
    let done = loop {
        let msg = able.next(Duration::from_secs(10)).expect("the call's answer");
        if msg["id"] == 7 {
            break msg;
        }
    };
    assert_eq!(text(&done), "Hello, \"Grace\"", "{done}");
    // Its subscription reaches the edge as the filter of the gateway's listen there, and the
    // edge's update comes back to it.
    let sub = able.call("resources/subscribe", json!({"uri": WATCHED}));
    assert!(sub["result"].is_object(), "{sub}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let updated = loop {
        assert!(Instant::now() < deadline, "no resources/updated reached the subscriber");
        able.send_id(8, "tools/call", json!({"name": "touch", "arguments": {}}));
        let got = able.collect(Duration::from_millis(200));
        if let Some(update) = got.into_iter().find(|m| m["method"] == "notifications/resources/updated") {
            break update;
        }
    };
    assert_eq!(updated["params"], json!({"uri": WATCHED}), "untagged: {updated}");

    // A 2026-07-28 client on both endpoints: the edge's question and state pass through, and the
    // retry carries them back.
    for (path, tool) in [("/servers/fresh/mcp", "ask"), ("/mcp", "fresh_ask")] {
        let caps = json!({"elicitation": {}});
        let params = json!({"name": tool, "arguments": {}, "_meta": meta(caps.clone())});
        let first = answer(&post(&gw, path, 1, "tools/call", params, &[]));
        let result = &first["result"];
        assert_eq!(result["resultType"], "input_required", "{path}: {first}");
        assert_eq!(result["requestState"], "edge-round-1", "{path}");
        assert_eq!(result["inputRequests"]["who"]["method"], "elicitation/create", "{path}");
        let retry = json!({"name": tool, "arguments": {}, "_meta": meta(caps),
                           "requestState": "edge-round-1",
                           "inputResponses": {"who": {"action": "accept", "content": {"name": "Ada"}}}});
        let done = answer(&post(&gw, path, 2, "tools/call", retry, &[]));
        assert_eq!(text(&done), "Hello, \"Ada\"", "{path}: {done}");
        assert_eq!(done["result"]["resultType"], "complete", "{path}");
        // Who answers: the server on its own endpoint, the gateway on the aggregated one.
        let info = &done["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"];
        assert_eq!(info, if path == "/mcp" { "mcpport" } else { "modern-fake" }, "{path}");
    }
    // Never a method the revision removed, and never a legacy request.
    let seen = edge.seen.lock().unwrap().clone();
    for msg in &seen {
        let method = msg["method"].as_str().unwrap_or_default();
        assert!(!["ping", "logging/setLevel", "notifications/initialized"].contains(&method), "{msg}");
        if msg.get("id").is_some() && method != "initialize" {
            assert_eq!(msg["params"]["_meta"][VERSION_KEY], "2026-07-28", "{msg}");
        }
    }
}

#[test]
fn a_probe_answered_with_nonsense_falls_back_to_initialize_and_the_gateway_serves_on() {
    let _w = Watchdog::new("a_probe_answered_with_nonsense_fails", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let liar = ModernEdge::start(gw.port, "liar", Discovery::Garbage);
    let outcome = liar.outcome(Duration::from_secs(15)).expect("a status frame");
    assert_eq!(outcome["status"], "error", "{outcome}");
    // A discovery that is not a 2026-07-28 server's makes the gateway try initialize, which
    // this server refuses: the registration fails with that, and the log says why the probe
    // did not count.
    let why = outcome["message"].as_str().unwrap_or_default();
    assert!(why.contains("initialize"), "{why}");
    gw.proc
        .wait_log("server liar: server/discover: the result has no supportedVersions array; initializing it");
    let _sample = gw.register_ready("sample");
    gw.wait_servers(1, Duration::from_secs(15));
    let mut c = gw.client();
    c.initialize("2025-06-18");
    assert!(c.tool_names().iter().any(|n| n == "sample_echo"));
}
