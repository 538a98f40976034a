//! Registered edges, from the gateway's side of their WebSockets: the registration (the first
//! frame, the name's claim; `registration.rs`) and the link's owner thread, a thin I/O driver
//! around the sans-IO `Link` (`driver.rs`).

pub(crate) mod driver;
pub(crate) mod registration;
