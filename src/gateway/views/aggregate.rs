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

use crate::gateway::access::{Grant, Item};
use crate::gateway::clients::session::Session;
use crate::gateway::error::Error;
use crate::gateway::link::lists::ListKind;
use crate::gateway::link::tasks;
use crate::gateway::link::Input;
use crate::gateway::shared::Gateway;
use crate::gateway::tables::catalog::{Keep, LIST_SERVERS};
use crate::gateway::tables::server::Command;
use crate::gateway::views::permit;
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
    let grant = permit::grant_of(gw, session);
    let asked = Asked { gw, session, grant: &grant };
    match method {
        "tools/list" => page(&asked, ListKind::Tools, &params).map(answer),
        "prompts/list" => page(&asked, ListKind::Prompts, &params).map(answer),
        "resources/list" => page(&asked, ListKind::Resources, &params).map(answer),
        "resources/templates/list" => page(&asked, ListKind::Templates, &params).map(answer),
        "tools/call" => call_tool(&asked, params),
        "prompts/get" => get_prompt(&asked, params),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let server = server_for_uri(&asked, &params)?;
            Ok(Routed::Forward { server, method: method.into(), params })
        }
        "completion/complete" => complete(&asked, params),
        "logging/setLevel" => set_level(&asked, &params).map(answer),
        _ => Err(Error::UnknownMethod(method.into())),
    }
}

/// A request on the aggregated view: the gateway, the session, and what its client may use.
struct Asked<'a> {
    gw: &'a Gateway,
    session: &'a Session,
    grant: &'a Grant,
}

impl Asked<'_> {
    /// Whether the client may use `name` of `server` (see `permit::allowed`).
    fn may(&self, item: Item, server: &str, name: &str) -> bool {
        permit::allowed(self.gw, self.session, self.grant, item, server, name)
    }
}

/// The `initialize` result of the aggregated view: what it can route, with the instructions of
/// the servers `grant` lets the client see.
pub(crate) fn initialize_result(gw: &Gateway, grant: &Grant) -> Value {
    let mut capabilities = json!({
        "tools": {"listChanged": true},
        "prompts": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
        "completions": {},
        "logging": {},
    });
    // The tasks extension, when a server the client sees offers it (each tool says whether it
    // runs as a task, as its server listed it). Other extensions are a server's own: they are
    // offered on its own endpoint.
    let visible = gw.registry.servers().into_iter().filter(|up| grant.sees_server(&up.name));
    if visible.into_iter().any(|up| tasks::declared(&up.initialize_result()["capabilities"])) {
        capabilities["extensions"] = json!({tasks::EXTENSION: {}});
    }
    json!({
        "capabilities": capabilities,
        "serverInfo": {"name": "mcpport", "title": "mcpport gateway", "version": env!("CARGO_PKG_VERSION")},
        "instructions": instructions(gw, grant),
    })
}

/// The gateway's own instructions, then each visible server's, marked with its name.
fn instructions(gw: &Gateway, grant: &Grant) -> String {
    let naming = match gw.cfg.bare_names {
        true => "each under its own name (or {server}_{name} when another server has that name)",
        false => "each named {server}_{name}",
    };
    let mut text = format!(
        "This mcpport gateway exposes the tools and prompts of the MCP servers registered with it, \
         {naming}, and their resources under their own URIs. Call list_servers to see which servers \
         are connected."
    );
    for up in gw.registry.servers().into_iter().filter(|up| grant.sees_server(&up.name)) {
        if let Some(theirs) = up.initialize_result()["instructions"].as_str().filter(|s| !s.trim().is_empty())
        {
            text.push_str(&format!("\n\n[{}] {}", up.name, theirs.trim()));
        }
    }
    text
}

/// One page of an aggregated list, of what the client may see. The cursor is a position in the
/// whole list, as text; the catalog can change between pages, which the client learns from
/// `list_changed`.
fn page(asked: &Asked<'_>, kind: ListKind, params: &Value) -> Result<Value, Error> {
    let start = match &params["cursor"] {
        Value::Null => 0,
        Value::String(c) => c.parse::<usize>().map_err(|_| permit::bad_cursor(c))?,
        other => return Err(Error::InvalidParams(format!("invalid cursor {other}"))),
    };
    let grant = asked.grant;
    let keep = |server: &str, name: &str| grant.allows(server, name);
    let keep: Option<Keep<'_>> = if grant.is_everything() { None } else { Some(&keep) };
    let page = asked.gw.registry.catalog(|c| c.page(kind, start, PAGE, keep));
    if start > page.total {
        return Err(permit::bad_cursor(&start.to_string()));
    }
    asked.gw.metrics.policy_hid(page.hidden);
    let mut result = json!({ kind.key(): page.items });
    if let Some(next) = page.next {
        result["nextCursor"] = json!(next.to_string());
    }
    Ok(result)
}

fn call_tool(asked: &Asked<'_>, mut params: Value) -> Result<Routed, Error> {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    if name == LIST_SERVERS {
        return Ok(Routed::Answer(list_servers(asked)));
    }
    let route = asked.gw.registry.catalog(|c| c.route(&name).map(|(s, t)| (s.to_string(), t.to_string())));
    let Some((server, original)) = route.filter(|(s, t)| asked.may(Item::Tool, s, t)) else {
        return Err(permit::unknown(Item::Tool, &name));
    };
    params["name"] = json!(original);
    Ok(Routed::Forward { server, method: "tools/call".into(), params })
}

fn get_prompt(asked: &Asked<'_>, mut params: Value) -> Result<Routed, Error> {
    let name = params["name"].as_str().unwrap_or_default().to_string();
    let route =
        asked.gw.registry.catalog(|c| c.route_prompt(&name).map(|(s, t)| (s.to_string(), t.to_string())));
    let Some((server, original)) = route.filter(|(s, t)| asked.may(Item::Prompt, s, t)) else {
        return Err(permit::unknown(Item::Prompt, &name));
    };
    params["name"] = json!(original);
    Ok(Routed::Forward { server, method: "prompts/get".into(), params })
}

/// The server that lists `params.uri` (or whose template matches it), if the client may read it.
fn server_for_uri(asked: &Asked<'_>, params: &Value) -> Result<String, Error> {
    let uri = params["uri"].as_str().unwrap_or_default();
    let server = asked.gw.registry.catalog(|c| c.route_uri(uri).map(str::to_string));
    server.filter(|s| asked.may(Item::Resource, s, uri)).ok_or_else(|| permit::unknown(Item::Resource, uri))
}

/// Completions for a prompt argument (by exposed prompt name) or a resource template.
fn complete(asked: &Asked<'_>, mut params: Value) -> Result<Routed, Error> {
    let gw = asked.gw;
    let reference = params["ref"].clone();
    let server = match reference["type"].as_str() {
        Some("ref/prompt") => {
            let name = reference["name"].as_str().unwrap_or_default();
            let route =
                gw.registry.catalog(|c| c.route_prompt(name).map(|(s, t)| (s.to_string(), t.to_string())));
            let route = route.filter(|(s, t)| asked.may(Item::Prompt, s, t));
            let (server, original) = route.ok_or_else(|| permit::unknown(Item::Prompt, name))?;
            params["ref"]["name"] = json!(original);
            server
        }
        Some("ref/resource") => {
            let uri = reference["uri"].as_str().unwrap_or_default();
            let server = gw
                .registry
                .catalog(|c| c.route_template(uri).or_else(|| c.route_uri(uri)).map(str::to_string));
            let server = server.filter(|s| asked.may(Item::Resource, s, uri));
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

/// Records the session's level and tells every link of a server the client may see (each tells its server the most
/// verbose level any of its clients wants).
fn set_level(asked: &Asked<'_>, params: &Value) -> Result<Value, Error> {
    let (gw, session) = (asked.gw, asked.session);
    let level = params["level"].as_str().unwrap_or_default();
    if !is_log_level(level) {
        return Err(Error::InvalidParams(format!("invalid log level {level:?}")));
    }
    session.update(|s| s.log_level = Some(level.to_string()));
    // Only the servers the client may see: a hidden one's log lines must not reach it.
    for up in gw.registry.servers().into_iter().filter(|up| asked.grant.sees_server(&up.name)) {
        session.involve(up.clone());
        let input = Input::SetLevel { session: session.id.clone(), level: level.to_string() };
        if up.tell(Command::Link(input)).is_err() {
            log::warn!("session {}: server {} did not take the new log level", session.id, up.name);
        }
    }
    Ok(json!({}))
}

/// The gateway's own tool: the servers the client may see, with the tools it may call.
fn list_servers(asked: &Asked<'_>) -> Value {
    let (gw, grant) = (asked.gw, asked.grant);
    let mut servers: Vec<Value> = Vec::new();
    for (up, mut summary) in gw.registry.summaries(usize::MAX) {
        if grant.is_everything() {
            servers.push(summary);
            continue;
        }
        if !grant.sees_server(&up.name) {
            continue;
        }
        let tools: Vec<Value> = summary["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|exposed| {
                let route = exposed
                    .as_str()
                    .and_then(|e| gw.registry.catalog(|c| c.route(e).map(|(_, t)| t.to_string())));
                route.is_some_and(|original| grant.allows(&up.name, &original))
            })
            .cloned()
            .collect();
        summary["counts"] = serde_json::json!({"tools": tools.len()});
        summary["tools"] = Value::from(tools);
        if let Some(fields) = summary.as_object_mut() {
            fields.remove("remote");
        }
        servers.push(summary);
    }
    let structured = json!({"servers": servers});
    json!({
        "content": [{"type": "text", "text": serde_json::to_string_pretty(&structured).unwrap_or_default()}],
        "structuredContent": structured,
    })
}
