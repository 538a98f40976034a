//! The local stdio MCP server: started with `sh -c CMD` in a process group of its own, its
//! three pipes each owned by one thread, and stopped (group and all) when the guard drops.
//!
//! Each child has a generation (bumped on every spawn), and everything its stdout reader sends
//! is tagged with it, so the owner can drop what a dead child left behind. stdout: the reader
//! hands each line to the owner (`Sink`), waits for the owner's `Forward`, and sends the frames
//! in it (those the owner could not queue at once) itself, blocking while the link is backed up
//! (which slows the child down instead of growing memory); at the end of stdout it reports `Eof`. stdin: a writer thread takes lines
//! from a queue the owner never waits on (it must keep draining the child's output, or a child
//! blocked writing stdout and a link blocked writing stdin would wait for each other forever);
//! a child that stops reading while work piles up loses its link instead of our memory.
//! stderr: each line goes to our log, prefixed with the server name. The process group is
//! signalled only while its leader is unreaped (a reaped pid may belong to someone else).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::Status;
use crate::sys::{self, Wake};
use crate::thread;
use crate::ws::{Out, Outbox};

/// Lines that may wait for the child's stdin before the link is dropped as stuck.
const STDIN_QUEUE: usize = 4096;
/// Longest line accepted from the child's stdout (one JSON-RPC message).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Reports that may wait for the owner (each reader has at most one line and its end in it).
const OUTPUT_QUEUE: usize = 16;
/// How long the child gets to exit after SIGTERM before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for a SIGKILLed child to be reported gone before reaping it blindly.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a child's stdout reader reports, tagged with the child's generation.
#[derive(Debug)]
pub(crate) struct Output {
    pub generation: u64,
    pub said: Said,
}

#[derive(Debug)]
pub(crate) enum Said {
    /// One line (trimmed, starting with `{` or `[`). The reader waits for a `Forward`.
    Line(String),
    /// The child's stdout ended.
    Eof,
}

/// The owner's answer to one line: frames to queue on a link, which the reader sends itself.
#[derive(Default)]
pub(crate) struct Forward {
    pub to: Option<Outbox>,
    pub frames: Vec<String>,
}

impl Forward {
    /// Queues the frames, waiting while the link's queue is full; a closed link drops them.
    fn deliver(self) {
        let Some(to) = self.to else { return };
        for frame in self.frames {
            if to.send_wait(Out::Text(frame)).is_err() {
                return;
            }
        }
    }
}

/// The readers' end of the report channel: cheap to clone, a clone for each child.
#[derive(Clone)]
pub(crate) struct Sink {
    tx: SyncSender<Output>,
    wake: Arc<Wake>,
}

/// The owner's end: a descriptor to poll, and the reports.
pub(crate) struct Source {
    rx: Receiver<Output>,
    wake: Arc<Wake>,
}

/// The channel every child's stdout reader reports on, with its wake-up descriptor.
pub(crate) fn channel() -> io::Result<(Sink, Source)> {
    let (tx, rx) = mpsc::sync_channel(OUTPUT_QUEUE);
    let wake = Arc::new(Wake::new()?);
    Ok((Sink { tx, wake: wake.clone() }, Source { rx, wake }))
}

impl Sink {
    /// Reports to the owner (waiting while the queue is full). False when the owner is gone.
    fn send(&self, output: Output) -> bool {
        if self.tx.send(output).is_err() {
            return false;
        }
        self.wake.wake();
        true
    }
}

impl Source {
    /// The descriptor that becomes readable when a report is queued.
    pub(crate) fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Every report queued now. The wake-up is taken first, so a report queued after
    /// this call wakes the next poll.
    pub(crate) fn take(&self) -> Vec<Output> {
        self.wake.drain();
        self.rx.try_iter().collect()
    }
}

/// The running child. Dropping it stops the child's whole process group, unless it was reaped.
pub(crate) struct ChildGuard {
    child: Child,
    generation: u64,
    name: String,
    stdin: Sender<String>,
    stdin_queued: Arc<AtomicUsize>,
    /// The stdout reader waits here for the owner's answer to each line.
    forward: SyncSender<Forward>,
    /// Set once the child is reaped: from then on its pid and group id may be someone else's.
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `sh -c command` as child `generation`; its stdout lines go to `sink`, its stderr
    /// to the log.
    pub(crate) fn spawn(
        command: &str,
        name: &str,
        generation: u64,
        sink: Sink,
        status: Arc<Status>,
    ) -> io::Result<ChildGuard> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(command).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        sys::die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let (stdin_tx, stdin_rx) = mpsc::channel();
        let (forward_tx, forward_rx) = mpsc::sync_channel(1);
        let stdin_queued = Arc::new(AtomicUsize::new(0));
        let queued = stdin_queued.clone();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let guard = ChildGuard {
            child,
            generation,
            name: name.to_string(),
            stdin: stdin_tx,
            stdin_queued,
            forward: forward_tx,
            reaped: None,
        };
        thread::spawn(format!("stdin-{pid}"), move || write_stdin(stdin, stdin_rx, &queued))?;
        status.child_started(generation);
        let reader = Reader { name: name.to_string(), generation, sink, forward: forward_rx, status };
        thread::spawn(format!("stdout-{pid}"), move || reader.run(stdout))?;
        let n = name.to_string();
        thread::spawn(format!("stderr-{pid}"), move || log_stderr(stderr, &n))?;
        log::info!("started MCP server {name:?} (pid {pid}): sh -c {command:?}");
        Ok(guard)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
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

    /// Answers the stdout reader's last line (it waits for exactly one answer per line).
    pub(crate) fn forward(&self, forward: Forward) {
        let _ = self.forward.try_send(forward);
    }

    /// Whether the child has exited, and how. On the exit, the group's stragglers are killed
    /// while the unreaped leader still holds the group id, then the leader is reaped.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            match sys::exited_unreaped(self.pid()) {
                Ok(false) => return None,
                Ok(true) => {
                    self.signal_group(sys::SIGKILL); // stragglers the server left behind
                    self.reap();
                }
                Err(e) => {
                    // Not our child any more (reaped elsewhere): never signal it again.
                    log::error!("cannot wait for MCP server {:?} (pid {}): {e}", self.name, self.pid());
                    self.reaped = Some(ExitStatus::from_raw(1 << 8));
                }
            }
        }
        self.reaped
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
    /// A child already reaped is not signalled.
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        self.signal_group(sys::SIGTERM);
        if let Some(status) = self.wait_for(grace) {
            return Some(status);
        }
        log::warn!(
            "MCP server {:?} (pid {}) ignored SIGTERM for {grace:?}; killing it",
            self.name,
            self.pid()
        );
        self.signal_group(sys::SIGKILL);
        self.wait_for(KILL_WAIT).or_else(|| self.reap())
    }

    /// Signals the child's process group, unless the leader was reaped. Returns whether it did.
    fn signal_group(&self, signal: i32) -> bool {
        if self.reaped.is_some() {
            return false;
        }
        let _ = sys::kill_group(self.pid(), signal);
        true
    }

    /// Collects the exit status (waiting for it) and marks the child reaped.
    fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.wait().unwrap_or_else(|e| {
            log::error!("cannot reap MCP server {:?} (pid {}): {e}", self.name, self.pid());
            ExitStatus::from_raw(1 << 8)
        });
        self.reaped = Some(status);
        self.reaped
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
        (Some(127), _) => "exited with status 127: its command was not found (check PATH, and quote the \
                           whole --stdio command, e.g. --stdio \"npx -y pkg\")"
            .into(),
        (Some(126), _) => "exited with status 126: its command could not be run (not executable?)".into(),
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

/// The child's stdout, line by line, to the owner.
struct Reader {
    name: String,
    generation: u64,
    sink: Sink,
    forward: Receiver<Forward>,
    status: Arc<Status>,
}

impl Reader {
    fn run(self, stdout: impl Read) {
        self.relay_lines(stdout);
        self.status.child_ended(self.generation);
        self.sink.send(Output { generation: self.generation, said: Said::Eof });
    }

    /// Hands each line to the owner and delivers its answer, until stdout ends, the owner is
    /// gone, or the guard of this child was dropped (its lines are the past).
    fn relay_lines(&self, stdout: impl Read) {
        let name = &self.name;
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) if line.len() > MAX_LINE => {
                    log::error!("MCP server {name:?} wrote a line over {MAX_LINE} bytes; stopping");
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    log::warn!("reading the stdout of MCP server {name:?} failed: {e}");
                    return;
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
            if !self.sink.send(Output { generation: self.generation, said: Said::Line(text.to_string()) }) {
                return;
            }
            match self.forward.recv() {
                Ok(forward) => forward.deliver(),
                Err(_) => return,
            }
        }
    }
}

fn log_stderr(stderr: impl Read, name: &str) {
    for line in BufReader::new(stderr).lines() {
        match line {
            Ok(line) => log::info!("[{name}] {line}"),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
    }

    fn spawn(command: &str, generation: u64) -> (ChildGuard, Source) {
        let (sink, source) = channel().unwrap();
        let guard =
            ChildGuard::spawn(command, "test", generation, sink, Arc::new(Status::default())).unwrap();
        (guard, source)
    }

    /// Finding 3: the exit is seen without reaping, the group's stragglers are killed while the
    /// zombie leader still holds the group id, and once reaped the group is never signalled.
    #[test]
    fn stragglers_die_before_the_leader_is_reaped_and_a_reaped_group_is_never_signalled() {
        let file = std::env::temp_dir().join(format!("mcpport-straggler-{}", std::process::id()));
        let command = format!("sleep 30 & echo $! > {}; exit 3", file.display());
        let (mut guard, _source) = spawn(&command, 1);
        let status = guard.wait_for(Duration::from_secs(10)).expect("the shell exits");
        assert_eq!(status.code(), Some(3));
        let straggler: u32 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
        let _ = std::fs::remove_file(&file);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(straggler) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(straggler), "the straggler {straggler} outlived its group's leader");
        assert!(guard.reaped.is_some());
        assert!(!guard.signal_group(sys::SIGKILL), "a reaped group must never be signalled");
        assert_eq!(guard.stop(STOP_GRACE).and_then(|s| s.code()), Some(3), "stop reports, never signals");
    }

    #[test]
    fn a_running_child_is_stopped_with_its_group() {
        let (mut guard, _source) = spawn("sleep 30", 1);
        let pid = guard.pid();
        assert!(guard.try_wait().is_none());
        assert!(guard.reaped.is_none(), "looking at a running child does not reap it");
        let status = guard.stop(Duration::from_secs(5)).expect("stopped");
        assert_eq!(status.signal(), Some(sys::SIGTERM));
        assert!(!alive(pid));
    }

    #[test]
    fn lines_and_the_end_come_tagged_with_the_generation() {
        let (guard, source) = spawn(r#"echo '{"jsonrpc":"2.0","method":"m"}'; echo junk"#, 7);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(seen.last(), Some(Output { said: Said::Eof, .. })) && Instant::now() < deadline {
            let _ = sys::poll(&[(source.fd(), false)], Some(Duration::from_millis(100)));
            for output in source.take() {
                if let Said::Line(_) = output.said {
                    guard.forward(Forward::default());
                }
                seen.push(output);
            }
        }
        assert!(seen.iter().all(|o| o.generation == 7), "{seen:?}");
        assert!(matches!(&seen[0].said, Said::Line(l) if l.contains(r#""method":"m""#)), "{seen:?}");
        assert!(matches!(seen[1].said, Said::Eof), "junk is not passed on: {seen:?}");
    }
}
