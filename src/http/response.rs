//! HTTP responses with a complete body: status, headers, body, written in one go.
//! Streaming responses (SSE) are in `sse.rs`; the 101 of a WebSocket upgrade in `upgrade.rs`.

use std::io::{self, Write};

use serde_json::Value;

/// A response whose body is known up front.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub(crate) fn empty(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A `text/plain` response.
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Response::empty(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.as_bytes().to_vec())
    }

    /// An `application/json` response.
    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Response::empty(status).header("Content-Type", "application/json").body(body.to_string().into_bytes())
    }

    /// A JSON error body a person can read: `{"error": "...", "status": N}`.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        Response::json(
            status,
            &serde_json::json!({"error": reason(status), "message": message, "status": status}),
        )
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds headers every answer to a request carries (CORS, a session id).
    pub(crate) fn with_headers(mut self, extra: &[(&'static str, String)]) -> Self {
        self.headers.extend_from_slice(extra);
        self
    }

    pub(crate) fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Writes the whole response and flushes it.
    pub(crate) fn write_to(&self, w: &mut impl Write, keep_alive: bool) -> io::Result<()> {
        self.write_for(w, keep_alive, false)
    }

    /// Writes the response to a request, flushed; to a `HEAD` request (`head_only`) the same
    /// head, `Content-Length` included, and no body.
    pub(crate) fn write_for(&self, w: &mut impl Write, keep_alive: bool, head_only: bool) -> io::Result<()> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        // A 204 has no body, and no length either (RFC 9110 §8.6).
        if self.status != 204 {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        w.write_all(&bytes)?;
        w.flush()
    }
}

/// The reason phrase of the statuses the gateway uses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_status_headers_and_length() {
        let mut out = Vec::new();
        Response::text(202, "Accepted").header("X-A", "1").write_to(&mut out, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 202 Accepted\r\nContent-Type: text/plain; charset=utf-8\r\nX-A: 1\r\n\
             Content-Length: 8\r\nConnection: keep-alive\r\n\r\nAccepted"
        );
    }

    #[test]
    fn a_204_has_no_length() {
        let mut out = Vec::new();
        Response::empty(204).header("Allow", "GET").write_to(&mut out, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nAllow: GET\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn a_head_answer_has_the_length_and_no_body() {
        let mut out = Vec::new();
        Response::text(200, "ok").write_for(&mut out, false, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"), "{text:?}");
    }
}
