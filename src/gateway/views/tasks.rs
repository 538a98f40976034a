//! The tasks extension's methods (`tasks/get`, `tasks/update`, `tasks/cancel`) on either view:
//! who may ask, and which server's link answers.
//!
//! Only a 2026-07-28 request may ask (a legacy session has no such methods: -32601), and only
//! one that declares the extension (-32021, naming it). The task id is the gateway's
//! (`link/tasks.rs`): it must open for the caller's credential, or the task is unknown (-32602,
//! exactly as for an id never given out: another client's task cannot even be told to exist). It
//! names its link; a per-server endpoint answers only for its own server, and a policy that
//! hides the server hides its tasks. A task whose link has ended is answered here: it failed.

use serde_json::Value;

use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::error::Error;
use crate::gateway::link::task_calls::unknown_task;
use crate::gateway::link::tasks;
use crate::gateway::shared::Gateway;
use crate::gateway::views::aggregate::Routed;
use crate::gateway::views::permit;

/// Routes a `tasks/*` request to the link of the server whose task it names.
pub(crate) fn route(gw: &Gateway, session: &Session, method: &str, params: Value) -> Result<Routed, Error> {
    if session.kind != Kind::Stateless {
        return Err(Error::UnknownMethod(method.into()));
    }
    if !session.read(|s| tasks::declared(&s.client_capabilities)) {
        return Err(Error::MissingCapability(tasks::EXTENSION));
    }
    let Some(id) = params["taskId"].as_str() else {
        return Err(Error::InvalidParams(format!("{method}: taskId must be a string")));
    };
    let Some(r) = tasks::open_id(&gw.state_key, id, &session.holder) else {
        return Err(unknown_task(id));
    };
    let Some(up) = gw.registry.server_by_serial(r.serial) else {
        let why = "the server it ran on disconnected, or was replaced; the task's outcome is unknown";
        return Ok(Routed::Answer(tasks::unreachable(method, id, r.created_ms, why)));
    };
    let elsewhere = matches!(&session.scope, Scope::Server(name) if *name != up.name);
    if elsewhere || !permit::grant_of(gw, session).sees_server(&up.name) {
        return Err(unknown_task(id));
    }
    Ok(Routed::Forward { server: up.name.clone(), method: method.into(), params })
}
