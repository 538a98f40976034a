//! The gateway as an MCP server for its clients: the lifecycle (`initialize`, `ping`), the
//! aggregated tool list, and tool calls routed to the server that owns the tool.
//!
//! Transport-independent: a transport hands in classified messages for a session and the
//! answers go to the session's queue. Requests that go upstream run on their own thread, so one
//! slow tool never holds up the rest of a session's traffic.

use std::sync::Arc;

use serde_json::{json, Value};

use super::catalog::LIST_SERVERS;
use super::registry::{Failure, Origin, Session};
use super::Gateway;
use crate::jsonrpc::{self, Message, INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND};
use crate::thread;

/// Protocol versions the gateway speaks with clients, oldest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// What the gateway answers when a client asks for a version it does not know.
pub(crate) const LATEST_VERSION: &str = "2025-11-25";

/// Handles one message from a client. Replies, if any, go to the session's queue.
pub(crate) fn handle_message(gw: &Arc<Gateway>, session: &Arc<Session>, msg: Message) {
    match msg {
        Message::Request { id, method, params } if method == "tools/call" => {
            let (gw2, session2) = (gw.clone(), session.clone());
            let spawned = thread::spawn("tool-call", move || {
                if let Some(reply) = respond(&gw2, &session2, &id, &method, params) {
                    session2.send(reply);
                }
            });
            if let Err(e) = spawned {
                log::error!("session {}: cannot start a thread for a tool call: {e}", session.id);
            }
        }
        Message::Request { id, method, params } => {
            if let Some(reply) = respond(gw, session, &id, &method, params) {
                session.send(reply);
            }
        }
        Message::Notification { method, params } => on_notification(gw, session, &method, params),
        Message::Response { id, .. } => {
            log::debug!("session {}: ignoring a response (id {id}) to no request of ours", session.id)
        }
    }
}

/// Answers one request. `None` when no answer may be sent (the client cancelled it).
pub(crate) fn respond(
    gw: &Gateway,
    session: &Arc<Session>,
    id: &Value,
    method: &str,
    params: Option<Value>,
) -> Option<Value> {
    let params = params.unwrap_or(json!({}));
    let outcome = match method {
        "initialize" => Ok(initialize(gw, session, &params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": gw.registry.catalog().tools})),
        "tools/call" => call_tool(gw, session, id, params),
        _ => Err(Some(jsonrpc::error_object(METHOD_NOT_FOUND, &format!("method not found: {method}")))),
    };
    match outcome {
        Ok(result) => Some(jsonrpc::result_response(id, result)),
        Err(Some(error)) => Some(json!({"jsonrpc": "2.0", "id": id, "error": error})),
        Err(None) => None,
    }
}

/// Negotiates the protocol version as the spec says: the client's if we speak it, else our latest.
fn initialize(gw: &Gateway, session: &Session, params: &Value) -> Value {
    let requested = params["protocolVersion"].as_str().unwrap_or_default();
    let version = if SUPPORTED_VERSIONS.contains(&requested) { requested } else { LATEST_VERSION };
    session.update(|s| {
        s.protocol_version = Some(version.to_string());
        s.client_capabilities = params["capabilities"].clone();
    });
    log::info!(
        "session {}: initialize from {} (protocol {version})",
        session.id,
        params["clientInfo"]["name"].as_str().unwrap_or("an unnamed client")
    );
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": "mcpport", "title": "mcpport gateway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": instructions(gw),
    })
}

/// The gateway's own instructions, then each server's, marked with its name.
fn instructions(gw: &Gateway) -> String {
    let mut text = String::from(
        "This mcpport gateway exposes the tools of the MCP servers registered with it, each named \
         {server}_{tool}. Call list_servers to see which servers are connected.",
    );
    for up in gw.registry.servers() {
        if let Some(theirs) = up.initialize_result()["instructions"].as_str().filter(|s| !s.trim().is_empty())
        {
            text.push_str(&format!("\n\n[{}] {}", up.name, theirs.trim()));
        }
    }
    text
}

/// Routes a tool call to its server under the tool's original name, and passes the result
/// through untouched.
fn call_tool(
    gw: &Gateway,
    session: &Arc<Session>,
    id: &Value,
    mut params: Value,
) -> Result<Value, Option<Value>> {
    let invalid = |m: String| Some(jsonrpc::error_object(INVALID_PARAMS, &m));
    let Some(name) = params["name"].as_str().map(str::to_string) else {
        return Err(invalid("tools/call needs a string \"name\"".into()));
    };
    if name == LIST_SERVERS {
        return Ok(list_servers(gw));
    }
    let catalog = gw.registry.catalog();
    let Some((server, original)) = catalog.route(&name) else {
        return Err(invalid(format!("Unknown tool: {name}")));
    };
    let Some(up) = gw.registry.server(server) else {
        return Err(Some(jsonrpc::error_object(
            INTERNAL_ERROR,
            &format!("server {server} is not connected"),
        )));
    };
    params["name"] = Value::String(original.to_string());
    let origin = Origin { session: session.clone(), client_id: id.clone(), progress_token: None };
    let outcome = up.request(&gw.registry, "tools/call", params, gw.cfg.timeout_run_tool, Some(origin));
    outcome.map_err(|failure| {
        let message = match failure {
            Failure::Error(error) => return Some(error),
            Failure::Cancelled => return None,
            Failure::Timeout(t) => {
                format!(
                    "tool {name}: server {server} did not answer within {} s; the call was cancelled",
                    t.as_secs_f64()
                )
            }
            Failure::Gone(why) => format!("tool {name}: server {server} went away during the call ({why})"),
            Failure::Busy => format!("tool {name}: server {server} has too many requests queued; try again"),
        };
        log::warn!("session {}: {message}", session.id);
        Some(jsonrpc::error_object(INTERNAL_ERROR, &message))
    })
}

fn list_servers(gw: &Gateway) -> Value {
    let catalog = gw.registry.catalog();
    let servers: Vec<Value> = gw
        .registry
        .servers()
        .iter()
        .map(|up| {
            let since = up.since.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
            json!({
                "name": up.name,
                "id": up.id,
                "remote": up.remote.to_string(),
                "connectedSince": since,
                "ready": up.tools().is_some(),
                "serverInfo": up.initialize_result()["serverInfo"],
                "tools": catalog.exposed_for(&up.name),
            })
        })
        .collect();
    let structured = json!({"servers": servers});
    json!({
        "content": [{"type": "text", "text": serde_json::to_string_pretty(&structured).unwrap_or_default()}],
        "structuredContent": structured,
    })
}

fn on_notification(gw: &Gateway, session: &Session, method: &str, params: Option<Value>) {
    match method {
        "notifications/initialized" => session.update(|s| s.initialized = true),
        "notifications/cancelled" => {
            let client_id = params.as_ref().map(|p| p["requestId"].clone()).unwrap_or(Value::Null);
            for up in gw.registry.servers() {
                if up.cancel_for(session, &client_id) {
                    log::info!("session {}: request {client_id} cancelled by the client", session.id);
                }
            }
        }
        _ => log::debug!("session {}: ignoring notification {method}", session.id),
    }
}
