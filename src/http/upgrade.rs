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
) -> io::Result<Box<WebSocket<S>>> {
    let accept = accept_key(key);
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if req.header_has_token("sec-websocket-protocol", "mcp") {
        head.push_str("Sec-WebSocket-Protocol: mcp\r\n");
    }
    head.push_str("\r\n");
    conn.stream.write_all(head.as_bytes())?;
    conn.stream.flush()?;
    Ok(Box::new(WebSocket::from_partially_read(conn.stream, conn.buf, Role::Server, Some(config))))
}

/// The `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2): the base64 of the
/// SHA-1 of the key and the protocol's GUID. (SHA-1 from `ring`, already in the binary for TLS.)
pub(crate) fn accept_key(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest =
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    crate::codec::base64(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_of_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
