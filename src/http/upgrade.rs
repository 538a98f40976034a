//! The server side of the WebSocket opening handshake (RFC 6455 §4.2) on a request our HTTP layer
//! already read, so registration shares the gateway's one port. Checks the request, answers 101
//! (with subprotocol `mcp` when offered), and hands the stream, plus any bytes already read past
//! the headers, to tungstenite.

use std::io;

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

use super::{Conn, Request, Response, Transport};

/// Checks that `req` is a valid WebSocket upgrade; on failure, the response to send instead.
pub(crate) fn check(req: &Request) -> Result<String, Response> {
    if req.method != "GET" {
        return Err(
            Response::error(405, "the registration endpoint takes a WebSocket GET").header("Allow", "GET")
        );
    }
    if !req.header_has_token("upgrade", "websocket") || !req.header_has_token("connection", "upgrade") {
        return Err(Response::error(426, "this endpoint speaks WebSocket only (use ws:// or wss://)")
            .header("Upgrade", "websocket"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(Response::error(426, "unsupported WebSocket version (13 is required)")
            .header("Sec-WebSocket-Version", "13"));
    }
    match req.header("sec-websocket-key") {
        Some(key) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(Response::error(400, "missing Sec-WebSocket-Key")),
    }
}

/// Answers 101 to a request that passed `check` and turns the connection into a WebSocket.
pub(crate) fn accept<S: Transport>(
    mut conn: Conn<S>,
    req: &Request,
    key: &str,
    config: WebSocketConfig,
) -> io::Result<WebSocket<S>> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if req.header_has_token("sec-websocket-protocol", "mcp") {
        head.push_str("Sec-WebSocket-Protocol: mcp\r\n");
    }
    head.push_str("\r\n");
    conn.stream.write_all(head.as_bytes())?;
    conn.stream.flush()?;
    Ok(WebSocket::from_partially_read(conn.stream, conn.buf, Role::Server, Some(config)))
}
