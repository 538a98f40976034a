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

use std::sync::Arc;

use crate::gateway::error::Error;
use crate::gateway::front::cors::Headers;
use crate::gateway::front::exchange::{
    answer, read_messages, respond, Asker, Exchange, Opening, Outcome, Shape,
};
use crate::gateway::front::modern;
use crate::gateway::front::stream::Unrelated;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::Gateway;
use crate::http::{Body, Conn, Request, Response, Transport};
use crate::jsonrpc::Message;

/// Serves one request on the MCP endpoint of the asker's scope. `body` is the request's, if it
/// had one (a POST's).
#[inline(never)]
pub(crate) fn serve(
    gw: &Arc<Gateway>,
    conn: &mut Conn<Box<dyn Transport>>,
    req: &Request,
    body: Option<Body>,
    asker: Asker<'_>,
) -> Outcome {
    // Each handler answers its own refusals (`refused`), so no `Result` sits in this frame
    // under the whole of a POST.
    match (req.method.as_str(), body) {
        ("POST", Some(body)) => post(gw, conn, req, body, asker),
        ("GET", _) => get(gw, req, asker),
        ("DELETE", _) => delete(gw, req, &asker),
        (method, _) => unserved(method),
    }
}

/// The value of `$result`, or the refusal its error makes.
macro_rules! or_refuse {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => return refused(e),
        }
    };
}

/// A method the endpoint does not serve, or a POST without a body. Out of line, as `refused`.
#[cold]
#[inline(never)]
fn unserved(method: &str) -> Outcome {
    respond(match method {
        "POST" => Error::BadRequest("a POST to the MCP endpoint carries a JSON-RPC message".into()).to_http(),
        _ => Response::error(405, "the MCP endpoint takes POST, GET and DELETE")
            .header("Allow", "GET, POST, DELETE"),
    })
}

/// The answer to a request refused with `e`. Out of line: a refusal's response is built in its own
/// frame, not in the one every POST's answer waits under.
#[cold]
#[inline(never)]
fn refused(e: Error) -> Outcome {
    respond(e.to_http())
}

#[inline(never)]
fn post(
    gw: &Arc<Gateway>,
    conn: &mut Conn<Box<dyn Transport>>,
    req: &Request,
    body: Body,
    asker: Asker<'_>,
) -> Outcome {
    let content_type = req.header("content-type").map(media_type);
    if content_type.as_deref() != Some("application/json") {
        return refused(Error::NotJson);
    }
    if !(accepts(req, "application/json") && accepts(req, "text/event-stream")) {
        return refused(Error::NotAcceptable(
            "the client must accept both application/json and text/event-stream",
        ));
    }
    Metrics::add(&gw.metrics.client_bytes_in, body.len());
    let (mut messages, batch) = match read_messages(body) {
        Ok(parsed) => parsed,
        Err(resp) => return respond(resp),
    };
    if !batch && modern::is_modern(req, &messages[0]) {
        let Some(msg) = messages.pop() else { return respond(Response::empty(400)) };
        return modern::post(gw, conn, req, asker, msg);
    }
    let initializing =
        messages.iter().any(|m| matches!(m, Message::Request { method, .. } if method == "initialize"));
    if initializing && batch {
        return refused(Error::BadRequest("initialize must not be part of a batch".into()));
    }
    let mut exchange = if initializing {
        or_refuse!(Exchange::open(gw, &asker, Opening::Streamable))
    } else {
        or_refuse!(Exchange::find(gw, req, &asker))
    };
    if batch && exchange.session.read(|s| s.protocol_version.as_deref() != Some("2025-03-26")) {
        return refused(Error::BadRequest("JSON-RPC batches are only part of protocol 2025-03-26".into()));
    }
    let posted = exchange.post(gw, messages);
    let mut headers = Headers::new();
    // A session exists for the client once its `initialize` succeeded; a failed one leaves
    // nothing behind (the exchange's guard ends it).
    if initializing && exchange.initialized() {
        exchange.keep();
        headers.push(("Mcp-Session-Id", exchange.session.id.clone()));
    }
    if posted.requests == 0 {
        return respond(Response::empty(202));
    }
    answer(gw, conn, &posted, batch, (headers, asker.cors), &Shape::AS_IS)
}

/// Attaches the session's stream for messages unrelated to any request; the connection's
/// thread writes it once the request loop has returned (`write_unrelated`).
#[inline(never)]
fn get(gw: &Arc<Gateway>, req: &Request, asker: Asker<'_>) -> Outcome {
    if !accepts(req, "text/event-stream") {
        return refused(Error::NotAcceptable(
            "GET on the MCP endpoint opens an SSE stream: accept text/event-stream",
        ));
    }
    let exchange = or_refuse!(Exchange::find(gw, req, &asker));
    let stream = or_refuse!(exchange.attach(gw));
    log::info!("session {}: stream opened by {}", exchange.session.id, asker.peer);
    Outcome::Unrelated(Box::new(Unrelated { stream, cors: asker.cors.clone() }))
}

#[inline(never)]
fn delete(gw: &Gateway, req: &Request, asker: &Asker<'_>) -> Outcome {
    let exchange = or_refuse!(Exchange::find(gw, req, asker));
    gw.registry.remove_session(&exchange.session.id);
    log::info!("session {}: ended by the client", exchange.session.id);
    respond(Response::empty(200))
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
}
