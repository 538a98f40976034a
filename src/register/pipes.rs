//! The child's stdin and stdout as register's owner thread sees them: both non-blocking, both
//! driven from the owner's one `poll`, no thread between them and the link. A line for the child
//! is written at once when its pipe has room (the common case: no hand-off on a request's way);
//! what the pipe does not take waits here, in order, and goes out when `poll` says the pipe is
//! writable. The child's stdout is read when `poll` says so, a bounded chunk at a time, and cut
//! into lines here.
//!
//! Bounds: lines waiting for stdin, `STDIN_LINES` and `STDIN_BYTES` (one line always gets in,
//! however long; past the bounds the child is stuck, and its link goes rather than our memory);
//! a line from stdout, `MAX_LINE` (past it the output is given up, as if stdout had ended); bytes
//! read per readiness, `READ_BUDGET`. The owner stops watching stdout while the link cannot take
//! more, so a slow link slows the child instead of growing memory.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{ChildStdin, ChildStdout};

use crate::sys;

/// Lines that may wait for the child's stdin before it counts as stuck.
const STDIN_LINES: usize = 4096;
/// Bytes that may wait for the child's stdin (beyond one line) before it counts as stuck.
const STDIN_BYTES: usize = 32 * 1024 * 1024;
/// Longest line accepted from the child's stdout (one JSON-RPC message).
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;
/// Bytes read from stdout per readiness before the owner looks at its other descriptors.
const READ_BUDGET: usize = 256 * 1024;
/// A line buffer that grew past this for a long line is given back once the line is out.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What the child said on stdout.
#[derive(Debug, PartialEq)]
pub(crate) enum Said {
    /// One line (trimmed, starting with `{` or `[`).
    Line(String),
    /// stdout ended (or was given up: a read error, or a line over `MAX_LINE`).
    Eof,
}

/// Why a line for the child was not taken.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    /// Too much is waiting: the child is not reading its stdin.
    Stuck,
    /// The child closed its stdin (or exited).
    Closed,
}

/// The child's two data pipes, owned by the owner thread.
pub(crate) struct Pipes {
    stdin: Option<ChildStdin>,
    /// Lines (each ending in `\n`) not yet written, oldest first; `written` bytes of the first
    /// are out already.
    waiting: VecDeque<Vec<u8>>,
    written: usize,
    waiting_bytes: usize,
    stdout: Option<ChildStdout>,
    /// Bytes read from stdout after the last complete line.
    partial: Vec<u8>,
    name: String,
}

impl Pipes {
    /// Takes the pipes and makes our ends non-blocking (the child's ends are its own).
    pub(crate) fn new(stdin: ChildStdin, stdout: ChildStdout, name: &str) -> io::Result<Pipes> {
        sys::set_nonblocking(stdin.as_raw_fd())?;
        sys::set_nonblocking(stdout.as_raw_fd())?;
        Ok(Pipes {
            stdin: Some(stdin),
            waiting: VecDeque::new(),
            written: 0,
            waiting_bytes: 0,
            stdout: Some(stdout),
            partial: Vec::new(),
            name: name.to_string(),
        })
    }

    /// Closes our end of the child's stdin (what waits for it is dropped): the child reads its
    /// end of input. How an in-process HTTP adapter is told to stop.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
        self.waiting.clear();
        self.written = 0;
        self.waiting_bytes = 0;
    }

    /// The descriptor to watch for reading, while stdout is open.
    pub(crate) fn stdout_fd(&self) -> Option<RawFd> {
        self.stdout.as_ref().map(|s| s.as_raw_fd())
    }

    /// Our end of the child's stdin, while it is open.
    pub(crate) fn stdin_fd(&self) -> Option<RawFd> {
        self.stdin.as_ref().map(|s| s.as_raw_fd())
    }

    /// The descriptor to watch for writing, while lines wait for it.
    pub(crate) fn stdin_fd_to_watch(&self) -> Option<RawFd> {
        self.stdin.as_ref().filter(|_| !self.waiting.is_empty()).map(|s| s.as_raw_fd())
    }

    /// Sends one JSON-RPC message to the child: written now as far as the pipe takes it, the
    /// rest kept for `write_waiting`.
    pub(crate) fn send(&mut self, line: String) -> Result<(), Refused> {
        if self.stdin.is_none() {
            return Err(Refused::Closed);
        }
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if !self.waiting.is_empty()
            && (self.waiting.len() >= STDIN_LINES || self.waiting_bytes + bytes.len() > STDIN_BYTES)
        {
            let (lines, name) = (self.waiting.len(), &self.name);
            log::error!("MCP server {name:?} is not reading its stdin ({lines} messages waiting)");
            return Err(Refused::Stuck);
        }
        self.waiting_bytes += bytes.len();
        self.waiting.push_back(bytes);
        self.write_waiting()
    }

    /// Writes what waits, in order, until the pipe is full or nothing waits.
    pub(crate) fn write_waiting(&mut self) -> Result<(), Refused> {
        let Some(stdin) = self.stdin.as_mut() else { return Err(Refused::Closed) };
        while let Some(front) = self.waiting.front() {
            match stdin.write(&front[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    if self.written == front.len() {
                        self.waiting_bytes -= front.len();
                        self.waiting.pop_front();
                        self.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The child closed its stdin or exited; stdout's end reports it.
                    self.stdin = None;
                    self.waiting.clear();
                    self.waiting_bytes = 0;
                    return Err(Refused::Closed);
                }
            }
        }
        Ok(())
    }

    /// Reads what stdout has now (up to `READ_BUDGET`) and returns its complete lines, then
    /// `Said::Eof` if it ended. JSON lines only: others are logged and dropped.
    pub(crate) fn read_stdout(&mut self) -> Vec<Said> {
        let mut said = Vec::new();
        let Some(stdout) = self.stdout.as_mut() else { return said };
        // `read_to_end` reads into the buffer's spare room without zeroing it first, and keeps
        // what it read when it stops at `WouldBlock`.
        let start = self.partial.len();
        let got = stdout.take(READ_BUDGET as u64).read_to_end(&mut self.partial);
        let read = self.partial.len() - start;
        let mut ended = match got {
            Ok(_) => read < READ_BUDGET, // short of the budget without WouldBlock: the end
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => false,
            Err(e) => {
                log::warn!("reading the stdout of MCP server {:?} failed: {e}", self.name);
                true
            }
        };
        if !cut_lines(&mut self.partial, start, &self.name, &mut said) {
            ended = true;
        }
        if ended {
            self.stdout = None;
            self.partial = Vec::new();
            said.push(Said::Eof);
        }
        said
    }
}

/// Moves the complete lines out of `partial` (new bytes from `from` on) into `said`. False
/// when the line in progress is over `MAX_LINE`: the output is given up.
fn cut_lines(partial: &mut Vec<u8>, from: usize, name: &str, said: &mut Vec<Said>) -> bool {
    let mut begin = 0;
    let mut search = from;
    while let Some(nl) = partial[search..].iter().position(|&b| b == b'\n') {
        let end = search + nl;
        if end - begin > MAX_LINE {
            return too_long(name);
        }
        if let Some(line) = json_line(&partial[begin..end], name) {
            said.push(Said::Line(line));
        }
        begin = end + 1;
        search = begin;
    }
    partial.drain(..begin);
    if partial.len() > MAX_LINE {
        return too_long(name);
    }
    if partial.is_empty() && partial.capacity() > KEEP_CAPACITY {
        *partial = Vec::new();
    }
    true
}

fn too_long(name: &str) -> bool {
    log::error!("MCP server {name:?} wrote a line over {MAX_LINE} bytes; stopping");
    false
}

/// A line worth passing on, trimmed: empty lines are skipped, non-JSON ones logged.
fn json_line(bytes: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if !text.starts_with('{') && !text.starts_with('[') {
        log::warn!("MCP server {name:?} printed a non-JSON line on stdout (ignored): {text}");
        return None;
    }
    Some(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn start(script: &str) -> (Child, Pipes) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pipes = Pipes::new(child.stdin.take().unwrap(), child.stdout.take().unwrap(), "test").unwrap();
        (child, pipes)
    }

    /// Reads until stdout ends or 10 s pass, writing waiting lines whenever stdin has room.
    fn read_all(pipes: &mut Pipes) -> Vec<Said> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut said = Vec::new();
        while !said.contains(&Said::Eof) && Instant::now() < deadline {
            let mut fds = vec![(pipes.stdout_fd().unwrap(), false)];
            fds.extend(pipes.stdin_fd_to_watch().map(|fd| (fd, true)));
            let ready = crate::sys::poll(&fds, Some(Duration::from_millis(100))).unwrap();
            if ready.len() > 1 && (ready[1].writable || ready[1].hangup) {
                let _ = pipes.write_waiting();
            }
            said.extend(pipes.read_stdout());
        }
        said
    }

    #[test]
    fn lines_are_cut_trimmed_and_only_json_passes() {
        let (mut child, mut pipes) =
            start(r#"printf '{"a":1}\n\n  [1]  \njunk\n{"b":'; sleep 0.2; printf '2}\n{"c":3}'"#);
        let said = read_all(&mut pipes);
        let lines = vec![
            Said::Line(r#"{"a":1}"#.into()),
            Said::Line("[1]".into()),
            Said::Line(r#"{"b":2}"#.into()),
            Said::Eof,
        ];
        assert_eq!(said, lines, "a line split across reads is whole; the unterminated tail is not a line");
        let _ = child.wait();
    }

    #[test]
    fn what_the_pipe_cannot_take_now_waits_and_goes_out_in_order() {
        // The child reads nothing for a while, so the pipe (64 KiB) fills and lines wait.
        let (mut child, mut pipes) = start("sleep 0.3; cat");
        let lines: Vec<String> =
            (0..2000).map(|i| format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(100))).collect();
        for line in &lines {
            pipes.send(line.clone()).unwrap();
        }
        assert!(pipes.stdin_fd_to_watch().is_some(), "some lines wait for the pipe");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut echoed = Vec::new();
        while echoed.len() < lines.len() && Instant::now() < deadline {
            let mut fds = vec![(pipes.stdout_fd().unwrap(), false)];
            fds.extend(pipes.stdin_fd_to_watch().map(|fd| (fd, true)));
            let ready = crate::sys::poll(&fds, Some(Duration::from_millis(100))).unwrap();
            if ready.len() > 1 && ready[1].writable {
                pipes.write_waiting().unwrap();
            }
            echoed.extend(pipes.read_stdout().into_iter().filter_map(|s| match s {
                Said::Line(l) => Some(l),
                Said::Eof => None,
            }));
        }
        assert_eq!(echoed, lines, "every line arrives once, in order");
        assert!(pipes.stdin_fd_to_watch().is_none());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_child_that_never_reads_is_stuck_at_the_bound_not_our_memory() {
        let (mut child, mut pipes) = start("sleep 30");
        let line = "x".repeat(1024);
        let mut sent = 0;
        let refused = loop {
            match pipes.send(line.clone()) {
                Ok(()) => sent += 1,
                Err(why) => break why,
            }
            assert!(sent <= STDIN_LINES + 64, "no bound was hit");
        };
        assert_eq!(refused, Refused::Stuck);
        assert!(pipes.waiting.len() <= STDIN_LINES && pipes.waiting_bytes <= STDIN_BYTES);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn one_long_line_always_gets_in_but_the_byte_bound_holds_after_it() {
        let (mut child, mut pipes) = start("sleep 30");
        pipes.send("y".repeat(STDIN_BYTES + 10)).unwrap();
        assert_eq!(pipes.send("z".into()), Err(Refused::Stuck));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_child_that_closed_its_stdin_refuses_lines() {
        let (mut child, mut pipes) = start("exec 0<&-; sleep 0.2");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pipes.send("{}".into()), Err(Refused::Closed));
        assert_eq!(pipes.send("{}".into()), Err(Refused::Closed));
        let _ = child.wait();
    }

    #[test]
    fn a_line_over_the_limit_gives_the_output_up() {
        let (mut child, mut pipes) = start(&format!("head -c {} /dev/zero | tr '\\0' x; echo", MAX_LINE + 1));
        let said = read_all(&mut pipes);
        assert_eq!(said, vec![Said::Eof]);
        assert!(pipes.stdout_fd().is_none());
        let _ = child.kill();
        let _ = child.wait();
    }
}
