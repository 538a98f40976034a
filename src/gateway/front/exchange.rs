//! One client exchange on an MCP endpoint, whatever its transport: what a request's handler
//! returns (`Outcome`), who asks (`Asker`), and how a POST's answers go out (`answer`, shaped by
//! `Shape`: one JSON body, or an SSE stream of related messages that ends with the answers).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::gateway::clients::mailbox::{Empty, Mailbox};
use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::credential::Credential;
use crate::gateway::front::cors::Headers;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::{Gateway, Tally};
use crate::http::sse::SseWriter;
use crate::http::{Conn, Response, Transport};
use crate::sys;

/// What became of a request the handler answered itself.
pub(crate) enum Outcome {
    /// Write this response; the connection may be kept alive.
    Respond(Response),
    /// The handler wrote its answer (a stream); the connection may serve the next request.
    Streamed,
    /// The handler wrote its answer; close the connection.
    Close,
    /// The connection becomes the session's stream of unrelated messages (`write_unrelated`,
    /// run once the request loop has returned).
    Unrelated(Box<crate::gateway::front::stream::Unrelated>),
}

/// Who asks on an MCP endpoint: the view it asks, the credential it presented, its address, and
/// the CORS headers its answers carry (a stream's head carries them; the caller adds them to a
/// `Respond`). What every handler of a request there needs besides the gateway, the connection
/// and the request itself.
pub(crate) struct Asker<'a> {
    pub scope: Scope,
    pub owner: Credential,
    pub peer: SocketAddr,
    pub cors: &'a Headers,
}

/// Related messages (and bytes) that may wait for a POST's response to take them.
pub(crate) const POST_QUEUE: usize = 1024;
pub(crate) const POST_BYTES: usize = 8 * 1024 * 1024;

/// How a POST's messages are shaped on their way out: each message (a related one that maps
/// to `None` is dropped), and the HTTP status of an answer sent alone as JSON.
pub(crate) struct Shape<'a> {
    pub message: &'a dyn Fn(Value) -> Option<Value>,
    pub status: &'a dyn Fn(&Value) -> u16,
}

impl Shape<'_> {
    /// Legacy sessions: messages as they are, 200.
    pub(crate) const AS_IS: Shape<'static> = Shape { message: &Some, status: &|_| 200 };

    /// A message shaped; finals always stay.
    fn apply(&self, msg: Value) -> Option<Value> {
        if msg.is_null() {
            return Some(msg);
        }
        let fin = is_final(&msg);
        match (self.message)(msg) {
            None if fin => Some(Value::Null),
            shaped => shaped,
        }
    }
}

/// Sends the answers to a POST's requests: one JSON body when nothing else comes first and the
/// answer is quick, else an SSE stream of related messages that ends with the answers. Both
/// carry `headers`; the stream's head carries `cors` too (the caller adds them to a JSON body).
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer(
    gw: &Gateway,
    conn: &mut Conn<Box<dyn Transport>>,
    rx: &Mailbox,
    mut left: usize,
    batch: bool,
    mut headers: Headers,
    cors: &Headers,
    shape: &Shape<'_>,
) -> Outcome {
    let next_shaped = |wait| loop {
        match rx.recv(wait) {
            Ok(msg) => match shape.apply(msg) {
                Some(msg) => return Ok(msg),
                None => continue,
            },
            Err(e) => return Err(e),
        }
    };
    let first = match next_shaped(gw.cfg.keepalive) {
        Ok(msg) => Some(msg),
        Err(Empty::Timeout) => None,
        Err(Empty::Closed) => return respond(Response::empty(202)),
    };
    if let Some(msg) = &first {
        if !batch && is_final(msg) && !msg.is_null() {
            let resp = Response::json((shape.status)(msg), msg).with_headers(&headers);
            Metrics::add(&gw.metrics.client_bytes_out, resp.body.len());
            return respond(resp);
        }
    }
    let _stream = Tally::new(&gw.streams);
    headers.extend_from_slice(cors);
    let Ok(mut sse) = SseWriter::start(&mut conn.stream, &headers) else { return Outcome::Close };
    let mut next = first;
    while left > 0 {
        let written = match next.take() {
            Some(msg) => {
                left -= usize::from(is_final(&msg));
                if msg.is_null() {
                    Ok(())
                } else {
                    let text = msg.to_string();
                    Metrics::add(&gw.metrics.client_bytes_out, text.len());
                    sse.event(Some("message"), &text)
                }
            }
            None => sse.comment("keep-alive"),
        };
        if written.is_err() {
            return Outcome::Close; // the client went away; the requests run on to their end
        }
        if left > 0 {
            next = match next_shaped(gw.cfg.keepalive) {
                Ok(msg) => Some(msg),
                Err(Empty::Timeout) => None,
                Err(Empty::Closed) => break,
            };
        }
    }
    if sse.finish().is_err() {
        return Outcome::Close;
    }
    Outcome::Streamed
}

/// A request's answer (or the no-answer marker), as opposed to a related message.
pub(crate) fn is_final(msg: &Value) -> bool {
    msg.is_null() || msg.get("method").is_none()
}

pub(crate) fn respond(resp: Response) -> Outcome {
    Outcome::Respond(resp)
}

/// The session-like context of one 2026-07-28 request: it lives as long as the exchange.
pub(crate) fn stateless_session(
    scope: Scope,
    owner: Credential,
    peer: SocketAddr,
    capabilities: &Value,
) -> Arc<Session> {
    let session = Arc::new(Session::new(sys::random_hex(16), Kind::Stateless, scope, owner, peer.ip()));
    session.update(|s| {
        s.protocol_version = Some(crate::protocol::MODERN_VERSIONS[0].to_string());
        s.client_capabilities = capabilities.clone();
        s.initialized = true;
    });
    session
}
