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
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::budget::Budget;
use crate::gateway::access::Principal;
use crate::gateway::clients::mailbox::Mailbox;
use crate::gateway::credential::{Credential, Holder};
use crate::gateway::error::Error;
use crate::gateway::link::ClientInput;
use crate::thread::lock;

/// What a session needs of a link it involved: to cancel a call there, and to say it ended.
/// (The link's owner holds the session's calls, subscriptions and level; `server.rs` implements
/// this for a registered server, so sessions need not know what a server is.)
pub(crate) trait LinkPort: Send + Sync {
    /// Unique for the gateway's life.
    fn serial(&self) -> u64;
    /// Cancels call `client_id` of `session`; false when the link did not take it.
    fn cancel(&self, session: &str, client_id: &Value) -> bool;
    /// Drops whatever the link holds for `session`.
    fn session_ended(&self, session: &str);
}

/// Messages, and bytes, that may wait on a session's stream before the stream is dropped.
pub(crate) const STREAM_QUEUE: usize = 1024;
pub(crate) const STREAM_BYTES: usize = 16 * 1024 * 1024;

/// The transport a session arrived on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    LegacySse,
    Streamable,
    /// A 2026-07-28 request, or its `subscriptions/listen` stream: a session-like context that
    /// lives exactly as long as that one HTTP exchange (never found by id by a client).
    Stateless,
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
    pub holder: Holder,
    /// Who the client is for policies (what it may see and call).
    pub principal: Arc<Principal>,
    stream: Mutex<Option<Stream>>,
    state: Mutex<SessionState>,
    last_seen: Mutex<Instant>,
    calls: Mutex<Calls>,
    call_ended: Condvar,
    /// Set once, first thing, when the session ends.
    ended: AtomicBool,
}

/// A session's stream while it is attached: its mailbox and what belongs to that stream alone.
/// Detached or closed, however that happens, it goes whole: nothing of a stream outlives it.
struct Stream {
    mailbox: Arc<Mailbox>,
    /// `list_changed` notifications queued on this stream and not yet written: one of a kind is
    /// enough, however many changes come meanwhile.
    unsent: Vec<&'static str>,
}

#[derive(Default, Clone)]
pub(crate) struct SessionState {
    pub protocol_version: Option<String>,
    pub initialized: bool,
    pub client_capabilities: Value,
    /// `clientInfo` of its `initialize` (or of its 2026-07-28 request's `_meta`).
    pub client_info: Value,
    /// The level set with `logging/setLevel` on the aggregated view.
    pub log_level: Option<String>,
    /// What a 2026-07-28 request brought for the server's questions (taken by its one call).
    pub input: ClientInput,
}

/// Calls in flight, and the live links the session involved (told when the session ends; a
/// link that ended is forgotten, so a flapping edge costs a session nothing).
#[derive(Default)]
struct Calls {
    in_flight: HashMap<String, Arc<dyn LinkPort>>,
    links: HashMap<u64, Weak<dyn LinkPort>>,
    ended: bool,
    /// Threads waiting in `begin_call` for a free slot (`end_call` wakes one only then).
    waiting: usize,
}

impl Calls {
    fn involve(&mut self, link: &Arc<dyn LinkPort>) {
        if !self.links.contains_key(&link.serial()) {
            self.links.retain(|_, l| l.strong_count() > 0);
            self.links.insert(link.serial(), Arc::downgrade(link));
        }
    }
}

impl Session {
    /// A new session, shared. Out of line: the session is built in this frame before it moves
    /// to the heap, and a connection thread's deepest frame is then this one, not its caller's.
    #[inline(never)]
    pub(crate) fn new(
        id: String,
        kind: Kind,
        scope: Scope,
        (owner, principal): (Credential, Arc<Principal>),
        peer: IpAddr,
    ) -> Arc<Session> {
        let holder = Holder::of(owner, peer);
        Arc::new(Session {
            id,
            kind,
            scope,
            owner,
            holder,
            principal,
            stream: Mutex::new(None),
            state: Mutex::new(SessionState::default()),
            last_seen: Mutex::new(Instant::now()),
            calls: Mutex::new(Calls::default()),
            call_ended: Condvar::new(),
            ended: AtomicBool::new(false),
        })
    }

    /// Attaches the session's stream; `None` if one is attached already.
    /// Its bytes count against `budget`, the gateway's for all queues.
    pub(crate) fn attach_stream(&self, budget: &Arc<Budget>) -> Option<Arc<Mailbox>> {
        let mut stream = lock(&self.stream);
        // An ended session takes no stream: `end` sets the flag before it detaches, so a stream
        // attached before the flag is detached by `end`, and none attaches after.
        if stream.is_some() || self.is_ended() {
            return None;
        }
        let mailbox = Mailbox::new(STREAM_QUEUE, STREAM_BYTES, Some(budget.clone()));
        *stream = Some(Stream { mailbox: mailbox.clone(), unsent: Vec::new() });
        Some(mailbox)
    }

    /// Detaches the stream; its writer sends what is queued and ends.
    pub(crate) fn detach_stream(&self) {
        if let Some(stream) = lock(&self.stream).take() {
            stream.mailbox.finish();
        }
    }

    /// Detaches the stream `rx` reads, if it is still the session's: its writer ended (the client
    /// went away, or the gateway closed it), and a new `GET` may attach another.
    pub(crate) fn detach(&self, rx: &Arc<Mailbox>) {
        let mut stream = lock(&self.stream);
        if stream.as_ref().is_some_and(|s| Arc::ptr_eq(&s.mailbox, rx)) {
            if let Some(gone) = stream.take() {
                gone.mailbox.finish();
            }
        }
    }

    /// Whether the session has ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Whether a stream is attached (a client listening on it is using the session).
    pub(crate) fn has_stream(&self) -> bool {
        lock(&self.stream).is_some()
    }

    /// Queues a message on the session's stream. A client too slow to read loses its stream.
    /// Returns whether the message was queued.
    pub(crate) fn send(&self, msg: Value) -> bool {
        let stream = lock(&self.stream);
        let Some(s) = stream.as_ref() else { return false };
        if s.mailbox.push(msg) {
            return true;
        }
        self.overflowed(stream);
        false
    }

    /// Closes a stream whose client is too slow to read it.
    #[cold]
    fn overflowed(&self, mut stream: std::sync::MutexGuard<'_, Option<Stream>>) {
        if let Some(gone) = stream.take() {
            gone.mailbox.close();
        }
        drop(stream);
        log::warn!("session {}: client is not reading its stream; closing the stream", self.id);
    }

    /// Tells the client that an aggregated list changed, unless such a notice is already
    /// waiting on its stream (or it has no stream: then it hears nothing, as of any change).
    pub(crate) fn list_changed(&self, method: &'static str) {
        let mut stream = lock(&self.stream);
        let Some(s) = stream.as_mut() else { return };
        if s.unsent.contains(&method) {
            return;
        }
        if s.mailbox.push(serde_json::json!({"jsonrpc": "2.0", "method": method, "params": {}})) {
            s.unsent.push(method);
        } else {
            self.overflowed(stream);
        }
    }

    /// Called by the writer of the stream `rx` reads as `msg` goes out (a change after this is
    /// told anew).
    pub(crate) fn written(&self, rx: &Arc<Mailbox>, msg: &Value) {
        let Some(method) = msg["method"].as_str().filter(|m| m.ends_with("/list_changed")) else { return };
        let mut stream = lock(&self.stream);
        if let Some(s) = stream.as_mut().filter(|s| Arc::ptr_eq(&s.mailbox, rx)) {
            s.unsent.retain(|m| *m != method);
        }
    }

    /// Reads what it needs of the state under the lock, copying nothing else.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&SessionState) -> T) -> T {
        f(&lock(&self.state))
    }

    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut SessionState) -> T) -> T {
        f(&mut lock(&self.state))
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

    /// Takes a slot for call `client_key` at `link`, waiting up to `wait` while `max` calls are in
    /// flight, and hands the call to the link with `send` while the slot is being taken, so that
    /// a cancellation of this id, from any thread, reaches the link after the call. Refused when
    /// the id is already in flight, the session ended, or no slot freed in time. `send` gives the
    /// call back when the link did not take it (then the slot is freed again).
    #[inline(never)]
    pub(crate) fn begin_call<C>(
        &self,
        client_key: &str,
        link: Arc<dyn LinkPort>,
        max: usize,
        wait: Duration,
        send: impl FnOnce() -> Result<(), C>,
    ) -> Result<Result<(), C>, Error> {
        let deadline = Instant::now() + wait;
        let mut calls = lock(&self.calls);
        loop {
            if calls.ended {
                return Err(Error::Busy("the session has ended".into()));
            }
            if calls.in_flight.contains_key(client_key) {
                return Err(Error::InvalidParams(format!(
                    "request id {client_key} is already in flight in this session"
                )));
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
            calls.waiting += 1;
            calls = self.call_ended.wait_timeout(calls, left).unwrap_or_else(|p| p.into_inner()).0;
            calls.waiting -= 1;
        }
        calls.in_flight.insert(client_key.to_string(), link.clone());
        // A non-blocking send: the lock is never held across waiting or I/O. Whatever comes of
        // it, the slot is freed by the call's end (`end_call`), exactly once. Only a link that
        // took the call is involved (told when the session ends).
        let sent = send();
        if sent.is_ok() {
            calls.involve(&link);
        }
        Ok(sent)
    }

    /// Notes that the session involves `link` (a log level), so it hears of the end; a session
    /// that already ended tells the link at once.
    pub(crate) fn involve(&self, link: Arc<dyn LinkPort>) {
        let mut calls = lock(&self.calls);
        if !calls.ended {
            return calls.involve(&link);
        }
        drop(calls);
        link.session_ended(&self.id);
    }

    /// Frees the slot of call `client_key` (its answer was delivered, or it ended otherwise).
    pub(crate) fn end_call(&self, client_key: &str) {
        let waiting = {
            let mut calls = lock(&self.calls);
            calls.in_flight.remove(client_key);
            calls.waiting
        };
        // All of them: a waiter that wakes and returns without the slot (a duplicate id, say)
        // must not swallow the wake-up another waiter needed.
        if waiting > 0 {
            self.call_ended.notify_all();
        }
    }

    /// Calls in flight.
    pub(crate) fn calls_in_flight(&self) -> usize {
        lock(&self.calls).in_flight.len()
    }

    /// Cancels call `client_id`: its link hears of it after the call itself (same queue).
    pub(crate) fn cancel(&self, client_id: &Value) -> bool {
        let link = lock(&self.calls).in_flight.get(&client_id.to_string()).cloned();
        link.is_some_and(|link| link.cancel(&self.id, client_id))
    }

    /// Ends the session: its stream closes, and every link it involved drops what it holds
    /// for it (calls, subscriptions, log level, requests awaiting its answers).
    pub(crate) fn end(&self) {
        // First: from here on no stream attaches (a GET that found the session a moment ago).
        self.ended.store(true, Ordering::SeqCst);
        self.detach_stream();
        let links: Vec<Arc<dyn LinkPort>> = {
            let mut calls = lock(&self.calls);
            calls.ended = true;
            calls.links.drain().filter_map(|(_, link)| link.upgrade()).collect()
        };
        self.call_ended.notify_all();
        for link in links {
            link.session_ended(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that ended takes no stream (a GET that found it a moment before its end would
    /// otherwise hold a stream nobody writes to), and its stream's state goes with the stream.
    #[test]
    fn an_ended_session_takes_no_stream_and_a_stream_takes_its_state_along() {
        let budget = Budget::new(1 << 20);
        let s = Session::new(
            "s".into(),
            Kind::Streamable,
            Scope::All,
            (Credential::Open, Arc::new(Principal::default())),
            "10.0.0.1".parse().unwrap(),
        );
        let rx = s.attach_stream(&budget).expect("a stream");
        s.list_changed("notifications/tools/list_changed");
        s.list_changed("notifications/tools/list_changed");
        assert!(rx.recv(Duration::ZERO).is_ok() && rx.recv(Duration::ZERO).is_err(), "one notice, not two");
        s.detach(&rx);
        let again = s.attach_stream(&budget).expect("a new stream once the old one is gone");
        s.list_changed("notifications/tools/list_changed");
        assert!(again.recv(Duration::ZERO).is_ok(), "the new stream hears of the change");
        s.end();
        assert!(s.attach_stream(&budget).is_none() && !s.has_stream());
    }
}
