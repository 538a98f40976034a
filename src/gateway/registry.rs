//! The gateway's only shared state: registered servers by name, client sessions by id, each
//! server's table of pending requests, and the aggregated catalog built from them.
//!
//! Every lock here is taken in a short block and never held across I/O: a send into a channel
//! (`Outbox`, a session queue, a reply slot) never blocks. Entries are removed by the thread
//! that owns them when it ends, whatever the reason (`SessionGuard` on drop; the upstream owner
//! after its loop), and a server that goes away fails its pending requests at once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::catalog::Catalog;
use crate::jsonrpc;
use crate::ws::{Out, Outbox, SendError};

/// Locks a mutex, recovering the data if a thread panicked while holding it: one bad
/// connection must not wedge the gateway (`panic = "unwind"` is kept for this).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// All shared state of one gateway.
pub(crate) struct Registry {
    servers: Mutex<BTreeMap<String, Arc<Upstream>>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    catalog: Mutex<Arc<Catalog>>,
    next_id: AtomicU64,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            servers: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(HashMap::new()),
            catalog: Mutex::new(Arc::new(Catalog::build(&[]))),
            next_id: AtomicU64::new(1),
        }
    }

    /// A gateway-unique number for upstream request ids and progress tokens.
    pub(crate) fn mint_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- servers ----

    /// Claims `name` for `up`. The same server id replaces its stale connection (returned, so the
    /// caller can close it); a different live id keeps the name and the claim fails with its id.
    pub(crate) fn claim_name(&self, up: &Arc<Upstream>) -> Result<Option<Arc<Upstream>>, String> {
        let mut servers = lock(&self.servers);
        if let Some(old) = servers.get(&up.name) {
            if old.id != up.id {
                return Err(old.id.clone());
            }
        }
        Ok(servers.insert(up.name.clone(), up.clone()))
    }

    /// Removes `up` if it still holds its name (a replacement may hold it already).
    /// Returns whether it was removed.
    pub(crate) fn release_name(&self, up: &Arc<Upstream>) -> bool {
        let mut servers = lock(&self.servers);
        match servers.get(&up.name) {
            Some(cur) if Arc::ptr_eq(cur, up) => servers.remove(&up.name).is_some(),
            _ => false,
        }
    }

    /// A snapshot of the registered servers, in name order.
    pub(crate) fn servers(&self) -> Vec<Arc<Upstream>> {
        lock(&self.servers).values().cloned().collect()
    }

    pub(crate) fn server(&self, name: &str) -> Option<Arc<Upstream>> {
        lock(&self.servers).get(name).cloned()
    }

    /// Rebuilds the aggregated catalog from the ready servers. Returns whether the tool list
    /// changed (so that clients are told).
    pub(crate) fn rebuild_catalog(&self) -> bool {
        let ready: Vec<(String, Vec<Value>)> =
            self.servers().iter().filter_map(|s| s.tools().map(|t| (s.name.clone(), t))).collect();
        let new = Arc::new(Catalog::build(&ready));
        let mut cur = lock(&self.catalog);
        let changed = cur.tools != new.tools;
        *cur = new;
        changed
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        lock(&self.catalog).clone()
    }

    // ---- sessions ----

    /// Adds a session; dropping the returned guard removes it again.
    pub(crate) fn add_session(self: &Arc<Self>, session: Arc<Session>) -> SessionGuard {
        lock(&self.sessions).insert(session.id.clone(), session.clone());
        SessionGuard { registry: self.clone(), session }
    }

    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    pub(crate) fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Sends a notification to every initialized session.
    pub(crate) fn broadcast(&self, msg: &Value) {
        let sessions: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in sessions.iter().filter(|s| s.is_initialized()) {
            s.send(msg.clone());
        }
    }
}

/// Removes its session from the registry when dropped, whatever ended the session's thread.
pub(crate) struct SessionGuard {
    registry: Arc<Registry>,
    pub session: Arc<Session>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.registry.sessions).remove(&self.session.id);
        self.session.close();
        // Nobody is left to read the answers: the servers may stop working on them.
        let cancelled: usize =
            self.registry.servers().iter().map(|up| up.cancel_session(&self.session)).sum();
        if cancelled > 0 {
            log::info!("session {}: cancelled {cancelled} requests still in flight", self.session.id);
        }
    }
}

/// A client session: where the gateway's messages to one client go, and what it negotiated.
pub(crate) struct Session {
    pub id: String,
    queue: Mutex<Option<SyncSender<Value>>>,
    state: Mutex<SessionState>,
}

#[derive(Default, Clone)]
pub(crate) struct SessionState {
    pub protocol_version: Option<String>,
    pub initialized: bool,
    pub client_capabilities: Value,
}

/// How many messages may wait for a slow client before its session is dropped.
pub(crate) const SESSION_QUEUE: usize = 1024;

impl Session {
    /// A session and the receiving end of its message queue (read by its stream writer).
    pub(crate) fn new(id: String) -> (Arc<Session>, Receiver<Value>) {
        let (tx, rx) = mpsc::sync_channel(SESSION_QUEUE);
        let s = Session { id, queue: Mutex::new(Some(tx)), state: Mutex::new(SessionState::default()) };
        (Arc::new(s), rx)
    }

    /// Queues a message for the client. A client too slow to keep up loses its session (its
    /// stream ends), never the gateway's memory. Returns whether the message was queued.
    pub(crate) fn send(&self, msg: Value) -> bool {
        let mut queue = lock(&self.queue);
        let Some(tx) = queue.as_ref() else { return false };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                log::warn!("session {}: client is not reading its stream; closing the session", self.id);
                *queue = None;
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                *queue = None;
                false
            }
        }
    }

    /// Ends the session's stream: its writer sees the queue close.
    pub(crate) fn close(&self) {
        *lock(&self.queue) = None;
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut SessionState)) {
        f(&mut lock(&self.state));
    }

    pub(crate) fn is_initialized(&self) -> bool {
        lock(&self.state).initialized
    }
}

/// A registered edge server, as seen by every thread: identity, the queue to its socket's owner,
/// what it offers, and its pending requests.
pub(crate) struct Upstream {
    pub name: String,
    pub id: String,
    pub remote: SocketAddr,
    pub since: SystemTime,
    pub outbox: Outbox,
    offer: Mutex<Offer>,
    pending: Mutex<Pending>,
}

/// What a server offers, filled in by the registration handshake.
#[derive(Default)]
struct Offer {
    /// `None` until the handshake has listed the tools: the server is not visible before.
    tools: Option<Vec<Value>>,
    initialize: Value,
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
            outbox,
            offer: Mutex::new(Offer::default()),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The server's tools, once the handshake has listed them.
    pub(crate) fn tools(&self) -> Option<Vec<Value>> {
        lock(&self.offer).tools.clone()
    }

    pub(crate) fn set_tools(&self, tools: Vec<Value>) {
        lock(&self.offer).tools = Some(tools);
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
        if let Err(e) = self.outbox.send(Out::Text(msg.to_string())) {
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
                Err(_) => {
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

    /// Tells the server to stop working on request `id`.
    pub(crate) fn cancel(&self, id: u64, reason: &str) {
        let note = jsonrpc::notification(
            "notifications/cancelled",
            serde_json::json!({"requestId": id, "reason": reason}),
        );
        let _ = self.outbox.send(Out::Text(note.to_string()));
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
