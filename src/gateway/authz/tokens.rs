//! Codes and tokens: `POST /oauth/token` (the authorization code grant with PKCE, and refresh
//! tokens that rotate) and `POST /oauth/revoke` (RFC 7009).
//!
//! A code is single-use and lives `CODE_TTL`; it is kept (as its SHA-256) until it expires, so a
//! code used twice is recognised, refused, and the refresh family it started is revoked (RFC 6749
//! §4.1.2: the code may have leaked). At most `MAX_CODES` codes exist at once. A refresh token
//! is replaced on every use; the one it replaced is remembered, and coming back revokes its
//! whole family (OAuth 2.1 §4.3.1). Access tokens are JWTs for exactly the resource approved.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::consent::{constant_time_eq, Pending};
use super::store::{self, Family};
use super::{clients::random_token, no_store, oauth_error, param, Server, ACCESS_TTL};
use crate::codec::{base64_decode, base64url};
use crate::gateway::access::{policy::hex, sha256};
use crate::http::{Request, Response};
use crate::thread::lock;

const CODE_TTL: Duration = Duration::from_secs(60);
const MAX_CODES: usize = 1024;

/// Codes issued and not yet expired, by their SHA-256.
#[derive(Default)]
pub(crate) struct Codes {
    codes: Mutex<HashMap<String, Code>>,
}

struct Code {
    grant: Pending,
    issued: Instant,
    /// The refresh family it started, once used.
    used: Option<String>,
}

impl Server {
    /// Issues a code for an approved request.
    pub(crate) fn issue_code(&self, grant: &Pending) -> String {
        let code = random_token(32);
        let mut codes = lock(&self.tokens.codes);
        codes.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_CODES {
            if let Some(oldest) = codes.iter().min_by_key(|(_, c)| c.issued).map(|(k, _)| k.clone()) {
                codes.remove(&oldest);
            }
        }
        codes.insert(hashed(&code), Code { grant: grant.clone(), issued: Instant::now(), used: None });
        code
    }
}

fn hashed(token: &str) -> String {
    hex(&sha256(token.as_bytes()))
}

/// Handles `POST /oauth/token`.
pub(crate) fn token(server: &Server, req: &Request, form: &[(String, String)]) -> Response {
    let client = match authenticate(server, req, form) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    match param(form, "grant_type") {
        Some("authorization_code") => exchange_code(server, &client, form),
        Some("refresh_token") => refresh(server, &client, form),
        Some(other) => {
            oauth_error(400, "unsupported_grant_type", &format!("grant_type {other:?} is not supported"))
        }
        None => oauth_error(400, "invalid_request", "no grant_type"),
    }
}

/// The client a token request comes from: its id (in `Authorization: Basic` or the body) and,
/// for a confidential client, its secret.
fn authenticate(
    server: &Server,
    req: &Request,
    form: &[(String, String)],
) -> Result<store::Client, Response> {
    let basic = req.header("authorization").and_then(|h| {
        let (scheme, value) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then(|| basic_credentials(value.trim()))?
    });
    let (id, secret) = match &basic {
        Some((id, secret)) => (id.as_str(), Some(secret.as_str())),
        None => (param(form, "client_id").unwrap_or_default(), param(form, "client_secret")),
    };
    let refused = |why: &str| {
        let resp = oauth_error(401, "invalid_client", why);
        if basic.is_some() {
            resp.header("WWW-Authenticate", "Basic realm=\"mcpport\"")
        } else {
            resp
        }
    };
    if id.is_empty() {
        return Err(refused("no client_id"));
    }
    let client = server.client(id).map_err(|why| refused(&why))?;
    match (&client.secret_sha256, secret) {
        (None, None) => Ok(client),
        (Some(expected), Some(secret))
            if constant_time_eq(expected.as_bytes(), hashed(secret).as_bytes()) =>
        {
            Ok(client)
        }
        (Some(_), _) => Err(refused("the client secret is missing or wrong")),
        (None, Some(_)) => Err(refused("this client is public: it has no secret")),
    }
}

/// `id:secret` of a Basic credential, each form-urlencoded (RFC 6749 §2.3.1).
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(base64_decode(value)?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((crate::http::percent_decode(id), crate::http::percent_decode(secret)))
}

/// The authorization code grant.
fn exchange_code(server: &Server, client: &store::Client, form: &[(String, String)]) -> Response {
    let invalid = |why: &str| oauth_error(400, "invalid_grant", why);
    let Some(code) = param(form, "code") else { return oauth_error(400, "invalid_request", "no code") };
    let family = random_token(16);
    let grant = {
        let mut codes = lock(&server.tokens.codes);
        let Some(entry) = codes.get_mut(&hashed(code)).filter(|c| c.issued.elapsed() < CODE_TTL) else {
            return invalid("the code is unknown or expired");
        };
        if let Some(started) = entry.used.clone() {
            drop(codes);
            log::warn!("OAuth: a code was used twice (client {}); revoking what it gave", client.id);
            let now = store::now();
            let _ = server.store.update(|s| {
                for f in s.families.iter_mut().filter(|f| f.id == started && f.revoked.is_none()) {
                    f.revoked = Some(now);
                }
            });
            return invalid("the code was already used");
        }
        let g = &entry.grant;
        if g.client_id != client.id {
            return invalid("the code was issued to another client");
        }
        if param(form, "redirect_uri") != Some(g.redirect_uri.as_str()) {
            return invalid("redirect_uri differs from the authorization request's");
        }
        let verifier = param(form, "code_verifier").unwrap_or_default();
        let pkce_ok = (43..=128).contains(&verifier.len())
            && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            && constant_time_eq(base64url(&sha256(verifier.as_bytes())).as_bytes(), g.challenge.as_bytes());
        if !pkce_ok {
            return invalid("the code_verifier does not match the code_challenge");
        }
        if param(form, "resource").is_some_and(|r| r.trim_end_matches('/') != g.resource) {
            return oauth_error(400, "invalid_target", "the resource differs from the one approved");
        }
        entry.used = Some(family.clone());
        g.clone()
    };
    issue(server, &client.id, family, &grant.scope, &grant.resource, None)
}

/// The refresh token grant: the token is replaced, and a replaced one coming back revokes the
/// family.
fn refresh(server: &Server, client: &store::Client, form: &[(String, String)]) -> Response {
    let Some(token) = param(form, "refresh_token") else {
        return oauth_error(400, "invalid_request", "no refresh_token");
    };
    let old = hashed(token);
    let asked_resource = param(form, "resource").map(|r| r.trim_end_matches('/').to_string());
    let now = store::now();
    let found = server
        .store
        .read()
        .ok()
        .and_then(|s| s.families.iter().find(|f| f.current == old || f.used.contains(&old)).cloned());
    let Some(family) = found else {
        return oauth_error(400, "invalid_grant", "the refresh token is unknown");
    };
    if family.client_id != client.id {
        return oauth_error(400, "invalid_grant", "the refresh token was issued to another client");
    }
    if family.revoked.is_some() || family.created + store::FAMILY_TTL <= now {
        return oauth_error(400, "invalid_grant", "the refresh token was revoked or expired");
    }
    if family.current != old {
        log::warn!("OAuth: a replaced refresh token came back (client {}); revoking its family", client.id);
        let _ = server.store.update(|s| {
            for f in s.families.iter_mut().filter(|f| f.id == family.id && f.revoked.is_none()) {
                f.revoked = Some(now);
            }
        });
        return oauth_error(
            400,
            "invalid_grant",
            "the refresh token was already used; its family is revoked",
        );
    }
    if asked_resource.as_ref().is_some_and(|r| *r != family.resource) {
        return oauth_error(400, "invalid_target", "a refreshed token is for the resource first approved");
    }
    issue(server, &client.id, family.id.clone(), &family.scope, &family.resource, Some(&old))
}

/// Mints an access token and a refresh token for a family (new, or rotated from `replaced`).
fn issue(
    server: &Server,
    client_id: &str,
    family: String,
    scope: &str,
    resource: &str,
    replaced: Option<&str>,
) -> Response {
    let refresh = random_token(32);
    let now = store::now();
    let stored = server.store.update(|s| match replaced {
        None => {
            s.families.push(Family {
                id: family.clone(),
                client_id: client_id.to_string(),
                scope: scope.to_string(),
                resource: resource.to_string(),
                current: hashed(&refresh),
                used: Vec::new(),
                created: now,
                revoked: None,
            });
            s.prune(now, ACCESS_TTL);
            true
        }
        Some(old) => {
            match s.families.iter_mut().find(|f| f.id == family && f.current == old && f.revoked.is_none()) {
                Some(f) => {
                    f.used.push(old.to_string());
                    f.current = hashed(&refresh);
                    s.prune(now, ACCESS_TTL);
                    true
                }
                // Another request rotated it a moment ago: this one lost the race.
                None => false,
            }
        }
    });
    match stored {
        Ok(true) => {}
        Ok(false) => return oauth_error(400, "invalid_grant", "the refresh token was already used"),
        Err(e) => {
            log::error!("OAuth: cannot store a refresh token: {e}");
            return oauth_error(500, "server_error", "the token could not be stored");
        }
    }
    let claims = json!({
        "iss": server.issuer,
        "sub": "owner",
        "aud": resource,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "exp": now + ACCESS_TTL,
        "jti": random_token(12),
        "fam": family,
    });
    let body = json!({
        "access_token": server.sign(&claims),
        "token_type": "Bearer",
        "expires_in": ACCESS_TTL,
        "refresh_token": refresh,
        "scope": scope,
    });
    no_store(Response::json(200, &body))
}

/// Handles `POST /oauth/revoke`: a refresh token's family ends (an access token cannot be
/// revoked alone: it expires within the hour; revoke its client with `mcpport oauth revoke`).
/// Always 200 once the client is authenticated (RFC 7009 §2.2).
pub(crate) fn revoke(server: &Server, req: &Request, form: &[(String, String)]) -> Response {
    let client = match authenticate(server, req, form) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Some(token) = param(form, "token") {
        let h = hashed(token);
        let now = store::now();
        let _ = server.store.update(|s| {
            let family = s
                .families
                .iter_mut()
                .find(|f| f.client_id == client.id && (f.current == h || f.used.contains(&h)));
            if let Some(f) = family.filter(|f| f.revoked.is_none()) {
                f.revoked = Some(now);
                log::info!("OAuth: client {} revoked one of its refresh tokens", client.id);
            }
        });
    }
    no_store(Response::json(200, &json!({})))
}
