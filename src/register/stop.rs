//! Telling one server's loop to end. Each server behind an edge runs its own loop on its own
//! thread; the process's signals (SIGINT, SIGTERM) and a reload that drops or changes a server
//! reach that loop through its `Stop`: a flag, and a socket that becomes readable when the flag
//! is set, so that a loop waiting in `poll` wakes at once. Set once, never cleared: a stopped
//! loop stops for good.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;

/// One server loop's stop request.
pub(crate) struct Stop {
    /// Why, once asked (the first reason given), for the loop's last log line.
    why: OnceLock<&'static str>,
    read: UnixStream,
    write: UnixStream,
}

impl Stop {
    pub(crate) fn new() -> std::io::Result<Stop> {
        let (read, write) = UnixStream::pair()?;
        write.set_nonblocking(true)?;
        Ok(Stop { why: OnceLock::new(), read, write })
    }

    /// Asks the loop to end, saying `why`; it sees it at its next look or wakes from its `poll`.
    pub(crate) fn request(&self, why: &'static str) {
        if self.why.set(why).is_ok() {
            let _ = (&self.write).write(&[1]); // one byte: the socket stays readable from now on
        }
    }

    pub(crate) fn requested(&self) -> bool {
        self.why.get().is_some()
    }

    /// Why the stop was requested (the first reason given).
    pub(crate) fn why(&self) -> &'static str {
        self.why.get().copied().unwrap_or("asked to stop")
    }

    /// Readable once a stop was requested: to `poll` beside the loop's other descriptors.
    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_wakes_a_poll_and_stays() {
        let stop = Stop::new().unwrap();
        let quiet = crate::sys::poll(&[(stop.fd(), false)], Some(Duration::from_millis(10))).unwrap();
        assert!(!quiet[0].readable && !stop.requested());
        stop.request("signal received");
        stop.request("removed");
        assert_eq!(stop.why(), "signal received");
        for _ in 0..2 {
            let ready = crate::sys::poll(&[(stop.fd(), false)], Some(Duration::from_secs(1))).unwrap();
            assert!(ready[0].readable && stop.requested());
        }
    }
}
