//! The gateway's shared state: registered servers by name, client sessions by id, the
//! aggregated catalog built from the servers, server-to-client requests awaiting answers, and
//! resource subscriptions. (Each server's own pending requests live in `server.rs`.)
//!
//! Every lock here is taken in a short block and never held across I/O: a send into a channel
//! (`Outbox`, a session queue, a reply slot) never blocks. Entries are removed by the thread
//! that owns them when it ends, whatever the reason (`SessionGuard` on drop; the upstream owner
//! after its loop), and a server that goes away fails its pending requests at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::thread::lock;

use serde_json::Value;

use super::catalog::{Catalog, ListKind, Lists};
use super::server::Upstream;
use super::session::{Kind, Scope, Session};
use crate::jsonrpc::{self, INTERNAL_ERROR, METHOD_NOT_FOUND};
use crate::protocol::severity;

/// All shared state of one gateway.
pub(crate) struct Registry {
    servers: Mutex<BTreeMap<String, Arc<Upstream>>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    catalog: Mutex<Arc<Catalog>>,
    /// Requests from servers to clients, by the id the gateway gave them.
    to_clients: Mutex<HashMap<u64, ToClient>>,
    /// Resource subscriptions: which session asked which server about which URI.
    subscriptions: Mutex<Vec<Subscription>>,
    next_id: AtomicU64,
}

#[derive(Clone, PartialEq)]
struct Subscription {
    session_id: String,
    server: String,
    uri: String,
}

/// A server's request forwarded to a client, waiting for the client's answer.
struct ToClient {
    upstream: Arc<Upstream>,
    edge_id: Value,
    session_id: String,
    method: String,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            servers: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(HashMap::new()),
            catalog: Mutex::new(Arc::new(Catalog::build(&[]))),
            to_clients: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(Vec::new()),
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

    /// Rebuilds the aggregated catalog from the ready servers. Returns the lists that changed
    /// (so that clients are told).
    pub(crate) fn rebuild_catalog(&self) -> Vec<ListKind> {
        let ready: Vec<(String, Lists)> =
            self.servers().iter().filter_map(|s| s.lists().map(|l| (s.name.clone(), l))).collect();
        let new = Arc::new(Catalog::build(&ready));
        let mut cur = lock(&self.catalog);
        let changed =
            ListKind::ALL.into_iter().filter(|k| k.items(&cur.lists) != k.items(&new.lists)).collect();
        *cur = new;
        changed
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        lock(&self.catalog).clone()
    }

    // ---- sessions ----

    /// Adds a session; dropping the returned guard removes it again.
    pub(crate) fn add_session(self: &Arc<Self>, session: Arc<Session>) -> SessionGuard {
        self.insert_session(session.clone());
        SessionGuard { registry: self.clone(), session }
    }

    /// Adds a session that lives until `remove_session` (Streamable HTTP: DELETE or expiry).
    pub(crate) fn insert_session(&self, session: Arc<Session>) {
        lock(&self.sessions).insert(session.id.clone(), session);
    }

    /// Ends a session: its stream closes and the servers stop working on its requests.
    pub(crate) fn remove_session(&self, id: &str) -> bool {
        let Some(session) = lock(&self.sessions).remove(id) else { return false };
        session.detach_stream();
        let orphans: Vec<ToClient> = {
            let mut to_clients = lock(&self.to_clients);
            let ids: Vec<u64> =
                to_clients.iter().filter(|(_, t)| t.session_id == id).map(|(k, _)| *k).collect();
            ids.iter().filter_map(|k| to_clients.remove(k)).collect()
        };
        for t in orphans {
            let error =
                jsonrpc::error_object(INTERNAL_ERROR, "the client's session ended before it answered");
            t.upstream.answer(&t.edge_id, Err(error));
        }
        let subs: Vec<Subscription> =
            lock(&self.subscriptions).iter().filter(|s| s.session_id == id).cloned().collect();
        for s in subs {
            if self.unsubscribe(&session, &s.server, &s.uri) {
                if let Some(up) = self.server(&s.server) {
                    up.fire("resources/unsubscribe", serde_json::json!({"uri": s.uri}), self.mint_id());
                }
            }
        }
        // Nobody is left to read the answers: the servers may stop working on them.
        let cancelled: usize = self.servers().iter().map(|up| up.cancel_session(&session)).sum();
        if cancelled > 0 {
            log::info!("session {id}: cancelled {cancelled} requests still in flight");
        }
        true
    }

    /// Ends every session's stream (at shutdown: SSE clients see their stream end).
    pub(crate) fn end_streams(&self) {
        for s in self.sessions_snapshot() {
            s.detach_stream();
        }
    }

    /// Ends Streamable HTTP sessions idle for longer than `max_idle`; returns how many.
    pub(crate) fn expire_sessions(&self, max_idle: std::time::Duration) -> usize {
        let idle: Vec<String> = lock(&self.sessions)
            .values()
            .filter(|s| s.kind == Kind::Streamable && s.idle_since().elapsed() > max_idle)
            .map(|s| s.id.clone())
            .collect();
        idle.iter().filter(|id| self.remove_session(id)).count()
    }

    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    pub(crate) fn sessions_snapshot(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).values().cloned().collect()
    }

    pub(crate) fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Forwards a server's request (sampling, elicitation, roots) to the client whose request
    /// caused it, under a gateway-minted id, if that client declared the capability. Errors are
    /// (JSON-RPC code, message) for the server: -32601 for what no client can answer, -32603
    /// when no client request is in flight to attach it to.
    pub(crate) fn request_client(
        &self,
        up: &Arc<Upstream>,
        edge_id: Value,
        method: &str,
        params: Option<Value>,
    ) -> Result<(), (i64, String)> {
        let capability = match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            _ => return Err((METHOD_NOT_FOUND, format!("{method} cannot be routed to a client"))),
        };
        let Some(origin) = up.latest_origin() else {
            let why = format!("{method}: no client request of this server is in flight to send it to");
            return Err((INTERNAL_ERROR, why));
        };
        if origin.session.state().client_capabilities.get(capability).is_none() {
            let why = format!("{method}: the client did not declare the {capability} capability");
            return Err((METHOD_NOT_FOUND, why));
        }
        let id = self.mint_id();
        let entry = ToClient {
            upstream: up.clone(),
            edge_id,
            session_id: origin.session.id.clone(),
            method: method.into(),
        };
        lock(&self.to_clients).insert(id, entry);
        let mut request = jsonrpc::request(id, method, params.unwrap_or_else(|| serde_json::json!({})));
        if request["params"].is_null() {
            request["params"] = serde_json::json!({});
        }
        origin.send(request);
        Ok(())
    }

    /// Routes a client's answer to a server's request back to the server. False when the id is
    /// not one the gateway gave to this session.
    pub(crate) fn answer_from_client(
        &self,
        session: &Session,
        id: &Value,
        outcome: Result<Value, Value>,
    ) -> bool {
        let entry = {
            let mut to_clients = lock(&self.to_clients);
            match id.as_u64() {
                Some(k) if to_clients.get(&k).is_some_and(|t| t.session_id == session.id) => {
                    to_clients.remove(&k)
                }
                _ => None,
            }
        };
        let Some(t) = entry else { return false };
        if t.method == "roots/list" && outcome.is_ok() {
            t.upstream.roots_answered_by(&session.id);
        }
        t.upstream.answer(&t.edge_id, outcome);
        true
    }

    /// Records that `session` subscribed to `uri` on `server`. True when it is the first such
    /// subscription: only then does the server need to hear of it (it has one client, us).
    pub(crate) fn subscribe(&self, session: &Session, server: &str, uri: &str) -> bool {
        let mut subs = lock(&self.subscriptions);
        let first = !subs.iter().any(|s| s.server == server && s.uri == uri);
        let sub = Subscription { session_id: session.id.clone(), server: server.into(), uri: uri.into() };
        if !subs.contains(&sub) {
            subs.push(sub);
        }
        first
    }

    /// Removes a subscription. True when it was the last one for (server, uri): only then is
    /// the server told to stop.
    pub(crate) fn unsubscribe(&self, session: &Session, server: &str, uri: &str) -> bool {
        let mut subs = lock(&self.subscriptions);
        let before = subs.len();
        subs.retain(|s| !(s.session_id == session.id && s.server == server && s.uri == uri));
        before != subs.len() && !subs.iter().any(|s| s.server == server && s.uri == uri)
    }

    /// Sends a server's `notifications/resources/updated` to the sessions subscribed to the URI
    /// (or to a URI it lies under: "the uri might be a sub-resource of the one that the client
    /// actually subscribed to").
    pub(crate) fn resource_updated(&self, up: &Upstream, params: Value) {
        let uri = params["uri"].as_str().unwrap_or_default();
        let mut targets: Vec<String> = lock(&self.subscriptions)
            .iter()
            .filter(|s| s.server == up.name && uri.starts_with(s.uri.as_str()))
            .map(|s| s.session_id.clone())
            .collect();
        targets.dedup();
        let note = jsonrpc::notification("notifications/resources/updated", params);
        for id in targets {
            if let Some(session) = self.session(&id) {
                session.send(note.clone());
            }
        }
    }

    /// Forwards a server's log message. While a client request is in flight at the server, the
    /// message belongs to it (over stdio a server cannot say so; the newest request is the best
    /// guess) and goes to that client, on the request's own stream when it has one. Otherwise
    /// it goes to the sessions that asked for logs at this level with `logging/setLevel`. Never
    /// to anyone else: one client's logs are not another's business. On the aggregated view the
    /// server's name goes in front of the logger's.
    pub(crate) fn log_message(&self, up: &Upstream, params: &Value) {
        let level = severity(params["level"].as_str().unwrap_or("info"));
        let wants = |s: &Session| s.state().log_level.is_none_or(|min| level >= severity(&min));
        let note = |s: &Session| {
            let mut p = params.clone();
            if s.scope == Scope::All {
                p["logger"] = match params["logger"].as_str() {
                    Some(logger) => Value::String(format!("{}/{logger}", up.name)),
                    None => Value::String(up.name.clone()),
                };
            }
            jsonrpc::notification("notifications/message", p)
        };
        if let Some(origin) = up.latest_origin() {
            if wants(&origin.session) {
                origin.send(note(&origin.session));
            }
            return;
        }
        let own = Scope::Server(up.name.clone());
        let sessions = self.sessions_snapshot();
        for s in sessions.iter().filter(|s| s.scope == Scope::All || s.scope == own) {
            if s.state().log_level.is_some() && wants(s) {
                s.send(note(s));
            }
        }
    }

    /// Sends a notification to every initialized session with this scope.
    pub(crate) fn broadcast(&self, scope: &Scope, msg: &Value) {
        let sessions = self.sessions_snapshot();
        for s in sessions.iter().filter(|s| &s.scope == scope && s.is_initialized()) {
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
        self.registry.remove_session(&self.session.id);
    }
}
