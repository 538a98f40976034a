//! The status page: `GET /` serves one self-contained HTML page from the binary (inline CSS and
//! script, no other asset), and `GET /status.json` what it shows: the registered servers with
//! their requests and errors, and the sessions open by transport. The page calls tools through
//! the gateway's own Streamable HTTP endpoint, as any client does. The page itself needs no
//! token (it holds no data, and asks for one when the JSON answers 401); the JSON needs the
//! same token as every client endpoint. The page's `Content-Security-Policy` allows its own
//! script and style (by hash; a test keeps the hashes in step with the page) and fetches from
//! its own origin, nothing else. The binary carries the page gzip-compressed (`status.html.gz`,
//! made by `scripts/status-page.sh`; a test keeps it in step with `status.html`): every browser
//! takes gzip, and the page's bytes count against the router's size budget.

use serde_json::{json, Value};

use crate::gateway::config::{Config, REGISTER_PATH};
use crate::gateway::shared::Gateway;
use crate::http::{Request, Response};

/// Where the page finds its data.
pub(crate) const PATH: &str = "/status.json";

/// The page as the binary carries it: `status.html`, gzip-compressed.
const PAGE_GZIP: &[u8] = include_bytes!("status.html.gz");

/// The page's source, for the tests.
#[cfg(test)]
const PAGE: &str = include_str!("status.html");

/// Lets the page run its own inline script and style (by their SHA-256, which a test checks
/// against the page) and fetch from its own origin; nothing else.
const POLICY: &str = "default-src 'none'; script-src 'sha256-itviMTF2w2AJOfgGONsmrIXTATe5rK0SFsE9r1l9wkk='; \
                      style-src 'sha256-6FxyiABC7jKdD4sRpEL40cWwlczzv0ti72IouOtyXvk='; connect-src 'self'; img-src data:; media-src data:; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page, with headers that let it run its own script and nothing else. An SSE client that
/// was given the gateway's bare URL is told where the MCP endpoints are instead.
pub(crate) fn page(cfg: &Config, req: &Request) -> Response {
    let accept = req.header("accept").unwrap_or("text/html").to_ascii_lowercase();
    if accept.contains("text/event-stream") && !accept.contains("text/html") {
        return Response::error(404, &format!("no MCP endpoint here{}", not_mcp(cfg)));
    }
    if !takes_gzip(req.header("accept-encoding").unwrap_or("")) {
        return Response::error(
            406,
            &format!("the status page is sent gzip-compressed, as browsers take it; its data is at {PATH}"),
        );
    }
    Response::empty(200)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Content-Encoding", "gzip")
        .header("Vary", "Accept-Encoding")
        .header("Content-Security-Policy", POLICY)
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Cache-Control", "no-cache")
        .body(PAGE_GZIP.to_vec())
}

/// Whether `Accept-Encoding` takes gzip (RFC 9110 §12.5.3): `gzip` (or `x-gzip`) with a weight
/// above zero, or else `*` with one; `gzip;q=0` refuses it, whatever `*` says.
fn takes_gzip(accept_encoding: &str) -> bool {
    let mut star = false;
    for entry in accept_encoding.split(',') {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let wanted =
            !parts.any(|p| p.trim().to_ascii_lowercase().strip_prefix("q=").is_some_and(weight_is_zero));
        match coding.as_str() {
            "gzip" | "x-gzip" => return wanted,
            "*" => star = wanted,
            _ => {}
        }
    }
    star
}

/// Whether a `q` value is zero (`0`, `0.`, `0.000`).
fn weight_is_zero(q: &str) -> bool {
    let q = q.trim();
    let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
    !whole.is_empty() && whole.bytes().all(|b| b == b'0') && frac.bytes().all(|b| b == b'0')
}

/// Where MCP clients that came to `/` should go.
pub(crate) fn not_mcp(cfg: &Config) -> String {
    format!(
        ": / is the gateway's status page, for browsers; MCP clients connect to {} (Streamable HTTP) or \
         {} (legacy SSE)",
        cfg.mcp_path, cfg.sse_path
    )
}

/// Tool names of one server the report lists at most (with the count of all of them).
const TOOLS_SHOWN: usize = 50;

/// What the page shows: the servers (as `/servers` lists them, with their requests and errors,
/// and the names their tools are exposed under on the aggregated endpoint), the sessions by
/// transport, what the gateway answered itself, and where clients and edges connect.
pub(crate) fn report(gw: &Gateway) -> Response {
    let counts = gw.metrics.by_server();
    let count = |name: &str| {
        let (requests, errors) = counts.get(name).copied().unwrap_or_default();
        json!({"requests": requests, "errors": errors})
    };
    let servers: Vec<Value> = gw
        .registry
        .summaries(TOOLS_SHOWN)
        .into_iter()
        .map(|(up, mut summary)| {
            if let (Value::Object(fields), Value::Object(c)) = (&mut summary, count(&up.name)) {
                fields.extend(c);
            }
            summary
        })
        .collect();
    let (legacy, streamable) = gw.registry.session_kinds();
    let report = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mcpPath": gw.cfg.mcp_path,
        "ssePath": gw.cfg.sse_path,
        "registerPath": REGISTER_PATH,
        "tokens": !gw.cfg.auth_tokens.is_empty(),
        "servers": servers,
        "sessions": {"legacySse": legacy, "streamableHttp": streamable},
        "gateway": count("gateway"),
    });
    Response::json(200, &report).header("Cache-Control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_self_contained_and_inserts_text_only() {
        assert!(PAGE.len() < 16 * 1024, "the page is {} bytes", PAGE.len());
        // Elements the script makes may show data: URLs (a result's image), which the policy allows
        // and nothing else; markup never loads anything.
        for external in ["http://", "https://", "src=\"", "src='", "href=\"/", "@import", "url("] {
            assert!(!PAGE.contains(external), "the page loads something from elsewhere: {external}");
        }
        for markup in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!PAGE.contains(markup), "the page inserts markup: {markup}");
        }
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
    }

    #[test]
    fn gzip_is_sent_only_to_a_client_that_takes_it() {
        for yes in
            ["gzip", "gzip, deflate, br", "br;q=1.0, GZIP;q=0.5", "x-gzip", "*", "br, *;q=0.1", "gzip;q=1"]
        {
            assert!(takes_gzip(yes), "{yes:?}");
        }
        for no in ["", "identity", "br", "gzip;q=0", "gzip; q=0.000", "*, gzip;q=0", "*;q=0", "gzipx"] {
            assert!(!takes_gzip(no), "{no:?}");
        }
    }

    #[test]
    fn the_compressed_page_is_the_page() {
        use std::io::Write;
        let mut gunzip = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip (every Debian has it)");
        gunzip.stdin.take().unwrap().write_all(PAGE_GZIP).unwrap();
        let out = gunzip.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(out.stdout == PAGE.as_bytes(), "status.html.gz is stale: run scripts/status-page.sh");
    }

    /// The CSP source (`sha256-…`) of the page's one `<tag>` element's content.
    fn inline_hash(tag: &str) -> String {
        let content = PAGE.split(&format!("<{tag}>")).nth(1).unwrap().split(&format!("</{tag}>")).next();
        let digest = ring::digest::digest(&ring::digest::SHA256, content.unwrap().as_bytes());
        format!("sha256-{}", crate::codec::base64(digest.as_ref()))
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        for (tag, directive) in [("script", "script-src"), ("style", "style-src")] {
            let source = format!("{directive} '{}';", inline_hash(tag));
            assert!(POLICY.contains(&source), "the page's <{tag}> changed: put {source:?} in POLICY");
        }
        let req = Request::with(
            "GET",
            "/",
            &[("Accept", "text/html,*/*"), ("Accept-Encoding", "gzip, deflate, br")],
        );
        let resp = page(&Config::default(), &req);
        let csp = &resp.headers.iter().find(|(k, _)| *k == "Content-Security-Policy").unwrap().1;
        assert_eq!(csp, POLICY);
        assert!(csp.starts_with("default-src 'none';") && csp.contains("; connect-src 'self';"), "{csp}");
    }
}
