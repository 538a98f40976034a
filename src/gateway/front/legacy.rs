//! The legacy HTTP+SSE transport (protocol 2024-11-05), as the reference SDKs implement it.
//!
//! `GET /sse` opens a session: the first event is `endpoint` with the relative URL to POST to
//! (`/messages/?session_id=<32 hex>`), and every message for the client follows as a `message`
//! event. `POST /messages/?session_id=…` takes one JSON-RPC message and answers `202 Accepted`;
//! the reply travels on the stream. Missing session id → 400; unknown session → 404; a body that
//! is not JSON → 400 with a -32700 error; not JSON-RPC → 400 with -32600. The session ends when
//! its stream does.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::gateway::clients::reply::Reply;
use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::credential::Credential;
use crate::gateway::front::cors::Headers;
use crate::gateway::front::stream::write_stream;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::Gateway;
use crate::gateway::shared::Tally;
use crate::gateway::views::mcp;
use crate::http::sse::SseWriter;
use crate::http::{Conn, Request, Response, Transport};
use crate::{jsonrpc, sys};

/// Turns the connection into a session's event stream and writes until the session ends.
/// `messages_path` is where this stream's client must POST (it differs per scope); the answer's
/// head carries `cors`.
#[inline(never)]
pub(crate) fn open_stream(
    gw: &Arc<Gateway>,
    conn: Conn<Box<dyn Transport>>,
    peer: SocketAddr,
    scope: Scope,
    owner: Credential,
    messages_path: &str,
    cors: &Headers,
) {
    let _stream = Tally::new(&gw.streams);
    let id = sys::random_hex(16);
    let session = Arc::new(Session::new(id.clone(), Kind::LegacySse, scope, owner, peer.ip()));
    if let Err(e) = gw.registry.admit(session.clone(), gw.cfg.max_sessions, gw.cfg.max_sessions_per_client) {
        log::warn!("{peer}: refusing a new session: {e}");
        let mut stream = conn.stream;
        let _ = e.to_http().with_headers(cors).write_to(&mut stream, false);
        return;
    }
    let rx = session.attach_stream(&gw.queue_budget).expect("a new session has no stream");
    let guard = gw.registry.guard(session);
    let session = &guard.session;
    let endpoint = format!("{messages_path}?session_id={id}");
    let mut sse = match SseWriter::start(conn.stream, cors) {
        Ok(sse) => sse,
        Err(e) => return log::debug!("{peer}: SSE stream failed before it started: {e}"),
    };
    if sse.event(Some("endpoint"), &endpoint).is_err() {
        return;
    }
    log::info!("session {id}: opened (legacy SSE) by {peer}");
    let why = write_stream(gw, session, &mut sse, &rx);
    log::info!("session {id}: ended ({why})");
}

/// Accepts one client message for a session and hands it to the MCP layer.
#[inline(never)]
pub(crate) fn post_message(gw: &Arc<Gateway>, req: &Request, scope: &Scope, owner: Credential) -> Response {
    if req.method != "POST" {
        return Response::error(405, "the message endpoint takes POST").header("Allow", "POST");
    }
    let Some(id) = req.query_param("session_id").or_else(|| req.query_param("sessionId")) else {
        return Response::error(400, "missing session_id in the query string");
    };
    // Another credential presenting this id learns nothing: the session is not found.
    let found = gw
        .registry
        .session(&id)
        .filter(|s| s.kind == Kind::LegacySse && &s.scope == scope && s.owner == owner);
    let Some(session) = found else {
        return Response::error(404, "Could not find session (it ended, or never existed)");
    };
    Metrics::add(&gw.metrics.client_bytes_in, req.body.len());
    match jsonrpc::parse(&req.body).and_then(jsonrpc::classify) {
        Ok(msg) => {
            mcp::handle_message(gw, &session, msg, &Reply::Stream);
            Response::text(202, "Accepted")
        }
        Err(invalid) => {
            log::warn!("session {id}: rejected a message: {invalid:?}");
            Response::json(400, &invalid.to_response())
        }
    }
}
