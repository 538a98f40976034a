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
use std::time::Instant;

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::gateway::clients::reply::Caller;
use crate::gateway::clients::session::Scope;
use crate::gateway::credential::Credential;
use crate::gateway::edges::registration::{read_registration, refuse, status_frame, Refused};
use crate::gateway::link::{Action, Input, Limits, Link};
use crate::gateway::metrics::Metrics;
use crate::gateway::shared::Gateway;
use crate::gateway::tables::registry::Refusal;
use crate::gateway::tables::server::{Command, Upstream};
use crate::http::Transport;
use crate::jsonrpc;
use crate::ws::{self, End, Flow, Handler, Out};

/// Commands that may wait for one link's owner, and their bytes.
const QUEUE: usize = 4096;
const QUEUE_BYTES: usize = 32 * 1024 * 1024;
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
        Err(refused) => {
            refuse(ws, remote, refused);
            return None;
        }
    };
    let (commands, inbox) = match ws::bounded_within(QUEUE, QUEUE_BYTES, Some(gw.queue_budget.clone())) {
        Ok(pair) => pair,
        Err(e) => {
            refuse(ws, remote, Refused::policy(format!("gateway out of resources: {e}")));
            return None;
        }
    };
    let serial = gw.registry.next_serial();
    let mut up = Upstream::new(reg.name, reg.id, credential, serial, remote, commands);
    (up.edge, up.transport) = (reg.edge, reg.transport);
    let up = Arc::new(up);
    match gw.registry.claim_name(&up) {
        Err(Refusal::Taken) => {
            let why = format!(
                "server name {:?} is already held by another live server; pick another --server-name",
                up.name
            );
            refuse(ws, remote, Refused::policy(why));
            return None;
        }
        Err(Refusal::NotYours) => {
            let why = format!(
                "server name {:?} is held by a live server that registered with another credential; \
                 only the edge token (or certificate) that registered it may replace it",
                up.name
            );
            refuse(ws, remote, Refused::policy(why));
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
    gw.metrics.arrived(&up.name);
    let received =
        status_frame("received", &up.id, &format!("Registration request received, server ID: {}", up.id));
    if ws.send(WsMessage::text(received.to_string())).is_err() {
        if gw.registry.release_name(&up) {
            gw.metrics.departed(&up.name);
        }
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
        if self.gw.registry.release_name(self.up) {
            self.gw.metrics.departed(&self.up.name);
        }
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
            max_tasks: gw.cfg.max_tasks_per_server,
            max_tasks_per_client: gw.cfg.max_tasks_per_client,
            task_ttl: gw.cfg.task_ttl,
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
                    // the metrics finds the call counted. Not by a link the gateway is closing
                    // (replaced, or shutting down): the name may be another link's, or gone, and
                    // a late count would bring its series back for good.
                    if !self.up.closing() {
                        metrics.request(&report.method, &self.up.name, report.ok);
                        if report.method == "tools/call" {
                            metrics.tool_call(&self.up.name, report.took);
                        }
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
    fn ready(
        &mut self,
        initialize: Value,
        lists: crate::gateway::link::lists::Lists,
        out: &mut VecDeque<Out>,
    ) {
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
        for session in self.up.ended_sessions() {
            self.link.handle_input(now, Input::SessionEnded { session });
        }
        self.link.handle_timeout(now);
        self.carry_out(out)
    }

    fn deadline(&self) -> Option<Instant> {
        // Sessions that ended while the queue was full are told as soon as it has drained.
        if self.up.ends_waiting() {
            return Some(Instant::now());
        }
        self.link.poll_timeout()
    }
}

/// How a link's end reads in the log.
fn describe(end: &End) -> String {
    match end {
        End::PeerClosed(Some((code, reason))) => format!("the edge closed the link ({code} {reason})"),
        End::PeerClosed(None) => "the edge closed the link".into(),
        End::Closed => "the gateway closed the link".into(),
        End::Silent(d) => format!("no answer to pings for {} s", d.as_secs()),
        End::Failed(e) => format!("link failed: {e}"),
    }
}
