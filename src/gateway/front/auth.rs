//! Who may do what. Bearer tokens: `--auth-token` for clients (and for edges too, unless
//! `--register-token` gives edges tokens of their own, so that a client token cannot register
//! servers and an edge token cannot call tools), and, for clients only, OAuth access tokens
//! (`access/`: an edge is a machine, not a user). Tokens are compared in constant time and never
//! logged or stored in sessions: a session remembers only which token opened it (its index), so
//! another token presenting its id gets 404. And the two checks against DNS rebinding: `Origin`
//! always, and `Host` when clients need no token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::gateway::access::{Access, Failure, Principal};
use crate::gateway::config::Config;
use crate::gateway::credential::Credential;
use crate::http::Request;

/// Which endpoints a request is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Role {
    /// MCP clients: SSE, messages, Streamable HTTP, per-server endpoints, /servers.
    Client,
    /// Edges registering servers.
    Edge,
}

/// What a request's credential opened: who it is for sessions and server names, and who it is
/// for policies.
pub(crate) struct Pass {
    pub credential: Credential,
    pub principal: Arc<Principal>,
}

/// Why a request's credential was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum Denied {
    /// No static token that fits (and OAuth is off, or the request is an edge's).
    Token { sent: bool },
    /// OAuth: no token (`None`), or one that was not accepted.
    OAuth(Option<Failure>),
}

/// The bearer token of a request, if it sent one in the `Bearer` scheme.
fn bearer(req: &Request) -> Option<&str> {
    let (scheme, token) = req.header("authorization")?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The credential of a request for `role`, or why it is refused (401 or 403). `resource` is the
/// path of the protected resource the request is for: an OAuth token must be for it.
pub(crate) fn check(
    cfg: &Config,
    access: &Access,
    req: &Request,
    role: Role,
    resource: &str,
) -> Result<Pass, Denied> {
    let open = || Pass { credential: Credential::Open, principal: access.anonymous.clone() };
    let tokens = match role {
        Role::Edge if !cfg.register_tokens.is_empty() => &cfg.register_tokens,
        _ => &cfg.auth_tokens,
    };
    let oauth = role == Role::Client && access.oauth();
    if tokens.is_empty() && !oauth {
        return Ok(open());
    }
    let Some(token) = bearer(req) else {
        return Err(if oauth {
            Denied::OAuth(None)
        } else {
            Denied::Token { sent: req.header("authorization").is_some() }
        });
    };
    if let Some(i) = static_token(tokens, token.as_bytes()) {
        let principal = if role == Role::Client { access.static_token(i) } else { access.anonymous.clone() };
        return Ok(Pass { credential: Credential::Token(i), principal });
    }
    if !oauth {
        return Err(Denied::Token { sent: true });
    }
    let principal = access.validate(token, resource).map_err(|f| Denied::OAuth(Some(f)))?;
    Ok(Pass { credential: Credential::Subject(principal.key()), principal: Arc::new(principal) })
}

/// The index of the static token `token` is, compared against every token whatever matched, so
/// timing tells nothing.
fn static_token(tokens: &[String], token: &[u8]) -> Option<usize> {
    let mut found = None;
    for (i, t) in tokens.iter().enumerate() {
        if constant_time_eq(t.as_bytes(), token) {
            found = Some(i);
        }
    }
    found
}

/// DNS-rebinding protection: a browser page on another site must not reach the gateway through
/// a name that resolves to it ("If the Origin header is present and invalid, servers MUST
/// respond with HTTP 403 Forbidden"). A request without `Origin` is not from a browser page and
/// passes. Allowed: loopback origins, the address the connection arrived on, `--allow-origin`
/// values (`*` allows any), and a page of the gateway's own (the status page) reached by a name
/// the gateway answers to: same origin as `Host`, when `Host` is a name of the gateway's or
/// client tokens guard it (a rebound page is same-origin with its own `Host` too, so not when
/// `--allow-host '*'` turned the `Host` check off without tokens).
pub(crate) fn origin_allowed(cfg: &Config, req: &Request, local: Option<SocketAddr>) -> bool {
    let Some(origin) = req.header("origin") else { return true };
    let origin = origin.trim_end_matches('/');
    if cfg.allow_origins.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    // Behind a reverse proxy that rewrites `Host`, the gateway's own pages (the consent page)
    // post from the public URL's origin.
    if cfg
        .oauth
        .public_url
        .as_deref()
        .is_some_and(|url| crate::gateway::access::origin_of(url).eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if same_origin(origin, req)
        && (cfg.clients_need_token() || req.header("host").is_some_and(|h| names_gateway(cfg, h)))
    {
        return true;
    }
    let Some(host) = origin_host(origin) else { return false };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || local.is_some_and(|a| host.parse::<IpAddr>().is_ok_and(|ip| ip == a.ip()))
}

/// DNS-rebinding protection for a gateway that asks clients for no token: a page on another site
/// whose name an attacker re-points at this gateway reaches it under that name, so a request
/// must name the gateway in `Host` as one of: a loopback name (`localhost`, `*.localhost`,
/// 127.0.0.0/8, `[::1]`), any IP address (a page can only be same-origin with an address by
/// being served from it), the `--host` it was bound to, or an `--allow-host` (`*` allows any).
/// With client tokens every request needs one, which a rebound page does not have; and a
/// request without `Host` (HTTP/1.0) is not from a browser. The caller exempts `/health`
/// (probes use all sorts of names; it shows counts only) and edge registration (a browser's
/// WebSocket always carries an `Origin`, which `origin_allowed` checks).
pub(crate) fn host_allowed(cfg: &Config, req: &Request) -> bool {
    if cfg.clients_need_token() || cfg.allow_hosts.iter().any(|h| h == "*") {
        return true;
    }
    req.header("host").is_none_or(|host| names_gateway(cfg, host))
}

/// Whether a `Host` value names the gateway: a loopback name, an IP address, `--host`, or an
/// `--allow-host` name (not `*`).
fn names_gateway(cfg: &Config, host: &str) -> bool {
    let Some(name) = host_name(host) else { return false };
    let bound = host_name(&cfg.host).is_some_and(|b| b.eq_ignore_ascii_case(name));
    is_loopback_name(name)
        || name.parse::<IpAddr>().is_ok()
        || bound
        || cfg.allow_hosts.iter().filter_map(|h| host_name(h)).any(|h| h.eq_ignore_ascii_case(name))
}

/// What a client refused by the `Host` check is told.
pub(crate) fn host_refusal(cfg: &Config, host: &str) -> String {
    let name = host_name(host).unwrap_or(host);
    let bound = if is_loopback_name(&cfg.host) || cfg.host.parse::<IpAddr>().is_ok() {
        String::new()
    } else {
        format!(", {:?}", cfg.host)
    };
    format!(
        "Host {host:?} is not a name of this gateway. Without --auth-token it answers only to localhost, \
         IP addresses{bound} and --allow-host names (protection against DNS rebinding); if {name:?} is \
         its name, start it with --allow-host {name}, or require a token with --auth-token"
    )
}

/// Names that resolve to this machine's loopback whatever DNS says (RFC 6761 for `localhost`).
fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.len() > 10 && name.as_bytes()[name.len() - 10..].eq_ignore_ascii_case(b".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The name in a `Host` value (`name[:port]`, `[v6]:port`), without brackets, port or a final
/// dot; `None` when empty or malformed.
fn host_name(host: &str) -> Option<&str> {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None if host.matches(':').count() > 1 => host,
        None => host.split(':').next().unwrap_or(host),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty() && !name.contains(['/', '@', ' '])).then_some(name)
}

/// Whether an origin (`scheme://host[:port]`) is the one a page at `Host` has: the same host and
/// port, a missing port being the scheme's default.
fn same_origin(origin: &str, req: &Request) -> bool {
    let (Some((scheme, authority)), Some(host)) = (origin.split_once("://"), req.header("host")) else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip =
        |a: &str| a.trim().strip_suffix(default).map(str::to_string).unwrap_or_else(|| a.trim().to_string());
    !authority.is_empty() && strip(authority).eq_ignore_ascii_case(&strip(host))
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
    fn host_names() {
        assert_eq!(host_name("localhost:8765"), Some("localhost"));
        assert_eq!(host_name("[::1]:8765"), Some("::1"));
        assert_eq!(host_name("::1"), Some("::1"));
        assert_eq!(host_name("Example.COM."), Some("Example.COM"));
        assert_eq!(host_name(""), None);
        assert_eq!(host_name("[::1"), None);
    }

    #[test]
    fn without_client_tokens_the_host_must_name_the_gateway() {
        let with_host = |cfg: &Config, host: &str| {
            let mut req = request(None);
            req.headers.push(("Host".into(), host.into()));
            host_allowed(cfg, &req)
        };
        let open = Config { host: "127.0.0.1".into(), ..Config::default() };
        for ok in
            ["127.0.0.1:8765", "localhost:1", "LOCALHOST.", "app.localhost", "[::1]:80", "192.168.1.10:8765"]
        {
            assert!(with_host(&open, ok), "{ok}");
        }
        for bad in ["evil.example.com:8765", "localhost.evil.com", "", "127.0.0.1.evil.com"] {
            assert!(!with_host(&open, bad), "{bad}");
        }
        assert!(host_allowed(&open, &request(None)), "no Host: not a browser");
        let named =
            Config { host: "gw.lan".into(), allow_hosts: vec!["mcp.example.com:443".into()], ..open.clone() };
        assert!(with_host(&named, "gw.lan:8765") && with_host(&named, "MCP.example.com"));
        assert!(!with_host(&named, "evil.example.com"));
        let any = Config { allow_hosts: vec!["*".into()], ..open.clone() };
        assert!(with_host(&any, "evil.example.com"));
        let tokens = Config { auth_tokens: vec!["t".into()], ..open };
        assert!(with_host(&tokens, "evil.example.com"), "tokens guard it instead");
        assert!(host_refusal(&named, "evil.example.com:1").contains("--allow-host evil.example.com"));
    }

    #[test]
    fn the_gateways_own_pages_are_same_origin_by_a_name_it_answers_to() {
        let page = |host: &str, origin: &str| {
            let mut req = request(None);
            req.headers.push(("Host".into(), host.into()));
            req.headers.push(("Origin".into(), origin.into()));
            req
        };
        let named =
            Config { host: "0.0.0.0".into(), allow_hosts: vec!["gw.lan".into()], ..Config::default() };
        assert!(origin_allowed(&named, &page("gw.lan:8765", "http://gw.lan:8765"), None));
        assert!(origin_allowed(&named, &page("GW.lan", "http://gw.lan:80"), None), "default port");
        assert!(!origin_allowed(&named, &page("gw.lan:8765", "http://gw.lan:8766"), None), "another port");
        assert!(!origin_allowed(&named, &page("gw.lan:8765", "http://other.lan:8765"), None));
        // A rebound page is same-origin with its own Host: refused unless the name is the
        // gateway's, or tokens guard it.
        let rebound = page("evil.example:8765", "http://evil.example:8765");
        assert!(!origin_allowed(&named, &rebound, None));
        let any_host = Config { allow_hosts: vec!["*".into()], ..Config::default() };
        assert!(!origin_allowed(&any_host, &rebound, None));
        let tokens = Config { auth_tokens: vec!["t".into()], ..Config::default() };
        assert!(origin_allowed(&tokens, &rebound, None));
        assert!(!origin_allowed(&tokens, &page("evil.example:8765", "http://gw.lan:8765"), None));
    }

    #[test]
    fn origin_hosts() {
        assert_eq!(origin_host("http://localhost:6274"), Some("localhost"));
        assert_eq!(origin_host("https://[::1]:8"), Some("::1"));
        assert_eq!(origin_host("http://evil.example.com"), Some("evil.example.com"));
        assert_eq!(origin_host("null"), None);
    }

    fn request(auth: Option<&str>) -> Request {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        Request::with("GET", "/sse", &headers)
    }

    /// Behind a proxy that rewrites `Host`, the gateway's own pages post from the public URL.
    #[test]
    fn the_public_urls_origin_is_the_gateways_own() {
        let mut cfg = Config { auth_tokens: vec!["t".into()], ..Config::default() };
        cfg.oauth.public_url = Some("https://mcp.example.net".into());
        let req = Request::with(
            "POST",
            "/oauth/authorize",
            &[("Host", "10.0.0.5:8765"), ("Origin", "https://mcp.example.net")],
        );
        assert!(origin_allowed(&cfg, &req, None));
        let other = Request::with(
            "POST",
            "/oauth/authorize",
            &[("Host", "10.0.0.5:8765"), ("Origin", "https://evil.example")],
        );
        assert!(!origin_allowed(&cfg, &other, None));
    }

    #[test]
    fn edge_tokens_and_client_tokens_are_kept_apart() {
        let credential = |cfg: &Config, auth: Option<&str>, role| {
            let access = Access::new(cfg, None).unwrap();
            check(cfg, &access, &request(auth), role, "/mcp").map(|pass| pass.credential)
        };
        let mut cfg = Config { auth_tokens: vec!["client".into(), "c2".into()], ..Config::default() };
        assert_eq!(credential(&cfg, Some("Bearer c2"), Role::Client), Ok(Credential::Token(1)));
        assert_eq!(credential(&cfg, Some("bearer client"), Role::Edge), Ok(Credential::Token(0)));
        assert_eq!(credential(&cfg, Some("Basic client"), Role::Client), Err(Denied::Token { sent: true }));
        assert_eq!(credential(&cfg, None, Role::Client), Err(Denied::Token { sent: false }));
        cfg.register_tokens = vec!["edge".into()];
        assert_eq!(credential(&cfg, Some("Bearer client"), Role::Edge), Err(Denied::Token { sent: true }));
        assert_eq!(credential(&cfg, Some("Bearer edge"), Role::Client), Err(Denied::Token { sent: true }));
        assert_eq!(credential(&cfg, Some("Bearer edge"), Role::Edge), Ok(Credential::Token(0)));
        let open = Config::default();
        assert_eq!(credential(&open, None, Role::Client), Ok(Credential::Open));
    }
}
