//! The original's local health server (`--port N`): answers `200 ok` only when every MCP server
//! register fronts is running and, with `--require-gateway`, linked to the gateway; otherwise
//! `503` with the reason. With a `--config` file the body lists each server, its transport and
//! state, one per line. Health must tell the truth, so it reads the live state (the `Board`
//! every server loop writes its `Status` to), never a cached verdict.

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

/// Every server's status, by name, in the order they started; each server loop adds its own and
/// removes it when it ends (at most as many as servers run).
#[derive(Default)]
pub(crate) struct Board {
    servers: Mutex<Vec<(String, &'static str, Arc<Status>)>>,
    /// What should run and does not, one line each: a file's entries that could not start (an
    /// unset variable), servers whose loop ended (till a reload starts them again). Each makes
    /// the verdict 503. As many as the file has servers.
    down: Mutex<Vec<String>>,
}

impl Board {
    /// A new server on the board; its status, for its loop to keep up to date.
    pub(crate) fn add(&self, name: &str, transport: &'static str) -> Arc<Status> {
        let status = Arc::new(Status::default());
        let mut servers = lock(&self.servers);
        servers.retain(|(n, _, _)| n != name);
        servers.push((name.to_string(), transport, status.clone()));
        status
    }

    /// What should run and does not, replaced whole (a file read again).
    pub(crate) fn set_down(&self, lines: Vec<String>) {
        *lock(&self.down) = lines;
    }

    /// One more server that should run and does not.
    pub(crate) fn add_down(&self, line: String) {
        lock(&self.down).push(line);
    }

    /// The server's loop ended: its status leaves (by identity: a successor of the same name
    /// that already added its own stays).
    pub(crate) fn remove(&self, status: &Arc<Status>) {
        lock(&self.servers).retain(|(_, _, s)| !Arc::ptr_eq(s, status));
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
    /// List each server in the body (a `--config` file's servers).
    pub list: bool,
}

/// Binds the health server and serves it on its own thread.
pub(crate) fn start(cfg: Config, board: Arc<Board>) -> Result<(), String> {
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .map_err(|e| format!("health server on {}:{}: {e}", cfg.host, cfg.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    log::info!("health server listening on http://{addr} ({})", cfg.endpoints.join(", "));
    thread::spawn("health", move || {
        for stream in listener.incoming().flatten() {
            serve(&cfg, &board, stream);
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// One request per connection, with tight limits: a health check is small and quick.
fn serve(cfg: &Config, board: &Board, stream: TcpStream) {
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
        verdict(cfg, board)
    };
    if cfg.cors {
        resp = resp.header("Access-Control-Allow-Origin", "*");
    }
    let _ = resp.write_to(&mut conn.stream, false);
}

/// 200 when every server is well, else 503; the body says why, or lists every server.
fn verdict(cfg: &Config, board: &Board) -> Response {
    let servers = lock(&board.servers);
    let states: Vec<(String, Option<String>, bool)> = servers
        .iter()
        .map(|(name, transport, s)| {
            (format!("{name} ({transport})"), trouble(cfg, s), s.link_up.load(Ordering::SeqCst))
        })
        .collect();
    drop(servers);
    let down = lock(&board.down).clone();
    let well = !states.is_empty() && states.iter().all(|(_, t, _)| t.is_none()) && down.is_empty();
    let code = if well { 200 } else { 503 };
    if !cfg.list {
        let first = states.into_iter().find_map(|(_, t, _)| t);
        return Response::text(
            code,
            first.as_deref().unwrap_or(if well { "ok" } else { "the MCP server is not running" }),
        );
    }
    let mut body = String::from(if well { "ok\n" } else { "not ok\n" });
    for (server, t, linked) in &states {
        let fine =
            if *linked { "running, linked to the gateway" } else { "running, not linked to the gateway" };
        body.push_str(&format!("{server}: {}\n", t.as_deref().unwrap_or(fine)));
    }
    for line in &down {
        body.push_str(&format!("not running: {line}\n"));
    }
    if states.is_empty() {
        body.push_str("no MCP server is running\n");
    }
    Response::text(code, &body)
}

/// What is wrong with one server, if anything.
fn trouble(cfg: &Config, status: &Status) -> Option<String> {
    if !status.child_running() {
        return Some("the MCP server is not running".into());
    }
    if cfg.require_gateway && !status.link_up.load(Ordering::SeqCst) {
        return Some(format!("not connected to the gateway: {}", lock(&status.link_error)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop that ended takes its own status off the board, never a successor's of the same
    /// name (a server restarted by a reload adds its status before the old loop is joined).
    #[test]
    fn a_status_leaves_the_board_by_identity() {
        let board = Board::default();
        let old = board.add("fs", "stdio");
        let other = board.add("ha", "sse");
        let successor = board.add("fs", "stdio");
        board.remove(&old);
        let names: Vec<_> =
            lock(&board.servers).iter().map(|(n, t, s)| (n.clone(), *t, Arc::as_ptr(s))).collect();
        assert_eq!(
            names,
            [("ha".into(), "sse", Arc::as_ptr(&other)), ("fs".into(), "stdio", Arc::as_ptr(&successor))]
        );
        board.remove(&successor);
        board.remove(&other);
        assert!(lock(&board.servers).is_empty());
    }

    /// With a file's servers listed: 200 only while every server runs and nothing that should
    /// run does not; an entry that could not start or a server that ended makes it 503, and is
    /// listed.
    #[test]
    fn what_should_run_and_does_not_makes_the_verdict_503() {
        let cfg = Config {
            host: String::new(),
            port: 0,
            endpoints: vec![],
            cors: false,
            require_gateway: false,
            list: true,
        };
        let board = Board::default();
        let body = |r: &Response| String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(verdict(&cfg, &board).status, 503, "nothing runs");
        board.add("fs", "stdio").child_started(1);
        let ok = verdict(&cfg, &board);
        assert_eq!(
            (ok.status, body(&ok)),
            (200, "ok\nfs (stdio): running, not linked to the gateway\n".into())
        );
        board.set_down(vec![
            "server \"ha\": headers.Authorization uses ${env:HA_TOKEN}, which is not set".into()
        ]);
        let down = verdict(&cfg, &board);
        assert_eq!(down.status, 503);
        assert!(body(&down).contains("not running: server \"ha\""), "{}", body(&down));
        board.set_down(vec![]);
        board.add_down("server \"x\" ended (status 3); it starts again on a reload".into());
        assert_eq!(verdict(&cfg, &board).status, 503);
        board.set_down(vec![]);
        assert_eq!(verdict(&cfg, &board).status, 200);
    }
}
