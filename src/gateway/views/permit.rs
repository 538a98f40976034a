//! Policies applied to the MCP views: a client sees only what its grant allows (lists filtered
//! item by item), and a request for anything else gets the error an unknown name gets, so a
//! client cannot tell a forbidden tool from a missing one. A server the grant shuts out
//! entirely does not exist for the client: its endpoints answer 404 (`front/exchange.rs` asks
//! `sees_server`), and its changes are not announced to it (`tables/registry.rs`).
//!
//! Decisions on calls are counted in `/metrics` and denials logged; hidden list items are
//! counted, not logged (a list of thousands would otherwise write thousands of lines).

use serde_json::{json, Value};

use crate::gateway::access::{Grant, Item};
use crate::gateway::clients::session::Session;
use crate::gateway::error::Error;
use crate::gateway::link::lists::ListKind;
use crate::gateway::shared::Gateway;

/// Items per page of a list the gateway filters itself.
const PAGE: usize = 100;

/// The grant of the session's client under the policy in force.
pub(crate) fn grant_of(gw: &Gateway, session: &Session) -> Grant {
    gw.access.grant(&session.principal)
}

/// Whether `grant` lets the client use `name` (a tool's or prompt's name, or a URI) of
/// `server`; counted, and logged when denied.
pub(crate) fn allowed(
    gw: &Gateway,
    session: &Session,
    grant: &Grant,
    item: Item,
    server: &str,
    name: &str,
) -> bool {
    if grant.is_everything() {
        return true;
    }
    let ok = grant.allows(server, name);
    gw.metrics.policy_decision(item.label(), ok);
    if !ok {
        log::info!(
            "session {}: policy denies {} {server}/{} to {}",
            session.id,
            item.label(),
            name.chars().take(200).collect::<String>(),
            session.principal.describe()
        );
    }
    ok
}

/// The error a request for a `what` nobody lists gets; a denied one gets the same.
pub(crate) fn unknown(item: Item, name: &str) -> Error {
    match item {
        Item::Tool => Error::InvalidParams(format!("Unknown tool: {name}")),
        Item::Prompt => Error::InvalidParams(format!("Unknown prompt: {name}")),
        Item::Resource => Error::ResourceNotFound(name.chars().take(200).collect()),
    }
}

/// What a request on one server's own endpoint names, for the policy: the kind and the name
/// (`None`: it names nothing a policy decides on). A name or URI that is not a string is
/// refused here: what the policy did not see must not reach the server.
pub(crate) fn named_in(method: &str, params: &Value) -> Result<Option<(Item, String)>, Error> {
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::InvalidParams(format!("{method}: {what} must be a string")))
    };
    Ok(Some(match method {
        "tools/call" => (Item::Tool, text(&params["name"], "name")?),
        "prompts/get" => (Item::Prompt, text(&params["name"], "name")?),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            (Item::Resource, text(&params["uri"], "uri")?)
        }
        "completion/complete" => match params["ref"]["type"].as_str() {
            Some("ref/prompt") => (Item::Prompt, text(&params["ref"]["name"], "ref.name")?),
            _ => (Item::Resource, text(&params["ref"]["uri"], "ref.uri")?),
        },
        _ => return Ok(None),
    }))
}

/// A list request on one server's endpoint when a policy filters it: answered from the
/// server's lists as the gateway last read them, with the gateway's own offset cursor.
pub(crate) fn server_list(
    gw: &Gateway,
    grant: &Grant,
    server: &str,
    kind: ListKind,
    params: &Value,
) -> Result<Value, Error> {
    let start = match &params["cursor"] {
        Value::Null => 0,
        Value::String(c) => c.parse::<usize>().map_err(|_| bad_cursor(c))?,
        other => return Err(Error::InvalidParams(format!("invalid cursor {other}"))),
    };
    let up = gw.registry.server(server).filter(|up| up.is_ready());
    let up = up.ok_or_else(|| Error::NotConnected { server: server.into(), what: kind.method().into() })?;
    let lists = up.lists();
    let items = kind.items(&lists);
    if start > items.len() {
        return Err(bad_cursor(&start.to_string()));
    }
    let mut page = Vec::new();
    let mut hidden = 0;
    let mut next = None;
    for (i, item) in items.iter().enumerate().skip(start) {
        if page.len() == PAGE {
            next = Some(i);
            break;
        }
        if grant.allows(server, item.key().unwrap_or_default()) {
            page.push(item.value());
        } else {
            hidden += 1;
        }
    }
    gw.metrics.policy_hid(hidden);
    let mut result = json!({ kind.key(): page });
    if let Some(next) = next {
        result["nextCursor"] = json!(next.to_string());
    }
    Ok(result)
}

pub(crate) fn bad_cursor(c: &str) -> Error {
    Error::InvalidParams(format!("invalid cursor {c:?}: use the nextCursor of the previous page"))
}

/// The list kind a method reads, if it is one of the four list methods.
pub(crate) fn list_kind(method: &str) -> Option<ListKind> {
    ListKind::ALL.into_iter().find(|k| k.method() == method)
}
