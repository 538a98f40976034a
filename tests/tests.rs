//! The one integration test binary: every test starts the real `mcpport` executable on
//! 127.0.0.1:0, talks to it over loopback, and kills what it started by PID.
//!
//! - `aggregate`: prompts, resources, subscriptions, completions, logging, pagination.
//! - `browser`: CORS preflights and headers, the status page and its JSON.
//! - `cli`: --help, --version, bad flags (exit status 2).
//! - `hostile`: limits, slow and oversized input, token roles, session owners, IPv6.
//! - `hostile_edges`: fake edges that lie, shadow, flood and stall: names and ids owned by the
//!   credential, first come keeps names and URIs, list caps, the registration deadline, linear
//!   template matching, secrets and forged lines kept out of logs, sessions per client.
//! - `hostile_http`: request bodies (overflowing sizes, refused bodies, the body budget),
//!   lock-outs (idle sockets, one address, the metrics listener), strict framing and `Host`.
//! - `layers`: the gateway's modules name only their floor and below (read off the source).
//! - `http`: the gateway's HTTP surface: health, routing, status codes for bad input, auth.
//! - `front`: the front end's defects of the 12-07 review, one test per class against the binary.
//! - `end_to_end`: register a real child, list and call tools over SSE, list_changed, failures.
//! - `eras`: edges that speak only protocol 2026-07-28: the probe, clients of both eras.
//! - `modern`: protocol 2026-07-28 (stateless) on both endpoints in front of a legacy edge.
//! - `oauth`: the resource server's metadata and challenges, the built-in authorization server
//!   (consent, codes, refresh rotation, restarts, revocation), and per-client policies.
//! - `operator`: metrics, /servers, JSON logs.
//! - `registration`: the WebSocket registration protocol: bad frames, names, ids.
//! - `resilience`: gateway restarts, silent links, crashing children, signals, health, storms.
//! - `streamable`: Streamable HTTP: sessions, status codes, streams, per-server endpoints.
//! - `tls`: https/wss, private CAs, mTLS, key formats, bad files.
//! - `concurrency`: many sessions calling at once, every answer reaching the caller that asked.
//! - `correlation`: one test per correlation finding: cancels, server requests, logs, updates,
//!   catalog races, bounded threads and memory, and a seeded randomized run with restarts.

mod util;

mod aggregate;
mod browser;
mod cli;
mod concurrency;
mod correlation;
mod edges;
mod end_to_end;
mod eras;
mod front;
mod hostile;
mod hostile_edges;
mod hostile_http;
mod http;
mod layers;
mod modern;
mod oauth;
mod operator;
mod register_links;
mod registration;
mod resilience;
mod streamable;
mod tls;
