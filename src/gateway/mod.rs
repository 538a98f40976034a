//! `mcpport gateway`: binds one port, accepts connections, and gives each its own thread; on
//! SIGINT/SIGTERM, shuts down gracefully.
//!
//! The acceptor enforces the connection caps (`admission.rs`: global and per peer address,
//! closing idle connections to make room, 503 when nothing can) and spawns a named thread per
//! connection through `thread::spawn`. What a connection becomes (plain requests, an SSE stream,
//! a registered edge server's WebSocket) is decided in `front/routes.rs`.
//!
//! The sub-folders are the gateway's layers, each depending only on those below it (ARCHITECTURE.md
//! draws them): `front/` (HTTP routes and the client transports) and `ops/` (status, metrics) on
//! top; `views/` (the gateway as an MCP server) and `edges/` (the edge links' owner threads);
//! `shared.rs` (the `Gateway` every thread holds); `tables/` (servers, sessions, the catalog);
//! `clients/` (a session, its mailboxes, a call's caller); `link/` (the sans-IO state machine of
//! one edge link); and, below all, `config.rs`, `credential.rs`, `error.rs`, `metrics.rs` and
//! `admission.rs`.

pub(crate) mod access;
pub(crate) mod admission;
#[cfg(feature = "oauth-server")]
pub(crate) mod authz;
pub(crate) mod clients;
pub(crate) mod config;
pub(crate) mod credential;
pub(crate) mod edges;
pub(crate) mod error;
pub(crate) mod front;
pub(crate) mod link;
pub(crate) mod metrics;
pub(crate) mod ops;
pub(crate) mod shared;
pub(crate) mod tables;
pub(crate) mod views;

pub(crate) use config::{Config, TlsFiles};

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::access::Access;
use crate::gateway::admission::{Admission, Ticket};
use crate::gateway::shared::{drain, Gateway, WRITE_TIMEOUT};
use crate::gateway::tables::registry::Registry;
use crate::http::{Budget, Response, Transport};
use crate::{sys, thread};

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
    log::info!(
        "status page (open it in a browser: the servers, their tools, how to connect): {http}://{addr}/"
    );
    match (!cfg.clients_need_token(), cfg.auth_tokens.is_empty() && cfg.register_tokens.is_empty()) {
        (true, true) => log::warn!(
            "NO AUTHENTICATION: no --auth-token set, so anyone who can reach this port can register servers and call tools"
        ),
        (true, false) => log::warn!("NO CLIENT AUTHENTICATION: no --auth-token set, so anyone who can reach this port can call tools"),
        (false, true) => log::warn!(
            "NO EDGE AUTHENTICATION: clients need OAuth tokens, but anyone who can reach this port can register \
             servers (set --register-token)"
        ),
        _ => {}
    }
    let queue_budget = Budget::new(cfg.max_queue_bytes);
    let admission = Admission::new(cfg.max_connections, cfg.max_connections_per_ip);
    let body_budget = Budget::new(cfg.max_body_budget);
    #[cfg(feature = "oauth-server")]
    let authz = match cfg.oauth.builtin {
        true => Some(Arc::new(authz::Server::open(&cfg)?)),
        false => None,
    };
    #[cfg(feature = "oauth-server")]
    let builtin = authz.as_ref().map(|a| a.trust());
    #[cfg(not(feature = "oauth-server"))]
    let builtin = None;
    let access = Arc::new(Access::new(&cfg, builtin)?);
    let gw = Arc::new(Gateway {
        #[cfg(feature = "oauth-server")]
        authz,
        registry: Arc::new(Registry::new(access.clone(), cfg.bare_names)),
        access,
        cfg,
        metrics: crate::gateway::metrics::Metrics::new(),
        queue_budget,
        admission,
        body_budget,
        in_flight: Arc::new(AtomicUsize::new(0)),
        streams: Arc::new(AtomicUsize::new(0)),

        state_key: crate::gateway::link::state::StateKey::random(),
        shutting_down: AtomicBool::new(false),
        tls,
    });
    announce_oauth(&gw);
    let gw2 = gw.clone();
    thread::spawn("acceptor", move || accept_loop(&gw2, &listener)).map_err(|e| e.to_string())?;
    let gw3 = gw.clone();
    thread::spawn("session-reaper", move || expire_sessions(&gw3)).map_err(|e| e.to_string())?;
    if let Some(addr) = &gw.cfg.metrics_listen {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
        log::info!("metrics on http://{}/metrics", listener.local_addr().map_err(|e| e.to_string())?);
        let gw4 = gw.clone();
        thread::spawn("metrics", move || crate::gateway::ops::metrics_server::serve(&gw4, &listener))
            .map_err(|e| e.to_string())?;
    }
    Ok(gw)
}

/// `mcpport oauth list|revoke`: prints the clients of the state directory, or revokes one.
pub(crate) fn oauth_command(state_dir: &str, revoke: Option<&str>) -> Result<i32, String> {
    #[cfg(feature = "oauth-server")]
    {
        authz::run_command(state_dir, revoke)
    }
    #[cfg(not(feature = "oauth-server"))]
    {
        let _ = (state_dir, revoke);
        Err("this build has no built-in authorization server (the oauth-server feature)".into())
    }
}

/// Says how clients get OAuth tokens, and fetches the external issuers' keys once in the
/// background, so that a wrong issuer URL shows in the log before the first client comes.
fn announce_oauth(gw: &Arc<Gateway>) {
    if !gw.access.oauth() {
        return;
    }
    let issuers: Vec<&str> = gw.access.issuers.ids().collect();
    log::info!("OAuth: access tokens from {} accepted (scope {:?})", issuers.join(", "), gw.access.scope);
    if gw.cfg.oauth.public_url.is_none() {
        log::warn!(
            "OAuth without --public-url: each endpoint's resource URL is made from the request's Host; behind a \
             reverse proxy, set --public-url to the address clients use"
        );
    }
    let gw2 = gw.clone();
    if let Err(e) = thread::spawn("oauth-keys", move || gw2.access.issuers.warm_up()) {
        log::warn!("OAuth: cannot fetch the issuers' keys ahead: {e}");
    }
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
/// `mcpport gateway`. SIGHUP re-reads `--policy`.
pub(crate) fn run(cfg: Config) -> Result<(), String> {
    let signal_fd = sys::signal_pipe().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    sys::reload_on_sighup();
    let listener = bind(&cfg.host, cfg.port)?;
    let gw = start(cfg, listener)?;
    loop {
        let ready = sys::poll(&[(signal_fd, false)], None).map_err(|e| e.to_string())?;
        if !ready[0].readable {
            continue;
        }
        let signals = sys::take_signals();
        if signals.reload {
            gw.access.reload_policy();
        }
        if signals.stop {
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
fn serve_accepted(gw: &Arc<Gateway>, stream: TcpStream, peer: SocketAddr, ticket: &Ticket) {
    let _ = stream.set_nodelay(true);
    let transport: Box<dyn Transport> = match &gw.tls {
        None => Box::new(stream),
        Some(config) => {
            // Until its handshake is done, a TLS connection waits for its client like one waiting
            // for a request: listed idle, so a socket that sends nothing can be closed for room.
            let idle = ticket.idle(&stream);
            let tls = if crate::tls::speaks_plain_http(&stream) {
                return refuse_plain_http(stream, peer);
            } else {
                accept_tls(config, stream)
            };
            if !idle.end() {
                return log::debug!("{peer}: closed during its TLS handshake to make room");
            }
            match tls {
                Ok(tls) => tls,
                Err(e) => return log::warn!("{peer}: TLS handshake failed: {e}"),
            }
        }
    };
    // A client that stops reading must not hold a thread forever: its writes fail instead.
    let _ = transport.socket().set_write_timeout(Some(WRITE_TIMEOUT));
    crate::gateway::front::routes::serve_connection(gw, transport, peer, ticket);
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
