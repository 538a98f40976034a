//! Test support: start the real `mcpport` binary (gateway, register) on 127.0.0.1:0 and kill it by
//! PID when done, read its log, and talk to it as a client would: raw HTTP, and a minimal legacy
//! SSE MCP client. Every wait here is bounded; a watchdog ends a test that hangs.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcpport");

/// The binary `Proc` and `Gateway` start: `MCPPORT_BIN` if set (to run these tests against
/// another build, e.g. an older commit's), else the one Cargo built for this test binary.
pub fn bin() -> String {
    std::env::var("MCPPORT_BIN").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| BIN.to_string())
}

/// How long any single expectation may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// Ends the whole test binary if a test runs past its limit (after killing what tests started).
pub struct Watchdog(Arc<AtomicBool>);

/// PIDs of the children this test binary started and has not reaped. A PID leaves the list in the
/// same locked step as its child is reaped (`try_reap`, `reap`), and the watchdog signals only
/// while it holds the lock, so it never signals a PID the system may have given to another
/// process.
static STARTED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Reaps `child` if it has exited, forgetting its PID in the same step.
pub fn try_reap(child: &mut Child) -> Option<ExitStatus> {
    let mut started = STARTED.lock().unwrap();
    let status = child.try_wait().ok().flatten();
    if status.is_some() {
        started.retain(|p| *p != child.id());
    }
    status
}

/// Waits up to `limit` for `child` to exit, then kills it by PID; reaps it and forgets its PID.
pub fn reap(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = try_reap(child) {
            return status;
        }
        if Instant::now() >= deadline {
            // Not reaped, so the PID is still this child's (a zombie at worst).
            signal(child.id(), libc::SIGKILL);
            let mut started = STARTED.lock().unwrap();
            let status = child.wait().expect("wait for a killed child");
            started.retain(|p| *p != child.id());
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Watchdog {
    pub fn new(name: &'static str, limit: Duration) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watchdog: test {name} ran past {limit:?}; killing its processes and aborting");
            // Under the lock: none of these PIDs can be reaped (and reused) meanwhile.
            let started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
            for pid in started.iter() {
                signal(*pid, libc::SIGKILL);
            }
            std::process::exit(101);
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Kills a child by PID when dropped, unless it was already reaped (for processes started
/// without `Proc`).
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        STARTED.lock().unwrap().push(child.id());
        KillOnDrop(child)
    }

    /// The exit status, if the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        try_reap(&mut self.0)
    }

    /// Waits up to `limit` for the process to exit (then kills it); reaps it.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        reap(&mut self.0, limit)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        reap(&mut self.0, Duration::ZERO);
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with plain integers; only PIDs of processes this test binary started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// A started `mcpport` process: its stderr log is collected; it is killed by PID on drop.
pub struct Proc {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    /// Closed when the log reader has seen the end of stderr.
    log_done: Receiver<()>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::start_command(cmd)
    }

    /// Starts `cmd` (mcpport, or a command that runs it), its stderr read as the log.
    pub fn start_command(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start mcpport");
        STARTED.lock().unwrap().push(child.id());
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let (done_tx, log_done) = mpsc::channel::<()>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let _done = done_tx;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc { child, log, lines, log_done }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `needle` (lines seen before are searched too).
    pub fn wait_log(&self, needle: &str) -> String {
        if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line with {needle:?} within {WAIT:?}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = try_reap(&mut self.child) {
                // Let the reader take in the last lines the process wrote.
                let _ = self.log_done.recv_timeout(Duration::from_secs(2));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if try_reap(&mut self.child).is_none() {
            signal(self.child.id(), libc::SIGTERM);
            reap(&mut self.child, Duration::from_secs(3));
        }
    }
}

/// A gateway on 127.0.0.1 with a free port.
pub struct Gateway {
    pub proc: Proc,
    pub port: u16,
}

impl Gateway {
    pub fn start(extra: &[&str]) -> Gateway {
        Gateway::start_env(extra, &[])
    }

    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut args = vec!["gateway", "--host", "127.0.0.1", "--port", "0"];
        args.extend_from_slice(extra);
        let proc = Proc::start_env(&args, env);
        let line = proc.wait_log("listening on http");
        // The URL ends the message (text logs) or the "msg" string (JSON logs).
        let url = line.split("listening on ").nth(1).unwrap().split(['"', ' ']).next().unwrap();
        let port = url.rsplit(':').next().unwrap().parse().expect("port in the log line");
        Gateway { proc, port }
    }

    /// Waits until /health reports `n` registered (ready) servers.
    pub fn wait_servers(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let health = http(self.port, "GET", "/health", &[], b"").json();
            if health["servers"].as_u64() == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "expected {n} servers registered: {health}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mcp/register", self.port)
    }

    /// Starts `mcpport register` with the sample server (test tools on) under `name`.
    pub fn register(&self, name: &str, extra: &[&str]) -> Proc {
        let stdio = format!("{} sample-server --test-tools", bin());
        let url = self.ws_url();
        let mut args = vec!["register", "--stdio", &stdio, "--gateway-url", &url, "--server-name", name];
        args.extend_from_slice(extra);
        Proc::start(&args)
    }

    /// Registers `name` and waits until the gateway lists it.
    pub fn register_ready(&self, name: &str) -> Proc {
        let p = self.register(name, &[]);
        p.wait_log("registered as");
        p
    }

    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        http(self.port, method, path, headers, body)
    }

    pub fn client(&self) -> SseClient {
        SseClient::connect(self.port, "/sse", &[])
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

/// Reads a response that ends with the connection (or a Content-Length).
pub fn read_response(s: &mut TcpStream) -> HttpResponse {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    HttpResponse { status, head: head.to_string(), body: body.to_string() }
}

/// A minimal MCP client over the legacy SSE transport, as the SDKs implement it.
pub struct SseClient {
    port: u16,
    pub endpoint: String,
    events: Receiver<Value>,
    /// Notifications and unmatched messages seen while waiting for responses.
    pub backlog: Vec<Value>,
    next_id: AtomicU64,
    headers: Vec<(String, String)>,
    _stream: TcpStream,
}

impl SseClient {
    pub fn connect(port: u16, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        s.write_all(format!("{req}\r\n").as_bytes()).unwrap();
        let reader = s.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || read_sse(reader, tx, etx));
        let endpoint = erx.recv_timeout(WAIT).expect("endpoint event");
        SseClient {
            port,
            endpoint,
            events: rx,
            backlog: Vec::new(),
            next_id: AtomicU64::new(1),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            _stream: s,
        }
    }

    /// POSTs one message to the endpoint; returns the HTTP response.
    pub fn post(&self, msg: &Value) -> HttpResponse {
        let mut headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        headers.push(("Content-Type", "application/json"));
        http(self.port, "POST", &self.endpoint, &headers, msg.to_string().as_bytes())
    }

    /// Sends a request and returns its id (the answer comes on the stream).
    pub fn send(&self, method: &str, params: Value) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        assert_eq!(resp.status, 202, "POST {method}: {resp:?}");
        id
    }

    pub fn notify(&self, method: &str, params: Value) {
        let resp = self.post(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
        assert_eq!(resp.status, 202, "POST {method}: {resp:?}");
    }

    /// Waits for the response with `id`; other messages go to the backlog.
    pub fn response(&mut self, id: u64) -> Value {
        if let Some(pos) = self.backlog.iter().position(|m| m["id"] == json!(id)) {
            return self.backlog.remove(pos);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg =
                self.events.recv_timeout(left).unwrap_or_else(|_| panic!("no response to request {id}"));
            if msg["id"] == json!(id) && msg.get("method").is_none() {
                return msg;
            }
            self.backlog.push(msg);
        }
    }

    /// A request and its response.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.response(id)
    }

    /// `tools/call`, returning the whole response message.
    pub fn tool(&mut self, name: &str, args: Value) -> Value {
        self.call("tools/call", json!({"name": name, "arguments": args}))
    }

    /// Initializes with `version` and sends `notifications/initialized`.
    pub fn initialize(&mut self, version: &str) -> Value {
        let params = json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "tests", "version": "0"}});
        let resp = self.call("initialize", params);
        self.notify("notifications/initialized", json!({}));
        resp
    }

    /// The pid of the sample server behind `tool` (a `system_info` tool).
    pub fn sample_pid(&mut self, tool: &str) -> u32 {
        let resp = self.tool(tool, json!({}));
        resp["result"]["structuredContent"]["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {resp}"))
            as u32
    }

    pub fn tool_names(&mut self) -> Vec<String> {
        let resp = self.call("tools/list", json!({}));
        resp["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits for a notification with `method` (looking at the backlog first).
    pub fn notification(&mut self, method: &str, limit: Duration) -> Option<Value> {
        if let Some(pos) = self.backlog.iter().position(|m| m["method"] == method) {
            return Some(self.backlog.remove(pos));
        }
        let deadline = Instant::now() + limit;
        while let Ok(msg) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if msg["method"] == method {
                return Some(msg);
            }
            self.backlog.push(msg);
        }
        None
    }

    /// Waits until the stream ends; returns whether it did within `limit`.
    pub fn wait_closed(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(msg) => self.backlog.push(msg),
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

impl Drop for SseClient {
    /// Closes the stream for real: the reader thread holds a clone of the socket.
    fn drop(&mut self) {
        let _ = self._stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Decodes the chunked SSE body: the `endpoint` event goes to `endpoint`, messages to `tx`.
fn read_sse(stream: TcpStream, tx: mpsc::Sender<Value>, endpoint: mpsc::Sender<String>) {
    let mut events = SseReader::new(stream);
    if events.head().status != 200 {
        return;
    }
    while let Some((name, data)) = events.next_event() {
        if name == "endpoint" {
            let _ = endpoint.send(data);
        } else if let Ok(v) = serde_json::from_str(&data) {
            if tx.send(v).is_err() {
                return;
            }
        }
    }
}

/// POSTs `body` on a fresh connection and reads the answer as an SSE stream (asserting 200 and
/// `text/event-stream`).
pub fn post_stream(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> SseReader {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{req}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
    let mut reader = SseReader::new(s);
    let head = reader.head();
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.head.contains("text/event-stream"), "{}", head.head);
    reader
}

/// Reads an HTTP response whose body is a chunked SSE stream, event by event.
pub struct SseReader {
    r: BufReader<TcpStream>,
    text: String,
}

impl SseReader {
    pub fn new(stream: TcpStream) -> SseReader {
        SseReader { r: BufReader::new(stream), text: String::new() }
    }

    /// Reads the response head.
    pub fn head(&mut self) -> HttpResponse {
        let mut head = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        HttpResponse { status, head, body: String::new() }
    }

    /// The next event as (name, data); `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<(String, String)> {
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                let name =
                    event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("message").to_string();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if !data.is_empty() {
                    return Some((name, data.join("\n")));
                }
            }
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            let size = usize::from_str_radix(line.trim(), 16).ok().filter(|n| *n > 0)?;
            let mut chunk = vec![0u8; size + 2];
            self.r.read_exact(&mut chunk).ok()?;
            self.text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        }
    }

    /// How long a read may wait from now on.
    pub fn set_timeout(&mut self, limit: Duration) {
        self.r.get_ref().set_read_timeout(Some(limit)).unwrap();
    }

    /// The next JSON-RPC message on the stream.
    pub fn next_message(&mut self) -> Option<Value> {
        let (_, data) = self.next_event()?;
        serde_json::from_str(&data).ok()
    }
}

// ---- Helpers for the correlation tests: process control, /proc sampling, raw and Streamable
// ---- HTTP clients. Appended; nothing above depends on them.

impl Proc {
    /// SIGKILL by PID, then reap: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        reap(&mut self.child, Duration::ZERO);
    }

    /// How many log lines so far contain `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until at least `n` log lines contain `needle` (or `limit` passes); returns the count.
    pub fn wait_count(&self, needle: &str, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let count = self.count_log(needle);
            if count >= n || Instant::now() >= deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Gateway {
    /// A gateway on 127.0.0.1:`port` (a restart on the port of one that was killed); retries
    /// for a few seconds while the port is still held.
    pub fn start_at(port: u16, extra: &[&str]) -> Gateway {
        let port_text = port.to_string();
        let mut args = vec!["gateway", "--host", "127.0.0.1", "--port", &port_text];
        args.extend_from_slice(extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut proc = Proc::start(&args);
            loop {
                if proc.count_log("listening on http") > 0 {
                    return Gateway { proc, port };
                }
                if try_reap(&mut proc.child).is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "gateway did not start on port {port}:\n{}",
                    proc.log_text()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(Instant::now() < deadline, "gateway did not start on port {port}:\n{}", proc.log_text());
            proc.kill_hard();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL the gateway by PID.
    pub fn kill(&mut self) {
        self.proc.kill_hard();
    }
}

/// A field of /proc/PID/status as a number ("Threads", "VmRSS" in kB).
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// Samples a process's thread count and resident memory every 10 ms until stopped, keeping the
/// peaks.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak_threads: Arc<AtomicU64>,
    peak_rss_kb: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_threads = Arc::new(AtomicU64::new(0));
        let peak_rss_kb = Arc::new(AtomicU64::new(0));
        let (s, t, r) = (stop.clone(), peak_threads.clone(), peak_rss_kb.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(n) = proc_status(pid, "Threads") {
                    t.fetch_max(n, Ordering::Relaxed);
                }
                if let Some(kb) = proc_status(pid, "VmRSS") {
                    r.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler { stop, peak_threads, peak_rss_kb, handle: Some(handle) }
    }

    pub fn peak_threads(&self) -> u64 {
        self.peak_threads.load(Ordering::Relaxed)
    }

    pub fn peak_rss_mb(&self) -> u64 {
        self.peak_rss_kb.load(Ordering::Relaxed) / 1024
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The text of one HTTP/1.1 request (`Connection: close` unless `keep_alive`).
pub fn request_text(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: {connection}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one response from a connection: head, then a body framed by Content-Length, chunked
/// encoding (decoded), or the end of the connection.
pub fn read_one_response(r: &mut BufReader<TcpStream>) -> std::io::Result<HttpResponse> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection ended");
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(eof());
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(eof)?;
    let mut resp = HttpResponse { status, head: head.trim_end().to_string(), body: String::new() };
    let mut body = Vec::new();
    if let Some(n) = resp.header("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if resp.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(eof());
            }
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| eof())?;
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Ok(resp)
}

/// One request on a fresh connection, as `http` does, but errors are returned, not panics.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(&request_text(port, method, path, headers, body, false))?;
    read_one_response(&mut BufReader::new(s))
}

/// POSTs `bodies` pipelined on one keep-alive connection, written in one go, and returns the
/// responses in order.
pub fn post_pipelined(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    bodies: &[Value],
) -> Vec<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut all = Vec::new();
    for (n, body) in bodies.iter().enumerate() {
        let last = n + 1 == bodies.len();
        all.extend(request_text(port, "POST", path, headers, body.to_string().as_bytes(), !last));
    }
    let reader = s.try_clone().unwrap();
    let count = bodies.len();
    let responses = std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        (0..count).map_while(|_| read_one_response(&mut r).ok()).collect::<Vec<_>>()
    });
    s.write_all(&all).unwrap();
    responses.join().unwrap()
}

/// The JSON-RPC messages of a Streamable HTTP answer: a JSON body (one message or a batch) or
/// an SSE stream.
pub fn messages_of(resp: &HttpResponse) -> Vec<Value> {
    let sse = resp.header("Content-Type").is_some_and(|t| t.contains("text/event-stream"));
    if sse {
        return resp
            .body
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                serde_json::from_str(&data.join("\n")).ok()
            })
            .collect();
    }
    match serde_json::from_str(&resp.body) {
        Ok(Value::Array(items)) => items,
        Ok(v) => vec![v],
        Err(_) => Vec::new(),
    }
}

/// A minimal Streamable HTTP client: `initialize` keeps the `Mcp-Session-Id`; each POST is a
/// fresh connection whose answer (JSON or SSE) is read to its end.
#[derive(Clone)]
pub struct StreamableClient {
    pub port: u16,
    pub path: String,
    pub session: Option<String>,
    pub version: String,
    /// An `Authorization` value sent with every request.
    pub bearer: Option<String>,
}

impl StreamableClient {
    pub fn new(port: u16, path: &str, version: &str) -> StreamableClient {
        StreamableClient { port, path: path.into(), session: None, version: version.into(), bearer: None }
    }

    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut h = vec![
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
            ("MCP-Protocol-Version", self.version.as_str()),
        ];
        if let Some(s) = &self.session {
            h.push(("Mcp-Session-Id", s));
        }
        if let Some(b) = &self.bearer {
            h.push(("Authorization", b));
        }
        h
    }

    pub fn try_post(&self, body: &Value) -> std::io::Result<HttpResponse> {
        try_http(self.port, "POST", &self.path, &self.headers(), body.to_string().as_bytes())
    }

    pub fn post(&self, body: &Value) -> HttpResponse {
        self.try_post(body).unwrap_or_else(|e| panic!("POST {}: {e}", self.path))
    }

    /// Writes a POST and returns its connection unread (the caller reads, or does not).
    pub fn open(&self, body: &Value) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let text =
            request_text(self.port, "POST", &self.path, &self.headers(), body.to_string().as_bytes(), false);
        s.write_all(&text).unwrap();
        s
    }

    /// Initializes with `capabilities` and sends `notifications/initialized`.
    pub fn initialize(&mut self, capabilities: Value) -> Value {
        let params = json!({"protocolVersion": self.version, "capabilities": capabilities, "clientInfo": {"name": "tests", "version": "0"}});
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}));
        assert_eq!(resp.status, 200, "initialize: {resp:?}");
        self.session = Some(resp.header("Mcp-Session-Id").expect("a session id"));
        let ok = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(ok.status, 202, "{ok:?}");
        messages_of(&resp).pop().expect("an initialize answer")
    }

    /// A request; returns the answer with its id (related messages are dropped).
    pub fn call(&self, id: u64, method: &str, params: Value) -> Value {
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        assert_eq!(resp.status, 200, "{method}: {resp:?}");
        messages_of(&resp)
            .into_iter()
            .find(|m| m["id"] == json!(id) && m.get("method").is_none())
            .unwrap_or_else(|| panic!("no answer to {method} in {resp:?}"))
    }

    pub fn notify(&self, method: &str, params: Value) -> HttpResponse {
        self.post(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }
}

impl SseClient {
    /// Initializes declaring `capabilities` and sends `notifications/initialized`.
    pub fn initialize_with(&mut self, version: &str, capabilities: Value) -> Value {
        let params = json!({"protocolVersion": version, "capabilities": capabilities, "clientInfo": {"name": "tests", "version": "0"}});
        let resp = self.call("initialize", params);
        self.notify("notifications/initialized", json!({}));
        resp
    }

    /// Sends a request with a chosen id (the answer comes on the stream).
    pub fn send_id(&self, id: u64, method: &str, params: Value) {
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        assert_eq!(resp.status, 202, "POST {method}: {resp:?}");
    }

    /// Answers a request the gateway sent to this client.
    pub fn reply(&self, id: &Value, result: Value) {
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
        assert_eq!(resp.status, 202, "POST response: {resp:?}");
    }

    /// The next message (backlog first) within `limit`.
    pub fn next(&mut self, limit: Duration) -> Option<Value> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        self.events.recv_timeout(limit).ok()
    }

    /// Every message that arrives within `limit` (the backlog first); the backlog is emptied.
    pub fn collect(&mut self, limit: Duration) -> Vec<Value> {
        let mut all = std::mem::take(&mut self.backlog);
        let deadline = Instant::now() + limit;
        while let Ok(msg) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            all.push(msg);
        }
        all
    }
}
