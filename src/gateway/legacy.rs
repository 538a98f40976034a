//! The legacy HTTP+SSE transport (protocol 2024-11-05), as the reference SDKs implement it.
//!
//! `GET /sse` opens a session: the first event is `endpoint` with the relative URL to POST to
//! (`/messages/?session_id=<32 hex>`), and every message for the client follows as a `message`
//! event. `POST /messages/?session_id=…` takes one JSON-RPC message and answers `202 Accepted`;
//! the reply travels on the stream. Missing session id → 400; unknown session → 404; a body that
//! is not JSON → 400 with a -32700 error; not JSON-RPC → 400 with -32600. The session ends when
//! its stream does.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::auth::Credential;
use super::cors::Headers;
use super::mailbox::{Empty, Mailbox};
use super::metrics::Metrics;
use super::reply::Reply;
use super::session::{Kind, Scope, Session};
use super::{mcp, Gateway, Tally};
use crate::http::sse::SseWriter;
use crate::http::{Conn, Request, Response, Transport};
use crate::{jsonrpc, sys, thread};

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

/// Writes a session's stream until its queue closes or the client goes away; keep-alive
/// comments while idle. Returns why it ended. (The legacy stream and the Streamable HTTP `GET`
/// stream are the same loop.)
pub(crate) fn write_stream<W: Write>(
    gw: &Gateway,
    session: &Session,
    sse: &mut SseWriter<W>,
    rx: &Mailbox,
) -> &'static str {
    let mut pace = Pace::default();
    loop {
        let written = match pace.due() {
            Some(notice) => write_message(gw, session, sse, &notice),
            None => match thread::wait_resting(
                pace.wait(gw.cfg.keepalive),
                |t| rx.recv(t),
                |r| r == &Err(Empty::Timeout),
            ) {
                Ok(msg) => match pace.admit(msg) {
                    Some(msg) => write_message(gw, session, sse, &msg),
                    None => Ok(()),
                },
                Err(Empty::Timeout) if pace.holding() => Ok(()),
                Err(Empty::Timeout) => sse.comment("keep-alive"),
                Err(Empty::Closed) => {
                    let _ = sse.finish();
                    return "closed by the gateway";
                }
            },
        };
        if written.is_err() {
            return "client went away";
        }
    }
}

fn write_message<W: Write>(
    gw: &Gateway,
    session: &Session,
    sse: &mut SseWriter<W>,
    msg: &Value,
) -> std::io::Result<()> {
    let text = msg.to_string();
    Metrics::add(&gw.metrics.client_bytes_out, text.len());
    let written = sse.event(Some("message"), &text);
    session.written(msg);
    written
}

/// How often a stream writes a `list_changed` at most: while one is held back, more changes of
/// the same list add nothing (`Session::list_changed` sees it unsent), so a thousand edges
/// registering in a second become a handful of notices. Other messages never wait for it.
const LIST_CHANGED_EVERY: Duration = Duration::from_millis(200);

/// The pacing of a stream's `list_changed` notices.
#[derive(Default)]
struct Pace {
    last: Option<Instant>,
    /// Notices held back, with when they may go.
    held: Vec<(Value, Instant)>,
}

impl Pace {
    /// A message just taken from the queue: it goes now (returned), or a notice is held back.
    fn admit(&mut self, msg: Value) -> Option<Value> {
        if !msg["method"].as_str().is_some_and(|m| m.ends_with("/list_changed")) {
            return Some(msg);
        }
        match self.last {
            Some(at) if at.elapsed() < LIST_CHANGED_EVERY => {
                self.held.push((msg, at + LIST_CHANGED_EVERY));
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(msg)
            }
        }
    }

    /// A held notice whose time has come.
    fn due(&mut self) -> Option<Value> {
        let i = self.held.iter().position(|(_, at)| *at <= Instant::now())?;
        self.last = Some(Instant::now());
        Some(self.held.remove(i).0)
    }

    fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// How long to wait for the next message: the keep-alive, or less when a notice is held.
    fn wait(&self, keepalive: Duration) -> Duration {
        let next = self.held.iter().map(|(_, at)| at.saturating_duration_since(Instant::now())).min();
        next.map_or(keepalive, |n| n.min(keepalive))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_changed_notices_are_paced_and_nothing_waits_for_them() {
        let changed = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        let mut pace = Pace::default();
        assert!(pace.admit(changed.clone()).is_some(), "the first notice goes at once");
        assert!(pace.admit(changed.clone()).is_none() && pace.holding(), "the next is held back");
        assert_eq!(pace.admit(answer.clone()), Some(answer), "an answer never waits");
        assert!(pace.due().is_none());
        assert!(pace.wait(Duration::from_secs(15)) <= LIST_CHANGED_EVERY);
        std::thread::sleep(LIST_CHANGED_EVERY);
        assert_eq!(pace.due(), Some(changed));
        assert!(!pace.holding());
    }
}
