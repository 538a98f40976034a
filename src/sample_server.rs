//! `mcpport sample-server`: a small stdio MCP server built into the binary, so anyone can try
//! mcpport (and tests and benchmarks can run) without Node or Python.
//!
//! Tools: `echo`, `system_info` (uptime, load and memory from /proc, with structured output) and
//! `sleep` (waits, reporting progress, and honours cancellation). `--test-tools` adds tools that
//! exercise the gateway, and a prompt, a resource, a resource template, subscriptions (any URI is
//! accepted and recorded), completions and logging:
//!
//! - `fail` {message}: a tool error with that text.
//! - `image`: image and audio content.
//! - `add_tool`: adds a tool `dynamic_N` and announces `notifications/tools/list_changed`.
//! - `ask_client` {method, delay_ms?, cancel_after_ms?}: sends the client a sampling, elicitation
//!   or roots request through the gateway and returns its answer (or error) as text. `delay_ms`
//!   waits before sending; `cancel_after_ms` waits that long after sending, then sends
//!   `notifications/cancelled` for its request and returns "cancelled its request" at once.
//! - `touch` {uri, force?}: sends `notifications/resources/updated` for `uri` if it was subscribed
//!   to exactly, or always with `force: true`.
//! - `log` {level, message?, delay_ms?}: after `delay_ms`, sends `notifications/message` if the
//!   level set with `logging/setLevel` lets it through.
//!
//! Two stress tools are callable with `--test-tools` but not listed (so the listed surface, which
//! tests count, stays the same); reach them by name, e.g. on a per-server endpoint:
//!
//! - `spam_list_changed` {count}: writes `count` `notifications/tools/list_changed` as fast as it
//!   can, then returns "sent N".
//! - `flood` {count, bytes}: sends `count` `notifications/progress` with the call's progress token
//!   (if it has one) and a `message` of `bytes` characters each, then returns "flooded".
//!
//! Each call runs on its own thread, so a slow call never blocks a quick one. A cancel of a
//! request that is not in flight is ignored (and noted on stderr), and a request id used twice
//! in the session is reported on stderr ("was used before").

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::jsonrpc::{self, Message, INVALID_PARAMS, METHOD_NOT_FOUND};
use crate::protocol::{severity, SUPPORTED_VERSIONS as VERSIONS};
use crate::thread;
use crate::thread::lock;

/// How the sample server was started.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    /// Answer `initialize` with this version whatever the client asks (for old peers).
    pub protocol_version: Option<String>,
    pub test_tools: bool,
}

struct Server {
    cfg: Config,
    out: Mutex<io::Stdout>,
    cancelled: Mutex<HashSet<String>>,
    /// Ids of the requests being worked on, and of every request seen (to report reuse).
    calls: Mutex<Calls>,
    dynamic_tools: Mutex<usize>,
    /// Our own requests to the client, waiting for answers, by id.
    asked: Mutex<HashMap<String, mpsc::Sender<Value>>>,
    subscribed: Mutex<HashSet<String>>,
    log_level: Mutex<Option<String>>,
}

/// Request ids remembered to report reuse (forgotten all at once past this many).
const SEEN_IDS: usize = 100_000;

#[derive(Default)]
struct Calls {
    running: HashSet<String>,
    seen: HashSet<String>,
}

/// Serves MCP on stdin/stdout until stdin ends.
pub(crate) fn run(cfg: Config) -> Result<(), String> {
    let server = Arc::new(Server {
        cfg,
        out: Mutex::new(io::stdout()),
        cancelled: Mutex::new(HashSet::new()),
        calls: Mutex::new(Calls::default()),
        dynamic_tools: Mutex::new(0),
        asked: Mutex::new(HashMap::new()),
        subscribed: Mutex::new(HashSet::new()),
        log_level: Mutex::new(None),
    });
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match jsonrpc::parse(line.as_bytes()).and_then(jsonrpc::classify) {
            Ok(msg) => server.dispatch(msg),
            Err(e) => {
                eprintln!("sample-server: ignoring a line that is not JSON-RPC: {line}");
                if matches!(e, jsonrpc::Invalid::Parse(_)) {
                    server.write(&e.to_response());
                }
            }
        }
    }
    Ok(())
}

impl Server {
    /// The whole response to request `id`.
    fn reply(&self, id: &Value, method: &str, params: Option<Value>) -> Value {
        match self.answer(id, method, params.unwrap_or(json!({}))) {
            Ok(result) => jsonrpc::result_response(id, result),
            Err((code, message)) => jsonrpc::error_response(id, code, &message),
        }
    }

    fn dispatch(self: &Arc<Self>, msg: Message) {
        match msg {
            Message::Request { id, method, params } => {
                self.started(&id);
                let waits = may_wait(&method, params.as_ref());
                let me = self.clone();
                let work = move || {
                    me.write(&me.reply(&id, &method, params));
                    me.finished(&id);
                };
                // What answers at once is answered here, in order (so `logging/setLevel` holds for
                // the tool called right after it); a tool that may wait (for time,
                // or for the client's answer, which this thread reads) gets a thread of its own.
                if !waits {
                    return work();
                }
                if thread::spawn("sample-call", work).is_err() {
                    eprintln!("sample-server: cannot start a thread");
                }
            }
            Message::Notification { method, params } if method == "notifications/cancelled" => {
                let id = params.map(|p| p["requestId"].to_string()).unwrap_or_default();
                // Only a request in flight can be cancelled: a late cancel (its answer crossed
                // it) must not linger and hit a later request that reuses the id.
                let calls = lock(&self.calls);
                if calls.running.contains(&id) {
                    lock(&self.cancelled).insert(id);
                } else {
                    eprintln!("sample-server: ignoring a cancel of request {id}, which is not in flight");
                }
            }
            Message::Response { id, outcome } => {
                if let Some(tx) = lock(&self.asked).remove(&id.to_string()) {
                    let _ = tx.send(outcome.unwrap_or_else(|e| json!({"error": e})));
                }
            }
            Message::Notification { .. } => {}
        }
    }

    /// Notes a request in flight; reports an id used before (ids must be unique in a session).
    fn started(&self, id: &Value) {
        let key = id.to_string();
        let mut calls = lock(&self.calls);
        if calls.seen.len() >= SEEN_IDS {
            calls.seen.clear();
        }
        if !calls.seen.insert(key.clone()) {
            eprintln!("sample-server: request id {key} was used before in this session");
        }
        calls.running.insert(key);
    }

    fn finished(&self, id: &Value) {
        let key = id.to_string();
        let mut calls = lock(&self.calls);
        calls.running.remove(&key);
        lock(&self.cancelled).remove(&key);
    }

    /// Whether the test tools are on: asked for, and built in (the `test-tools` feature, left out
    /// of the static builds for routers, which then carry none of this code).
    fn test_tools(&self) -> bool {
        cfg!(feature = "test-tools") && self.cfg.test_tools
    }

    fn write(&self, msg: &Value) {
        let mut out = lock(&self.out);
        let _ = writeln!(out, "{msg}").and_then(|_| out.flush());
    }

    fn answer(&self, id: &Value, method: &str, params: Value) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => Ok(self.initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": self.tools()})),
            "tools/call" => self.call(id, &params),
            _ if self.test_tools() => self.answer_extra(method, &params),
            _ => Err((METHOD_NOT_FOUND, format!("method not found: {method}"))),
        }
    }

    /// Prompts, resources, completion and logging: the `--test-tools` surface beyond tools.
    fn answer_extra(&self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        let uri = params["uri"].as_str().unwrap_or_default();
        match method {
            "prompts/list" => Ok(json!({"prompts": [{"name": "greet", "description": "Greet someone.",
                "arguments": [{"name": "name", "description": "Who to greet", "required": true}]}]})),
            "prompts/get" if params["name"] == "greet" => {
                let who = params["arguments"]["name"].as_str().unwrap_or("world");
                Ok(
                    json!({"messages": [{"role": "user", "content": {"type": "text", "text": format!("Say hello to {who}.")}}]}),
                )
            }
            "prompts/get" => Err((INVALID_PARAMS, format!("Unknown prompt: {}", params["name"]))),
            "resources/list" => Ok(
                json!({"resources": [{"uri": "sample://readme", "name": "readme", "mimeType": "text/plain"}]}),
            ),
            "resources/templates/list" => {
                Ok(json!({"resourceTemplates": [{"uriTemplate": "sample://echo/{text}", "name": "echo"}]}))
            }
            "resources/read" => match uri.strip_prefix("sample://echo/") {
                _ if uri == "sample://readme" => Ok(resource_text(uri, "This is the mcpport sample server.")),
                Some(text) if !text.is_empty() => Ok(resource_text(uri, text)),
                _ => Err((-32002, format!("Resource not found: {uri}"))),
            },
            "resources/subscribe" => {
                lock(&self.subscribed).insert(uri.to_string());
                Ok(json!({}))
            }
            "resources/unsubscribe" => {
                lock(&self.subscribed).remove(uri);
                Ok(json!({}))
            }
            "completion/complete" => {
                let prefix = params["argument"]["value"].as_str().unwrap_or_default();
                let values: Vec<&str> =
                    ["alice", "bob", "carol"].into_iter().filter(|v| v.starts_with(prefix)).collect();
                Ok(json!({"completion": {"values": values, "total": values.len(), "hasMore": false}}))
            }
            "logging/setLevel" => {
                *lock(&self.log_level) = params["level"].as_str().map(String::from);
                Ok(json!({}))
            }
            _ => Err((METHOD_NOT_FOUND, format!("method not found: {method}"))),
        }
    }

    fn initialize(&self, params: &Value) -> Value {
        let asked = params["protocolVersion"].as_str().unwrap_or_default();
        let version = match &self.cfg.protocol_version {
            Some(v) => v.as_str(),
            None if VERSIONS.contains(&asked) => asked,
            None => VERSIONS[VERSIONS.len() - 1],
        };
        let capabilities = if self.test_tools() {
            r#"{"tools": {"listChanged": true}, "prompts": {}, "resources": {"subscribe": true}, "completions": {}, "logging": {}}"#
        } else {
            r#"{"tools": {"listChanged": true}}"#
        };
        // As text, like the tools: a fraction of the code `json!` makes of it.
        let mut result: Value = serde_json::from_str(INITIALIZE).unwrap_or_default();
        result["protocolVersion"] = json!(version);
        result["capabilities"] = serde_json::from_str(capabilities).unwrap_or_default();
        result["serverInfo"]["version"] = json!(env!("CARGO_PKG_VERSION"));
        result
    }

    fn tools(&self) -> Vec<Value> {
        // The three tools every build has, as JSON text: a declarative list, and a fraction of the
        // code `json!` makes of it (a router's binary notices).
        let mut tools: Vec<Value> = serde_json::from_str(BASE_TOOLS).unwrap_or_default();
        if self.test_tools() {
            tools.push(tool(
                "fail",
                "Return a tool error with the given message.",
                json!({"message": {"type": "string"}}),
                &[],
            ));
            tools.push(tool("image", "Return a 1x1 PNG image and a short WAV sound.", json!({}), &[]));
            tools.push(tool(
                "add_tool",
                "Add a tool named dynamic_N and announce the change.",
                json!({}),
                &[],
            ));
            let method = json!({"method": {"type": "string"}, "delay_ms": {"type": "integer"},
                "cancel_after_ms": {"type": "integer"}});
            let about = "Send sampling/createMessage, elicitation/create or roots/list to the client.";
            tools.push(tool(
                "touch",
                "Announce that a resource changed.",
                json!({"uri": {"type": "string"}, "force": {"type": "boolean"}}),
                &["uri"],
            ));
            let log_args = json!({"level": {"type": "string"}, "message": {"type": "string"},
                "delay_ms": {"type": "integer"}});
            tools.push(tool("log", "Send a log message at the given level.", log_args, &["level"]));
            tools.push(tool("ask_client", about, method, &["method"]));
            for n in 1..=*lock(&self.dynamic_tools) {
                tools.push(tool(&format!("dynamic_{n}"), "A tool added at run time.", json!({}), &[]));
            }
        }
        tools
    }

    fn call(&self, id: &Value, params: &Value) -> Result<Value, (i64, String)> {
        let args = &params["arguments"];
        let name = params["name"].as_str().unwrap_or_default();
        match name {
            "echo" => Ok(match args["text"].as_str() {
                Some(text) => text_result(text, false),
                None => text_result(
                    &format!("echo: the argument \"text\" (a string) is required; got {args}"),
                    true,
                ),
            }),
            "system_info" => Ok(system_info()),
            "sleep" => {
                Ok(self.sleep(id, args["seconds"].as_f64().unwrap_or(1.0), &params["_meta"]["progressToken"]))
            }
            "fail" if self.test_tools() => {
                Ok(text_result(args["message"].as_str().unwrap_or("failed on purpose"), true))
            }
            "image" if self.test_tools() => Ok(media()),
            "add_tool" if self.test_tools() => {
                let n = {
                    let mut count = lock(&self.dynamic_tools);
                    *count += 1;
                    *count
                };
                self.write(&jsonrpc::notification("notifications/tools/list_changed", json!({})));
                Ok(text_result(&format!("added dynamic_{n}"), false))
            }
            "touch" if self.test_tools() => {
                let uri = args["uri"].as_str().unwrap_or_default();
                let subscribed = lock(&self.subscribed).contains(uri);
                if subscribed || args["force"] == true {
                    self.write(&jsonrpc::notification(
                        "notifications/resources/updated",
                        json!({"uri": uri}),
                    ));
                }
                Ok(text_result(&format!("touched {uri} (subscribed: {subscribed})"), false))
            }
            "log" if self.test_tools() => {
                pause(&args["delay_ms"]);
                let level = args["level"].as_str().unwrap_or("info");
                let min = lock(&self.log_level).clone();
                let logged = min.is_some_and(|m| severity(level) >= severity(&m));
                if logged {
                    let p = json!({"level": level, "logger": "sample", "data": args["message"]});
                    self.write(&jsonrpc::notification("notifications/message", p));
                }
                Ok(text_result(&format!("logged: {logged}"), false))
            }
            "ask_client" if self.test_tools() => {
                pause(&args["delay_ms"]);
                let cancel_after = args["cancel_after_ms"].as_u64().map(Duration::from_millis);
                Ok(self.ask_client(args["method"].as_str().unwrap_or_default(), cancel_after))
            }
            "spam_list_changed" if self.test_tools() => {
                let count = args["count"].as_u64().unwrap_or(1);
                let line = jsonrpc::notification("notifications/tools/list_changed", json!({})).to_string();
                let mut out = lock(&self.out);
                for _ in 0..count {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
                Ok(text_result(&format!("sent {count}"), false))
            }
            "flood" if self.test_tools() => {
                let count = args["count"].as_u64().unwrap_or(1);
                let bytes = args["bytes"].as_u64().unwrap_or(1024).min(64 << 20) as usize;
                self.flood(count, bytes, &params["_meta"]["progressToken"]);
                Ok(text_result("flooded", false))
            }
            n if self.test_tools() && n.starts_with("dynamic_") => Ok(text_result(n, false)),
            _ => Err((INVALID_PARAMS, format!("Unknown tool: {name}"))),
        }
    }

    /// Sends a request to the client and returns its answer (or error) as the tool's text; with
    /// `cancel_after`, cancels the request after that long instead of waiting for the answer.
    fn ask_client(&self, method: &str, cancel_after: Option<Duration>) -> Value {
        let params = match method {
            "sampling/createMessage" => {
                json!({"messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}], "maxTokens": 10})
            }
            "elicitation/create" => {
                json!({"message": "Your name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}})
            }
            _ => json!({}),
        };
        let id = format!("sample-{}", crate::sys::random_hex(4));
        let (tx, rx) = mpsc::channel();
        lock(&self.asked).insert(Value::String(id.clone()).to_string(), tx);
        self.write(&jsonrpc::request(id.clone(), method, params));
        if let Some(after) = cancel_after {
            std::thread::sleep(after);
            lock(&self.asked).remove(&Value::String(id.clone()).to_string());
            let p = json!({"requestId": id, "reason": "the sample server changed its mind"});
            self.write(&jsonrpc::notification("notifications/cancelled", p));
            return text_result("cancelled its request", false);
        }
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(answer) => text_result(&answer.to_string(), answer.get("error").is_some()),
            Err(_) => {
                lock(&self.asked).remove(&Value::String(id).to_string());
                text_result("the client did not answer within 30 s", true)
            }
        }
    }

    /// Writes `count` progress notifications of about `bytes` characters each, as fast as the
    /// pipe takes them. The line is built once: serializing a large message 400 times would
    /// measure serde, not the gateway.
    fn flood(&self, count: u64, bytes: usize, token: &Value) {
        let token = if token.is_null() { String::new() } else { format!("\"progressToken\":{token},") };
        let message = "x".repeat(bytes);
        for n in 1..=count {
            let line = format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{{token}\"progress\":{n},\"total\":{count},\"message\":\"{message}\"}}}}"
            );
            let mut out = lock(&self.out);
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                return;
            }
        }
    }

    fn sleep(&self, id: &Value, seconds: f64, token: &Value) -> Value {
        let total = Duration::from_secs_f64(seconds.clamp(0.0, 600.0));
        let started = Instant::now();
        let key = id.to_string();
        // A line on stderr (register logs it): tests wait for it to know the call is here.
        eprintln!("sample-server: request {key} sleeping {seconds} s");
        let mut next_report = Duration::from_secs(1);
        while started.elapsed() < total {
            if lock(&self.cancelled).remove(&key) {
                eprintln!("sample-server: request {key} cancelled after {:?}", started.elapsed());
                return text_result("cancelled", true);
            }
            if !token.is_null() && started.elapsed() >= next_report {
                let p = json!({"progressToken": token, "progress": next_report.as_secs(), "total": total.as_secs_f64()});
                self.write(&jsonrpc::notification("notifications/progress", p));
                next_report += Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(20).min(total.saturating_sub(started.elapsed())));
        }
        text_result(&format!("slept {seconds} s"), false)
    }
}

/// Whether answering `method` may wait (for time, or for the client's answer to a request of
/// ours, which only the reading thread can deliver): tool calls but the quick built-in ones.
fn may_wait(method: &str, params: Option<&Value>) -> bool {
    let tool = params.and_then(|p| p["name"].as_str()).unwrap_or_default();
    method == "tools/call" && !matches!(tool, "echo" | "system_info")
}

/// Sleeps for `ms` milliseconds when it is a number (a tool's optional `delay_ms`).
fn pause(ms: &Value) {
    if let Some(ms) = ms.as_u64() {
        std::thread::sleep(Duration::from_millis(ms.min(600_000)));
    }
}

/// The sample server's `initialize` result, but for its version and capabilities.
const INITIALIZE: &str = r#"{"serverInfo": {"name": "mcpport-sample"},
  "instructions": "Sample tools of mcpport: echo text, read this machine's uptime, load and memory, or sleep."}"#;

/// `echo`, `system_info` and `sleep`.
const BASE_TOOLS: &str = r#"[
  {"name": "echo", "description": "Echo the given text back.",
   "inputSchema": {"type": "object", "properties": {"text": {"type": "string", "description": "Text to echo"}},
                   "required": ["text"]}},
  {"name": "system_info", "description": "Uptime, load averages and memory of the machine this server runs on.",
   "inputSchema": {"type": "object", "properties": {}, "required": []},
   "outputSchema": {"type": "object", "properties": {
     "uptime_seconds": {"type": "number"}, "load": {"type": "array", "items": {"type": "number"}},
     "memory_total_kb": {"type": "integer"}, "memory_available_kb": {"type": "integer"},
     "pid": {"type": "integer"}}},
   "annotations": {"readOnlyHint": true}},
  {"name": "sleep", "description": "Wait the given number of seconds (at most 600), reporting progress each second.",
   "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number", "description": "How long to wait"}},
                   "required": ["seconds"]}}
]"#;

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"name": name, "description": description,
           "inputSchema": {"type": "object", "properties": properties, "required": required}})
}

fn resource_text(uri: &str, text: &str) -> Value {
    json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]})
}

fn text_result(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

/// Reads /proc; on systems without it the fields are null rather than made up.
fn system_info() -> Value {
    system_info_from(&|p: &str| std::fs::read_to_string(p).unwrap_or_default())
}

/// `system_info` from the files `read` gives (a seam for the test).
fn system_info_from(read: &dyn Fn(&str) -> String) -> Value {
    // Nanoseconds over 1e9, both exact, is the nearest double to the decimal (`as_secs_f64`
    // adds two rounded parts: 1.36 came out as 1.3599999999999999, which a client parsing the
    // JSON text then saw differ from the structured content).
    let decimal = |s: &str| crate::codec::decimal_seconds(s).map(|d| d.as_nanos() as f64 / 1e9);
    let uptime: Option<f64> = read("/proc/uptime").split_whitespace().next().and_then(decimal);
    let load: Vec<f64> = read("/proc/loadavg").split_whitespace().take(3).filter_map(decimal).collect();
    let meminfo = read("/proc/meminfo");
    let mem = |key: &str| -> Option<u64> {
        meminfo.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
    };
    let info = json!({
        "uptime_seconds": uptime, "load": load,
        "memory_total_kb": mem("MemTotal:"), "memory_available_kb": mem("MemAvailable:"),
        "pid": std::process::id(),
    });
    json!({"content": [{"type": "text", "text": info.to_string()}], "structuredContent": info})
}

/// A 1x1 PNG and a tiny WAV, to check that binary content passes through untouched.
fn media() -> Value {
    const PNG: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
    const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";
    json!({"content": [
        {"type": "image", "data": PNG, "mimeType": "image/png"},
        {"type": "audio", "data": WAV, "mimeType": "audio/wav"},
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text content and the structured content are the same JSON, whatever the loads are:
    /// every two-decimal load parses to the double a JSON reader makes of its digits.
    #[test]
    fn system_info_text_matches_its_structured_content() {
        for hundredths in 0..1000u32 {
            let load = format!("{}.{:02}", hundredths / 100, hundredths % 100);
            let files = |p: &str| match p {
                "/proc/loadavg" => format!("{load} {load} {load} 1/100 1"),
                "/proc/uptime" => format!("{load} 1.00"),
                _ => String::new(),
            };
            let info = system_info_from(&files);
            let text: Value = serde_json::from_str(info["content"][0]["text"].as_str().unwrap()).unwrap();
            assert_eq!(text, info["structuredContent"], "load {load}");
            let expected: f64 = load.parse().unwrap();
            assert_eq!(info["structuredContent"]["load"][0].as_f64(), Some(expected), "load {load}");
        }
    }
}
