//! Request bodies: how a head says a body is framed (RFC 9112 §6), reading it with arithmetic
//! that cannot wrap, and the global budget of body bytes held across all connections.
//!
//! Framing is decided from the head alone, strictly: one `Content-Length` (repeats must agree),
//! digits only; `Transfer-Encoding` only as `chunked` alone; never both. A chunked body's sizes
//! have at most 16 hex digits, its chunk lines and trailers are bounded, and every total is a
//! checked addition compared against `max_body` before a byte of the chunk is read. A body is
//! read only after a `Reservation` of its bytes from the `Budget` (which grows chunk by chunk
//! for chunked bodies), and the reservation is given back when it is dropped.

use std::sync::Arc;
use std::time::Instant;

use super::{status, timeout_as_408, Conn, Limits, ReadError, Request, Timed};
pub(crate) use crate::budget::{Budget, Reservation};

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Framing {
    /// `Content-Length` (0 when the head declares no body), already checked against `max_body`.
    Length(usize),
    Chunked,
}

impl Framing {
    /// Whether the head announces body bytes.
    pub(crate) fn has_body(self) -> bool {
        self != Framing::Length(0)
    }
}

/// Longest chunk-size line, extensions included.
pub(crate) const MAX_CHUNK_LINE: usize = 1024;
/// Hex digits of a chunk size: 16 hold any `u64`, and nobody needs leading zeros beyond that.
pub(crate) const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Bytes of chunk framing (size lines, extensions, CRLFs, trailers) allowed beyond the data
/// itself: tiny chunks with long extensions cost reading time, so they are bounded too.
pub(crate) const FRAMING_ALLOWANCE: usize = 64 * 1024;

/// How the body of `req` is framed, or the status that refuses it (RFC 9112 §6.1-6.3).
pub(crate) fn framing(req: &Request, limits: &Limits) -> Result<Framing, ReadError> {
    let codings = field_list(req, "transfer-encoding");
    let lengths = field_list(req, "content-length");
    match (codings, lengths) {
        (None, None) => Ok(Framing::Length(0)),
        (Some(_), Some(_)) => Err(status(400, "both Content-Length and Transfer-Encoding; send one of them")),
        (Some(codings), None) => transfer_coding(req, &codings),
        (None, Some(lengths)) => content_length(&lengths, limits.max_body),
    }
}

/// The comma-separated elements of every field called `name`, trimmed; `None` without one.
fn field_list(req: &Request, name: &str) -> Option<Vec<String>> {
    let mut fields = req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).peekable();
    fields.peek()?;
    Some(fields.flat_map(|(_, v)| v.split(',')).map(|e| e.trim().to_string()).collect())
}

/// Only `chunked` alone: it must be the final coding (else 400), and we decode no other (501).
fn transfer_coding(req: &Request, codings: &[String]) -> Result<Framing, ReadError> {
    if !req.http11 {
        return Err(status(400, "Transfer-Encoding in an HTTP/1.0 request; use Content-Length"));
    }
    let codings: Vec<&String> = codings.iter().filter(|c| !c.is_empty()).collect();
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        [.., last] if !last.eq_ignore_ascii_case("chunked") => Err(status(
            400,
            &format!("Transfer-Encoding must end with chunked (got {:?})", codings_text(&codings)),
        )),
        [] => Err(status(400, "empty Transfer-Encoding")),
        [init @ .., _] if init.iter().any(|c| c.eq_ignore_ascii_case("chunked")) => {
            Err(status(400, "chunked may be applied only once"))
        }
        _ => Err(status(
            501,
            &format!(
                "Transfer-Encoding {:?} is not supported; send the body with chunked alone or Content-Length",
                codings_text(&codings)
            ),
        )),
    }
}

fn codings_text(codings: &[&String]) -> String {
    codings.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
}

/// Every value must be digits only and all must agree; past `max_body` is 413.
fn content_length(values: &[String], max_body: usize) -> Result<Framing, ReadError> {
    let mut length = None;
    for v in values {
        let n = parse_length(v)?;
        if length.is_some_and(|l| l != n) {
            return Err(status(400, "conflicting Content-Length values"));
        }
        length = Some(n);
    }
    let n = length.unwrap_or(0);
    match usize::try_from(n) {
        Ok(n) if n <= max_body => Ok(Framing::Length(n)),
        _ => Err(too_large(max_body)),
    }
}

/// `1*DIGIT` as a `u64`; `None` inside `Ok` never happens: too many digits is "too large".
fn parse_length(v: &str) -> Result<u64, ReadError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(status(400, &format!("bad Content-Length {v:?}: digits only")));
    }
    let n = v.bytes().try_fold(0u64, |n, b| n.checked_mul(10)?.checked_add(u64::from(b - b'0')));
    // Over u64::MAX is over any max_body: report it as too large, not as malformed.
    Ok(n.unwrap_or(u64::MAX))
}

pub(crate) fn too_large(max_body: usize) -> ReadError {
    status(413, &format!("request body too large (the limit is {max_body} bytes, --max-body-bytes)"))
}

/// The size of one chunk from its line (`1*16HEXDIG [ BWS ";" extensions ]`), as a `u64`.
pub(crate) fn chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let shown = || String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
    if digits == 0 {
        return Err(status(400, &format!("bad chunk size {:?}: hex digits only, no sign", shown())));
    }
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(status(400, &format!("chunk size {:?} has more than 16 hex digits", shown())));
    }
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Err(status(400, &format!("bad chunk size line {:?}", shown())));
    }
    // At most 16 hex digits always fit a u64; the checked fold keeps it provable.
    line[..digits]
        .iter()
        .try_fold(0u64, |n, b| n.checked_mul(16)?.checked_add(u64::from((*b as char).to_digit(16)?)))
        .ok_or_else(|| status(400, "chunk size out of range"))
}

/// Reserves `bytes` of the global body budget, or refuses with 503 (try again later).
pub(crate) fn reserve(budget: &Arc<Budget>, bytes: usize) -> Result<Reservation, ReadError> {
    let mut r = Reservation::new(budget);
    grow(&mut r, bytes)?;
    Ok(r)
}

/// Grows a body's reservation to `total` bytes; 503 when the budget is spent.
fn grow(held: &mut Reservation, total: usize) -> Result<(), ReadError> {
    if held.grow_to(total) {
        return Ok(());
    }
    let why =
        "the gateway is holding all the request body bytes it may (--max-body-budget); try again shortly";
    Err(status(503, why))
}

/// A request's body and its share of the body budget, held together: the bytes cannot outlive
/// their reservation, and whoever consumes the body (parsing it, `into_parts`) gives both back.
pub(crate) struct Body {
    bytes: Vec<u8>,
    _held: Reservation,
}

impl Body {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// A body held against a budget of its own, for tests.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Body {
        let held = Reservation::new(&Budget::new(bytes.len()));
        Body { bytes: bytes.to_vec(), _held: held }
    }

    /// The bytes of the budget it holds.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self._held.bytes()
    }
}

impl<S: Timed> Conn<S> {
    /// Reads the body the head announced, never more than `limits.max_body` and never a byte
    /// beyond what `held` covers (it grows chunk by chunk for chunked bodies); the body keeps
    /// the reservation.
    pub(crate) fn read_body(
        &mut self,
        framing: Framing,
        limits: &Limits,
        mut held: Reservation,
    ) -> Result<Body, ReadError> {
        let deadline = Instant::now() + limits.body_timeout;
        let bytes = match framing {
            Framing::Length(n) if n > limits.max_body => return Err(too_large(limits.max_body)),
            Framing::Length(n) => {
                grow(&mut held, n)?;
                let mut body = Vec::new();
                self.read_exact_into(&mut body, n, deadline)?;
                body
            }
            Framing::Chunked => self.read_chunked(limits, &mut held, deadline)?,
        };
        Ok(Body { bytes, _held: held })
    }

    fn read_chunked(
        &mut self,
        limits: &Limits,
        held: &mut Reservation,
        deadline: Instant,
    ) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        let mut framing_bytes = 0usize;
        loop {
            let line = self.take_line(MAX_CHUNK_LINE, deadline)?;
            framing_bytes = framing_bytes.saturating_add(line.len() + 4);
            if framing_bytes > FRAMING_ALLOWANCE.saturating_add(body.len()) {
                return Err(status(400, "too much chunk framing (tiny chunks or long extensions)"));
            }
            let size = chunk_size(&line)?;
            if size == 0 {
                self.skip_trailers(limits, deadline)?;
                return Ok(body);
            }
            let total = usize::try_from(size)
                .ok()
                .and_then(|size| body.len().checked_add(size))
                .filter(|total| *total <= limits.max_body)
                .ok_or_else(|| too_large(limits.max_body))?;
            grow(held, total)?;
            let more = total - body.len();
            self.read_exact_into(&mut body, more, deadline)?;
            self.expect_crlf(deadline)?;
        }
    }

    /// Trailer fields end with an empty line; they are checked for shape, bounded, and dropped.
    fn skip_trailers(&mut self, limits: &Limits, deadline: Instant) -> Result<(), ReadError> {
        let mut bytes = 0usize;
        for _ in 0..=limits.max_headers {
            let line = self.take_line(limits.max_header_bytes, deadline)?;
            if line.is_empty() {
                return Ok(());
            }
            bytes = bytes.saturating_add(line.len() + 2);
            if bytes > limits.max_header_bytes {
                return Err(status(431, "chunked trailer fields too large"));
            }
            let name_len = line.iter().position(|b| *b == b':').unwrap_or(0);
            if name_len == 0 || !line[..name_len].iter().all(|b| b.is_ascii_graphic()) {
                return Err(status(400, "malformed trailer field"));
            }
        }
        Err(status(431, "too many chunked trailer fields"))
    }

    /// Appends exactly `n` more bytes of body to `body`: first what the buffer holds, then
    /// straight from the stream (nothing past the body is read).
    fn read_exact_into(&mut self, body: &mut Vec<u8>, n: usize, deadline: Instant) -> Result<(), ReadError> {
        body.try_reserve_exact(n).map_err(|_| status(503, "out of memory for the request body"))?;
        let from_buf = n.min(self.buf.len());
        body.extend(self.buf.drain(..from_buf));
        let mut left = n - from_buf;
        while left > 0 {
            let want = left.min(super::BODY_CHUNK);
            let got =
                super::read_into_tail(body, want, |out| super::read_before(&mut self.stream, out, deadline))
                    .map_err(|e| timeout_as_408(e, "body"))?;
            if got == 0 {
                return Err(status(400, "connection closed in the middle of the body"));
            }
            left -= got;
            self.note_held(body.len());
        }
        self.note_held(body.len());
        Ok(())
    }

    /// The CRLF that ends a chunk's data.
    fn expect_crlf(&mut self, deadline: Instant) -> Result<(), ReadError> {
        while self.buf.len() < 2 {
            if self.fill_upto(2 - self.buf.len(), deadline).map_err(|e| timeout_as_408(e, "body"))? == 0 {
                return Err(status(400, "connection closed in the middle of the body"));
            }
        }
        if &self.buf[..2] != b"\r\n" {
            return Err(status(400, "chunk data longer than its size"));
        }
        self.buf.drain(..2);
        Ok(())
    }

    /// One CRLF-terminated line of at most `max` bytes (CRLF excluded), without the CRLF.
    fn take_line(&mut self, max: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                if pos > max {
                    break;
                }
                let line = self.buf[..pos].to_vec();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if self.buf.len() > max + 1 {
                break;
            }
            if self.fill_upto(max + 2 - self.buf.len(), deadline).map_err(|e| timeout_as_408(e, "body"))? == 0
            {
                return Err(status(400, "connection closed in the middle of the body"));
            }
        }
        Err(status(400, &format!("a chunk line is longer than {max} bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_strict_and_cannot_overflow() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert_eq!(chunk_size(b"5 ; name=value").unwrap(), 5);
        for bad in [&b"+5"[..], b"-1", b" 5", b"0x5", b"", b"10000000000000000", b"5 x", b"5\n", b"5;\x01"] {
            assert!(chunk_size(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(parse_length("0").unwrap(), 0);
        assert_eq!(parse_length("18446744073709551615").unwrap(), u64::MAX);
        assert_eq!(parse_length("99999999999999999999999").unwrap(), u64::MAX);
        for bad in ["+5", "-1", " 5", "5 5", "0x5", "", "5."] {
            assert!(parse_length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Budget::new(100);
        let a = reserve(&budget, 60).unwrap();
        assert!(matches!(reserve(&budget, 41), Err(ReadError::Status(503, _))));
        let mut b = reserve(&budget, 40).unwrap();
        assert_eq!(budget.held(), 100);
        assert!(grow(&mut b, 41).is_err());
        assert!(grow(&mut b, usize::MAX).is_err(), "no wrap");
        drop(a);
        grow(&mut b, 100).unwrap();
        assert_eq!((b.bytes(), budget.held()), (100, 100));
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
