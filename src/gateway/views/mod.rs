//! The gateway as an MCP server, whatever the transport: `mcp.rs` answers the lifecycle and hands
//! requests for servers to their links; `aggregate.rs` decides the aggregated view at `/mcp`;
//! `permit.rs` applies the client's policy to both views; `tasks.rs` routes the tasks extension's
//! methods to the link that holds each task.

pub(crate) mod aggregate;
pub(crate) mod mcp;
pub(crate) mod permit;
pub(crate) mod tasks;
