//! Edges that front several servers from a config file (`register --config`): stdio programs
//! and HTTP servers (Streamable HTTP and legacy SSE; here another mcpport gateway's per-server
//! endpoints, a real HTTP MCP server) each on their own link, called through both gateway
//! endpoints and both protocol eras; reloads on SIGHUP; broken files; upstreams that restart,
//! answer garbage, stream without end or redirect elsewhere.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::modern;
use crate::util::{bin, http, signal, Gateway, Proc, Watchdog};

/// A config file in a fresh directory of its own.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn new(tag: &str, text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("mcpport-edges-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("servers.json");
        std::fs::write(&path, text).unwrap();
        ConfigFile { dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `register --config` for `file`, registering with `gw`, with `extra` flags.
fn edge_for(file: &ConfigFile, gw: &Gateway, extra: &[&str]) -> Proc {
    Proc::start(&[&["register", "--config", file.arg(), "--gateway-url", &gw.ws_url()][..], extra].concat())
}

/// A stdio entry running the sample server with its test tools.
fn sample_entry() -> Value {
    json!({"command": bin(), "args": ["sample-server", "--test-tools"]})
}

/// The aggregated tool names on the gateway at `port` (a fresh 2025 session each time).
fn tool_names(port: u16) -> Vec<String> {
    let mut c = crate::util::SseClient::connect(port, "/sse", &[]);
    c.initialize("2025-06-18");
    c.tool_names()
}

/// Waits until the gateway's aggregated list holds every name of `want` and none of `gone`.
fn wait_for_tools(port: u16, want: &[&str], gone: &[&str], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let names = tool_names(port);
        let ready = want.iter().all(|w| names.iter().any(|n| n == w))
            && !gone.iter().any(|g| names.iter().any(|n| n == g));
        if ready {
            return names;
        }
        assert!(Instant::now() < deadline, "want {want:?}, gone {gone:?}; listed {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn echo_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string()
}

/// Calls `tool` with `echo`'s arguments four ways: legacy SSE and Streamable HTTP (2025, with
/// sessions) on the aggregated endpoint, and 2026-07-28 (stateless) on the aggregated and the
/// server's own endpoint; each answer must carry the text back.
fn call_everywhere(port: u16, server: &str) {
    let text = format!("through {server}");
    let mut sse = crate::util::SseClient::connect(port, "/sse", &[]);
    sse.initialize("2025-06-18");
    let answer = sse.tool(&format!("{server}_echo"), json!({"text": text}));
    assert_eq!(echo_text(&answer), text, "legacy SSE, {server}: {answer}");

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let json_headers =
        [("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")];
    let opened = http(port, "POST", "/mcp", &json_headers, init.to_string().as_bytes());
    let session = opened.header("Mcp-Session-Id").expect("a session");
    let mut h = json_headers.to_vec();
    h.push(("Mcp-Session-Id", &session));
    h.push(("MCP-Protocol-Version", "2025-11-25"));
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(http(port, "POST", "/mcp", &h, done.to_string().as_bytes()).status, 202);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": format!("{server}_echo"), "arguments": {"text": text}}});
    let answer = modern::answer(&http(port, "POST", "/mcp", &h, call.to_string().as_bytes()));
    assert_eq!(echo_text(&answer), text, "Streamable HTTP, {server}: {answer}");

    for (path, name) in
        [("/mcp".to_string(), format!("{server}_echo")), (format!("/servers/{server}/mcp"), "echo".into())]
    {
        let resp = modern::post_to(
            port,
            &path,
            3,
            "tools/call",
            json!({"name": name, "arguments": {"text": text}}),
            &[],
        );
        let answer = modern::answer(&resp);
        assert_eq!(echo_text(&answer), text, "2026-07-28 at {path}: {answer}");
    }
}

/// One file, three servers: a stdio program, and the same kind of server over Streamable HTTP
/// and over legacy SSE (another gateway's per-server endpoints in front of a sample server).
/// Each registers under its entry's key and is called through both endpoints and both eras.
/// The file is Claude Desktop's shape, with a key of its own that is ignored with a warning.
#[test]
fn a_config_file_fronts_stdio_and_http_servers() {
    let _w = Watchdog::new("config_file_servers", Duration::from_secs(90));
    let upstream = Gateway::start(&[]);
    let _pi = upstream.register_ready("pi");
    let gw = Gateway::start(&[]);
    let up = upstream.port;
    let file = ConfigFile::new(
        "three",
        &json!({
            "globalShortcut": "Ctrl+Space",
            "mcpServers": {
                "local": sample_entry(),
                "viahttp": {"url": format!("http://127.0.0.1:{up}/servers/pi/mcp")},
                "viasse": {"type": "sse", "url": format!("http://127.0.0.1:{up}/servers/pi/sse")},
            }
        })
        .to_string(),
    );
    let edge = edge_for(&file, &gw, &[]);
    wait_for_tools(gw.port, &["local_echo", "viahttp_echo", "viasse_echo"], &[], Duration::from_secs(20));
    for server in ["local", "viahttp", "viasse"] {
        call_everywhere(gw.port, server);
    }
    let log = edge.log_text();
    assert!(log.contains("globalShortcut"), "the unknown key is named in a warning: {log}");
    // The status says which edge each server came from, and how that edge reaches it.
    let status = http(gw.port, "GET", "/status.json", &[], b"").json();
    let servers = status["servers"].as_array().unwrap();
    let of = |name: &str| servers.iter().find(|s| s["name"] == name).cloned().unwrap_or_default();
    for (name, transport) in [("local", "stdio"), ("viahttp", "streamable-http"), ("viasse", "sse")] {
        assert_eq!(of(name)["transport"], transport, "{status}");
        assert!(of(name)["edge"].as_str().is_some_and(|e| e.contains('#')), "{status}");
        assert_eq!(of(name)["edge"], of("local")["edge"], "one edge: {status}");
    }
}

/// SIGHUP with one server removed, another added and a third changed (its environment): the
/// gateway's list follows within 5 s, the changed server runs as a new process, the untouched one
/// keeps its process and its calls succeed throughout, and the health server lists the new set.
/// Then a file that no longer parses is refused on SIGHUP, and the running servers stay.
#[test]
fn a_reload_adds_and_removes_servers_and_leaves_the_others_alone() {
    let _w = Watchdog::new("config_reload", Duration::from_secs(90));
    let gw = Gateway::start(&[]);
    let marked = |mark: &str| {
        let mut entry = sample_entry();
        entry["env"] = json!({"MARK": mark});
        entry
    };
    let file = ConfigFile::new(
        "reload",
        &json!({"mcpServers": {"keep": sample_entry(), "old": sample_entry(), "chg": marked("1")}})
            .to_string(),
    );
    let health = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let edge = edge_for(&file, &gw, &["--port", &health]);
    wait_for_tools(gw.port, &["keep_echo", "old_echo", "chg_echo"], &[], Duration::from_secs(20));
    let pid_of = |tool: &str| {
        let mut c = crate::util::SseClient::connect(gw.port, "/sse", &[]);
        c.initialize("2025-06-18");
        c.sample_pid(tool)
    };
    let (keep_pid, chg_pid) = (pid_of("keep_system_info"), pid_of("chg_system_info"));

    // Calls to `keep` all along, on one session.
    let (stop, calls, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let port = gw.port;
    let caller = {
        let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut c = crate::util::SseClient::connect(port, "/sse", &[]);
            c.initialize("2025-06-18");
            while !stop.load(Ordering::SeqCst) {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let answer = c.tool("keep_echo", json!({"text": format!("call {n}")}));
                if echo_text(&answer) != format!("call {n}") {
                    failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("call {n} failed: {answer}");
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    file.write(
        &json!({"servers": {"keep": sample_entry(), "new": sample_entry(), "chg": marked("2")}}).to_string(),
    );
    let sighup = Instant::now();
    signal(edge.pid(), libc::SIGHUP);
    wait_for_tools(gw.port, &["keep_echo", "new_echo", "chg_echo"], &["old_echo"], Duration::from_secs(5));
    let followed = sighup.elapsed();
    assert_eq!(pid_of("keep_system_info"), keep_pid, "the untouched server kept its process");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_of("chg_system_info") == chg_pid {
        assert!(Instant::now() < deadline, "the changed server was not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = http(health.parse().unwrap(), "GET", "/health", &[], b"");
    assert_eq!(listed.status, 200, "{listed:?}");
    for line in ["keep (stdio): running", "new (stdio): running", "chg (stdio): running"] {
        assert!(listed.body.contains(line), "{line:?} in {:?}", listed.body);
    }
    assert!(!listed.body.contains("old"), "{:?}", listed.body);
    std::thread::sleep(Duration::from_millis(300));

    file.write("{\"servers\": {\"keep\": {\"command\": \"x\",}\n  \"oops\"");
    signal(edge.pid(), libc::SIGHUP);
    edge.wait_log("not reloaded, the running servers stay");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    caller.join().unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0, "calls to the untouched server failed");
    assert!(
        calls.load(Ordering::SeqCst) >= 10,
        "too few calls went through: {}",
        calls.load(Ordering::SeqCst)
    );
    wait_for_tools(gw.port, &["keep_echo", "new_echo", "chg_echo"], &["old_echo"], Duration::from_secs(2));
    let log = edge.log_text();
    assert!(log.contains("1 started, 1 restarted, 1 stopped, 1 kept"), "followed in {followed:?}: {log}");
    assert!(log.contains("servers.json:2:"), "the broken file's line is named: {log}");
}

/// A broken file is refused at start with its line and column, before anything starts (status 2,
/// as for any bad command line); so are --config with --stdio, and --server-name with --config.
#[test]
fn a_broken_config_file_is_refused_with_its_line_and_column() {
    let _w = Watchdog::new("config_broken", Duration::from_secs(30));
    let file = ConfigFile::new("broken", "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"\n  }\n");
    let mut p = Proc::start(&["register", "--config", file.arg()]);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(2));
    let log = p.log_text();
    assert!(log.contains("servers.json:5:"), "{log}");
    for extra in [["--stdio", "cat"], ["--server-name", "x"]] {
        let mut p = Proc::start(&[&["register", "--config", file.arg()][..], &extra[..]].concat());
        assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(2), "{extra:?}");
    }
}

/// A tiny HTTP server on loopback that answers every request with `answer(request_line)` (and
/// then, if `forever`, a POST with SSE comments without end), for `limit`; its port.
fn scripted_upstream(answer: fn(&str, u16) -> Vec<u8>, forever: bool, limit: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let first = head.lines().next().unwrap_or_default().to_string();
                let _ = s.write_all(&answer(&first, port));
                if first.starts_with("POST") && forever {
                    // Without end: comments until the edge hangs up (or the test's limit).
                    let line =
                        b": padding padding padding padding padding padding padding\n".repeat(16 * 1024);
                    while s.write_all(&line).is_ok() && Instant::now() < deadline {}
                }
                std::thread::sleep(Duration::from_millis(200));
            });
        }
    });
    port
}

fn garbage(_: &str, _: u16) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\nnot json!".to_vec()
}

fn redirect(_: &str, _: u16) -> Vec<u8> {
    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://198.51.100.7/mcp\r\nContent-Length: 0\r\n\r\n"
        .to_vec()
}

/// The head of an SSE answer that never ends (the server writes comments, never a message).
fn endless(_: &str, _: u16) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec()
}

/// Upstreams that misbehave (garbage, a redirect to another host, a stream without end, one
/// that is not there and comes back): each gets a clear log line, the edge and its other
/// servers go on, and the edge's memory stays bounded.
#[test]
fn misbehaving_upstreams_take_nothing_else_down() {
    let _w = Watchdog::new("bad_upstreams", Duration::from_secs(90));
    let gw = Gateway::start(&[]);
    let later = TcpListener::bind("127.0.0.1:0").unwrap();
    let later_port = later.local_addr().unwrap().port();
    drop(later);
    let (g, r, e) = (
        scripted_upstream(garbage, false, Duration::from_secs(60)),
        scripted_upstream(redirect, false, Duration::from_secs(60)),
        scripted_upstream(endless, true, Duration::from_secs(60)),
    );
    let file = ConfigFile::new(
        "bad",
        &json!({"mcpServers": {
            "good": sample_entry(),
            "garbage": {"url": format!("http://127.0.0.1:{g}/mcp")},
            "redirect": {"url": format!("http://127.0.0.1:{r}/mcp")},
            "endless": {"url": format!("http://127.0.0.1:{e}/mcp")},
            "later": {"url": format!("http://127.0.0.1:{later_port}/servers/pi/mcp")},
        }})
        .to_string(),
    );
    let edge = edge_for(&file, &gw, &["--reconnect-max", "1"]);
    wait_for_tools(gw.port, &["good_echo"], &[], Duration::from_secs(20));
    edge.wait_log("sent something that is not JSON-RPC");
    edge.wait_log("redirected to another host (http://198.51.100.7/mcp); not followed");
    edge.wait_log("refused the connection");
    edge.wait_log("on a stream without answering");
    // The upstream that was not there comes up: the edge reaches it on a later try.
    let upstream = Gateway::start_at(later_port, &[]);
    let _pi = upstream.register_ready("pi");
    wait_for_tools(gw.port, &["good_echo", "later_echo"], &[], Duration::from_secs(30));
    call_everywhere(gw.port, "good");
    call_everywhere(gw.port, "later");
    let rss = crate::util::proc_status(edge.pid(), "VmRSS:").unwrap_or(0);
    assert!(rss < 64 * 1024, "the edge holds {rss} KiB");
    assert!(crate::util::alive(edge.pid()));
}

/// Writes `text` to `path` as an executable script.
fn write_executable(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A restart that cannot start (the server's program gone, as in an upgrade) is a crash like
/// any other under `--restart always` (the default with `--config`): tried again with backoff,
/// and the server comes back once its program is there again, without a reload.
#[test]
fn a_restart_that_cannot_start_is_tried_again() {
    let _w = Watchdog::new("restart_spawn_fails", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let file = ConfigFile::new("respawn", "{}");
    let script = file.dir.join("server.sh");
    let launcher = format!("#!/bin/sh\nexec {} sample-server --test-tools\n", bin());
    write_executable(&script, &launcher);
    file.write(&json!({"mcpServers": {"x": {"command": script.to_str().unwrap()}}}).to_string());
    let edge = edge_for(&file, &gw, &["--reconnect-max", "1"]);
    wait_for_tools(gw.port, &["x_echo"], &[], Duration::from_secs(20));
    // The program goes away, then the server exits: its restart cannot start.
    std::fs::remove_file(&script).unwrap();
    let mut c = crate::util::SseClient::connect(gw.port, "/sse", &[]);
    c.initialize("2025-06-18");
    let pid = c.sample_pid("x_system_info");
    signal(pid, libc::SIGKILL);
    edge.wait_log("cannot start MCP server \"x\"");
    std::thread::sleep(Duration::from_millis(1500));
    write_executable(&script, &launcher);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = tool_names(gw.port);
        if names.iter().any(|n| n == "x_echo")
            && edge.count_log("fronting") + edge.count_log("started MCP server \"x\"") >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not come back: {}", edge.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(crate::util::alive(edge.pid()), "{}", edge.log_text());
    assert!(!edge.log_text().contains("ended: cannot start"), "the loop gave up: {}", edge.log_text());
}

/// With `--stdio`, SIGHUP (a terminal hanging up) stops register as SIGTERM does: its server is
/// stopped in order and register exits 0, rather than dying with its server killed.
#[test]
fn sighup_stops_a_stdio_edge_in_order() {
    let _w = Watchdog::new("sighup_stdio", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let mut edge = gw.register_ready("pi");
    signal(edge.pid(), libc::SIGHUP);
    assert_eq!(edge.wait_exit(Duration::from_secs(10)).code(), Some(0), "{}", edge.log_text());
    assert!(edge.log_text().contains("signal received: stopped MCP server \"pi\""), "{}", edge.log_text());
}
