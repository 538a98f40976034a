//! One link to the gateway: dial out, upgrade to WebSocket, send the `register` frame, then relay
//! JSON-RPC both ways until one side ends. `{"status": …}` frames are for us, never the child.
//!
//! The WebSocket owner thread runs the `Relay` state machine for both directions: frames from
//! the gateway (the `ws::pump` handler) and the child's lines (its stdout reader's reports, a
//! descriptor polled beside the socket). A line's frames go on this link's own `Outbox` at once
//! while it has room; what does not fit goes back to the reader, which queues it, waiting while
//! the queue is full (so a slow link slows the child). Each
//! link has its own queue, so nothing translated for one link can be sent on another. Between
//! links the owner keeps handling the child's lines (`child_output` with no link): the child's
//! requests are refused at once, everything else is dropped, and the child is never stalled.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::child::{ChildGuard, Forward, Said, Source};
use super::handshake::{self, Target};
use super::relay::{Action, Relay};
use super::Config;
use crate::http::Transport;
use crate::sys;
use crate::ws::{self, End, Event, Flow, Out, Outbox};

/// How long dialing and the WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the link ended, as far as `run` needs to know.
#[derive(Debug)]
pub(crate) enum Ended {
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// The link ended (the child's stdout closing ends it too); the text says why.
    Link(String),
}

/// Dials the gateway and completes the WebSocket handshake.
pub(crate) fn connect(cfg: &Config) -> Result<WebSocket<Box<dyn Transport>>, String> {
    let target = Target::parse(&cfg.gateway_url)?;
    let (host, port) = (target.host.as_str(), target.port);
    let stream = dial(host, port).map_err(|e| format!("cannot reach the gateway at {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    let config = ws_config(cfg.max_ws_message);
    let boxed: Box<dyn Transport> = if target.secure {
        let tls = crate::tls::client_config(&cfg.tls)?;
        let stream = crate::tls::connect(tls, host, stream).map_err(|e| {
            let hint = if e.to_string().contains("UnknownIssuer") {
                " (a private CA? pass it with --ssl-ca-cert)"
            } else if e.to_string().contains("InvalidContentType")
                || e.to_string().contains("corrupt message")
                || e.kind() == std::io::ErrorKind::UnexpectedEof
                || e.kind() == std::io::ErrorKind::ConnectionReset
            {
                " (is the gateway plain HTTP? then use ws://)"
            } else {
                ""
            };
            format!("TLS with {host}:{port} failed: {e}{hint}")
        })?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let ws = handshake::upgrade(boxed, &target, &cfg.headers, config)
        .map_err(|e| format!("WebSocket upgrade at {}: {e}", cfg.gateway_url))?;
    let _ = ws.get_ref().socket().set_write_timeout(None);
    Ok(ws)
}

/// The link's WebSocket settings: messages up to `max_message` bytes.
fn ws_config(max_message: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(ws::READ_BUFFER)
        .write_buffer_size(ws::WRITE_BUFFER)
        .max_message_size(Some(max_message))
}

fn dial(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name resolved to no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends the registration frame (the original's JSON-RPC `register` request).
pub(crate) fn register(ws: &mut WebSocket<Box<dyn Transport>>, cfg: &Config) -> Result<(), String> {
    let frame = json!({
        "jsonrpc": "2.0",
        "id": cfg.server_id,
        "method": "register",
        "params": {"name": cfg.server_name, "version": env!("CARGO_PKG_VERSION"), "capabilities": {}},
    });
    ws.send(Message::text(frame.to_string())).map_err(|e| format!("cannot send the registration: {e}"))
}

/// Frames queued for the gateway on one link, beyond which the child's reader waits.
const LINK_QUEUE: usize = 256;

/// What the owner relays between, on a link and between links.
pub(crate) struct Ends<'a> {
    pub relay: &'a mut Relay,
    pub child: Option<&'a ChildGuard>,
    pub output: &'a Source,
}

/// What the child's reports called for.
#[derive(Debug, PartialEq)]
pub(crate) enum Heard {
    Nothing,
    /// The current child's stdout ended.
    Ended,
    /// The child is not reading its stdin.
    Stuck,
}

/// Relays until the link ends or a signal arrives: frames from the gateway and lines from the
/// child go through the relay; what it says goes to the child's stdin and to this link.
pub(crate) fn relay(
    ws: &mut WebSocket<Box<dyn Transport>>,
    ends: &mut Ends<'_>,
    cfg: &Config,
    signal_fd: i32,
) -> Ended {
    let (outbox, inbox) = match ws::channel(LINK_QUEUE) {
        Ok(pair) => pair,
        Err(e) => return Ended::Link(format!("cannot make the link's queue: {e}")),
    };
    let link = ends.relay.link_up();
    let mut signalled = false;
    let fds = [signal_fd, ends.output.fd()];
    let end = ws::pump(ws, &inbox, &fds, Some(cfg.heartbeat), |ev| match ev {
        Event::Text(text) => on_gateway_frame(&text, ends, link, &outbox, cfg),
        Event::Fd if sys::take_signal() => {
            signalled = true;
            log::info!("signal received: closing the link and stopping the MCP server");
            Flow::Close(1001, "register is shutting down".into())
        }
        Event::Fd => match ends.child_output(Some((link, &outbox))) {
            Heard::Nothing => Flow::Continue,
            Heard::Ended => Flow::Close(1000, "the MCP server process exited".into()),
            Heard::Stuck => Flow::Close(1011, "the MCP server is not reading its stdin".into()),
        },
    });
    drop(inbox); // a reader waiting to queue frames for this link gives up on them
    ends.relay.link_down(link);
    ends.perform(None);
    if signalled {
        return Ended::Signal;
    }
    Ended::Link(match end {
        End::PeerClosed(Some((code, reason))) => format!("the gateway closed the link ({code} {reason})"),
        End::PeerClosed(None) => "the gateway closed the link".into(),
        End::Closed => "the link was closed".into(),
        End::Silent(d) => format!("the gateway did not answer pings for {} s", d.as_secs()),
        End::Failed(e) => format!("the link failed: {e}"),
    })
}

fn on_gateway_frame(text: &str, ends: &mut Ends<'_>, link: u64, outbox: &Outbox, cfg: &Config) -> Flow {
    if let Some(status) = status_of(text) {
        let message = status["message"].as_str().unwrap_or_default();
        match status["status"].as_str().unwrap_or_default() {
            "error" => log::error!("the gateway refused the registration: {message}"),
            "registered" => log::info!("registered as {:?} with the gateway: {message}", cfg.server_name),
            other => log::info!("gateway: {other}: {message}"),
        }
        return Flow::Continue;
    }
    ends.relay.on_gateway(link, text);
    let (frames, heard) = ends.perform(Some(link));
    // Answers register gives itself (initialize from the cache, refusals): a gateway that lets
    // them pile up is not reading, and loses the link rather than our memory.
    for frame in frames {
        if outbox.send(Out::Text(frame)).is_err() {
            return Flow::Close(1011, "the gateway is not reading register's answers".into());
        }
    }
    match heard {
        Heard::Stuck => Flow::Close(1011, "the MCP server is not reading its stdin".into()),
        _ => Flow::Continue,
    }
}

impl Ends<'_> {
    /// Takes the child's reports. Each line of the current child goes through the relay, and
    /// back to its reader with the frames for `link` (none when no link is up); what an older
    /// child wrote is dropped (its reader gives up once its guard is gone).
    pub(crate) fn child_output(&mut self, link: Option<(u64, &Outbox)>) -> Heard {
        let mut heard = Heard::Nothing;
        for output in self.output.take() {
            let Some(child) = self.child.filter(|c| c.generation() == output.generation) else {
                log::debug!("dropped output of MCP server generation {}, since replaced", output.generation);
                continue;
            };
            match output.said {
                Said::Line(text) => {
                    self.relay.on_child(&text);
                    let (frames, stuck) = self.perform(link.map(|(n, _)| n));
                    // The frames go on the link's queue now, from this thread, while it has room
                    // (the common case: no hand-off back and forth on an answer's way); the rest,
                    // in order, go back to the reader, which waits for room and so slows the child.
                    let rest = match link {
                        Some((_, outbox)) => queue_while_room(outbox, frames),
                        None => frames,
                    };
                    let to = link.filter(|_| !rest.is_empty()).map(|(_, outbox)| outbox.clone());
                    child.forward(Forward { to, frames: rest });
                    if stuck == Heard::Stuck && heard == Heard::Nothing {
                        heard = Heard::Stuck;
                    }
                }
                Said::Eof => {
                    // The errors for calls at the dead child need not be queued: the link
                    // closes next, and the gateway fails what was pending on it.
                    self.relay.child_gone();
                    self.perform(None);
                    heard = Heard::Ended;
                }
            }
        }
        heard
    }

    /// Carries out the relay's actions: lines go to the child's stdin now; frames for `link`
    /// are returned for the caller to queue. `Heard::Stuck` if the child's stdin is full.
    pub(crate) fn perform(&mut self, link: Option<u64>) -> (Vec<String>, Heard) {
        let mut frames = Vec::new();
        let mut heard = Heard::Nothing;
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::ToChild(line) => {
                    if self.child.is_some_and(|c| !c.send(line)) {
                        heard = Heard::Stuck;
                    }
                }
                Action::ToGateway { link: to, text } if Some(to) == link => frames.push(text),
                Action::ToGateway { link: to, .. } => {
                    log::debug!("dropped a frame for gateway link {to}, which is not up here")
                }
            }
        }
        (frames, heard)
    }
}

/// Queues `frames` on `outbox` in order, without waiting, until one does not fit; returns that
/// one and those after it. A closed link takes nothing, and nothing is returned to queue.
fn queue_while_room(outbox: &Outbox, frames: Vec<String>) -> Vec<String> {
    let mut frames = frames.into_iter();
    while let Some(frame) = frames.next() {
        match outbox.offer(Out::Text(frame)) {
            Ok(()) => {}
            Err((ws::SendError::Full, Out::Text(frame))) => {
                return std::iter::once(frame).chain(frames).collect()
            }
            Err(_) => return Vec::new(),
        }
    }
    Vec::new()
}

/// A `{"status": …}` frame from the gateway (not JSON-RPC), if `text` is one.
fn status_of(text: &str) -> Option<Value> {
    if !text.contains("\"status\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    (v.get("status").is_some() && v.get("jsonrpc").is_none()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_queued_while_there_is_room_and_the_rest_come_back_in_order() {
        let (outbox, inbox) = ws::channel::<Out>(2).unwrap();
        let frames: Vec<String> = (1..=4).map(|n| n.to_string()).collect();
        assert_eq!(queue_while_room(&outbox, frames), vec!["3".to_string(), "4".to_string()]);
        let queued: Vec<String> =
            std::iter::from_fn(|| inbox.try_recv().ok()).map(|Out::Text(t)| t).collect();
        assert_eq!(queued, vec!["1".to_string(), "2".to_string()]);
        drop(inbox);
        assert!(queue_while_room(&outbox, vec!["5".into()]).is_empty(), "a closed link takes nothing back");
    }

    #[test]
    fn status_frames_are_told_from_json_rpc() {
        assert!(status_of(r#"{"status":"registered","id":"x","message":"ok"}"#).is_some());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"result":{"status":"fine"}}"#).is_none());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_none());
    }
}
