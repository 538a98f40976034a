//! A bounded queue of messages for one client writer: between the threads that produce messages
//! for a client (link owners, the connection thread itself) and the one thread that writes them
//! to the client (a POST's response, or a session's SSE stream). Bounded in count and in bytes;
//! a request's end always gets in (answers are bounded by the calls in flight), related messages
//! only while they fit. What it carries is typed (`Item`): a related message, a request's answer,
//! or a request's end without one, so a writer counts the ends it waits for by their kind.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::budget::Budget;
use crate::jsonrpc::weight;
use crate::thread::lock;

/// What a mailbox carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A message related to a request (progress, a log line, a server's request), or, on a
    /// session's stream, any message for the client.
    Related(Value),
    /// A request's answer.
    Answer(Value),
    /// A request ended without an answer (its client cancelled it).
    NoAnswer,
}

impl Item {
    /// The message, if the item carries one.
    pub(crate) fn message(&self) -> Option<&Value> {
        match self {
            Item::Related(m) | Item::Answer(m) => Some(m),
            Item::NoAnswer => None,
        }
    }

    fn weight(&self) -> usize {
        self.message().map_or(0, weight)
    }
}

/// A bounded queue of messages for one writer.
pub(crate) struct Mailbox {
    state: Mutex<Queue>,
    ready: Condvar,
    max_items: usize,
    max_bytes: usize,
    /// The gateway's budget of bytes in all queues, charged too.
    budget: Option<Arc<Budget>>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Item, usize)>,
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
    pub(crate) fn new(max_items: usize, max_bytes: usize, budget: Option<Arc<Budget>>) -> Arc<Mailbox> {
        let state = Mutex::new(Queue::default());
        Arc::new(Mailbox { state, ready: Condvar::new(), max_items, max_bytes, budget })
    }

    /// Queues a related message if it fits (one message always fits an empty queue). False when
    /// it did not: the mailbox is closed, or full.
    pub(crate) fn push(&self, msg: Value) -> bool {
        let item = Item::Related(msg);
        let size = item.weight();
        let mut q = lock(&self.state);
        let fits = q.items.is_empty() || (q.items.len() < self.max_items && q.bytes + size <= self.max_bytes);
        if q.closed || !fits || !self.budget.as_ref().is_none_or(|b| b.take(size)) {
            q.dropped += usize::from(!q.closed);
            return false;
        }
        self.queue(q, item, size);
        true
    }

    /// Queues a request's end, its answer or `None`, whatever the bounds (ends are bounded by the
    /// number of requests in flight). False only when the mailbox is closed.
    pub(crate) fn push_end(&self, answer: Option<Value>) -> bool {
        let item = answer.map_or(Item::NoAnswer, Item::Answer);
        let size = item.weight();
        let q = lock(&self.state);
        if q.closed {
            return false;
        }
        if let Some(b) = &self.budget {
            b.force(size);
        }
        self.queue(q, item, size);
        true
    }

    /// Adds an item whose bytes are already charged, and wakes the reader.
    fn queue(&self, mut q: std::sync::MutexGuard<'_, Queue>, item: Item, size: usize) {
        q.bytes += size;
        q.items.push_back((item, size));
        drop(q); // the reader wakes to a free lock
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for the next message.
    pub(crate) fn recv(&self, timeout: Duration) -> Result<Item, Empty> {
        let deadline = Instant::now() + timeout;
        let mut q = lock(&self.state);
        loop {
            if let Some((item, size)) = q.items.pop_front() {
                q.bytes -= size;
                if let Some(b) = &self.budget {
                    b.give(size);
                }
                return Ok(item);
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
        if let Some(b) = &self.budget {
            b.give(q.bytes);
        }
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
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(lock(&self.state).bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_mailbox_is_bounded_in_count_and_bytes_but_never_refuses_a_final_answer() {
        let budget = Budget::new(1000);
        let mb = Mailbox::new(3, 100, Some(budget.clone()));
        assert!(mb.push(json!("x".repeat(200))), "one message always fits an empty queue");
        assert!(!mb.push(json!(1)), "over the bytes");
        assert_eq!(mb.recv(Duration::ZERO), Ok(Item::Related(json!("x".repeat(200)))));
        assert!(mb.push(json!(1)) && mb.push(json!(2)) && mb.push(json!(3)));
        assert!(!mb.push(json!(4)), "over the count");
        assert!(mb.push_end(Some(json!({"final": true}))) && mb.push_end(None));
        assert_eq!(mb.dropped(), 2);
        mb.finish();
        let got: Vec<Item> = std::iter::from_fn(|| mb.recv(Duration::ZERO).ok()).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got[3..], [Item::Answer(json!({"final": true})), Item::NoAnswer]);
        assert_eq!(mb.recv(Duration::ZERO), Err(Empty::Closed));
        assert!(!mb.push_end(Some(json!(5))), "closed");
        assert_eq!(budget.held(), 0, "everything taken was given back");
        let other = Mailbox::new(10, 10_000, Some(budget.clone()));
        assert!(other.push(json!("y".repeat(900))));
        assert!(!other.push(json!("z".repeat(200))), "the shared budget is spent");
    }
}
