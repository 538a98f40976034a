//! Our HTTP/1.1 server side over any `Read + Write` stream: requests read with hard limits and
//! deadlines, keep-alive, and the pieces other modules build on (responses, SSE, WebSocket upgrade).
//!
//! Why our own and not a crate: DESIGN.md §2. What this file owns is reading a request in two
//! steps: its head (the idle wait for the first byte, a deadline for the whole header block,
//! caps on header bytes and count), then, only once the caller has checked the route and the
//! credential, its body (`body.rs`: strict framing, checked sizes, the global byte budget).
//! Every failure is a status a client can act on, never a hang or an unbounded buffer.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod response;
pub(crate) mod sse;
pub(crate) mod upgrade;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub(crate) use body::{reserve, Body, Budget, Framing};
pub(crate) use response::Response;

/// A byte stream that also exposes its TCP socket (for deadlines, `poll` and addresses).
/// Plain TCP now; TLS streams implement it too.
pub(crate) trait Transport: Read + Write + Send {
    fn socket(&self) -> &TcpStream;

    /// The SHA-256 of the client certificate the peer presented (mTLS), if any.
    fn peer_identity(&self) -> Option<[u8; 32]> {
        None
    }

    /// Whether the stream may hold input its socket no longer shows (TLS: decrypted records),
    /// so that waiting for the socket to be readable could miss it.
    fn holds_input(&self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Transport for Box<dyn Transport> {
    fn socket(&self) -> &TcpStream {
        (**self).socket()
    }

    fn peer_identity(&self) -> Option<[u8; 32]> {
        (**self).peer_identity()
    }

    fn holds_input(&self) -> bool {
        (**self).holds_input()
    }
}

/// A stream whose reads can be given a timeout: what reading requests needs (a seam for tests,
/// which feed the reader from memory).
pub(crate) trait Timed: Read + Write {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Waits up to `timeout` for input without reading it: `Ok(false)` when none came. A stream
    /// that cannot tell says `Ok(true)` at once, and the caller's read does the waiting.
    fn wait_readable(&self, _timeout: Duration) -> io::Result<bool> {
        Ok(true)
    }
}

impl<T: Transport + ?Sized> Timed for T {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        if self.holds_input() {
            return Ok(true);
        }
        crate::sys::wait_readable(self.socket().as_raw_fd(), timeout)
    }
}

/// Limits that protect the gateway from slow, huge or endless requests.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Bytes of the request line and headers together (431 past it).
    pub max_header_bytes: usize,
    /// Number of header fields (431 past it).
    pub max_headers: usize,
    /// Bytes of a request body (413 past it).
    pub max_body: usize,
    /// Time from a request's first byte to the end of its headers (408 past it).
    pub header_timeout: Duration,
    /// Time to read a body once the headers are in (408 past it).
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body: 4 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One parsed request with its whole body.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    /// The path, percent-encoding kept, without the query.
    pub path: String,
    /// The raw query string (after `?`), empty when there is none.
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// HTTP/1.0 (false) or 1.1 (true).
    pub http11: bool,
}

impl Request {
    /// A bodiless HTTP/1.1 request, for tests.
    #[cfg(test)]
    pub(crate) fn with(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            http11: true,
        }
    }

    /// The first value of a header, by case-insensitive name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (e.g. `Connection`) lists `token`, case-insensitively.
    pub(crate) fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A query parameter's percent-decoded value.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// Whether the client wants the connection kept open after this request.
    pub(crate) fn keep_alive(&self) -> bool {
        if self.http11 {
            !self.header_has_token("connection", "close")
        } else {
            self.header_has_token("connection", "keep-alive")
        }
    }
}

/// Decodes `%XX` escapes and `+` (as in query strings); invalid escapes stay as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed, or stayed idle past the keep-alive timeout, before sending a byte.
    Closed,
    /// A request the client got wrong: answer with this status and reason, then close.
    Status(u16, String),
    /// The socket failed mid-request.
    Io(io::Error),
}

/// A connection being served: the stream and the bytes read from it but not yet consumed.
pub(crate) struct Conn<S> {
    pub stream: S,
    pub buf: Vec<u8>,
    /// The most bytes this reader has held at once (buffer plus the body being read).
    peak: usize,
}

impl<S: Timed> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Conn { stream, buf: Vec::new(), peak: 0 }
    }

    /// Waits up to the idle timeout for the first bytes of the next request (at once when some
    /// are already buffered). `Closed` when the peer closes or stays idle.
    pub(crate) fn await_request(&mut self, limits: &Limits) -> Result<(), ReadError> {
        if !self.buf.is_empty() {
            return Ok(());
        }
        // An idle connection holds no buffer: the last request's capacity goes back now.
        self.buf = Vec::new();
        // The wait itself is shallow (no read chunk on the stack while idle), then the read.
        let deadline = Instant::now() + limits.idle_timeout;
        let stream = &self.stream;
        let came = crate::thread::wait_resting(
            limits.idle_timeout,
            |t| stream.wait_readable(t),
            |r| matches!(r, Ok(false)),
        );
        let idle = match came {
            Ok(true) => self.fill_upto(limits.max_header_bytes, deadline),
            Ok(false) => Err(io::ErrorKind::TimedOut.into()),
            Err(e) => Err(e),
        };
        match idle {
            Ok(0) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(ReadError::Closed),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// Reads the head of a request whose first byte has arrived: the header deadline, the caps
    /// on header bytes and count, and strict framing. Not a byte of the body is asked for: what
    /// the caller learns here (route, credential, length) decides whether the body is read.
    pub(crate) fn read_head(&mut self, limits: &Limits) -> Result<(Request, Framing), ReadError> {
        let deadline = Instant::now() + limits.header_timeout;
        loop {
            if let Some((head_len, req, framing)) = parse_head(&self.buf, limits)? {
                self.buf.drain(..head_len);
                return Ok((req, framing));
            }
            if self.buf.len() >= limits.max_header_bytes {
                return Err(status(431, "request headers too large"));
            }
            let room = limits.max_header_bytes - self.buf.len();
            if self.fill_upto(room, deadline).map_err(|e| timeout_as_408(e, "headers"))? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    /// Reads a whole request (for the one-shot servers: health, metrics): the idle wait, the
    /// head, and the body within `max_body`.
    pub(crate) fn read_request(&mut self, limits: &Limits) -> Result<(Request, Body), ReadError> {
        self.await_request(limits)?;
        let (req, framing) = self.read_head(limits)?;
        let held = reserve(&Budget::new(limits.max_body), 0)?;
        let body = self.read_body(framing, limits, held)?;
        Ok((req, body))
    }

    /// The most bytes this reader has held at once: its buffer plus the body being read.
    #[cfg(test)]
    pub(crate) fn peak_held(&self) -> usize {
        self.peak
    }

    fn note_held(&mut self, body: usize) {
        self.peak = self.peak.max(self.buf.len().saturating_add(body));
    }

    /// Reads at most `max` bytes (and at most one chunk) into the buffer, waiting at most until
    /// `deadline`.
    fn fill_upto(&mut self, max: usize, deadline: Instant) -> io::Result<usize> {
        // A small chunk: a thread's stack pages, once touched, stay resident for its life, and
        // the buffer grows only by what arrived (heads are small; a long one takes more reads).
        let mut chunk = [0u8; HEAD_CHUNK];
        let n = read_before(&mut self.stream, &mut chunk[..max.clamp(1, HEAD_CHUNK)], deadline)?;
        self.buf.extend_from_slice(&chunk[..n]);
        self.note_held(0);
        Ok(n)
    }
}

/// One read from `stream` into `out`, waiting at most until `deadline`.
fn read_before<S: Timed>(stream: &mut S, out: &mut [u8], deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    loop {
        match stream.read(out) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e),
        }
    }
}

/// Bytes asked of the stream per read of a head (through a stack array).
const HEAD_CHUNK: usize = 2048;

/// Bytes asked of the stream per read of a body (straight into the body's reserved tail).
const BODY_CHUNK: usize = 16 * 1024;

/// Appends at most `want` bytes to `buf` with one `read` into its tail; returns how many.
/// Meant for a `buf` already holding the capacity (the body's exact length is reserved).
fn read_into_tail(
    buf: &mut Vec<u8>,
    want: usize,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + want, 0);
    let got = read(&mut buf[start..]);
    let n = *got.as_ref().unwrap_or(&0);
    buf.truncate(start + n.min(want));
    got
}

impl<S: Transport> Conn<S> {
    /// Closes after an error response without losing it: a close with unread input makes the
    /// kernel send a reset, which can destroy the response before the client reads it. So stop
    /// sending, then read and discard what the client is still sending, for a bounded time and
    /// byte count (nothing is kept: the buffer is cleared every round).
    pub(crate) fn linger_close(mut self) {
        let _ = self.stream.flush();
        let _ = self.stream.socket().shutdown(std::net::Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut discarded = 0;
        while discarded < 256 * 1024 {
            self.buf.clear();
            match self.fill_upto(HEAD_CHUNK, deadline) {
                Ok(n) if n > 0 => discarded += n,
                _ => return,
            }
        }
    }
}

/// Parses the request head if the buffer holds all of it. Returns the head's length, the
/// request (without body) and how to read the body.
pub(crate) fn parse_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(usize, Request, Framing)>, ReadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(status(431, "too many request headers")),
        Err(e) => return Err(status(400, &format!("malformed request: {e}"))),
    };
    if head_len > limits.max_header_bytes {
        return Err(status(431, "request headers too large"));
    }
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
            .collect(),
        http11: parsed.version == Some(1),
    };
    let framing = body::framing(&req, limits)?;
    Ok(Some((head_len, req, framing)))
}

pub(crate) fn status(code: u16, why: &str) -> ReadError {
    ReadError::Status(code, why.to_string())
}

fn timeout_as_408(e: io::Error, what: &str) -> ReadError {
    if e.kind() == io::ErrorKind::TimedOut {
        status(408, &format!("timed out waiting for the request {what}"))
    } else {
        ReadError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(usize, Request, Framing)>, ReadError> {
        parse_head(text.as_bytes(), &Limits::default())
    }

    fn status_of(r: Result<Option<(usize, Request, Framing)>, ReadError>) -> u16 {
        match r {
            Err(ReadError::Status(code, _)) => code,
            other => panic!("expected an error status, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_complete_head() {
        let (len, req, framing) =
            head("POST /messages/?session_id=ab%20c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap()
                .unwrap();
        assert_eq!(len, 74);
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/messages/"));
        assert_eq!(req.query_param("session_id").as_deref(), Some("ab c"));
        assert_eq!(req.header("HOST"), Some("x"));
        assert_eq!(framing, Framing::Length(5));
        assert!(req.keep_alive());
    }

    #[test]
    fn partial_head_waits_for_more() {
        assert!(head("GET / HTTP/1.1\r\nHost:").unwrap().is_none());
    }

    #[test]
    fn bad_heads_get_the_right_status() {
        assert_eq!(status_of(head("GET / HTTP/1.1\r\nBad Header\r\n\r\n")), 400);
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status_of(head(&format!("GET / HTTP/1.1\r\n{many}\r\n"))), 431);
    }

    #[test]
    fn framing_is_strict() {
        let framed = |fields: &str| head(&format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n"));
        let cases: [(&str, u16); 14] = [
            ("Content-Length: x\r\n", 400),
            ("Content-Length: +5\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            ("Content-Length: 5 5\r\n", 400),
            ("Content-Length: 5\r\nContent-Length: 6\r\n", 400),
            ("Content-Length: 5, 6\r\n", 400),
            ("Content-Length: 99999999999999999999999\r\n", 413),
            ("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: chunked, identity\r\n", 400),
            ("Transfer-Encoding: gzip\r\n", 400),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: \r\n", 400),
            ("Transfer-Encoding: ,\r\n", 400),
        ];
        for (fields, code) in cases {
            assert_eq!(status_of(framed(fields)), code, "{fields:?}");
        }
        let ok = |fields: &str| framed(fields).unwrap().unwrap().2;
        assert_eq!(ok("Content-Length: 5\r\nContent-Length: 5\r\n"), Framing::Length(5));
        assert_eq!(ok("Content-Length: 007\r\n"), Framing::Length(7));
        assert_eq!(ok("Transfer-Encoding: Chunked\r\n"), Framing::Chunked);
        assert_eq!(ok(""), Framing::Length(0));
        assert_eq!(status_of(head("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")), 400);
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        let (_, req, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!req.keep_alive());
        let (_, req, _) = head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap().unwrap();
        assert!(!req.keep_alive());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }
}
