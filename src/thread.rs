//! The one place threads are created: named, with a modest explicit stack (32-bit routers have
//! little address space), and with a panic contained to the thread that raised it. Short jobs
//! that come often (one per forwarded request) run on reused threads: an idle worker takes the
//! next job, a new one starts when none is idle, and a worker idle for a minute ends. So the
//! pool grows with the work in flight (a slow tool never waits for a free worker) and costs
//! nothing when quiet.

use std::io;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Mutex, MutexGuard};
use std::thread::{Builder, JoinHandle};
use std::time::Duration;

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

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Idle workers, each waiting on its own channel for one job.
static IDLE: Mutex<Vec<SyncSender<Job>>> = Mutex::new(Vec::new());

/// How long a worker waits for another job before it ends.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `job` on an idle worker, or on a new one (named `name`) when none is idle.
pub(crate) fn run(name: &str, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let mut job: Job = Box::new(job);
    loop {
        let idle = IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(worker) = idle else { break };
        match worker.send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::SendError(back)) => job = back, // that worker just timed out; try the next
        }
    }
    spawn(name, move || work(job)).map(drop)
}

fn work(first: Job) {
    first();
    loop {
        let (tx, rx) = mpsc::sync_channel(1);
        IDLE.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        match rx.recv_timeout(IDLE_TIMEOUT) {
            Ok(job) => job(),
            Err(_) => return, // its sender stays listed until someone tries it and moves on
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn jobs_run_and_workers_are_reused() {
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        for _ in 0..50 {
            let (done, tx) = (done.clone(), tx.clone());
            run("test-job", move || {
                done.fetch_add(1, Ordering::SeqCst);
                tx.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let ids: std::collections::HashSet<_> =
            (0..50).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert!(ids.len() < 50, "sequential jobs reuse workers ({} threads for 50 jobs)", ids.len());
    }
}
