//! One registered edge's link, as a sans-IO state machine: what the gateway asked the server and
//! for whom, what the server asked a client, who subscribed to what, and which log levels the
//! clients want. No sockets, threads, channels or clocks live here: the link's owner thread
//! (`upstream.rs`) feeds it inputs with the time, and carries out the actions it returns (send
//! this frame to the edge, answer that caller, notify that session, publish these lists).
//!
//! What makes it sound by construction:
//! - Everything about one link is in one struct owned by one thread, so an answer, a cancel and
//!   the link's end are handled in the order they arrived, never concurrently.
//! - Ids are minted per link (from a random base), and the tables die with the link, so nothing
//!   minted for one link's life can complete a request of another.
//! - Every client call ends in exactly one `Answer` action (the server's answer, an error, or no
//!   answer when the client cancelled), and its caller is moved into that action.
//! - A server's request to a client goes to the one session with calls in flight, or is refused:
//!   with several, it cannot be attributed, and it is never guessed.
//! - Every table is bounded in count, and every entry has a deadline or an owner that ends it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::gateway::credential::Holder;
use crate::gateway::error::Error;
use crate::jsonrpc::weight;
use crate::jsonrpc::{self, Message, INTERNAL_ERROR, METHOD_NOT_FOUND};
use crate::protocol::{severity, LATEST_VERSION, SUPPORTED_VERSIONS};
use eras::Era;
use lists::{Item, ListKind, Lists};
use state::Resume;

pub(crate) mod call;
pub(crate) mod eras;
mod listen;
pub(crate) mod lists;
mod relay;
pub(crate) mod state;
pub(crate) mod task_calls;
pub(crate) mod tasks;

pub(crate) use call::*;
use listen::{Announces, Listening};
use relay::Relay;
use task_calls::Leg;

/// The sans-IO link.
pub(crate) struct Link<D> {
    name: String,
    serial: u64,
    limits: Limits,
    next_id: u64,
    next_n: u64,
    phase: Phase,
    /// Which era the server speaks (known once the handshake or the probe is answered).
    era: Era,
    /// What a modern edge can notify, and the listen the link holds open at it (`link_listen.rs`).
    announces: Announces,
    listening: Listening,
    /// The server's `initialize` result, until the handshake hands it over (`Action::Ready`).
    initialize: Value,
    /// Whether the server declared `logging` (the one part of `initialize` the link keeps).
    logging: bool,
    handshake_lists: Lists,
    /// Per list kind: is a refresh running, and must it run again when done.
    refresh: [Refresh; 4],
    /// Requests sent to the server, by the id minted for them.
    requests: HashMap<u64, Pending<D>>,
    /// Client calls in flight, by (session, client id as JSON text): the minted id.
    by_client: HashMap<(SessionKey, String), u64>,
    /// Requests of the server awaiting a client's answer, by their number.
    server_requests: HashMap<u64, ServerRequest<D>>,
    deadlines: BTreeSet<(Instant, Slot)>,
    /// Who subscribed to which URI (the server hears the first subscribe and the last unsubscribe).
    subscriptions: BTreeMap<String, BTreeSet<SessionKey>>,
    /// URIs whose subscription the server accepted: later subscribers are answered here.
    confirmed: BTreeSet<String>,
    /// Calls that ended here (cancelled, timed out, their session gone) but that the server may
    /// still be working on, by id, with their session: while any is, a server request or log
    /// line cannot be told apart from theirs, so it is not attributed to anyone else.
    orphans: BTreeMap<u64, (SessionKey, Instant)>,
    /// Until when calls forgotten past the orphan cap may still be at work at the server: while
    /// it lasts, nothing the server asks or logs is attributed to anyone (a session cannot push
    /// another's call out of the table to inherit what the server sends about it).
    clouded_until: Option<Instant>,
    /// Log levels by session, and the level the server was last told (a severity).
    levels: BTreeMap<SessionKey, Level>,
    edge_level: Option<usize>,
    /// The session whose roots the server last received.
    roots_from: Option<SessionKey>,
    /// Answers that arrived while lists were being read again, held until those lists are in:
    /// a server that announces a new resource and then returns it finds the gateway knowing it.
    held: Vec<Held<D>>,
    /// The tasks the edge created for clients (`tasks.rs`), bounded by `limits`.
    tasks: tasks::Table,
    out: VecDeque<Action<D>>,
}

/// An answer waiting for the refreshes that were running when it arrived.
struct Held<D> {
    waits: [bool; 4],
    action: Action<D>,
}

/// The log level a session asked for, and whether it sees the aggregated view.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Level {
    min: usize,
    aggregated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Initializing,
    Listing,
    Ready,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Refresh {
    Idle,
    /// During the handshake: refresh once it is done.
    Dirty,
    Running {
        again: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Request(u64),
    ServerRequest(u64),
    Orphan(u64),
    /// Calls forgotten past the orphan cap no longer cloud attribution.
    Clouded,
    /// The server requests of a 2026-07-28 call gathered so far go to its client.
    Gather(u64),
    /// The listen at a 2026-07-28 edge is opened again with the subscriptions of now.
    Listen,
    /// A task (the tasks extension) is past its life.
    Task(u64),
}

/// How long a call that ended here without the server's answer still counts as the server's
/// work in progress (its answer, if it comes, ends that sooner).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);

enum Pending<D> {
    /// Boxed: the map keeps room for a few entries after they go, and a call is big.
    Client(Box<ClientCall<D>>),
    Internal {
        purpose: Purpose,
        deadline: Instant,
    },
}

struct ClientCall<D> {
    session: SessionKey,
    holder: Holder,
    aggregated: bool,
    client_id: Value,
    method: String,
    progress_token: Option<Value>,
    caps: ClientCaps,
    /// `None` while the call waits for its 2026-07-28 client to come back with input.
    caller: Option<D>,
    /// The server's questions a 2026-07-28 client has to answer (MRTR), the answers that came
    /// with its request, the `input_required` rounds so far, and whether a round is gathering.
    inputs: Vec<Asked>,
    responses: serde_json::Map<String, Value>,
    round: u32,
    gathering: bool,
    started: Instant,
    timeout: Duration,
    deadline: Instant,
    /// A subscribe that must be undone if the server refuses it.
    subscribed: Option<String>,
    /// A legacy client's call at a 2026-07-28 edge that may ask it questions (`link_relay.rs`).
    relay: Option<Box<Relay>>,
    /// What the call is to the link's tasks (`task_calls.rs`).
    task: Leg,
}

enum Purpose {
    Initialize,
    /// `server/discover`, the probe: a 2026-07-28 server, or else a legacy one to initialize.
    Discover,
    /// One page of a list; `items` so far, their `bytes`, `pages` read so far.
    List {
        kind: ListKind,
        items: Vec<Value>,
        bytes: usize,
        pages: usize,
        refresh: bool,
    },
    /// Nobody waits for the answer (unsubscribe after a session ended, a log level).
    Ignore,
}

/// A server request waiting for a 2026-07-28 client's input, under its key.
struct Asked {
    key: String,
    edge_id: Value,
    method: String,
    params: Value,
    /// Part of an `input_required` already answered.
    sent: bool,
}

/// Who waits for a client's answer to a server request.
#[derive(Debug, Clone, PartialEq)]
enum Asker {
    /// A legacy edge, under the id it gave its request.
    Edge(Value),
    /// A 2026-07-28 edge's question, put to a legacy client (`link_relay.rs`): the call it
    /// belongs to (by the id its retry will have) and the question's key.
    Round { call: u64, key: String },
}

struct ServerRequest<D> {
    asker: Asker,
    session: SessionKey,
    method: String,
    caller: D,
    deadline: Instant,
}

impl<D: Clone> Link<D> {
    /// A new link for server `name`; `serial` is unique for the gateway's life, `first_id`
    /// should be random (so ids do not repeat across gateway restarts).
    pub(crate) fn new(name: &str, serial: u64, first_id: u64, limits: Limits) -> Link<D> {
        Link {
            name: name.to_string(),
            serial,
            limits,
            next_id: first_id.max(1),
            next_n: 1,
            phase: Phase::Initializing,
            era: Era::Legacy,
            announces: Announces::default(),
            listening: Listening::default(),
            initialize: Value::Null,
            logging: false,
            handshake_lists: Lists::default(),
            refresh: [Refresh::Idle; 4],
            requests: HashMap::new(),
            by_client: HashMap::new(),
            server_requests: HashMap::new(),
            deadlines: BTreeSet::new(),
            subscriptions: BTreeMap::new(),
            confirmed: BTreeSet::new(),
            orphans: BTreeMap::new(),
            clouded_until: None,
            levels: BTreeMap::new(),
            edge_level: None,
            roots_from: None,
            held: Vec::new(),
            tasks: tasks::Table::default(),
            out: VecDeque::new(),
        }
    }

    /// Starts with the probe of the 2026-07-28 stdio rule: `server/discover` (with the modern
    /// `_meta`, `eras.rs`), bounded by the rpc timeout; a server that does not answer it as a
    /// 2026-07-28 server is then initialized as a legacy one.
    pub(crate) fn start(&mut self, now: Instant) {
        self.ask(now, "server/discover", eras::discover_params(), Purpose::Discover);
    }

    /// The legacy handshake: `initialize`, as the newest protocol version the gateway speaks.
    /// The gateway declares sampling, elicitation and roots: it routes them to the client whose
    /// call caused them (and refuses them otherwise), and a server that checks capabilities
    /// before asking would otherwise never ask.
    fn initialize(&mut self, now: Instant) {
        let params = json!({
            "protocolVersion": LATEST_VERSION,
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": "mcpport-gateway", "version": env!("CARGO_PKG_VERSION")},
        });
        self.ask(now, "initialize", params, Purpose::Initialize);
    }

    /// The next action to carry out, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action<D>> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Client calls in flight (for metrics and tests).
    pub(crate) fn calls_in_flight(&self) -> usize {
        self.by_client.len()
    }

    /// Whether the link holds nothing for anyone (every table empty).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.requests.is_empty()
            && self.held.is_empty()
            && self.orphans.is_empty()
            && self.clouded_until.is_none()
            && self.by_client.is_empty()
            && self.server_requests.is_empty()
            && self.deadlines.is_empty()
    }

    // ---- inputs from the gateway's side ----

    pub(crate) fn handle_input(&mut self, now: Instant, input: Input<D>) {
        match input {
            Input::Call(call) => self.call(now, call),
            Input::Cancel { session, client_id } => self.cancel(now, &session, &client_id),
            Input::ClientAnswer { session, n, outcome } => self.client_answer(now, &session, n, outcome),
            Input::SessionEnded { session } => self.session_ended(now, &session),
            Input::SetLevel { session, level } => {
                self.levels.insert(session, Level { min: severity(&level), aggregated: true });
                self.tell_level(now);
            }
            Input::Notify { method, .. } if self.era == Era::Modern => {
                log::debug!(
                    "server {}: {method} not sent (protocol 2026-07-28 has no such notification)",
                    self.name
                );
            }
            Input::Notify { method, params } => {
                let mut note = json!({"jsonrpc": "2.0", "method": method});
                if let Some(p) = params {
                    note["params"] = p;
                }
                self.out.push_back(Action::ToEdge(note));
            }
        }
    }

    /// A client's call. It stays boxed on its way through the link (here, `resume`, `refuse`,
    /// `answer_locally`): moved by value, every frame on the path held a copy, and a link's
    /// owner thread keeps the pages of its deepest call path until it next rests.
    fn call(&mut self, now: Instant, mut call: Box<Call<D>>) {
        if call.input.resume.is_some() {
            return self.resume(now, call);
        }
        if let Some(foreign) = call.input.foreign.as_ref().filter(|_| self.era == Era::Legacy) {
            let why = foreign.why.clone();
            return self.refuse(call, Error::InvalidParams(why));
        }
        let what = describe_call(&call.method, &call.params);
        if self.phase != Phase::Ready {
            let error = match self.phase {
                Phase::Closed => {
                    Error::Gone { server: self.name.clone(), what, why: "its link is closed".into() }
                }
                _ => Error::NotConnected { server: self.name.clone(), what },
            };
            return self.refuse(call, error);
        }
        let key = (call.session.clone(), call.client_id.to_string());
        if self.by_client.contains_key(&key) {
            let why = format!("request id {} is already in flight in this session", call.client_id);
            return self.refuse(call, Error::InvalidParams(why));
        }
        if self.by_client.len() >= self.limits.max_calls {
            let why = format!(
                "{what}: server {} has {} requests in flight (--max-calls-per-server); try again",
                self.name, self.limits.max_calls
            );
            return self.refuse(call, Error::Busy(why));
        }
        let task = match self.task_leg(&mut call) {
            Ok(leg) => leg,
            Err(Ok(result)) => return self.answer_locally(call, result),
            Err(Err(error)) => return self.refuse(call, error),
        };
        let mut subscribed = None;
        match call.method.as_str() {
            "resources/subscribe" | "resources/unsubscribe" if self.era == Era::Modern => {
                return self.subscribe_by_listening(now, call);
            }
            "logging/setLevel" if self.era == Era::Modern => {
                // 2026-07-28 has no setLevel: the level rides each of this session's requests.
                let level = call.params["level"].as_str().unwrap_or("info");
                let level = Level { min: severity(level), aggregated: call.aggregated };
                self.levels.insert(call.session.clone(), level);
                return self.answer_locally(call, json!({}));
            }
            "resources/subscribe" => {
                let uri = call.params["uri"].as_str().unwrap_or_default().to_string();
                if !self.subscriptions.contains_key(&uri)
                    && self.subscriptions.len() >= self.limits.max_subscriptions
                {
                    let why = format!("server {} has too many subscriptions; unsubscribe first", self.name);
                    return self.refuse(call, Error::Busy(why));
                }
                self.subscriptions.entry(uri.clone()).or_default().insert(call.session.clone());
                if self.confirmed.contains(&uri) {
                    return self.answer_locally(call, json!({}));
                }
                // Not yet accepted by the server (maybe still being asked): this subscriber asks
                // too, and its own answer decides whether it is subscribed.
                subscribed = Some(uri);
            }
            "resources/unsubscribe" => {
                let uri = call.params["uri"].as_str().unwrap_or_default();
                if !self.unsubscribe(&call.session, uri) {
                    return self.answer_locally(call, json!({}));
                }
            }
            "logging/setLevel" => {
                let level = call.params["level"].as_str().unwrap_or("info");
                let level = Level { min: severity(level), aggregated: call.aggregated };
                self.levels.insert(call.session.clone(), level);
                let Some(wanted) = self.wanted_level() else { return self.answer_locally(call, json!({})) };
                if Some(wanted) == self.edge_level {
                    return self.answer_locally(call, json!({}));
                }
                // The server hears the most verbose level any client wants, not this client's.
                self.edge_level = Some(wanted);
                call.params["level"] = json!(crate::protocol::LOG_LEVELS[wanted]);
            }
            _ => {}
        }
        if self.era == Era::Legacy && self.roots_from.as_ref().is_some_and(|owner| *owner != call.session) {
            // The server holds another client's roots: it must ask again, and this client answers.
            self.roots_from = None;
            self.out.push_back(Action::ToEdge(jsonrpc::notification(
                "notifications/roots/list_changed",
                json!({}),
            )));
        }
        let id = self.mint();
        let mut params = call.params;
        let mut responses = call.input.responses;
        if self.era == Era::Modern {
            // A legacy session hears log lines at the level it set, or from `info` up (what a
            // legacy server sends before any setLevel); a 2026-07-28 request only at its own.
            let level = self.levels.get(&call.session).map(|l| crate::protocol::LOG_LEVELS[l.min]);
            let legacy_default = (!call.caps.stateless).then_some("info");
            let level = level.or(call.client.log_level.as_deref()).or(legacy_default);
            eras::envelope(&mut params, &call.client, level);
            let state = call.input.foreign.map(|f| f.state);
            eras::carry_input(&mut params, std::mem::take(&mut responses), state);
        }
        let progress_token =
            params.pointer_mut("/_meta/progressToken").map(|t| std::mem::replace(t, json!(id)));
        let relay = (self.era == Era::Modern
            && !call.caps.stateless
            && INPUT_METHODS.contains(&call.method.as_str()))
        .then(|| Box::new(Relay::new(params.clone())));
        self.out.push_back(Action::ToEdge(jsonrpc::request(id, &call.method, params)));
        let deadline = now + call.timeout;
        self.deadlines.insert((deadline, Slot::Request(id)));
        self.by_client.insert(key, id);
        let entry = Box::new(ClientCall {
            session: call.session,
            holder: call.holder,
            aggregated: call.aggregated,
            client_id: call.client_id,
            method: call.method,
            progress_token,
            caps: call.caps,
            caller: Some(call.caller),
            inputs: Vec::new(),
            responses,
            round: 0,
            gathering: false,
            started: now,
            timeout: call.timeout,
            deadline,
            subscribed,
            relay,
            task,
        });
        self.requests.insert(id, Pending::Client(entry));
    }

    /// A subscribe or unsubscribe at a 2026-07-28 edge: the link's table changes, and the listen
    /// at the edge follows it (`link_listen.rs`); the client is answered at once.
    fn subscribe_by_listening(&mut self, now: Instant, call: Box<Call<D>>) {
        let uri = call.params["uri"].as_str().unwrap_or_default().to_string();
        if call.method == "resources/unsubscribe" {
            if self.unsubscribe(&call.session, &uri) {
                self.relisten_soon(now);
            }
            return self.answer_locally(call, json!({}));
        }
        if !self.announces.subscribe || uri.is_empty() {
            let why =
                format!("resources/subscribe: server {} does not offer resource subscriptions", self.name);
            return self.refuse(call, Error::Unroutable { code: METHOD_NOT_FOUND, why });
        }
        if !self.subscriptions.contains_key(&uri) && self.subscriptions.len() >= self.limits.max_subscriptions
        {
            let why = format!("server {} has too many subscriptions; unsubscribe first", self.name);
            return self.refuse(call, Error::Busy(why));
        }
        self.subscriptions.entry(uri.clone()).or_default().insert(call.session.clone());
        if self.confirmed.insert(uri) {
            self.relisten_soon(now);
        }
        self.answer_locally(call, json!({}))
    }

    #[expect(clippy::boxed_local, reason = "a call stays boxed on its way through the link")]
    fn refuse(&mut self, call: Box<Call<D>>, error: Error) {
        let report = Report { method: call.method, ok: false, took: Duration::ZERO };
        let message = Some(error.response(&call.client_id));
        self.out.push_back(Action::Answer { caller: call.caller, message, report });
    }

    #[expect(clippy::boxed_local, reason = "a call stays boxed on its way through the link")]
    fn answer_locally(&mut self, call: Box<Call<D>>, result: Value) {
        let report = Report { method: call.method, ok: true, took: Duration::ZERO };
        let message = Some(jsonrpc::result_response(&call.client_id, result));
        self.out.push_back(Action::Answer { caller: call.caller, message, report });
    }

    fn cancel(&mut self, now: Instant, session: &str, client_id: &Value) {
        let key = (session.to_string(), client_id.to_string());
        let Some(id) = self.by_client.get(&key).copied() else { return };
        self.end_call(now, id, "cancelled by the client", None);
    }

    /// Ends client call `id` without an answer from the server: the server is told to stop, and
    /// the caller gets `error` (or nothing, when the client cancelled).
    fn end_call(&mut self, now: Instant, id: u64, reason: &str, error: Option<Error>) {
        self.end_here(now, id, Some(reason), error);
    }

    /// Ends client call `id` here; the server is told to stop when `cancel` says why (else it
    /// finishes on its own, its answer dropped).
    fn end_here(&mut self, now: Instant, id: u64, cancel: Option<&str>, error: Option<Error>) {
        let Some(Pending::Client(call)) = self.take_request(id) else { return };
        let reason = cancel.unwrap_or("the call ended at the gateway");
        // A call whose client is answering a 2026-07-28 edge's questions has nothing at the edge.
        if call.relay.as_ref().is_some_and(|r| r.asking) {
            self.drop_questions(id, reason);
        } else {
            self.orphan(now, id, call.session.clone());
            if let Some(reason) = cancel {
                self.out.push_back(Action::ToEdge(jsonrpc::notification(
                    "notifications/cancelled",
                    json!({"requestId": id, "reason": reason}),
                )));
            }
        }
        if let Some(uri) = &call.subscribed {
            self.unsubscribe(&call.session, uri);
        }
        self.drop_inputs(call.inputs, reason);
        let report =
            Report { method: call.method, ok: false, took: now.saturating_duration_since(call.started) };
        let message = error.map(|e| e.response(&call.client_id));
        if let Some(caller) = call.caller {
            self.out.push_back(Action::Answer { caller, message, report });
        }
    }

    /// The server's questions that nobody will answer now get an error, so it stops waiting.
    fn drop_inputs(&mut self, inputs: Vec<Asked>, why: &str) {
        for asked in inputs {
            let error = jsonrpc::error_object(INTERNAL_ERROR, &format!("no answer: {why}"));
            self.out.push_back(Action::ToEdge(response(&asked.edge_id, Err(error))));
        }
    }

    /// Removes a request and its indexes.
    fn take_request(&mut self, id: u64) -> Option<Pending<D>> {
        let pending = self.requests.remove(&id)?;
        match &pending {
            Pending::Client(c) => {
                self.deadlines.remove(&(c.deadline, Slot::Request(id)));
                self.by_client.remove(&(c.session.clone(), c.client_id.to_string()));
            }
            Pending::Internal { deadline, .. } => {
                self.deadlines.remove(&(*deadline, Slot::Request(id)));
            }
        }
        Some(pending)
    }

    fn client_answer(&mut self, now: Instant, session: &str, n: u64, outcome: Result<Value, Value>) {
        if self.server_requests.get(&n).is_none_or(|r| r.session != session) {
            log::debug!("server {}: an answer to request {n} that this session was not asked", self.name);
            return;
        }
        let Some(req) = self.server_requests.remove(&n) else { return };
        self.deadlines.remove(&(req.deadline, Slot::ServerRequest(n)));
        let edge_id = match req.asker {
            Asker::Edge(edge_id) => edge_id,
            Asker::Round { call, key } => return self.round_answered(now, call, key, outcome),
        };
        if req.method == "roots/list" && outcome.is_ok() {
            self.roots_from = Some(req.session.clone());
        }
        self.out.push_back(Action::ToEdge(response(&edge_id, outcome)));
    }

    fn session_ended(&mut self, now: Instant, session: &str) {
        let ids: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Client(c) if c.session == session && c.caller.is_some()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end_call(now, id, "the client's session ended", None);
        }
        let uris: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|(_, who)| who.contains(session))
            .map(|(uri, _)| uri.clone())
            .collect();
        for uri in uris {
            if !self.unsubscribe(session, &uri) {
                continue;
            }
            match self.era {
                Era::Legacy => self.ask(now, "resources/unsubscribe", json!({"uri": uri}), Purpose::Ignore),
                Era::Modern => self.relisten_soon(now),
            }
        }
        let asked: Vec<u64> =
            self.server_requests.iter().filter(|(_, r)| r.session == session).map(|(n, _)| *n).collect();
        for n in asked {
            if let Some(req) = self.server_requests.remove(&n) {
                self.deadlines.remove(&(req.deadline, Slot::ServerRequest(n)));
                // A question of a 2026-07-28 edge went with its call, ended above.
                let Asker::Edge(edge_id) = req.asker else { continue };
                let error =
                    jsonrpc::error_object(INTERNAL_ERROR, "the client's session ended before it answered");
                self.out.push_back(Action::ToEdge(response(&edge_id, Err(error))));
            }
        }
        if self.levels.remove(session).is_some() {
            self.tell_level(now);
        }
    }

    /// Removes `session`'s subscription to `uri`. True when it was the last one, so the server
    /// must be told.
    #[inline(never)]
    fn unsubscribe(&mut self, session: &str, uri: &str) -> bool {
        let Some(who) = self.subscriptions.get_mut(uri) else { return false };
        if !who.remove(session) {
            return false;
        }
        if who.is_empty() {
            self.subscriptions.remove(uri);
            return self.confirmed.remove(uri);
        }
        false
    }

    /// The most verbose level any session wants.
    fn wanted_level(&self) -> Option<usize> {
        self.levels.values().map(|l| l.min).min()
    }

    /// Tells the server the most verbose level any session wants, when that changed.
    fn tell_level(&mut self, now: Instant) {
        let wanted = self.wanted_level();
        if wanted == self.edge_level || self.phase != Phase::Ready || !self.logging || self.era == Era::Modern
        {
            return;
        }
        self.edge_level = wanted;
        if let Some(level) = wanted {
            let name = crate::protocol::LOG_LEVELS[level];
            self.ask(now, "logging/setLevel", json!({"level": name}), Purpose::Ignore);
        }
    }

    // ---- inputs from the edge ----

    /// One message from the edge.
    pub(crate) fn handle_edge(&mut self, now: Instant, msg: Message) {
        match msg {
            Message::Response { id, outcome } if self.is_listen(&id) => self.listen_ended(&outcome),
            Message::Response { id, outcome } => match id.as_u64().and_then(|id| self.take_request(id)) {
                Some(Pending::Client(call)) => self.complete(now, call, outcome),
                Some(Pending::Internal { purpose, .. }) => self.internal_answer(now, purpose, outcome),
                None => {
                    self.late_answer(now, &outcome);
                    // The server finished a call that had ended here: it no longer clouds attribution.
                    if let Some(n) = id.as_u64() {
                        if let Some((_, until)) = self.orphans.remove(&n) {
                            self.deadlines.remove(&(until, Slot::Orphan(n)));
                        }
                    }
                    log::debug!("server {}: an answer to unknown or expired request {id}", self.name)
                }
            },
            Message::Request { id, method, .. } if method == "ping" => {
                self.out.push_back(Action::ToEdge(jsonrpc::result_response(&id, json!({}))));
            }
            Message::Request { id, method, params } => self.server_request(now, id, &method, params),
            Message::Notification { method, params } => self.notification(now, &method, params),
        }
    }

    fn complete(&mut self, now: Instant, call: Box<ClientCall<D>>, outcome: Result<Value, Value>) {
        let outcome = match outcome {
            // A 2026-07-28 edge's questions during a legacy client's call go to that client.
            Ok(result) if call.relay.is_some() && eras::is_input_required(&result) => {
                return self.ask_client(now, call, result)
            }
            other => other,
        };
        let outcome = match self.era {
            Era::Modern => self.modern_outcome(&call, outcome),
            Era::Legacy => outcome,
        };
        let outcome = self.task_outcome(now, &call, outcome);
        match (&call.subscribed, &outcome) {
            (Some(uri), Err(_)) => {
                self.unsubscribe(&call.session, uri);
            }
            (Some(uri), Ok(_))
                if self.subscriptions.get(uri).is_some_and(|who| who.contains(&call.session)) =>
            {
                self.confirmed.insert(uri.clone());
            }
            _ => {}
        }
        let report = Report {
            method: call.method.clone(),
            ok: outcome.is_ok(),
            took: now.saturating_duration_since(call.started),
        };
        let message = Some(response(&call.client_id, outcome));
        self.drop_inputs(call.inputs, "the call is over");
        let Some(caller) = call.caller else {
            return log::debug!("server {}: a call ended while it waited for its client's input", self.name);
        };
        let action = Action::Answer { caller, message, report };
        let waits = self.refresh.map(|r| matches!(r, Refresh::Running { .. }));
        if waits.contains(&true) {
            self.held.push(Held { waits, action });
        } else {
            self.out.push_back(action);
        }
    }

    /// A modern edge's answer: an `input_required` passes through to a 2026-07-28 client when it
    /// asks only what that client can answer, within bounds, for a method that may ask.
    #[inline(never)]
    fn modern_outcome(&self, call: &ClientCall<D>, outcome: Result<Value, Value>) -> Result<Value, Value> {
        let result = match outcome {
            Ok(result) if eras::is_input_required(&result) => result,
            other => return other,
        };
        // A legacy client's call that may take questions went to `ask_client`, not here.
        let checked = match INPUT_METHODS.contains(&call.method.as_str()) {
            true => eras::check_input_required(&result, call.caps),
            false => Err(format!(
                "it answered {} with input_required, which that method cannot carry",
                call.method
            )),
        };
        match checked {
            Ok(()) => Ok(result),
            Err(why) => {
                let why =
                    format!("{}: server {}: {why}", describe_call(&call.method, &Value::Null), self.name);
                log::warn!("session {}: {why}", call.session);
                Err(Error::Unroutable { code: INTERNAL_ERROR, why }.to_object())
            }
        }
    }

    /// A list of `kind` is in (or failed): answers that waited only for it go out, in order.
    fn release_held(&mut self, kind: Option<ListKind>) {
        for h in &mut self.held {
            match kind {
                Some(k) => h.waits[index(k)] = false,
                None => h.waits = [false; 4],
            }
        }
        let (ready, waiting): (Vec<Held<D>>, Vec<Held<D>>) =
            std::mem::take(&mut self.held).into_iter().partition(|h| !h.waits.contains(&true));
        self.held = waiting;
        self.out.extend(ready.into_iter().map(|h| h.action));
    }

    #[inline(never)]
    fn server_request(&mut self, now: Instant, edge_id: Value, method: &str, params: Option<Value>) {
        if self.era == Era::Modern {
            let why = format!("{method}: a 2026-07-28 server sends no requests (it answers input_required)");
            log::warn!("server {}: {why}", self.name);
            let error = Error::Unroutable { code: METHOD_NOT_FOUND, why };
            return self.out.push_back(Action::ToEdge(error.response(&edge_id)));
        }
        if method == "roots/list" && matches!(self.sole_caller(), Sole::None) {
            // Servers ask for roots at start-up, before any client has called: no client, no roots.
            let empty = jsonrpc::result_response(&edge_id, json!({"roots": []}));
            return self.out.push_back(Action::ToEdge(empty));
        }
        match self.route_server_request(now, &edge_id, method, params) {
            Ok(()) => {}
            Err(error) => {
                log::warn!("server {}: {error}", self.name);
                self.out.push_back(Action::ToEdge(error.response(&edge_id)));
            }
        }
    }

    /// Sends the server's request to the one session with calls in flight, on that session's
    /// newest call's stream, under an id that names this link.
    fn route_server_request(
        &mut self,
        now: Instant,
        edge_id: &Value,
        method: &str,
        params: Option<Value>,
    ) -> Result<(), Error> {
        let capability = match method {
            "sampling/createMessage" => "sampling",
            "elicitation/create" => "elicitation",
            "roots/list" => "roots",
            _ => {
                let why = format!("{method} cannot be routed to a client");
                return Err(Error::Unroutable { code: METHOD_NOT_FOUND, why });
            }
        };
        let (caller, session, caps, id) = match self.sole_caller() {
            Sole::One(id, call) => (call.caller.clone(), call.session.clone(), call.caps, id),
            Sole::None => {
                let why = format!("{method}: no client request of this server is in flight to send it to");
                return Err(Error::Unroutable { code: INTERNAL_ERROR, why });
            }
            Sole::Several => {
                let why = format!(
                    "{method} refused: more than one client has requests in flight at this server, and \
                     over stdio a server cannot say which one it asks; the gateway never guesses"
                );
                return Err(Error::Unroutable { code: INTERNAL_ERROR, why });
            }
        };
        if caps.stateless {
            return self.ask_input(now, id, edge_id, method, params, capability);
        }
        let Some(caller) = caller else {
            return Err(Error::Unroutable { code: INTERNAL_ERROR, why: format!("{method}: no caller") });
        };
        if !caps.allows(capability) {
            let why = format!("{method}: the client did not declare the {capability} capability");
            return Err(Error::Unroutable { code: METHOD_NOT_FOUND, why });
        }
        if self.server_requests.len() >= self.limits.max_server_requests {
            return Err(Error::Busy(format!("{method}: too many requests of this server await clients")));
        }
        let n = self.next_n;
        self.next_n += 1;
        let deadline = now + self.limits.client_timeout;
        self.deadlines.insert((deadline, Slot::ServerRequest(n)));
        let request = jsonrpc::request(self.client_facing_id(n), method, params.unwrap_or_else(|| json!({})));
        self.server_requests.insert(
            n,
            ServerRequest {
                asker: Asker::Edge(edge_id.clone()),
                session,
                method: method.into(),
                caller: caller.clone(),
                deadline,
            },
        );
        self.out.push_back(Action::Related { caller, message: request });
        Ok(())
    }

    /// A server's request during a 2026-07-28 call (MRTR): that client takes no server requests,
    /// so the question waits in the call, answered at once if the request brought its answer,
    /// else gathered for a moment and sent to the client as an `input_required` result. One it
    /// did not declare the capability for ends its call with `MissingCapability` (-32021).
    fn ask_input(
        &mut self,
        now: Instant,
        id: u64,
        edge_id: &Value,
        method: &str,
        params: Option<Value>,
        capability: &'static str,
    ) -> Result<(), Error> {
        let parked = self.parked();
        let n = self.next_n;
        let Some(Pending::Client(call)) = self.requests.get_mut(&id) else {
            let why = format!("{method}: its call is gone");
            return Err(Error::Unroutable { code: INTERNAL_ERROR, why });
        };
        if !call.caps.allows(capability) {
            // The server hears that its request failed and ends the call itself: not cancelled,
            // so its answer (dropped) soon ends the orphan that clouds attribution.
            self.end_here(now, id, None, Some(Error::MissingCapability(capability)));
            let why = format!("{method}: the client did not declare the {capability} capability");
            return Err(Error::Unroutable { code: METHOD_NOT_FOUND, why });
        }
        if !INPUT_METHODS.contains(&call.method.as_str()) {
            let why = format!("{method}: a 2026-07-28 client cannot be asked during {}", call.method);
            return Err(Error::Unroutable { code: INTERNAL_ERROR, why });
        }
        let mut params = params.filter(Value::is_object).unwrap_or_else(|| json!({}));
        let key = input_key(&mut params).unwrap_or_else(|| format!("input-{n}"));
        if let Some(answer) = call.responses.remove(&key).filter(|a| valid_input(method, a)) {
            self.out.push_back(Action::ToEdge(jsonrpc::result_response(edge_id, answer)));
            return Ok(());
        }
        if call.inputs.len() >= MAX_INPUTS || parked >= self.limits.max_server_requests {
            return Err(Error::Busy(format!("{method}: too many questions await clients")));
        }
        self.next_n += 1;
        let asked = Asked { key, edge_id: edge_id.clone(), method: method.into(), params, sent: false };
        call.inputs.push(asked);
        if call.caller.is_some() && !call.gathering {
            call.gathering = true;
            self.deadlines.insert((now + GATHER, Slot::Gather(id)));
        }
        Ok(())
    }

    /// Calls waiting for their client's input.
    fn parked(&self) -> usize {
        self.requests.values().filter(|p| matches!(p, Pending::Client(c) if c.caller.is_none())).count()
    }

    /// The questions gathered for call `id` go to its client as an `input_required` result;
    /// the call waits (bounded by `client_timeout`) for the retry that brings the answers.
    fn gathered(&mut self, now: Instant, id: u64) {
        let (name, serial, key, ttl) =
            (self.name.clone(), self.serial, self.limits.state_key, self.limits.client_timeout);
        let Some(Pending::Client(call)) = self.requests.get_mut(&id) else { return };
        call.gathering = false;
        let Some(caller) = call.caller.take() else { return };
        let mut requests = serde_json::Map::new();
        for asked in call.inputs.iter_mut().filter(|a| !a.sent) {
            asked.sent = true;
            requests.insert(asked.key.clone(), json!({"method": asked.method, "params": asked.params}));
        }
        call.round += 1;
        let resume = Resume {
            server: name,
            serial,
            id,
            round: call.round,
            method: call.method.clone(),
            holder: call.holder.tag(),
        };
        let result = json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": state::seal(&key, &resume, ttl),
        });
        self.deadlines.remove(&(call.deadline, Slot::Request(id)));
        call.deadline = now + ttl;
        self.deadlines.insert((call.deadline, Slot::Request(id)));
        self.by_client.remove(&(call.session.clone(), call.client_id.to_string()));
        let report = Report {
            method: call.method.clone(),
            ok: true,
            took: now.saturating_duration_since(call.started),
        };
        let message = Some(jsonrpc::result_response(&call.client_id, result));
        self.out.push_back(Action::Answer { caller, message, report });
    }

    /// A 2026-07-28 client came back with input for call `resume.id`: its answers go to the
    /// server, and the call is this request's from now on. A state of a round the call has
    /// moved past, or of a call that ended, is refused: each state is good once.
    fn resume(&mut self, now: Instant, call: Box<Call<D>>) {
        let Some(r) = call.input.resume.clone() else { return };
        let waiting = match self.requests.get(&r.id) {
            Some(Pending::Client(c)) => {
                c.caller.is_none()
                    && c.round == r.round
                    && c.method == call.method
                    && r.serial == self.serial
                    && c.holder == call.holder
            }
            _ => false,
        };
        if !waiting {
            let why = "requestState: that request was already resumed, has ended or expired; send it again without requestState";
            return self.refuse(call, Error::InvalidParams(why.into()));
        }
        let key = (call.session.clone(), call.client_id.to_string());
        if self.by_client.contains_key(&key) {
            let why = format!("request id {} is already in flight in this session", call.client_id);
            return self.refuse(call, Error::InvalidParams(why));
        }
        self.by_client.insert(key, r.id);
        let Some(Pending::Client(c)) = self.requests.get_mut(&r.id) else { return };
        c.caller = Some(call.caller);
        c.session = call.session;
        c.client_id = call.client_id;
        c.caps = call.caps;
        c.aggregated = call.aggregated;
        c.progress_token = call.params.pointer("/_meta/progressToken").cloned();
        c.responses = call.input.responses;
        c.timeout = call.timeout;
        self.deadlines.remove(&(c.deadline, Slot::Request(r.id)));
        c.deadline = now + call.timeout;
        self.deadlines.insert((c.deadline, Slot::Request(r.id)));
        let mut answers = Vec::new();
        let mut left = Vec::new();
        for asked in std::mem::take(&mut c.inputs) {
            match c.responses.remove(&asked.key).filter(|a| valid_input(&asked.method, a)) {
                Some(answer) => answers.push(jsonrpc::result_response(&asked.edge_id, answer)),
                // Not answered (or not validly): asked again in the next round.
                None => left.push(Asked { sent: false, ..asked }),
            }
        }
        c.inputs = left;
        if !c.inputs.is_empty() {
            c.gathering = true;
            self.deadlines.insert((now, Slot::Gather(r.id)));
        }
        self.out.extend(answers.into_iter().map(Action::ToEdge));
    }

    /// The id a client sees on a request of this server: it names the link, so the answer
    /// finds its way back, and no other link's answer can complete it.
    fn client_facing_id(&self, n: u64) -> Value {
        Value::String(format!("mcpport-{}-{n}", self.serial))
    }

    /// The newest client call, if exactly one session has calls in flight (counting calls that
    /// ended here but that the server may still be working on). Allocates nothing, and stops
    /// at the second session it sees: its cost is bounded by the calls and orphans, each capped
    /// at `max_calls`.
    fn sole_caller(&self) -> Sole<'_, D> {
        if self.clouded_until.is_some() {
            return Sole::Several;
        }
        let mut newest: Option<(u64, &ClientCall<D>)> = None;
        // Whether `session` is a second one: the first seen is kept in `only`.
        fn another<'s>(only: &mut Option<&'s str>, session: &'s str) -> bool {
            *only.get_or_insert(session) != session
        }
        let mut only: Option<&str> = None;
        for (id, p) in &self.requests {
            // A call waiting for its 2026-07-28 client's input is blocked on the questions it
            // asked: what the server asks now is another call's.
            if let Pending::Client(c) = p {
                if c.caller.is_none() {
                    continue;
                }
                if another(&mut only, &c.session) {
                    return Sole::Several;
                }
                if newest.is_none_or(|(n, _)| *id > n) {
                    newest = Some((*id, c));
                }
            }
        }
        if self.orphans.values().any(|(s, _)| another(&mut only, s)) {
            return Sole::Several;
        }
        match (only, newest) {
            (None, _) => Sole::None,
            (Some(_), Some((id, call))) => Sole::One(id, call),
            // Only calls that ended here: whatever the server sends now may be theirs.
            (Some(_), None) => Sole::Several,
        }
    }

    /// Notes that call `id` of `session` ended here while the server may still be working on it
    /// (for `ORPHAN_GRACE`, or until its answer comes). At most `max_calls` are kept: past it the
    /// oldest is forgotten, so a client that calls and cancels in a loop grows nothing (a
    /// forgotten call's late output is then judged like any other's).
    fn orphan(&mut self, now: Instant, id: u64, session: SessionKey) {
        if self.orphans.len() >= self.limits.max_calls {
            if let Some((old, (_, until))) = self.orphans.pop_first() {
                self.deadlines.remove(&(until, Slot::Orphan(old)));
                // Forgotten, but it may still be at work: attribution stays cautious as long.
                if self.clouded_until.is_none_or(|c| c < until) {
                    self.clouded_until = Some(until);
                    self.deadlines.insert((until, Slot::Clouded));
                }
            }
        }
        let until = now + ORPHAN_GRACE;
        self.orphans.insert(id, (session, until));
        self.deadlines.insert((until, Slot::Orphan(id)));
    }

    #[inline(never)]
    fn notification(&mut self, now: Instant, method: &str, params: Option<Value>) {
        // MCP params are objects; anything else from an edge is treated as none at all.
        let mut params = params.filter(Value::is_object).unwrap_or_else(|| json!({}));
        if self.untag(method, &mut params) {
            return;
        }
        match method {
            "notifications/progress" => self.progress(now, params),
            "notifications/cancelled" => self.server_cancelled(&params),
            "notifications/resources/updated" => self.resource_updated(params),
            "notifications/message" => self.log_message(params),
            // A task's status is its client's alone (and names the edge's id): never broadcast.
            // Clients poll (`tasks/get`); see `task_calls.rs`.
            m if m.starts_with("notifications/tasks") => {
                log::debug!("server {}: {m} not relayed (clients poll their tasks)", self.name);
            }
            _ => {
                for kind in ListKind::ALL.into_iter().filter(|k| k.changed_notification() == method) {
                    self.list_changed(now, kind);
                }
                self.out.push_back(Action::Broadcast(jsonrpc::notification(method, params)));
            }
        }
    }

    /// Progress restarts the call's clock and reaches the client under its own token.
    fn progress(&mut self, now: Instant, mut params: Value) {
        let Some(id) = params["progressToken"].as_u64() else { return };
        let Some(Pending::Client(call)) = self.requests.get_mut(&id) else { return };
        self.deadlines.remove(&(call.deadline, Slot::Request(id)));
        call.deadline = now + call.timeout;
        self.deadlines.insert((call.deadline, Slot::Request(id)));
        if let (Some(token), Some(caller)) = (call.progress_token.clone(), call.caller.clone()) {
            params["progressToken"] = token;
            let message = jsonrpc::notification("notifications/progress", params);
            self.out.push_back(Action::Related { caller, message });
        }
    }

    /// The server withdrew one of its requests: only the client that received it hears of it,
    /// under the id it knows.
    fn server_cancelled(&mut self, params: &Value) {
        let edge_id = &params["requestId"];
        // A question waiting for a 2026-07-28 client's input is simply not asked any more.
        for p in self.requests.values_mut() {
            if let Pending::Client(c) = p {
                c.inputs.retain(|a| &a.edge_id != edge_id);
            }
        }
        let edge = Asker::Edge(edge_id.clone());
        let Some(n) = self.server_requests.iter().find(|(_, r)| r.asker == edge).map(|(n, _)| *n) else {
            return;
        };
        let Some(req) = self.server_requests.remove(&n) else { return };
        self.deadlines.remove(&(req.deadline, Slot::ServerRequest(n)));
        let mut p = params.clone();
        p["requestId"] = self.client_facing_id(n);
        let message = jsonrpc::notification("notifications/cancelled", p);
        self.out.push_back(Action::Related { caller: req.caller, message });
    }

    /// An update goes once to each session subscribed to the URI or to one it lies under.
    fn resource_updated(&mut self, params: Value) {
        let uri = params["uri"].as_str().unwrap_or_default();
        let mut targets: BTreeSet<&SessionKey> = BTreeSet::new();
        for (sub, who) in &self.subscriptions {
            if uri_covers(sub, uri) {
                targets.extend(who);
            }
        }
        let message = jsonrpc::notification("notifications/resources/updated", params.clone());
        let actions: Vec<Action<D>> = targets
            .into_iter()
            .map(|s| Action::ToSession { session: s.clone(), message: message.clone() })
            .collect();
        self.out.extend(actions);
    }

    /// A log line belongs to the one session with calls in flight; with several, it cannot be
    /// attributed and goes to nobody; with none, to the sessions that asked for this level.
    fn log_message(&mut self, params: Value) {
        let level = severity(params["level"].as_str().unwrap_or("info"));
        let wants = |s: &str| self.levels.get(s).is_none_or(|l| level >= l.min);
        let note = |aggregated: bool| {
            let mut p = params.clone();
            if aggregated {
                p["logger"] = match params["logger"].as_str() {
                    Some(logger) => Value::String(format!("{}/{logger}", self.name)),
                    None => Value::String(self.name.clone()),
                };
            }
            jsonrpc::notification("notifications/message", p)
        };
        let action = match self.sole_caller() {
            Sole::One(_, call) if wants(&call.session) => {
                call.caller.clone().map(|caller| Action::Related { caller, message: note(call.aggregated) })
            }
            Sole::One(..) => None,
            Sole::Several => {
                log::debug!(
                    "server {}: a log line while several sessions have calls in flight: not sent",
                    self.name
                );
                None
            }
            Sole::None => {
                let actions: Vec<Action<D>> = self
                    .levels
                    .iter()
                    .filter(|(_, l)| level >= l.min)
                    .map(|(s, l)| Action::ToSession { session: s.clone(), message: note(l.aggregated) })
                    .collect();
                self.out.extend(actions);
                None
            }
        };
        self.out.extend(action);
    }

    // ---- the handshake and the lists ----

    #[inline(never)]
    fn internal_answer(&mut self, now: Instant, purpose: Purpose, outcome: Result<Value, Value>) {
        match purpose {
            Purpose::Initialize => match outcome {
                Ok(result) => self.initialized(now, result),
                Err(e) => self.fail(format!("initialize: the server answered with an error: {e}")),
            },
            Purpose::Discover => self.discovered(now, outcome),
            Purpose::List { kind, items, bytes, pages, refresh } => match outcome {
                Ok(page) => self.list_page(now, kind, (items, bytes, pages), refresh, page),
                Err(e) => {
                    self.list_failed(now, kind, refresh, &format!("the server answered with an error: {e}"))
                }
            },
            Purpose::Ignore => {}
        }
    }

    fn initialized(&mut self, now: Instant, result: Value) {
        if !result.is_object() || !result["capabilities"].is_object() && !result["capabilities"].is_null() {
            return self.fail("initialize: the result is not an object with capabilities".into());
        }
        let version = result["protocolVersion"].as_str().unwrap_or("none");
        if !SUPPORTED_VERSIONS.contains(&version) {
            log::warn!(
                "server {}: answered protocol version {version:?}, which the gateway does not know",
                self.name
            );
        }
        log::info!("server {}: speaks the legacy era (protocol {version})", self.name);
        self.logging = result["capabilities"].get("logging").is_some();
        self.out.push_back(Action::ToEdge(jsonrpc::notification("notifications/initialized", json!({}))));
        self.described(now, result);
    }

    /// The answer to the probe: a server that names 2026-07-28 is a modern edge; anything else
    /// (an error, a result that is not that) is initialized as a legacy one.
    fn discovered(&mut self, now: Instant, outcome: Result<Value, Value>) {
        let description = match outcome {
            Ok(result) => eras::discovered(&self.name, &result),
            Err(e) => Err(format!("the server answered with an error: {e}")),
        };
        match description {
            Ok(description) => {
                log::info!(
                    "server {}: speaks the modern era (protocol {}, no initialize)",
                    self.name,
                    description["protocolVersion"].as_str().unwrap_or_default()
                );
                self.era = Era::Modern;
                self.described(now, description);
            }
            Err(why) => {
                log::info!("server {}: server/discover: {why}; initializing it", self.name);
                self.initialize(now);
            }
        }
    }

    /// The server is known (by its `initialize` result, or its discovery in that shape): its
    /// lists are read next.
    fn described(&mut self, now: Instant, mut result: Value) {
        if self.era == Era::Modern {
            self.announces = Announces::from_capabilities(&result["capabilities"]);
        }
        // Tasks are relayed for 2026-07-28 edges, as the extension (`task_calls.rs`): the
        // 2025-11-25 per-session task surface, and the extension at a legacy edge, are not offered.
        if let Some(capabilities) = result["capabilities"].as_object_mut() {
            capabilities.remove("tasks");
            if self.era == Era::Legacy {
                tasks::undeclare(&mut result["capabilities"]);
            }
        }
        self.initialize = result;
        self.phase = Phase::Listing;
        for kind in ListKind::ALL {
            if self.initialize["capabilities"].get(kind.capability()).is_some() {
                self.refresh[index(kind)] = match self.refresh[index(kind)] {
                    Refresh::Dirty => Refresh::Running { again: true },
                    _ => Refresh::Running { again: false },
                };
                self.list(now, kind, (Vec::new(), 0, 0), false, None);
            }
        }
        self.maybe_ready(now);
    }

    /// Asks for a page of a list; `so_far` is (items, their bytes, pages) already read.
    fn list(&mut self, now: Instant, kind: ListKind, so_far: Listed, refresh: bool, cursor: Option<Value>) {
        let params = eras::list_params(self.era, cursor);
        let (items, bytes, pages) = so_far;
        self.ask(now, kind.method(), params, Purpose::List { kind, items, bytes, pages, refresh });
    }

    fn list_page(&mut self, now: Instant, kind: ListKind, so_far: Listed, refresh: bool, mut page: Value) {
        let (mut items, bytes, pages) = so_far;
        let page_bytes = weight(&page[kind.key()]);
        // Moved out of the page, not copied: the parsed items are the ones the gateway keeps.
        let Some(Value::Array(page_items)) = page.get_mut(kind.key()).map(Value::take) else {
            let why = format!("the result has no {:?} array", kind.key());
            return self.list_failed(now, kind, refresh, &why);
        };
        let (before, listed) = (items.len(), page_items.len());
        items.extend(page_items.into_iter().filter(Value::is_object));
        if items.len() - before < listed {
            log::warn!(
                "server {}: {} listed items that are not objects; they were left out",
                self.name,
                kind.method()
            );
        }
        let (bytes, pages) = (bytes.saturating_add(page_bytes), pages + 1);
        let more = matches!(&page["nextCursor"], Value::String(c) if !c.is_empty());
        let l = self.limits;
        let over = if items.len() > l.max_list_items {
            Some(format!("more than {} items (--max-list-items)", l.max_list_items))
        } else if bytes > l.max_list_bytes {
            Some(format!("more than {} bytes (--max-list-bytes)", l.max_list_bytes))
        } else if more && pages >= l.max_pages {
            Some(format!("more than {} pages", l.max_pages))
        } else {
            None
        };
        if let Some(over) = over {
            let why = format!("the list has {over}; the gateway does not take it");
            return self.list_refused(now, kind, refresh, &why);
        }
        if more {
            let cursor = Some(page["nextCursor"].clone());
            return self.list(now, kind, (items, bytes, pages), refresh, cursor);
        }
        self.list_done(now, kind, Ok(items), refresh);
    }

    /// A list over the caps: the handshake fails, a refresh keeps the old list; the edge is
    /// told why either way.
    fn list_refused(&mut self, now: Instant, kind: ListKind, refresh: bool, why: &str) {
        if refresh {
            let message = format!("{}: {why}; the gateway keeps the list it had", kind.method());
            self.out.push_back(Action::ToEdge(json!({"status": "error", "message": message})));
        }
        self.list_failed(now, kind, refresh, why);
    }

    fn list_failed(&mut self, now: Instant, kind: ListKind, refresh: bool, why: &str) {
        self.list_done(now, kind, Err(format!("{}: {why}", kind.method())), refresh);
    }

    fn list_done(&mut self, now: Instant, kind: ListKind, items: Result<Vec<Value>, String>, refresh: bool) {
        let again = matches!(self.refresh[index(kind)], Refresh::Running { again: true });
        self.refresh[index(kind)] = Refresh::Idle;
        match (items, refresh) {
            (Ok(items), false) => *kind.items_mut(&mut self.handshake_lists) = Item::all(kind, &items),
            (Err(why), false) => return self.fail(why),
            (Ok(items), true) => {
                log::info!("server {}: {} changed ({} items)", self.name, kind.key(), items.len());
                self.out.push_back(Action::ListChanged { kind, items });
            }
            (Err(why), true) => log::warn!("server {}: cannot refresh {}: {why}", self.name, kind.key()),
        }
        if refresh {
            self.release_held(Some(kind));
        }
        if again {
            self.refresh[index(kind)] = Refresh::Dirty;
        }
        if self.phase == Phase::Listing {
            self.maybe_ready(now);
        } else if again {
            self.list_changed(now, kind);
        }
    }

    /// Once every list of the handshake is in, the server is ready; lists announced as changed
    /// meanwhile are read again.
    fn maybe_ready(&mut self, now: Instant) {
        if self.refresh.iter().any(|r| matches!(r, Refresh::Running { .. })) {
            return;
        }
        self.phase = Phase::Ready;
        let lists = std::mem::take(&mut self.handshake_lists);
        // Handed over, not copied: the server's record keeps it; the link keeps `logging`.
        self.out.push_back(Action::Ready { initialize: std::mem::take(&mut self.initialize), lists });
        self.tell_level(now);
        self.listen();
        for kind in ListKind::ALL {
            if self.refresh[index(kind)] == Refresh::Dirty {
                self.refresh[index(kind)] = Refresh::Idle;
                self.list_changed(now, kind);
            }
        }
    }

    /// A `list_changed`: one refresh per list at a time; more announcements meanwhile make one
    /// more refresh when it is done, however many they were.
    fn list_changed(&mut self, now: Instant, kind: ListKind) {
        let slot = &mut self.refresh[index(kind)];
        match (*slot, self.phase) {
            (_, Phase::Closed) => {}
            (Refresh::Running { .. }, _) => *slot = Refresh::Running { again: true },
            (_, Phase::Initializing) => *slot = Refresh::Dirty,
            (_, Phase::Listing) => *slot = Refresh::Dirty,
            (_, Phase::Ready) => {
                *slot = Refresh::Running { again: false };
                self.list(now, kind, (Vec::new(), 0, 0), true, None);
            }
        }
    }

    fn fail(&mut self, why: String) {
        if self.phase == Phase::Ready || self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.out.push_back(Action::Fail { why });
    }

    /// Sends a request of the gateway's own.
    fn ask(&mut self, now: Instant, method: &str, params: Value, purpose: Purpose) {
        let id = self.mint();
        let deadline = now + self.limits.rpc_timeout;
        self.deadlines.insert((deadline, Slot::Request(id)));
        self.requests.insert(id, Pending::Internal { purpose, deadline });
        self.out.push_back(Action::ToEdge(jsonrpc::request(id, method, params)));
    }

    fn mint(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ---- time and the end ----

    /// Ends whatever is past its deadline.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, slot)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            match slot {
                Slot::Request(id) => self.request_timed_out(now, id),
                Slot::ServerRequest(n) => self.server_request_timed_out(now, n),
                Slot::Orphan(id) => {
                    self.orphans.remove(&id);
                }
                Slot::Clouded => {
                    if self.clouded_until.is_some_and(|until| until <= now) {
                        self.clouded_until = None;
                    }
                }
                Slot::Gather(id) => self.gathered(now, id),
                Slot::Listen => self.listen(),
                Slot::Task(n) => self.task_expired(now, n),
            }
        }
    }

    fn request_timed_out(&mut self, now: Instant, id: u64) {
        match self.requests.get(&id) {
            Some(Pending::Client(call)) => {
                let error = Error::Timeout {
                    server: self.name.clone(),
                    what: describe_call(&call.method, &Value::Null),
                    after: call.timeout,
                };
                log::warn!("session {}: {error}", call.session);
                self.end_call(now, id, "timed out at the gateway", Some(error));
            }
            Some(Pending::Internal { .. }) => {
                let Some(Pending::Internal { purpose, .. }) = self.take_request(id) else { return };
                self.out.push_back(Action::ToEdge(jsonrpc::notification(
                    "notifications/cancelled",
                    json!({"requestId": id, "reason": "timed out at the gateway"}),
                )));
                let why = format!("no answer within {} s", self.limits.rpc_timeout.as_secs_f64());
                match purpose {
                    Purpose::Initialize => self.fail(format!(
                        "initialize: {why} (a server still starting, such as one npx is downloading, gets another \
                         try when register reconnects; the gateway's --timeout-rpc sets this wait)"
                    )),
                    Purpose::Discover => {
                        log::info!("server {}: server/discover: {why}; initializing it", self.name);
                        self.initialize(now);
                    }
                    Purpose::List { kind, refresh, .. } => self.list_failed(now, kind, refresh, &why),
                    Purpose::Ignore => {}
                }
            }
            None => {}
        }
    }

    fn server_request_timed_out(&mut self, now: Instant, n: u64) {
        let Some(req) = self.server_requests.remove(&n) else { return };
        let why = format!("the client did not answer within {} s", self.limits.client_timeout.as_secs_f64());
        let message = jsonrpc::notification(
            "notifications/cancelled",
            json!({"requestId": self.client_facing_id(n), "reason": why}),
        );
        self.out.push_back(Action::Related { caller: req.caller, message });
        match req.asker {
            Asker::Edge(edge_id) => self.out.push_back(Action::ToEdge(response(
                &edge_id,
                Err(jsonrpc::error_object(INTERNAL_ERROR, &why)),
            ))),
            Asker::Round { call, .. } => self.round_failed(now, call, &why),
        }
    }

    /// The link is gone: every call ends with an error saying why, at once.
    pub(crate) fn close(&mut self, now: Instant, why: &str) {
        self.phase = Phase::Closed;
        self.release_held(None);
        let ids: Vec<u64> = self.requests.keys().copied().collect();
        for id in ids {
            match self.take_request(id) {
                Some(Pending::Client(call)) => {
                    let what = describe_call(&call.method, &Value::Null);
                    let error = Error::Gone { server: self.name.clone(), what, why: why.to_string() };
                    let report = Report {
                        method: call.method,
                        ok: false,
                        took: now.saturating_duration_since(call.started),
                    };
                    let message = Some(error.response(&call.client_id));
                    if let Some(caller) = call.caller {
                        self.out.push_back(Action::Answer { caller, message, report });
                    }
                }
                Some(Pending::Internal { .. }) | None => {}
            }
        }
        self.server_requests.clear();
        self.deadlines.clear();
        self.stop_listening();
        self.subscriptions.clear();
        self.confirmed.clear();
        self.orphans.clear();
        self.clouded_until = None;
    }
}

/// What a list read has gathered so far: its items, their bytes, its pages.
type Listed = (Vec<Value>, usize, usize);

enum Sole<'a, D> {
    None,
    One(u64, &'a ClientCall<D>),
    Several,
}

fn index(kind: ListKind) -> usize {
    ListKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// A response to `id`: the result, or the error object as it is.
fn response(id: &Value, outcome: Result<Value, Value>) -> Value {
    match outcome {
        Ok(result) => jsonrpc::result_response(id, result),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
}

/// What a call is, for messages: `tool echo`, or the method.
fn describe_call(method: &str, params: &Value) -> String {
    match params["name"].as_str() {
        Some(name) if method == "tools/call" => format!("tool {name}"),
        _ => method.to_string(),
    }
}

/// Whether an update of `uri` concerns a subscription to `sub`: the same URI, or one under it
/// ("the uri might be a sub-resource of the one that the client actually subscribed to"), at a
/// path, query or fragment boundary, never a bare prefix (`a://x` does not cover `a://xy`).
/// The key a legacy server gave its question (`params._meta["mcpport/inputKey"]`), taken out.
fn input_key(params: &mut Value) -> Option<String> {
    let meta = params.get_mut("_meta")?.as_object_mut()?;
    let key = meta.remove(INPUT_KEY_META)?.as_str().filter(|k| !k.is_empty() && k.len() <= 128)?.to_string();
    if meta.is_empty() {
        params.as_object_mut()?.remove("_meta");
    }
    Some(key)
}

/// Whether a client's input has the shape of an answer to `method`.
fn valid_input(method: &str, answer: &Value) -> bool {
    match method {
        "elicitation/create" => answer["action"].is_string(),
        "sampling/createMessage" => answer.get("content").is_some() && answer["role"].is_string(),
        "roots/list" => answer["roots"].is_array(),
        _ => false,
    }
}

pub(crate) fn uri_covers(sub: &str, uri: &str) -> bool {
    match uri.strip_prefix(sub) {
        Some("") => true,
        Some(rest) => sub.ends_with('/') || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

/// The number in a client-facing id of a server's request (`mcpport-{serial}-{n}`), and the link
/// serial it names.
pub(crate) fn parse_client_facing_id(id: &Value) -> Option<(u64, u64)> {
    let rest = id.as_str()?.strip_prefix("mcpport-")?;
    let (serial, n) = rest.split_once('-')?;
    Some((serial.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod eras_tests;
#[cfg(test)]
mod tasks_tests;

#[cfg(test)]
mod tests;
