//! Who may call what: the gateway as an OAuth 2.1 resource server (RFC 9728 metadata, RFC 6750
//! challenges, RFC 8707 audiences, JWT access tokens checked locally), and the per-client
//! policies that decide which tools, prompts and resources each client sees (`policy.rs`).
//!
//! Every MCP endpoint is a protected resource of its own, named by its URL: `--public-url` (or,
//! without it, the scheme and `Host` of the request) and the endpoint's path (`/mcp`, `/sse`,
//! `/servers/NAME/mcp`, `/servers/NAME/sse`; a legacy message POST belongs to its stream's
//! resource). A token is accepted on an endpoint when it is signed by a trusted issuer's key,
//! names that issuer exactly, has not expired, is for that endpoint's resource (or the gateway's
//! base URL, or an `--oauth-audience`), and grants `--oauth-scope`; the gateway's own routes
//! (status, metrics, the server list) take the aggregated endpoints' tokens too. No token a client presents
//! ever goes further than this check: edges get their own calls, never a client's token.
//!
//! Floor 0: this folder knows the configuration and nothing else of the gateway's.

pub(crate) mod issuers;
pub(crate) mod policy;

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::gateway::config::Config;
use crate::jose::{self, PublicKey};
use issuers::Issuers;
pub(crate) use policy::{Grant, Item, Policy, Principal};

/// Clock skew forgiven on a token's `exp` and `nbf`: small, as hosts kept by NTP differ by less
/// than a second, and an expired token should stop working when it says.
const LEEWAY_SECS: u64 = 5;

/// The well-known prefix of protected resource metadata (RFC 9728 §3).
pub(crate) const PRM_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The gateway's access state: trusted issuers, the policy in force, and what static tokens
/// hash to (policies name them by hash).
pub(crate) struct Access {
    pub issuers: Issuers,
    /// `--oauth-scope` (empty: none required).
    pub scope: String,
    audiences: Vec<String>,
    public_url: Option<String>,
    policy: RwLock<Arc<Policy>>,
    policy_file: Option<String>,
    /// Who each static client token is, by its index.
    token_principals: Vec<Arc<Principal>>,
    /// Who a request without a credential is (on a gateway that asks for none).
    pub anonymous: Arc<Principal>,
    /// The built-in server's issuer and revocations, when it runs.
    revocations: Option<(String, Arc<dyn Revocations>)>,
    /// The paths of the aggregated endpoints (`--mcp-path`, `--sse-path`).
    aggregated: [String; 2],
}

/// What the resource server needs of the built-in authorization server: its issuer, its public
/// key, and a way to learn what the owner revoked.
pub(crate) struct Builtin {
    pub issuer: String,
    pub key: PublicKey,
    pub revocations: Arc<dyn Revocations>,
}

/// Whether a token the built-in server issued has been revoked since (its client, or its
/// refresh family).
pub(crate) trait Revocations: Send + Sync {
    fn revoked(&self, claims: &serde_json::Map<String, Value>) -> bool;
}

/// Why a bearer token was not accepted.
#[derive(Debug, PartialEq)]
pub(crate) enum Failure {
    /// 401 `invalid_token`, with a description for the client.
    Invalid(String),
    /// 403 `insufficient_scope`: valid, but without the scope needed.
    Scope,
}

impl Access {
    /// Builds the access state from the configuration; `builtin` is the built-in authorization
    /// server's issuer and public key, when it runs. Reads the policy file (an error names it).
    pub(crate) fn new(cfg: &Config, builtin: Option<Builtin>) -> Result<Access, String> {
        let revocations = builtin.as_ref().map(|b| (b.issuer.clone(), b.revocations.clone()));
        let issuers = Issuers::new(&cfg.oauth.issuers, builtin.map(|b| (b.issuer, b.key)))?;
        let policy = match &cfg.oauth.policy_file {
            Some(path) => read_policy(path)?,
            None => Policy::allow_all(),
        };
        let token_principals = cfg
            .auth_tokens
            .iter()
            .map(|t| Arc::new(Principal { token_sha256: Some(sha256(t.as_bytes())), ..Principal::default() }))
            .collect();
        Ok(Access {
            issuers,
            scope: cfg.oauth.scope.clone(),
            audiences: cfg.oauth.audiences.clone(),
            public_url: cfg.oauth.public_url.clone(),
            policy: RwLock::new(Arc::new(policy)),
            policy_file: cfg.oauth.policy_file.clone(),
            token_principals,
            anonymous: Arc::new(Principal::default()),
            revocations,
            aggregated: [
                cfg.mcp_path.trim_end_matches('/').into(),
                cfg.sse_path.trim_end_matches('/').into(),
            ],
        })
    }

    /// Whether clients may present OAuth access tokens.
    pub(crate) fn oauth(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// The gateway's base URL as clients reach it: `--public-url`, which OAuth requires (never
    /// the request's `Host`, which the client picks, and with it the audience it would need).
    fn base(&self) -> &str {
        self.public_url.as_deref().unwrap_or_default()
    }

    /// The protected resource metadata of the resource at `path` (RFC 9728 §2).
    pub(crate) fn resource_metadata(&self, path: &str) -> Value {
        let base = self.base();
        let name = match path.strip_prefix("/servers/") {
            Some(rest) => format!("mcpport: server {}", rest.split('/').next().unwrap_or_default()),
            None => "mcpport gateway".into(),
        };
        let mut doc = json!({
            "resource": format!("{base}{path}"),
            "authorization_servers": self.issuers.ids().collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": name,
        });
        if !self.scope.is_empty() {
            doc["scopes_supported"] = json!([self.scope]);
        }
        doc
    }

    /// The `WWW-Authenticate` value of a 401 or 403 for the resource at `path`.
    pub(crate) fn challenge(&self, path: &str, failure: Option<&Failure>) -> String {
        let base = self.base();
        let mut params = Vec::new();
        match failure {
            Some(Failure::Invalid(why)) => {
                params.push("error=\"invalid_token\"".to_string());
                params.push(format!("error_description=\"{}\"", quoted(why)));
            }
            Some(Failure::Scope) => {
                params.push("error=\"insufficient_scope\"".to_string());
                params.push(format!(
                    "error_description=\"the token does not grant the scope {}\"",
                    quoted(&self.scope)
                ));
            }
            None => {}
        }
        params.push(format!("resource_metadata=\"{base}{PRM_PREFIX}{path}\""));
        if !self.scope.is_empty() {
            params.push(format!("scope=\"{}\"", quoted(&self.scope)));
        }
        format!("Bearer {}", params.join(", "))
    }

    /// Checks an access token for the resource at `path`: the principal it speaks for, or why
    /// not.
    pub(crate) fn validate(&self, token: &str, path: &str) -> Result<Principal, Failure> {
        let base = self.base();
        let invalid = |why: String| Failure::Invalid(why);
        let jwt = jose::decode(token).map_err(|e| invalid(e.to_string()))?;
        let iss = jwt.issuer().ok_or_else(|| invalid("the token names no issuer".into()))?.to_string();
        if !self.issuers.trusts(&iss) {
            return Err(invalid(jose::Rejected::Issuer.to_string()));
        }
        let keys = self
            .issuers
            .keys(&iss, jwt.kid.as_deref())
            .map_err(|_| invalid("the issuer's keys are not available".into()))?;
        jwt.verify(&keys).map_err(|e| invalid(e.to_string()))?;
        let mut audiences = vec![format!("{base}{path}")];
        if path.is_empty() {
            // The gateway's own routes (status, metrics, the server list) show what the
            // aggregated endpoints show: their tokens open them too.
            audiences.extend(self.aggregated.iter().map(|p| format!("{base}{p}")));
        } else {
            audiences.push(base.to_string());
        }
        audiences.extend(self.audiences.iter().cloned());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let expect = jose::Expect { issuer: &iss, audiences: &audiences, now, leeway: LEEWAY_SECS };
        jose::check_claims(&jwt.claims, &expect).map_err(|e| invalid(e.to_string()))?;
        if let Some((_, revocations)) = self.revocations.as_ref().filter(|(builtin, _)| *builtin == iss) {
            if revocations.revoked(&jwt.claims) {
                return Err(invalid("the token was revoked".into()));
            }
        }
        let scopes = jose::scopes(&jwt.claims);
        if !self.scope.is_empty() && !scopes.contains(&self.scope) {
            return Err(Failure::Scope);
        }
        // Whole: a policy matches them exactly (the token's size bounds them).
        let text = |k: &str| jwt.claims.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Principal {
            token_sha256: None,
            issuer: Some(iss),
            subject: text("sub"),
            client_id: text("client_id").or_else(|| text("azp")),
            scopes,
        })
    }

    /// The principal of static client token number `i`.
    pub(crate) fn static_token(&self, i: usize) -> Arc<Principal> {
        self.token_principals.get(i).cloned().unwrap_or_else(|| self.anonymous.clone())
    }

    /// What `who` may see and use under the policy in force.
    pub(crate) fn grant(&self, who: &Principal) -> Grant {
        let policy = self.policy.read().unwrap_or_else(|p| p.into_inner()).clone();
        policy.grant(who)
    }

    /// Re-reads `--policy` (on SIGHUP): the new policy applies to the next list and call of
    /// every client; a file that does not parse leaves the old one in force.
    pub(crate) fn reload_policy(&self) {
        let Some(path) = &self.policy_file else {
            return log::info!("SIGHUP: no --policy file to reload");
        };
        match read_policy(path) {
            Ok(policy) => {
                log::info!("SIGHUP: reloaded the policy from {path} ({} rules)", policy.rule_count());
                *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
            }
            Err(e) => log::error!("SIGHUP: the policy in force is kept: {e}"),
        }
    }
}

/// Whether `path` names one of the gateway's protected resources: the gateway itself (`""`), an
/// aggregated endpoint (`aggregated`), or a server's `/servers/NAME/mcp` or `/sse` (any name a
/// server may register under).
pub(crate) fn is_resource_path(path: &str, aggregated: &[&str]) -> bool {
    let server =
        path.strip_prefix("/servers/").and_then(|rest| rest.split_once('/')).is_some_and(|(name, tail)| {
            crate::protocol::valid_server_name(name) && (tail == "mcp" || tail == "sse")
        });
    path.is_empty() || aggregated.contains(&path) || server
}

fn read_policy(path: &str) -> Result<Policy, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("--policy {path}: {e}"))?;
    if meta.len() > 4 * 1024 * 1024 {
        return Err(format!("--policy {path}: over 4 MiB"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--policy {path}: {e}"))?;
    Policy::parse(&text).map_err(|e| format!("--policy {path}: {e}"))
}

/// `scheme://host[:port]` of a URL.
pub(crate) fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    url[after..].find('/').map_or(url, |i| &url[..after + i])
}

/// The SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A value safe inside a quoted-string of a header: no quotes, backslashes or control
/// characters, at most 200 characters.
fn quoted(text: &str) -> String {
    text.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::OAuthConfig;
    use ring::rand::SystemRandom;
    use ring::signature::Ed25519KeyPair;

    fn access(key: &Ed25519KeyPair) -> Access {
        let cfg = Config {
            oauth: OAuthConfig { public_url: Some("https://gw.example".into()), ..OAuthConfig::default() },
            ..Config::default()
        };
        struct Nothing;
        impl Revocations for Nothing {
            fn revoked(&self, claims: &serde_json::Map<String, Value>) -> bool {
                claims.get("client_id").and_then(Value::as_str) == Some("revoked")
            }
        }
        let key = jose::parse_jwks(&json!({"keys": [jose::ed25519_jwk(key, "k")]})).remove(0);
        let builtin = Builtin { issuer: "https://gw.example".into(), key, revocations: Arc::new(Nothing) };
        Access::new(&cfg, Some(builtin)).unwrap()
    }

    #[test]
    fn tokens_are_for_one_resource_and_need_the_scope() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let a = access(&key);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let token = |aud: &str, scope: &str| {
            let claims = json!({"iss": "https://gw.example", "aud": aud, "exp": now + 60, "sub": "owner",
                "client_id": "c1", "scope": scope});
            jose::sign_ed25519(&key, "k", &claims)
        };
        let who = a.validate(&token("https://gw.example/mcp", "mcp"), "/mcp").unwrap();
        assert_eq!((who.client_id.as_deref(), who.subject.as_deref()), (Some("c1"), Some("owner")));
        assert!(a.validate(&token("https://gw.example", "mcp"), "/servers/pi/mcp").is_ok());
        let other = a.validate(&token("https://gw.example/servers/pi/mcp", "mcp"), "/mcp");
        assert_eq!(other, Err(Failure::Invalid("the token is not for this resource".into())));
        assert_eq!(a.validate(&token("https://gw.example/mcp", "other"), "/mcp"), Err(Failure::Scope));
        assert!(matches!(a.validate("opaque-token", "/mcp"), Err(Failure::Invalid(_))));
        let claims = json!({"iss": "https://gw.example", "aud": "https://gw.example/mcp", "exp": now + 60,
            "client_id": "revoked", "scope": "mcp"});
        let revoked = a.validate(&jose::sign_ed25519(&key, "k", &claims), "/mcp");
        assert_eq!(revoked, Err(Failure::Invalid("the token was revoked".into())));
        let challenge = a.challenge("/mcp", Some(&Failure::Scope));
        assert_eq!(
            challenge,
            "Bearer error=\"insufficient_scope\", error_description=\"the token does not grant the scope mcp\", \
             resource_metadata=\"https://gw.example/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\""
        );
        let prm = a.resource_metadata("/servers/pi/sse");
        assert_eq!(prm["resource"], "https://gw.example/servers/pi/sse");
        assert_eq!(prm["authorization_servers"], json!(["https://gw.example"]));
    }
}
