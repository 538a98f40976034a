//! The built-in OAuth 2.1 authorization server (`--oauth-builtin`), for owners who have no
//! identity provider: the gateway is its own issuer at `--public-url`.
//!
//! - RFC 8414 metadata at `/.well-known/oauth-authorization-server`; keys at `/oauth/jwks`.
//! - Clients come by RFC 7591 dynamic registration (`/oauth/register`, what `mcp-remote` and the
//!   hosted assistants use) or by a Client ID Metadata Document (the client id is an https URL
//!   the gateway fetches; `clients.rs`).
//! - Authorization code with PKCE S256 only, exact redirect URIs; the owner approves every
//!   authorization on a consent page, with the password of `--owner-password-file`
//!   (`consent.rs`: rate-limited, CSRF-safe, never framed).
//! - Codes are single-use and live a minute; refresh tokens rotate, and a retired one coming
//!   back revokes its family; access tokens are JWTs signed with the gateway's Ed25519 key
//!   (`tokens.rs`).
//! - What must survive a restart (the key, clients, refresh tokens, revocations) is in
//!   `--state-dir` (`store.rs`), which `mcpport oauth list|revoke` reads and changes.

pub(crate) mod clients;
pub(crate) mod consent;
pub(crate) mod limits;
pub(crate) mod store;
pub(crate) mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use ring::signature::Ed25519KeyPair;
use serde_json::{json, Map, Value};

use crate::gateway::access::{self, Revocations};
use crate::gateway::config::Config;
use crate::http::{Body, Request, Response};
use crate::jose;
use store::Store;

/// The paths the authorization server answers.
pub(crate) const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
pub(crate) const AUTHORIZE_PATH: &str = "/oauth/authorize";
pub(crate) const TOKEN_PATH: &str = "/oauth/token";
pub(crate) const REGISTER_PATH: &str = "/oauth/register";
pub(crate) const JWKS_PATH: &str = "/oauth/jwks";
pub(crate) const REVOKE_PATH: &str = "/oauth/revoke";

/// How long an access token lives.
pub(crate) const ACCESS_TTL: u64 = 3600;

/// One running authorization server.
pub(crate) struct Server {
    /// The issuer: `--public-url`.
    pub issuer: String,
    key: Ed25519KeyPair,
    kid: String,
    pub store: Arc<Store>,
    pub scope: String,
    /// The gateway's MCP paths, to tell which resources a token may be for.
    mcp_path: String,
    sse_path: String,
    consent: consent::Consent,
    /// Registrations lately, per address and in all.
    registrations: limits::Attempts,
    tokens: tokens::Codes,
    clients: clients::Documents,
}

impl Server {
    /// Opens the state directory (creating the key on first use) and reads the owner's password.
    pub(crate) fn open(cfg: &Config) -> Result<Server, String> {
        let o = &cfg.oauth;
        let issuer = o.public_url.clone().ok_or("--oauth-builtin needs --public-url")?;
        let store = Store::open(o.state_dir.as_deref().ok_or("--oauth-builtin needs --state-dir")?)?;
        let key = store.signing_key()?;
        let kid = key_id(&key);
        let password = consent::read_password(o.owner_password_file.as_deref().unwrap_or_default())?;
        let now = store::now();
        store.update(|s| s.prune(now, ACCESS_TTL))?;
        Ok(Server {
            issuer,
            key,
            kid,
            store: Arc::new(store),
            scope: o.scope.clone(),
            mcp_path: cfg.mcp_path.trim_end_matches('/').to_string(),
            sse_path: cfg.sse_path.trim_end_matches('/').to_string(),
            consent: consent::Consent::new(password),
            registrations: limits::Attempts::new(
                clients::REGISTRATION_WINDOW,
                clients::REGISTRATIONS_PER_ADDRESS,
                clients::REGISTRATIONS,
            ),
            tokens: tokens::Codes::default(),
            clients: clients::Documents::default(),
        })
    }

    /// What the resource server needs to trust this server's tokens.
    pub(crate) fn trust(&self) -> access::Builtin {
        let jwk = jose::parse_jwks(&json!({"keys": [jose::ed25519_jwk(&self.key, &self.kid)]}));
        access::Builtin {
            issuer: self.issuer.clone(),
            key: jwk.into_iter().next().expect("our own key parses"),
            revocations: self.store.clone() as Arc<dyn Revocations>,
        }
    }

    /// Whether `path` is one of the server's.
    pub(crate) fn owns(path: &str) -> bool {
        canonical(path).is_some()
    }

    /// The methods a path takes.
    pub(crate) fn methods(path: &str) -> &'static [&'static str] {
        match canonical(path).unwrap_or_default() {
            METADATA_PATH | JWKS_PATH => &["GET", "HEAD"],
            AUTHORIZE_PATH => &["GET", "POST"],
            _ => &["POST"],
        }
    }

    /// Answers one request on one of its paths.
    pub(crate) fn serve(
        &self,
        ctx: &Context,
        req: &Request,
        body: Option<Body>,
        peer: SocketAddr,
    ) -> Response {
        let bytes = body.as_ref().map_or(&[][..], |b| b.bytes());
        let form = || parse_form(bytes);
        match (canonical(&req.path).unwrap_or_default(), req.method.as_str()) {
            (METADATA_PATH, _) => {
                Response::json(200, &self.metadata()).header("Cache-Control", "max-age=300")
            }
            (JWKS_PATH, _) => {
                Response::json(200, &json!({"keys": [jose::ed25519_jwk(&self.key, &self.kid)]}))
                    .header("Cache-Control", "max-age=300")
            }
            (REGISTER_PATH, _) => clients::register(self, bytes, peer.ip()),
            (AUTHORIZE_PATH, "GET") => consent::ask(self, ctx, &query_form(req), peer),
            (AUTHORIZE_PATH, _) => match form() {
                Ok(form) => consent::answer(self, ctx, req, &form, peer),
                Err(why) => consent::error_page(400, &why),
            },
            (TOKEN_PATH, _) => match form() {
                Ok(form) => tokens::token(self, req, &form),
                Err(why) => oauth_error(400, "invalid_request", &why),
            },
            (REVOKE_PATH, _) => match form() {
                Ok(form) => tokens::revoke(self, req, &form),
                Err(why) => oauth_error(400, "invalid_request", &why),
            },
            _ => Response::error(404, "no such endpoint"),
        }
    }

    /// RFC 8414 metadata.
    fn metadata(&self) -> Value {
        let at = |path: &str| format!("{}{path}", self.issuer);
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": at(AUTHORIZE_PATH),
            "token_endpoint": at(TOKEN_PATH),
            "registration_endpoint": at(REGISTER_PATH),
            "jwks_uri": at(JWKS_PATH),
            "revocation_endpoint": at(REVOKE_PATH),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
            "scopes_supported": [self.scope],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
            "service_documentation": "https://github.com/mcpport/mcpport/blob/main/docs/oauth.md",
        })
    }

    /// The resource a token may be for: the gateway's base URL, or one of its MCP endpoints.
    /// `None` for anything else (a token for another server is not this server's to give).
    pub(crate) fn resource(&self, asked: Option<&str>) -> Option<String> {
        let base = self.issuer.as_str();
        let Some(asked) = asked else { return Some(format!("{base}{}", self.mcp_path)) };
        let asked = asked.trim_end_matches('/');
        let path = asked.strip_prefix(base)?;
        access::is_resource_path(path, &[&self.mcp_path, &self.sse_path]).then(|| asked.to_string())
    }

    /// Signs an access token.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        jose::sign_ed25519(&self.key, &self.kid, claims)
    }
}

/// What the consent page shows of the gateway: the servers registered now.
pub(crate) struct Context {
    pub servers: Vec<String>,
}

impl Revocations for Store {
    fn revoked(&self, claims: &Map<String, Value>) -> bool {
        let client = claims.get("client_id").and_then(Value::as_str).unwrap_or_default();
        let iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        let family = claims.get("fam").and_then(Value::as_str);
        match self.read() {
            Ok(state) => state.is_revoked(client, iat, family),
            // A state that cannot be read: refuse rather than honour what may be revoked.
            Err(e) => {
                log::error!("OAuth: cannot read the state to check revocations: {e}");
                true
            }
        }
    }
}

/// The server's path a request path names: its own, or the root paths a 2025-03-26 client uses
/// when it finds no metadata (`/authorize`, `/token`, `/register`), and which a client that lost
/// its metadata between runs falls back to.
fn canonical(path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches('/');
    let all = [METADATA_PATH, AUTHORIZE_PATH, TOKEN_PATH, REGISTER_PATH, JWKS_PATH, REVOKE_PATH];
    if let Some(own) = all.iter().find(|p| **p == path) {
        return Some(own);
    }
    match path {
        "/authorize" => Some(AUTHORIZE_PATH),
        "/token" => Some(TOKEN_PATH),
        "/register" => Some(REGISTER_PATH),
        _ => None,
    }
}

/// `mcpport oauth list|revoke`.
pub(crate) fn run_command(state_dir: &str, revoke: Option<&str>) -> Result<i32, String> {
    if !std::path::Path::new(state_dir).join("state.json").exists() {
        return Err(format!("{state_dir} holds no OAuth state (is it the gateway's --state-dir?)"));
    }
    let store = Store::open(state_dir)?;
    match revoke {
        None => {
            let state = store.read()?;
            println!("{}", serde_json::to_string_pretty(&store::describe(&state)).unwrap_or_default());
            Ok(0)
        }
        Some(id) => {
            let now = store::now();
            if store.update(|s| s.revoke_client(id, now))? {
                println!("revoked {id}: its refresh tokens no longer work, its access tokens stop at their next use");
                Ok(0)
            } else {
                eprintln!(
                    "no client {id:?} in {state_dir} (see mcpport oauth list); revoked its tokens anyway"
                );
                Ok(1)
            }
        }
    }
}

/// The key's id: the first bytes of the SHA-256 of its public half, base64url.
fn key_id(key: &Ed25519KeyPair) -> String {
    use ring::signature::KeyPair;
    crate::codec::base64url(&access::sha256(key.public_key().as_ref())[..12])
}

/// The pairs of an `application/x-www-form-urlencoded` body; a name given twice is an error
/// (RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once").
pub(crate) fn parse_form(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (crate::http::percent_decode(k), crate::http::percent_decode(v));
        if pairs.iter().any(|(name, _)| *name == k) {
            return Err(format!("the parameter {k:?} is given more than once"));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// The query string of a request as form pairs (duplicates dropped: the first counts).
fn query_form(req: &Request) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in req.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = crate::http::percent_decode(k);
        if !pairs.iter().any(|(name, _)| *name == k) {
            pairs.push((k, crate::http::percent_decode(v)));
        }
    }
    pairs
}

/// A parameter of a form.
pub(crate) fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// An OAuth error response (RFC 6749 §5.2), never cached.
pub(crate) fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    no_store(Response::json(status, &body))
}

/// A response that must not be cached (tokens, errors about them).
pub(crate) fn no_store(resp: Response) -> Response {
    resp.header("Cache-Control", "no-store").header("Pragma", "no-cache")
}
