//! Message correlation: every answer, notification and server request reaches exactly the client
//! and the request it belongs to, and nothing in the gateway grows without bound while it does.
//! One test per review finding, named after it:
//!
//! 1. `cancel_race_...`: a cancel sent right after its request is never lost.
//! 2. `edge_cancel_...`: an edge's own `notifications/cancelled` reaches only the client it asked,
//!    under the id that client saw.
//! 3. `catalog_race_...`: a registration storm with edges dying leaves exactly the live servers.
//! 4. `log_level_...`: `logging/setLevel` is per session, not last-one-wins at the server.
//! 5. `resources_updated_...`: a subscription matches its URI and what lies under it at a path
//!    boundary, and each session hears an update once.
//! 6. `tenant_isolation_...`: a server request or log that cannot be attributed to one client goes
//!    to nobody (the server gets an error saying so).
//! 7. `threads_bounded_...`: big batches, list_changed storms and pipelined POSTs cost a bounded
//!    number of threads.
//! 8. `memory_bounded_...`: a client that does not read its stream costs bounded memory.
//! 9. `randomized_concurrency_...`: clients, cancels, gateway restarts and edge restarts at once,
//!    from a printed seed (`MCPPORT_SEED` replays it): nobody ever gets someone else's answer.
//!
//! Each test collects every problem it sees and reports them together, so one run shows the
//! whole state of a finding.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{
    messages_of, post_pipelined, Gateway, Proc, Sampler, SseClient, StreamableClient, Watchdog, WAIT,
};

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ELICIT: &str = "elicitation/create";

/// Fails the test with every problem found, if there is any.
fn report(test: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{test}: {} problem(s):\n- {}", problems.len(), problems.join("\n- "));
}

/// A response (not a request: no method) with this id.
fn is_answer_to(msg: &Value, id: &Value) -> bool {
    &msg["id"] == id && msg.get("method").is_none()
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string()
}

/// Every tool name on every page of the aggregated `tools/list`.
fn all_tool_names(c: &mut SseClient) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let params = cursor.take().map_or(json!({}), |c| json!({"cursor": c}));
        let page = c.call("tools/list", params);
        let Some(tools) = page["result"]["tools"].as_array() else { return names };
        names.extend(tools.iter().filter_map(|t| t["name"].as_str().map(String::from)));
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    names
}

/// A small seeded PRNG (splitmix64): the tests print the seed, `MCPPORT_SEED` replays it.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("MCPPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("{test}: seed {seed} (MCPPORT_SEED={seed} replays it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// An independent generator for a thread.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

// ---- 1 ----

#[test]
fn cancel_race_a_cancel_sent_right_after_its_request_is_never_lost() {
    let _w = Watchdog::new("cancel_race", Duration::from_secs(40));
    let gw = Gateway::start(&[]);
    let pi = gw.register_ready("pi");
    let mut problems = Vec::new();

    // Legacy SSE: the call and its cancel pipelined on one connection, ten times.
    let mut c = gw.client();
    c.initialize("2024-11-05");
    let ids: Vec<u64> = (100..110).collect();
    for id in &ids {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "pi_sleep", "arguments": {"seconds": 3}}});
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                            "params": {"requestId": id, "reason": "changed my mind"}});
        let statuses: Vec<u16> =
            post_pipelined(gw.port, &c.endpoint, &[JSON], &[call, cancel]).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [202, 202], "call and cancel of {id}");
    }
    let answered: Vec<Value> = c
        .collect(Duration::from_secs(4))
        .into_iter()
        .filter(|m| m.get("method").is_none() && ids.iter().any(|id| m["id"] == json!(id)))
        .collect();
    if !answered.is_empty() {
        let which: Vec<String> = answered.iter().map(|m| m["id"].to_string()).collect();
        problems.push(format!(
            "legacy: {} of 10 cancelled calls were answered anyway (ids {}), e.g. {}",
            answered.len(),
            which.join(", "),
            answered[0]
        ));
    }
    let legacy_seen = pi.wait_count("cancelled after", 10, Duration::from_secs(2));
    if legacy_seen != 10 {
        problems.push(format!("legacy: the sample server saw {legacy_seen} of 10 cancellations"));
    }

    // Streamable HTTP 2025-03-26: [call, cancel] as one batch, ten POSTs at once.
    let mut s = StreamableClient::new(gw.port, "/mcp", "2025-03-26");
    s.initialize(json!({}));
    let posts: Vec<_> = (200..210u64)
        .map(|id| {
            let s = s.clone();
            std::thread::spawn(move || {
                let batch = json!([
                    {"jsonrpc": "2.0", "id": id, "method": "tools/call",
                     "params": {"name": "pi_sleep", "arguments": {"seconds": 3}}},
                    {"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": id, "reason": "changed my mind"}},
                ]);
                let resp = s.try_post(&batch);
                (id, resp)
            })
        })
        .collect();
    for post in posts {
        let (id, resp) = post.join().unwrap();
        match resp {
            Ok(resp) => {
                if let Some(a) = messages_of(&resp).iter().find(|m| is_answer_to(m, &json!(id))) {
                    problems
                        .push(format!("streamable: batch [call {id}, cancel {id}] answered the call: {a}"));
                }
            }
            Err(e) => problems.push(format!("streamable: POST of batch {id} failed: {e}")),
        }
    }
    let seen = pi.wait_count("cancelled after", legacy_seen + 10, Duration::from_secs(2)) - legacy_seen;
    if seen != 10 {
        problems.push(format!("streamable: the sample server saw {seen} of 10 cancellations"));
    }
    report("cancel_race", &problems);
}

// ---- 2 ----

#[test]
fn edge_cancel_reaches_only_the_client_it_asked_under_that_clients_id() {
    let _w = Watchdog::new("edge_cancel", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let caps = json!({"elicitation": {}, "sampling": {}});
    let mut x = SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    let mut y = SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    let mut z = gw.client();
    for c in [&mut x, &mut y, &mut z] {
        c.initialize_with("2025-06-18", caps.clone());
    }
    let mut problems = Vec::new();
    let call = x.send(
        "tools/call",
        json!({"name": "ask_client", "arguments": {"method": ELICIT, "cancel_after_ms": 300}}),
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Some(msg) = x.next(Duration::from_millis(100)) else { continue };
        let done = is_answer_to(&msg, &json!(call));
        got.push(msg);
        if done {
            break;
        }
    }
    got.extend(x.collect(Duration::from_millis(300)));
    let ask = got.iter().find(|m| m["method"] == ELICIT);
    let cancel = got.iter().find(|m| m["method"] == "notifications/cancelled");
    match (ask, cancel) {
        (Some(ask), Some(cancel)) if cancel["params"]["requestId"] == ask["id"] => {}
        (Some(ask), Some(cancel)) => problems.push(format!(
            "X was asked under id {} but the cancellation names {} ({cancel})",
            ask["id"], cancel["params"]["requestId"]
        )),
        (None, _) => problems.push(format!("X never received the elicitation request; got {got:?}")),
        (Some(_), None) => problems.push(format!("X never received notifications/cancelled; got {got:?}")),
    }
    match got.iter().find(|m| is_answer_to(m, &json!(call))) {
        Some(a) if text_of(a) == "cancelled its request" => {}
        other => problems.push(format!("X's ask_client answer: {other:?}")),
    }
    for (name, c) in [("Y (same server)", &mut y), ("Z (aggregated)", &mut z)] {
        for m in c.collect(Duration::from_millis(500)) {
            if m["method"] == "notifications/cancelled" || m["method"] == ELICIT {
                problems.push(format!("{name} received {m}"));
            }
        }
    }
    report("edge_cancel", &problems);
}

// ---- 3 ----

#[test]
fn catalog_race_registration_storm_lists_exactly_the_live_servers() {
    let _w = Watchdog::new("catalog_race", Duration::from_secs(90));
    let mut rng = Rng::from_env("catalog_race");
    let mut problems = Vec::new();
    // The window is narrow (two catalog rebuilds overlapping), so many short rounds; two
    // failing rounds are evidence enough.
    for round in 0..20 {
        if problems.len() >= 2 {
            break;
        }
        let gw = Gateway::start(&[]);
        let live: Vec<Proc> = (0..20).map(|n| gw.register(&format!("s{n:02}"), &[])).collect();
        let doomed: Vec<(Proc, Duration)> = (0..10)
            .map(|n| (gw.register(&format!("k{n:02}"), &[]), Duration::from_millis(rng.range(0, 250))))
            .collect();
        let started = Instant::now();
        let killer = std::thread::spawn(move || {
            let mut doomed = doomed;
            doomed.sort_by_key(|(_, at)| *at);
            for (p, at) in doomed.iter_mut() {
                std::thread::sleep(at.saturating_sub(started.elapsed()));
                p.kill_hard();
            }
            doomed
        });
        for p in &live {
            p.wait_log("registered as");
        }
        let _doomed = killer.join().unwrap();

        let expected: BTreeSet<String> = (0..20).map(|n| format!("s{n:02}")).collect();
        let mut c = gw.client();
        c.initialize("2025-06-18");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
            for name in all_tool_names(&mut c).iter().filter(|n| *n != "list_servers") {
                let prefix = name.split('_').next().unwrap_or_default().to_string();
                *per_server.entry(prefix).or_default() += 1;
            }
            let listed: BTreeSet<String> = per_server.keys().cloned().collect();
            let counts: BTreeSet<usize> = per_server.values().copied().collect();
            if listed == expected && counts.len() == 1 {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = expected.difference(&listed).collect();
                let extra: Vec<_> = listed.difference(&expected).collect();
                problems.push(format!(
                    "round {round}: 3 s after the storm the catalog still lists the wrong servers: \
                     missing {missing:?}, extra {extra:?}, tools per server {per_server:?}"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    report("catalog_race", &problems);
}

// ---- 4 ----

#[test]
fn log_level_is_per_session_not_last_one_wins() {
    let _w = Watchdog::new("log_level_per_session", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let (mut a, mut b) = (gw.client(), gw.client());
    a.initialize("2025-06-18");
    b.initialize("2025-06-18");
    assert_eq!(b.call("logging/setLevel", json!({"level": "debug"}))["result"], json!({}));
    assert_eq!(a.call("logging/setLevel", json!({"level": "error"}))["result"], json!({}));
    let done = b.tool("pi_log", json!({"level": "info", "message": "for b"}));
    let mut problems = Vec::new();
    match b.notification("notifications/message", Duration::from_secs(3)) {
        Some(m) if m["params"]["level"] == "info" && m["params"]["data"] == "for b" => {}
        Some(m) => problems.push(format!("B got the wrong log message: {m}")),
        None => problems
            .push(format!("B (level debug) got no info log message; the tool said {:?}", text_of(&done))),
    }
    if let Some(m) = a.notification("notifications/message", Duration::from_millis(500)) {
        problems.push(format!("A (level error) got an info message: {m}"));
    }
    report("log_level_per_session", &problems);
}

// ---- 5 ----

#[test]
fn resources_updated_fan_out_matches_at_path_boundaries_once_per_session() {
    let _w = Watchdog::new("resources_updated_fan_out", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut a = SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    let mut b = SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    a.initialize("2025-06-18");
    b.initialize("2025-06-18");
    for (who, uri) in [("A", "sample://r/x"), ("B", "sample://r/xy"), ("A", "sample://r/x/y")] {
        let c = if who == "A" { &mut a } else { &mut b };
        let resp = c.call("resources/subscribe", json!({"uri": uri}));
        assert_eq!(resp["result"], json!({}), "{who} subscribe {uri}: {resp}");
    }
    let updates = |c: &mut SseClient, limit| -> Vec<String> {
        c.collect(limit)
            .into_iter()
            .filter(|m| m["method"] == "notifications/resources/updated")
            .map(|m| m["params"]["uri"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut problems = Vec::new();

    a.tool("touch", json!({"uri": "sample://r/xy", "force": true}));
    let (to_a, to_b) =
        (updates(&mut a, Duration::from_millis(700)), updates(&mut b, Duration::from_millis(700)));
    if to_b != ["sample://r/xy"] {
        problems.push(format!("sample://r/xy: B (subscribed to it) got {to_b:?}"));
    }
    if !to_a.is_empty() {
        problems.push(format!(
            "sample://r/xy: A (subscribed to sample://r/x, not a path prefix of it) got {to_a:?}"
        ));
    }

    a.tool("touch", json!({"uri": "sample://r/x/y/z", "force": true}));
    let (to_a, to_b) =
        (updates(&mut a, Duration::from_millis(700)), updates(&mut b, Duration::from_millis(700)));
    if to_a != ["sample://r/x/y/z"] {
        problems.push(format!(
            "sample://r/x/y/z: A (under two of its subscriptions) should get it once, got {to_a:?}"
        ));
    }
    if !to_b.is_empty() {
        problems.push(format!("sample://r/x/y/z: B got {to_b:?}"));
    }
    report("resources_updated_fan_out", &problems);
}

// ---- 6 ----

/// Reads both clients' streams until `done` says so or `limit` passes, handing each message to
/// `on` with the client's name.
fn pump_two(
    a: &mut SseClient,
    b: &mut SseClient,
    limit: Duration,
    mut on: impl FnMut(&str, &SseClient, Value),
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !done() {
        if let Some(m) = a.next(Duration::from_millis(20)) {
            on("A", a, m);
        }
        if let Some(m) = b.next(Duration::from_millis(20)) {
            on("B", b, m);
        }
    }
}

#[test]
fn tenant_isolation_server_requests_and_logs_never_reach_another_client() {
    let _w = Watchdog::new("tenant_isolation", Duration::from_secs(40));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let caps = json!({"elicitation": {}, "sampling": {}});
    let mut a = SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    let mut b = SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    a.initialize_with("2025-06-18", caps.clone());
    b.initialize_with("2025-06-18", caps);
    let mut problems = Vec::new();

    // Two clients in flight: the server's request belongs to neither for sure; it is refused.
    let b_call = b
        .send("tools/call", json!({"name": "ask_client", "arguments": {"method": ELICIT, "delay_ms": 1000}}));
    let a_call = a.send("tools/call", json!({"name": "sleep", "arguments": {"seconds": 3}}));
    let (mut a_done, mut b_answer) = (false, None::<Value>);
    let answered = std::cell::Cell::new(0);
    pump_two(
        &mut a,
        &mut b,
        Duration::from_secs(6),
        |who, c, m| {
            if m["method"] == ELICIT {
                problems.push(format!(
                    "{who} received the server's request while A and B were both in flight: {m}"
                ));
                c.reply(&m["id"], json!({"action": "decline"})); // so that the tool does not wait 30 s
            } else if who == "A" && is_answer_to(&m, &json!(a_call)) {
                a_done = true;
                answered.set(answered.get() + 1);
            } else if who == "B" && is_answer_to(&m, &json!(b_call)) {
                b_answer = Some(m);
                answered.set(answered.get() + 1);
            }
        },
        || answered.get() == 2,
    );
    assert!(a_done, "A's sleep was not answered");
    match &b_answer {
        Some(r) if r["result"]["isError"] == true && text_of(r).contains("more than one client") => {}
        Some(r) => problems.push(format!("B's ask_client should fail with \"more than one client\": {r}")),
        None => problems.push("B's ask_client got no answer within 6 s".into()),
    }

    // One client in flight: its request reaches it, and its answer goes back.
    let b_call = b.send("tools/call", json!({"name": "ask_client", "arguments": {"method": ELICIT}}));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut result = None;
    while Instant::now() < deadline && result.is_none() {
        let Some(m) = b.next(Duration::from_millis(100)) else { continue };
        if m["method"] == ELICIT {
            b.reply(&m["id"], json!({"action": "accept", "content": {"name": "b"}}));
        } else if is_answer_to(&m, &json!(b_call)) {
            result = Some(m);
        }
    }
    match result {
        Some(r) if r["result"]["isError"] == false && text_of(&r).contains(r#""name":"b""#) => {}
        other => problems.push(format!("B alone: its elicitation answer should come back: {other:?}")),
    }
    for m in a.collect(Duration::from_millis(200)) {
        if m["method"] == ELICIT {
            problems.push(format!("A received B's lone request: {m}"));
        }
    }

    // Logs: B's log message while A is in flight never reaches A.
    assert_eq!(b.call("logging/setLevel", json!({"level": "debug"}))["result"], json!({}));
    let b_log = b.send(
        "tools/call",
        json!({"name": "log", "arguments": {"level": "info", "message": "from b", "delay_ms": 1000}}),
    );
    let a_call = a.send("tools/call", json!({"name": "sleep", "arguments": {"seconds": 3}}));
    let answered = std::cell::Cell::new(0);
    pump_two(
        &mut a,
        &mut b,
        Duration::from_secs(6),
        |who, _, m| {
            if who == "A" && m["method"] == "notifications/message" {
                problems.push(format!("A received B's log message: {m}"));
            }
            if (who == "A" && is_answer_to(&m, &json!(a_call)))
                || (who == "B" && is_answer_to(&m, &json!(b_log)))
            {
                answered.set(answered.get() + 1);
            }
        },
        || answered.get() == 2,
    );
    report("tenant_isolation", &problems);
}

// ---- 7 ----

const THREAD_LIMIT: u64 = 300;

#[test]
fn threads_bounded_for_big_batches_list_changed_storms_and_pipelined_posts() {
    let _w = Watchdog::new("threads_bounded", Duration::from_secs(90));
    let mut problems = Vec::new();

    // (a) One batch of 3,000 calls on a 2025-03-26 session.
    {
        let gw = Gateway::start(&[]);
        let _pi = gw.register_ready("pi");
        let mut s = StreamableClient::new(gw.port, "/mcp", "2025-03-26");
        s.initialize(json!({}));
        let batch: Vec<Value> = (1..=3000u64)
            .map(|id| {
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                             "params": {"name": "pi_echo", "arguments": {"text": format!("text {id}")}}})
            })
            .collect();
        let sampler = Sampler::start(gw.proc.pid());
        let started = Instant::now();
        let resp = s.try_post(&Value::Array(batch));
        let took = started.elapsed();
        let peak = sampler.peak_threads();
        drop(sampler);
        match resp {
            Ok(resp) => {
                let mut right = 0;
                let mut wrong = Vec::new();
                let answers = messages_of(&resp);
                for m in answers.iter().filter(|m| m.get("method").is_none()) {
                    let want = format!("text {}", m["id"]);
                    if text_of(m) == want {
                        right += 1;
                    } else if wrong.len() < 3 {
                        wrong.push(m.to_string());
                    }
                }
                if right != 3000 {
                    problems.push(format!(
                        "(a) {right} of 3000 batch answers carry their own text ({} messages, status {}); e.g. {wrong:?}",
                        answers.len(),
                        resp.status
                    ));
                }
            }
            Err(e) => problems.push(format!("(a) the batch POST failed after {took:?}: {e}")),
        }
        eprintln!("(a) 3000-call batch: {took:?}, peak {peak} threads");
        if peak >= THREAD_LIMIT {
            problems.push(format!("(a) a batch of 3000 calls took the gateway to {peak} threads"));
        }
    }

    // (b) The edge announces 3,000 list changes as fast as it can.
    {
        let gw = Gateway::start(&[]);
        let _pi = gw.register_ready("pi");
        let mut s = StreamableClient::new(gw.port, "/servers/pi/mcp", "2025-06-18");
        s.initialize(json!({}));
        let sampler = Sampler::start(gw.proc.pid());
        let sent =
            s.call(1, "tools/call", json!({"name": "spam_list_changed", "arguments": {"count": 3000}}));
        if text_of(&sent) != "sent 3000" {
            problems.push(format!("(b) spam_list_changed: {sent}"));
        }
        std::thread::sleep(Duration::from_secs(3));
        let peak = sampler.peak_threads();
        drop(sampler);
        eprintln!("(b) 3000 list_changed: peak {peak} threads");
        if peak >= THREAD_LIMIT {
            problems.push(format!("(b) 3000 list_changed took the gateway to {peak} threads"));
        }
        let mut c = gw.client();
        c.initialize("2025-06-18");
        let names = c.tool_names();
        if !names.contains(&"pi_echo".to_string()) {
            problems.push(format!("(b) afterwards tools/list lists {names:?}"));
        }
        let echo = s.call(2, "tools/call", json!({"name": "echo", "arguments": {"text": "still here"}}));
        if text_of(&echo) != "still here" {
            problems.push(format!("(b) afterwards echo answers {echo}"));
        }
    }

    // (c) 800 legacy POSTs pipelined on one keep-alive connection.
    {
        let gw = Gateway::start(&[]);
        let _pi = gw.register_ready("pi");
        let mut c = gw.client();
        c.initialize("2024-11-05");
        let ids: Vec<u64> = (1000..1800).collect();
        let bodies: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                             "params": {"name": "pi_sleep", "arguments": {"seconds": 0.2}}})
            })
            .collect();
        let sampler = Sampler::start(gw.proc.pid());
        let accepted =
            post_pipelined(gw.port, &c.endpoint, &[JSON], &bodies).iter().filter(|r| r.status == 202).count();
        if accepted != 800 {
            problems.push(format!("(c) {accepted} of 800 pipelined POSTs got 202"));
        }
        let mut answers: HashMap<u64, usize> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while answers.len() < accepted && Instant::now() < deadline {
            let Some(m) = c.next(Duration::from_millis(100)) else { continue };
            if let Some(id) = m["id"].as_u64().filter(|_| m.get("method").is_none()) {
                *answers.entry(id).or_default() += 1;
                if text_of(&m) != "slept 0.2 s" {
                    problems.push(format!("(c) answer {m}"));
                }
            }
        }
        for m in c.collect(Duration::from_millis(300)) {
            if let Some(id) = m["id"].as_u64().filter(|_| m.get("method").is_none()) {
                *answers.entry(id).or_default() += 1;
            }
        }
        let peak = sampler.peak_threads();
        drop(sampler);
        let unanswered = ids.iter().filter(|id| !answers.contains_key(id)).count();
        let twice = answers.values().filter(|n| **n > 1).count();
        let strangers = answers.keys().filter(|id| !ids.contains(id)).count();
        if unanswered + twice + strangers > 0 {
            problems.push(format!(
                "(c) of 800 pipelined calls: {unanswered} unanswered, {twice} answered twice, {strangers} unknown ids"
            ));
        }
        eprintln!("(c) 800 pipelined POSTs: peak {peak} threads");
        if peak >= THREAD_LIMIT {
            problems.push(format!("(c) 800 pipelined POSTs took the gateway to {peak} threads"));
        }
    }
    report("threads_bounded", &problems);
}

// ---- 8 ----

#[test]
fn memory_bounded_when_a_client_does_not_read_its_stream() {
    let _w = Watchdog::new("memory_bounded", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut s = StreamableClient::new(gw.port, "/servers/pi/mcp", "2025-06-18");
    s.initialize(json!({}));
    let mut problems = Vec::new();
    let sampler = Sampler::start(gw.proc.pid());
    let flood = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "flood", "arguments": {"count": 400, "bytes": 1_048_576}, "_meta": {"progressToken": "flood"}}});
    let unread = s.open(&flood);
    std::thread::sleep(Duration::from_secs(10));
    let peak = sampler.peak_rss_mb();
    eprintln!("a client not reading 400 MiB of progress: gateway peak RSS {peak} MiB");
    if peak >= 150 {
        problems.push(format!("the gateway's RSS reached {peak} MiB while a client did not read its stream"));
    }
    drop(unread);

    let health = crate::util::try_http(gw.port, "GET", "/health", &[], b"");
    if health.as_ref().map(|h| h.status).ok() != Some(200) {
        problems.push(format!("afterwards /health answers {health:?}"));
    }
    let mut other = gw.client();
    other.initialize("2025-06-18");
    let echo = other.tool("pi_echo", json!({"text": "after the flood"}));
    if text_of(&echo) != "after the flood" {
        problems.push(format!("afterwards another session's echo answers {echo}"));
    }
    let peak = sampler.peak_rss_mb();
    if peak >= 150 {
        problems.push(format!("the gateway's RSS reached {peak} MiB in the end"));
    }
    report("memory_bounded", &problems);
}
