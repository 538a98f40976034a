//! Who may do what. Bearer tokens: `--auth-token` for clients (and for edges too, unless
//! `--register-token` gives edges tokens of their own, so that a client token cannot register
//! servers and an edge token cannot call tools). Tokens are compared in constant time and never
//! logged or stored in sessions: a session remembers only which token opened it (its index), so
//! another token presenting its id gets 404. And the `Origin` check against DNS rebinding.

use std::net::{IpAddr, SocketAddr};

use super::Config;
use crate::http::Request;

/// Which endpoints a request is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Role {
    /// MCP clients: SSE, messages, Streamable HTTP, per-server endpoints, /servers.
    Client,
    /// Edges registering servers.
    Edge,
}

/// The credential a request presented: none needed, or the token at this index of its list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Credential {
    Open,
    Token(usize),
}

/// The credential of a request for `role`, or `None` when it must be refused (401).
pub(crate) fn check(cfg: &Config, req: &Request, role: Role) -> Option<Credential> {
    let tokens = match role {
        Role::Edge if !cfg.register_tokens.is_empty() => &cfg.register_tokens,
        _ => &cfg.auth_tokens,
    };
    if tokens.is_empty() {
        return Some(Credential::Open);
    }
    let (scheme, token) = req.header("authorization")?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim().as_bytes();
    // Compare against every token, whatever matched, so timing tells nothing.
    let mut found = None;
    for (i, t) in tokens.iter().enumerate() {
        if constant_time_eq(t.as_bytes(), token) {
            found = Some(Credential::Token(i));
        }
    }
    found
}

/// DNS-rebinding protection: a browser page on another site must not reach the gateway through
/// a name that resolves to it ("If the Origin header is present and invalid, servers MUST
/// respond with HTTP 403 Forbidden"). A request without `Origin` is not from a browser page and
/// passes. Allowed: loopback origins, the address the connection arrived on, and
/// `--allow-origin` values (`*` allows any).
pub(crate) fn origin_allowed(cfg: &Config, req: &Request, local: Option<SocketAddr>) -> bool {
    let Some(origin) = req.header("origin") else { return true };
    let origin = origin.trim_end_matches('/');
    if cfg.allow_origins.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = origin_host(origin) else { return false };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || local.is_some_and(|a| host.parse::<IpAddr>().is_ok_and(|ip| ip == a.ip()))
}

/// The host of an origin (`scheme://host[:port]`), without brackets or port.
fn origin_host(origin: &str) -> Option<&str> {
    let authority = origin.split_once("://")?.1;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn origin_hosts() {
        assert_eq!(origin_host("http://localhost:6274"), Some("localhost"));
        assert_eq!(origin_host("https://[::1]:8"), Some("::1"));
        assert_eq!(origin_host("http://evil.example.com"), Some("evil.example.com"));
        assert_eq!(origin_host("null"), None);
    }

    fn request(auth: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            path: "/sse".into(),
            query: String::new(),
            headers: auth.map(|a| vec![("Authorization".to_string(), a.to_string())]).unwrap_or_default(),
            body: Vec::new(),
            http11: true,
        }
    }

    #[test]
    fn edge_tokens_and_client_tokens_are_kept_apart() {
        let mut cfg = Config { auth_tokens: vec!["client".into(), "c2".into()], ..Config::default() };
        assert_eq!(check(&cfg, &request(Some("Bearer c2")), Role::Client), Some(Credential::Token(1)));
        assert_eq!(check(&cfg, &request(Some("bearer client")), Role::Edge), Some(Credential::Token(0)));
        assert_eq!(check(&cfg, &request(Some("Basic client")), Role::Client), None);
        assert_eq!(check(&cfg, &request(None), Role::Client), None);
        cfg.register_tokens = vec!["edge".into()];
        assert_eq!(check(&cfg, &request(Some("Bearer client")), Role::Edge), None);
        assert_eq!(check(&cfg, &request(Some("Bearer edge")), Role::Client), None);
        assert_eq!(check(&cfg, &request(Some("Bearer edge")), Role::Edge), Some(Credential::Token(0)));
        let open = Config::default();
        assert_eq!(check(&open, &request(None), Role::Client), Some(Credential::Open));
    }
}
