//! A budget of bytes shared by many holders: each queue or request body has its own bound, and
//! together they may not hold more than the budget, so a thousand slow peers cannot add up to
//! more memory than one operator chose (`--max-queue-bytes` for the queues to clients and edges,
//! `--max-body-budget` for request bodies). Taking is all or nothing and cannot wrap; what is
//! taken is given back when the bytes leave (a `Reservation` gives its bytes back on drop).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub(crate) struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget { held: AtomicUsize::new(0), max })
    }

    /// Takes `n` bytes if they fit.
    pub(crate) fn take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    /// Takes `n` bytes whether or not they fit (what must not be refused, a final answer, is
    /// still counted, so that others see the budget spent).
    pub(crate) fn force(&self, n: usize) {
        self.held.fetch_add(n, Ordering::SeqCst);
    }

    /// Gives `n` bytes back.
    pub(crate) fn give(&self, n: usize) {
        let _ =
            self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| Some(held.saturating_sub(n)));
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// Bytes of a budget held for one holder (a request's body), given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Budget({} of {})", self.held(), self.max)
    }
}

impl Reservation {
    /// A reservation of nothing yet.
    pub(crate) fn new(budget: &Arc<Budget>) -> Reservation {
        Reservation { budget: budget.clone(), bytes: 0 }
    }

    /// Grows the reservation to `total` bytes (never shrinks it). False when the budget cannot
    /// take the difference (then nothing changes).
    pub(crate) fn grow_to(&mut self, total: usize) -> bool {
        let Some(more) = total.checked_sub(self.bytes).filter(|m| *m > 0) else { return true };
        if !self.budget.take(more) {
            return false;
        }
        self.bytes = total;
        true
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_all_or_nothing_and_never_wraps() {
        let b = Budget::new(100);
        assert!(b.take(60) && !b.take(41) && b.take(40));
        assert!(!b.take(usize::MAX), "no overflow");
        b.give(usize::MAX);
        assert_eq!(b.held(), 0, "no underflow");
        b.force(500);
        assert!(!b.take(1));
        b.give(500);
        assert!(b.take(1));
    }
}
