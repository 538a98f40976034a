//! The aggregated view at `/mcp` and `/sse`: every registered server at once.
//!
//! Lists come from the catalog (tools and prompts prefixed `{server}_`, resources and templates
//! as they are), paginated with the gateway's own opaque cursors. Calls are routed back by the
//! catalog's tables: tools and prompts by exposed name, resource reads, subscriptions and
//! completions by URI or template. `logging/setLevel` goes to every server that logs, and each
//! session gets the messages at or above its own level. The gateway adds one tool of its own,
//! `list_servers`.

use serde_json::{json, Value};

use super::catalog::{ListKind, LIST_SERVERS};
use super::mcp::{forward, subscribe, Outcome};
use super::server::Origin;
use super::session::Session;
use super::Gateway;
use crate::jsonrpc::{self, INVALID_PARAMS, METHOD_NOT_FOUND};
use crate::protocol::is_log_level;

/// Items per page of an aggregated list.
const PAGE: usize = 100;
/// "Resource not found" (2024-11-05 … 2025-11-25).
const RESOURCE_NOT_FOUND: i64 = -32002;

/// Answers a request on the aggregated view (the lifecycle is `mcp.rs`'s).
pub(crate) fn respond(gw: &Gateway, method: &str, params: Value, origin: Origin) -> Outcome {
    let session = origin.session.clone();
    match method {
        "tools/list" => page(gw, ListKind::Tools, &params),
        "prompts/list" => page(gw, ListKind::Prompts, &params),
        "resources/list" => page(gw, ListKind::Resources, &params),
        "resources/templates/list" => page(gw, ListKind::Templates, &params),
        "tools/call" => call_tool(gw, params, origin),
        "prompts/get" => get_prompt(gw, params, origin),
        "resources/read" => by_uri(gw, method, params, origin),
        "resources/subscribe" | "resources/unsubscribe" => subscription(gw, method, params, origin),
        "completion/complete" => complete(gw, params, origin),
        "logging/setLevel" => set_level(gw, &session, &params),
        _ => Err(error(METHOD_NOT_FOUND, &format!("method not found: {method}"))),
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
fn page(gw: &Gateway, kind: ListKind, params: &Value) -> Outcome {
    let catalog = gw.registry.catalog();
    let items = kind.items(&catalog.lists);
    let start = match &params["cursor"] {
        Value::Null => 0,
        Value::String(c) => c.parse::<usize>().ok().filter(|n| *n <= items.len()).ok_or_else(|| {
            error(INVALID_PARAMS, &format!("invalid cursor {c:?}: use the nextCursor of the previous page"))
        })?,
        other => return Err(error(INVALID_PARAMS, &format!("invalid cursor {other}"))),
    };
    let end = (start + PAGE).min(items.len());
    let mut result = json!({ kind.key(): items[start..end] });
    if end < items.len() {
        result["nextCursor"] = json!(end.to_string());
    }
    Ok(result)
}

fn call_tool(gw: &Gateway, mut params: Value, origin: Origin) -> Outcome {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    if name == LIST_SERVERS {
        return Ok(list_servers(gw));
    }
    let catalog = gw.registry.catalog();
    let Some((server, original)) = catalog.route(&name) else {
        return Err(error(INVALID_PARAMS, &format!("Unknown tool: {name}")));
    };
    params["name"] = json!(original);
    forward(gw, server, "tools/call", params, origin)
}

fn get_prompt(gw: &Gateway, mut params: Value, origin: Origin) -> Outcome {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    let catalog = gw.registry.catalog();
    let Some((server, original)) = catalog.route_prompt(&name) else {
        return Err(error(INVALID_PARAMS, &format!("Unknown prompt: {name}")));
    };
    params["name"] = json!(original);
    forward(gw, server, "prompts/get", params, origin)
}

/// The server that serves `params.uri`, or the resource-not-found error.
fn server_for_uri(gw: &Gateway, params: &Value) -> Result<String, Option<Value>> {
    let uri = params["uri"].as_str().unwrap_or_default();
    let catalog = gw.registry.catalog();
    catalog.route_uri(uri).map(str::to_string).ok_or_else(|| {
        Some(json!({"code": RESOURCE_NOT_FOUND, "message": format!("Resource not found: {uri}"), "data": {"uri": uri}}))
    })
}

/// A read goes to the server that lists the URI (or a template that matches it). A URI no list
/// knows may be one a server made a moment ago, announcing it with a `list_changed` the
/// gateway is still refreshing: then each server with resources is asked in turn, and the first
/// answer that is not an error wins.
fn by_uri(gw: &Gateway, method: &str, params: Value, origin: Origin) -> Outcome {
    let not_found = match server_for_uri(gw, &params) {
        Ok(server) => return forward(gw, &server, method, params, origin),
        Err(e) => e,
    };
    for up in gw.registry.servers().iter().filter(|up| up.is_ready() && up.has_capability("resources")) {
        if let Ok(result) = forward(gw, &up.name, method, params.clone(), origin.clone()) {
            return Ok(result);
        }
    }
    Err(not_found)
}

fn subscription(gw: &Gateway, method: &str, params: Value, origin: Origin) -> Outcome {
    let server = server_for_uri(gw, &params)?;
    subscribe(gw, &server, method, params, origin)
}

/// Completions for a prompt argument (by exposed prompt name) or a resource template.
fn complete(gw: &Gateway, mut params: Value, origin: Origin) -> Outcome {
    let catalog = gw.registry.catalog();
    let reference = &params["ref"];
    let server = match reference["type"].as_str() {
        Some("ref/prompt") => {
            let name = reference["name"].as_str().unwrap_or_default();
            let (server, original) = catalog
                .route_prompt(name)
                .ok_or_else(|| error(INVALID_PARAMS, &format!("Unknown prompt: {name}")))?;
            let server = server.to_string();
            params["ref"]["name"] = json!(original);
            server
        }
        Some("ref/resource") => {
            let uri = reference["uri"].as_str().unwrap_or_default();
            let server = catalog.route_template(uri).or_else(|| catalog.route_uri(uri));
            server
                .ok_or_else(|| error(INVALID_PARAMS, &format!("Unknown resource or template: {uri}")))?
                .to_string()
        }
        _ => {
            return Err(error(
                INVALID_PARAMS,
                "completion/complete needs a ref of type ref/prompt or ref/resource",
            ))
        }
    };
    forward(gw, &server, "completion/complete", params, origin)
}

/// Sets the session's level and passes it on to every server that logs.
fn set_level(gw: &Gateway, session: &Session, params: &Value) -> Outcome {
    let level = params["level"].as_str().unwrap_or_default();
    if !is_log_level(level) {
        return Err(error(INVALID_PARAMS, &format!("invalid log level {level:?}")));
    }
    session.update(|s| s.log_level = Some(level.to_string()));
    for up in gw.registry.servers().iter().filter(|up| up.has_capability("logging")) {
        up.fire("logging/setLevel", json!({"level": level}), gw.registry.mint_id());
    }
    Ok(json!({}))
}

fn list_servers(gw: &Gateway) -> Value {
    let catalog = gw.registry.catalog();
    let servers: Vec<Value> = gw
        .registry
        .servers()
        .iter()
        .map(|up| {
            let mut summary = up.summary();
            summary["tools"] = json!(catalog.exposed_for(&up.name));
            summary
        })
        .collect();
    let structured = json!({"servers": servers});
    json!({
        "content": [{"type": "text", "text": serde_json::to_string_pretty(&structured).unwrap_or_default()}],
        "structuredContent": structured,
    })
}

fn error(code: i64, message: &str) -> Option<Value> {
    Some(jsonrpc::error_object(code, message))
}
