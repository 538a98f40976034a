//! One connection's life: read requests (keep-alive), and route each by method and path. A
//! request is refused from its head alone (400, 401, 403, 404, 405, 421, 501, 503) before a
//! byte of its body is read, and a CORS preflight is answered from its head too; a body is read
//! only within the global body budget. Every answer to an allowed cross-origin request carries
//! the CORS headers (`cors.rs`). Most routes answer and loop; two take the connection over for
//! good: the legacy SSE stream and the edge registration WebSocket.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use tungstenite::protocol::{WebSocket, WebSocketConfig};

use crate::gateway::access::{Failure, Principal, PRM_PREFIX};
use crate::gateway::admission::Ticket;
#[cfg(feature = "oauth-server")]
use crate::gateway::authz;
use crate::gateway::clients::session::Scope;
use crate::gateway::config::Config;
use crate::gateway::config::REGISTER_PATH;
use crate::gateway::credential::Credential;
use crate::gateway::edges::driver as upstream;
use crate::gateway::error::Challenge;
use crate::gateway::error::{Error, Refusal};
use crate::gateway::front::auth::{self, Denied, Role};
use crate::gateway::front::cors::{self, Headers};
use crate::gateway::front::exchange::{Asker, Exchange, Opening, Outcome};
use crate::gateway::front::legacy;
use crate::gateway::front::stream::{self, Unrelated};
use crate::gateway::front::streamable;
use crate::gateway::ops::exposition;
use crate::gateway::ops::status;
use crate::gateway::shared::Gateway;
use crate::http::{upgrade, Body, Conn, Framing, ReadError, Request, Response, Transport};

/// Where a request goes.
enum Route {
    Health,
    /// The registered servers, for operators.
    Servers,
    /// Prometheus metrics.
    Metrics,
    /// The status page for browsers (`/`), and what it shows as JSON.
    Page,
    Status,
    Register,
    /// Streamable HTTP.
    Mcp(Scope),
    /// Legacy SSE: the stream, and where its client POSTs.
    SseStream(Scope, String),
    SseMessage(Scope),
    NotFound(String),
    /// Protected resource metadata (RFC 9728) of the resource at this path (`""`: the gateway).
    ResourceMetadata(String),
    /// The built-in authorization server's paths (`--oauth-builtin`).
    #[cfg_attr(not(feature = "oauth-server"), allow(dead_code))]
    Authz,
    /// OAuth discovery, registration and authorization paths on a gateway that is no
    /// authorization server.
    OAuth,
}

/// Methods this server knows (RFC 9110 §9); any other gets 501.
const KNOWN_METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl Route {
    /// The methods the route takes (405 with `Allow` for the others).
    fn methods(&self) -> &'static [&'static str] {
        match self {
            Route::Health
            | Route::Servers
            | Route::Metrics
            | Route::Page
            | Route::Status
            | Route::ResourceMetadata(_) => &["GET", "HEAD"],
            Route::Register | Route::SseStream(..) => &["GET"],
            Route::Mcp(_) => &["GET", "POST", "DELETE"],
            Route::SseMessage(_) => &["POST"],
            Route::NotFound(_) | Route::OAuth => &[],
            Route::Authz => &["GET", "HEAD", "POST"],
        }
    }

    /// What `Allow` lists: the methods, and `OPTIONS` (CORS preflights) on every route a browser
    /// page may use, which is all but edge registration.
    fn allow(&self) -> String {
        let mut allow = self.methods().join(", ");
        if !matches!(self, Route::Register) {
            allow.push_str(", OPTIONS");
        }
        allow
    }

    /// Routes that need no token: liveness, the page (it holds no data; it asks for a token), and
    /// the metadata that tells a client how to get a token.
    fn open(&self) -> bool {
        matches!(self, Route::Health | Route::Page | Route::ResourceMetadata(_) | Route::Authz)
    }

    /// The path of the protected resource a request on this route is for: each MCP endpoint is
    /// its own (a legacy message POST belongs to its stream's), everything else the gateway's.
    fn resource_path(&self, cfg: &Config) -> String {
        match self {
            Route::Mcp(Scope::All) => cfg.mcp_path.trim_end_matches('/').to_string(),
            Route::SseStream(Scope::All, _) | Route::SseMessage(Scope::All) => {
                cfg.sse_path.trim_end_matches('/').to_string()
            }
            Route::Mcp(Scope::Server(name)) => format!("/servers/{name}/mcp"),
            Route::SseStream(Scope::Server(name), _) | Route::SseMessage(Scope::Server(name)) => {
                format!("/servers/{name}/sse")
            }
            _ => String::new(),
        }
    }
}

/// What a connection becomes when it stops being a series of requests.
pub(crate) enum Become {
    /// It closed (or errs, or was answered for the last time).
    Closed,
    /// An edge's registration WebSocket, once its upgrade request was accepted from the head.
    Link { conn: Conn<Box<dyn Transport>>, req: Box<Request>, owner: Credential },
    /// A Streamable HTTP session's stream of messages unrelated to any request (its `GET`).
    Unrelated { conn: Conn<Box<dyn Transport>>, stream: Box<Unrelated> },
    /// A legacy SSE stream for a new session.
    Stream { conn: Conn<Box<dyn Transport>>, opened: Box<legacy::Opened> },
}

/// Serves one accepted connection: requests until it closes, then the long-lived role it took
/// (a link, a legacy or Streamable HTTP session stream), if any. The role runs after `serve_requests` has returned: a thread's
/// stack pages, once touched, stay resident, and thousands of long-lived roles each waiting
/// under a request loop's frame would each keep that frame's pages.
pub(crate) fn serve_connection(
    gw: &Arc<Gateway>,
    stream: Box<dyn Transport>,
    peer: SocketAddr,
    ticket: &Ticket,
) {
    match serve_requests(gw, stream, peer, ticket) {
        Become::Closed => {}
        Become::Link { conn, req, owner } => {
            if let Some(ws) = register(gw, conn, &req, peer) {
                upstream::serve(gw, ws, peer, owner);
            }
        }
        Become::Unrelated { conn, stream } => stream::write_unrelated(gw, conn, *stream),
        Become::Stream { conn, opened } => legacy::open_stream(gw, conn, *opened),
    }
}

/// Serves requests on one connection until it closes, errs, or takes a long-lived role.
/// Each request goes head first: everything that can refuse it is decided from the head, and
/// only then is its body read, within the global body budget.
#[inline(never)]
fn serve_requests(
    gw: &Arc<Gateway>,
    stream: Box<dyn Transport>,
    peer: SocketAddr,
    ticket: &Ticket,
) -> Become {
    let local = stream.socket().local_addr().ok();
    let mut conn = Conn::new(stream);
    loop {
        let (req, framing) = match next_head(gw, &mut conn, ticket) {
            Ok(Some(head)) => head,
            Ok(None) => return Become::Closed,
            Err(e) => {
                fail(conn, e, peer);
                return Become::Closed;
            }
        };
        conn = match serve_request(gw, conn, req, framing, peer, local) {
            Served::Again(conn) => conn,
            Served::Ends(role) => return role,
        };
    }
}

/// What serving one request left: the connection, for the next request, or how it ends.
enum Served {
    Again(Conn<Box<dyn Transport>>),
    Ends(Become),
}

/// Serves one request whose head has arrived: the connection back for the next one, or the
/// role it ends in. Out of line, so that its frame (the routes, the responses) is not under a
/// connection's idle wait for the next request: a thread keeps the stack pages it waits under.
#[inline(never)]
fn serve_request(
    gw: &Arc<Gateway>,
    mut conn: Conn<Box<dyn Transport>>,
    req: Request,
    framing: Framing,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Served {
    log::debug!("{peer}: {} {}", req.method, req.path);
    let route = route(gw, &req);
    let origin = cors::allowed_origin(&gw.cfg, &req, local).filter(|_| !matches!(route, Route::Register));
    let cors = cors::response_headers(origin.as_deref());
    let pass = match check_head(gw, &req, &route, framing, local, peer, origin.as_deref()) {
        Ok(Head::Serve(pass)) => pass,
        other => return answer_head(conn, &req, framing, other, &cors),
    };
    let owner = pass.credential.with_identity(conn.stream.peer_identity());
    let principal = pass.principal;
    // The body, if any, goes to the route that takes it, which lets it go once parsed.
    let body = if framing.has_body() {
        match take_body(gw, &mut conn, &req, framing) {
            Ok(body) => Some(body),
            Err(e) => {
                fail(conn, e, peer);
                return Served::Ends(Become::Closed);
            }
        }
    } else {
        None
    };
    let resp = match route {
        Route::Register => return Served::Ends(Become::Link { conn, req: Box::new(req), owner }),
        Route::Mcp(scope) => {
            match streamable::serve(
                gw,
                &mut conn,
                &req,
                body,
                Asker { scope, owner, principal, peer, cors: &cors },
            ) {
                Outcome::Respond(resp) => resp,
                Outcome::Streamed if req.keep_alive() => return Served::Again(conn),
                Outcome::Streamed | Outcome::Close => return Served::Ends(Become::Closed),
                Outcome::Unrelated(stream) => return Served::Ends(Become::Unrelated { conn, stream }),
            }
        }
        Route::SseStream(scope, messages_path) => {
            let asker = Asker { scope, owner, principal, peer, cors: &cors };
            match Exchange::open(gw, &asker, Opening::LegacySse) {
                Ok(exchange) => {
                    let opened = Box::new(legacy::Opened { exchange, messages_path, cors });
                    return Served::Ends(Become::Stream { conn, opened });
                }
                Err(e) => e.to_http(),
            }
        }
        Route::SseMessage(scope) => {
            legacy::post_message(gw, &req, body, &Asker { scope, owner, principal, peer, cors: &cors })
        }
        Route::Authz => authorization(gw, &req, body, peer),
        other => plain_response(gw, &req, other, &principal),
    };
    let head_only = req.method == "HEAD";
    let resp = resp.with_headers(&cors);
    if resp.write_for(&mut conn.stream, req.keep_alive(), head_only).is_err() || !req.keep_alive() {
        return Served::Ends(Become::Closed);
    }
    Served::Again(conn)
}

/// The answer to a request that opens nothing: health, metrics, the server list, the status
/// page and report, and the 404s. Out of line: their responses are built in this frame, not in
/// the one every message to a session passes through.
#[inline(never)]
fn plain_response(gw: &Gateway, req: &Request, route: Route, principal: &Principal) -> Response {
    // What operators read shows every server: not to a client a policy keeps from some.
    let operator = matches!(route, Route::Metrics | Route::Servers | Route::Status);
    if operator && !gw.access.grant(principal).is_everything() {
        log::info!(
            "{} {}: refused to {}, whom a policy restricts",
            req.method,
            req.path,
            principal.describe()
        );
        return Response::error(403, "a client a policy restricts does not see the gateway's operator views");
    }
    match route {
        Route::Health => exposition::health(gw),
        Route::Metrics => exposition::metrics(gw),
        Route::Servers => exposition::servers(gw),
        Route::Page => status::page(&gw.cfg, req),
        Route::Status => status::report(gw),
        Route::NotFound(why) => Response::error(404, &why),
        Route::OAuth => Response::error(404, NO_OAUTH),
        Route::ResourceMetadata(path) => {
            Response::json(200, &gw.access.resource_metadata(&path)).header("Cache-Control", "max-age=300")
        }
        Route::Register | Route::Mcp(_) | Route::SseStream(..) | Route::SseMessage(_) | Route::Authz => {
            unreachable!("serve_request answers the routes that open something")
        }
    }
}

/// A request to the built-in authorization server. Out of line, like the other routes that open
/// nothing.
#[inline(never)]
fn authorization(gw: &Gateway, req: &Request, body: Option<Body>, peer: SocketAddr) -> Response {
    #[cfg(feature = "oauth-server")]
    if let Some(authz) = &gw.authz {
        if !authz::Server::methods(&req.path).contains(&req.method.as_str()) {
            let allow = authz::Server::methods(&req.path).join(", ");
            return Response::error(405, &format!("{} takes {allow}", req.path)).header("Allow", allow);
        }
        let ctx = authz::Context { servers: gw.registry.servers().iter().map(|s| s.name.clone()).collect() };
        return authz.serve(&ctx, req, body, peer);
    }
    let _ = (gw, body, peer);
    Response::error(404, &format!("no such endpoint: {}", req.path))
}

/// Waits for the next request and reads its head. While waiting the connection is idle and
/// may be closed to make room for others (then `None`).
fn next_head(
    gw: &Gateway,
    conn: &mut Conn<Box<dyn Transport>>,
    ticket: &Ticket,
) -> Result<Option<(Request, Framing)>, ReadError> {
    let idle = ticket.idle(conn.stream.socket());
    let head = conn.await_request(&gw.cfg.limits).and_then(|()| conn.read_head(&gw.cfg.limits));
    if !idle.end() {
        return Ok(None);
    }
    match head {
        Ok(head) => Ok(Some(head)),
        Err(ReadError::Closed) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the head of a request says to do with it.
enum Head {
    /// Serve it, for this credential.
    Serve(auth::Pass),
    /// Answer this CORS preflight.
    Preflight(Response),
}

/// Answers a request its head decided (a refusal, or a CORS preflight), and says what the
/// connection does next. Out of line: its responses are not built in the frame every request is
/// served under.
#[cold]
#[inline(never)]
fn answer_head(
    mut conn: Conn<Box<dyn Transport>>,
    req: &Request,
    framing: Framing,
    head: Result<Head, Error>,
    cors: &Headers,
) -> Served {
    let resp = match head {
        Ok(Head::Preflight(resp)) => resp,
        Ok(Head::Serve(_)) => return Served::Again(conn),
        Err(e) => e.to_plain_http(),
    };
    match refuse(&mut conn, req, framing, &resp.with_headers(cors)) {
        Next::Request => Served::Again(conn),
        Next::Close => Served::Ends(Become::Closed),
        Next::Linger => {
            conn.linger_close();
            Served::Ends(Become::Closed)
        }
    }
}

/// Everything that refuses a request, decided from its head: no body byte has been read yet;
/// and the answer to a CORS preflight (`OPTIONS`), which needs no token (browsers send none on
/// it) and tells nothing but what any page may send. On success, the credential the request
/// presented. `origin` is the request's `Origin`, if it has one that is allowed.
#[inline(never)]
fn check_head(
    gw: &Gateway,
    req: &Request,
    route: &Route,
    framing: Framing,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    origin: Option<&str>,
) -> Result<Head, Error> {
    let refused = |r| Err(Error::Refused(r));
    let hosts = req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("host")).count();
    if hosts > 1 || (req.http11 && hosts == 0) {
        return refused(Refusal::HostCount);
    }
    if !KNOWN_METHODS.contains(&req.method.as_str()) {
        return refused(Refusal::UnknownMethod(req.method.clone()));
    }
    if let Route::NotFound(why) = route {
        return refused(Refusal::NoRoute(why.clone()));
    }
    if let Route::OAuth = route {
        if gw.access.oauth() {
            let issuers: Vec<&str> = gw.access.issuers.ids().collect();
            let why = format!(
                "this gateway is not an authorization server: its tokens come from {} (see {PRM_PREFIX})",
                issuers.join(", ")
            );
            return refused(Refusal::NoRoute(why));
        }
        log::warn!(
            "{peer}: {} {}: a client looks for OAuth, which this gateway does not do (was its bearer token \
             missing or wrong?)",
            req.method,
            req.path
        );
        return refused(Refusal::NoRoute(NO_OAUTH.into()));
    }
    let health = matches!(route, Route::Health);
    if !health && gw.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return refused(Refusal::ShuttingDown);
    }
    // Edges are not browsers; a browser's WebSocket always carries an Origin, checked below.
    if !health && !matches!(route, Route::Register) && !auth::host_allowed(&gw.cfg, req) {
        let host = req.header("host").unwrap_or_default();
        log::warn!("{peer}: {} {}: Host {host:?} is not one of this gateway's names", req.method, req.path);
        return refused(Refusal::WrongHost(auth::host_refusal(&gw.cfg, host)));
    }
    if !health && !auth::origin_allowed(&gw.cfg, req, local) {
        let origin = req.header("origin").unwrap_or_default();
        log::warn!("{peer}: {} {}: Origin {origin:?} is not allowed", req.method, req.path);
        return refused(Refusal::Origin);
    }
    if req.method == "OPTIONS" && !matches!(route, Route::Register) && !framing.has_body() {
        return Ok(Head::Preflight(cors::preflight(req, origin, &route.allow())));
    }
    let role = if matches!(route, Route::Register) { Role::Edge } else { Role::Client };
    let pass = if route.open() {
        auth::Pass { credential: Credential::Open, principal: gw.access.anonymous.clone() }
    } else {
        let path = route.resource_path(&gw.cfg);
        match auth::check(&gw.cfg, &gw.access, req, role, &path) {
            Ok(pass) => {
                if matches!(pass.credential, Credential::Subject(_)) {
                    gw.metrics.count(&gw.metrics.tokens_accepted);
                }
                pass
            }
            Err(Denied::Token { sent }) => return refused(unauthorized(req, role, peer, sent)),
            Err(Denied::OAuth(failure)) => return refused(challenge(gw, req, peer, &path, failure)),
        }
    };
    if !route.methods().contains(&req.method.as_str()) {
        let allow = route.allow();
        let hint = if matches!(route, Route::Page) { status::not_mcp(&gw.cfg) } else { String::new() };
        let why = format!("{} takes {allow}{hint}", req.path);
        return refused(Refusal::Method { why, allow });
    }
    if framing.has_body() && req.method != "POST" {
        return refused(Refusal::BodyNotTaken(format!("{} {} takes no request body", req.method, req.path)));
    }
    Ok(Head::Serve(pass))
}

/// What a client looking for OAuth (after a 401, as `mcp-remote` does) is told.
const NO_OAUTH: &str = "this gateway does not do OAuth: it takes a static bearer token, sent as \
    'Authorization: Bearer <token>' (with mcp-remote: --header \"Authorization: Bearer <token>\"; the \
    gateway's tokens are set with --auth-token). The token sent was missing or wrong";

/// The OAuth discovery and registration paths a client tries when it gets 401.
fn is_oauth_path(path: &str) -> bool {
    path.starts_with("/.well-known/oauth-protected-resource")
        || path.starts_with("/.well-known/oauth-authorization-server")
        || path.starts_with("/.well-known/openid-configuration")
        || ["/register", "/authorize", "/token"].contains(&path.trim_end_matches('/'))
}

/// The 401 or 403 of a request whose OAuth token is missing, invalid or short of the scope,
/// with the challenge that tells the client where to get one; logged.
#[cold]
fn challenge(gw: &Gateway, req: &Request, peer: SocketAddr, path: &str, failure: Option<Failure>) -> Refusal {
    let www_authenticate = gw.access.challenge(path, failure.as_ref());
    let (status, error, description) = match &failure {
        None => (401, "invalid_request", "this resource needs an OAuth access token".to_string()),
        Some(Failure::Invalid(why)) => (401, "invalid_token", why.clone()),
        Some(Failure::Scope) => {
            (403, "insufficient_scope", format!("the token does not grant the scope {}", gw.access.scope))
        }
    };
    match &failure {
        Some(Failure::Invalid(_)) => gw.metrics.count(&gw.metrics.tokens_invalid),
        Some(Failure::Scope) => gw.metrics.count(&gw.metrics.tokens_short_of_scope),
        None => {}
    }
    if failure.is_some() {
        log::warn!("{peer}: {} {}: OAuth token refused: {description}", req.method, req.path);
    } else {
        log::info!("{peer}: {} {}: no token; told where to get one", req.method, req.path);
    }
    Refusal::Challenge(Box::new(Challenge { status, error, description, www_authenticate }))
}

/// The 401 for a request without a valid token (whether one was sent at all), logged.
fn unauthorized(req: &Request, role: Role, peer: SocketAddr, sent: bool) -> Refusal {
    let whose = if role == Role::Edge { "an edge" } else { "a client" };
    let what = if sent { "wrong bearer token" } else { "no bearer token" };
    log::warn!("{peer}: {} {}: {what} for {whose}", req.method, req.path);
    Refusal::Unauthorized { edge: role == Role::Edge, sent }
}

/// What a connection does after a refusal.
enum Next {
    Request,
    Close,
    /// Close, draining briefly what the client still sends (its body), so the answer is not
    /// destroyed by a reset.
    Linger,
}

/// Answers a refused request. Its body is never read: a connection whose request has one is
/// closed after the answer.
#[inline(never)]
fn refuse(conn: &mut Conn<Box<dyn Transport>>, req: &Request, framing: Framing, resp: &Response) -> Next {
    let keep = req.keep_alive() && !framing.has_body();
    let written = resp.write_for(&mut conn.stream, keep, req.method == "HEAD").is_ok();
    match (written, keep, framing.has_body()) {
        (true, true, _) => Next::Request,
        (true, false, true) => Next::Linger,
        _ => Next::Close,
    }
}

/// Reserves the body's bytes in the global budget (503 when it is spent), tells a client that
/// waits for it to go on (`Expect: 100-continue`), and reads the body into `req`.
#[inline(never)]
fn take_body(
    gw: &Gateway,
    conn: &mut Conn<Box<dyn Transport>>,
    req: &Request,
    framing: Framing,
) -> Result<Body, ReadError> {
    let declared = match framing {
        Framing::Length(n) => n,
        Framing::Chunked => 0,
    };
    let held = crate::http::reserve(&gw.body_budget, declared)?;
    if req.http11 && req.header_has_token("expect", "100-continue") {
        conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(ReadError::Io)?;
        conn.stream.flush().map_err(ReadError::Io)?;
    }
    conn.read_body(framing, &gw.cfg.limits, held)
}

/// Ends a connection whose request could not be read: a status the client can act on, then a
/// close that does not destroy it.
#[inline(never)]
fn fail(mut conn: Conn<Box<dyn Transport>>, e: ReadError, peer: SocketAddr) {
    match e {
        ReadError::Closed => {}
        // A TLS ClientHello (a handshake record, 0x16 0x03) on this plain port: no HTTP answer
        // would mean anything to that client.
        ReadError::Status(..)
            if conn.buf.first() == Some(&0x16) && conn.buf.get(1).is_none_or(|&b| b == 3) =>
        {
            log::warn!(
                "{peer}: a client tried TLS on this plain-HTTP port (it should use http:// or ws://, or \
                 start the gateway with --ssl-enabled); closing without an answer"
            );
        }
        ReadError::Status(code, why) => {
            log::warn!("{peer}: bad request ({code}): {why}");
            let mut resp = Response::error(code, &why);
            if code == 503 {
                resp = resp.header("Retry-After", "1");
            }
            let _ = resp.write_to(&mut conn.stream, false);
            conn.linger_close();
        }
        ReadError::Io(e) => log::debug!("{peer}: connection failed: {e}"),
    }
}

fn route(gw: &Gateway, req: &Request) -> Route {
    let path = req.path.as_str();
    if path == "/health" {
        return Route::Health;
    }
    if path == "/" {
        return Route::Page;
    }
    if path == status::PATH {
        return Route::Status;
    }
    if path == REGISTER_PATH {
        return Route::Register;
    }
    if path == "/servers" || path == "/servers/" {
        return Route::Servers;
    }
    if path == "/metrics" {
        return Route::Metrics;
    }
    if same_path(path, &gw.cfg.mcp_path) {
        return Route::Mcp(Scope::All);
    }
    if same_path(path, &gw.cfg.sse_path) {
        return Route::SseStream(Scope::All, gw.cfg.messages_path.clone());
    }
    if same_path(path, &gw.cfg.messages_path) {
        return Route::SseMessage(Scope::All);
    }
    if let Some(rest) = path.strip_prefix("/servers/") {
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let scope = Scope::Server(name.to_string());
        match tail.trim_end_matches('/') {
            "mcp" => return Route::Mcp(scope),
            "sse" => return Route::SseStream(scope, format!("/servers/{name}/messages/")),
            "messages" => return Route::SseMessage(scope),
            _ => {}
        }
    }
    #[cfg(feature = "oauth-server")]
    if gw.authz.is_some() && authz::Server::owns(path) {
        return Route::Authz;
    }
    if let Some(resource) = path.strip_prefix(PRM_PREFIX).filter(|_| gw.access.oauth()) {
        return resource_metadata_route(&gw.cfg, resource);
    }
    if is_oauth_path(path) {
        return Route::OAuth;
    }
    Route::NotFound(format!("no such endpoint: {path}"))
}

/// The metadata of the resource at `path`, when it names one: the gateway (`""`), an aggregated
/// endpoint, or a server's (any name a server may register under: the metadata keeps nothing).
fn resource_metadata_route(cfg: &Config, path: &str) -> Route {
    let path = path.trim_end_matches('/');
    let aggregated = [cfg.mcp_path.trim_end_matches('/'), cfg.sse_path.trim_end_matches('/')];
    if crate::gateway::access::is_resource_path(path, &aggregated) {
        Route::ResourceMetadata(path.to_string())
    } else {
        Route::NotFound(format!("no protected resource at {path}"))
    }
}

/// Paths compare equal with or without a trailing slash (`/messages` and `/messages/`).
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Upgrades a registration request to WebSocket: the link's socket, boxed, or `None` when the
/// request was refused (and told why). Returns before the link runs, so that its frame is not
/// under the link's whole life (a thread keeps the stack pages it touched).
#[inline(never)]
fn register(
    gw: &Arc<Gateway>,
    mut conn: Conn<Box<dyn Transport>>,
    req: &Request,
    peer: SocketAddr,
) -> Option<Box<WebSocket<Box<dyn Transport>>>> {
    let key = match upgrade::check(req) {
        Ok(key) => key,
        Err(resp) => {
            log::warn!("{peer}: bad registration request: {}", String::from_utf8_lossy(&resp.body));
            let _ = resp.write_to(&mut conn.stream, false);
            return None;
        }
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(crate::ws::READ_BUFFER)
        .write_buffer_size(crate::ws::WRITE_BUFFER)
        .max_message_size(Some(gw.cfg.max_ws_message))
        .max_frame_size(Some(gw.cfg.max_ws_message));
    upgrade::accept(conn, req, &key, config)
        .map_err(|e| log::warn!("{peer}: WebSocket upgrade failed: {e}"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_do_not_matter() {
        assert!(same_path("/messages", "/messages/"));
        assert!(same_path("/messages/", "/messages/"));
        assert!(!same_path("/messagesx", "/messages/"));
    }
}
