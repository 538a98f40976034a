//! The register process: every MCP server it fronts on a thread of its own (`serve`, each its own
//! link to the gateway, with its own name, backoff and restarts), the process's signals, the
//! health server, and the reload of a `--config` file on SIGHUP.
//!
//! The main thread owns the set of running servers and nothing else touches it: it waits on the
//! signal pipe (a quarter-second at most, to notice servers that ended on their own), and
//! - on SIGINT or SIGTERM asks every server to stop and joins them (each stops its program
//!   within `child::STOP_GRACE` plus the kill wait), then exits 0;
//! - on SIGHUP with `--config` reads the file again: a file that no longer reads is refused
//!   and the running set stays; otherwise servers no longer named stop, servers whose entry
//!   changed restart, new ones start, and untouched ones keep their links and calls in flight
//!   (with `--stdio`, SIGHUP stops it as SIGTERM does).
//!
//! Bounds: at most `servers_file`'s server count, so as many server threads (each with its
//! program's stderr reader, or the HTTP adapter's threads) and links; nothing else grows here.
//! With `--stdio` there is one server, and the process exits with its status when it ends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::health::{self, Board};
use super::servers_file::{self, Entry};
use super::stop::Stop;
use super::{serve, Config, Upstream};
use crate::sys;

/// How long the main thread waits on signals before looking at the servers again.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// One server's loop, running.
struct Server {
    upstream: Upstream,
    stop: Arc<Stop>,
    thread: JoinHandle<Result<i32, String>>,
}

/// Runs register to the end: the `--stdio` server, or every server of `--config`. The process
/// exit status.
pub(crate) fn run(base: &Config) -> Result<i32, String> {
    let signal_fd = sys::signal_pipe().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // At once: a SIGHUP during start-up must not kill the process (its servers with it, by
    // `PR_SET_PDEATHSIG`, rather than stopped).
    sys::reload_on_sighup();
    if base.gateway_url.starts_with("wss://") {
        crate::tls::client_config(&base.tls)?; // bad TLS files are a mistake to report, not to retry
    }
    if base.tls.no_verify {
        log::warn!(
            "--no-ssl-verify: the gateway's certificate is NOT checked; anyone in the path can pose as it"
        );
    }
    let board = Arc::new(Board::default());
    if let Some(h) = &base.health {
        health::start(h.clone(), board.clone())?;
    }
    match &base.config_file {
        None => run_one(base, signal_fd, &board),
        Some(file) => {
            Fleet { base, file, board, running: BTreeMap::new(), ids: BTreeMap::new() }.run(signal_fd)
        }
    }
}

/// The `--stdio` server: the process ends when it does, with its status. SIGHUP (a terminal
/// hanging up; there is no file to read again) stops it as SIGTERM does, the server stopped in
/// order rather than killed.
fn run_one(cfg: &Config, signal_fd: i32, board: &Arc<Board>) -> Result<i32, String> {
    let server = start(cfg.clone(), board)?;
    loop {
        let signals = wait_for_signals(signal_fd);
        if signals.stop || signals.reload {
            server.stop.request("signal received");
            return join(server);
        }
        if server.thread.is_finished() {
            return join(server);
        }
    }
}

/// Waits up to `LOOK_EVERY` for a signal; which came.
fn wait_for_signals(signal_fd: i32) -> sys::Signals {
    match sys::poll(&[(signal_fd, false)], Some(LOOK_EVERY)) {
        Ok(ready) if ready[0].readable => sys::take_signals(),
        Ok(_) => sys::Signals::default(),
        Err(e) => {
            log::error!("poll failed while waiting for signals: {e}");
            std::thread::sleep(LOOK_EVERY);
            sys::Signals::default()
        }
    }
}

/// Starts `cfg`'s server loop on a thread of its own, on the health board.
fn start(cfg: Config, board: &Arc<Board>) -> Result<Server, String> {
    let stop = Arc::new(Stop::new().map_err(|e| format!("cannot start server {:?}: {e}", cfg.server_name))?);
    let status = board.add(&cfg.server_name, cfg.upstream.transport());
    let upstream = cfg.upstream.clone();
    let (board, asked) = (board.clone(), stop.clone());
    let name = format!("server-{}", cfg.server_name);
    let thread = crate::thread::spawn(name, move || {
        let ended = serve(&cfg, &asked, status.clone());
        board.remove(&status);
        ended
    })
    .map_err(|e| format!("cannot start a thread for a server: {e}"))?;
    Ok(Server { upstream, stop, thread })
}

/// Waits for a server's loop to end; its status (a panic is an error).
fn join(server: Server) -> Result<i32, String> {
    server.thread.join().unwrap_or_else(|_| Err("the server's loop panicked".into()))
}

/// The servers of a `--config` file, as the main thread keeps them.
struct Fleet<'a> {
    base: &'a Config,
    file: &'a Path,
    board: Arc<Board>,
    running: BTreeMap<String, Server>,
    /// Each name's server id, kept for the process's life (a server restarted by a reload is
    /// the same server to the gateway, which may still hold its old link for a moment); only
    /// the names of the file's last read.
    ids: BTreeMap<String, String>,
}

impl Fleet<'_> {
    fn run(mut self, signal_fd: i32) -> Result<i32, String> {
        let first = self.read()?;
        if first.is_empty() {
            return Err(format!("{}: no server to run", self.file.display()));
        }
        self.apply(first);
        let mut last = Ok(0);
        loop {
            let signals = wait_for_signals(signal_fd);
            if signals.stop {
                self.stop_all("signal received");
                return Ok(0);
            }
            if signals.reload {
                self.reload();
            }
            if let Some(ended) = self.reap_ended() {
                last = ended;
            }
            if self.running.is_empty() {
                log::error!("every server of {} has ended; register exits", self.file.display());
                return last;
            }
        }
    }

    /// Reads the file: its entries as server configurations; its warnings and the entries it
    /// skips are logged.
    fn read(&mut self) -> Result<Vec<Config>, String> {
        let loaded = servers_file::load(self.file)?;
        for warning in &loaded.warnings {
            log::warn!("{}: {warning}", self.file.display());
        }
        for skipped in &loaded.skipped {
            log::error!("{}: {skipped}; that server is not started", self.file.display());
        }
        self.board.set_down(loaded.skipped);
        self.ids.retain(|name, _| loaded.entries.iter().any(|e| &e.name == name));
        Ok(loaded.entries.into_iter().map(|e| self.config_of(e)).collect())
    }

    /// A server's configuration: the command line's, with the entry's name and server, and the
    /// name's server id.
    fn config_of(&mut self, entry: Entry) -> Config {
        let mut cfg = self.base.clone();
        cfg.server_id = self.ids.entry(entry.name.clone()).or_insert_with(sys::random_uuid).clone();
        cfg.server_name = entry.name;
        cfg.upstream = Upstream::Entry(entry.source);
        cfg
    }

    /// SIGHUP: the file again, applied; or, if it no longer reads, refused.
    fn reload(&mut self) {
        log::info!("SIGHUP: reading {} again", self.file.display());
        match self.read() {
            Ok(wanted) if wanted.is_empty() => {
                log::error!("{} names no server to run now; the running servers stay", self.file.display())
            }
            Ok(wanted) => self.apply(wanted),
            Err(why) => log::error!("{why}; not reloaded, the running servers stay"),
        }
    }

    /// Makes the running set what `wanted` says: removed servers stop, changed ones restart, new
    /// ones start, untouched ones are left alone. Stops are asked of all at once, then joined.
    fn apply(&mut self, wanted: Vec<Config>) {
        let (mut added, mut changed, mut kept) = (0, 0, 0);
        let mut ending = Vec::new();
        let names: Vec<&str> = wanted.iter().map(|c| c.server_name.as_str()).collect();
        let gone: Vec<String> =
            self.running.keys().filter(|n| !names.contains(&n.as_str())).cloned().collect();
        for name in &gone {
            let server = self.running.remove(name).expect("listed");
            server.stop.request("removed from the config file");
            ending.push(server);
        }
        let mut starting = Vec::new();
        for cfg in wanted {
            match self.running.get(&cfg.server_name) {
                Some(server) if server.upstream == cfg.upstream => kept += 1,
                Some(_) => {
                    let server = self.running.remove(&cfg.server_name).expect("found");
                    server.stop.request("changed in the config file");
                    ending.push(server);
                    changed += 1;
                    starting.push(cfg);
                }
                None => {
                    added += 1;
                    starting.push(cfg);
                }
            }
        }
        for server in ending {
            let _ = join(server);
        }
        for cfg in starting {
            let name = cfg.server_name.clone();
            match start(cfg, &self.board) {
                Ok(server) => {
                    self.running.insert(name, server);
                }
                Err(why) => log::error!("{why}"),
            }
        }
        log::info!(
            "{}: {} servers: {added} started, {changed} restarted, {} stopped, {kept} kept",
            self.file.display(),
            self.running.len(),
            gone.len()
        );
    }

    /// Joins the servers whose loops ended on their own; the last one's status, if any ended.
    fn reap_ended(&mut self) -> Option<Result<i32, String>> {
        let ended: Vec<String> =
            self.running.iter().filter(|(_, s)| s.thread.is_finished()).map(|(n, _)| n.clone()).collect();
        let mut last = None;
        for name in ended {
            let server = self.running.remove(&name).expect("listed");
            let status = join(server);
            let why = match &status {
                Ok(code) => format!("server {name:?} ended (status {code}); it starts again on a reload"),
                Err(why) => format!("server {name:?} ended: {why}; it starts again on a reload"),
            };
            log::error!("{why}");
            self.board.add_down(why);
            last = Some(status);
        }
        last
    }

    fn stop_all(&mut self, why: &'static str) {
        let servers = std::mem::take(&mut self.running);
        for server in servers.values() {
            server.stop.request(why);
        }
        for (_, server) in servers {
            let _ = join(server);
        }
    }
}
