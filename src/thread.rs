//! The one place threads are created: named, with a modest explicit stack (32-bit routers have
//! little address space), and with a panic contained to the thread that raised it.

use std::io;
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
