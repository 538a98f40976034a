//! One connection's life: read requests (keep-alive), authenticate, and route each by method
//! and path. Most routes answer and loop; two take the connection over for good: the legacy SSE
//! stream and the edge registration WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tungstenite::protocol::WebSocketConfig;

use super::session::Scope;
use super::streamable::{self, Outcome};
use super::{legacy, upstream, Gateway};
use crate::http::{upgrade, Conn, ReadError, Request, Response, Transport};

/// The path edges register on, as in the original.
pub(crate) const REGISTER_PATH: &str = "/mcp/register";

/// Where a request goes.
enum Route {
    Health,
    /// The registered servers, for operators.
    Servers,
    Register,
    /// Streamable HTTP.
    Mcp(Scope),
    /// Legacy SSE: the stream, and where its client POSTs.
    SseStream(Scope, String),
    SseMessage(Scope),
    NotFound(String),
}

/// Serves one accepted connection until it closes, errs, or becomes a long-lived stream.
pub(crate) fn serve_connection(
    gw: &Arc<Gateway>,
    stream: Box<dyn Transport>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let mut conn = Conn::new(stream);
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
        let refusal = match &route {
            Route::Health | Route::NotFound(_) => None,
            _ if gw.shutting_down.load(std::sync::atomic::Ordering::SeqCst) => {
                Some(Response::error(503, "the gateway is shutting down").header("Retry-After", "1"))
            }
            _ if !origin_allowed(gw, &req, local) => {
                log::warn!(
                    "{peer}: {} {}: Origin {:?} is not allowed",
                    req.method,
                    req.path,
                    req.header("origin")
                );
                Some(Response::error(403, "this Origin is not allowed (see --allow-origin)"))
            }
            _ if !authorized(gw, &req) => {
                log::warn!("{peer}: {} {}: missing or wrong bearer token", req.method, req.path);
                Some(
                    Response::error(401, "a valid 'Authorization: Bearer <token>' header is required")
                        .header("WWW-Authenticate", "Bearer"),
                )
            }
            _ => None,
        };
        let resp = match (refusal, route) {
            (Some(resp), _) => resp,
            (None, Route::Health) => health(gw),
            (None, Route::Servers) => {
                let servers: Vec<serde_json::Value> =
                    gw.registry.servers().iter().map(|s| s.summary()).collect();
                Response::json(200, &json!({"servers": servers}))
            }
            (None, Route::Register) => return register(gw, conn, &req, peer),
            (None, Route::Mcp(scope)) => match streamable::serve(gw, &mut conn, &req, scope, peer) {
                Outcome::Respond(resp) => resp,
                Outcome::Streamed if req.keep_alive() => continue,
                Outcome::Streamed | Outcome::Close => return,
            },
            (None, Route::SseStream(scope, post_to)) if req.method == "GET" => {
                if let Scope::Server(name) = &scope {
                    if gw.registry.server(name).is_none() {
                        let resp = Response::error(404, &format!("no server named {name:?} is registered"));
                        let _ = resp.write_to(&mut conn.stream, false);
                        return;
                    }
                }
                return legacy::open_stream(gw, conn, peer, scope, &post_to);
            }
            (None, Route::SseStream(..)) => {
                Response::error(405, "the SSE endpoint takes GET").header("Allow", "GET")
            }
            (None, Route::SseMessage(scope)) => legacy::post_message(gw, &req, &scope),
            (None, Route::NotFound(why)) => Response::error(404, &why),
        };
        if resp.write_to(&mut conn.stream, req.keep_alive()).is_err() || !req.keep_alive() {
            return;
        }
    }
}

fn route(gw: &Gateway, req: &Request) -> Route {
    let path = req.path.as_str();
    if path == "/health" {
        return Route::Health;
    }
    if path == REGISTER_PATH {
        return Route::Register;
    }
    if path == "/servers" || path == "/servers/" {
        return Route::Servers;
    }
    if same_path(path, &gw.cfg.mcp_path) {
        return Route::Mcp(Scope::All);
    }
    if same_path(path, &gw.cfg.sse_path) {
        return Route::SseStream(Scope::All, gw.cfg.messages_path.clone());
    }
    if same_path(path, &gw.cfg.messages_path) {
        return Route::SseMessage(Scope::All);
    }
    if let Some(rest) = path.strip_prefix("/servers/") {
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let scope = Scope::Server(name.to_string());
        match tail.trim_end_matches('/') {
            "mcp" => return Route::Mcp(scope),
            "sse" => return Route::SseStream(scope, format!("/servers/{name}/messages/")),
            "messages" => return Route::SseMessage(scope),
            _ => {}
        }
    }
    Route::NotFound(format!("no such endpoint: {path}"))
}

/// Paths compare equal with or without a trailing slash (`/messages` and `/messages/`).
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// DNS-rebinding protection: a browser page on another site must not reach the gateway through
/// a name that resolves to it ("If the Origin header is present and invalid, servers MUST
/// respond with HTTP 403 Forbidden"). A request without `Origin` is not from a browser page and
/// passes. Allowed: loopback origins, the address the connection arrived on, and
/// `--allow-origin` values (`*` allows any).
fn origin_allowed(gw: &Gateway, req: &Request, local: Option<SocketAddr>) -> bool {
    let Some(origin) = req.header("origin") else { return true };
    let origin = origin.trim_end_matches('/');
    if gw.cfg.allow_origins.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = origin_host(origin) else { return false };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || local.is_some_and(|a| host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip == a.ip()))
}

/// The host of an origin (`scheme://host[:port]`), without brackets or port.
fn origin_host(origin: &str) -> Option<&str> {
    let authority = origin.split_once("://")?.1;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.split(':').next().unwrap_or(authority))
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
            "servers": gw.registry.servers().iter().filter(|s| s.is_ready()).count(),
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
    fn origin_hosts() {
        assert_eq!(origin_host("http://localhost:6274"), Some("localhost"));
        assert_eq!(origin_host("https://[::1]:8"), Some("::1"));
        assert_eq!(origin_host("http://evil.example.com"), Some("evil.example.com"));
        assert_eq!(origin_host("null"), None);
    }

    #[test]
    fn trailing_slashes_do_not_matter() {
        assert!(same_path("/messages", "/messages/"));
        assert!(same_path("/messages/", "/messages/"));
        assert!(!same_path("/messagesx", "/messages/"));
    }
}
