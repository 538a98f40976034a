//! A client session: which transport and which view of the gateway it uses, what it negotiated,
//! and its stream for messages that answer no particular request (list_changed and the like).
//!
//! Legacy SSE sessions get every message on their one stream, attached for the session's whole
//! life. Streamable HTTP sessions answer requests on the POST that asked; their stream is the
//! optional GET stream, attached while it is open. With no stream attached, such messages are
//! dropped (the spec leaves them undeliverable), never queued without bound.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use super::auth::Credential;
use crate::thread::lock;

/// How many messages may wait for a slow client before its stream is dropped.
pub(crate) const STREAM_QUEUE: usize = 1024;

/// The transport a session arrived on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    LegacySse,
    Streamable,
}

/// What a session sees: every server, prefixed, or one server as itself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scope {
    All,
    Server(String),
}

pub(crate) struct Session {
    pub id: String,
    pub kind: Kind,
    pub scope: Scope,
    /// The credential that opened the session: only it may use the session.
    pub owner: Credential,
    stream: Mutex<Option<SyncSender<Value>>>,
    state: Mutex<SessionState>,
    last_seen: Mutex<Instant>,
}

#[derive(Default, Clone)]
pub(crate) struct SessionState {
    pub protocol_version: Option<String>,
    pub initialized: bool,
    pub client_capabilities: Value,
    /// The level set with `logging/setLevel` on the aggregated view: server log messages at
    /// or above it are forwarded; none before it is set.
    pub log_level: Option<String>,
}

impl Session {
    pub(crate) fn new(id: String, kind: Kind, scope: Scope, owner: Credential) -> Session {
        Session {
            id,
            kind,
            scope,
            owner,
            stream: Mutex::new(None),
            state: Mutex::new(SessionState::default()),
            last_seen: Mutex::new(Instant::now()),
        }
    }

    /// Attaches the session's stream; `None` if one is attached already.
    pub(crate) fn attach_stream(&self) -> Option<Receiver<Value>> {
        let mut stream = lock(&self.stream);
        if stream.is_some() {
            return None;
        }
        let (tx, rx) = mpsc::sync_channel(STREAM_QUEUE);
        *stream = Some(tx);
        Some(rx)
    }

    /// Detaches the stream (its writer ends when it sees the channel close).
    pub(crate) fn detach_stream(&self) {
        *lock(&self.stream) = None;
    }

    /// Queues a message on the session's stream. A client too slow to read loses its stream,
    /// never the gateway's memory. Returns whether the message was queued.
    pub(crate) fn send(&self, msg: Value) -> bool {
        let mut stream = lock(&self.stream);
        let Some(tx) = stream.as_ref() else { return false };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                *stream = None;
                drop(stream);
                log::warn!("session {}: client is not reading its stream; closing the stream", self.id);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                *stream = None;
                false
            }
        }
    }

    pub(crate) fn state(&self) -> SessionState {
        lock(&self.state).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SessionState)) {
        f(&mut lock(&self.state));
    }

    pub(crate) fn is_initialized(&self) -> bool {
        lock(&self.state).initialized
    }

    /// Marks the session as used now (idle sessions expire).
    pub(crate) fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    pub(crate) fn idle_since(&self) -> Instant {
        *lock(&self.last_seen)
    }
}
