//! The gateway's shared tables, behind short locks never held across I/O: registered servers
//! (`server.rs`'s `Upstream`, each reaching its link's owner through a bounded queue), client
//! sessions by id, and the aggregated catalog built from the servers' lists (`catalog.rs`,
//! with RFC 6570 templates in `template.rs`), all owned by the `Registry`.

pub(crate) mod catalog;
pub(crate) mod registry;
pub(crate) mod server;
pub(crate) mod template;
