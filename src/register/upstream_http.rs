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
//! message is checked by serde_json's own parser without being built (`valid`, `members`):
//! checking one costs no memory beyond its bytes, however many workers check theirs at once. Logs and errors show a URL without its query and never a
//! header's value (`shown`, `shown_location`). Redirects are never followed. A
//! message that is not JSON-RPC or too large, broken HTTP framing, a lost session or an
//! unreachable upstream ends the adapter with one log line; register restarts it as it restarts a
//! child that exited. Ending closes every connection at once, so it never waits on the upstream.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::Level;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_core::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::pipes::MAX_LINE;
use crate::http::body::{chunk_size, MAX_CHUNK_LINE};
use crate::http::client::{Url, MAX_HEAD};
use crate::jsonrpc::{self, INTERNAL_ERROR};
use crate::protocol::META_VERSION;
use crate::thread::{self, lock};

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
/// Each write of a request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest silence inside a JSON body or an error body.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// The longest silence of a request's exchange before its answer: the wait for the head (a
/// JSON-only upstream sends it when the call is done) and each wait on its event stream. A call
/// may think for long; the gateway's own timeout cancels it sooner, and a cancellation closes
/// the connection.
const CALL_SILENCE: Duration = Duration::from_secs(600);
/// What a POST's event stream may carry before its answer, in `max_message`s.
const STREAM_BUDGET: u64 = 4;
/// Bytes of an error status's body read (for the JSON-RPC error in it, or an excerpt).
const ERROR_BODY_MAX: u64 = 64 * 1024;
/// Characters of the upstream's text quoted in logs and error answers.
const EXCERPT_CHARS: usize = 200;
/// How long a legacy POST waits for the stream's `endpoint` event.
const ENDPOINT_WAIT: Duration = Duration::from_secs(30);
/// How long ending waits for the session's `DELETE` (and how long that DELETE may take to
/// connect and to be answered).
const DELETE_WAIT: Duration = Duration::from_secs(2);
/// Interim (1xx) response heads skipped before the final one.
const MAX_INTERIM: usize = 8;
/// Header fields in a response head.
const MAX_HEADERS: usize = 64;
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
/// The longest session id or event id carried back to the upstream in a header.
const MAX_TOKEN: usize = 1024;
/// The longest protocol version taken from the upstream or a request.
const MAX_VERSION: usize = 64;
/// Bytes of an SSE line beyond the room left for the message (field name, colon, space).
const FIELD_SLACK: usize = 64;
/// A line buffer grown past this for one long line is given back after it.
const KEEP_CAPACITY: usize = 64 * 1024;
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

/// How an exchange with the upstream failed.
#[derive(Debug)]
enum Fail {
    /// The upstream is unusable or lies: the adapter ends. The text completes "the upstream at
    /// URL …".
    Fatal(String),
    /// This exchange failed, the upstream may serve others: the request gets an error answer
    /// (the text completes "the upstream MCP server …").
    Call(String),
    /// We are stopping, the call was cancelled, or register closed our output: nothing to say.
    Gone,
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
        let req = Req {
            method: "GET",
            url: &self.url,
            headers,
            body: b"",
            call: call.key.as_deref(),
            answer_within: HEAD_TIMEOUT,
            whole: false,
        };
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
        let req = Req {
            method: "GET",
            url: &self.url,
            headers,
            body: b"",
            call: None,
            answer_within: HEAD_TIMEOUT,
            whole: false,
        };
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
        let req = Req {
            method: "GET",
            url: &self.url,
            headers,
            body: b"",
            call: None,
            answer_within: HEAD_TIMEOUT,
            whole: false,
        };
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

/// Connects to the first address of the URL's host that answers, within `within` in all.
fn dial(url: &Url, within: Duration) -> Result<TcpStream, Fail> {
    let deadline = Instant::now() + within;
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| Fail::Fatal(format!("cannot be resolved ({e})")))?
        .take(8)
        .collect();
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(sock) => {
                let _ = sock.set_nodelay(true);
                return Ok(sock);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Fail::Fatal(match last {
        None => "has no address to connect to".into(),
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => "refused the connection".into(),
        Some(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
            format!("did not accept a connection within {} s", within.as_secs())
        }
        Some(e) => format!("cannot be reached ({e})"),
    }))
}

/// Plain TCP, or TLS over it.
enum Wire {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Wire {
    fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(sock) => sock,
            Wire::Tls(tls) => tls.get_ref(),
        }
    }
}

/// A connection whose every read is bounded by the current phase's deadline and idle time, and
/// every write by that deadline too (and `WRITE_TIMEOUT` each).
struct Paced {
    wire: Wire,
    deadline: Option<Instant>,
    idle: Option<Duration>,
    /// What a timeout says (it completes "the upstream at URL …").
    silence: String,
}

impl Paced {
    fn new(wire: Wire) -> Paced {
        Paced { wire, deadline: None, idle: None, silence: String::new() }
    }

    fn pace(&mut self, deadline: Option<Instant>, idle: Option<Duration>, silence: String) {
        self.deadline = deadline;
        self.idle = idle;
        self.silence = silence;
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self.silence.clone())
    }

    /// The read timeout now: the sooner of the idle time and the deadline (`None`: none).
    fn timeout(&self) -> io::Result<Option<Duration>> {
        let left = match self.deadline {
            Some(deadline) => match deadline.saturating_duration_since(Instant::now()) {
                d if d.is_zero() => return Err(self.timed_out()),
                d => Some(d),
            },
            None => None,
        };
        let timeout = match (left, self.idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(timeout.map(|t| t.max(Duration::from_millis(1))))
    }
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.timeout()?;
        self.wire.socket().set_read_timeout(timeout)?;
        let got = match &mut self.wire {
            Wire::Plain(sock) => sock.read(buf),
            Wire::Tls(tls) => tls.read(buf),
        };
        match got {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(self.timed_out())
            }
            // A TLS peer that closes without close_notify: the end, as with plain TCP.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            self.wire.socket().set_write_timeout(Some(left.min(WRITE_TIMEOUT)))?;
        }
        let put = match &mut self.wire {
            Wire::Plain(sock) => sock.write(buf),
            Wire::Tls(tls) => tls.write(buf),
        };
        match put {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(self.timed_out())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.wire {
            Wire::Plain(sock) => sock.flush(),
            Wire::Tls(tls) => tls.flush(),
        }
    }
}

/// A response head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The media type of `Content-Type`, lower case, without parameters ("" without one).
    fn media_type(&self) -> String {
        let value = self.header("content-type").unwrap_or("");
        value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
    }

    fn is_event_stream(&self) -> bool {
        (200..300).contains(&self.status) && self.media_type() == "text/event-stream"
    }
}

/// Reads the final response head (skipping `MAX_INTERIM` interim ones at most).
fn read_head(conn: &mut dyn BufRead) -> Result<Head, Fail> {
    for _ in 0..MAX_INTERIM {
        let head = parse_head(&read_head_bytes(conn)?)?;
        if !(100..200).contains(&head.status) || head.status == 101 {
            return Ok(head);
        }
    }
    Err(Fail::Fatal(format!("sent over {MAX_INTERIM} interim (1xx) responses")))
}

/// The lines of one head, through the empty one, at most `MAX_HEAD` bytes.
fn read_head_bytes(conn: &mut dyn BufRead) -> Result<Vec<u8>, Fail> {
    let too_long = || Fail::Fatal(format!("sent a response head over {}", size(MAX_HEAD)));
    let mut raw = Vec::new();
    let mut line = Vec::new();
    loop {
        match read_line(conn, &mut line, MAX_HEAD.saturating_sub(raw.len())).map_err(io_fail)? {
            Line::Complete => {}
            Line::TooLong => return Err(too_long()),
            Line::End if raw.is_empty() => {
                return Err(Fail::Call("closed the connection without answering".into()))
            }
            Line::End => return Err(Fail::Call("closed the connection in the middle of its answer".into())),
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        raw.extend_from_slice(&line);
        raw.extend_from_slice(b"\r\n");
        if raw.len() > MAX_HEAD {
            return Err(too_long());
        }
        if line.is_empty() {
            return Ok(raw);
        }
    }
}

fn parse_head(raw: &[u8]) -> Result<Head, Fail> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Fail::Fatal("sent an incomplete response head".into())),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Fail::Fatal(format!("sent over {MAX_HEADERS} header fields")));
        }
        Err(e) => return Err(Fail::Fatal(format!("answered with something that is not HTTP/1.1 ({e})"))),
    }
    let headers = response
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    Ok(Head { status: response.code.unwrap_or(0), headers })
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length` (0 for responses that have no body).
    Length,
    Chunked,
    /// At the connection's end.
    Close,
}

/// A response body as a byte stream: its framing is decoded as it is read, strictly (RFC 9112
/// §6.3 and §7.1), and nothing past it is read.
struct Body {
    conn: BufReader<Paced>,
    framing: Framing,
    /// Bytes left in the body (`Length`), in the current chunk (`Chunked`), or `u64::MAX`
    /// (`Close`, until the end).
    left: u64,
    /// Chunked: the current chunk's data is read and its CRLF is due.
    crlf_due: bool,
    /// Chunked: the last chunk and the trailers were read.
    done: bool,
    /// Body bytes handed out so far.
    consumed: u64,
}

impl Body {
    fn new(conn: BufReader<Paced>, head: &Head, head_request: bool) -> Result<Body, Fail> {
        let bodiless = head_request || matches!(head.status, 100..=199 | 204 | 304);
        let codings = head.all("transfer-encoding");
        let lengths = head.all("content-length");
        let (framing, left) = match (codings.as_slice(), lengths.as_slice()) {
            _ if bodiless => (Framing::Length, 0),
            ([], []) => (Framing::Close, u64::MAX),
            ([], lengths) => (Framing::Length, content_length(lengths)?),
            ([coding], []) if coding.eq_ignore_ascii_case("chunked") => (Framing::Chunked, 0),
            (_, []) => {
                return Err(Fail::Fatal(
                    "sent a Transfer-Encoding other than chunked; only chunked is supported".into(),
                ));
            }
            _ => return Err(Fail::Fatal("sent both Content-Length and Transfer-Encoding".into())),
        };
        Ok(Body { conn, framing, left, crlf_due: false, done: false, consumed: 0 })
    }

    /// Reads the next chunk's size line (after the previous chunk's CRLF); at the last chunk,
    /// skips the trailers and marks the body done.
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        if self.crlf_due {
            self.chunk_line(&mut line)?;
            if !line.is_empty() {
                return Err(lie("sent a chunk longer than its size"));
            }
            self.crlf_due = false;
        }
        self.chunk_line(&mut line)?;
        let size =
            chunk_size(&line).map_err(|_| lie(format!("sent a bad chunk size {:?}", excerpt(&line))))?;
        if size == 0 {
            self.skip_trailers()?;
            self.done = true;
        } else {
            self.left = size;
            self.crlf_due = true;
        }
        Ok(())
    }

    /// One CRLF-terminated line of chunk framing, at most `MAX_CHUNK_LINE` bytes.
    fn chunk_line(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        match read_line(&mut self.conn, line, MAX_CHUNK_LINE + 1)? {
            Line::Complete if line.last() == Some(&b'\r') => {
                line.pop();
                Ok(())
            }
            Line::Complete => Err(lie("sent a chunk line without its CR")),
            Line::TooLong => Err(lie(format!("sent a chunk line over {MAX_CHUNK_LINE} bytes"))),
            Line::End => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    /// Trailer fields: at most `MAX_HEAD` bytes, dropped. A close right after the last chunk
    /// is accepted.
    fn skip_trailers(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        let mut total = 0;
        loop {
            match read_line(&mut self.conn, &mut line, MAX_HEAD)? {
                Line::Complete => {}
                Line::TooLong => return Err(lie(format!("sent trailer fields over {}", size(MAX_HEAD)))),
                Line::End => return Ok(()),
            }
            total += line.len() + 1;
            if line.is_empty() || line == b"\r" {
                return Ok(());
            }
            if total > MAX_HEAD {
                return Err(lie(format!("sent trailer fields over {}", size(MAX_HEAD))));
            }
        }
    }
}

impl BufRead for Body {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.left == 0 {
            if self.framing != Framing::Chunked || self.done {
                return Ok(&[]);
            }
            self.next_chunk()?;
            if self.done {
                return Ok(&[]);
            }
        }
        if self.conn.fill_buf()?.is_empty() {
            if self.framing == Framing::Close {
                self.left = 0;
                return Ok(&[]);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let buffered = self.conn.buffer();
        let n = buffered.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        Ok(&buffered[..n])
    }

    fn consume(&mut self, n: usize) {
        self.conn.consume(n);
        if self.framing != Framing::Close {
            self.left -= n as u64;
        }
        self.consumed += n as u64;
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buffered = self.fill_buf()?;
        let n = buffered.len().min(out.len());
        out[..n].copy_from_slice(&buffered[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// `Content-Length`: digits only, every copy the same.
fn content_length(values: &[&str]) -> Result<u64, Fail> {
    let bad = || Fail::Fatal("sent a bad Content-Length".into());
    let mut length = None;
    for value in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = value.parse().map_err(|_| bad())?;
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    length.ok_or_else(bad)
}

/// An error status's body, at most `ERROR_BODY_MAX` bytes (what could be read).
fn read_error_body(body: &mut Body) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = body.take(ERROR_BODY_MAX).read_to_end(&mut bytes);
    bytes
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

/// One event of an event stream.
#[derive(Debug, PartialEq)]
struct Event {
    /// The `event:` field ("" without one).
    name: String,
    data: Vec<u8>,
}

/// An event stream's parser (the WHATWG rules, with lines ending in LF or CRLF). One event's
/// data is at most `max` bytes, one line at most what is left of that plus `FIELD_SLACK`.
struct Sse {
    max: usize,
    line: Vec<u8>,
    name: String,
    data: Vec<u8>,
    has_data: bool,
    /// The last `id:`, when it can be sent back in a `Last-Event-ID` header.
    last_id: Option<String>,
    /// The last `retry:`.
    retry: Option<Duration>,
    /// Bytes read since the last event handed out (comments, empty events, other fields).
    quiet: usize,
}

/// The name of the empty event `Sse::next` hands out after every `QUIET_EVERY` bytes without
/// one, so that a stream of comments or blank events without end still comes back to its
/// reader, which counts those bytes against its budget; no reader passes it on.
const QUIET: &str = ":quiet";
const QUIET_EVERY: usize = 64 * 1024;

impl Sse {
    fn new(max: usize) -> Sse {
        Sse {
            max,
            line: Vec::new(),
            name: String::new(),
            data: Vec::new(),
            has_data: false,
            last_id: None,
            retry: None,
            quiet: 0,
        }
    }

    /// A new connection: the event in progress is dropped (the last id and retry stay).
    fn restart(&mut self) {
        self.line = Vec::new();
        self.name.clear();
        self.data = Vec::new();
        self.has_data = false;
    }

    /// The next event with data (`None` at the stream's end). Events whose data is empty or
    /// blank (priming events) are skipped.
    fn next(&mut self, body: &mut impl BufRead) -> io::Result<Option<Event>> {
        loop {
            let room = self.max.saturating_sub(self.data.len()).saturating_add(FIELD_SLACK);
            match read_line(body, &mut self.line, room)? {
                Line::End => return Ok(None),
                Line::TooLong => return Err(self.over()),
                Line::Complete => {}
            }
            self.quiet += self.line.len() + 1;
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let event = if self.line.is_empty() { self.dispatch() } else { self.field().map(|()| None)? };
            if self.line.capacity() > KEEP_CAPACITY {
                self.line = Vec::new();
            }
            if event.is_some() {
                self.quiet = 0;
                return Ok(event);
            }
            if self.quiet >= QUIET_EVERY {
                self.quiet = 0;
                return Ok(Some(Event { name: QUIET.into(), data: Vec::new() }));
            }
        }
    }

    fn over(&self) -> io::Error {
        lie(format!("sent a message over {}", size(self.max)))
    }

    /// One `name: value` line (a line starting with `:` is a comment).
    fn field(&mut self) -> io::Result<()> {
        let colon = self.line.iter().position(|&b| b == b':').unwrap_or(self.line.len());
        let mut start = (colon + 1).min(self.line.len());
        if self.line.get(start) == Some(&b' ') {
            start += 1;
        }
        match &self.line[..colon] {
            b"data" => self.data_line(start)?,
            b"event" => self.name = String::from_utf8_lossy(&self.line[start..]).chars().take(64).collect(),
            b"id" if !self.line[start..].contains(&0) => {
                let id = std::str::from_utf8(&self.line[start..]).ok();
                self.last_id = id.filter(|id| visible(id, MAX_TOKEN)).map(str::to_string);
            }
            b"retry" => {
                let value = &self.line[start..];
                if !value.is_empty() && value.len() <= 9 && value.iter().all(u8::is_ascii_digit) {
                    let ms = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `data:` line joins the event's data (lines joined with LF), within `max`.
    fn data_line(&mut self, start: usize) -> io::Result<()> {
        let len = self.line.len() - start;
        if self.data.len() + usize::from(self.has_data) + len > self.max {
            return Err(self.over());
        }
        if self.has_data {
            self.data.push(b'\n');
            self.data.extend_from_slice(&self.line[start..]);
        } else {
            // The line becomes the data: a long message is never held twice.
            self.data = std::mem::take(&mut self.line);
            self.data.drain(..start);
        }
        self.has_data = true;
        Ok(())
    }

    /// An empty line ends the event: it is returned when its data is not blank.
    fn dispatch(&mut self) -> Option<Event> {
        let name = std::mem::take(&mut self.name);
        let data = std::mem::take(&mut self.data);
        let had = std::mem::replace(&mut self.has_data, false);
        (had && !data.iter().all(u8::is_ascii_whitespace)).then_some(Event { name, data })
    }
}

/// How `read_line` ended.
#[derive(Debug, PartialEq)]
enum Line {
    Complete,
    /// Over the bound: what was read of it is consumed, the rest is not.
    TooLong,
    /// The end of the input (a line without its LF is dropped).
    End,
}

/// Reads one line (without its LF) into `out`, at most `max` bytes.
fn read_line(r: &mut dyn BufRead, out: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    out.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (take, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if out.len() + take > max {
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(found));
        if found {
            return Ok(Line::Complete);
        }
    }
}

/// Skips the rest of a line; whether its LF came (false: the input ended).
fn skip_line(r: &mut dyn BufRead) -> io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// Whether register closed the pipe (only ever asked while the pipe is not being read).
fn hung_up(fd: RawFd) -> bool {
    crate::sys::poll(&[(fd, false)], Some(Duration::ZERO)).is_ok_and(|ready| ready[0].hangup)
}

/// What the adapter looks at in a message from the upstream, found without building it.
struct Rpc<'a> {
    /// `"jsonrpc": "2.0"`.
    jsonrpc: bool,
    /// The id's JSON text.
    id: Option<&'a [u8]>,
    /// Whether it has a method (a request or a notification, not an answer).
    method: bool,
    /// The result's JSON text.
    result: Option<&'a [u8]>,
}

impl<'a> Rpc<'a> {
    /// `None` when `text` is not JSON; what is not an object has none of the fields.
    fn of(text: &'a [u8]) -> Option<Rpc<'a>> {
        valid(text).then(|| Rpc::within(text))?
    }

    /// `of` for a text already found `valid` (an element of a valid batch).
    fn within(text: &'a [u8]) -> Option<Rpc<'a>> {
        let [jsonrpc, id, method, result] = fields(text, ["jsonrpc", "id", "method", "result"])?;
        Some(Rpc {
            jsonrpc: jsonrpc.is_some_and(|v| string_is(v, "2.0")),
            id,
            method: method.is_some(),
            result,
        })
    }
}

/// The JSON texts of the members named `names` of the object `text`, a `valid` text (the last
/// of each, as serde_json keeps it); all `None` when `text` is no object.
fn fields<'a, const N: usize>(text: &'a [u8], names: [&str; N]) -> Option<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    find_fields(text, &names, &mut found)?;
    Some(found)
}

/// `fields`, for any number of names.
fn find_fields<'a>(text: &'a [u8], names: &[&str], found: &mut [Option<&'a [u8]>]) -> Option<()> {
    members(text, &mut |key, value| {
        if let Some(at) = key.and_then(|k| names.iter().position(|name| string_is(k, name))) {
            found[at] = Some(value);
        }
    })
}

/// Whether the JSON text `text` is the string `want`.
fn string_is(text: &[u8], want: &str) -> bool {
    let plain = text.len() == want.len() + 2 && text.get(1..=want.len()) == Some(want.as_bytes());
    plain || (text.contains(&b'\\') && short_string(text, want.len()).as_deref() == Some(want))
}

/// The JSON text `text` decoded, when it is a string of at most `max` bytes (its text is then at
/// most six bytes a byte, escaped, and quoted: a longer one is not decoded).
fn short_string(text: &[u8], max: usize) -> Option<String> {
    if text.len() > 6 * max + 2 {
        return None;
    }
    string(text).filter(|s| s.len() <= max)
}

/// The JSON text `text` decoded, when it is a string (anything else is not read).
fn string(text: &[u8]) -> Option<String> {
    match text.first() {
        Some(b'"') => match serde_json::from_slice(text) {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `text` is one JSON value, exactly as `serde_json::from_slice::<Value>` reads one:
/// it is read by that same parser (`Check`), which builds nothing of it (no memory but a copy of
/// a string with escapes, however large it is).
fn valid(text: &[u8]) -> bool {
    serde_json::from_slice::<Check>(text).is_ok()
}

/// Any JSON value, read by serde_json's parser as it reads a `Value` (`deserialize_any`: the
/// same numbers, strings, nesting limit and errors) and kept nowhere.
struct Check;

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
        d.deserialize_any(Check)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = Check;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_str<E>(self, _: &str) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_unit<E>(self) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
        while seq.next_element::<Check>()?.is_some() {}
        Ok(Check)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
        while map.next_entry::<Check, Check>()?.is_some() {}
        Ok(Check)
    }
}

/// `valid`, then `members`: what the tests call to compare with serde_json.
#[cfg(test)]
fn walk<'a>(text: &'a [u8], mut each: impl FnMut(Option<&'a [u8]>, &'a [u8])) -> Option<()> {
    valid(text).then_some(())?;
    members(text, &mut each)
}

/// Gives `each` the text of every member (with its key's text) or element at the top of the
/// JSON text `text`, in order; `text` is `valid` (anything else may be misread). Each is found
/// by serde_json reading it as `Check`: nothing of it is built.
fn members<'a>(text: &'a [u8], each: &mut dyn FnMut(Option<&'a [u8]>, &'a [u8])) -> Option<()> {
    let mut at = space(text, 0);
    let open = *text.get(at)?;
    if !matches!(open, b'{' | b'[') {
        return Some(());
    }
    at += 1;
    loop {
        at = space(text, at);
        match *text.get(at)? {
            b',' => {
                at += 1;
                continue;
            }
            b'}' | b']' => return Some(()),
            _ => {}
        }
        let key = match open {
            b'{' => {
                let end = skip(text, at)?;
                let key = &text[at..end];
                at = space(text, end) + 1; // the colon
                Some(key)
            }
            _ => None,
        };
        let start = space(text, at);
        at = skip(text, start)?;
        each(key, &text[start..at]);
    }
}

/// Where the JSON value at `at` in the valid text `text` ends.
fn skip(text: &[u8], at: usize) -> Option<usize> {
    let mut values = serde_json::Deserializer::from_slice(text.get(at..)?).into_iter::<Check>();
    values.next()?.ok()?;
    Some(at + values.byte_offset())
}

/// Where the JSON whitespace at `at` ends.
fn space(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
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

/// An I/O failure while reading: a lie (`InvalidData`) ends the adapter; a timeout or a broken
/// connection fails the exchange.
fn io_fail(e: io::Error) -> Fail {
    match e.kind() {
        io::ErrorKind::InvalidData => Fail::Fatal(e.to_string()),
        io::ErrorKind::TimedOut => Fail::Call(e.to_string()),
        io::ErrorKind::UnexpectedEof => {
            Fail::Call("closed the connection in the middle of its answer".into())
        }
        _ => Fail::Call(format!("broke the connection ({e})")),
    }
}

/// The upstream broke the rules: `why` completes "the upstream at URL …".
fn lie(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Whether `s` is 1 to `max` visible ASCII characters (what a session id may hold, and what may
/// go back in a header as it is).
fn visible(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
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

/// The start of what the upstream said, printable, for a log line or an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_CHARS * 4)]);
    let text: String =
        text.chars().take(EXCERPT_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    text.trim().to_string()
}

/// `: "excerpt"` of a body, or nothing for an empty one.
fn quoted(body: &[u8]) -> String {
    match excerpt(body) {
        text if text.is_empty() => String::new(),
        text => format!(": {text:?}"),
    }
}

/// A byte count for people: `16 MiB`, `64 KiB`, `1000 bytes`.
fn size(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::{self, Receiver, Sender};

    const WAIT: Duration = Duration::from_secs(10);

    /// What the scripted upstream saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        /// The path and query.
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or(Value::Null)
        }

        fn rpc(&self) -> String {
            self.json()["method"].as_str().unwrap_or("").to_string()
        }
    }

    /// A scripted upstream on 127.0.0.1: `script` answers each request (one per connection), for
    /// at most 64 connections and 30 s. Returns its address and what it saw, in order.
    fn upstream(script: impl Fn(&Seen, &mut TcpStream) + Send + Sync + 'static) -> (String, Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let (seen_tx, seen) = mpsc::channel();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut served = 0;
            while served < 64 && Instant::now() < deadline {
                let Ok((sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                served += 1;
                let (script, seen_tx) = (script.clone(), seen_tx.clone());
                std::thread::spawn(move || serve_one(sock, &*script, &seen_tx));
            }
        });
        (addr, seen)
    }

    fn serve_one(mut sock: TcpStream, script: &(dyn Fn(&Seen, &mut TcpStream) + Sync), seen: &Sender<Seen>) {
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let Some(request) = read_request(&mut sock) else { return };
        let _ = seen.send(request.clone());
        script(&request, &mut sock);
    }

    fn read_request(sock: &mut TcpStream) -> Option<Seen> {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") && raw.len() < 64 * 1024 {
            if sock.read(&mut byte).ok()? == 0 {
                return None;
            }
            raw.push(byte[0]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&raw).ok()?;
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).to_string()))
            .collect();
        let length = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        let mut body = vec![0u8; length.map_or(0, |(_, v)| v.parse().unwrap())];
        sock.read_exact(&mut body).ok()?;
        Some(Seen { method: req.method?.into(), path: req.path?.into(), headers, body })
    }

    fn respond(sock: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) {
        let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(body);
        let _ = sock.write_all(text.as_bytes());
    }

    fn answer(sock: &mut TcpStream, seen: &Seen, headers: &[(&str, &str)], result: Value) {
        let body = json!({"jsonrpc": "2.0", "id": seen.json()["id"], "result": result}).to_string();
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        respond(sock, "200 OK", &all, &body);
    }

    /// Starts an event stream; chunked or until the close.
    fn sse_head(sock: &mut TcpStream, chunked: bool) {
        let framing = if chunked { "Transfer-Encoding: chunked\r\n" } else { "" };
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{framing}\r\n");
        let _ = sock.write_all(head.as_bytes());
    }

    fn chunk(sock: &mut TcpStream, text: &str) {
        let _ = sock.write_all(format!("{:x}\r\n{text}\r\n", text.len()).as_bytes());
    }

    /// Waits (10 s at most) for the client to close the connection; whether it did.
    fn closed_by_client(sock: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        match sock.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        }
    }

    /// The adapter as register sees it, with deadlines on every read.
    struct Register {
        stdin: Option<ChildStdin>,
        out: BufReader<UnixStream>,
        ended: Arc<Ended>,
    }

    fn adapter(url: &str, transport: HttpTransport, max_message: usize) -> Register {
        let headers = vec![("Authorization".to_string(), "Bearer t0ken".to_string())];
        let spec = HttpSpec { url: url.into(), headers, transport, tls: Default::default(), max_message };
        let child = start(spec, "test").unwrap();
        let out = UnixStream::from(OwnedFd::from(child.stdout));
        out.set_read_timeout(Some(WAIT)).unwrap();
        Register { stdin: Some(child.stdin), out: BufReader::new(out), ended: child.ended }
    }

    impl Register {
        fn send(&mut self, msg: Value) {
            writeln!(self.stdin.as_mut().unwrap(), "{msg}").unwrap();
        }

        /// The next line (10 s at most).
        fn line(&mut self) -> Value {
            let mut line = String::new();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "the adapter ended: {:?}", self.ended.get());
            serde_json::from_str(&line).unwrap()
        }

        /// Reads to the end (10 s at most): the lines still said, and why the adapter ended.
        fn end(&mut self) -> (Vec<Value>, (i32, String)) {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if self.out.read_line(&mut line).expect("the adapter ends within 10 s") == 0 {
                    break;
                }
                lines.push(serde_json::from_str(&line).unwrap());
            }
            (lines, self.ended.get().expect("`ended` is set before stdout closes"))
        }
    }

    fn request(id: u64, method: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}})
    }

    fn initialize() -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    }

    fn initialized() -> Value {
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    }

    /// An upstream with a session: `initialize` gives `s-1` and 2025-06-18, notifications get 202,
    /// GET 405, DELETE 200, and any other request `{"ok": method}`.
    fn session_script(seen: &Seen, sock: &mut TcpStream) {
        match (seen.method.as_str(), seen.rpc().as_str()) {
            ("GET", _) => respond(sock, "405 Method Not Allowed", &[], ""),
            ("DELETE", _) => respond(sock, "200 OK", &[], ""),
            (_, "initialize") => {
                let result = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "u", "version": "1"}});
                answer(sock, seen, &[("Mcp-Session-Id", "s-1")], result);
            }
            _ if seen.json().get("id").is_none() => respond(sock, "202 Accepted", &[], ""),
            (_, method) => answer(sock, seen, &[], json!({"ok": method})),
        }
    }

    fn next(seen: &Receiver<Seen>) -> Seen {
        seen.recv_timeout(WAIT).expect("the upstream saw a request")
    }

    #[test]
    fn json_answers_and_the_session_headers_after_initialize_with_202_for_notifications() {
        let (addr, seen) = upstream(session_script);
        let mut reg = adapter(&format!("http://{addr}/api/mcp?token=x"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        assert_eq!(reg.line()["result"]["protocolVersion"], "2025-06-18");
        reg.send(initialized());
        reg.send(request(2, "tools/list"));
        assert_eq!(
            reg.line(),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"ok": "tools/list"}}),
            "no line for the 202"
        );

        let init = next(&seen);
        assert_eq!(
            (init.method.as_str(), init.path.as_str(), init.rpc().as_str()),
            ("POST", "/api/mcp?token=x", "initialize")
        );
        assert_eq!(init.header("host"), Some(addr.as_str()), "Host is the upstream's own authority");
        assert_eq!(init.header("origin"), None);
        assert_eq!(init.header("accept"), Some("application/json, text/event-stream"));
        assert_eq!(init.header("content-type"), Some("application/json"));
        assert_eq!(init.header("authorization"), Some("Bearer t0ken"), "the entry's own headers");
        assert_eq!((init.header("mcp-session-id"), init.header("mcp-protocol-version")), (None, None));
        let note = next(&seen);
        assert_eq!(note.rpc(), "notifications/initialized", "initialized goes out before the next request");
        assert_eq!(note.header("mcp-session-id"), Some("s-1"));
        let mut rest = [next(&seen), next(&seen)];
        rest.sort_by_key(|s| s.method.clone());
        let [get, list] = rest;
        assert_eq!((list.rpc().as_str(), list.header("mcp-session-id")), ("tools/list", Some("s-1")));
        assert_eq!(list.header("mcp-protocol-version"), Some("2025-06-18"));
        assert_eq!(list.header("host"), Some(addr.as_str()));
        assert_eq!((get.method.as_str(), get.header("accept")), ("GET", Some("text/event-stream")));
        assert_eq!(
            (get.header("mcp-session-id"), get.header("mcp-protocol-version")),
            (Some("s-1"), Some("2025-06-18"))
        );

        reg.stdin = None;
        let (lines, ended) = reg.end();
        assert_eq!((lines, ended), (vec![], (0, "stopped".to_string())));
        let delete = next(&seen);
        assert_eq!((delete.method.as_str(), delete.header("mcp-session-id")), ("DELETE", Some("s-1")));
    }

    #[test]
    fn an_sse_answer_passes_a_server_request_first_and_its_stream_is_closed_after_the_answer() {
        let (closed_tx, closed) = mpsc::channel();
        let (addr, _seen) = upstream(move |_, sock| {
            sse_head(sock, true);
            chunk(sock, "id: e1\ndata: \n\n: keep-alive\n\n");
            let ask = json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {"maxTokens": 5}});
            chunk(sock, &format!("event: message\r\ndata: {ask}\r\n\r\n"));
            chunk(sock, "id: e2\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":7,\"result\":{\"content\":[]}}\n");
            chunk(sock, "\n");
            let _ = closed_tx.send(closed_by_client(sock));
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(7, "tools/call"));
        assert_eq!(reg.line()["method"], "sampling/createMessage");
        assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 7, "result": {"content": []}}));
        assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the stream is closed once it answered");
    }

    #[test]
    fn the_get_stream_is_reopened_after_the_last_event_id() {
        let gets = AtomicUsize::new(0);
        let (addr, seen) = upstream(move |seen, sock| match seen.method.as_str() {
            "GET" => {
                let n = gets.fetch_add(1, Ordering::SeqCst);
                sse_head(sock, true);
                let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"n": n}});
                chunk(sock, &format!("retry: 100\nid: g{n}\ndata: {note}\n\n"));
                match n {
                    0 => chunk(sock, ""), // the stream ends: reopened
                    _ => {
                        closed_by_client(sock);
                    }
                }
            }
            _ => session_script(seen, sock),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        reg.line();
        reg.send(initialized());
        assert_eq!(reg.line()["params"]["n"], 0);
        assert_eq!(reg.line()["params"]["n"], 1);
        let gets: Vec<Seen> = (0..4).map(|_| next(&seen)).filter(|s| s.method == "GET").collect();
        assert_eq!(gets.len(), 2);
        assert_eq!((gets[0].header("last-event-id"), gets[1].header("last-event-id")), (None, Some("g0")));
    }

    #[test]
    fn a_post_stream_that_ends_before_its_answer_is_resumed() {
        let (addr, seen) = upstream(|seen, sock| match (seen.method.as_str(), seen.rpc().as_str()) {
            ("POST", "tools/call") => {
                sse_head(sock, false);
                let _ = sock.write_all(b"retry: 100\nid: p1\ndata:\n\n"); // then the connection closes
            }
            ("GET", _) if seen.header("last-event-id") == Some("p1") => {
                sse_head(sock, false);
                let answer = json!({"jsonrpc": "2.0", "id": 9, "result": {"resumed": true}});
                let _ = sock.write_all(format!("id: p2\ndata: {answer}\n\n").as_bytes());
                closed_by_client(sock);
            }
            _ => session_script(seen, sock),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        reg.line();
        reg.send(request(9, "tools/call"));
        assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 9, "result": {"resumed": true}}));
        let resumed = (0..3).map(|_| next(&seen)).find(|s| s.method == "GET").unwrap();
        assert_eq!(resumed.header("mcp-session-id"), Some("s-1"));
    }

    #[test]
    fn a_404_for_the_session_ends_the_adapter() {
        let (addr, _seen) = upstream(|seen, sock| match seen.rpc().as_str() {
            "tools/list" => respond(sock, "404 Not Found", &[], "no such session"),
            _ => session_script(seen, sock),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        reg.line();
        reg.send(request(2, "tools/list"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert!(why.contains("answered 404 for its session") && why.contains("restarted"), "{why}");
        assert!(why.starts_with(&format!("the upstream at http://{addr}/mcp ")), "{why}");
    }

    #[test]
    fn a_redirect_is_not_followed_and_the_adapter_stays_usable() {
        let calls = AtomicUsize::new(0);
        let (addr, seen) = upstream(move |seen, sock| match calls.fetch_add(1, Ordering::SeqCst) {
            0 => respond(sock, "302 Found", &[("Location", "http://elsewhere.invalid/mcp")], ""),
            _ => answer(sock, seen, &[], json!({})),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(3, "tools/list"));
        let error = reg.line();
        assert_eq!(error["id"], 3);
        assert!(error["error"]["message"].as_str().unwrap().contains("redirect"), "{error}");
        reg.send(request(4, "tools/list"));
        assert_eq!(reg.line()["id"], 4);
        assert_eq!(next(&seen).rpc(), "tools/list");
        assert_eq!(next(&seen).rpc(), "tools/list");
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "nothing went elsewhere");
    }

    #[test]
    fn an_oversized_event_ends_the_adapter_without_reading_it_all() {
        let (sent_tx, sent) = mpsc::channel();
        let (addr, _seen) = upstream(move |_, sock| {
            sse_head(sock, false);
            let block = "x".repeat(64 * 1024);
            let mut written = sock.write_all(b"data: ").map_or(0, |()| 6);
            while written < 64 << 20 && sock.write_all(block.as_bytes()).is_ok() {
                written += block.len();
            }
            let _ = sent_tx.send(written);
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, 1024);
        reg.send(request(1, "tools/list"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert!(why.contains("sent a message over 1 KiB"), "{why}");
        let written = sent.recv_timeout(WAIT).unwrap();
        assert!(written < 32 << 20, "the adapter stopped reading at the bound ({written} bytes sent)");
    }

    #[test]
    fn garbage_ends_the_adapter_with_a_clear_reason() {
        let (addr, _seen) = upstream(|_, sock| {
            respond(sock, "200 OK", &[("Content-Type", "application/json")], "<html>oops</html>");
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(1, "tools/list"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert!(why.contains("not JSON-RPC") && why.contains("<html>oops</html>"), "{why}");

        let (addr, _seen) = upstream(|_, sock| {
            sse_head(sock, true);
            chunk(sock, "data: {\"no\": \"envelope\"}\n\n");
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(1, "tools/list"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert!(why.contains("not JSON-RPC"), "{why}");
    }

    #[test]
    fn errors_answer_the_request_and_the_adapter_stays_usable() {
        let (addr, _seen) = upstream(|seen, sock| match seen.json()["id"].as_u64() {
            Some(1) => respond(sock, "500 Internal Server Error", &[], "boom\n"),
            Some(2) => respond(sock, "401 Unauthorized", &[("WWW-Authenticate", "Bearer")], ""),
            Some(3) => {
                let error = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32601, "message": "no such method"}});
                respond(sock, "404 Not Found", &[("Content-Type", "application/json")], &error.to_string());
            }
            _ => answer(sock, seen, &[], json!({})),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(1, "tools/list"));
        let error = reg.line();
        assert_eq!((error["id"].clone(), error["error"]["code"].clone()), (json!(1), json!(INTERNAL_ERROR)));
        assert!(error["error"]["message"].as_str().unwrap().contains("HTTP 500: \"boom\""), "{error}");
        reg.send(request(2, "tools/list"));
        assert!(reg.line()["error"]["message"].as_str().unwrap().contains("HTTP 401"));
        reg.send(request(3, "nope"));
        let passed = reg.line();
        assert_eq!(
            (passed["id"].clone(), passed["error"]["code"].clone()),
            (json!(3), json!(-32601)),
            "its own error"
        );
        reg.send(request(4, "tools/list"));
        assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
    }

    #[test]
    fn a_2026_request_carries_its_own_headers_and_no_session() {
        let (addr, seen) = upstream(|seen, sock| match seen.rpc().as_str() {
            "initialize" => {
                let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "2026-07-28 only",
                                   "data": {"supported": ["2026-07-28"], "requested": "2025-06-18"}}});
                respond(sock, "400 Bad Request", &[("Content-Type", "application/json")], &error.to_string());
            }
            _ => answer(sock, seen, &[], json!({"resultType": "complete"})),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        assert_eq!(reg.line()["error"]["code"], -32022, "the refusal passes through as it is");
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}});
        reg.send(json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {"_meta": meta}}));
        assert_eq!(reg.line()["id"], 2);
        reg.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "résumé", "_meta": meta}}));
        assert_eq!(reg.line()["id"], 3);

        assert_eq!(next(&seen).rpc(), "initialize");
        let discover = next(&seen);
        assert_eq!(discover.header("mcp-protocol-version"), Some("2026-07-28"));
        assert_eq!(
            (discover.header("mcp-method"), discover.header("mcp-session-id")),
            (Some("server/discover"), None)
        );
        let call = next(&seen);
        assert_eq!(call.header("mcp-method"), Some("tools/call"));
        let encoded = format!("=?base64?{}?=", crate::codec::base64("résumé".as_bytes()));
        assert_eq!(call.header("mcp-name"), Some(encoded.as_str()));
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "no GET stream without initialized");
    }

    #[test]
    fn a_cancelled_call_has_its_stream_closed_and_the_cancellation_posted() {
        let (closed_tx, closed) = mpsc::channel();
        let (addr, seen) = upstream(move |seen, sock| match seen.rpc().as_str() {
            "tools/call" => {
                sse_head(sock, true);
                chunk(sock, "id: 1\ndata:\n\n");
                let _ = closed_tx.send(closed_by_client(sock));
            }
            _ => session_script(seen, sock),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        reg.line();
        reg.send(request(5, "tools/call"));
        assert_eq!(next(&seen).rpc(), "initialize");
        assert_eq!(next(&seen).rpc(), "tools/call");
        reg.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}));
        assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the cancelled call's stream is closed");
        let cancel = next(&seen);
        assert_eq!(
            (cancel.rpc().as_str(), cancel.header("mcp-session-id")),
            ("notifications/cancelled", Some("s-1"))
        );
        reg.send(request(6, "ping"));
        assert_eq!(reg.line()["id"], 6, "no error answer for the cancelled call");
    }

    /// With every place taken and the queue full, the reader stops (what follows, a
    /// cancellation here, is not read), and closing the pipe still ends the adapter at once.
    #[test]
    fn a_full_queue_stops_the_reading_and_closing_the_pipe_still_ends_the_adapter() {
        let (addr, seen, closed) = hanging_upstream();
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        for id in 0..(MAX_IN_FLIGHT + MAX_QUEUED) as u64 + 1 {
            reg.send(request(id, "tools/call"));
        }
        reg.send(cancel(0));
        for _ in 0..MAX_IN_FLIGHT {
            assert_eq!(next(&seen).rpc(), "tools/call");
        }
        assert!(seen.recv_timeout(Duration::from_millis(500)).is_err(), "at most {MAX_IN_FLIGHT} in flight");
        assert!(closed.try_recv().is_err(), "the cancellation behind the full queue is not read");
        let asked = Instant::now();
        reg.stdin = None;
        let (lines, ended) = reg.end();
        assert_eq!((lines, ended), (vec![], (0, "stopped".to_string())));
        assert!(asked.elapsed() < Duration::from_secs(3), "ended in {:?}", asked.elapsed());
        assert_eq!(closed.recv_timeout(WAIT), Ok(true), "ending closed the calls");
    }

    #[test]
    fn the_queues_are_bounded_in_messages_and_bytes_and_a_cancelled_request_leaves() {
        let call = |id: u64, pad: usize| {
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"pad": "x".repeat(pad)}});
            Call::new(msg.to_string().into_bytes()).unwrap()
        };
        let mut queue = Queue::default();
        let big = call(0, 1000);
        let len = big.body.len();
        assert!(queue.has_room(len, 10), "an empty queue takes any message");
        queue.push(big);
        assert!(!queue.has_room(len, 2 * len - 1) && queue.has_room(len, 2 * len), "bytes");
        for id in 1..MAX_QUEUED as u64 {
            queue.push(call(id, 0));
        }
        assert!(!queue.has_room(1, usize::MAX), "{MAX_QUEUED} messages at most");
        assert!(queue.cancel("0") && !queue.cancel("0") && !queue.cancel("\"0\""));
        let left: usize = (1..MAX_QUEUED as u64).map(|id| call(id, 0).body.len()).sum();
        assert_eq!((queue.waiting.len(), queue.bytes), (MAX_QUEUED - 1, left));
        assert!(queue.has_room(len, usize::MAX));
        let mut init = Call::new(initialize().to_string().into_bytes()).unwrap();
        init.key = Some("init".into());
        queue.push(init);
        assert!(queue.cancel("init"), "an ordered request is cancelled in place");
        let keys: Vec<(Option<String>, bool)> =
            std::iter::from_fn(|| queue.pop()).map(|c| (c.key, c.dropped)).skip(MAX_QUEUED - 2).collect();
        assert_eq!(
            keys,
            [(Some("63".into()), false), (Some("init".into()), true)],
            "in order; marked dropped"
        );
        assert_eq!(queue.bytes, 0);
    }

    /// What register writes is read without being built: a request's parts, a cancellation's
    /// target, a 2026-07-28 request's version and name.
    #[test]
    fn a_message_from_register_is_read_for_its_parts() {
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        let msg = json!({"jsonrpc": "2.0", "id": "a\u{e9}", "method": "tools/call", "params": {"name": "n\u{e9}", "_meta": meta, "arguments": {"deep": [[[1]]]}}});
        let call = Call::new(msg.to_string().into_bytes()).unwrap();
        assert_eq!(
            (call.kind(), call.id.clone(), call.key.as_deref()),
            (Kind::Request, Some(json!("a\u{e9}")), Some("\"a\u{e9}\""))
        );
        assert_eq!(
            (call.method.as_deref(), call.modern.as_deref(), call.name.as_deref()),
            (Some("tools/call"), Some("2026-07-28"), Some("n\u{e9}"))
        );
        let cancel = Call::new(
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId": 7 }}"#.to_vec(),
        )
        .unwrap();
        assert_eq!((cancel.kind(), cancel.cancels.as_deref(), cancel.key), (Kind::Other, Some("7"), None));
        let answer = Call::new(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#.to_vec()).unwrap();
        assert_eq!((answer.kind(), answer.id, answer.method), (Kind::Other, None, None), "a response");
        assert!(Call::new(b"{\"id\":1,}".to_vec()).is_none());
    }

    /// `walk` accepts exactly what `serde_json::from_slice::<Value>` accepts, and finds the top
    /// level's members and elements.
    #[test]
    fn walking_reads_json_exactly_as_serde_json_does() {
        let nested = |n: usize, open: &str, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
        let mut cases: Vec<Vec<u8>> = [
            "0",
            "-0",
            "1.5e-3",
            "1E+2",
            "-12.0",
            "1e308",
            "1e-400",
            "0e999999",
            "123456789012345678901234567890",
            r#""a\"b\\\/\b\f\n\r\t\u00e9""#,
            r#""\ud83d\ude00""#,
            "\"\u{e9}\u{1F600}\"",
            "[]",
            "{}",
            " [ 1 , 2 ]\n",
            r#"{"a":{"b":[true,false,null]},"":0,"a":1}"#,
            "[1,[2,[3]],{}]",
            "\"\u{7f}\"",
            r#"{"a" :1 , "b": [ ] }"#,
            "",
            " ",
            "01",
            "-01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "1e309",
            "-1e309",
            "[01]",
            "NaN",
            "Infinity",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "[}",
            "{]",
            "[1]]",
            "[1] x",
            "{\"a\":1}}",
            "tru",
            "truex",
            "nul",
            "[",
            "{\"a\":",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800\n""#,
            r#""\ud800x""#,
            r#""\x""#,
            r#""\u12g4""#,
            r#""\u""#,
            "\"a",
            "\"tab\there\"",
            "\"nl\nhere\"",
            "\"\u{1f}\"",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        cases.extend(
            [&b"\"\xff\""[..], b"[\"\xc3\"]", b"\"\xed\xa0\x80\"", b"\xef\xbb\xbf1"].map(<[u8]>::to_vec),
        );
        for digits in [300, 308, 309, 400] {
            cases.push(format!("1{}", "0".repeat(digits)).into_bytes());
            cases.push(format!("-2{}.5", "0".repeat(digits)).into_bytes());
        }
        for n in [1, 126, 127, 128, 200] {
            cases.push(nested(n, "[", "]").into_bytes());
            cases.push(nested(n, "{\"a\":", "}").into_bytes());
            cases.push(nested(n, "[{\"a\":[", "]}]").into_bytes());
        }
        for case in &cases {
            let ours = walk(case, |_, _| {}).is_some();
            let theirs = serde_json::from_slice::<Value>(case).is_ok();
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(case));
        }

        let text = br#" {"a" : [1, {"b": 2}], "\u0069d": "x", "a": null} "#;
        let mut top = Vec::new();
        walk(text, |key, value| top.push((key.map(<[u8]>::to_vec), value.to_vec()))).unwrap();
        let expected: [(Option<&[u8]>, &[u8]); 3] = [
            (Some(b"\"a\""), b"[1, {\"b\": 2}]"),
            (Some(br#""\u0069d""#), b"\"x\""),
            (Some(b"\"a\""), b"null"),
        ];
        assert_eq!(top, expected.map(|(k, v)| (k.map(<[u8]>::to_vec), v.to_vec())));
        let found: [Option<&[u8]>; 3] = [Some(b"null"), Some(b"\"x\""), None];
        assert_eq!(fields(text, ["a", "id", "z"]), Some(found), "the last of each; keys decoded");
        assert_eq!(fields(b"[1]", ["a"]), Some([None]));
        let mut elements = Vec::new();
        walk(b"[ {\"a\":1} ,\n[2] ]", |key, value| elements.push((key.is_none(), value.to_vec()))).unwrap();
        assert_eq!(elements, [(true, b"{\"a\":1}".to_vec()), (true, b"[2]".to_vec())]);
    }

    #[test]
    fn a_batch_is_passed_on_one_line_per_message() {
        let (addr, _seen) = upstream(|seen, sock| match seen.json()["id"].as_u64() {
            Some(5) => {
                let batch = "[{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"x\":\"a\\nb\"}},\n\t{\"jsonrpc\":\"2.0\",\r\n\"id\":5,\"result\":{}}]";
                respond(sock, "200 OK", &[("Content-Type", "application/json")], batch);
            }
            _ => respond(
                sock,
                "200 OK",
                &[("Content-Type", "application/json")],
                "[{\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{}}, 1]",
            ),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(5, "tools/call"));
        assert_eq!(
            reg.line(),
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"x": "a\nb"}})
        );
        assert_eq!(
            reg.line(),
            json!({"jsonrpc": "2.0", "id": 5, "result": {}}),
            "the answer found in the batch"
        );
        reg.send(request(6, "tools/call"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1), "nothing of a batch with an element that is not JSON-RPC");
        assert!(why.contains("not JSON-RPC"), "{why}");
    }

    #[test]
    fn closing_stdin_ends_the_adapter_promptly_while_a_post_and_the_delete_hang() {
        let (closed_tx, closed) = mpsc::channel();
        let (addr, seen) = upstream(move |seen, sock| match (seen.method.as_str(), seen.rpc().as_str()) {
            ("DELETE", _) => std::thread::sleep(Duration::from_secs(6)),
            (_, "tools/call") => {
                let _ = closed_tx.send(closed_by_client(sock));
            }
            _ => session_script(seen, sock),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        reg.line();
        reg.send(request(2, "tools/call"));
        assert_eq!(next(&seen).rpc(), "initialize");
        assert_eq!(next(&seen).rpc(), "tools/call");
        let asked = Instant::now();
        reg.stdin = None;
        let (lines, ended) = reg.end();
        assert_eq!((lines, ended), (vec![], (0, "stopped".to_string())));
        assert!(asked.elapsed() < DELETE_WAIT + Duration::from_secs(1), "ended in {:?}", asked.elapsed());
        assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the hanging POST's connection was closed");
        let delete = next(&seen);
        assert_eq!((delete.method.as_str(), delete.header("mcp-session-id")), ("DELETE", Some("s-1")));
    }

    /// Keeps an event stream open with a comment every 200 ms and never answers, until the client
    /// closes it (15 s at most); whether it did.
    fn pinging_until_closed(sock: &mut TcpStream) -> bool {
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut byte = [0u8; 1];
        for _ in 0..75 {
            if sock.write_all(b"8\r\n: ping\n\n\r\n").is_err() {
                return true;
            }
            match sock.read(&mut byte) {
                Ok(0) => return true,
                Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return true
                }
                _ => {}
            }
        }
        false
    }

    fn cancel(id: u64) -> Value {
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}})
    }

    /// Every call asks `roots/list` on its stream and answers only once that is answered (a POST of
    /// its own): with every place taken by a call, those answers still go.
    #[test]
    fn server_requests_inside_every_call_are_answered_while_all_places_are_busy() {
        let waiting: Arc<Mutex<HashMap<String, Sender<()>>>> = Arc::default();
        let (addr, _seen) = upstream(move |seen, sock| {
            let msg = seen.json();
            match msg["method"].as_str() {
                Some("tools/call") => {
                    let ask = format!("r{}", msg["id"]);
                    let (tx, rx) = mpsc::channel();
                    lock(&waiting).insert(ask.clone(), tx);
                    sse_head(sock, true);
                    chunk(
                        sock,
                        &format!(
                            "data: {}\n\n",
                            json!({"jsonrpc": "2.0", "id": ask, "method": "roots/list"})
                        ),
                    );
                    if rx.recv_timeout(WAIT).is_ok() {
                        let done = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"roots": "seen"}});
                        chunk(sock, &format!("data: {done}\n\n"));
                    }
                    closed_by_client(sock);
                }
                Some(_) => answer(sock, seen, &[], json!({})),
                None => {
                    respond(sock, "202 Accepted", &[], "");
                    let asked = msg["id"].as_str().and_then(|k| lock(&waiting).remove(k));
                    if let Some(tx) = asked {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        let calls = MAX_IN_FLIGHT as u64;
        for id in 0..calls {
            reg.send(request(id, "tools/call"));
        }
        let mut answered = Vec::new();
        for _ in 0..2 * calls {
            let line = reg.line();
            if line["method"] == "roots/list" {
                reg.send(json!({"jsonrpc": "2.0", "id": line["id"], "result": {"roots": []}}));
            } else {
                assert_eq!(line["result"]["roots"], "seen", "{line}");
                answered.push(line["id"].as_u64().unwrap());
            }
        }
        answered.sort_unstable();
        assert_eq!(answered, (0..calls).collect::<Vec<_>>());
        reg.send(request(99, "tools/list"));
        assert_eq!(reg.line()["id"], 99);
    }

    /// An upstream whose first `MAX_IN_FLIGHT` calls hang (keep-alives, never an answer) and
    /// whose other calls are answered; cancellations get 202. Each hanging call's connection
    /// reports whether the client closed it.
    fn hanging_upstream() -> (String, Receiver<Seen>, Receiver<bool>) {
        let (closed_tx, closed) = mpsc::channel();
        let closed_tx = Mutex::new(closed_tx);
        let (addr, seen) =
            upstream(move |seen, sock| match (seen.rpc().as_str(), seen.json()["id"].as_u64()) {
                ("tools/call", Some(id)) if id < MAX_IN_FLIGHT as u64 => {
                    sse_head(sock, true);
                    let closed = pinging_until_closed(sock);
                    let _ = lock(&closed_tx).send(closed);
                }
                ("tools/call", _) => answer(sock, seen, &[], json!({"late": true})),
                _ => respond(sock, "202 Accepted", &[], ""),
            });
        (addr, seen, closed)
    }

    /// With every place taken by a call that hangs, one more call waits, and the cancellations
    /// written after it are still read: each closes its call's stream, and the waiting call goes.
    #[test]
    fn cancellations_behind_a_waiting_call_are_read_and_free_the_places() {
        let (addr, seen, closed) = hanging_upstream();
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        let busy = MAX_IN_FLIGHT as u64;
        for id in 0..=busy {
            reg.send(request(id, "tools/call"));
        }
        for _ in 0..busy {
            assert_eq!(next(&seen).rpc(), "tools/call");
        }
        for id in 0..busy {
            reg.send(cancel(id));
        }
        for _ in 0..busy {
            assert_eq!(closed.recv_timeout(WAIT), Ok(true), "a cancelled call's stream is closed");
        }
        assert_eq!(
            reg.line(),
            json!({"jsonrpc": "2.0", "id": busy, "result": {"late": true}}),
            "no answer for the cancelled"
        );
        let rest: Vec<Seen> = (0..=busy).map(|_| next(&seen)).collect();
        assert_eq!(rest.iter().filter(|s| s.rpc() == "notifications/cancelled").count(), busy as usize);
    }

    /// A request cancelled while it waits for a place is dropped: neither it nor its cancellation
    /// reaches the upstream, and it gets no answer.
    #[test]
    fn a_request_cancelled_while_it_waits_is_never_posted_nor_answered() {
        let (addr, seen, closed) = hanging_upstream();
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        let busy = MAX_IN_FLIGHT as u64;
        for id in 0..busy + 2 {
            reg.send(request(id, "tools/call"));
        }
        for _ in 0..busy {
            next(&seen);
        }
        reg.send(cancel(busy));
        reg.send(cancel(0));
        assert_eq!(closed.recv_timeout(WAIT), Ok(true));
        assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": busy + 1, "result": {"late": true}}));
        let mut rest = vec![next(&seen), next(&seen)];
        rest.extend(seen.recv_timeout(Duration::from_millis(300)));
        let mut got: Vec<(String, Value)> = rest
            .iter()
            .map(|s| {
                let msg = s.json();
                let which =
                    if msg["id"].is_null() { msg["params"]["requestId"].clone() } else { msg["id"].clone() };
                (s.rpc(), which)
            })
            .collect();
        got.sort_by_key(|(rpc, _)| rpc.clone());
        assert_eq!(
            got,
            vec![("notifications/cancelled".into(), json!(0)), ("tools/call".into(), json!(busy + 1))]
        );
        reg.stdin = None;
        assert_eq!(reg.end(), (vec![], (0, "stopped".to_string())));
    }

    /// A notification answered with an event stream: the stream is dropped at once (not read to
    /// its end), so the messages after `notifications/initialized` do not wait for it.
    #[test]
    fn a_notification_answered_with_an_event_stream_holds_nothing() {
        let (closed_tx, closed) = mpsc::channel();
        let closed_tx = Mutex::new(closed_tx);
        let (addr, _seen) = upstream(move |seen, sock| match (seen.method.as_str(), seen.rpc().as_str()) {
            ("POST", "notifications/initialized") => {
                sse_head(sock, true);
                let _ = lock(&closed_tx).send(pinging_until_closed(sock));
            }
            _ => session_script(seen, sock),
        });
        let mut reg = adapter(&format!("http://{addr}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(initialize());
        reg.line();
        reg.send(initialized());
        reg.send(request(2, "tools/list"));
        assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 2, "result": {"ok": "tools/list"}}));
        assert_eq!(closed.recv_timeout(WAIT), Ok(true), "the notification's stream was closed");
    }

    /// An adapter with no thread of its own, and the far end of its output.
    fn bare_adapter(max_message: usize) -> (Arc<Adapter>, UnixStream) {
        let url = Url::parse("http://127.0.0.1:9/mcp").unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let ad = Adapter {
            name: "bare".into(),
            shown: shown(&url),
            url,
            headers: vec![],
            transport: HttpTransport::Streamable,
            tls: None,
            max_message,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            conns: Mutex::new(Conns::default()),
            ends: [ours.try_clone().unwrap(), ours.try_clone().unwrap()],
            out: Mutex::new(ours),
            stopping: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            said_credentials: AtomicBool::new(false),
            said_redirect: AtomicBool::new(false),
            ended: Arc::default(),
        };
        (Arc::new(ad), theirs)
    }

    /// A message of about `len` bytes answering id `id`, whose result holds `[0,0,…]`.
    fn zeros(id: u64, len: usize) -> Vec<u8> {
        let mut msg = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"zeros":["#).into_bytes();
        while msg.len() < len {
            msg.extend_from_slice(b"0,\n");
        }
        msg.extend_from_slice(b"0]}}");
        msg
    }

    /// This process's peak resident memory, in bytes.
    fn peak_resident() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
    }

    const LARGE: usize = 14 << 20;
    const AT_ONCE: u64 = 4;

    /// Run alone in a process of its own by the test below: `AT_ONCE` workers pass on a
    /// `LARGE` message each at the same time (the last a batch of two halves); says how much
    /// memory that took beyond the messages themselves, and how many lines came out.
    #[test]
    #[ignore = "run in a process of its own by checking_large_messages_at_once_takes_little_more_than_them"]
    fn large_messages_at_once() {
        let mut messages: Vec<Vec<u8>> = (0..AT_ONCE - 1).map(|id| zeros(id, LARGE)).collect();
        let mut batch = b"[".to_vec();
        batch.extend(zeros(AT_ONCE, LARGE / 2));
        batch.extend_from_slice(b",\n");
        batch.extend(zeros(AT_ONCE + 1, LARGE / 2));
        batch.push(b']');
        messages.push(batch);
        let (ad, mut theirs) = bare_adapter(16 << 20);
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut lines = 0;
            while let Ok(n @ 1..) = theirs.read(&mut buf) {
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
            lines
        });
        let before = peak_resident();
        let start = Arc::new(std::sync::Barrier::new(messages.len()));
        let workers: Vec<_> = messages
            .into_iter()
            .map(|msg| {
                let (ad, start) = (ad.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    ad.deliver(msg, None).is_ok()
                })
            })
            .collect();
        let delivered = workers.into_iter().all(|w| w.join().unwrap());
        let took = peak_resident().saturating_sub(before);
        drop(ad);
        println!("measured: {delivered} {took} {}", drain.join().unwrap());
    }

    /// Sixteen workers each checking a 14 MiB `[0,0,…]` at once cost gigabytes when each built
    /// a `Value` (32 bytes an element): `AT_ONCE` of them at once, one a batch that is split,
    /// take less than two messages' worth of memory beyond the messages themselves.
    #[test]
    fn checking_large_messages_at_once_takes_little_more_than_them() {
        let name = "register::upstream_http::tests::large_messages_at_once";
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the measuring process took over 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let said = out.split("measured: ").nth(1).and_then(|l| l.lines().next());
        let said = said.unwrap_or_else(|| panic!("{out}"));
        let words: Vec<&str> = said.split_whitespace().collect();
        let (delivered, took, lines) = (words[0], words[1].parse::<usize>().unwrap(), words[2]);
        assert_eq!((delivered, lines), ("true", (AT_ONCE + 1).to_string().as_str()), "{said}");
        assert!(took < 2 * LARGE, "{said}");
    }

    /// What this module logs that holds `MARK`, and a probe that tells the capture is on.
    struct Capture;

    static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    const MARK: &str = "S3CRET";
    const PROBE: &str = "probe: the capture is on";
    const TARGET: &str = "mcpport::register::upstream_http";

    impl log::Log for Capture {
        fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
            meta.target().starts_with(TARGET)
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let line = record.args().to_string();
                if line.to_ascii_lowercase().contains(&MARK.to_ascii_lowercase()) || line == PROBE {
                    lock(&CAPTURED).push(line);
                }
            }
        }

        fn flush(&self) {}
    }

    /// The lines an adapter says and why it ended: `asks` are sent; with `answers`, after that many
    /// lines its stdin is closed (else it ends by itself).
    fn said_before_the_end(
        url: &str,
        transport: HttpTransport,
        asks: &[Value],
        answers: Option<usize>,
    ) -> Vec<String> {
        let headers = vec![("Authorization".to_string(), format!("Bearer {MARK}"))];
        let spec =
            HttpSpec { url: url.into(), headers, transport, tls: Default::default(), max_message: MAX_LINE };
        let child = match start(spec, "test") {
            Ok(child) => child,
            Err(e) => return vec![e.to_string()],
        };
        let out = UnixStream::from(OwnedFd::from(child.stdout));
        out.set_read_timeout(Some(WAIT)).unwrap();
        let mut reg = Register { stdin: Some(child.stdin), out: BufReader::new(out), ended: child.ended };
        for ask in asks {
            reg.send(ask.clone());
        }
        let mut lines: Vec<Value> = (0..answers.unwrap_or(0)).map(|_| reg.line()).collect();
        if answers.is_some() {
            reg.stdin = None;
        }
        let (rest, (_, why)) = reg.end();
        lines.extend(rest);
        let mut said: Vec<String> = lines.iter().map(Value::to_string).collect();
        said.push(why);
        said
    }

    /// A URL's query, a configured header's value, a session id, a `Location` or another header
    /// of the upstream's: none shows in a log line, an error answer or why the adapter ended.
    #[test]
    fn no_log_line_or_error_shows_a_query_or_a_header_value() {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::max_level().max(log::LevelFilter::Debug));
        log::debug!(target: TARGET, "{PROBE}");
        assert_eq!(*lock(&CAPTURED), [PROBE], "the capture is on");

        let (addr, _seen) = upstream(|seen, sock| {
            let id = seen.json()["id"].as_u64();
            let raw = |sock: &mut TcpStream, head: &str| {
                let _ = sock.write_all(format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n{{}}").as_bytes());
            };
            match (seen.method.as_str(), seen.path.split('?').next().unwrap_or(""), id) {
                ("GET", "/sse/other", _) => {
                    sse_head(sock, false);
                    let _ = sock.write_all(
                        format!("event: endpoint\ndata: http://evil.invalid/m?sid={MARK}\n\n").as_bytes(),
                    );
                    closed_by_client(sock);
                }
                ("GET", "/sse/bad", _) => {
                    sse_head(sock, false);
                    let _ = sock
                        .write_all(format!("event: endpoint\ndata: http://a b/m?sid={MARK}\n\n").as_bytes());
                    closed_by_client(sock);
                }
                ("GET", "/sse/moved", _) => {
                    respond(sock, "302 Found", &[("Location", &format!("/sse?{MARK}"))], "")
                }
                ("GET", _, _) => respond(sock, "405 Method Not Allowed", &[], ""),
                (_, _, Some(1)) => {
                    let result = json!({"protocolVersion": "2025-06-18", "capabilities": {}});
                    answer(sock, seen, &[("Mcp-Session-Id", &format!("{MARK}-session"))], result);
                }
                (_, _, Some(2)) => respond(
                    sock,
                    "302 Found",
                    &[("Location", &format!("http://elsewhere.invalid/mcp?code={MARK}"))],
                    "",
                ),
                (_, _, Some(3)) => respond(
                    sock,
                    "307 Temporary Redirect",
                    &[("Location", &format!("/other?code={MARK}"))],
                    "",
                ),
                (_, _, Some(4)) => respond(sock, "404 Not Found", &[], ""),
                (_, _, Some(5)) => raw(sock, &format!("Content-Type: text/{MARK}\r\nContent-Length: 2")),
                (_, _, Some(6)) => {
                    raw(sock, &format!("Content-Type: application/json\r\nTransfer-Encoding: {MARK}"))
                }
                (_, _, Some(7)) => {
                    raw(sock, &format!("Content-Type: application/json\r\nContent-Length: {MARK}"))
                }
                _ => respond(sock, "202 Accepted", &[], ""),
            }
        });
        let url = format!("http://{addr}/mcp?key={MARK}");
        let asks = [initialize(), request(2, "a"), request(3, "a")];
        let mut said = said_before_the_end(&url, HttpTransport::Streamable, &asks, Some(3));
        said.extend(said_before_the_end(
            &url,
            HttpTransport::Streamable,
            &[initialize(), request(4, "a")],
            None,
        ));
        for id in 5..=7 {
            said.extend(said_before_the_end(&url, HttpTransport::Streamable, &[request(id, "a")], None));
        }
        for path in ["other", "bad", "moved"] {
            let url = format!("http://{addr}/sse/{path}?key={MARK}");
            said.extend(said_before_the_end(&url, HttpTransport::Sse, &[request(8, "a")], None));
        }
        let url = format!("http://a b/mcp?key={MARK}");
        said.extend(said_before_the_end(&url, HttpTransport::Streamable, &[], None));
        assert_eq!(said.len(), 13, "{said:#?}");
        let captured = lock(&CAPTURED).clone();
        let mark = MARK.to_ascii_lowercase();
        let shown: Vec<&String> =
            said.iter().chain(&captured).filter(|s| s.to_ascii_lowercase().contains(&mark)).collect();
        assert!(shown.is_empty(), "{shown:#?}");
    }

    #[test]
    fn a_refused_connection_ends_the_adapter() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut reg = adapter(&format!("http://127.0.0.1:{port}/mcp"), HttpTransport::Streamable, MAX_LINE);
        reg.send(request(1, "tools/list"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert_eq!(why, format!("the upstream at http://127.0.0.1:{port}/mcp refused the connection"));
    }

    /// A legacy upstream: the GET stream names `endpoint`; POSTs there get 202 and their
    /// messages go to the stream, which answers each request with `{"echo": method}`.
    fn legacy_upstream(endpoint: &'static str) -> (String, Receiver<Seen>) {
        let (posted_tx, posted) = mpsc::channel::<Value>();
        let posted = Mutex::new(posted);
        upstream(move |seen, sock| match seen.method.as_str() {
            "GET" => {
                sse_head(sock, false);
                let _ = sock.write_all(format!("event: endpoint\ndata: {endpoint}\n\n").as_bytes());
                let posted = lock(&posted);
                while let Ok(msg) = posted.recv_timeout(WAIT) {
                    let answer =
                        json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"echo": msg["method"]}});
                    let _ = sock.write_all(format!("event: message\ndata: {answer}\n\n").as_bytes());
                }
            }
            _ => {
                respond(sock, "202 Accepted", &[], "Accepted");
                let _ = posted_tx.send(seen.json());
            }
        })
    }

    #[test]
    fn legacy_sse_posts_to_the_endpoint_and_answers_come_on_the_stream() {
        let (addr, seen) = legacy_upstream("/messages?session_id=abc");
        let mut reg = adapter(&format!("http://{addr}/sse"), HttpTransport::Sse, MAX_LINE);
        reg.send(request(1, "tools/list"));
        assert_eq!(reg.line(), json!({"jsonrpc": "2.0", "id": 1, "result": {"echo": "tools/list"}}));
        let get = next(&seen);
        assert_eq!(
            (get.method.as_str(), get.path.as_str(), get.header("accept")),
            ("GET", "/sse", Some("text/event-stream"))
        );
        let post = next(&seen);
        assert_eq!((post.method.as_str(), post.path.as_str()), ("POST", "/messages?session_id=abc"));
        assert_eq!(
            (post.header("host"), post.header("authorization")),
            (Some(addr.as_str()), Some("Bearer t0ken"))
        );
        reg.stdin = None;
        assert_eq!(reg.end(), (vec![], (0, "stopped".to_string())));
    }

    #[test]
    fn a_legacy_endpoint_on_another_host_is_refused() {
        let (addr, seen) = legacy_upstream("http://evil.invalid:8080/messages?session_id=abc");
        let mut reg = adapter(&format!("http://{addr}/sse"), HttpTransport::Sse, MAX_LINE);
        reg.send(request(1, "tools/list"));
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert!(why.contains("endpoint on another host (http://evil.invalid:8080/messages)"), "{why}");
        assert_eq!(next(&seen).method, "GET");
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "nothing was posted");
    }

    #[test]
    fn a_legacy_stream_that_ends_ends_the_adapter() {
        let (addr, _seen) = upstream(|_, sock| {
            sse_head(sock, true);
            chunk(sock, "event: endpoint\ndata: messages/?session_id=1\n\n");
            chunk(sock, "");
        });
        let mut reg = adapter(&format!("http://{addr}/sse"), HttpTransport::Sse, MAX_LINE);
        let (lines, (code, why)) = reg.end();
        assert_eq!((lines, code), (vec![], 1));
        assert!(why.ends_with("closed its event stream: the session is gone"), "{why}");
    }

    /// A loopback connection whose far end sends `raw` and closes: its head and body.
    fn response(raw: &'static [u8]) -> Result<(Head, Body), Fail> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let _ = sock.write_all(raw);
        });
        let mut conn = BufReader::new(Paced::new(Wire::Plain(TcpStream::connect(addr).unwrap())));
        conn.get_mut().pace(Some(Instant::now() + WAIT), None, "silent".into());
        let head = read_head(&mut conn)?;
        let body = Body::new(conn, &head, false)?;
        Ok((head, body))
    }

    fn body_of(raw: &'static [u8]) -> io::Result<Vec<u8>> {
        let (_, mut body) = response(raw).map_err(|f| io::Error::other(format!("{f:?}")))?;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    #[test]
    fn bodies_are_framed_strictly() {
        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(body_of(chunked).unwrap(), b"abcde", "an interim head is skipped, trailers dropped");
        assert_eq!(body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello").unwrap(), b"he");
        assert_eq!(body_of(b"HTTP/1.1 200 OK\r\n\r\nuntil the close").unwrap(), b"until the close");
        assert_eq!(body_of(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello").unwrap(), b"");
        let long_chunk =
            body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n");
        assert_eq!(long_chunk.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let bad_size = body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n");
        assert_eq!(bad_size.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let cut = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert_eq!(cut.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        for (raw, why) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "both"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "only chunked"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "bad Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", "bad Content-Length"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
        ] {
            match response(raw) {
                Err(Fail::Fatal(got)) => assert!(got.contains(why), "{got}"),
                other => panic!("{why}: {:?}", other.map(|(h, _)| h.status)),
            }
        }
    }

    #[test]
    fn a_response_head_is_bounded() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        while raw.len() <= MAX_HEAD {
            raw.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        match response(Vec::leak(raw)) {
            Err(Fail::Fatal(why)) => {
                assert!(why.contains("head over 16 KiB") || why.contains("header fields"), "{why}")
            }
            other => panic!("{:?}", other.map(|(h, _)| h.status)),
        }
    }

    /// A deadline (a response's or a notification's whole exchange) bounds the writes of the
    /// request and the reads of the answer, whatever the idle time allowed.
    #[test]
    fn a_deadline_bounds_writes_and_reads_whatever_the_idle_time() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3)); // reads nothing, says nothing
            drop(sock);
        });
        let mut wire = Paced::new(Wire::Plain(TcpStream::connect(addr).unwrap()));
        let soon = || Some(Instant::now() + Duration::from_millis(300));
        wire.pace(soon(), None, "late".into());
        let asked = Instant::now();
        let err = wire.write_all(&vec![0u8; 64 << 20]).unwrap_err();
        assert_eq!((err.kind(), err.to_string().as_str()), (io::ErrorKind::TimedOut, "late"));
        assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
        wire.pace(soon(), Some(Duration::from_secs(60)), "late".into());
        let asked = Instant::now();
        assert_eq!(wire.read(&mut [0u8; 16]).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(asked.elapsed() < Duration::from_secs(2), "{:?}", asked.elapsed());
        held.join().unwrap();
    }

    fn events(input: &[u8], max: usize) -> (Vec<Event>, io::Result<()>, Sse) {
        let mut sse = Sse::new(max);
        let mut reader = BufReader::with_capacity(7, input); // tiny reads: lines split anywhere
        let mut got = Vec::new();
        loop {
            match sse.next(&mut reader) {
                Ok(Some(event)) => got.push(event),
                Ok(None) => return (got, Ok(()), sse),
                Err(e) => return (got, Err(e), sse),
            }
        }
    }

    /// A stream of comments and blank events without end comes back to its reader every
    /// `QUIET_EVERY` bytes (so a POST stream's budget counts it), and carries nothing on.
    #[test]
    fn comments_without_end_come_back_as_quiet_events() {
        let input = b": keep-alive comment that goes on and on\ndata:\n\n".repeat(32 * 1024);
        let (got, end, _) = events(&input, 1024);
        assert!(end.is_ok());
        let quiet = got.iter().filter(|e| e.name == QUIET && e.data.is_empty()).count();
        assert_eq!(quiet, got.len(), "only quiet events");
        assert!(quiet >= input.len() / QUIET_EVERY - 1 && quiet <= input.len() / QUIET_EVERY, "{quiet}");
    }

    #[test]
    fn events_follow_the_sse_rules() {
        let input = b"id: p1\ndata: \n\n: comment\n\nevent: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\nevent: endpoint\ndata:/m?s=1\n\nretry: 1500\nid: last\ndata: {}\n\ndata: cut";
        let (got, end, sse) = events(input, 1024);
        end.unwrap();
        let expected = [
            Event { name: "message".into(), data: b"{\"a\":\n1}".to_vec() },
            Event { name: "endpoint".into(), data: b"/m?s=1".to_vec() },
            Event { name: String::new(), data: b"{}".to_vec() },
        ];
        assert_eq!(got, expected, "priming events and comments are skipped; an unfinished event is dropped");
        assert_eq!((sse.last_id.as_deref(), sse.retry), (Some("last"), Some(Duration::from_millis(1500))));
    }

    #[test]
    fn an_event_or_a_line_over_the_bound_is_refused() {
        let over = |input: &[u8]| {
            let (_, end, _) = events(input, 16);
            end.unwrap_err().to_string()
        };
        assert_eq!(over(b"data: 0123456789abcdefg\n\n"), "sent a message over 16 bytes");
        assert_eq!(
            over(b"data: 0123456789\ndata: 0123456\n\n"),
            "sent a message over 16 bytes",
            "lines add up"
        );
        let endless = [b'x'; 4096];
        assert_eq!(over(&endless), "sent a message over 16 bytes", "a line without its end");
        let (got, end, _) = events(b"data: 0123456789abcdef\n\n", 16);
        assert_eq!((got.len(), end.is_ok()), (1, true), "exactly the bound is fine");
    }

    #[test]
    fn endpoints_resolve_on_the_upstream_itself_only() {
        let base = Url::parse("http://10.0.0.2:8123/mcp_server/sse?x=1").unwrap();
        let at = |reference: &str| {
            resolve(&base, reference).map(|u| shown(&u) + &u.path[u.path.find('?').unwrap_or(u.path.len())..])
        };
        assert_eq!(at("/mcp_server/messages/abc").unwrap(), "http://10.0.0.2:8123/mcp_server/messages/abc");
        assert_eq!(
            at("messages/?session_id=1").unwrap(),
            "http://10.0.0.2:8123/mcp_server/messages/?session_id=1"
        );
        assert_eq!(at("?s=2").unwrap(), "http://10.0.0.2:8123/mcp_server/sse?s=2");
        assert_eq!(at("/m?next=http://x").unwrap(), "http://10.0.0.2:8123/m?next=http://x");
        assert_eq!(at("http://10.0.0.2:8123/m").unwrap(), "http://10.0.0.2:8123/m");
        for elsewhere in
            ["http://10.0.0.3:8123/m", "https://10.0.0.2:8123/m", "//evil.example/m", "http://10.0.0.2/m"]
        {
            assert!(at(elsewhere).unwrap_err().contains("another host"), "{elsewhere}");
        }
        assert!(at("").is_err() && at("/a b").is_err());
    }

    #[test]
    fn header_values_go_plain_or_in_base64() {
        assert_eq!(header_safe("tools/call"), "tools/call");
        assert_eq!(header_safe("file:///a b.txt"), "file:///a b.txt");
        for odd in ["résumé", " lead", "trail ", "line\r\nX-Evil: 1", "=?base64?x?=", ""] {
            let encoded = header_safe(odd);
            assert!(
                encoded.starts_with("=?base64?") && encoded.bytes().all(|b| b.is_ascii_graphic()),
                "{odd:?}"
            );
            assert_eq!(crate::gateway::front::modern::header_value(&encoded).as_deref(), Some(odd));
        }
        assert!(visible("s-1", MAX_TOKEN) && !visible("a b", MAX_TOKEN) && !visible("", MAX_TOKEN));
    }
}
