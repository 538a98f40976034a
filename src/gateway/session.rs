//! A client session: which transport and which view of the gateway it uses, what it negotiated,
//! its stream for messages that answer no particular request, and its calls in flight.
//!
//! Legacy SSE sessions get every message on their one stream, attached for the session's whole
//! life. Streamable HTTP sessions answer requests on the POST that asked; their stream is the
//! optional GET stream, attached while it is open. With no stream attached, such messages are
//! dropped (the spec leaves them undeliverable), never queued without bound; a client too slow
//! to read loses its stream, never the gateway's memory.
//!
//! The calls table maps each request id in flight to the link serving it, so a cancellation
//! reaches that link (after the call, on the same queue), and it bounds the calls one session
//! may have in flight: past the bound a new call waits a little for a free slot, then is refused.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::auth::Credential;
use super::error::Error;
use super::link::Input;
use super::reply::Mailbox;
use super::server::{Command, Upstream};
use crate::thread::lock;

/// Messages, and bytes, that may wait on a session's stream before the stream is dropped.
pub(crate) const STREAM_QUEUE: usize = 1024;
pub(crate) const STREAM_BYTES: usize = 16 * 1024 * 1024;

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
    stream: Mutex<Option<Arc<Mailbox>>>,
    state: Mutex<SessionState>,
    last_seen: Mutex<Instant>,
    calls: Mutex<Calls>,
    call_ended: Condvar,
}

#[derive(Default, Clone)]
pub(crate) struct SessionState {
    pub protocol_version: Option<String>,
    pub initialized: bool,
    pub client_capabilities: Value,
    /// The level set with `logging/setLevel` on the aggregated view.
    pub log_level: Option<String>,
}

/// Calls in flight, and every link the session ever involved (told when the session ends).
#[derive(Default)]
struct Calls {
    in_flight: HashMap<String, Arc<Upstream>>,
    links: HashMap<u64, Arc<Upstream>>,
    ended: bool,
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
            calls: Mutex::new(Calls::default()),
            call_ended: Condvar::new(),
        }
    }

    /// Attaches the session's stream; `None` if one is attached already.
    pub(crate) fn attach_stream(&self) -> Option<Arc<Mailbox>> {
        let mut stream = lock(&self.stream);
        if stream.is_some() {
            return None;
        }
        let mb = Mailbox::new(STREAM_QUEUE, STREAM_BYTES);
        *stream = Some(mb.clone());
        Some(mb)
    }

    /// Detaches the stream; its writer sends what is queued and ends.
    pub(crate) fn detach_stream(&self) {
        if let Some(mb) = lock(&self.stream).take() {
            mb.finish();
        }
    }

    /// Queues a message on the session's stream. A client too slow to read loses its stream.
    /// Returns whether the message was queued.
    pub(crate) fn send(&self, msg: Value) -> bool {
        let mut stream = lock(&self.stream);
        let Some(mb) = stream.as_ref() else { return false };
        if mb.push(msg) {
            return true;
        }
        if let Some(mb) = stream.take() {
            mb.close();
        }
        drop(stream);
        log::warn!("session {}: client is not reading its stream; closing the stream", self.id);
        false
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

    /// Takes a slot for call `client_key` at `up`, waiting up to `wait` while `max` calls are in
    /// flight. Refused when the id is already in flight, the session ended, or no slot freed.
    pub(crate) fn begin_call(&self, client_key: &str, up: &Arc<Upstream>, max: usize, wait: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + wait;
        let mut calls = lock(&self.calls);
        loop {
            if calls.ended {
                return Err(Error::Busy("the session has ended".into()));
            }
            if calls.in_flight.contains_key(client_key) {
                return Err(Error::InvalidParams(format!("request id {client_key} is already in flight in this session")));
            }
            if calls.in_flight.len() < max {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Busy(format!(
                    "this session has {max} requests in flight (--max-calls-per-session); wait for answers and try again"
                )));
            }
            calls = self.call_ended.wait_timeout(calls, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        calls.in_flight.insert(client_key.to_string(), up.clone());
        calls.links.insert(up.serial, up.clone());
        Ok(())
    }

    /// Notes that the session involves `up` (a level, a subscription), so it hears of the end.
    pub(crate) fn involve(&self, up: &Arc<Upstream>) {
        lock(&self.calls).links.insert(up.serial, up.clone());
    }

    /// Frees the slot of call `client_key` (its answer was delivered, or it ended otherwise).
    pub(crate) fn end_call(&self, client_key: &str) {
        lock(&self.calls).in_flight.remove(client_key);
        self.call_ended.notify_one();
    }

    /// Calls in flight.
    pub(crate) fn calls_in_flight(&self) -> usize {
        lock(&self.calls).in_flight.len()
    }

    /// Cancels call `client_id`: its link hears of it after the call itself (same queue).
    pub(crate) fn cancel(&self, client_id: &Value) -> bool {
        let up = lock(&self.calls).in_flight.get(&client_id.to_string()).cloned();
        let Some(up) = up else { return false };
        let input = Input::Cancel { session: self.id.clone(), client_id: client_id.clone() };
        up.tell(Command::Link(input)).is_ok()
    }

    /// Ends the session: its stream closes, and every link it involved drops what it holds
    /// for it (calls, subscriptions, log level, requests awaiting its answers).
    pub(crate) fn end(&self) {
        self.detach_stream();
        let links: Vec<Arc<Upstream>> = {
            let mut calls = lock(&self.calls);
            calls.ended = true;
            calls.links.drain().map(|(_, up)| up).collect()
        };
        self.call_ended.notify_all();
        for up in links {
            let input = Input::SessionEnded { session: self.id.clone() };
            if up.tell_reliably(Command::Link(input)).is_err() {
                log::debug!("session {}: server {} is gone; nothing to tell it", self.id, up.name);
            }
        }
    }
}
