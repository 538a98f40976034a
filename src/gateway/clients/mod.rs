//! What the gateway holds for its clients, below the tables that index it: a `Session` (its
//! transport, view, owner, what it negotiated, its stream and its calls in flight), the bounded
//! `Mailbox` between producers and the one thread that writes to a client, and `Reply`/`Caller`,
//! where a call's messages go and the promise that it ends exactly once.

pub(crate) mod mailbox;
pub(crate) mod reply;
pub(crate) mod session;
