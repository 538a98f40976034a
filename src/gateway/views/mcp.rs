//! The gateway as an MCP server for its clients, whatever the transport: the lifecycle
//! (`initialize`, `ping`), the aggregated view (decided in `aggregate.rs`), and the per-server
//! view (one server as itself: everything but the lifecycle is forwarded).
//!
//! A transport hands in classified messages for a session with a `Reply` (the session's stream,
//! or the POST that carried them). What the gateway answers itself is answered here, on the
//! connection's thread. What goes to a server becomes a `Call` for that server's link owner: the
//! session takes a slot for it, the link answers it exactly once, and no thread waits for it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::gateway::access::Grant;
use crate::gateway::clients::reply::{Caller, Reply};
use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::error::Error;
use crate::gateway::link::ClientMeta;
use crate::gateway::link::{parse_client_facing_id, Call, ClientCaps, ClientInput, Input};
use crate::gateway::shared::Gateway;
use crate::gateway::tables::server::Command;
use crate::gateway::views::aggregate::{self, Routed};
use crate::gateway::views::permit;
use crate::jsonrpc::Message;
use crate::protocol::{LATEST_VERSION, SERVER_METHODS, SUPPORTED_VERSIONS};
use crate::ws::SendError;

/// Handles one message from a client. Every request gets exactly one answer on `reply`: now,
/// or later from the link that serves it.
pub(crate) fn handle_message(gw: &Arc<Gateway>, session: &Arc<Session>, msg: Message, reply: &Reply) {
    session.touch();
    match msg {
        Message::Request { id, method, params } => {
            let params = params.unwrap_or_else(|| json!({}));
            if !params.is_object() {
                let e = Error::InvalidParams(format!("{method}: params must be an object"));
                return reply.finish(session, Some(e.response(&id)));
            }
            match route(gw, session, &method, params) {
                Ok(Routed::Answer(result)) => {
                    gw.metrics.request(&method, "gateway", true);
                    reply.finish(session, Some(crate::jsonrpc::result_response(&id, result)));
                }
                Ok(Routed::Forward { server, method: m, params }) => {
                    if let Err(e) = forward(gw, session, reply, id.clone(), &server, &m, params) {
                        // Refused here: the gateway handled it (a server's label is only ever a
                        // name its link holds, counted by that link).
                        gw.metrics.request(&method, "gateway", false);
                        reply.finish(session, Some(e.response(&id)));
                    }
                }
                Err(e) => {
                    gw.metrics.request(&method, "gateway", false);
                    reply.finish(session, Some(e.response(&id)));
                }
            }
        }
        Message::Notification { method, params } => on_notification(gw, session, &method, params),
        Message::Response { id, outcome } => answer_from_client(gw, session, &id, outcome),
    }
}

/// Decides what to do with a request: answer it here, or forward it to a server.
#[inline(never)]
fn route(gw: &Gateway, session: &Session, method: &str, params: Value) -> Result<Routed, Error> {
    match (&session.scope, method) {
        (_, "initialize") => initialize(gw, session, &params).map(Routed::Answer),
        (_, "ping") => Ok(Routed::Answer(json!({}))),
        (_, m) if crate::gateway::link::tasks::is_task_method(m) => {
            crate::gateway::views::tasks::route(gw, session, m, params)
        }
        // Not requests of any era the gateway offers: the 2025-11-25 task surface (the tasks
        // extension replaced it), and notifications sent as requests (an edge might act on one).
        (_, m) if m == "tasks/result" || m == "tasks/list" || m.starts_with("notifications/") => {
            Err(Error::UnknownMethod(m.into()))
        }
        (Scope::All, _) => aggregate::route(gw, session, method, params),
        (Scope::Server(name), _) => per_server(gw, session, name, method, params),
    }
}

/// A request on one server's own endpoint: forwarded, unless the client's policy restricts what
/// it may see of the server (then lists are answered here, filtered, and a name outside the
/// grant gets the error of an unknown one).
fn per_server(
    gw: &Gateway,
    session: &Session,
    name: &str,
    method: &str,
    params: Value,
) -> Result<Routed, Error> {
    let grant = permit::grant_of(gw, session);
    if !grant.is_everything() {
        if !grant.sees_server(name) {
            gw.metrics.policy_decision("server", false);
            return Err(Error::NoServer(name.into()));
        }
        // A method the policy cannot judge (an extension's) is not passed on for a client the
        // policy restricts: it could reach what the policy hides.
        let judged = SERVER_METHODS.contains(&method)
            || matches!(method, "resources/subscribe" | "resources/unsubscribe" | "logging/setLevel");
        if !judged {
            return Err(Error::UnknownMethod(method.into()));
        }
        if let Some(kind) = permit::list_kind(method) {
            return permit::server_list(gw, &grant, name, kind, &params).map(Routed::Answer);
        }
        if let Some((item, what)) = permit::named_in(method, &params)? {
            if !permit::allowed(gw, session, &grant, item, name, &what) {
                return Err(permit::unknown(item, &what));
            }
        }
    }
    Ok(Routed::Forward { server: name.into(), method: method.into(), params })
}

/// Negotiates the protocol version as the spec says: the client's if we speak it, else our
/// latest. The aggregated view describes the gateway; the per-server view, the server.
#[inline(never)]
fn initialize(gw: &Gateway, session: &Session, params: &Value) -> Result<Value, Error> {
    let requested = params["protocolVersion"].as_str().unwrap_or_default();
    let version = if SUPPORTED_VERSIONS.contains(&requested) { requested } else { LATEST_VERSION };
    let mut result = description(gw, &session.scope, "initialize", &permit::grant_of(gw, session))?;
    // The tasks extension is for 2026-07-28 requests only (`views/tasks.rs`).
    crate::gateway::link::tasks::undeclare(&mut result["capabilities"]);
    match result.as_object_mut() {
        Some(fields) => fields.insert("protocolVersion".into(), json!(version)),
        None => return Err(Error::NotConnected { server: "this".into(), what: "initialize".into() }),
    };
    session.update(|s| {
        s.protocol_version = Some(version.to_string());
        s.client_capabilities = params["capabilities"].clone();
        s.client_info = params["clientInfo"].clone();
    });
    log::info!(
        "session {}: initialize from {} (protocol {version})",
        session.id,
        params["clientInfo"]["name"]
            .as_str()
            .map_or("an unnamed client".into(), |n| n.chars().take(64).collect::<String>())
    );
    Ok(result)
}

/// What this view offers, as an `initialize` result describes it: the gateway's aggregated view,
/// or the one server as it introduced itself (an error naming `what` when it is not ready).
pub(crate) fn description(gw: &Gateway, scope: &Scope, what: &str, grant: &Grant) -> Result<Value, Error> {
    match scope {
        Scope::All => Ok(aggregate::initialize_result(gw, grant)),
        Scope::Server(name) => match gw.registry.server(name) {
            Some(up) if up.is_ready() => Ok(up.initialize_result()),
            _ => Err(Error::NotConnected { server: name.clone(), what: what.into() }),
        },
    }
}

/// Hands a request to the link of `server` as a call. Errors are for the caller to answer; once
/// the link has the call, the link answers it.
#[inline(never)]
fn forward(
    gw: &Gateway,
    session: &Arc<Session>,
    reply: &Reply,
    id: Value,
    server: &str,
    method: &str,
    params: Value,
) -> Result<(), Error> {
    let Some(up) = gw.registry.server(server).filter(|up| up.is_ready()) else {
        return Err(Error::NotConnected { server: server.into(), what: described(method, &params) });
    };
    let key = id.to_string();
    let timeout = if method == "tools/call" { gw.cfg.timeout_run_tool } else { gw.cfg.timeout_rpc };
    // What a 2026-07-28 retry brought is taken by `call_for`, out of this frame.
    if session.read(|s| s.input.resume.as_ref().is_some_and(|r| r.server != server)) {
        return Err(Error::InvalidParams(format!(
            "requestState belongs to another server than the one {} routes to",
            described(method, &params)
        )));
    }
    // The caller exists only once the session gave the call a slot: a refused call was never
    // anyone's to answer but ours.
    let hand_over = || {
        let caller = Caller::new(session.clone(), reply.clone(), key.clone(), gw.in_flight.clone());
        up.tell(Command::Link(Input::Call(call_for(session, id.clone(), method, params, timeout, caller))))
    };
    let sent =
        session.begin_call(&key, up.clone(), gw.cfg.max_calls_per_session, gw.cfg.timeout_rpc, hand_over)?;
    if let Err((why, back)) = sent {
        not_taken(session, server, why, back);
    }
    Ok(())
}

/// What a request is, for errors: the tool it calls, or its method.
fn described(method: &str, params: &Value) -> String {
    match params["name"].as_str() {
        Some(name) if method == "tools/call" => format!("tool {name}"),
        _ => method.to_string(),
    }
}

/// A call the link's queue did not take: answered here, with why.
#[cold]
#[inline(never)]
fn not_taken(session: &Session, server: &str, why: SendError, back: Command) {
    let Command::Link(Input::Call(call)) = back else { return };
    let what = described(&call.method, &call.params);
    let error = match why {
        SendError::Full => {
            Error::Busy(format!("{what}: server {server} has too many requests queued; try again"))
        }
        SendError::Closed => Error::Gone { server: server.into(), what, why: "its link closed".into() },
    };
    log::warn!("session {}: {error}", session.id);
    call.caller.finish(Some(error.response(&call.client_id)));
}

/// The call for a request, boxed from the start and built out of line: its parts are the
/// biggest values on a POST's way, and a connection thread keeps the stack pages it touched.
/// Who the client is, and what its 2026-07-28 retry brought (taken: it is this call's alone),
/// come from the session in one look.
#[inline(never)]
fn call_for(
    session: &Session,
    client_id: Value,
    method: &str,
    params: Value,
    timeout: Duration,
    caller: Caller,
) -> Box<Call<Caller>> {
    let mut input = ClientInput::default();
    let (mut caps, client) = session.update(|s| {
        input = std::mem::take(&mut s.input);
        let client = ClientMeta {
            capabilities: s.client_capabilities.clone(),
            info: s.client_info.clone(),
            log_level: s.log_level.clone(),
        };
        (ClientCaps::from_declared(&s.client_capabilities), client)
    });
    caps.stateless = session.kind == Kind::Stateless;
    Box::new(Call {
        session: session.id.clone(),
        holder: session.holder,
        aggregated: session.scope == Scope::All,
        client_id,
        method: method.to_string(),
        params,
        timeout,
        caps,
        client,
        input,
        caller,
    })
}

/// A client's answer to a server's request goes back to the link that numbered it; the link
/// checks that this session was the one asked.
#[inline(never)]
fn answer_from_client(gw: &Gateway, session: &Session, id: &Value, outcome: Result<Value, Value>) {
    let Some((serial, n)) = parse_client_facing_id(id) else {
        return log::debug!("session {}: ignoring a response (id {id}) to no request of ours", session.id);
    };
    let Some(up) = gw.registry.server_by_serial(serial) else {
        return log::debug!("session {}: the server that asked request {id} is gone", session.id);
    };
    let input = Input::ClientAnswer { session: session.id.clone(), n, outcome };
    if up.tell(Command::Link(input)).is_err() {
        log::warn!("session {}: server {} did not take the answer to its request {id}", session.id, up.name);
    }
}

#[inline(never)]
fn on_notification(gw: &Gateway, session: &Session, method: &str, params: Option<Value>) {
    match method {
        "notifications/initialized" => session.update(|s| s.initialized = true),
        "notifications/cancelled" => {
            let client_id = params.as_ref().map(|p| p["requestId"].clone()).unwrap_or(Value::Null);
            if session.cancel(&client_id) {
                log::info!("session {}: request {client_id} cancelled by the client", session.id);
            }
        }
        // The client reports a change of its roots: every server it reaches may care.
        "notifications/roots/list_changed" if session.scope == Scope::All => {
            for up in gw.registry.servers() {
                let _ =
                    up.tell(Command::Link(Input::Notify { method: method.into(), params: params.clone() }));
            }
        }
        _ => match &session.scope {
            // The per-server view is the server itself: its client's notifications reach it.
            Scope::Server(name) => {
                if let Some(up) = gw.registry.server(name) {
                    let _ = up.tell(Command::Link(Input::Notify { method: method.into(), params }));
                }
            }
            Scope::All => log::debug!("session {}: ignoring notification {method}", session.id),
        },
    }
}
