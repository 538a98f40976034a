//! Streamable HTTP (protocol 2025-03-26, 2025-06-18, 2025-11-25) on one MCP endpoint.
//!
//! `POST` carries client messages: notifications and responses get 202; requests get their
//! answer as `application/json` when only the result comes back, or as `text/event-stream` when
//! the server sends related messages first (progress, logging, its own requests) or the answer
//! takes longer than a keep-alive interval. `initialize` mints the session (`Mcp-Session-Id`, 32
//! hex digits from the kernel's CSPRNG); later requests must carry it ("servers that require a
//! session ID SHOULD respond to requests without an Mcp-Session-Id header … with HTTP 400", and
//! "MUST respond to requests containing [a terminated] session ID with HTTP 404"). `GET` opens the
//! session's stream for messages unrelated to any request (one per session: 409 for a second);
//! `DELETE` ends the session. JSON-RPC batches are accepted for sessions that negotiated
//! 2025-03-26, the only version that has them. A POST without a session that is not a legacy
//! `initialize` belongs to the stateless era (2026-07-28) and goes to `modern.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::gateway::clients::mailbox::Mailbox;
use crate::gateway::clients::reply::Reply;
use crate::gateway::clients::session::{Kind, Scope, Session};
use crate::gateway::credential::Credential;
use crate::gateway::error::Error;
use crate::gateway::front::cors::Headers;
use crate::gateway::front::exchange::{answer, respond, Asker, Outcome, Shape, POST_BYTES, POST_QUEUE};
use crate::gateway::front::modern;
use crate::gateway::front::stream::Unrelated;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::Gateway;
use crate::gateway::views::mcp;
use crate::http::{Conn, Request, Response, Transport};
use crate::jsonrpc::{self, Message};
use crate::protocol::SUPPORTED_VERSIONS;
use crate::sys;

/// Serves one request on the MCP endpoint of the asker's scope.
#[inline(never)]
pub(crate) fn serve(
    gw: &Arc<Gateway>,
    conn: &mut Conn<Box<dyn Transport>>,
    req: &Request,
    asker: Asker<'_>,
) -> Outcome {
    match req.method.as_str() {
        "POST" => post(gw, conn, req, asker),
        "GET" => get(gw, req, asker),
        "DELETE" => Outcome::Respond(delete(gw, req, &asker.scope, asker.owner)),
        _ => Outcome::Respond(
            Response::error(405, "the MCP endpoint takes POST, GET and DELETE")
                .header("Allow", "GET, POST, DELETE"),
        ),
    }
}

#[inline(never)]
fn post(gw: &Arc<Gateway>, conn: &mut Conn<Box<dyn Transport>>, req: &Request, asker: Asker<'_>) -> Outcome {
    let content_type = req.header("content-type").map(media_type);
    if content_type.as_deref() != Some("application/json") {
        return respond(Response::error(415, "POST bodies must be Content-Type: application/json"));
    }
    if !(accepts(req, "application/json") && accepts(req, "text/event-stream")) {
        return respond(Response::error(
            406,
            "the client must accept both application/json and text/event-stream",
        ));
    }
    Metrics::add(&gw.metrics.client_bytes_in, req.body.len());
    let (mut messages, batch) = match parse_body(&req.body) {
        Ok(parsed) => parsed,
        Err(resp) => return respond(resp),
    };
    if !batch && modern::is_modern(req, &messages[0]) {
        let Some(msg) = messages.pop() else { return respond(Response::empty(400)) };
        return modern::post(gw, conn, req, asker, msg);
    }
    let initializing =
        messages.iter().any(|m| matches!(m, Message::Request { method, .. } if method == "initialize"));
    let (session, minted) = if initializing {
        if batch {
            return respond(Error::BadRequest("initialize must not be part of a batch".into()).to_http());
        }
        match open_session(gw, asker.scope, asker.owner, asker.peer) {
            Ok(s) => (s, true),
            Err(resp) => return respond(resp),
        }
    } else {
        match find_session(gw, req, &asker.scope, asker.owner) {
            Ok(s) => (s, false),
            Err(resp) => return respond(resp),
        }
    };
    if batch && session.read(|s| s.protocol_version.as_deref() != Some("2025-03-26")) {
        return respond(
            Error::BadRequest("JSON-RPC batches are only part of protocol 2025-03-26".into()).to_http(),
        );
    }
    // Related messages are bounded in count and bytes; final answers always get in (they are
    // bounded by the session's calls in flight).
    let mailbox = Mailbox::new(POST_QUEUE, POST_BYTES, Some(gw.queue_budget.clone()));
    let reply = Reply::Post(mailbox.clone());
    let requests = messages.iter().filter(|m| matches!(m, Message::Request { .. })).count();
    for msg in messages {
        mcp::handle_message(gw, &session, msg, &reply);
    }
    if requests == 0 {
        return respond(Response::empty(202));
    }
    let headers: Headers = minted.then(|| ("Mcp-Session-Id", session.id.clone())).into_iter().collect();
    let outcome = answer(gw, conn, &mailbox, requests, batch, headers, asker.cors, &Shape::AS_IS);
    mailbox.close();
    outcome
}

/// Attaches the session's stream for messages unrelated to any request; the connection's
/// thread writes it once the request loop has returned (`write_unrelated`).
#[inline(never)]
fn get(gw: &Arc<Gateway>, req: &Request, asker: Asker<'_>) -> Outcome {
    let Asker { scope, owner, peer, cors } = asker;
    if !accepts(req, "text/event-stream") {
        return respond(Response::error(
            406,
            "GET on the MCP endpoint opens an SSE stream: accept text/event-stream",
        ));
    }
    let session = match find_session(gw, req, &scope, owner) {
        Ok(s) => s,
        Err(resp) => return respond(resp),
    };
    let Some(rx) = session.attach_stream(&gw.queue_budget) else {
        return respond(Response::error(409, "this session already has a stream open"));
    };
    log::info!("session {}: stream opened by {peer}", session.id);
    Outcome::Unrelated(Box::new(Unrelated { session, rx, cors: cors.clone() }))
}

#[inline(never)]
fn delete(gw: &Gateway, req: &Request, scope: &Scope, owner: Credential) -> Response {
    match find_session(gw, req, scope, owner) {
        Ok(session) => {
            gw.registry.remove_session(&session.id);
            log::info!("session {}: ended by the client", session.id);
            Response::empty(200)
        }
        Err(resp) => resp,
    }
}

#[inline(never)]
fn open_session(
    gw: &Gateway,
    scope: Scope,
    owner: Credential,
    peer: SocketAddr,
) -> Result<Arc<Session>, Response> {
    if let Scope::Server(name) = &scope {
        if gw.registry.server(name).is_none() {
            return Err(Response::error(
                404,
                &format!("no server named {name:?} is registered with this gateway"),
            ));
        }
    }
    let session = Arc::new(Session::new(sys::random_hex(16), Kind::Streamable, scope, owner, peer.ip()));
    if let Err(e) = gw.registry.admit(session.clone(), gw.cfg.max_sessions, gw.cfg.max_sessions_per_client) {
        log::warn!("{peer}: refusing a new session: {e}");
        return Err(e.to_http());
    }
    Ok(session)
}

/// The session named by `Mcp-Session-Id`, checked against the endpoint and the protocol
/// version header ("If the server receives a request with an invalid or unsupported
/// MCP-Protocol-Version, it MUST respond with 400 Bad Request").
#[inline(never)]
fn find_session(
    gw: &Gateway,
    req: &Request,
    scope: &Scope,
    owner: Credential,
) -> Result<Arc<Session>, Response> {
    let Some(id) = req.header("mcp-session-id") else {
        return Err(Error::BadRequest("Bad Request: missing Mcp-Session-Id header".into()).to_http());
    };
    // Another credential presenting this id learns nothing: the session is not found.
    let session = gw
        .registry
        .session(id)
        .filter(|s| s.kind == Kind::Streamable && &s.scope == scope && s.owner == owner);
    let Some(session) = session else {
        return Err(Error::SessionNotFound.to_http());
    };
    if let Some(v) = req.header("mcp-protocol-version") {
        if !SUPPORTED_VERSIONS.contains(&v) {
            let msg = format!(
                "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            );
            return Err(Error::BadRequest(msg).to_http());
        }
    }
    session.touch();
    Ok(session)
}

/// One message or a batch, classified; a bad body is a 400 with the JSON-RPC error.
#[inline(never)]
fn parse_body(body: &[u8]) -> Result<(Vec<Message>, bool), Response> {
    let value = jsonrpc::parse(body).map_err(|e| Response::json(400, &e.to_response()))?;
    let (items, batch) = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(Error::BadRequest("an empty batch is not a message".into()).to_http());
        }
        Value::Array(items) => (items, true),
        v => (vec![v], false),
    };
    let messages = items
        .into_iter()
        .map(jsonrpc::classify)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Response::json(400, &e.to_response()))?;
    Ok((messages, batch))
}

/// The media type of a Content-Type value, without parameters, lowercased.
pub(crate) fn media_type(v: &str) -> String {
    v.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether the Accept header admits `media` (exactly, by `type/*`, or by `*/*`).
pub(crate) fn accepts(req: &Request, media: &str) -> bool {
    let Some(accept) = req.header("accept") else { return false };
    let kind = media.split('/').next().unwrap_or("");
    accept.split(',').map(media_type).any(|m| m == media || m == "*/*" || m == format!("{kind}/*"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::front::exchange::is_final;

    /// A POST to /mcp with these headers and no body.
    pub(crate) fn request(headers: &[(&str, &str)]) -> Request {
        Request::with("POST", "/mcp", headers)
    }

    #[test]
    fn accept_header_matching() {
        let both = request(&[("Accept", "application/json, text/event-stream")]);
        assert!(accepts(&both, "application/json") && accepts(&both, "text/event-stream"));
        let star = request(&[("accept", "*/*")]);
        assert!(accepts(&star, "text/event-stream"));
        let json_only = request(&[("Accept", "application/json;q=0.9")]);
        assert!(accepts(&json_only, "application/json") && !accepts(&json_only, "text/event-stream"));
        assert!(!accepts(&request(&[]), "application/json"));
    }

    #[test]
    fn bodies_are_one_message_or_a_batch() {
        let (msgs, batch) = parse_body(br#"{"jsonrpc":"2.0","method":"x"}"#).unwrap();
        assert_eq!((msgs.len(), batch), (1, false));
        let (msgs, batch) =
            parse_body(br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":1,"method":"y"}]"#).unwrap();
        assert_eq!((msgs.len(), batch), (2, true));
        for (bad, status, code) in [(&b"{"[..], 400, -32700), (b"[]", 400, -32600), (b"[1]", 400, -32600)] {
            let resp = parse_body(bad).unwrap_err();
            assert_eq!(resp.status, status);
            let body: Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(body["error"]["code"], code);
        }
    }

    #[test]
    fn finals_are_answers_or_the_no_answer_marker() {
        assert!(is_final(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}})));
        assert!(is_final(&Value::Null));
        assert!(!is_final(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/progress"})));
        assert!(!is_final(
            &serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage"})
        ));
    }
}
