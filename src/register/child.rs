//! The local MCP server behind the edge: a program (`sh -c CMD` for `--stdio`, or a config
//! file's `command` and `args` run as given) in a process group of its own, stopped (group and
//! all) when the guard drops; or an HTTP server, reached through an in-process adapter
//! (`upstream_http`) that looks like a program from here: two pipes, and an end with a status.
//!
//! Each child has a generation (bumped on every spawn), which the health server's state is
//! tagged with, so the end of a dead child's output never marks its successor as stopped.
//! stdin and stdout belong to the owner thread (`pipes.rs`: non-blocking, polled beside the
//! link's socket), so a message crosses no thread between the link and the child. stderr: a
//! thread logs each line, prefixed with the server name. The process group is signalled only
//! while its leader is unreaped (a reaped pid may belong to someone else); an adapter is never
//! signalled: closing its input stops it.

use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::Status;
use super::pipes::{Pipes, Refused, Said};
use super::servers_file::Source;
use super::upstream_http::{self, HttpSpec, HttpTransport};
use super::Upstream;
use crate::sys;
use crate::thread;

/// How long the child gets to exit after SIGTERM before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for a SIGKILLed child to be reported gone before reaping it blindly.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What runs the server: a process of ours, or the HTTP adapter's threads.
enum Runner {
    Process(Child),
    Adapter(Arc<upstream_http::Ended>),
}

/// The running child. Dropping it stops the child's whole process group, unless it was reaped.
pub(crate) struct ChildGuard {
    runner: Runner,
    generation: u64,
    name: String,
    pipes: Pipes,
    status: Arc<Status>,
    /// Set once the child is reaped: from then on its pid and group id may be someone else's.
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `upstream` as child `generation`: a program (its stderr goes to the log) or the
    /// HTTP adapter (with `tls` for https://, taking messages of up to `max_message` bytes).
    pub(crate) fn spawn(
        upstream: &Upstream,
        tls: &crate::tls::ClientOptions,
        max_message: usize,
        name: &str,
        generation: u64,
        status: Arc<Status>,
    ) -> io::Result<ChildGuard> {
        let mut cmd = match upstream {
            Upstream::Shell(command) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(command);
                cmd
            }
            Upstream::Entry(Source::Stdio { command, args, env, cwd }) => {
                let mut cmd = Command::new(command);
                cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
                if let Some(dir) = cwd {
                    cmd.current_dir(dir);
                }
                cmd
            }
            Upstream::Entry(Source::Http { url, headers, sse }) => {
                let transport = if *sse { HttpTransport::Sse } else { HttpTransport::Streamable };
                let spec = HttpSpec {
                    url: url.clone(),
                    headers: headers.clone(),
                    transport,
                    tls: tls.clone(),
                    max_message,
                };
                return Self::adapt(spec, name, generation, status);
            }
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        sys::die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let pipes = match Pipes::new(stdin, stdout, name) {
            Ok(pipes) => pipes,
            Err(e) => {
                let _ = sys::kill_group(pid, sys::SIGKILL); // unreaped: the group is still ours
                let _ = child.wait();
                return Err(e);
            }
        };
        let runner = Runner::Process(child);
        let guard = ChildGuard { runner, generation, name: name.to_string(), pipes, status, reaped: None };
        let n = name.to_string();
        thread::spawn(format!("stderr-{pid}"), move || log_stderr(stderr, &n))?;
        guard.status.child_started(generation);
        log::info!("started MCP server {name:?} (pid {pid}): {}", describe_upstream(upstream));
        Ok(guard)
    }

    /// Starts the HTTP adapter for `spec` as child `generation`.
    fn adapt(spec: HttpSpec, name: &str, generation: u64, status: Arc<Status>) -> io::Result<ChildGuard> {
        let url = url_shown(&spec.url).to_string();
        let adapter = upstream_http::start(spec, name)?;
        let pipes = Pipes::new(adapter.stdin, adapter.stdout, name)?;
        let runner = Runner::Adapter(adapter.ended);
        let guard = ChildGuard { runner, generation, name: name.to_string(), pipes, status, reaped: None };
        guard.status.child_started(generation);
        log::info!("fronting MCP server {name:?} at {url}");
        Ok(guard)
    }

    /// Who runs the server, for a person: `pid 1234`, or `HTTP`.
    pub(crate) fn who(&self) -> String {
        match &self.runner {
            Runner::Process(child) => format!("pid {}", child.id()),
            Runner::Adapter(_) => "HTTP".into(),
        }
    }

    /// Sends one JSON-RPC message to the child's stdin, without waiting (`pipes.rs`).
    pub(crate) fn send(&mut self, line: String) -> Result<(), Refused> {
        self.pipes.send(line)
    }

    /// The child's stdout, while it is open, to watch for reading.
    pub(crate) fn stdout_fd(&self) -> Option<RawFd> {
        self.pipes.stdout_fd()
    }

    /// The child's stdin, while it is open (whether or not messages wait for it); `None` once
    /// the child closed it (a write failed): it can take no request then.
    pub(crate) fn stdin_fd(&self) -> Option<RawFd> {
        self.pipes.stdin_fd()
    }

    /// The child's stdin, while messages wait for it, to watch for writing.
    pub(crate) fn stdin_fd_to_watch(&self) -> Option<RawFd> {
        self.pipes.stdin_fd_to_watch()
    }

    /// Writes what waits for stdin (it became writable).
    pub(crate) fn write_waiting(&mut self) -> Result<(), Refused> {
        self.pipes.write_waiting()
    }

    /// What the child said on stdout since the last look; its end is noted for the health server.
    pub(crate) fn read_stdout(&mut self) -> Vec<Said> {
        let said = self.pipes.read_stdout();
        if said.last() == Some(&Said::Eof) {
            self.status.child_ended(self.generation);
        }
        said
    }

    /// Whether the child has exited, and how. On the exit, the group's stragglers are killed
    /// while the unreaped leader still holds the group id, then the leader is reaped. An adapter
    /// has exited once it says why it ended (status 0: told to stop; 1: the upstream failed).
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_some() {
            return self.reaped;
        }
        let pid = match &self.runner {
            Runner::Process(child) => child.id(),
            Runner::Adapter(ended) => {
                self.reaped = ended.get().map(|(code, _)| ExitStatus::from_raw(code << 8));
                return self.reaped;
            }
        };
        match sys::exited_unreaped(pid) {
            Ok(false) => return None,
            Ok(true) => {
                self.signal_group(sys::SIGKILL); // stragglers the server left behind
                self.reap();
            }
            Err(e) => {
                // Not our child any more (reaped elsewhere): never signal it again.
                log::error!("cannot wait for MCP server {:?} (pid {pid}): {e}", self.name);
                self.reaped = Some(ExitStatus::from_raw(1 << 8));
            }
        }
        self.reaped
    }

    /// Why an adapter ended, as it said (`None` for a program, or while it runs).
    pub(crate) fn adapter_ended(&self) -> Option<String> {
        match &self.runner {
            Runner::Adapter(ended) => ended.get().map(|(_, why)| why),
            Runner::Process(_) => None,
        }
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
    /// A child already reaped is not signalled. An adapter's input is closed, which stops it.
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        if let Runner::Adapter(_) = self.runner {
            self.pipes.close_stdin();
            if let Some(status) = self.wait_for(grace.max(KILL_WAIT)) {
                return Some(status);
            }
            // Its threads end within their own deadlines; nobody waits for them twice.
            log::warn!(
                "MCP server {:?} (HTTP) did not end within {grace:?}; left to end by itself",
                self.name
            );
            self.reaped = Some(ExitStatus::from_raw(1 << 8));
            return self.reaped;
        }
        self.signal_group(sys::SIGTERM);
        if let Some(status) = self.wait_for(grace) {
            return Some(status);
        }
        log::warn!("MCP server {:?} ({}) ignored SIGTERM for {grace:?}; killing it", self.name, self.who());
        self.signal_group(sys::SIGKILL);
        self.wait_for(KILL_WAIT).or_else(|| self.reap())
    }

    /// Signals the child's process group, unless the leader was reaped (or it is no process).
    /// Returns whether it did.
    fn signal_group(&self, signal: i32) -> bool {
        let Runner::Process(child) = &self.runner else { return false };
        if self.reaped.is_some() {
            return false;
        }
        let _ = sys::kill_group(child.id(), signal);
        true
    }

    /// Collects the exit status (waiting for it) and marks the child reaped.
    fn reap(&mut self) -> Option<ExitStatus> {
        let Runner::Process(child) = &mut self.runner else { return self.reaped };
        let status = child.wait().unwrap_or_else(|e| {
            log::error!("cannot reap MCP server {:?} (pid {}): {e}", self.name, child.id());
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

/// The server started, for the log: `sh -c "CMD"` (as typed on the command line), a file's
/// command and how many arguments it got (not the arguments: `${env:…}` may have put a token in
/// them), or a URL without its query (where tokens go too).
fn describe_upstream(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Shell(command) => format!("sh -c {command:?}"),
        Upstream::Entry(Source::Stdio { command, args, .. }) => {
            format!("{command:?} with {} arguments", args.len())
        }
        Upstream::Entry(Source::Http { url, .. }) => url_shown(url).to_string(),
    }
}

/// A URL as logs show it: without its query.
fn url_shown(url: &str) -> &str {
    url.split_once('?').map_or(url, |(before, _)| before)
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

    fn spawn(command: &str, generation: u64) -> (ChildGuard, Arc<Status>) {
        let status = Arc::new(Status::default());
        let upstream = Upstream::Shell(command.into());
        let tls = crate::tls::ClientOptions::default();
        (ChildGuard::spawn(&upstream, &tls, 1 << 20, "test", generation, status.clone()).unwrap(), status)
    }

    impl ChildGuard {
        fn pid(&self) -> u32 {
            match &self.runner {
                Runner::Process(child) => child.id(),
                Runner::Adapter(_) => panic!("an adapter has no pid"),
            }
        }
    }

    /// Finding 3: the exit is seen without reaping, the group's stragglers are killed while the
    /// zombie leader still holds the group id, and once reaped the group is never signalled.
    #[test]
    fn stragglers_die_before_the_leader_is_reaped_and_a_reaped_group_is_never_signalled() {
        let file = std::env::temp_dir().join(format!("mcpport-straggler-{}", std::process::id()));
        let command = format!("sleep 30 & echo $! > {}; exit 3", file.display());
        let (mut guard, _status) = spawn(&command, 1);
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
        let (mut guard, _status) = spawn("sleep 30", 1);
        let pid = guard.pid();
        assert!(guard.try_wait().is_none());
        assert!(guard.reaped.is_none(), "looking at a running child does not reap it");
        let status = guard.stop(Duration::from_secs(5)).expect("stopped");
        assert_eq!(status.signal(), Some(sys::SIGTERM));
        assert!(!alive(pid));
    }

    #[test]
    fn the_end_of_stdout_is_noted_for_the_health_server_under_its_generation() {
        let (mut guard, status) = spawn(r#"echo '{"jsonrpc":"2.0","method":"m"}'; echo junk"#, 7);
        assert!(status.child_running());
        status.child_started(8); // a successor started meanwhile
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.last() != Some(&Said::Eof) && Instant::now() < deadline {
            let _ = sys::poll(&[(guard.stdout_fd().unwrap(), false)], Some(Duration::from_millis(100)));
            seen.extend(guard.read_stdout());
        }
        assert!(matches!(&seen[0], Said::Line(l) if l.contains(r#""method":"m""#)), "{seen:?}");
        assert_eq!(seen[1], Said::Eof, "junk is not passed on: {seen:?}");
        assert!(status.child_running(), "generation 7's end says nothing of generation 8");
        let (mut guard, status) = spawn("true", 9);
        while guard.stdout_fd().is_some() && Instant::now() < deadline {
            let _ = sys::poll(&[(guard.stdout_fd().unwrap(), false)], Some(Duration::from_millis(100)));
            guard.read_stdout();
        }
        assert!(!status.child_running());
    }
}
