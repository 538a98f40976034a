//! `mcpport register`: start the local stdio MCP server, dial out to the gateway, register, and
//! relay JSON-RPC both ways; heal by itself when the link breaks.
//!
//! The main loop: make sure the child runs (restarting it per `--restart`, with backoff against
//! crash loops), dial the gateway, relay until the link ends, wait a capped, jittered backoff,
//! and dial again. The child keeps running across links. The process ends when the child exits
//! and `--restart` says not to bring it back (its status, never 0 for `never`), when the gateway
//! cannot be reached at start-up with `--require-gateway` (status 1), or on SIGINT/SIGTERM
//! (status 0). Whatever ends it, the child's whole process group is stopped first.
//!
//! Modules depend downward only: this loop → `bridge` (one link) → `relay` (the state machine,
//! pure) and `child` (the process and its pipes) → `health` (the status it serves).

pub(crate) mod backoff;
pub(crate) mod bridge;
pub(crate) mod child;
pub(crate) mod handshake;
pub(crate) mod health;
pub(crate) mod pipes;
pub(crate) mod relay;

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

/// Everything `mcpport register` was told on its command line, validated. (No `Debug`: its
/// headers hold tokens.)
#[derive(Clone)]
pub(crate) struct Config {
    /// The command that starts the stdio MCP server, run with `sh -c`.
    pub stdio: String,
    pub gateway_url: String,
    pub server_name: String,
    /// Kept for the life of the process, so the gateway knows a reconnect from a newcomer.
    pub server_id: String,
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
    pub(crate) fn new(stdio: String, gateway_url: String, server_name: String) -> Config {
        Config {
            stdio,
            gateway_url,
            server_name,
            server_id: sys::random_uuid(),
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

/// When to bring the MCP server back after it exits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Restart {
    Never,
    OnFailure,
    Always,
}

/// Runs register to the end; returns the process exit status.
pub(crate) fn run(cfg: &Config) -> Result<i32, String> {
    let signal_fd = sys::signal_pipe().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    if cfg.gateway_url.starts_with("wss://") {
        crate::tls::client_config(&cfg.tls)?; // bad TLS files are a mistake to report, not to retry
    }
    if cfg.tls.no_verify {
        log::warn!(
            "--no-ssl-verify: the gateway's certificate is NOT checked; anyone in the path can pose as it"
        );
    }
    let status = Arc::new(Status::default());
    if let Some(h) = &cfg.health {
        health::start(h.clone(), status.clone())?;
    }
    let mut sup = Supervisor {
        cfg,
        status: status.clone(),
        signal_fd,
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
        // A signal that came while dialing (which can take CONNECT_TIMEOUT) ends it here.
        if sys::take_signal() {
            sup.stop("signal received");
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
                    sup.stop("signal received");
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
        let ended = bridge::relay(&mut ws, &mut sup.ends(), cfg, signal_fd);
        drop(ws);
        match ended {
            Ended::Signal => {
                status.set_link(false, "shutting down");
                sup.stop("signal received");
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
                    sup.stop("signal received");
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
    signal_fd: i32,
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
        log::error!("the MCP server (pid {}) {}", child.pid(), child::describe(status));
        // Reaped (its stragglers killed first): what its reader still reports is dropped.
        self.child = None;
        self.relay.child_gone();
        self.ends().perform(None);
        let (code, failed) = (child::exit_code(status), !status.success());
        let restart = match self.cfg.restart {
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
        let delay = self.crashes.next_delay();
        let why = format!("--restart {}", restart_name(self.cfg.restart));
        if self.wait(&why, "restarting the MCP server", delay) {
            self.stop("signal received");
            return Ok(Some(0));
        }
        self.spawn()?;
        Ok(None)
    }

    /// Starts the next generation of the child.
    fn spawn(&mut self) -> Result<(), String> {
        self.generation += 1;
        let cfg = self.cfg;
        let child = ChildGuard::spawn(&cfg.stdio, &cfg.server_name, self.generation, self.status.clone())
            .map_err(|e| format!("cannot start the MCP server with sh -c {:?}: {e}", cfg.stdio))?;
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    fn ends(&mut self) -> Ends<'_> {
        Ends { relay: &mut self.relay, child: self.child.as_mut() }
    }

    /// Logs why and what comes next, and waits `delay` for it, handling the child's output
    /// meanwhile (no link is up). True if a signal came instead.
    fn wait(&mut self, why: &str, next: &str, delay: Duration) -> bool {
        if sys::take_signal() {
            return true; // it came before the wait: no promise of a next attempt
        }
        log::warn!("{why}; {next} in {:.1} s", delay.as_secs_f64());
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = vec![(self.signal_fd, false)];
            self.ends().watch(true, &mut fds);
            let ready = match sys::poll(&fds, Some(left)) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("poll failed while waiting: {e}");
                    std::thread::sleep(left);
                    return false;
                }
            };
            if ready[0].readable && sys::take_signal() {
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
        log::error!("the MCP server (pid {}) closed its stdin; stopping it", child.pid());
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
            let pid = child.pid();
            let how = child.stop(child::STOP_GRACE).map_or("is gone".into(), child::describe);
            log::info!("{why}: stopped the MCP server (pid {pid}, it {how}); bye");
        } else {
            log::info!("{why}: the MCP server was not running; bye");
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
