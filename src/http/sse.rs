//! Server-Sent Events over HTTP/1.1 chunked encoding: one chunk per event, flushed at once, so
//! an event reaches the client the moment it is written. Also keep-alive comments, which let
//! proxies see traffic and let us notice a client that went away.

use std::io::{self, Write};

/// Writes an SSE stream. Create it with `start`, which sends the response head.
pub(crate) struct SseWriter<W: Write> {
    out: W,
}

impl<W: Write> SseWriter<W> {
    /// Sends the `200 text/event-stream` head (plus `extra` headers) and returns the writer.
    pub(crate) fn start(mut out: W, extra: &[(&str, String)]) -> io::Result<Self> {
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\n\
             X-Accel-Buffering: no\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        out.flush()?;
        Ok(SseWriter { out })
    }

    /// Sends one event. `data` may span lines; each becomes its own `data:` field.
    pub(crate) fn event(&mut self, name: Option<&str>, data: &str) -> io::Result<()> {
        let mut text = String::with_capacity(data.len() + 32);
        if let Some(name) = name {
            text.push_str(&format!("event: {name}\n"));
        }
        for line in data.split('\n') {
            text.push_str("data: ");
            text.push_str(line.strip_suffix('\r').unwrap_or(line));
            text.push('\n');
        }
        text.push('\n');
        self.chunk(text.as_bytes())
    }

    /// Sends a comment line (`: text`), which clients ignore.
    pub(crate) fn comment(&mut self, text: &str) -> io::Result<()> {
        self.chunk(format!(": {text}\n\n").as_bytes())
    }

    /// Ends the stream cleanly (the zero-length chunk).
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(b"0\r\n\r\n")?;
        self.out.flush()
    }

    fn chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        self.out.write_all(&framed)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_events_as_chunks() {
        let mut buf = Vec::new();
        let mut w = SseWriter::start(&mut buf, &[("X-Y", "z".to_string())]).unwrap();
        w.event(Some("endpoint"), "/messages/?session_id=ab").unwrap();
        w.event(None, "a\nb").unwrap();
        w.comment("ping").unwrap();
        w.finish().unwrap();
        let text = String::from_utf8(buf).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert!(text.contains("Transfer-Encoding: chunked\r\nX-Y: z\r\n"));
        assert_eq!(
            body,
            "30\r\nevent: endpoint\ndata: /messages/?session_id=ab\n\n\r\n\
             11\r\ndata: a\ndata: b\n\n\r\n8\r\n: ping\n\n\r\n0\r\n\r\n"
        );
    }
}
