//! Who the clients are: RFC 7591 dynamic registration, and Client ID Metadata Documents (a
//! client id that is an https URL, fetched and checked to name itself).
//!
//! A registration is open to anyone (that is what dynamic registration is for) and worth
//! nothing until the owner approves an authorization for it: registrations never approved
//! expire after a day, at most `MAX_UNAPPROVED` wait at once (the oldest go), and none can push
//! out a client the owner approved. Redirect URIs must be absolute, without a fragment, and
//! https, http on a loopback address (native apps, RFC 8252 §7.3), or a private-use scheme
//! (`cursor://…`); never `javascript:`, `data:` or the like.
//!
//! A metadata document is fetched with `FETCH_TIMEOUT` and `MAX_DOCUMENT` bytes, only from a
//! public address (a loopback one only when the gateway's own public URL is loopback: a local
//! setup), without following redirects, and kept for `DOCUMENT_TTL` (a failure `FAILURE_TTL`;
//! at most `MAX_DOCUMENTS` of them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::store::{self, Client, MAX_CLIENTS, MAX_UNAPPROVED};
use super::{no_store, oauth_error, Server};
use crate::gateway::access::{policy::hex, sha256};
use crate::http::client::{Fetch, Url};
use crate::http::Response;
use crate::thread::lock;

const MAX_REDIRECTS: usize = 10;
const MAX_URI: usize = 2000;
/// All redirect URIs of one client together.
const MAX_REDIRECT_BYTES: usize = 4096;
pub(crate) const REGISTRATION_WINDOW: Duration = Duration::from_secs(600);
pub(crate) const REGISTRATIONS_PER_ADDRESS: usize = 10;
pub(crate) const REGISTRATIONS: usize = 60;
const MAX_NAME: usize = 200;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT: usize = 64 * 1024;
const DOCUMENT_TTL: Duration = Duration::from_secs(300);
const MAX_DOCUMENTS: usize = 64;

/// Client metadata documents fetched lately, and those that could not be had (kept for
/// `FAILURE_TTL`, so a client id that fails is not fetched again at every request).
#[derive(Default)]
pub(crate) struct Documents {
    cache: Mutex<HashMap<String, Fetched>>,
    tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
}

const FAILURE_TTL: Duration = Duration::from_secs(30);

/// A document as fetched (or why not), and when.
type Fetched = (Instant, Result<Client, String>);

/// Handles `POST /oauth/register`, within `REGISTRATIONS_PER_ADDRESS` per address and
/// `REGISTRATIONS` in all per `REGISTRATION_WINDOW`.
pub(crate) fn register(server: &Server, body: &[u8], peer: std::net::IpAddr) -> Response {
    if server.registrations.exhausted(peer) {
        log::warn!("OAuth: {peer}: too many registrations; refusing for now");
        return oauth_error(
            429,
            "temporarily_unavailable",
            "too many registrations: try again in a few minutes",
        );
    }
    server.registrations.count(peer);
    let Ok(Value::Object(meta)) = serde_json::from_slice::<Value>(body) else {
        return oauth_error(400, "invalid_client_metadata", "the body must be a JSON object");
    };
    let meta = Value::Object(meta);
    let client = match client_from_metadata(&meta) {
        Ok(c) => c,
        Err(why) => return oauth_error(400, why.0, &why.1),
    };
    let secret = (client.auth_method != "none").then(|| random_token(32));
    let client = Client { secret_sha256: secret.as_deref().map(|s| hex(&sha256(s.as_bytes()))), ..client };
    let stored = server.store.update(|state| {
        state.prune(store::now(), super::ACCESS_TTL);
        if state.clients.iter().filter(|c| c.approved.is_some()).count() >= MAX_CLIENTS {
            return false;
        }
        let waiting = state.clients.iter().filter(|c| c.approved.is_none()).count();
        if waiting >= MAX_UNAPPROVED {
            if let Some(i) = state.clients.iter().position(|c| c.approved.is_none()) {
                state.clients.remove(i);
            }
        }
        state.clients.push(client.clone());
        true
    });
    match stored {
        Ok(true) => {}
        Ok(false) => {
            return oauth_error(400, "invalid_client_metadata", "this gateway has all the clients it takes")
        }
        Err(e) => {
            log::error!("OAuth: cannot store a registration: {e}");
            return oauth_error(500, "server_error", "the registration could not be stored");
        }
    }
    log::info!("OAuth: registered client {} ({:?}), awaiting the owner's approval", client.id, client.name);
    let mut answer = json!({
        "client_id": client.id,
        "client_id_issued_at": client.created,
        "client_name": client.name,
        "redirect_uris": client.redirect_uris,
        "token_endpoint_auth_method": client.auth_method,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    if let Some(secret) = secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    no_store(Response::json(201, &answer))
}

/// An error code and its description.
type Refused = (&'static str, String);

/// A new client from registration metadata (RFC 7591 §2), checked.
fn client_from_metadata(meta: &Value) -> Result<Client, Refused> {
    let bad = |why: String| ("invalid_client_metadata", why);
    let redirect_uris = redirect_uris(meta).map_err(|why| ("invalid_redirect_uri", why))?;
    let method = meta["token_endpoint_auth_method"].as_str().unwrap_or("client_secret_basic");
    if !["none", "client_secret_post", "client_secret_basic"].contains(&method) {
        return Err(bad(format!("token_endpoint_auth_method {method:?} is not supported")));
    }
    let listed = |key: &str, allowed: &[&str]| {
        meta[key].as_array().into_iter().flatten().all(|v| v.as_str().is_some_and(|s| allowed.contains(&s)))
    };
    if !listed("grant_types", &["authorization_code", "refresh_token"]) {
        return Err(bad("grant_types: only authorization_code and refresh_token".into()));
    }
    if !listed("response_types", &["code"]) {
        return Err(bad("response_types: only code".into()));
    }
    Ok(Client {
        id: format!("mcpc_{}", random_token(16)),
        name: clean_name(meta["client_name"].as_str().unwrap_or("an unnamed client")),
        redirect_uris,
        auth_method: method.to_string(),
        secret_sha256: None,
        created: store::now(),
        approved: None,
    })
}

fn redirect_uris(meta: &Value) -> Result<Vec<String>, String> {
    let uris = meta["redirect_uris"].as_array().filter(|a| !a.is_empty() && a.len() <= MAX_REDIRECTS);
    let uris = uris.ok_or_else(|| format!("redirect_uris must list 1 to {MAX_REDIRECTS} URIs"))?;
    if uris.iter().filter_map(Value::as_str).map(str::len).sum::<usize>() > MAX_REDIRECT_BYTES {
        return Err(format!("redirect_uris: {MAX_REDIRECT_BYTES} bytes in all at most"));
    }
    uris.iter()
        .map(|u| {
            let u = u.as_str().ok_or("every redirect URI must be a string")?;
            check_redirect_uri(u).map(|()| u.to_string())
        })
        .collect()
}

/// Whether a redirect URI is one a code may be sent to.
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let cut: String = uri.chars().take(100).collect();
    if uri.len() > MAX_URI || uri.contains('#') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("redirect URI {cut:?}: too long, or with a fragment or spaces"));
    }
    let Some((scheme, _)) = uri.split_once(':') else {
        return Err(format!("redirect URI {cut:?}: not absolute"));
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "https" => Url::parse(uri).map(|_| ()),
        "http" => match Url::parse(uri) {
            Ok(url) if url.is_loopback() => Ok(()),
            _ => Err(format!("redirect URI {cut:?}: plain http only to a loopback address")),
        },
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            Err(format!("redirect URI {cut:?}: the scheme {scheme} is not allowed"))
        }
        s if s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            Ok(())
        }
        _ => Err(format!("redirect URI {cut:?}: a bad scheme")),
    }
}

/// A name fit for a page and a log line: no control characters, at most `MAX_NAME` characters.
fn clean_name(name: &str) -> String {
    let name: String = name.chars().filter(|c| !c.is_control()).take(MAX_NAME).collect();
    if name.trim().is_empty() {
        "an unnamed client".into()
    } else {
        name
    }
}

/// Random URL-safe text of `bytes` random bytes.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    crate::sys::random_bytes(&mut buf);
    crate::codec::base64url(&buf)
}

impl Server {
    /// The client `id` names: a registered one, or the one its metadata document describes.
    pub(crate) fn client(&self, id: &str) -> Result<Client, String> {
        if store::is_url(id) {
            // A client id on this machine is fetched only by a gateway that is itself local
            // (tests, a desktop): otherwise it would be a way to probe the gateway's host.
            let local = crate::http::client::Url::parse(&self.issuer).is_ok_and(|u| u.is_loopback());
            return self.clients.document(id, local);
        }
        let state = self.store.read()?;
        state
            .client(id)
            .cloned()
            .ok_or_else(|| format!("no client {:?} is registered", id.chars().take(100).collect::<String>()))
    }
}

impl Documents {
    /// The client a metadata document at `id` describes, fetched or cached; `local`: whether
    /// a document on this machine may be fetched.
    fn document(&self, id: &str, local: bool) -> Result<Client, String> {
        let kept =
            |(at, found): &Fetched| at.elapsed() < if found.is_ok() { DOCUMENT_TTL } else { FAILURE_TTL };
        if let Some(entry) = lock(&self.cache).get(id).filter(|e| kept(e)) {
            return entry.1.clone();
        }
        let tls = self.tls.get_or_init(|| {
            crate::tls::client_config(&crate::tls::ClientOptions::default()).expect("the web roots load")
        });
        let client = fetch_document(id, local, tls);
        let mut cache = lock(&self.cache);
        cache.retain(|_, e| kept(e));
        if cache.len() >= MAX_DOCUMENTS {
            if let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone()) {
                cache.remove(&oldest);
            }
        }
        cache.insert(id.to_string(), (Instant::now(), client.clone()));
        client
    }
}

/// Fetches and checks a client metadata document: https (http on loopback only), a path, and a
/// document naming itself by the same URL.
fn fetch_document(id: &str, local: bool, tls: &Arc<rustls::ClientConfig>) -> Result<Client, String> {
    let url = Url::parse(id)?;
    if url.is_loopback() && !local {
        return Err("a client id URL may not name the gateway's own machine".into());
    }
    if !url.secure && !url.is_loopback() {
        return Err("a client id URL must be https".into());
    }
    if url.path == "/" {
        return Err("a client id URL needs a path".into());
    }
    let headers = [("Accept", "application/json")];
    let fetch = Fetch {
        method: "GET",
        url: &url,
        headers: &headers,
        body: b"",
        timeout: FETCH_TIMEOUT,
        max_body: MAX_DOCUMENT,
        tls,
        public_only: !url.is_loopback(),
    };
    let reply =
        crate::http::client::fetch(&fetch).map_err(|e| format!("fetching the client's metadata: {e}"))?;
    if reply.status != 200 {
        return Err(format!("fetching the client's metadata: HTTP {}", reply.status));
    }
    let doc: Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("the client's metadata is not JSON: {e}"))?;
    if doc["client_id"].as_str() != Some(id) {
        return Err("the client's metadata names another client_id".into());
    }
    if doc["token_endpoint_auth_method"].as_str().is_some_and(|m| m != "none") {
        return Err("a metadata document client must be public (token_endpoint_auth_method none)".into());
    }
    Ok(Client {
        id: id.to_string(),
        name: clean_name(doc["client_name"].as_str().unwrap_or(&url.host)),
        redirect_uris: redirect_uris(&doc)?,
        auth_method: "none".into(),
        secret_sha256: None,
        created: store::now(),
        approved: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway on a public URL never fetches a client id on its own machine (or a private
    /// network): it would be a way to probe what listens there.
    #[test]
    fn metadata_documents_come_only_from_public_addresses() {
        let tls = crate::tls::client_config(&crate::tls::ClientOptions::default()).unwrap();
        let e = fetch_document("http://127.0.0.1:1/client.json", false, &tls).unwrap_err();
        assert!(e.contains("own machine"), "{e}");
        let e = fetch_document("http://10.0.0.1/client.json", false, &tls).unwrap_err();
        assert!(e.contains("https"), "{e}");
    }

    #[test]
    fn redirect_uris_are_checked() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost:6274/oauth/callback",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "com.example.app:/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://evil.example/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://x.example/cb#frag",
            "/relative",
            "https://x.example/a b",
            "1abc://x",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registrations_take_only_what_the_server_does() {
        let ok = json!({"redirect_uris": ["http://127.0.0.1:1/cb"], "token_endpoint_auth_method": "none",
            "client_name": "Claude\u{0007}", "grant_types": ["authorization_code", "refresh_token"]});
        let c = client_from_metadata(&ok).unwrap();
        assert!(c.id.starts_with("mcpc_") && c.name == "Claude" && c.approved.is_none());
        let default = client_from_metadata(&json!({"redirect_uris": ["https://a.example/cb"]})).unwrap();
        assert_eq!(default.auth_method, "client_secret_basic", "RFC 7591's default");
        for (meta, code) in [
            (json!({}), "invalid_redirect_uri"),
            (
                json!({"redirect_uris": ["https://a/cb"], "grant_types": ["client_credentials"]}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                "invalid_client_metadata",
            ),
            (
                json!({"redirect_uris": ["https://a/cb"], "response_types": ["token"]}),
                "invalid_client_metadata",
            ),
        ] {
            assert_eq!(client_from_metadata(&meta).unwrap_err().0, code, "{meta}");
        }
    }
}
