//! The floor: the same calls sent straight to a stdio MCP server (`sh -c CMD`), no gateway and no
//! register in between. One caller reads the server's stdout itself (no extra thread hop, like a
//! session reading its own socket); several callers share the pipes, a reader thread handing
//! each answer to its caller by id.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{io_err, json_string, response_id};

pub struct Server {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    /// Until `share`: the single caller reads this itself.
    stdout: Option<BufReader<ChildStdout>>,
    waiters: Arc<Mutex<HashMap<u64, Sender<String>>>>,
    next_id: Arc<AtomicU64>,
}

impl Server {
    /// Starts the server and initializes it.
    pub fn start(cmd: &str) -> io::Result<Server> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| io_err("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| io_err("no stdout"))?;
        let mut s = Server {
            child,
            stdin: Arc::new(Mutex::new(stdin)),
            stdout: Some(BufReader::with_capacity(64 * 1024, stdout)),
            waiters: Arc::new(Mutex::new(HashMap::new())),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        let init = r#"{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"mcpport-loadgen","version":"1"}}"#;
        let a = s.call_inline("initialize", init)?;
        if a.contains("\"error\"") {
            return Err(io_err(format!("initialize failed: {a}")));
        }
        s.write_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        Ok(s)
    }

    fn write_line(&self, line: &str) -> io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let mut w = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf)?;
        w.flush()
    }

    /// One request, its answer read here (single caller only).
    pub fn call_inline(&mut self, method: &str, params: &str) -> io::Result<String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.write_line(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#))?;
        let r = self.stdout.as_mut().ok_or_else(|| io_err("shared: use a Caller"))?;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(io_err("the server closed its stdout"));
            }
            if response_id(line.trim_end()).is_some_and(|(got, _)| got == id) {
                return Ok(line.trim_end().to_string());
            }
        }
    }

    /// Calls `tool` with `{"text": text}` and checks the answer holds `text`.
    pub fn call_checked(&mut self, tool: &str, text: &str) -> Option<String> {
        let params =
            format!(r#"{{"name":{},"arguments":{{"text":{}}}}}"#, json_string(tool), json_string(text));
        check(self.call_inline("tools/call", &params), text)
    }

    /// From now on, callers share the pipes: a reader thread routes answers by id.
    pub fn share(&mut self) -> io::Result<()> {
        let Some(mut r) = self.stdout.take() else { return Ok(()) };
        let waiters = self.waiters.clone();
        std::thread::Builder::new().name("direct-reader".into()).spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = line.trim_end();
                if let Some((id, _)) = response_id(text) {
                    let w = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some(tx) = w {
                        let _ = tx.send(text.to_string());
                    }
                }
            }
            waiters.lock().unwrap_or_else(|p| p.into_inner()).clear();
        })?;
        Ok(())
    }

    /// A handle for one more concurrent caller (after `share`).
    pub fn caller(&self) -> Caller {
        Caller { stdin: self.stdin.clone(), waiters: self.waiters.clone(), next_id: self.next_id.clone() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(outcome: io::Result<String>, text: &str) -> Option<String> {
    match outcome {
        Ok(a) if a.contains("\"error\"") || a.contains("\"isError\":true") => {
            Some(format!("error answer: {a}"))
        }
        Ok(a) if !a.contains(text) => Some(format!("unexpected answer: {a}")),
        Ok(_) => None,
        Err(e) => Some(format!("call failed: {e}")),
    }
}

/// One of several concurrent callers of a shared server.
pub struct Caller {
    stdin: Arc<Mutex<ChildStdin>>,
    waiters: Arc<Mutex<HashMap<u64, Sender<String>>>>,
    next_id: Arc<AtomicU64>,
}

impl Caller {
    pub fn call_checked(&mut self, tool: &str, text: &str) -> Option<String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let params =
            format!(r#"{{"name":{},"arguments":{{"text":{}}}}}"#, json_string(tool), json_string(text));
        let mut line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#);
        line.push('\n');
        let sent = {
            let mut w = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
            w.write_all(line.as_bytes()).and_then(|()| w.flush())
        };
        let outcome = sent.and_then(|()| {
            rx.recv_timeout(Duration::from_secs(60)).map_err(|_| io_err("no answer within 60 s"))
        });
        check(outcome, text)
    }
}
