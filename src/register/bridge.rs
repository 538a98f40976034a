//! One link to the gateway: dial out, upgrade to WebSocket, send the `register` frame, then relay
//! JSON-RPC both ways until one side ends. `{"status": …}` frames are for us, never the child.
//!
//! The child outlives links. A gateway initializes every new registration, but a stateful
//! server must not be initialized twice: the answer to the first `initialize` is cached and
//! given to every later one, and repeated `notifications/initialized` are swallowed.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use std::sync::Mutex;

use super::child::ChildGuard;
use super::Config;
use crate::http::Transport;
use crate::thread::lock;
use crate::ws::{self, End, Event, Flow, Inbox, Out, Outbox};
use crate::{jsonrpc, sys};

/// How long dialing and the WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the link ended, as far as `run` needs to know.
#[derive(Debug)]
pub(crate) enum Ended {
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// The link ended (the child's stdout closing ends it too); the text says why.
    Link(String),
}

/// Dials the gateway and completes the WebSocket handshake.
pub(crate) fn connect(cfg: &Config) -> Result<WebSocket<Box<dyn Transport>>, String> {
    let url = &cfg.gateway_url;
    let request = build_request(cfg)?;
    let uri = request.uri().clone();
    let secure = uri.scheme_str() == Some("wss");
    let host =
        uri.host().ok_or_else(|| format!("{url}: no host"))?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let stream = dial(host, port).map_err(|e| format!("cannot reach the gateway at {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default().max_message_size(Some(cfg.max_ws_message));
    let boxed: Box<dyn Transport> = if secure {
        let tls = crate::tls::client_config(&cfg.tls)?;
        let stream = crate::tls::connect(tls, host, stream).map_err(|e| {
            let hint = if e.to_string().contains("UnknownIssuer") {
                " (a private CA? pass it with --ssl-ca-cert)"
            } else {
                ""
            };
            format!("TLS with {host}:{port} failed: {e}{hint}")
        })?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    match tungstenite::client::client_with_config(request, boxed, Some(config)) {
        Ok((ws, _response)) => {
            let _ = ws.get_ref().socket().set_write_timeout(None);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            Err(format!("the gateway refused the WebSocket upgrade: HTTP {} {}", resp.status(), body.trim()))
        }
        Err(e) => Err(format!("WebSocket handshake with {url} failed: {e}")),
    }
}

fn build_request(cfg: &Config) -> Result<Request, String> {
    let mut request = cfg
        .gateway_url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad --gateway-url {:?}: {e}", cfg.gateway_url))?;
    for (name, value) in &cfg.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("bad value for header {name}"))?;
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

fn dial(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name resolved to no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends the registration frame (the original's JSON-RPC `register` request).
pub(crate) fn register(ws: &mut WebSocket<Box<dyn Transport>>, cfg: &Config) -> Result<(), String> {
    let frame = json!({
        "jsonrpc": "2.0",
        "id": cfg.server_id,
        "method": "register",
        "params": {"name": cfg.server_name, "version": env!("CARGO_PKG_VERSION"), "capabilities": {}},
    });
    ws.send(Message::text(frame.to_string())).map_err(|e| format!("cannot send the registration: {e}"))
}

/// Relays until the link ends or a signal arrives: frames from the gateway go to the child's
/// stdin, lines from the child (queued in `inbox` by its stdout reader) go to the gateway.
pub(crate) fn relay(
    ws: &mut WebSocket<Box<dyn Transport>>,
    link: &Link<'_>,
    cfg: &Config,
    signal_fd: i32,
) -> Ended {
    let mut signalled = false;
    let end = ws::pump(ws, link.inbox, &[signal_fd], Some(cfg.heartbeat), |ev| match ev {
        Event::Text(text) => on_gateway_frame(text, link, cfg),
        Event::Fd => {
            if sys::take_signal() {
                signalled = true;
                log::info!("signal received: closing the link and stopping the MCP server");
                return Flow::Close(1001, "register is shutting down".into());
            }
            Flow::Continue
        }
    });
    if signalled {
        return Ended::Signal;
    }
    Ended::Link(match end {
        End::PeerClosed(Some((code, reason))) => format!("the gateway closed the link ({code} {reason})"),
        End::PeerClosed(None) => "the gateway closed the link".into(),
        End::Closed => "the link was closed".into(),
        End::Silent(d) => format!("the gateway did not answer pings for {} s", d.as_secs()),
        End::Failed(e) => format!("the link failed: {e}"),
    })
}

/// What a link relays between: the child, its `initialize` cache, and the queue both the child
/// and the cache write to.
pub(crate) struct Link<'a> {
    pub inbox: &'a Inbox,
    pub outbox: &'a Outbox,
    pub child: &'a ChildGuard,
    pub init: &'a InitCache,
}

fn on_gateway_frame(text: String, link: &Link<'_>, cfg: &Config) -> Flow {
    if let Some(status) = status_of(&text) {
        let message = status["message"].as_str().unwrap_or_default();
        match status["status"].as_str().unwrap_or_default() {
            "error" => log::error!("the gateway refused the registration: {message}"),
            "registered" => log::info!("registered as {:?} with the gateway: {message}", cfg.server_name),
            other => log::info!("gateway: {other}: {message}"),
        }
        return Flow::Continue;
    }
    match link.init.on_gateway_message(&text) {
        Intercept::Forward => {}
        Intercept::Swallow => return Flow::Continue,
        Intercept::Answer(reply) => {
            let _ = link.outbox.send(Out::Text(reply.to_string()));
            return Flow::Continue;
        }
    }
    if !link.child.send(text) {
        return Flow::Close(1011, "the MCP server is not reading its stdin".into());
    }
    Flow::Continue
}

/// What to do with a message from the gateway.
#[derive(Debug, PartialEq)]
pub(crate) enum Intercept {
    Forward,
    Swallow,
    /// Answer the gateway with this instead of asking the child.
    Answer(Value),
}

/// The child's answer to its first `initialize`, kept for the gateways that come after.
#[derive(Default)]
pub(crate) struct InitCache {
    state: Mutex<InitState>,
}

#[derive(Default)]
struct InitState {
    /// The id of the `initialize` forwarded to the child, until it answers.
    asked: Option<Value>,
    result: Option<Value>,
    initialized: bool,
}

impl InitCache {
    /// Decides about one message from the gateway.
    pub(crate) fn on_gateway_message(&self, text: &str) -> Intercept {
        if !text.contains("initialize") {
            return Intercept::Forward;
        }
        let Ok(msg) = serde_json::from_str::<Value>(text) else { return Intercept::Forward };
        let mut state = lock(&self.state);
        match msg["method"].as_str() {
            Some("initialize") if msg.get("id").is_some() => match &state.result {
                Some(result) => {
                    log::info!("answered the gateway's initialize from the MCP server's first answer");
                    Intercept::Answer(jsonrpc::result_response(&msg["id"], result.clone()))
                }
                None => {
                    state.asked = Some(msg["id"].clone());
                    Intercept::Forward
                }
            },
            Some("notifications/initialized") if state.initialized => Intercept::Swallow,
            Some("notifications/initialized") => {
                state.initialized = true;
                Intercept::Forward
            }
            _ => Intercept::Forward,
        }
    }

    /// Watches the child's output for the answer to the forwarded `initialize`.
    pub(crate) fn observe_child(&self, line: &str) {
        let mut state = lock(&self.state);
        let Some(asked) = state.asked.clone() else { return };
        let Ok(msg) = serde_json::from_str::<Value>(line) else { return };
        if msg.get("id") == Some(&asked) && msg.get("result").is_some() {
            state.result = Some(msg["result"].clone());
            state.asked = None;
        }
    }
}

/// A `{"status": …}` frame from the gateway (not JSON-RPC), if `text` is one.
fn status_of(text: &str) -> Option<Value> {
    if !text.contains("\"status\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    (v.get("status").is_some() && v.get("jsonrpc").is_none()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_is_answered_from_the_first_answer_and_initialized_sent_once() {
        let cache = InitCache::default();
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(cache.on_gateway_message(init), Intercept::Forward);
        cache.observe_child(r#"{"jsonrpc":"2.0","id":99,"result":{"other":true}}"#);
        cache.observe_child(r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#);
        assert_eq!(cache.on_gateway_message(done), Intercept::Forward);
        // A new gateway link: initialize again, with another id.
        let again = r#"{"jsonrpc":"2.0","id":"g7","method":"initialize","params":{}}"#;
        let expected =
            serde_json::json!({"jsonrpc":"2.0","id":"g7","result":{"protocolVersion":"2025-06-18"}});
        assert_eq!(cache.on_gateway_message(again), Intercept::Answer(expected));
        assert_eq!(cache.on_gateway_message(done), Intercept::Swallow);
        assert_eq!(
            cache.on_gateway_message(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#),
            Intercept::Forward
        );
    }

    #[test]
    fn status_frames_are_told_from_json_rpc() {
        assert!(status_of(r#"{"status":"registered","id":"x","message":"ok"}"#).is_some());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"result":{"status":"fine"}}"#).is_none());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_none());
    }
}
