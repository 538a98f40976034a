//! The command line: the original mcpport 0.1.4's subcommands and flags (same names, same
//! defaults), plus ours. Parsed with lexopt into validated configs; every mistake is a message
//! that names the flag, and `main` turns it into exit status 2.

use std::ffi::OsString;
use std::time::Duration;

use lexopt::prelude::*;
use log::LevelFilter;

use crate::http::client::Url;
use crate::register::health;
use crate::{gateway, logger, register, sample_server};

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `--version` prints: the version, then the git revision, the target and the build profile
/// it was built from (`mcpport 0.2.0 (a1b2c3d4e5f6, aarch64-unknown-linux-musl, release)`).
pub(crate) fn version_line() -> String {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    format!("mcpport {VERSION} ({}, {}, {profile})", env!("MCPPORT_REVISION"), env!("MCPPORT_TARGET"))
}

const HELP: &str = "\
mcpport — reach MCP servers that run where nobody can dial in

Usage: mcpport <COMMAND> [OPTIONS]

Commands:
  gateway, g        Run the gateway: serve MCP clients over HTTP, accept edge registrations
  register, r       Run a stdio MCP server here and register it with a gateway
  demo              Start a gateway on 127.0.0.1:8765 with the built-in sample server registered
  sample-server     Speak MCP on stdin/stdout with a few sample tools (echo, system_info, sleep)
  oauth             List or revoke the clients of the built-in OAuth server (--oauth-builtin)

Options:
  -h, --help        Print help (also: mcpport <COMMAND> --help)
  -V, -v, --version Print the version

Quick start:
  mcpport gateway --port 8765
  mcpport register --stdio \"mcpport sample-server\" \\
      --gateway-url ws://127.0.0.1:8765/mcp/register --server-name pi
  then point an MCP client at http://127.0.0.1:8765/sse
  (with mcpport on the PATH: cargo install --path . ; else use its full path, inside --stdio too)
";

const GATEWAY_HELP: &str = "\
Usage: mcpport gateway [OPTIONS]

Serves MCP clients over HTTP (Streamable HTTP at --mcp-path; legacy SSE at --sse-path, messages at
--message-path) and accepts edge registrations on ws://HOST:PORT/mcp/register, all on one port.
Registered servers' tools are listed as {server}_{tool}, plus the gateway's own list_servers; each
server is also reachable as itself at /servers/NAME/mcp and /servers/NAME/sse.

Options:
      --host <HOST>              Address to bind, e.g. :: or ::1 for IPv6 [default: 0.0.0.0]
      --port <PORT>              Port to bind; 0 takes a free port and logs it [default: 8765]
      --sse-path <PATH>          Legacy SSE endpoint [default: /sse]
      --message-path <PATH>      Legacy message endpoint (alias --messages-path) [default: /messages/]
      --mcp-path <PATH>          Streamable HTTP endpoint [default: /mcp]
      --timeout-rpc <SECS>       Timeout of upstream requests other than tool calls [default: 10]
      --timeout-run-tool <SECS>  Timeout of a tool call; progress restarts it [default: 120]
      --auth-token <TOKEN>       Require 'Authorization: Bearer TOKEN' (repeatable; also from
                                 MCP_GATEWAY_AUTH_TOKENS, comma-separated). /health stays open.
                                 Serves edges too, unless --register-token is given
      --auth-token-file <FILE>   Read client tokens from FILE, one per line (keeps them out of ps)
      --register-token <TOKEN>   Token for edges only: client tokens cannot register servers,
                                 edge tokens cannot call tools (repeatable)
      --register-token-file <FILE>  Read edge tokens from FILE, one per line
      --max-connections <N>      Open connections before new ones get 503; connections idle over
                                 2 s are closed first to make room [default: 1024]
      --max-connections-per-ip <N>  Open connections from one address, likewise [default: 64,
                                 loopback exempt; when set, it holds for loopback too]
      --allow-origin <ORIGIN>    Allow browser pages from ORIGIN (repeatable; * for any). Loopback
                                 origins and the gateway's own address are always allowed
      --allow-host <HOST>        Without --auth-token, answer requests naming HOST in their Host
                                 header (repeatable; * for any). Loopback names, IP addresses and
                                 --host are always allowed; others get 421 (DNS rebinding)
      --session-timeout <SECS>   End Streamable HTTP sessions idle this long [default: 1800]
      --sse-keepalive <SECS>     Keep-alive comment on idle SSE streams (also how soon a client that
                                 left is noticed, and when a slow answer turns into a stream) [default: 15]
      --max-sessions <N>         Client sessions open at once before new ones get 503 [default: 1024]
      --max-sessions-per-client <N>  Sessions one token (or, without tokens, one address) may hold;
                                 more get 429 [default: 256, loopback addresses exempt unless set]
      --max-queue-bytes <N>      Bytes all queues to clients and servers may hold together; past it,
                                 slow readers lose messages (or their stream) [default: 268435456]
      --max-list-items <N>       Items in one list of a registered server (tools, prompts,
                                 resources, templates); a longer list is refused [default: 10000]
      --max-list-bytes <N>       Bytes of one such list; a bigger one is refused [default: 8388608]
      --max-calls-per-session <N>  Requests one session may have in flight at servers; more wait
                                 up to --timeout-rpc, then get an error [default: 256]
      --max-calls-per-server <N> Requests in flight at one server, all sessions together; more
                                 get an error at once [default: 1024]
      --max-tasks-per-server <N> Tasks kept for one server [default: 1024]
      --max-tasks-per-client <N> Tasks one client may run at one server; more run as ordinary
                                 calls [default: 64]
      --task-ttl <SECS>          The longest a task is kept [default: 3600]
      --aggregate-names <MODE>   prefixed ({server}_{name}) or bare names on /mcp and /sse
                                 [default: prefixed]
      --max-header-bytes <N>     Request line and headers, 431 past it [default: 16384]
      --max-body-bytes <N>       Request body, 413 past it [default: 4194304]
      --max-body-budget <N>      Request body bytes held at once by all connections together;
                                 a body that does not fit gets 503 before it is read [default: 67108864]
      --max-ws-message-bytes <N> WebSocket message from an edge, close 1009 past it [default: 16777216]
      --header-timeout <SECS>    Time to send a request's headers, 408 past it [default: 10]
      --idle-timeout <SECS>      Keep-alive connection idle time before it is closed [default: 60]
      --ping-interval <SECS>     Ping registered servers this often [default: 20]
      --ping-timeout <SECS>      Drop a server silent this long [default: 3x interval]
      --shutdown-grace <SECS>    On SIGINT/SIGTERM, wait this long for requests in flight [default: 10]
      --metrics-listen <ADDR>    Also serve GET /metrics without auth on ADDR, e.g. 127.0.0.1:9108
                                 (GET /metrics on the main port needs a client token like the rest)
      --log-level <LEVEL>        DEBUG, INFO, WARNING, ERROR or CRITICAL [default: INFO]
      --log-format <FORMAT>      text, or json (one object per line, for collectors) [default: text]
      --ssl-enabled              Serve https:// and wss:// on the same port
      --ssl-certfile <FILE>      Certificate chain (PEM)
      --ssl-keyfile <FILE>       Private key (PEM: PKCS#8, RSA or EC)
      --ssl-ca-certs <FILE>      Require client certificates signed by this CA (mTLS; alias
                                 --ssl-ca-cert)
      --public-url <URL>         The gateway's external base URL (https://mcp.example.net), naming
                                 its OAuth resources; needed behind a reverse proxy
      --oauth-issuer <URL>       Accept OAuth access tokens (JWT) from this authorization server
                                 (repeatable); its metadata and keys are fetched from it
      --oauth-audience <AUD>     Accept tokens for AUD too, besides each endpoint's URL (repeatable)
      --oauth-scope <SCOPE>      The scope a token must grant; '' for none [default: mcp]
      --oauth-builtin            Be an authorization server too, for owners without one: clients
                                 register themselves and the owner approves each on a consent page
      --owner-password-file <FILE>  The owner's password for the consent page (--oauth-builtin)
      --state-dir <DIR>          Where the built-in server keeps its key, clients and refresh tokens
      --policy <FILE>            Which tools, prompts and resources each client sees (JSON, see
                                 docs/oauth.md); re-read on SIGHUP
      --ipv6                     Listen on IPv6 too: with the default --host, bind :: (dual-stack,
                                 IPv4 as well); other --host values are used as given
      --debug                    Accepted for compatibility with the original (no effect)
  -h, --help                     Print this help
";

const REGISTER_HELP: &str = "\
Usage: mcpport register --stdio <CMD> [OPTIONS]
       mcpport register --config <FILE> [OPTIONS]

Starts CMD with 'sh -c' as a stdio MCP server, dials out to the gateway, registers it under
--server-name and relays JSON-RPC both ways. When the link breaks it reconnects by itself (capped
exponential backoff with jitter); the server keeps running across reconnects. Exits when the
server exits and --restart says not to bring it back, or on SIGINT/SIGTERM (status 0), always
stopping the server's whole process group first.

With --config, fronts every server of FILE (Claude Desktop's or Cursor's mcpServers, VS Code's
servers: stdio commands, and HTTP servers by url), each with its own link; SIGHUP reads FILE again
(docs/edges.md).

Options:
      --stdio <CMD>              Command that starts the stdio MCP server
      --config <FILE>            Front every server of this JSON file instead (not with --stdio,
                                 --server-name or --server-id); --restart defaults to always
      --gateway-url <URL>        Gateway registration URL [default: ws://localhost:8765/mcp/register]
      --server-name <NAME>       Name to register under: 1-64 of A-Z a-z 0-9 _ - [default: local]
      --server-id <ID>           Identity kept across reconnects [default: a random UUID]
      --header <'Key: Value'>    Extra header for the WebSocket upgrade (repeatable), e.g.
                                 --header 'Authorization: Bearer TOKEN'
      --header-file <FILE>       Read such headers from FILE, one per line (keeps tokens out of ps)
      --require-gateway          Exit with an error if the gateway cannot be reached at start-up
                                 (without it, keep trying); health also requires the link
      --reconnect-max <SECS>     Longest wait between reconnection attempts [default: 30]
      --ping-interval <SECS>     WebSocket ping interval [default: 20]
      --ping-timeout <SECS>      Link is dead after this long without traffic [default: 2x interval]
      --restart <POLICY>         never (exit with the server's status), on-failure or always;
                                 restarts back off against crash loops [default: never]
      --port <PORT>              Local health server port; 0 = off [default: 0]
      --health-host <HOST>       Address of the health server [default: 0.0.0.0]
      --health-endpoint <PATH>   Health check path (repeatable) [default: /health]
      --enable-cors              Add CORS headers to health responses
      --log-level <LEVEL>        DEBUG, INFO, WARNING, ERROR or CRITICAL [default: INFO]
      --log-format <FORMAT>      text, or json (one object per line, for collectors) [default: text]
      --ssl-ca-cert <FILE>       Trust this CA for wss:// besides the bundled web roots
      --no-ssl-verify            Accept any gateway certificate (encrypted, not authenticated!)
      --ssl-certfile <FILE>      Client certificate (PEM chain) for a gateway that requires mTLS
      --ssl-keyfile <FILE>       Its private key
  -h, --help                     Print this help
";

const DEMO_HELP: &str = "\
Usage: mcpport demo [--host HOST] [--port PORT] [--log-level LEVEL] [--log-format text|json]

Starts a gateway (default 127.0.0.1:8765) and registers the built-in sample server with it
through the real WebSocket path, then prints the URLs and a way to try it. Ctrl-C stops both.
";

const SAMPLE_HELP: &str = "\
Usage: mcpport sample-server [--protocol-version V] [--test-tools]

A stdio MCP server with the tools echo, system_info and sleep. --protocol-version pins the
version answered to initialize (for old peers); --test-tools adds the tools fail, image, add_tool,
ask_client, touch and log, a prompt (greet), a resource (sample://readme), a template
(sample://echo/{text}), subscriptions, completions and logging, for tests.
";

/// What the command line asks for. (No `Debug`: configurations hold tokens, which must never
/// be printed.)
pub(crate) enum Command {
    Gateway(Box<gateway::Config>),
    Register(Box<register::Config>),
    Demo {
        host: String,
        port: u16,
    },
    SampleServer(sample_server::Config),
    /// `mcpport oauth list|revoke`: the built-in authorization server's clients.
    OAuth {
        state_dir: String,
        revoke: Option<String>,
    },
    /// Print this text and exit 0.
    Help(&'static str),
    Version,
}

/// A parsed command line.
pub(crate) struct Parsed {
    pub command: Command,
    pub log_level: LevelFilter,
    /// `--log-format json`: one JSON object per log line.
    pub log_json: bool,
}

/// Parses `args` (without the program name). `env_tokens` is MCP_GATEWAY_AUTH_TOKENS.
pub(crate) fn parse_from(args: Vec<OsString>, env_tokens: Option<String>) -> Result<Parsed, String> {
    let mut p = lexopt::Parser::from_args(args);
    let mut log_level = LevelFilter::Info;
    let mut log_json = false;
    let command = match p.next().map_err(|e| e.to_string())? {
        Some(Short('h') | Long("help")) => Command::Help(HELP),
        Some(Short('V') | Short('v') | Long("version")) => Command::Version,
        Some(Value(cmd)) => {
            match cmd.string().map_err(|_| "the command is not valid UTF-8".to_string())?.as_str() {
                "gateway" | "g" => {
                    gateway_args(&mut p, &mut Logging(&mut log_level, &mut log_json), env_tokens)?
                }
                "register" | "r" => register_args(&mut p, &mut Logging(&mut log_level, &mut log_json))?,
                "demo" => demo_args(&mut p, &mut Logging(&mut log_level, &mut log_json))?,
                "sample-server" => sample_args(&mut p)?,
                "oauth" => oauth_args(&mut p)?,
                other => return Err(format!("unknown command {other:?}")),
            }
        }
        Some(arg) => return Err(arg.unexpected().to_string()),
        None => return Err("a command is needed: gateway, register, demo or sample-server".into()),
    };
    Ok(Parsed { command, log_level, log_json })
}

/// Where to look after a mistake: the help of the subcommand the arguments name, else the
/// general help.
pub(crate) fn help_hint(args: &[OsString]) -> String {
    let sub = match args.first().and_then(|a| a.to_str()) {
        Some("gateway" | "g") => " gateway",
        Some("register" | "r") => " register",
        Some("demo") => " demo",
        Some("sample-server") => " sample-server",
        Some("oauth") => " oauth",
        _ => "",
    };
    format!("Try 'mcpport{sub} --help'.")
}

fn gateway_args(
    p: &mut lexopt::Parser,
    logging: &mut Logging<'_>,
    env_tokens: Option<String>,
) -> Result<Command, String> {
    let mut cfg = gateway::Config::default();
    let mut edge_timeout = None;
    let (mut ssl_enabled, mut ssl, mut ipv6) = (false, (None, None, None), false);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(GATEWAY_HELP)),
            Long("host") => cfg.host = string(p)?,
            Long("port") => cfg.port = port(p, "--port", "0 takes a free port")?,
            Long("sse-path") => cfg.sse_path = path(p, "--sse-path")?,
            Long("message-path") | Long("messages-path") => cfg.messages_path = path(p, "--message-path")?,
            Long("timeout-rpc") => cfg.timeout_rpc = seconds(p, "--timeout-rpc")?,
            Long("timeout-run-tool") => cfg.timeout_run_tool = seconds(p, "--timeout-run-tool")?,
            Long("auth-token") => cfg.auth_tokens.push(string(p)?),
            Long("auth-token-file") => cfg.auth_tokens.extend(token_file(&string(p)?)?),
            Long("register-token") => cfg.register_tokens.push(string(p)?),
            Long("register-token-file") => cfg.register_tokens.extend(token_file(&string(p)?)?),
            Long("max-sessions") => cfg.max_sessions = number(p, "--max-sessions")?,
            Long("max-calls-per-session") => {
                cfg.max_calls_per_session = number(p, "--max-calls-per-session")?;
            }
            Long("max-calls-per-server") => cfg.max_calls_per_server = number(p, "--max-calls-per-server")?,
            Long("max-sessions-per-client") => {
                cfg.max_sessions_per_client = Some(number(p, "--max-sessions-per-client")?);
            }
            Long("max-tasks-per-server") => cfg.max_tasks_per_server = number(p, "--max-tasks-per-server")?,
            Long("max-tasks-per-client") => cfg.max_tasks_per_client = number(p, "--max-tasks-per-client")?,
            Long("task-ttl") => cfg.task_ttl = seconds(p, "--task-ttl")?,
            Long("aggregate-names") => {
                cfg.bare_names = match string(p)?.as_str() {
                    "bare" => true,
                    "prefixed" => false,
                    other => {
                        return Err(format!("--aggregate-names: {other:?} is neither prefixed nor bare"))
                    }
                };
            }
            Long("max-list-items") => cfg.max_list_items = number(p, "--max-list-items")?,
            Long("max-queue-bytes") => cfg.max_queue_bytes = number(p, "--max-queue-bytes")?,
            Long("max-list-bytes") => cfg.max_list_bytes = number(p, "--max-list-bytes")?,
            Long("max-header-bytes") => cfg.limits.max_header_bytes = number(p, "--max-header-bytes")?,
            Long("max-body-bytes") => cfg.limits.max_body = number(p, "--max-body-bytes")?,
            Long("max-body-budget") => cfg.max_body_budget = number(p, "--max-body-budget")?,
            Long("max-ws-message-bytes") => cfg.max_ws_message = number(p, "--max-ws-message-bytes")?,
            Long("header-timeout") => cfg.limits.header_timeout = seconds(p, "--header-timeout")?,
            Long("idle-timeout") => cfg.limits.idle_timeout = seconds(p, "--idle-timeout")?,
            Long("max-connections") => cfg.max_connections = number(p, "--max-connections")?,
            Long("max-connections-per-ip") => {
                cfg.max_connections_per_ip = Some(number(p, "--max-connections-per-ip")?);
            }
            Long("mcp-path") => cfg.mcp_path = path(p, "--mcp-path")?,
            Long("allow-origin") => cfg.allow_origins.push(string(p)?),
            Long("allow-host") => cfg.allow_hosts.push(allowed_host(&string(p)?)?),
            Long("session-timeout") => cfg.session_timeout = seconds(p, "--session-timeout")?,
            Long("ping-interval") => cfg.heartbeat.interval = seconds(p, "--ping-interval")?,
            Long("ping-timeout") => edge_timeout = Some(seconds(p, "--ping-timeout")?),
            Long("shutdown-grace") => cfg.shutdown_grace = seconds(p, "--shutdown-grace")?,
            Long("metrics-listen") => cfg.metrics_listen = Some(string(p)?),
            Long("sse-keepalive") => cfg.keepalive = seconds(p, "--sse-keepalive")?,
            Long("log-level") => *logging.0 = log_level(p)?,
            Long("log-format") => *logging.1 = log_format(p)?,
            Long("debug") => {}
            Long("ipv6") => ipv6 = true,
            Long("ssl-enabled") => ssl_enabled = true,
            Long("ssl-certfile") => ssl.0 = Some(string(p)?),
            Long("ssl-keyfile") => ssl.1 = Some(string(p)?),
            Long("ssl-ca-certs" | "ssl-ca-cert") => ssl.2 = Some(string(p)?),
            Long("public-url") => cfg.oauth.public_url = Some(public_url(&string(p)?)?),
            Long("oauth-issuer") => cfg.oauth.issuers.push(issuer_url(&string(p)?)?),
            Long("oauth-audience") => cfg.oauth.audiences.push(string(p)?),
            Long("oauth-scope") => cfg.oauth.scope = string(p)?,
            Long("oauth-builtin") => cfg.oauth.builtin = true,
            Long("owner-password-file") => cfg.oauth.owner_password_file = Some(string(p)?),
            Long("state-dir") => cfg.oauth.state_dir = Some(string(p)?),
            Long("policy") => cfg.oauth.policy_file = Some(string(p)?),
            arg => return Err(arg.unexpected().to_string()),
        }
    }
    check_oauth(&cfg.oauth)?;
    let oauth = cfg.oauth.builtin || !cfg.oauth.issuers.is_empty();
    if oauth && cfg.register_tokens.is_empty() && cfg.auth_tokens.is_empty() {
        return Err(
            "with OAuth for clients, edges need tokens of their own (--register-token): an edge is a \
                    machine, not a user, and without a token anyone could register servers"
                .into(),
        );
    }
    // `--ipv6` means "listen on IPv6 too": the default 0.0.0.0 becomes `::`, which takes IPv4
    // as well (IPv4-mapped) where the system allows it (Linux's default, bindv6only=0).
    if ipv6 && cfg.host == "0.0.0.0" {
        cfg.host = "::".into();
    }
    let from_env = env_tokens.unwrap_or_default();
    cfg.auth_tokens.extend(from_env.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from));
    if cfg.max_connections == 0 || cfg.max_sessions == 0 || cfg.max_connections_per_ip == Some(0) {
        return Err(
            "--max-connections, --max-connections-per-ip and --max-sessions must be at least 1".into()
        );
    }
    if cfg.max_body_budget < cfg.limits.max_body {
        return Err(format!(
            "--max-body-budget ({}) must be at least --max-body-bytes ({}): a body that could never fit would \
             be told to try again forever",
            cfg.max_body_budget, cfg.limits.max_body
        ));
    }
    if cfg.max_calls_per_session == 0
        || cfg.max_calls_per_server == 0
        || cfg.max_sessions_per_client == Some(0)
    {
        return Err("--max-calls-per-session and --max-calls-per-server must be at least 1".into());
    }
    if cfg.limits.max_header_bytes < 1024 || cfg.max_ws_message < 1024 {
        return Err("--max-header-bytes and --max-ws-message-bytes must be at least 1024".into());
    }
    cfg.tls = match (ssl_enabled, ssl) {
        (false, (None, None, None)) => None,
        (true, (Some(cert), Some(key), client_ca)) => Some(gateway::TlsFiles { cert, key, client_ca }),
        (true, _) => return Err("--ssl-enabled needs --ssl-certfile and --ssl-keyfile".into()),
        (false, _) => {
            return Err("--ssl-certfile, --ssl-keyfile and --ssl-ca-certs need --ssl-enabled".into())
        }
    };
    cfg.heartbeat.timeout = edge_timeout.unwrap_or(cfg.heartbeat.interval * 3);
    if cfg.heartbeat.timeout <= cfg.heartbeat.interval {
        return Err("--ping-timeout must be longer than --ping-interval".into());
    }
    Ok(Command::Gateway(Box::new(cfg)))
}

const OAUTH_HELP: &str = "\
Usage: mcpport oauth list --state-dir <DIR>
       mcpport oauth revoke --state-dir <DIR> <CLIENT_ID>

The clients of the built-in authorization server (mcpport gateway --oauth-builtin), as kept in its
--state-dir. list prints them as JSON: each client, when the owner approved it, and how many refresh
tokens it holds. revoke forgets a client: its refresh tokens stop working at once, its access
tokens at their next use (a running gateway sees the change), and it must be approved again.

Options:
      --state-dir <DIR>   The gateway's --state-dir
  -h, --help              Print this help
";

fn oauth_args(p: &mut lexopt::Parser) -> Result<Command, String> {
    let (mut action, mut client, mut state_dir) = (None, None, None);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(OAUTH_HELP)),
            Long("state-dir") => state_dir = Some(string(p)?),
            Value(v) if action.is_none() => action = Some(v.string().map_err(|_| "not UTF-8".to_string())?),
            Value(v) if action.as_deref() == Some("revoke") && client.is_none() => {
                client = Some(v.string().map_err(|_| "not UTF-8".to_string())?);
            }
            arg => return Err(arg.unexpected().to_string()),
        }
    }
    let state_dir = state_dir.ok_or("--state-dir DIR is required (the gateway's)")?;
    match (action.as_deref(), client) {
        (Some("list"), None) => Ok(Command::OAuth { state_dir, revoke: None }),
        (Some("revoke"), Some(id)) => Ok(Command::OAuth { state_dir, revoke: Some(id) }),
        (Some("revoke"), None) => Err("revoke needs the CLIENT_ID (see mcpport oauth list)".into()),
        _ => Err("use: mcpport oauth list|revoke".into()),
    }
}

/// `--public-url`: an absolute http(s) URL without query or fragment (https, unless on a
/// loopback address); kept without a trailing slash.
fn public_url(v: &str) -> Result<String, String> {
    let url = Url::parse(v).map_err(|e| format!("--public-url: {e}"))?;
    if url.path.contains('?') {
        return Err(format!("--public-url {v:?}: no query string"));
    }
    if !url.secure && !url.is_loopback() {
        return Err(format!(
            "--public-url {v:?}: OAuth needs https:// (plain http only on a loopback address)"
        ));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// `--oauth-issuer`: the issuer identifier exactly as its tokens carry it in `iss`.
fn issuer_url(v: &str) -> Result<String, String> {
    let url = Url::parse(v).map_err(|e| format!("--oauth-issuer: {e}"))?;
    if !url.secure && !url.is_loopback() {
        return Err(format!(
            "--oauth-issuer {v:?}: issuers must be https:// (plain http only on a loopback address)"
        ));
    }
    if url.path.contains('?') {
        return Err(format!("--oauth-issuer {v:?}: an issuer has no query string"));
    }
    Ok(v.to_string())
}

/// What the OAuth options need of each other.
fn check_oauth(o: &gateway::config::OAuthConfig) -> Result<(), String> {
    if o.builtin {
        if !cfg!(feature = "oauth-server") {
            return Err(
                "--oauth-builtin: this build has no built-in authorization server (the oauth-server feature)"
                    .into(),
            );
        }
        let Some(url) = &o.public_url else {
            return Err("--oauth-builtin needs --public-url: the built-in server's issuer is the gateway's public URL".into());
        };
        if o.issuers.contains(url) {
            return Err("--oauth-builtin: --oauth-issuer names the built-in server itself".into());
        }
        if o.owner_password_file.is_none() || o.state_dir.is_none() {
            return Err(
                "--oauth-builtin needs --owner-password-file (the owner approves clients) and --state-dir \
                        (clients, keys and refresh tokens survive restarts there)"
                    .into(),
            );
        }
    } else if o.owner_password_file.is_some() || o.state_dir.is_some() {
        return Err("--owner-password-file and --state-dir are for --oauth-builtin".into());
    }
    let oauth = o.builtin || !o.issuers.is_empty();
    if !oauth && (!o.audiences.is_empty() || o.public_url.is_some()) {
        return Err("--public-url and --oauth-audience need --oauth-issuer or --oauth-builtin".into());
    }
    if oauth && o.public_url.is_none() {
        return Err(
            "OAuth needs --public-url: the URL clients reach the gateway at names the resource every \
                    token must be for (a Host header, which the client picks, cannot)"
                .into(),
        );
    }
    if o.scope.contains(char::is_whitespace) || o.scope.contains(['"', '\\']) {
        return Err(format!("--oauth-scope {:?}: one scope, no spaces or quotes", o.scope));
    }
    Ok(())
}

fn register_args(p: &mut lexopt::Parser, logging: &mut Logging<'_>) -> Result<Command, String> {
    let mut cfg = register::Config::new(
        register::Upstream::Shell(String::new()),
        "ws://localhost:8765/mcp/register".into(),
        "local".into(),
    );
    let (mut stdio, mut named, mut restart_given) = (String::new(), false, false);
    let mut health = health::Config {
        host: "0.0.0.0".into(),
        port: 0,
        endpoints: Vec::new(),
        cors: false,
        require_gateway: false,
        list: false,
    };
    let mut ping_timeout = None;
    let (mut client_cert, mut client_key) = (None, None);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(REGISTER_HELP)),
            Long("stdio") => stdio = string(p)?,
            Long("config") => cfg.config_file = Some(string(p)?.into()),
            Long("gateway-url") => cfg.gateway_url = string(p)?,
            Long("server-name") => (cfg.server_name, named) = (string(p)?, true),
            Long("server-id") => (cfg.server_id, named) = (string(p)?, true),
            Long("header") => cfg.headers.push(header(&string(p)?)?),
            Long("header-file") => {
                for line in secret_lines(&string(p)?)? {
                    cfg.headers.push(header(&line)?);
                }
            }
            Long("log-level") => *logging.0 = log_level(p)?,
            Long("log-format") => *logging.1 = log_format(p)?,
            Long("require-gateway") => cfg.require_gateway = true,
            Long("reconnect-max") => cfg.reconnect_max = seconds(p, "--reconnect-max")?,
            Long("ping-interval") => cfg.heartbeat.interval = seconds(p, "--ping-interval")?,
            Long("ping-timeout") => ping_timeout = Some(seconds(p, "--ping-timeout")?),
            Long("restart") => (cfg.restart, restart_given) = (restart(&string(p)?)?, true),
            Long("port") => health.port = port(p, "--port", "0 turns the health server off")?,
            Long("health-host") => health.host = string(p)?,
            Long("health-endpoint") => health.endpoints.push(path(p, "--health-endpoint")?),
            Long("enable-cors") => health.cors = true,
            Long("ssl-ca-cert") => cfg.tls.ca = Some(string(p)?),
            Long("no-ssl-verify") => cfg.tls.no_verify = true,
            Long("ssl-certfile") => client_cert = Some(string(p)?),
            Long("ssl-keyfile") => client_key = Some(string(p)?),
            arg if stdio.is_empty() => return Err(arg.unexpected().to_string()),
            arg => {
                // `--stdio npx -y pkg` unquoted: the shell split the command into our arguments.
                return Err(format!(
                    "{}; if it belongs to the server's command, quote the whole command: --stdio \"{stdio} ...\"",
                    arg.unexpected(),
                ));
            }
        }
    }
    match (&cfg.config_file, stdio.trim().is_empty()) {
        (Some(_), false) => return Err("--config and --stdio: one or the other".into()),
        (Some(_), true) if named => {
            return Err(
                "--server-name and --server-id name the --stdio server; a --config file names its own".into(),
            )
        }
        (Some(file), true) => {
            // Only a file that reads is started; its mistakes are told now, with line and column.
            register::servers_file::load(file)?;
            health.list = true;
            if !restart_given {
                cfg.restart = register::Restart::Always;
            }
        }
        (None, true) => return Err("--stdio CMD (or --config FILE) is required".into()),
        (None, false) => cfg.upstream = register::Upstream::Shell(stdio),
    }
    if !crate::protocol::valid_server_name(&cfg.server_name) {
        return Err(format!("--server-name {:?}: use 1 to 64 of A-Z a-z 0-9 _ -", cfg.server_name));
    }
    register::handshake::parse_target(&cfg.gateway_url)?;
    for (name, value) in &cfg.headers {
        register::handshake::check_header(name, value)?;
    }
    cfg.tls.identity = match (client_cert, client_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--ssl-certfile and --ssl-keyfile go together".into()),
    };
    cfg.heartbeat.timeout = ping_timeout.unwrap_or(cfg.heartbeat.interval * 2);
    if cfg.heartbeat.timeout <= cfg.heartbeat.interval {
        return Err("--ping-timeout must be longer than --ping-interval".into());
    }
    if health.port != 0 {
        if health.endpoints.is_empty() {
            health.endpoints.push("/health".into());
        }
        health.require_gateway = cfg.require_gateway;
        cfg.health = Some(health);
    }
    Ok(Command::Register(Box::new(cfg)))
}

fn restart(v: &str) -> Result<register::Restart, String> {
    match v {
        "never" => Ok(register::Restart::Never),
        "on-failure" => Ok(register::Restart::OnFailure),
        "always" => Ok(register::Restart::Always),
        _ => Err(format!("--restart {v:?}: use never, on-failure or always")),
    }
}

fn demo_args(p: &mut lexopt::Parser, logging: &mut Logging<'_>) -> Result<Command, String> {
    let (mut host, mut bind_port) = ("127.0.0.1".to_string(), 8765);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(DEMO_HELP)),
            Long("host") => host = string(p)?,
            Long("port") => bind_port = port(p, "--port", "0 takes a free port")?,
            Long("log-level") => *logging.0 = log_level(p)?,
            Long("log-format") => *logging.1 = log_format(p)?,
            arg => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(Command::Demo { host, port: bind_port })
}

fn sample_args(p: &mut lexopt::Parser) -> Result<Command, String> {
    let mut cfg = sample_server::Config::default();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(SAMPLE_HELP)),
            Long("protocol-version") => cfg.protocol_version = Some(string(p)?),
            Long("test-tools") if cfg!(feature = "test-tools") => cfg.test_tools = true,
            Long("test-tools") => return Err(
                "--test-tools: this build has no test tools (it was built without the test-tools feature)"
                    .into(),
            ),
            arg => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(Command::SampleServer(cfg))
}

fn string(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value().map_err(|e| e.to_string())?.string().map_err(|_| "a value is not valid UTF-8".to_string())
}

fn number<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let v = string(p)?;
    v.parse().map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

fn port(p: &mut lexopt::Parser, flag: &str, zero: &str) -> Result<u16, String> {
    let v = string(p)?;
    v.parse().map_err(|_| format!("{flag}: {v:?} is not a port number: use 1-65535 ({zero})"))
}

fn seconds(p: &mut lexopt::Parser, flag: &str) -> Result<Duration, String> {
    let v = string(p)?;
    match crate::codec::decimal_seconds(&v) {
        Some(d) if !d.is_zero() && d <= Duration::from_secs(86_400) => Ok(d),
        _ => Err(format!("{flag}: {v:?} is not a number of seconds more than 0 and at most 86400")),
    }
}

fn path(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let v = string(p)?;
    if v.starts_with('/') && !v.contains(['?', '#', ' ']) {
        Ok(v)
    } else {
        Err(format!("{flag}: {v:?} must be a path starting with / (no query)"))
    }
}

/// Reads tokens (or header lines) from a file: one per line, blank lines and `#` comments
/// skipped. Keeps secrets off the command line, where `ps` shows them to every user.
fn secret_lines(path: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

fn token_file(path: &str) -> Result<Vec<String>, String> {
    let tokens = secret_lines(path)?;
    if tokens.is_empty() {
        return Err(format!("{path} holds no token"));
    }
    Ok(tokens)
}

/// A `--allow-host` value: a name or address, optionally with a port (ignored), or `*`.
fn allowed_host(v: &str) -> Result<String, String> {
    let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]*".contains(&b));
    if ok && (v == "*" || !v.contains('*')) {
        Ok(v.to_string())
    } else {
        Err(format!("--allow-host {v:?}: give a host name or address as clients write it (e.g. mcp.example.com), or *"))
    }
}

fn header(v: &str) -> Result<(String, String), String> {
    match v.split_once(':') {
        Some((k, val)) if !k.trim().is_empty() => Ok((k.trim().to_string(), val.trim().to_string())),
        // The value is not echoed: it is usually a token.
        _ => Err("--header: expected 'Key: Value' (for example 'Authorization: Bearer TOKEN')".into()),
    }
}

/// Where the logging flags of a subcommand go: the level and whether lines are JSON.
struct Logging<'a>(&'a mut LevelFilter, &'a mut bool);

fn log_format(p: &mut lexopt::Parser) -> Result<bool, String> {
    match string(p)?.as_str() {
        "text" => Ok(false),
        "json" => Ok(true),
        other => Err(format!("--log-format {other:?}: use text or json")),
    }
}

fn log_level(p: &mut lexopt::Parser) -> Result<LevelFilter, String> {
    let v = string(p)?;
    logger::parse_level(&v)
        .ok_or_else(|| format!("--log-level {v:?}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"))
}

#[cfg(test)]
mod tests {

    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_from(args.iter().map(OsString::from).collect(), None)
    }

    fn error_of(args: &[&str]) -> String {
        match parse(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn gateway_defaults_match_the_original() {
        let Command::Gateway(cfg) = parse(&["gateway"]).unwrap().command else { panic!() };
        assert_eq!((cfg.host.as_str(), cfg.port), ("0.0.0.0", 8765));
        assert_eq!((cfg.sse_path.as_str(), cfg.messages_path.as_str()), ("/sse", "/messages/"));
        assert_eq!((cfg.timeout_rpc.as_secs(), cfg.timeout_run_tool.as_secs()), (10, 120));
    }

    #[test]
    fn gateway_flags_and_env_tokens() {
        let args = ["g", "--port", "0", "--auth-token", "a", "--messages-path", "/m", "--log-level", "DEBUG"];
        let parsed = parse_from(args.iter().map(OsString::from).collect(), Some(" b, ,c".into())).unwrap();
        let Command::Gateway(cfg) = parsed.command else { panic!() };
        assert_eq!(cfg.port, 0);
        assert_eq!(cfg.auth_tokens, ["a", "b", "c"]);
        assert_eq!(cfg.messages_path, "/m");
        assert_eq!(parsed.log_level, LevelFilter::Debug);
    }

    #[test]
    fn gateway_hardening_flags() {
        let Command::Gateway(cfg) = parse(&["gateway"]).unwrap().command else { panic!() };
        assert_eq!((cfg.max_connections_per_ip, cfg.max_body_budget), (None, 64 * 1024 * 1024));
        let args = [
            "g",
            "--allow-host",
            "mcp.example.com",
            "--allow-host",
            "[::1]:8",
            "--max-body-budget",
            "8388608",
        ];
        let Command::Gateway(cfg) = parse(&args).unwrap().command else { panic!() };
        assert_eq!(cfg.allow_hosts, ["mcp.example.com", "[::1]:8"]);
        assert_eq!(cfg.max_body_budget, 8 * 1024 * 1024);
    }

    /// OAuth's audience comes from --public-url, never from a Host the client picks; and edges
    /// keep tokens of their own.
    #[test]
    fn oauth_needs_a_public_url_and_edge_tokens() {
        let issuer = ["gateway", "--oauth-issuer", "https://id.example"];
        assert!(error_of(&issuer).contains("--public-url"), "{}", error_of(&issuer));
        let with_url = [&issuer[..], &["--public-url", "https://gw.example"]].concat();
        assert!(error_of(&with_url).contains("--register-token"), "{}", error_of(&with_url));
        let ok = [&with_url[..], &["--register-token", "e"]].concat();
        assert!(parse(&ok).is_ok());
        assert!(error_of(&["gateway", "--oauth-issuer", "http://id.example"]).contains("https"));
        assert!(error_of(&["gateway", "--public-url", "https://gw.example"]).contains("need --oauth-issuer"));
    }

    #[test]
    fn register_needs_stdio_and_a_valid_name() {
        assert!(error_of(&["register"]).contains("--stdio"));
        assert!(error_of(&["register", "--stdio", "x", "--server-name", "a b"]).contains("server-name"));
        let Command::Register(cfg) =
            parse(&["r", "--stdio", "cat", "--header", "Authorization: Bearer t"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(cfg.headers, [("Authorization".to_string(), "Bearer t".to_string())]);
        assert_eq!(cfg.server_id.len(), 36);
    }

    #[test]
    fn ipv6_listens_on_ipv6_too() {
        let host = |args: &[&str]| match parse(args).unwrap().command {
            Command::Gateway(cfg) => cfg.host,
            _ => panic!(),
        };
        assert_eq!(host(&["gateway", "--ipv6"]), "::");
        assert_eq!(host(&["gateway", "--ipv6", "--host", "::1"]), "::1");
        assert_eq!(host(&["gateway", "--host", "127.0.0.1", "--ipv6"]), "127.0.0.1");
        assert_eq!(host(&["gateway"]), "0.0.0.0");
    }

    #[test]
    fn mistakes_are_errors() {
        for bad in [
            &["gateway", "--port", "x"][..],
            &["gateway", "--bogus"],
            &["gateway", "--timeout-rpc", "-1"],
            &["gateway", "--sse-path", "sse"],
            &["gateway", "--max-connections-per-ip", "0"],
            &["gateway", "--max-body-budget", "1000"],
            &["gateway", "--allow-host", "http://x/"],
            &["gateway", "--allow-host", "*.example.com"],
            &["register", "--stdio", "x", "--header", "novalue"],
            &["nope"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
