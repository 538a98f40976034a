//! The gateway's one error type. Every failure a client or an edge can be told about is a variant
//! here, and each knows its JSON-RPC code, the HTTP status it takes when it answers a whole HTTP
//! request, and a message that says what went wrong and what to do. A server's own JSON-RPC error
//! object passes through untouched (`Upstream`).

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::Response;
use crate::jsonrpc::{INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND};

/// "Resource not found" (2024-11-05 … 2025-11-25).
pub(crate) const RESOURCE_NOT_FOUND: i64 = -32002;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Error {
    /// A method the gateway (or this view of it) does not serve.
    UnknownMethod(String),
    /// Bad parameters: an unknown tool or prompt, a bad cursor or level.
    InvalidParams(String),
    /// No server lists or matches this URI.
    ResourceNotFound(String),
    /// The server is not registered, or still registering.
    NotConnected { server: String, what: String },
    /// The server's link ended before it answered.
    Gone { server: String, what: String, why: String },
    /// The server did not answer in time (it was told to cancel).
    Timeout { server: String, what: String, after: Duration },
    /// A bound was reached (requests in flight, queue bytes); try again later.
    Busy(String),
    /// A request of the server's to a client that cannot be routed (no client, several clients,
    /// a capability the client did not declare).
    Unroutable { code: i64, why: String },
    /// The request is not valid JSON-RPC for this transport or session (HTTP 400).
    BadRequest(String),
    /// The Streamable HTTP session does not exist, or not for this credential (HTTP 404).
    SessionNotFound,
    /// A per-server endpoint of a server that is not registered (HTTP 404).
    NoServer(String),
    /// The session's stream is open already (HTTP 409).
    StreamOpen,
    /// A POST body that is not `application/json` (HTTP 415).
    NotJson,
    /// An `Accept` that does not take what the endpoint answers with (HTTP 406), and what it must.
    NotAcceptable(&'static str),
    /// Too many sessions open (HTTP 503).
    TooManySessions,
    /// This client (token, or address without tokens) has this many sessions open (HTTP 429).
    TooManySessionsHeld(usize),
    /// A 2026-07-28 request whose `_meta` lacks a required field (HTTP 400, -32602).
    InvalidMeta(String),
    /// A 2026-07-28 request whose standard headers do not match its body (HTTP 400, -32020).
    HeaderMismatch(String),
    /// A 2026-07-28 request that needs a client capability it did not declare (HTTP 400, -32021).
    MissingCapability(&'static str),
    /// A 2026-07-28-style request for a protocol version this gateway does not speak (HTTP 400,
    /// -32022).
    UnsupportedVersion(String),
    /// A method the 2026-07-28 revision removed or never had (HTTP 404, -32601).
    NoSuchMethod(String),
    /// A request refused from its head before it reaches any endpoint: its HTTP status and why
    /// (`Refusal`), answered as a plain HTTP error (`to_plain_http`).
    Refused(Refusal),
}

/// Why a request was refused from its head alone, before any endpoint saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// An HTTP/1.1 request without exactly one `Host` (400).
    HostCount,
    /// A method HTTP does not define (501).
    UnknownMethod(String),
    /// No endpoint at this path (404), with why.
    NoRoute(String),
    /// `Host` names no name of the gateway's (421, DNS rebinding), with what to do.
    WrongHost(String),
    /// An `Origin` that is not allowed (403).
    Origin,
    /// No token, or a wrong one (401), for an edge or a client.
    Unauthorized { edge: bool, sent: bool },
    /// The route does not take this method (405), with the methods it takes.
    Method { why: String, allow: String },
    /// A body on a request that takes none (400).
    BodyNotTaken(String),
    /// The gateway is shutting down (503).
    ShuttingDown,
    /// OAuth: no token, an invalid one (401), or one without the scope needed (403), with the
    /// challenge that says where to get one.
    Challenge(Box<Challenge>),
}

/// An OAuth challenge (RFC 6750 §3): the status, the error code and its description, and the
/// `WWW-Authenticate` value naming the resource's metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Challenge {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    pub www_authenticate: String,
}

/// 2026-07-28: the standard headers do not match the body.
pub(crate) const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the request needs a client capability that was not declared.
pub(crate) const MISSING_CAPABILITY: i64 = -32021;
/// 2026-07-28: the requested protocol version is not supported.
pub(crate) const UNSUPPORTED_VERSION: i64 = -32022;

impl Error {
    /// The JSON-RPC error code.
    pub(crate) fn code(&self) -> i64 {
        match self {
            Error::UnknownMethod(_) | Error::NoSuchMethod(_) => METHOD_NOT_FOUND,
            Error::InvalidParams(_) | Error::InvalidMeta(_) => INVALID_PARAMS,
            Error::HeaderMismatch(_) => HEADER_MISMATCH,
            Error::MissingCapability(_) => MISSING_CAPABILITY,
            Error::UnsupportedVersion(_) => UNSUPPORTED_VERSION,
            Error::ResourceNotFound(_) => RESOURCE_NOT_FOUND,
            Error::Unroutable { code, .. } => *code,
            Error::BadRequest(_)
            | Error::SessionNotFound
            | Error::NoServer(_)
            | Error::StreamOpen
            | Error::NotJson
            | Error::NotAcceptable(_) => INVALID_REQUEST,
            Error::Refused(_) => INVALID_REQUEST,
            Error::NotConnected { .. }
            | Error::Gone { .. }
            | Error::Timeout { .. }
            | Error::Busy(_)
            | Error::TooManySessions
            | Error::TooManySessionsHeld(_) => INTERNAL_ERROR,
        }
    }

    /// The HTTP status when this error answers a whole HTTP request.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_)
            | Error::InvalidMeta(_)
            | Error::HeaderMismatch(_)
            | Error::MissingCapability(_)
            | Error::UnsupportedVersion(_) => 400,
            Error::SessionNotFound | Error::NoSuchMethod(_) | Error::NoServer(_) => 404,
            Error::StreamOpen => 409,
            Error::NotJson => 415,
            Error::NotAcceptable(_) => 406,
            Error::TooManySessions | Error::Busy(_) => 503,
            Error::TooManySessionsHeld(_) => 429,
            Error::Refused(r) => r.status(),
            _ => 200,
        }
    }

    /// The answer to a request refused from its head: a plain HTTP error (the request reached no
    /// MCP endpoint), with the headers its status needs (`Allow`, `WWW-Authenticate`,
    /// `Retry-After`).
    pub(crate) fn to_plain_http(&self) -> Response {
        if let Error::Refused(Refusal::Challenge(c)) = self {
            let body = json!({"error": c.error, "error_description": c.description});
            return Response::json(c.status, &body).header("WWW-Authenticate", c.www_authenticate.clone());
        }
        let resp = Response::error(self.status(), &self.to_string());
        match self {
            Error::Refused(Refusal::Method { allow, .. }) => resp.header("Allow", allow.clone()),
            Error::Refused(Refusal::Unauthorized { sent, .. }) => resp.header(
                "WWW-Authenticate",
                format!("Bearer error=\"invalid_token\", error_description=\"{}\"", token_problem(*sent)),
            ),
            Error::Refused(Refusal::ShuttingDown) => resp.header("Retry-After", "1"),
            _ => resp,
        }
    }

    /// The JSON-RPC error object.
    pub(crate) fn to_object(&self) -> Value {
        match self {
            Error::ResourceNotFound(uri) => {
                json!({"code": self.code(), "message": self.to_string(), "data": {"uri": uri}})
            }
            Error::MissingCapability(cap) => {
                // An extension (its identifier has a slash) is required under `extensions`.
                let mut required = json!({*cap: {}});
                if cap.contains('/') {
                    required = json!({"extensions": required});
                }
                json!({"code": self.code(), "message": self.to_string(), "data": {"requiredCapabilities": required}})
            }
            Error::UnsupportedVersion(requested) => json!({
                "code": self.code(),
                "message": self.to_string(),
                "data": {"supported": crate::protocol::ALL_VERSIONS, "requested": requested},
            }),
            _ => json!({"code": self.code(), "message": self.to_string()}),
        }
    }

    /// The HTTP response when this error answers a whole HTTP request: its status, and a
    /// JSON-RPC error without an id as the body, as the spec allows.
    pub(crate) fn to_http(&self) -> Response {
        self.to_http_for(&Value::Null)
    }

    /// The same, answering the request with `id` (2026-07-28: every error carries the id).
    pub(crate) fn to_http_for(&self, id: &Value) -> Response {
        let resp = Response::json(self.status(), &self.response(id));
        match self {
            Error::TooManySessions | Error::TooManySessionsHeld(_) | Error::Busy(_) => {
                resp.header("Retry-After", "5")
            }
            _ => resp,
        }
    }

    /// A whole error response to the request with `id`.
    pub(crate) fn response(&self, id: &Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "error": self.to_object()})
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownMethod(m) => write!(f, "method not found: {m}"),
            Error::NoSuchMethod(m) => {
                write!(f, "method not found: {m} (not a method of protocol 2026-07-28)")
            }
            Error::InvalidMeta(why) | Error::HeaderMismatch(why) => f.write_str(why),
            Error::MissingCapability(cap) => write!(
                f,
                "this request needs the client capability {cap:?}, which the request's \
                 io.modelcontextprotocol/clientCapabilities does not declare"
            ),
            Error::UnsupportedVersion(v) => write!(
                f,
                "unsupported protocol version {v:?}; supported: {}",
                crate::protocol::ALL_VERSIONS.join(", ")
            ),
            Error::InvalidParams(why) | Error::BadRequest(why) | Error::Busy(why) => f.write_str(why),
            Error::Unroutable { why, .. } => f.write_str(why),
            Error::ResourceNotFound(uri) => write!(f, "Resource not found: {uri}"),
            Error::NotConnected { server, what } => {
                write!(
                    f,
                    "{what}: server {server} is not connected to this gateway (or is still registering)"
                )
            }
            Error::Gone { server, what, why } => write!(f, "{what}: server {server} went away ({why})"),
            Error::Timeout { server, what, after } => write!(
                f,
                "{what}: server {server} did not answer within {} s ({}); the request was cancelled",
                after.as_secs_f64(),
                if what.starts_with("tool") { "--timeout-run-tool" } else { "--timeout-rpc" }
            ),
            Error::SessionNotFound => {
                f.write_str("session not found: it ended or never existed; initialize again")
            }
            Error::NoServer(name) => write!(f, "no server named {name:?} is registered with this gateway"),
            Error::StreamOpen => f.write_str("this session already has a stream open"),
            Error::NotJson => f.write_str("POST bodies must be Content-Type: application/json"),
            Error::NotAcceptable(what) => f.write_str(what),
            Error::TooManySessions => f.write_str("the gateway has too many open sessions; try again later"),
            Error::TooManySessionsHeld(n) => write!(
                f,
                "this client already has {n} sessions open (--max-sessions-per-client); end some (DELETE) or let them expire"
            ),
            Error::Refused(r) => r.fmt(f),
        }
    }
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::HostCount | Refusal::BodyNotTaken(_) => 400,
            Refusal::Unauthorized { .. } => 401,
            Refusal::Origin => 403,
            Refusal::NoRoute(_) => 404,
            Refusal::Method { .. } => 405,
            Refusal::WrongHost(_) => 421,
            Refusal::UnknownMethod(_) => 501,
            Refusal::ShuttingDown => 503,
            Refusal::Challenge(c) => c.status,
        }
    }
}

/// What was wrong with a request's bearer token.
fn token_problem(sent: bool) -> &'static str {
    if sent {
        "the bearer token is not one this gateway accepts"
    } else {
        "no bearer token was sent"
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::HostCount => f.write_str("an HTTP/1.1 request needs exactly one Host header"),
            Refusal::UnknownMethod(m) => write!(f, "method {m:?} is not implemented here"),
            Refusal::NoRoute(why) | Refusal::WrongHost(why) | Refusal::BodyNotTaken(why) => f.write_str(why),
            Refusal::Method { why, .. } => f.write_str(why),
            Refusal::Origin => f.write_str("this Origin is not allowed (see --allow-origin)"),
            Refusal::ShuttingDown => f.write_str("the gateway is shutting down"),
            Refusal::Challenge(c) => f.write_str(&c.description),
            Refusal::Unauthorized { edge: true, sent } => write!(
                f,
                "{}: send one of the gateway's --register-token (or, without those, --auth-token) tokens: \
                 mcpport register --header 'Authorization: Bearer <token>'",
                token_problem(*sent)
            ),
            Refusal::Unauthorized { edge: false, sent } => write!(
                f,
                "{}: send one of the gateway's --auth-token tokens as 'Authorization: Bearer <token>' (with \
                 mcp-remote: --header \"Authorization: Bearer <token>\"). This gateway does not do OAuth",
                token_problem(*sent)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_statuses_and_objects() {
        assert_eq!(Error::ResourceNotFound("x://y".into()).to_object()["data"]["uri"], "x://y");
        assert_eq!(Error::SessionNotFound.status(), 404);
        assert_eq!(Error::TooManySessions.status(), 503);
        let t =
            Error::Timeout { server: "pi".into(), what: "tool echo".into(), after: Duration::from_secs(2) };
        assert_eq!(t.code(), INTERNAL_ERROR);
        assert!(t.to_string().contains("within 2 s (--timeout-run-tool)"), "{t}");
        assert_eq!(Error::UnknownMethod("x".into()).response(&json!(3))["error"]["code"], METHOD_NOT_FOUND);
    }
}
