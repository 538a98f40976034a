//! Property tests, in place of a coverage-guided fuzzer (which needs nightly Rust): the HTTP
//! request reader and the JSON-RPC classifier are fed random bytes and mutations of valid input,
//! and the body reader lengths and chunk sizes at the edges of `u64`/`usize`, from a seeded
//! generator so any failure replays. They must never panic (tests build with overflow checks,
//! so a wrapping addition is a panic), never hang, and never hold or hand on anything over the
//! limits. `MCPPORT_FUZZ_CASES=N` runs more cases (default 3000 each);
//! `MCPPORT_FUZZ_SEED=S` picks another sequence.

use std::io::{self, Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::body::{MAX_CHUNK_LINE, MAX_CHUNK_SIZE_DIGITS};
use crate::http::{Budget, Conn, Framing, Limits, ReadError, Timed};
use crate::jsonrpc::{self, Message};

/// xorshift64*: small, fast, and the same everywhere; the seeded generator of every property
/// test in the crate, so a failure replays.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn cases() -> usize {
    std::env::var("MCPPORT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

fn rng() -> Rng {
    let seed =
        std::env::var("MCPPORT_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x006d_6370_706f_7274);
    Rng(seed | 1)
}

/// Input from memory, handed out in pieces of random size, then end of stream.
struct Mem {
    data: Vec<u8>,
    pos: usize,
    pieces: Vec<usize>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let piece = self.pieces.get(self.pos % self.pieces.len().max(1)).copied().unwrap_or(1).max(1);
        let n = piece.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Timed for Mem {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

const SEEDS: [&[u8]; 5] = [
    b"GET /sse HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
    b"POST /messages/?session_id=abc HTTP/1.1\r\nHost: a\r\nContent-Length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}",
    b"POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\nGET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /mcp/register HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
];

const SPICE: [&[u8]; 10] = [
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\0",
    b"99999999999999999999",
    b"ffffffff",
    b"-1",
    b"Content-Length: ",
    b"chunked",
];

/// A seed request mutated a few times, or random bytes.
fn http_input(r: &mut Rng) -> Vec<u8> {
    if r.below(8) == 0 {
        return (0..r.below(600)).map(|_| r.next() as u8).collect();
    }
    let mut data = r.pick(&SEEDS).to_vec();
    for _ in 0..r.below(6) {
        let at = r.below(data.len() + 1);
        match r.below(5) {
            0 if !data.is_empty() => {
                let last = data.len() - 1;
                data[at.min(last)] = r.next() as u8;
            }
            1 => data.splice(at..at, r.pick(&SPICE).iter().copied()).for_each(drop),
            2 => {
                let end = (at + r.below(20)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let end = (at + r.below(40)).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy).for_each(drop);
            }
            _ => data.splice(at..at, std::iter::repeat_n(b'a', r.below(3000))).for_each(drop),
        }
    }
    data
}

#[test]
fn the_request_reader_survives_anything_and_keeps_its_limits() {
    let limits = Limits { max_header_bytes: 1024, max_headers: 16, max_body: 4096, ..Limits::default() };
    let mut r = rng();
    let (mut requests, mut refusals) = (0, 0);
    for _ in 0..cases() {
        let data = http_input(&mut r);
        let pieces = (0..4).map(|_| 1 + r.below(64)).collect();
        let mut conn = Conn::new(Mem { data, pos: 0, pieces });
        // A stream of n bytes holds at most n requests; the bound makes a hang a failure.
        for _ in 0..=conn.stream.data.len() {
            match conn.read_request(&limits) {
                Ok((req, body)) => {
                    requests += 1;
                    assert!(body.len() <= limits.max_body);
                    assert!(req.headers.len() <= limits.max_headers);
                }
                Err(ReadError::Status(code, _)) => {
                    assert!([400, 408, 413, 431, 501].contains(&code), "status {code}");
                    refusals += 1;
                    break;
                }
                Err(_) => break,
            }
            assert!(
                conn.peak_held() <= limits.max_header_bytes + 2 + limits.max_body,
                "the reader held {} bytes",
                conn.peak_held()
            );
        }
    }
    assert!(
        requests > 0 && refusals > 0,
        "the generator reaches both outcomes ({requests} read, {refusals} refused)"
    );
}

/// Sizes at the edges: around the limit, and around `u64::MAX`, `usize::MAX`, `i64::MAX`.
fn edge_size(r: &mut Rng, max_body: u64) -> u64 {
    let base = *r.pick(&[0, 1, max_body, u64::MAX, usize::MAX as u64, i64::MAX as u64, 1 << 32, 1 << 63]);
    match r.below(3) {
        0 => base,
        1 => base.wrapping_add(r.below(3) as u64),
        _ => base.wrapping_sub(r.below(3) as u64),
    }
}

/// A `Content-Length` value: the size in decimal, sometimes with a sign, spaces, leading zeros,
/// one more digit than fits, or a second, different value.
fn length_field(r: &mut Rng, n: u64) -> String {
    let digits = n.to_string();
    match r.below(9) {
        0 => format!("+{digits}"),
        1 => format!("-{digits}"),
        2 => format!("{digits}0"),
        3 => format!("000000000000000000000{digits}"),
        4 => format!("{digits}, {}", n.wrapping_add(1)),
        5 => format!("{digits}\r\nContent-Length: {digits}"),
        6 => format!("{digits}\r\nContent-Length: {}", n / 2),
        _ => digits,
    }
}

/// A chunk-size line: hex, sometimes with a sign, too many digits, spaces, an extension, or
/// upper case.
fn chunk_line(r: &mut Rng, n: u64) -> String {
    let hex = format!("{n:x}");
    match r.below(10) {
        0 => format!("+{hex}"),
        1 => format!("{}{hex}", "0".repeat(MAX_CHUNK_SIZE_DIGITS + 1 - hex.len().min(MAX_CHUNK_SIZE_DIGITS))),
        2 => format!("{hex} ;ext=\"v\""),
        3 => format!("{hex};{}", "e".repeat(r.below(2 * MAX_CHUNK_LINE))),
        4 => hex.to_uppercase(),
        5 => format!(" {hex}"),
        _ => hex,
    }
}

/// A request whose body is framed with sizes at the edges, and whose chunk sizes sometimes add
/// up past `u64::MAX` to something small (the wrap that once let a body past the limit).
fn hostile_body(r: &mut Rng, max_body: u64) -> Vec<u8> {
    let mut out = b"POST /mcp HTTP/1.1\r\nHost: a\r\n".to_vec();
    if r.chance(30) {
        let n = edge_size(r, max_body);
        out.extend(format!("Content-Length: {}\r\n\r\n", length_field(r, n)).into_bytes());
        out.extend(std::iter::repeat_n(b'x', (n as usize).min(2 * max_body as usize)));
        return out;
    }
    out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
    let mut sum = 0u64;
    for _ in 0..1 + r.below(5) {
        let n = match r.below(4) {
            // Wraps the running total to a few bytes, if the reader added without checking.
            0 if sum > 0 => 0u64.wrapping_sub(sum).wrapping_add(r.below(8) as u64),
            1 => 1 + r.below(64) as u64,
            _ => edge_size(r, max_body),
        };
        out.extend(format!("{}\r\n", chunk_line(r, n)).into_bytes());
        // Real data for sizes that fit (sometimes one byte short or long), a little otherwise.
        let data = if n <= 2 * max_body { n as usize } else { r.below(9000) };
        let data = match r.below(8) {
            0 => data.saturating_sub(1),
            1 => data + 1,
            _ => data,
        };
        out.extend(std::iter::repeat_n(b'd', data));
        out.extend(b"\r\n");
        sum = sum.wrapping_add(n);
    }
    out.extend(b"0\r\n");
    for i in 0..r.below(3) {
        out.extend(format!("X-Trailer-{i}: {}\r\n", "t".repeat(r.below(1500))).into_bytes());
    }
    out.extend(b"\r\n");
    out
}

#[test]
fn sizes_near_the_integer_limits_never_wrap_and_nothing_holds_more_than_the_caps() {
    let limits = Limits { max_header_bytes: 1024, max_headers: 16, max_body: 4096, ..Limits::default() };
    let budget = Budget::new(3 * limits.max_body);
    let mut r = rng();
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..cases() {
        let data = hostile_body(&mut r, limits.max_body as u64);
        let pieces = (0..4).map(|_| 1 + r.below(4096)).collect();
        let mut conn = Conn::new(Mem { data, pos: 0, pieces });
        // Another request's body holds part of the budget meanwhile, sometimes all but a little.
        let other =
            crate::http::reserve(&budget, *r.pick(&[0, limits.max_body, 2 * limits.max_body + 100])).unwrap();
        let outcome = read_one(&mut conn, &limits, &budget);
        *outcomes.entry(outcome).or_insert(0) += 1;
        assert!(
            conn.peak_held() <= limits.max_header_bytes + 2 + limits.max_body,
            "the reader held {} bytes",
            conn.peak_held()
        );
        drop(other);
        assert_eq!(budget.held(), 0, "every reservation is given back");
    }
    for code in [0, 400, 413, 503] {
        assert!(outcomes.contains_key(&code), "the generator reaches {code}: {outcomes:?}");
    }
}

/// Reads one request as the gateway does (head, reservation, body); 0 when a body was read,
/// else the refusal's status.
fn read_one(conn: &mut Conn<Mem>, limits: &Limits, budget: &std::sync::Arc<Budget>) -> u16 {
    let refused = |e: ReadError| match e {
        ReadError::Status(code, _) => {
            assert!([400, 408, 413, 431, 501, 503].contains(&code), "status {code}");
            code
        }
        other => panic!("expected a status, got {other:?}"),
    };
    let (_req, framing) = match conn.await_request(limits).and_then(|()| conn.read_head(limits)) {
        Ok(head) => head,
        Err(e) => return refused(e),
    };
    let declared = match framing {
        Framing::Length(n) => n,
        Framing::Chunked => 0,
    };
    let held = match crate::http::reserve(budget, declared) {
        Ok(held) => held,
        Err(e) => return refused(e),
    };
    match conn.read_body(framing, limits, held) {
        Ok(body) => {
            assert!(body.len() <= limits.max_body, "a body of {} bytes", body.len());
            assert!(
                body.held() >= body.len(),
                "{} bytes read on a reservation of {}",
                body.len(),
                body.held()
            );
            assert!(budget.held() <= 3 * limits.max_body);
            0
        }
        Err(e) => refused(e),
    }
}

const KEYS: [&str; 8] = ["jsonrpc", "id", "method", "params", "result", "error", "code", "message"];

/// A random JSON value, biased towards JSON-RPC shapes.
fn json_value(r: &mut Rng, depth: usize) -> Value {
    match r.below(if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(r.below(2) == 0),
        2 => json!(r.next() as i64),
        3 => json!(r.next() as f64 / 7.0),
        4 => json!(*r.pick(&["2.0", "1.0", "", "ping", "tools/call"])),
        5 => json!(r.below(1000)),
        6 => Value::Array((0..r.below(4)).map(|_| json_value(r, depth + 1)).collect()),
        _ => {
            let mut obj = serde_json::Map::new();
            for _ in 0..r.below(6) {
                obj.insert(r.pick(&KEYS).to_string(), json_value(r, depth + 1));
            }
            if r.below(2) == 0 {
                obj.insert("jsonrpc".into(), json!("2.0"));
            }
            Value::Object(obj)
        }
    }
}

#[test]
fn the_classifier_survives_anything_and_keeps_the_envelope_rules() {
    let mut r = rng();
    let mut valid = 0;
    for _ in 0..cases() {
        let value = json_value(&mut r, 0);
        let mut text = value.to_string().into_bytes();
        if r.below(4) == 0 && !text.is_empty() {
            let at = r.below(text.len());
            text[at] = r.next() as u8;
        }
        let Ok(msg) = jsonrpc::parse(&text).and_then(jsonrpc::classify) else { continue };
        valid += 1;
        match msg {
            Message::Request { id, .. } => assert!(id.is_string() || id.is_i64() || id.is_u64(), "{id}"),
            Message::Response { id, outcome: Ok(_) } => {
                assert!(!id.is_null(), "a result needs its request's id")
            }
            Message::Response { outcome: Err(e), .. } => assert!(e.is_object()),
            Message::Notification { .. } => {}
        }
    }
    assert!(valid > 0, "the generator reaches valid messages");
}
