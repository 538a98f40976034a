//! What the built-in authorization server keeps across restarts, under `--state-dir`: its
//! signing key (`signing-key.pk8`, Ed25519 in PKCS#8, mode 0600) and its state (`state.json`:
//! registered clients, refresh token families, revocations). Tokens themselves are never
//! written: a client secret or a refresh token is kept as its SHA-256.
//!
//! Every change is a read-modify-write under an exclusive `flock` of `state.lock` (so `mcpport
//! oauth revoke` and a running gateway never lose each other's changes), written to a temporary
//! file, synced, renamed over `state.json` and the directory synced: a crash leaves the old
//! state or the new one, never a torn one. The gateway re-reads the file when its size, time or
//! inode changed, so a revocation by the command line applies to the next request.
//!
//! Bounds: `MAX_CLIENTS` approved clients and `MAX_UNAPPROVED` registrations waiting (those are
//! dropped after a day, the oldest first when there are too many; never an approved client), `MAX_FAMILIES_PER_CLIENT` refresh families per client
//! and `MAX_FAMILIES` in all (the oldest go first), `MAX_USED` rotated-out tokens remembered per
//! family for reuse detection, and revocations kept only as long as a token they revoke can live.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use serde_json::{json, Map, Value};

use crate::thread::lock;

/// Clients the owner approved, at most (more approvals are refused).
pub(crate) const MAX_CLIENTS: usize = 1000;
/// Registrations waiting for the owner's first approval, at most (the oldest go).
pub(crate) const MAX_UNAPPROVED: usize = 200;
pub(crate) const MAX_FAMILIES: usize = 10_000;
pub(crate) const MAX_FAMILIES_PER_CLIENT: usize = 64;
const MAX_USED: usize = 16;
/// A registration nobody approved is forgotten after this long.
pub(crate) const UNAPPROVED_TTL: u64 = 24 * 3600;
/// How long a refresh token family lives from its first token.
pub(crate) const FAMILY_TTL: u64 = 90 * 24 * 3600;
/// The largest state file read.
const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether a client id is a URL (a client metadata document's): such a client is not registered.
pub(crate) fn is_url(id: &str) -> bool {
    id.starts_with("https://") || id.starts_with("http://")
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A registered client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Client {
    pub id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// `none`, `client_secret_post` or `client_secret_basic`.
    pub auth_method: String,
    /// The SHA-256 (hex) of its secret, for a confidential client.
    pub secret_sha256: Option<String>,
    pub created: u64,
    /// When the owner first approved it (a registration never approved expires).
    pub approved: Option<u64>,
}

/// One chain of refresh tokens: each use gives a new token and retires the old one; a retired
/// one coming back means the chain leaked, and the whole family is revoked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub id: String,
    pub client_id: String,
    pub scope: String,
    pub resource: String,
    /// SHA-256 (hex) of the live token.
    pub current: String,
    /// SHA-256 (hex) of the tokens it replaced, newest last.
    pub used: Vec<String>,
    pub created: u64,
    /// When it was revoked: its access tokens are refused, and it is kept until they expire.
    pub revoked: Option<u64>,
}

/// Everything in `state.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct State {
    pub clients: Vec<Client>,
    pub families: Vec<Family>,
    /// Clients revoked, and when: their access tokens issued before then are refused.
    pub revoked_clients: Vec<(String, u64)>,
}

impl State {
    pub(crate) fn client(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// Drops what has expired and keeps every table within its bound; `access_ttl` is how long
    /// an access token lives (revocations are kept that long).
    pub(crate) fn prune(&mut self, now: u64, access_ttl: u64) {
        self.clients.retain(|c| c.approved.is_some() || c.created + UNAPPROVED_TTL > now);
        // Registrations never approved: the oldest go first, and never an approved client.
        let mut waiting = self.clients.iter().filter(|c| c.approved.is_none()).count();
        while waiting > MAX_UNAPPROVED {
            if let Some(i) = self.clients.iter().position(|c| c.approved.is_none()) {
                self.clients.remove(i);
            }
            waiting -= 1;
        }
        let ids: std::collections::HashSet<String> = self.clients.iter().map(|c| c.id.clone()).collect();
        let kept = |f: &Family| match f.revoked {
            Some(at) => at + access_ttl + 120 > now,
            None => f.created + FAMILY_TTL > now && (ids.contains(&f.client_id) || is_url(&f.client_id)),
        };
        self.families.retain(kept);
        for f in &mut self.families {
            if f.used.len() > MAX_USED {
                let extra = f.used.len() - MAX_USED;
                f.used.drain(..extra);
            }
        }
        let mut per_client: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut keep = vec![true; self.families.len()];
        for (i, f) in self.families.iter().enumerate().rev() {
            let n = per_client.entry(f.client_id.as_str()).or_default();
            *n += 1;
            keep[i] = *n <= MAX_FAMILIES_PER_CLIENT;
        }
        let mut flags = keep.into_iter();
        self.families.retain(|_| flags.next().unwrap_or(true));
        if self.families.len() > MAX_FAMILIES {
            let extra = self.families.len() - MAX_FAMILIES;
            self.families.drain(..extra);
        }
        self.revoked_clients.retain(|(_, at)| at + access_ttl + 120 > now);
        if self.revoked_clients.len() > MAX_CLIENTS {
            let extra = self.revoked_clients.len() - MAX_CLIENTS;
            self.revoked_clients.drain(..extra);
        }
    }

    /// Revokes a client: it is forgotten (it must be approved again), its refresh families end,
    /// and its access tokens issued until now are refused. Whether it was known.
    pub(crate) fn revoke_client(&mut self, id: &str, now: u64) -> bool {
        let known =
            self.clients.iter().any(|c| c.id == id) || self.families.iter().any(|f| f.client_id == id);
        self.clients.retain(|c| c.id != id);
        for f in self.families.iter_mut().filter(|f| f.client_id == id && f.revoked.is_none()) {
            f.revoked = Some(now);
        }
        self.revoked_clients.retain(|(c, _)| c != id);
        self.revoked_clients.push((id.to_string(), now));
        known
    }

    /// Whether access tokens of `client` issued at `iat` are revoked.
    pub(crate) fn is_revoked(&self, client: &str, iat: u64, family: Option<&str>) -> bool {
        self.revoked_clients.iter().any(|(c, at)| c == client && iat <= *at)
            || family.is_some_and(|fam| self.families.iter().any(|f| f.id == fam && f.revoked.is_some()))
    }

    fn to_json(&self) -> Value {
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                json!({"client_id": c.id, "client_name": c.name, "redirect_uris": c.redirect_uris,
                    "token_endpoint_auth_method": c.auth_method, "secret_sha256": c.secret_sha256,
                    "created": c.created, "approved": c.approved})
            })
            .collect();
        let families: Vec<Value> = self
            .families
            .iter()
            .map(|f| {
                json!({"id": f.id, "client_id": f.client_id, "scope": f.scope, "resource": f.resource,
                    "current": f.current, "used": f.used, "created": f.created, "revoked": f.revoked})
            })
            .collect();
        let revoked: Vec<Value> =
            self.revoked_clients.iter().map(|(c, at)| json!({"client_id": c, "at": at})).collect();
        json!({"version": 1, "clients": clients, "refresh_families": families, "revoked_clients": revoked})
    }

    fn from_json(doc: &Value) -> Result<State, String> {
        let text = |v: &Value, k: &str| v[k].as_str().map(str::to_string).ok_or(format!("no {k}"));
        let number = |v: &Value, k: &str| v[k].as_u64().ok_or(format!("no {k}"));
        let strings = |v: &Value| {
            v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
        };
        let mut state = State::default();
        for c in doc["clients"].as_array().into_iter().flatten() {
            state.clients.push(Client {
                id: text(c, "client_id")?,
                name: text(c, "client_name").unwrap_or_default(),
                redirect_uris: strings(&c["redirect_uris"]),
                auth_method: text(c, "token_endpoint_auth_method").unwrap_or_else(|_| "none".into()),
                secret_sha256: c["secret_sha256"].as_str().map(str::to_string),
                created: number(c, "created")?,
                approved: c["approved"].as_u64(),
            });
        }
        for f in doc["refresh_families"].as_array().into_iter().flatten() {
            state.families.push(Family {
                id: text(f, "id")?,
                client_id: text(f, "client_id")?,
                scope: text(f, "scope").unwrap_or_default(),
                resource: text(f, "resource").unwrap_or_default(),
                current: text(f, "current")?,
                used: strings(&f["used"]),
                created: number(f, "created")?,
                revoked: f["revoked"].as_u64(),
            });
        }
        for r in doc["revoked_clients"].as_array().into_iter().flatten() {
            state.revoked_clients.push((text(r, "client_id")?, number(r, "at")?));
        }
        Ok(state)
    }
}

/// The state directory, and the state as last read from it.
pub(crate) struct Store {
    dir: PathBuf,
    /// The state as last read or written, shared: a token check takes a pointer, not a copy.
    cached: Mutex<(Option<Stamp>, Arc<State>)>,
    /// Held by this process's writer, across the read-modify-write (the `flock` keeps other
    /// processes out); readers never wait for a write to reach the disk.
    writer: Mutex<()>,
}

/// What tells a changed file: its inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stamp(u64, u64, i64, i64);

impl Store {
    /// Opens (and creates, mode 0700) the state directory, reading its state.
    pub(crate) fn open(dir: &str) -> Result<Store, String> {
        let path = PathBuf::from(dir);
        if !path.exists() {
            fs::create_dir_all(&path).map_err(|e| format!("--state-dir {dir}: {e}"))?;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
        }
        if !path.is_dir() {
            return Err(format!("--state-dir {dir}: not a directory"));
        }
        let store = Store { dir: path, cached: Mutex::default(), writer: Mutex::new(()) };
        store.read()?;
        Ok(store)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The signing key: the one kept in the directory, or a new one written there.
    pub(crate) fn signing_key(&self) -> Result<Ed25519KeyPair, String> {
        let path = self.dir.join("signing-key.pk8");
        let _guard = self.flock()?;
        match fs::read(&path) {
            Ok(pkcs8) => Ed25519KeyPair::from_pkcs8(&pkcs8)
                .map_err(|e| format!("{}: not an Ed25519 PKCS#8 key: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| "cannot generate a signing key".to_string())?;
                write_atomically(&path, pkcs8.as_ref())?;
                log::info!("OAuth: generated a signing key in {}", path.display());
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The state, re-read if the file changed since it was last read.
    pub(crate) fn read(&self) -> Result<Arc<State>, String> {
        let stamp = stamp(&self.state_path());
        {
            let cached = lock(&self.cached);
            if stamp.is_some() && stamp == cached.0 {
                return Ok(cached.1.clone());
            }
        }
        // Changed on disk (by the command line, or a first read): read it outside the lock.
        let state = Arc::new(read_state(&self.state_path())?);
        *lock(&self.cached) = (stamp, state.clone());
        Ok(state)
    }

    /// Applies `change` to the state on disk, under the lock, and writes it back atomically.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> Result<R, String> {
        let _writer = lock(&self.writer);
        let _guard = self.flock()?;
        let path = self.state_path();
        let mut state = read_state(&path)?;
        let result = change(&mut state);
        write_atomically(
            &path,
            serde_json::to_string_pretty(&state.to_json()).unwrap_or_default().as_bytes(),
        )?;
        *lock(&self.cached) = (stamp(&path), Arc::new(state));
        Ok(result)
    }

    /// An exclusive lock on `state.lock`, held until the returned file is dropped.
    fn flock(&self) -> Result<File, String> {
        let path = self.dir.join("state.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        crate::sys::lock_exclusively(&file).map_err(|e| format!("{}: cannot lock: {e}", path.display()))?;
        Ok(file)
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp(m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn read_state(path: &Path) -> Result<State, String> {
    let text = match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > MAX_STATE_BYTES => return Err(format!("{}: over 64 MiB", path.display())),
        Ok(_) => fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    State::from_json(&doc).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: a temporary file
/// in the same directory (mode 0600), synced, renamed over `path`, and the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut file =
        OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    drop(file);
    fs::rename(&tmp, path).map_err(fail)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    Ok(())
}

/// Lists what the state holds, for `mcpport oauth list`.
pub(crate) fn describe(state: &State) -> Value {
    let clients: Vec<Value> = state
        .clients
        .iter()
        .map(|c| {
            let families =
                state.families.iter().filter(|f| f.client_id == c.id && f.revoked.is_none()).count();
            let mut m = Map::new();
            m.insert("client_id".into(), json!(c.id));
            m.insert("client_name".into(), json!(c.name));
            m.insert("redirect_uris".into(), json!(c.redirect_uris));
            m.insert("created".into(), json!(c.created));
            m.insert("approved".into(), json!(c.approved));
            m.insert("refresh_tokens".into(), json!(families));
            Value::Object(m)
        })
        .collect();
    let by_url: Vec<Value> = state
        .families
        .iter()
        .filter(|f| f.revoked.is_none() && state.client(&f.client_id).is_none())
        .map(|f| json!({"client_id": f.client_id, "since": f.created}))
        .collect();
    json!({"clients": clients, "metadata_document_clients": by_url, "revoked_clients": state.revoked_clients.len()})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, created: u64, approved: Option<u64>) -> Client {
        Client {
            id: id.into(),
            name: id.into(),
            redirect_uris: vec!["http://127.0.0.1:1/cb".into()],
            auth_method: "none".into(),
            secret_sha256: None,
            created,
            approved,
        }
    }

    fn family(id: &str, client: &str, created: u64) -> Family {
        Family {
            id: id.into(),
            client_id: client.into(),
            scope: "mcp".into(),
            resource: "r".into(),
            current: "h".into(),
            used: Vec::new(),
            created,
            revoked: None,
        }
    }

    #[test]
    fn the_state_survives_a_reopen_and_changes_are_atomic() {
        let dir = std::env::temp_dir().join(format!("mcpport-store-{}", crate::sys::random_hex(8)));
        let store = Store::open(dir.to_str().unwrap()).unwrap();
        let key = store.signing_key().unwrap();
        store.update(|s| s.clients.push(client("c1", now(), Some(now())))).unwrap();
        let again = Store::open(dir.to_str().unwrap()).unwrap();
        assert_eq!(again.read().unwrap().clients.len(), 1);
        use ring::signature::KeyPair;
        assert_eq!(again.signing_key().unwrap().public_key().as_ref(), key.public_key().as_ref());
        // A change made by another process (the command line) is seen on the next read.
        again.update(|s| s.revoke_client("c1", now())).unwrap();
        assert!(store.read().unwrap().clients.is_empty());
        let mode = fs::metadata(dir.join("signing-key.pk8")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is the owner's alone");
        assert!(!dir.join(".state.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tables_stay_within_their_bounds() {
        let mut s = State::default();
        let t = 10 * UNAPPROVED_TTL;
        s.clients.push(client("stale", t - UNAPPROVED_TTL - 1, None));
        for i in 0..2 * MAX_UNAPPROVED + 10 {
            s.clients.push(client(&format!("c{i}"), t, (i % 2 == 0).then_some(t)));
        }
        for i in 0..MAX_FAMILIES_PER_CLIENT + 3 {
            s.families.push(family(&format!("f{i}"), "c0", t));
        }
        s.prune(t, 3600);
        assert_eq!(
            s.clients.len(),
            MAX_UNAPPROVED + 5 + MAX_UNAPPROVED,
            "every approved one, and the newest waiting"
        );
        assert!(s.client("stale").is_none() && s.client("c1").is_none() && s.client("c0").is_some());
        assert!(s.client(&format!("c{}", 2 * MAX_UNAPPROVED + 9)).is_some());
        assert_eq!(s.families.len(), MAX_FAMILIES_PER_CLIENT);
        assert_eq!(s.families[0].id, "f3", "the oldest families go first");
        assert!(
            s.revoke_client("c0", t) && s.is_revoked("c0", t - 5, None) && !s.is_revoked("c0", t + 1, None)
        );
        s.prune(t + 3600 + 121, 3600);
        assert!(s.revoked_clients.is_empty(), "a revocation outlives only the tokens it revokes");
    }
}
