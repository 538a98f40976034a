//! One HTTP/1.1 exchange with the upstream, strictly bounded: connecting (`dial`), a connection
//! whose reads and writes keep to a deadline and an idle time (`Paced`), the response head
//! (`read_head`, at most `MAX_HEAD` bytes and `MAX_INTERIM` interim heads) and the body, framed
//! by length, chunks or the close (`Body`); how an exchange fails (`Fail`), and the helpers that
//! bound what the upstream's words may put in a log line (`excerpt`, `visible`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use crate::http::body::{chunk_size, MAX_CHUNK_LINE};
use crate::http::client::{Url, MAX_HEAD};

/// Each write of a request.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of an error status's body read (for the JSON-RPC error in it, or an excerpt).
const ERROR_BODY_MAX: u64 = 64 * 1024;
/// Characters of the upstream's text quoted in logs and error answers.
const EXCERPT_CHARS: usize = 200;
/// Interim (1xx) response heads skipped before the final one.
const MAX_INTERIM: usize = 8;
/// Header fields in a response head.
const MAX_HEADERS: usize = 64;

/// How an exchange with the upstream failed.
#[derive(Debug)]
pub(super) enum Fail {
    /// The upstream is unusable or lies: the adapter ends. The text completes "the upstream at
    /// URL …".
    Fatal(String),
    /// This exchange failed, the upstream may serve others: the request gets an error answer
    /// (the text completes "the upstream MCP server …").
    Call(String),
    /// We are stopping, the call was cancelled, or register closed our output: nothing to say.
    Gone,
}

/// Connects to the first address of the URL's host that answers, within `within` in all.
pub(super) fn dial(url: &Url, within: Duration) -> Result<TcpStream, Fail> {
    let deadline = Instant::now() + within;
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| Fail::Fatal(format!("cannot be resolved ({e})")))?
        .take(8)
        .collect();
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                return Ok(sock);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Fail::Fatal(match last {
        None => "has no address to connect to".into(),
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => "refused the connection".into(),
        Some(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
            format!("did not accept a connection within {} s", within.as_secs())
        }
        Some(e) => format!("cannot be reached ({e})"),
    }))
}

/// Plain TCP, or TLS over it.
pub(super) enum Wire {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Wire {
    fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(sock) => sock,
            Wire::Tls(tls) => tls.get_ref(),
        }
    }
}

/// A connection whose every read is bounded by the current phase's deadline and idle time, and
/// every write by that deadline too (and `WRITE_TIMEOUT` each).
pub(super) struct Paced {
    pub(super) wire: Wire,
    pub(super) deadline: Option<Instant>,
    pub(super) idle: Option<Duration>,
    /// What a timeout says (it completes "the upstream at URL …").
    pub(super) silence: String,
}

impl Paced {
    pub(super) fn new(wire: Wire) -> Paced {
        Paced { wire, deadline: None, idle: None, silence: String::new() }
    }

    pub(super) fn pace(&mut self, deadline: Option<Instant>, idle: Option<Duration>, silence: String) {
        self.deadline = deadline;
        self.idle = idle;
        self.silence = silence;
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self.silence.clone())
    }

    /// The read timeout now: the sooner of the idle time and the deadline (`None`: none).
    fn timeout(&self) -> io::Result<Option<Duration>> {
        let left = match self.deadline {
            Some(deadline) => match deadline.saturating_duration_since(Instant::now()) {
                d if d.is_zero() => return Err(self.timed_out()),
                d => Some(d),
            },
            None => None,
        };
        let timeout = match (left, self.idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(timeout.map(|t| t.max(Duration::from_millis(1))))
    }
}

impl Paced {
    /// A socket timeout (the socket's own, set from the deadline) as the deadline's error.
    fn paced(&self, done: io::Result<usize>) -> io::Result<usize> {
        match done {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(self.timed_out())
            }
            other => other,
        }
    }
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.timeout()?;
        self.wire.socket().set_read_timeout(timeout)?;
        let got = match &mut self.wire {
            Wire::Plain(sock) => sock.read(buf),
            Wire::Tls(tls) => tls.read(buf),
        };
        match got {
            // A TLS peer that closes without close_notify: the end, as with plain TCP.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => self.paced(other),
        }
    }
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            self.wire.socket().set_write_timeout(Some(left.min(WRITE_TIMEOUT)))?;
        }
        let put = match &mut self.wire {
            Wire::Plain(sock) => sock.write(buf),
            Wire::Tls(tls) => tls.write(buf),
        };
        self.paced(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.wire {
            Wire::Plain(sock) => sock.flush(),
            Wire::Tls(tls) => tls.flush(),
        }
    }
}

/// A response head.
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
}

impl Head {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The media type of `Content-Type`, lower case, without parameters ("" without one).
    pub(super) fn media_type(&self) -> String {
        let value = self.header("content-type").unwrap_or("");
        value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
    }

    pub(super) fn is_event_stream(&self) -> bool {
        (200..300).contains(&self.status) && self.media_type() == "text/event-stream"
    }
}

/// Reads the final response head (skipping `MAX_INTERIM` interim ones at most).
pub(super) fn read_head(conn: &mut dyn BufRead) -> Result<Head, Fail> {
    for _ in 0..MAX_INTERIM {
        let head = parse_head(&read_head_bytes(conn)?)?;
        if !(100..200).contains(&head.status) || head.status == 101 {
            return Ok(head);
        }
    }
    Err(Fail::Fatal(format!("sent over {MAX_INTERIM} interim (1xx) responses")))
}

/// The lines of one head, through the empty one, at most `MAX_HEAD` bytes.
fn read_head_bytes(conn: &mut dyn BufRead) -> Result<Vec<u8>, Fail> {
    let too_long = || Fail::Fatal(format!("sent a response head over {}", size(MAX_HEAD)));
    let mut raw = Vec::new();
    let mut line = Vec::new();
    loop {
        match read_line(conn, &mut line, MAX_HEAD.saturating_sub(raw.len())).map_err(io_fail)? {
            Line::Complete => {}
            Line::TooLong => return Err(too_long()),
            Line::End if raw.is_empty() => {
                return Err(Fail::Call("closed the connection without answering".into()))
            }
            Line::End => return Err(Fail::Call("closed the connection in the middle of its answer".into())),
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        raw.extend_from_slice(&line);
        raw.extend_from_slice(b"\r\n");
        if raw.len() > MAX_HEAD {
            return Err(too_long());
        }
        if line.is_empty() {
            return Ok(raw);
        }
    }
}

fn parse_head(raw: &[u8]) -> Result<Head, Fail> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Fail::Fatal("sent an incomplete response head".into())),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Fail::Fatal(format!("sent over {MAX_HEADERS} header fields")));
        }
        Err(e) => return Err(Fail::Fatal(format!("answered with something that is not HTTP/1.1 ({e})"))),
    }
    let headers = response
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    Ok(Head { status: response.code.unwrap_or(0), headers })
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Framing {
    /// `Content-Length` (0 for responses that have no body).
    Length,
    Chunked,
    /// At the connection's end.
    Close,
}

/// A response body as a byte stream: its framing is decoded as it is read, strictly (RFC 9112
/// §6.3 and §7.1), and nothing past it is read.
pub(super) struct Body {
    pub(super) conn: BufReader<Paced>,
    pub(super) framing: Framing,
    /// Bytes left in the body (`Length`), in the current chunk (`Chunked`), or `u64::MAX`
    /// (`Close`, until the end).
    pub(super) left: u64,
    /// Chunked: the current chunk's data is read and its CRLF is due.
    crlf_due: bool,
    /// Chunked: the last chunk and the trailers were read.
    pub(super) done: bool,
    /// Body bytes handed out so far.
    pub(super) consumed: u64,
}

impl Body {
    pub(super) fn new(conn: BufReader<Paced>, head: &Head, head_request: bool) -> Result<Body, Fail> {
        let bodiless = head_request || matches!(head.status, 100..=199 | 204 | 304);
        let codings = head.all("transfer-encoding");
        let lengths = head.all("content-length");
        let (framing, left) = match (codings.as_slice(), lengths.as_slice()) {
            _ if bodiless => (Framing::Length, 0),
            ([], []) => (Framing::Close, u64::MAX),
            ([], lengths) => (Framing::Length, content_length(lengths)?),
            ([coding], []) if coding.eq_ignore_ascii_case("chunked") => (Framing::Chunked, 0),
            (_, []) => {
                return Err(Fail::Fatal(
                    "sent a Transfer-Encoding other than chunked; only chunked is supported".into(),
                ));
            }
            _ => return Err(Fail::Fatal("sent both Content-Length and Transfer-Encoding".into())),
        };
        Ok(Body { conn, framing, left, crlf_due: false, done: false, consumed: 0 })
    }

    /// Reads the next chunk's size line (after the previous chunk's CRLF); at the last chunk,
    /// skips the trailers and marks the body done.
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        if self.crlf_due {
            self.chunk_line(&mut line)?;
            if !line.is_empty() {
                return Err(lie("sent a chunk longer than its size"));
            }
            self.crlf_due = false;
        }
        self.chunk_line(&mut line)?;
        let size =
            chunk_size(&line).map_err(|_| lie(format!("sent a bad chunk size {:?}", excerpt(&line))))?;
        if size == 0 {
            self.skip_trailers()?;
            self.done = true;
        } else {
            self.left = size;
            self.crlf_due = true;
        }
        Ok(())
    }

    /// One CRLF-terminated line of chunk framing, at most `MAX_CHUNK_LINE` bytes.
    fn chunk_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        match read_line(&mut self.conn, line, MAX_CHUNK_LINE + 1)? {
            Line::Complete if line.last() == Some(&b'\r') => {
                line.pop();
                Ok(())
            }
            Line::Complete => Err(lie("sent a chunk line without its CR")),
            Line::TooLong => Err(lie(format!("sent a chunk line over {MAX_CHUNK_LINE} bytes"))),
            Line::End => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    /// Trailer fields: at most `MAX_HEAD` bytes, dropped. A close right after the last chunk
    /// is accepted.
    fn skip_trailers(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        let mut total = 0;
        loop {
            match read_line(&mut self.conn, &mut line, MAX_HEAD)? {
                Line::Complete => {}
                Line::TooLong => return Err(lie(format!("sent trailer fields over {}", size(MAX_HEAD)))),
                Line::End => return Ok(()),
            }
            total += line.len() + 1;
            if line.is_empty() || line == b"\r" {
                return Ok(());
            }
            if total > MAX_HEAD {
                return Err(lie(format!("sent trailer fields over {}", size(MAX_HEAD))));
            }
        }
    }
}

impl BufRead for Body {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.left == 0 {
            if self.framing != Framing::Chunked || self.done {
                return Ok(&[]);
            }
            self.next_chunk()?;
            if self.done {
                return Ok(&[]);
            }
        }
        if self.conn.fill_buf()?.is_empty() {
            if self.framing == Framing::Close {
                self.left = 0;
                return Ok(&[]);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let buffered = self.conn.buffer();
        let n = buffered.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        Ok(&buffered[..n])
    }

    fn consume(&mut self, n: usize) {
        self.conn.consume(n);
        if self.framing != Framing::Close {
            self.left -= n as u64;
        }
        self.consumed += n as u64;
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buffered = self.fill_buf()?;
        let n = buffered.len().min(out.len());
        out[..n].copy_from_slice(&buffered[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// `Content-Length`: digits only, every copy the same.
fn content_length(values: &[&str]) -> Result<u64, Fail> {
    let bad = || Fail::Fatal("sent a bad Content-Length".into());
    let mut length = None;
    for value in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = value.parse().map_err(|_| bad())?;
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    length.ok_or_else(bad)
}

/// An error status's body, at most `ERROR_BODY_MAX` bytes (what could be read).
pub(super) fn read_error_body(body: &mut Body) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = body.take(ERROR_BODY_MAX).read_to_end(&mut bytes);
    bytes
}

/// How `read_line` ended.
#[derive(Debug, PartialEq)]
pub(super) enum Line {
    Complete,
    /// Over the bound: what was read of it is consumed, the rest is not.
    TooLong,
    /// The end of the input (a line without its LF is dropped).
    End,
}

/// Reads one line (without its LF) into `out`, at most `max` bytes.
pub(super) fn read_line(r: &mut dyn BufRead, out: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    out.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (take, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if out.len() + take > max {
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(found));
        if found {
            return Ok(Line::Complete);
        }
    }
}

/// Skips the rest of a line; whether its LF came (false: the input ended).
pub(super) fn skip_line(r: &mut dyn BufRead) -> io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// An I/O failure while reading: a lie (`InvalidData`) ends the adapter; a timeout or a broken
/// connection fails the exchange.
pub(super) fn io_fail(e: io::Error) -> Fail {
    match e.kind() {
        io::ErrorKind::InvalidData => Fail::Fatal(e.to_string()),
        io::ErrorKind::TimedOut => Fail::Call(e.to_string()),
        io::ErrorKind::UnexpectedEof => {
            Fail::Call("closed the connection in the middle of its answer".into())
        }
        _ => Fail::Call(format!("broke the connection ({e})")),
    }
}

/// The upstream broke the rules: `why` completes "the upstream at URL …".
pub(super) fn lie(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Whether `s` is 1 to `max` visible ASCII characters (what a session id may hold, and what may
/// go back in a header as it is).
pub(super) fn visible(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The start of what the upstream said, printable, for a log line or an error message.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_CHARS * 4)]);
    let text: String =
        text.chars().take(EXCERPT_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    text.trim().to_string()
}

/// A byte count for people: `16 MiB`, `64 KiB`, `1000 bytes`.
pub(super) fn size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(10);

    /// A loopback connection whose far end sends `raw` and closes: its head and body.
    fn response(raw: &'static [u8]) -> Result<(Head, Body), Fail> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let _ = sock.write_all(raw);
        });
        let mut conn = BufReader::new(Paced::new(Wire::Plain(TcpStream::connect(addr).unwrap())));
        conn.get_mut().pace(Some(Instant::now() + WAIT), None, "silent".into());
        let head = read_head(&mut conn)?;
        let body = Body::new(conn, &head, false)?;
        Ok((head, body))
    }

    fn body_of(raw: &'static [u8]) -> io::Result<Vec<u8>> {
        let (_, mut body) = response(raw).map_err(|f| io::Error::other(format!("{f:?}")))?;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    #[test]
    fn bodies_are_framed_strictly() {
        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(body_of(chunked).unwrap(), b"abcde", "an interim head is skipped, trailers dropped");
        assert_eq!(body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello").unwrap(), b"he");
        assert_eq!(body_of(b"HTTP/1.1 200 OK\r\n\r\nuntil the close").unwrap(), b"until the close");
        assert_eq!(body_of(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello").unwrap(), b"");
        let long_chunk =
            body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n");
        assert_eq!(long_chunk.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let bad_size = body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n");
        assert_eq!(bad_size.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let cut = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert_eq!(cut.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        for (raw, why) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "both"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "only chunked"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "bad Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", "bad Content-Length"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
        ] {
            match response(raw) {
                Err(Fail::Fatal(got)) => assert!(got.contains(why), "{got}"),
                other => panic!("{why}: {:?}", other.map(|(h, _)| h.status)),
            }
        }
    }

    #[test]
    fn a_response_head_is_bounded() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        while raw.len() <= MAX_HEAD {
            raw.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        match response(Vec::leak(raw)) {
            Err(Fail::Fatal(why)) => {
                assert!(why.contains("head over 16 KiB") || why.contains("header fields"), "{why}")
            }
            other => panic!("{:?}", other.map(|(h, _)| h.status)),
        }
    }

    /// A deadline (a response's or a notification's whole exchange) bounds the writes of the
    /// request and the reads of the answer, whatever the idle time allowed.
    #[test]
    fn a_deadline_bounds_writes_and_reads_whatever_the_idle_time() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3)); // reads nothing, says nothing
            drop(sock);
        });
        let mut wire = Paced::new(Wire::Plain(TcpStream::connect(addr).unwrap()));
        let soon = || Some(Instant::now() + Duration::from_millis(300));
        wire.pace(soon(), None, "late".into());
        let asked = Instant::now();
        let err = wire.write_all(&vec![0u8; 64 << 20]).unwrap_err();
        assert_eq!((err.kind(), err.to_string().as_str()), (io::ErrorKind::TimedOut, "late"));
        assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
        wire.pace(soon(), Some(Duration::from_secs(60)), "late".into());
        let asked = Instant::now();
        assert_eq!(wire.read(&mut [0u8; 16]).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
        held.join().unwrap();
    }
}
