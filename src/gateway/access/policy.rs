//! Per-client policies (`--policy FILE`): which tools, prompts and resources a client sees and
//! may use. The file is JSON:
//!
//! ```json
//! {"default": "allow",
//!  "rules": [{"match": {"client_id": "claude", "scope": "mcp"},
//!             "allow": ["pi/*", "nas/read_*"], "deny": ["pi/reboot"]}]}
//! ```
//!
//! A rule applies when every key of its `match` holds for the client: `token_sha256` (the hex
//! SHA-256 of a static `--auth-token`, so no secret sits in the file), `sub`, `client_id`, `iss`
//! (of an OAuth token), and `scope` (the token grants it). The first rule that applies decides;
//! when none does, `default` does (`allow` keeps every client seeing everything). A rule allows
//! what its `allow` globs name (everything, when it has no `allow`, if `default` is `allow`) and
//! never what its `deny` globs name: deny wins. Globs name `SERVER/TOOL`, `SERVER/PROMPT` and
//! `SERVER/URI` (a resource's URI or a template's `uriTemplate`); `*` stands for any run of
//! characters, `/` included, and `?` for one.
//!
//! Sans-IO: the text is parsed here, the file is read (and re-read on SIGHUP) by `access`.

use std::sync::Arc;

use serde_json::Value;

/// What the file may hold, at most: a policy is read on every list and call.
const MAX_RULES: usize = 1024;
const MAX_GLOBS: usize = 4096;
const MAX_GLOB_LEN: usize = 512;

/// Who is asking, as far as policies care.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Principal {
    /// The SHA-256 of the static token presented.
    pub token_sha256: Option<[u8; 32]>,
    /// An OAuth token's `iss`, `sub`, `client_id` (or `azp`) and scopes.
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

impl Principal {
    /// What an OAuth principal's sessions and parked calls are bound to: the SHA-256 of its
    /// issuer, subject, client and scopes (sorted), each length-prefixed so no two differ and
    /// hash alike. A session is evaluated against the principal that opened it, so a token
    /// granting other scopes (which a policy may treat differently) must not find it.
    pub(crate) fn key(&self) -> [u8; 32] {
        let mut scopes = self.scopes.clone();
        scopes.sort();
        let fields = [self.issuer.as_deref(), self.subject.as_deref(), self.client_id.as_deref()];
        let mut bytes = Vec::new();
        for part in fields.into_iter().map(Option::unwrap_or_default).chain(scopes.iter().map(String::as_str))
        {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        super::sha256(&bytes)
    }

    /// A short description for log lines (never a token).
    pub(crate) fn describe(&self) -> String {
        let cut = |s: &str| s.chars().take(64).collect::<String>();
        match (&self.client_id, &self.subject, &self.token_sha256) {
            (Some(c), Some(s), _) => format!("client {:?} of {:?}", cut(c), cut(s)),
            (Some(c), None, _) => format!("client {:?}", cut(c)),
            (None, Some(s), _) => format!("subject {:?}", cut(s)),
            (None, None, Some(h)) => format!("token sha256:{}…", hex(&h[..4])),
            (None, None, None) => "an anonymous client".into(),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What kind of thing is being asked for (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Tool,
    Prompt,
    Resource,
}

impl Item {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Item::Tool => "tool",
            Item::Prompt => "prompt",
            Item::Resource => "resource",
        }
    }
}

/// A parsed policy.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    default_allow: bool,
    rules: Vec<Arc<Rule>>,
}

#[derive(Debug, Default)]
struct Rule {
    token_sha256: Option<[u8; 32]>,
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    iss: Option<String>,
    /// `None`: no `allow` key.
    allow: Option<Vec<Glob>>,
    deny: Vec<Glob>,
}

/// What one client may use: the rule that applies to it, or the default.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    rule: Option<Arc<Rule>>,
    default_allow: bool,
}

impl Policy {
    /// The policy of a gateway started without `--policy`: everyone sees everything.
    pub(crate) fn allow_all() -> Policy {
        Policy { default_allow: true, rules: Vec::new() }
    }

    /// Parses a policy file's text; the error says what is wrong and where.
    pub(crate) fn parse(text: &str) -> Result<Policy, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Some(top) = doc.as_object() else { return Err("the policy must be a JSON object".into()) };
        if let Some(k) = top.keys().find(|k| !["default", "rules"].contains(&k.as_str())) {
            return Err(format!("unknown key {k:?} (a policy has \"default\" and \"rules\")"));
        }
        let default_allow = match top.get("default").map(|v| v.as_str()) {
            None | Some(Some("allow")) => true,
            Some(Some("deny")) => false,
            _ => return Err("\"default\" must be \"allow\" or \"deny\"".into()),
        };
        let rules = match top.get("rules") {
            None => Vec::new(),
            Some(Value::Array(rules)) if rules.len() <= MAX_RULES => rules
                .iter()
                .enumerate()
                .map(|(i, r)| parse_rule(r).map(Arc::new).map_err(|e| format!("rule {}: {e}", i + 1)))
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => return Err(format!("more than {MAX_RULES} rules")),
            Some(_) => return Err("\"rules\" must be an array".into()),
        };
        let globs: usize =
            rules.iter().map(|r: &Arc<Rule>| r.deny.len() + r.allow.as_ref().map_or(0, Vec::len)).sum();
        if globs > MAX_GLOBS {
            return Err(format!("more than {MAX_GLOBS} globs in all"));
        }
        Ok(Policy { default_allow, rules })
    }

    /// The grant of the first rule that applies to `who`, or the default.
    pub(crate) fn grant(&self, who: &Principal) -> Grant {
        let rule = self.rules.iter().find(|r| r.applies(who)).cloned();
        Grant { rule, default_allow: self.default_allow }
    }

    /// How many rules the policy has (for the log line of a reload).
    pub(crate) fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

fn parse_rule(rule: &Value) -> Result<Rule, String> {
    let Some(obj) = rule.as_object() else { return Err("a rule must be an object".into()) };
    if let Some(k) = obj.keys().find(|k| !["match", "allow", "deny"].contains(&k.as_str())) {
        return Err(format!("unknown key {k:?} (a rule has \"match\", \"allow\" and \"deny\")"));
    }
    let mut out = Rule::default();
    if let Some(m) = obj.get("match") {
        let Some(m) = m.as_object() else { return Err("\"match\" must be an object".into()) };
        for (key, value) in m {
            let Some(v) = value.as_str() else { return Err(format!("match.{key} must be a string")) };
            let v = v.to_string();
            match key.as_str() {
                "token_sha256" => out.token_sha256 = Some(parse_sha256(&v)?),
                "sub" => out.sub = Some(v),
                "client_id" => out.client_id = Some(v),
                "scope" => out.scope = Some(v),
                "iss" => out.iss = Some(v),
                other => {
                    return Err(format!(
                        "unknown match key {other:?} (use token_sha256, sub, client_id, scope or iss)"
                    ))
                }
            }
        }
    }
    let globs = |key: &str| -> Result<Option<Vec<Glob>>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| match g.as_str() {
                    Some(g) if !g.is_empty() && g.len() <= MAX_GLOB_LEN => Ok(Glob(g.to_string())),
                    _ => Err(format!("{key}: every glob must be a string of 1 to {MAX_GLOB_LEN} bytes")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(format!("\"{key}\" must be an array of globs")),
        }
    };
    out.allow = globs("allow")?;
    out.deny = globs("deny")?.unwrap_or_default();
    Ok(out)
}

fn parse_sha256(v: &str) -> Result<[u8; 32], String> {
    let bad =
        || format!("token_sha256 {v:?}: give 64 hex digits (sha256sum of the token, without a newline)");
    if v.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in v.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl Rule {
    fn applies(&self, who: &Principal) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        self.token_sha256.is_none_or(|t| who.token_sha256 == Some(t))
            && eq(&self.sub, &who.subject)
            && eq(&self.client_id, &who.client_id)
            && eq(&self.iss, &who.issuer)
            && self.scope.as_ref().is_none_or(|s| who.scopes.contains(s))
    }
}

impl Grant {
    /// Whether this grant lets everything through, so lists need no filtering.
    pub(crate) fn is_everything(&self) -> bool {
        match &self.rule {
            None => self.default_allow,
            Some(r) => {
                let allows_all = match &r.allow {
                    None => self.default_allow,
                    Some(allow) => allow.iter().any(|g| g.0.chars().all(|c| c == '*')),
                };
                r.deny.is_empty() && allows_all
            }
        }
    }

    /// Whether `server/name` may be seen and used.
    pub(crate) fn allows(&self, server: &str, name: &str) -> bool {
        let Some(rule) = &self.rule else { return self.default_allow };
        let full = format!("{server}/{name}");
        if rule.deny.iter().any(|g| g.matches(&full)) {
            return false;
        }
        match &rule.allow {
            Some(allow) => allow.iter().any(|g| g.matches(&full)),
            None => self.default_allow,
        }
    }

    /// Whether anything of `server` may be seen: a server the grant shuts out entirely is, for
    /// this client, a server that does not exist.
    pub(crate) fn sees_server(&self, server: &str) -> bool {
        let Some(rule) = &self.rule else { return self.default_allow };
        let prefix = format!("{server}/");
        if rule.deny.iter().any(|g| g.covers_all_after(&prefix)) {
            return false;
        }
        match &rule.allow {
            Some(allow) => allow.iter().any(|g| g.may_match_after(&prefix)),
            None => self.default_allow,
        }
    }
}

/// A glob over `SERVER/NAME`: `*` any run of characters, `?` any one.
#[derive(Debug, Clone, PartialEq)]
struct Glob(String);

impl Glob {
    fn matches(&self, text: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let t: Vec<char> = text.chars().collect();
        // The classic two-pointer match with one backtrack point: linear in practice, and at
        // most |p|·|t| steps whatever the input.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            // A `*` of the glob is a wildcard first, whatever the name holds there: a name
            // with a `*` of its own must not match it as a letter and lose the backtrack.
            if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }

    /// Whether some text starting with `prefix` matches.
    fn may_match_after(&self, prefix: &str) -> bool {
        self.prefix_states(prefix).next().is_some()
    }

    /// Whether every text starting with `prefix` matches: what is left of the glob once the
    /// prefix is consumed is `*` alone (or a run of them).
    fn covers_all_after(&self, prefix: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        self.prefix_states(prefix).any(|pi| pi < p.len() && p[pi..].iter().all(|&c| c == '*'))
    }

    /// The glob positions reachable after consuming `prefix` (a `*` may still be consuming).
    fn prefix_states(&self, prefix: &str) -> impl Iterator<Item = usize> {
        let p: Vec<char> = self.0.chars().collect();
        let mut states = vec![0usize];
        let close = |states: &mut Vec<usize>| {
            let mut i = 0;
            while i < states.len() {
                let s = states[i];
                if s < p.len() && p[s] == '*' && !states.contains(&(s + 1)) {
                    states.push(s + 1);
                }
                i += 1;
            }
        };
        close(&mut states);
        for c in prefix.chars() {
            let mut next = Vec::new();
            for &s in &states {
                if s < p.len() && p[s] == '*' {
                    next.push(s);
                }
                if s < p.len() && (p[s] == '?' || p[s] == c) && p[s] != '*' {
                    next.push(s + 1);
                }
            }
            next.sort_unstable();
            next.dedup();
            close(&mut next);
            states = next;
        }
        states.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(client: &str, scopes: &[&str]) -> Principal {
        Principal {
            client_id: Some(client.into()),
            subject: Some("owner".into()),
            issuer: Some("https://gw.example".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            token_sha256: None,
        }
    }

    /// The obvious recursive matcher, the reference for the fast one.
    fn reference(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
            (Some(_), None) => false,
            (Some(&c), Some(&d)) => (c == '?' || c == d) && reference(&p[1..], &t[1..]),
        }
    }

    /// Generated globs and names over a small alphabet with `*`, `?` and `/` in both: the fast
    /// matcher and the prefix checks agree with the reference on every pair.
    #[test]
    fn globs_agree_with_the_reference_on_generated_pairs() {
        let alphabet = ['a', 'b', '*', '?', '/'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..20_000 {
            let glob: String = (0..next(7)).map(|_| alphabet[next(5)]).collect();
            let name: String = (0..next(8)).map(|_| alphabet[next(5)]).collect();
            let (p, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
            assert_eq!(Glob(glob.clone()).matches(&name), reference(&p, &t), "{glob:?} on {name:?}");
            // may_match_after(prefix): some name starting with the prefix matches;
            // covers_all_after(prefix): every name starting with it matches (checked on samples).
            let prefix: String = name.chars().take(3).collect();
            let g = Glob(glob.clone());
            if reference(&p, &t) && name.starts_with(&prefix) {
                assert!(g.may_match_after(&prefix), "{glob:?} after {prefix:?}");
            }
            if g.covers_all_after(&prefix) {
                assert!(reference(&p, &t), "{glob:?} covers {prefix:?} but not {name:?}");
            }
        }
        assert!(Glob("*".into()).matches("**") && Glob("pi/*".into()).matches("pi/*x"));
    }

    #[test]
    fn globs_match_names_with_slashes() {
        let g = |s: &str| Glob(s.into());
        assert!(g("pi/*").matches("pi/echo"));
        assert!(g("pi/*").matches("pi/file:///etc/hosts"));
        assert!(!g("pi/*").matches("pix/echo"));
        assert!(g("*/read_?").matches("nas/read_a"));
        assert!(!g("*/read_?").matches("nas/read_ab"));
        assert!(g("*").matches(""));
        assert!(g("a*b*c").matches("aXbYc") && !g("a*b*c").matches("aXbY"));
        assert!(g("pi/*").may_match_after("pi/") && !g("pi/*").may_match_after("nas/"));
        assert!(g("*/echo").may_match_after("nas/") && !g("*/echo").covers_all_after("nas/"));
        assert!(g("pi/*").covers_all_after("pi/") && g("*").covers_all_after("pi/"));
        assert!(g("p?/**").covers_all_after("pi/") && !g("pi/a*").covers_all_after("pi/"));
        // A pathological glob stays cheap.
        let long = format!("{}b", "*a".repeat(200));
        assert!(!Glob(long).matches(&"a".repeat(500)));
    }

    #[test]
    fn the_first_matching_rule_decides_and_deny_wins() {
        let policy = Policy::parse(
            r#"{"default": "deny", "rules": [
                {"match": {"client_id": "claude", "scope": "mcp"}, "allow": ["pi/*"], "deny": ["pi/reboot"]},
                {"match": {"client_id": "claude"}, "allow": ["pi/echo"]},
                {"match": {"sub": "owner"}}
            ]}"#,
        )
        .unwrap();
        let claude = policy.grant(&who("claude", &["mcp"]));
        assert!(claude.allows("pi", "echo") && !claude.allows("pi", "reboot") && !claude.allows("nas", "ls"));
        assert!(claude.sees_server("pi") && !claude.sees_server("nas") && !claude.is_everything());
        let no_scope = policy.grant(&who("claude", &[]));
        assert!(no_scope.allows("pi", "echo") && !no_scope.allows("pi", "other"));
        // The owner's rule has no allow: it inherits the default, deny.
        let other = policy.grant(&who("cursor", &[]));
        assert!(!other.allows("pi", "echo") && !other.sees_server("pi"));
        let stranger = policy.grant(&Principal::default());
        assert!(!stranger.allows("pi", "echo"));
    }

    #[test]
    fn default_allow_keeps_everything_and_static_tokens_match_by_hash() {
        assert!(Policy::allow_all().grant(&Principal::default()).is_everything());
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let policy = Policy::parse(&format!(
            r#"{{"rules": [{{"match": {{"token_sha256": "{hash}"}}, "deny": ["nas/*"]}}]}}"#
        ))
        .unwrap();
        let token = Principal { token_sha256: Some(parse_sha256(hash).unwrap()), ..Principal::default() };
        let g = policy.grant(&token);
        assert!(g.allows("pi", "x") && !g.allows("nas", "x") && !g.sees_server("nas") && g.sees_server("pi"));
        assert!(policy.grant(&Principal::default()).is_everything());
    }

    /// A session is bound to its principal's scopes too: a token with other scopes, which a
    /// policy may treat otherwise, does not find it.
    #[test]
    fn principals_with_other_scopes_have_other_keys() {
        let mcp = who("c1", &["mcp", "admin"]);
        let reordered = who("c1", &["admin", "mcp"]);
        assert_eq!(mcp.key(), reordered.key());
        assert_ne!(mcp.key(), who("c1", &["mcp"]).key());
        assert_ne!(who("c1", &[]).key(), who("c", &["1"]).key(), "fields are length-prefixed");
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("[]", "JSON object"),
            (r#"{"default": "maybe"}"#, "\"default\""),
            (r#"{"rules": [{"match": {"user": "x"}}]}"#, "rule 1: unknown match key \"user\""),
            (r#"{"rules": [{"allow": "pi/*"}]}"#, "array of globs"),
            (r#"{"rules": [{"match": {"token_sha256": "abc"}}]}"#, "64 hex digits"),
            (r#"{"rule": []}"#, "unknown key \"rule\""),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
