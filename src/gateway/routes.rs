//! One connection's life: read requests (keep-alive), authenticate, and route each by method
//! and path. Most routes answer and loop; two take the connection over for good: the legacy SSE
//! stream and the edge registration WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tungstenite::protocol::WebSocketConfig;

use super::auth::{self, Credential, Role};
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
    /// Prometheus metrics.
    Metrics,
    Register,
    /// Streamable HTTP.
    Mcp(Scope),
    /// Legacy SSE: the stream, and where its client POSTs.
    SseStream(Scope, String),
    SseMessage(Scope),
    NotFound(String),
}

/// Serves one accepted connection until it closes, errs, or becomes a long-lived stream.
pub(crate) fn serve_connection(gw: &Arc<Gateway>, stream: Box<dyn Transport>, peer: SocketAddr) {
    let local = stream.socket().local_addr().ok();
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
        let role = if matches!(route, Route::Register) { Role::Edge } else { Role::Client };
        let credential = auth::check(&gw.cfg, &req, role);
        let refusal = match &route {
            Route::Health | Route::NotFound(_) => None,
            _ if gw.shutting_down.load(std::sync::atomic::Ordering::SeqCst) => {
                Some(Response::error(503, "the gateway is shutting down").header("Retry-After", "1"))
            }
            _ if !auth::origin_allowed(&gw.cfg, &req, local) => {
                let origin = req.header("origin").unwrap_or_default();
                log::warn!("{peer}: {} {}: Origin {origin:?} is not allowed", req.method, req.path);
                Some(Response::error(403, "this Origin is not allowed (see --allow-origin)"))
            }
            _ if credential.is_none() => {
                let whose = if role == Role::Edge { "an edge" } else { "a client" };
                log::warn!("{peer}: {} {}: missing or wrong bearer token for {whose}", req.method, req.path);
                Some(
                    Response::error(401, "a valid 'Authorization: Bearer <token>' header is required")
                        .header("WWW-Authenticate", "Bearer"),
                )
            }
            _ => None,
        };
        let owner = credential.unwrap_or(Credential::Open);
        let resp = match (refusal, route) {
            (Some(resp), _) => resp,
            (None, Route::Health) => health(gw),
            (None, Route::Metrics) => metrics_response(gw),
            (None, Route::Servers) => {
                let servers: Vec<serde_json::Value> =
                    gw.registry.servers().iter().map(|s| s.summary()).collect();
                Response::json(200, &json!({"servers": servers}))
            }
            (None, Route::Register) => return register(gw, conn, &req, peer),
            (None, Route::Mcp(scope)) => match streamable::serve(gw, &mut conn, &req, scope, owner, peer) {
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
                return legacy::open_stream(gw, conn, peer, scope, owner, &post_to);
            }
            (None, Route::SseStream(..)) => {
                Response::error(405, "the SSE endpoint takes GET").header("Allow", "GET")
            }
            (None, Route::SseMessage(scope)) => legacy::post_message(gw, &req, &scope, owner),
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
    if path == "/metrics" {
        return Route::Metrics;
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

/// The Prometheus text exposition.
pub(crate) fn metrics_response(gw: &Gateway) -> Response {
    Response::empty(200)
        .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .body(gw.metrics.render(ready_servers(gw), gw.registry.session_kinds()).into_bytes())
}

fn ready_servers(gw: &Gateway) -> usize {
    gw.registry.servers().iter().filter(|s| s.is_ready()).count()
}

fn health(gw: &Gateway) -> Response {
    Response::json(
        200,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "servers": ready_servers(gw),
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
        .read_buffer_size(crate::ws::READ_BUFFER)
        .write_buffer_size(crate::ws::WRITE_BUFFER)
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
    fn trailing_slashes_do_not_matter() {
        assert!(same_path("/messages", "/messages/"));
        assert!(same_path("/messages/", "/messages/"));
        assert!(!same_path("/messagesx", "/messages/"));
    }
}
