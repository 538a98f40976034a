//! Tasks in the link (`tasks.rs` has the ids and the table): what a call may do with a task on
//! its way to the edge, and what its answer becomes on the way back.
//!
//! On the way out (`task_leg`): a `tools/call` of a 2026-07-28 client that declared the extension
//! may create a task, unless that client (or this server) holds as many as it may, in which case
//! the extension is taken out of the request's capabilities and the call runs as an ordinary one.
//! Every other request goes without the extension, and a 2025-11-25 `task` param is dropped (the
//! gateway never offers the older, per-session task surface). `tasks/get`, `tasks/update` and
//! `tasks/cancel` carry the gateway's id, which must open for the caller and name a task of this
//! link; the edge hears its own id.
//!
//! On the way back (`task_outcome`): a `CreateTaskResult` is recorded and its id and `ttlMs`
//! become the gateway's; one for a call that could not have a task is cancelled at the edge and
//! refused. A task's id in a `tasks/get` result is the gateway's again, and a terminal status is
//! noted (nothing to cancel when it expires). A task the edge no longer knows has failed, and
//! says so.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::tasks::{self, Entry, TaskRef};
use super::{Call, ClientCall, Era, Link, Purpose, Slot};
use crate::gateway::error::Error;
use crate::jsonrpc::{INTERNAL_ERROR, INVALID_PARAMS};

/// What a call is to the tasks of its link.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leg {
    /// Nothing: its answer cannot be a task.
    None,
    /// A `tools/call` whose answer may be a `CreateTaskResult`.
    MayCreate,
    /// A `tasks/*` request for task `n`, which its client knows as `id` and the edge as `edge`.
    Poll { id: String, n: u64, edge: String, created_ms: u64 },
}

/// Why a call does not go to the edge: answered here, or refused.
pub(crate) type Settled = Result<Value, Error>;

impl<D: Clone> Link<D> {
    /// Prepares `call` for the edge as far as tasks go (see the module's comment).
    pub(super) fn task_leg(&mut self, call: &mut Call<D>) -> Result<Leg, Settled> {
        if tasks::is_task_method(&call.method) {
            return self.task_target(call);
        }
        let mut leg = Leg::None;
        if call.method == "tools/call" {
            if let Some(params) = call.params.as_object_mut() {
                params.remove("task");
            }
            let wants =
                self.era == Era::Modern && call.caps.stateless && tasks::declared(&call.client.capabilities);
            let full =
                self.tasks.full_for(&call.holder, self.limits.max_tasks, self.limits.max_tasks_per_client);
            if wants && full {
                log::info!(
                    "session {}: server {} holds as many tasks as it may for this client; the call runs \
                     as an ordinary call",
                    call.session,
                    self.name
                );
            }
            if wants && !full {
                leg = Leg::MayCreate;
            }
        }
        if leg == Leg::None {
            tasks::undeclare(&mut call.client.capabilities);
        }
        Ok(leg)
    }

    /// The task a `tasks/*` request names: its edge id goes in the params.
    fn task_target(&mut self, call: &mut Call<D>) -> Result<Leg, Settled> {
        let id = call.params["taskId"].as_str().unwrap_or_default().to_string();
        let Some(r) = tasks::open_id(&self.limits.state_key, &id, &call.holder) else {
            return Err(Err(unknown_task(&id)));
        };
        if r.serial != self.serial {
            return Err(Ok(self.lost(&call.method, &id, r.created_ms, "the link it ran on has ended")));
        }
        let Some(entry) = self.tasks.get(r.n).filter(|e| e.holder == call.holder) else {
            return Err(Err(unknown_task(&id)));
        };
        let edge = entry.edge_id.clone();
        call.params["taskId"] = json!(edge);
        Ok(Leg::Poll { id, n: r.n, edge, created_ms: r.created_ms })
    }

    /// What a request about a task of this server that can no longer be reached gets.
    fn lost(&self, method: &str, id: &str, created_ms: u64, why: &str) -> Value {
        let why = format!("server {}: {why}; the task's outcome is unknown", self.name);
        tasks::unreachable(method, id, created_ms, &why)
    }

    /// The edge's answer to `call`, as far as tasks go.
    pub(super) fn task_outcome(
        &mut self,
        now: Instant,
        call: &ClientCall<D>,
        outcome: Result<Value, Value>,
    ) -> Result<Value, Value> {
        match (call.task.clone(), outcome) {
            (Leg::MayCreate, Ok(result)) if tasks::is_created(&result) => {
                self.task_created(now, call, result)
            }
            (Leg::Poll { .. } | Leg::None, Ok(result)) if tasks::is_created(&result) => {
                if let Ok(edge_id) = tasks::edge_id(&result) {
                    let edge_id = edge_id.to_string();
                    self.cancel_at_edge(now, &edge_id);
                }
                let why = format!(
                    "server {} answered {} with a task, which this request may not have",
                    self.name, call.method
                );
                log::warn!("session {}: {why}", call.session);
                Err(Error::Unroutable { code: INTERNAL_ERROR, why }.to_object())
            }
            (Leg::Poll { id, n, .. }, Ok(mut result)) => {
                if result.get("taskId").is_some() {
                    result["taskId"] = json!(id);
                }
                if call.method == "tasks/cancel" || tasks::is_terminal(&result) {
                    self.tasks.ended(n);
                }
                Ok(result)
            }
            (Leg::Poll { id, n, edge, created_ms }, Err(e)) if e["code"] == INVALID_PARAMS => {
                // The edge no longer knows it (its server restarted, or forgot it early), or
                // refused the request: either way the task is over for the gateway, and is
                // cancelled at the edge in case it still runs there.
                self.forget_task(n);
                self.cancel_at_edge(now, &edge);
                let why = "the server no longer knows the task";
                Ok(self.lost(&call.method, &id, created_ms, why))
            }
            (Leg::Poll { id, edge, .. }, Err(e)) => Err(masked(e, &edge, &id)),
            (_, other) => other,
        }
    }

    /// A task the edge created for `call`: kept, and shown to the client under the gateway's id.
    fn task_created(
        &mut self,
        now: Instant,
        call: &ClientCall<D>,
        mut result: Value,
    ) -> Result<Value, Value> {
        let edge_id = match tasks::edge_id(&result) {
            Ok(id) => id.to_string(),
            Err(why) => {
                let why = format!("server {} created a task the gateway cannot keep: {why}", self.name);
                log::warn!("session {}: {why}", call.session);
                return Err(Error::Unroutable { code: INTERNAL_ERROR, why }.to_object());
            }
        };
        if self.tasks.full_for(&call.holder, self.limits.max_tasks, self.limits.max_tasks_per_client) {
            // Calls that went out together may all create one: the ones past the bound go.
            self.cancel_at_edge(now, &edge_id);
            let why =
                format!("server {} holds as many tasks as it may for this client; try again", self.name);
            return Err(Error::Busy(why).to_object());
        }
        if let Some((n, gone)) = self.tasks.make_room(self.limits.max_tasks) {
            self.deadlines.remove(&(gone.expires, Slot::Task(n)));
            log::debug!("server {}: task {n} (ended) forgotten to make room", self.name);
        }
        let max_ms = u64::try_from(self.limits.task_ttl.as_millis()).unwrap_or(u64::MAX);
        let ttl_ms = tasks::ttl_ms(&result, max_ms);
        let created_ms = tasks::unix_ms();
        let expires = now + Duration::from_millis(ttl_ms);
        let entry = Entry { edge_id, holder: call.holder, expires, ended: false };
        let n = self.tasks.insert(entry);
        self.deadlines.insert((expires, Slot::Task(n)));
        let r = TaskRef { serial: self.serial, n, created_ms };
        result["taskId"] = json!(tasks::mint_id(&self.limits.state_key, r, &call.holder));
        result["ttlMs"] = json!(ttl_ms);
        log::info!(
            "session {}: server {} started task {n} (kept up to {} s; {} tasks here)",
            call.session,
            self.name,
            ttl_ms / 1000,
            self.tasks.len()
        );
        Ok(result)
    }

    /// Task `n` is past its life: forgotten, and cancelled at the edge unless it was seen to end.
    pub(super) fn task_expired(&mut self, now: Instant, n: u64) {
        let Some(entry) = self.tasks.remove(n) else { return };
        log::debug!("server {}: task {n} expired", self.name);
        if !entry.ended && self.era == Era::Modern {
            self.cancel_at_edge(now, &entry.edge_id);
        }
    }

    /// Forgets task `n` before its time, with its deadline.
    fn forget_task(&mut self, n: u64) -> Option<Entry> {
        let entry = self.tasks.remove(n)?;
        self.deadlines.remove(&(entry.expires, Slot::Task(n)));
        Some(entry)
    }

    /// The edge answered a call that had already ended here (cancelled, timed out, its client
    /// gone): a task it created is nobody's, and is cancelled at once.
    pub(super) fn late_answer(&mut self, now: Instant, outcome: &Result<Value, Value>) {
        let Ok(result) = outcome else { return };
        if self.era != Era::Modern || !tasks::is_created(result) {
            return;
        }
        if let Ok(edge_id) = tasks::edge_id(result) {
            let edge_id = edge_id.to_string();
            log::info!("server {}: a task created for a call that had ended is cancelled", self.name);
            self.cancel_at_edge(now, &edge_id);
        }
    }

    /// Asks the edge to cancel its task `edge_id`; nobody waits for the answer.
    pub(super) fn cancel_at_edge(&mut self, now: Instant, edge_id: &str) {
        self.ask(now, "tasks/cancel", tasks::cancel_params(edge_id), Purpose::Ignore);
    }
}

/// An edge's error about its task `edge`, as the client may see it: naming the task by `id`.
fn masked(error: Value, edge: &str, id: &str) -> Value {
    let text = error.to_string().replace(edge, id);
    serde_json::from_str(&text).unwrap_or(error)
}

/// The error for a task id that does not open for its presenter, or names no task kept.
pub(crate) fn unknown_task(id: &str) -> Error {
    Error::InvalidParams(format!("unknown task \"{id:.100}\": it expired, or was never given to this client"))
}
