//! What `mcpport gateway` was told on its command line, validated (`cli.rs` builds it): ports and
//! paths, tokens, and every bound the gateway enforces, with the defaults `--help` shows.

use std::time::Duration;

use crate::http::Limits;
use crate::ws::Heartbeat;

/// The path edges register on, as in the original.
pub(crate) const REGISTER_PATH: &str = "/mcp/register";

/// Everything `mcpport gateway` was told on its command line, validated. (No `Debug`: it holds
/// tokens.)
#[derive(Clone)]
pub(crate) struct Config {
    pub host: String,
    pub port: u16,
    /// Path of the Streamable HTTP endpoint.
    pub mcp_path: String,
    /// Origins allowed besides loopback and the gateway's own address (`*` for any).
    pub allow_origins: Vec<String>,
    /// Names allowed in `Host` besides loopback names, IP addresses and `host` (`*` for any);
    /// checked only when clients need no token.
    pub allow_hosts: Vec<String>,
    /// Streamable HTTP sessions idle this long are ended.
    pub session_timeout: Duration,
    /// Path of the legacy SSE stream (`GET`).
    pub sse_path: String,
    /// Path of the legacy message endpoint (`POST ?session_id=`), as advertised to clients.
    pub messages_path: String,
    /// Timeout for upstream requests other than tool calls.
    pub timeout_rpc: Duration,
    /// Timeout for a tool call (restarted by progress notifications).
    pub timeout_run_tool: Duration,
    /// Bearer tokens for clients (and edges, unless `register_tokens`); empty: no authentication.
    pub auth_tokens: Vec<String>,
    /// Bearer tokens for edges only.
    pub register_tokens: Vec<String>,
    /// Client sessions open at once before new ones get 503.
    pub max_sessions: usize,
    /// Bytes all client and link queues may hold together.
    pub max_queue_bytes: usize,
    /// Sessions one client (token, certificate, or address without either) may hold open;
    /// `None`: 256, and loopback addresses (local clients, a reverse proxy on this host) exempt.
    pub max_sessions_per_client: Option<usize>,
    /// Items and bytes one list of an edge may have (more and the list is refused).
    pub max_list_items: usize,
    pub max_list_bytes: usize,
    /// Requests one session may have in flight at servers (more wait briefly, then are refused).
    pub max_calls_per_session: usize,
    /// Requests in flight at one server, from all sessions (more are refused).
    pub max_calls_per_server: usize,
    /// Tasks (the tasks extension) the gateway keeps for one server, and for one client at one
    /// server; past either, a client's next call runs as an ordinary call.
    pub max_tasks_per_server: usize,
    pub max_tasks_per_client: usize,
    /// The longest a task is kept (an edge's longer `ttlMs` is cut to it).
    pub task_ttl: Duration,
    /// Expose tools and prompts on the aggregated view under their own names (a name an earlier
    /// server took gets the `{server}_` prefix), instead of always prefixed.
    pub bare_names: bool,
    pub limits: Limits,
    /// Bytes of request bodies held at once across all connections (503 past it).
    pub max_body_budget: usize,
    pub max_connections: usize,
    /// Connections from one peer address; `None`: the default, which spares loopback peers.
    pub max_connections_per_ip: Option<usize>,
    /// Interval of SSE keep-alive comments.
    pub keepalive: Duration,
    /// Pings to registered servers, and how long one may stay silent.
    pub heartbeat: Heartbeat,
    /// Largest WebSocket message accepted from an edge.
    pub max_ws_message: usize,
    /// How long a SIGINT/SIGTERM waits for requests in flight before closing everything.
    pub shutdown_grace: Duration,
    /// Serve https:// and wss:// with these PEM files.
    pub tls: Option<TlsFiles>,
    /// Also serve `GET /metrics`, without authentication, on this address (say 127.0.0.1:9108).
    pub metrics_listen: Option<String>,
    /// OAuth and policies.
    pub oauth: OAuthConfig,
}

/// How clients may prove themselves with OAuth, and what each may use (`access/`, `authz/`).
#[derive(Debug, Clone)]
pub(crate) struct OAuthConfig {
    /// The gateway's external base URL (`--public-url`), without a trailing slash.
    pub public_url: Option<String>,
    /// Issuers whose access tokens are trusted (`--oauth-issuer`).
    pub issuers: Vec<String>,
    /// Audiences accepted besides each endpoint's own URL (`--oauth-audience`).
    pub audiences: Vec<String>,
    /// The scope a token must grant (`--oauth-scope`; empty: none).
    pub scope: String,
    /// Run the built-in authorization server (`--oauth-builtin`).
    pub builtin: bool,
    /// The owner's password for the built-in server's consent page.
    pub owner_password_file: Option<String>,
    /// Where the built-in server keeps what survives a restart.
    pub state_dir: Option<String>,
    /// `--policy FILE`.
    pub policy_file: Option<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            public_url: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            scope: "mcp".into(),
            builtin: false,
            owner_password_file: None,
            state_dir: None,
            policy_file: None,
        }
    }
}

impl Config {
    /// Whether every client request needs a credential (a static token or an OAuth token).
    pub(crate) fn clients_need_token(&self) -> bool {
        !self.auth_tokens.is_empty() || !self.oauth.issuers.is_empty() || self.oauth.builtin
    }
}

/// The gateway's certificate chain and key, and the CA that client certificates must chain to
/// (mTLS) when given.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".into(),
            port: 8765,
            mcp_path: "/mcp".into(),
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            session_timeout: Duration::from_secs(30 * 60),
            sse_path: "/sse".into(),
            messages_path: "/messages/".into(),
            timeout_rpc: Duration::from_secs(10),
            timeout_run_tool: Duration::from_secs(120),
            auth_tokens: Vec::new(),
            register_tokens: Vec::new(),
            max_sessions: 1024,
            max_sessions_per_client: None,
            max_queue_bytes: 256 * 1024 * 1024,
            max_list_items: 10_000,
            max_list_bytes: 8 * 1024 * 1024,
            max_calls_per_session: 256,
            max_calls_per_server: 1024,
            max_tasks_per_server: 1024,
            max_tasks_per_client: 64,
            task_ttl: Duration::from_secs(3600),
            bare_names: false,
            limits: Limits::default(),
            max_body_budget: 64 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_ip: None,
            keepalive: Duration::from_secs(15),
            heartbeat: Heartbeat { interval: Duration::from_secs(20), timeout: Duration::from_secs(60) },
            max_ws_message: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            metrics_listen: None,
            oauth: OAuthConfig::default(),
        }
    }
}
