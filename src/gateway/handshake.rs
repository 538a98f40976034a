//! The MCP handshake with a newly registered server, and keeping its lists fresh.
//!
//! Runs on a helper thread through the same request path clients use, so the socket's owner
//! keeps routing answers: `initialize` (the newest protocol version the gateway speaks),
//! `notifications/initialized`, then every list the server's capabilities announce (tools,
//! prompts, resources, resource templates), following `nextCursor`. Then `{"status":
//! "registered"}` goes to the edge and the catalog is rebuilt. No sleeps: the server is visible
//! the moment its lists are in.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::catalog::{ListKind, Lists};
use super::server::Upstream;
use super::session::Scope;
use super::upstream::{describe_failure, status_frame};
use super::Gateway;
use crate::jsonrpc;
use crate::protocol::{LATEST_VERSION, SUPPORTED_VERSIONS};
use crate::thread;
use crate::ws::Out;

/// Pages of a `*/list` result followed before stopping (a server looping on cursors).
const MAX_PAGES: usize = 100;

/// The handshake; on failure the edge gets an error frame and the link is closed.
pub(crate) fn run(gw: &Arc<Gateway>, up: &Arc<Upstream>) {
    let started = Instant::now();
    match initialize_and_list(gw, up) {
        Ok(lists) => {
            let n = lists.tools.len();
            log::info!(
                "server {} ({}): registered from {}: {n} tools, {} prompts, {} resources, {} templates in {} ms",
                up.name,
                up.id,
                up.remote,
                lists.prompts.len(),
                lists.resources.len(),
                lists.templates.len(),
                started.elapsed().as_millis()
            );
            let dirty = up.set_lists(lists);
            publish(gw);
            for kind in dirty {
                refresh(gw, up, kind);
            }
            // Only now: "registered" tells the edge its tools are visible.
            let msg = format!("Registration successful, loaded {n} tools");
            let _ = up.send(&status_frame("registered", &up.id, &msg));
        }
        Err(why) => {
            log::warn!("server {} ({}): registration failed: {why}", up.name, up.id);
            let frame =
                json!({"status": "error", "id": up.id, "message": format!("registration failed: {why}")});
            let _ = up.send(&frame);
            let _ = up.outbox.send(Out::Close(1011, "registration failed".into()));
        }
    }
}

fn initialize_and_list(gw: &Gateway, up: &Upstream) -> Result<Lists, String> {
    // The gateway routes these requests to the client whose call caused them (and answers the
    // server with an error when that client lacks the capability), so it declares them all: a
    // server that checks capabilities before asking would otherwise never ask.
    let params = json!({
        "protocolVersion": LATEST_VERSION,
        "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
        "clientInfo": {"name": "mcpport-gateway", "version": env!("CARGO_PKG_VERSION")},
    });
    let init = up
        .request(&gw.registry, "initialize", params, gw.cfg.timeout_rpc, None)
        .map_err(|f| format!("initialize: {}", describe_failure(&f)))?;
    let version = init["protocolVersion"].as_str().unwrap_or("none");
    if !SUPPORTED_VERSIONS.contains(&version) {
        log::warn!(
            "server {}: answered protocol version {version:?}, which the gateway does not know",
            up.name
        );
    }
    up.set_initialize(init);
    let note = jsonrpc::notification("notifications/initialized", json!({}));
    up.send(&note).map_err(|e| format!("link lost: {e:?}"))?;
    let mut lists = Lists::default();
    for kind in ListKind::ALL {
        if up.has_capability(kind.capability()) {
            *kind.items_mut(&mut lists) = list(gw, up, kind)?;
        }
    }
    Ok(lists)
}

/// One list, following `nextCursor` to the end.
fn list(gw: &Gateway, up: &Upstream, kind: ListKind) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.take().map_or(json!({}), |c| json!({"cursor": c}));
        let page = up
            .request(&gw.registry, kind.method(), params, gw.cfg.timeout_rpc, None)
            .map_err(|f| format!("{}: {}", kind.method(), describe_failure(&f)))?;
        let Some(page_items) = page[kind.key()].as_array() else {
            return Err(format!("{}: the result has no {:?} array", kind.method(), kind.key()));
        };
        items.extend(page_items.iter().cloned());
        match &page["nextCursor"] {
            Value::String(c) if !c.is_empty() => cursor = Some(Value::String(c.clone())),
            _ => return Ok(items),
        }
    }
    log::warn!(
        "server {}: {} still had more pages after {MAX_PAGES}; keeping what was listed",
        up.name,
        kind.method()
    );
    Ok(items)
}

/// Lists one of the server's lists again, on its own thread (the socket's owner must keep
/// routing the answer), then publishes the change.
pub(crate) fn refresh(gw: &Arc<Gateway>, up: &Arc<Upstream>, kind: ListKind) {
    let Some(ticket) = up.list_changed(kind) else { return };
    let name = up.name.clone();
    let (gw, up) = (gw.clone(), up.clone());
    let spawned = thread::spawn(format!("refresh-{name}"), move || match list(&gw, &up, kind) {
        Ok(items) => {
            let n = items.len();
            if up.set_list(kind, items, ticket) {
                log::info!("server {}: {} changed ({n} items)", up.name, kind.key());
                publish(&gw);
            }
        }
        Err(why) => log::warn!("server {}: cannot refresh {}: {why}", up.name, kind.key()),
    });
    if let Err(e) = spawned {
        log::error!("server {name}: cannot start a refresh thread: {e}");
    }
}

/// Rebuilds the catalog and tells every client of the aggregated view which lists changed.
pub(crate) fn publish(gw: &Gateway) {
    let mut sent: Vec<&str> = Vec::new();
    for kind in gw.registry.rebuild_catalog() {
        let method = kind.changed_notification();
        if !sent.contains(&method) {
            gw.registry.broadcast(&Scope::All, &jsonrpc::notification(method, json!({})));
            sent.push(method);
        }
    }
}
