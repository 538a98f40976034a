//! `mcpport register`: front this device's MCP servers (stdio programs, or HTTP servers on the
//! LAN), dial out to the gateway, register each, and relay JSON-RPC both ways; heal by itself
//! when a link breaks.
//!
//! One server, one loop (`serve`), on a thread of its own (`fleet` starts them: one for
//! `--stdio`, one per entry of a `--config` file): make sure the server runs (restarting it per
//! `--restart`, with backoff against crash loops), dial the gateway, relay until the link ends,
//! wait a capped, jittered backoff, and dial again. The server keeps running across links. A loop
//! ends when its server exits and `--restart` says not to bring it back (its status, never 0 for
//! `never`), when the gateway cannot be reached at start-up with `--require-gateway` or the
//! `--gateway-url` is wrong (an error), or when its `Stop` is requested (status 0): a signal, or
//! a reload that dropped or changed it. Whatever ends it, the server's whole process group is
//! stopped first.
//!
//! Modules depend downward only: `fleet` (the process: signals, reloads, the health server) →
//! this loop → `bridge` (one link) → `relay` (the state machine, pure) and `child` (the server
//! and its pipes: a process, or `upstream_http` for an HTTP server) → `health` (the status it
//! serves); `servers_file` reads `--config`.

pub(crate) mod backoff;
pub(crate) mod bridge;
pub(crate) mod child;
pub(crate) mod fleet;
pub(crate) mod handshake;
pub(crate) mod health;
pub(crate) mod pipes;
pub(crate) mod relay;
pub(crate) mod servers_file;
pub(crate) mod stop;
pub(crate) mod upstream_http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys;
use crate::ws::Heartbeat;
use backoff::{Backoff, STABLE};
use bridge::{Ended, Ends};
use child::ChildGuard;
use handshake::DialError;
use health::Status;
use relay::{Relay, MAX_PENDING};
use stop::Stop;

/// Everything `mcpport register` was told on its command line, validated. (No `Debug`: its
/// headers hold tokens.)
#[derive(Clone)]
pub(crate) struct Config {
    /// The MCP server fronted (one `--stdio` server; each `--config` entry's replaces it).
    pub upstream: Upstream,
    /// `--config FILE`: every server it names, re-read on SIGHUP.
    pub config_file: Option<std::path::PathBuf>,
    pub gateway_url: String,
    pub server_name: String,
    /// Kept for the life of the process, so the gateway knows a reconnect from a newcomer.
    pub server_id: String,
    /// This edge, as the gateway's status shows it beside each of its servers: the host's name
    /// and a mark of this process (`raspberrypi#1f2e3d4c`), the same for all its servers.
    pub edge: String,
    /// Extra headers for the WebSocket upgrade (`--header "Key: Value"`).
    pub headers: Vec<(String, String)>,
    pub heartbeat: Heartbeat,
    pub max_ws_message: usize,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Exit if the gateway cannot be reached at start-up (else keep trying).
    pub require_gateway: bool,
    pub restart: Restart,
    pub health: Option<health::Config>,
    /// What wss:// trusts and presents.
    pub tls: crate::tls::ClientOptions,
}

impl Config {
    /// A configuration with the defaults of every optional flag.
    pub(crate) fn new(upstream: Upstream, gateway_url: String, server_name: String) -> Config {
        Config {
            upstream,
            config_file: None,
            gateway_url,
            server_name,
            server_id: sys::random_uuid(),
            edge: format!("{}#{}", sys::host_name(), &sys::random_uuid()[..8]),
            headers: Vec::new(),
            heartbeat: Heartbeat { interval: Duration::from_secs(20), timeout: Duration::from_secs(40) },
            max_ws_message: 16 * 1024 * 1024,
            reconnect_max: Duration::from_secs(30),
            require_gateway: false,
            restart: Restart::Never,
            health: None,
            tls: crate::tls::ClientOptions::default(),
        }
    }
}

/// The MCP server an edge fronts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Upstream {
    /// `--stdio CMD`: run with `sh -c`.
    Shell(String),
    /// An entry of a `--config` file: a program run as given, or an HTTP server.
    Entry(servers_file::Source),
}

impl Upstream {
    /// How the edge speaks to it, as the status pages say.
    pub(crate) fn transport(&self) -> &'static str {
        match self {
            Upstream::Shell(_) | Upstream::Entry(servers_file::Source::Stdio { .. }) => "stdio",
            Upstream::Entry(servers_file::Source::Http { sse: true, .. }) => "sse",
            Upstream::Entry(servers_file::Source::Http { sse: false, .. }) => "streamable-http",
        }
    }
}

/// When to bring the MCP server back after it exits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Restart {
    Never,
    OnFailure,
    Always,
}

/// Serves one MCP server to the end; returns its exit status. `status` is what the health
/// server reports of it.
pub(crate) fn serve(cfg: &Config, stop: &Stop, status: Arc<Status>) -> Result<i32, String> {
    let mut sup = Supervisor {
        cfg,
        status: status.clone(),
        stop,
        child: None,
        generation: 0,
        relay: Relay::new(MAX_PENDING),
        started: Instant::now(),
        crashes: Backoff::new(cfg.reconnect_max),
    };
    let mut links = Backoff::new(cfg.reconnect_max);
    let mut ever_connected = false;
    loop {
        if let Some(code) = sup.ensure_child()? {
            return Ok(code);
        }
        // A stop that came while dialing (which can take CONNECT_TIMEOUT) ends it here.
        if stop.requested() {
            sup.stop(stop.why());
            return Ok(0);
        }
        let connected = bridge::connect(cfg).and_then(|mut ws| {
            // The first child starts once the gateway answers: its initialize comes next.
            if sup.child.is_none() {
                sup.spawn()?;
            }
            bridge::register(&mut ws, cfg).map(|()| ws).map_err(DialError::Again)
        });
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(DialError::Mistake(why)) => {
                sup.stop("the --gateway-url is wrong");
                return Err(why);
            }
            Err(DialError::Again(why)) if !ever_connected && cfg.require_gateway => {
                sup.stop("the gateway cannot be reached (--require-gateway)");
                return Err(why);
            }
            Err(DialError::Again(why)) => {
                status.set_link(false, &why);
                if sup.wait(&why, "reconnecting", links.next_delay()) {
                    sup.stop(stop.why());
                    return Ok(0);
                }
                continue;
            }
        };
        ever_connected = true;
        let since = Instant::now();
        status.set_link(true, "");
        log::info!(
            "connected to {}; registering as {:?} (server id {})",
            cfg.gateway_url,
            cfg.server_name,
            cfg.server_id
        );
        let ended = bridge::relay(&mut ws, &mut sup.ends(), cfg, stop);
        drop(ws);
        match ended {
            Ended::Stopped => {
                status.set_link(false, "shutting down");
                sup.stop(stop.why());
                return Ok(0);
            }
            Ended::Link(why) => {
                status.set_link(false, &why);
                if since.elapsed() >= STABLE {
                    links.reset();
                }
                if sup.stop_child_without_stdin() || sup.child_exited(Duration::from_millis(500)) {
                    continue; // ensure_child decides; the link closed because the child did
                }
                if sup.wait(&why, "reconnecting", links.next_delay()) {
                    sup.stop(stop.why());
                    return Ok(0);
                }
            }
        }
    }
}

/// Keeps the MCP server running as `--restart` says, and owns what lies between it and the
/// gateway while no link is up.
struct Supervisor<'a> {
    cfg: &'a Config,
    status: Arc<Status>,
    stop: &'a Stop,
    child: Option<ChildGuard>,
    /// The generation of the newest child (0 before the first).
    generation: u64,
    relay: Relay,
    started: Instant,
    crashes: Backoff,
}

impl Supervisor<'_> {
    /// Brings the child back after it exited, if the policy says so. `Some(status)`: register
    /// should exit with it.
    fn ensure_child(&mut self) -> Result<Option<i32>, String> {
        let Some(child) = self.child.as_mut() else { return Ok(None) };
        let Some(status) = child.try_wait() else { return Ok(None) };
        // An HTTP server going away is no program exiting: it comes back, and so does the edge.
        let http = child.adapter_ended();
        match &http {
            Some(why) => {
                log::warn!("MCP server {:?} ({}): {why}", self.cfg.server_name, self.cfg.upstream.transport())
            }
            None => log::error!("the MCP server ({}) {}", child.who(), child::describe(status)),
        }
        // Reaped (its stragglers killed first): what its reader still reports is dropped.
        self.child = None;
        self.relay.child_gone();
        self.ends().perform(None);
        let (code, failed) = (child::exit_code(status), !status.success());
        let restart = http.is_some()
            || match self.cfg.restart {
                Restart::Never => false,
                Restart::OnFailure => failed,
                Restart::Always => true,
            };
        if !restart {
            log::error!("register exits (--restart {})", restart_name(self.cfg.restart));
            return Ok(Some(if self.cfg.restart == Restart::Never {
                code
            } else {
                status.code().unwrap_or(code)
            }));
        }
        if self.started.elapsed() >= STABLE {
            self.crashes.reset();
        }
        let mut why = format!("--restart {}", restart_name(self.cfg.restart));
        // A restart that cannot start (the program gone in an upgrade, no descriptors or
        // processes to spare) is a crash like any other: tried again, backing off.
        loop {
            let delay = self.crashes.next_delay();
            if self.wait(&why, "restarting the MCP server", delay) {
                self.stop(self.stop.why());
                return Ok(Some(0));
            }
            match self.spawn() {
                Ok(()) => return Ok(None),
                Err(failed) => why = failed,
            }
        }
    }

    /// Starts the next generation of the child.
    fn spawn(&mut self) -> Result<(), String> {
        self.generation += 1;
        let cfg = self.cfg;
        let child = ChildGuard::spawn(
            &cfg.upstream,
            &cfg.tls,
            cfg.max_ws_message,
            &cfg.server_name,
            self.generation,
            self.status.clone(),
        )
        .map_err(|e| format!("cannot start MCP server {:?}: {e}", cfg.server_name))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    fn ends(&mut self) -> Ends<'_> {
        Ends { relay: &mut self.relay, child: self.child.as_mut() }
    }

    /// Logs why and what comes next, and waits `delay` for it, handling the child's output
    /// meanwhile (no link is up). True if a stop was requested instead.
    fn wait(&mut self, why: &str, next: &str, delay: Duration) -> bool {
        if self.stop.requested() {
            return true; // it came before the wait: no promise of a next attempt
        }
        log::warn!("{why}; {next} in {:.1} s", delay.as_secs_f64());
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = vec![(self.stop.fd(), false)];
            self.ends().watch(true, &mut fds);
            let ready = match sys::poll(&fds, Some(left)) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("poll failed while waiting: {e}");
                    std::thread::sleep(left);
                    return false;
                }
            };
            if ready[0].readable && self.stop.requested() {
                return true;
            }
            for (&(fd, _), r) in fds[1..].iter().zip(&ready[1..]) {
                if r.readable || r.writable || r.hangup {
                    self.ends().on_ready(fd, None);
                }
            }
        }
    }

    /// Stops a child that closed its stdin (it can take no request, so no link can use it), so
    /// that `--restart` decides what comes next. Whether it did.
    fn stop_child_without_stdin(&mut self) -> bool {
        let Some(child) = self.child.as_mut().filter(|c| c.stdin_fd().is_none()) else { return false };
        log::error!("the MCP server ({}) closed its stdin; stopping it", child.who());
        child.stop(child::STOP_GRACE);
        true
    }

    /// Whether the child has exited, waiting up to `grace` for the exit to land (its stdout
    /// closing ends the link a moment before the kernel reports the exit).
    fn child_exited(&mut self, grace: Duration) -> bool {
        self.child.as_mut().is_some_and(|c| c.wait_for(grace).is_some())
    }

    fn stop(&mut self, why: &str) {
        if let Some(mut child) = self.child.take() {
            let who = child.who();
            let how = child.stop(child::STOP_GRACE).map_or("is gone".into(), child::describe);
            log::info!("{why}: stopped MCP server {:?} ({who}, it {how}); bye", self.cfg.server_name);
        } else {
            log::info!("{why}: MCP server {:?} was not running; bye", self.cfg.server_name);
        }
    }
}

fn restart_name(r: Restart) -> &'static str {
    match r {
        Restart::Never => "never",
        Restart::OnFailure => "on-failure",
        Restart::Always => "always",
    }
}
