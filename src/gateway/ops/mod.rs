//! What operators read: the status page and `/status.json` (`status.rs`), `/health`, `/servers`
//! and the Prometheus text (`exposition.rs`), and the `--metrics-listen` server
//! (`metrics_server.rs`).

pub(crate) mod exposition;
pub(crate) mod metrics_server;
pub(crate) mod status;
