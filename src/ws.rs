//! The owner loop of a WebSocket, shared by both roles: the gateway's side of a registered edge
//! and the register's side of its gateway link.
//!
//! A blocking tungstenite socket cannot be read and written from two threads, so exactly one
//! thread owns it and waits in `poll(2)` on the socket and on a wake pipe. Other threads queue
//! frames into a bounded `Outbox` and write one byte to the wake pipe; the owner sends them at
//! once. Heartbeat pings come from poll's timeout. No fixed-interval polling: an idle link costs
//! no CPU. Backpressure: while the socket cannot take more bytes, the owner stops draining the
//! queue, the queue fills, and senders get `Full` instead of growing memory without bound.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::http::Transport;
use crate::sys;

/// A frame for the owner to send.
#[derive(Debug)]
pub(crate) enum Out {
    Text(String),
    /// Send a close frame with this code and reason, then end once the peer answers.
    Close(u16, String),
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq)]
pub(crate) enum SendError {
    /// The queue is full: the peer is not reading fast enough.
    Full,
    /// The owner is gone: the link is closed.
    Closed,
}

/// The sending half: cheap to clone, used by any thread.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: SyncSender<Out>,
    wake: Arc<UnixStream>,
}

/// The receiving half, owned by the socket's owner thread.
pub(crate) struct Inbox {
    rx: Receiver<Out>,
    wake: UnixStream,
}

/// A queue of `capacity` frames with its wake pipe.
pub(crate) fn channel(capacity: usize) -> io::Result<(Outbox, Inbox)> {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    Ok((Outbox { tx, wake: Arc::new(wake_tx) }, Inbox { rx, wake: wake_rx }))
}

impl Inbox {
    /// Drops every queued frame (what a dead child wrote for a link that no longer exists).
    pub(crate) fn clear(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

impl Outbox {
    /// Queues a frame without waiting.
    pub(crate) fn send(&self, out: Out) -> Result<(), SendError> {
        self.tx.try_send(out).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Disconnected(_) => SendError::Closed,
        })?;
        self.wake();
        Ok(())
    }

    /// Queues a frame, waiting while the queue is full (backpressure onto the caller).
    pub(crate) fn send_wait(&self, out: Out) -> Result<(), SendError> {
        self.tx.send(out).map_err(|_| SendError::Closed)?;
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        // A full pipe already holds a wake-up; nothing is lost by ignoring WouldBlock.
        let _ = (&*self.wake).write(&[1]);
    }
}

/// What the owner tells its handler about.
pub(crate) enum Event {
    /// A text frame (binary frames holding UTF-8 are passed on as text).
    Text(String),
    /// One of the extra descriptors is readable.
    Fd,
}

/// What the handler wants next.
pub(crate) enum Flow {
    Continue,
    /// Close the link with this code and reason.
    Close(u16, String),
}

/// Ping every `interval`; declare the peer dead after `timeout` without any frame from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why the owner loop ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed the link (with its close frame, if it sent one) or the socket hit EOF.
    PeerClosed(Option<(u16, String)>),
    /// We closed it (a `Close` frame, a handler's `Flow::Close`, or every `Outbox` dropped).
    Closed,
    /// No frame from the peer within the heartbeat timeout.
    Silent(Duration),
    /// The socket or the protocol failed.
    Failed(String),
}

/// How long to wait for the peer's answer to our close frame before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Runs the owner loop until the link ends. `extra` descriptors (a signal pipe, say) are polled
/// too and reported as `Event::Fd`.
pub(crate) fn pump<S: Transport>(
    ws: &mut WebSocket<S>,
    inbox: &Inbox,
    extra: &[RawFd],
    heartbeat: Option<Heartbeat>,
    mut on: impl FnMut(Event) -> Flow,
) -> End {
    let mut owner =
        Owner { ws, last_rx: Instant::now(), last_ping: Instant::now(), closing: None, peer_close: None };
    if let Err(e) = owner.ws.get_ref().socket().set_nonblocking(true) {
        return End::Failed(format!("cannot make the socket non-blocking: {e}"));
    }
    loop {
        let want_write = match owner.send_queued(inbox) {
            Ok(w) => w,
            Err(end) => return end,
        };
        if let Some(since) = owner.closing {
            if since.elapsed() > CLOSE_GRACE {
                return End::Closed;
            }
        }
        let timeout = owner.next_timeout(heartbeat);
        let mut fds =
            vec![(owner.ws.get_ref().socket().as_raw_fd(), want_write), (inbox.wake.as_raw_fd(), false)];
        fds.extend(extra.iter().map(|&fd| (fd, false)));
        let ready = match sys::poll(&fds, Some(timeout)) {
            Ok(r) => r,
            Err(e) => return End::Failed(format!("poll failed: {e}")),
        };
        if ready[1].readable {
            drain_wake_pipe(&inbox.wake);
        }
        for r in &ready[2..] {
            if r.readable || r.hangup {
                if let Flow::Close(code, reason) = on(Event::Fd) {
                    owner.start_close(code, reason);
                }
            }
        }
        if ready[0].readable || ready[0].hangup {
            if let Some(end) = owner.read_available(&mut on) {
                return end;
            }
        }
        if let Some(end) = owner.beat(heartbeat) {
            return end;
        }
    }
}

struct Owner<'a, S: Transport> {
    ws: &'a mut WebSocket<S>,
    last_rx: Instant,
    last_ping: Instant,
    /// When we sent our close frame.
    closing: Option<Instant>,
    /// The close frame the peer sent, as (code, reason).
    peer_close: Option<(u16, String)>,
}

impl<S: Transport> Owner<'_, S> {
    /// Sends queued frames until the queue is empty or the socket is full, then flushes.
    /// Returns whether the socket still has bytes to take (poll for writable).
    fn send_queued(&mut self, inbox: &Inbox) -> Result<bool, End> {
        while self.closing.is_none() {
            let frame = match inbox.rx.try_recv() {
                Ok(Out::Text(text)) => Message::text(text),
                Ok(Out::Close(code, reason)) => {
                    self.start_close(code, reason);
                    break;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.start_close(1000, String::new());
                    break;
                }
            };
            match self.ws.write(frame) {
                Ok(()) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(self.ended(e)),
            }
        }
        match self.ws.flush() {
            Ok(()) => Ok(false),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(self.ended(e)),
        }
    }

    /// Reads every frame available now (rustls may hold decrypted bytes poll cannot see, so
    /// never stop before `WouldBlock`).
    fn read_available(&mut self, on: &mut impl FnMut(Event) -> Flow) -> Option<End> {
        loop {
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(WsError::Capacity(e)) => {
                    // Tell the peer why before dropping it (best effort: it may not read).
                    let frame = CloseFrame { code: CloseCode::Size, reason: "message too big".into() };
                    let _ = self.ws.close(Some(frame));
                    let _ = self.ws.flush();
                    return Some(End::Failed(format!("message too big: {e}")));
                }
                Err(e) => return Some(self.ended(e)),
            };
            self.last_rx = Instant::now();
            let text = match msg {
                Message::Text(t) => t.as_str().to_owned(),
                Message::Binary(b) => match String::from_utf8(b.to_vec()) {
                    Ok(t) => t,
                    Err(_) => {
                        log::warn!("ignoring a binary frame that is not UTF-8 ({} bytes)", b.len());
                        continue;
                    }
                },
                // tungstenite answers a close frame itself; the next read reports ConnectionClosed.
                Message::Close(frame) => {
                    self.peer_close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    continue;
                }
                // Pongs to the peer's pings are queued by tungstenite itself.
                _ => continue,
            };
            if self.closing.is_some() {
                continue;
            }
            if let Flow::Close(code, reason) = on(Event::Text(text)) {
                self.start_close(code, reason);
            }
        }
    }

    fn start_close(&mut self, code: u16, reason: String) {
        if self.closing.is_none() {
            self.closing = Some(Instant::now());
            let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
            // Errors surface on the next flush or read.
            let _ = self.ws.close(Some(frame));
        }
    }

    fn next_timeout(&self, heartbeat: Option<Heartbeat>) -> Duration {
        let mut t = Duration::from_secs(3600);
        if let Some(hb) = heartbeat {
            t = t.min((self.last_ping + hb.interval).saturating_duration_since(Instant::now()));
            t = t.min((self.last_rx + hb.timeout).saturating_duration_since(Instant::now()));
        }
        if let Some(since) = self.closing {
            t = t.min((since + CLOSE_GRACE).saturating_duration_since(Instant::now()));
        }
        t.max(Duration::from_millis(1))
    }

    fn beat(&mut self, heartbeat: Option<Heartbeat>) -> Option<End> {
        let hb = heartbeat?;
        let silent = self.last_rx.elapsed();
        if silent >= hb.timeout {
            return Some(End::Silent(silent));
        }
        if self.last_ping.elapsed() >= hb.interval && self.closing.is_none() {
            self.last_ping = Instant::now();
            match self.ws.write(Message::Ping(Vec::new().into())) {
                Ok(()) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Some(self.ended(e)),
            }
        }
        None
    }

    fn ended(&self, e: WsError) -> End {
        match e {
            WsError::ConnectionClosed | WsError::AlreadyClosed if self.closing.is_some() => End::Closed,
            WsError::ConnectionClosed | WsError::AlreadyClosed => End::PeerClosed(self.peer_close.clone()),
            WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                End::PeerClosed(None)
            }
            e => End::Failed(e.to_string()),
        }
    }
}

fn drain_wake_pipe(mut pipe: &UnixStream) {
    let mut buf = [0u8; 256];
    while matches!(pipe.read(&mut buf), Ok(n) if n > 0) {}
}
