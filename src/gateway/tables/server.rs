//! A registered edge server as every thread sees it: who it is, the queue of typed commands to
//! its link's owner thread, and what it offers (its `initialize` result and lists, published by
//! the owner once the handshake is done). Nothing here knows about the link's pending requests:
//! those belong to the owner thread alone (`link.rs`, driven by `upstream.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::Value;

use crate::gateway::clients::reply::Caller;
use crate::gateway::clients::session::LinkPort;
use crate::gateway::credential::Credential;
use crate::gateway::link::lists::{Item, ListKind, Lists};
use crate::gateway::link::Input;
use crate::jsonrpc::weight;
use crate::thread::lock;
use crate::ws::{Outbox, SendError, Weigh};

/// Session ends a link's owner may be behind on (past it, it is not draining its queue).
const MAX_ENDED: usize = 4096;

/// What other threads ask of a link's owner.
#[derive(Debug)]
pub(crate) enum Command {
    /// An input for the link's state machine.
    Link(Input<Caller>),
}

impl Weigh for Command {
    fn weight(&self) -> usize {
        match self {
            Command::Link(Input::Call(call)) => 128 + weight(&call.params),
            Command::Link(Input::ClientAnswer { outcome: Ok(v) | Err(v), .. }) => 64 + weight(v),
            Command::Link(Input::Notify { params, .. }) => 64 + params.as_ref().map_or(0, weight),
            Command::Link(_) => 64,
        }
    }
}

/// A registered edge server, as seen by every thread.
pub(crate) struct Upstream {
    pub name: String,
    pub id: String,
    /// Unique for the gateway's life: names this link in ids that must never reach another.
    pub serial: u64,
    /// The credential the edge registered with: only it may replace this link.
    pub credential: Credential,
    pub remote: SocketAddr,
    /// The edge that registered it and how that edge reaches it, as it said (status only).
    pub edge: Option<String>,
    pub transport: Option<&'static str>,
    pub since: SystemTime,
    last_seen: Mutex<SystemTime>,
    commands: Outbox<Command>,
    offer: Mutex<Offer>,
    /// Set to make the owner close the link (replaced, or the gateway is shutting down).
    closing: Mutex<Option<(u16, String)>>,
    /// Sessions that ended while the command queue was full, each with the queue's mark then:
    /// told to the link once everything queued before it was taken (so after what the session
    /// sent before it ended). Only sessions with a call the link took are told, each once; past
    /// `MAX_ENDED` waiting the owner is not draining its queue, and the link is closed.
    ended: Mutex<Vec<(String, u64)>>,
}

/// What a server offers, once its handshake is done. Its `initialize` result is kept as
/// compact JSON text, as its lists are (`lists::Item`): read when a client initializes, not
/// on every call.
#[derive(Default)]
struct Offer {
    ready: bool,
    initialize: Box<str>,
    lists: Arc<Lists>,
}

impl Offer {
    fn initialize(&self) -> Value {
        serde_json::from_str(&self.initialize).unwrap_or(Value::Null)
    }
}

impl Upstream {
    pub(crate) fn new(
        name: String,
        id: String,
        credential: Credential,
        serial: u64,
        remote: SocketAddr,
        commands: Outbox<Command>,
    ) -> Self {
        Upstream {
            name,
            id,
            credential,
            serial,
            remote,
            edge: None,
            transport: None,
            since: SystemTime::now(),
            last_seen: Mutex::new(SystemTime::now()),
            commands,
            offer: Mutex::new(Offer::default()),
            closing: Mutex::new(None),
            ended: Mutex::new(Vec::new()),
        }
    }

    /// Queues a command for the link's owner without waiting; on failure (the queue is full, or
    /// the link is gone) the command comes back.
    pub(crate) fn tell(&self, cmd: Command) -> Result<(), (SendError, Command)> {
        self.commands.offer(cmd)
    }

    /// Tells the link's owner that a session ended, never lost to a full queue: on the queue
    /// behind what the session sent before it, or, when the queue is full, noted with the
    /// queue's mark for the owner to take once what came before is taken (`ended_sessions`).
    /// Never waits.
    pub(crate) fn tell_ended(&self, session: &str) -> Result<(), SendError> {
        let input = Input::SessionEnded { session: session.into() };
        match self.commands.offer(Command::Link(input)) {
            Ok(()) => Ok(()),
            Err((SendError::Full, _)) => {
                let mark = self.commands.queued_mark();
                let mut ended = lock(&self.ended);
                if ended.len() >= MAX_ENDED {
                    drop(ended);
                    log::warn!("server {}: its link takes no commands; closing it", self.name);
                    self.close(1011, "the link's owner stopped taking commands");
                    return Ok(());
                }
                ended.push((session.to_string(), mark));
                drop(ended);
                self.commands.wake();
                Ok(())
            }
            Err((e, _)) => Err(e),
        }
    }

    /// Whether sessions that ended while the queue was full are ready to be told (what was
    /// queued before them was taken).
    pub(crate) fn ends_waiting(&self) -> bool {
        lock(&self.ended).first().is_some_and(|(_, mark)| self.commands.taken_past(*mark))
    }

    /// The sessions that ended while the queue was full and are ready to be told, in order (read
    /// by the owner).
    pub(crate) fn ended_sessions(&self) -> Vec<String> {
        let mut ended = lock(&self.ended);
        let ready = ended.iter().take_while(|(_, mark)| self.commands.taken_past(*mark)).count();
        ended.drain(..ready).map(|(session, _)| session).collect()
    }

    /// Asks the owner to close the link with this code and reason (never lost to a full queue).
    pub(crate) fn close(&self, code: u16, reason: &str) {
        *lock(&self.closing) = Some((code, reason.to_string()));
        self.commands.wake();
    }

    /// Whether the gateway asked the owner to close the link (replaced, or shutting down).
    pub(crate) fn closing(&self) -> bool {
        lock(&self.closing).is_some()
    }

    /// The close asked for, if any (read by the owner).
    pub(crate) fn close_requested(&self) -> Option<(u16, String)> {
        lock(&self.closing).clone()
    }

    /// Notes that the server just sent something.
    pub(crate) fn seen(&self) {
        *lock(&self.last_seen) = SystemTime::now();
    }

    /// What operators and `list_servers` see of the server.
    pub(crate) fn summary(&self) -> Value {
        let (ready, init, version, lists) = {
            let offer = lock(&self.offer);
            let mut initialize = offer.initialize();
            let version = initialize["protocolVersion"].as_str().map(str::to_string);
            (offer.ready, initialize["serverInfo"].take(), version, offer.lists.clone())
        };
        // Which era the gateway speaks to it (a modern edge's description names 2026-07-28).
        let era = match version.as_deref() {
            Some(v) if crate::protocol::is_modern(v) => "modern",
            Some(_) => "legacy",
            None => "unknown",
        };
        serde_json::json!({
            "name": self.name,
            "remote": self.remote.to_string(),
            "edge": self.edge,
            "transport": self.transport,
            "connectedSince": crate::logger::timestamp(self.since),
            "lastSeen": crate::logger::timestamp(*lock(&self.last_seen)),
            "ready": ready,
            "serverInfo": init,
            "era": era,
            "protocolVersion": version,
            "counts": {"tools": lists.tools.len(), "prompts": lists.prompts.len(),
                       "resources": lists.resources.len(), "resourceTemplates": lists.templates.len()},
        })
    }

    /// Whether the handshake is done (the server is visible to clients).
    pub(crate) fn is_ready(&self) -> bool {
        lock(&self.offer).ready
    }

    /// Makes the server visible with its `initialize` result (as compact JSON text) and lists
    /// (`Registry::offer`).
    pub(crate) fn set_ready(&self, initialize: Box<str>, lists: Arc<Lists>) {
        let mut offer = lock(&self.offer);
        offer.ready = true;
        offer.initialize = initialize;
        offer.lists = lists;
    }

    /// Replaces one list after a refresh; the server's lists as they are now, to share. The
    /// other lists are shared, not copied (`Lists` holds each behind an `Arc`).
    pub(crate) fn set_list(&self, kind: ListKind, items: Arc<Vec<Item>>) -> Arc<Lists> {
        let mut offer = lock(&self.offer);
        let mut lists = (*offer.lists).clone();
        *kind.items_mut(&mut lists) = items;
        offer.lists = Arc::new(lists);
        offer.lists.clone()
    }

    /// The lists clients see of this server.
    pub(crate) fn lists(&self) -> Arc<Lists> {
        lock(&self.offer).lists.clone()
    }

    pub(crate) fn initialize_result(&self) -> Value {
        lock(&self.offer).initialize()
    }

    /// The `inputSchema` of tool `name` as the server listed it.
    pub(crate) fn tool_schema(&self, name: &str) -> Option<Value> {
        let lists = lock(&self.offer).lists.clone();
        lists.tools.iter().find(|t| t.key() == Some(name)).map(|t| t.value()["inputSchema"].take())
    }
}

impl LinkPort for Upstream {
    fn serial(&self) -> u64 {
        self.serial
    }

    fn cancel(&self, session: &str, client_id: &Value) -> bool {
        let input = Input::Cancel { session: session.into(), client_id: client_id.clone() };
        self.tell(Command::Link(input)).is_ok()
    }

    fn session_ended(&self, session: &str) {
        if self.tell_ended(session).is_err() {
            log::debug!("session {session}: server {} is gone; nothing to tell it", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose command queue holds one command.
    fn upstream() -> (Upstream, crate::ws::Inbox<Command>) {
        let (commands, inbox) = crate::ws::bounded_within::<Command>(1, 1 << 20, None).unwrap();
        let remote = "127.0.0.1:1".parse().unwrap();
        (Upstream::new("pi".into(), "pi-1".into(), Credential::Open, 1, remote, commands), inbox)
    }

    /// A session's end is never lost to a full queue, and never overtakes what the session
    /// queued before it: it waits until the queue has drained.
    #[test]
    fn a_session_end_waits_out_a_full_queue_and_is_not_lost() {
        let (up, inbox) = upstream();
        up.tell(Command::Link(Input::Notify { method: "x".into(), params: None })).unwrap();
        up.tell_ended("s1").unwrap();
        assert!(
            !up.ends_waiting() && up.ended_sessions().is_empty(),
            "not while the queue holds what came first"
        );
        assert!(inbox.try_recv().is_ok());
        assert!(up.ends_waiting(), "what came first was taken");
        // Another item queued meanwhile (after the end) does not hold the end back.
        up.tell(Command::Link(Input::Notify { method: "y".into(), params: None })).unwrap();
        assert_eq!(up.ended_sessions(), ["s1"]);
        assert!(!up.ends_waiting());
        assert!(inbox.try_recv().is_ok());
        up.tell_ended("s2").unwrap();
        let Ok(Command::Link(Input::SessionEnded { session })) = inbox.try_recv() else {
            panic!("on the queue")
        };
        assert_eq!(session, "s2");
        drop(inbox);
        assert_eq!(up.tell_ended("s3"), Err(SendError::Closed));
    }

    /// An owner that never drains its queue is not owed session ends without bound: past
    /// `MAX_ENDED` the link is closed instead.
    #[test]
    fn an_owner_that_takes_nothing_is_closed_not_owed_forever() {
        let (up, _inbox) = upstream();
        up.tell(Command::Link(Input::Notify { method: "x".into(), params: None })).unwrap();
        for i in 0..MAX_ENDED + 10 {
            up.tell_ended(&format!("s{i}")).unwrap();
        }
        assert_eq!(lock(&up.ended).len(), MAX_ENDED);
        assert!(up.close_requested().is_some_and(|(code, _)| code == 1011));
    }
}
