//! The owner's consent page: `GET /oauth/authorize` checks the request and shows who asks for
//! what (the client's name and id, the host its code goes to, the servers the token opens);
//! `POST /oauth/authorize` takes the owner's password and decision.
//!
//! - Nothing is redirected before the client and its exact redirect URI are known: a bad
//!   client id or redirect URI gets an error page, never a redirect (RFC 6749 §4.1.2.1).
//! - Each page carries a request id and a CSRF token, both random, kept server-side with the
//!   request for `PENDING_TTL` (at most `MAX_PENDING`); a POST without the pair, or with an
//!   `Origin` other than the gateway's, is refused.
//! - Wrong passwords are limited per request (`MAX_TRIES`, then it must be started again), per
//!   client address (`MAX_FAILURES` per `FAILURE_WINDOW`, an IPv6 address by its /64) and for
//!   everyone together (`MAX_FAILURES_ALL`), then 429. Behind a reverse proxy every client has
//!   the proxy's address: docs/oauth.md says what to do about it.
//! - The page cannot be framed and is never cached; the password is kept only as its SHA-256
//!   and compared in constant time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::limits::Attempts;
use super::store::{self, MAX_CLIENTS};
use super::{clients::random_token, param, Context, Server};
use crate::codec::percent_encode;
use crate::gateway::access::{origin_of, sha256};
use crate::http::{Request, Response};
use crate::thread::lock;

const PENDING_TTL: Duration = Duration::from_secs(600);
const MAX_PENDING: usize = 256;
const MAX_PENDING_PER_ADDRESS: usize = 16;
const FAILURE_WINDOW: Duration = Duration::from_secs(900);
const MAX_FAILURES: usize = 5;
const MAX_FAILURES_ALL: usize = 100;
/// Wrong passwords one request may take before it must be started again.
const MAX_TRIES: usize = 3;

/// The consent page's state: the owner's password, the requests shown, the failed attempts.
pub(crate) struct Consent {
    password_sha256: [u8; 32],
    pending: Mutex<HashMap<String, Pending>>,
    failures: Attempts,
}

/// An authorization request shown to the owner, waiting for the answer.
#[derive(Clone)]
pub(crate) struct Pending {
    pub client_id: String,
    client_name: String,
    pub redirect_uri: String,
    state: Option<String>,
    pub challenge: String,
    pub scope: String,
    pub resource: String,
    csrf: String,
    shown: Instant,
    /// Wrong passwords given for it so far.
    wrong: usize,
    /// Who asked for the page (by /64 for IPv6): one address cannot push out everyone's.
    asker: std::net::IpAddr,
}

/// Reads the owner's password: the file's first line, at least 8 characters.
pub(crate) fn read_password(path: &str) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--owner-password-file {path}: {e}"))?;
    let password = text.lines().next().unwrap_or_default();
    if password.chars().count() < 8 {
        return Err(format!(
            "--owner-password-file {path}: the password (its first line) needs 8 characters or more"
        ));
    }
    Ok(sha256(password.as_bytes()))
}

impl Consent {
    pub(crate) fn new(password_sha256: [u8; 32]) -> Consent {
        let failures = Attempts::new(FAILURE_WINDOW, MAX_FAILURES, MAX_FAILURES_ALL);
        Consent { password_sha256, pending: Mutex::default(), failures }
    }

    /// Keeps a request for its answer; its id.
    fn keep(&self, pending: Pending) -> String {
        let id = random_token(16);
        let mut all = lock(&self.pending);
        all.retain(|_, p| p.shown.elapsed() < PENDING_TTL);
        // Full for this address (or for everyone): its oldest (or the oldest) goes.
        let mine = all.values().filter(|p| p.asker == pending.asker).count() >= MAX_PENDING_PER_ADDRESS;
        if mine || all.len() >= MAX_PENDING {
            let oldest = all
                .iter()
                .filter(|(_, p)| !mine || p.asker == pending.asker)
                .min_by_key(|(_, p)| p.shown)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                all.remove(&oldest);
            }
        }
        all.insert(id.clone(), pending);
        id
    }

    /// The request `id` if the CSRF token is its own and it has not expired.
    fn find(&self, id: &str, csrf: &str) -> Option<Pending> {
        let all = lock(&self.pending);
        let p = all.get(id).filter(|p| p.shown.elapsed() < PENDING_TTL)?;
        constant_time_eq(p.csrf.as_bytes(), csrf.as_bytes()).then(|| p.clone())
    }

    fn forget(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    /// Counts a wrong password for request `id`; whether the request is used up (then it is
    /// forgotten: a guesser must start a new request for every `MAX_TRIES` guesses).
    fn wrong_password(&self, id: &str) -> bool {
        let mut all = lock(&self.pending);
        let used_up = all.get_mut(id).is_none_or(|p| {
            p.wrong += 1;
            p.wrong >= MAX_TRIES
        });
        if used_up {
            all.remove(id);
        }
        used_up
    }

    fn password_is(&self, password: &str) -> bool {
        constant_time_eq(&sha256(password.as_bytes()), &self.password_sha256)
    }
}

/// Handles `GET /oauth/authorize`: checks the request, and shows the consent page.
pub(crate) fn ask(server: &Server, ctx: &Context, query: &[(String, String)], peer: SocketAddr) -> Response {
    let Some(client_id) = param(query, "client_id") else {
        return error_page(400, "The request names no client (client_id).");
    };
    let client = match server.client(client_id) {
        Ok(c) => c,
        Err(why) => return error_page(400, &format!("This client is not known: {why}.")),
    };
    let redirect_uri = match param(query, "redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_string(),
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        _ => return error_page(400, "The redirect URI is not one this client registered."),
    };
    let state = param(query, "state").map(str::to_string);
    // A client the owner never approved gets its errors on a page, not in a redirect: anyone
    // may register one, and the gateway must not become a redirector to any site it names.
    let trusted = client.approved.is_some();
    let back = |error: &str, why: &str| match trusted {
        true => {
            redirect(server, &redirect_uri, &[("error", error), ("error_description", why)], state.as_deref())
        }
        false => error_page(400, &format!("{error}: {why}.")),
    };
    if param(query, "response_type") != Some("code") {
        return back("unsupported_response_type", "only the authorization code flow (response_type=code)");
    }
    let Some(challenge) = param(query, "code_challenge").filter(|c| (43..=128).contains(&c.len())) else {
        return back(
            "invalid_request",
            "PKCE is required: send code_challenge with code_challenge_method S256",
        );
    };
    if param(query, "code_challenge_method") != Some("S256") {
        return back("invalid_request", "only code_challenge_method S256");
    }
    let Some(resource) = server.resource(param(query, "resource")) else {
        return back("invalid_target", "the resource is not one of this gateway's MCP endpoints");
    };
    let pending = Pending {
        client_id: client.id.clone(),
        client_name: client.name.clone(),
        redirect_uri,
        state,
        challenge: challenge.to_string(),
        scope: server.scope.clone(),
        resource,
        csrf: random_token(16),
        shown: Instant::now(),
        wrong: 0,
        asker: crate::gateway::credential::client_address(peer.ip()),
    };
    let id = server.consent.keep(pending.clone());
    consent_page(server, ctx, &id, &pending, None)
}

/// Handles `POST /oauth/authorize`: the owner's password and decision.
pub(crate) fn answer(
    server: &Server,
    ctx: &Context,
    req: &Request,
    form: &[(String, String)],
    peer: SocketAddr,
) -> Response {
    if let Some(origin) = req.header("origin") {
        if origin.trim_end_matches('/') != origin_of(&server.issuer) {
            return error_page(403, "This form may only be sent from the gateway's own page.");
        }
    }
    let (Some(id), Some(csrf)) = (param(form, "request"), param(form, "csrf")) else {
        return error_page(400, "This form is incomplete.");
    };
    let Some(pending) = server.consent.find(id, csrf) else {
        return error_page(400, "This request expired or was already answered; start again from the client.");
    };
    if param(form, "decision") == Some("deny") {
        server.consent.forget(id);
        log::info!("OAuth: the owner denied client {} ({:?})", pending.client_id, pending.client_name);
        let why = [("error", "access_denied"), ("error_description", "the owner said no")];
        return redirect(server, &pending.redirect_uri, &why, pending.state.as_deref());
    }
    if server.consent.failures.exhausted(peer.ip()) {
        log::warn!("OAuth: {peer}: too many wrong owner passwords; refusing for now");
        return error_page(429, "Too many wrong passwords. Wait a quarter of an hour and try again.");
    }
    if !server.consent.password_is(param(form, "password").unwrap_or_default()) {
        server.consent.failures.count(peer.ip());
        log::warn!("OAuth: {peer}: a wrong owner password on the consent page");
        if server.consent.wrong_password(id) {
            return error_page(
                401,
                "Too many wrong passwords for this request: start again from the client.",
            );
        }
        let mut page = consent_page(server, ctx, id, &pending, Some("That password is not the owner's."));
        page.status = 401;
        return page;
    }
    server.consent.forget(id);
    if let Err(why) = approve(server, &pending.client_id) {
        return error_page(503, &why);
    }
    let code = server.issue_code(&pending);
    log::info!(
        "OAuth: the owner approved client {} ({:?}) for {}",
        pending.client_id,
        pending.client_name,
        pending.resource
    );
    redirect(server, &pending.redirect_uri, &[("code", &code)], pending.state.as_deref())
}

/// Notes the owner's approval of a registered client (a metadata document client is not
/// stored: its document says who it is).
fn approve(server: &Server, client_id: &str) -> Result<(), String> {
    if store::is_url(client_id) {
        return Ok(());
    }
    let now = store::now();
    let done = server.store.update(|s| {
        let approved = s.clients.iter().filter(|c| c.approved.is_some()).count();
        let client = s.clients.iter_mut().find(|c| c.id == client_id);
        match client {
            Some(c) if c.approved.is_some() => true,
            Some(c) if approved < MAX_CLIENTS => {
                c.approved = Some(now);
                true
            }
            _ => false,
        }
    });
    match done {
        Ok(true) => Ok(()),
        Ok(false) => {
            Err("This client is gone, or the gateway has all the clients it takes; revoke one first.".into())
        }
        Err(e) => {
            log::error!("OAuth: cannot store an approval: {e}");
            Err("The approval could not be stored.".into())
        }
    }
}

/// A 303 to the client's redirect URI with `params`, its `state`, and `iss` (RFC 9207).
fn redirect(server: &Server, uri: &str, params: &[(&str, &str)], state: Option<&str>) -> Response {
    let mut location = uri.to_string();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    let iss = [("iss", server.issuer.as_str())];
    let state = state.map(|s| ("state", s));
    for (k, v) in params.iter().chain(state.iter()).chain(iss.iter()) {
        location.push(sep);
        location.push_str(&format!("{k}={}", percent_encode(v)));
        sep = '&';
    }
    super::no_store(Response::empty(303).header("Location", location))
}

/// A page with the gateway's headers for its own pages: never framed, never cached, no referrer.
fn page(status: u16, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport \
         content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body><main>{body}</main>\
         </body></html>",
        escape(title)
    );
    Response::empty(status)
        .header("Content-Type", "text/html; charset=utf-8")
        .header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        )
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Cache-Control", "no-store")
        .body(html.into_bytes())
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}\
main{max-width:34em;margin:3em auto;background:#fff;padding:1.5em 2em;border-radius:8px;\
box-shadow:0 1px 4px #0002}h1{font-size:1.3em}code{background:#eef;padding:0 .2em;word-break:break-all}\
.err{color:#b00020;font-weight:600}input[type=password]{width:100%;padding:.5em;font-size:1em;box-sizing:border-box}\
button{font-size:1em;padding:.5em 1.2em;margin:1em .5em 0 0}dt{font-weight:600}";

/// An error page (no redirect: the client or its redirect URI could not be trusted).
pub(crate) fn error_page(status: u16, message: &str) -> Response {
    page(status, "Authorization failed", &format!("<h1>Authorization failed</h1><p>{}</p>", escape(message)))
}

/// The consent page for a request.
fn consent_page(server: &Server, ctx: &Context, id: &str, p: &Pending, error: Option<&str>) -> Response {
    let path = p.resource.strip_prefix(&server.issuer).unwrap_or_default();
    let servers = match path.strip_prefix("/servers/").and_then(|r| r.split('/').next()) {
        Some(name) => format!("the server <code>{}</code>", escape(name)),
        None if ctx.servers.is_empty() => {
            "every server that registers with this gateway (none is connected now)".into()
        }
        None => format!(
            "every server of this gateway, now {}",
            ctx.servers.iter().map(|s| format!("<code>{}</code>", escape(s))).collect::<Vec<_>>().join(", ")
        ),
    };
    let redirect_host = crate::http::client::Url::parse(&p.redirect_uri)
        .map(|u| u.host)
        .unwrap_or_else(|_| p.redirect_uri.split(':').next().unwrap_or_default().to_string());
    let error = error.map(|e| format!("<p class=err>{}</p>", escape(e))).unwrap_or_default();
    let body = format!(
        "<h1>Allow {name} to use your MCP servers?</h1>{error}\
         <dl><dt>Client</dt><dd>{name} <code>{client_id}</code></dd>\
         <dt>It gets a token for</dt><dd>{servers} (<code>{resource}</code>, scope <code>{scope}</code>)</dd>\
         <dt>The answer goes to</dt><dd><code>{redirect_host}</code></dd></dl>\
         <form method=post action=\"{action}\"><input type=hidden name=request value=\"{id}\">\
         <input type=hidden name=csrf value=\"{csrf}\"><label for=password>Owner password</label>\
         <input type=password id=password name=password autocomplete=current-password autofocus>\
         <button type=submit name=decision value=approve>Allow</button>\
         <button type=submit name=decision value=deny>Deny</button></form>\
         <p>Only allow clients you started yourself. Policies (<code>--policy</code>) still decide which tools it sees.</p>",
        name = escape(&p.client_name),
        client_id = escape(&p.client_id),
        resource = escape(&p.resource),
        scope = escape(&p.scope),
        redirect_host = escape(&redirect_host),
        action = super::AUTHORIZE_PATH,
        id = escape(id),
        csrf = escape(&p.csrf),
    );
    page(200, "Authorize a client", &body)
}

/// Text safe in HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_compared_whole() {
        let consent = Consent::new(sha256(b"correct horse"));
        assert!(consent.password_is("correct horse") && !consent.password_is("correct hors"));
    }

    #[test]
    fn html_is_escaped_and_origins_are_cut() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(origin_of("https://gw.example:8443"), "https://gw.example:8443");
        assert_eq!(origin_of("https://gw.example/base"), "https://gw.example");
    }
}
