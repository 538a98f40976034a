//! The authorization servers whose tokens the gateway trusts, and their signing keys.
//!
//! An external issuer (`--oauth-issuer URL`) is discovered when its keys are first needed: its
//! metadata (RFC 8414 `oauth-authorization-server`, then OpenID `openid-configuration`, each
//! where the issuer's path puts it) must name the same `issuer`, and its `jwks_uri` gives the
//! keys. The keys are kept for `KEYS_TTL`; a token naming a key the set lacks triggers one
//! refetch, at most every `REFETCH_EVERY` per issuer (`RETRY_WITHOUT_KEYS` while there is no key
//! at all), so a stream of made-up `kid`s costs the issuer nothing. One thread fetches while the
//! others use the keys they have, or wait for it when those cannot check their token; nothing is
//! fetched under a lock, and a failed fetch leaves the last good keys in use. The built-in authorization server's key is local and never
//! fetched.
//!
//! Bounds: the issuers are the command line's; each holds one key set of at most `MAX_KEYS`
//! keys from a document of at most `MAX_DOCUMENT` bytes.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::Value;

use crate::http::client::Url;
use crate::jose::{parse_jwks, PublicKey};
use crate::thread::lock;

/// How long fetched keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// The least time between two fetches for one issuer (an unknown `kid`, or a failure).
const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// The same, while the issuer has given no key at all yet (it may have been starting too).
const RETRY_WITHOUT_KEYS: Duration = Duration::from_secs(3);
/// One fetch of a metadata document or a key set, whole (a discovery makes at most four).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest metadata document or key set read.
const MAX_DOCUMENT: usize = 256 * 1024;
const MAX_KEYS: usize = 64;

/// The trusted issuers.
pub(crate) struct Issuers {
    list: Vec<Issuer>,
    tls: Arc<ClientConfig>,
}

struct Issuer {
    /// The issuer identifier, exactly as tokens must carry it in `iss`.
    id: String,
    /// `None` for the built-in server, whose keys never change while it runs.
    url: Option<Url>,
    state: Mutex<KeyState>,
    fetched: Condvar,
}

#[derive(Default)]
struct KeyState {
    keys: Arc<Vec<PublicKey>>,
    jwks_uri: Option<Url>,
    fetched_at: Option<Instant>,
    tried_at: Option<Instant>,
    fetching: bool,
    last_error: Option<String>,
}

impl Issuers {
    /// The issuers of `--oauth-issuer` (already checked to be URLs), and the built-in one with
    /// its key, if it runs.
    pub(crate) fn new(external: &[String], builtin: Option<(String, PublicKey)>) -> Result<Issuers, String> {
        let tls = crate::tls::client_config(&crate::tls::ClientOptions::default())?;
        let mut list = Vec::new();
        for id in external {
            let url = Url::parse(id).map_err(|e| format!("--oauth-issuer: {e}"))?;
            list.push(Issuer {
                id: id.clone(),
                url: Some(url),
                state: Mutex::default(),
                fetched: Condvar::new(),
            });
        }
        if let Some((id, key)) = builtin {
            let state = KeyState { keys: Arc::new(vec![key]), ..KeyState::default() };
            list.push(Issuer { id, url: None, state: Mutex::new(state), fetched: Condvar::new() });
        }
        Ok(Issuers { list, tls })
    }

    /// The identifiers, as the protected resource metadata lists them.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|i| i.id.as_str())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `iss` is one of the trusted issuers.
    pub(crate) fn trusts(&self, iss: &str) -> bool {
        self.list.iter().any(|i| i.id == iss)
    }

    /// The keys of issuer `iss` that may hold `kid`: the cached set, or a fresh one when the set
    /// is stale or lacks the key (within the refetch limit). `Err` when the issuer's keys could
    /// not be had at all.
    pub(crate) fn keys(&self, iss: &str, kid: Option<&str>) -> Result<Arc<Vec<PublicKey>>, String> {
        let issuer = self.list.iter().find(|i| i.id == iss).ok_or("untrusted issuer")?;
        issuer.keys(kid, &self.tls)
    }

    /// Fetches every external issuer's keys once, reporting what fails (at start-up, so that a
    /// wrong URL is in the log before the first client comes).
    pub(crate) fn warm_up(&self) {
        for issuer in self.list.iter().filter(|i| i.url.is_some()) {
            // A failure is logged by the fetch itself (once per attempt, however many wait).
            if let Ok(keys) = issuer.keys(None, &self.tls) {
                log::info!("OAuth issuer {}: {} signing keys", issuer.id, keys.len());
            }
        }
    }
}

impl Issuer {
    fn keys(&self, kid: Option<&str>, tls: &Arc<ClientConfig>) -> Result<Arc<Vec<PublicKey>>, String> {
        let mut state = lock(&self.state);
        loop {
            let has_kid = kid.is_none_or(|kid| state.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
            let fresh = state.fetched_at.is_some_and(|t| t.elapsed() < KEYS_TTL);
            // Without a single key, try again sooner: a token cannot be checked at all.
            let every = if state.keys.is_empty() { RETRY_WITHOUT_KEYS } else { REFETCH_EVERY };
            let may_try = state.tried_at.is_none_or(|t| t.elapsed() >= every);
            let usable = !state.keys.is_empty() && has_kid;
            // Stale keys that hold the token's key serve while another thread refreshes them.
            if self.url.is_none()
                || (fresh && has_kid)
                || (!may_try && !state.fetching)
                || (usable && state.fetching)
            {
                return if state.keys.is_empty() {
                    Err(state.last_error.clone().unwrap_or_else(|| "no signing keys".into()))
                } else {
                    Ok(state.keys.clone())
                };
            }
            if !state.fetching {
                break;
            }
            // Another thread is fetching: wait for it, then look again.
            let (next, timeout) =
                self.fetched.wait_timeout(state, FETCH_TIMEOUT * 4).unwrap_or_else(|p| p.into_inner());
            state = next;
            if timeout.timed_out() {
                return Err("the issuer's keys are still being fetched".into());
            }
        }
        state.fetching = true;
        state.tried_at = Some(Instant::now());
        let jwks_uri = state.jwks_uri.clone();
        drop(state);
        let result = self.fetch_keys(jwks_uri, tls);
        let mut state = lock(&self.state);
        state.fetching = false;
        match result {
            Ok((uri, keys)) => {
                state.jwks_uri = Some(uri);
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
                state.last_error = None;
            }
            // The last good key set and its URI stay: an issuer down for a while keeps working.
            Err(e) => {
                log::warn!(
                    "OAuth issuer {}: {e} (tried again in {REFETCH_EVERY:?} at the earliest)",
                    self.id
                );
                state.last_error = Some(e);
            }
        }
        self.fetched.notify_all();
        if state.keys.is_empty() {
            Err(state.last_error.clone().unwrap_or_else(|| "no signing keys".into()))
        } else {
            Ok(state.keys.clone())
        }
    }

    /// The key set, through the metadata when its URI is not known yet.
    fn fetch_keys(
        &self,
        known: Option<Url>,
        tls: &Arc<ClientConfig>,
    ) -> Result<(Url, Vec<PublicKey>), String> {
        let jwks_uri = match known {
            Some(uri) => uri,
            None => {
                let base = self.url.as_ref().ok_or("no URL")?;
                let meta = discover(&self.id, base, tls)?;
                let uri = meta["jwks_uri"].as_str().ok_or("its metadata has no jwks_uri")?;
                let uri = Url::parse(uri)?;
                if !uri.secure && !uri.is_loopback() {
                    return Err(format!("its jwks_uri {uri:?} is not https"));
                }
                uri
            }
        };
        let doc = get_json(&jwks_uri, tls)?;
        let mut keys = parse_jwks(&doc);
        keys.truncate(MAX_KEYS);
        if keys.is_empty() {
            return Err("its key set has no usable signing key (RS256, PS256, ES256 or EdDSA)".into());
        }
        Ok((jwks_uri, keys))
    }
}

/// The metadata of issuer `id`: the first of the well-known documents that exists and names
/// the issuer exactly (RFC 8414 §3.3: a document naming another issuer must not be used).
pub(crate) fn discover(id: &str, url: &Url, tls: &Arc<ClientConfig>) -> Result<Value, String> {
    let mut tried = Vec::new();
    for candidate in metadata_urls(url) {
        match get_json(&candidate, tls) {
            Ok(meta) if meta["issuer"].as_str() == Some(id) => return Ok(meta),
            Ok(meta) => {
                return Err(format!(
                    "its metadata at {} names issuer {} instead (configure the issuer exactly as it names itself)",
                    candidate.path, meta["issuer"]
                ))
            }
            Err(e) => tried.push(format!("{}: {e}", candidate.path)),
        }
    }
    Err(format!("no metadata found ({})", tried.join("; ")))
}

/// Where an issuer's metadata may be: RFC 8414's path insertion, OpenID's insertion, then
/// OpenID's appending.
fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path.trim_end_matches('/');
    let at = |p: String| Url { path: p, ..issuer.clone() };
    let mut urls = vec![at(format!("/.well-known/oauth-authorization-server{path}"))];
    if path.is_empty() {
        urls.push(at("/.well-known/openid-configuration".into()));
    } else {
        urls.push(at(format!("/.well-known/openid-configuration{path}")));
        urls.push(at(format!("{path}/.well-known/openid-configuration")));
    }
    urls
}

fn get_json(url: &Url, tls: &Arc<ClientConfig>) -> Result<Value, String> {
    crate::http::client::get_json(url, tls, FETCH_TIMEOUT, MAX_DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_the_issuers_path_puts_it() {
        let paths =
            |u: &str| metadata_urls(&Url::parse(u).unwrap()).into_iter().map(|u| u.path).collect::<Vec<_>>();
        assert_eq!(
            paths("https://id.example"),
            ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
        );
        assert_eq!(
            paths("https://id.example/realms/home/"),
            [
                "/.well-known/oauth-authorization-server/realms/home",
                "/.well-known/openid-configuration/realms/home",
                "/realms/home/.well-known/openid-configuration"
            ]
        );
    }
}
