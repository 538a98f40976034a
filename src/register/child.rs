//! The local stdio MCP server: started with `sh -c CMD` in a process group of its own, its
//! three pipes each owned by one thread, and stopped (group and all) when the guard drops.
//!
//! stdout: a reader thread queues each line for the gateway link (blocking when the link is
//! backed up, which slows the child down instead of growing memory) and queues a close when the
//! child's stdout ends. stdin: a writer thread takes lines from a queue the link's owner never
//! waits on (it must keep draining the child's output, or a child blocked writing stdout and a
//! link blocked writing stdin would wait for each other forever); a child that stops reading
//! while work piles up loses its link instead of our memory. stderr: each line goes to our log,
//! prefixed with the server name.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bridge::InitCache;
use super::health::Status;
use crate::sys;
use crate::thread;
use crate::ws::{Out, Outbox};

/// Where the child's output goes: the gateway link's queue, the `initialize` cache (which
/// watches for the answer to the first `initialize`), and the status the health server reads.
#[derive(Clone)]
pub(crate) struct Wiring {
    pub to_gateway: Outbox,
    pub init: Arc<InitCache>,
    pub status: Arc<Status>,
}

/// Lines that may wait for the child's stdin before the link is dropped as stuck.
const STDIN_QUEUE: usize = 4096;
/// Longest line accepted from the child's stdout (one JSON-RPC message).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long the child gets to exit after SIGTERM before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// The running child. Dropping it stops the child's whole process group.
pub(crate) struct ChildGuard {
    child: Child,
    name: String,
    stdin: Sender<String>,
    stdin_queued: Arc<AtomicUsize>,
}

impl ChildGuard {
    /// Starts `sh -c command`, wiring stdout to the gateway link and stderr to the log.
    pub(crate) fn spawn(command: &str, name: &str, wiring: Wiring) -> io::Result<ChildGuard> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(command).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        sys::die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (stdin_tx, stdin_rx) = mpsc::channel();
        let stdin_queued = Arc::new(AtomicUsize::new(0));
        let queued = stdin_queued.clone();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        thread::spawn(format!("stdin-{pid}"), move || write_stdin(stdin, stdin_rx, &queued))?;
        let n = name.to_string();
        wiring.status.child_running.store(true, Ordering::SeqCst);
        thread::spawn(format!("stdout-{pid}"), move || read_stdout(stdout, &n, &wiring))?;
        let n = name.to_string();
        thread::spawn(format!("stderr-{pid}"), move || log_stderr(stderr, &n))?;
        log::info!("started MCP server {name:?} (pid {pid}): sh -c {command:?}");
        Ok(ChildGuard { child, name: name.to_string(), stdin: stdin_tx, stdin_queued })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Queues one JSON-RPC message for the child's stdin, without waiting. False when the
    /// child's stdin is closed or it has not read the last `STDIN_QUEUE` messages.
    pub(crate) fn send(&self, line: String) -> bool {
        if self.stdin_queued.fetch_add(1, Ordering::SeqCst) >= STDIN_QUEUE {
            self.stdin_queued.fetch_sub(1, Ordering::SeqCst);
            log::error!(
                "MCP server {:?} is not reading its stdin ({STDIN_QUEUE} messages waiting)",
                self.name
            );
            return false;
        }
        self.stdin.send(line).is_ok()
    }

    /// Whether the child has exited, and how.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub(crate) fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`; reaps the child. Returns its exit status.
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let pgid = self.child.id();
        if let Some(status) = self.try_wait() {
            let _ = sys::kill_group(pgid, sys::SIGKILL); // stragglers the server left behind
            return Some(status);
        }
        let _ = sys::kill_group(pgid, sys::SIGTERM);
        let status = self.wait_for(grace).or_else(|| {
            log::warn!("MCP server {:?} (pid {pgid}) ignored SIGTERM for {grace:?}; killing it", self.name);
            let _ = sys::kill_group(pgid, sys::SIGKILL);
            self.child.wait().ok()
        });
        let _ = sys::kill_group(pgid, sys::SIGKILL);
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// Describes how a process ended, for a person: `exited with status 3`, `was killed by signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// The exit code register reports for a child that ended on its own: never 0, since the bridge
/// has nothing left to serve (the child's code when non-zero, 128+N for signal N, else 1).
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) if code != 0 => code,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

fn write_stdin(mut stdin: ChildStdin, rx: Receiver<String>, queued: &AtomicUsize) {
    for mut line in rx {
        queued.fetch_sub(1, Ordering::SeqCst);
        line.push('\n');
        if stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()).is_err() {
            return; // the child closed its stdin or exited; stdout's EOF reports it
        }
    }
}

fn read_stdout(stdout: impl Read, name: &str, wiring: &Wiring) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) if line.len() > MAX_LINE => {
                log::error!("MCP server {name:?} wrote a line over {MAX_LINE} bytes; stopping");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("reading the stdout of MCP server {name:?} failed: {e}");
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if !text.starts_with('{') && !text.starts_with('[') {
            log::warn!("MCP server {name:?} printed a non-JSON line on stdout (ignored): {text}");
            continue;
        }
        wiring.init.observe_child(text);
        if wiring.to_gateway.send_wait(Out::Text(text.to_string())).is_err() {
            return;
        }
    }
    wiring.status.child_running.store(false, Ordering::SeqCst);
    let _ = wiring.to_gateway.send_wait(Out::Close(1000, "the MCP server process exited".into()));
}

fn log_stderr(stderr: impl Read, name: &str) {
    for line in BufReader::new(stderr).lines() {
        match line {
            Ok(line) => log::info!("[{name}] {line}"),
            Err(_) => return,
        }
    }
}
