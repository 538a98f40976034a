//! What crosses into and out of a link: a client's `Call` (with who the client is and what it
//! can answer, `ClientCaps`, and what a 2026-07-28 retry brings, `ClientInput`), the `Input`s the
//! link's owner feeds it, the `Action`s it returns, and the `Limits` it holds to. Plain data,
//! below the state machine (`mod.rs`) and the era functions (`eras.rs`) that both use it.

use std::time::Duration;

use serde_json::Value;

use crate::gateway::credential::Holder;
use crate::gateway::link::lists::{ListKind, Lists};
use crate::gateway::link::state::{Resume, StateKey};

/// A client session, by its id.
pub(crate) type SessionKey = String;

/// Who a client is, as a modern edge must hear it in every request's `_meta`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ClientMeta {
    /// `capabilities` of its `initialize`, or its request's `clientCapabilities`.
    pub capabilities: Value,
    /// `clientInfo` of its `initialize`, or its request's `clientInfo`.
    pub info: Value,
    /// The log level it asked for (`logging/setLevel`, or its request's `logLevel`).
    pub log_level: Option<String>,
}

/// What one link may hold at once, and how long it waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Client requests in flight at this server; past it, new ones are refused as busy.
    pub max_calls: usize,
    /// Requests of the server to clients awaiting their answers.
    pub max_server_requests: usize,
    /// URIs with subscribers.
    pub max_subscriptions: usize,
    /// Pages of one list followed; a list with more is refused.
    pub max_pages: usize,
    /// Items, and bytes, of one list; a list with more is refused.
    pub max_list_items: usize,
    pub max_list_bytes: usize,
    /// How long the gateway's own requests (handshake, lists) may take.
    pub rpc_timeout: Duration,
    /// How long a client has to answer a server's request (and a 2026-07-28 client to come
    /// back with the input a call waits for).
    pub client_timeout: Duration,
    /// Signs the `requestState` of `input_required` results, and the task ids clients see.
    pub state_key: StateKey,
    /// Tasks kept for this server, and for one client here; each at most `task_ttl`.
    pub max_tasks: usize,
    pub max_tasks_per_client: usize,
    pub task_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 1024,
            max_server_requests: 256,
            max_subscriptions: 4096,
            max_pages: 100,
            max_list_items: 10_000,
            max_list_bytes: 8 * 1024 * 1024,
            rpc_timeout: Duration::from_secs(10),
            client_timeout: Duration::from_secs(300),
            state_key: StateKey::default(),
            max_tasks: 1024,
            max_tasks_per_client: 64,
            task_ttl: Duration::from_secs(3600),
        }
    }
}

/// The capabilities a client declared that matter for a server's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ClientCaps {
    pub sampling: bool,
    pub elicitation: bool,
    pub roots: bool,
    /// A 2026-07-28 request: it takes no server requests, and one it has no capability for
    /// ends it with `MissingCapability`.
    pub stateless: bool,
}

impl ClientCaps {
    /// Reads them from an `initialize`'s `params.capabilities`.
    pub(crate) fn from_declared(capabilities: &Value) -> ClientCaps {
        ClientCaps {
            sampling: capabilities.get("sampling").is_some(),
            elicitation: capabilities.get("elicitation").is_some(),
            roots: capabilities.get("roots").is_some(),
            stateless: false,
        }
    }

    pub(crate) fn allows(&self, capability: &str) -> bool {
        match capability {
            "sampling" => self.sampling,
            "elicitation" => self.elicitation,
            "roots" => self.roots,
            _ => false,
        }
    }
}

/// A client's request for the server. `D` is whatever the driver needs to reach the caller.
#[derive(Debug)]
pub(crate) struct Call<D> {
    pub session: SessionKey,
    /// Who the client is (its credential, or address): a parked call resumes only for it.
    pub holder: Holder,
    /// From the aggregated view (log lines get the server's name in front of the logger).
    pub aggregated: bool,
    pub client_id: Value,
    pub method: String,
    pub params: Value,
    /// How long the server may take (restarted by progress).
    pub timeout: Duration,
    pub caps: ClientCaps,
    /// Who the client is, for a 2026-07-28 edge's `_meta`.
    pub client: ClientMeta,
    /// What a 2026-07-28 request brings for the server's questions.
    pub input: ClientInput,
    pub caller: D,
}

/// What a 2026-07-28 request brings for the server's questions (MRTR): answers by key, and the
/// call it resumes (from a `requestState` the gateway verified).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ClientInput {
    pub responses: serde_json::Map<String, Value>,
    pub resume: Option<Resume>,
    /// A `requestState` that is not this gateway's: a 2026-07-28 edge's own (passed back to it),
    /// or a forged one (refused, with why the gateway could not open it).
    pub foreign: Option<ForeignState>,
}

/// A `requestState` the gateway did not make.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForeignState {
    pub state: String,
    /// Why it is not this gateway's (what a legacy edge's caller is told).
    pub why: String,
}

/// Server requests one call may have waiting for a 2026-07-28 client's input.
pub(crate) const MAX_INPUTS: usize = 16;
/// How long server requests that come together are gathered into one `input_required`.
pub(crate) const GATHER: Duration = Duration::from_millis(50);
/// The methods that may answer `input_required` (SEP-2322).
pub(crate) const INPUT_METHODS: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];
/// Where a legacy server may name the key of its question in `input_required` (`params._meta`).
pub(crate) const INPUT_KEY_META: &str = "mcpport/inputKey";

/// What the link is told.
#[derive(Debug)]
pub(crate) enum Input<D> {
    /// A client's request (boxed: it is most of what a queue holds, and the rest stays small).
    Call(Box<Call<D>>),
    /// The client cancelled its request `client_id`.
    Cancel { session: SessionKey, client_id: Value },
    /// A client answered the server's request the link numbered `n`.
    ClientAnswer { session: SessionKey, n: u64, outcome: Result<Value, Value> },
    /// The session ended: its calls, subscriptions, level and pending answers go.
    SessionEnded { session: SessionKey },
    /// The session (on the aggregated view) wants log messages at `level` and above.
    SetLevel { session: SessionKey, level: String },
    /// A client notification the server should hear (`roots/list_changed`, or anything on the
    /// per-server view).
    Notify { method: String, params: Option<Value> },
}

/// What the driver must do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<D> {
    /// Send this message to the edge.
    ToEdge(Value),
    /// The call's end: its answer, or `None` when the client cancelled it. Exactly one per call.
    Answer { caller: D, message: Option<Value>, report: Report },
    /// A message that belongs to a call in flight (progress, a log line, a server's request).
    Related { caller: D, message: Value },
    /// A message for a session, outside any call.
    ToSession { session: SessionKey, message: Value },
    /// A notification for the sessions of this server's own endpoint.
    Broadcast(Value),
    /// The handshake is done: the server is ready with this `initialize` result and these lists.
    Ready { initialize: Value, lists: Lists },
    /// A list was read again after a `list_changed`.
    ListChanged { kind: ListKind, items: Vec<Value> },
    /// The handshake failed: tell the edge why and close the link.
    Fail { why: String },
}

/// How a call went, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub method: String,
    pub ok: bool,
    pub took: Duration,
}
