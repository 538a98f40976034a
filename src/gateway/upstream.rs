//! A registered edge server, from the gateway's side of its WebSocket (DESIGN.md §4).
//!
//! The connection thread becomes the socket's owner: it reads the `register` frame, claims the
//! name, answers `{"status":"received"}`, starts the MCP handshake on a helper thread
//! (`handshake.rs`), and runs the owner loop (`ws::pump`), routing every frame from the edge:
//! responses to the thread waiting for them, progress to the request it belongs to, requests to
//! the client that caused them, `list_changed` to a refresh, other notifications to the
//! sessions that want them. When the link ends, pending requests fail at once and the server's
//! tools vanish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};

use super::catalog::ListKind;
use super::handshake;
use super::metrics::{Metrics, METRICS};
use super::server::{Failure, Upstream};
use super::session::Scope;
use super::Gateway;
use crate::http::Transport;
use crate::jsonrpc::{self, Message};
use crate::thread;
use crate::ws::{self, End, Event, Flow, Out};

/// Frames that may wait for one edge's socket.
const QUEUE: usize = 1024;
/// How long an edge has to send its `register` frame after the upgrade.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the edge's first frame said.
struct Registration {
    name: String,
    id: String,
}

/// Serves one edge connection until it ends.
pub(crate) fn serve(gw: &Arc<Gateway>, mut ws: WebSocket<Box<dyn Transport>>, remote: SocketAddr) {
    let reg = match read_registration(&mut ws) {
        Ok(reg) => reg,
        Err(why) => return refuse(&mut ws, remote, &why),
    };
    let (outbox, inbox) = match ws::channel(QUEUE) {
        Ok(pair) => pair,
        Err(e) => return refuse(&mut ws, remote, &format!("gateway out of resources: {e}")),
    };
    let up = Arc::new(Upstream::new(reg.name, reg.id, remote, outbox));
    match gw.registry.claim_name(&up) {
        Err(holder) => {
            let why = format!("server name {:?} is already held by a live server with id {holder}", up.name);
            return refuse(&mut ws, remote, &why);
        }
        Ok(Some(old)) => {
            METRICS.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::info!("server {} ({}): reconnected from {remote}; dropping its old link", up.name, up.id);
            let _ = old
                .outbox
                .send(Out::Close(1000, "replaced by a new connection of the same server id".into()));
            old.fail_all("the server reconnected; its old connection was replaced");
            // Its lists go until the new link's handshake brings them back.
            handshake::publish(gw);
        }
        Ok(None) => {}
    }
    let received =
        status_frame("received", &up.id, &format!("Registration request received, server ID: {}", up.id));
    if ws.send(WsMessage::text(received.to_string())).is_err() {
        return release(gw, &up, "link failed during registration");
    }
    log::info!("server {} ({}): registering from {remote}", up.name, up.id);
    METRICS.registrations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (gw2, up2) = (gw.clone(), up.clone());
    if let Err(e) = thread::spawn(format!("handshake-{}", up.name), move || handshake::run(&gw2, &up2)) {
        log::error!("server {}: cannot start its handshake thread: {e}", up.name);
        return release(gw, &up, "gateway out of resources");
    }
    let end = ws::pump(&mut ws, &inbox, &[], Some(gw.cfg.heartbeat), |ev| match ev {
        Event::Text(text) => on_frame(gw, &up, &text),
        Event::Fd => Flow::Continue,
    });
    release(gw, &up, &describe(&end));
}

/// Reads and checks the `register` frame (the original's JSON-RPC form, or its older
/// `{"name": …}` form).
fn read_registration(ws: &mut WebSocket<Box<dyn Transport>>) -> Result<Registration, String> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let text = loop {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        ws.get_ref().socket().set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match ws.read() {
            Ok(WsMessage::Text(t)) => break t.as_str().to_owned(),
            Ok(WsMessage::Binary(b)) => break String::from_utf8_lossy(&b).into_owned(),
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => return Err("no registration frame within 10 s".into()),
            Err(tungstenite::Error::Capacity(e)) => return Err(format!("{TOO_BIG}: {e}")),
            Err(e) => return Err(format!("no registration frame: {e}")),
        }
    };
    let info: Value =
        serde_json::from_str(&text).map_err(|e| format!("the registration frame is not JSON: {e}"))?;
    let name = if info["method"] == "register" { &info["params"]["name"] } else { &info["name"] };
    let name = name.as_str().ok_or("the registration frame has no server name (params.name)")?;
    if !valid_server_name(name) {
        return Err(format!("invalid server name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ -"));
    }
    let id = match &info["id"] {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => crate::sys::random_uuid(),
    };
    Ok(Registration { name: name.to_string(), id })
}

/// Server names become tool-name prefixes and URL path segments: `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How a message over `--max-ws-message-bytes` is reported (and closed with 1009).
const TOO_BIG: &str = "message too big (see --max-ws-message-bytes)";

/// Reports a failed registration to the edge (an error frame, then close 1008, or 1009 for a
/// message too big) and logs it.
fn refuse(ws: &mut WebSocket<Box<dyn Transport>>, remote: SocketAddr, why: &str) {
    log::warn!("{remote}: registration refused: {why}");
    let _ = ws.get_ref().socket().set_write_timeout(Some(Duration::from_secs(2)));
    let _ = ws.send(WsMessage::text(json!({"status": "error", "message": why}).to_string()));
    let code = if why.starts_with(TOO_BIG) { 1009 } else { 1008 };
    let frame =
        tungstenite::protocol::CloseFrame { code: code.into(), reason: "registration refused".into() };
    let _ = ws.close(Some(frame));
    let _ = ws.flush();
}

pub(crate) fn status_frame(status: &str, id: &str, message: &str) -> Value {
    json!({"status": status, "id": id, "message": message})
}

/// Routes one frame from the edge.
fn on_frame(gw: &Arc<Gateway>, up: &Arc<Upstream>, text: &str) -> Flow {
    up.seen();
    Metrics::add(&METRICS.edge_bytes_in, text.len());
    let msg = match jsonrpc::parse(text.as_bytes()).and_then(jsonrpc::classify) {
        Ok(msg) => msg,
        Err(e) => {
            log::warn!("server {}: ignoring a frame that is not JSON-RPC: {e:?}", up.name);
            return Flow::Continue;
        }
    };
    match msg {
        Message::Response { id, outcome } => {
            if !up.complete(&id, outcome) {
                log::debug!("server {}: response to unknown or expired request {id}", up.name);
            }
        }
        Message::Notification { method, params } => on_notification(gw, up, &method, params),
        Message::Request { id, method, .. } if method == "ping" => up.answer(&id, Ok(json!({}))),
        Message::Request { id, method, params } => {
            if let Err((code, why)) = gw.registry.request_client(up, id.clone(), &method, params) {
                log::info!("server {}: {why}", up.name);
                up.answer(&id, Err(jsonrpc::error_object(code, &why)));
            }
        }
    }
    Flow::Continue
}

/// Routes a notification from the server: progress to the request it belongs to, everything
/// else to the sessions of its own endpoint (a tool list change also refreshes the aggregate).
fn on_notification(gw: &Arc<Gateway>, up: &Arc<Upstream>, method: &str, params: Option<Value>) {
    let own = Scope::Server(up.name.clone());
    match method {
        "notifications/progress" => {
            let mut params = params.unwrap_or_default();
            let Some(origin) = up.progress(&params["progressToken"]) else { return };
            if let Some(token) = origin.progress_token.clone() {
                params["progressToken"] = token;
                origin.send(jsonrpc::notification(method, params));
            }
        }
        "notifications/resources/updated" => {
            gw.registry.resource_updated(up, params.unwrap_or_else(|| json!({})))
        }
        "notifications/message" => gw.registry.log_message(up, &params.unwrap_or_else(|| json!({}))),
        _ => {
            let changed = ListKind::ALL.into_iter().filter(|k| k.changed_notification() == method);
            for kind in changed {
                handshake::refresh(gw, up, kind);
            }
            gw.registry.broadcast(&own, &jsonrpc::notification(method, params.unwrap_or_else(|| json!({}))));
        }
    }
}

/// The server's link is over: fail what waits on it, remove its tools, tell the clients.
fn release(gw: &Gateway, up: &Arc<Upstream>, why: &str) {
    let failed = up.fail_all(why);
    if gw.registry.release_name(up) {
        handshake::publish(gw);
    }
    log::info!("server {} ({}): disconnected: {why}; {failed} pending requests failed", up.name, up.id);
}

fn describe(end: &End) -> String {
    match end {
        End::PeerClosed(Some((code, reason))) => format!("the edge closed the link ({code} {reason})"),
        End::PeerClosed(None) => "the edge closed the link".into(),
        End::Closed => "the gateway closed the link".into(),
        End::Silent(d) => format!("no answer to pings for {} s", d.as_secs()),
        End::Failed(e) => format!("link failed: {e}"),
    }
}

pub(crate) fn describe_failure(f: &Failure) -> String {
    match f {
        Failure::Error(e) => format!("the server answered with an error: {e}"),
        Failure::Timeout(t) => format!("no answer within {} s", t.as_secs_f64()),
        Failure::Gone(why) => why.clone(),
        Failure::Busy => "the server's queue is full".into(),
        Failure::Cancelled => "cancelled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_the_pattern() {
        for ok in ["pi", "my-router_2", &"a".repeat(64)] {
            assert!(valid_server_name(ok), "{ok}");
        }
        for bad in ["", "has space", "dot.ted", "ü", &"a".repeat(65)] {
            assert!(!valid_server_name(bad), "{bad}");
        }
    }
}
