//! One connection's life: read requests (keep-alive), authenticate, and route each by method
//! and path. Most routes answer and loop; two take the connection over for good: the legacy SSE
//! stream and the edge registration WebSocket.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use serde_json::json;
use tungstenite::protocol::WebSocketConfig;

use super::{legacy, upstream, Gateway};
use crate::http::{upgrade, Conn, ReadError, Request, Response, Transport};

/// The path edges register on, as in the original.
pub(crate) const REGISTER_PATH: &str = "/mcp/register";

/// Where a request goes.
enum Route {
    Health,
    Register,
    SseStream,
    SseMessage,
    NotFound,
}

/// Serves one accepted connection until it closes, errs, or becomes a long-lived stream.
pub(crate) fn serve_connection(gw: &Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(Box::new(stream) as Box<dyn Transport>);
    loop {
        let req = match conn.read_request(&gw.cfg.limits) {
            Ok(req) => req,
            Err(ReadError::Closed) => return,
            Err(ReadError::Status(code, why)) => {
                log::warn!("{peer}: bad request ({code}): {why}");
                let _ = Response::error(code, &why).write_to(&mut conn.stream, false);
                return conn.linger_close();
            }
            Err(ReadError::Io(e)) => {
                log::debug!("{peer}: connection failed: {e}");
                return;
            }
        };
        log::debug!("{peer}: {} {}", req.method, req.path);
        let route = route(gw, &req);
        if !matches!(route, Route::Health | Route::NotFound) && !authorized(gw, &req) {
            log::warn!("{peer}: {} {}: missing or wrong bearer token", req.method, req.path);
            let resp = Response::error(401, "a valid 'Authorization: Bearer <token>' header is required")
                .header("WWW-Authenticate", "Bearer");
            let _ = resp.write_to(&mut conn.stream, req.keep_alive());
            if req.keep_alive() {
                continue;
            }
            return;
        }
        let resp = match route {
            Route::Health => health(gw),
            Route::Register => return register(gw, conn, &req, peer),
            Route::SseStream if req.method == "GET" => return legacy::open_stream(gw, conn, peer),
            Route::SseStream => Response::error(405, "the SSE endpoint takes GET").header("Allow", "GET"),
            Route::SseMessage => legacy::post_message(gw, &req),
            Route::NotFound => Response::error(404, &format!("no such endpoint: {}", req.path)),
        };
        if resp.write_to(&mut conn.stream, req.keep_alive()).is_err() || !req.keep_alive() {
            return;
        }
    }
}

fn route(gw: &Gateway, req: &Request) -> Route {
    let path = req.path.as_str();
    if path == "/health" {
        Route::Health
    } else if path == REGISTER_PATH {
        Route::Register
    } else if same_path(path, &gw.cfg.sse_path) {
        Route::SseStream
    } else if same_path(path, &gw.cfg.messages_path) {
        Route::SseMessage
    } else {
        Route::NotFound
    }
}

/// Paths compare equal with or without a trailing slash (`/messages` and `/messages/`).
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Checks the bearer token when the gateway has any. Compares in constant time, so response
/// timing tells an attacker nothing about how much of a guess was right.
fn authorized(gw: &Gateway, req: &Request) -> bool {
    if gw.cfg.auth_tokens.is_empty() {
        return true;
    }
    let Some((scheme, token)) = req.header("authorization").and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && gw
            .cfg
            .auth_tokens
            .iter()
            .fold(false, |ok, t| ok | constant_time_eq(t.as_bytes(), token.trim().as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn health(gw: &Gateway) -> Response {
    Response::json(
        200,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "servers": gw.registry.servers().len(),
            "sessions": gw.registry.session_count(),
        }),
    )
}

/// Upgrades to WebSocket and hands the connection to the upstream owner.
fn register(gw: &Arc<Gateway>, mut conn: Conn<Box<dyn Transport>>, req: &Request, peer: SocketAddr) {
    let key = match upgrade::check(req) {
        Ok(key) => key,
        Err(resp) => {
            log::warn!("{peer}: bad registration request: {}", String::from_utf8_lossy(&resp.body));
            let _ = resp.write_to(&mut conn.stream, false);
            return;
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(gw.cfg.max_ws_message))
        .max_frame_size(Some(gw.cfg.max_ws_message));
    match upgrade::accept(conn, req, &key, config) {
        Ok(ws) => upstream::serve(gw, ws, peer),
        Err(e) => log::warn!("{peer}: WebSocket upgrade failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn trailing_slashes_do_not_matter() {
        assert!(same_path("/messages", "/messages/"));
        assert!(same_path("/messages/", "/messages/"));
        assert!(!same_path("/messagesx", "/messages/"));
    }
}
