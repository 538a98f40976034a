//! One link to the gateway: dial out, upgrade to WebSocket, send the `register` frame, then relay
//! JSON-RPC both ways until one side ends. `{"status": …}` frames are for us, never the child.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use super::child::ChildGuard;
use super::Config;
use crate::http::Transport;
use crate::sys;
use crate::ws::{self, End, Event, Flow, Inbox};

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
    if uri.scheme_str() != Some("ws") {
        return Err(format!("{url}: only ws:// URLs are supported by this build (wss:// comes with TLS)"));
    }
    let host =
        uri.host().ok_or_else(|| format!("{url}: no host"))?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = dial(host, port).map_err(|e| format!("cannot reach the gateway at {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default().max_message_size(Some(cfg.max_ws_message));
    let boxed: Box<dyn Transport> = Box::new(stream);
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
    inbox: &Inbox,
    child: &ChildGuard,
    cfg: &Config,
    signal_fd: i32,
) -> Ended {
    let mut signalled = false;
    let end = ws::pump(ws, inbox, &[signal_fd], Some(cfg.heartbeat), |ev| match ev {
        Event::Text(text) => on_gateway_frame(text, child, cfg),
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

fn on_gateway_frame(text: String, child: &ChildGuard, cfg: &Config) -> Flow {
    if let Some(status) = status_of(&text) {
        let message = status["message"].as_str().unwrap_or_default();
        match status["status"].as_str().unwrap_or_default() {
            "error" => log::error!("the gateway refused the registration: {message}"),
            "registered" => log::info!("registered as {:?} with the gateway: {message}", cfg.server_name),
            other => log::info!("gateway: {other}: {message}"),
        }
        return Flow::Continue;
    }
    if !child.send(text) {
        return Flow::Close(1011, "the MCP server's stdin is closed".into());
    }
    Flow::Continue
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
    fn status_frames_are_told_from_json_rpc() {
        assert!(status_of(r#"{"status":"registered","id":"x","message":"ok"}"#).is_some());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"result":{"status":"fine"}}"#).is_none());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_none());
    }
}
