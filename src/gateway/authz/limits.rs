//! Attempts counted per client address (an IPv6 address by its /64) and for everyone together
//! over a sliding window: wrong owner passwords, and registrations. Bounded: at most
//! `MAX_ADDRESSES` addresses are remembered (the one seen least lately goes), each with at most
//! its limit's worth of times.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::gateway::credential::client_address;
use crate::thread::lock;

const MAX_ADDRESSES: usize = 1024;

/// A limit of `per_address` attempts per address and `all` in all per `window`.
pub(crate) struct Attempts {
    window: Duration,
    per_address: usize,
    all: usize,
    seen: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Attempts {
    pub(crate) fn new(window: Duration, per_address: usize, all: usize) -> Attempts {
        Attempts { window, per_address, all, seen: Mutex::default() }
    }

    /// Whether `peer`, or everyone, has used up its attempts for now.
    pub(crate) fn exhausted(&self, peer: IpAddr) -> bool {
        let mut seen = lock(&self.seen);
        seen.retain(|_, times| {
            times.retain(|t| t.elapsed() < self.window);
            !times.is_empty()
        });
        let all: usize = seen.values().map(Vec::len).sum();
        all >= self.all || seen.get(&client_address(peer)).is_some_and(|t| t.len() >= self.per_address)
    }

    /// Counts one attempt of `peer`.
    pub(crate) fn count(&self, peer: IpAddr) {
        let key = client_address(peer);
        let mut seen = lock(&self.seen);
        if seen.len() >= MAX_ADDRESSES && !seen.contains_key(&key) {
            let oldest = seen.iter().min_by_key(|(_, t)| t.last().copied()).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                seen.remove(&oldest);
            }
        }
        let times = seen.entry(key).or_default();
        times.push(Instant::now());
        if times.len() > self.per_address {
            times.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_limited_per_address_and_in_all() {
        let a = Attempts::new(Duration::from_secs(60), 3, 10);
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..3 {
            assert!(!a.exhausted(one));
            a.count(one);
        }
        assert!(a.exhausted("2001:db8::ffff".parse().unwrap()), "one /64 is one client");
        assert!(!a.exhausted("192.0.2.1".parse().unwrap()));
        for i in 0..7u8 {
            a.count(IpAddr::from([10, 0, 0, i]));
        }
        assert!(a.exhausted("192.0.2.1".parse().unwrap()), "everyone together is limited too");
    }
}
