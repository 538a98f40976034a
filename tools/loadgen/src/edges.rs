//! Fake edges: the registration protocol of DESIGN.md §4 spoken by the load generator itself, so
//! that ten thousand edges need no child process each. An edge dials the gateway, sends its
//! `register` frame, answers `initialize`, `tools/list` (K tools, `echo` first) and `tools/call`
//! (the text back, prefixed with the edge's own name, so a client can check which edge answered)
//! and `ping`, and waits for `{"status":"registered"}`. Registration is blocking, one edge after
//! another; a registered edge is then handed to one of a few poller threads, which serve many
//! edges each from one `epoll` set (non-blocking sockets, tungstenite for the framing).

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message, WebSocket};

/// What every fake edge offers.
pub struct Offer {
    pub tools: usize,
    /// The `tools/list` result, as JSON text.
    tools_result: String,
}

impl Offer {
    /// `tools` tools (`echo`, `echo_1`, …), each with a description of about `bytes` bytes.
    pub fn new(tools: usize, bytes: usize) -> Offer {
        let list: Vec<Value> = (0..tools.max(1))
            .map(|i| {
                let name = if i == 0 { "echo".to_string() } else { format!("echo_{i}") };
                json!({
                    "name": name,
                    "description": format!("Echo the text back. {}", "x".repeat(bytes.saturating_sub(24))),
                    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
                })
            })
            .collect();
        Offer { tools: list.len(), tools_result: json!({ "tools": list }).to_string() }
    }
}

/// Counters shared by all edges.
#[derive(Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub pings: AtomicU64,
    /// Edges whose link ended while they were being served.
    pub dropped: AtomicU64,
    pub unexpected: AtomicU64,
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_message_size(Some(64 << 20))
}

/// The answer of edge `name` to one frame from the gateway, if it needs one. Status frames are
/// reported as `Err(status)`.
fn answer(name: &str, offer: &Offer, stats: &Stats, text: &str) -> Result<Option<String>, Value> {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        stats.unexpected.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    if msg.get("status").is_some() && msg.get("jsonrpc").is_none() {
        return Err(msg);
    }
    let (Some(method), Some(id)) = (msg["method"].as_str(), msg.get("id")) else {
        return Ok(None); // a notification or an answer
    };
    let result = match method {
        "initialize" => {
            let version = msg["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18");
            format!(
                r#"{{"protocolVersion":{},"capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"loadgen-edge","version":"1"}}}}"#,
                Value::from(version)
            )
        }
        "tools/list" => offer.tools_result.clone(),
        "tools/call" => {
            stats.calls.fetch_add(1, Ordering::Relaxed);
            let text = msg["params"]["arguments"]["text"].as_str().unwrap_or_default();
            json!({"content": [{"type": "text", "text": format!("{name}:{text}")}]}).to_string()
        }
        "ping" => {
            stats.pings.fetch_add(1, Ordering::Relaxed);
            "{}".into()
        }
        other => {
            stats.unexpected.fetch_add(1, Ordering::Relaxed);
            let err = json!({"code": -32601, "message": format!("loadgen edge: no method {other}")});
            return Ok(Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{err}}}"#)));
        }
    };
    Ok(Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)))
}

/// One registered edge.
pub struct Edge {
    name: String,
    ws: WebSocket<TcpStream>,
}

/// Registers edge `name` and serves its handshake until the gateway says "registered".
pub fn register(addr: &str, name: &str, offer: &Offer, stats: &Stats) -> Result<Edge, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let url = format!("ws://{addr}/mcp/register");
    let (mut ws, _) = tungstenite::client::client_with_config(url.as_str(), stream, Some(websocket_config()))
        .map_err(|e| format!("{name}: WebSocket handshake: {e}"))?;
    let frame = json!({
        "jsonrpc": "2.0", "id": format!("loadgen-{name}"), "method": "register",
        "params": {"name": name, "version": "1", "capabilities": {}},
    });
    ws.send(Message::text(frame.to_string())).map_err(|e| format!("{name}: send register: {e}"))?;
    loop {
        let text = match ws.read() {
            Ok(Message::Text(t)) => t.as_str().to_owned(),
            Ok(_) => continue,
            Err(e) => return Err(format!("{name}: during registration: {e}")),
        };
        match answer(name, offer, stats, &text) {
            Ok(Some(reply)) => ws.send(Message::text(reply)).map_err(|e| format!("{name}: send: {e}"))?,
            Ok(None) => {}
            Err(status) if status["status"] == "registered" => break,
            Err(status) if status["status"] == "error" => return Err(format!("{name}: refused: {status}")),
            Err(_) => {} // "received"
        }
    }
    Ok(Edge { name: name.to_string(), ws })
}

/// Poller threads that serve registered edges until stopped.
pub struct Pool {
    txs: Vec<Sender<Edge>>,
    next: usize,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn start(threads: usize, offer: Arc<Offer>, stats: Arc<Stats>) -> io::Result<Pool> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut txs = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = channel();
            let (offer, stats, stop) = (offer.clone(), stats.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("edges-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || poller(rx, &offer, &stats, &stop))?;
            txs.push(tx);
            handles.push(h);
        }
        Ok(Pool { txs, next: 0, stop, handles })
    }

    pub fn add(&mut self, edge: Edge) {
        let _ = self.txs[self.next % self.txs.len()].send(edge);
        self.next += 1;
    }

    /// Closes every edge (their sockets close) and joins the pollers.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.txs);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag and returns a descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: i32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: key };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn del(&self, fd: i32) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as above; a descriptor not in the set only makes the call fail.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Keys of the ready descriptors.
    fn wait(&self, events: &mut [libc::epoll_event], ms: i32) -> Vec<u64> {
        // SAFETY: `events` is a valid, writable array of `events.len()` entries.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, ms) };
        (0..n.max(0) as usize).map(|i| events[i].u64).collect()
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn poller(rx: Receiver<Edge>, offer: &Offer, stats: &Stats, stop: &AtomicBool) {
    let Ok(ep) = Epoll::new() else {
        eprintln!("loadgen: epoll_create1 failed");
        return;
    };
    let mut edges: HashMap<u64, Edge> = HashMap::new();
    let mut blocked: Vec<u64> = Vec::new();
    let mut next_key = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    while !stop.load(Ordering::Relaxed) {
        while let Ok(edge) = rx.try_recv() {
            if edge.ws.get_ref().set_nonblocking(true).is_err() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            next_key += 1;
            if ep.add(edge.ws.get_ref().as_raw_fd(), next_key).is_ok() {
                edges.insert(next_key, edge);
            }
        }
        let ms = if blocked.is_empty() { 20 } else { 1 };
        let mut ready = ep.wait(&mut events, ms);
        ready.append(&mut blocked);
        for key in ready {
            let Some(edge) = edges.get_mut(&key) else { continue };
            match serve(edge, offer, stats) {
                Ok(false) => {}
                Ok(true) => blocked.push(key),
                Err(()) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    ep.del(edge.ws.get_ref().as_raw_fd());
                    edges.remove(&key);
                }
            }
        }
        blocked.sort_unstable();
        blocked.dedup();
    }
}

/// Answers every frame available now; `Ok(true)` when answers wait for the socket.
fn serve(edge: &mut Edge, offer: &Offer, stats: &Stats) -> Result<bool, ()> {
    loop {
        match edge.ws.read() {
            Ok(Message::Text(t)) => {
                if let Ok(Some(reply)) = answer(&edge.name, offer, stats, t.as_str()) {
                    match edge.ws.write(Message::text(reply)) {
                        Ok(()) => {}
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Err(()),
                    }
                }
            }
            Ok(_) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return Err(()),
        }
    }
    match edge.ws.flush() {
        Ok(()) => Ok(false),
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(_) => Err(()),
    }
}

/// Registers `count` edges named `{prefix}{i:05}` one after another, handing each to `pool`;
/// returns the time each registration took (a failed one is reported and skipped). Stops early
/// past `deadline`.
pub fn register_all(
    addr: &str,
    prefix: &str,
    count: usize,
    offer: &Offer,
    stats: &Stats,
    pool: &mut Pool,
    deadline: Instant,
) -> (Vec<Duration>, Vec<String>) {
    let mut took = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for i in 0..count {
        if Instant::now() > deadline {
            errors.push(format!("registration stopped at edge {i}: past the time limit"));
            break;
        }
        let name = edge_name(prefix, i);
        let t0 = Instant::now();
        match register(addr, &name, offer, stats) {
            Ok(edge) => {
                took.push(t0.elapsed());
                pool.add(edge);
            }
            Err(e) => errors.push(e),
        }
    }
    (took, errors)
}

pub fn edge_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}
