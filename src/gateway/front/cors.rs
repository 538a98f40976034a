//! CORS (the Fetch standard's cross-origin rules) for browser pages on allowed origins: the same
//! origins the `Origin` check lets in (`auth::origin_allowed`: loopback, the gateway's own
//! address, `--allow-origin`). A preflight (`OPTIONS` with an `Origin`) is answered from its head,
//! without a token (browsers send none on a preflight), with the methods and the MCP headers a
//! page may use; it names no server and reads no session. Every other answer to an allowed origin
//! carries `Access-Control-Allow-Origin` with that origin, `Vary: Origin`, and the headers a page
//! may read. A disallowed origin never gets here: the `Origin` check answers it 403, bare.

use std::net::SocketAddr;

use crate::gateway::config::Config;
use crate::gateway::front::auth;
use crate::http::{Request, Response};

/// Headers added to a response.
pub(crate) type Headers = Vec<(&'static str, String)>;

/// What a page may send besides the CORS-safelisted headers.
const ALLOW_HEADERS: &str = "Content-Type, Authorization, Accept, Mcp-Session-Id, MCP-Protocol-Version, \
                             Last-Event-ID, Mcp-Method, Mcp-Name";
/// What a page may read besides the CORS-safelisted response headers.
const EXPOSE_HEADERS: &str = "Mcp-Session-Id, WWW-Authenticate, MCP-Protocol-Version";
const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// How long a browser may reuse a preflight's answer, in seconds.
const MAX_AGE: &str = "600";
/// `Mcp-Param-{Name}` headers echoed from one preflight at most, and the longest name echoed.
const MAX_PARAM_HEADERS: usize = 32;
const MAX_PARAM_NAME: usize = 64;

/// The request's `Origin` when it has one and it is allowed: then its answers carry CORS headers.
pub(crate) fn allowed_origin(cfg: &Config, req: &Request, local: Option<SocketAddr>) -> Option<String> {
    let origin = req.header("origin")?;
    auth::origin_allowed(cfg, req, local).then(|| origin.trim().to_string())
}

/// The headers of every answer to an allowed cross-origin request (none without one).
pub(crate) fn response_headers(origin: Option<&str>) -> Headers {
    let Some(origin) = origin else { return Vec::new() };
    vec![
        ("Access-Control-Allow-Origin", origin.to_string()),
        ("Vary", "Origin".to_string()),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS.to_string()),
    ]
}

/// The answer to a preflight from an allowed origin (its response headers are added by the
/// caller, as to every answer): 204 with the methods, headers and how long to remember them.
/// Without an `Origin` it is a plain `OPTIONS`: 204 with `Allow`.
pub(crate) fn preflight(req: &Request, origin: Option<&str>, allow: &str) -> Response {
    let resp = Response::empty(204).header("Allow", allow.to_string());
    if origin.is_none() {
        return resp;
    }
    let mut resp = resp
        .header("Access-Control-Allow-Methods", ALLOW_METHODS)
        .header("Access-Control-Allow-Headers", allow_headers(req))
        .header("Access-Control-Max-Age", MAX_AGE);
    // Chromium's Private Network Access: a page elsewhere asking for a gateway on a private
    // address; the operator allowed its origin, so it may.
    if req.header("access-control-request-private-network").is_some_and(|v| v.trim() == "true") {
        resp = resp.header("Access-Control-Allow-Private-Network", "true");
    }
    resp
}

/// The fixed list, plus the `Mcp-Param-{Name}` headers the preflight asks for (2026-07-28 tools
/// may declare them), each a plain token of bounded length, and a bounded number of them.
fn allow_headers(req: &Request) -> String {
    let mut out = ALLOW_HEADERS.to_string();
    let asked = req.header("access-control-request-headers").unwrap_or_default();
    let params = asked.split(',').map(str::trim).filter(|h| is_param_header(h)).take(MAX_PARAM_HEADERS);
    for name in params {
        out.push_str(", ");
        out.push_str(name);
    }
    out
}

fn is_param_header(name: &str) -> bool {
    let prefix = "mcp-param-";
    name.len() > prefix.len()
        && name.len() <= prefix.len() + MAX_PARAM_NAME
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request::with("OPTIONS", "/mcp", headers)
    }

    #[test]
    fn only_allowed_origins_get_cors_headers() {
        let cfg = Config { allow_origins: vec!["https://app.example".into()], ..Config::default() };
        let ok = request(&[("Origin", "https://app.example")]);
        assert_eq!(allowed_origin(&cfg, &ok, None).as_deref(), Some("https://app.example"));
        let local = request(&[("Origin", "http://localhost:5173")]);
        assert_eq!(allowed_origin(&cfg, &local, None).as_deref(), Some("http://localhost:5173"));
        assert_eq!(allowed_origin(&cfg, &request(&[("Origin", "https://evil.example")]), None), None);
        assert_eq!(allowed_origin(&cfg, &request(&[]), None), None, "no Origin: not cross-origin");
        let headers = response_headers(Some("https://app.example"));
        assert!(headers.contains(&("Access-Control-Allow-Origin", "https://app.example".into())));
        assert!(headers.contains(&("Vary", "Origin".into())));
        assert!(response_headers(None).is_empty());
    }

    #[test]
    fn a_preflight_echoes_only_bounded_param_headers() {
        let long = format!("Mcp-Param-{}", "x".repeat(MAX_PARAM_NAME + 1));
        let many: Vec<String> = (0..100).map(|i| format!("mcp-param-p{i}")).collect();
        let asked = format!(
            "content-type, Mcp-Param-Region, x-evil, mcp-param-, mcp-param-a b, {long}, {}",
            many.join(",")
        );
        let req = request(&[("Origin", "http://127.0.0.1:1"), ("Access-Control-Request-Headers", &asked)]);
        let resp = preflight(&req, Some("http://127.0.0.1:1"), "GET, POST");
        assert_eq!(resp.status, 204);
        let allowed = &resp.headers.iter().find(|(k, _)| *k == "Access-Control-Allow-Headers").unwrap().1;
        assert!(allowed.starts_with(ALLOW_HEADERS) && allowed.contains("Mcp-Param-Region"), "{allowed}");
        assert!(!allowed.contains("x-evil") && !allowed.contains(&long) && !allowed.contains("a b"));
        assert_eq!(allowed.matches("aram-").count(), MAX_PARAM_HEADERS, "{allowed}");
        assert!(!resp.headers.iter().any(|(k, _)| *k == "Access-Control-Allow-Private-Network"));
        let pna = request(&[("Origin", "https://a"), ("Access-Control-Request-Private-Network", "true")]);
        let resp = preflight(&pna, Some("https://a"), "GET");
        assert!(resp.headers.iter().any(|(k, _)| *k == "Access-Control-Allow-Private-Network"));
        let plain = preflight(&request(&[]), None, "GET, HEAD");
        assert_eq!(plain.headers, vec![("Allow", "GET, HEAD".to_string())]);
    }
}
