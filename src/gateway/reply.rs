//! Where a client's answers go, and the promise that each call gets exactly one.
//!
//! A `Mailbox` is a queue between the threads that produce messages for a client (link owners,
//! the connection thread itself) and the one thread that writes them (a POST's response, or a
//! session's SSE stream); it is bounded in count and in bytes. A `Caller` stands for one call in
//! flight: it is moved into the link that serves the call, and it ends exactly once, with the
//! answer, with nothing (the client cancelled), or, if it is dropped unanswered (its link died),
//! with an error. Ending it frees the session's slot for another call.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::session::Session;
use crate::thread::lock;

/// The marker a POST's mailbox gets for a request that ends without an answer.
pub(crate) const NO_ANSWER: Value = Value::Null;

/// A bounded queue of messages for one writer.
pub(crate) struct Mailbox {
    state: Mutex<Queue>,
    ready: Condvar,
    max_items: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Value, usize)>,
    bytes: usize,
    closed: bool,
    /// Messages dropped because the reader was too slow.
    dropped: usize,
}

/// Why `Mailbox::recv` returned no message.
#[derive(Debug, PartialEq)]
pub(crate) enum Empty {
    Timeout,
    Closed,
}

impl Mailbox {
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox { state: Mutex::new(Queue::default()), ready: Condvar::new(), max_items, max_bytes })
    }

    /// Queues a message if it fits (one message always fits an empty queue). False when it did
    /// not: the mailbox is closed, or full.
    pub(crate) fn push(&self, msg: Value) -> bool {
        let size = weight(&msg);
        let mut q = lock(&self.state);
        let fits = q.items.is_empty() || (q.items.len() < self.max_items && q.bytes + size <= self.max_bytes);
        if q.closed || !fits {
            q.dropped += usize::from(!q.closed);
            return false;
        }
        q.bytes += size;
        q.items.push_back((msg, size));
        self.ready.notify_one();
        true
    }

    /// Queues a message whatever the bounds (a request's final answer, which is bounded by the
    /// number of requests in flight). False only when the mailbox is closed.
    pub(crate) fn push_final(&self, msg: Value) -> bool {
        let size = weight(&msg);
        let mut q = lock(&self.state);
        if q.closed {
            return false;
        }
        q.bytes += size;
        q.items.push_back((msg, size));
        self.ready.notify_one();
        true
    }

    /// Waits up to `timeout` for the next message.
    pub(crate) fn recv(&self, timeout: Duration) -> Result<Value, Empty> {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.state);
        loop {
            if let Some((msg, size)) = q.items.pop_front() {
                q.bytes -= size;
                return Ok(msg);
            }
            if q.closed {
                return Err(Empty::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Empty::Timeout);
            }
            q = self.ready.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Closes the mailbox: what is queued is dropped, and nothing more gets in.
    pub(crate) fn close(&self) {
        let mut q = lock(&self.state);
        q.closed = true;
        q.items.clear();
        q.bytes = 0;
        self.ready.notify_all();
    }

    /// Closes the mailbox for writers but lets the reader take what is queued first.
    pub(crate) fn finish(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    /// Messages dropped so far because the reader was too slow.
    pub(crate) fn dropped(&self) -> usize {
        lock(&self.state).dropped
    }

    /// Bytes waiting.
    pub(crate) fn queued_bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}

/// The size of a message as JSON text, counted without building the text.
pub(crate) fn weight(msg: &Value) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, msg);
    c.0
}

/// Where a request's answer and related messages go.
#[derive(Clone)]
pub(crate) enum Reply {
    /// The session's stream (legacy SSE).
    Stream,
    /// The POST that carried the request (Streamable HTTP).
    Post(Arc<Mailbox>),
}

impl Reply {
    /// Delivers a message related to a request (progress, a log line, a server's request).
    pub(crate) fn related(&self, session: &Session, msg: Value) {
        match self {
            Reply::Stream => {
                session.send(msg);
            }
            Reply::Post(mb) => {
                if !mb.push(msg) && mb.dropped() % 100 == 1 {
                    log::warn!("session {}: the client reads its POST stream too slowly; dropping messages", session.id);
                }
            }
        }
    }

    /// Delivers a request's end: its answer, or `None` when it has none.
    pub(crate) fn finish(&self, session: &Session, msg: Option<Value>) {
        match (self, msg) {
            (Reply::Stream, Some(msg)) => {
                session.send(msg);
            }
            (Reply::Stream, None) => {}
            (Reply::Post(mb), msg) => {
                mb.push_final(msg.unwrap_or(NO_ANSWER));
            }
        }
    }
}

/// One call in flight, as the link serving it holds it. Clones share the call; it ends once.
#[derive(Clone)]
pub(crate) struct Caller(Arc<CallerInner>);

struct CallerInner {
    session: Arc<Session>,
    reply: Reply,
    /// The client's request id, as JSON text (the session's key for the call).
    client_key: String,
    done: AtomicBool,
    /// The gateway's count of calls in flight (waited for at shutdown).
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caller({} {})", self.0.session.id, self.0.client_key)
    }
}

impl PartialEq for Caller {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Caller {
    /// A call of `session`, registered with it under `client_key` (see `Session::begin_call`).
    pub(crate) fn new(session: Arc<Session>, reply: Reply, client_key: String, in_flight: Arc<AtomicUsize>) -> Caller {
        in_flight.fetch_add(1, Ordering::SeqCst);
        Caller(Arc::new(CallerInner { session, reply, client_key, done: AtomicBool::new(false), in_flight }))
    }

    /// A message related to the call.
    pub(crate) fn related(&self, msg: Value) {
        self.0.reply.related(&self.0.session, msg);
    }

    /// Ends the call with its answer (or none). Only the first end counts.
    pub(crate) fn finish(&self, msg: Option<Value>) {
        self.0.end(msg);
    }
}

impl CallerInner {
    fn end(&self, msg: Option<Value>) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        self.reply.finish(&self.session, msg);
        self.session.end_call(&self.client_key);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for CallerInner {
    fn drop(&mut self) {
        if !self.done.load(Ordering::SeqCst) {
            let id: Value = serde_json::from_str(&self.client_key).unwrap_or(Value::Null);
            let error = crate::jsonrpc::error_response(
                &id,
                crate::jsonrpc::INTERNAL_ERROR,
                "the gateway lost this request (its server link ended abruptly); try again",
            );
            self.end(Some(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_mailbox_is_bounded_in_count_and_bytes_but_never_refuses_a_final_answer() {
        let mb = Mailbox::new(3, 100);
        assert!(mb.push(json!("x".repeat(200))), "one message always fits an empty queue");
        assert!(!mb.push(json!(1)), "over the bytes");
        assert_eq!(mb.recv(Duration::ZERO), Ok(json!("x".repeat(200))));
        assert!(mb.push(json!(1)) && mb.push(json!(2)) && mb.push(json!(3)));
        assert!(!mb.push(json!(4)), "over the count");
        assert!(mb.push_final(json!({"final": true})));
        assert_eq!(mb.dropped(), 2);
        mb.finish();
        let got: Vec<Value> = std::iter::from_fn(|| mb.recv(Duration::ZERO).ok()).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(mb.recv(Duration::ZERO), Err(Empty::Closed));
        assert!(!mb.push_final(json!(5)), "closed");
    }

    #[test]
    fn weight_is_the_json_length() {
        let v = json!({"a": [1, "two"]});
        assert_eq!(weight(&v), v.to_string().len());
    }
}
