//! What the gateway tells operators in plain responses: `/health` (liveness and counts),
//! `/servers` (each registered server's summary), and the Prometheus text of `/metrics` (and of
//! `--metrics-listen`) with the gauges read at the moment of the scrape.

use serde_json::json;

use crate::gateway::shared::Gateway;
use crate::http::Response;

/// The Prometheus text exposition, with the connection and body-budget gauges.
pub(crate) fn metrics(gw: &Gateway) -> Response {
    let mut text = gw.metrics.render(ready_servers(gw), gw.registry.session_kinds(), gw.queue_budget.held());
    text.push_str(&format!(
        "# HELP mcpport_connections_open Client and edge connections counted against --max-connections.\n\
         # TYPE mcpport_connections_open gauge\nmcpport_connections_open {}\n\
         # HELP mcpport_request_body_bytes_held Bytes of request bodies reserved, of --max-body-budget.\n\
         # TYPE mcpport_request_body_bytes_held gauge\nmcpport_request_body_bytes_held {}\n",
        gw.admission.open(),
        gw.body_budget.held()
    ));
    Response::empty(200)
        .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        .body(text.into_bytes())
}

fn ready_servers(gw: &Gateway) -> usize {
    gw.registry.servers().iter().filter(|s| s.is_ready()).count()
}

pub(crate) fn health(gw: &Gateway) -> Response {
    Response::json(
        200,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "servers": ready_servers(gw),
            "sessions": gw.registry.session_count(),
        }),
    )
}

/// The registered servers, as `/servers` lists them.
pub(crate) fn servers(gw: &Gateway) -> Response {
    let servers: Vec<serde_json::Value> = gw.registry.servers().iter().map(|s| s.summary()).collect();
    Response::json(200, &json!({"servers": servers}))
}
