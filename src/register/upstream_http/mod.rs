//! An MCP server reached over HTTP, presented to `register` as if it were a stdio child: two
//! socket pairs stand in for the child's stdin and stdout, so the owner loop, the relay and the
//! supervisor treat it exactly like a process (`start` → `HttpChild`). Each line register writes
//! is POSTed to the upstream; each message the upstream sends (a JSON answer, an event on a
//! POST's stream or on the GET stream) comes back as one line.
//!
//! Streamable HTTP (2025-03-26 … 2025-11-25, and the stateless 2026-07-28 form): one POST per
//! message with `Mcp-Session-Id` and `MCP-Protocol-Version` once `initialize` gave them (a
//! 2026-07-28 request carries its own version, `Mcp-Method` and `Mcp-Name` from its body), one
//! GET stream for unrelated server messages (resumed with `Last-Event-ID`), and a best-effort
//! `DELETE` when register lets go. Legacy HTTP+SSE (2024-11-05): a GET event stream whose
//! `endpoint` event names where to POST (the upstream's own origin only); the session lives as
//! long as that stream.
//!
//! Threads: a reader (the pipe from register), workers that POST, and one GET stream. The reader
//! never waits behind a request: requests (an id and a method) are POSTed by at most
//! `MAX_IN_FLIGHT` workers, and one that finds none free waits in a FIFO queue (`MAX_QUEUED`
//! messages, `QUEUED_LINES` of register's longest lines in bytes); only a full queue stops the
//! reading of the pipe (backpressure). Responses and notifications have workers of their own,
//! `MAX_OTHERS` at most, and a queue bounded alike, so the answer a call waits for always goes;
//! each of their POSTs takes `HEAD_TIMEOUT` at most once connected, and an event stream answering
//! one is never read. A worker that finishes takes the next waiting message of its kind (no thread
//! per waiting message); a request cancelled while it waits is dropped, unsent and unanswered.
//!
//! The upstream is not trusted; what bounds what is at the constants below: time
//! (`CONNECT_TIMEOUT`, `HEAD_TIMEOUT`, `CALL_SILENCE`, `BODY_IDLE`), bytes (`MAX_HEAD`, one
//! message at most `max_message`, an SSE line at most that plus `FIELD_SLACK`, a POST's stream at
//! most `STREAM_BUDGET` messages' worth before its answer, chunk lines `MAX_CHUNK_LINE`) and
//! count (`MAX_INTERIM`, `REOPENS_PER_MINUTE`, `MAX_RESUMES`, serde_json's nesting limit). A
//! message is checked by serde_json's own parser without being built (`message`): checking one
//! costs no memory beyond its bytes, however many workers check theirs at once. Logs and errors
//! show a URL without its query and never a header's value (`shown`, `shown_location`).
//! Redirects are never followed. A message that is not JSON-RPC or too large, broken HTTP
//! framing, a lost session or an unreachable upstream ends the adapter with one log line;
//! register restarts it as it restarts a child that exited. Ending closes every connection at
//! once, so it never waits on the upstream.
//!
//! This file is the adapter: its start, its threads and queues, the two transports, and what
//! passes between register and the upstream. Below it: `exchange` (one HTTP exchange: connecting,
//! the request, the response head, bodies, deadlines), `sse` (the event-stream parser) and
//! `message` (checking a JSON-RPC message and finding its parts).

mod exchange;
mod message;
mod sse;

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::Level;
use rustls::ClientConfig;
use serde_json::Value;

use super::pipes::MAX_LINE;
use crate::http::client::Url;
use crate::jsonrpc::{self, INTERNAL_ERROR};
use crate::protocol::META_VERSION;
use crate::thread::{self, lock};
use exchange::{
    dial, excerpt, io_fail, read_error_body, read_head, read_line, size, skip_line, visible, Body, Fail,
    Framing, Head, Line, Paced, Wire, WRITE_TIMEOUT,
};
use message::{fields, members, short_string, string, valid, Rpc};
use sse::{Sse, MAX_TOKEN};

/// Requests (an id and a method) POSTed at once, each by a worker with its connection; the others
/// wait in their queue.
pub(crate) const MAX_IN_FLIGHT: usize = 16;
/// Responses and notifications POSTed at once, by workers of their own: they never wait behind
/// a request (a call may be waiting for one of them).
const MAX_OTHERS: usize = 8;
/// Messages of one kind (requests, or the others) waiting for a worker, oldest first. A full
/// queue stops the reading of the pipe from register.
const MAX_QUEUED: usize = 64;
/// The bytes the messages waiting in one queue may hold, in register's longest lines (the larger
/// of `max_message` and `MAX_LINE`): a queue always takes one more line when it is empty.
const QUEUED_LINES: usize = 2;
/// Connecting to the upstream, over all its addresses (TLS then has `tls::HANDSHAKE_TIMEOUT`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From the request sent to the whole response head, for everything but a Streamable HTTP
/// request (notifications, responses, streams' GETs, legacy POSTs); for a response or a
/// notification, from the first byte sent to the last one read.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest silence inside a JSON body or an error body.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// The longest silence of a request's exchange before its answer: the wait for the head (a
/// JSON-only upstream sends it when the call is done) and each wait on its event stream. A call
/// may think for long; the gateway's own timeout cancels it sooner, and a cancellation closes
/// the connection.
const CALL_SILENCE: Duration = Duration::from_secs(600);
/// What a POST's event stream may carry before its answer, in `max_message`s.
const STREAM_BUDGET: u64 = 4;
/// How long a legacy POST waits for the stream's `endpoint` event.
const ENDPOINT_WAIT: Duration = Duration::from_secs(30);
/// How long ending waits for the session's `DELETE` (and how long that DELETE may take to
/// connect and to be answered).
const DELETE_WAIT: Duration = Duration::from_secs(2);
/// Openings of the GET stream in any minute.
const REOPENS_PER_MINUTE: usize = 6;
/// The wait before reopening a stream: the server's `retry:` is kept within these bounds.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The wait before reopening a stream when the server named none.
const RETRY_DEFAULT: Duration = Duration::from_secs(1);
/// Resumptions (a GET with `Last-Event-ID`) of one POST's stream that ended before its answer.
const MAX_RESUMES: usize = 3;
/// While a queue is full, how often the reader looks whether register closed the pipe.
const HANGUP_CHECK: Duration = Duration::from_millis(500);
/// The longest protocol version taken from the upstream or a request.
const MAX_VERSION: usize = 64;
/// Read buffer of a connection (a head fits in it).
const READ_BUFFER: usize = 16 * 1024;
/// The longest id text from the upstream compared with a request's when it is not the request's
/// id byte for byte (register's ids are short).
const MAX_ID_TEXT: usize = 1024;

/// Which HTTP transport the upstream speaks (the entry's `type`: "http"/"streamable-http" or
/// "sse"; without one, a URL path ending in `/sse` is the legacy transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpTransport {
    /// Streamable HTTP (2025-03-26 and later, 2026-07-28 included): one endpoint for everything.
    Streamable,
    /// HTTP+SSE (2024-11-05): a GET event stream, and the endpoint it names for POSTs.
    Sse,
}

impl HttpTransport {
    fn describe(self) -> &'static str {
        match self {
            HttpTransport::Streamable => "Streamable HTTP",
            HttpTransport::Sse => "HTTP+SSE",
        }
    }
}

/// An HTTP upstream as a configuration entry describes it. (No `Debug`: its headers hold tokens.)
#[derive(Clone)]
pub(crate) struct HttpSpec {
    /// `http://` or `https://`.
    pub url: String,
    /// Sent on every request: the entry's own credentials.
    pub headers: Vec<(String, String)>,
    pub transport: HttpTransport,
    pub tls: crate::tls::ClientOptions,
    /// The largest JSON-RPC message accepted from the upstream.
    pub max_message: usize,
}

/// The adapter as register sees it: a child's two pipes, and why it ended.
pub(crate) struct HttpChild {
    /// Where register writes the lines for the upstream.
    pub stdin: ChildStdin,
    /// Where register reads the upstream's lines.
    pub stdout: ChildStdout,
    pub ended: Arc<Ended>,
}

/// Why the adapter ended; set once, before it closes its end of `stdout`.
#[derive(Default)]
pub(crate) struct Ended {
    why: Mutex<Option<(i32, String)>>,
}

impl Ended {
    /// `(0, _)`: stopped because register closed its stdin; `(1, why)`: the upstream failed.
    pub(crate) fn get(&self) -> Option<(i32, String)> {
        lock(&self.why).clone()
    }

    fn set(&self, code: i32, why: String) {
        lock(&self.why).get_or_insert((code, why));
    }
}

/// Starts the adapter for upstream `name`: its threads run until register closes `stdin` or the
/// upstream becomes unusable. Fails only on a bad URL, header or TLS file, or no thread.
pub(crate) fn start(spec: HttpSpec, name: &str) -> io::Result<HttpChild> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let url = Url::parse(&spec.url).map_err(|e| invalid(url_error(&spec.url, &e)))?;
    let tls = match url.secure {
        true => Some(crate::tls::client_config(&spec.tls).map_err(invalid)?),
        false => None,
    };
    let headers = checked_headers(spec.headers, name).map_err(invalid)?;
    let (stdin_ours, stdin_theirs) = UnixStream::pair()?;
    let (stdout_ours, stdout_theirs) = UnixStream::pair()?;
    let ended = Arc::new(Ended::default());
    let ad = Arc::new(Adapter {
        name: name.to_string(),
        shown: shown(&url),
        url,
        headers,
        transport: spec.transport,
        tls,
        max_message: spec.max_message.max(1),
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        conns: Mutex::new(Conns::default()),
        ends: [stdin_ours.try_clone()?, stdout_ours.try_clone()?],
        out: Mutex::new(stdout_ours),
        stopping: AtomicBool::new(false),
        finishing: AtomicBool::new(false),
        said_credentials: AtomicBool::new(false),
        said_redirect: AtomicBool::new(false),
        ended: ended.clone(),
    });
    ad.spawn(Job::Read(stdin_ours))?;
    if ad.transport == HttpTransport::Sse {
        ad.spawn(Job::Legacy)?;
    }
    log::debug!("server {name:?}: {} to {}", ad.transport.describe(), ad.shown);
    Ok(HttpChild {
        stdin: ChildStdin::from(OwnedFd::from(stdin_theirs)),
        stdout: ChildStdout::from(OwnedFd::from(stdout_theirs)),
        ended,
    })
}

/// The entry's headers, checked: names are tokens, values hold no line break; the ones that
/// frame the exchange or carry the session are ours and are dropped (with a warning).
fn checked_headers(headers: Vec<(String, String)>, name: &str) -> Result<Vec<(String, String)>, String> {
    const OURS: [&str; 9] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "content-type",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    ];
    let mut kept = Vec::new();
    for (key, value) in headers {
        let token = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("server {name:?}: header {key:?} is not a valid HTTP header"));
        }
        if OURS.contains(&key.to_ascii_lowercase().as_str()) {
            log::warn!(
                "server {name:?}: header {key:?} is set by mcpport itself; the configured one is ignored"
            );
            continue;
        }
        kept.push((key, value.trim().to_string()));
    }
    Ok(kept)
}

/// What is known of the upstream's session, and what the threads wait on.
#[derive(Default)]
struct State {
    /// `Mcp-Session-Id` from the `initialize` answer.
    session: Option<String>,
    /// The `protocolVersion` of the `initialize` result.
    version: Option<String>,
    /// Legacy: where to POST, from the stream's `endpoint` event.
    endpoint: Option<Url>,
    /// Requests: their workers (`MAX_IN_FLIGHT` at most) and those waiting for one.
    requests: Queue,
    /// Responses and notifications: their workers (`MAX_OTHERS` at most) and those waiting.
    others: Queue,
    /// Ordered messages (`initialize`, `notifications/initialized`) handed to workers, and
    /// finished: every POST waits for the ordered ones before it.
    ordered_dispatched: u64,
    ordered_done: u64,
    /// Whether the GET stream was started.
    listening: bool,
    /// Whether the session's DELETE is over (`end_session` waits for it).
    deleted: bool,
}

impl State {
    fn queue(&mut self, kind: Kind) -> &mut Queue {
        match kind {
            Kind::Request => &mut self.requests,
            Kind::Other => &mut self.others,
        }
    }
}

/// Which workers a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An id and a method: may take long (a call), answered by the upstream.
    Request,
    /// A response or a notification: quick, and what a request may be waiting for.
    Other,
}

impl Kind {
    /// Workers at once.
    fn places(self) -> usize {
        match self {
            Kind::Request => MAX_IN_FLIGHT,
            Kind::Other => MAX_OTHERS,
        }
    }
}

/// The workers of one kind of message, and the messages waiting for one, oldest first: at most
/// `MAX_QUEUED` of them and a given number of bytes.
#[derive(Default)]
struct Queue {
    workers: usize,
    waiting: Vec<Call>,
    /// The bytes of the waiting messages.
    bytes: usize,
}

impl Queue {
    /// Whether a message of `len` bytes may wait here (an empty queue takes any).
    fn has_room(&self, len: usize, max_bytes: usize) -> bool {
        self.waiting.is_empty() || (self.waiting.len() < MAX_QUEUED && self.bytes + len <= max_bytes)
    }

    fn push(&mut self, call: Call) {
        self.bytes += call.body.len();
        self.waiting.push(call);
    }

    fn pop(&mut self) -> Option<Call> {
        if self.waiting.is_empty() {
            return None;
        }
        let call = self.waiting.remove(0);
        self.bytes -= call.body.len();
        Some(call)
    }

    /// Drops the waiting request `key`; whether it was waiting. An ordered one (`initialize`)
    /// keeps its place, marked dropped: the messages after it wait for its turn, which then
    /// ends without a POST.
    fn cancel(&mut self, key: &str) -> bool {
        let Some(at) = self.waiting.iter().position(|c| c.key.as_deref() == Some(key)) else { return false };
        if self.waiting[at].is_ordered() {
            self.waiting[at].dropped = true;
        } else {
            self.bytes -= self.waiting.remove(at).body.len();
        }
        true
    }
}

/// The open connections (to close them at once when ending, or one call's when it is
/// cancelled) and the requests in flight. (Lock order: `state` before `conns`, never after.)
#[derive(Default)]
struct Conns {
    next: u64,
    open: Vec<(u64, Open)>,
    /// Requests in flight by id (JSON text): whether each is a 2026-07-28 one.
    calls: Vec<(String, bool)>,
    /// Requests in flight that register cancelled.
    cancelled: Vec<String>,
}

struct Open {
    sock: TcpStream,
    call: Option<String>,
}

/// The adapter's shared state; every thread holds an `Arc` of it.
struct Adapter {
    name: String,
    url: Url,
    /// The URL as logs show it: without its query, which may hold a token.
    shown: String,
    headers: Vec<(String, String)>,
    transport: HttpTransport,
    tls: Option<Arc<ClientConfig>>,
    max_message: usize,
    state: Mutex<State>,
    changed: Condvar,
    conns: Mutex<Conns>,
    /// Our end of register's stdout: one line at a time.
    out: Mutex<UnixStream>,
    /// Our ends of stdin and stdout, to shut down when ending.
    ends: [UnixStream; 2],
    stopping: AtomicBool,
    finishing: AtomicBool,
    said_credentials: AtomicBool,
    said_redirect: AtomicBool,
    ended: Arc<Ended>,
}

/// One message from register, and what its POST needs to know of it.
struct Call {
    body: Vec<u8>,
    /// A request's id (responses and notifications have none here).
    id: Option<Value>,
    /// The id as JSON text.
    key: Option<String>,
    method: Option<String>,
    /// A 2026-07-28 request's version, from its `_meta`.
    modern: Option<String>,
    /// What `Mcp-Name` carries for a 2026-07-28 request: `params.name` or `params.uri`.
    name: Option<String>,
    /// For `notifications/cancelled`: the request it cancels (id as JSON text).
    cancels: Option<String>,
    /// The number of ordered messages before this one.
    ticket: u64,
    /// Cancelled while it waited: its turn ends without a POST.
    dropped: bool,
}

impl Call {
    /// `body` as register wrote it, read without being built (only the parts named are
    /// decoded); `None` when it is not JSON.
    fn new(body: Vec<u8>) -> Option<Call> {
        if !valid(&body) {
            return None;
        }
        let [method, id, params] = fields(&body, ["method", "id", "params"])?;
        let method = method.and_then(string);
        let [meta, name, uri, request] =
            params.and_then(|p| fields(p, ["_meta", "name", "uri", "requestId"])).unwrap_or_default();
        let modern = meta
            .and_then(|m| fields(m, [META_VERSION]))
            .and_then(|[version]| version)
            .and_then(|v| short_string(v, MAX_VERSION))
            .filter(|v| visible(v, MAX_VERSION));
        let named = match method.as_deref() {
            Some("tools/call" | "prompts/get") => name,
            Some("resources/read") => uri,
            _ => None,
        };
        let name = named.and_then(string);
        let cancels = request
            .filter(|_| id.is_none() && method.as_deref() == Some("notifications/cancelled"))
            .and_then(|r| serde_json::from_slice::<Value>(r).ok())
            .map(|r| r.to_string());
        let id = id.filter(|_| method.is_some()).and_then(|i| serde_json::from_slice::<Value>(i).ok());
        let key = id.as_ref().map(Value::to_string);
        Some(Call { body, id, key, method, modern, name, cancels, ticket: 0, dropped: false })
    }

    fn kind(&self) -> Kind {
        match self.id {
            Some(_) => Kind::Request,
            None => Kind::Other,
        }
    }

    fn is_initialize(&self) -> bool {
        self.id.is_some() && self.method.as_deref() == Some("initialize")
    }

    fn is_initialized(&self) -> bool {
        self.id.is_none() && self.method.as_deref() == Some("notifications/initialized")
    }

    /// Messages the next ones must wait for: the session's id and version come with them.
    fn is_ordered(&self) -> bool {
        self.is_initialize() || self.is_initialized()
    }

    fn what(&self) -> &str {
        self.method.as_deref().unwrap_or("a response")
    }
}

/// A worker's hold on one of the places of its kind. `next` hands it the oldest message of its
/// kind that waits, or gives the place back in the same step (so no message is left waiting with
/// no worker to come); dropping it (a failed spawn, a panic) gives it back too.
struct Place {
    ad: Arc<Adapter>,
    kind: Kind,
    held: bool,
}

impl Place {
    fn next(&mut self) -> Option<Call> {
        let mut state = lock(&self.ad.state);
        let next = match self.ad.stopping() {
            true => None,
            false => state.queue(self.kind).pop(),
        };
        match &next {
            Some(call) => self.ad.begin(call),
            None => {
                state.queue(self.kind).workers -= 1;
                self.held = false;
            }
        }
        drop(state);
        self.ad.changed.notify_all();
        next
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.held {
            lock(&self.ad.state).queue(self.kind).workers -= 1;
            self.ad.changed.notify_all();
        }
    }
}

/// A request handed to a worker: known by its id, for a cancellation, until it is done.
struct Flight<'a> {
    ad: &'a Adapter,
    key: Option<&'a str>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut conns = lock(&self.ad.conns);
            conns.calls.retain(|(k, _)| k != key);
            conns.cancelled.retain(|k| k != key);
        }
    }
}

/// An ordered message's POST in progress; dropping it lets the messages after it go.
struct Turn<'a> {
    ad: &'a Adapter,
    ordered: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.ordered {
            lock(&self.ad.state).ordered_done += 1;
            self.ad.changed.notify_all();
        }
    }
}

/// What a thread of the adapter does: all of them start through `Adapter::spawn`.
enum Job {
    /// The reader of the pipe from register.
    Read(UnixStream),
    /// The legacy transport's event stream.
    Legacy,
    /// A worker, on its place, with its first message.
    Work(Place, Call),
    /// The GET stream for server messages.
    Listen,
    /// The session's DELETE (its id).
    Delete(String),
}

impl Adapter {
    /// Starts a thread for `job` (dropped, with what it holds, when no thread starts).
    fn spawn(self: &Arc<Self>, job: Job) -> io::Result<()> {
        let what = match job {
            Job::Read(_) => "http",
            Job::Legacy => "sse",
            Job::Work(..) => "post",
            Job::Listen => "get",
            Job::Delete(_) => "delete",
        };
        let ad = self.clone();
        let run = move || match job {
            Job::Read(stdin) => ad.read_pipe(stdin),
            Job::Legacy => ad.keep_legacy_stream(),
            Job::Work(place, call) => ad.work(place, call),
            Job::Listen => ad.keep_listening(),
            Job::Delete(session) => {
                ad.delete_session(session);
                lock(&ad.state).deleted = true;
                ad.changed.notify_all();
            }
        };
        thread::spawn(format!("{what}-{}", self.name), run).map(drop)
    }
}

/// The pipe from register: each line is a message for the upstream.
impl Adapter {
    /// The reader's loop, until register closes the pipe (or the adapter ends).
    fn read_pipe(self: &Arc<Self>, stdin: UnixStream) {
        let fd = stdin.as_raw_fd();
        let max = self.line_max();
        let mut input = BufReader::with_capacity(READ_BUFFER, stdin);
        let mut line = Vec::new();
        loop {
            match read_line(&mut input, &mut line, max) {
                Ok(Line::Complete) => {
                    if !self.dispatch(std::mem::take(&mut line), fd) {
                        break;
                    }
                }
                Ok(Line::TooLong) => {
                    self.say(Level::Warn, format_args!("a message for it is over {} (dropped)", size(max)));
                    if !matches!(skip_line(&mut input), Ok(true)) {
                        break;
                    }
                }
                Ok(Line::End) | Err(_) => break,
            }
        }
        self.finish(0, "stopped".into());
    }

    /// Hands one message to a worker, or queues it; false when reading must stop.
    fn dispatch(self: &Arc<Self>, line: Vec<u8>, stdin: RawFd) -> bool {
        if line.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        let Some(call) = Call::new(line) else {
            self.say(Level::Warn, format_args!("a message for it is not JSON; dropped"));
            return true;
        };
        if let Some(key) = &call.cancels {
            if !self.cancel(key) {
                return true;
            }
        }
        self.enqueue(call, stdin)
    }

    /// Queues `call` behind the waiting messages of its kind and starts workers while that kind
    /// has free places. Waits (the pipe unread) only while that queue is full; false when
    /// stopping or when register closed the pipe meanwhile (looked at every `HANGUP_CHECK`).
    fn enqueue(self: &Arc<Self>, mut call: Call, stdin: RawFd) -> bool {
        let kind = call.kind();
        let max_bytes = QUEUED_LINES * self.line_max();
        let mut state = lock(&self.state);
        while !state.queue(kind).has_room(call.body.len(), max_bytes) {
            if self.stopping() {
                return false;
            }
            state = self.wait(state, HANGUP_CHECK);
            if !state.queue(kind).has_room(call.body.len(), max_bytes) && hung_up(stdin) {
                return false;
            }
        }
        if self.stopping() {
            return false;
        }
        call.ticket = state.ordered_dispatched;
        state.ordered_dispatched += u64::from(call.is_ordered());
        state.queue(kind).push(call);
        let mut hired = Vec::new();
        while state.queue(kind).workers < kind.places() {
            let Some(next) = state.queue(kind).pop() else { break };
            state.queue(kind).workers += 1;
            self.begin(&next);
            hired.push((Place { ad: self.clone(), kind, held: true }, next));
        }
        drop(state); // before any `Place` may drop
        hired.into_iter().all(|(place, call)| self.hire(place, call))
    }

    /// A request handed to a worker is in flight: a cancellation finds it there. Called with
    /// `state` locked, in the same step as it leaves its queue.
    fn begin(&self, call: &Call) {
        if let Some(key) = &call.key {
            let mut conns = lock(&self.conns);
            conns.calls.retain(|(k, _)| k != key);
            conns.calls.push((key.clone(), call.modern.is_some()));
        }
    }

    /// Starts a worker on `place` with `call`; false (the adapter ending) when no thread starts.
    fn hire(self: &Arc<Self>, place: Place, call: Call) -> bool {
        match self.spawn(Job::Work(place, call)) {
            Ok(()) => true,
            Err(e) => {
                self.finish(
                    1,
                    format!("cannot start a thread for a request to the upstream at {}: {e}", self.shown),
                );
                false
            }
        }
    }

    /// A worker: POSTs `first`, then the next waiting message of its kind, until none waits.
    fn work(self: &Arc<Self>, mut place: Place, first: Call) {
        let mut next = Some(first);
        while let Some(call) = next {
            self.run(&call);
            drop(call);
            next = place.next();
        }
    }

    /// The longest line read from register.
    fn line_max(&self) -> usize {
        self.max_message.max(MAX_LINE)
    }

    /// `notifications/cancelled`: a request still waiting is dropped (the notification too: the
    /// upstream never heard of it); one in flight has its stream closed (a 2026-07-28 upstream
    /// takes that as the cancellation). Whether the notification itself is to be POSTed: for the
    /// legacy transport always (answers come on the GET stream), else only for an earlier-era
    /// request in flight.
    fn cancel(&self, key: &str) -> bool {
        let mut state = lock(&self.state);
        if state.requests.cancel(key) {
            self.say(Level::Debug, format_args!("a request cancelled before it was sent is dropped"));
            return false;
        }
        if self.transport == HttpTransport::Sse {
            return true;
        }
        let mut conns = lock(&self.conns);
        drop(state);
        let Some(&(_, modern)) = conns.calls.iter().find(|(k, _)| k == key) else { return false };
        if !conns.cancelled.iter().any(|k| k == key) {
            conns.cancelled.push(key.to_string());
        }
        for (_, open) in conns.open.iter().filter(|(_, o)| o.call.as_deref() == Some(key)) {
            let _ = open.sock.shutdown(Shutdown::Both);
        }
        !modern
    }

    /// POSTs one message, after the ordered messages before it.
    fn run(self: &Arc<Self>, call: &Call) {
        let _flight = Flight { ad: self, key: call.key.as_deref() };
        let Some(_turn) = self.await_turn(call) else { return };
        if call.dropped {
            return;
        }
        let result = match self.transport {
            HttpTransport::Streamable => self.post_streamable(call),
            HttpTransport::Sse => self.post_legacy(call),
        };
        if let Err(fail) = result {
            self.failed(call, fail);
        }
    }

    /// Waits until the ordered messages before `call` are done; `None` when stopping. A response
    /// never waits: it answers what the upstream already sent, in a session it already gave,
    /// and an `initialize` still in progress may be waiting for it.
    fn await_turn(&self, call: &Call) -> Option<Turn<'_>> {
        let mut state = lock(&self.state);
        while call.method.is_some() && state.ordered_done < call.ticket {
            if self.stopping() {
                return None;
            }
            state = self.wait(state, Duration::from_secs(3600));
        }
        Some(Turn { ad: self, ordered: call.is_ordered() })
    }

    /// What a failed POST leads to: the adapter's end, or an error answer to the request.
    fn failed(self: &Arc<Self>, call: &Call, fail: Fail) {
        if self.stopping() || self.was_cancelled(call) {
            return;
        }
        match fail {
            Fail::Fatal(why) => self.finish(1, self.upstream(&why)),
            Fail::Gone => self.finish(0, "stopped".into()),
            Fail::Call(why) => {
                self.say(Level::Warn, format_args!("the upstream at {} {why} ({})", self.shown, call.what()));
                if let Some(id) = &call.id {
                    let message = format!("the upstream MCP server {why}");
                    let _ = self.emit_value(&jsonrpc::error_response(id, INTERNAL_ERROR, &message));
                }
            }
        }
    }

    fn was_cancelled(&self, call: &Call) -> bool {
        call.key.as_ref().is_some_and(|key| lock(&self.conns).cancelled.contains(key))
    }
}

/// Streamable HTTP.
impl Adapter {
    /// POSTs one message to the MCP endpoint and passes on what answers it.
    fn post_streamable(self: &Arc<Self>, call: &Call) -> Result<(), Fail> {
        let headers = self.post_headers(call);
        let session = headers.iter().find(|(k, _)| *k == "Mcp-Session-Id").map(|(_, v)| v.clone());
        let answer_within = if call.id.is_some() { CALL_SILENCE } else { HEAD_TIMEOUT };
        let req = Req {
            method: "POST",
            url: &self.url,
            headers,
            body: &call.body,
            call: call.key.as_deref(),
            answer_within,
            whole: call.id.is_none(),
        };
        let mut ex = self.open(&req, false)?;
        let status = ex.head.status;
        if call.is_initialize() && (200..300).contains(&status) {
            self.note_session(&ex.head)?;
        }
        match status {
            200..=299 => self.take_answer(call, &mut ex)?,
            300..=399 => return self.redirected(call, &ex.head),
            404 if session.is_some() => return Err(session_gone()),
            _ => return self.refused(call, status, &mut ex),
        }
        drop(ex);
        if call.is_initialized() {
            self.listen();
        }
        Ok(())
    }

    /// The headers of a POST: the session's, or a 2026-07-28 request's own (SEP-2243).
    fn post_headers(&self, call: &Call) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Content-Type", "application/json".to_string()),
            ("Accept", "application/json, text/event-stream".to_string()),
        ];
        if let Some(version) = &call.modern {
            headers.push(("MCP-Protocol-Version", version.clone()));
            headers.extend(call.method.as_deref().map(|m| ("Mcp-Method", header_safe(m))));
            headers.extend(call.name.as_deref().map(|n| ("Mcp-Name", header_safe(n))));
            return headers;
        }
        if call.is_initialize() {
            return headers; // a new session: none of the old one's headers
        }
        let state = lock(&self.state);
        headers.extend(state.session.clone().map(|s| ("Mcp-Session-Id", s)));
        headers.extend(state.version.clone().map(|v| ("MCP-Protocol-Version", v)));
        headers
    }

    /// `initialize` answered: its `Mcp-Session-Id` (visible ASCII only) is the session's.
    fn note_session(&self, head: &Head) -> Result<(), Fail> {
        let session = head.header("mcp-session-id");
        if session.is_some_and(|s| !visible(s, MAX_TOKEN)) {
            return Err(Fail::Fatal(format!(
                "gave a session id that is not 1 to {MAX_TOKEN} visible ASCII characters"
            )));
        }
        lock(&self.state).session = session.map(str::to_string);
        Ok(())
    }

    /// A 2xx: a JSON body, an event stream, or (for notifications and responses) nothing. An
    /// event stream answering a notification or a response is not read: the connection is
    /// dropped (it would hold a worker, and an ordered message's turn, as long as it lasts).
    fn take_answer(&self, call: &Call, ex: &mut Exchange<'_>) -> Result<(), Fail> {
        let media = ex.head.media_type();
        if media == "text/event-stream" && call.id.is_none() {
            self.say(Level::Debug, format_args!("it answered {} with an event stream; dropped", call.what()));
            return Ok(());
        }
        if media == "text/event-stream" {
            return self.read_post_stream(call, ex);
        }
        if media == "application/json" {
            ex.pace(Some(BODY_IDLE));
            let bytes = self.read_json(&mut ex.body)?;
            if call.id.is_none() && bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            return match self.deliver(bytes, Some(call))? || call.id.is_none() {
                true => Ok(()),
                false => Err(Fail::Call("answered without a response to the request".into())),
            };
        }
        match (&call.id, media.is_empty()) {
            (None, _) => Ok(()),
            (Some(_), true) => {
                Err(Fail::Call(format!("answered HTTP {} without a response", ex.head.status)))
            }
            (Some(_), false) => Err(Fail::Fatal(
                "answered with a Content-Type that is neither JSON nor an event stream".into(),
            )),
        }
    }

    /// A POST's event stream: its messages pass on until the one answering the request, then
    /// the connection is closed. A stream that ends before it is resumed with a GET carrying
    /// `Last-Event-ID` (2025-11-25), `MAX_RESUMES` times. Bounded by `STREAM_BUDGET` in all.
    fn read_post_stream(&self, call: &Call, ex: &mut Exchange<'_>) -> Result<(), Fail> {
        let mut sse = Sse::new(self.max_message);
        let mut waiting = Awaited { call, spent: 0, limit: STREAM_BUDGET * self.max_message as u64 };
        ex.pace(Some(CALL_SILENCE));
        if self.pump(&mut ex.body, &mut sse, Some(&mut waiting))? == Pumped::Answered {
            return Ok(());
        }
        for _ in 0..MAX_RESUMES {
            let Some(last) = sse.last_id.clone() else { break };
            if !self.pause(sse.retry.unwrap_or(RETRY_DEFAULT).clamp(RETRY_MIN, RETRY_MAX)) {
                return Err(Fail::Gone);
            }
            let mut resumed = self.resume(call, &last)?;
            resumed.pace(Some(CALL_SILENCE));
            sse.restart();
            if self.pump(&mut resumed.body, &mut sse, Some(&mut waiting))? == Pumped::Answered {
                return Ok(());
            }
        }
        Err(Fail::Call("ended its stream without answering the request".into()))
    }

    /// The GET that resumes a stream after `last`.
    fn resume(&self, call: &Call, last: &str) -> Result<Exchange<'_>, Fail> {
        let headers = self.stream_headers(Some(last));
        let req = Req::stream(&self.url, headers, call.key.as_deref());
        let ex = self.open(&req, false)?;
        if ex.head.is_event_stream() {
            return Ok(ex);
        }
        if ex.head.status == 404 && lock(&self.state).session.is_some() {
            return Err(session_gone());
        }
        Err(Fail::Call(format!(
            "ended its stream before answering, and did not resume it (HTTP {})",
            ex.head.status
        )))
    }

    /// The headers of a GET stream.
    fn stream_headers(&self, last: Option<&str>) -> Vec<(&'static str, String)> {
        let mut headers = vec![("Accept", "text/event-stream".to_string())];
        let state = lock(&self.state);
        headers.extend(state.session.clone().map(|s| ("Mcp-Session-Id", s)));
        headers.extend(state.version.clone().map(|v| ("MCP-Protocol-Version", v)));
        headers.extend(last.map(|l| ("Last-Event-ID", l.to_string())));
        headers
    }

    /// Starts the GET stream for server messages, once.
    fn listen(self: &Arc<Self>) {
        {
            let mut state = lock(&self.state);
            if state.listening || self.stopping() {
                return;
            }
            state.listening = true;
        }
        if let Err(e) = self.spawn(Job::Listen) {
            self.say(Level::Warn, format_args!("cannot start a thread for its GET stream: {e}"));
        }
    }

    /// The GET stream: reopened when it ends or breaks (`REOPENS_PER_MINUTE` at most), until
    /// the upstream says it offers none or the adapter ends.
    fn keep_listening(self: &Arc<Self>) {
        let mut sse = Sse::new(self.max_message);
        let mut opened = Vec::new();
        while self.pace_reopening(&mut opened) {
            let delay = match self.listen_once(&mut sse) {
                Ok(Listened::Ended) => sse.retry.unwrap_or(RETRY_DEFAULT),
                Ok(Listened::NotOffered(status)) => {
                    self.say(Level::Debug, format_args!("no GET stream for server messages (HTTP {status})"));
                    return;
                }
                Err(Fail::Call(why)) if !self.stopping() => {
                    self.say(
                        Level::Warn,
                        format_args!("its GET stream: the upstream at {} {why}; reopening it", self.shown),
                    );
                    RETRY_DEFAULT
                }
                Err(Fail::Call(_)) => return,
                Err(Fail::Fatal(why)) => return self.finish(1, self.upstream(&why)),
                Err(Fail::Gone) => return self.finish(0, "stopped".into()),
            };
            if !self.pause(delay.clamp(RETRY_MIN, RETRY_MAX)) {
                return;
            }
        }
    }

    /// Opens the GET stream once and passes its messages on until it ends.
    fn listen_once(&self, sse: &mut Sse) -> Result<Listened, Fail> {
        let headers = self.stream_headers(sse.last_id.as_deref());
        let req = Req::stream(&self.url, headers, None);
        let mut ex = self.open(&req, false)?;
        let status = ex.head.status;
        let session = lock(&self.state).session.is_some();
        match status {
            _ if ex.head.is_event_stream() => {}
            404 if session => return Err(session_gone()),
            500..=599 => return Err(Fail::Call(format!("answered HTTP {status}"))),
            _ => return Ok(Listened::NotOffered(status)),
        }
        ex.pace(None);
        sse.restart();
        self.pump(&mut ex.body, sse, None)?;
        Ok(Listened::Ended)
    }

    /// Waits, if needed, so that the GET stream opens at most `REOPENS_PER_MINUTE` times a
    /// minute; false when stopping.
    fn pace_reopening(&self, opened: &mut Vec<Instant>) -> bool {
        let minute = Duration::from_secs(60);
        opened.retain(|t| t.elapsed() < minute);
        if opened.len() >= REOPENS_PER_MINUTE {
            let oldest = opened.remove(0);
            if !self.pause(minute.saturating_sub(oldest.elapsed())) {
                return false;
            }
        }
        opened.push(Instant::now());
        !self.stopping()
    }

    /// Ends the session (best effort, at most `DELETE_WAIT`).
    fn end_session(self: &Arc<Self>) {
        if self.transport != HttpTransport::Streamable {
            return;
        }
        let Some(session) = lock(&self.state).session.clone() else { return };
        if self.spawn(Job::Delete(session)).is_err() {
            return;
        }
        let deadline = Instant::now() + DELETE_WAIT;
        let mut state = lock(&self.state);
        while !state.deleted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.wait(state, left);
        }
    }

    fn delete_session(&self, session: String) {
        let mut headers = vec![("Mcp-Session-Id", session)];
        headers.extend(lock(&self.state).version.clone().map(|v| ("MCP-Protocol-Version", v)));
        let req = Req {
            method: "DELETE",
            url: &self.url,
            headers,
            body: b"",
            call: None,
            answer_within: DELETE_WAIT,
            whole: true,
        };
        match self.open(&req, true) {
            Ok(ex) => self.say(Level::Debug, format_args!("session ended (HTTP {})", ex.head.status)),
            Err(e) => self.say(Level::Debug, format_args!("the session's DELETE failed: {e:?}")),
        }
    }
}

/// Legacy HTTP+SSE.
impl Adapter {
    /// POSTs one message to the endpoint; its answer comes on the event stream.
    fn post_legacy(&self, call: &Call) -> Result<(), Fail> {
        let endpoint = self.endpoint()?;
        let headers = vec![("Content-Type", "application/json".to_string())];
        let call_key = call.key.as_deref();
        let req = Req {
            method: "POST",
            url: &endpoint,
            headers,
            body: &call.body,
            call: call_key,
            answer_within: HEAD_TIMEOUT,
            whole: call.id.is_none(),
        };
        let mut ex = self.open(&req, false)?;
        match ex.head.status {
            200..=299 => Ok(()),
            300..=399 => self.redirected(call, &ex.head),
            404 => Err(Fail::Fatal(
                "answered 404 to a message: the session is gone (the upstream restarted?)".into(),
            )),
            status => self.refused(call, status, &mut ex),
        }
    }

    /// Where to POST, once the stream named it (waiting `ENDPOINT_WAIT` at most).
    fn endpoint(&self) -> Result<Url, Fail> {
        let deadline = Instant::now() + ENDPOINT_WAIT;
        let mut state = lock(&self.state);
        loop {
            if let Some(url) = &state.endpoint {
                return Ok(url.clone());
            }
            if self.stopping() {
                return Err(Fail::Gone);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let waited = ENDPOINT_WAIT.as_secs();
                return Err(Fail::Fatal(format!("sent no endpoint event within {waited} s of being asked")));
            }
            state = self.wait(state, left);
        }
    }

    /// The event stream's thread: the session lives as long as the stream.
    fn keep_legacy_stream(self: &Arc<Self>) {
        let why = match self.legacy_stream() {
            Ok(()) => "closed its event stream: the session is gone".to_string(),
            Err(Fail::Fatal(why) | Fail::Call(why)) => why,
            Err(Fail::Gone) => return self.finish(0, "stopped".into()),
        };
        self.finish(1, self.upstream(&why));
    }

    fn legacy_stream(&self) -> Result<(), Fail> {
        let headers = vec![("Accept", "text/event-stream".to_string())];
        let req = Req::stream(&self.url, headers, None);
        let mut ex = self.open(&req, false)?;
        if !ex.head.is_event_stream() {
            return Err(Fail::Fatal(self.not_a_stream(&mut ex)));
        }
        ex.pace(None);
        let mut sse = Sse::new(self.max_message);
        while let Some(event) = sse.next(&mut ex.body).map_err(io_fail)? {
            match event.name.as_str() {
                "endpoint" => self.set_endpoint(&event.data)?,
                "" | "message" => {
                    self.deliver(event.data, None)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Why the stream's GET got no event stream, for the one log line.
    fn not_a_stream(&self, ex: &mut Exchange<'_>) -> String {
        let status = ex.head.status;
        if (300..400).contains(&status) {
            let location = shown_location(ex.head.header("location").unwrap_or(""));
            return format!("redirected its event stream to {location}; not followed");
        }
        if matches!(status, 401 | 403) {
            return format!("answered HTTP {status}: check the credentials in the headers configured for it");
        }
        if (200..300).contains(&status) {
            return "answered its GET with something other than an event stream (a Streamable HTTP endpoint? its type is \"http\")".into();
        }
        ex.pace(Some(BODY_IDLE));
        format!(
            "answered HTTP {status} to the GET of its event stream{}",
            quoted(&read_error_body(&mut ex.body))
        )
    }

    /// The `endpoint` event: a URL on the upstream's own origin (anything else ends the adapter:
    /// messages are never posted elsewhere). The first one counts.
    fn set_endpoint(&self, data: &[u8]) -> Result<(), Fail> {
        let text = String::from_utf8_lossy(data);
        let url = resolve(&self.url, text.trim()).map_err(Fail::Fatal)?;
        let mut state = lock(&self.state);
        if state.endpoint.is_none() {
            self.say(Level::Debug, format_args!("messages go to {}", shown(&url)));
            state.endpoint = Some(url);
            self.changed.notify_all();
        }
        Ok(())
    }
}

/// Answers that are not a message: redirects and error statuses.
impl Adapter {
    /// A 3xx: never followed (a redirect could turn the entry's credentials toward another
    /// host); logged once, and the request gets an error.
    fn redirected(&self, call: &Call, head: &Head) -> Result<(), Fail> {
        let location = head.header("location").unwrap_or("");
        let elsewhere = Url::parse(location)
            .is_ok_and(|u| (u.secure, &u.host, u.port) != (self.url.secure, &self.url.host, self.url.port));
        let location = shown_location(location);
        let why = match elsewhere {
            true => format!("redirected to another host ({location}); not followed"),
            false => format!("redirected to {location}; not followed (configure the URL it redirects to)"),
        };
        self.say_once(&self.said_redirect, &why);
        if let Some(id) = &call.id {
            let message =
                format!("the upstream MCP server answered HTTP {} (a redirect, not followed)", head.status);
            self.emit_value(&jsonrpc::error_response(id, INTERNAL_ERROR, &message))?;
        }
        Ok(())
    }

    /// A 4xx or 5xx: the request gets the upstream's own JSON-RPC error when its body is one,
    /// else an error naming the status and an excerpt. 401 and 403 are logged (once) as a
    /// credentials problem.
    fn refused(&self, call: &Call, status: u16, ex: &mut Exchange<'_>) -> Result<(), Fail> {
        let credentials = matches!(status, 401 | 403);
        if credentials {
            let why =
                format!("answered HTTP {status}: check the credentials in the headers configured for it");
            self.say_once(&self.said_credentials, &why);
        }
        ex.pace(Some(BODY_IDLE));
        let body = read_error_body(&mut ex.body);
        let Some(id) = &call.id else {
            let why = format!("answered HTTP {status} to {}{}", call.what(), quoted(&body));
            self.say(Level::Warn, format_args!("the upstream at {} {why}", self.shown));
            return Ok(());
        };
        let answer = upstream_error(&body, id).unwrap_or_else(|| {
            if !credentials {
                let why = format!("answered HTTP {status} to {}{}", call.what(), quoted(&body));
                self.say(Level::Warn, format_args!("the upstream at {} {why}", self.shown));
            }
            let message = format!("the upstream MCP server answered HTTP {status}{}", quoted(&body));
            jsonrpc::error_response(id, INTERNAL_ERROR, &message)
        });
        self.emit_value(&answer)
    }

    /// Logs `why` as an error the first time, then quietly.
    fn say_once(&self, said: &AtomicBool, why: &str) {
        let level = if said.swap(true, Ordering::SeqCst) { Level::Debug } else { Level::Error };
        self.say(level, format_args!("the upstream at {} {why}", self.shown));
    }
}

/// Messages from the upstream, as lines for register.
impl Adapter {
    /// Passes an event stream's messages on until the end, or until the one `waiting` for
    /// arrives; checks `waiting`'s byte budget.
    fn pump(
        &self,
        body: &mut Body,
        sse: &mut Sse,
        mut waiting: Option<&mut Awaited<'_>>,
    ) -> Result<Pumped, Fail> {
        loop {
            let before = body.consumed;
            let event = sse.next(body).map_err(io_fail)?;
            let Some(event) = event else { return Ok(Pumped::Ended) };
            if matches!(event.name.as_str(), "" | "message") {
                let call = waiting.as_ref().map(|w| w.call);
                if self.deliver(event.data, call)? {
                    return Ok(Pumped::Answered);
                }
            }
            if let Some(w) = waiting.as_mut() {
                w.spent += body.consumed - before;
                if w.spent > w.limit {
                    let limit = size(usize::try_from(w.limit).unwrap_or(usize::MAX));
                    return Err(Fail::Call(format!("sent over {limit} on a stream without answering")));
                }
            }
        }
    }

    /// A JSON body, at most `max_message` bytes.
    fn read_json(&self, body: &mut Body) -> Result<Vec<u8>, Fail> {
        let max = self.max_message;
        if body.framing == Framing::Length && body.left > max as u64 {
            return Err(self.oversize());
        }
        // Room for the line's LF too: the message is passed on in place.
        let known = if body.framing == Framing::Length { body.left as usize + 1 } else { 0 };
        let mut bytes = Vec::with_capacity(known);
        body.take(max as u64 + 1).read_to_end(&mut bytes).map_err(io_fail)?;
        if bytes.len() > max {
            return Err(self.oversize());
        }
        Ok(bytes)
    }

    fn oversize(&self) -> Fail {
        Fail::Fatal(format!("sent a message over {}", size(self.max_message)))
    }

    /// Checks one JSON body or event's data and passes its messages on, one line each (a batch
    /// is split). Whether one of them answers `call`. Nothing of it is built (`walk`): a message
    /// goes on in place, a batch's element as a copy of its own text.
    fn deliver(&self, bytes: Vec<u8>, call: Option<&Call>) -> Result<bool, Fail> {
        let garbage =
            |bytes: &[u8]| Fail::Fatal(format!("sent something that is not JSON-RPC: {:?}", excerpt(bytes)));
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            let (mut count, mut rpc) = (0, true);
            if !valid(&bytes) {
                return Err(garbage(&bytes));
            }
            members(&bytes, &mut |_, item| {
                count += 1;
                rpc &= Rpc::within(item).is_some_and(|m| m.jsonrpc);
            });
            if count == 0 || !rpc {
                return Err(garbage(&bytes));
            }
            let (mut answered, mut sent) = (false, Ok(()));
            members(&bytes, &mut |_, item| {
                if sent.is_ok() {
                    // each looked at: the answer may come late
                    answered |= Rpc::within(item).is_some_and(|m| self.answers(&m, call));
                    let mut line = Vec::with_capacity(item.len() + 1);
                    line.extend_from_slice(item);
                    sent = self.emit_line(line);
                }
            });
            return sent.map(|()| answered);
        }
        let answered = match Rpc::of(&bytes) {
            Some(msg) if msg.jsonrpc => self.answers(&msg, call),
            _ => return Err(garbage(&bytes)),
        };
        self.emit_line(bytes)?;
        Ok(answered)
    }

    /// Whether `msg` answers `call`; the answer to `initialize` gives the session's version.
    fn answers(&self, msg: &Rpc<'_>, call: Option<&Call>) -> bool {
        let Some(call) = call else { return false };
        let (Some(id), Some(key), Some(got)) = (&call.id, &call.key, msg.id) else { return false };
        let same = got == key.as_bytes()
            || (got.len() <= MAX_ID_TEXT && serde_json::from_slice::<Value>(got).is_ok_and(|got| &got == id));
        let answers = same && !msg.method;
        if answers && call.is_initialize() {
            let version = msg.result.and_then(|r| fields(r, ["protocolVersion"])).and_then(|[v]| v);
            let version =
                version.and_then(|v| short_string(v, MAX_VERSION)).filter(|v| visible(v, MAX_VERSION));
            lock(&self.state).version = version;
        }
        answers
    }

    /// One message's JSON text as one line: JSON strings hold no raw line breaks, so the ones
    /// there are whitespace between tokens.
    fn emit_line(&self, mut text: Vec<u8>) -> Result<(), Fail> {
        text.iter_mut().filter(|b| **b == b'\n' || **b == b'\r').for_each(|b| *b = b' ');
        text.push(b'\n');
        self.emit(&text)
    }

    fn emit_value(&self, msg: &Value) -> Result<(), Fail> {
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        self.emit(&line)
    }

    /// Writes one line for register (blocking while register does not read: backpressure).
    fn emit(&self, line: &[u8]) -> Result<(), Fail> {
        let mut out = lock(&self.out);
        out.write_all(line).map_err(|_| Fail::Gone)
    }
}

/// Connections.
impl Adapter {
    /// Connects, sends `req` and reads the response head. The connection is tracked while the
    /// exchange lives, so that ending or a cancellation can close it. `at_stop`: the session's
    /// DELETE, made while ending, connecting within `DELETE_WAIT`.
    fn open(&self, req: &Req<'_>, at_stop: bool) -> Result<Exchange<'_>, Fail> {
        let sock = dial(req.url, if at_stop { DELETE_WAIT } else { CONNECT_TIMEOUT })?;
        let tracked = self.track(&sock, req.call, at_stop)?;
        let mut wire = Paced::new(self.secure(req.url, sock)?);
        let answer = req.answer_within;
        let late = format!("did not answer within {} s", answer.as_secs());
        let until = req.whole.then(|| (Instant::now() + answer, late.clone()));
        wire.pace(until.as_ref().map(|(t, _)| *t), None, late.clone());
        wire.write_all(&self.request_bytes(req))
            .and_then(|()| wire.flush())
            .map_err(|e| Fail::Call(format!("did not take the request ({e})")))?;
        let head_by = until.as_ref().map_or_else(|| Instant::now() + answer, |(t, _)| *t);
        wire.pace(Some(head_by), None, late);
        let mut conn = BufReader::with_capacity(READ_BUFFER, wire);
        let head = read_head(&mut conn)?;
        let body = Body::new(conn, &head, req.method == "HEAD")?;
        Ok(Exchange { head, body, until, _tracked: tracked })
    }

    /// Notes an open connection; refuses when ending (unless `at_stop`) or when its call was
    /// cancelled.
    fn track(&self, sock: &TcpStream, call: Option<&str>, at_stop: bool) -> Result<Tracked<'_>, Fail> {
        let clone = sock.try_clone().map_err(|e| Fail::Call(format!("could not be tracked ({e})")))?;
        let mut conns = lock(&self.conns);
        if (self.stopping() && !at_stop) || call.is_some_and(|k| conns.cancelled.iter().any(|c| c == k)) {
            return Err(Fail::Gone);
        }
        let id = conns.next;
        conns.next += 1;
        conns.open.push((id, Open { sock: clone, call: call.map(str::to_string) }));
        Ok(Tracked { ad: self, id })
    }

    /// TLS for `https://` (the configuration built at start), plain TCP otherwise.
    fn secure(&self, url: &Url, sock: TcpStream) -> Result<Wire, Fail> {
        sock.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(|e| Fail::Call(e.to_string()))?;
        if !url.secure {
            return Ok(Wire::Plain(sock));
        }
        let Some(tls) = &self.tls else { return Err(Fail::Fatal("needs TLS that was not set up".into())) };
        match crate::tls::connect(tls.clone(), &url.host, sock) {
            Ok(stream) => Ok(Wire::Tls(Box::new(stream))),
            Err(e) => Err(Fail::Fatal(format!("failed the TLS handshake ({e})"))),
        }
    }

    /// The request's bytes: `Host` is the URL's own authority, no `Origin`, one request per
    /// connection, then our headers and the entry's (its `User-Agent` replaces ours).
    fn request_bytes(&self, req: &Req<'_>) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            req.method,
            req.url.path,
            req.url.authority()
        );
        if !self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
            head.push_str(concat!("User-Agent: mcpport/", env!("CARGO_PKG_VERSION"), "\r\n"));
        }
        let ours = req.headers.iter().map(|(k, v)| (*k, v.as_str()));
        for (key, value) in ours.chain(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            head.push_str(&format!("{key}: {value}\r\n"));
        }
        if req.method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(req.body);
        bytes
    }
}

/// Ending.
impl Adapter {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Ends the adapter once: logs why (an error for code 1), closes every connection, ends a
    /// Streamable session (code 0), sets `ended`, then closes both pipes.
    fn finish(self: &Arc<Self>, code: i32, why: String) {
        if self.finishing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stopping.store(true, Ordering::SeqCst);
        drop(lock(&self.state));
        self.changed.notify_all();
        let level = if code == 0 { Level::Info } else { Level::Error };
        self.say(level, format_args!("{why}"));
        for (_, open) in &lock(&self.conns).open {
            let _ = open.sock.shutdown(Shutdown::Both);
        }
        if code == 0 {
            self.end_session();
        }
        self.ended.set(code, why);
        for end in &self.ends {
            let _ = end.shutdown(Shutdown::Both);
        }
    }

    /// Waits up to `d`; false when the adapter is ending.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut state = lock(&self.state);
        loop {
            if self.stopping() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = self.wait(state, left);
        }
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(state, d) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// Logs `what` about this server.
    #[inline(never)]
    fn say(&self, level: Level, what: fmt::Arguments<'_>) {
        log::log!(level, "server {:?}: {what}", self.name);
    }

    /// "the upstream at URL " + `why`.
    fn upstream(&self, why: &str) -> String {
        format!("the upstream at {} {why}", self.shown)
    }
}

/// One request to make.
struct Req<'a> {
    method: &'static str,
    url: &'a Url,
    headers: Vec<(&'static str, String)>,
    body: &'a [u8],
    /// The request (id as JSON text) this exchange serves, for cancellation.
    call: Option<&'a str>,
    /// How long the response head may take.
    answer_within: Duration,
    /// Whether `answer_within` bounds the whole exchange (sending, head and body) instead.
    whole: bool,
}

impl<'a> Req<'a> {
    /// A GET for an event stream: its head within `HEAD_TIMEOUT`, its body for as long as it
    /// runs (the reader paces it).
    fn stream(url: &'a Url, headers: Vec<(&'static str, String)>, call: Option<&'a str>) -> Req<'a> {
        Req { method: "GET", url, headers, body: b"", call, answer_within: HEAD_TIMEOUT, whole: false }
    }
}

/// A response: its head, and its body to read.
struct Exchange<'a> {
    head: Head,
    body: Body,
    /// When the whole exchange must be over (`Req::whole`), and what a timeout then says.
    until: Option<(Instant, String)>,
    _tracked: Tracked<'a>,
}

impl Exchange<'_> {
    /// From now on, reads may wait `idle` each (`None`: forever), within `until`.
    fn pace(&mut self, idle: Option<Duration>) {
        let silence = match (&self.until, idle) {
            (Some((_, late)), _) => late.clone(),
            (None, Some(d)) if d == CALL_SILENCE => {
                format!("sent nothing for {} s on a request's stream", d.as_secs())
            }
            (None, Some(d)) => format!("went silent for {} s in the middle of its answer", d.as_secs()),
            (None, None) => "went silent".into(),
        };
        let until = self.until.as_ref().map(|(t, _)| *t);
        self.body.conn.get_mut().pace(until, idle, silence);
    }
}

/// A tracked connection; dropping it forgets it.
struct Tracked<'a> {
    ad: &'a Adapter,
    id: u64,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        lock(&self.ad.conns).open.retain(|(id, _)| *id != self.id);
    }
}

/// A POST waiting for its answer on an event stream, and the stream bytes it has cost.
struct Awaited<'a> {
    call: &'a Call,
    spent: u64,
    limit: u64,
}

#[derive(Debug, PartialEq)]
enum Pumped {
    Answered,
    Ended,
}

enum Listened {
    Ended,
    /// The upstream offers no GET stream (405, or another status that is not an error of its).
    NotOffered(u16),
}

/// The upstream's own JSON-RPC error in an error status's body, answering `id`.
fn upstream_error(body: &[u8], id: &Value) -> Option<Value> {
    let mut msg: Value = serde_json::from_slice(body).ok()?;
    let obj = msg.as_object_mut()?;
    let error = obj.get("error")?;
    let valid = obj.get("jsonrpc")?.as_str() == Some("2.0")
        && error.get("code").is_some_and(Value::is_i64)
        && error.get("message").is_some_and(Value::is_string);
    let same = obj.get("id").is_none_or(|got| got.is_null() || got == id);
    if !valid || !same || obj.contains_key("method") {
        return None;
    }
    obj.insert("id".into(), id.clone());
    Some(msg)
}

/// Whether register closed the pipe (only ever asked while the pipe is not being read).
fn hung_up(fd: RawFd) -> bool {
    crate::sys::poll(&[(fd, false)], Some(Duration::ZERO)).is_ok_and(|ready| ready[0].hangup)
}

/// The endpoint of an `endpoint` event, resolved against the stream's URL; only the same scheme,
/// host and port.
fn resolve(base: &Url, reference: &str) -> Result<Url, String> {
    let scheme = if base.secure { "https" } else { "http" };
    let absolute = if reference.is_empty() {
        return Err("sent an empty endpoint".into());
    } else if reference
        .split_once("://")
        .is_some_and(|(s, _)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        reference.to_string()
    } else if let Some(rest) = reference.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if reference.starts_with('/') {
        format!("{scheme}://{}{reference}", base.authority())
    } else {
        let path = base.path.split('?').next().unwrap_or("/");
        let dir = if reference.starts_with('?') { path } else { &path[..=path.rfind('/').unwrap_or(0)] };
        format!("{scheme}://{}{dir}{reference}", base.authority())
    };
    let url = Url::parse(&absolute)
        .map_err(|e| format!("sent an unusable endpoint ({})", url_error(&absolute, &e)))?;
    if (url.secure, &url.host, url.port) != (base.secure, &base.host, base.port) {
        return Err(format!(
            "sent an endpoint on another host ({}); messages are only ever posted to the upstream itself",
            shown(&url)
        ));
    }
    Ok(url)
}

/// The Fatal failure of a request whose session the upstream no longer knows (the session id is
/// not shown: it is a header's value).
fn session_gone() -> Fail {
    Fail::Fatal("answered 404 for its session: the upstream restarted (its session is gone)".into())
}

/// A 2026-07-28 header value: as it is when it is plain printable ASCII, else in the
/// `=?base64?…?=` form.
fn header_safe(value: &str) -> String {
    let plain = !value.is_empty()
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && !value.starts_with("=?");
    match plain {
        true => value.to_string(),
        false => format!("=?base64?{}?=", crate::codec::base64(value.as_bytes())),
    }
}

/// A URL as logs show it: scheme, authority and path, never the query.
fn shown(url: &Url) -> String {
    let scheme = if url.secure { "https" } else { "http" };
    format!("{scheme}://{}{}", url.authority(), url.path.split('?').next().unwrap_or(""))
}

/// A redirect's `Location` as logs show it: like `shown` when it is a URL, its path when it is a
/// path, else nothing of it.
fn shown_location(location: &str) -> String {
    match Url::parse(location) {
        Ok(url) => shown(&url),
        Err(_) if location.starts_with('/') && !location.starts_with("//") => {
            format!("{:?}", excerpt(location.split(['?', '#']).next().unwrap_or("").as_bytes()))
        }
        Err(_) => "a location that is not a URL".into(),
    }
}

/// `Url::parse`'s complaint about `text`, which quotes it whole, with the URL cut before its
/// query or fragment.
fn url_error(text: &str, e: &str) -> String {
    let quoted = format!("bad URL {:?}: ", text.chars().take(200).collect::<String>());
    let why = e.strip_prefix(&quoted).unwrap_or("not a usable http:// or https:// URL");
    format!("bad URL {:?}: {why}", excerpt(text.split(['?', '#']).next().unwrap_or("").as_bytes()))
}

/// `: "excerpt"` of a body, or nothing for an empty one.
fn quoted(body: &[u8]) -> String {
    match excerpt(body) {
        text if text.is_empty() => String::new(),
        text => format!(": {text:?}"),
    }
}

#[cfg(test)]
mod tests;
