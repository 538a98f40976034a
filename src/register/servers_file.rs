//! Reads the list of MCP servers a user already keeps for a desktop client, for
//! `mcpport register --config FILE`: which servers to start or reach, and by what name the
//! gateway shall know them.
//!
//! Formats (all as JSONC: `//` and `/* */` comments and trailing commas are accepted anywhere):
//! - Claude Desktop, Claude Code, Cursor, Windsurf, Cline: `{"mcpServers": {KEY: ENTRY, …}}`. The
//!   rest of such a file (Claude Desktop's `globalShortcut`, `preferences`, …) is ignored with a
//!   warning.
//! - VS Code: `.vscode/mcp.json` and the user `mcp.json`, `{"servers": {KEY: ENTRY, …}, "inputs":
//!   […]}`, and an older `settings.json` that keeps them under `"mcp": {"servers": …}`.
//!
//! Both `mcpServers` and `servers` in one file are merged, in file order. An ENTRY is either a
//! local stdio server (`command`, `args`, `env`, VS Code's `envFile`, `cwd`) or a remote one (`url`,
//! or Windsurf's `serverUrl`, or Gemini CLI's `httpUrl`; `headers`). `type` (or Cline's
//! `transportType`) says which: `stdio`; `http`, `streamable-http` or `streamableHttp` (Streamable
//! HTTP); `sse` (the legacy HTTP+SSE transport). Without it, an entry with a `command` is stdio, and
//! a URL whose path ends in `/sse` is SSE, any other Streamable HTTP. `name` names the server at
//! the gateway instead of KEY; `disabled: true` (or `enabled: false`) leaves it out.
//!
//! Every string value (not keys, not `name`) may use `${env:NAME}` or `${NAME}` (an environment
//! variable), `${userHome}` (`HOME`) and `${workspaceFolder}` (the file's directory, or the one
//! above it when that is `.vscode`). VS Code's `${input:…}` prompts cannot be answered on a headless
//! device.
//!
//! A mistake in the file refuses all of it: a JSON syntax error with `FILE:LINE:COLUMN`, anything
//! else with the JSON path of what is wrong. What depends on the environment — an unset variable,
//! an `${input:…}`, an envFile that cannot be read — leaves out only that entry (see
//! [`Loaded::skipped`]); the others still run.
//!
//! Bounds: the file (and an envFile) at most 1 MiB ([`MAX_FILE`]), at most 100 servers
//! ([`MAX_SERVERS`]), 256 args per server ([`MAX_ARGS`]), 64 KiB per string as written
//! ([`MAX_STRING`]).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use crate::protocol::valid_server_name;

/// The largest servers file (and envFile) read, in bytes: 1 MiB.
pub(crate) const MAX_FILE: usize = 1024 * 1024;
/// The most servers one file may list (disabled ones included): 100.
pub(crate) const MAX_SERVERS: usize = 100;
/// The most `args` one server may have: 256.
pub(crate) const MAX_ARGS: usize = 256;
/// The longest string (value or key) in the file, in bytes: 64 KiB.
pub(crate) const MAX_STRING: usize = 64 * 1024;

/// How one server is run or reached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// A local process speaking MCP on its stdin and stdout. `env` holds only what the entry adds
    /// (its `env`, then what its envFile adds), in file order.
    Stdio { command: String, args: Vec<String>, env: Vec<(String, String)>, cwd: Option<String> },
    /// A remote server: Streamable HTTP, or the legacy HTTP+SSE transport when `sse`.
    Http { url: String, headers: Vec<(String, String)>, sse: bool },
}

/// One server to relay: its name at the gateway (valid per `valid_server_name`, unique in the
/// file) and how to run it, every variable expanded. Equal entries mean an unchanged server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub name: String,
    pub source: Source,
}

/// What a servers file yields. The messages do not name the file; the caller adds it.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The servers to run, in file order; never empty.
    pub entries: Vec<Entry>,
    /// What was ignored or changed: unknown fields, renamed keys, ignored top-level keys.
    pub warnings: Vec<String>,
    /// One message per entry that cannot run now: disabled, an unset variable, an `${input:…}`, an
    /// unreadable envFile.
    pub skipped: Vec<String>,
}

/// Reads and parses the servers file at `path`; variables come from the process environment and a
/// relative envFile from the file's directory.
pub(crate) fn load(path: &Path) -> Result<Loaded, String> {
    let file = path.display().to_string();
    let bytes = read_bounded(path).map_err(|why| format!("{file}: {why}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8 text"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parse(&text, &file, dir, &|name| std::env::var(name).ok())
}

/// Parses the text of a servers file. `file` names it in errors; `dir` is where a relative envFile
/// is looked up; `env` looks up variables.
pub(crate) fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, String> {
    if text.len() > MAX_FILE {
        return Err(format!("{file}: larger than 1 MiB"));
    }
    let json = strip_jsonc(text).map_err(|why| format!("{file}:{why}"))?;
    let root: Value = serde_json::from_str(&json).map_err(|e| syntax_error(file, &e))?;
    let order = key_order(&json);
    let mut reader = Reader { file, dir, env, order, loaded: Loaded::default(), names: HashMap::new() };
    reader.root(&root)?;
    reader.finish()
}

/// Reads at most [`MAX_FILE`] bytes of a file; a bigger one is refused.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_FILE {
        return Err("larger than 1 MiB; not read".into());
    }
    Ok(bytes)
}

/// `FILE:LINE:COLUMN: invalid JSON: WHAT`, as compilers say it.
fn syntax_error(file: &str, e: &serde_json::Error) -> String {
    let (line, column) = (e.line(), e.column());
    let what = e.to_string();
    let what = what.strip_suffix(&format!(" at line {line} column {column}")).unwrap_or(&what);
    format!("{file}:{line}:{column}: invalid JSON: {what}")
}

// ---- JSONC ----

/// Turns JSONC into JSON by blanking comments and trailing commas (and a byte-order mark) with
/// spaces, byte for byte and keeping newlines, so that serde_json's line and column numbers still
/// point into the file as written. An error is `LINE:COLUMN: WHAT`.
fn strip_jsonc(text: &str) -> Result<String, String> {
    let mut bytes = text.as_bytes().to_vec();
    if bytes.starts_with("\u{feff}".as_bytes()) {
        bytes[..3].fill(b' ');
    }
    blank_comments(&mut bytes)?;
    blank_trailing_commas(&mut bytes);
    // Only whole characters were blanked: a comment ends at ASCII `\n` or `*/`.
    String::from_utf8(bytes).map_err(|_| "1:1: not UTF-8 text".to_owned())
}

/// The index just past the JSON string that starts at `at` (the end of the text if unclosed).
fn string_end(bytes: &[u8], at: usize) -> usize {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Blanks `// …` to the end of the line and `/* … */` (keeping its newlines), outside strings.
fn blank_comments(bytes: &mut [u8]) -> Result<(), String> {
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'"', _) => i = string_end(bytes, i),
            (b'/', Some(b'/')) => {
                let end = bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n);
                bytes[i..end].fill(b' ');
                i = end;
            }
            (b'/', Some(b'*')) => {
                let Some(n) = bytes[i + 2..].windows(2).position(|w| w == b"*/") else {
                    let (line, column) = position(bytes, i);
                    return Err(format!("{line}:{column}: a /* comment is never closed"));
                };
                let end = i + 2 + n + 2;
                bytes[i..end].iter_mut().filter(|b| **b != b'\n').for_each(|b| *b = b' ');
                i = end;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Blanks each comma that only whitespace separates from a closing `}` or `]`, outside strings
/// (not one right after `{`, `[` or `,`: that is no trailing comma, and serde_json will say so).
fn blank_trailing_commas(bytes: &mut [u8]) {
    let (mut i, mut previous) = (0, b' ');
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'"' {
            (i, previous) = (string_end(bytes, i), byte);
            continue;
        }
        let next = || bytes[i + 1..].iter().find(|b| !b.is_ascii_whitespace());
        if byte == b',' && !b"{[,".contains(&previous) && matches!(next(), Some(b'}' | b']')) {
            bytes[i] = b' ';
        } else if !byte.is_ascii_whitespace() {
            previous = byte;
        }
        i += 1;
    }
}

/// The 1-based line and (byte) column of `at`, counted as serde_json counts them.
fn position(bytes: &[u8], at: usize) -> (usize, usize) {
    let line_start = bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |n| n + 1);
    (bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1, at - line_start + 1)
}

// ---- The order of keys ----

/// How deep (in keys from the root, outside arrays) objects keep their order: down to an entry's
/// `env` or `headers` under `mcp.servers`.
const ORDER_DEPTH: usize = 4;

/// The keys of every object near the top of a valid JSON text, in the order written and with any
/// repeated ones, by path. serde_json's `Map` sorts keys and keeps the last of a repeated one;
/// entries, `env` and `headers` must keep the file's order.
fn key_order(json: &str) -> HashMap<Vec<String>, Vec<String>> {
    let mut scan = Scan { text: json, at: 0, path: Vec::new(), arrays: 0, found: HashMap::new() };
    scan.value();
    scan.found
}

/// A walk over a text serde_json has accepted (on any other text it ends, with no meaning).
struct Scan<'a> {
    text: &'a str,
    at: usize,
    path: Vec<String>,
    /// How many arrays the walk is in (objects in arrays are not recorded).
    arrays: usize,
    found: HashMap<Vec<String>, Vec<String>>,
}

impl<'a> Scan<'a> {
    /// The next byte that is not whitespace (0 at the end), without taking it.
    fn peek(&mut self) -> u8 {
        let bytes = self.text.as_bytes();
        while bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
        bytes.get(self.at).copied().unwrap_or(0)
    }

    fn value(&mut self) {
        match self.peek() {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => {
                self.string();
            }
            _ => self.scalar(),
        }
    }

    fn object(&mut self) {
        self.at += 1;
        let mut keys = Vec::new();
        loop {
            match self.peek() {
                b'}' | 0 => break,
                b',' => self.at += 1,
                _ => {
                    let key = serde_json::from_str(self.string()).unwrap_or_default();
                    self.peek();
                    self.at += 1; // the ':'
                    self.path.push(key);
                    self.value();
                    keys.extend(self.path.pop());
                }
            }
        }
        self.at += 1;
        if self.arrays == 0 && self.path.len() <= ORDER_DEPTH {
            self.found.insert(self.path.clone(), keys);
        }
    }

    fn array(&mut self) {
        self.at += 1;
        self.arrays += 1;
        loop {
            match self.peek() {
                b']' | 0 => break,
                b',' => self.at += 1,
                _ => self.value(),
            }
        }
        self.at += 1;
        self.arrays -= 1;
    }

    /// The string at `at`, quotes and escapes included.
    fn string(&mut self) -> &'a str {
        let start = self.at;
        self.at = string_end(self.text.as_bytes(), start);
        self.text.get(start..self.at).unwrap_or("")
    }

    /// A number, `true`, `false` or `null` (always at least one byte, so every walk ends).
    fn scalar(&mut self) {
        self.at += 1;
        let bytes = self.text.as_bytes();
        while bytes.get(self.at).is_some_and(|b| !b",}]".contains(b) && !b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }
}

// ---- Paths in messages ----

/// `parent.key`, or `parent["key"]` for a key that is not plain letters, digits, `_` and `-`.
fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{parent}.{key}"),
        (false, _) => format!("{parent}[{}]", Value::from(key)),
    }
}

/// A path of keys as [`child`] writes it: `mcpServers.fs.env`.
fn show(path: &[String]) -> String {
    path.iter().fold(String::new(), |at, key| child(&at, key))
}

/// `read` applied to the field `name` of the entry at `at`, if it has one.
fn field<'v, T>(
    at: &str,
    obj: &'v Map<String, Value>,
    name: &str,
    read: impl FnOnce(&str, &'v Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    obj.get(name).map(|v| read(&format!("{at}.{name}"), v)).transpose()
}

/// `path` and one key more.
fn join(path: &[String], key: &str) -> Vec<String> {
    let mut path = path.to_vec();
    path.push(key.to_owned());
    path
}

// ---- The file ----

/// What `mcpServers` and `servers` should hold, for a file that has neither.
const EXPECTED: &str = "expected {\"mcpServers\": {NAME: {…}}} (Claude Desktop, Cursor, Windsurf, Cline) \
                        or {\"servers\": {NAME: {…}}} (VS Code)";
const NAME_RULE: &str = "a server name is 1 to 64 of A-Z a-z 0-9 _ -";
/// Fields every entry may have.
const COMMON_FIELDS: [&str; 5] = ["name", "type", "transportType", "disabled", "enabled"];
const STDIO_FIELDS: [&str; 5] = ["command", "args", "env", "envFile", "cwd"];
const HTTP_FIELDS: [&str; 4] = ["url", "serverUrl", "httpUrl", "headers"];
/// The fields that hold a remote server's URL; `httpUrl` (Gemini CLI) is always Streamable HTTP.
const URL_FIELDS: [&str; 3] = ["url", "serverUrl", "httpUrl"];
/// Fields of other clients that mean nothing to a relay (tool approval, timeouts, catalogue data):
/// ignored without a word.
const QUIET_FIELDS: [&str; 11] = [
    "alwaysAllow",
    "autoApprove",
    "timeout",
    "description",
    "gallery",
    "version",
    "dev",
    "disabledTools",
    "trust",
    "includeTools",
    "excludeTools",
];
/// How many ignored top-level keys a warning lists (a VS Code settings.json has hundreds).
const LISTED_KEYS: usize = 10;

/// Why an entry is not among the entries.
enum Problem {
    /// A mistake in the file: the whole file is refused.
    Refuse(String),
    /// It depends on the environment (or is disabled): only this entry is left out.
    Skip(String),
}

impl From<String> for Problem {
    fn from(why: String) -> Problem {
        Problem::Refuse(why)
    }
}

type Step<T> = Result<T, Problem>;

/// What a transport is called in `type` or `transportType`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Stdio,
    Streamable,
    Sse,
}

fn transport_named(name: &str) -> Option<Transport> {
    match name {
        "stdio" => Some(Transport::Stdio),
        "http" | "streamable-http" | "streamableHttp" => Some(Transport::Streamable),
        "sse" => Some(Transport::Sse),
        _ => None,
    }
}

/// What an entry is, once its fields agree: stdio, or a URL in `field` (SSE or not, `None` to tell
/// from the URL).
enum Kind {
    Stdio,
    Http { field: &'static str, sse: Option<bool> },
}

/// Reads the parsed file into [`Loaded`].
struct Reader<'a> {
    file: &'a str,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    order: HashMap<Vec<String>, Vec<String>>,
    loaded: Loaded,
    /// The names taken so far, and by which entry.
    names: HashMap<String, String>,
}

impl Reader<'_> {
    /// `FILE: AT WHAT`.
    fn error(&self, at: &str, what: &str) -> String {
        format!("{}: {at} {what}", self.file)
    }

    /// The members of the object at `path` in file order; a key given twice is an error.
    fn members<'v>(
        &self,
        path: &[String],
        obj: &'v Map<String, Value>,
    ) -> Result<Vec<(&'v String, &'v Value)>, String> {
        let Some(keys) = self.order.get(path) else { return Ok(obj.iter().collect()) };
        let mut seen = HashSet::new();
        let mut members = Vec::with_capacity(keys.len());
        for key in keys {
            if !seen.insert(key) {
                let at = if path.is_empty() { "the top level".to_owned() } else { show(path) };
                return Err(format!("{}: {at} has {} twice", self.file, Value::from(key.as_str())));
            }
            members.extend(obj.get_key_value(key));
        }
        Ok(members)
    }

    /// Reads every entry of every section.
    fn root(&mut self, root: &Value) -> Result<(), String> {
        let mut entries = Vec::new();
        for (path, value) in self.sections(root)? {
            let obj = value
                .as_object()
                .ok_or_else(|| self.error(&show(&path), "must be an object of servers by name"))?;
            for (key, value) in self.members(&path, obj)? {
                entries.push((join(&path, key), value));
            }
        }
        if entries.len() > MAX_SERVERS {
            return Err(format!(
                "{}: {} servers; at most {MAX_SERVERS} are allowed",
                self.file,
                entries.len()
            ));
        }
        entries.into_iter().try_for_each(|(path, value)| self.entry(&path, value))
    }

    /// Where the servers are (`mcpServers`, `servers`, `mcp.servers`), in file order; other
    /// top-level keys are ignored with one warning.
    fn sections<'v>(&mut self, root: &'v Value) -> Result<Vec<(Vec<String>, &'v Value)>, String> {
        let top = root.as_object().ok_or_else(|| format!("{}: not a JSON object; {EXPECTED}", self.file))?;
        let (mut found, mut ignored) = (Vec::new(), Vec::new());
        for (key, value) in self.members(&[], top)? {
            match (key.as_str(), value.get("servers")) {
                ("mcpServers" | "servers", _) => found.push((vec![key.clone()], value)),
                ("mcp", Some(servers)) => found.push((vec![key.clone(), "servers".to_owned()], servers)),
                ("inputs" | "$schema", _) => {}
                _ => ignored.push(Value::from(key.as_str()).to_string()),
            }
        }
        if found.is_empty() {
            return Err(format!("{}: no \"mcpServers\" or \"servers\"; {EXPECTED}", self.file));
        }
        if !ignored.is_empty() {
            self.warn_ignored_keys(&ignored);
        }
        Ok(found)
    }

    fn warn_ignored_keys(&mut self, ignored: &[String]) {
        let mut listed = ignored[..ignored.len().min(LISTED_KEYS)].join(", ");
        if ignored.len() > LISTED_KEYS {
            listed += &format!(" and {} more", ignored.len() - LISTED_KEYS);
        }
        let read = "only \"mcpServers\" and \"servers\" are read";
        self.loaded.warnings.push(format!("top-level keys ignored ({read}): {listed}"));
    }

    /// Reads one entry into `entries` or `skipped`; a mistake in it refuses the file.
    fn entry(&mut self, path: &[String], value: &Value) -> Result<(), String> {
        match self.read_entry(path, value) {
            Ok(entry) => self.loaded.entries.push(entry),
            Err(Problem::Skip(why)) => self.loaded.skipped.push(why),
            Err(Problem::Refuse(why)) => return Err(why),
        }
        Ok(())
    }

    fn read_entry(&mut self, path: &[String], value: &Value) -> Step<Entry> {
        let key = path.last().map_or("", String::as_str);
        let at = show(path);
        let obj = value.as_object().ok_or_else(|| self.error(&at, "must be an object"))?;
        if self.disabled(&at, obj)? {
            return Err(Problem::Skip(format!("server {key:?} is disabled in the file")));
        }
        let name = self.name(&at, key, obj)?;
        self.claim(&at, &name)?;
        let kind = self.kind(&at, obj)?;
        self.warn_fields(key, obj, &kind);
        let vars = Vars { server: key, env: self.env, dir: self.dir };
        let source = match kind {
            Kind::Stdio => self.stdio(path, &at, obj, &vars)?,
            Kind::Http { field, sse } => self.http(path, &at, obj, field, sse, &vars)?,
        };
        Ok(Entry { name, source })
    }

    /// `disabled: true` or `enabled: false`.
    fn disabled(&self, at: &str, obj: &Map<String, Value>) -> Result<bool, String> {
        let flag = |field: &str| {
            let as_bool = |v: &Value| {
                v.as_bool().ok_or_else(|| self.error(&format!("{at}.{field}"), "must be true or false"))
            };
            obj.get(field).map(as_bool).transpose()
        };
        Ok(flag("disabled")? == Some(true) || flag("enabled")? == Some(false))
    }

    /// The server's name at the gateway: `name` if given (it must be valid), else the key, with
    /// every character a name cannot hold made `-` and cut to 64 (with a warning).
    fn name(&mut self, at: &str, key: &str, obj: &Map<String, Value>) -> Result<String, String> {
        if let Some(v) = obj.get("name") {
            let at = format!("{at}.name");
            let name = self.string(&at, v)?;
            if !valid_server_name(name) {
                return Err(self.error(&at, &format!("is {name:?}; {NAME_RULE}")));
            }
            return Ok(name.to_owned());
        }
        if valid_server_name(key) {
            return Ok(key.to_owned());
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let name: String = key.chars().map(|c| if valid(c) { c } else { '-' }).take(64).collect();
        if name.is_empty() {
            return Err(self.error(at, &format!("has an empty key; give it a \"name\" ({NAME_RULE})")));
        }
        let why = format!("{NAME_RULE}; set \"name\" to choose another");
        self.loaded.warnings.push(format!("server {key:?} is registered as {name:?} ({why})"));
        Ok(name)
    }

    /// Takes `name` for the entry at `at`; two entries with one name refuse the file.
    fn claim(&mut self, at: &str, name: &str) -> Result<(), String> {
        match self.names.insert(name.to_owned(), at.to_owned()) {
            Some(first) => Err(format!(
                "{}: {first} and {at} are both named {name:?}; server names must differ (set \"name\" on one)",
                self.file
            )),
            None => Ok(()),
        }
    }

    /// Stdio or HTTP: `command` or a URL (never both), and a `type` that agrees.
    fn kind(&self, at: &str, obj: &Map<String, Value>) -> Result<Kind, String> {
        let declared = self.declared(at, obj)?;
        let url = self.url_field(at, obj)?;
        let contradiction =
            |said: &str, has: &str| format!("{}: {at}.{said}, but the entry has {has:?}", self.file);
        match (obj.contains_key("command"), url, declared) {
            (true, Some(url), _) => Err(self.error(
                at,
                &format!("has both \"command\" and {url:?}; an entry is a local command or a remote URL"),
            )),
            (false, None, _) => {
                Err(self.error(at, "has neither \"command\" (a local server) nor \"url\" (a remote one)"))
            }
            (true, None, None | Some((_, Transport::Stdio))) => Ok(Kind::Stdio),
            (true, None, Some((said, _))) => Err(contradiction(&said, "command")),
            (false, Some(url), Some((said, Transport::Stdio))) => Err(contradiction(&said, url)),
            (false, Some(field), Some((_, t))) => Ok(Kind::Http { field, sse: Some(t == Transport::Sse) }),
            (false, Some(field), None) => {
                Ok(Kind::Http { field, sse: (field == "httpUrl").then_some(false) })
            }
        }
    }

    /// The transport `type` (or `transportType`) names, with how it was said; the two must agree.
    fn declared(&self, at: &str, obj: &Map<String, Value>) -> Result<Option<(String, Transport)>, String> {
        let mut found: Option<(String, Transport)> = None;
        for field in ["type", "transportType"] {
            let Some(v) = obj.get(field) else { continue };
            let field_at = format!("{at}.{field}");
            let value = self.string(&field_at, v)?;
            let expected =
                "expected \"stdio\", \"http\" (or \"streamable-http\", \"streamableHttp\") or \"sse\"";
            let transport = transport_named(value)
                .ok_or_else(|| self.error(&field_at, &format!("is {value:?}; {expected}")))?;
            let said = format!("{field} is {value:?}");
            if let Some((first, t)) = &found {
                if *t != transport {
                    return Err(format!("{}: {at}.{first}, but {said}", self.file));
                }
            }
            found = Some((said, transport));
        }
        Ok(found)
    }

    /// Which of `url`, `serverUrl`, `httpUrl` the entry has (at most one).
    fn url_field(&self, at: &str, obj: &Map<String, Value>) -> Result<Option<&'static str>, String> {
        let mut present = URL_FIELDS.into_iter().filter(|field| obj.contains_key(*field));
        match (present.next(), present.next()) {
            (Some(a), Some(b)) => Err(self.error(at, &format!("has both {a:?} and {b:?}"))),
            (first, _) => Ok(first),
        }
    }

    /// Warns of each field that is neither known nor quietly ignored, or belongs to the other kind.
    fn warn_fields(&mut self, key: &str, obj: &Map<String, Value>, kind: &Kind) {
        let (own, other, other_kind) = match kind {
            Kind::Stdio => (&STDIO_FIELDS[..], &HTTP_FIELDS[..], "remote"),
            Kind::Http { .. } => (&HTTP_FIELDS[..], &STDIO_FIELDS[..], "stdio"),
        };
        for field in obj.keys().map(String::as_str) {
            if COMMON_FIELDS.contains(&field) || QUIET_FIELDS.contains(&field) || own.contains(&field) {
                continue;
            }
            let why = if other.contains(&field) {
                format!("it applies to {other_kind} servers only")
            } else {
                "unknown field".to_owned()
            };
            self.loaded.warnings.push(format!("server {key:?}: {field:?} ignored ({why})"));
        }
    }

    /// A stdio entry. Everything in the file is checked before any variable is expanded, so that a
    /// mistake refuses the file whatever the environment.
    fn stdio(&self, path: &[String], at: &str, obj: &Map<String, Value>, vars: &Vars<'_>) -> Step<Source> {
        let command_at = format!("{at}.command");
        let command = self.string(&command_at, obj.get("command").unwrap_or(&Value::Null))?;
        if command.trim().is_empty() {
            return Err(self.error(&command_at, "is empty").into());
        }
        let args = field(at, obj, "args", |at, v| self.strings(at, v))?.unwrap_or_default();
        let env =
            field(at, obj, "env", |at, v| self.env_vars(&join(path, "env"), at, v))?.unwrap_or_default();
        let cwd = field(at, obj, "cwd", |at, v| self.string(at, v))?;
        let env_file = field(at, obj, "envFile", |at, v| self.string(at, v))?;
        // From here on, what goes wrong depends on the environment and skips the entry.
        let command = vars.expand("command", command)?;
        if command.trim().is_empty() {
            return Err(vars.skip("command", "is empty once its variables are expanded"));
        }
        let args = args.iter().enumerate().map(|(i, arg)| vars.expand(&format!("args[{i}]"), arg));
        let args = args.collect::<Step<Vec<_>>>()?;
        let mut env = vars.expand_pairs("env", env)?;
        if let Some(env_file) = env_file {
            add_missing(&mut env, self.env_file(vars, env_file)?);
        }
        let cwd = cwd.map(|cwd| vars.expand("cwd", cwd)).transpose()?;
        Ok(Source::Stdio { command, args, env, cwd })
    }

    /// A remote entry whose URL is in `field`; `sse: None` tells SSE from the URL's path.
    fn http(
        &self,
        path: &[String],
        at: &str,
        obj: &Map<String, Value>,
        url_field: &str,
        sse: Option<bool>,
        vars: &Vars<'_>,
    ) -> Step<Source> {
        let url_at = format!("{at}.{url_field}");
        let url = self.string(&url_at, obj.get(url_field).unwrap_or(&Value::Null))?;
        if !url.contains("${") {
            if let Err(why) = url_problem(url) {
                return Err(self.error(&url_at, &format!("is not a usable URL: {why}")).into());
            }
        }
        let headers = field(at, obj, "headers", |at, v| self.headers(&join(path, "headers"), at, v))?;
        let headers = headers.unwrap_or_default();
        // From here on, what goes wrong depends on the environment and skips the entry.
        let url = vars.expand(url_field, url)?;
        if let Err(why) = url_problem(&url) {
            let why = format!("is not a usable URL once its variables are expanded: {why}");
            return Err(vars.skip(url_field, &why));
        }
        let headers = headers.into_iter().map(|(name, value)| {
            let header = child("headers", &name);
            let value = vars.expand(&header, &value)?;
            match value.contains(['\r', '\n']) {
                true => Err(vars.skip(&header, "holds a line break once its variables are expanded")),
                false => Ok((name, value)),
            }
        });
        let headers = headers.collect::<Step<Vec<_>>>()?;
        Ok(Source::Http { sse: sse.unwrap_or_else(|| looks_like_sse(&url)), url, headers })
    }

    /// The variables an envFile sets (`KEY=VALUE` lines), relative to the file's directory.
    fn env_file(&self, vars: &Vars<'_>, name: &str) -> Step<Vec<(String, String)>> {
        let path = self.dir.join(vars.expand("envFile", name)?);
        let skip = |why: String| {
            Problem::Skip(format!("server {:?}: envFile {}: {why}", vars.server, path.display()))
        };
        let text = String::from_utf8(read_bounded(&path).map_err(skip)?)
            .map_err(|_| skip("not UTF-8 text".into()))?;
        parse_env_file(&text).map_err(|line| skip(format!("line {line} is not KEY=VALUE")))
    }

    /// A string: at most [`MAX_STRING`] bytes, and no NUL (no process argument can hold one).
    fn string<'v>(&self, at: &str, v: &'v Value) -> Result<&'v str, String> {
        let s = v.as_str().ok_or_else(|| self.error(at, "must be a string"))?;
        if s.len() > MAX_STRING {
            return Err(self.error(at, "is longer than 64 KiB"));
        }
        if s.contains('\0') {
            return Err(self.error(at, "holds a NUL character"));
        }
        Ok(s)
    }

    /// An array of strings, at most [`MAX_ARGS`] of them.
    fn strings<'v>(&self, at: &str, v: &'v Value) -> Result<Vec<&'v str>, String> {
        let items = v.as_array().ok_or_else(|| self.error(at, "must be an array of strings"))?;
        if items.len() > MAX_ARGS {
            return Err(self.error(at, &format!("has {} items; at most {MAX_ARGS} are allowed", items.len())));
        }
        items.iter().enumerate().map(|(i, item)| self.string(&format!("{at}[{i}]"), item)).collect()
    }

    /// An object of strings in file order; numbers and booleans are taken as their text.
    fn string_map(&self, path: &[String], at: &str, v: &Value) -> Result<Vec<(String, String)>, String> {
        let obj = v.as_object().ok_or_else(|| self.error(at, "must be an object of strings"))?;
        let pair = |(key, value): (&String, &Value)| {
            let at = child(at, key);
            if key.len() > MAX_STRING {
                return Err(self.error(&at, "has a key longer than 64 KiB"));
            }
            let value = match value {
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => self.string(&at, value)?.to_owned(),
            };
            Ok((key.clone(), value))
        };
        self.members(path, obj)?.into_iter().map(pair).collect()
    }

    /// `env`: names without `=` or NUL.
    fn env_vars(&self, path: &[String], at: &str, v: &Value) -> Result<Vec<(String, String)>, String> {
        let vars = self.string_map(path, at, v)?;
        match vars.iter().find(|(name, _)| name.is_empty() || name.contains(['=', '\0'])) {
            Some((name, _)) => Err(self.error(&child(at, name), "is not an environment variable name")),
            None => Ok(vars),
        }
    }

    /// `headers`: token names, values without line breaks.
    fn headers(&self, path: &[String], at: &str, v: &Value) -> Result<Vec<(String, String)>, String> {
        let headers = self.string_map(path, at, v)?;
        for (name, value) in &headers {
            if !is_token(name) {
                return Err(self.error(&child(at, name), "is not a valid header name"));
            }
            if value.contains(['\r', '\n']) {
                return Err(self.error(&child(at, name), "holds a line break"));
            }
        }
        Ok(headers)
    }

    /// The result: at least one entry, else why there is none.
    fn finish(self) -> Result<Loaded, String> {
        match (self.loaded.entries.is_empty(), self.loaded.skipped.is_empty()) {
            (false, _) => Ok(self.loaded),
            (true, true) => {
                Err(format!("{}: no server is listed in \"mcpServers\" or \"servers\"", self.file))
            }
            (true, false) => {
                Err(format!("{}: no server can run: {}", self.file, self.loaded.skipped.join("; ")))
            }
        }
    }
}

/// What is wrong with `url` as an upstream's address (`http://HOST[:PORT]/…` or `https://…`,
/// as the HTTP client dials it: a port in range, no fragment, no user information), without
/// repeating the URL, which may hold a token.
fn url_problem(url: &str) -> Result<(), String> {
    match crate::http::client::Url::parse(url) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.rsplit_once(": ").map_or("not a URL", |(_, why)| why).to_string()),
    }
}

/// Whether the path of `url` ends in `/sse` (the legacy transport's customary endpoint).
fn looks_like_sse(url: &str) -> bool {
    let url = &url[..url.find(['?', '#']).unwrap_or(url.len())];
    let authority = url.find("://").map_or(0, |n| n + 3);
    let path = url[authority..].find('/').map_or("", |n| &url[authority + n..]);
    path.trim_end_matches('/').ends_with("/sse")
}

/// An HTTP header name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Adds the variables `env` does not set yet (the entry's own `env` wins over its envFile).
fn add_missing(env: &mut Vec<(String, String)>, more: Vec<(String, String)>) {
    let mut set: HashSet<String> = env.iter().map(|(name, _)| name.clone()).collect();
    for (name, value) in more {
        if set.insert(name.clone()) {
            env.push((name, value));
        }
    }
}

/// The `KEY=VALUE` lines of an envFile, as dotenv reads them: blank lines and `#` comments
/// skipped, `export ` allowed, a value in `"…"` (where `\n` is a newline) or `'…'` taken as is, an
/// unquoted one up to ` #`; a later line wins. An error is the number of a line that is none of it.
fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut index = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or(n + 1)?;
        let (key, value) = (key.trim(), unquote(value.trim()));
        let valid = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
        if key.is_empty() || !key.bytes().all(valid) || value.contains('\0') {
            return Err(n + 1);
        }
        match index.get(key) {
            Some(&i) => vars[i] = (key.to_owned(), value),
            None => {
                index.insert(key.to_owned(), vars.len());
                vars.push((key.to_owned(), value));
            }
        }
    }
    Ok(vars)
}

/// An envFile value without its quotes.
fn unquote(value: &str) -> String {
    let quoted = |q: char| value.strip_prefix(q).and_then(|v| v.strip_suffix(q));
    if let Some(inner) = quoted('"') {
        return inner.replace("\\n", "\n");
    }
    if let Some(inner) = quoted('\'') {
        return inner.to_owned();
    }
    value.split(" #").next().unwrap_or("").trim_end().to_owned()
}

// ---- Variables ----

/// Expands the variables in one entry's strings; one that cannot be expanded skips the entry.
struct Vars<'a> {
    /// The entry's key, as messages name it.
    server: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The servers file's directory.
    dir: &'a Path,
}

impl Vars<'_> {
    /// `raw` with each `${…}` replaced (a `${` without a `}` is kept as written). `field` names the
    /// value in messages: `headers.Authorization`.
    fn expand(&self, field: &str, raw: &str) -> Step<String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start + 2..].find('}') else { break };
            let name = &rest[start + 2..start + 2 + len];
            let value =
                self.variable(name).map_err(|why| self.skip(field, &format!("uses ${{{name}}}, {why}")))?;
            out.push_str(&rest[..start]);
            out.push_str(&value);
            rest = &rest[start + 3 + len..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Each value expanded.
    fn expand_pairs(&self, field: &str, pairs: Vec<(String, String)>) -> Step<Vec<(String, String)>> {
        let pair = |(name, value): (String, String)| {
            let value = self.expand(&child(field, &name), &value)?;
            Ok((name, value))
        };
        pairs.into_iter().map(pair).collect()
    }

    /// The value of the variable `${name}`, or why there is none.
    fn variable(&self, name: &str) -> Result<String, &'static str> {
        let (lookup, unset) = match name.split_once(':') {
            Some(("env", var)) => (var, "which is not set"),
            Some(("input", _)) => {
                return Err("a VS Code prompt, which cannot be answered on a headless device; \
                            use ${env:NAME} and set NAME in the environment instead")
            }
            Some(_) => return Err("which only VS Code can resolve; use ${env:NAME} instead"),
            None if name == "userHome" => ("HOME", "but HOME is not set"),
            None if name == "workspaceFolder" => return Ok(self.workspace()),
            None => (name, "which is not set"),
        };
        (self.env)(lookup).ok_or(unset)
    }

    /// `${workspaceFolder}`: the file's directory, or the one above it for `.vscode/mcp.json`.
    fn workspace(&self) -> String {
        let dir = match self.dir.file_name() {
            Some(name) if name == ".vscode" => self.dir.parent().filter(|d| !d.as_os_str().is_empty()),
            _ => Some(self.dir),
        };
        dir.unwrap_or(Path::new(".")).display().to_string()
    }

    fn skip(&self, field: &str, what: &str) -> Problem {
        Problem::Skip(format!("server {:?}: {field} {what}", self.server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// An environment of `pairs` only.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn parse_with(text: &str, pairs: &[(&str, &str)]) -> Result<Loaded, String> {
        parse(text, "test.json", Path::new("/nonexistent"), &env_of(pairs))
    }

    fn ok(text: &str) -> Loaded {
        parse_with(text, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        match parse_with(text, &[]) {
            Ok(loaded) => panic!("accepted: {loaded:?}"),
            Err(e) => e,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn stdio(name: &str, command: &str, args: &[&str], env: &[(&str, &str)]) -> Entry {
        let source =
            Source::Stdio { command: command.into(), args: strings(args), env: pairs(env), cwd: None };
        Entry { name: name.into(), source }
    }

    fn http(name: &str, url: &str, headers: &[(&str, &str)], sse: bool) -> Entry {
        Entry { name: name.into(), source: Source::Http { url: url.into(), headers: pairs(headers), sse } }
    }

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let dir = std::env::temp_dir()
                .join(format!("mcpport-servers-file-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CLAUDE_DESKTOP: &str = r#"{
  "globalShortcut": "Alt+Space",
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/pi/Desktop"]
    },
    "weather": {
      "command": "uv",
      "args": ["--directory", "/opt/weather", "run", "weather.py"],
      "env": {"UNITS": "metric", "API_KEY": "k-123"}
    },
    "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer t"}}
  },
  "preferences": {"quickEntryShortcut": "off", "menuBarEnabled": false}
}"#;

    #[test]
    fn reads_claude_desktop_as_is_and_warns_of_its_other_keys() {
        let loaded = ok(CLAUDE_DESKTOP);
        assert_eq!(
            loaded.entries,
            vec![
                stdio(
                    "filesystem",
                    "npx",
                    &["-y", "@modelcontextprotocol/server-filesystem", "/home/pi/Desktop"],
                    &[]
                ),
                stdio(
                    "weather",
                    "uv",
                    &["--directory", "/opt/weather", "run", "weather.py"],
                    &[("UNITS", "metric"), ("API_KEY", "k-123")]
                ),
                http("remote", "https://mcp.example.com/mcp", &[("Authorization", "Bearer t")], false),
            ]
        );
        assert_eq!(
            loaded.warnings,
            vec![
                r#"top-level keys ignored (only "mcpServers" and "servers" are read): "globalShortcut", "preferences""#
            ]
        );
        assert!(loaded.skipped.is_empty());
    }

    #[test]
    fn two_loads_are_equal_and_keep_the_file_order() {
        let text = r#"{"mcpServers": {"zeta": {"command": "z", "env": {"Z": "1", "A": "2", "M": "3"}},
                                       "alpha": {"url": "http://h/mcp", "headers": {"X-B": "1", "X-A": "2"}}}}"#;
        let (first, second) = (ok(text), ok(text));
        assert_eq!(first.entries, second.entries);
        assert_eq!(first.entries[0], stdio("zeta", "z", &[], &[("Z", "1"), ("A", "2"), ("M", "3")]));
        assert_eq!(first.entries[1], http("alpha", "http://h/mcp", &[("X-B", "1"), ("X-A", "2")], false));
    }

    const VSCODE: &str = r#"// .vscode/mcp.json
{
  /* prompts VS Code would show */
  "inputs": [
    {"type": "promptString", "id": "token", "description": "API token", "password": true},
  ],
  "servers": {
    "web": {"type": "http", "url": "http://x//y", }, // a `//` inside a string stays
    "events": {
      "type": "sse",
      "url": "https://h/events", /* not /sse: the type says it */
      "headers": {"Note": "say \"hi\" // not a comment", },
    },
    "local": {"type": "stdio", "command": "node", "args": ["server.js", "/*keep*/",], "cwd": "/srv"},
  },
}"#;

    #[test]
    fn reads_vscode_jsonc_with_comments_trailing_commas_and_types() {
        let loaded = ok(VSCODE);
        let local = Source::Stdio {
            command: "node".into(),
            args: strings(&["server.js", "/*keep*/"]),
            env: Vec::new(),
            cwd: Some("/srv".into()),
        };
        assert_eq!(
            loaded.entries,
            vec![
                http("web", "http://x//y", &[], false),
                http("events", "https://h/events", &[("Note", r#"say "hi" // not a comment"#)], true),
                Entry { name: "local".into(), source: local },
            ]
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn jsonc_is_blanked_byte_for_byte() {
        let text = "{\"a\": 1, // c\n /* x\n y */ \"b\": [2,],}\u{feff}";
        let json = strip_jsonc(text).unwrap();
        assert_eq!(json.len(), text.len());
        let newlines = |s: &str| s.match_indices('\n').map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(newlines(&json), newlines(text));
        assert_eq!(json.split_whitespace().collect::<String>(), "{\"a\":1,\"b\":[2]}\u{feff}");
        assert_eq!(strip_jsonc("{\n  /* open").unwrap_err(), "2:3: a /* comment is never closed");
        // Only a comma after a value is a trailing one.
        for text in ["{,}", "[,]", "[1,,]"] {
            assert_eq!(strip_jsonc(text).unwrap(), text);
        }
    }

    #[test]
    fn reads_vscode_settings_with_servers_under_mcp() {
        let loaded = ok(r#"{"editor.fontSize": 14, "mcp": {"servers": {"fs": {"command": "fs"}}}}"#);
        assert_eq!(loaded.entries, vec![stdio("fs", "fs", &[], &[])]);
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("\"editor.fontSize\""), "{:?}", loaded.warnings);
    }

    #[test]
    fn merges_mcp_servers_and_servers_in_file_order() {
        let loaded = ok(r#"{"servers": {"b": {"command": "b"}}, "mcpServers": {"a": {"command": "a"}}}"#);
        let names: Vec<_> = loaded.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn tells_the_transport_from_the_url_without_a_type() {
        let loaded = ok(r#"{"mcpServers": {
            "a": {"url": "https://h/sse"},
            "b": {"url": "https://h/v1/sse/?key=1"},
            "c": {"url": "https://h/mcp"},
            "d": {"url": "https://sse"},
            "e": {"url": "https://h/mcp?next=/sse"},
            "f": {"serverUrl": "https://h/sse"},
            "g": {"httpUrl": "https://h/sse"},
            "h": {"url": "https://h/sse", "type": "streamableHttp"},
            "i": {"url": "https://h/mcp", "transportType": "sse"}
        }}"#);
        let sse: Vec<_> =
            loaded.entries.iter().map(|e| matches!(e.source, Source::Http { sse: true, .. })).collect();
        assert_eq!(sse, [true, true, false, false, false, true, false, false, true]);
    }

    #[test]
    fn expands_variables_in_every_string_value() {
        let env = [
            ("TOKEN", "s3cret"),
            ("HOST", "h.lan"),
            ("DIR", "/data"),
            ("HOME", "/home/pi"),
            ("BIN", "/usr/bin"),
        ];
        let text = r#"{"mcpServers": {
            "fs": {"command": "${BIN}/node", "args": ["${env:DIR}/x", "--home=${userHome}", "${"],
                   "env": {"KEY": "${env:TOKEN}", "${KEEP}": "k"}, "cwd": "${DIR}"},
            "web": {"url": "https://${env:HOST}/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}}
        }}"#;
        let loaded = parse_with(text, &env).unwrap();
        let fs = Source::Stdio {
            command: "/usr/bin/node".into(),
            args: strings(&["/data/x", "--home=/home/pi", "${"]),
            env: pairs(&[("KEY", "s3cret"), ("${KEEP}", "k")]),
            cwd: Some("/data".into()),
        };
        assert_eq!(loaded.entries[0].source, fs);
        assert_eq!(
            loaded.entries[1],
            http("web", "https://h.lan/mcp", &[("Authorization", "Bearer s3cret")], false)
        );
    }

    #[test]
    fn an_unset_variable_skips_only_its_entry() {
        let text = r#"{"mcpServers": {
            "ha": {"url": "http://ha.lan:8123/mcp_server/sse", "headers": {"Authorization": "Bearer ${env:HA_TOKEN}"}},
            "fs": {"command": "fs", "args": ["${ROOT}"]},
            "ok": {"command": "ok"}
        }}"#;
        let loaded = parse_with(text, &[]).unwrap();
        assert_eq!(loaded.entries, vec![stdio("ok", "ok", &[], &[])]);
        assert_eq!(
            loaded.skipped,
            [
                r#"server "ha": headers.Authorization uses ${env:HA_TOKEN}, which is not set"#,
                r#"server "fs": args[0] uses ${ROOT}, which is not set"#,
            ]
        );
        let loaded = parse_with(text, &[("HA_TOKEN", "t"), ("ROOT", "/")]).unwrap();
        assert_eq!(loaded.entries.len(), 3);
        assert!(loaded.skipped.is_empty());
    }

    #[test]
    fn an_input_prompt_skips_its_entry() {
        let text = r#"{"servers": {
            "gh": {"type": "http", "url": "https://api.example/mcp", "headers": {"Authorization": "Bearer ${input:token}"}},
            "ok": {"command": "ok"}
        }, "inputs": [{"type": "promptString", "id": "token"}]}"#;
        let loaded = ok(text);
        assert_eq!(loaded.entries.len(), 1);
        assert_eq!(loaded.skipped.len(), 1);
        let why = &loaded.skipped[0];
        assert!(
            why.starts_with(r#"server "gh": headers.Authorization uses ${input:token}, a VS Code prompt"#),
            "{why}"
        );
        assert!(why.contains("${env:NAME}"), "{why}");
    }

    #[test]
    fn other_vscode_variables_skip_but_workspace_folder_is_the_project() {
        let text = r#"{"servers": {"a": {"command": "x", "args": ["${config:x}"]}, "b": {"command": "${workspaceFolder}/run"}}}"#;
        let loaded = parse(text, "mcp.json", Path::new("/p/.vscode"), &env_of(&[])).unwrap();
        assert_eq!(loaded.entries, vec![stdio("b", "/p/run", &[], &[])]);
        assert!(
            loaded.skipped[0].contains("uses ${config:x}, which only VS Code can resolve"),
            "{:?}",
            loaded.skipped
        );
        let loaded = parse(text, "mcp.json", Path::new("/etc/mcp"), &env_of(&[])).unwrap();
        assert_eq!(loaded.entries, vec![stdio("b", "/etc/mcp/run", &[], &[])]);
    }

    #[test]
    fn name_overrides_the_key() {
        let loaded = ok(r#"{"mcpServers": {"home assistant": {"name": "ha", "url": "http://h/mcp"}}}"#);
        assert_eq!(loaded.entries[0].name, "ha");
        assert!(loaded.warnings.is_empty());
        let e = err(r#"{"mcpServers": {"fs": {"name": "my fs", "command": "x"}}}"#);
        assert_eq!(
            e,
            r#"test.json: mcpServers.fs.name is "my fs"; a server name is 1 to 64 of A-Z a-z 0-9 _ -"#
        );
    }

    #[test]
    fn an_invalid_key_is_made_valid_with_a_warning() {
        let long = "x".repeat(70);
        let text = format!(
            r#"{{"mcpServers": {{"home assistant": {{"command": "a"}}, "mcp.fs": {{"command": "b"}}, "Ünï": {{"command": "c"}}, "{long}": {{"command": "d"}}}}}}"#
        );
        let loaded = ok(&text);
        let names: Vec<_> = loaded.entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["home-assistant", "mcp-fs", "-n-", "x".repeat(64).as_str()]);
        assert_eq!(loaded.warnings.len(), 4);
        assert_eq!(
            loaded.warnings[0],
            r#"server "home assistant" is registered as "home-assistant" (a server name is 1 to 64 of A-Z a-z 0-9 _ -; set "name" to choose another)"#
        );
        assert!(
            err(r#"{"mcpServers": {"": {"command": "a"}}}"#).contains(r#"mcpServers[""] has an empty key"#)
        );
    }

    #[test]
    fn two_entries_with_one_name_are_refused() {
        let e = err(r#"{"mcpServers": {"a": {"command": "a"}}, "servers": {"a": {"command": "b"}}}"#);
        assert_eq!(
            e,
            r#"test.json: mcpServers.a and servers.a are both named "a"; server names must differ (set "name" on one)"#
        );
        let e = err(r#"{"mcpServers": {"a b": {"command": "a"}, "a-b": {"command": "b"}}}"#);
        assert!(e.contains(r#"mcpServers["a b"] and mcpServers.a-b are both named "a-b""#), "{e}");
        let e = err(r#"{"mcpServers": {"x": {"name": "a", "command": "a"}, "a": {"command": "b"}}}"#);
        assert!(e.contains("both named \"a\""), "{e}");
        let e = err(r#"{"mcpServers": {"a": {"command": "a"}, "a": {"command": "b"}}}"#);
        assert_eq!(e, r#"test.json: mcpServers has "a" twice"#);
        let e = err(r#"{"mcpServers": {"a": {"command": "a", "env": {"K": "1", "K": "2"}}}}"#);
        assert_eq!(e, r#"test.json: mcpServers.a.env has "K" twice"#);
    }

    #[test]
    fn a_syntax_error_gives_line_and_column() {
        let text = "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"}\n    \"b\": {\"command\": \"y\"}\n  }\n}\n";
        assert_eq!(err(text), "test.json:4:5: invalid JSON: expected `,` or `}`");
        // A comment before the mistake on its line keeps the column true.
        let text = "{\"mcpServers\": {\n  /* c */ \"a\": {\"command\": x}}}";
        assert_eq!(err(text), "test.json:2:28: invalid JSON: expected value"); // at the `x`
        assert_eq!(err("{\n /* never closed"), "test.json:2:2: a /* comment is never closed");
    }

    #[test]
    fn a_wrong_value_is_named_by_its_path() {
        let cases = [
            (
                r#"{"mcpServers": {"fs": {"command": "x", "args": "-y"}}}"#,
                "mcpServers.fs.args must be an array of strings",
            ),
            (
                r#"{"mcpServers": {"fs": {"command": "x", "args": ["a", 1]}}}"#,
                "mcpServers.fs.args[1] must be a string",
            ),
            (r#"{"mcpServers": {"fs": {"command": 1}}}"#, "mcpServers.fs.command must be a string"),
            (r#"{"mcpServers": {"fs": {"command": " "}}}"#, "mcpServers.fs.command is empty"),
            (
                r#"{"mcpServers": {"fs": {"command": "x", "env": {"A": {}}}}}"#,
                "mcpServers.fs.env.A must be a string",
            ),
            (
                r#"{"mcpServers": {"fs": {"command": "x", "env": {"A=B": "1"}}}}"#,
                r#"mcpServers.fs.env["A=B"] is not an environment variable name"#,
            ),
            (
                r#"{"mcpServers": {"w": {"url": "ftp://h"}}}"#,
                "mcpServers.w.url is not a usable URL: it must start with http:// or https://",
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://127.0.0.1:99999/mcp"}}}"#,
                "mcpServers.w.url is not a usable URL: bad port",
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://h:0/p"}}}"#,
                "mcpServers.w.url is not a usable URL: bad port",
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://h/p#frag"}}}"#,
                "mcpServers.w.url is not a usable URL: a fragment has no place here",
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://[::1/p"}}}"#,
                "mcpServers.w.url is not a usable URL: an IPv6 address needs its ]",
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://h", "headers": {"a b": "1"}}}}"#,
                r#"mcpServers.w.headers["a b"] is not a valid header name"#,
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://h", "headers": {"A": "1\r\nB: 2"}}}}"#,
                "mcpServers.w.headers.A holds a line break",
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://h", "command": "x"}}}"#,
                r#"mcpServers.w has both "command" and "url""#,
            ),
            (r#"{"mcpServers": {"w": {"args": []}}}"#, r#"mcpServers.w has neither "command""#),
            (
                r#"{"mcpServers": {"w": {"type": "sse", "command": "x"}}}"#,
                r#"mcpServers.w.type is "sse", but the entry has "command""#,
            ),
            (
                r#"{"mcpServers": {"w": {"type": "stdio", "url": "http://h"}}}"#,
                r#"mcpServers.w.type is "stdio", but the entry has "url""#,
            ),
            (
                r#"{"mcpServers": {"w": {"type": "websocket", "url": "http://h"}}}"#,
                r#"mcpServers.w.type is "websocket"; expected"#,
            ),
            (
                r#"{"mcpServers": {"w": {"type": "http", "transportType": "sse", "url": "http://h"}}}"#,
                r#"mcpServers.w.type is "http", but transportType is "sse""#,
            ),
            (
                r#"{"mcpServers": {"w": {"url": "http://h", "serverUrl": "http://h"}}}"#,
                r#"mcpServers.w has both "url" and "serverUrl""#,
            ),
            (
                r#"{"mcpServers": {"w": {"command": "x", "disabled": "yes"}}}"#,
                "mcpServers.w.disabled must be true or false",
            ),
            (r#"{"mcpServers": {"w": ["x"]}}"#, "mcpServers.w must be an object"),
            (r#"{"mcpServers": ["x"]}"#, "mcpServers must be an object of servers by name"),
            (
                r#"{"mcpServers": {"a.b": {"command": "x", "args": 1}}}"#,
                r#"mcpServers["a.b"].args must be an array of strings"#,
            ),
        ];
        for (text, expected) in cases {
            let e = err(text);
            assert!(e.starts_with(&format!("test.json: {expected}")), "{text}\n  gave {e}\n  not {expected}");
        }
    }

    #[test]
    fn a_file_without_servers_is_refused() {
        for text in [r#"{"globalShortcut": ""}"#, "[]", r#"{"mcp": {}}"#] {
            let e = err(text);
            assert!(
                e.contains(r#"{"mcpServers": {NAME: {…}}}"#) && e.contains(r#"{"servers": {NAME: {…}}}"#),
                "{e}"
            );
        }
        assert_eq!(
            err(r#"{"mcpServers": {}}"#),
            r#"test.json: no server is listed in "mcpServers" or "servers""#
        );
        let e =
            err(r#"{"mcpServers": {"a": {"command": "${NOPE}"}, "b": {"command": "b", "disabled": true}}}"#);
        assert_eq!(
            e,
            r#"test.json: no server can run: server "a": command uses ${NOPE}, which is not set; server "b" is disabled in the file"#
        );
    }

    #[test]
    fn disabled_entries_are_skipped() {
        let loaded = ok(r#"{"mcpServers": {
            "off": {"command": "x", "disabled": true},
            "off2": {"url": "http://h", "enabled": false},
            "on": {"command": "y", "disabled": false}
        }}"#);
        assert_eq!(loaded.entries, vec![stdio("on", "y", &[], &[])]);
        assert_eq!(
            loaded.skipped,
            [r#"server "off" is disabled in the file"#, r#"server "off2" is disabled in the file"#]
        );
    }

    #[test]
    fn unknown_fields_are_ignored_with_a_warning() {
        let loaded = ok(r#"{"mcpServers": {
            "a": {"command": "x", "alwaysAllow": ["t"], "autoApprove": [], "timeout": 60, "colour": "red", "headers": {}},
            "b": {"url": "http://h", "transportType": "streamableHttp", "description": "d"}
        }}"#);
        assert_eq!(
            loaded.warnings,
            [
                r#"server "a": "colour" ignored (unknown field)"#,
                r#"server "a": "headers" ignored (it applies to remote servers only)"#,
            ]
        );
    }

    #[test]
    fn env_values_may_be_numbers_or_booleans() {
        let loaded =
            ok(r#"{"mcpServers": {"a": {"command": "x", "env": {"PORT": 8080, "DEBUG": true, "R": 1.5}}}}"#);
        assert_eq!(
            loaded.entries,
            vec![stdio("a", "x", &[], &[("PORT", "8080"), ("DEBUG", "true"), ("R", "1.5")])]
        );
    }

    #[test]
    fn a_line_break_from_a_variable_skips_a_header() {
        let text =
            r#"{"mcpServers": {"w": {"url": "${U}", "headers": {"A": "${V}"}}, "ok": {"command": "x"}}}"#;
        let loaded = parse_with(text, &[("U", "http://h/mcp"), ("V", "1\r\nEvil: 1")]).unwrap();
        assert_eq!(
            loaded.skipped,
            [r#"server "w": headers.A holds a line break once its variables are expanded"#]
        );
        let loaded = parse_with(text, &[("U", "file:///etc"), ("V", "1")]).unwrap();
        assert_eq!(
            loaded.skipped,
            [
                r#"server "w": url is not a usable URL once its variables are expanded: it must start with http:// or https://"#
            ]
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let servers = |n: usize| {
            let list: Vec<_> = (0..n).map(|i| format!(r#""s{i}": {{"command": "x"}}"#)).collect();
            format!(r#"{{"mcpServers": {{{}}}}}"#, list.join(","))
        };
        assert_eq!(ok(&servers(MAX_SERVERS)).entries.len(), MAX_SERVERS);
        assert_eq!(err(&servers(MAX_SERVERS + 1)), "test.json: 101 servers; at most 100 are allowed");
        let args = |n: usize| {
            format!(
                r#"{{"mcpServers": {{"a": {{"command": "x", "args": [{}]}}}}}}"#,
                vec!["\"a\""; n].join(",")
            )
        };
        assert_eq!(ok(&args(MAX_ARGS)).entries.len(), 1);
        assert_eq!(
            err(&args(MAX_ARGS + 1)),
            "test.json: mcpServers.a.args has 257 items; at most 256 are allowed"
        );
        let long = |n: usize| format!(r#"{{"mcpServers": {{"a": {{"command": "{}"}}}}}}"#, "x".repeat(n));
        assert_eq!(ok(&long(MAX_STRING)).entries.len(), 1);
        assert_eq!(err(&long(MAX_STRING + 1)), "test.json: mcpServers.a.command is longer than 64 KiB");
        let big = format!("{}{}", CLAUDE_DESKTOP, " ".repeat(MAX_FILE));
        assert_eq!(err(&big), "test.json: larger than 1 MiB");
    }

    #[test]
    fn load_refuses_a_file_over_one_mib() {
        let dir = TempDir::new("big");
        let path = dir.0.join("big.json");
        std::fs::write(&path, format!("{}{}", CLAUDE_DESKTOP, " ".repeat(MAX_FILE - CLAUDE_DESKTOP.len())))
            .unwrap();
        assert_eq!(load(&path).unwrap().entries.len(), 3);
        std::fs::write(
            &path,
            format!("{}{}", CLAUDE_DESKTOP, " ".repeat(MAX_FILE + 1 - CLAUDE_DESKTOP.len())),
        )
        .unwrap();
        assert_eq!(load(&path).unwrap_err(), format!("{}: larger than 1 MiB; not read", path.display()));
        let missing = dir.0.join("missing.json");
        assert!(load(&missing).unwrap_err().starts_with(&format!("{}: cannot open: ", missing.display())));
    }

    #[test]
    fn load_reads_an_env_file_next_to_the_file() {
        let dir = TempDir::new("envfile");
        let env_file = "# settings\nexport TOKEN=from-file\nHOST = \"h.lan\"\nQUOTED='a # b'\nPLAIN=v # note\n\nLINES=\"a\\nb\"\n";
        std::fs::write(dir.0.join(".env"), env_file).unwrap();
        let text = r#"{"servers": {
            "a": {"command": "x", "envFile": "${workspaceFolder}/.env", "env": {"TOKEN": "own"}},
            "b": {"command": "y", "envFile": "missing.env"}
        }}"#;
        std::fs::write(dir.0.join("mcp.json"), text).unwrap();
        let loaded = load(&dir.0.join("mcp.json")).unwrap();
        let env =
            [("TOKEN", "own"), ("HOST", "h.lan"), ("QUOTED", "a # b"), ("PLAIN", "v"), ("LINES", "a\nb")];
        assert_eq!(loaded.entries, vec![stdio("a", "x", &[], &env)]);
        let missing = dir.0.join("missing.env");
        assert_eq!(loaded.skipped.len(), 1);
        let expected = format!(r#"server "b": envFile {}: cannot open: "#, missing.display());
        assert!(loaded.skipped[0].starts_with(&expected), "{:?}", loaded.skipped);
    }

    #[test]
    fn env_file_lines_are_parsed_like_dotenv() {
        let vars = parse_env_file("A=1\nA=2\n  B='x'  \n#C=3\n").unwrap();
        assert_eq!(vars, pairs(&[("A", "2"), ("B", "x")]));
        assert_eq!(parse_env_file("A=1\nnot a pair\n"), Err(2));
        assert_eq!(parse_env_file("A B=1\n"), Err(1));
    }
}
