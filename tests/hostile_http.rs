//! Hostile HTTP against the real binary, one test per class of issue 10 (HTTP part), each
//! measuring what it claims: gateway RSS and threads from /proc/PID/status, times, statuses.
//!
//! - Memory (1): chunk sizes that overflow, bodies of refused requests, the global body budget.
//! - Lock-outs (7): idle sockets against `--max-connections`, one address against
//!   `--max-connections-per-ip`, idle sockets against `--metrics-listen`.
//! - Framing (8): Content-Length and Transfer-Encoding per RFC 9112, HEAD, unknown and
//!   disallowed methods, and the `Host` check against DNS rebinding.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{http, proc_status, read_response, Gateway, HttpResponse, Sampler, SseClient, Watchdog};

/// A body's worth of a valid `initialize`, so that framing is the only thing wrong.
const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
const MCP_HEADERS: &str = "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n";
const MIB: usize = 1024 * 1024;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn rss_mb(pid: u32) -> u64 {
    proc_status(pid, "VmRSS").unwrap() / 1024
}

/// Reads a response head within `limit`: its status and text, or `None` (timeout or close).
fn read_head(s: &mut TcpStream, limit: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") && raw.len() < 16 * 1024 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).ok()?;
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Writes `head`, then `body_len` bytes of body as fast as the gateway takes them (for at most
/// `limit`), while another thread reads the answer's head. Returns the status (`None`: none
/// came) and how many body bytes went out.
fn send_while_reading(port: u16, head: String, body_len: usize, limit: Duration) -> (Option<u16>, usize) {
    let mut s = connect(port);
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut reader = s.try_clone().unwrap();
    let answer = std::thread::spawn(move || read_head(&mut reader, limit + Duration::from_secs(3)));
    let mut sent = 0;
    if s.write_all(head.as_bytes()).is_ok() {
        let piece = vec![b'x'; 64 * 1024];
        let deadline = Instant::now() + limit;
        while sent < body_len && Instant::now() < deadline {
            match s.write(&piece[..piece.len().min(body_len - sent)]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
    }
    (answer.join().unwrap().map(|(status, _)| status), sent)
}

fn post_head(port: u16, path: &str, framing: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{MCP_HEADERS}{framing}\r\n")
}

#[test]
fn chunk_sizes_that_overflow_get_413_and_memory_stays_flat() {
    let _w = Watchdog::new("overflowing_chunks", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let (pid, port) = (gw.proc.pid(), gw.port);
    let before = rss_mb(pid);
    let sampler = Sampler::start(pid);
    // Three connections, as in the report: `1` then `ffffffffffffffff`, then data as fast as it
    // goes. The sizes' sum wraps to 0 in u64; the limit must still hold.
    let floods: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let head = post_head(port, "/mcp", "Transfer-Encoding: chunked\r\n")
                    + "1\r\n{\r\nffffffffffffffff\r\n";
                send_while_reading(port, head, 128 * MIB, Duration::from_millis(1500))
            })
        })
        .collect();
    let outcomes: Vec<(Option<u16>, usize)> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = sampler.peak_rss_mb();
    let sent: usize = outcomes.iter().map(|(_, sent)| sent).sum();
    eprintln!(
        "overflowing chunks: {outcomes:?}; {} MiB sent; gateway RSS {before} -> peak {peak} MiB",
        sent / MIB
    );
    for (status, _) in &outcomes {
        assert_eq!(*status, Some(413), "an overflowing chunk size is too large, not a crash or a read");
    }
    assert!(peak < before + 24, "the gateway grew from {before} to {peak} MiB");
    assert_eq!(gw.http("GET", "/health", &[], b"").status, 200);
}

#[test]
fn a_refused_request_never_has_its_body_read() {
    let _w = Watchdog::new("refused_bodies", Duration::from_secs(60));
    let gw = Gateway::start(&["--auth-token", "t0k"]);
    let (pid, port) = (gw.proc.pid(), gw.port);
    // Each refusal comes back while the whole 4 MiB body is still unsent.
    let length = format!("Content-Length: {}\r\n", 4 * MIB);
    let cases = [
        ("POST", "/mcp", "", 401),
        ("POST", "/messages/?session_id=x", "Authorization: Bearer wrong\r\n", 401),
        ("POST", "/mcp/register", "", 401),
        ("POST", "/nowhere", "Authorization: Bearer t0k\r\n", 404),
        ("PUT", "/mcp", "Authorization: Bearer t0k\r\n", 405),
        ("POST", "/health", "", 405),
        ("POST", "/servers", "Authorization: Bearer t0k\r\n", 405),
        ("BREW", "/mcp", "Authorization: Bearer t0k\r\n", 501),
    ];
    for (method, path, auth, expected) in cases {
        let mut s = connect(port);
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{MCP_HEADERS}{auth}{length}\r\n");
        s.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        let answer = read_head(&mut s, Duration::from_secs(2));
        assert_eq!(answer.as_ref().map(|a| a.0), Some(expected), "{method} {path}: {answer:?}");
        assert!(answer.unwrap().1.contains("Connection: close"), "a refused body is never skipped: closed");
        eprintln!("{method} {path}: {expected} after {:?}, before any body byte", started.elapsed());
    }

    // 48 unauthenticated 4 MiB bodies at once: answered from the head, nothing buffered.
    let before = rss_mb(pid);
    let sampler = Sampler::start(pid);
    let senders: Vec<_> = (0..48)
        .map(|_| {
            let head = post_head(port, "/mcp", &length);
            std::thread::spawn(move || send_while_reading(port, head, 4 * MIB, Duration::from_secs(3)))
        })
        .collect();
    let outcomes: Vec<(Option<u16>, usize)> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = sampler.peak_rss_mb();
    let sent: usize = outcomes.iter().map(|(_, sent)| sent).sum();
    eprintln!("48 x 4 MiB without a token: {} MiB sent; gateway RSS {before} -> peak {peak} MiB", sent / MIB);
    assert!(outcomes.iter().all(|(status, _)| *status == Some(401)), "{outcomes:?}");
    assert!(peak < before + 24, "the gateway grew from {before} to {peak} MiB on refused bodies");
}

#[test]
fn past_the_body_budget_a_body_gets_503_before_it_is_read() {
    let _w = Watchdog::new("body_budget", Duration::from_secs(60));
    let args = ["--max-body-bytes", &(4 * MIB).to_string(), "--max-body-budget", &(8 * MIB).to_string()];
    let gw = Gateway::start(&args);
    let port = gw.port;
    let held_bytes = || {
        let text = gw.http("GET", "/metrics", &[], b"").body;
        let line =
            text.lines().find(|l| l.starts_with("mcpport_request_body_bytes_held ")).unwrap().to_string();
        line.rsplit(' ').next().unwrap().parse::<usize>().unwrap()
    };
    // Two bodies of 4 MiB on their way (1 MiB sent of each) hold the whole 8 MiB budget.
    let length = format!("Content-Length: {}\r\n", 4 * MIB);
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(port);
            s.write_all(post_head(port, "/mcp", &length).as_bytes()).unwrap();
            s.write_all(&vec![b' '; MIB]).unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while held_bytes() < 8 * MIB {
        assert!(Instant::now() < deadline, "the holders' bodies were never reserved");
        std::thread::sleep(Duration::from_millis(20));
    }
    for length in [4 * MIB, 100] {
        let mut s = connect(port);
        s.write_all(post_head(port, "/mcp", &format!("Content-Length: {length}\r\n")).as_bytes()).unwrap();
        let started = Instant::now();
        let (status, head) = read_head(&mut s, Duration::from_secs(2)).expect("an answer before the body");
        eprintln!("a {length}-byte body with the budget spent: {status} after {:?}", started.elapsed());
        assert_eq!(status, 503, "{head}");
        assert!(head.contains("Retry-After: 1"), "{head}");
    }
    // The reservations end with their requests, however they end.
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(5);
    while held_bytes() > 0 {
        assert!(Instant::now() < deadline, "the budget was not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let headers = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")];
    assert_eq!(http(port, "POST", "/mcp", &headers, INIT.as_bytes()).status, 200);
}

#[test]
fn idle_sockets_cannot_hold_the_connection_cap() {
    let _w = Watchdog::new("idle_cap", Duration::from_secs(60));
    let gw = Gateway::start(&["--max-connections", "40"]);
    // Once a request went through, the acceptor and the reaper run, and its thread has ended.
    assert_eq!(gw.http("GET", "/health", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let base_threads = proc_status(gw.proc.pid(), "Threads").unwrap();
    let idle: Vec<TcpStream> = (0..40).map(|_| connect(gw.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let held_threads = proc_status(gw.proc.pid(), "Threads").unwrap();
    eprintln!("gateway threads: {base_threads} idle, {held_threads} with 40 idle sockets");
    assert!(held_threads <= base_threads + 40, "one thread per connection, no more");
    // Idle past the grace (2 s), they make room; nobody waits for the minute of --idle-timeout.
    std::thread::sleep(Duration::from_millis(2300));
    for _ in 0..5 {
        let started = Instant::now();
        let status = gw.http("GET", "/health", &[], b"").status;
        eprintln!(
            "GET /health with 40 idle sockets at --max-connections 40: {status} in {:?}",
            started.elapsed()
        );
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let closed = idle
        .iter()
        .filter(|s| {
            let mut s: &TcpStream = s;
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    eprintln!("{closed} of 40 idle sockets were closed to make room for 5 requests");
    assert!((1..=5).contains(&closed), "only as many as needed: {closed}");
    assert!(proc_status(gw.proc.pid(), "Threads").unwrap() <= base_threads + 40);
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `src`.
fn connect_from(src: [u8; 4], port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (addr(src, 0), addr([127, 0, 0, 1], port));
    // SAFETY: socket, bind and connect on a descriptor owned here until `from_raw_fd` takes it;
    // the addresses are valid sockaddr_in values of `len` bytes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0, "bind {src:?}");
        assert_eq!(libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len), 0, "connect");
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

#[test]
fn one_address_cannot_take_every_connection() {
    let _w = Watchdog::new("per_ip_cap", Duration::from_secs(30));
    let args = ["--max-connections", "40", "--max-connections-per-ip", "4", "--sse-keepalive", "0.2"];
    let gw = Gateway::start(&args);
    // Four busy connections (SSE streams, never idle) from 127.0.0.1: its share is taken.
    let streams: Vec<SseClient> = (0..4).map(|_| SseClient::connect(gw.port, "/sse", &[])).collect();
    let mut fifth = connect(gw.port);
    let refused = read_response(&mut fifth);
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("--max-connections-per-ip"), "{}", refused.body);
    // Another address is served all the same.
    let mut other = connect_from([127, 0, 0, 2], gw.port);
    other.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut other).status, 200, "127.0.0.2 is not locked out by 127.0.0.1");
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.http("GET", "/health", &[], b"").status != 200 {
        assert!(Instant::now() < deadline, "127.0.0.1 did not get its share back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_sockets_do_not_stall_metrics_scrapes() {
    let _w = Watchdog::new("metrics_idle", Duration::from_secs(30));
    let gw = Gateway::start(&["--metrics-listen", "127.0.0.1:0"]);
    let line = gw.proc.wait_log("metrics on http://");
    let mport: u16 = line.split("127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    // Once a scrape went through, every thread of the gateway runs.
    assert_eq!(http(mport, "GET", "/metrics", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let threads = proc_status(gw.proc.pid(), "Threads").unwrap();
    // More idle sockets than the listener holds (32), and one that sends half a request.
    let mut idle: Vec<TcpStream> = (0..40).map(|_| connect(mport)).collect();
    idle[0].write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let started = Instant::now();
        let scrape = http(mport, "GET", "/metrics", &[], b"");
        eprintln!("scrape with 40 idle sockets open: {} in {:?}", scrape.status, started.elapsed());
        assert_eq!(scrape.status, 200);
        assert!(scrape.body.contains("mcpport_connections_open"));
        assert!(started.elapsed() < Duration::from_millis(1000), "a scrape waited {:?}", started.elapsed());
    }
    assert_eq!(proc_status(gw.proc.pid(), "Threads").unwrap(), threads, "no thread per metrics socket");
    let head = http(mport, "HEAD", "/metrics", &[], b"");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(http(mport, "POST", "/metrics", &[], b"").status, 405);
}

/// One request on a fresh connection, written as is; the whole answer.
fn raw(port: u16, text: &str) -> HttpResponse {
    let mut s = connect(port);
    s.write_all(text.as_bytes()).unwrap();
    read_response(&mut s)
}

#[test]
fn framing_is_strict_and_methods_are_checked() {
    let _w = Watchdog::new("strict_framing", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let port = gw.port;
    let n = INIT.len();
    let post = |framing: String, body: String| {
        raw(port, &format!("{}{body}", post_head(port, "/mcp", &format!("Connection: close\r\n{framing}"))))
    };
    let chunked = |size: String| format!("{size}\r\n{INIT}\r\n0\r\n\r\n");
    let cases = [
        (
            "two different lengths",
            post(format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 5), INIT.into()),
            400,
        ),
        ("a signed length", post(format!("Content-Length: +{n}\r\n"), INIT.into()), 400),
        (
            "a signed chunk size",
            post("Transfer-Encoding: chunked\r\n".into(), chunked(format!("+{n:x}"))),
            400,
        ),
        (
            "chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n".into(), chunked(format!("{n:x}"))),
            400,
        ),
        (
            "gzip, chunked",
            post("Transfer-Encoding: gzip, chunked\r\n".into(), chunked(format!("{n:x}"))),
            501,
        ),
        (
            "a 17-digit chunk size",
            post("Transfer-Encoding: chunked\r\n".into(), chunked(format!("{n:017x}"))),
            400,
        ),
        (
            "both",
            post(format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"), chunked(format!("{n:x}"))),
            400,
        ),
        (
            "the same length twice",
            post(format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"), INIT.into()),
            200,
        ),
        ("plain chunked", post("Transfer-Encoding: chunked\r\n".into(), chunked(format!("{n:x};x=y"))), 200),
    ];
    for (what, resp, expected) in cases {
        assert_eq!(resp.status, expected, "{what}: {resp:?}");
    }

    // HEAD: the same head, no body, everywhere; and the next answer on the connection is intact.
    let mut s = connect(port);
    let two = "HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    s.write_all(two.as_bytes()).unwrap();
    let mut both = String::new();
    let _ = s.read_to_string(&mut both);
    let (head, rest) = both.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("Content-Length: "), "{head}");
    assert!(rest.starts_with("HTTP/1.1 200"), "HEAD sent a body: {rest:?}");
    let servers = raw(port, "HEAD /servers HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!((servers.status, servers.body.as_str()), (200, ""));

    // Methods: known but not taken → 405 with Allow; OPTIONS → 204 with Allow; unknown → 501.
    for (method, path, expected, allow) in [
        ("TRACE", "/health", 405, Some("GET, HEAD, OPTIONS")),
        ("PUT", "/health", 405, Some("GET, HEAD, OPTIONS")),
        ("DELETE", "/servers", 405, Some("GET, HEAD, OPTIONS")),
        ("OPTIONS", "/servers", 204, Some("GET, HEAD, OPTIONS")),
        ("TRACE", "/mcp", 405, Some("GET, POST, DELETE, OPTIONS")),
        ("FOO", "/health", 501, None),
        ("get", "/servers", 501, None),
    ] {
        let resp =
            raw(port, &format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
        assert_eq!(resp.status, expected, "{method} {path}: {resp:?}");
        assert_eq!(resp.header("Allow").as_deref(), allow, "{method} {path}");
    }

    // Host, without tokens: loopback names and addresses pass, other names get 421.
    let get_servers = |host: &str| {
        raw(port, &format!("GET /servers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
    };
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")] {
        assert_eq!(get_servers(&host).status, 200, "{host}");
    }
    let rebound = get_servers(&format!("evil.example.com:{port}"));
    assert_eq!(rebound.status, 421, "a DNS-rebound page must not read /servers");
    assert!(rebound.json()["message"].as_str().unwrap().contains("--allow-host evil.example.com"));
    let mcp = format!(
        "POST /mcp HTTP/1.1\r\nHost: evil.example.com\r\n{MCP_HEADERS}Connection: close\r\nContent-Length: {n}\r\n\r\n{INIT}"
    );
    assert_eq!(raw(port, &mcp).status, 421);
    assert_eq!(raw(port, "GET /servers HTTP/1.1\r\nConnection: close\r\n\r\n").status, 400, "no Host");
    let two_hosts =
        "GET /servers HTTP/1.1\r\nHost: localhost\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(port, two_hosts).status, 400);
    // /health answers probes under any name: it shows counts only.
    assert_eq!(
        raw(port, "GET /health HTTP/1.1\r\nHost: lb.internal\r\nConnection: close\r\n\r\n").status,
        200
    );

    // A client that waits for `100 Continue` gets it, once its request passed every check.
    let mut s = connect(port);
    let expect = post_head(
        port,
        "/mcp",
        &format!("Expect: 100-continue\r\nConnection: close\r\nContent-Length: {n}\r\n"),
    );
    s.write_all(expect.as_bytes()).unwrap();
    let (status, _) = read_head(&mut s, Duration::from_millis(900)).expect("100 Continue before the body");
    assert_eq!(status, 100);
    s.write_all(INIT.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).status, 200);
}

#[test]
fn the_host_check_follows_the_flags_and_spares_edges() {
    let _w = Watchdog::new("host_check_flags", Duration::from_secs(30));
    let gw = Gateway::start(&["--allow-host", "mcp.example.com"]);
    let get = |port: u16, host: &str, auth: &str| {
        raw(port, &format!("GET /servers HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")).status
    };
    assert_eq!(get(gw.port, "mcp.example.com:443", ""), 200);
    assert_eq!(get(gw.port, "evil.example.com", ""), 421);

    // An edge dialing the gateway's public name registers: browsers' WebSockets carry an Origin,
    // which is what guards this endpoint.
    let url = format!("ws://gw.example.net:{}/mcp/register", gw.port);
    let (mut ws, _) = tungstenite::client(url.as_str(), connect(gw.port)).unwrap();
    ws.send(crate::registration::register_frame("id-far", "far")).unwrap();
    crate::registration::complete_handshake(&mut ws);
    let listing = gw.http("GET", "/servers", &[], b"").json();
    assert_eq!(listing["servers"][0]["name"], json!("far"));

    // With client tokens the token guards every request, whatever its Host (as before).
    let guarded = Gateway::start(&["--auth-token", "t0k"]);
    assert_eq!(get(guarded.port, "evil.example.com", "Authorization: Bearer t0k\r\n"), 200);
    assert_eq!(get(guarded.port, "evil.example.com", ""), 401);
}
