//! Where a client's answers go, and the promise that each call gets exactly one.
//!
//! A `Reply` says where a request's messages go: the session's stream (legacy SSE) or the
//! mailbox of the POST that carried it (Streamable HTTP). A `Caller` stands for one call in
//! flight: it is moved into the link that serves the call, and it ends exactly once, with the
//! answer, with nothing (the client cancelled), or, if it is dropped unanswered (its link died),
//! with an error. Ending it frees the session's slot for another call.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::gateway::clients::mailbox::Mailbox;
use crate::gateway::clients::session::Session;

/// Where a request's answer and related messages go.
#[derive(Clone)]
pub(crate) enum Reply {
    /// The session's stream (legacy SSE).
    Stream,
    /// The POST that carried the request (Streamable HTTP).
    Post(Arc<Mailbox>),
}

impl Reply {
    /// Delivers a message related to a request (progress, a log line, a server's request).
    pub(crate) fn related(&self, session: &Session, msg: Value) {
        match self {
            Reply::Stream => {
                session.send(msg);
            }
            Reply::Post(mb) => {
                if !mb.push(msg) && mb.dropped() % 100 == 1 {
                    log::warn!(
                        "session {}: the client reads its POST stream too slowly; dropping messages",
                        session.id
                    );
                }
            }
        }
    }

    /// Delivers a request's end: its answer, or `None` when it has none.
    pub(crate) fn finish(&self, session: &Session, msg: Option<Value>) {
        match (self, msg) {
            (Reply::Stream, Some(msg)) => {
                session.send(msg);
            }
            (Reply::Stream, None) => {}
            (Reply::Post(mb), msg) => {
                mb.push_end(msg);
            }
        }
    }
}

/// One call in flight, as the link serving it holds it. Clones share the call; it ends once.
#[derive(Clone)]
pub(crate) struct Caller(Arc<CallerInner>);

struct CallerInner {
    session: Arc<Session>,
    reply: Reply,
    /// The client's request id, as JSON text (the session's key for the call).
    client_key: String,
    done: AtomicBool,
    /// The gateway's count of calls in flight (waited for at shutdown).
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caller({} {})", self.0.session.id, self.0.client_key)
    }
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Caller {
    /// A call of `session`, registered with it under `client_key` (see `Session::begin_call`).
    pub(crate) fn new(
        session: Arc<Session>,
        reply: Reply,
        client_key: String,
        in_flight: Arc<AtomicUsize>,
    ) -> Caller {
        in_flight.fetch_add(1, Ordering::SeqCst);
        Caller(Arc::new(CallerInner { session, reply, client_key, done: AtomicBool::new(false), in_flight }))
    }

    /// A message related to the call.
    pub(crate) fn related(&self, msg: Value) {
        self.0.reply.related(&self.0.session, msg);
    }

    /// Ends the call with its answer (or none). Only the first end counts.
    pub(crate) fn finish(&self, msg: Option<Value>) {
        self.0.end(msg);
    }
}

impl CallerInner {
    #[inline(never)]
    fn end(&self, msg: Option<Value>) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        self.reply.finish(&self.session, msg);
        self.session.end_call(&self.client_key);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for CallerInner {
    fn drop(&mut self) {
        if !self.done.load(Ordering::SeqCst) {
            self.lost();
        }
    }
}

impl CallerInner {
    /// Ends a call that its link dropped without an answer.
    #[cold]
    #[inline(never)]
    fn lost(&self) {
        let id: Value = serde_json::from_str(&self.client_key).unwrap_or(Value::Null);
        let error = crate::jsonrpc::error_response(
            &id,
            crate::jsonrpc::INTERNAL_ERROR,
            "the gateway lost this request (its server link ended abruptly); try again",
        );
        self.end(Some(error));
    }
}
