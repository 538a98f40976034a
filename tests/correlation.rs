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
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{
    messages_of, post_pipelined, Gateway, Proc, Sampler, SseClient, StreamableClient, Watchdog,
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

    // (a) Batches on a 2025-03-26 session: one of 3,000 calls is refused at the door (a batch
    // holds at most 64 messages); the largest allowed, 64 calls, is answered in full, each
    // answer to its own call, without a thread per call.
    {
        let gw = Gateway::start(&[]);
        let _pi = gw.register_ready("pi");
        let mut s = StreamableClient::new(gw.port, "/mcp", "2025-03-26");
        s.initialize(json!({}));
        let batch = |n: u64| -> Vec<Value> {
            (1..=n)
                .map(|id| {
                    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                 "params": {"name": "pi_echo", "arguments": {"text": format!("text {id}")}}})
                })
                .collect()
        };
        match s.try_post(&Value::Array(batch(3000))) {
            Ok(resp) if resp.status == 400 && resp.body.contains("at most 64") => {}
            other => problems.push(format!("(a) a batch of 3000 was not refused: {other:?}")),
        }
        let sampler = Sampler::start(gw.proc.pid());
        let started = Instant::now();
        let resp = s.try_post(&Value::Array(batch(64)));
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
                if right != 64 {
                    problems.push(format!(
                        "(a) {right} of 64 batch answers carry their own text ({} messages, status {}); e.g. {wrong:?}",
                        answers.len(),
                        resp.status
                    ));
                }
            }
            Err(e) => problems.push(format!("(a) the batch POST failed after {took:?}: {e}")),
        }
        eprintln!("(a) 64-call batch: {took:?}, peak {peak} threads");
        if peak >= THREAD_LIMIT {
            problems.push(format!("(a) a batch of 64 calls took the gateway to {peak} threads"));
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
    let pi = gw.register_ready("pi");
    // Another edge: the flooding one's own link is busy carrying its 400 MiB (its later answers
    // queue behind them, which is the edge's business); everyone else must not notice.
    let _other = gw.register_ready("other");
    let mut s = StreamableClient::new(gw.port, "/servers/pi/mcp", "2025-06-18");
    s.initialize(json!({}));
    let mut problems = Vec::new();
    let sampler = Sampler::start(gw.proc.pid());
    // register, between a child writing as fast as it can and a link that cannot take it, stops
    // reading the child: its memory stays bounded too.
    let edge_sampler = Sampler::start(pi.pid());
    let flood = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "flood", "arguments": {"count": 400, "bytes": 1_048_576}, "_meta": {"progressToken": "flood"}}});
    let unread = s.open(&flood);
    std::thread::sleep(Duration::from_secs(10));
    let peak = sampler.peak_rss_mb();
    let edge_peak = edge_sampler.peak_rss_mb();
    eprintln!(
        "a client not reading 400 MiB of progress: peak RSS gateway {peak} MiB, register {edge_peak} MiB"
    );
    if peak >= 150 {
        problems.push(format!("the gateway's RSS reached {peak} MiB while a client did not read its stream"));
    }
    if edge_peak >= 100 {
        problems.push(format!("register's RSS reached {edge_peak} MiB while its link was backed up"));
    }
    drop(unread);

    let health = crate::util::try_http(gw.port, "GET", "/health", &[], b"");
    if health.as_ref().map(|h| h.status).ok() != Some(200) {
        problems.push(format!("afterwards /health answers {health:?}"));
    }
    let mut other = gw.client();
    other.initialize("2025-06-18");
    let echo = other.tool("other_echo", json!({"text": "after the flood"}));
    if text_of(&echo) != "after the flood" {
        problems.push(format!("afterwards another session's echo answers {echo}"));
    }
    let peak = sampler.peak_rss_mb();
    if peak >= 150 {
        problems.push(format!("the gateway's RSS reached {peak} MiB in the end"));
    }
    report("memory_bounded", &problems);
}

// ---- 9 ----

/// Clients of the randomized run, and what each does.
const CLIENTS: usize = 12;
const OPS: usize = 40;
/// Requests one client keeps in flight at most.
const IN_FLIGHT: usize = 4;
const SERVERS: [&str; 3] = ["a", "b", "c"];
/// An answer that arrives this long after its cancel was acknowledged is a lost cancel (less is
/// the documented race: the answer was already on its way).
const CANCEL_GRACE: Duration = Duration::from_millis(200);
/// See `KillLog::recent`.
const STRAY_WINDOW: Duration = Duration::from_secs(2);

/// What a request's answer must be.
#[derive(Debug, Clone)]
enum Expect {
    Echo(String),
    Sleep(f64),
    Log,
    Ask,
    Init,
    SetLevel,
}

#[derive(Debug, Clone)]
struct Pending {
    expect: Expect,
    sent: Instant,
    /// When the gateway acknowledged our cancel of it (202).
    cancelled: Option<Instant>,
    token: Option<String>,
}

/// What a client's reader threads report.
enum Ev {
    /// A message on the legacy stream (`post: None`) or on the answer to the POST of request `post`.
    Msg { gen: u64, post: Option<u64>, msg: Value, at: Instant },
    /// The answer to the POST of request `id` ended (Streamable HTTP).
    PostEnded { gen: u64, id: u64, status: u16, at: Instant },
    /// The legacy stream ended.
    StreamEnded { gen: u64 },
}

/// When the chaos thread killed the gateway or an edge: a request in flight then may end without
/// an answer (a gateway may also end the sessions of a server that went away).
#[derive(Default)]
struct KillLog(std::sync::Mutex<Vec<Kill>>);

/// One kill: from the moment it was decided to the moment the process was reaped.
struct Kill {
    from: Instant,
    to: Instant,
    gateway: bool,
}

impl KillLog {
    /// Kills with `kill` and records it (as still going on while it does).
    fn record(&self, gateway: bool, kill: impl FnOnce()) {
        let from = Instant::now();
        let n = {
            let mut kills = self.0.lock().unwrap();
            kills.push(Kill { from, to: from + Duration::from_secs(3600), gateway });
            kills.len() - 1
        };
        kill();
        self.0.lock().unwrap()[n].to = Instant::now();
    }

    /// Whether the gateway was killed within `window` before now. A server request or log
    /// line written while its edge's link was down reaches the next gateway after the
    /// reconnect, when nobody can tell whose it was; such strays are counted, not failed.
    fn recent(&self, window: Duration) -> bool {
        let now = Instant::now();
        self.0.lock().unwrap().iter().any(|k| k.gateway && now.saturating_duration_since(k.to) < window)
    }

    fn killed_between(&self, from: Instant, to: Instant) -> bool {
        self.0.lock().unwrap().iter().any(|k| k.to >= from && k.from <= to + Duration::from_millis(100))
    }
}

#[derive(Default, Debug)]
struct Stats {
    answers: usize,
    errors: usize,
    /// Cancels the gateway acknowledged.
    cancels: usize,
    /// Answers that came within the grace period after a cancel.
    cancel_races: usize,
    lost: usize,
    reconnects: usize,
    asked: usize,
    /// Server requests and log lines from before a restart, allowed (see `KillLog::recent`).
    strays: usize,
}

struct Client {
    k: usize,
    legacy: bool,
    /// The per-server view's server, or `None` for the aggregated view.
    server: Option<&'static str>,
    port: u16,
    rng: Rng,
    kills: std::sync::Arc<KillLog>,
    tx: std::sync::mpsc::Sender<Ev>,
    rx: std::sync::mpsc::Receiver<Ev>,
    gen: u64,
    /// Legacy: the stream (shut down on reconnect) and where to POST.
    stream: Option<std::net::TcpStream>,
    endpoint: String,
    /// Streamable HTTP: the session id.
    session: Option<String>,
    need_reconnect: bool,
    next_id: u64,
    sent: HashSet<u64>,
    pending: HashMap<u64, Pending>,
    /// Requests of an earlier session, whose answers may still come (and must still be right).
    lost: HashMap<u64, Pending>,
    answered: HashSet<u64>,
    tokens: HashSet<String>,
    problems: Vec<String>,
    stats: Stats,
}

impl Client {
    fn new(k: usize, port: u16, rng: Rng, kills: std::sync::Arc<KillLog>) -> Client {
        let (tx, rx) = std::sync::mpsc::channel();
        let server = (k % 4 >= 2).then_some(SERVERS[k % 3]);
        Client {
            k,
            legacy: k % 2 == 0,
            server,
            port,
            rng,
            kills,
            tx,
            rx,
            gen: 0,
            stream: None,
            endpoint: String::new(),
            session: None,
            need_reconnect: true,
            next_id: (k as u64 + 1) * 1_000_000,
            sent: HashSet::new(),
            pending: HashMap::new(),
            lost: HashMap::new(),
            answered: HashSet::new(),
            tokens: HashSet::new(),
            problems: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn name(&self) -> String {
        let transport = if self.legacy { "legacy" } else { "streamable" };
        let view = self.server.map_or("aggregated".to_string(), |s| format!("server {s}"));
        format!("client {} ({transport}, {view})", self.k)
    }

    fn problem(&mut self, what: String) {
        let name = self.name();
        self.problems.push(format!("{name}: {what}"));
    }

    fn base_path(&self) -> String {
        let end = if self.legacy { "sse" } else { "mcp" };
        match self.server {
            Some(s) => format!("/servers/{s}/{end}"),
            None => format!("/{end}"),
        }
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let mut h = vec![JSON];
        if !self.legacy {
            h.push(("Accept", "application/json, text/event-stream"));
            h.push(("MCP-Protocol-Version", "2025-06-18"));
            if let Some(s) = &self.session {
                h.push(("Mcp-Session-Id", s.as_str()));
            }
        }
        h
    }

    fn post_path(&self) -> String {
        if self.legacy {
            self.endpoint.clone()
        } else {
            self.base_path()
        }
    }

    /// POSTs a notification or a response; false when the session is gone.
    fn post_note(&mut self, msg: &Value) -> bool {
        let resp = crate::util::try_http(
            self.port,
            "POST",
            &self.post_path(),
            &self.headers(),
            msg.to_string().as_bytes(),
        );
        match resp {
            Ok(r) if r.status == 202 => true,
            _ => {
                self.need_reconnect = true;
                false
            }
        }
    }

    /// Sends a request; false (and the request forgotten) when the session is gone.
    fn send(&mut self, method: &str, params: Value, expect: Expect) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let token = params["_meta"]["progressToken"].as_str().map(String::from);
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let body = msg.to_string();
        self.sent.insert(id);
        if let Some(t) = &token {
            self.tokens.insert(t.clone());
        }
        let pending = Pending { expect, sent: Instant::now(), cancelled: None, token };
        if self.legacy {
            // 202 means the gateway has taken the request: a cancel after it must work.
            self.pending.insert(id, pending);
            let resp =
                crate::util::try_http(self.port, "POST", &self.endpoint, &self.headers(), body.as_bytes());
            if !matches!(resp, Ok(ref r) if r.status == 202) {
                self.pending.remove(&id);
                self.need_reconnect = true;
                return None;
            }
        } else {
            let text = crate::util::request_text(
                self.port,
                "POST",
                &self.base_path(),
                &self.headers(),
                body.as_bytes(),
                false,
            );
            let conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                s.write_all(&text)?;
                Ok(s)
            });
            let Ok(conn) = conn else {
                self.need_reconnect = true;
                return None;
            };
            self.pending.insert(id, pending);
            let (tx, gen) = (self.tx.clone(), self.gen);
            std::thread::spawn(move || read_post(conn, gen, id, tx));
        }
        Some(id)
    }

    /// Opens a session (retrying while the gateway or the server is away), initializes it
    /// declaring elicitation, and asks for every log level.
    fn connect(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if self.try_connect() {
                self.need_reconnect = false;
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.problem("could not open a session within the time limit".into());
        false
    }

    fn try_connect(&mut self) -> bool {
        self.gen += 1;
        self.need_reconnect = false;
        self.stats.reconnects += 1;
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Whatever was in flight belongs to the old session now.
        let old: Vec<(u64, Pending)> = self.pending.drain().collect();
        for (id, p) in old {
            if p.cancelled.is_none() && !self.kills.killed_between(p.sent, Instant::now()) {
                self.problem(format!(
                    "request {id} ({:?}) lost with its session, but the gateway was not killed",
                    p.expect
                ));
            }
            self.stats.lost += 1;
            self.lost.insert(id, p);
        }
        self.session = None;
        if self.legacy {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
            let get = format!(
                "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
                self.base_path()
            );
            if s.write_all(get.as_bytes()).is_err() {
                return false;
            }
            let Ok(reader) = s.try_clone() else { return false };
            let (etx, erx) = std::sync::mpsc::channel();
            let (tx, gen) = (self.tx.clone(), self.gen);
            std::thread::spawn(move || read_stream(reader, gen, tx, etx));
            let Ok(endpoint) = erx.recv_timeout(Duration::from_secs(5)) else { return false };
            self.endpoint = endpoint;
            self.stream = Some(s);
        }
        let params = json!({"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}},
                            "clientInfo": {"name": format!("client-{}", self.k), "version": "0"}});
        if self.legacy {
            let Some(id) = self.send("initialize", params, Expect::Init) else { return false };
            if !self.wait_for(id, Duration::from_secs(5)) {
                return false;
            }
        } else {
            let id = self.next_id;
            self.next_id += 1;
            self.sent.insert(id);
            self.answered.insert(id);
            let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params});
            let resp = crate::util::try_http(
                self.port,
                "POST",
                &self.base_path(),
                &self.headers(),
                init.to_string().as_bytes(),
            );
            let Ok(resp) = resp else { return false };
            if resp.status != 200 {
                return false;
            }
            self.session = resp.header("Mcp-Session-Id");
            // A failed initialize (its server still registering after a restart) mints no
            // session: an error answer, and the client tries again. A success always has one.
            let failed = messages_of(&resp).first().is_some_and(|m| m.get("error").is_some());
            match (&self.session, failed) {
                (None, true) => return false,
                (Some(_), true) => {
                    self.problem(format!("a failed initialize handed out a session id: {resp:?}"));
                    return false;
                }
                (None, false) => {
                    self.problem(format!("initialize answered without a session id: {resp:?}"));
                    return false;
                }
                (Some(_), false) => {}
            }
        }
        if !self.post_note(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})) {
            return false;
        }
        let Some(id) = self.send("logging/setLevel", json!({"level": "debug"}), Expect::SetLevel) else {
            return false;
        };
        self.wait_for(id, Duration::from_secs(5))
    }

    /// Handles events until request `id` is answered (true) or `limit` passes.
    fn wait_for(&mut self, id: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.answered.contains(&id) && !self.need_reconnect {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(ev) = self.rx.recv_timeout(left) {
                self.handle(ev);
            }
        }
        self.answered.contains(&id)
    }

    /// Handles events for `limit`.
    fn pump(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => self.handle(ev),
                Err(_) => return,
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Requests in flight that still expect an answer.
    fn awaited(&self) -> usize {
        self.pending.values().filter(|p| p.cancelled.is_none()).count()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Msg { gen, post, msg, at } => self.on_message(gen, post, msg, at),
            Ev::PostEnded { gen, id, status, at } => {
                if status == 404 && gen == self.gen {
                    self.need_reconnect = true;
                }
                let Some(p) = self.pending.remove(&id) else { return };
                if p.cancelled.is_some() {
                    // The POST of a cancelled request ends without an answer, as it should.
                } else if self.kills.killed_between(p.sent, at) || status == 404 {
                    self.stats.lost += 1;
                } else {
                    self.problem(format!(
                        "the POST of request {id} ({:?}) ended with status {status} and no answer",
                        p.expect
                    ));
                }
            }
            Ev::StreamEnded { gen, .. } => {
                if gen == self.gen {
                    self.need_reconnect = true;
                }
            }
        }
    }

    fn on_message(&mut self, _gen: u64, post: Option<u64>, msg: Value, at: Instant) {
        let method = msg["method"].as_str().map(String::from);
        match (method, msg.get("id")) {
            (None, Some(id)) => self.on_answer(post, &msg, id.as_u64(), at),
            (Some(m), Some(id)) => self.on_server_request(&m, id.clone()),
            (Some(m), None) => self.on_notification(post, &m, &msg),
            (None, None) => self.problem(format!("not a JSON-RPC message: {msg}")),
        }
    }

    fn on_answer(&mut self, post: Option<u64>, msg: &Value, id: Option<u64>, at: Instant) {
        let Some(id) = id.filter(|id| self.sent.contains(id)) else {
            return self.problem(format!("an answer to an id it never sent: {msg}"));
        };
        if !self.answered.insert(id) {
            return self.problem(format!("a second answer to request {id}: {msg}"));
        }
        if let Some(p) = post.filter(|p| *p != id) {
            self.problem(format!("the POST of request {p} carried the answer to {id}: {msg}"));
        }
        let (p, stale) = match self.pending.remove(&id) {
            Some(p) => (p, false),
            None => match self.lost.remove(&id) {
                Some(p) => (p, true),
                None => return,
            },
        };
        if let Some(acked) = p.cancelled {
            if at > acked + CANCEL_GRACE {
                let late = at - acked;
                self.problem(format!(
                    "request {id} answered {late:?} after its cancel was acknowledged: {msg}"
                ));
            } else {
                self.stats.cancel_races += 1;
            }
        }
        if msg.get("error").is_some() {
            self.stats.errors += 1;
            return;
        }
        self.stats.answers += 1;
        let text = text_of(msg);
        let is_error = msg["result"]["isError"] == true;
        let right = match &p.expect {
            Expect::Echo(want) => text == *want,
            Expect::Sleep(secs) => {
                (text == format!("slept {secs} s") && !is_error)
                    || (text == "cancelled" && p.cancelled.is_some())
            }
            Expect::Log => text.starts_with("logged: "),
            Expect::Ask => is_error || text.contains(&format!("\"client-{}\"", self.k)),
            Expect::Init => msg["result"]["protocolVersion"].is_string(),
            Expect::SetLevel => msg["result"] == json!({}),
        };
        if !right {
            let when = if stale { " (from an earlier session)" } else { "" };
            self.problem(format!("request {id} expected {:?}{when} but got {msg}", p.expect));
        }
    }

    fn on_server_request(&mut self, method: &str, id: Value) {
        let asking = self.pending.values().any(|p| matches!(p.expect, Expect::Ask));
        if method == ELICIT && !asking && self.kills.recent(STRAY_WINDOW) {
            self.stats.strays += 1;
        } else if method != ELICIT || !asking {
            self.problem(format!(
                "received a server request {method} (id {id}) while it had no ask_client in flight"
            ));
        }
        self.stats.asked += 1;
        let answer = json!({"jsonrpc": "2.0", "id": id,
                            "result": {"action": "accept", "content": {"name": format!("client-{}", self.k)}}});
        self.post_note(&answer);
    }

    fn on_notification(&mut self, post: Option<u64>, method: &str, msg: &Value) {
        match method {
            "notifications/progress" => {
                let token = msg["params"]["progressToken"].as_str().unwrap_or_default().to_string();
                let own = match post {
                    Some(p) => self.pending.get(&p).and_then(|p| p.token.clone()) == Some(token.clone()),
                    None => self.tokens.contains(&token),
                };
                if !own {
                    self.problem(format!("progress that is not its own: {msg}"));
                }
            }
            "notifications/message" => {
                let data = msg["params"]["data"].as_str().unwrap_or_default();
                let own = data.starts_with(&format!("log-c{}-", self.k));
                if !own && self.kills.recent(STRAY_WINDOW) {
                    self.stats.strays += 1;
                } else if !own {
                    self.problem(format!("a log message that is not its own: {msg}"));
                }
            }
            _ => {}
        }
    }

    /// The tool's exposed name on this client's view, on a random server for the aggregated one.
    fn tool(&mut self, tool: &str) -> String {
        match self.server {
            Some(_) => tool.to_string(),
            None => format!("{}_{tool}", SERVERS[self.rng.range(0, 3) as usize]),
        }
    }

    /// One random operation.
    fn step(&mut self, n: usize) {
        let roll = self.rng.range(0, 100);
        let cancellable: Vec<u64> = {
            let mut ids: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| {
                    p.cancelled.is_none()
                        && matches!(p.expect, Expect::Echo(_) | Expect::Sleep(_))
                        // Streamable: a cancel may overtake a request the gateway has not read
                        // yet (another connection); give the request a moment.
                        && (self.legacy || p.sent.elapsed() > Duration::from_millis(30))
                })
                .map(|(id, _)| *id)
                .collect();
            ids.sort();
            ids
        };
        if roll < 15 && !cancellable.is_empty() {
            let id = cancellable[self.rng.range(0, cancellable.len() as u64) as usize];
            self.cancel(id);
            return;
        }
        let k = self.k;
        let id = self.next_id;
        let (method, params, expect) = match roll {
            0..=39 => {
                let text = format!("c{k}-op{n}-id{id}");
                let name = self.tool("echo");
                ("tools/call", json!({"name": name, "arguments": {"text": text}}), Expect::Echo(text))
            }
            40..=69 => {
                let secs = self.rng.range(500, 5001) as f64 / 10_000.0;
                let token = format!("c{k}-p{id}");
                let name = self.tool("sleep");
                let params =
                    json!({"name": name, "arguments": {"seconds": secs}, "_meta": {"progressToken": token}});
                ("tools/call", params, Expect::Sleep(secs))
            }
            70..=84 => {
                let name = self.tool("log");
                let params = json!({"name": name, "arguments": {"level": "info", "message": format!("log-c{k}-{id}")}});
                ("tools/call", params, Expect::Log)
            }
            _ => {
                let name = self.tool("ask_client");
                ("tools/call", json!({"name": name, "arguments": {"method": ELICIT}}), Expect::Ask)
            }
        };
        let sleep = matches!(expect, Expect::Sleep(_));
        let sent = self.send(method, params, expect);
        // Legacy: the 202 says the gateway has the request, so a cancel right away must work.
        if let Some(id) = sent.filter(|_| sleep && self.legacy && self.rng.range(0, 100) < 25) {
            self.cancel(id);
        }
    }

    /// Cancels request `id`; the acknowledgement starts the grace period for its answer.
    fn cancel(&mut self, id: u64) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": id, "reason": "random cancel"}});
        if self.post_note(&note) {
            self.stats.cancels += 1;
            if let Some(p) = self.pending.get_mut(&id) {
                p.cancelled = Some(Instant::now());
            }
        }
    }

    /// The client's whole life: connect, `OPS` random operations (reconnecting as needed),
    /// then wait for what is still owed.
    fn run(mut self, deadline: Instant) -> (Vec<String>, Stats) {
        if !self.connect(deadline) {
            return (self.problems, self.stats);
        }
        for n in 0..OPS {
            if Instant::now() > deadline {
                self.problem(format!("ran out of time after {n} operations"));
                break;
            }
            if self.need_reconnect && !self.connect(deadline) {
                break;
            }
            while self.awaited() >= IN_FLIGHT && !self.need_reconnect && Instant::now() < deadline {
                self.pump(Duration::from_millis(20));
            }
            self.step(n);
            let gap = Duration::from_millis(self.rng.range(20, 250));
            self.pump(gap);
        }
        let end = Instant::now() + Duration::from_secs(8);
        while self.awaited() > 0 && Instant::now() < end {
            if self.need_reconnect {
                self.connect(end); // settles what the old session owed
                continue;
            }
            self.pump(Duration::from_millis(50));
        }
        // Cancelled requests get no answer; make sure none comes late either.
        self.pump(Duration::from_millis(300));
        let owed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.cancelled.is_none())
            .map(|(id, p)| format!("{id} ({:?}, sent {:?} ago)", p.expect, p.sent.elapsed()))
            .collect();
        if !owed.is_empty() {
            self.problem(format!("never answered: {}", owed.join(", ")));
        }
        (self.problems, self.stats)
    }
}

/// Reads a legacy SSE stream: the endpoint to `endpoint`, messages as events.
fn read_stream(
    stream: std::net::TcpStream,
    gen: u64,
    tx: std::sync::mpsc::Sender<Ev>,
    endpoint: std::sync::mpsc::Sender<String>,
) {
    let mut events = crate::util::SseReader::new(stream);
    if events.head().status == 200 {
        while let Some((name, data)) = events.next_event() {
            if name == "endpoint" {
                let _ = endpoint.send(data);
            } else if let Ok(msg) = serde_json::from_str(&data) {
                if tx.send(Ev::Msg { gen, post: None, msg, at: Instant::now() }).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(Ev::StreamEnded { gen });
}

/// Reads the answer to a Streamable HTTP POST: one JSON body or an SSE stream, event by event.
fn read_post(stream: std::net::TcpStream, gen: u64, id: u64, tx: std::sync::mpsc::Sender<Ev>) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push_str(&line),
        }
    }
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let send = |msg: Value| {
        let _ = tx.send(Ev::Msg { gen, post: Some(id), msg, at: Instant::now() });
    };
    if status == 200 && lower.contains("text/event-stream") {
        let mut text = String::new();
        loop {
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if let Ok(msg) = serde_json::from_str(&data.join("\n")) {
                    send(msg);
                }
            }
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let Some(size) = usize::from_str_radix(line.trim(), 16).ok().filter(|n| *n > 0) else { break };
            let mut chunk = vec![0u8; size + 2];
            if r.read_exact(&mut chunk).is_err() {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        }
    } else if status == 200 {
        let mut body = String::new();
        let _ = r.read_to_string(&mut body);
        match serde_json::from_str(&body) {
            Ok(Value::Array(items)) => items.into_iter().for_each(send),
            Ok(msg) => send(msg),
            Err(_) => {}
        }
    }
    let _ = tx.send(Ev::PostEnded { gen, id, status, at: Instant::now() });
}

#[test]
fn randomized_concurrency_every_answer_reaches_the_request_that_asked() {
    let _w = Watchdog::new("randomized_concurrency", Duration::from_secs(90));
    let mut rng = Rng::from_env("randomized_concurrency");
    let gw = Gateway::start(&[]);
    let port = gw.port;
    let edge = |name: &str| gw.register(name, &["--reconnect-max", "1"]);
    let mut edges: Vec<Proc> = SERVERS.iter().map(|n| edge(n)).collect();
    for e in &edges {
        e.wait_log("registered as");
    }
    let kills = std::sync::Arc::new(KillLog::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(40);

    // Chaos: one or two gateway restarts (SIGKILL, then a new gateway on the same port) and one
    // edge killed and started again.
    let restarts = 1 + rng.range(0, 2);
    let mut plan: Vec<(Duration, &str)> = vec![
        (Duration::from_millis(rng.range(1500, 2500)), "gateway"),
        (Duration::from_millis(rng.range(3000, 4000)), "edge"),
    ];
    if restarts == 2 {
        plan.push((Duration::from_millis(rng.range(4500, 5500)), "gateway"));
    }
    eprintln!("randomized_concurrency: chaos plan {plan:?}");
    let (chaos_kills, mut chaos_rng) = (kills.clone(), rng.fork());
    let chaos = std::thread::spawn(move || {
        let mut gw = gw;
        for (at, what) in plan {
            std::thread::sleep(at.saturating_sub(started.elapsed()));
            if what == "gateway" {
                chaos_kills.record(true, || gw.kill());
                gw = Gateway::start_at(port, &[]);
                eprintln!("chaos: gateway restarted at {:?}", started.elapsed());
            } else {
                let victim = chaos_rng.range(0, 3) as usize;
                chaos_kills.record(false, || edges[victim].kill_hard());
                std::thread::sleep(Duration::from_millis(200));
                edges[victim] = gw.register(SERVERS[victim], &["--reconnect-max", "1"]);
                eprintln!("chaos: edge {} restarted at {:?}", SERVERS[victim], started.elapsed());
            }
        }
        (gw, edges)
    });

    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let client = Client::new(k, port, rng.fork(), kills.clone());
            std::thread::spawn(move || client.run(deadline))
        })
        .collect();
    let (_gw, edges) = chaos.join().expect("the chaos thread");
    let mut problems = Vec::new();
    let mut total = Stats::default();
    for c in clients {
        let (p, s) = c.join().expect("a client thread panicked");
        problems.extend(p);
        total.answers += s.answers;
        total.errors += s.errors;
        total.cancels += s.cancels;
        total.cancel_races += s.cancel_races;
        total.lost += s.lost;
        total.reconnects += s.reconnects;
        total.asked += s.asked;
        total.strays += s.strays;
    }
    eprintln!("randomized_concurrency: {total:?} in {:?}", started.elapsed());
    // Not a failure by itself (the answers are checked above), but the root of stale answers:
    // register keeps the server's session across links, and MCP forbids reusing an id in it.
    let reused: usize = edges.iter().map(|e| e.count_log("was used before in this session")).sum();
    if reused > 0 {
        eprintln!("randomized_concurrency: note: the edges saw {reused} upstream request ids reused across gateway restarts");
    }
    problems.truncate(40);
    report("randomized_concurrency", &problems);
}
