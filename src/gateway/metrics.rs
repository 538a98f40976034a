//! Counters for operators, served as Prometheus text at `GET /metrics` (authenticated like the
//! rest) or on `--metrics-listen` (a separate address, typically loopback, without auth).
//!
//! Requests are counted by method and server, errors likewise, tool-call latency goes into a
//! histogram per server, and bytes are counted where JSON-RPC messages cross the gateway: from
//! and to clients, from and to edges. Label values are bounded: methods outside the MCP set
//! count as `other`; a server label is only ever a name a live link holds (counted by that link's
//! owner; what the gateway refuses itself counts as `gateway`), and a name whose link is gone
//! keeps its series only among the last `KEPT_DEPARTED` to leave, so names that come and go
//! (anyone may register without `--register-token`) cannot grow the tables or a scrape.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::thread::lock;

/// Upper bounds of the tool-call latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Methods that get their own label value.
const METHODS: [&str; 19] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/result",
    "tasks/list",
];

/// Names whose links are gone that keep their series (the newest to leave); older ones lose them.
pub(crate) const KEPT_DEPARTED: usize = 64;

/// One gateway's counters, owned by its `Gateway` and passed where they are counted.
pub(crate) struct Metrics {
    /// By method, then server: a request finds its counts without allocating a key.
    requests: Mutex<BTreeMap<&'static str, BTreeMap<String, Counts>>>,
    tool_calls: Mutex<BTreeMap<String, Histogram>>,
    /// Servers whose links are gone, oldest first, at most `KEPT_DEPARTED`.
    departed: Mutex<VecDeque<String>>,
    pub client_bytes_in: AtomicU64,
    pub client_bytes_out: AtomicU64,
    pub edge_bytes_in: AtomicU64,
    pub edge_bytes_out: AtomicU64,
    pub registrations: AtomicU64,
    pub reconnects: AtomicU64,
    /// Policy decisions on calls and per-server endpoints, by kind (`POLICY_KINDS`) then
    /// allowed / denied; and list items a policy hid.
    policy: [[AtomicU64; 2]; 4],
    policy_hidden: AtomicU64,
    /// OAuth access tokens: accepted, invalid, without the scope.
    pub tokens_accepted: AtomicU64,
    pub tokens_invalid: AtomicU64,
    pub tokens_short_of_scope: AtomicU64,
}

/// What a policy decides on, as the `kind` label says it.
pub(crate) const POLICY_KINDS: [&str; 4] = ["tool", "prompt", "resource", "server"];

/// Requests and errors of one (method, server).
pub(crate) type Counts = (u64, u64);

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    total: u64,
    sum: f64,
}

impl Metrics {
    pub(crate) const fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            tool_calls: Mutex::new(BTreeMap::new()),
            departed: Mutex::new(VecDeque::new()),
            client_bytes_in: AtomicU64::new(0),
            client_bytes_out: AtomicU64::new(0),
            edge_bytes_in: AtomicU64::new(0),
            edge_bytes_out: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            policy: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; 4],
            policy_hidden: AtomicU64::new(0),
            tokens_accepted: AtomicU64::new(0),
            tokens_invalid: AtomicU64::new(0),
            tokens_short_of_scope: AtomicU64::new(0),
        }
    }

    /// Counts one request of `method` handled by `server` (`gateway` for its own answers).
    pub(crate) fn request(&self, method: &str, server: &str, ok: bool) {
        let method = METHODS.iter().find(|m| **m == method).copied().unwrap_or("other");
        let mut requests = lock(&self.requests);
        let entry = counted(requests.entry(method).or_default(), server);
        entry.0 += 1;
        entry.1 += u64::from(!ok);
    }

    /// A server's link holds its name: its series stay.
    pub(crate) fn arrived(&self, server: &str) {
        lock(&self.departed).retain(|d| d != server);
    }

    /// A server's link is gone and no other holds its name: its series stay while it is among
    /// the last `KEPT_DEPARTED` to leave (it may come back), then go.
    pub(crate) fn departed(&self, server: &str) {
        let forgotten = {
            let mut departed = lock(&self.departed);
            departed.retain(|d| d != server);
            departed.push_back(server.to_string());
            (departed.len() > KEPT_DEPARTED).then(|| departed.pop_front()).flatten()
        };
        if let Some(gone) = forgotten {
            for servers in lock(&self.requests).values_mut() {
                servers.remove(&gone);
            }
            lock(&self.tool_calls).remove(&gone);
        }
    }

    /// Requests and errors by server, over all methods (`gateway` for its own answers): what
    /// the status page shows.
    pub(crate) fn by_server(&self) -> BTreeMap<String, Counts> {
        let mut out: BTreeMap<String, Counts> = BTreeMap::new();
        for (server, (n, errors)) in lock(&self.requests).values().flatten() {
            let entry = out.entry(server.clone()).or_default();
            entry.0 += n;
            entry.1 += errors;
        }
        out
    }

    /// Records how long a tool call to `server` took.
    pub(crate) fn tool_call(&self, server: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut calls = lock(&self.tool_calls);
        let h = counted(&mut calls, server);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.total += 1;
        h.sum += secs;
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one policy decision on a `POLICY_KINDS` kind.
    pub(crate) fn policy_decision(&self, kind: &str, allowed: bool) {
        if let Some(i) = POLICY_KINDS.iter().position(|k| *k == kind) {
            self.policy[i][usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts list items a policy kept from a client.
    pub(crate) fn policy_hid(&self, n: usize) {
        self.policy_hidden.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts one event.
    pub(crate) fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything, with the gauges given: servers ready,
    /// sessions open as (legacy SSE, Streamable HTTP), and bytes held in queues.
    pub(crate) fn render(&self, ready: usize, (legacy, streamable): (u64, u64), queued: usize) -> String {
        let mut out = String::new();
        gauge(&mut out, "mcpport_servers_registered", "Servers registered and ready.", &[("", ready as u64)]);
        let help = "Bytes waiting in queues to clients and servers (bounded by --max-queue-bytes).";
        gauge(&mut out, "mcpport_queued_bytes", help, &[("", queued as u64)]);
        let sessions = [("transport=\"legacy_sse\"", legacy), ("transport=\"streamable_http\"", streamable)];
        gauge(&mut out, "mcpport_sessions_open", "Client sessions open, by transport.", &sessions);
        self.render_requests(&mut out);
        self.render_histogram(&mut out);
        let counters = [
            ("mcpport_client_bytes_total", "direction=\"in\"", &self.client_bytes_in),
            ("mcpport_client_bytes_total", "direction=\"out\"", &self.client_bytes_out),
            ("mcpport_edge_bytes_total", "direction=\"in\"", &self.edge_bytes_in),
            ("mcpport_edge_bytes_total", "direction=\"out\"", &self.edge_bytes_out),
        ];
        header(&mut out, "mcpport_client_bytes_total", "counter", "JSON-RPC bytes from and to clients.");
        header(&mut out, "mcpport_edge_bytes_total", "counter", "JSON-RPC bytes from and to edges.");
        for (name, labels, c) in counters {
            let _ = writeln!(out, "{name}{{{labels}}} {}", c.load(Ordering::Relaxed));
        }
        let edges = [
            ("mcpport_registrations_total", "Edge registrations accepted.", &self.registrations),
            (
                "mcpport_reconnects_total",
                "Registrations that replaced a live link of the same server id.",
                &self.reconnects,
            ),
        ];
        for (name, help, c) in edges {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        self.render_access(&mut out);
        out
    }

    fn render_access(&self, out: &mut String) {
        let name = "mcpport_policy_decisions_total";
        header(out, name, "counter", "Policy decisions on calls and per-server endpoints, by kind.");
        for (kind, counts) in POLICY_KINDS.iter().zip(&self.policy) {
            for (decision, c) in ["allow", "deny"].iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{kind}\",decision=\"{decision}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let name = "mcpport_policy_hidden_items_total";
        header(out, name, "counter", "List items a policy kept from the client asking.");
        let _ = writeln!(out, "{name} {}", self.policy_hidden.load(Ordering::Relaxed));
        let name = "mcpport_oauth_tokens_total";
        header(out, name, "counter", "OAuth access tokens presented, by outcome.");
        let outcomes = [
            ("accepted", &self.tokens_accepted),
            ("invalid", &self.tokens_invalid),
            ("insufficient_scope", &self.tokens_short_of_scope),
        ];
        for (outcome, c) in outcomes {
            let _ = writeln!(out, "{name}{{result=\"{outcome}\"}} {}", c.load(Ordering::Relaxed));
        }
    }

    fn render_requests(&self, out: &mut String) {
        let requests: Vec<(&str, String, Counts)> = lock(&self.requests)
            .iter()
            .flat_map(|(method, servers)| {
                servers.iter().map(|(server, counts)| (*method, server.clone(), *counts))
            })
            .collect();
        header(
            out,
            "mcpport_requests_total",
            "counter",
            "Client requests, by method and the server that handled them.",
        );
        for (method, server, (n, _)) in &requests {
            let _ = writeln!(
                out,
                "mcpport_requests_total{{method=\"{method}\",server=\"{}\"}} {n}",
                escape(server)
            );
        }
        header(out, "mcpport_request_errors_total", "counter", "Client requests answered with an error.");
        for (method, server, (_, errors)) in &requests {
            let _ = writeln!(
                out,
                "mcpport_request_errors_total{{method=\"{method}\",server=\"{}\"}} {errors}",
                escape(server)
            );
        }
    }

    fn render_histogram(&self, out: &mut String) {
        let name = "mcpport_tool_call_duration_seconds";
        header(out, name, "histogram", "Tool call latency through the gateway, by server.");
        for (server, h) in lock(&self.tool_calls).iter() {
            let server = escape(server);
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "{name}_bucket{{server=\"{server}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{server=\"{server}\",le=\"+Inf\"}} {}", h.total);
            let _ = writeln!(out, "{name}_sum{{server=\"{server}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{server=\"{server}\"}} {}", h.total);
        }
    }
}

/// The counts of `server` in `map`: found without allocating a key once they exist.
fn counted<'m, V: Default>(map: &'m mut BTreeMap<String, V>, server: &str) -> &'m mut V {
    if !map.contains_key(server) {
        first_count(map, server);
    }
    map.get_mut(server).expect("counts exist once first_count made them")
}

/// A server's first count. Out of line: the map's insert is bigger than everything else a
/// call's answer passes through on the link owner's stack.
#[cold]
#[inline(never)]
fn first_count<V: Default>(map: &mut BTreeMap<String, V>, server: &str) {
    map.insert(server.to_string(), V::default());
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, values: &[(&str, u64)]) {
    header(out, name, "gauge", help);
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Escapes a label value (server names are plain, but a label must never break the format).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::new();
        m.request("tools/call", "pi", true);
        m.request("tools/call", "pi", false);
        m.request("made/up", "gateway", true);
        m.tool_call("pi", Duration::from_millis(30));
        m.tool_call("pi", Duration::from_secs(3));
        let text = m.render(0, (0, 0), 7);
        assert!(text.contains("mcpport_queued_bytes 7"), "{text}");
        assert!(text.contains("mcpport_requests_total{method=\"tools/call\",server=\"pi\"} 2"), "{text}");
        assert!(text.contains("mcpport_request_errors_total{method=\"tools/call\",server=\"pi\"} 1"));
        assert!(text.contains("mcpport_requests_total{method=\"other\",server=\"gateway\"} 1"));
        assert!(text.contains("mcpport_tool_call_duration_seconds_bucket{server=\"pi\",le=\"0.05\"} 1"));
        assert!(text.contains("mcpport_tool_call_duration_seconds_bucket{server=\"pi\",le=\"5\"} 2"));
        assert!(text.contains("mcpport_tool_call_duration_seconds_count{server=\"pi\"} 2"));
        assert!(text.contains("mcpport_sessions_open{transport=\"legacy_sse\"} 0"));
        let by_server = m.by_server();
        assert_eq!((by_server["pi"], by_server["gateway"]), ((2, 1), (1, 0)));
    }

    /// Names that come and go keep their series only among the last to leave: a thousand
    /// registrations of random names cost `KEPT_DEPARTED` series, not a thousand.
    #[test]
    fn departed_servers_series_are_bounded() {
        let m = Metrics::new();
        for i in 0..1000 {
            let name = format!("random-{i}");
            m.arrived(&name);
            m.request("tools/call", &name, true);
            m.tool_call(&name, Duration::from_millis(1));
            m.departed(&name);
        }
        m.arrived("pi");
        m.request("tools/call", "pi", true);
        assert_eq!(m.by_server().len(), KEPT_DEPARTED + 1);
        assert_eq!(lock(&m.tool_calls).len(), KEPT_DEPARTED);
        assert!(m.by_server().contains_key("random-999") && !m.by_server().contains_key("random-0"));
        // A name that comes back keeps its counts.
        m.departed("pi");
        m.arrived("pi");
        for i in 1000..1100 {
            m.departed(&format!("random-{i}"));
        }
        assert_eq!(m.by_server()["pi"], (1, 0), "a live server's series are never forgotten");
    }
}
