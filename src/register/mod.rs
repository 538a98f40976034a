//! `mcpport register`: start the local stdio MCP server, dial out to the gateway, register, and
//! relay JSON-RPC both ways.
//!
//! The process ends with the first of: the child exits (non-zero status, with a message saying
//! how it exited), the gateway link ends (status 1), or SIGINT/SIGTERM (status 0). Whatever ends
//! it, the child's whole process group is stopped first: no orphans, no zombies.

pub(crate) mod bridge;
pub(crate) mod child;

use std::time::Duration;

use crate::sys;
use crate::ws::{self, Heartbeat};
use bridge::Ended;
use child::ChildGuard;

/// Everything `mcpport register` was told on its command line, validated.
#[derive(Debug, Clone)]
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
}

/// Lines from the child that may wait for the gateway link.
const LINK_QUEUE: usize = 256;

/// Runs register to the end; returns the process exit status.
pub(crate) fn run(cfg: &Config) -> Result<i32, String> {
    let signal_fd = sys::signal_pipe().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (outbox, inbox) = ws::channel(LINK_QUEUE).map_err(|e| e.to_string())?;
    let mut ws = bridge::connect(cfg)?;
    log::info!("connected to the gateway at {}", cfg.gateway_url);
    let mut child = ChildGuard::spawn(&cfg.stdio, &cfg.server_name, outbox)
        .map_err(|e| format!("cannot start the MCP server with sh -c {:?}: {e}", cfg.stdio))?;
    bridge::register(&mut ws, cfg)?;
    log::info!("registering as {:?} (server id {})", cfg.server_name, cfg.server_id);
    let ended = bridge::relay(&mut ws, &inbox, &child, cfg, signal_fd);
    drop(ws);
    Ok(finish(ended, &mut child))
}

/// Stops the child as the ending requires and picks the exit status.
fn finish(ended: Ended, child: &mut ChildGuard) -> i32 {
    let pid = child.pid();
    match ended {
        Ended::Signal => {
            let status = child.stop(child::STOP_GRACE);
            let how = status.map_or("is gone".into(), child::describe);
            log::info!("stopped the MCP server (pid {pid}, it {how}); bye");
            0
        }
        Ended::Link(why) => {
            // The child's stdout closing ends the link too: give the exit a moment to land.
            if let Some(status) = child.wait_for(Duration::from_millis(500)) {
                log::error!("the MCP server (pid {pid}) {}; register exits", child::describe(status));
                let _ = child.stop(Duration::ZERO);
                return child::exit_code(status);
            }
            log::error!("{why}; stopping the MCP server (pid {pid}) and exiting");
            child.stop(child::STOP_GRACE);
            1
        }
    }
}
