//! JSON Web Tokens as OAuth access tokens use them: compact JWS (RFC 7515) signed with RS256,
//! PS256, ES256 or EdDSA (Ed25519), keys as JWK sets (RFC 7517), and the claims a resource server
//! checks (RFC 7519, RFC 9068). Sans-IO: bytes and JSON in, a verdict out; fetching keys is the
//! caller's. `none` and the HMAC algorithms are refused outright: a resource server holds no
//! shared secret, and accepting `HS256` keyed with a public key is the classic forgery.
//!
//! Also signing with an Ed25519 key, for the gateway's own authorization server.

use std::fmt;

use ring::signature::{self, Ed25519KeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{json, Map, Value};

use crate::codec::{base64url, base64url_decode};

/// The longest token looked at: real access tokens are well under 4 KiB.
pub(crate) const MAX_TOKEN: usize = 16 * 1024;

/// Signature algorithms accepted (JWA names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// A public key from a JWK set, usable for one family of algorithms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PublicKey {
    pub kid: Option<String>,
    /// The one algorithm the key is for, when the JWK says (`alg`).
    pub alg: Option<Alg>,
    material: Material,
}

#[derive(Debug, Clone, PartialEq)]
enum Material {
    /// Modulus and exponent, big-endian.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed P-256 point (0x04, x, y).
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// Whether this key may verify a token signed with `alg`.
    fn fits(&self, alg: Alg) -> bool {
        let family = matches!(
            (&self.material, alg),
            (Material::Rsa { .. }, Alg::Rs256 | Alg::Ps256)
                | (Material::P256(_), Alg::Es256)
                | (Material::Ed25519(_), Alg::EdDsa)
        );
        family && self.alg.is_none_or(|a| a == alg)
    }

    fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match (&self.material, alg) {
            (Material::Rsa { n, e }, Alg::Rs256 | Alg::Ps256) => {
                let params = if alg == Alg::Rs256 {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &signature::RSA_PSS_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
            }
            (Material::P256(point), Alg::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::Ed25519(key), Alg::EdDsa) => {
                UnparsedPublicKey::new(&signature::ED25519, key).verify(message, sig).is_ok()
            }
            _ => false,
        }
    }
}

/// The signing keys of a JWK set (`{"keys": [...]}`); keys for encryption, of other types or
/// curves, or malformed, are left out (a set may hold keys for other uses).
pub(crate) fn parse_jwks(doc: &Value) -> Vec<PublicKey> {
    let Some(keys) = doc["keys"].as_array() else { return Vec::new() };
    keys.iter().filter_map(parse_jwk).collect()
}

fn parse_jwk(jwk: &Value) -> Option<PublicKey> {
    if jwk.get("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let field = |name: &str| jwk[name].as_str().and_then(base64url_decode);
    let material = match (jwk["kty"].as_str()?, jwk["crv"].as_str()) {
        ("RSA", _) => Material::Rsa { n: field("n")?, e: field("e")? },
        ("EC", Some("P-256")) => {
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            Material::P256([&[4u8][..], &x, &y].concat())
        }
        ("OKP", Some("Ed25519")) => Material::Ed25519(field("x").filter(|x| x.len() == 32)?),
        _ => return None,
    };
    let alg = match jwk["alg"].as_str() {
        None => None,
        Some(name) => Some(Alg::parse(name)?),
    };
    Some(PublicKey { kid: jwk["kid"].as_str().map(str::to_string), alg, material })
}

/// Why a token was not accepted (said in `error_description`; never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejected {
    Malformed(&'static str),
    /// `none`, an HMAC or an unknown algorithm.
    Algorithm(String),
    /// No key of the issuer's with this `kid` (and algorithm).
    UnknownKey(Option<String>),
    BadSignature,
    Type(String),
    Issuer,
    Audience,
    Expired,
    NotYetValid,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Malformed(why) => write!(f, "the token is not a JWT: {why}"),
            Rejected::Algorithm(alg) => write!(f, "the token's algorithm {alg:?} is not accepted"),
            Rejected::UnknownKey(Some(kid)) => write!(f, "no key {kid:?} of the issuer fits the token"),
            Rejected::UnknownKey(None) => write!(f, "no key of the issuer fits the token"),
            Rejected::BadSignature => write!(f, "the token's signature does not verify"),
            Rejected::Type(typ) => write!(f, "the token's type {typ:?} is not an access token"),
            Rejected::Issuer => write!(f, "the token's issuer is not trusted"),
            Rejected::Audience => write!(f, "the token is not for this resource"),
            Rejected::Expired => write!(f, "the token expired"),
            Rejected::NotYetValid => write!(f, "the token is not valid yet"),
        }
    }
}

/// A JWT split and decoded, its signature not yet checked.
#[derive(Debug)]
pub(crate) struct Unverified<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Anything but three base64url parts with JSON objects for
/// header and claims, one of the accepted algorithms, and no `crit` is refused.
pub(crate) fn decode(token: &str) -> Result<Unverified<'_>, Rejected> {
    if token.len() > MAX_TOKEN {
        return Err(Rejected::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Rejected::Malformed("not three parts"));
    };
    let object = |part: &str| -> Option<Map<String, Value>> {
        match serde_json::from_slice(&base64url_decode(part)?).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    };
    let header = object(h).ok_or(Rejected::Malformed("bad header"))?;
    let claims = object(c).ok_or(Rejected::Malformed("bad claims"))?;
    let signature = base64url_decode(s).ok_or(Rejected::Malformed("bad signature encoding"))?;
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let alg = Alg::parse(alg_name).ok_or_else(|| Rejected::Algorithm(alg_name.chars().take(16).collect()))?;
    if header.contains_key("crit") {
        return Err(Rejected::Malformed("critical header parameters are not understood"));
    }
    if let Some(typ) = header.get("typ") {
        let typ = typ.as_str().unwrap_or_default();
        let t = typ.to_ascii_lowercase();
        if !["at+jwt", "application/at+jwt", "jwt"].contains(&t.as_str()) {
            return Err(Rejected::Type(typ.chars().take(32).collect()));
        }
    }
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_string);
    Ok(Unverified { alg, kid, claims, signing_input: &token[..h.len() + 1 + c.len()], signature })
}

impl Unverified<'_> {
    /// Checks the signature with the key the header names (`kid`), or, without one, with any
    /// key of the set that fits the algorithm.
    pub(crate) fn verify(&self, keys: &[PublicKey]) -> Result<(), Rejected> {
        let mut fitting = keys
            .iter()
            .filter(|k| k.fits(self.alg))
            .filter(|k| self.kid.is_none() || k.kid == self.kid)
            .peekable();
        if fitting.peek().is_none() {
            return Err(Rejected::UnknownKey(self.kid.clone()));
        }
        let message = self.signing_input.as_bytes();
        if fitting.any(|k| k.verify(self.alg, message, &self.signature)) {
            Ok(())
        } else {
            Err(Rejected::BadSignature)
        }
    }

    /// The issuer the token claims (`iss`), to pick its keys by; trusted only once verified.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// What a verified token's claims must say.
pub(crate) struct Expect<'a> {
    pub issuer: &'a str,
    /// At least one of these must be in `aud`.
    pub audiences: &'a [String],
    /// Seconds since the epoch.
    pub now: u64,
    /// Clock skew forgiven on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

/// Checks `iss` (exactly), `aud` (one of the expected, as a string or in an array), `exp`
/// (required) and `nbf`.
pub(crate) fn check_claims(claims: &Map<String, Value>, expect: &Expect<'_>) -> Result<(), Rejected> {
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer) {
        return Err(Rejected::Issuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => expect.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds.iter().any(|aud| expect.audiences.iter().any(|a| aud == a.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(Rejected::Audience);
    }
    let time = |name: &str| claims.get(name).map(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)));
    match time("exp") {
        Some(Some(exp)) if exp.saturating_add(expect.leeway) > expect.now => {}
        Some(Some(_)) => return Err(Rejected::Expired),
        _ => return Err(Rejected::Malformed("no expiry")),
    }
    match time("nbf") {
        None => {}
        Some(Some(nbf)) if nbf <= expect.now.saturating_add(expect.leeway) => {}
        Some(Some(_)) => return Err(Rejected::NotYetValid),
        Some(None) => return Err(Rejected::Malformed("bad nbf")),
    }
    Ok(())
}

/// The scopes a token grants: `scope` (a space-separated string, RFC 9068), or `scp` (a string
/// or an array, as some identity providers write it).
pub(crate) fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let words = |s: &str| s.split_ascii_whitespace().map(str::to_string).collect::<Vec<_>>();
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => words(s),
        (None, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

// Used by the built-in authorization server only.
#[cfg_attr(not(feature = "oauth-server"), allow(dead_code))]
/// Signs `claims` as an access token (`typ` `at+jwt`) with an Ed25519 key.
pub(crate) fn sign_ed25519(key: &Ed25519KeyPair, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
    let mut token =
        format!("{}.{}", base64url(header.to_string().as_bytes()), base64url(claims.to_string().as_bytes()));
    let sig = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&base64url(sig.as_ref()));
    token
}

// Used by the built-in authorization server only.
#[cfg_attr(not(feature = "oauth-server"), allow(dead_code))]
/// The public half of an Ed25519 key as a JWK.
pub(crate) fn ed25519_jwk(key: &Ed25519KeyPair, kid: &str) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "alg": "EdDSA",
        "kid": kid,
        "x": base64url(key.public_key().as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn ed_key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn claims(aud: Value, exp: u64) -> Value {
        json!({"iss": "https://as.example", "aud": aud, "exp": exp, "sub": "alice", "scope": "mcp files:read"})
    }

    fn expect(audiences: &[String]) -> Expect<'_> {
        Expect { issuer: "https://as.example", audiences, now: 1_000, leeway: 30 }
    }

    fn accept(token: &str, keys: &[PublicKey], audiences: &[String]) -> Result<Map<String, Value>, Rejected> {
        let t = decode(token)?;
        t.verify(keys)?;
        check_claims(&t.claims, &expect(audiences))?;
        Ok(t.claims)
    }

    #[test]
    fn an_eddsa_token_round_trips_and_its_claims_are_checked() {
        let key = ed_key();
        let keys = parse_jwks(&json!({"keys": [ed25519_jwk(&key, "k1")]}));
        assert_eq!(keys.len(), 1);
        let aud = vec!["https://gw.example/mcp".to_string()];
        let token = sign_ed25519(&key, "k1", &claims(json!("https://gw.example/mcp"), 2_000));
        let got = accept(&token, &keys, &aud).unwrap();
        assert_eq!(scopes(&got), ["mcp", "files:read"]);
        let in_array = sign_ed25519(&key, "k1", &claims(json!(["x", "https://gw.example/mcp"]), 2_000));
        assert!(accept(&in_array, &keys, &aud).is_ok());
        let other = sign_ed25519(&key, "k1", &claims(json!("https://gw.example/servers/a/mcp"), 2_000));
        assert_eq!(accept(&other, &keys, &aud), Err(Rejected::Audience));
        let expired = sign_ed25519(&key, "k1", &claims(json!("https://gw.example/mcp"), 900));
        assert_eq!(accept(&expired, &keys, &aud), Err(Rejected::Expired));
        let within_leeway = sign_ed25519(&key, "k1", &claims(json!("https://gw.example/mcp"), 980));
        assert!(accept(&within_leeway, &keys, &aud).is_ok());
        let mut early = claims(json!("https://gw.example/mcp"), 2_000);
        early["nbf"] = json!(1_100);
        assert_eq!(accept(&sign_ed25519(&key, "k1", &early), &keys, &aud), Err(Rejected::NotYetValid));
        let mut foreign = claims(json!("https://gw.example/mcp"), 2_000);
        foreign["iss"] = json!("https://evil.example");
        assert_eq!(accept(&sign_ed25519(&key, "k1", &foreign), &keys, &aud), Err(Rejected::Issuer));
        let mut no_exp = claims(json!("https://gw.example/mcp"), 2_000);
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            accept(&sign_ed25519(&key, "k1", &no_exp), &keys, &aud),
            Err(Rejected::Malformed(_))
        ));
    }

    #[test]
    fn forged_and_unsigned_tokens_are_refused() {
        let key = ed_key();
        let keys = parse_jwks(&json!({"keys": [ed25519_jwk(&key, "k1")]}));
        let aud = vec!["https://gw.example/mcp".to_string()];
        let token = sign_ed25519(&key, "k1", &claims(json!("https://gw.example/mcp"), 2_000));
        // Another key's signature.
        let forged = sign_ed25519(&ed_key(), "k1", &claims(json!("https://gw.example/mcp"), 2_000));
        assert_eq!(accept(&forged, &keys, &aud), Err(Rejected::BadSignature));
        // The claims changed under the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut changed = claims(json!("https://gw.example/mcp"), 2_000);
        changed["sub"] = json!("mallory");
        let tampered = format!("{}.{}.{}", parts[0], base64url(changed.to_string().as_bytes()), parts[2]);
        assert_eq!(accept(&tampered, &keys, &aud), Err(Rejected::BadSignature));
        // alg none, with or without a signature; HS256 keyed with anything.
        for alg in ["none", "HS256", "RS512"] {
            let header = base64url(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
            let body = base64url(claims(json!("https://gw.example/mcp"), 2_000).to_string().as_bytes());
            for sig in ["", parts[2]] {
                let t = format!("{header}.{body}.{sig}");
                assert!(matches!(accept(&t, &keys, &aud), Err(Rejected::Algorithm(_))), "{alg}");
            }
        }
        // An unknown kid; a typ that is not an access token; junk.
        let unknown = sign_ed25519(&key, "k2", &claims(json!("https://gw.example/mcp"), 2_000));
        assert_eq!(accept(&unknown, &keys, &aud), Err(Rejected::UnknownKey(Some("k2".into()))));
        let header = base64url(json!({"alg": "EdDSA", "typ": "dpop+jwt"}).to_string().as_bytes());
        assert!(matches!(decode(&format!("{header}.e30.AA")), Err(Rejected::Type(_))));
        for junk in ["", "a.b", "a.b.c.d", "!!.e30.", &"a".repeat(MAX_TOKEN + 1)] {
            assert!(matches!(decode(junk), Err(Rejected::Malformed(_))), "{junk:.20}");
        }
    }

    #[test]
    fn es256_keys_verify_and_keys_for_other_uses_are_skipped() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = key.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "e1",
            "x": base64url(&point[1..33]), "y": base64url(&point[33..])});
        let enc = json!({"kty": "EC", "crv": "P-256", "use": "enc", "kid": "e2",
            "x": base64url(&point[1..33]), "y": base64url(&point[33..])});
        let keys = parse_jwks(&json!({"keys": [jwk, enc, {"kty": "oct", "k": "c2VjcmV0"}]}));
        assert_eq!(keys.len(), 1);
        let header = base64url(json!({"alg": "ES256", "kid": "e1", "typ": "at+jwt"}).to_string().as_bytes());
        let body = base64url(claims(json!("r"), 2_000).to_string().as_bytes());
        let input = format!("{header}.{body}");
        let sig = key.sign(&rng, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", base64url(sig.as_ref()));
        assert!(accept(&token, &keys, &["r".into()]).is_ok());
        // An Ed25519 token with the EC key's kid finds no fitting key.
        let ed = sign_ed25519(&ed_key(), "e1", &claims(json!("r"), 2_000));
        assert_eq!(accept(&ed, &keys, &["r".into()]), Err(Rejected::UnknownKey(Some("e1".into()))));
    }
}
