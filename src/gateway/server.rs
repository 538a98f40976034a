//! A registered edge server as every thread sees it: identity, the queue to its socket's owner,
//! what it lists, and its table of pending requests.
//!
//! A request to the server gets a gateway-minted id and a reply slot; the waiting thread blocks
//! on its slot with a timeout (restarted by progress), and the socket's owner fills the slot when
//! the answer comes. When the link ends, every slot gets an error at once: nobody waits for a
//! timeout to learn that a peer is gone. Locks are held for map operations only, never across I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::catalog::{ListKind, Lists};
use super::metrics::{Metrics, METRICS};
use super::registry::Registry;
use super::session::Session;
use crate::jsonrpc;
use crate::thread::lock;
use crate::ws::{Out, Outbox, SendError};

/// A registered edge server, as seen by every thread: identity, the queue to its socket's owner,
/// what it offers, and its pending requests.
pub(crate) struct Upstream {
    pub name: String,
    pub id: String,
    pub remote: SocketAddr,
    pub since: SystemTime,
    /// When the server last sent a message.
    last_seen: Mutex<SystemTime>,
    pub outbox: Outbox,
    offer: Mutex<Offer>,
    pending: Mutex<Pending>,
}

/// What a server offers, filled in by the registration handshake.
#[derive(Default)]
struct Offer {
    /// `None` until the handshake has listed everything: the server is not visible before.
    lists: Option<Lists>,
    initialize: Value,
    /// Per list kind: the newest refresh started, so an older one finishing later is dropped.
    refreshes: [u64; 4],
    /// Lists announced as changed during the handshake, refreshed once it is done.
    dirty: Vec<ListKind>,
    /// The session whose roots the server last received: when another client's request comes,
    /// the server is told its roots changed, so it never serves one client another's roots.
    roots_from: Option<String>,
}

#[derive(Default)]
struct Pending {
    /// Set once the link is gone: new requests fail at once.
    closed: Option<String>,
    slots: HashMap<u64, Slot>,
}

/// Where the answer to one upstream request goes, and whom it was for.
struct Slot {
    reply: Sender<Reply>,
    origin: Option<Origin>,
}

/// The client request an upstream request was made for.
#[derive(Clone)]
pub(crate) struct Origin {
    pub session: Arc<Session>,
    pub client_id: Value,
    /// The client's own progress token, restored on progress notifications.
    pub progress_token: Option<Value>,
    /// Where messages related to the request go (a Streamable HTTP POST's stream); the
    /// session's stream when `None`.
    pub reply_to: Option<Sender<Value>>,
}

impl Origin {
    /// Sends a message related to the request to the client.
    pub(crate) fn send(&self, msg: Value) {
        match &self.reply_to {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => {
                self.session.send(msg);
            }
        }
    }
}

/// What a waiting request thread receives.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The server's answer: a result, or its error object.
    Done(Result<Value, Value>),
    /// The server reported progress: the wait starts over.
    Progress,
    /// The link is gone; the reason says why.
    Gone(String),
    /// The client cancelled the request: no answer goes back.
    Cancelled,
}

/// Why an upstream request produced no answer from the server.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with this JSON-RPC error object.
    Error(Value),
    /// No answer within the timeout (the server was told to cancel).
    Timeout(Duration),
    /// The server went away before answering.
    Gone(String),
    /// The server's queue is full.
    Busy,
    /// The client cancelled the request.
    Cancelled,
}

impl Upstream {
    pub(crate) fn new(name: String, id: String, remote: SocketAddr, outbox: Outbox) -> Self {
        Upstream {
            name,
            id,
            remote,
            since: SystemTime::now(),
            last_seen: Mutex::new(SystemTime::now()),
            outbox,
            offer: Mutex::new(Offer::default()),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// Queues a message for the server (counted in the edge byte metrics).
    pub(crate) fn send(&self, msg: &Value) -> Result<(), SendError> {
        let text = msg.to_string();
        Metrics::add(&METRICS.edge_bytes_out, text.len());
        self.outbox.send(Out::Text(text))
    }

    /// Notes that the server just sent something.
    pub(crate) fn seen(&self) {
        *lock(&self.last_seen) = SystemTime::now();
    }

    /// What operators and `list_servers` see of the server.
    pub(crate) fn summary(&self) -> Value {
        let lists = self.lists().unwrap_or_default();
        serde_json::json!({
            "name": self.name,
            "id": self.id,
            "remote": self.remote.to_string(),
            "connectedSince": crate::logger::timestamp(self.since),
            "lastSeen": crate::logger::timestamp(*lock(&self.last_seen)),
            "ready": self.is_ready(),
            "serverInfo": self.initialize_result()["serverInfo"],
            "counts": {"tools": lists.tools.len(), "prompts": lists.prompts.len(),
                       "resources": lists.resources.len(), "resourceTemplates": lists.templates.len()},
        })
    }

    /// What the server lists, once the handshake has read it.
    pub(crate) fn lists(&self) -> Option<Lists> {
        lock(&self.offer).lists.clone()
    }

    /// Whether the handshake is done (the server is visible to clients).
    pub(crate) fn is_ready(&self) -> bool {
        lock(&self.offer).lists.is_some()
    }

    /// Makes the server visible with the handshake's lists; returns the lists announced as
    /// changed meanwhile, which need a refresh.
    pub(crate) fn set_lists(&self, lists: Lists) -> Vec<ListKind> {
        let mut offer = lock(&self.offer);
        offer.lists = Some(lists);
        std::mem::take(&mut offer.dirty)
    }

    /// A `list_changed` arrived: returns a refresh ticket, or `None` during the handshake (the
    /// kind is refreshed when the handshake is done).
    pub(crate) fn list_changed(&self, kind: ListKind) -> Option<u64> {
        let mut offer = lock(&self.offer);
        if offer.lists.is_none() {
            if !offer.dirty.contains(&kind) {
                offer.dirty.push(kind);
            }
            return None;
        }
        let slot = &mut offer.refreshes[ListKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)];
        *slot += 1;
        Some(*slot)
    }

    /// Replaces one list after the refresh with `ticket`, unless a newer refresh has started
    /// (its answer is newer). Returns whether the list was replaced.
    pub(crate) fn set_list(&self, kind: ListKind, items: Vec<Value>, ticket: u64) -> bool {
        let mut offer = lock(&self.offer);
        let newest = offer.refreshes[ListKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)];
        match offer.lists.as_mut() {
            Some(lists) if ticket == newest => {
                *kind.items_mut(lists) = items;
                true
            }
            _ => false,
        }
    }

    /// Called before a client's request goes to the server: true when the server last got
    /// another session's roots and must be told that the roots changed.
    pub(crate) fn roots_change_for(&self, session: &str) -> bool {
        let mut offer = lock(&self.offer);
        match &offer.roots_from {
            Some(owner) if owner != session => {
                offer.roots_from = None;
                true
            }
            _ => false,
        }
    }

    /// Records which session answered the server's `roots/list`.
    pub(crate) fn roots_answered_by(&self, session: &str) {
        lock(&self.offer).roots_from = Some(session.to_string());
    }

    /// Whether the server declared a capability in its `initialize` result.
    pub(crate) fn has_capability(&self, name: &str) -> bool {
        lock(&self.offer).initialize["capabilities"].get(name).is_some()
    }

    pub(crate) fn set_initialize(&self, result: Value) {
        lock(&self.offer).initialize = result;
    }

    pub(crate) fn initialize_result(&self) -> Value {
        lock(&self.offer).initialize.clone()
    }

    /// Sends a request with a gateway-minted id and waits for the answer. Progress from the
    /// server restarts the wait; on timeout the server gets `notifications/cancelled`.
    pub(crate) fn request(
        &self,
        registry: &Registry,
        method: &str,
        params: Value,
        timeout: Duration,
        origin: Option<Origin>,
    ) -> Result<Value, Failure> {
        let id = registry.mint_id();
        let (params, origin) = rewrite_progress_token(id, params, origin);
        let rx = self.open_slot(id, origin)?;
        let msg = jsonrpc::request(id, method, params);
        if let Err(e) = self.send(&msg) {
            self.take_slot(id);
            return Err(match e {
                SendError::Full => Failure::Busy,
                SendError::Closed => Failure::Gone("the server's connection is closed".into()),
            });
        }
        let mut deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Reply::Done(Ok(result))) => return Ok(result),
                Ok(Reply::Done(Err(error))) => return Err(Failure::Error(error)),
                Ok(Reply::Progress) => deadline = Instant::now() + timeout,
                Ok(Reply::Gone(why)) => return Err(Failure::Gone(why)),
                Ok(Reply::Cancelled) => return Err(Failure::Cancelled),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Failure::Gone("the request was dropped".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.take_slot(id).is_none() {
                        continue; // answered in the meantime: the reply is in the channel
                    }
                    self.cancel(id, "timed out at the gateway");
                    return Err(Failure::Timeout(timeout));
                }
            }
        }
    }

    fn open_slot(&self, id: u64, origin: Option<Origin>) -> Result<Receiver<Reply>, Failure> {
        let (tx, rx) = mpsc::channel();
        let mut pending = lock(&self.pending);
        if let Some(why) = &pending.closed {
            return Err(Failure::Gone(why.clone()));
        }
        pending.slots.insert(id, Slot { reply: tx, origin });
        Ok(rx)
    }

    fn take_slot(&self, id: u64) -> Option<Slot> {
        lock(&self.pending).slots.remove(&id)
    }

    /// Sends a notification to the server.
    pub(crate) fn notify(&self, method: &str, params: Option<Value>) {
        let mut note = serde_json::json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            note["params"] = p;
        }
        let _ = self.send(&note);
    }

    /// Answers a request the server made (to the gateway or, through it, to a client).
    pub(crate) fn answer(&self, edge_id: &Value, outcome: Result<Value, Value>) {
        let msg = match outcome {
            Ok(result) => jsonrpc::result_response(edge_id, result),
            Err(error) => serde_json::json!({"jsonrpc": "2.0", "id": edge_id, "error": error}),
        };
        let _ = self.send(&msg);
    }

    /// The client request most recently sent to this server that is still in flight: where a
    /// server-to-client request is routed (over stdio the server cannot say which request
    /// caused it; the newest is the best guess, and the only one when calls do not overlap).
    pub(crate) fn latest_origin(&self) -> Option<Origin> {
        let pending = lock(&self.pending);
        pending.slots.iter().filter(|(_, s)| s.origin.is_some()).max_by_key(|(id, _)| **id)?.1.origin.clone()
    }

    /// Sends a request whose answer nobody waits for (the answer is dropped as unknown).
    pub(crate) fn fire(&self, method: &str, params: Value, id: u64) {
        let _ = self.send(&jsonrpc::request(id, method, params));
    }

    /// Tells the server to stop working on request `id`.
    pub(crate) fn cancel(&self, id: u64, reason: &str) {
        let note = jsonrpc::notification(
            "notifications/cancelled",
            serde_json::json!({"requestId": id, "reason": reason}),
        );
        let _ = self.send(&note);
    }

    /// Routes a response from the server to the thread waiting for it. Returns false when no
    /// request with that id is pending (late, after a timeout, or never sent).
    pub(crate) fn complete(&self, id: &Value, outcome: Result<Value, Value>) -> bool {
        let Some(slot) = id.as_u64().and_then(|id| self.take_slot(id)) else { return false };
        let _ = slot.reply.send(Reply::Done(outcome));
        true
    }

    /// Finds the client request behind a progress token we minted, and restarts its wait.
    pub(crate) fn progress(&self, token: &Value) -> Option<Origin> {
        let pending = lock(&self.pending);
        let slot = pending.slots.get(&token.as_u64()?)?;
        let _ = slot.reply.send(Reply::Progress);
        slot.origin.clone()
    }

    /// Cancels the pending request that `client_id` of `session` is waiting on, if it is one of
    /// this server's: the server is told, and the waiting thread sends no answer.
    pub(crate) fn cancel_for(&self, session: &Session, client_id: &Value) -> bool {
        let reason = "cancelled by the client";
        self.cancel_where(|o| o.session.id == session.id && &o.client_id == client_id, reason) > 0
    }

    /// Cancels every pending request of a session that ended. Returns how many there were.
    pub(crate) fn cancel_session(&self, session: &Session) -> usize {
        self.cancel_where(|o| o.session.id == session.id, "the client's session ended")
    }

    fn cancel_where(&self, matches: impl Fn(&Origin) -> bool, reason: &str) -> usize {
        let slots: Vec<(u64, Slot)> = {
            let mut pending = lock(&self.pending);
            let ids: Vec<u64> = pending
                .slots
                .iter()
                .filter(|(_, slot)| slot.origin.as_ref().is_some_and(&matches))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| pending.slots.remove(&id).map(|s| (id, s))).collect()
        };
        for (id, slot) in &slots {
            let _ = slot.reply.send(Reply::Cancelled);
            self.cancel(*id, reason);
        }
        slots.len()
    }

    /// Marks the link closed and fails every pending request at once with `why`.
    pub(crate) fn fail_all(&self, why: &str) -> usize {
        let slots = {
            let mut pending = lock(&self.pending);
            pending.closed = Some(why.to_string());
            std::mem::take(&mut pending.slots)
        };
        let n = slots.len();
        for (_, slot) in slots {
            let _ = slot.reply.send(Reply::Gone(why.to_string()));
        }
        n
    }
}

/// Replaces the client's progress token (in `params._meta.progressToken`) with the gateway-unique
/// request id, keeping the client's token in the origin so progress can be mapped back. Two
/// clients that picked the same token can then never see each other's progress.
fn rewrite_progress_token(id: u64, mut params: Value, origin: Option<Origin>) -> (Value, Option<Origin>) {
    let Some(mut origin) = origin else { return (params, None) };
    if let Some(token) = params.pointer_mut("/_meta/progressToken") {
        origin.progress_token = Some(std::mem::replace(token, Value::from(id)));
    }
    (params, Some(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::auth::Credential;
    use crate::gateway::session::{Kind, Scope};

    #[test]
    fn progress_tokens_are_replaced_by_the_request_id_and_kept_for_the_way_back() {
        let session = Arc::new(Session::new("s".into(), Kind::Streamable, Scope::All, Credential::Open));
        let origin =
            Origin { session, client_id: serde_json::json!(7), progress_token: None, reply_to: None };
        let params = serde_json::json!({"name": "t", "_meta": {"progressToken": "mine", "other": 1}});
        let (params, origin) = rewrite_progress_token(42, params, Some(origin));
        assert_eq!(params["_meta"], serde_json::json!({"progressToken": 42, "other": 1}));
        assert_eq!(origin.unwrap().progress_token, Some(serde_json::json!("mine")));
        // Without a token nothing changes; without an origin (the gateway's own requests) neither.
        let (p, o) = rewrite_progress_token(43, serde_json::json!({"a": 1}), None);
        assert_eq!((p, o.is_none()), (serde_json::json!({"a": 1}), true));
    }
}
