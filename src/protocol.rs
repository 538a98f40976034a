//! What every role knows of MCP beyond the JSON-RPC envelope: the protocol revisions this build
//! speaks and the order of log levels. The gateway, `register` and the sample server all read
//! these; none of them reaches into another's internals for them.

/// Protocol versions spoken with sessions that `initialize`, oldest first.
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// What is answered when a client asks for a version this build does not know.
pub(crate) const LATEST_VERSION: &str = "2025-11-25";
/// The stateless revisions (no `initialize`; every request carries its version in `_meta`).
pub(crate) const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// Every version this build speaks, oldest first (what `server/discover` lists).
pub(crate) const ALL_VERSIONS: [&str; 5] =
    ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// The `_meta` keys of a 2026-07-28 request and result.
pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(crate) const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub(crate) const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub(crate) const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub(crate) const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// Whether `version` is a stateless (2026-07-28 or later) revision this build speaks.
pub(crate) fn is_modern(version: &str) -> bool {
    MODERN_VERSIONS.contains(&version)
}

/// The syslog order of MCP log levels, lowest first.
pub(crate) const LOG_LEVELS: [&str; 8] =
    ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/// The rank of a log level in `LOG_LEVELS`; unknown levels count as `info`.
pub(crate) fn severity(level: &str) -> usize {
    LOG_LEVELS.iter().position(|l| *l == level).unwrap_or(1)
}

/// Whether `level` is one of the eight MCP log levels.
pub(crate) fn is_log_level(level: &str) -> bool {
    LOG_LEVELS.contains(&level)
}

/// Server names become tool-name prefixes and URL path segments: `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The requests every MCP server era has for its tools, prompts and resources (2026-07-28 kept
/// them all): what the gateway knows how to route, list and judge by policy.
pub(crate) const SERVER_METHODS: [&str; 8] = [
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "completion/complete",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_unknown_ones_count_as_info() {
        assert!(severity("debug") < severity("info") && severity("error") < severity("emergency"));
        assert_eq!(severity("nonsense"), severity("info"));
        assert!(is_log_level("notice") && !is_log_level("verbose"));
    }
}
