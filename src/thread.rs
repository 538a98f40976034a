//! The one place threads are created: named, with a modest explicit stack (32-bit routers have
//! little address space), and with a panic contained to the thread that raised it. No thread is
//! started per request: a forwarded request is a message to its link's owner, so the gateway's
//! threads are its connections, its links and a fixed few. Also the poison-tolerant `lock`.

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::thread::{Builder, JoinHandle};

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
    Builder::new().name(name.into()).stack_size(STACK_SIZE).spawn(f)
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: one bad
/// connection must not wedge the process (`panic = "unwind"` is kept for this).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
