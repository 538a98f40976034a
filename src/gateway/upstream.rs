//! A registered edge, from the gateway's side of its WebSocket (DESIGN.md §4): the link's owner
//! thread, a thin I/O driver around the `Link` state machine.
//!
//! The connection thread becomes the socket's owner: it reads the `register` frame, claims the
//! name, answers `{"status":"received"}`, starts the link's handshake, and runs the owner loop
//! (`ws::drive`). Frames from the edge and commands from other threads (calls, cancellations,
//! client answers, session ends) go into the link in the order they arrive; the link's actions
//! come out as frames for the edge, answers for callers, notifications for sessions, and new
//! lists to publish. When the link ends, every call still in flight is answered at once and the
//! server's tools vanish.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};

use super::auth::Credential;
use super::link::{Action, Input, Limits, Link};
use super::metrics::Metrics;
use super::registry::Refusal;
use super::reply::Caller;
use super::server::{Command, Upstream};
use super::session::Scope;
use super::Gateway;
use crate::http::Transport;
use crate::jsonrpc;
use crate::ws::{self, End, Flow, Handler, Out};

/// Commands that may wait for one link's owner, and their bytes.
const QUEUE: usize = 4096;
const QUEUE_BYTES: usize = 32 * 1024 * 1024;
/// How long an edge has to send its `register` frame after the upgrade.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the edge's first frame said.
struct Registration {
    name: String,
    id: String,
}

/// Serves one edge connection, registered with `credential`, until it ends: the registration,
/// then the link. Each is a function of its own, never inlined, so the link's long life does not
/// sit under the registration's frame (a thread's touched stack pages stay resident).
pub(crate) fn serve(
    gw: &Arc<Gateway>,
    mut ws: Box<WebSocket<Box<dyn Transport>>>,
    remote: SocketAddr,
    credential: Credential,
) {
    if let Some((up, inbox)) = admit_link(gw, &mut ws, remote, credential) {
        run_link(gw, &mut ws, &up, &inbox);
    }
}

/// The registration: reads the edge's first frame, claims its name, and says "received".
/// `None` when it was refused (the edge has been told why) or the link failed.
#[inline(never)]
fn admit_link(
    gw: &Arc<Gateway>,
    ws: &mut WebSocket<Box<dyn Transport>>,
    remote: SocketAddr,
    credential: Credential,
) -> Option<(Arc<Upstream>, ws::Inbox<Command>)> {
    let reg = match read_registration(ws, gw.cfg.max_ws_message) {
        Ok(reg) => reg,
        Err(why) => {
            refuse(ws, remote, &why);
            return None;
        }
    };
    let (commands, inbox) = match ws::bounded_within(QUEUE, QUEUE_BYTES, Some(gw.queue_budget.clone())) {
        Ok(pair) => pair,
        Err(e) => {
            refuse(ws, remote, &format!("gateway out of resources: {e}"));
            return None;
        }
    };
    let serial = gw.registry.next_serial();
    let up = Arc::new(Upstream::new(reg.name, reg.id, credential, serial, remote, commands));
    match gw.registry.claim_name(&up) {
        Err(Refusal::Taken) => {
            let why = format!(
                "server name {:?} is already held by another live server; pick another --server-name",
                up.name
            );
            refuse(ws, remote, &why);
            return None;
        }
        Err(Refusal::NotYours) => {
            let why = format!(
                "server name {:?} is held by a live server that registered with another credential; \
                 only the edge token (or certificate) that registered it may replace it",
                up.name
            );
            refuse(ws, remote, &why);
            return None;
        }
        Ok(Some(old)) => {
            // Its lists left the catalog with the claim, until this link's handshake brings them back.
            gw.metrics.count(&gw.metrics.reconnects);
            log::info!("server {} ({}): reconnected from {remote}; dropping its old link", up.name, up.id);
            old.close(1000, "replaced by a new connection of the same server id");
        }
        Ok(None) => {}
    }
    let received =
        status_frame("received", &up.id, &format!("Registration request received, server ID: {}", up.id));
    if ws.send(WsMessage::text(received.to_string())).is_err() {
        gw.registry.release_name(&up);
        log::info!("server {} ({}): link failed during registration", up.name, up.id);
        return None;
    }
    log::info!("server {} ({}): registering from {remote}", up.name, up.id);
    gw.metrics.count(&gw.metrics.registrations);
    Some((up, inbox))
}

/// The link: the owner thread drives the link's state machine until the link ends.
#[inline(never)]
fn run_link(
    gw: &Arc<Gateway>,
    ws: &mut WebSocket<Box<dyn Transport>>,
    up: &Arc<Upstream>,
    inbox: &ws::Inbox<Command>,
) {
    // Whatever ends this thread, a panic included, the name is released and the tools go.
    let _claim = Claim { gw, up };
    let mut driver = Driver::new(gw, up);
    let end = ws::drive(ws, Some(inbox), Some(gw.cfg.heartbeat), &mut driver);
    driver.release(&describe(&end));
}

/// Holds a server's name for its link's thread; dropping it releases the name (if this link
/// still holds it) and publishes the change.
struct Claim<'a> {
    gw: &'a Gateway,
    up: &'a Arc<Upstream>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.gw.registry.release_name(self.up);
    }
}

/// The owner's side of one link: the state machine and what its actions need.
struct Driver<'a> {
    gw: &'a Arc<Gateway>,
    up: &'a Arc<Upstream>,
    /// Boxed: the owner thread waits under this frame for the link's whole life.
    link: Box<Link<Caller>>,
    started: Instant,
    own: Scope,
}

impl<'a> Driver<'a> {
    /// Out of line: the link is built in this frame, which is gone once the link runs.
    #[inline(never)]
    fn new(gw: &'a Arc<Gateway>, up: &'a Arc<Upstream>) -> Driver<'a> {
        let limits = Limits {
            max_calls: gw.cfg.max_calls_per_server,
            rpc_timeout: gw.cfg.timeout_rpc,
            client_timeout: gw.cfg.timeout_run_tool,
            max_list_items: gw.cfg.max_list_items,
            max_list_bytes: gw.cfg.max_list_bytes,
            state_key: gw.state_key,
            ..Limits::default()
        };
        // A random first id: ids never repeat across gateway restarts, so an edge that carries
        // an old answer over (a register without per-link ids) cannot complete a new request.
        let mut seed = [0u8; 4];
        crate::sys::random_bytes(&mut seed);
        let first_id = u64::from(u32::from_le_bytes(seed)) + 1;
        let mut link = Box::new(Link::new(&up.name, up.serial, first_id, limits));
        let now = Instant::now();
        link.start(now);
        // Sessions of the aggregated view that asked for logs want this server's too.
        for s in gw.registry.sessions_snapshot().iter().filter(|s| s.scope == Scope::All) {
            if let Some(level) = s.read(|st| st.log_level.clone()) {
                s.involve(up.clone());
                link.handle_input(now, Input::SetLevel { session: s.id.clone(), level });
            }
        }
        Driver { gw, up, link, started: now, own: Scope::Server(up.name.clone()) }
    }

    /// Carries out what the link decided.
    fn carry_out(&mut self, out: &mut VecDeque<Out>) -> Flow {
        let metrics = &self.gw.metrics;
        while let Some(action) = self.link.poll_action() {
            match action {
                Action::ToEdge(msg) => {
                    let text = msg.to_string();
                    Metrics::add(&metrics.edge_bytes_out, text.len());
                    out.push_back(Out::Text(text));
                }
                Action::Answer { caller, message, report } => {
                    // Counted before it is delivered: a client that reads its answer and then
                    // the metrics finds the call counted.
                    metrics.request(&report.method, &self.up.name, report.ok);
                    if report.method == "tools/call" {
                        metrics.tool_call(&self.up.name, report.took);
                    }
                    caller.finish(message);
                }
                Action::Related { caller, message } => caller.related(message),
                Action::Ready { initialize, lists } => self.ready(initialize, lists, out),
                other => {
                    if let flow @ Flow::Close(..) = self.carry_out_rare(other, out) {
                        return flow;
                    }
                }
            }
        }
        Flow::Continue
    }

    /// The handshake is done: the tools become visible, then the edge hears "registered".
    #[inline(never)]
    fn ready(&mut self, initialize: Value, lists: super::lists::Lists, out: &mut VecDeque<Out>) {
        let n = lists.tools.len();
        log::info!(
            "server {} ({}): registered from {}: {n} tools, {} prompts, {} resources, {} templates in {} ms",
            self.up.name,
            self.up.id,
            self.up.remote,
            lists.prompts.len(),
            lists.resources.len(),
            lists.templates.len(),
            self.started.elapsed().as_millis()
        );
        self.gw.registry.offer(self.up, initialize, lists);
        let msg = format!("Registration successful, loaded {n} tools");
        out.push_back(Out::Text(status_frame("registered", &self.up.id, &msg).to_string()));
    }

    /// The actions that are neither a frame for the edge nor an answer: out of line, so that
    /// their values do not widen the frame every answer passes through.
    #[inline(never)]
    fn carry_out_rare(&mut self, action: Action<Caller>, out: &mut VecDeque<Out>) -> Flow {
        match action {
            Action::ToSession { session, message } => {
                if let Some(s) = self.gw.registry.session(&session) {
                    s.send(message);
                }
            }
            Action::Broadcast(msg) => self.gw.registry.broadcast(&self.own, &msg),
            Action::ListChanged { kind, items } => self.gw.registry.update_list(self.up, kind, items),
            Action::Fail { why } => {
                log::warn!("server {} ({}): registration failed: {why}", self.up.name, self.up.id);
                let frame = json!({"status": "error", "id": self.up.id, "message": format!("registration failed: {why}")});
                out.push_back(Out::Text(frame.to_string()));
                return Flow::Close(1011, "registration failed".into());
            }
            Action::ToEdge(_) | Action::Answer { .. } | Action::Related { .. } | Action::Ready { .. } => {
                unreachable!("carry_out takes these")
            }
        }
        Flow::Continue
    }

    /// The link is over: answer every call still in flight, remove the server's tools.
    #[inline(never)]
    fn release(&mut self, why: &str) {
        let calls = self.link.calls_in_flight();
        self.link.close(Instant::now(), why);
        let mut ignored = VecDeque::new();
        self.carry_out(&mut ignored);
        log::info!(
            "server {} ({}): disconnected: {why}; {calls} calls in flight failed",
            self.up.name,
            self.up.id
        );
    }
}

impl Handler<Command> for Driver<'_> {
    fn on_text(&mut self, text: String, out: &mut VecDeque<Out>) -> Flow {
        self.up.seen();
        Metrics::add(&self.gw.metrics.edge_bytes_in, text.len());
        match jsonrpc::parse(text.as_bytes()).and_then(jsonrpc::classify) {
            Ok(msg) => self.link.handle_edge(Instant::now(), msg),
            Err(e) => log::warn!("server {}: ignoring a frame that is not JSON-RPC: {e:?}", self.up.name),
        }
        self.carry_out(out)
    }

    fn on_item(&mut self, item: Command, out: &mut VecDeque<Out>) -> Flow {
        let Command::Link(input) = item;
        self.link.handle_input(Instant::now(), input);
        self.carry_out(out)
    }

    fn on_tick(&mut self, now: Instant, out: &mut VecDeque<Out>) -> Flow {
        if let Some((code, reason)) = self.up.close_requested() {
            return Flow::Close(code, reason);
        }
        self.link.handle_timeout(now);
        self.carry_out(out)
    }

    fn deadline(&self) -> Option<Instant> {
        self.link.poll_timeout()
    }
}

/// Reads and checks the `register` frame (the original's JSON-RPC form, or its older
/// `{"name": …}` form): the whole message within `REGISTER_TIMEOUT` of the upgrade, however it
/// is trickled, and no bigger than `FIRST_MESSAGE` bytes (it is a name and an id); later
/// messages may be up to `max_message` bytes.
fn read_registration(
    ws: &mut WebSocket<Box<dyn Transport>>,
    max_message: usize,
) -> Result<Registration, String> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let first = FIRST_MESSAGE.min(max_message);
    ws.set_config(|c| {
        c.max_message_size = Some(first);
        c.max_frame_size = Some(first);
    });
    ws.get_ref().socket().set_nonblocking(true).map_err(|e| e.to_string())?;
    let text = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete registration frame within {} s", REGISTER_TIMEOUT.as_secs()));
        }
        match ws.read() {
            Ok(WsMessage::Text(t)) => break t.as_str().to_owned(),
            Ok(WsMessage::Binary(b)) => break String::from_utf8_lossy(&b).into_owned(),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(ws.get_ref().socket());
                crate::sys::poll(&[(fd, false)], Some(left)).map_err(|e| e.to_string())?;
            }
            Err(tungstenite::Error::Capacity(_)) if first < max_message => {
                return Err(format!("{TOO_BIG_FIRST}: the register frame may be {first} bytes at most"))
            }
            Err(tungstenite::Error::Capacity(e)) => return Err(format!("{TOO_BIG}: {e}")),
            Err(e) => return Err(format!("no registration frame: {e}")),
        }
    };
    ws.get_ref().socket().set_nonblocking(false).map_err(|e| e.to_string())?;
    ws.set_config(|c| {
        c.max_message_size = Some(max_message);
        c.max_frame_size = Some(max_message);
    });
    let info: Value =
        serde_json::from_str(&text).map_err(|e| format!("the registration frame is not JSON: {e}"))?;
    let name = if info["method"] == "register" { &info["params"]["name"] } else { &info["name"] };
    let name = name.as_str().ok_or("the registration frame has no server name (params.name)")?;
    if !valid_server_name(name) {
        return Err(format!("invalid server name {:?}: use 1 to 64 of A-Z a-z 0-9 _ -", cut(name)));
    }
    let id = match &info["id"] {
        Value::String(s) if valid_server_id(s) => s.clone(),
        Value::String(s) if !s.is_empty() => {
            return Err(format!(
                "invalid server id {:?}: use 1 to {MAX_ID} printable ASCII characters",
                cut(s)
            ))
        }
        Value::Number(n) => n.to_string(),
        _ => crate::sys::random_uuid(),
    };
    Ok(Registration { name: name.to_string(), id })
}

/// The longest first message (the `register` frame) accepted.
const FIRST_MESSAGE: usize = 16 * 1024;
/// The longest server id accepted.
const MAX_ID: usize = 128;

/// Server ids are identifiers (a UUID, usually), never secrets: short printable ASCII.
fn valid_server_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A peer's text, cut short for a message.
fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Server names become tool-name prefixes and URL path segments: `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn valid_server_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How a message over `--max-ws-message-bytes` is reported (and closed with 1009).
const TOO_BIG: &str = "message too big (see --max-ws-message-bytes)";
/// How a first frame over `FIRST_MESSAGE` is reported (and closed with 1009).
const TOO_BIG_FIRST: &str = "registration frame too big";

/// Reports a failed registration to the edge (an error frame, then close 1008, or 1009 for a
/// message too big) and logs it.
fn refuse(ws: &mut WebSocket<Box<dyn Transport>>, remote: SocketAddr, why: &str) {
    log::warn!("{remote}: registration refused: {why}");
    let _ = ws.get_ref().socket().set_write_timeout(Some(Duration::from_secs(2)));
    let _ = ws.send(WsMessage::text(json!({"status": "error", "message": why}).to_string()));
    let code = if why.starts_with(TOO_BIG) || why.starts_with(TOO_BIG_FIRST) { 1009 } else { 1008 };
    let frame =
        tungstenite::protocol::CloseFrame { code: code.into(), reason: "registration refused".into() };
    let _ = ws.close(Some(frame));
    let _ = ws.flush();
}

fn status_frame(status: &str, id: &str, message: &str) -> Value {
    json!({"status": status, "id": id, "message": message})
}

fn describe(end: &End) -> String {
    match end {
        End::PeerClosed(Some((code, reason))) => format!("the edge closed the link ({code} {reason})"),
        End::PeerClosed(None) => "the edge closed the link".into(),
        End::Closed => "the gateway closed the link".into(),
        End::Silent(d) => format!("no answer to pings for {} s", d.as_secs()),
        End::Failed(e) => format!("link failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_the_pattern() {
        for ok in ["pi", "my-router_2", &"a".repeat(64)] {
            assert!(valid_server_name(ok), "{ok}");
        }
        for bad in ["", "has space", "dot.ted", "ü", &"a".repeat(65)] {
            assert!(!valid_server_name(bad), "{bad}");
        }
    }
}
