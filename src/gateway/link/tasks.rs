//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) as the gateway relays it:
//! the task ids clients see, and one link's table of the tasks its edge created.
//!
//! A client never sees an edge's task id. The id it gets is the gateway's:
//! `mcpport.{serial}.{n}.{created}.{tag}`, where `serial` is the link's life, `n` the entry in
//! that link's table, `created` the wall-clock time in milliseconds, and `tag` 128 bits of
//! HMAC-SHA256 under the gateway's state key over those and the `Holder` of the client that
//! created it. So an id leads back to its server (its link) on the aggregated endpoint; it cannot
//! be guessed; and it opens only for the credential it was given to (another client's look-up
//! finds nothing, exactly as for an id that never existed). Because the id is checked without
//! the table, a task whose link has ended is still recognised as ours: its client learns that it
//! failed (`lost`), rather than that it never was.
//!
//! The table (owned by the link, like everything of a link) maps `n` to the edge's own id and
//! the task's owner, and is bounded: tasks per server, tasks per client at that server, and each
//! task's life (`ttlMs`, at most the gateway's `--task-ttl`). A task past its life is forgotten
//! and, unless it was seen to end, cancelled at the edge. Only 2026-07-28 clients that declare
//! the extension get tasks; everyone else's calls run as ordinary calls.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde_json::{json, Value};

use crate::gateway::credential::Holder;
use crate::gateway::link::eras::gateway_meta;
use crate::gateway::link::state::StateKey;
use crate::protocol::META_CAPABILITIES;

/// The extension's identifier, under `capabilities.extensions`.
pub(crate) const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// The longest edge task id the gateway keeps.
pub(crate) const MAX_EDGE_ID: usize = 256;
/// The longest task id a client may present (the gateway's are under 100 bytes).
const MAX_ID: usize = 160;
/// Statuses after which a task no longer changes.
const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

/// Whether `method` is one of the extension's (answered with the gateway's ids).
pub(crate) fn is_task_method(method: &str) -> bool {
    matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel")
}

/// Whether `capabilities` (a client's, or a server's) declare the extension.
pub(crate) fn declared(capabilities: &Value) -> bool {
    capabilities["extensions"][EXTENSION].is_object()
}

/// `capabilities` without the extension (and without the 2025-11-25 `tasks` capability): a client
/// that may not get a task this time, or a description for a client that cannot have one.
pub(crate) fn undeclare(capabilities: &mut Value) {
    let Some(fields) = capabilities.as_object_mut() else { return };
    fields.remove("tasks");
    if let Some(extensions) = fields.get_mut("extensions").and_then(Value::as_object_mut) {
        extensions.remove(EXTENSION);
        if extensions.is_empty() {
            fields.remove("extensions");
        }
    }
}

/// What a gateway task id says, once its tag checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub serial: u64,
    pub n: u64,
    pub created_ms: u64,
}

fn tag(key: &StateKey, r: TaskRef, holder: &Holder) -> String {
    let text = format!("task\0{}\0{}\0{}\0{}", r.serial, r.n, r.created_ms, holder.tag());
    let mac = hmac::sign(&key.hmac(), text.as_bytes());
    mac.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The id a client sees for task `r`, given to `holder`.
pub(crate) fn mint_id(key: &StateKey, r: TaskRef, holder: &Holder) -> String {
    format!("mcpport.{:x}.{:x}.{:x}.{}", r.serial, r.n, r.created_ms, tag(key, r, holder))
}

/// Reads an id `holder` presented: `None` unless this gateway gave exactly it to `holder`.
pub(crate) fn open_id(key: &StateKey, id: &str, holder: &Holder) -> Option<TaskRef> {
    if id.len() > MAX_ID {
        return None;
    }
    let mut parts = id.strip_prefix("mcpport.")?.split('.');
    let mut number = || u64::from_str_radix(parts.next()?, 16).ok();
    let r = TaskRef { serial: number()?, n: number()?, created_ms: number()? };
    let given = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let expected = tag(key, r, holder);
    // Compared in constant time: the tag is the secret part.
    let differ = expected.bytes().zip(given.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if differ != 0 || expected.len() != given.len() {
        return None;
    }
    // The canonical spelling only (no leading zeros, lower case): one task, one id.
    (mint_id(key, r, holder) == id).then_some(r)
}

/// The wall clock in milliseconds, for `createdAt` (a task's id carries it).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// `ms` since the epoch as ISO 8601 in UTC (`2026-12-08T04:05:06.789Z`), as the log writes it.
pub(crate) fn iso8601(ms: u64) -> String {
    crate::logger::timestamp(UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// What `tasks/get` answers for a task the gateway gave out but can no longer reach: its link
/// ended (the edge disconnected, or the server was replaced), or the edge no longer knows it.
/// The task failed, and says why; it is never reported as one that did not exist.
pub(crate) fn lost(id: &str, created_ms: u64, why: &str) -> Value {
    // Written as text and parsed (the strings escaped by `Value`'s Display): a fraction of the
    // code `json!` makes of eight fields, which a router's binary notices.
    let text = format!(
        r#"{{"resultType":"complete","taskId":{},"status":"failed","createdAt":"{}","lastUpdatedAt":"{}","ttlMs":0,"error":{{"code":{},"message":{}}}}}"#,
        Value::from(id),
        iso8601(created_ms),
        iso8601(unix_ms()),
        crate::jsonrpc::INTERNAL_ERROR,
        Value::from(why),
    );
    serde_json::from_str(&text).unwrap_or_default()
}

/// What a request about a task that can no longer be reached gets: `tasks/get`, the failed task
/// (`lost`); an update or a cancel, the acknowledgement of a task that has ended.
pub(crate) fn unreachable(method: &str, id: &str, created_ms: u64, why: &str) -> Value {
    if method == "tasks/get" {
        lost(id, created_ms, why)
    } else {
        ack()
    }
}

/// The acknowledgement of `tasks/update` and `tasks/cancel`: no task envelope.
pub(crate) fn ack() -> Value {
    json!({"resultType": "complete"})
}

/// The params of the gateway's own `tasks/cancel` to an edge (a task past its life, or past a
/// bound): the gateway declares the extension, as the edge requires.
pub(crate) fn cancel_params(edge_id: &str) -> Value {
    let mut meta = gateway_meta();
    meta[META_CAPABILITIES] = json!({"extensions": {EXTENSION: {}}});
    json!({"taskId": edge_id, "_meta": meta})
}

/// Whether a result is a `CreateTaskResult`.
pub(crate) fn is_created(result: &Value) -> bool {
    result["resultType"] == "task"
}

/// Whether a `tasks/get` result says the task has ended.
pub(crate) fn is_terminal(result: &Value) -> bool {
    result["status"].as_str().is_some_and(|s| TERMINAL.contains(&s))
}

/// The edge's id in a `CreateTaskResult`, if it is one the gateway keeps.
pub(crate) fn edge_id(result: &Value) -> Result<&str, String> {
    match result["taskId"].as_str() {
        Some(id) if !id.is_empty() && id.len() <= MAX_EDGE_ID => Ok(id),
        Some(_) => Err(format!("its task id is empty or longer than {MAX_EDGE_ID} bytes")),
        None => Err("its CreateTaskResult has no taskId".into()),
    }
}

/// The life the edge gave a task, in milliseconds, capped at `max_ms` (none, or not a positive
/// integer: `max_ms`).
pub(crate) fn ttl_ms(result: &Value, max_ms: u64) -> u64 {
    result["ttlMs"].as_u64().filter(|t| *t > 0).map_or(max_ms, |t| t.min(max_ms))
}

/// One task the edge created for a client.
#[derive(Debug)]
pub(crate) struct Entry {
    pub edge_id: String,
    pub holder: Holder,
    /// When it is forgotten (its slot in the link's deadlines).
    pub expires: Instant,
    /// Seen to end (a terminal `tasks/get`, or cancelled): it no longer counts against its
    /// client, may make room for a new task, and is not cancelled when it expires.
    pub ended: bool,
}

/// A link's tasks, by `n`, in the order they were created. A plain vector scanned whole: it
/// holds at most `--max-tasks-per-server` entries, and keeping it small in code matters more on a
/// router than a map's lookups (no map of its own to monomorphize).
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: Vec<(u64, Entry)>,
    next: u64,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Tasks `holder` has running (not seen to end).
    pub(crate) fn running(&self, holder: &Holder) -> usize {
        self.entries.iter().filter(|(_, e)| e.holder == *holder && !e.ended).count()
    }

    /// Whether a new task for `holder` would pass a bound: `per_client` running for it, or `max`
    /// kept with none ended to give way.
    pub(crate) fn full_for(&self, holder: &Holder, max: usize, per_client: usize) -> bool {
        self.running(holder) >= per_client
            || (self.len() >= max && !self.entries.iter().any(|(_, e)| e.ended))
    }

    /// With `max` kept, forgets the oldest task that has ended, to make room: its `n` and entry.
    pub(crate) fn make_room(&mut self, max: usize) -> Option<(u64, Entry)> {
        if self.len() < max {
            return None;
        }
        let at = self.entries.iter().position(|(_, e)| e.ended)?;
        Some(self.entries.remove(at))
    }

    /// Records a task; returns its `n`.
    pub(crate) fn insert(&mut self, entry: Entry) -> u64 {
        self.next += 1;
        self.entries.push((self.next, entry));
        self.next
    }

    pub(crate) fn get(&self, n: u64) -> Option<&Entry> {
        self.entries.iter().find(|(k, _)| *k == n).map(|(_, e)| e)
    }

    /// Task `n` was seen to end.
    pub(crate) fn ended(&mut self, n: u64) {
        if let Some((_, e)) = self.entries.iter_mut().find(|(k, _)| *k == n) {
            e.ended = true;
        }
    }

    pub(crate) fn remove(&mut self, n: u64) -> Option<Entry> {
        let at = self.entries.iter().position(|(k, _)| *k == n)?;
        Some(self.entries.remove(at).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn r() -> TaskRef {
        TaskRef { serial: 7, n: 3, created_ms: 1_765_000_000_000 }
    }

    #[test]
    fn an_id_opens_for_its_holder_only_and_any_change_is_refused() {
        let key = StateKey::random();
        let (a, b) = (Holder::Token(0), Holder::Token(1));
        let id = mint_id(&key, r(), &a);
        assert_eq!(open_id(&key, &id, &a), Some(r()));
        assert_eq!(open_id(&key, &id, &b), None, "another client");
        assert_eq!(open_id(&StateKey::random(), &id, &a), None, "another gateway");
        let ip = Holder::Address(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(open_id(&key, &id, &ip), None);
        for i in 0..id.len() {
            for c in [b'0', b'f', b'.', b'x'] {
                let mut bytes = id.clone().into_bytes();
                bytes[i] = c;
                let changed = String::from_utf8(bytes).unwrap();
                if changed != id {
                    assert_eq!(open_id(&key, &changed, &a), None, "byte {i} changed to {c} and accepted");
                }
            }
        }
        let padded = id.replacen("mcpport.7.", "mcpport.07.", 1);
        assert_eq!(open_id(&key, &padded, &a), None, "a second spelling of the same id");
        assert_eq!(open_id(&key, &format!("{id}.0"), &a), None);
        assert_eq!(open_id(&key, "mcpport.", &a), None);
        assert_eq!(open_id(&key, &"9".repeat(MAX_ID + 1), &a), None);
    }

    #[test]
    fn a_lost_task_is_a_failed_one_with_its_reason() {
        let got = lost("mcpport.1.2.3.ab\"c", 0, "the \"edge\" left");
        assert_eq!(got["taskId"], "mcpport.1.2.3.ab\"c");
        assert_eq!(got["status"], "failed");
        assert_eq!(got["createdAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(got["error"], json!({"code": -32603, "message": "the \"edge\" left"}));
        assert_eq!((got["resultType"].as_str(), got["ttlMs"].as_u64()), (Some("complete"), Some(0)));
        assert!(got["lastUpdatedAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn dates_are_iso_8601_in_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_796_702_706_789), "2026-12-08T04:05:06.789Z");
    }

    #[test]
    fn the_table_counts_running_tasks_per_client_and_ended_ones_give_way() {
        let mut t = Table::default();
        let entry = |holder| Entry { edge_id: "e".into(), holder, expires: Instant::now(), ended: false };
        let (a, b) = (Holder::Token(0), Holder::Token(1));
        let n1 = t.insert(entry(a));
        let n2 = t.insert(entry(a));
        assert!(t.full_for(&a, 10, 2));
        assert!(!t.full_for(&b, 10, 2));
        assert!(t.full_for(&b, 2, 2), "the server's bound, nothing ended to give way");
        assert_eq!(t.make_room(2).map(|(n, _)| n), None);
        t.ended(n1);
        t.ended(n1);
        assert_eq!(t.running(&a), 1, "an ended task no longer counts against its client, once");
        assert!(!t.full_for(&b, 2, 2), "an ended task gives way");
        assert_eq!(t.make_room(2).map(|(n, _)| n), Some(n1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(n1).map(|_| ()), None, "removed once");
        t.remove(n2);
        assert_eq!((t.len(), t.running(&a)), (0, 0));
        let n3 = t.insert(entry(b));
        t.ended(n3);
        t.remove(n3);
        assert_eq!(t.make_room(0).map(|(n, _)| n), None, "a removed task is gone for good");
    }

    #[test]
    fn lifetimes_are_capped() {
        assert_eq!(ttl_ms(&json!({"ttlMs": 5000}), 60_000), 5000);
        assert_eq!(ttl_ms(&json!({"ttlMs": 600_000}), 60_000), 60_000);
        assert_eq!(ttl_ms(&json!({"ttlMs": null}), 60_000), 60_000);
        assert_eq!(ttl_ms(&json!({"ttlMs": -1}), 60_000), 60_000);
        assert_eq!(ttl_ms(&json!({}), 60_000), 60_000);
    }
}
