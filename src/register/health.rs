//! The original's local health server (`--port N`): answers `200 ok` only when the MCP server is
//! running and, with `--require-gateway`, the gateway link is up; otherwise `503` with the
//! reason. Health must tell the truth, so it reads the live state, never a cached verdict.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::{Conn, Limits, Response};
use crate::thread;
use crate::thread::lock;

/// What register is doing, as the health server reports it.
#[derive(Default)]
pub(crate) struct Status {
    /// The generation of the running child; 0 when none runs. (A generation, not a flag, so the
    /// end of a dead child's output can never mark its successor as not running.)
    child: AtomicU64,
    pub link_up: AtomicBool,
    /// Why the link is down, when it is.
    pub link_error: Mutex<String>,
}

impl Status {
    pub(crate) fn child_started(&self, generation: u64) {
        self.child.store(generation, Ordering::SeqCst);
    }

    /// Child `generation` ended; says nothing about a newer child.
    pub(crate) fn child_ended(&self, generation: u64) {
        let _ = self.child.compare_exchange(generation, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn child_running(&self) -> bool {
        self.child.load(Ordering::SeqCst) != 0
    }

    pub(crate) fn set_link(&self, up: bool, why: &str) {
        self.link_up.store(up, Ordering::SeqCst);
        *lock(&self.link_error) = why.to_string();
    }
}

/// Where and how to serve health checks.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub host: String,
    pub port: u16,
    pub endpoints: Vec<String>,
    pub cors: bool,
    pub require_gateway: bool,
}

/// Binds the health server and serves it on its own thread.
pub(crate) fn start(cfg: Config, status: Arc<Status>) -> Result<(), String> {
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .map_err(|e| format!("health server on {}:{}: {e}", cfg.host, cfg.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    log::info!("health server listening on http://{addr} ({})", cfg.endpoints.join(", "));
    thread::spawn("health", move || {
        for stream in listener.incoming().flatten() {
            serve(&cfg, &status, stream);
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// One request per connection, with tight limits: a health check is small and quick.
fn serve(cfg: &Config, status: &Status, stream: TcpStream) {
    let limits = Limits {
        max_header_bytes: 4096,
        max_body: 0,
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut conn = Conn::new(stream);
    let Ok((req, _)) = conn.read_request(&limits) else { return };
    let mut resp = if !cfg.endpoints.iter().any(|e| e.trim_end_matches('/') == req.path.trim_end_matches('/'))
    {
        Response::text(404, "not found")
    } else if req.method == "OPTIONS" && cfg.cors {
        Response::empty(204).header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
    } else {
        verdict(cfg, status)
    };
    if cfg.cors {
        resp = resp.header("Access-Control-Allow-Origin", "*");
    }
    let _ = resp.write_to(&mut conn.stream, false);
}

fn verdict(cfg: &Config, status: &Status) -> Response {
    if !status.child_running() {
        return Response::text(503, "the MCP server is not running");
    }
    if cfg.require_gateway && !status.link_up.load(Ordering::SeqCst) {
        return Response::text(503, &format!("not connected to the gateway: {}", lock(&status.link_error)));
    }
    Response::text(200, "ok")
}
