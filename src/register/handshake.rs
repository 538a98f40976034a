//! The client side of the WebSocket opening handshake (RFC 6455 §4.1), ours rather than the
//! WebSocket library's: the gateway URL is parsed, the upgrade request written with the
//! `--header`s (checked, so none can smuggle a line break), the response head read within a size
//! limit, and `Sec-WebSocket-Accept` checked. The library's own handshake would bring a general
//! HTTP crate into the router's binary for these few dozen lines.

use std::io::Read;

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

use crate::http::client::Url;
use crate::http::upgrade::accept_key;
use crate::http::Transport;

/// The gateway URL, split for dialing as an HTTP URL is (`secure` for `wss://`).
pub(crate) type Target = Url;

/// Parses `--gateway-url`: `ws://host[:port]/path` or `wss://…`, IPv6 addresses in brackets.
pub(crate) fn parse_target(url: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("bad --gateway-url {url:?}: {why}");
    let http = match url.split_once("://") {
        Some(("ws", rest)) => format!("http://{rest}"),
        Some(("wss", rest)) => format!("https://{rest}"),
        _ => return Err(bad("it must start with ws:// or wss://")),
    };
    // The HTTP parser's own complaint, without its quoting of the rewritten URL.
    Url::parse(&http).map_err(|e| bad(e.rsplit_once(": ").map_or(e.as_str(), |(_, why)| why)))
}

/// Checks a `--header` for the upgrade request: a token for a name, and a value without line
/// breaks or other control characters.
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("bad header name {name:?}"));
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(format!("bad value for header {name}: no line breaks or control characters"));
    }
    Ok(())
}

/// The longest response head accepted from the gateway.
const MAX_HEAD: usize = 16 * 1024;
/// How much of a refusal's body is shown.
const MAX_SHOWN: usize = 2048;

/// Sends the upgrade request on `stream` and reads the answer; on 101 with the right accept key,
/// the stream becomes a client WebSocket.
/// Why dialing the gateway failed: worth trying again (the gateway is down, busy, or refused
/// this edge's token for now), or a mistake in the command line that no retry mends.
#[derive(Debug)]
pub(crate) enum DialError {
    Again(String),
    Mistake(String),
}

impl From<String> for DialError {
    fn from(why: String) -> DialError {
        DialError::Again(why)
    }
}

impl From<&str> for DialError {
    fn from(why: &str) -> DialError {
        DialError::Again(why.into())
    }
}

/// The path edges register at, on mcpport gateways and the original alike.
pub(crate) const REGISTER_PATH: &str = "/mcp/register";

/// A refused upgrade at a path that is not the register endpoint (404, 405, 406: an HTTP server
/// with nothing to upgrade there, the gateway's status page at `/`) is a wrong `--gateway-url`:
/// the error names the URL to use. Elsewhere a refusal may pass (a proxy starting, a token
/// being rolled out), so it is tried again.
fn refused(code: u16, shown: &str, target: &Target) -> DialError {
    let why = format!("the gateway refused the WebSocket upgrade: HTTP {code} {shown}");
    if !matches!(code, 404..=406) || target.path.trim_end_matches('/').ends_with(REGISTER_PATH) {
        return DialError::Again(why);
    }
    let scheme = if target.secure { "wss" } else { "ws" };
    // A prefix a reverse proxy adds is kept; a client endpoint named instead is not.
    let path = target.path.split('?').next().unwrap_or("/").trim_end_matches('/');
    let base = ["/mcp", "/sse"].iter().find_map(|e| path.strip_suffix(e)).unwrap_or(path);
    DialError::Mistake(format!(
        "{why}: {path:?} is not where edges register; use --gateway-url {scheme}://{}{base}{REGISTER_PATH}",
        target.authority(),
        path = target.path,
    ))
}

pub(crate) fn upgrade<S: Transport>(
    mut stream: S,
    target: &Target,
    headers: &[(String, String)],
    config: WebSocketConfig,
) -> Result<WebSocket<S>, DialError> {
    let mut nonce = [0u8; 16];
    crate::sys::random_bytes(&mut nonce);
    let key = crate::codec::base64(&nonce);
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.path,
        target.authority()
    );
    for (name, value) in headers {
        check_header(name, value)?;
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("sending the upgrade: {e}"))?;
    let (head, rest) = read_head(&mut stream, target)?;
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    let parsed = response
        .parse(&head)
        .map_err(|e| format!("the gateway's answer is not HTTP ({e}); {}", scheme_hint(target)))?;
    if parsed.is_partial() {
        return Err("the gateway's answer ended inside its head".into());
    }
    let code = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value))
    };
    if code != 101 {
        let shown = String::from_utf8_lossy(&rest[..rest.len().min(MAX_SHOWN)]).trim().to_string();
        return Err(refused(code, &shown, target));
    }
    let upgraded = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection =
        header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if !upgraded || !connection {
        return Err("the gateway answered 101 without upgrading to WebSocket".into());
    }
    if header("sec-websocket-accept").as_deref() != Some(accept_key(&key).as_str()) {
        return Err("the gateway's Sec-WebSocket-Accept does not match our key (a proxy in the way?)".into());
    }
    Ok(WebSocket::from_partially_read(stream, rest, Role::Client, Some(config)))
}

/// Reads up to the end of the response head; returns the head and the bytes after it.
fn read_head<S: Read>(stream: &mut S, target: &Target) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("the gateway's answer has a head over {MAX_HEAD} bytes"));
        }
        match stream.read(&mut chunk) {
            // A TLS gateway spoken to in plain HTTP answers with a TLS alert (0x15) and closes.
            Ok(0) if buf.first() == Some(&0x15) || !buf.is_empty() && !buf.starts_with(b"HTTP/") => {
                return Err(format!(
                    "the gateway answered the WebSocket upgrade with something that is not HTTP and closed \
                     the connection; {}",
                    scheme_hint(target)
                ))
            }
            Ok(0) => {
                return Err(format!(
                    "the gateway closed the connection during the WebSocket upgrade ({})",
                    scheme_hint(target)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the gateway's answer to the upgrade: {e}")),
        }
    }
}

/// What to try when the answer is not HTTP at all: most often the wrong scheme.
fn scheme_hint(target: &Target) -> &'static str {
    if target.secure {
        "is the gateway plain HTTP? then use ws://"
    } else {
        "is the gateway serving TLS? then use wss://"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn urls_are_parsed_with_default_ports_paths_and_ipv6() {
        let t = parse_target("ws://127.0.0.1:8765/mcp/register").unwrap();
        assert_eq!(
            (t.secure, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 8765, "/mcp/register")
        );
        let t = parse_target("wss://gw.example.org").unwrap();
        assert_eq!((t.port, t.path.as_str(), t.authority()), (443, "/", "gw.example.org".to_string()));
        let t = parse_target("ws://[::1]:9/x?y=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str(), t.authority()),
            ("::1", 9, "/x?y=1", "[::1]:9".to_string())
        );
        for bad in
            ["http://x/", "ws://", "ws://h:0/", "ws://h:70000/", "ws://u:p@h/", "ws://[::1/", "ws://h/a b"]
        {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_cannot_smuggle_lines() {
        assert!(check_header("Authorization", "Bearer x").is_ok());
        assert!(check_header("X-A", "a\r\nEvil: 1").is_err());
        assert!(check_header("Bad Name", "v").is_err());
        assert!(check_header("", "v").is_err());
    }

    #[test]
    fn a_refusal_is_reported_with_its_status_and_body() {
        struct Canned(std::io::Cursor<Vec<u8>>, Vec<u8>);
        impl Read for Canned {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(b)
            }
        }
        impl Write for Canned {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let answer = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nwrong token!".to_vec();
        let mut s = Canned(std::io::Cursor::new(answer), Vec::new());
        let target = parse_target("ws://127.0.0.1:1/mcp/register").unwrap();
        let (head, rest) = read_head(&mut s, &target).unwrap();
        assert!(head.ends_with(b"\r\n\r\n") && rest == b"wrong token!");
    }
}
