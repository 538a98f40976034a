//! The owner loop of a WebSocket, shared by both roles: the gateway's side of a registered edge
//! and the register's side of its gateway link.
//!
//! A blocking tungstenite socket cannot be read and written from two threads, so exactly one
//! thread owns it and waits in `poll(2)` on the socket, on the descriptors its `Handler` names
//! (register: the child's pipes and the signal pipe) and, when other threads talk to it, on a
//! wake-up descriptor (`sys::Wake`): they queue typed commands into a bounded `Outbox` (the
//! gateway's link owner) and signal the wake-up. Heartbeat pings come from poll's timeout. No
//! fixed-interval polling: an idle link costs no CPU. Backpressure: while the socket cannot take
//! more bytes, the owner stops draining the queue, the queue fills, and senders get `Full`
//! instead of growing memory without bound; a handler sees how many frames wait and stops
//! watching what makes more.
//!
//! What the handler wants sent waits in a short local queue that is drained before the next
//! command is taken, so a slow peer stops the owner from taking work rather than piling it up.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::TryRecvError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::budget::Budget;
use crate::http::Transport;
use crate::sys::{self, Wake};
use crate::thread::{self, lock};

/// A frame for the owner to send.
#[derive(Debug)]
pub(crate) enum Out {
    Text(String),
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq)]
pub(crate) enum SendError {
    /// The queue is full: the peer is not reading fast enough.
    Full,
    /// The owner is gone: the link is closed.
    Closed,
}

/// What a queued item costs in bytes, for the queue's byte bound.
pub(crate) trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Out {
    fn weight(&self) -> usize {
        match self {
            Out::Text(t) => t.len(),
        }
    }
}

/// tungstenite's buffers for every link, both roles. Its defaults (128 KiB to read into, zeroed
/// on every read, and 128 KiB of writes gathered before a syscall) cost a quarter of a megabyte per
/// idle link; a frame bigger than the read buffer still arrives whole (the buffer grows to the
/// frame's length, and keeps that room for the link's life), and the owner flushes after each
/// batch anyway. 1 KiB holds a call or its answer; a 1 MB answer took as long through 1 KiB as
/// through 4 KiB (21–22 ms), and 1,000 links whose frames stay small kept 3 MiB less. Measured
/// in BENCHMARKS.md.
pub(crate) const READ_BUFFER: usize = 1024;
pub(crate) const WRITE_BUFFER: usize = 8 * 1024;

/// The sending half: cheap to clone, used by any thread.
pub(crate) struct Outbox<T = Out> {
    queue: Arc<Queue<T>>,
    wake: Arc<Wake>,
}

/// The receiving half, owned by the socket's owner thread.
pub(crate) struct Inbox<T = Out> {
    queue: Arc<Queue<T>>,
    wake: Arc<Wake>,
}

/// The queue itself: grows as items come (nothing is allocated for a quiet link), bounded in
/// count and in bytes.
struct Queue<T> {
    state: Mutex<QueueState<T>>,
    /// A budget shared with other queues, charged too.
    budget: Option<Arc<Budget>>,
    capacity: usize,
    max_bytes: usize,
}

struct QueueState<T> {
    items: VecDeque<T>,
    bytes: usize,
    senders: usize,
    receiver_gone: bool,
}

/// The owner's wait in `poll`, resting (`thread::wait_resting`) once nothing has happened for a
/// while. Not generic, so every kind of owner loop shares it.
#[inline(never)]
fn wait_for(fds: &[(RawFd, bool)], timeout: Duration) -> io::Result<Vec<sys::Ready>> {
    thread::wait_resting(
        timeout,
        |t| sys::poll(fds, Some(t)),
        |r| r.as_ref().is_ok_and(|ready| ready.iter().all(|r| !r.readable && !r.writable && !r.hangup)),
    )
}

/// A queue of at most `capacity` items and `max_bytes` bytes, with its wake-up descriptor, its
/// bytes also counted against a `budget` shared with other queues.
pub(crate) fn bounded_within<T: Weigh>(
    capacity: usize,
    max_bytes: usize,
    budget: Option<Arc<Budget>>,
) -> io::Result<(Outbox<T>, Inbox<T>)> {
    let wake = Arc::new(Wake::new()?);
    let state = QueueState { items: VecDeque::new(), bytes: 0, senders: 1, receiver_gone: false };
    let queue = Arc::new(Queue { state: Mutex::new(state), budget, capacity, max_bytes });
    Ok((Outbox { queue: queue.clone(), wake: wake.clone() }, Inbox { queue, wake }))
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        lock(&self.queue.state).senders += 1;
        Outbox { queue: self.queue.clone(), wake: self.wake.clone() }
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        lock(&self.queue.state).senders -= 1;
        self.wake();
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let mut q = lock(&self.queue.state);
        q.receiver_gone = true;
        q.items.clear();
        if let Some(b) = &self.queue.budget {
            b.give(q.bytes);
        }
        q.bytes = 0;
    }
}

impl<T: Weigh> Inbox<T> {
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut q = lock(&self.queue.state);
        match q.items.pop_front() {
            Some(item) => {
                let weight = item.weight();
                q.bytes -= weight;
                if let Some(b) = &self.queue.budget {
                    b.give(weight);
                }
                Ok(item)
            }
            None if q.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T: Weigh> Outbox<T> {
    /// Queues an item without waiting; on failure the item comes back, with why.
    pub(crate) fn offer(&self, item: T) -> Result<(), (SendError, T)> {
        let weight = item.weight();
        let mut q = lock(&self.queue.state);
        if q.receiver_gone {
            return Err((SendError::Closed, item));
        }
        if !self.queue.fits(&q, weight) || !self.queue.budget.as_ref().is_none_or(|b| b.take(weight)) {
            return Err((SendError::Full, item));
        }
        q.bytes += weight;
        q.items.push_back(item);
        drop(q);
        self.wake();
        Ok(())
    }
}

impl<T> Queue<T> {
    /// Whether an item of `weight` bytes fits (one item always fits an empty queue).
    fn fits(&self, q: &QueueState<T>, weight: usize) -> bool {
        q.items.is_empty() || (q.items.len() < self.capacity && q.bytes + weight <= self.max_bytes)
    }
}

impl<T> Outbox<T> {
    /// Wakes the owner without queueing anything (it re-reads whatever flags it watches).
    pub(crate) fn wake(&self) {
        self.wake.wake();
    }
}

/// What the owner of a socket does with what arrives: frames from the peer, items from its
/// queue, descriptors of its own, and the passing of time. Frames to send go into `out`.
pub(crate) trait Handler<T> {
    /// A text frame from the peer (binary frames holding UTF-8 are passed on as text).
    fn on_text(&mut self, text: String, out: &mut VecDeque<Out>) -> Flow;
    /// An item from the queue.
    fn on_item(&mut self, item: T, out: &mut VecDeque<Out>) -> Flow;
    /// Descriptors to wait on besides the socket, as (descriptor, want-writable), asked before
    /// every wait. `pending` is how many frames wait for the socket: a handler that makes frames
    /// from a descriptor stops watching it while they pile up.
    fn watch(&self, _pending: usize, _fds: &mut Vec<(RawFd, bool)>) {}
    /// Descriptor `fd` of those `watch` named is ready.
    fn on_ready(&mut self, _fd: RawFd, _ready: sys::Ready, _out: &mut VecDeque<Out>) -> Flow {
        Flow::Continue
    }
    /// The owner woke up (a frame, an item, a deadline): the time is `now`.
    fn on_tick(&mut self, _now: Instant, _out: &mut VecDeque<Out>) -> Flow {
        Flow::Continue
    }
    /// When the handler next wants `on_tick`, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// Frames made in answer to the peer's own frames and waiting to be written, past which a peer
/// that sends without reading is dropped. (What a handler makes from its own descriptors is
/// bounded by the handler, which stops watching them while frames wait.)
const MAX_PENDING: usize = 4096;

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

/// Runs the owner loop until the link ends: `handler` gets every frame, queued item (when there
/// is a queue), event on its own descriptors and deadline, and what it puts in `out` is sent in
/// order.
pub(crate) fn drive<S: Transport, T: Weigh>(
    ws: &mut WebSocket<S>,
    inbox: Option<&Inbox<T>>,
    heartbeat: Option<Heartbeat>,
    handler: &mut impl Handler<T>,
) -> End {
    let mut owner = Owner {
        ws,
        last_rx: Instant::now(),
        last_ping: Instant::now(),
        closing: None,
        peer_close: None,
        pending: VecDeque::new(),
        peer_made: 0,
        blocked: false,
        close_after: None,
    };
    if let Err(e) = owner.ws.get_ref().socket().set_nonblocking(true) {
        return End::Failed(format!("cannot make the socket non-blocking: {e}"));
    }
    loop {
        let flow = handler.on_tick(Instant::now(), &mut owner.pending);
        owner.follow(flow);
        let want_write = match owner.send_queued(inbox, handler) {
            Ok(w) => w,
            Err(end) => return end,
        };
        if let Some(since) = owner.closing {
            if since.elapsed() > CLOSE_GRACE {
                return End::Closed;
            }
        }
        let mut timeout = owner.next_timeout(heartbeat);
        if let Some(at) = handler.deadline() {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        }
        let mut fds = vec![(owner.ws.get_ref().socket().as_raw_fd(), want_write)];
        fds.extend(inbox.map(|inbox| (inbox.wake.as_raw_fd(), false)));
        let theirs = fds.len();
        handler.watch(owner.pending.len(), &mut fds);
        let ready = match wait_for(&fds, timeout) {
            Ok(r) => r,
            Err(e) => return End::Failed(format!("poll failed: {e}")),
        };
        if let Some(inbox) = inbox.filter(|_| ready[1].readable) {
            inbox.wake.drain();
        }
        for (&(fd, _), r) in fds[theirs..].iter().zip(&ready[theirs..]) {
            if r.readable || r.writable || r.hangup {
                let flow = handler.on_ready(fd, *r, &mut owner.pending);
                owner.follow(flow);
            }
        }
        if ready[0].readable || ready[0].hangup {
            if let Some(end) = owner.read_available(handler) {
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
    /// Frames the handler wants sent, written before the next queued item is taken.
    pending: VecDeque<Out>,
    /// How many of them answer the peer's frames (`on_text`), since `pending` was last empty.
    peer_made: usize,
    /// The socket refused bytes: tungstenite holds a frame until a flush succeeds.
    blocked: bool,
    /// A close the handler asked for, sent once `pending` is out (code, reason, when asked).
    close_after: Option<(u16, String, Instant)>,
}

impl<S: Transport> Owner<'_, S> {
    /// Does what the handler asked of the link: a close goes out after the frames the handler
    /// queued before it (an error frame, say), or after `CLOSE_GRACE` if the peer will not take them.
    fn follow(&mut self, flow: Flow) {
        if let Flow::Close(code, reason) = flow {
            if self.close_after.is_none() && self.closing.is_none() {
                self.close_after = Some((code, reason, Instant::now()));
            }
        }
    }

    /// Starts the close the handler asked for, once its frames are out or the grace is over.
    fn close_if_due(&mut self) {
        let due = match &self.close_after {
            Some((_, _, since)) => self.pending.is_empty() || since.elapsed() > CLOSE_GRACE,
            None => false,
        };
        if due {
            if let Some((code, reason, _)) = self.close_after.take() {
                self.start_close(code, reason);
            }
        }
    }

    /// Sends pending frames, then queued items through the handler, until both are empty or
    /// the socket is full, then flushes. Returns whether the socket still has bytes to take
    /// (poll for writable).
    #[inline(never)]
    fn send_queued<T: Weigh>(
        &mut self,
        inbox: Option<&Inbox<T>>,
        handler: &mut impl Handler<T>,
    ) -> Result<bool, End> {
        // A frame that met a full socket sits in tungstenite's buffer: nothing more is written
        // (and nothing more taken from the queue) until that buffer is flushed.
        if self.blocked {
            match self.ws.flush() {
                Ok(()) => self.blocked = false,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.close_if_due();
                    return Ok(true);
                }
                Err(e) => return Err(self.ended(e)),
            }
        }
        while self.closing.is_none() {
            self.close_if_due();
            if self.closing.is_some() {
                break;
            }
            let frame = match self.pending.pop_front() {
                Some(Out::Text(text)) => Message::text(text),
                None if self.close_after.is_some() => break,
                None => match inbox.map_or(Err(TryRecvError::Empty), Inbox::try_recv) {
                    Ok(item) => {
                        let flow = handler.on_item(item, &mut self.pending);
                        self.follow(flow);
                        continue;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.start_close(1000, String::new());
                        break;
                    }
                },
            };
            match self.ws.write(frame) {
                Ok(()) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(true);
                }
                Err(e) => return Err(self.ended(e)),
            }
        }
        if self.pending.is_empty() {
            self.peer_made = 0;
        }
        match self.ws.flush() {
            Ok(()) => Ok(false),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Ok(true)
            }
            Err(e) => Err(self.ended(e)),
        }
    }

    /// Reads every frame available now (rustls may hold decrypted bytes poll cannot see, so
    /// never stop before `WouldBlock`).
    #[inline(never)]
    fn read_available<T>(&mut self, handler: &mut impl Handler<T>) -> Option<End> {
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
            if self.closing.is_some() || self.close_after.is_some() {
                continue;
            }
            let before = self.pending.len();
            let flow = handler.on_text(text, &mut self.pending);
            self.peer_made += self.pending.len().saturating_sub(before);
            self.follow(flow);
            if self.peer_made > MAX_PENDING {
                self.start_close(1008, "sending without reading the answers".into());
                return Some(End::Failed(format!(
                    "the peer sent without reading ({MAX_PENDING} frames waiting)"
                )));
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
        if let Some(since) = self.closing.or(self.close_after.as_ref().map(|c| c.2)) {
            t = t.min((since + CLOSE_GRACE).saturating_duration_since(Instant::now()));
        }
        t.max(Duration::from_millis(1))
    }

    #[inline(never)]
    fn beat(&mut self, heartbeat: Option<Heartbeat>) -> Option<End> {
        let hb = heartbeat?;
        let silent = self.last_rx.elapsed();
        if silent >= hb.timeout {
            return Some(End::Silent(silent));
        }
        if self.last_ping.elapsed() >= hb.interval && self.closing.is_none() && !self.blocked {
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
