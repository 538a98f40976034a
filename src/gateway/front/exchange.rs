//! One client exchange on an MCP endpoint, whatever its transport: the one place where a request
//! gets the session it runs under and where what it brought is let go.
//!
//! - `Exchange::open` makes a new session for every kind (a Streamable HTTP `initialize`, a legacy
//!   SSE stream, a 2026-07-28 request or `subscriptions/listen`): the scoped server must be
//!   registered (404 otherwise, before anything is made or counted), the registry admits it
//!   within its caps, and a `SessionGuard` ends it with the exchange unless `keep` hands it to
//!   the registry (a Streamable HTTP session whose `initialize` succeeded). `Exchange::find` and
//!   `find_legacy` look a session up by its id, for its owner only.
//! - `read_messages` consumes the request's `Body`: its bytes and their share of
//!   `--max-body-budget` are given back as soon as the messages are parsed, before any wait.
//! - `Exchange::post` hands the messages to the MCP views with a `Posted` mailbox, bounded and
//!   closed when the exchange is done with it; `answer` writes what comes back, typed
//!   (`mailbox::Item`: related messages, answers, ends without an answer) and shaped by the
//!   transport (`Shape`), as one JSON body or as an SSE stream that ends with the answers.
//! - A session's stream is attached through `attach`, which detaches it however it ends
//!   (`stream::Attached`).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::gateway::access::Principal;
use crate::gateway::clients::mailbox::{Empty, Item, Mailbox};
use crate::gateway::clients::reply::Reply;
use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::credential::Credential;
use crate::gateway::error::Error;
use crate::gateway::front::cors::Headers;
use crate::gateway::front::stream::Attached;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::{Gateway, Tally};
use crate::gateway::tables::registry::SessionGuard;
use crate::gateway::views::mcp;
use crate::http::sse::SseWriter;
use crate::http::{Body, Conn, Request, Response, Transport};
use crate::jsonrpc::{self, Message};
use crate::protocol::{MODERN_VERSIONS, SUPPORTED_VERSIONS};
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
    /// Who it is for policies.
    pub principal: Arc<Principal>,
    pub peer: SocketAddr,
    pub cors: &'a Headers,
}

/// Messages one JSON-RPC batch may hold (2025-03-26 only): the answers the gateway makes itself
/// (a list page each) are queued for the POST whatever `--max-queue-bytes` says, so their number
/// is bounded here, as calls are by `--max-calls-per-session`.
pub(crate) const MAX_BATCH: usize = 64;

/// Related messages (and bytes) that may wait for a POST's response to take them.
pub(crate) const POST_QUEUE: usize = 1024;
pub(crate) const POST_BYTES: usize = 8 * 1024 * 1024;

/// What kind of session an exchange opens, and how long it lives.
pub(crate) enum Opening {
    /// A Streamable HTTP `initialize`: in the registry, kept past the exchange only once its
    /// `initialize` succeeded (`keep`).
    Streamable,
    /// A legacy SSE stream: in the registry for as long as the stream.
    LegacySse,
    /// A 2026-07-28 `subscriptions/listen` stream: in the registry (so notices find it) for as
    /// long as the stream, with the request's declared capabilities.
    Listen { capabilities: Value },
    /// A 2026-07-28 request's own context: in no table (nothing finds it by id), ended with the
    /// exchange, which cancels what it still has running. `task`: a `tasks/*` request, which a
    /// per-server endpoint serves even while its server is away (the task then reads as failed).
    Request { capabilities: Value, task: bool },
}

/// A request's session, and what ends it.
pub(crate) struct Exchange {
    pub session: Arc<Session>,
    /// `None` for a session found by id, which outlives this exchange.
    guard: Option<SessionGuard>,
}

impl Exchange {
    /// A new session for `asker`, of the kind `opening` says (see `Opening`).
    pub(crate) fn open(gw: &Arc<Gateway>, asker: &Asker<'_>, opening: Opening) -> Result<Exchange, Error> {
        if let Scope::Server(name) = &asker.scope {
            let away_ok = matches!(opening, Opening::Request { task: true, .. });
            if (gw.registry.server(name).is_none() && !away_ok) || !sees_server(gw, asker, name) {
                return Err(Error::NoServer(name.clone()));
            }
        }
        let kind = match opening {
            Opening::Streamable => Kind::Streamable,
            Opening::LegacySse => Kind::LegacySse,
            Opening::Listen { .. } | Opening::Request { .. } => Kind::Stateless,
        };
        let session = Session::new(
            sys::random_hex(16),
            kind,
            asker.scope.clone(),
            (asker.owner, asker.principal.clone()),
            asker.peer.ip(),
        );
        let guard = match opening {
            Opening::Request { capabilities, .. } => {
                stateless(&session, capabilities);
                SessionGuard::unlisted(session.clone())
            }
            opening => {
                if let Opening::Listen { capabilities } = opening {
                    stateless(&session, capabilities);
                }
                gw.registry.admit(session.clone(), &gw.cfg).inspect_err(|e| {
                    log::warn!("{}: refusing a new session: {e}", asker.peer);
                })?
            }
        };
        Ok(Exchange { session, guard: Some(guard) })
    }

    /// The Streamable HTTP session named by `Mcp-Session-Id`, for its owner on its endpoint,
    /// checked against the protocol version header ("If the server receives a request with an
    /// invalid or unsupported MCP-Protocol-Version, it MUST respond with 400 Bad Request").
    pub(crate) fn find(gw: &Gateway, req: &Request, asker: &Asker<'_>) -> Result<Exchange, Error> {
        let Some(id) = req.header("mcp-session-id") else {
            return Err(Error::BadRequest("Bad Request: missing Mcp-Session-Id header".into()));
        };
        let session = found(gw, id, Kind::Streamable, asker).ok_or(Error::SessionNotFound)?;
        if let Some(v) = req.header("mcp-protocol-version") {
            if !SUPPORTED_VERSIONS.contains(&v) {
                let msg = format!(
                    "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                    SUPPORTED_VERSIONS.join(", ")
                );
                return Err(Error::BadRequest(msg));
            }
        }
        session.touch();
        Ok(Exchange { session, guard: None })
    }

    /// The legacy SSE session named by the `session_id` query parameter, for its owner on its
    /// endpoint (`None`: it ended, or never existed, or is another's).
    pub(crate) fn find_legacy(gw: &Gateway, id: &str, asker: &Asker<'_>) -> Option<Exchange> {
        found(gw, id, Kind::LegacySse, asker).map(|session| Exchange { session, guard: None })
    }

    /// Hands `messages` to the MCP views; their answers and related messages go to the
    /// returned mailbox.
    #[inline(always)]
    pub(crate) fn post(&self, gw: &Arc<Gateway>, messages: Vec<Message>) -> Posted {
        // Related messages are bounded in count and bytes; requests' ends always get in (they
        // are bounded by the session's calls in flight).
        let requests = messages.iter().filter(|m| matches!(m, Message::Request { .. })).count();
        // Made first, so that whatever happens while the messages are handled, it is closed.
        let posted =
            Posted { mailbox: Mailbox::new(POST_QUEUE, POST_BYTES, Some(gw.queue_budget.clone())), requests };
        let reply = Reply::Post(posted.mailbox.clone());
        for msg in messages {
            mcp::handle_message(gw, &self.session, msg, &reply);
        }
        posted
    }

    /// Hands one message to the MCP views, answers going to the session's own stream (legacy
    /// SSE).
    pub(crate) fn tell(&self, gw: &Arc<Gateway>, msg: Message) {
        mcp::handle_message(gw, &self.session, msg, &Reply::Stream);
    }

    /// Whether the session negotiated a protocol version (its `initialize` succeeded).
    pub(crate) fn initialized(&self) -> bool {
        self.session.read(|s| s.protocol_version.is_some())
    }

    /// Leaves the session to the registry past this exchange.
    pub(crate) fn keep(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.keep();
        }
    }

    /// Attaches the session's stream (409 when it has one).
    pub(crate) fn attach(&self, gw: &Gateway) -> Result<Attached, Error> {
        Attached::to(self.session.clone(), &gw.queue_budget).ok_or(Error::StreamOpen)
    }
}

/// A session of `kind` by id, if `asker` owns it on this endpoint: another credential presenting
/// its id learns nothing (it is not found).
fn found(gw: &Gateway, id: &str, kind: Kind, asker: &Asker<'_>) -> Option<Arc<Session>> {
    let visible = match &asker.scope {
        Scope::Server(name) => sees_server(gw, asker, name),
        Scope::All => true,
    };
    gw.registry.session(id).filter(|s| {
        visible && s.kind == kind && s.scope == asker.scope && s.owner == asker.owner && !s.is_ended()
    })
}

/// Whether the asker's policy lets it see `server` at all: one it may not is, for it, a server
/// that does not exist (404).
fn sees_server(gw: &Gateway, asker: &Asker<'_>, server: &str) -> bool {
    let grant = gw.access.grant(&asker.principal);
    if grant.is_everything() {
        return true;
    }
    let sees = grant.sees_server(server);
    gw.metrics.policy_decision("server", sees);
    if !sees {
        log::info!("{}: policy hides server {server} from {}", asker.peer, asker.principal.describe());
    }
    sees
}

/// A 2026-07-28 context: the revision, the capabilities its request declared, nothing to
/// initialize.
fn stateless(session: &Session, capabilities: Value) {
    session.update(|s| {
        s.protocol_version = Some(MODERN_VERSIONS[0].to_string());
        s.client_capabilities = capabilities;
        s.initialized = true;
    });
}

/// A POST's mailbox and how many requests wait for their end in it; closed when dropped, so
/// whatever still comes for it (a late answer, progress) is dropped, not kept.
pub(crate) struct Posted {
    pub mailbox: Arc<Mailbox>,
    pub requests: usize,
}

impl Drop for Posted {
    fn drop(&mut self) {
        self.mailbox.close();
    }
}

/// One message or a batch, classified (400 with the JSON-RPC error for a bad body). Takes the
/// body: its bytes and their share of the body budget are given back here, before any wait. Out
/// of line: the parser's frame is not under the wait for the answers.
#[inline(never)]
pub(crate) fn read_messages(body: Body) -> Result<(Vec<Message>, bool), Response> {
    let value = jsonrpc::parse(body.bytes()).map_err(|e| Response::json(400, &e.to_response()))?;
    drop(body);
    let (items, batch) = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(Error::BadRequest("an empty batch is not a message".into()).to_http());
        }
        Value::Array(items) if items.len() > MAX_BATCH => {
            let why = format!("a batch may hold at most {MAX_BATCH} messages");
            return Err(Error::BadRequest(why).to_http());
        }
        Value::Array(items) => (items, true),
        v => (vec![v], false),
    };
    let messages = items
        .into_iter()
        .map(jsonrpc::classify)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Response::json(400, &e.to_response()))?;
    Ok((messages, batch))
}

/// How a POST's messages are shaped on their way out, by the transport: a related message (one
/// that maps to `None` is dropped), an answer, and the HTTP status of an answer sent alone.
pub(crate) struct Shape<'a> {
    pub related: &'a dyn Fn(Value) -> Option<Value>,
    pub answer: &'a dyn Fn(Value) -> Value,
    pub status: &'a dyn Fn(&Value) -> u16,
}

impl Shape<'_> {
    /// Legacy sessions: messages as they are, 200.
    pub(crate) const AS_IS: Shape<'static> = Shape { related: &Some, answer: &|m| m, status: &|_| 200 };

    /// An item shaped; `None` when it is dropped (a related message only: ends always stay).
    fn apply(&self, item: Item) -> Option<Item> {
        match item {
            Item::Related(msg) => (self.related)(msg).map(Item::Related),
            Item::Answer(msg) => Some(Item::Answer((self.answer)(msg))),
            Item::NoAnswer => Some(Item::NoAnswer),
        }
    }
}

/// Sends the ends of a POST's requests: one JSON body when an answer comes first and quickly,
/// else an SSE stream of related messages that ends with the answers. Both carry `headers`; the
/// stream's head carries `cors` too (the caller adds them to a JSON body).
pub(crate) fn answer(
    gw: &Gateway,
    conn: &mut Conn<Box<dyn Transport>>,
    posted: &Posted,
    batch: bool,
    (mut headers, cors): (Headers, &Headers),
    shape: &Shape<'_>,
) -> Outcome {
    let next = |wait| loop {
        match posted.mailbox.recv(wait) {
            Ok(item) => match shape.apply(item) {
                Some(item) => return Ok(Some(item)),
                None => continue,
            },
            Err(Empty::Timeout) => return Ok(None),
            Err(Empty::Closed) => return Err(()),
        }
    };
    let Ok(first) = next(gw.cfg.keepalive) else { return respond(Response::empty(202)) };
    if let (Some(Item::Answer(msg)), false) = (&first, batch) {
        let resp = Response::json((shape.status)(msg), msg).with_headers(&headers);
        Metrics::add(&gw.metrics.client_bytes_out, resp.body.len());
        return respond(resp);
    }
    let _stream = Tally::new(&gw.streams);
    headers.extend_from_slice(cors);
    let Ok(mut sse) = SseWriter::start(&mut conn.stream, &headers) else { return Outcome::Close };
    let mut left = posted.requests;
    let mut item = first;
    while left > 0 {
        let written = match item.take() {
            Some(Item::Related(msg)) => event(gw, &mut sse, &msg),
            Some(Item::Answer(msg)) => {
                left -= 1;
                event(gw, &mut sse, &msg)
            }
            Some(Item::NoAnswer) => {
                left -= 1;
                Ok(())
            }
            None => sse.comment("keep-alive"),
        };
        if written.is_err() {
            return Outcome::Close; // the client went away; the requests run on to their end
        }
        if left > 0 {
            match next(gw.cfg.keepalive) {
                Ok(got) => item = got,
                Err(()) => break,
            }
        }
    }
    if sse.finish().is_err() {
        return Outcome::Close;
    }
    Outcome::Streamed
}

/// One message as an SSE event, counted.
fn event(gw: &Gateway, sse: &mut SseWriter<&mut Box<dyn Transport>>, msg: &Value) -> std::io::Result<()> {
    let text = msg.to_string();
    Metrics::add(&gw.metrics.client_bytes_out, text.len());
    sse.event(Some("message"), &text)
}

pub(crate) fn respond(resp: Response) -> Outcome {
    Outcome::Respond(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_message_or_a_batch() {
        let (msgs, batch) = read_messages(Body::from_bytes(br#"{"jsonrpc":"2.0","method":"x"}"#)).unwrap();
        assert_eq!((msgs.len(), batch), (1, false));
        let (msgs, batch) = read_messages(Body::from_bytes(
            br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":1,"method":"y"}]"#,
        ))
        .unwrap();
        assert_eq!((msgs.len(), batch), (2, true));
        for (bad, status, code) in [(&b"{"[..], 400, -32700), (b"[]", 400, -32600), (b"[1]", 400, -32600)] {
            let resp = read_messages(Body::from_bytes(bad)).unwrap_err();
            assert_eq!(resp.status, status);
            let body: Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(body["error"]["code"], code);
        }
    }
}
