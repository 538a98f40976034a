//! The `--metrics-listen` server: `GET /metrics` (and `HEAD`) without authentication on its own
//! address, one request per connection, from one thread that waits on all its sockets at once
//! with `poll(2)`. A socket that sends nothing, or reads its answer slowly, holds one of
//! `MAX_PENDING` slots until its deadline and stalls nobody: a scrape is answered as soon as
//! its head is in. A newcomer past `MAX_PENDING` closes the oldest socket.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::gateway::shared::Gateway;
use crate::http::{parse_head, Framing, Limits, ReadError, Request, Response};
use crate::sys;

/// Sockets held at once.
pub(crate) const MAX_PENDING: usize = 32;
/// Time from accept to a complete request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time to take the whole answer once it is ready.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Time to drain what the client still sends after the answer, so a reset does not destroy it.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes of a request head.
const MAX_HEAD: usize = 4096;

/// One socket being served.
struct Pending {
    stream: TcpStream,
    /// The request head so far.
    head: Vec<u8>,
    /// The answer, once the head is in, and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
    /// The answer is written; reading only drains until the client closes.
    draining: bool,
    deadline: Instant,
}

/// Serves until the process ends.
pub(crate) fn serve(gw: &Gateway, listener: &TcpListener) {
    if let Err(e) = listener.set_nonblocking(true) {
        return log::error!("--metrics-listen: cannot make the socket non-blocking: {e}; metrics are off");
    }
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        let now = Instant::now();
        pending.retain(|p| p.deadline > now);
        let mut fds = vec![(listener.as_raw_fd(), false)];
        fds.extend(pending.iter().map(|p| (p.stream.as_raw_fd(), p.out.is_some() && !p.draining)));
        let timeout = pending.iter().map(|p| p.deadline.saturating_duration_since(now)).min();
        let ready = match sys::poll(&fds, timeout) {
            Ok(ready) => ready,
            Err(e) => {
                log::error!("--metrics-listen: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut finished = Vec::new();
        for (i, p) in pending.iter_mut().enumerate() {
            let r = ready[i + 1];
            if step(gw, p, r.readable || r.hangup).is_err() {
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            pending.remove(i);
        }
        if ready[0].readable {
            accept_all(listener, &mut pending);
        }
    }
}

/// Takes every waiting connection, closing the oldest held ones past `MAX_PENDING`.
fn accept_all(listener: &TcpListener, pending: &mut VecDeque<Pending>) {
    for _ in 0..MAX_PENDING {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!("--metrics-listen: accept failed: {e}");
                return;
            }
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
        }
        let deadline = Instant::now() + HEAD_DEADLINE;
        pending.push_back(Pending { stream, head: Vec::new(), out: None, draining: false, deadline });
    }
}

/// Moves one socket on as far as it goes without blocking; `Err` when it is done with.
fn step(gw: &Gateway, p: &mut Pending, readable: bool) -> Result<(), ()> {
    if readable {
        read_available(gw, p)?;
    }
    if !p.draining {
        write_available(p)?;
    }
    Ok(())
}

/// Reads what is there: the head (then the answer is made), or bytes to drain.
fn read_available(gw: &Gateway, p: &mut Pending) -> Result<(), ()> {
    let mut chunk = [0u8; 4096];
    // Bounded per round, so a client that never stops sending cannot keep the loop here.
    for _ in 0..16 {
        match p.stream.read(&mut chunk) {
            Ok(0) => return Err(()),
            // Anything after the head is not ours to serve; it is read only to close cleanly.
            Ok(_) if p.out.is_some() => {}
            Ok(n) => {
                let take = n.min(MAX_HEAD + 1 - p.head.len());
                p.head.extend_from_slice(&chunk[..take]);
                if let Some(resp) = answer(gw, &p.head) {
                    p.out = Some((resp, 0));
                    p.deadline = Instant::now() + WRITE_DEADLINE;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// Writes what the socket takes of the answer; once all is out, starts draining.
fn write_available(p: &mut Pending) -> Result<(), ()> {
    let Some((out, sent)) = &mut p.out else { return Ok(()) };
    while *sent < out.len() {
        match p.stream.write(&out[*sent..]) {
            Ok(0) => return Err(()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let _ = p.stream.shutdown(Shutdown::Write);
    p.draining = true;
    p.deadline = p.deadline.min(Instant::now() + LINGER);
    Ok(())
}

/// The bytes of the answer once `head` holds a whole request head (or is past its cap).
fn answer(gw: &Gateway, head: &[u8]) -> Option<Vec<u8>> {
    let limits = Limits { max_header_bytes: MAX_HEAD, max_headers: 32, max_body: 0, ..Limits::default() };
    let (resp, head_only) = match parse_head(head, &limits) {
        Ok(Some((_, req, framing))) => (respond(gw, &req, framing), req.method == "HEAD"),
        Ok(None) if head.len() <= MAX_HEAD => return None,
        Ok(None) => (Response::error(431, "request headers too large"), false),
        Err(ReadError::Status(code, why)) => (Response::error(code, &why), false),
        Err(_) => (Response::error(400, "malformed request"), false),
    };
    let mut out = Vec::new();
    resp.write_for(&mut out, false, head_only).ok()?;
    Some(out)
}

fn respond(gw: &Gateway, req: &Request, framing: Framing) -> Response {
    if !["GET", "HEAD"].contains(&req.method.as_str()) {
        let known = ["POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
        if !known.contains(&req.method.as_str()) {
            return Response::error(501, &format!("method {:?} is not implemented here", req.method));
        }
        return Response::error(405, "/metrics takes GET and HEAD").header("Allow", "GET, HEAD");
    }
    if req.path != "/metrics" {
        return Response::error(404, "only /metrics here");
    }
    if framing.has_body() {
        return Response::error(400, "/metrics takes no request body");
    }
    crate::gateway::ops::exposition::metrics(gw)
}
