//! Capped exponential backoff with jitter, for reconnecting to the gateway and for restarting a
//! crashing MCP server. The first retry comes within about a second; each later one waits up to
//! twice as long, never more than the cap; a random part of each delay spreads out a fleet of
//! edges that lost the same gateway at the same moment. A run that lasted a while resets it.

use std::time::Duration;

use crate::sys;

/// How long a connection (or a child) must have lived for the next failure to start over at
/// the shortest delay.
pub(crate) const STABLE: Duration = Duration::from_secs(60);

pub(crate) struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Backoff {
        Backoff { attempt: 0, cap }
    }

    /// The next delay: a random point in the upper half of min(1 s × 2^attempt, cap).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = Duration::from_secs(1).saturating_mul(1 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let mut r = [0u8; 2];
        sys::random_bytes(&mut r);
        let fraction = 0.5 + 0.5 * f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
        ceiling.mul_f64(fraction)
    }

    /// Starts over at the shortest delay.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(30));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1), "{delays:?}");
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8), "{delays:?}");
        for d in &delays[5..] {
            assert!(*d >= Duration::from_secs(15) && *d <= Duration::from_secs(30), "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
