//! The bookkeeping of relaying JSON-RPC between one child and a succession of gateway links, as
//! a sans-IO state machine: events in (`link_up`, `on_gateway`, `on_child`, `link_down`,
//! `child_gone`), actions out (`poll_action`); no sockets, threads, clocks or channels inside.
//!
//! Every gateway request reaches the child under an id minted here, never reused, and recorded
//! with its link; the child's answer goes back only while that link is the current one. So an
//! answer the child gives after a link ended can never complete a request of the next link,
//! whatever ids the next gateway picks. Progress tokens and cancellations are translated the same
//! way. The child's own requests keep their ids and are recorded per link; a link that ends
//! answers them with an error. The first `initialize` answer is kept and given to later links,
//! so a child that outlives its links is initialized once. The same for a 2026-07-28 child: its
//! first `server/discover` answer is kept for later links' probes (and, once it also refused
//! `initialize`, that refusal for a gateway that asks `initialize` first); modern requests are
//! stateless, so nothing else is kept. Every table is capped.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Map, Value};

use crate::jsonrpc::{self, Message, INTERNAL_ERROR, INVALID_REQUEST};
use crate::protocol::ALL_VERSIONS;

/// Entries per table (requests at the child, requests at the gateway) in normal use.
pub(crate) const MAX_PENDING: usize = 4096;
/// The largest `server/discover` result kept for later links (a larger one is asked again).
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Write this line to the child's stdin.
    ToChild(String),
    /// Send this frame on gateway link `link` (only ever the current link when emitted).
    ToGateway { link: u64, text: String },
}

/// A gateway request the child is working on, under its child-side id.
#[derive(Debug)]
struct Call {
    link: u64,
    gateway_id: Value,
    /// The gateway's `params._meta.progressToken`; the child got the child-side id instead.
    gateway_token: Option<Value>,
    /// A `server/discover`: its answer may be kept for later links.
    discover: bool,
}

/// A request of the child waiting for the gateway's answer, by the child's id.
#[derive(Debug)]
struct Ask {
    link: u64,
    id: Value,
}

/// The child's answer to `initialize`, or the way to it.
#[derive(Debug)]
enum Init {
    NotAsked,
    /// Forwarded under `child_id`; these (link, gateway id) wait for the answer.
    Asked {
        child_id: u64,
        waiting: Vec<(u64, Value)>,
    },
    Known(Value),
}

/// The relay's state. One per register process (ids are never reused while it lives).
pub(crate) struct Relay {
    cap: usize,
    link: Option<u64>,
    links_opened: u64,
    /// The last id (and progress token) minted for the child.
    minted: u64,
    /// Gateway requests at the child, by child-side id.
    calls: BTreeMap<u64, Call>,
    /// (link, gateway id as JSON text) → child-side id, for the gateway's cancellations.
    by_gateway: HashMap<(u64, String), u64>,
    /// The child's requests at the gateway, by the child's id as JSON text.
    asks: BTreeMap<String, Ask>,
    init: Init,
    /// Whether the child got `notifications/initialized`.
    initialized: bool,
    /// A 2026-07-28-only child: its refusal of `initialize` and its first `server/discover`
    /// result (each kept once the child gave it; both needed to answer later links).
    refusal: Option<Value>,
    discovery: Option<Value>,
    out: VecDeque<Action>,
}

impl Relay {
    /// A relay whose tables hold at most `cap` entries each.
    pub(crate) fn new(cap: usize) -> Relay {
        Relay {
            cap,
            link: None,
            links_opened: 0,
            minted: 0,
            calls: BTreeMap::new(),
            by_gateway: HashMap::new(),
            asks: BTreeMap::new(),
            init: Init::NotAsked,
            initialized: false,
            refusal: None,
            discovery: None,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do, in order.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// A gateway link is up; returns its number. A link still up is ended first.
    pub(crate) fn link_up(&mut self) -> u64 {
        if let Some(old) = self.link {
            self.link_down(old);
        }
        self.links_opened += 1;
        self.link = Some(self.links_opened);
        self.links_opened
    }

    /// The link ended: the child is told to stop working on its requests, and the child's
    /// requests at the gateway get an error. Nothing of this link reaches the gateway again.
    pub(crate) fn link_down(&mut self, link: u64) {
        if self.link != Some(link) {
            return;
        }
        self.link = None;
        let ended: Vec<u64> = self.calls.iter().filter(|(_, c)| c.link == link).map(|(id, _)| *id).collect();
        for child_id in ended {
            self.forget_call(child_id);
            let params = json!({"requestId": child_id, "reason": "the gateway link closed"});
            self.tell_child(jsonrpc::notification("notifications/cancelled", params));
        }
        let unanswered: Vec<String> =
            self.asks.iter().filter(|(_, a)| a.link == link).map(|(k, _)| k.clone()).collect();
        for key in unanswered {
            if let Some(ask) = self.asks.remove(&key) {
                let why = "the gateway link closed before the client answered";
                self.tell_child(jsonrpc::error_response(&ask.id, INTERNAL_ERROR, why));
            }
        }
        if let Init::Asked { waiting, .. } = &mut self.init {
            waiting.retain(|(l, _)| *l != link); // initialize must not be cancelled; it is kept
        }
    }

    /// The child ended: its requests are moot, the gateway's requests at it get an error, and
    /// the next child must be initialized anew.
    pub(crate) fn child_gone(&mut self) {
        let why = "the MCP server exited before answering";
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for child_id in ids {
            if let Some(call) = self.forget_call(child_id) {
                self.answer_gateway(call.link, &call.gateway_id, Err(why));
            }
        }
        if let Init::Asked { waiting, .. } = std::mem::replace(&mut self.init, Init::NotAsked) {
            for (link, id) in waiting {
                self.answer_gateway(link, &id, Err(why));
            }
        }
        self.init = Init::NotAsked;
        self.initialized = false;
        self.refusal = None;
        self.discovery = None;
        self.asks.clear(); // nobody is left to answer
    }

    /// One JSON-RPC frame from gateway link `link`.
    pub(crate) fn on_gateway(&mut self, link: u64, text: &str) {
        if self.link != Some(link) {
            log::debug!("dropped a frame of gateway link {link}, which has ended");
            return;
        }
        match jsonrpc::parse(text.as_bytes()).and_then(jsonrpc::classify) {
            Ok(Message::Request { id, method, params }) if method == "initialize" => {
                self.gateway_initialize(link, id, params)
            }
            Ok(Message::Request { id, method, params }) => self.gateway_request(link, id, method, params),
            Ok(Message::Notification { method, params }) => self.gateway_notification(link, method, params),
            Ok(Message::Response { id, outcome }) => self.gateway_answer(link, id, outcome),
            Err(why) => log::warn!("ignored a frame from the gateway that is not JSON-RPC: {why:?}"),
        }
    }

    /// One line from the child's stdout.
    pub(crate) fn on_child(&mut self, text: &str) {
        match jsonrpc::parse(text.as_bytes()).and_then(jsonrpc::classify) {
            Ok(Message::Response { id, outcome }) => self.child_answer(id, outcome),
            Ok(Message::Request { id, method, params }) => self.child_request(id, method, params),
            Ok(Message::Notification { method, params }) => self.child_notification(method, params),
            Err(why) => log::warn!("ignored a line from the MCP server that is not JSON-RPC: {why:?}"),
        }
    }

    /// Whether nothing is pending (no request on either side, no `initialize` waiting).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.by_gateway.is_empty()
            && self.asks.is_empty()
            && !matches!(self.init, Init::Asked { .. })
    }

    // --- gateway → child -------------------------------------------------------------------

    /// `initialize`: answered from the child's first answer when there is one, else forwarded
    /// once; a second one while the first is at the child waits for the same answer.
    fn gateway_initialize(&mut self, link: u64, id: Value, params: Option<Value>) {
        let pending = self.calls.len() + self.waiting_for_init();
        if let (Init::NotAsked, Some(refusal), Some(_)) = (&self.init, &self.refusal, &self.discovery) {
            let refusal = refusal.clone();
            log::info!(
                "answered the gateway's initialize with the MCP server's refusal (it speaks 2026-07-28)"
            );
            return self.answer_gateway_raw(link, &id, Err(refusal));
        }
        match &mut self.init {
            Init::Known(result) => {
                let result = result.clone();
                log::info!("answered the gateway's initialize from the MCP server's first answer");
                self.answer_gateway(link, &id, Ok(result));
            }
            Init::Asked { .. } if pending >= self.cap => self.refuse_busy(link, &id),
            Init::Asked { waiting, .. } => waiting.push((link, id)),
            Init::NotAsked => {
                let child_id = self.mint();
                let mut params = params;
                // Its answer may go to many links: its progress (if any) is routed to none.
                if let Some(token) = progress_token_mut(&mut params) {
                    *token = child_id.into();
                }
                ask_a_version_the_original_speaks(&mut params);
                self.init = Init::Asked { child_id, waiting: vec![(link, id)] };
                let method = "initialize".to_string();
                self.tell_child(encode(Message::Request { id: child_id.into(), method, params }));
            }
        }
    }

    /// Any other request: forwarded under a minted id (and minted progress token), recorded.
    fn gateway_request(&mut self, link: u64, id: Value, method: String, mut params: Option<Value>) {
        if let Some(discovery) = self.discovery.as_ref().filter(|_| method == "server/discover") {
            let discovery = discovery.clone();
            log::info!("answered the gateway's server/discover from the MCP server's first answer");
            return self.answer_gateway_raw(link, &id, Ok(discovery));
        }
        let key = (link, id.to_string());
        if self.by_gateway.contains_key(&key) {
            let why = format!("request id {id} is already in flight at this server");
            self.tell_gateway(link, jsonrpc::error_response(&id, INVALID_REQUEST, &why));
            return;
        }
        if self.calls.len() + self.waiting_for_init() >= self.cap {
            self.refuse_busy(link, &id);
            return;
        }
        let child_id = self.mint();
        let gateway_token = progress_token_mut(&mut params).map(|t| std::mem::replace(t, child_id.into()));
        self.by_gateway.insert(key, child_id);
        let discover = method == "server/discover";
        self.calls.insert(child_id, Call { link, gateway_id: id, gateway_token, discover });
        self.tell_child(encode(Message::Request { id: child_id.into(), method, params }));
    }

    fn gateway_notification(&mut self, link: u64, method: String, mut params: Option<Value>) {
        match method.as_str() {
            "notifications/initialized" if self.initialized => {
                log::debug!("swallowed a repeated notifications/initialized");
                return;
            }
            "notifications/initialized" => self.initialized = true,
            "notifications/cancelled" => {
                let Some(child_id) = self.cancelled_call(link, &params) else {
                    log::debug!("dropped a cancellation of a request the MCP server is not working on");
                    return;
                };
                self.forget_call(child_id);
                if let Some(Value::Object(p)) = &mut params {
                    p.insert("requestId".into(), child_id.into());
                }
            }
            _ => {}
        }
        self.tell_child(encode(Message::Notification { method, params }));
    }

    /// The gateway's answer to one of the child's requests: passed on if it was asked on this link.
    fn gateway_answer(&mut self, link: u64, id: Value, outcome: Result<Value, Value>) {
        let key = id.to_string();
        match self.asks.get(&key) {
            Some(ask) if ask.link == link => {
                self.asks.remove(&key);
                self.tell_child(encode(Message::Response { id, outcome }));
            }
            _ => {
                log::debug!("dropped the gateway's answer to {key}, which the MCP server is not waiting for")
            }
        }
    }

    fn cancelled_call(&self, link: u64, params: &Option<Value>) -> Option<u64> {
        let id = params.as_ref()?.get("requestId")?;
        self.by_gateway.get(&(link, id.to_string())).copied()
    }

    // --- child → gateway -------------------------------------------------------------------

    /// The child's answer: back to the gateway under the gateway's id, if its link is current.
    fn child_answer(&mut self, id: Value, outcome: Result<Value, Value>) {
        let Some(child_id) = id.as_u64() else {
            log::debug!("dropped an answer of the MCP server to an id register never sent ({id})");
            return;
        };
        if matches!(&self.init, Init::Asked { child_id: asked, .. } if *asked == child_id) {
            return self.child_initialized(outcome);
        }
        let Some(call) = self.forget_call(child_id) else {
            log::debug!("dropped an answer of the MCP server to request {child_id}: its link ended or it was cancelled");
            return;
        };
        if let (true, Ok(result)) = (call.discover, &outcome) {
            if self.discovery.is_none() && result.to_string().len() <= MAX_DISCOVERY_BYTES {
                self.discovery = Some(result.clone());
            }
        }
        if self.link == Some(call.link) {
            self.answer_gateway_raw(call.link, &call.gateway_id, outcome);
        } else {
            log::debug!(
                "dropped an answer of the MCP server for gateway link {}, which has ended",
                call.link
            );
        }
    }

    /// The child answered `initialize`: keep a success for later links, answer who waits.
    fn child_initialized(&mut self, outcome: Result<Value, Value>) {
        let Init::Asked { waiting, .. } = std::mem::replace(&mut self.init, Init::NotAsked) else { return };
        match &outcome {
            Ok(result) => self.init = Init::Known(result.clone()),
            Err(refusal) => self.refusal = Some(refusal.clone()),
        }
        for (link, id) in waiting {
            if self.link == Some(link) {
                self.answer_gateway_raw(link, &id, outcome.clone());
            }
        }
    }

    /// A request of the child to the gateway (sampling, elicitation, roots, ping...): passed
    /// through with its own id, recorded on the current link; answered with an error at once
    /// when there is no link, the id is already waiting, or the table is full.
    fn child_request(&mut self, id: Value, method: String, params: Option<Value>) {
        let key = id.to_string();
        let refusal = match self.link {
            None => Some((INTERNAL_ERROR, "no gateway link is up, so no client can answer".to_string())),
            Some(_) if self.asks.contains_key(&key) => {
                Some((INVALID_REQUEST, format!("request id {key} is already waiting for the gateway")))
            }
            Some(_) if self.asks.len() >= self.cap => {
                Some((INTERNAL_ERROR, format!("{} requests are already waiting for the gateway", self.cap)))
            }
            Some(_) => None,
        };
        if let Some((code, why)) = refusal {
            self.tell_child(jsonrpc::error_response(&id, code, &why));
            return;
        }
        let Some(link) = self.link else { return };
        self.asks.insert(key, Ask { link, id: id.clone() });
        self.tell_gateway(link, encode(Message::Request { id, method, params }));
    }

    fn child_notification(&mut self, method: String, mut params: Option<Value>) {
        let Some(link) = self.link else {
            log::debug!("dropped the MCP server's {method}: no gateway link is up");
            return;
        };
        match method.as_str() {
            "notifications/progress" => {
                let Some(token) = self.gateway_token_of(&params, link) else {
                    log::debug!("dropped progress of a request that is not at the MCP server for this link");
                    return;
                };
                if let Some(Value::Object(p)) = &mut params {
                    p.insert("progressToken".into(), token);
                }
            }
            "notifications/cancelled" => {
                let key = params.as_ref().and_then(|p| p.get("requestId")).map(Value::to_string);
                if key.and_then(|k| self.asks.remove(&k)).is_none() {
                    log::debug!(
                        "dropped the MCP server's cancellation of a request not waiting for the gateway"
                    );
                    return;
                }
            }
            _ => {}
        }
        self.tell_gateway(link, encode(Message::Notification { method, params }));
    }

    /// The gateway's progress token for the child's `progressToken`, if it belongs to a call on
    /// `link` that came with one.
    fn gateway_token_of(&self, params: &Option<Value>, link: u64) -> Option<Value> {
        let token = params.as_ref()?.get("progressToken")?.as_u64()?;
        let call = self.calls.get(&token)?;
        (call.link == link).then(|| call.gateway_token.clone()).flatten()
    }

    // --- helpers ---------------------------------------------------------------------------

    fn mint(&mut self) -> u64 {
        self.minted += 1;
        self.minted
    }

    fn forget_call(&mut self, child_id: u64) -> Option<Call> {
        let call = self.calls.remove(&child_id)?;
        self.by_gateway.remove(&(call.link, call.gateway_id.to_string()));
        Some(call)
    }

    fn waiting_for_init(&self) -> usize {
        match &self.init {
            Init::Asked { waiting, .. } => waiting.len(),
            _ => 0,
        }
    }

    fn refuse_busy(&mut self, link: u64, id: &Value) {
        let why = format!("register has {} requests in flight at the MCP server; try again later", self.cap);
        self.answer_gateway(link, id, Err(&why));
    }

    fn answer_gateway(&mut self, link: u64, id: &Value, outcome: Result<Value, &str>) {
        let outcome = outcome.map_err(|why| jsonrpc::error_object(INTERNAL_ERROR, why));
        self.answer_gateway_raw(link, id, outcome);
    }

    fn answer_gateway_raw(&mut self, link: u64, id: &Value, outcome: Result<Value, Value>) {
        self.tell_gateway(link, encode(Message::Response { id: id.clone(), outcome }));
    }

    /// Queues a frame for `link`, which must be the current link (the one place this is checked).
    fn tell_gateway(&mut self, link: u64, msg: Value) {
        if self.link == Some(link) {
            self.out.push_back(Action::ToGateway { link, text: msg.to_string() });
        }
    }

    fn tell_child(&mut self, msg: Value) {
        self.out.push_back(Action::ToChild(msg.to_string()));
    }
}

/// The `params._meta.progressToken` of a request, to be replaced.
/// The version asked of the MCP server for the original Python gateway (0.1.x), which asks for
/// protocol version `0.1.0`, a version no revision has, yet accepts only the answers its MCP SDK
/// knows, 2024-11-05 and 2025-03-26. A server asked for an unknown version answers its newest,
/// which the original refuses; asked for this one, any server that still speaks it answers it.
pub(crate) const ORIGINAL_GATEWAY_VERSION: &str = "2025-03-26";

/// A gateway's `initialize` that asks for a version no MCP revision has (the original gateway's
/// `0.1.0`) asks the server for `ORIGINAL_GATEWAY_VERSION` instead: the server then answers a
/// version that gateway speaks whenever it speaks one too. Known versions go as asked.
fn ask_a_version_the_original_speaks(params: &mut Option<Value>) {
    let Some(asked) = params.as_mut().and_then(|p| p.get_mut("protocolVersion")) else { return };
    if asked.as_str().is_some_and(|v| ALL_VERSIONS.contains(&v)) {
        return;
    }
    log::info!(
        "the gateway asked for protocol version {asked} (the original mcpport gateway does): asking the MCP \
         server for {ORIGINAL_GATEWAY_VERSION}, the newest that gateway accepts"
    );
    *asked = ORIGINAL_GATEWAY_VERSION.into();
}

fn progress_token_mut(params: &mut Option<Value>) -> Option<&mut Value> {
    params.as_mut()?.get_mut("_meta")?.get_mut("progressToken")
}

/// A classified message back as a JSON-RPC object (`params` only when it had some).
fn encode(msg: Message) -> Value {
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), "2.0".into());
    let (id, method, params, outcome) = match msg {
        Message::Request { id, method, params } => (Some(id), Some(method), params, None),
        Message::Notification { method, params } => (None, Some(method), params, None),
        Message::Response { id, outcome } => (Some(id), None, None, Some(outcome)),
    };
    if let Some(id) = id {
        obj.insert("id".into(), id);
    }
    if let Some(method) = method {
        obj.insert("method".into(), method.into());
    }
    if let Some(params) = params {
        obj.insert("params".into(), params);
    }
    match outcome {
        Some(Ok(result)) => obj.insert("result".into(), result),
        Some(Err(error)) => obj.insert("error".into(), error),
        None => None,
    };
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn drain(r: &mut Relay) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).expect("the relay writes JSON")
    }

    /// The one action expected, as (to the gateway?, message).
    fn one(r: &mut Relay) -> (bool, Value) {
        let actions = drain(r);
        assert_eq!(actions.len(), 1, "{actions:?}");
        match &actions[0] {
            Action::ToChild(text) => (false, parsed(text)),
            Action::ToGateway { text, .. } => (true, parsed(text)),
        }
    }

    fn to_child(r: &mut Relay) -> Value {
        let (to_gateway, msg) = one(r);
        assert!(!to_gateway, "expected a line for the child, got {msg}");
        msg
    }

    fn to_gateway(r: &mut Relay) -> Value {
        let (to_gateway, msg) = one(r);
        assert!(to_gateway, "expected a frame for the gateway, got {msg}");
        msg
    }

    fn call(id: i64, tag: &str) -> String {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tag}}).to_string()
    }

    fn answer(id: &Value, tag: &str) -> String {
        json!({"jsonrpc": "2.0", "id": id, "result": {"text": tag}}).to_string()
    }

    /// The original gateway asks for `0.1.0` and accepts only 2024-11-05 and 2025-03-26: the
    /// server is asked for 2025-03-26. A known version goes to the server as the gateway asked.
    #[test]
    fn an_unknown_version_asked_by_the_original_becomes_one_it_speaks() {
        for (asked, sent) in
            [("0.1.0", "2025-03-26"), ("2025-06-18", "2025-06-18"), ("2024-11-05", "2024-11-05")]
        {
            let mut r = Relay::new(MAX_PENDING);
            let link = r.link_up();
            let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "g", "version": "0"}}});
            r.on_gateway(link, &init.to_string());
            let to = to_child(&mut r);
            assert_eq!(to["params"]["protocolVersion"], sent, "{asked}");
            assert_eq!(to["params"]["clientInfo"]["name"], "g");
        }
    }

    #[test]
    fn a_call_reaches_the_child_under_a_minted_id_and_its_answer_comes_back() {
        let mut r = Relay::new(MAX_PENDING);
        let link = r.link_up();
        r.on_gateway(link, &call(7, "a"));
        let sent = to_child(&mut r);
        assert_ne!(sent["id"], json!(7));
        assert_eq!(sent["params"], json!({"name": "a"}));
        r.on_child(&answer(&sent["id"], "a"));
        let back = to_gateway(&mut r);
        assert_eq!(back, json!({"jsonrpc": "2.0", "id": 7, "result": {"text": "a"}}));
        assert!(r.is_idle());
    }

    /// Finding 1: the next gateway starts its ids at 1 again; the child's late answer to the
    /// old link's request 1 must not answer the new link's request 1.
    #[test]
    fn an_answer_for_an_ended_link_never_answers_the_next_links_request_with_the_same_id() {
        let mut r = Relay::new(MAX_PENDING);
        let first = r.link_up();
        r.on_gateway(first, &call(1, "slept 4 s"));
        let old = to_child(&mut r);
        r.link_down(first);
        let cancel = to_child(&mut r);
        assert_eq!(cancel["method"], "notifications/cancelled");
        assert_eq!(cancel["params"]["requestId"], old["id"]);

        let second = r.link_up();
        r.on_gateway(second, &call(1, "slept 6 s"));
        let new = to_child(&mut r);
        assert_ne!(new["id"], old["id"], "child-side ids are never reused");
        r.on_child(&answer(&old["id"], "slept 4 s"));
        assert_eq!(drain(&mut r), [], "the stale answer is dropped");
        r.on_child(&answer(&new["id"], "slept 6 s"));
        assert_eq!(to_gateway(&mut r)["result"]["text"], "slept 6 s");
        assert!(r.is_idle());
    }

    #[test]
    fn progress_tokens_are_minted_restored_and_dropped_once_stale() {
        let mut r = Relay::new(MAX_PENDING);
        let link = r.link_up();
        let req = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "sleep", "_meta": {"progressToken": "gw-token"}}});
        r.on_gateway(link, &req.to_string());
        let sent = to_child(&mut r);
        let token = sent["params"]["_meta"]["progressToken"].clone();
        assert_ne!(token, json!("gw-token"));
        let progress = |t: &Value| {
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": t, "progress": 1, "total": 2}})
            .to_string()
        };
        r.on_child(&progress(&token));
        let forwarded = to_gateway(&mut r);
        assert_eq!(forwarded["params"], json!({"progressToken": "gw-token", "progress": 1, "total": 2}));
        r.on_child(&progress(&json!("gw-token")));
        r.on_child(&progress(&json!(9999)));
        assert_eq!(drain(&mut r), [], "tokens register did not mint are dropped");
        r.link_down(link);
        drain(&mut r);
        let next = r.link_up();
        r.on_child(&progress(&token));
        assert_eq!(drain(&mut r), [], "progress of an ended link is dropped");
        r.link_down(next);
    }

    #[test]
    fn the_gateways_cancellation_is_translated_and_unknown_ones_dropped() {
        let mut r = Relay::new(MAX_PENDING);
        let link = r.link_up();
        r.on_gateway(link, &call(5, "x"));
        let sent = to_child(&mut r);
        let cancel = |id: i64| {
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": "user"}})
            .to_string()
        };
        r.on_gateway(link, &cancel(6));
        assert_eq!(drain(&mut r), []);
        r.on_gateway(link, &cancel(5));
        let told = to_child(&mut r);
        assert_eq!(told["params"], json!({"requestId": sent["id"], "reason": "user"}));
        r.on_child(&answer(&sent["id"], "late"));
        assert_eq!(drain(&mut r), [], "an answer after a cancellation is dropped");
        assert!(r.is_idle());
    }

    #[test]
    fn the_childs_requests_pass_through_and_are_answered_only_from_their_link() {
        let mut r = Relay::new(MAX_PENDING);
        let sampling =
            json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}});
        r.on_child(&sampling.to_string());
        let refused = to_child(&mut r);
        assert_eq!(refused["error"]["code"], INTERNAL_ERROR, "no link: refused at once");

        let first = r.link_up();
        r.on_child(&sampling.to_string());
        assert_eq!(to_gateway(&mut r), sampling, "passed through unchanged");
        r.link_down(first);
        let failed = to_child(&mut r);
        assert_eq!(failed["id"], "s1");
        assert!(failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("link closed before the client answered"));

        let second = r.link_up();
        r.on_gateway(second, &answer(&json!("s1"), "from an old client"));
        assert_eq!(drain(&mut r), [], "an answer to a request of another link is dropped");
        r.on_child(&sampling.to_string());
        to_gateway(&mut r);
        r.on_gateway(second, &answer(&json!("s1"), "ok"));
        assert_eq!(to_child(&mut r)["result"]["text"], "ok");
        assert!(r.is_idle());
    }

    #[test]
    fn the_childs_cancellation_of_its_own_request_is_passed_on_and_forgotten() {
        let mut r = Relay::new(MAX_PENDING);
        let link = r.link_up();
        r.on_child(r#"{"jsonrpc":"2.0","id":4,"method":"roots/list"}"#);
        to_gateway(&mut r);
        let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}"#;
        r.on_child(cancel);
        assert_eq!(to_gateway(&mut r)["params"]["requestId"], 4);
        assert!(r.is_idle());
        r.on_gateway(link, &answer(&json!(4), "too late"));
        assert_eq!(drain(&mut r), []);
    }

    #[test]
    fn initialize_is_answered_from_the_first_answer_and_initialized_sent_once() {
        let mut r = Relay::new(MAX_PENDING);
        let init =
            |id: Value| json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {}}).to_string();
        let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let first = r.link_up();
        r.on_gateway(first, &init(json!(1)));
        let asked = to_child(&mut r);
        assert_eq!(asked["method"], "initialize");
        r.on_child(
            &json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"protocolVersion": "2025-06-18"}})
                .to_string(),
        );
        assert_eq!(to_gateway(&mut r)["id"], 1, "answered under the gateway's id");
        r.on_gateway(first, done);
        assert_eq!(to_child(&mut r)["method"], "notifications/initialized");
        r.link_down(first);
        assert_eq!(drain(&mut r), []);

        let second = r.link_up();
        r.on_gateway(second, &init(json!("g7")));
        let expected = json!({"jsonrpc": "2.0", "id": "g7", "result": {"protocolVersion": "2025-06-18"}});
        assert_eq!(to_gateway(&mut r), expected, "from the cache, the child is not asked again");
        r.on_gateway(second, done);
        assert_eq!(drain(&mut r), [], "a repeated notifications/initialized is swallowed");

        r.child_gone();
        r.on_gateway(second, &init(json!(2)));
        assert_eq!(to_child(&mut r)["method"], "initialize", "a new child is initialized anew");
    }

    #[test]
    fn a_2026_child_is_asked_initialize_and_server_discover_once_and_a_restart_asks_again() {
        let mut r = Relay::new(MAX_PENDING);
        let request = |id: u64, method: &str| {
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"_meta": {"progressToken": 5}}})
                .to_string()
        };
        let refusal =
            json!({"code": -32022, "message": "2026-07-28 only", "data": {"supported": ["2026-07-28"]}});
        let discovery = json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}});
        let first = r.link_up();
        r.on_gateway(first, &request(1, "initialize"));
        let asked = to_child(&mut r);
        r.on_child(&json!({"jsonrpc": "2.0", "id": asked["id"], "error": refusal}).to_string());
        assert_eq!(to_gateway(&mut r)["error"], refusal, "the child's own refusal");
        r.on_gateway(first, &request(2, "server/discover"));
        let asked = to_child(&mut r);
        assert_eq!(asked["method"], "server/discover");
        r.on_child(&json!({"jsonrpc": "2.0", "id": asked["id"], "result": discovery}).to_string());
        assert_eq!(to_gateway(&mut r)["result"], discovery);
        r.link_down(first);
        assert!(r.is_idle());

        // The next link: both from here; every other request still reaches the child.
        let second = r.link_up();
        r.on_gateway(second, &request(1, "initialize"));
        assert_eq!(to_gateway(&mut r), json!({"jsonrpc": "2.0", "id": 1, "error": refusal}));
        r.on_gateway(second, &request(2, "server/discover"));
        assert_eq!(to_gateway(&mut r), json!({"jsonrpc": "2.0", "id": 2, "result": discovery}));
        r.on_gateway(second, &request(3, "tools/list"));
        assert_eq!(to_child(&mut r)["method"], "tools/list");

        // A new child may be another server: it is asked again.
        r.child_gone();
        drain(&mut r);
        r.on_gateway(second, &request(4, "initialize"));
        assert_eq!(to_child(&mut r)["method"], "initialize");
    }

    /// The gateway asks `request` on `link`; the child answers it with `error`.
    fn refused_by_child(r: &mut Relay, link: u64, request: &str, error: Value) {
        r.on_gateway(link, request);
        let asked = to_child(r);
        r.on_child(&json!({"jsonrpc": "2.0", "id": asked["id"], "error": error}).to_string());
        to_gateway(r);
    }

    #[test]
    fn a_refused_initialize_alone_is_not_kept() {
        // A child that refused initialize but answers no discovery is asked again (it may
        // have been starting): only a child known to speak 2026-07-28 is answered from here.
        let mut r = Relay::new(MAX_PENDING);
        let first = r.link_up();
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        refused_by_child(&mut r, first, init, json!({"code": -1, "message": "busy"}));
        let discover = r#"{"jsonrpc":"2.0","id":2,"method":"server/discover","params":{}}"#;
        refused_by_child(&mut r, first, discover, json!({"code": -32601, "message": "no"}));
        let second = r.link_up();
        r.on_gateway(second, init);
        assert_eq!(to_child(&mut r)["method"], "initialize");
    }

    #[test]
    fn an_initialize_whose_link_ended_still_fills_the_cache_for_the_next() {
        let mut r = Relay::new(MAX_PENDING);
        let first = r.link_up();
        r.on_gateway(first, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#);
        let asked = to_child(&mut r);
        r.link_down(first);
        assert_eq!(drain(&mut r), [], "initialize is never cancelled");
        let second = r.link_up();
        r.on_gateway(second, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#);
        assert_eq!(drain(&mut r), [], "waits for the answer already asked for");
        r.on_child(&json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"v": 1}}).to_string());
        let answered = to_gateway(&mut r);
        assert_eq!((answered["id"].clone(), answered["result"].clone()), (json!(1), json!({"v": 1})));
        assert!(r.is_idle());
    }

    #[test]
    fn every_table_is_capped_and_refusals_answer_at_once() {
        let mut r = Relay::new(2);
        let link = r.link_up();
        for id in 1..=2 {
            r.on_gateway(link, &call(id, "x"));
            to_child(&mut r);
        }
        r.on_gateway(link, &call(3, "x"));
        let busy = to_gateway(&mut r);
        assert_eq!((busy["id"].clone(), busy["error"]["code"].clone()), (json!(3), json!(INTERNAL_ERROR)));
        r.on_gateway(link, &call(2, "x"));
        assert_eq!(to_gateway(&mut r)["error"]["code"], INVALID_REQUEST, "a duplicate id is refused");
        for id in 1..=3 {
            r.on_child(&json!({"jsonrpc": "2.0", "id": format!("c{id}"), "method": "ping"}).to_string());
        }
        let actions = drain(&mut r);
        assert_eq!(actions.len(), 3);
        assert!(matches!(&actions[2], Action::ToChild(t) if parsed(t)["error"]["code"] == INTERNAL_ERROR));
        r.link_down(link);
        assert_eq!(drain(&mut r).len(), 4, "two cancellations, two errors");
        assert!(r.is_idle());
    }

    #[test]
    fn a_child_that_exits_fails_the_calls_it_had() {
        let mut r = Relay::new(MAX_PENDING);
        let link = r.link_up();
        r.on_gateway(link, &call(1, "x"));
        to_child(&mut r);
        r.child_gone();
        let failed = to_gateway(&mut r);
        assert_eq!(
            (failed["id"].clone(), failed["error"]["code"].clone()),
            (json!(1), json!(INTERNAL_ERROR))
        );
        assert!(r.is_idle());
    }

    #[test]
    fn what_is_not_json_rpc_is_dropped() {
        let mut r = Relay::new(MAX_PENDING);
        let link = r.link_up();
        for junk in ["not json", "[1,2]", r#"{"id":1}"#, r#"{"jsonrpc":"2.0","id":null,"result":1}"#] {
            r.on_child(junk);
            r.on_gateway(link, junk);
        }
        r.on_child(r#"{"jsonrpc":"2.0","id":"nobody","result":{}}"#);
        assert_eq!(drain(&mut r), []);
    }

    // --- property test ---------------------------------------------------------------------

    use crate::fuzz::Rng;

    /// A gateway request still waiting for its answer.
    struct Open {
        tag: String,
        token: Option<Value>,
        init: bool,
    }

    /// A request as the child received it.
    struct AtChild {
        id: Value,
        tag: Value,
        token: Option<Value>,
    }

    /// The relay between a model gateway (whose ids restart at 1 on every link) and a model
    /// child, with every action checked as it comes out.
    struct World {
        relay: Relay,
        rng: Rng,
        link: Option<u64>,
        next_gateway_id: i64,
        /// Gateway requests waiting, by (link, gateway id).
        open: HashMap<(u64, i64), Open>,
        /// The child's requests the gateway has seen, by link.
        seen: Vec<(u64, Value)>,
        /// Requests the child has received and not answered (some of them cancelled).
        at_child: Vec<AtChild>,
        /// Every id the child ever received, to check none is reused.
        child_ids: HashSet<String>,
        next_child_id: u64,
        /// The child's requests waiting for their one answer, by id as JSON text.
        child_open: HashSet<String>,
        initialized_sent: bool,
    }

    impl World {
        fn new(seed: u64, cap: usize) -> World {
            World {
                relay: Relay::new(cap),
                rng: Rng(seed | 1),
                link: None,
                next_gateway_id: 1,
                open: HashMap::new(),
                seen: Vec::new(),
                at_child: Vec::new(),
                child_ids: HashSet::new(),
                next_child_id: 1,
                child_open: HashSet::new(),
                initialized_sent: false,
            }
        }

        fn step(&mut self) {
            match self.rng.below(12) {
                0 | 1 => self.gateway_request(),
                2 | 3 => self.child_answers(),
                4 => self.child_progress(),
                5 => self.gateway_cancels(),
                6 => self.toggle_link(),
                7 => self.child_request(),
                8 => self.gateway_answers(),
                9 => self.child_cancels(),
                10 if self.rng.chance(10) => {
                    self.relay.child_gone();
                    self.at_child.clear(); // a dead child answers nothing
                    self.child_open.clear(); // and waits for nothing
                    self.initialized_sent = false;
                }
                _ => {
                    if let Some(link) = self.link {
                        let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
                        self.relay.on_gateway(link, done);
                    }
                }
            }
            self.check_actions();
        }

        fn gateway_request(&mut self) {
            let Some(link) = self.link else { return };
            let id = self.next_gateway_id;
            self.next_gateway_id += 1;
            let init = self.rng.chance(5);
            let tag = format!("L{link}#{id}");
            let token = self.rng.chance(50).then(|| json!(format!("tok-{link}-{id}")));
            let mut params = json!({"tag": tag});
            if let Some(t) = &token {
                params["_meta"] = json!({"progressToken": t});
            }
            let method = if init { "initialize" } else { "tools/call" };
            self.open.insert((link, id), Open { tag, token, init });
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            self.relay.on_gateway(link, &msg.to_string());
        }

        fn child_answers(&mut self) {
            if self.at_child.is_empty() {
                return;
            }
            let req = self.at_child.swap_remove(self.rng.below(self.at_child.len()));
            let msg = if self.rng.chance(20) {
                json!({"jsonrpc": "2.0", "id": req.id, "error": {"code": -1, "message": req.tag}})
            } else {
                json!({"jsonrpc": "2.0", "id": req.id, "result": {"tag": req.tag}})
            };
            self.relay.on_child(&msg.to_string());
        }

        fn child_progress(&mut self) {
            let tokens: Vec<Value> = self.at_child.iter().filter_map(|r| r.token.clone()).collect();
            let token = match tokens.len() {
                0 => json!(self.rng.below(50)),
                n => tokens[self.rng.below(n)].clone(),
            };
            let msg = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": 1}});
            self.relay.on_child(&msg.to_string());
        }

        fn gateway_cancels(&mut self) {
            let Some(link) = self.link else { return };
            let mine: Vec<i64> = self
                .open
                .iter()
                .filter(|((l, _), o)| *l == link && !o.init)
                .map(|((_, id), _)| *id)
                .collect();
            let id = match mine.len() {
                0 => 10_000 + self.rng.below(10) as i64,
                n => mine[self.rng.below(n)],
            };
            self.open.remove(&(link, id)); // no answer may come after this
            let msg =
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}});
            self.relay.on_gateway(link, &msg.to_string());
        }

        fn toggle_link(&mut self) {
            match self.link {
                Some(link) => {
                    self.link = None;
                    self.relay.link_down(link);
                    self.open.retain(|(l, _), _| *l != link); // that gateway is gone
                }
                None => {
                    self.link = Some(self.relay.link_up());
                    self.next_gateway_id = 1; // the bug's premise: every gateway starts at 1
                }
            }
        }

        fn child_request(&mut self) {
            let n = self.next_child_id;
            self.next_child_id += 1;
            let id = if n % 2 == 0 { json!(n) } else { json!(n.to_string()) };
            self.child_open.insert(id.to_string());
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": "sampling/createMessage", "params": {}});
            self.relay.on_child(&msg.to_string());
        }

        fn gateway_answers(&mut self) {
            let Some(link) = self.link else { return };
            if self.seen.is_empty() {
                return;
            }
            // Any request the gateway ever saw, also from older links and already answered.
            let (_, id) = self.seen[self.rng.below(self.seen.len())].clone();
            let msg = json!({"jsonrpc": "2.0", "id": id, "result": {}});
            self.relay.on_gateway(link, &msg.to_string());
        }

        fn child_cancels(&mut self) {
            let Some(key) = self.child_open.iter().next().cloned() else { return };
            let id: Value = serde_json::from_str(&key).unwrap();
            if self.link.is_none() || !self.seen.iter().any(|(_, seen)| *seen == id) {
                return;
            }
            self.child_open.remove(&key);
            let msg =
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}});
            self.relay.on_child(&msg.to_string());
        }

        fn check_actions(&mut self) {
            while let Some(action) = self.relay.poll_action() {
                match action {
                    Action::ToGateway { link, text } => {
                        assert_eq!(Some(link), self.link, "a frame for a link that is not up: {text}");
                        self.check_to_gateway(link, parsed(&text));
                    }
                    Action::ToChild(text) => self.check_to_child(parsed(&text)),
                }
            }
        }

        fn check_to_gateway(&mut self, link: u64, msg: Value) {
            if let Some(method) = msg["method"].as_str() {
                match (method, msg.get("id")) {
                    (_, Some(id)) => {
                        assert!(self.child_open.contains(&id.to_string()), "unknown child request {msg}");
                        self.seen.push((link, id.clone()));
                    }
                    ("notifications/progress", None) => {
                        let token = &msg["params"]["progressToken"];
                        let owner = self.open.values().find(|o| o.token.as_ref() == Some(token));
                        assert!(owner.is_some(), "progress for no open request of link {link}: {msg}");
                        let expected = token.as_str().unwrap().starts_with(&format!("tok-{link}-"));
                        assert!(expected, "progress of another link on link {link}: {msg}");
                    }
                    _ => {}
                }
                return;
            }
            let id = msg["id"].as_i64().expect("answers carry the gateway's id");
            let open = self.open.remove(&(link, id));
            let open = open.unwrap_or_else(|| panic!("an answer nobody waits for on link {link}: {msg}"));
            // The child's answers carry the tag of the request it answers (errors: code -1).
            let from_child = msg["result"]["tag"]
                .as_str()
                .or(msg["error"]["message"].as_str().filter(|_| msg["error"]["code"] == -1));
            if let (false, Some(tag)) = (open.init, from_child) {
                assert_eq!(tag, open.tag, "another request's answer: {msg}");
            }
        }

        fn check_to_child(&mut self, msg: Value) {
            match (msg["method"].as_str(), msg.get("id")) {
                (Some(_), Some(id)) => {
                    assert!(self.child_ids.insert(id.to_string()), "the child got id {id} twice");
                    let token = msg["params"]["_meta"].get("progressToken").cloned();
                    if let Some(t) = &token {
                        assert!(t.is_u64(), "the child got the gateway's token: {msg}");
                    }
                    let tag = msg["params"]["tag"].clone();
                    self.at_child.push(AtChild { id: id.clone(), tag, token });
                }
                (Some("notifications/cancelled"), None) => {
                    let id = &msg["params"]["requestId"];
                    assert!(
                        self.at_child.iter().any(|r| &r.id == id),
                        "cancelled what the child never had: {msg}"
                    );
                }
                (Some("notifications/initialized"), None) => {
                    assert!(!self.initialized_sent, "the child was told twice it is initialized");
                    self.initialized_sent = true;
                }
                (Some(_), None) => {}
                (None, Some(id)) => {
                    let answered = self.child_open.remove(&id.to_string());
                    assert!(answered, "the child got a second or unknown answer: {msg}");
                }
                (None, None) => panic!("not a message: {msg}"),
            }
        }

        /// Everyone answers what they still have; then nothing may be left anywhere.
        fn settle(&mut self) {
            while !self.at_child.is_empty() {
                self.child_answers();
                self.check_actions();
            }
            if let Some(link) = self.link {
                let mine: Vec<Value> =
                    self.seen.iter().filter(|(l, _)| *l == link).map(|(_, id)| id.clone()).collect();
                for id in mine {
                    let msg = json!({"jsonrpc": "2.0", "id": id, "result": {}});
                    self.relay.on_gateway(link, &msg.to_string());
                    self.check_actions();
                }
                self.toggle_link();
                self.check_actions();
            }
            // Cancellations at link_down go to a child that may still answer: let it.
            while !self.at_child.is_empty() {
                self.child_answers();
                self.check_actions();
            }
            assert!(self.relay.is_idle(), "entries left in the relay");
            assert!(self.child_open.is_empty(), "child requests never answered: {:?}", self.child_open);
        }
    }

    #[test]
    fn no_link_ever_sees_another_links_traffic_and_every_table_empties() {
        let cases: u64 =
            std::env::var("MCPPORT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let seed: u64 =
            std::env::var("MCPPORT_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x0072_656c_6179);
        for case in 0..cases {
            let cap = if case % 4 == 0 { 3 } else { MAX_PENDING };
            let mut world = World::new(seed.wrapping_add(case.wrapping_mul(0x9e37_79b9_7f4a_7c15)), cap);
            let steps = 20 + world.rng.below(80);
            for _ in 0..steps {
                world.step();
            }
            world.settle();
        }
    }
}
