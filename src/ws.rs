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
//! command is taken, so a slow peer stops the owner from taking work rather than piling it up;
//! and the owner takes at most `ITEMS_PER_TURN` queued items before it reads the socket and keeps
//! its heartbeat again, so a busy queue never starves the peer's frames.
//!
//! Liveness is bytes, not only messages: a frame still arriving is a sign of life while it comes
//! at `MIN_RATE` or faster. A 16 MiB answer over a router's 2 Mbit/s uplink takes over a minute,
//! and the peer's pongs wait behind it; counting only whole messages would drop a healthy link in
//! the middle of its biggest answer, and counting any byte would let a peer hold a frame's buffer
//! for good by sending a byte a minute.

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
    /// Items ever queued and ever taken: what was queued before a moment has been taken once
    /// `taken` reaches `queued` as it was then.
    queued: u64,
    taken: u64,
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
    let state = QueueState {
        items: VecDeque::new(),
        bytes: 0,
        senders: 1,
        receiver_gone: false,
        queued: 0,
        taken: 0,
    };
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
                q.taken += 1;
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
        q.queued += 1;
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
    /// How many items were ever queued: a mark that `taken_past` compares with later.
    pub(crate) fn queued_mark(&self) -> u64 {
        lock(&self.queue.state).queued
    }

    /// Whether every item queued before `mark` was taken (`queued_mark`).
    pub(crate) fn taken_past(&self, mark: u64) -> bool {
        lock(&self.queue.state).taken >= mark
    }

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

/// Ping every `interval`; declare the peer dead after `timeout` without a byte from it.
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
    /// No byte from the peer within the heartbeat timeout.
    Silent(Duration),
    /// The socket or the protocol failed.
    Failed(String),
}

/// The slowest a frame may arrive and still count as life before it is whole, in bytes per
/// second: 64 kbit/s, far below any uplink a device runs on (a 16 MiB frame in 34 minutes).
const MIN_RATE: f64 = 8.0 * 1024.0;

/// Queued items the owner takes in one turn before it reads the socket and keeps its heartbeat
/// (what quinn's endpoint drivers do): a queue kept busy by other threads never starves reads.
const ITEMS_PER_TURN: usize = 64;

/// How long to wait for the peer's answer to our close frame before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Runs the owner loop until the link ends: `handler` gets every frame, queued item (when there
/// is a queue), event on its own descriptors and deadline, and what it puts in `out` is sent in
/// order. Inlined into its one caller per handler (each is its own instance anyway), so that the
/// caller's frame and the loop's are one: an owner thread waits under one frame the less.
#[inline(always)]
pub(crate) fn drive<S: Transport, T: Weigh>(
    ws: &mut WebSocket<S>,
    inbox: Option<&Inbox<T>>,
    heartbeat: Option<Heartbeat>,
    handler: &mut impl Handler<T>,
) -> End {
    let mut owner = Owner {
        ws,
        last_rx: Instant::now(),
        frame: None,
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
        let (want_write, more) = match owner.send_queued(inbox, handler) {
            Ok(turn) => turn,
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
        if more {
            // Items wait in the queue whose wake-up was already drained: look at the socket and
            // come straight back for them.
            timeout = Duration::ZERO;
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
        if ready[0].readable {
            // Bytes arrived (or the end, which the read reports): life, even in the middle of a
            // frame too big to have arrived yet, while it keeps coming fast enough.
            owner.arrived(sys::unread_bytes(fds[0].0));
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
    /// The frame still arriving: when its first bytes came, and how many have come since.
    frame: Option<(Instant, usize)>,
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

    /// Sends pending frames, then queued items through the handler, until both are empty, the
    /// socket is full or `ITEMS_PER_TURN` items were taken, then flushes. Returns whether the
    /// socket still has bytes to take (poll for writable), and whether items were left in the
    /// queue for the next turn.
    #[inline(never)]
    fn send_queued<T: Weigh>(
        &mut self,
        inbox: Option<&Inbox<T>>,
        handler: &mut impl Handler<T>,
    ) -> Result<(bool, bool), End> {
        // A frame that met a full socket sits in tungstenite's buffer: nothing more is written
        // (and nothing more taken from the queue) until that buffer is flushed.
        if self.blocked {
            match self.ws.flush() {
                Ok(()) => self.blocked = false,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.close_if_due();
                    return Ok((true, false));
                }
                Err(e) => return Err(self.ended(e)),
            }
        }
        let mut taken = 0;
        let mut more = false;
        while self.closing.is_none() {
            self.close_if_due();
            if self.closing.is_some() {
                break;
            }
            let frame = match self.pending.pop_front() {
                Some(Out::Text(text)) => Message::text(text),
                None if self.close_after.is_some() => break,
                None if taken == ITEMS_PER_TURN => {
                    more = true;
                    break;
                }
                None => match inbox.map_or(Err(TryRecvError::Empty), Inbox::try_recv) {
                    Ok(item) => {
                        taken += 1;
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
                    return Ok((true, false));
                }
                Err(e) => return Err(self.ended(e)),
            }
        }
        if self.pending.is_empty() {
            self.peer_made = 0;
        }
        match self.ws.flush() {
            Ok(()) => Ok((false, more)),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Ok((true, false))
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
            self.message_done();
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

    /// `n` bytes arrived before a read: life while the frame they belong to keeps `MIN_RATE`.
    fn arrived(&mut self, n: usize) {
        let now = Instant::now();
        let (since, bytes) = self.frame.get_or_insert((now, 0));
        *bytes = bytes.saturating_add(n);
        if *bytes as f64 >= MIN_RATE * now.duration_since(*since).as_secs_f64() {
            self.last_rx = now;
        }
    }

    /// A whole message (or control frame) arrived: life, and the next frame starts afresh.
    fn message_done(&mut self) {
        self.last_rx = Instant::now();
        self.frame = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use tungstenite::protocol::Role;

    /// Our end of a WebSocket over loopback, and the peer's raw socket.
    fn pair() -> (WebSocket<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        (WebSocket::from_raw_socket(ours, Role::Server, None), peer)
    }

    /// A client's text frame (masked, as RFC 6455 requires of clients).
    fn client_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x09];
        f.extend(mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Records the peer's text frames (and when the first came) and counts items, each taking
    /// `item_cost`.
    #[derive(Default)]
    struct Recorder {
        texts: Vec<usize>,
        first_text: Option<Instant>,
        items: usize,
        item_cost: Duration,
        seen: Arc<AtomicBool>,
    }

    impl Handler<Out> for Recorder {
        fn on_text(&mut self, text: String, _out: &mut VecDeque<Out>) -> Flow {
            self.texts.push(text.len());
            self.first_text.get_or_insert_with(Instant::now);
            self.seen.store(true, Ordering::SeqCst);
            Flow::Continue
        }

        fn on_item(&mut self, _item: Out, _out: &mut VecDeque<Out>) -> Flow {
            self.items += 1;
            std::thread::sleep(self.item_cost);
            Flow::Continue
        }
    }

    /// A frame that takes longer than the heartbeat timeout to arrive keeps the link alive by its
    /// bytes (its sender's pongs wait behind it), and arrives whole; a peer that sends nothing
    /// at all is still dropped.
    #[test]
    fn a_frame_slower_than_the_timeout_is_life_and_silence_is_not() {
        let heartbeat =
            Heartbeat { interval: Duration::from_millis(100), timeout: Duration::from_millis(400) };
        let (mut ws, mut peer) = pair();
        let frame = client_frame(&vec![b'x'; 96 * 1024]);
        let trickle = std::thread::spawn(move || {
            // 30 pieces 50 ms apart: 1.5 s for the frame, nearly four timeouts.
            for piece in frame.chunks(frame.len().div_ceil(30)) {
                peer.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = peer.shutdown(std::net::Shutdown::Both);
        });
        let mut recorder = Recorder::default();
        let end = drive::<_, Out>(&mut ws, None, Some(heartbeat), &mut recorder);
        trickle.join().unwrap();
        assert_eq!(recorder.texts, [96 * 1024], "the frame arrived whole ({end:?})");
        assert!(matches!(end, End::PeerClosed(_)), "the link ended when the peer closed it: {end:?}");

        let (mut ws, _quiet) = pair();
        let end = drive::<_, Out>(&mut ws, None, Some(heartbeat), &mut Recorder::default());
        assert!(matches!(end, End::Silent(_)), "{end:?}");
    }

    /// A frame trickled far below `MIN_RATE` (a byte every 50 ms) is not life: a peer cannot hold
    /// a frame's buffer open for good by sending a byte now and then.
    #[test]
    fn a_frame_trickled_below_the_minimum_rate_is_silence() {
        let heartbeat =
            Heartbeat { interval: Duration::from_millis(100), timeout: Duration::from_millis(400) };
        let (mut ws, mut peer) = pair();
        let frame = client_frame(&vec![b'x'; 64 * 1024]);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let trickle = std::thread::spawn(move || {
            for byte in frame.iter().take(100) {
                if stopped.load(Ordering::SeqCst) || peer.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let end = drive::<_, Out>(&mut ws, None, Some(heartbeat), &mut Recorder::default());
        stop.store(true, Ordering::SeqCst);
        trickle.join().unwrap();
        assert!(matches!(end, End::Silent(_)), "{end:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "noticed after {:?}", started.elapsed());
    }

    /// While other threads keep the owner's queue full, the peer's frames are still read within
    /// a few turns: the owner takes at most `ITEMS_PER_TURN` items before it reads.
    #[test]
    fn a_busy_queue_does_not_starve_the_peers_frames() {
        let (mut ws, mut peer) = pair();
        let (outbox, inbox) = bounded_within::<Out>(4096, usize::MAX, None).unwrap();
        let seen = Arc::new(AtomicBool::new(false));
        let (stop, producer_stop) = (seen.clone(), seen.clone());
        let producer = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(5);
            while !producer_stop.load(Ordering::SeqCst) && Instant::now() < until {
                if outbox.offer(Out::Text(String::new())).is_err() {
                    std::thread::yield_now();
                }
            }
        });
        let sent = Arc::new(Mutex::new(None));
        let sent_at = sent.clone();
        let peer_thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200)); // the queue is full by now
            peer.write_all(&client_frame(b"hello")).unwrap();
            *sent_at.lock().unwrap() = Some(Instant::now());
            let until = Instant::now() + Duration::from_secs(6);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = peer.shutdown(std::net::Shutdown::Both);
        });
        let mut recorder = Recorder { item_cost: Duration::from_micros(200), seen, ..Recorder::default() };
        let heartbeat = Heartbeat { interval: Duration::from_secs(60), timeout: Duration::from_secs(60) };
        drive(&mut ws, Some(&inbox), Some(heartbeat), &mut recorder);
        producer.join().unwrap();
        peer_thread.join().unwrap();
        let sent = sent.lock().unwrap().expect("the peer sent its frame");
        let read = recorder.first_text.expect("the frame was read");
        assert!(recorder.items > ITEMS_PER_TURN, "the queue was busy: {} items", recorder.items);
        let late = read.saturating_duration_since(sent);
        assert!(late < Duration::from_secs(1), "the frame waited {late:?} behind the queue");
    }
}
