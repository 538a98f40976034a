//! A budget of bytes shared by many queues: each queue has its own bound, and together they
//! may not hold more than the budget, so a thousand slow peers cannot add up to more memory
//! than one operator chose (`--max-queue-bytes`). Taking is all or nothing; what is taken is
//! given back when the bytes leave the queue.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Budget {
        Budget { held: AtomicUsize::new(0), max }
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
