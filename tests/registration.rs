//! The WebSocket registration protocol (DESIGN.md §4) from the edge's side, spoken by hand:
//! bad first frames and names are refused with an error frame and close 1008; a second server
//! under a live name is refused; the same server id replaces its old connection.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::util::{Gateway, Watchdog};

fn connect(gw: &Gateway) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(gw.ws_url(), stream).expect("upgrade");
    ws
}

/// Reads frames until a text frame or the close; returns (texts, close code).
pub(crate) fn read_until_close(ws: &mut WebSocket<TcpStream>) -> (Vec<Value>, Option<u16>) {
    let mut texts = Vec::new();
    for _ in 0..100 {
        match ws.read() {
            Ok(Message::Text(t)) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Message::Close(frame)) => return (texts, frame.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (texts, None)
}

pub(crate) fn register_frame(id: &str, name: &str) -> Message {
    Message::text(
        json!({"jsonrpc": "2.0", "id": id, "method": "register", "params": {"name": name}}).to_string(),
    )
}

#[test]
fn bad_first_frames_get_an_error_frame_and_close_1008() {
    let _w = Watchdog::new("bad_first_frames", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    for (frame, needle) in [
        (Message::text("not json"), "not JSON"),
        (Message::text(r#"{"jsonrpc":"2.0","id":"x","method":"register","params":{}}"#), "no server name"),
        (register_frame("x", "bad name!"), "invalid server name"),
        (register_frame("x", &"n".repeat(65)), "invalid server name"),
    ] {
        let mut ws = connect(&gw);
        ws.send(frame).unwrap();
        let (texts, code) = read_until_close(&mut ws);
        assert_eq!(texts[0]["status"], "error");
        assert!(texts[0]["message"].as_str().unwrap().contains(needle), "{texts:?}");
        assert_eq!(code, Some(1008));
    }
    assert_eq!(gw.http("GET", "/health", &[], b"").json()["servers"], 0);
}

/// Answers the gateway's handshake as a minimal (legacy) MCP server would, until `registered`:
/// a request it does not know (the gateway's `server/discover` probe) gets -32601.
pub(crate) fn complete_handshake(ws: &mut WebSocket<TcpStream>) {
    for _ in 0..20 {
        let Message::Text(t) = ws.read().unwrap() else { continue };
        let msg: Value = serde_json::from_str(t.as_str()).unwrap();
        let result = match msg["method"].as_str() {
            Some("initialize") => {
                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "hand", "version": "1"}})
            }
            Some("tools/list") => json!({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}),
            _ if msg["status"] == "registered" => return,
            Some(method) if msg.get("id").is_some() => {
                let error = json!({"code": -32601, "message": format!("Method not found: {method}")});
                let reply = json!({"jsonrpc": "2.0", "id": msg["id"], "error": error});
                ws.send(Message::text(reply.to_string())).unwrap();
                continue;
            }
            _ => continue,
        };
        ws.send(Message::text(json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}).to_string()))
            .unwrap();
    }
    panic!("no registered status");
}

#[test]
fn names_belong_to_one_server_id_and_the_same_id_replaces_its_ghost() {
    let _w = Watchdog::new("names_belong_to_one_server_id", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let mut first = connect(&gw);
    first.send(register_frame("id-1", "edge")).unwrap();
    complete_handshake(&mut first);

    let mut other = connect(&gw);
    other.send(register_frame("id-2", "edge")).unwrap();
    let (texts, code) = read_until_close(&mut other);
    let message = texts[0]["message"].as_str().unwrap();
    assert!(message.contains("already held") && !message.contains("id-1"), "ids are not told: {texts:?}");
    assert_eq!(code, Some(1008));

    // The same id takes over at once; the old link is closed by the gateway.
    let mut again = connect(&gw);
    again.send(register_frame("id-1", "edge")).unwrap();
    complete_handshake(&mut again);
    let (_, code) = read_until_close(&mut first);
    assert_eq!(code, Some(1000));
    let health = gw.http("GET", "/health", &[], b"").json();
    assert_eq!(health["servers"], 1);
}
