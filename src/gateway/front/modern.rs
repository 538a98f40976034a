//! The stateless era (protocol 2026-07-28) on the Streamable HTTP endpoints, beside the legacy
//! sessions of `streamable.rs` ("a dual-era server MAY serve both eras concurrently on the same
//! endpoint").
//!
//! A POST without `Mcp-Session-Id` that is not a legacy `initialize` is one self-contained
//! request: its `_meta` carries the protocol version and the client's capabilities, and the
//! standard headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) must match its body.
//! `server/discover` is answered here; every other method goes through the same views
//! (`mcp.rs`, `aggregate.rs`) as a legacy session's, under a session-like context that lives
//! exactly as long as this HTTP exchange (`Kind::Stateless`): progress rides the request's own
//! stream, log lines only at the `_meta` level asked for, and a client that closes the stream
//! cancels the call upstream. Results get `resultType`, the gateway's `serverInfo` in `_meta`,
//! and `ttlMs`/`cacheScope` where the revision wants them. `subscriptions/listen` (`modern_listen.rs`)
//! holds the POST open as an SSE stream of the `list_changed` and `resources/updated` notices it asked
//! for, each tagged with its `subscriptionId`.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::gateway::clients::session::Scope;
use crate::gateway::credential::Holder;
use crate::gateway::error::Error;
use crate::gateway::front::cors::Headers;
use crate::gateway::front::exchange::{self, respond, Asker, Exchange, Opening, Outcome, Shape};
use crate::gateway::link::eras::META_CLIENT_INFO;
use crate::gateway::link::state::{self, Unopened};
use crate::gateway::link::{ClientInput, ForeignState};
use crate::gateway::shared::Gateway;
use crate::gateway::views::mcp;
use crate::http::{Conn, Request, Response, Transport};
use crate::jsonrpc::{self, Message};
use crate::protocol::{
    is_modern as modern_version, severity, ALL_VERSIONS, META_CAPABILITIES, META_LOG_LEVEL, META_SERVER_INFO,
    META_VERSION, SERVER_METHODS, SUPPORTED_VERSIONS,
};

/// Methods that 2026-07-28 removed: refused on every endpoint (so are the 2025-11-25 task
/// methods and notifications sent as requests, by `views/mcp.rs`). Any other method a per-server
/// endpoint does not know goes to its server as it is (an extension's, such as
/// `io.modelcontextprotocol/skills`), which answers it or says it has no such method.
const REMOVED: [&str; 5] =
    ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

/// How long a client may keep a list (or the discovery result): lists change whenever an edge
/// comes or goes, so the gateway promises little.
pub(crate) const LIST_TTL_MS: u64 = 5_000;

/// Whether a POST without a session belongs to the stateless era: anything but a legacy
/// `initialize` (one that carries neither the modern header nor modern `_meta`), unless its
/// `MCP-Protocol-Version` names a legacy version (a legacy client that lost its session).
pub(crate) fn is_modern(req: &Request, msg: &Message) -> bool {
    if req.header("mcp-session-id").is_some() {
        return false;
    }
    let header = req.header("mcp-protocol-version");
    if header.is_some_and(|v| SUPPORTED_VERSIONS.contains(&v)) {
        return false;
    }
    match msg {
        Message::Request { method, params, .. } if method == "initialize" => {
            let meta = params.as_ref().and_then(|p| p.pointer("/_meta")).and_then(|m| m.get(META_VERSION));
            header.is_some() || meta.is_some()
        }
        _ => true,
    }
}

/// What a valid modern request said about its client.
struct Client {
    capabilities: Value,
    /// The least severity of log lines it wants; none: no log lines at all.
    log_level: Option<usize>,
}

/// Serves one stateless message.
pub(crate) fn post(
    gw: &Arc<Gateway>,
    conn: &mut Conn<Box<dyn Transport>>,
    req: &Request,
    asker: Asker<'_>,
    msg: Message,
) -> Outcome {
    let (id, method, params) = match msg {
        // The revision defines no client notifications over HTTP; they are accepted and ignored.
        Message::Notification { .. } => return respond(Response::empty(202)),
        Message::Response { .. } => {
            let e = Error::BadRequest("protocol 2026-07-28 clients send no JSON-RPC responses".into());
            return respond(e.to_http());
        }
        Message::Request { id, method, params } => (id, method, params.unwrap_or_else(|| json!({}))),
    };
    let checked = validate(req, &method, &params)
        .and_then(|client| check_param_headers(gw, &asker.scope, req, &method, &params).map(|()| client));
    let client = match checked {
        Ok(client) => client,
        Err(e) => return respond(e.to_http_for(&id)),
    };
    if method == "subscriptions/listen" {
        return crate::gateway::front::listen::listen(gw, conn, asker, id, &params);
    }
    let known = method == "server/discover"
        || SERVER_METHODS.contains(&method.as_str())
        || crate::gateway::link::tasks::is_task_method(&method);
    let passed_on = matches!(asker.scope, Scope::Server(_)) && !REMOVED.contains(&method.as_str());
    if !known && !passed_on {
        return respond(Error::NoSuchMethod(method).to_http_for(&id));
    }
    // A task's server may have gone: its owner then learns the task failed (`views/tasks.rs`).
    let task = crate::gateway::link::tasks::is_task_method(&method);
    let opening = Opening::Request { capabilities: client.capabilities.clone(), task };
    let exchange = match Exchange::open(gw, &asker, opening) {
        Ok(exchange) => exchange,
        Err(e) => return respond(e.to_http_for(&id)),
    };
    if method == "server/discover" {
        return match decorate(gw, &asker.scope, &method, discover(gw, &asker)) {
            Ok(result) => respond(Response::json(200, &jsonrpc::result_response(&id, result))),
            Err(e) => respond(e.to_http_for(&id)),
        };
    }
    call(gw, conn, &asker, exchange, (id, method, params), client)
}

/// Checks `_meta` and the standard headers against the body, in the order the revision's errors
/// are told apart: a missing field, a header that differs, a version not spoken.
fn validate(req: &Request, method: &str, params: &Value) -> Result<Client, Error> {
    if !params.is_object() {
        return Err(Error::InvalidMeta(format!("{method}: params must be an object")));
    }
    let meta = &params["_meta"];
    let Some(version) = meta.get(META_VERSION).and_then(Value::as_str) else {
        return Err(Error::InvalidMeta(format!("{method}: params._meta must carry {META_VERSION}")));
    };
    let capabilities = meta.get(META_CAPABILITIES).filter(|c| c.is_object()).cloned();
    let Some(capabilities) = capabilities else {
        return Err(Error::InvalidMeta(format!("{method}: params._meta must carry {META_CAPABILITIES}")));
    };
    match req.header("mcp-protocol-version") {
        Some(v) if v == version => {}
        Some(v) => return Err(mismatch("MCP-Protocol-Version", v, version)),
        None => return Err(Error::HeaderMismatch("the MCP-Protocol-Version header is missing".into())),
    }
    if !modern_version(version) {
        return Err(Error::UnsupportedVersion(version.to_string()));
    }
    match req.header("mcp-method") {
        Some(m) if m == method => {}
        Some(m) => return Err(mismatch("Mcp-Method", m, method)),
        None => return Err(Error::HeaderMismatch("the Mcp-Method header is missing".into())),
    }
    let named = match method {
        "tools/call" | "prompts/get" => params["name"].as_str(),
        "resources/read" => params["uri"].as_str(),
        // The tasks extension routes by task: Mcp-Name carries the task id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => params["taskId"].as_str(),
        _ => None,
    };
    if let Some(name) = named {
        let Some(header) = req.header("mcp-name") else {
            return Err(Error::HeaderMismatch(format!("{method} needs the Mcp-Name header")));
        };
        let decoded = header_value(header)
            .ok_or_else(|| Error::HeaderMismatch("the Mcp-Name header is not valid base64".into()))?;
        if decoded != name {
            return Err(mismatch("Mcp-Name", &decoded, name));
        }
    }
    let log_level = match meta.get(META_LOG_LEVEL) {
        None => None,
        Some(Value::String(l)) if crate::protocol::is_log_level(l) => Some(severity(l)),
        Some(other) => return Err(Error::InvalidParams(format!("invalid log level {other}"))),
    };
    Ok(Client { capabilities, log_level })
}

fn mismatch(header: &str, got: &str, body: &str) -> Error {
    let cut = |s: &str| s.chars().take(200).collect::<String>();
    Error::HeaderMismatch(format!(
        "the {header} header ({:?}) does not match the body ({:?})",
        cut(got),
        cut(body)
    ))
}

/// A standard header's value, decoding the `=?base64?…?=` form (padded, canonical base64 of
/// UTF-8); `None` if that form is broken. Anything else is the value as it is.
pub(crate) fn header_value(raw: &str) -> Option<String> {
    let Some(inner) = raw.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) else {
        return Some(raw.to_string());
    };
    if inner.len() % 4 != 0 {
        return None;
    }
    String::from_utf8(crate::codec::base64_decode(inner)?).ok()
}

/// SEP-2243 custom headers: each argument whose schema property carries `x-mcp-header: NAME`
/// must come as `Mcp-Param-NAME` too, equal once decoded. The schema is the one the server
/// listed (the gateway forwards every `Mcp-Param-*` it does not know of, by not needing it).
fn check_param_headers(
    gw: &Gateway,
    scope: &Scope,
    req: &Request,
    method: &str,
    params: &Value,
) -> Result<(), Error> {
    let Some(name) = params["name"].as_str().filter(|_| method == "tools/call") else { return Ok(()) };
    let target = match scope {
        Scope::All => gw.registry.catalog(|c| c.route(name).map(|(s, t)| (s.to_string(), t.to_string()))),
        Scope::Server(server) => Some((server.clone(), name.to_string())),
    };
    let Some(schema) = target.and_then(|(server, tool)| gw.registry.server(&server)?.tool_schema(&tool))
    else {
        return Ok(());
    };
    let Some(properties) = schema["properties"].as_object() else { return Ok(()) };
    for (property, definition) in properties {
        let Some(header) = definition["x-mcp-header"].as_str() else { continue };
        let expected = match &params["arguments"][property] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        let field = format!("Mcp-Param-{header}");
        let Some(raw) = req.header(&field) else {
            return Err(Error::HeaderMismatch(format!("argument {property} needs the {field} header")));
        };
        let value = header_value(raw)
            .ok_or_else(|| Error::HeaderMismatch(format!("the {field} header is not valid base64")))?;
        if value != expected {
            return Err(mismatch(&field, &value, &expected));
        }
    }
    Ok(())
}

/// `server/discover`: the versions the gateway speaks, and what this view offers.
fn discover(gw: &Gateway, asker: &Asker<'_>) -> Result<Value, Error> {
    let offered = mcp::description(gw, &asker.scope, "server/discover", &gw.access.grant(&asker.principal))?;
    let mut result = json!({
        "supportedVersions": ALL_VERSIONS,
        "capabilities": offered["capabilities"].clone(),
    });
    if let Some(text) = offered["instructions"].as_str().filter(|t| !t.is_empty()) {
        result["instructions"] = json!(text);
    }
    Ok(result)
}

/// Adds what every 2026-07-28 result carries: `resultType`, the answering server's identity in
/// `_meta`, and the caching fields of the results that have them.
fn decorate(gw: &Gateway, scope: &Scope, method: &str, result: Result<Value, Error>) -> Result<Value, Error> {
    let mut result = result?;
    let Some(fields) = result.as_object_mut() else { return Ok(result) };
    fields.entry("resultType").or_insert_with(|| json!("complete"));
    let meta = fields.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        // On the aggregated view the gateway answers, whatever a 2026-07-28 edge said it was.
        if *scope == Scope::All || !meta.contains_key(META_SERVER_INFO) {
            meta.insert(META_SERVER_INFO.into(), server_info(gw, scope));
        }
    }
    let complete = fields.get("resultType").and_then(Value::as_str) == Some("complete");
    if let Some((ttl, cache_scope)) = caching(gw, method).filter(|_| complete) {
        fields.entry("ttlMs").or_insert_with(|| json!(ttl));
        fields.entry("cacheScope").or_insert_with(|| json!(cache_scope));
    }
    Ok(result)
}

/// Who answers on this view: the gateway, or the server as it introduced itself.
fn server_info(gw: &Gateway, scope: &Scope) -> Value {
    let own = || json!({"name": "mcpport", "title": "mcpport gateway", "version": env!("CARGO_PKG_VERSION")});
    match scope {
        Scope::All => own(),
        Scope::Server(name) => gw
            .registry
            .server(name)
            .map(|up| up.initialize_result()["serverInfo"].clone())
            .filter(|info| info["name"].is_string() && info["version"].is_string())
            .unwrap_or_else(own),
    }
}

/// `ttlMs` and `cacheScope` for the results that must carry them. Lists and discovery change
/// when edges come and go (a short TTL); what a resource holds is the edge's, read fresh. With
/// client tokens, only authorized clients see any of it: private.
fn caching(gw: &Gateway, method: &str) -> Option<(u64, &'static str)> {
    // With credentials (tokens, OAuth), what one client sees is its own (a policy may filter it).
    let scope = if gw.cfg.clients_need_token() { "private" } else { "public" };
    match method {
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "server/discover" => {
            Some((LIST_TTL_MS, scope))
        }
        "resources/read" => Some((0, "private")),
        _ => None,
    }
}

/// A request for a server (or answered by the aggregated view): served under a stateless
/// session, answered on this POST.
fn call(
    gw: &Arc<Gateway>,
    conn: &mut Conn<Box<dyn Transport>>,
    asker: &Asker<'_>,
    exchange: Exchange,
    (id, method, params): (Value, String, Value),
    client: Client,
) -> Outcome {
    let (params, input) = match client_input(gw, &method, &exchange.session.holder, params) {
        Ok(taken) => taken,
        Err(e) => return respond(Response::json(200, &e.response(&id))),
    };
    exchange.session.update(|s| {
        s.input = input;
        s.client_info = params["_meta"][META_CLIENT_INFO].clone();
        s.log_level = client.log_level.map(|l| crate::protocol::LOG_LEVELS[l].to_string());
    });
    let request = Message::Request { id, method: method.clone(), params: Some(legacy_params(params)) };
    let posted = exchange.post(gw, vec![request]);
    let answer = |msg: Value| shape_answer(gw, &asker.scope, &method, msg);
    let related = |msg: Value| shape_related(&client, msg);
    let shape = Shape { related: &related, answer: &answer, status: &status_of };
    // Answered, or the client closed its stream: the exchange ends its context, which cancels
    // whatever is still running for it.
    exchange::answer(gw, conn, &posted, false, (Headers::new(), asker.cors), &shape)
}

/// Takes `inputResponses` and `requestState` (MRTR) out of the params: they are the gateway's
/// to act on, never the server's. A state must be this gateway's, unchanged, unexpired and for
/// this method, and given to `holder`, the client presenting it.
fn client_input(
    gw: &Gateway,
    method: &str,
    holder: &Holder,
    mut params: Value,
) -> Result<(Value, ClientInput), Error> {
    let Some(fields) = params.as_object_mut() else { return Ok((params, ClientInput::default())) };
    let responses = match fields.remove("inputResponses") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(Error::InvalidParams(
                "inputResponses must be an object keyed like inputRequests".into(),
            ))
        }
    };
    let resume =
        match fields.remove("requestState") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => match state::open(&gw.state_key, &text, &holder.tag()) {
                Ok(resume) if resume.method != method => {
                    return Err(Error::InvalidParams(format!(
                        "requestState belongs to a {} request",
                        resume.method
                    )))
                }
                Ok(resume) => Some(resume),
                // Not this gateway's: a 2026-07-28 server's own state (its link passes it back), or a
                // forgery (a legacy server's link refuses it, saying why).
                Err(Unopened::NotYours) => return Err(Error::InvalidParams(
                    "requestState was given to another client: only the client that received it may resume \
                     that request"
                        .into(),
                )),
                Err(Unopened::Foreign(why)) => {
                    let foreign = ForeignState { state: text, why };
                    return Ok((params, ClientInput { responses, resume: None, foreign: Some(foreign) }));
                }
            },
            Some(_) => {
                return Err(Error::InvalidParams("requestState must be the string the server gave".into()))
            }
        };
    Ok((params, ClientInput { responses, resume, foreign: None }))
}

/// The params as a legacy server expects them: the version and log level of the modern era are
/// the gateway's to act on; the client's capabilities and identity stay, so a server that
/// looks can ask only what this client can answer (a progress token stays too).
fn legacy_params(mut params: Value) -> Value {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        for key in [META_VERSION, META_LOG_LEVEL] {
            meta.remove(key);
        }
        if meta.is_empty() {
            if let Some(fields) = params.as_object_mut() {
                fields.remove("_meta");
            }
        }
    }
    params
}

/// An answer as a modern client must see it.
fn shape_answer(gw: &Gateway, scope: &Scope, method: &str, mut msg: Value) -> Value {
    if let Some(result) = msg.get_mut("result") {
        let decorated = decorate(gw, scope, method, Ok(result.take()));
        *result = decorated.unwrap_or_else(|_| json!({}));
    } else if msg["error"]["code"] == json!(crate::gateway::error::RESOURCE_NOT_FOUND) {
        // 2026-07-28: resource not found is -32602 ("MUST NOT" emit -32002).
        msg["error"]["code"] = json!(jsonrpc::INVALID_PARAMS);
    }
    msg
}

/// A related message on a modern request's stream: notifications about it only (never a
/// server request), and log lines only at the level the request asked for.
fn shape_related(client: &Client, msg: Value) -> Option<Value> {
    let method = msg["method"].as_str()?;
    if msg.get("id").is_some() {
        return None;
    }
    match method {
        "notifications/progress" => Some(msg),
        "notifications/message" => {
            let min = client.log_level?;
            (severity(msg["params"]["level"].as_str().unwrap_or("info")) >= min).then_some(msg)
        }
        _ => None,
    }
}

/// The HTTP status of an answer sent alone: 2026-07-28 puts some errors in the status too.
fn status_of(msg: &Value) -> u16 {
    match msg["error"]["code"].as_i64() {
        Some(jsonrpc::METHOD_NOT_FOUND) => 404,
        Some(
            crate::gateway::error::HEADER_MISMATCH
            | crate::gateway::error::MISSING_CAPABILITY
            | crate::gateway::error::UNSUPPORTED_VERSION,
        ) => 400,
        _ => 200,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::front::streamable::tests::request;

    fn meta() -> Value {
        json!({META_VERSION: "2026-07-28", META_CAPABILITIES: {}})
    }

    fn code(r: Result<Client, Error>) -> i64 {
        r.err().map_or(0, |e| e.code())
    }

    #[test]
    fn validation_tells_missing_meta_mismatch_and_version_apart() {
        let good = [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/list")];
        assert_eq!(code(validate(&request(&good), "tools/list", &json!({}))), -32602);
        let no_caps = json!({"_meta": {META_VERSION: "2026-07-28"}});
        assert_eq!(code(validate(&request(&good), "tools/list", &no_caps)), -32602);
        assert!(validate(&request(&good), "tools/list", &json!({"_meta": meta()})).is_ok());
        let other = [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "prompts/list")];
        assert_eq!(code(validate(&request(&other), "tools/list", &json!({"_meta": meta()}))), -32020);
        let old = json!({"_meta": {META_VERSION: "v999", META_CAPABILITIES: {}}});
        assert_eq!(code(validate(&request(&good), "tools/list", &old)), -32020);
        let both = [("MCP-Protocol-Version", "v999"), ("Mcp-Method", "tools/list")];
        let e = validate(&request(&both), "tools/list", &old).err().unwrap();
        assert_eq!((e.code(), e.status()), (-32022, 400));
        assert_eq!(e.to_object()["data"]["requested"], "v999");
    }

    #[test]
    fn mcp_name_must_match_plain_or_base64() {
        let call = json!({"name": "héllo tool", "_meta": meta()});
        let base = [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call")];
        assert_eq!(code(validate(&request(&base), "tools/call", &call)), -32020);
        let encoded = format!("=?base64?{}?=", crate::codec::base64("héllo tool".as_bytes()));
        let mut h = base.to_vec();
        h.push(("Mcp-Name", &encoded));
        assert!(validate(&request(&h), "tools/call", &call).is_ok());
        let mut wrong = base.to_vec();
        wrong.push(("Mcp-Name", "other"));
        assert_eq!(code(validate(&request(&wrong), "tools/call", &call)), -32020);
        assert_eq!(header_value("=?base64?!!?="), None);
        // SEP-2243's table: padding is required, the alphabet is strict, and a value without
        // both markers is literal.
        assert_eq!(header_value("=?base64?SGVsbG8=?=").as_deref(), Some("Hello"));
        assert_eq!(header_value("=?base64?SGVsbG8?="), None);
        assert_eq!(header_value("=?base64?SGVs!!!bG8=?="), None);
        assert_eq!(header_value("=?base64?SGVsbG8=").as_deref(), Some("=?base64?SGVsbG8="));
        assert_eq!(header_value("plain").as_deref(), Some("plain"));
    }

    #[test]
    fn eras_are_told_apart_by_session_header_and_initialize() {
        let init = Message::Request {
            id: json!(1),
            method: "initialize".into(),
            params: Some(json!({"protocolVersion": "2025-11-25"})),
        };
        assert!(!is_modern(&request(&[]), &init));
        assert!(is_modern(&request(&[("MCP-Protocol-Version", "2026-07-28")]), &init));
        let list = Message::Request { id: json!(1), method: "tools/list".into(), params: None };
        assert!(is_modern(&request(&[]), &list));
        assert!(!is_modern(&request(&[("Mcp-Session-Id", "abc")]), &list));
        assert!(!is_modern(&request(&[("MCP-Protocol-Version", "2025-11-25")]), &list));
    }

    #[test]
    fn related_messages_keep_progress_and_only_asked_for_logs() {
        let quiet = Client { capabilities: json!({}), log_level: None };
        let log = jsonrpc::notification("notifications/message", json!({"level": "error", "data": "x"}));
        assert_eq!(shape_related(&quiet, log.clone()), None);
        let loud = Client { capabilities: json!({}), log_level: Some(severity("warning")) };
        assert!(shape_related(&loud, log).is_some());
        let debug = jsonrpc::notification("notifications/message", json!({"level": "debug"}));
        assert_eq!(shape_related(&loud, debug), None);
        let ask = jsonrpc::request("mcpport-1-1", "elicitation/create", json!({}));
        assert_eq!(shape_related(&loud, ask), None);
        let progress = jsonrpc::notification("notifications/progress", json!({"progressToken": 1}));
        assert!(shape_related(&quiet, progress).is_some());
    }

    #[test]
    fn removed_methods_and_not_found_take_their_statuses() {
        assert_eq!(status_of(&Error::NoSuchMethod("ping".into()).response(&json!(1))), 404);
        assert_eq!(status_of(&Error::MissingCapability("sampling").response(&json!(1))), 400);
        let e = Error::MissingCapability("sampling").to_object();
        assert_eq!(e["data"]["requiredCapabilities"], json!({"sampling": {}}));
        assert_eq!(status_of(&jsonrpc::result_response(&json!(1), json!({}))), 200);
    }
}
