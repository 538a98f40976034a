//! The one place threads are created: named, with a modest explicit stack (32-bit routers have
//! little address space), and with a panic contained to the thread that raised it. No thread is
//! started per request: a forwarded request is a message to its link's owner, so the gateway's
//! threads are its connections, its links and a fixed few. Also the poison-tolerant `lock`,
//! and `rest`: a waiting thread gives back the stack pages its deeper calls touched.

use std::cell::Cell;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::thread::{Builder, JoinHandle};
use std::time::Duration;

use crate::sys;

/// Stack size for every thread the binary starts. Enough for serde_json on deep-ish documents
/// (the parser's recursion limit is 128) and rustls handshakes.
const STACK_SIZE: usize = 256 * 1024;

/// Spawns a named thread. Fails only when the system refuses a new thread (out of memory or
/// a process limit); callers treat that like any other resource exhaustion.
pub(crate) fn spawn<F, T>(name: impl Into<String>, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name.into()).stack_size(STACK_SIZE).spawn(|| {
        STACK.set(Some(Stack { bounds: None, worked: true }));
        f()
    })
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: one bad
/// connection must not wedge the process (`panic = "unwind"` is kept for this).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A thread's stack as `rest` sees it: its lowest address (asked of the C library at the first
/// rest, not at every thread's start: glibc's answer costs a syscall, and short connections
/// never rest), and whether it has worked since it last gave pages back.
#[derive(Clone, Copy)]
struct Stack {
    /// Its lowest and highest addresses.
    bounds: Option<(usize, usize)>,
    worked: bool,
}

thread_local! {
    /// Set for the threads `spawn` starts (never for `main`, whose stack the kernel grows).
    static STACK: Cell<Option<Stack>> = const { Cell::new(None) };
}

/// How long a wait must find nothing before the waiting thread gives its stack pages back. A
/// busy thread (a call every few hundred milliseconds) never pays for it; an idle one pays one
/// early wake and one `madvise` per quiet spell.
const SETTLE: Duration = Duration::from_secs(1);

/// Waits with `wait` for up to `timeout`; `quiet` tells a wait that found nothing. If the thread
/// worked since it last rested and the first `SETTLE` of the wait is quiet, the thread `rest`s
/// and waits out the remainder. The caller sees one wait of `timeout`.
pub(crate) fn wait_resting<T>(
    timeout: Duration,
    mut wait: impl FnMut(Duration) -> T,
    quiet: impl Fn(&T) -> bool,
) -> T {
    let due = STACK.get().is_some_and(|s| s.worked);
    if !due || timeout <= SETTLE {
        return worked_unless_quiet(wait(timeout), &quiet);
    }
    let first = wait(SETTLE);
    if !quiet(&first) {
        return first;
    }
    rest();
    worked_unless_quiet(wait(timeout - SETTLE), &quiet)
}

/// The bounds of this thread's stack, noting that the thread rests from now on; `None` on
/// threads `spawn` did not start. Out of line: glibc's answer, the first time, runs deep.
#[inline(never)]
fn resting_bounds() -> Option<(usize, usize)> {
    let stack = STACK.get()?;
    let bounds = stack.bounds.or_else(|| sys::stack_bounds().map(|(low, size)| (low, low + size)))?;
    STACK.set(Some(Stack { bounds: Some(bounds), worked: false }));
    Some(bounds)
}

fn worked_unless_quiet<T>(got: T, quiet: &impl Fn(&T) -> bool) -> T {
    if !quiet(&got) {
        if let Some(stack) = STACK.get() {
            STACK.set(Some(Stack { worked: true, ..stack }));
        }
    }
    got
}

/// Gives the kernel back the stack pages below the caller's frame. Stack pages, once touched,
/// otherwise stay resident for the thread's life, so a connection that once parsed a deep
/// document or ran a TLS handshake would keep those pages while it sits idle; with a thread per
/// connection that is much of the gateway's memory (ARCHITECTURE.md, "What bounds what").
/// Memory below the stack pointer is dead by the ABI, so dropping it is safe; the pages come
/// back as zeros on the next deep call. A no-op on threads `spawn` did not start.
///
/// Inlined into its caller, so that while the pages go, nothing but `discard_stack_below`'s
/// small frame lies below the caller's: the page that frame sits in stays resident, and a
/// waiting thread keeps no deeper page than its wait needs.
#[inline(always)]
pub(crate) fn rest() {
    if let Some((low, high)) = resting_bounds() {
        sys::discard_stack_below(low, high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches about `kib` KiB of stack below the caller, then returns.
    #[inline(never)]
    fn dig(kib: usize) -> u8 {
        let mut pad = [0u8; 1024];
        std::hint::black_box(&mut pad);
        pad[0] = kib as u8;
        if kib > 1 {
            pad[1] = dig(kib - 1);
        }
        std::hint::black_box(pad)[0]
    }

    #[test]
    fn a_resting_thread_gives_back_the_pages_its_deep_calls_touched() {
        let measured = spawn("rest-test", || {
            let (low, size) = sys::stack_bounds().expect("the stack's bounds");
            let top = low + size;
            std::hint::black_box(dig(48));
            let deep = sys::resident_pages(low, top);
            rest();
            let rested = sys::resident_pages(low, top);
            (deep, rested, sys::page_size())
        })
        .unwrap()
        .join()
        .unwrap();
        let (deep, rested, page) = measured;
        let Some(back) = pages_surely_given_back(page) else { return };
        assert!(deep >= 48 * 1024 / page, "the dig touched {deep} pages");
        assert!(rested + back <= deep, "rest kept {rested} of {deep} pages");
    }

    /// How many pages a rest after a 48 KiB dig surely gives back: 32 KiB of them (the rest may
    /// share a page with live frames or the margin). `None` where pages are so big (64 KiB on some
    /// aarch64 kernels) that a 256 KiB stack has too few to tell; the tests then check nothing.
    fn pages_surely_given_back(page: usize) -> Option<usize> {
        (page <= 16 * 1024).then_some(32 * 1024 / page)
    }

    #[test]
    fn a_quiet_wait_rests_once_and_is_still_one_wait() {
        let seen = spawn("settle-test", || {
            let (low, size) = sys::stack_bounds().expect("the stack's bounds");
            std::hint::black_box(dig(48));
            let deep = sys::resident_pages(low, low + size);
            let mut waits = Vec::new();
            // A wait of 1.2 s that finds nothing: 1 s, a rest, then the remaining 0.2 s.
            let got = wait_resting(
                SETTLE + Duration::from_millis(200),
                |t| {
                    waits.push(t);
                    None::<()>
                },
                Option::is_none,
            );
            let rested = sys::resident_pages(low, low + size);
            // Rested and nothing came since: the next wait is one wait, no early wake.
            let mut again = Vec::new();
            wait_resting(
                SETTLE * 2,
                |t| {
                    again.push(t);
                    Some(())
                },
                Option::is_none,
            );
            (got, waits, deep, rested, again)
        })
        .unwrap()
        .join()
        .unwrap();
        let (got, waits, deep, rested, again) = seen;
        assert_eq!(got, None);
        assert_eq!(waits, vec![SETTLE, Duration::from_millis(200)]);
        let back = pages_surely_given_back(sys::page_size()).unwrap_or(0);
        assert!(rested + back <= deep, "the quiet wait gave pages back ({deep} -> {rested})");
        assert_eq!(again, vec![SETTLE * 2]);
    }

    #[test]
    fn rest_is_a_no_op_on_threads_spawn_did_not_start() {
        std::thread::spawn(rest).join().unwrap();
    }
}
