//! The benchmark's MCP client: the same code drives our gateway and the original Python one, so
//! its own cost is the same on both sides. Standard library only; scripts/bench.sh builds it with
//! plain `rustc -O` (no Cargo project, no dependencies).
//!
//! Transports: legacy SSE (`GET /sse`, read the `endpoint` event, then POST each message there
//! on one keep-alive connection and read the answer from the stream) and Streamable HTTP (POST
//! to /mcp on one keep-alive connection, the answer in the response, JSON or SSE).
//! Each session has one thread doing blocking I/O: send, then wait for the answer. Nothing
//! deserializes more than the top-level members of a message.
//!
//! Usage:
//!   benchclient wait-tool ADDR SSE_PATH TOOL TIMEOUT_S POLL_MS
//!       Opens an SSE session, prints `ready`, then lists tools every POLL_MS until TOOL is in the
//!       list and prints `found N` (N lists asked); exit status 1 after TIMEOUT_S.
//!   benchclient load --tool T --calls N --rounds R --warmup W --sessions C [--dump FILE]
//!                    NAME=sse:ADDR/PATH | NAME=http:ADDR/PATH ...
//!       Opens C sessions per target, runs W calls per session, then R rounds; in each round the
//!       targets take turns (one after the other, never at once), each running N/R calls per
//!       session, its C sessions at the same time. Prints one JSON object per target. --dump
//!       writes every latency (target round session index micros) for a closer look.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::exit;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("benchclient: {msg}");
    exit(2)
}

fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::Other, msg.into())
}

// ---- HTTP/1.1 ----

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

impl Conn {
    fn connect(addr: &str) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn { r: BufReader::with_capacity(64 * 1024, s.try_clone()?), w: s, host: addr.to_string() })
    }

    /// Sends a request in one write.
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        if method != "GET" {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.w.write_all(&bytes)
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(io_err("connection closed"));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn read_head(&mut self) -> io::Result<Head> {
        let status_line = self.line()?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io_err(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Head { status, headers })
    }

    fn read_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        if head.status == 204 || head.status == 304 {
            return Ok(body);
        }
        if head.chunked() {
            loop {
                let size = self.chunk_size()?;
                if size == 0 {
                    while !self.line()?.is_empty() {} // trailers
                    return Ok(body);
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.r.read_exact(&mut body[start..])?;
                self.line()?; // CRLF after the chunk
            }
        } else if let Some(len) = head.header("content-length") {
            let len: usize = len.parse().map_err(|_| io_err("bad Content-Length"))?;
            body.resize(len, 0);
            self.r.read_exact(&mut body)?;
        } else {
            self.r.read_to_end(&mut body)?;
        }
        Ok(body)
    }

    fn chunk_size(&mut self) -> io::Result<usize> {
        let mut line = self.line()?;
        if line.is_empty() {
            line = self.line()?;
        }
        let hex = line.split(';').next().unwrap_or("").trim();
        usize::from_str_radix(hex, 16).map_err(|_| io_err(format!("bad chunk size {line:?}")))
    }

    fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<(Head, Vec<u8>)> {
        self.send(method, path, headers, body)?;
        let head = self.read_head()?;
        let body = self.read_body(&head)?;
        Ok((head, body))
    }
}

// ---- Server-Sent Events ----

/// Parses SSE events out of decoded bytes.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
}

struct Event {
    name: String,
    data: String,
}

impl SseParser {
    /// Adds bytes; carriage returns are dropped (JSON never holds a raw one), so CRLF and LF
    /// line ends look the same.
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend(bytes.iter().copied().filter(|&b| b != b'\r'));
    }

    /// The next complete event with data, if there is one (comments are skipped).
    fn next(&mut self) -> Option<Event> {
        loop {
            let end = self.pending.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block[..end]);
            let (mut name, mut data, mut has_data) = (String::new(), String::new(), false);
            for line in text.split('\n') {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_string(),
                    "data" => {
                        if has_data {
                            data.push('\n');
                        }
                        data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                return Some(Event { name, data });
            }
        }
    }
}

/// A long-lived SSE response being read event by event.
struct SseStream {
    conn: Conn,
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    parser: SseParser,
}

impl SseStream {
    fn open(addr: &str, path: &str) -> io::Result<SseStream> {
        let mut conn = Conn::connect(addr)?;
        conn.send("GET", path, &[("Accept", "text/event-stream"), ("Cache-Control", "no-cache")], b"")?;
        let head = conn.read_head()?;
        if head.status != 200 {
            return Err(io_err(format!("GET {path}: status {}", head.status)));
        }
        Ok(SseStream { chunked: head.chunked(), conn, left: 0, parser: SseParser::default() })
    }

    fn next_event(&mut self) -> io::Result<Event> {
        loop {
            if let Some(ev) = self.parser.next() {
                return Ok(ev);
            }
            if self.chunked && self.left == 0 {
                self.left = self.conn.chunk_size()?;
                if self.left == 0 {
                    return Err(io_err("the SSE stream ended"));
                }
            }
            let avail = self.conn.r.fill_buf()?;
            if avail.is_empty() {
                return Err(io_err("the SSE stream closed"));
            }
            let n = if self.chunked { avail.len().min(self.left) } else { avail.len() };
            self.parser.feed(&avail[..n]);
            self.conn.r.consume(n);
            if self.chunked {
                self.left -= n;
            }
        }
    }
}

// ---- JSON, top level only ----

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            i += 1;
            while i < b.len() {
                match b[i] {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
            None
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_value(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']') && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            Some(i)
        }
    }
}

/// The top-level members of a JSON object: (key with its quotes, raw value).
fn members(text: &str) -> Vec<(&str, &str)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return out;
        }
        let Some(key_end) = skip_value(b, i) else { return out };
        let key = &text[i..key_end];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return out;
        }
        i = skip_ws(b, i + 1);
        let Some(val_end) = skip_value(b, i) else { return out };
        out.push((key, &text[i..val_end]));
        i = skip_ws(b, val_end);
        if b.get(i) != Some(&b',') {
            return out;
        }
        i += 1;
    }
}

/// `Some((id, is_error))` when `text` is a response with a numeric id.
fn response_id(text: &str) -> Option<(u64, bool)> {
    let m = members(text);
    let id = m.iter().find(|(k, _)| *k == "\"id\"")?.1.parse().ok()?;
    let has = |key: &str| m.iter().any(|(k, _)| *k == key);
    if has("\"method\"") {
        return None; // a request from the server, not an answer
    }
    has("\"result\"").then_some((id, false)).or(has("\"error\"").then_some((id, true)))
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---- MCP sessions ----

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sse,
    Http,
}

struct Session {
    kind: Kind,
    post: Conn,
    /// SSE: the stream answers come on.
    stream: Option<SseStream>,
    /// Where to POST: the SSE endpoint, or the Streamable HTTP path.
    post_path: String,
    session_id: Option<String>,
    next_id: u64,
}

struct Answer {
    text: String,
    error: bool,
}

impl Session {
    fn open(kind: Kind, addr: &str, path: &str) -> io::Result<Session> {
        let (stream, post_path) = match kind {
            Kind::Sse => {
                let mut stream = SseStream::open(addr, path)?;
                let endpoint = loop {
                    let ev = stream.next_event()?;
                    if ev.name == "endpoint" {
                        break ev.data;
                    }
                };
                // Relative, as both gateways send it; an absolute URL is cut to its path.
                let endpoint = match endpoint.find("://") {
                    Some(i) => endpoint[i + 3..].find('/').map(|j| endpoint[i + 3 + j..].to_string()).unwrap_or_default(),
                    None => endpoint,
                };
                (Some(stream), endpoint)
            }
            Kind::Http => (None, path.to_string()),
        };
        let mut s = Session { kind, post: Conn::connect(addr)?, stream, post_path, session_id: None, next_id: 0 };
        let version = if kind == Kind::Sse { "2024-11-05" } else { "2025-06-18" };
        let init = format!(
            r#"{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"mcpport-bench","version":"1"}}}}"#
        );
        let answer = s.call("initialize", &init)?;
        if answer.error {
            return Err(io_err(format!("initialize failed: {}", answer.text)));
        }
        s.post_message(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        Ok(s)
    }

    /// POSTs one message; returns the response head and body.
    fn post_message(&mut self, body: &str) -> io::Result<(Head, Vec<u8>)> {
        let mut headers = vec![("Content-Type", "application/json")];
        if self.kind == Kind::Http {
            headers.push(("Accept", "application/json, text/event-stream"));
            headers.push(("MCP-Protocol-Version", "2025-06-18"));
        }
        let sid = self.session_id.clone();
        if let Some(sid) = &sid {
            headers.push(("Mcp-Session-Id", sid));
        }
        let (head, body) = self.post.request("POST", &self.post_path, &headers, body.as_bytes())?;
        if !(200..300).contains(&head.status) {
            return Err(io_err(format!(
                "POST {}: status {} {}",
                self.post_path,
                head.status,
                String::from_utf8_lossy(&body)
            )));
        }
        Ok((head, body))
    }

    /// Sends a request and waits for its answer.
    fn call(&mut self, method: &str, params: &str) -> io::Result<Answer> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        let (head, body) = self.post_message(&msg)?;
        match self.kind {
            Kind::Sse => {
                let stream = self.stream.as_mut().expect("an SSE session has a stream");
                loop {
                    let ev = stream.next_event()?;
                    if ev.name.is_empty() || ev.name == "message" {
                        if let Some((got, error)) = response_id(&ev.data) {
                            if got == id {
                                return Ok(Answer { text: ev.data, error });
                            }
                        }
                    }
                }
            }
            Kind::Http => {
                if let Some(sid) = head.header("mcp-session-id") {
                    self.session_id = Some(sid.to_string());
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                let is_sse = head.header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
                let candidates: Vec<String> = if is_sse {
                    let mut p = SseParser::default();
                    p.feed(text.as_bytes());
                    std::iter::from_fn(|| p.next()).map(|e| e.data).collect()
                } else {
                    vec![text]
                };
                for c in candidates {
                    if let Some((got, error)) = response_id(&c) {
                        if got == id {
                            return Ok(Answer { text: c, error });
                        }
                    }
                }
                Err(io_err(format!("POST {}: no answer to request {id} in the response", self.post_path)))
            }
        }
    }

    fn close(mut self) {
        if let (Kind::Http, Some(sid)) = (self.kind, self.session_id.clone()) {
            let _ = self.post.request("DELETE", &self.post_path.clone(), &[("Mcp-Session-Id", &sid)], b"");
        }
    }
}

// ---- wait-tool ----

fn wait_tool(args: &[String]) -> ! {
    let [addr, path, tool, timeout, poll] = args else { fail("wait-tool ADDR SSE_PATH TOOL TIMEOUT_S POLL_MS") };
    let timeout = Duration::from_secs_f64(timeout.parse().unwrap_or_else(|_| fail("bad TIMEOUT_S")));
    let poll = Duration::from_millis(poll.parse().unwrap_or_else(|_| fail("bad POLL_MS")));
    let mut s = Session::open(Kind::Sse, addr, path).unwrap_or_else(|e| fail(format!("cannot open a session: {e}")));
    println!("ready");
    let _ = io::stdout().flush();
    let needle = json_string(tool);
    let started = Instant::now();
    let mut asked = 0u64;
    loop {
        asked += 1;
        let answer = s.call("tools/list", "{}").unwrap_or_else(|e| fail(format!("tools/list: {e}")));
        if answer.text.contains(&needle) {
            println!("found {asked}");
            let _ = io::stdout().flush();
            exit(0);
        }
        if started.elapsed() > timeout {
            eprintln!("benchclient: {tool} not listed after {timeout:?}");
            exit(1);
        }
        thread::sleep(poll);
    }
}

// ---- load ----

struct Target {
    name: String,
    kind: Kind,
    addr: String,
    path: String,
}

fn parse_target(spec: &str) -> Target {
    let bad = || -> ! { fail(format!("bad target {spec:?}: NAME=sse:HOST:PORT/PATH or NAME=http:HOST:PORT/PATH")) };
    let (name, rest) = spec.split_once('=').unwrap_or_else(|| bad());
    let (kind, rest) = rest.split_once(':').unwrap_or_else(|| bad());
    let kind = match kind {
        "sse" => Kind::Sse,
        "http" => Kind::Http,
        _ => bad(),
    };
    let slash = rest.find('/').unwrap_or_else(|| bad());
    Target { name: name.to_string(), kind, addr: rest[..slash].to_string(), path: rest[slash..].to_string() }
}

/// What a session worker did in one batch.
struct Batch {
    start: Instant,
    end: Instant,
    micros: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs one session: each number received is a batch of calls to run.
fn worker(mut s: Session, tool: String, tag: String, rx: Receiver<usize>, tx: Sender<Batch>) {
    let mut seq = 0u64;
    while let Ok(n) = rx.recv() {
        let mut b = Batch { start: Instant::now(), end: Instant::now(), micros: Vec::with_capacity(n), errors: 0, first_error: None };
        for _ in 0..n {
            seq += 1;
            let text = format!("bench {tag} call {seq}");
            let params = format!(r#"{{"name":{},"arguments":{{"text":{}}}}}"#, json_string(&tool), json_string(&text));
            let t0 = Instant::now();
            let outcome = s.call("tools/call", &params);
            let dt = t0.elapsed();
            b.micros.push(dt.as_micros().min(u32::MAX as u128) as u32);
            let problem = match outcome {
                Ok(a) if a.error => Some(format!("error answer: {}", a.text)),
                Ok(a) if !a.text.contains(&text) || a.text.contains("\"isError\":true") => {
                    Some(format!("unexpected answer: {}", a.text))
                }
                Ok(_) => None,
                Err(e) => Some(format!("call failed: {e}")),
            };
            if let Some(p) = problem {
                b.errors += 1;
                b.first_error.get_or_insert(p);
            }
        }
        b.end = Instant::now();
        if tx.send(b).is_err() {
            break;
        }
    }
    s.close();
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

fn load(args: &[String]) -> ! {
    let (mut tool, mut calls, mut rounds, mut warmup, mut sessions, mut dump) =
        (String::new(), 500usize, 5usize, 50usize, 1usize, None::<String>);
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| fail(format!("{a} needs a value")));
        let num = |v: String| v.parse::<usize>().unwrap_or_else(|_| fail(format!("bad number {v:?}")));
        match a.as_str() {
            "--tool" => tool = val(),
            "--calls" => calls = num(val()),
            "--rounds" => rounds = num(val()).max(1),
            "--warmup" => warmup = num(val()),
            "--sessions" => sessions = num(val()).max(1),
            "--dump" => dump = Some(val()),
            spec => targets.push(parse_target(spec)),
        }
    }
    if tool.is_empty() || targets.is_empty() {
        fail("load needs --tool and at least one target");
    }
    let per_round = calls.div_ceil(rounds);

    // Open every session first, then warm each up.
    struct Live {
        txs: Vec<Sender<usize>>,
        rx: Receiver<Batch>,
        micros: Vec<u32>,
        busy: Duration,
        errors: u64,
        first_error: Option<String>,
        rounds: Vec<f64>,
        handles: Vec<thread::JoinHandle<()>>,
    }
    let mut live: Vec<Live> = Vec::new();
    for t in &targets {
        let (btx, brx) = channel();
        let mut txs = Vec::new();
        let mut handles = Vec::new();
        for i in 0..sessions {
            let s = Session::open(t.kind, &t.addr, &t.path)
                .unwrap_or_else(|e| fail(format!("{}: cannot open session {i}: {e}", t.name)));
            let (tx, rx) = channel();
            let (tool, tag, btx) = (tool.clone(), format!("{}-{i}", t.name), btx.clone());
            handles.push(thread::Builder::new().name(tag.clone()).spawn(move || worker(s, tool, tag, rx, btx)).unwrap());
            txs.push(tx);
        }
        live.push(Live { txs, rx: brx, micros: Vec::new(), busy: Duration::ZERO, errors: 0, first_error: None, rounds: Vec::new(), handles });
    }
    let run = |l: &Live, n: usize| -> Vec<Batch> {
        for tx in &l.txs {
            tx.send(n).unwrap_or_else(|_| fail("a session thread died"));
        }
        (0..l.txs.len()).map(|_| l.rx.recv().unwrap_or_else(|_| fail("a session thread died"))).collect()
    };
    for (t, l) in targets.iter().zip(&live) {
        let errors: u64 = run(l, warmup).iter().map(|b| b.errors).sum();
        if errors > 0 {
            eprintln!("benchclient: {}: {errors} errors during warm-up", t.name);
        }
    }
    let mut dump_text = String::new();
    for round in 0..rounds {
        for (t, l) in targets.iter().zip(live.iter_mut()) {
            let batches = run(l, per_round);
            let start = batches.iter().map(|b| b.start).min().unwrap();
            let end = batches.iter().map(|b| b.end).max().unwrap();
            let wall = end - start;
            l.busy += wall;
            l.rounds.push(per_round as f64 * batches.len() as f64 / wall.as_secs_f64());
            for (i, b) in batches.into_iter().enumerate() {
                if dump.is_some() {
                    for (k, us) in b.micros.iter().enumerate() {
                        let _ = writeln!(dump_text, "{} {round} {i} {k} {us}", t.name);
                    }
                }
                l.errors += b.errors;
                if l.first_error.is_none() {
                    l.first_error = b.first_error;
                }
                l.micros.extend(b.micros);
            }
        }
    }
    if let Some(path) = dump {
        std::fs::write(&path, dump_text).unwrap_or_else(|e| fail(format!("{path}: {e}")));
    }
    for (t, mut l) in targets.iter().zip(live) {
        l.micros.sort_unstable();
        let n = l.micros.len();
        let mean = l.micros.iter().map(|&u| u as f64).sum::<f64>() / n as f64 / 1000.0;
        let over = |ms: f64| l.micros.iter().filter(|&&u| u as f64 >= ms * 1000.0).count();
        let rounds: Vec<String> = l.rounds.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{{\"target\":{},\"sessions\":{},\"calls\":{n},\"errors\":{},\"first_error\":{},\"wall_s\":{:.4},\
             \"calls_per_s\":{:.1},\"round_calls_per_s\":[{}],\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\
             \"max_ms\":{:.3},\"mean_ms\":{mean:.3},\"over_10ms\":{},\"over_50ms\":{}}}",
            json_string(&t.name),
            l.txs.len(),
            l.errors,
            l.first_error.as_deref().map(json_string).unwrap_or("null".into()),
            l.busy.as_secs_f64(),
            n as f64 / l.busy.as_secs_f64(),
            rounds.join(","),
            percentile(&l.micros, 50.0),
            percentile(&l.micros, 90.0),
            percentile(&l.micros, 99.0),
            percentile(&l.micros, 100.0),
            over(10.0),
            over(50.0),
        );
        drop(l.txs); // the workers end, close their sessions
        for h in l.handles {
            let _ = h.join();
        }
    }
    exit(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("wait-tool") => wait_tool(&args[1..]),
        Some("load") => load(&args[1..]),
        _ => fail("usage: benchclient wait-tool ... | benchclient load ... (see the top of client.rs)"),
    }
}
