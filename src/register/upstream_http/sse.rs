//! An event stream's parser (`Sse`): the WHATWG rules, every event and line bounded, and quiet
//! events handed out for streams of comments without end, so that their readers can count them.

use std::io::{self, BufRead};
use std::time::Duration;

use super::exchange::{lie, read_line, size, visible, Line};

/// The longest session id or event id carried back to the upstream in a header.
pub(super) const MAX_TOKEN: usize = 1024;
/// Bytes of an SSE line beyond the room left for the message (field name, colon, space).
const FIELD_SLACK: usize = 64;
/// A line buffer grown past this for one long line is given back after it.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One event of an event stream.
#[derive(Debug, PartialEq)]
pub(super) struct Event {
    /// The `event:` field ("" without one).
    pub(super) name: String,
    pub(super) data: Vec<u8>,
}

/// An event stream's parser (the WHATWG rules, with lines ending in LF or CRLF). One event's
/// data is at most `max` bytes, one line at most what is left of that plus `FIELD_SLACK`.
pub(super) struct Sse {
    pub(super) max: usize,
    pub(super) line: Vec<u8>,
    pub(super) name: String,
    pub(super) data: Vec<u8>,
    has_data: bool,
    /// The last `id:`, when it can be sent back in a `Last-Event-ID` header.
    pub(super) last_id: Option<String>,
    /// The last `retry:`.
    pub(super) retry: Option<Duration>,
    /// Bytes read since the last event handed out (comments, empty events, other fields).
    quiet: usize,
}

/// The name of the empty event `Sse::next` hands out after every `QUIET_EVERY` bytes without
/// one, so that a stream of comments or blank events without end still comes back to its
/// reader, which counts those bytes against its budget; no reader passes it on.
const QUIET: &str = ":quiet";
const QUIET_EVERY: usize = 64 * 1024;

impl Sse {
    pub(super) fn new(max: usize) -> Sse {
        Sse {
            max,
            line: Vec::new(),
            name: String::new(),
            data: Vec::new(),
            has_data: false,
            last_id: None,
            retry: None,
            quiet: 0,
        }
    }

    /// A new connection: the event in progress is dropped (the last id and retry stay).
    pub(super) fn restart(&mut self) {
        self.line = Vec::new();
        self.name.clear();
        self.data = Vec::new();
        self.has_data = false;
    }

    /// The next event with data (`None` at the stream's end). Events whose data is empty or
    /// blank (priming events) are skipped.
    pub(super) fn next(&mut self, body: &mut impl BufRead) -> io::Result<Option<Event>> {
        loop {
            let room = self.max.saturating_sub(self.data.len()).saturating_add(FIELD_SLACK);
            match read_line(body, &mut self.line, room)? {
                Line::End => return Ok(None),
                Line::TooLong => return Err(self.over()),
                Line::Complete => {}
            }
            self.quiet += self.line.len() + 1;
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let event = if self.line.is_empty() { self.dispatch() } else { self.field().map(|()| None)? };
            if self.line.capacity() > KEEP_CAPACITY {
                self.line = Vec::new();
            }
            if event.is_some() {
                self.quiet = 0;
                return Ok(event);
            }
            if self.quiet >= QUIET_EVERY {
                self.quiet = 0;
                return Ok(Some(Event { name: QUIET.into(), data: Vec::new() }));
            }
        }
    }

    pub(super) fn over(&self) -> io::Error {
        lie(format!("sent a message over {}", size(self.max)))
    }

    /// One `name: value` line (a line starting with `:` is a comment).
    fn field(&mut self) -> io::Result<()> {
        let colon = self.line.iter().position(|&b| b == b':').unwrap_or(self.line.len());
        let mut start = (colon + 1).min(self.line.len());
        if self.line.get(start) == Some(&b' ') {
            start += 1;
        }
        match &self.line[..colon] {
            b"data" => self.data_line(start)?,
            b"event" => self.name = String::from_utf8_lossy(&self.line[start..]).chars().take(64).collect(),
            b"id" if !self.line[start..].contains(&0) => {
                let id = std::str::from_utf8(&self.line[start..]).ok();
                self.last_id = id.filter(|id| visible(id, MAX_TOKEN)).map(str::to_string);
            }
            b"retry" => {
                let value = &self.line[start..];
                if !value.is_empty() && value.len() <= 9 && value.iter().all(u8::is_ascii_digit) {
                    let ms = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `data:` line joins the event's data (lines joined with LF), within `max`.
    fn data_line(&mut self, start: usize) -> io::Result<()> {
        let len = self.line.len() - start;
        if self.data.len() + usize::from(self.has_data) + len > self.max {
            return Err(self.over());
        }
        if self.has_data {
            self.data.push(b'\n');
            self.data.extend_from_slice(&self.line[start..]);
        } else {
            // The line becomes the data: a long message is never held twice.
            self.data = std::mem::take(&mut self.line);
            self.data.drain(..start);
        }
        self.has_data = true;
        Ok(())
    }

    /// An empty line ends the event: it is returned when its data is not blank.
    pub(super) fn dispatch(&mut self) -> Option<Event> {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        let had = std::mem::replace(&mut self.has_data, false);
        (had && !data.iter().all(u8::is_ascii_whitespace)).then_some(Event { name, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn events(input: &[u8], max: usize) -> (Vec<Event>, io::Result<()>, Sse) {
        let mut sse = Sse::new(max);
        let mut reader = BufReader::with_capacity(7, input); // tiny reads: lines split anywhere
        let mut got = Vec::new();
        loop {
            match sse.next(&mut reader) {
                Ok(Some(event)) => got.push(event),
                Ok(None) => return (got, Ok(()), sse),
                Err(e) => return (got, Err(e), sse),
            }
        }
    }

    /// A stream of comments and blank events without end comes back to its reader every
    /// `QUIET_EVERY` bytes (so a POST stream's budget counts it), and carries nothing on.
    #[test]
    fn comments_without_end_come_back_as_quiet_events() {
        let input = b": keep-alive comment that goes on and on\ndata:\n\n".repeat(32 * 1024);
        let (got, end, _) = events(&input, 1024);
        assert!(end.is_ok());
        let quiet = got.iter().filter(|e| e.name == QUIET && e.data.is_empty()).count();
        assert_eq!(quiet, got.len(), "only quiet events");
        assert!(quiet >= input.len() / QUIET_EVERY - 1 && quiet <= input.len() / QUIET_EVERY, "{quiet}");
    }

    #[test]
    fn events_follow_the_sse_rules() {
        let input = b"id: p1\ndata: \n\n: comment\n\nevent: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\nevent: endpoint\ndata:/m?s=1\n\nretry: 1500\nid: last\ndata: {}\n\ndata: cut";
        let (got, end, sse) = events(input, 1024);
        end.unwrap();
        let expected = [
            Event { name: "message".into(), data: b"{\"a\":\n1}".to_vec() },
            Event { name: "endpoint".into(), data: b"/m?s=1".to_vec() },
            Event { name: String::new(), data: b"{}".to_vec() },
        ];
        assert_eq!(got, expected, "priming events and comments are skipped; an unfinished event is dropped");
        assert_eq!((sse.last_id.as_deref(), sse.retry), (Some("last"), Some(Duration::from_millis(1500))));
    }

    #[test]
    fn an_event_or_a_line_over_the_bound_is_refused() {
        let over = |input: &[u8]| {
            let (_, end, _) = events(input, 16);
            end.unwrap_err().to_string()
        };
        assert_eq!(over(b"data: 0123456789abcdefg\n\n"), "sent a message over 16 bytes");
        assert_eq!(
            over(b"data: 0123456789\ndata: 0123456\n\n"),
            "sent a message over 16 bytes",
            "lines add up"
        );
        let endless = [b'x'; 4096];
        assert_eq!(over(&endless), "sent a message over 16 bytes", "a line without its end");
        let (got, end, _) = events(b"data: 0123456789abcdef\n\n", 16);
        assert_eq!((got.len(), end.is_ok()), (1, true), "exactly the bound is fine");
    }
}
