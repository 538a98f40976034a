//! The two eras an edge may speak, as the link sees them: how the gateway tells them apart at
//! registration, and how a client's request is dressed for a 2026-07-28 (modern) edge. Pure
//! functions over JSON; the link (`link.rs`) keeps the state and decides when to call them.
//!
//! The probe (the revision's stdio rule): the gateway first asks `server/discover` with the
//! modern `_meta`, within `--timeout-rpc`. A result that names 2026-07-28 among its
//! `supportedVersions` makes a modern edge; an error (a legacy server's -32601), a result that is
//! not that, or silence makes the link `initialize` the server exactly as before. A dual-era
//! server (the Python SDK 2.3's stdio server, which serves the era of the first request it gets,
//! for good) becomes a modern edge, and legacy clients in front of it are translated
//! (`link_relay.rs`, `link_listen.rs`).
//!
//! What a modern edge sends before the gateway trusts it is bounded: its discovery result (in
//! bytes, versions and instructions), and each `input_required` it returns (questions, their
//! methods, the size of its `requestState`).

use serde_json::{json, Map, Value};

use crate::gateway::link::call::{ClientCaps, ClientMeta, MAX_INPUTS};
use crate::jsonrpc::weight;
use crate::protocol::{
    is_modern, META_CAPABILITIES, META_LOG_LEVEL, META_SERVER_INFO, META_VERSION, MODERN_VERSIONS,
};

/// `_meta` key of the client's identity (2026-07-28, SHOULD).
pub(crate) const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// The largest discovery result a modern edge may send.
pub(crate) const MAX_DISCOVER_BYTES: usize = 256 * 1024;
/// Versions a discovery result may name.
const MAX_VERSIONS: usize = 32;
/// The largest `requestState` of a modern edge passed on to a client.
pub(crate) const MAX_EDGE_STATE_BYTES: usize = 64 * 1024;
/// The methods a modern edge may put in `inputRequests` (SEP-2322), and the capability each needs.
const INPUT_REQUESTS: [(&str, &str); 3] =
    [("elicitation/create", "elicitation"), ("sampling/createMessage", "sampling"), ("roots/list", "roots")];

/// Which era an edge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Era {
    /// `initialize` and a session over the link (every version up to 2025-11-25).
    Legacy,
    /// 2026-07-28: no handshake; every request carries `_meta`.
    Modern,
}

/// The gateway as a 2026-07-28 client: what it declares in the probe.
pub(crate) fn gateway_meta() -> Value {
    json!({
        META_VERSION: MODERN_VERSIONS[0],
        META_CAPABILITIES: {"sampling": {}, "elicitation": {}, "roots": {}},
        META_CLIENT_INFO: {"name": "mcpport-gateway", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The params of the `server/discover` probe.
pub(crate) fn discover_params() -> Value {
    json!({"_meta": gateway_meta()})
}

/// The params of the gateway's own list requests to an edge of `era`.
pub(crate) fn list_params(era: Era, cursor: Option<Value>) -> Value {
    let mut params = cursor.map_or(json!({}), |c| json!({"cursor": c}));
    if era == Era::Modern {
        params["_meta"] = gateway_meta();
    }
    params
}

/// Reads a `server/discover` result: a modern edge's description in the shape of an
/// `initialize` result (`protocolVersion`, `capabilities`, `serverInfo`, `instructions`), which is
/// what the rest of the gateway publishes and serves; or why the result does not make the server
/// a modern edge.
pub(crate) fn discovered(name: &str, result: &Value) -> Result<Value, String> {
    if weight(result) > MAX_DISCOVER_BYTES {
        return Err(format!("the result is larger than {MAX_DISCOVER_BYTES} bytes"));
    }
    let Some(versions) = result["supportedVersions"].as_array() else {
        return Err("the result has no supportedVersions array".into());
    };
    if versions.len() > MAX_VERSIONS || !versions.iter().all(Value::is_string) {
        return Err(format!("supportedVersions is not a list of at most {MAX_VERSIONS} strings"));
    }
    let Some(version) = versions.iter().filter_map(Value::as_str).rev().find(|v| is_modern(v)) else {
        return Err(format!(
            "supportedVersions {versions:?} names no version the gateway speaks statelessly"
        ));
    };
    if !result["capabilities"].is_object() {
        return Err("the result has no capabilities object".into());
    }
    let info = &result["_meta"][META_SERVER_INFO];
    let server_info = if info["name"].is_string() {
        let mut info = info.clone();
        if !info["version"].is_string() {
            info["version"] = json!("");
        }
        info
    } else {
        json!({"name": name, "version": ""})
    };
    let mut description = json!({
        "protocolVersion": version,
        "capabilities": result["capabilities"].clone(),
        "serverInfo": server_info,
    });
    if let Some(text) = result["instructions"].as_str() {
        description["instructions"] = json!(text);
    }
    Ok(description)
}

/// Dresses a client's request params for a modern edge: `_meta` carries the version, the
/// client's capabilities and identity and, when it wants log lines, its level. The rest of the
/// client's `_meta` (a progress token, trace context) stays.
pub(crate) fn envelope(params: &mut Value, client: &ClientMeta, level: Option<&str>) {
    if !params.is_object() {
        *params = json!({});
    }
    let meta = params.as_object_mut().map(|p| p.entry("_meta").or_insert_with(|| json!({})));
    let Some(meta) = meta else { return };
    if !meta.is_object() {
        *meta = json!({});
    }
    let Some(meta) = meta.as_object_mut() else { return };
    meta.insert(META_VERSION.into(), json!(MODERN_VERSIONS[0]));
    let capabilities = if client.capabilities.is_object() { client.capabilities.clone() } else { json!({}) };
    meta.insert(META_CAPABILITIES.into(), capabilities);
    if client.info.is_object() {
        meta.insert(META_CLIENT_INFO.into(), client.info.clone());
    }
    match level {
        Some(level) => meta.insert(META_LOG_LEVEL.into(), json!(level)),
        None => meta.remove(META_LOG_LEVEL),
    };
}

/// Puts a 2026-07-28 client's `inputResponses` and the edge's own `requestState` back into a
/// retried request for a modern edge: they are the edge's to read.
pub(crate) fn carry_input(params: &mut Value, responses: Map<String, Value>, state: Option<String>) {
    let Some(fields) = params.as_object_mut() else { return };
    if !responses.is_empty() {
        fields.insert("inputResponses".into(), Value::Object(responses));
    }
    if let Some(state) = state {
        fields.insert("requestState".into(), Value::String(state));
    }
}

/// A `subscriptions/listen` filter (its `notifications`): the list changes asked for (tools,
/// prompts, resources) and the URIs whose updates are wanted. The gateway's own listen streams
/// agree to one; the link asks a modern edge for one.
pub(crate) fn listen_filter(lists: [bool; 3], uris: Vec<&str>) -> Value {
    let mut out = Map::new();
    for (key, on) in ["toolsListChanged", "promptsListChanged", "resourcesListChanged"].into_iter().zip(lists)
    {
        if on {
            out.insert(key.into(), json!(true));
        }
    }
    if !uris.is_empty() {
        out.insert("resourceSubscriptions".into(), json!(uris));
    }
    Value::Object(out)
}

/// Whether a result is a modern edge's `input_required`.
pub(crate) fn is_input_required(result: &Value) -> bool {
    result["resultType"] == json!("input_required")
}

/// Checks an `input_required` result of a modern edge before it goes to a 2026-07-28 client:
/// known question methods only, each one the client declared the capability for, at most
/// `MAX_INPUTS` of them, and a `requestState` (if any) that is a string of bounded size.
pub(crate) fn check_input_required(result: &Value, caps: ClientCaps) -> Result<(), String> {
    let Some(requests) = result["inputRequests"].as_object() else {
        return Err("input_required without an inputRequests object".into());
    };
    if requests.is_empty() || requests.len() > MAX_INPUTS {
        return Err(format!(
            "input_required with {} questions (1 to {MAX_INPUTS} are passed on)",
            requests.len()
        ));
    }
    for (key, request) in requests {
        let method = request["method"].as_str().unwrap_or_default();
        let Some((_, capability)) = INPUT_REQUESTS.iter().find(|(m, _)| *m == method) else {
            return Err(format!("input request {key:?} has method {method:?}, which no client answers"));
        };
        if !caps.allows(capability) {
            return Err(format!(
                "input request {key:?} needs the {capability} capability, which the client did not declare"
            ));
        }
    }
    match &result["requestState"] {
        Value::Null => Ok(()),
        Value::String(s) if s.len() <= MAX_EDGE_STATE_BYTES => Ok(()),
        Value::String(s) => {
            Err(format!("a requestState of {} bytes (at most {MAX_EDGE_STATE_BYTES})", s.len()))
        }
        _ => Err("a requestState that is not a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(sampling: bool, elicitation: bool, roots: bool) -> ClientCaps {
        ClientCaps { sampling, elicitation, roots, stateless: true }
    }

    #[test]
    fn a_discovery_naming_2026_makes_a_modern_edge_and_anything_else_does_not() {
        let good = json!({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                          "instructions": "hi", "_meta": {META_SERVER_INFO: {"name": "m", "version": "2"}}});
        let d = discovered("edge", &good).unwrap();
        assert_eq!(d["protocolVersion"], "2026-07-28");
        assert_eq!(d["serverInfo"]["name"], "m");
        assert_eq!(d["instructions"], "hi");
        assert_eq!(d["capabilities"]["tools"], json!({}));
        let unnamed = json!({"supportedVersions": ["2026-07-28"], "capabilities": {}});
        assert_eq!(
            discovered("edge", &unnamed).unwrap()["serverInfo"],
            json!({"name": "edge", "version": ""})
        );
        for bad in [
            json!("nonsense"),
            json!({"supportedVersions": ["2025-11-25"], "capabilities": {}}),
            json!({"supportedVersions": "2026-07-28", "capabilities": {}}),
            json!({"supportedVersions": ["2026-07-28", 7], "capabilities": {}}),
            json!({"supportedVersions": ["2026-07-28"]}),
            json!({"supportedVersions": vec!["2026-07-28"; MAX_VERSIONS + 1], "capabilities": {}}),
            json!({"supportedVersions": ["2026-07-28"], "capabilities": {}, "instructions": "x".repeat(MAX_DISCOVER_BYTES)}),
        ] {
            assert!(discovered("edge", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_envelope_carries_version_capabilities_identity_and_level_and_keeps_the_rest() {
        let client = ClientMeta {
            capabilities: json!({"elicitation": {}}),
            info: json!({"name": "c", "version": "1"}),
            log_level: None,
        };
        let mut params = json!({"name": "t", "_meta": {"progressToken": 7, META_LOG_LEVEL: "debug"}});
        envelope(&mut params, &client, None);
        let meta = &params["_meta"];
        assert_eq!(meta[META_VERSION], "2026-07-28");
        assert_eq!(meta[META_CAPABILITIES], json!({"elicitation": {}}));
        assert_eq!(meta[META_CLIENT_INFO]["name"], "c");
        assert_eq!(meta["progressToken"], 7);
        assert!(meta.get(META_LOG_LEVEL).is_none(), "no level asked: no log lines");
        let mut bare = Value::Null;
        envelope(&mut bare, &ClientMeta::default(), Some("warning"));
        assert_eq!(bare["_meta"][META_CAPABILITIES], json!({}));
        assert_eq!(bare["_meta"][META_LOG_LEVEL], "warning");
    }

    #[test]
    fn an_input_required_is_bounded_and_asks_only_what_the_client_can_answer() {
        let ask = |method: &str| json!({"method": method, "params": {}});
        let ok = json!({"resultType": "input_required", "inputRequests": {"a": ask("elicitation/create")},
                        "requestState": "s"});
        assert!(is_input_required(&ok));
        assert_eq!(check_input_required(&ok, caps(false, true, false)), Ok(()));
        assert!(check_input_required(&ok, caps(true, false, true)).is_err(), "no elicitation declared");
        let many: Map<String, Value> =
            (0..=MAX_INPUTS).map(|i| (format!("k{i}"), ask("roots/list"))).collect();
        let too_many = json!({"resultType": "input_required", "inputRequests": many});
        assert!(check_input_required(&too_many, caps(true, true, true)).is_err());
        let huge = json!({"resultType": "input_required", "inputRequests": {"a": ask("roots/list")},
                          "requestState": "x".repeat(MAX_EDGE_STATE_BYTES + 1)});
        assert!(check_input_required(&huge, caps(true, true, true)).is_err());
        let odd = json!({"resultType": "input_required", "inputRequests": {"a": ask("tools/call")}});
        assert!(check_input_required(&odd, caps(true, true, true)).is_err());
        assert!(
            check_input_required(&json!({"resultType": "input_required"}), caps(true, true, true)).is_err()
        );
    }

    #[test]
    fn input_goes_back_to_the_edge_verbatim() {
        let mut params = json!({"name": "t"});
        let mut responses = Map::new();
        responses.insert("a".into(), json!({"action": "accept"}));
        carry_input(&mut params, responses, Some("edge-state".into()));
        assert_eq!(params["inputResponses"]["a"]["action"], "accept");
        assert_eq!(params["requestState"], "edge-state");
        assert_eq!(list_params(Era::Legacy, None), json!({}));
        assert_eq!(list_params(Era::Modern, Some(json!("c")))["_meta"][META_VERSION], "2026-07-28");
    }
}
