//! MCP client sessions over the gateway's two transports, with blocking I/O on one thread per
//! session: legacy SSE (`GET /sse`, read the `endpoint` event, POST each message on one
//! keep-alive connection and read its answer from the stream) and Streamable HTTP (POST to
//! `/mcp`, the answer in the response, JSON or SSE). Nothing deserializes more than the top-level
//! members of a message, so the client's own cost stays small and the same for every target.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Read buffer per connection: small, since a thousand sessions hold two connections each.
const READ_BUF: usize = 16 * 1024;

pub fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

// ---- HTTP/1.1 ----

pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
}

pub struct Head {
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

impl Conn {
    pub fn connect(addr: &str) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn { r: BufReader::with_capacity(READ_BUF, s.try_clone()?), w: s, host: addr.to_string() })
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

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<(Head, Vec<u8>)> {
        self.send(method, path, headers, body)?;
        let head = self.read_head()?;
        let body = self.read_body(&head)?;
        Ok((head, body))
    }
}

// ---- Server-Sent Events ----

#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
}

pub struct Event {
    pub name: String,
    pub data: String,
}

impl SseParser {
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

/// A long-lived SSE response read event by event.
pub struct SseStream {
    conn: Conn,
    chunked: bool,
    left: usize,
    parser: SseParser,
}

impl SseStream {
    pub fn open(addr: &str, path: &str) -> io::Result<SseStream> {
        let mut conn = Conn::connect(addr)?;
        conn.send("GET", path, &[("Accept", "text/event-stream"), ("Cache-Control", "no-cache")], b"")?;
        let head = conn.read_head()?;
        if head.status != 200 {
            return Err(io_err(format!("GET {path}: status {}", head.status)));
        }
        Ok(SseStream { chunked: head.chunked(), conn, left: 0, parser: SseParser::default() })
    }

    pub fn next_event(&mut self) -> io::Result<Event> {
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

    /// A handle on the stream's socket, to shut it down from another thread.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.conn.w.try_clone()
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
pub fn members(text: &str) -> Vec<(&str, &str)> {
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
pub fn response_id(text: &str) -> Option<(u64, bool)> {
    let m = members(text);
    let id = m.iter().find(|(k, _)| *k == "\"id\"")?.1.parse().ok()?;
    let has = |key: &str| m.iter().any(|(k, _)| *k == key);
    if has("\"method\"") {
        return None;
    }
    has("\"result\"").then_some((id, false)).or(has("\"error\"").then_some((id, true)))
}

pub fn json_string(s: &str) -> String {
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

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    Sse,
    Http,
}

/// Where sessions go: `sse:HOST:PORT/PATH` or `http:HOST:PORT/PATH`.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    pub addr: String,
    pub path: String,
}

impl Target {
    pub fn parse(spec: &str) -> Result<Target, String> {
        let bad = || format!("bad target {spec:?}: sse:HOST:PORT/PATH or http:HOST:PORT/PATH");
        let (kind, rest) = spec.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "sse" => Kind::Sse,
            "http" => Kind::Http,
            _ => return Err(bad()),
        };
        let slash = rest.find('/').ok_or_else(bad)?;
        Ok(Target { kind, addr: rest[..slash].to_string(), path: rest[slash..].to_string() })
    }
}

pub struct Session {
    kind: Kind,
    post: Conn,
    stream: Option<SseStream>,
    post_path: String,
    session_id: Option<String>,
    next_id: u64,
    /// `list_changed` notifications seen on the stream while waiting for answers.
    pub list_changed: u64,
}

pub struct Answer {
    pub text: String,
    pub error: bool,
}

impl Session {
    pub fn open(t: &Target) -> io::Result<Session> {
        let (stream, post_path) = match t.kind {
            Kind::Sse => {
                let mut stream = SseStream::open(&t.addr, &t.path)?;
                let endpoint = loop {
                    let ev = stream.next_event()?;
                    if ev.name == "endpoint" {
                        break ev.data;
                    }
                };
                let endpoint = match endpoint.find("://") {
                    Some(i) => endpoint[i + 3..]
                        .find('/')
                        .map(|j| endpoint[i + 3 + j..].to_string())
                        .unwrap_or_default(),
                    None => endpoint,
                };
                (Some(stream), endpoint)
            }
            Kind::Http => (None, t.path.clone()),
        };
        let mut s = Session {
            kind: t.kind,
            post: Conn::connect(&t.addr)?,
            stream,
            post_path,
            session_id: None,
            next_id: 0,
            list_changed: 0,
        };
        let version = if t.kind == Kind::Sse { "2024-11-05" } else { "2025-06-18" };
        let init = format!(
            r#"{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"mcpport-loadgen","version":"1"}}}}"#
        );
        let answer = s.call("initialize", &init)?;
        if answer.error {
            return Err(io_err(format!("initialize failed: {}", answer.text)));
        }
        s.post_message(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        Ok(s)
    }

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
    pub fn call(&mut self, method: &str, params: &str) -> io::Result<Answer> {
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
                        } else if ev.data.contains("list_changed") {
                            self.list_changed += 1;
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

    /// Calls `tool` with `{"text": text}` and checks that the answer holds `expect`: `None` when
    /// right, else what was wrong.
    pub fn call_checked(&mut self, tool: &str, text: &str, expect: &str) -> Option<String> {
        let params =
            format!(r#"{{"name":{},"arguments":{{"text":{}}}}}"#, json_string(tool), json_string(text));
        match self.call("tools/call", &params) {
            Ok(a) if a.error => Some(format!("error answer: {}", a.text)),
            Ok(a) if !a.text.contains(expect) || a.text.contains("\"isError\":true") => {
                Some(format!("unexpected answer (wanted {expect:?}): {}", a.text))
            }
            Ok(_) => None,
            Err(e) => Some(format!("call failed: {e}")),
        }
    }

    /// Counts the tools of the aggregated `tools/list`, following `nextCursor` (at most `pages`).
    pub fn count_tools(&mut self, pages: usize) -> io::Result<usize> {
        let mut n = 0;
        let mut cursor: Option<String> = None;
        for _ in 0..pages {
            let params = match &cursor {
                Some(c) => format!(r#"{{"cursor":{c}}}"#),
                None => "{}".into(),
            };
            let a = self.call("tools/list", &params)?;
            let m = members(&a.text);
            let result = m.iter().find(|(k, _)| *k == "\"result\"").map(|(_, v)| *v).unwrap_or("{}");
            let rm = members(result);
            let tools = rm.iter().find(|(k, _)| *k == "\"tools\"").map(|(_, v)| *v).unwrap_or("[]");
            n += tools.matches("\"inputSchema\"").count();
            cursor = rm.iter().find(|(k, _)| *k == "\"nextCursor\"").map(|(_, v)| v.to_string());
            if cursor.is_none() {
                return Ok(n);
            }
        }
        Err(io_err(format!("tools/list: more than {pages} pages")))
    }

    pub fn into_stream(self) -> Option<SseStream> {
        self.stream
    }

    pub fn close(mut self) {
        if let (Kind::Http, Some(sid)) = (self.kind, self.session_id.clone()) {
            let path = self.post_path.clone();
            let _ = self.post.request("DELETE", &path, &[("Mcp-Session-Id", &sid)], b"");
        }
    }
}
