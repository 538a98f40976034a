//! `mcpport gateway`: binds one port, accepts connections, and gives each its own thread.
//!
//! The acceptor enforces the connection caps (`admission.rs`: global and per peer address,
//! closing idle connections to make room, 503 when nothing can) and spawns a named thread per
//! connection through `thread::spawn`. What a connection becomes (plain requests, an SSE stream,
//! a registered edge server's WebSocket) is decided in `routes.rs`. All shared state is in
//! `registry.rs`.

pub(crate) mod admission;
pub(crate) mod aggregate;
pub(crate) mod auth;
pub(crate) mod catalog;
pub(crate) mod cors;
pub(crate) mod eras;
pub(crate) mod error;
pub(crate) mod legacy;
pub(crate) mod link;
pub(crate) mod lists;
pub(crate) mod mailbox;
pub(crate) mod mcp;
pub(crate) mod metrics;
pub(crate) mod metrics_server;
pub(crate) mod modern;
pub(crate) mod registry;
pub(crate) mod reply;
pub(crate) mod routes;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod streamable;
pub(crate) mod template;
pub(crate) mod upstream;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{Budget, Limits, Response, Transport};
use crate::ws::Heartbeat;
use crate::{sys, thread};
use admission::Admission;
use registry::Registry;

/// Everything `mcpport gateway` was told on its command line, validated. (No `Debug`: it holds
/// tokens.)
#[derive(Clone)]
pub(crate) struct Config {
    pub host: String,
    pub port: u16,
    /// Path of the Streamable HTTP endpoint.
    pub mcp_path: String,
    /// Origins allowed besides loopback and the gateway's own address (`*` for any).
    pub allow_origins: Vec<String>,
    /// Names allowed in `Host` besides loopback names, IP addresses and `host` (`*` for any);
    /// checked only when clients need no token.
    pub allow_hosts: Vec<String>,
    /// Streamable HTTP sessions idle this long are ended.
    pub session_timeout: Duration,
    /// Path of the legacy SSE stream (`GET`).
    pub sse_path: String,
    /// Path of the legacy message endpoint (`POST ?session_id=`), as advertised to clients.
    pub messages_path: String,
    /// Timeout for upstream requests other than tool calls.
    pub timeout_rpc: Duration,
    /// Timeout for a tool call (restarted by progress notifications).
    pub timeout_run_tool: Duration,
    /// Bearer tokens for clients (and edges, unless `register_tokens`); empty: no authentication.
    pub auth_tokens: Vec<String>,
    /// Bearer tokens for edges only.
    pub register_tokens: Vec<String>,
    /// Client sessions open at once before new ones get 503.
    pub max_sessions: usize,
    /// Bytes all client and link queues may hold together.
    pub max_queue_bytes: usize,
    /// Sessions one client (token, certificate, or address without either) may hold open;
    /// `None`: 256, and loopback addresses (local clients, a reverse proxy on this host) exempt.
    pub max_sessions_per_client: Option<usize>,
    /// Items and bytes one list of an edge may have (more and the list is refused).
    pub max_list_items: usize,
    pub max_list_bytes: usize,
    /// Requests one session may have in flight at servers (more wait briefly, then are refused).
    pub max_calls_per_session: usize,
    /// Requests in flight at one server, from all sessions (more are refused).
    pub max_calls_per_server: usize,
    pub limits: Limits,
    /// Bytes of request bodies held at once across all connections (503 past it).
    pub max_body_budget: usize,
    pub max_connections: usize,
    /// Connections from one peer address; `None`: the default, which spares loopback peers.
    pub max_connections_per_ip: Option<usize>,
    /// Interval of SSE keep-alive comments.
    pub keepalive: Duration,
    /// Pings to registered servers, and how long one may stay silent.
    pub heartbeat: Heartbeat,
    /// Largest WebSocket message accepted from an edge.
    pub max_ws_message: usize,
    /// How long a SIGINT/SIGTERM waits for requests in flight before closing everything.
    pub shutdown_grace: Duration,
    /// Serve https:// and wss:// with these PEM files.
    pub tls: Option<TlsFiles>,
    /// Also serve `GET /metrics`, without authentication, on this address (say 127.0.0.1:9108).
    pub metrics_listen: Option<String>,
}

/// The gateway's certificate chain and key, and the CA that client certificates must chain to
/// (mTLS) when given.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".into(),
            port: 8765,
            mcp_path: "/mcp".into(),
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            session_timeout: Duration::from_secs(30 * 60),
            sse_path: "/sse".into(),
            messages_path: "/messages/".into(),
            timeout_rpc: Duration::from_secs(10),
            timeout_run_tool: Duration::from_secs(120),
            auth_tokens: Vec::new(),
            register_tokens: Vec::new(),
            max_sessions: 1024,
            max_sessions_per_client: None,
            max_queue_bytes: 256 * 1024 * 1024,
            max_list_items: 10_000,
            max_list_bytes: 8 * 1024 * 1024,
            max_calls_per_session: 256,
            max_calls_per_server: 1024,
            limits: Limits::default(),
            max_body_budget: 64 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: None,
            keepalive: Duration::from_secs(15),
            heartbeat: Heartbeat { interval: Duration::from_secs(20), timeout: Duration::from_secs(60) },
            max_ws_message: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            metrics_listen: None,
        }
    }
}

/// How long one write to a client may block before the client is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One running gateway: its configuration and its shared state.
pub(crate) struct Gateway {
    pub cfg: Config,
    pub registry: Arc<Registry>,
    /// The counters served at `/metrics`.
    pub metrics: metrics::Metrics,
    /// Bytes all client and link queues may hold together (`--max-queue-bytes`).
    pub queue_budget: Arc<Budget>,
    /// The connection caps.
    pub admission: Arc<Admission>,
    /// Bytes of request bodies held across all connections (`--max-body-budget`).
    pub body_budget: Arc<Budget>,
    /// Calls in flight at servers (waited for at shutdown).
    pub in_flight: Arc<AtomicUsize>,
    /// SSE streams being written (their last events are flushed before exit).
    pub streams: Arc<AtomicUsize>,

    /// Signs the `requestState` of the `input_required` results made for legacy edges.
    pub state_key: state::StateKey,
    /// Set by SIGINT/SIGTERM: new connections and requests get 503.
    pub shutting_down: AtomicBool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Counts one unit of work (a request in flight, an open stream) until dropped.
pub(crate) struct Tally(Arc<AtomicUsize>);

impl Tally {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Tally {
        counter.fetch_add(1, Ordering::SeqCst);
        Tally(counter.clone())
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until `counter` is zero or `deadline` passes.
fn drain(counter: &AtomicUsize, deadline: Instant) {
    while counter.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Binds the listening socket, reporting a clear error (address in use, permission, bad host).
pub(crate) fn bind(host: &str, port: u16) -> Result<TcpListener, String> {
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve --host {host:?}: {e}"))?.collect();
    TcpListener::bind(&addrs[..]).map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
}

/// Starts the gateway on an already bound listener: the acceptor runs on its own thread.
pub(crate) fn start(cfg: Config, listener: TcpListener) -> Result<Arc<Gateway>, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = match &cfg.tls {
        Some(f) => Some(crate::tls::server_config(&f.cert, &f.key, f.client_ca.as_deref())?),
        None => None,
    };
    let (http, ws) = if tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    log::info!("mcpport gateway {} listening on {http}://{addr}", env!("CARGO_PKG_VERSION"));
    if let Some(TlsFiles { client_ca: Some(ca), .. }) = &cfg.tls {
        log::info!("mTLS: clients and edges must present a certificate signed by {ca}");
    }
    log::info!(
        "endpoints: Streamable HTTP {}; legacy SSE GET {} + POST {}; per server /servers/NAME/{{mcp,sse}}; \
         edge registration {ws}://{addr}/mcp/register; health GET /health",
        cfg.mcp_path,
        cfg.sse_path,
        cfg.messages_path
    );
    match (cfg.auth_tokens.is_empty(), cfg.register_tokens.is_empty()) {
        (true, true) => log::warn!(
            "NO AUTHENTICATION: no --auth-token set, so anyone who can reach this port can register servers and call tools"
        ),
        (true, false) => log::warn!("NO CLIENT AUTHENTICATION: no --auth-token set, so anyone who can reach this port can call tools"),
        _ => {}
    }
    let queue_budget = Budget::new(cfg.max_queue_bytes);
    let admission = Admission::new(cfg.max_connections, cfg.max_connections_per_ip);
    let body_budget = Budget::new(cfg.max_body_budget);
    let gw = Arc::new(Gateway {
        cfg,
        registry: Arc::new(Registry::new()),
        metrics: metrics::Metrics::new(),
        queue_budget,
        admission,
        body_budget,
        in_flight: Arc::new(AtomicUsize::new(0)),
        streams: Arc::new(AtomicUsize::new(0)),

        state_key: state::StateKey::random(),
        shutting_down: AtomicBool::new(false),
        tls,
    });
    let gw2 = gw.clone();
    thread::spawn("acceptor", move || accept_loop(&gw2, &listener)).map_err(|e| e.to_string())?;
    let gw3 = gw.clone();
    thread::spawn("session-reaper", move || expire_sessions(&gw3)).map_err(|e| e.to_string())?;
    if let Some(addr) = &gw.cfg.metrics_listen {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
        log::info!("metrics on http://{}/metrics", listener.local_addr().map_err(|e| e.to_string())?);
        let gw4 = gw.clone();
        thread::spawn("metrics", move || metrics_server::serve(&gw4, &listener))
            .map_err(|e| e.to_string())?;
    }
    Ok(gw)
}

/// Ends Streamable HTTP sessions nobody used for `--session-timeout` (clients often vanish
/// without DELETE). Wakes a few times per timeout; the work is a scan of the session table.
fn expire_sessions(gw: &Gateway) {
    let every = (gw.cfg.session_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        std::thread::sleep(every);
        let n = gw.registry.expire_sessions(gw.cfg.session_timeout);
        if n > 0 {
            log::info!("ended {n} Streamable HTTP sessions idle for over {:?}", gw.cfg.session_timeout);
        }
    }
}

/// Binds and serves until SIGINT or SIGTERM, then shuts down gracefully: the whole of
/// `mcpport gateway`.
pub(crate) fn run(cfg: Config) -> Result<(), String> {
    let signal_fd = sys::signal_pipe().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = bind(&cfg.host, cfg.port)?;
    let gw = start(cfg, listener)?;
    loop {
        let ready = sys::poll(&[(signal_fd, false)], None).map_err(|e| e.to_string())?;
        if ready[0].readable && sys::take_signal() {
            break;
        }
    }
    shutdown(&gw);
    Ok(())
}

/// Stops taking work, lets what is in flight finish (for `--shutdown-grace` at most), then
/// tells edges (close 1001) and clients (their streams end) and returns.
fn shutdown(gw: &Gateway) {
    gw.shutting_down.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + gw.cfg.shutdown_grace;
    let busy = gw.in_flight.load(Ordering::SeqCst);
    log::info!("shutting down: {busy} requests in flight, waiting up to {:?}", gw.cfg.shutdown_grace);
    drain(&gw.in_flight, deadline);
    for up in gw.registry.servers() {
        up.close(1001, "the gateway is shutting down");
    }
    gw.registry.end_streams();
    // Streams write what is queued and end; edges answer the close.
    let deadline = Instant::now() + Duration::from_secs(2);
    drain(&gw.streams, deadline);
    while !gw.registry.servers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    log::info!("shut down; {} requests were still in flight", gw.in_flight.load(Ordering::SeqCst));
}

fn accept_loop(gw: &Arc<Gateway>, listener: &TcpListener) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => admit(gw, stream),
            // Out of descriptors and the like: wait a moment instead of spinning.
            Err(e) => {
                log::error!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A connection's thread: TLS if configured, then HTTP until the connection ends.
///
/// The rare paths (a TLS handshake, plain HTTP on a TLS port) live in functions of their own
/// that are never inlined: their locals would otherwise widen this frame, and a thread's stack
/// pages, once touched (stack probes touch every page of a frame), stay resident for its life.
fn serve_accepted(gw: &Arc<Gateway>, stream: TcpStream, peer: SocketAddr, ticket: &admission::Ticket) {
    let _ = stream.set_nodelay(true);
    let transport: Box<dyn Transport> = match &gw.tls {
        None => Box::new(stream),
        Some(_) if crate::tls::speaks_plain_http(&stream) => return refuse_plain_http(stream, peer),
        Some(config) => match accept_tls(config, stream) {
            Ok(tls) => tls,
            Err(e) => return log::warn!("{peer}: TLS handshake failed: {e}"),
        },
    };
    // A client that stops reading must not hold a thread forever: its writes fail instead.
    let _ = transport.socket().set_write_timeout(Some(WRITE_TIMEOUT));
    routes::serve_connection(gw, transport, peer, ticket);
}

#[inline(never)]
fn accept_tls(config: &Arc<rustls::ServerConfig>, stream: TcpStream) -> Result<Box<dyn Transport>, String> {
    crate::tls::accept(config.clone(), stream)
        .map(|tls| Box::new(tls) as Box<dyn Transport>)
        .map_err(|e| e.to_string())
}

/// Answers a client that spoke plain HTTP to the TLS port, and says what to do instead.
#[inline(never)]
#[cold]
fn refuse_plain_http(stream: TcpStream, peer: SocketAddr) {
    log::warn!("{peer}: a client spoke plain HTTP to this TLS port (it should use https:// or wss://)");
    let resp = Response::error(400, "this port speaks TLS: use https:// (or wss:// to register)");
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = resp.write_to(&mut &stream, false);
    // Take in what the client sent, so that closing does not reset the answer away.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = std::io::copy(&mut std::io::Read::take(&stream, 64 * 1024), &mut std::io::sink());
}

/// Gives a new connection its thread, or answers 503 when the caps leave no room.
fn admit(gw: &Arc<Gateway>, stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    if gw.shutting_down.load(Ordering::SeqCst) {
        refuse_busy(stream, "the gateway is shutting down");
        return;
    }
    let ticket = match gw.admission.admit(peer.ip()) {
        Ok(ticket) => ticket,
        Err(why) => {
            log::warn!("refusing {peer}: {why}");
            refuse_busy(stream, &why);
            return;
        }
    };
    let gw2 = gw.clone();
    let spawned = thread::spawn(format!("conn-{peer}"), move || serve_accepted(&gw2, stream, peer, &ticket));
    if let Err(e) = spawned {
        log::error!("cannot start a thread for {peer}: {e}");
    }
}

fn refuse_busy(mut stream: TcpStream, why: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let resp = Response::error(503, why).header("Retry-After", "1");
    let _ = resp.write_to(&mut stream, false);
    let _ = stream.flush();
}
