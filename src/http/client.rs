//! A small blocking HTTP/1.1 client for the few requests the gateway makes itself: an
//! authorization server's metadata and keys, and a client's metadata document. One request per
//! connection (`Connection: close`), TLS through rustls with the Web PKI roots, and every part
//! bounded: one deadline for connecting, the handshake, the request and the whole response; a
//! head of at most `MAX_HEAD` bytes and a body of at most the caller's `max_body`. Redirects
//! are not followed: a metadata URL that moved is a misconfiguration to report, and following
//! redirects is how a fetch gets turned toward addresses nobody named.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::Value;

use super::body::chunk_size;

/// The longest response head read.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// An `http://` or `https://` URL, split for dialing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Url {
    pub secure: bool,
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

impl Url {
    /// Parses `http[s]://host[:port][/path][?query]`; no user information, no fragment.
    pub(crate) fn parse(url: &str) -> Result<Url, String> {
        let bad = |why: &str| format!("bad URL {:?}: {why}", url.chars().take(200).collect::<String>());
        let (secure, rest) = match url.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (true, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (false, rest),
            _ => return Err(bad("it must start with http:// or https://")),
        };
        if url.contains('#') {
            return Err(bad("a fragment has no place here"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path };
        if authority.contains('@') {
            return Err(bad("user information in a URL is not supported"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("an IPv6 address needs its ]"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let clean = |s: &str| !s.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
        if host.is_empty() || !clean(host) || !clean(&path) {
            return Err(bad("no host, or spaces or control characters"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("bad port"))?,
            None if secure => 443,
            None => 80,
        };
        Ok(Url { secure, host: host.to_ascii_lowercase(), port, path })
    }

    /// Whether the host is a loopback name or address (where plain `http://` is allowed).
    pub(crate) fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self.host.ends_with(".localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `host[:port]` as a `Host` header says it (the port only when not the scheme's default).
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.secure { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One request to make.
pub(crate) struct Fetch<'a> {
    pub method: &'a str,
    pub url: &'a Url,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// For the whole exchange, from the first connection attempt to the body's last byte.
    pub timeout: Duration,
    pub max_body: usize,
    pub tls: &'a Arc<ClientConfig>,
    /// Connect only to public addresses (not loopback, private, link-local, shared or
    /// unspecified ones): for URLs a peer chose, checked on the very addresses dialed, so a
    /// name that resolves to an inside address is refused however it resolves.
    pub public_only: bool,
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Makes one request and reads the whole response, within `fetch.timeout`.
pub(crate) fn fetch(fetch: &Fetch<'_>) -> Result<Reply, String> {
    let deadline = Instant::now() + fetch.timeout;
    let url = fetch.url;
    let sock = dial(url, deadline, fetch.public_only)?;
    let request = request_bytes(fetch)?;
    let raw = if url.secure {
        let mut tls = crate::tls::connect(fetch.tls.clone(), &url.host, sock)
            .map_err(|e| format!("TLS with {}: {e}", url.host))?;
        exchange(&mut tls, &request, deadline, fetch.max_body)?
    } else {
        let mut sock = sock;
        exchange(&mut sock, &request, deadline, fetch.max_body)?
    };
    parse_reply(&raw, fetch.max_body)
}

/// GETs a JSON document: 200 and JSON, or why not.
pub(crate) fn get_json(
    url: &Url,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
    max_body: usize,
) -> Result<Value, String> {
    let headers = [("Accept", "application/json")];
    let get = Fetch {
        method: "GET",
        url,
        headers: &headers,
        body: b"",
        timeout,
        max_body,
        tls,
        public_only: false,
    };
    let reply = fetch(&get)?;
    if reply.status != 200 {
        return Err(format!("HTTP {}", reply.status));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("not JSON: {e}"))
}

/// Connects to the first address of the host that answers, within the deadline.
fn dial(url: &Url, deadline: Instant, public_only: bool) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .take(8)
        .collect();
    let mut last = format!("{} has no address", url.host);
    for addr in addrs {
        if public_only && !is_public(addr.ip()) {
            last = format!("{} resolves to {}, which is not a public address", url.host, addr.ip());
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("connecting to {}: timed out", url.authority()));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                return Ok(sock);
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Whether an address is on the public Internet.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

fn request_bytes(fetch: &Fetch<'_>) -> Result<Vec<u8>, String> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mcpport/{}\r\nConnection: close\r\n",
        fetch.method,
        fetch.url.path,
        fetch.url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in fetch.headers {
        if [name, value].iter().any(|s| s.bytes().any(|b| b == b'\r' || b == b'\n')) {
            return Err(format!("header {name:?} has a line break"));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !fetch.body.is_empty() || fetch.method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", fetch.body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(fetch.body);
    Ok(bytes)
}

/// A stream whose socket deadlines can be set: plain TCP, or TLS over it.
trait Timed: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Timed for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Timed for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// Writes the request and reads the response until the server closes, the declared length is
/// in, or the bounds are passed.
fn exchange(
    stream: &mut impl Timed,
    request: &[u8],
    deadline: Instant,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    let set = |s: &TcpStream| -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        s.set_read_timeout(Some(left))
            .and_then(|()| s.set_write_timeout(Some(left)))
            .map_err(|e| e.to_string())
    };
    set(stream.socket())?;
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending the request: {e}"))?;
    // The head, the body and chunked framing; more is refused, not truncated.
    let limit = MAX_HEAD + max_body + super::body::FRAMING_ALLOWANCE.min(max_body + 1024);
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        set(stream.socket())?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A server that closes without close_notify has still sent what it sent.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("timed out reading the response".into())
            }
            Err(e) => return Err(format!("reading the response: {e}")),
        };
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > limit {
            return Err(format!("the response is over {max_body} bytes"));
        }
        if complete_by_length(&raw) {
            return Ok(raw);
        }
    }
}

/// Whether a response with `Content-Length` has all its bytes (no need to wait for the close).
fn complete_by_length(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = resp.parse(raw) else { return false };
    let length = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
    let chunked = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    match length.and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok()) {
        Some(n) if !chunked => raw.len() >= head_len.saturating_add(n),
        _ => false,
    }
}

/// Splits a whole response into status, headers and body (de-chunked).
fn parse_reply(raw: &[u8], max_body: usize) -> Result<Reply, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err("the response head is too long".into()),
        Ok(httparse::Status::Partial) => return Err("the connection closed before the response head".into()),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    let reply = Reply { status, headers, body: Vec::new() };
    let rest = &raw[head_len..];
    let chunked = reply.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest, max_body)?
    } else if let Some(n) = reply.header("content-length") {
        let n: usize = n.parse().map_err(|_| "a bad Content-Length".to_string())?;
        if n > max_body {
            return Err(format!("the response is over {max_body} bytes"));
        }
        rest.get(..n).ok_or("the connection closed before the whole body")?.to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > max_body {
        return Err(format!("the response is over {max_body} bytes"));
    }
    Ok(Reply { body, ..reply })
}

/// Decodes a chunked body held whole in memory (trailers ignored).
fn dechunk(mut rest: &[u8], max_body: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("a chunked body cut short")?;
        let size = chunk_size(&rest[..line_end]).map_err(|_| "a bad chunk size".to_string())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let size = usize::try_from(size).ok().filter(|s| body.len().saturating_add(*s) <= max_body);
        let size = size.ok_or_else(|| format!("the response is over {max_body} bytes"))?;
        let data = rest.get(..size).ok_or("a chunked body cut short")?;
        body.extend_from_slice(data);
        rest = rest.get(size..).and_then(|r| r.strip_prefix(b"\r\n")).ok_or("a chunk without its CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn inside_addresses_are_not_public() {
        let inside = ["127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "169.254.169.254", "100.64.0.1"];
        for ip in inside.iter().chain(&["0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1"]) {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_split_for_dialing() {
        let u = Url::parse("https://AS.example/realms/x?a=1").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port, u.path.as_str()),
            (true, "as.example", 443, "/realms/x?a=1")
        );
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str(), u.is_loopback()), ("::1", 8080, "/", true));
        assert_eq!(u.authority(), "[::1]:8080");
        for bad in ["ftp://x", "https://", "https://u:p@x/", "https://x:0/", "https://x/#f", "https://x/ y"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    /// Serves one connection with `answer` and returns what the client sent.
    fn one_answer(answer: &'static [u8]) -> (Url, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/keys", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap();
            s.write_all(answer).unwrap();
            got.truncate(n);
            got
        });
        (url, server)
    }

    fn get(url: &Url, max_body: usize) -> Result<Reply, String> {
        let tls = crate::tls::client_config(&crate::tls::ClientOptions::default()).unwrap();
        let f = Fetch {
            method: "GET",
            url,
            headers: &[],
            body: b"",
            timeout: Duration::from_secs(5),
            max_body,
            tls: &tls,
            public_only: false,
        };
        fetch(&f)
    }

    #[test]
    fn lengths_and_chunks_are_read_and_bounded() {
        let (url, server) = one_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let reply = get(&url, 100).unwrap();
        assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(sent.starts_with("GET /keys HTTP/1.1\r\nHost: 127.0.0.1:"), "{sent}");
        let (url, _s) = one_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(get(&url, 100).unwrap().body, b"abcde");
        let (url, _s) = one_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert!(get(&url, 4).unwrap_err().contains("over 4 bytes"));
        let (url, _s) = one_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\nhello");
        assert!(get(&url, 100).unwrap_err().contains("over 100 bytes"));
        let (url, _s) =
            one_answer(b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(get(&url, 100).unwrap().status, 302, "a redirect is reported, not followed");
    }
}
