//! The aggregated view at `/mcp` and `/sse`: every registered server at once.
//!
//! Lists come from the catalog (tools and prompts prefixed `{server}_`, resources and templates
//! as they are), paginated with the gateway's own opaque cursors, and answered here. Everything
//! else is routed to one server by the catalog's tables: tools and prompts by exposed name,
//! resource reads, subscriptions and completions by URI or template; a URI no server lists or
//! matches is an error, never a broadcast. `logging/setLevel` records the session's level and
//! tells every server's link, which tells its server the most verbose level any client wants
//! and sends each client only what it asked for. The gateway adds one tool of its own,
//! `list_servers`.

use serde_json::{json, Value};

use crate::gateway::clients::session::Session;
use crate::gateway::error::Error;
use crate::gateway::link::lists::ListKind;
use crate::gateway::link::Input;
use crate::gateway::shared::Gateway;
use crate::gateway::tables::catalog::LIST_SERVERS;
use crate::gateway::tables::server::Command;
use crate::protocol::is_log_level;

/// Items per page of an aggregated list.
const PAGE: usize = 100;

/// What the aggregated view does with a request.
#[derive(Debug)]
pub(crate) enum Routed {
    /// Answer with this result.
    Answer(Value),
    /// Send this request to that server.
    Forward { server: String, method: String, params: Value },
}

/// Decides a request on the aggregated view (the lifecycle is `mcp.rs`'s).
pub(crate) fn route(gw: &Gateway, session: &Session, method: &str, params: Value) -> Result<Routed, Error> {
    let answer = Routed::Answer;
    match method {
        "tools/list" => page(gw, ListKind::Tools, &params).map(answer),
        "prompts/list" => page(gw, ListKind::Prompts, &params).map(answer),
        "resources/list" => page(gw, ListKind::Resources, &params).map(answer),
        "resources/templates/list" => page(gw, ListKind::Templates, &params).map(answer),
        "tools/call" => call_tool(gw, params),
        "prompts/get" => get_prompt(gw, params),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let server = server_for_uri(gw, &params)?;
            Ok(Routed::Forward { server, method: method.into(), params })
        }
        "completion/complete" => complete(gw, params),
        "logging/setLevel" => set_level(gw, session, &params).map(answer),
        _ => Err(Error::UnknownMethod(method.into())),
    }
}

/// The `initialize` result of the aggregated view: what it can route.
pub(crate) fn initialize_result(gw: &Gateway) -> Value {
    json!({
        "capabilities": {
            "tools": {"listChanged": true},
            "prompts": {"listChanged": true},
            "resources": {"subscribe": true, "listChanged": true},
            "completions": {},
            "logging": {},
        },
        "serverInfo": {"name": "mcpport", "title": "mcpport gateway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": instructions(gw),
    })
}

/// The gateway's own instructions, then each server's, marked with its name.
fn instructions(gw: &Gateway) -> String {
    let mut text = String::from(
        "This mcpport gateway exposes the tools and prompts of the MCP servers registered with it, \
         each named {server}_{name}, and their resources under their own URIs. Call list_servers \
         to see which servers are connected.",
    );
    for up in gw.registry.servers() {
        if let Some(theirs) = up.initialize_result()["instructions"].as_str().filter(|s| !s.trim().is_empty())
        {
            text.push_str(&format!("\n\n[{}] {}", up.name, theirs.trim()));
        }
    }
    text
}

/// One page of an aggregated list. The cursor is the offset of the page, as text; the catalog
/// can change between pages, which the client learns from `list_changed`.
fn page(gw: &Gateway, kind: ListKind, params: &Value) -> Result<Value, Error> {
    let start = match &params["cursor"] {
        Value::Null => 0,
        Value::String(c) => c.parse::<usize>().map_err(|_| bad_cursor(c))?,
        other => return Err(Error::InvalidParams(format!("invalid cursor {other}"))),
    };
    let (items, total) = gw.registry.catalog(|c| c.page(kind, start, PAGE));
    if start > total {
        return Err(bad_cursor(&start.to_string()));
    }
    let end = start + items.len();
    let mut result = json!({ kind.key(): items });
    if end < total {
        result["nextCursor"] = json!(end.to_string());
    }
    Ok(result)
}

fn bad_cursor(c: &str) -> Error {
    Error::InvalidParams(format!("invalid cursor {c:?}: use the nextCursor of the previous page"))
}

fn call_tool(gw: &Gateway, mut params: Value) -> Result<Routed, Error> {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    if name == LIST_SERVERS {
        return Ok(Routed::Answer(list_servers(gw)));
    }
    let route = gw.registry.catalog(|c| c.route(&name).map(|(s, t)| (s.to_string(), t.to_string())));
    let Some((server, original)) = route else {
        return Err(Error::InvalidParams(format!("Unknown tool: {name}")));
    };
    params["name"] = json!(original);
    Ok(Routed::Forward { server, method: "tools/call".into(), params })
}

fn get_prompt(gw: &Gateway, mut params: Value) -> Result<Routed, Error> {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    let route = gw.registry.catalog(|c| c.route_prompt(&name).map(|(s, t)| (s.to_string(), t.to_string())));
    let Some((server, original)) = route else {
        return Err(Error::InvalidParams(format!("Unknown prompt: {name}")));
    };
    params["name"] = json!(original);
    Ok(Routed::Forward { server, method: "prompts/get".into(), params })
}

/// The server that lists `params.uri` (or whose template matches it).
fn server_for_uri(gw: &Gateway, params: &Value) -> Result<String, Error> {
    let uri = params["uri"].as_str().unwrap_or_default();
    let server = gw.registry.catalog(|c| c.route_uri(uri).map(str::to_string));
    server.ok_or_else(|| Error::ResourceNotFound(uri.chars().take(200).collect()))
}

/// Completions for a prompt argument (by exposed prompt name) or a resource template.
fn complete(gw: &Gateway, mut params: Value) -> Result<Routed, Error> {
    let reference = params["ref"].clone();
    let server = match reference["type"].as_str() {
        Some("ref/prompt") => {
            let name = reference["name"].as_str().unwrap_or_default();
            let route =
                gw.registry.catalog(|c| c.route_prompt(name).map(|(s, t)| (s.to_string(), t.to_string())));
            let (server, original) =
                route.ok_or_else(|| Error::InvalidParams(format!("Unknown prompt: {name}")))?;
            params["ref"]["name"] = json!(original);
            server
        }
        Some("ref/resource") => {
            let uri = reference["uri"].as_str().unwrap_or_default();
            let server = gw
                .registry
                .catalog(|c| c.route_template(uri).or_else(|| c.route_uri(uri)).map(str::to_string));
            server.ok_or_else(|| Error::InvalidParams(format!("Unknown resource or template: {uri}")))?
        }
        _ => {
            return Err(Error::InvalidParams(
                "completion/complete needs a ref of type ref/prompt or ref/resource".into(),
            ))
        }
    };
    Ok(Routed::Forward { server, method: "completion/complete".into(), params })
}

/// Records the session's level and tells every server's link (each tells its server the most
/// verbose level any of its clients wants).
fn set_level(gw: &Gateway, session: &Session, params: &Value) -> Result<Value, Error> {
    let level = params["level"].as_str().unwrap_or_default();
    if !is_log_level(level) {
        return Err(Error::InvalidParams(format!("invalid log level {level:?}")));
    }
    session.update(|s| s.log_level = Some(level.to_string()));
    for up in gw.registry.servers() {
        session.involve(up.clone());
        let input = Input::SetLevel { session: session.id.clone(), level: level.to_string() };
        if up.tell(Command::Link(input)).is_err() {
            log::warn!("session {}: server {} did not take the new log level", session.id, up.name);
        }
    }
    Ok(json!({}))
}

fn list_servers(gw: &Gateway) -> Value {
    let servers: Vec<Value> =
        gw.registry.summaries(usize::MAX).into_iter().map(|(_, summary)| summary).collect();
    let structured = json!({"servers": servers});
    json!({
        "content": [{"type": "text", "text": serde_json::to_string_pretty(&structured).unwrap_or_default()}],
        "structuredContent": structured,
    })
}
