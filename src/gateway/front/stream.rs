//! A session's SSE stream, written by the one thread that owns the client's connection: the
//! legacy HTTP+SSE stream and a Streamable HTTP session's `GET` stream are the same loop. It waits
//! on the session's stream mailbox (resting while idle), paces `list_changed` notices, and sends
//! keep-alive comments; it ends when the gateway closes the mailbox or the client goes away.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::budget::Budget;
use crate::gateway::clients::mailbox::{Empty, Item, Mailbox};
use crate::gateway::clients::session::Session;
use crate::gateway::front::cors::Headers;
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::{Gateway, Tally};
use crate::http::sse::SseWriter;
use crate::http::{Conn, Transport};
use crate::thread;

/// A session's stream, attached: the mailbox its writer reads. Dropped, however the writer ends
/// (the client went away, the gateway closed the stream, the writer panicked), it detaches the
/// stream from the session, and with it everything that belonged to that stream alone (its
/// unsent `list_changed` notices): a new `GET` may attach, and hears of every later change.
pub(crate) struct Attached {
    pub session: Arc<Session>,
    pub rx: Arc<Mailbox>,
}

impl Attached {
    /// Attaches a stream to `session`, its bytes counted against `budget`; `None` when one is
    /// attached already.
    pub(crate) fn to(session: Arc<Session>, budget: &Arc<Budget>) -> Option<Attached> {
        let rx = session.attach_stream(budget)?;
        Some(Attached { session, rx })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.session.detach(&self.rx);
    }
}

/// A Streamable HTTP session's stream for messages unrelated to any request, attached and
/// waiting to be written once the request loop has returned.
pub(crate) struct Unrelated {
    pub stream: Attached,
    pub cors: Headers,
}

/// Writes a session's stream of unrelated messages until it ends; the connection's thread does
/// nothing else from then on.
#[inline(never)]
pub(crate) fn write_unrelated(gw: &Gateway, mut conn: Conn<Box<dyn Transport>>, unrelated: Unrelated) {
    let Unrelated { stream, cors } = unrelated;
    let _stream = Tally::new(&gw.streams);
    let why = match SseWriter::start(&mut conn.stream, &cors) {
        Ok(mut sse) => write_stream(gw, &stream, &mut sse),
        Err(_) => "client went away",
    };
    log::info!("session {}: stream ended ({why})", stream.session.id);
}

/// Writes a session's stream until its queue closes or the client goes away; keep-alive
/// comments while idle. Returns why it ended. (The legacy stream and the Streamable HTTP `GET`
/// stream are the same loop.)
///
/// A stream lives long and its setup (the request's head, credentials, the session) ran deeper
/// than its loop ever goes, so it gives those pages back before its first wait: however deep a
/// stream's opening runs, what it keeps while busy is its loop's depth alone.
pub(crate) fn write_stream<W: Write>(
    gw: &Gateway,
    stream: &Attached,
    sse: &mut SseWriter<W>,
) -> &'static str {
    thread::rest();
    let mut pace = Pace::default();
    loop {
        let written = match pace.due() {
            Some(notice) => write_message(gw, stream, sse, &notice),
            None => match thread::wait_resting(
                pace.wait(gw.cfg.keepalive),
                |t| stream.rx.recv(t),
                |r| r == &Err(Empty::Timeout),
            ) {
                Ok(Item::Related(msg) | Item::Answer(msg)) => match pace.admit(msg) {
                    Some(msg) => write_message(gw, stream, sse, &msg),
                    None => Ok(()),
                },
                // A stream carries no request's end without an answer; nothing to write.
                Ok(Item::NoAnswer) => Ok(()),
                Err(Empty::Timeout) if pace.holding() => Ok(()),
                Err(Empty::Timeout) => sse.comment("keep-alive"),
                Err(Empty::Closed) => {
                    let _ = sse.finish();
                    return "closed by the gateway";
                }
            },
        };
        if written.is_err() {
            return "client went away";
        }
    }
}

fn write_message<W: Write>(
    gw: &Gateway,
    stream: &Attached,
    sse: &mut SseWriter<W>,
    msg: &Value,
) -> std::io::Result<()> {
    // A `list_changed` is no longer pending once it is on its way: a change after this point is
    // told anew, not taken for this one.
    stream.session.written(&stream.rx, msg);
    let text = msg.to_string();
    Metrics::add(&gw.metrics.client_bytes_out, text.len());
    sse.event(Some("message"), &text)
}

/// How often a stream writes a `list_changed` at most: while one is held back, more changes of
/// the same list add nothing (`Session::list_changed` sees it unsent), so a thousand edges
/// registering in a second become a handful of notices. Other messages never wait for it.
const LIST_CHANGED_EVERY: Duration = Duration::from_millis(200);

/// The pacing of a stream's `list_changed` notices.
#[derive(Default)]
struct Pace {
    last: Option<Instant>,
    /// Notices held back, with when they may go.
    held: Vec<(Value, Instant)>,
}

impl Pace {
    /// A message just taken from the queue: it goes now (returned), or a notice is held back.
    fn admit(&mut self, msg: Value) -> Option<Value> {
        if !msg["method"].as_str().is_some_and(|m| m.ends_with("/list_changed")) {
            return Some(msg);
        }
        match self.last {
            Some(at) if at.elapsed() < LIST_CHANGED_EVERY => {
                self.held.push((msg, at + LIST_CHANGED_EVERY));
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(msg)
            }
        }
    }

    /// A held notice whose time has come.
    fn due(&mut self) -> Option<Value> {
        let i = self.held.iter().position(|(_, at)| *at <= Instant::now())?;
        self.last = Some(Instant::now());
        Some(self.held.remove(i).0)
    }

    fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// How long to wait for the next message: the keep-alive, or less when a notice is held.
    fn wait(&self, keepalive: Duration) -> Duration {
        let next = self.held.iter().map(|(_, at)| at.saturating_duration_since(Instant::now())).min();
        next.map_or(keepalive, |n| n.min(keepalive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_changed_notices_are_paced_and_nothing_waits_for_them() {
        let changed = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        let mut pace = Pace::default();
        assert!(pace.admit(changed.clone()).is_some(), "the first notice goes at once");
        assert!(pace.admit(changed.clone()).is_none() && pace.holding(), "the next is held back");
        assert_eq!(pace.admit(answer.clone()), Some(answer), "an answer never waits");
        assert!(pace.due().is_none());
        assert!(pace.wait(Duration::from_secs(15)) <= LIST_CHANGED_EVERY);
        std::thread::sleep(LIST_CHANGED_EVERY);
        assert_eq!(pace.due(), Some(changed));
        assert!(!pace.holding());
    }
}
