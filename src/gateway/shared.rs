//! What every thread of one gateway shares: its configuration, its tables, its counters and its
//! budgets (`Gateway`), passed by reference to every connection and link owner; and `Tally`, an
//! RAII count of work in flight (waited for at shutdown). There is no global mutable state: a
//! second gateway in the same process (the tests, `mcpport demo`) shares nothing with the first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::access::Access;
use crate::gateway::admission::Admission;
use crate::gateway::config::Config;
use crate::gateway::link::state::StateKey;
use crate::gateway::metrics::Metrics;
use crate::gateway::tables::registry::Registry;
use crate::http::Budget;

/// How long one write to a client may block before the client is given up on.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One running gateway: its configuration and its shared state.
pub(crate) struct Gateway {
    pub cfg: Config,
    /// Trusted issuers and the policy in force.
    pub access: Arc<Access>,
    /// The built-in authorization server, when it runs (`--oauth-builtin`).
    #[cfg(feature = "oauth-server")]
    pub authz: Option<Arc<crate::gateway::authz::Server>>,
    pub registry: Arc<Registry>,
    /// The counters served at `/metrics`.
    pub metrics: Metrics,
    /// Bytes all client and link queues may hold together (`--max-queue-bytes`).
    pub queue_budget: Arc<Budget>,
    /// The connection caps.
    pub admission: Arc<Admission>,
    /// Bytes of request bodies held across all connections (`--max-body-budget`).
    pub body_budget: Arc<Budget>,
    /// Calls in flight at servers (waited for at shutdown).
    pub in_flight: Arc<AtomicUsize>,
    /// SSE streams being written (their last events are flushed before exit).
    pub streams: Arc<AtomicUsize>,

    /// Signs the `requestState` of the `input_required` results made for legacy edges.
    pub state_key: StateKey,
    /// Set by SIGINT/SIGTERM: new connections and requests get 503.
    pub shutting_down: AtomicBool,
    /// The TLS configuration of the listening port, if it serves https:// and wss://.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Counts one unit of work (a request in flight, an open stream) until dropped.
pub(crate) struct Tally(Arc<AtomicUsize>);

impl Tally {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Tally {
        counter.fetch_add(1, Ordering::SeqCst);
        Tally(counter.clone())
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until `counter` is zero or `deadline` passes.
pub(crate) fn drain(counter: &AtomicUsize, deadline: Instant) {
    while counter.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
