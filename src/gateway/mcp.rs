//! The gateway as an MCP server for its clients, whatever the transport: the lifecycle
//! (`initialize`, `ping`), the aggregated view (every server's tools, prefixed, plus
//! `list_servers`), and the per-server view (one server as itself: everything but the lifecycle
//! is forwarded with rewritten ids).
//!
//! A transport hands in classified messages for a session, with an optional `reply_to` channel
//! (a Streamable HTTP POST's stream); answers and related messages go there, or to the session's
//! stream. Requests that go upstream run on a worker thread of their own (`thread::run`), so one
//! slow tool never holds up the rest of a session's traffic.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use serde_json::{json, Value};

use super::metrics::METRICS;
use super::server::{Failure, Origin};
use super::session::{Scope, Session};
use super::{aggregate, Gateway, Tally};
use crate::jsonrpc::{self, Message, INTERNAL_ERROR};
use crate::protocol::{LATEST_VERSION, SUPPORTED_VERSIONS};
use crate::thread;

/// What a request thread sends to `reply_to` when the request ends without an answer
/// (the client cancelled it).
pub(crate) const NO_ANSWER: Value = Value::Null;

/// Handles one message from a client.
pub(crate) fn handle_message(
    gw: &Arc<Gateway>,
    session: &Arc<Session>,
    msg: Message,
    reply_to: Option<Sender<Value>>,
) {
    session.touch();
    match msg {
        Message::Request { id, method, params } if answered_locally(&session.scope, &method) => {
            let answer = respond(gw, session, &id, &method, params, None).unwrap_or(NO_ANSWER);
            deliver(session, reply_to.as_ref(), answer);
        }
        Message::Request { id, method, params } => {
            let (gw2, session2, reply2) = (gw.clone(), session.clone(), reply_to.clone());
            let in_flight = Tally::new(&gw.in_flight);
            let spawned = thread::run("request", move || {
                let _in_flight = in_flight;
                let answer =
                    respond(&gw2, &session2, &id, &method, params, reply2.clone()).unwrap_or(NO_ANSWER);
                deliver(&session2, reply2.as_ref(), answer);
            });
            if let Err(e) = spawned {
                log::error!("session {}: cannot start a thread for a request: {e}", session.id);
                deliver(session, reply_to.as_ref(), NO_ANSWER);
            }
        }
        Message::Notification { method, params } => on_notification(gw, session, &method, params),
        Message::Response { id, outcome } => {
            if !gw.registry.answer_from_client(session, &id, outcome) {
                log::debug!("session {}: ignoring a response (id {id}) to no request of ours", session.id)
            }
        }
    }
}

/// Requests answered on the caller's thread: quick, and never waiting on a server.
fn answered_locally(scope: &Scope, method: &str) -> bool {
    match scope {
        Scope::All => {
            matches!(method, "initialize" | "ping" | "logging/setLevel") || method.ends_with("/list")
        }
        Scope::Server(_) => matches!(method, "initialize" | "ping"),
    }
}

fn deliver(session: &Session, reply_to: Option<&Sender<Value>>, answer: Value) {
    match reply_to {
        Some(tx) => {
            let _ = tx.send(answer);
        }
        None if !answer.is_null() => {
            session.send(answer);
        }
        None => {}
    }
}

/// Answers one request. `None` when no answer may be sent (the client cancelled it).
pub(crate) fn respond(
    gw: &Gateway,
    session: &Arc<Session>,
    id: &Value,
    method: &str,
    params: Option<Value>,
    reply_to: Option<Sender<Value>>,
) -> Option<Value> {
    let params = params.unwrap_or(json!({}));
    let origin = Origin { session: session.clone(), client_id: id.clone(), progress_token: None, reply_to };
    let outcome = match (&session.scope, method) {
        (_, "initialize") => initialize(gw, session, &params),
        (_, "ping") => Ok(json!({})),
        (Scope::All, _) => aggregate::respond(gw, method, params, origin),
        (Scope::Server(name), "resources/subscribe" | "resources/unsubscribe") => {
            subscribe(gw, name, method, params, origin)
        }
        (Scope::Server(name), _) => {
            if method == "logging/setLevel" {
                let level = params["level"].as_str().map(String::from);
                session.update(|s| s.log_level = level);
            }
            forward(gw, name, method, params, origin)
        }
    };
    if !FORWARDED.with(|f| f.replace(false)) {
        METRICS.request(method, "gateway", outcome.is_ok());
    }
    match outcome {
        Ok(result) => Some(jsonrpc::result_response(id, result)),
        Err(Some(error)) => Some(json!({"jsonrpc": "2.0", "id": id, "error": error})),
        Err(None) => None,
    }
}

/// Negotiates the protocol version as the spec says: the client's if we speak it, else our
/// latest. The aggregated view describes the gateway; the per-server view, the server.
fn initialize(gw: &Gateway, session: &Session, params: &Value) -> Outcome {
    let requested = params["protocolVersion"].as_str().unwrap_or_default();
    let version = if SUPPORTED_VERSIONS.contains(&requested) { requested } else { LATEST_VERSION };
    let mut result = match &session.scope {
        Scope::All => aggregate::initialize_result(gw),
        Scope::Server(name) => match gw.registry.server(name) {
            Some(up) if up.is_ready() => up.initialize_result(),
            _ => {
                let msg = format!("server {name} is not connected to this gateway");
                return Err(Some(jsonrpc::error_object(INTERNAL_ERROR, &msg)));
            }
        },
    };
    result["protocolVersion"] = json!(version);
    session.update(|s| {
        s.protocol_version = Some(version.to_string());
        s.client_capabilities = params["capabilities"].clone();
    });
    log::info!(
        "session {}: initialize from {} (protocol {version})",
        session.id,
        params["clientInfo"]["name"].as_str().unwrap_or("an unnamed client")
    );
    Ok(result)
}

/// `resources/subscribe` and `resources/unsubscribe`, counted per (server, URI) over every
/// session of every endpoint: the server (which has one client, the gateway) hears the first
/// subscribe and the last unsubscribe, and updates go to exactly the sessions subscribed.
pub(crate) fn subscribe(gw: &Gateway, server: &str, method: &str, params: Value, origin: Origin) -> Outcome {
    let uri = params["uri"].as_str().unwrap_or_default();
    let session = &origin.session;
    let tell_server = if method == "resources/subscribe" {
        gw.registry.subscribe(session, server, uri)
    } else {
        gw.registry.unsubscribe(session, server, uri)
    };
    if tell_server {
        forward(gw, server, method, params, origin)
    } else {
        Ok(json!({}))
    }
}

thread_local! {
    /// Set by `forward` (which counts the request under its server), so that `respond` counts
    /// only what the gateway answered itself. A request runs on one thread from start to end.
    static FORWARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a request handler produces: a result, an error object, or (`Err(None)`) nothing, when
/// the client cancelled the request.
pub(crate) type Outcome = Result<Value, Option<Value>>;

/// Sends a request to a server and waits for its answer; failures become JSON-RPC errors a
/// person can act on. `Err(None)`: the client cancelled, nothing is sent back.
pub(crate) fn forward(gw: &Gateway, server: &str, method: &str, params: Value, origin: Origin) -> Outcome {
    let Some(up) = gw.registry.server(server).filter(|up| up.is_ready()) else {
        let msg =
            format!("{method}: server {server} is not connected to this gateway (or is still registering)");
        return Err(Some(jsonrpc::error_object(INTERNAL_ERROR, &msg)));
    };
    let timeout = if method == "tools/call" { gw.cfg.timeout_run_tool } else { gw.cfg.timeout_rpc };
    let what = match params["name"].as_str() {
        Some(name) if method == "tools/call" => format!("tool {name}"),
        _ => method.to_string(),
    };
    let session_id = origin.session.id.clone();
    if up.roots_change_for(&session_id) {
        // The server holds another client's roots; it asks again, and this client answers.
        up.notify("notifications/roots/list_changed", None);
    }
    FORWARDED.with(|f| f.set(true));
    let started = std::time::Instant::now();
    let outcome = up.request(&gw.registry, method, params, timeout, Some(origin));
    METRICS.request(method, server, outcome.is_ok());
    if method == "tools/call" {
        METRICS.tool_call(server, started.elapsed());
    }
    outcome.map_err(|failure| {
        let message = match failure {
            Failure::Error(error) => return Some(error),
            Failure::Cancelled => return None,
            Failure::Timeout(t) => format!(
                "{what}: server {server} did not answer within {} s; the request was cancelled",
                t.as_secs_f64()
            ),
            Failure::Gone(why) => format!("{what}: server {server} went away during the call ({why})"),
            Failure::Busy => format!("{what}: server {server} has too many requests queued; try again"),
        };
        log::warn!("session {session_id}: {message}");
        Some(jsonrpc::error_object(INTERNAL_ERROR, &message))
    })
}

fn on_notification(gw: &Gateway, session: &Session, method: &str, params: Option<Value>) {
    match method {
        "notifications/initialized" => session.update(|s| s.initialized = true),
        // The client reports a change of its roots: every server it reaches may care.
        "notifications/roots/list_changed" if session.scope == Scope::All => {
            for up in gw.registry.servers() {
                up.notify(method, params.clone());
            }
        }
        "notifications/cancelled" => {
            let client_id = params.as_ref().map(|p| p["requestId"].clone()).unwrap_or(Value::Null);
            for up in gw.registry.servers() {
                if up.cancel_for(session, &client_id) {
                    log::info!("session {}: request {client_id} cancelled by the client", session.id);
                }
            }
        }
        _ => match &session.scope {
            // The per-server view is the server itself: its client's notifications reach it.
            Scope::Server(name) => {
                if let Some(up) = gw.registry.server(name) {
                    up.notify(method, params);
                }
            }
            Scope::All => log::debug!("session {}: ignoring notification {method}", session.id),
        },
    }
}
