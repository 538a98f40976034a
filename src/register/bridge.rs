//! One link to the gateway: dial out, upgrade to WebSocket, send the `register` frame, then relay
//! JSON-RPC both ways until one side ends. `{"status": …}` frames are for us, never the child.
//!
//! One thread, the WebSocket's owner, runs the `Relay` state machine for both directions and does
//! all the I/O: it waits in one `poll` on the socket, the child's stdout (and its stdin while
//! messages wait for it) and its `Stop` (`ws::drive` with `LinkHandler`). A frame from the
//! gateway goes through the relay into the child's stdin at once; a line from the child goes
//! through the relay into the link's frames at once. While the socket cannot take the frames
//! made so far, the child's stdout is not read, so a slow link slows the child instead of
//! growing memory. The frames made for a link are sent on that link only. Between links the
//! owner keeps handling the child's lines (`Ends::child_output` with no link): the child's
//! requests are refused at once, everything else is dropped, and the child is never stalled.

use std::collections::VecDeque;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::RawFd;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::child::ChildGuard;
use super::handshake::{self, DialError};
use super::pipes::{Refused, Said};
use super::relay::{Action, Relay};
use super::stop::Stop;
use super::Config;
use crate::http::Transport;
use crate::sys;
use crate::ws::{self, End, Flow, Out};

/// How long dialing and the WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the link ended, as far as `run` needs to know.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The server's loop was asked to stop (a signal, or a reload that dropped it).
    Stopped,
    /// The link ended (the child's stdout closing ends it too); the text says why.
    Link(String),
}

/// Dials the gateway and completes the WebSocket handshake.
pub(crate) fn connect(cfg: &Config) -> Result<WebSocket<Box<dyn Transport>>, DialError> {
    let target = handshake::parse_target(&cfg.gateway_url)?;
    let (host, port) = (target.host.as_str(), target.port);
    let stream = dial(host, port).map_err(|e| format!("cannot reach the gateway at {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    let config = ws_config(cfg.max_ws_message);
    let boxed: Box<dyn Transport> = if target.secure {
        let tls = crate::tls::client_config(&cfg.tls)?;
        let stream = crate::tls::connect(tls, host, stream).map_err(|e| {
            // rustls's own error, inside the I/O error, says what went wrong.
            let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
            let plain =
                matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset);
            let hint = match tls {
                Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
                    " (a private CA? pass it with --ssl-ca-cert)"
                }
                Some(rustls::Error::InvalidMessage(_)) => " (is the gateway plain HTTP? then use ws://)",
                _ if plain => " (is the gateway plain HTTP? then use ws://)",
                _ => "",
            };
            format!("TLS with {host}:{port} failed: {e}{hint}")
        })?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let ws = handshake::upgrade(boxed, &target, &cfg.headers, config).map_err(|e| match e {
        DialError::Again(why) => DialError::Again(format!("WebSocket upgrade at {}: {why}", cfg.gateway_url)),
        mistake => mistake,
    })?;
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

/// Sends the registration frame (the original's JSON-RPC `register` request; the original
/// gateway reads its name and ignores the rest: which edge this is, and how it reaches the server).
pub(crate) fn register(ws: &mut WebSocket<Box<dyn Transport>>, cfg: &Config) -> Result<(), String> {
    let frame = json!({
        "jsonrpc": "2.0",
        "id": cfg.server_id,
        "method": "register",
        "params": {"name": cfg.server_name, "version": env!("CARGO_PKG_VERSION"), "capabilities": {},
                   "edge": cfg.edge, "transport": cfg.upstream.transport()},
    });
    ws.send(Message::text(frame.to_string())).map_err(|e| format!("cannot send the registration: {e}"))
}

/// What the owner relays between, on a link and between links.
pub(crate) struct Ends<'a> {
    pub relay: &'a mut Relay,
    pub child: Option<&'a mut ChildGuard>,
}

/// What the child's output, or a message for it, called for.
#[derive(Debug, PartialEq)]
pub(crate) enum Heard {
    Nothing,
    /// The current child's stdout ended.
    Ended,
    /// The child is not reading its stdin.
    Stuck,
    /// The child closed its stdin: it can take no request (`register::run` stops it, and
    /// `--restart` decides what comes next).
    StdinClosed,
}

/// Relays until the link ends or a stop is requested: frames from the gateway and lines from the
/// child go through the relay; what it says goes to the child's stdin and to this link.
pub(crate) fn relay(
    ws: &mut WebSocket<Box<dyn Transport>>,
    ends: &mut Ends<'_>,
    cfg: &Config,
    stop: &Stop,
) -> Ended {
    let link = ends.relay.link_up();
    let mut handler = LinkHandler { ends, link, cfg, stop, stopped: false };
    let end = ws::drive::<_, Out>(ws, None, Some(cfg.heartbeat), &mut handler);
    let stopped = handler.stopped;
    ends.relay.link_down(link);
    ends.perform(None);
    if stopped {
        return Ended::Stopped;
    }
    Ended::Link(match end {
        End::PeerClosed(Some((code, reason))) => format!("the gateway closed the link ({code} {reason})"),
        End::PeerClosed(None) => "the gateway closed the link".into(),
        End::Closed => "the link was closed".into(),
        End::Silent(d) => format!("the gateway did not answer pings for {} s", d.as_secs()),
        End::Failed(e) => format!("the link failed: {e}"),
    })
}

/// The owner loop's handler while link `link` is up.
struct LinkHandler<'e, 'a> {
    ends: &'e mut Ends<'a>,
    link: u64,
    cfg: &'e Config,
    stop: &'e Stop,
    stopped: bool,
}

impl ws::Handler<Out> for LinkHandler<'_, '_> {
    fn on_text(&mut self, text: String, out: &mut VecDeque<Out>) -> Flow {
        if let Some(status) = status_of(&text) {
            log_status(&status, self.cfg);
            return Flow::Continue;
        }
        self.ends.relay.on_gateway(self.link, &text);
        let (frames, heard) = self.ends.perform(Some(self.link));
        out.extend(frames.into_iter().map(Out::Text));
        flow_after(heard)
    }

    fn on_item(&mut self, item: Out, out: &mut VecDeque<Out>) -> Flow {
        out.push_back(item);
        Flow::Continue
    }

    /// The `Stop` always; the child's stdout while the socket takes what it says; its
    /// stdin while messages wait for it.
    fn watch(&self, pending: usize, fds: &mut Vec<(RawFd, bool)>) {
        if !self.stopped {
            fds.push((self.stop.fd(), false)); // once closing, its readable socket would spin
        }
        self.ends.watch(pending == 0, fds);
    }

    fn on_ready(&mut self, fd: RawFd, _ready: sys::Ready, out: &mut VecDeque<Out>) -> Flow {
        if fd == self.stop.fd() {
            // The socket stays readable once asked: the link is closing after the first time.
            if !self.stop.requested() || self.stopped {
                return Flow::Continue;
            }
            self.stopped = true;
            log::info!("{}: closing the link of MCP server {:?}", self.stop.why(), self.cfg.server_name);
            return Flow::Close(1001, "register is shutting down".into());
        }
        let (frames, heard) = self.ends.on_ready(fd, Some(self.link));
        out.extend(frames.into_iter().map(Out::Text));
        flow_after(heard)
    }
}

/// Whether the link goes on after what the child did.
fn flow_after(heard: Heard) -> Flow {
    match heard {
        Heard::Nothing => Flow::Continue,
        Heard::Ended => Flow::Close(1000, "the MCP server process exited".into()),
        Heard::Stuck => Flow::Close(1011, "the MCP server is not reading its stdin".into()),
        Heard::StdinClosed => Flow::Close(1011, "the MCP server closed its stdin".into()),
    }
}

/// Logs a `{"status": …}` frame of the gateway.
fn log_status(status: &Value, cfg: &Config) {
    let message = status["message"].as_str().unwrap_or_default();
    match status["status"].as_str().unwrap_or_default() {
        "error" => log::error!("the gateway refused the registration: {message}"),
        "registered" => log::info!("registered as {:?} with the gateway: {message}", cfg.server_name),
        other => log::info!("gateway: {other}: {message}"),
    }
}

impl Ends<'_> {
    /// The child's descriptors to wait on: stdout if `read` (the link takes more), stdin while
    /// messages wait for it.
    pub(crate) fn watch(&self, read: bool, fds: &mut Vec<(RawFd, bool)>) {
        let Some(child) = self.child.as_deref() else { return };
        fds.extend(child.stdout_fd().filter(|_| read).map(|fd| (fd, false)));
        fds.extend(child.stdin_fd_to_watch().map(|fd| (fd, true)));
    }

    /// One of the child's descriptors is ready: waiting messages go to its stdin, or its lines
    /// go through the relay. Returns the frames for `link` (none when no link is up).
    pub(crate) fn on_ready(&mut self, fd: RawFd, link: Option<u64>) -> (Vec<String>, Heard) {
        let Some(child) = self.child.as_deref_mut() else { return (Vec::new(), Heard::Nothing) };
        if Some(fd) == child.stdin_fd() {
            let heard = match child.write_waiting() {
                Err(Refused::Closed) => Heard::StdinClosed,
                _ => Heard::Nothing,
            };
            return (Vec::new(), heard);
        }
        if Some(fd) == child.stdout_fd() {
            return self.child_output(link);
        }
        (Vec::new(), Heard::Nothing)
    }

    /// Reads what the child said: each line goes through the relay, and the frames it makes
    /// for `link` are returned.
    pub(crate) fn child_output(&mut self, link: Option<u64>) -> (Vec<String>, Heard) {
        let Some(child) = self.child.as_deref_mut() else { return (Vec::new(), Heard::Nothing) };
        let mut frames = Vec::new();
        let mut heard = Heard::Nothing;
        for said in child.read_stdout() {
            match said {
                Said::Line(text) => {
                    self.relay.on_child(&text);
                    let (more, stuck) = self.perform(link);
                    frames.extend(more);
                    if heard == Heard::Nothing {
                        heard = stuck;
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
        (frames, heard)
    }

    /// Carries out the relay's actions: lines go to the child's stdin now; frames for `link`
    /// are returned for the caller to send. `Heard::Stuck` if the child's stdin is full,
    /// `Heard::StdinClosed` if it closed it.
    pub(crate) fn perform(&mut self, link: Option<u64>) -> (Vec<String>, Heard) {
        let mut frames = Vec::new();
        let mut heard = Heard::Nothing;
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::ToChild(line) => match self.child.as_deref_mut().map(|c| c.send(line)) {
                    Some(Err(Refused::Stuck)) => heard = Heard::Stuck,
                    Some(Err(Refused::Closed)) => heard = Heard::StdinClosed,
                    _ => {}
                },
                Action::ToGateway { link: to, text } if Some(to) == link => frames.push(text),
                Action::ToGateway { link: to, .. } => {
                    log::debug!("dropped a frame for gateway link {to}, which is not up here")
                }
            }
        }
        (frames, heard)
    }
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
    fn status_frames_are_told_from_json_rpc() {
        assert!(status_of(r#"{"status":"registered","id":"x","message":"ok"}"#).is_some());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"result":{"status":"fine"}}"#).is_none());
        assert!(status_of(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_none());
    }
}
