//! The `requestState` of an `input_required` result the gateway makes for a legacy edge (MRTR,
//! protocol 2026-07-28): opaque to the client, tamper-evident, and self-describing enough that a
//! second gateway holding the same key could find the call it resumes.
//!
//! A state is `base64(JSON fields) "." base64(HMAC-SHA256(key, JSON fields))`. The fields name
//! the server, the link's serial (a link's life), the upstream request id, the round (each
//! `input_required` of a call is a new round, so a state is good once), the method and a
//! wall-clock expiry, and the client it was given to (its `Holder`: a token by index, a
//! certificate by hash, or an address): `open` takes who presents it, and another client is
//! refused, so a state that leaks (a log, a proxy, a shared page) cannot take another client's
//! parked call. The key is random per gateway (`StateKey::random`). What makes a state good
//! once is the link: a round it has moved past, or a call it no longer holds, is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde_json::{json, Value};

use crate::codec::{base64, base64_decode};

/// The longest `requestState` the gateway reads (its own are a few hundred bytes).
pub(crate) const MAX_STATE_BYTES: usize = 2048;

/// The per-gateway HMAC key.
#[derive(Clone, Copy, PartialEq)]
pub(crate) struct StateKey([u8; 32]);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl Default for StateKey {
    /// A fixed key: only for tests of the link, whose states never leave the test.
    fn default() -> Self {
        StateKey([7; 32])
    }
}

impl StateKey {
    pub(crate) fn random() -> StateKey {
        let mut key = [0u8; 32];
        crate::sys::random_bytes(&mut key);
        StateKey(key)
    }

    pub(crate) fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

/// What a state says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resume {
    pub server: String,
    pub serial: u64,
    /// The upstream request id the link minted for the call.
    pub id: u64,
    pub round: u32,
    pub method: String,
    /// The client it was given to (`Holder::tag`).
    pub holder: String,
}

/// Why a state did not open.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Unopened {
    /// Not one this gateway made (a 2026-07-28 server's own, or a forgery), changed, or expired:
    /// why, in words.
    Foreign(String),
    /// This gateway's, but given to another client.
    NotYours,
}

/// Seals `resume`, good for `ttl` from now.
pub(crate) fn seal(key: &StateKey, resume: &Resume, ttl: Duration) -> String {
    let expires = unix_now().saturating_add(ttl.as_secs().max(1));
    let fields = json!({
        "v": 1, "s": resume.server, "l": resume.serial, "u": resume.id, "r": resume.round,
        "m": resume.method, "o": resume.holder, "x": expires,
    })
    .to_string();
    let tag = hmac::sign(&key.hmac(), fields.as_bytes());
    format!("{}.{}", base64(fields.as_bytes()), base64(tag.as_ref()))
}

/// Opens a state that `presenter` (`Holder::tag`) sent: its tag must be this gateway's, it must
/// not have expired, and it must have been given to `presenter`.
pub(crate) fn open(key: &StateKey, state: &str, presenter: &str) -> Result<Resume, Unopened> {
    let resume = read(key, state).map_err(Unopened::Foreign)?;
    if resume.holder != presenter {
        return Err(Unopened::NotYours);
    }
    Ok(resume)
}

/// Opens a state whoever holds it.
fn read(key: &StateKey, state: &str) -> Result<Resume, String> {
    if state.len() > MAX_STATE_BYTES {
        return Err("requestState is longer than any this gateway makes".into());
    }
    let (fields, tag) = state.split_once('.').ok_or("requestState is not one this gateway made")?;
    let fields = base64_decode(fields).ok_or("requestState is not one this gateway made")?;
    let tag = base64_decode(tag).ok_or("requestState is not one this gateway made")?;
    hmac::verify(&key.hmac(), &fields, &tag)
        .map_err(|_| "requestState failed its integrity check (changed, or made by another gateway)")?;
    let v: Value = serde_json::from_slice(&fields).map_err(|_| "requestState is not readable")?;
    if v["x"].as_u64().unwrap_or(0) < unix_now() {
        return Err("requestState has expired; send the request again without it".into());
    }
    let resume = (|| {
        Some(Resume {
            server: v["s"].as_str()?.to_string(),
            serial: v["l"].as_u64()?,
            id: v["u"].as_u64()?,
            round: u32::try_from(v["r"].as_u64()?).ok()?,
            method: v["m"].as_str()?.to_string(),
            holder: v["o"].as_str()?.to_string(),
        })
    })();
    resume.filter(|_| v["v"] == 1).ok_or_else(|| "requestState is not readable".into())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume() -> Resume {
        Resume {
            server: "pi".into(),
            serial: 3,
            id: 77,
            round: 2,
            method: "tools/call".into(),
            holder: "t0".into(),
        }
    }

    #[test]
    fn a_sealed_state_opens_with_its_key_only() {
        let key = StateKey::random();
        let state = seal(&key, &resume(), Duration::from_secs(60));
        assert_eq!(open(&key, &state, "t0"), Ok(resume()));
        assert_eq!(open(&key, &state, "t1"), Err(Unopened::NotYours), "another client");
        assert!(
            matches!(open(&StateKey::random(), &state, "t0"), Err(Unopened::Foreign(_))),
            "another gateway's key"
        );
        assert!(open(&key, "garbage", "t0").is_err());
        assert!(open(&key, &"A".repeat(MAX_STATE_BYTES + 1), "t0").is_err());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = StateKey::default();
        let state = seal(&key, &resume(), Duration::from_secs(60));
        let (fields, tag) = state.split_once('.').unwrap();
        let mut json: Value = serde_json::from_slice(&base64_decode(fields).unwrap()).unwrap();
        json["u"] = json!(78);
        let forged = format!("{}.{tag}", base64(json.to_string().as_bytes()));
        assert!(
            matches!(open(&key, &forged, "t0"), Err(Unopened::Foreign(why)) if why.contains("integrity"))
        );
        for i in 0..state.len() {
            let mut bytes = state.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            if changed != state {
                assert!(open(&key, &changed, "t0").is_err(), "byte {i} changed and accepted");
            }
        }
    }
}
