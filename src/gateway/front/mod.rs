//! The gateway's HTTP front end: one connection's life and its routes (`routes.rs`), who may do
//! what (`auth.rs`, `cors.rs`), and the three client transports on top of one exchange type
//! (`exchange.rs`): legacy HTTP+SSE (`legacy.rs`), Streamable HTTP (`streamable.rs`), and the
//! stateless 2026-07-28 revision (`modern.rs`, with `subscriptions/listen` in `listen.rs`).

pub(crate) mod auth;
pub(crate) mod cors;
pub(crate) mod exchange;
pub(crate) mod legacy;
pub(crate) mod listen;
pub(crate) mod modern;
pub(crate) mod routes;
pub(crate) mod stream;
pub(crate) mod streamable;
