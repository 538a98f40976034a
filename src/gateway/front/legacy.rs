//! The legacy HTTP+SSE transport (protocol 2024-11-05), as the reference SDKs implement it.
//!
//! `GET /sse` opens a session: the first event is `endpoint` with the relative URL to POST to
//! (`/messages/?session_id=<32 hex>`), and every message for the client follows as a `message`
//! event. `POST /messages/?session_id=…` takes one JSON-RPC message and answers `202 Accepted`;
//! the reply travels on the stream. Missing session id → 400; unknown session → 404; a body that
//! is not JSON → 400 with a -32700 error; not JSON-RPC → 400 with -32600. The session ends when
//! its stream does (the stream's `Exchange` is opened by `routes.rs` from the request's head, so
//! a refusal is an ordinary response).

use std::sync::Arc;

use crate::gateway::front::exchange::{Asker, Exchange};
use crate::gateway::front::stream::write_stream;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::{Gateway, Tally};
use crate::http::sse::SseWriter;
use crate::http::{Body, Conn, Request, Response, Transport};
use crate::jsonrpc;

/// The legacy SSE stream of a new session, opened and waiting to be written once the request
/// loop has returned: its exchange (which ends the session with the stream), where its client
/// must POST (it differs per scope), and the headers its answer's head carries.
pub(crate) struct Opened {
    pub exchange: Exchange,
    pub messages_path: String,
    pub cors: crate::gateway::front::cors::Headers,
}

/// Turns the connection into a session's event stream and writes until the session ends.
#[inline(never)]
pub(crate) fn open_stream(gw: &Arc<Gateway>, conn: Conn<Box<dyn Transport>>, opened: Opened) {
    let Opened { exchange, messages_path, cors } = opened;
    let _stream = Tally::new(&gw.streams);
    let stream = match exchange.attach(gw) {
        Ok(stream) => stream,
        Err(e) => return log::warn!("session {}: {e}", exchange.session.id),
    };
    let id = &exchange.session.id;
    let endpoint = format!("{messages_path}?session_id={id}");
    let mut sse = match SseWriter::start(conn.stream, &cors) {
        Ok(sse) => sse,
        Err(e) => return log::debug!("session {id}: SSE stream failed before it started: {e}"),
    };
    if sse.event(Some("endpoint"), &endpoint).is_err() {
        return;
    }
    log::info!("session {id}: opened (legacy SSE)");
    let why = write_stream(gw, &stream, &mut sse);
    log::info!("session {id}: ended ({why})");
}

/// Accepts one client message for a session and hands it to the MCP layer.
#[inline(never)]
pub(crate) fn post_message(
    gw: &Arc<Gateway>,
    req: &Request,
    body: Option<Body>,
    asker: &Asker<'_>,
) -> Response {
    if req.method != "POST" {
        return Response::error(405, "the message endpoint takes POST").header("Allow", "POST");
    }
    let Some(id) = req.query_param("session_id").or_else(|| req.query_param("sessionId")) else {
        return Response::error(400, "missing session_id in the query string");
    };
    let Some(exchange) = Exchange::find_legacy(gw, &id, asker) else {
        return Response::error(404, "Could not find session (it ended, or never existed)");
    };
    let Some(body) = body else { return Response::error(400, "POST a JSON-RPC message") };
    Metrics::add(&gw.metrics.client_bytes_in, body.len());
    // The body is parsed and let go here; only the message goes on.
    match jsonrpc::parse(body.bytes()).and_then(jsonrpc::classify) {
        Ok(msg) => {
            drop(body);
            exchange.tell(gw, msg);
            Response::text(202, "Accepted")
        }
        Err(invalid) => {
            log::warn!("session {id}: rejected a message: {invalid:?}");
            Response::json(400, &invalid.to_response())
        }
    }
}
