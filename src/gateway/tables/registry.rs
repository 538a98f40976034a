//! The gateway's shared tables: registered servers by name together with the aggregated catalog
//! built from them, and client sessions by id.
//!
//! The servers and the catalog sit behind one lock, and the catalog changes only together with
//! the servers' table: a server's lists enter it only while that server's link holds its name,
//! and leave it when the name is released, so whatever order registrations, refreshes and
//! disconnections take, no vanished server's tools stay listed. Each change costs work in
//! proportion to that server's own lists. A name, and the server id behind it, belong to the
//! credential that registered them. Locks are taken in short blocks and never held across I/O.
//! What belongs to one link (its pending requests, subscriptions, log levels) is not here: it is
//! the link owner's (`link.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::gateway::access::Access;
use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::config::Config;
use crate::gateway::credential::Holder;
use crate::gateway::error::Error;
use crate::gateway::link::lists::{Item, ListKind, Lists};
use crate::gateway::tables::catalog::{Catalog, Ignored};
use crate::gateway::tables::server::Upstream;

/// Sessions one client may hold unless `--max-sessions-per-client` says otherwise.
const DEFAULT_SESSIONS_PER_CLIENT: usize = 256;
use crate::thread::lock;

/// All shared state of one gateway.
pub(crate) struct Registry {
    servers: Mutex<Servers>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The policies: a server's changes are told only to the clients that may see it.
    access: Arc<Access>,
}

#[derive(Default)]
struct Servers {
    by_name: BTreeMap<String, Arc<Upstream>>,
    /// The name each live link holds, by the link's serial (answers to server requests name it).
    by_serial: HashMap<u64, String>,
    catalog: Catalog,
    next_serial: u64,
}

/// Why a name could not be claimed.
#[derive(Debug, PartialEq)]
pub(crate) enum Refusal {
    /// Another live server (another id) holds it.
    Taken,
    /// The same id holds it, under another credential: an id alone never takes a name over.
    NotYours,
}

impl Registry {
    /// `bare`: the catalog exposes names unprefixed where they are free (`--aggregate-names`).
    pub(crate) fn new(access: Arc<Access>, bare: bool) -> Self {
        let servers = Servers { catalog: Catalog::new(bare), ..Servers::default() };
        Registry { servers: Mutex::new(servers), sessions: Mutex::new(HashMap::new()), access }
    }

    /// Whether the client of `session` may see `server` under the policy in force.
    fn sees(&self, session: &Session, server: &str) -> bool {
        self.access.grant(&session.principal).sees_server(server)
    }

    // ---- servers ----

    /// A number unique for the gateway's life, for a new link.
    pub(crate) fn next_serial(&self) -> u64 {
        let mut servers = lock(&self.servers);
        servers.next_serial += 1;
        servers.next_serial
    }

    /// Claims `up`'s name. The same server id with the same credential replaces its stale
    /// connection (returned, so the caller can close it; its lists leave the catalog now); a
    /// different live id keeps the name, and so does the same id under another credential.
    pub(crate) fn claim_name(&self, up: &Arc<Upstream>) -> Result<Option<Arc<Upstream>>, Refusal> {
        let (old, changed) = {
            let mut servers = lock(&self.servers);
            if let Some(old) = servers.by_name.get(&up.name) {
                if old.id != up.id {
                    return Err(Refusal::Taken);
                }
                if old.credential != up.credential {
                    return Err(Refusal::NotYours);
                }
            }
            let old = servers.by_name.insert(up.name.clone(), up.clone());
            if let Some(old) = &old {
                servers.by_serial.remove(&old.serial);
            }
            servers.by_serial.insert(up.serial, up.name.clone());
            let changed = if old.is_some() { servers.catalog.remove(&up.name) } else { Vec::new() };
            (old, changed)
        };
        self.tell_changed(&up.name, &changed);
        Ok(old)
    }

    /// Removes `up` if it still holds its name (a replacement may hold it already), with its
    /// lists. Returns whether it was removed.
    pub(crate) fn release_name(&self, up: &Arc<Upstream>) -> bool {
        let changed = {
            let mut servers = lock(&self.servers);
            match servers.by_name.get(&up.name) {
                Some(cur) if Arc::ptr_eq(cur, up) => {
                    servers.by_name.remove(&up.name);
                    servers.by_serial.remove(&up.serial);
                    Some(servers.catalog.remove(&up.name))
                }
                _ => None,
            }
        };
        let removed = changed.is_some();
        self.tell_changed(&up.name, &changed.unwrap_or_default());
        removed
    }

    /// Makes `up` visible with its lists, if its link still holds its name. The `initialize`
    /// result is serialized before the lock is taken, and what could not be exposed is told after
    /// it is released: under it, only tables change.
    pub(crate) fn offer(&self, up: &Arc<Upstream>, initialize: Value, lists: Lists) {
        let lists = Arc::new(lists);
        let initialize = initialize.to_string().into_boxed_str();
        let (changed, ignored) = {
            let mut servers = lock(&self.servers);
            up.set_ready(initialize, lists.clone());
            match servers.by_name.get(&up.name) {
                Some(cur) if Arc::ptr_eq(cur, up) => servers.catalog.put(up.serial, &up.name, lists),
                _ => Default::default(),
            }
        };
        tell_ignored(&up.name, ignored);
        self.tell_changed(&up.name, &changed);
    }

    /// Replaces one of `up`'s lists after a refresh, if its link still holds its name. The
    /// list's items are made (each serialized) before the lock is taken.
    pub(crate) fn update_list(&self, up: &Arc<Upstream>, kind: ListKind, items: Vec<Value>) {
        let items = Item::all(kind, &items);
        let (changed, ignored) = {
            let mut servers = lock(&self.servers);
            let lists = up.set_list(kind, items);
            match servers.by_name.get(&up.name) {
                Some(cur) if Arc::ptr_eq(cur, up) => servers.catalog.put_list(&up.name, kind, lists),
                _ => Default::default(),
            }
        };
        tell_ignored(&up.name, ignored);
        self.tell_changed(&up.name, &changed);
    }

    /// A snapshot of the registered servers, in name order.
    pub(crate) fn servers(&self) -> Vec<Arc<Upstream>> {
        lock(&self.servers).by_name.values().cloned().collect()
    }

    /// What operators and `list_servers` see of each registered server (`Upstream::summary`), with
    /// the names its tools are exposed under on the aggregated view, at most `tools` of them.
    pub(crate) fn summaries(&self, tools: usize) -> Vec<(Arc<Upstream>, Value)> {
        self.servers()
            .into_iter()
            .map(|up| {
                let mut summary = up.summary();
                let mut names = self.catalog(|c| c.exposed_for(&up.name));
                names.truncate(tools);
                summary["tools"] = Value::from(names);
                (up, summary)
            })
            .collect()
    }

    pub(crate) fn server(&self, name: &str) -> Option<Arc<Upstream>> {
        lock(&self.servers).by_name.get(name).cloned()
    }

    /// The live link with this serial, if it still holds its name.
    pub(crate) fn server_by_serial(&self, serial: u64) -> Option<Arc<Upstream>> {
        let servers = lock(&self.servers);
        let name = servers.by_serial.get(&serial)?;
        servers.by_name.get(name).cloned()
    }

    /// Tells the aggregated sessions that may see `server` which lists changed (one notification
    /// per list, however many kinds map to it; a session with one still unsent gets no second).
    fn tell_changed(&self, server: &str, changed: &[ListKind]) {
        let mut methods: Vec<&'static str> = Vec::new();
        for method in changed.iter().map(|k| k.changed_notification()) {
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        if methods.is_empty() {
            return;
        }
        let told = |s: &&Arc<Session>| s.scope == Scope::All && s.is_initialized() && self.sees(s, server);
        for s in self.sessions_snapshot().iter().filter(told) {
            for method in &methods {
                s.list_changed(method);
            }
        }
    }

    /// Reads the catalog under its lock.
    pub(crate) fn catalog<R>(&self, read: impl FnOnce(&Catalog) -> R) -> R {
        read(&lock(&self.servers).catalog)
    }

    // ---- sessions ----

    /// Adds a session unless the gateway holds `--max-sessions` sessions or its holder (token,
    /// or address) `--max-sessions-per-client`: checked and added under one lock, so bursts
    /// cannot slip past. At a cap, the Streamable HTTP session unused the longest (for half its
    /// `--session-timeout` at least, a minute at most, with no call in flight and no stream open;
    /// the holder's own, at its cap) is ended to make room, as idle connections are. The guard
    /// returned ends the session when dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        session: Arc<Session>,
        cfg: &Config,
    ) -> Result<SessionGuard, Error> {
        let (max_total, max_each) = (cfg.max_sessions, cfg.max_sessions_per_client);
        let grace = (cfg.session_timeout / 2).min(EVICTION_GRACE);
        let evicted = {
            let mut sessions = lock(&self.sessions);
            // The default exempts loopback: a reverse proxy on this host brings everyone from there.
            let max_each = match (max_each, session.holder) {
                (Some(n), _) => Some(n),
                (None, Holder::Address(ip)) if ip.is_loopback() => None,
                (None, _) => Some(DEFAULT_SESSIONS_PER_CLIENT),
            };
            let mut evicted = Vec::new();
            if let Some(max) = max_each {
                let held = sessions.values().filter(|s| s.holder == session.holder).count();
                if held >= max {
                    match evict_idlest(&mut sessions, Some(session.holder), grace) {
                        Some(gone) => evicted.push(gone),
                        None => return Err(Error::TooManySessionsHeld(held)),
                    }
                }
            }
            if sessions.len() >= max_total {
                match evict_idlest(&mut sessions, None, grace) {
                    Some(gone) => evicted.push(gone),
                    None => return Err(Error::TooManySessions),
                }
            }
            sessions.insert(session.id.clone(), session.clone());
            evicted
        };
        for gone in evicted {
            log::info!(
                "session {}: ended, unused for {:?}, to make room",
                gone.id,
                gone.idle_since().elapsed()
            );
            gone.end();
        }
        Ok(SessionGuard { ends: Ends::Registry(self.clone()), session })
    }

    /// Ends a session: its stream closes and the servers drop what they hold for it.
    pub(crate) fn remove_session(&self, id: &str) -> bool {
        let Some(session) = lock(&self.sessions).remove(id) else { return false };
        let calls = session.calls_in_flight();
        session.end();
        if calls > 0 {
            log::info!("session {id}: ended; cancelled {calls} requests still in flight");
        }
        true
    }

    /// Ends every session's stream (at shutdown: SSE clients see their stream end).
    pub(crate) fn end_streams(&self) {
        for s in self.sessions_snapshot() {
            s.detach_stream();
        }
    }

    /// Ends Streamable HTTP sessions unused for longer than `max_idle` (no request, no call in
    /// flight, no stream open: a client listening on its `GET` stream is using its session);
    /// returns how many.
    pub(crate) fn expire_sessions(&self, max_idle: Duration) -> usize {
        let idle: Vec<String> =
            lock(&self.sessions).values().filter(|s| unused_for(s, max_idle)).map(|s| s.id.clone()).collect();
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

    /// Open sessions as (legacy SSE, Streamable HTTP).
    pub(crate) fn session_kinds(&self) -> (u64, u64) {
        let sessions = lock(&self.sessions);
        let legacy = sessions.values().filter(|s| s.kind == Kind::LegacySse).count() as u64;
        (legacy, sessions.len() as u64 - legacy)
    }

    /// Sends a notification to every initialized session with this scope.
    pub(crate) fn broadcast(&self, scope: &Scope, msg: &Value) {
        let sessions = self.sessions_snapshot();
        let sees = |s: &Session| match scope {
            Scope::Server(name) => self.sees(s, name),
            Scope::All => true,
        };
        for s in sessions.iter().filter(|s| &s.scope == scope && s.is_initialized() && sees(s)) {
            s.send(msg.clone());
        }
    }
}

/// Logs, once per change, what a server listed that could not be exposed.
fn tell_ignored(server: &str, ignored: Ignored) {
    if ignored.unnamed > 0 {
        log::warn!("server {server}: ignoring {} list items without a name", ignored.unnamed);
    }
    if ignored.colliding > 0 {
        log::warn!("server {server}: {} names collide even after hashing; not exposed", ignored.colliding);
    }
}

/// How long a Streamable HTTP session must have been unused, at most, before it may be ended to
/// make room for a new one (at `--max-sessions`, or its holder's `--max-sessions-per-client`);
/// half the session timeout when that is shorter.
pub(crate) const EVICTION_GRACE: Duration = Duration::from_secs(60);

/// Whether a session may be ended for being unused: a Streamable HTTP session with no request
/// for `max_idle`, no call in flight and no stream open (legacy SSE and 2026-07-28 streams live
/// as long as their connection).
fn unused_for(s: &Session, max_idle: Duration) -> bool {
    s.kind == Kind::Streamable
        && s.idle_since().elapsed() > max_idle
        && s.calls_in_flight() == 0
        && !s.has_stream()
}

/// Takes out of the table the session unused the longest past `grace` (of `holder`, when
/// given), for the caller to end once the lock is released.
fn evict_idlest(
    sessions: &mut HashMap<String, Arc<Session>>,
    holder: Option<Holder>,
    grace: Duration,
) -> Option<Arc<Session>> {
    let id = sessions
        .values()
        .filter(|s| holder.is_none_or(|h| s.holder == h) && unused_for(s, grace))
        .min_by_key(|s| s.idle_since())
        .map(|s| s.id.clone())?;
    sessions.remove(&id)
}

/// Ends its session when dropped, whatever ended the thread that holds it; `keep` hands the
/// session to the registry for good (a Streamable HTTP session once `initialize` succeeded, then
/// ended by `DELETE`, expiry or eviction).
pub(crate) struct SessionGuard {
    ends: Ends,
    pub session: Arc<Session>,
}

/// How a guarded session ends.
enum Ends {
    /// Removed from the registry (which ends it).
    Registry(Arc<Registry>),
    /// Ended here: a session the registry never held (a 2026-07-28 request's own context).
    Alone,
    /// Not by the guard.
    Kept,
}

impl SessionGuard {
    /// A guard for a session no table holds: it ends with the guard.
    pub(crate) fn unlisted(session: Arc<Session>) -> SessionGuard {
        SessionGuard { ends: Ends::Alone, session }
    }

    /// Leaves the session to the registry: the guard no longer ends it.
    pub(crate) fn keep(&mut self) {
        self.ends = Ends::Kept;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        match &self.ends {
            Ends::Registry(registry) => {
                registry.remove_session(&self.session.id);
            }
            Ends::Alone => self.session.end(),
            Ends::Kept => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::link::lists::Item;
    use serde_json::json;

    /// A refresh costs the one list it read: the server's record and the catalog share the new
    /// lists (one copy, not two), and the lists it did not read are the same as before.
    #[test]
    fn a_refreshed_list_is_shared_and_the_others_are_not_copied() {
        let access = Access::new(&Config::default(), None).unwrap();
        let reg = Registry::new(Arc::new(access), false);
        let (commands, _inbox) = crate::ws::bounded_within(8, 1024, None).unwrap();
        let remote = "127.0.0.1:1".parse().unwrap();
        let up = Arc::new(Upstream::new(
            "pi".into(),
            "pi-1".into(),
            crate::gateway::credential::Credential::Open,
            1,
            remote,
            commands,
        ));
        assert!(reg.claim_name(&up).is_ok());
        let lists = Lists {
            tools: Item::all(ListKind::Tools, &[json!({"name": "a"})]),
            prompts: Item::all(ListKind::Prompts, &[json!({"name": "p"})]),
            ..Lists::default()
        };
        reg.offer(&up, json!({}), lists);
        let before = up.lists();
        reg.update_list(&up, ListKind::Tools, vec![json!({"name": "b"})]);
        let theirs = up.lists();
        let catalog = lock(&reg.servers).catalog.lists_of("pi").expect("pi is in the catalog");
        assert!(Arc::ptr_eq(&theirs, &catalog), "the server and the catalog hold one copy");
        assert_eq!(theirs.tools.iter().map(Item::value).collect::<Vec<_>>(), [json!({"name": "b"})]);
        assert!(Arc::ptr_eq(&theirs.prompts, &before.prompts), "the prompts were not copied");
        assert_eq!(lock(&reg.servers).catalog.route("pi_b"), Some(("pi", "b")));
    }
}
