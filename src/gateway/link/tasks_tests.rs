//! The link's unit tests for the tasks extension (`tasks.rs`, `task_calls.rs`): ids shown and
//! translated, owners, bounds, lifetimes, tasks a call may not have, and tasks that can no longer
//! be reached; then generated interleavings of all of it, against the invariants.

use super::eras_tests::{drain, requests as to_edge};
use super::*;
use crate::gateway::link::tasks::{EXTENSION, MAX_EDGE_ID};
use crate::protocol::META_CAPABILITIES;

type L = Link<u32>;

const A: Holder = Holder::Token(0);
const B: Holder = Holder::Token(1);

fn answers(actions: &[Action<u32>]) -> Vec<(u32, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer { caller, message: Some(m), .. } => Some((*caller, m.clone())),
            _ => None,
        })
        .collect()
}

fn link(serial: u64, limits: Limits) -> L {
    let mut link = L::new("pi", serial, 500, limits);
    link.era = Era::Modern;
    link.phase = Phase::Ready;
    link
}

/// A 2026-07-28 request of `holder` (`declares`: the extension), answered to `caller`.
fn call(holder: Holder, method: &str, params: Value, declares: bool, caller: u32) -> Input<u32> {
    let capabilities = match declares {
        true => json!({"elicitation": {}, "extensions": {EXTENSION: {}}}),
        false => json!({"elicitation": {}}),
    };
    Input::Call(Box::new(Call {
        session: format!("s{caller}"),
        holder,
        aggregated: false,
        client_id: json!(caller),
        method: method.into(),
        params,
        timeout: Duration::from_secs(30),
        caps: ClientCaps { elicitation: true, stateless: true, ..ClientCaps::default() },
        client: ClientMeta { capabilities, info: json!({"name": "c"}), log_level: None },
        input: ClientInput::default(),
        caller,
    }))
}

fn created(edge_id: &str, ttl_ms: u64) -> Value {
    json!({
        "resultType": "task", "taskId": edge_id, "status": "working",
        "createdAt": "2026-12-08T00:00:00Z", "lastUpdatedAt": "2026-12-08T00:00:00Z", "ttlMs": ttl_ms,
    })
}

fn edge_answers(link: &mut L, now: Instant, request: &Value, outcome: Result<Value, Value>) {
    link.handle_edge(now, Message::Response { id: request["id"].clone(), outcome });
}

/// Starts a task for `holder`: the gateway's id of it.
fn start(link: &mut L, now: Instant, holder: Holder, edge_id: &str, caller: u32) -> String {
    link.handle_input(now, call(holder, "tools/call", json!({"name": "slow"}), true, caller));
    let sent = to_edge(&drain(link));
    assert!(tasks::declared(&sent[0]["params"]["_meta"][META_CAPABILITIES]), "{sent:?}");
    edge_answers(link, now, &sent[0], Ok(created(edge_id, 60_000)));
    let (_, answer) = answers(&drain(link)).pop().expect("an answer");
    answer["result"]["taskId"].as_str().unwrap().to_string()
}

#[test]
fn a_task_is_shown_under_the_gateways_id_and_polled_with_the_edges() {
    let now = Instant::now();
    let mut link = link(9, Limits::default());
    let params = json!({"name": "slow", "task": {"ttl": 5}});
    link.handle_input(now, call(A, "tools/call", params, true, 1));
    let sent = to_edge(&drain(&mut link));
    assert_eq!(sent[0]["params"].get("task"), None, "the 2025-11-25 task param is not passed on");
    edge_answers(&mut link, now, &sent[0], Ok(created("edge-1", 10_000_000_000)));
    let (_, answer) = answers(&drain(&mut link)).pop().unwrap();
    let id = answer["result"]["taskId"].as_str().unwrap().to_string();
    assert!(id.starts_with("mcpport.") && !id.contains("edge-1"), "{id}");
    assert_eq!(answer["result"]["ttlMs"], 3_600_000, "cut to --task-ttl");
    assert_eq!(answer["result"]["resultType"], "task");

    link.handle_input(now, call(A, "tasks/get", json!({"taskId": id}), true, 2));
    let get = to_edge(&drain(&mut link));
    assert_eq!(get[0]["params"]["taskId"], "edge-1");
    assert!(tasks::declared(&get[0]["params"]["_meta"][META_CAPABILITIES]));
    let done = json!({"resultType": "complete", "taskId": "edge-1", "status": "completed",
        "result": {"content": []}});
    edge_answers(&mut link, now, &get[0], Ok(done));
    let (caller, polled) = answers(&drain(&mut link)).pop().unwrap();
    assert_eq!((caller, polled["result"]["taskId"].as_str()), (2, Some(id.as_str())));
    assert_eq!(polled["result"]["status"], "completed");
}

#[test]
fn another_client_cannot_read_update_or_cancel_a_task() {
    let now = Instant::now();
    let mut link = link(9, Limits::default());
    let id = start(&mut link, now, A, "edge-1", 1);
    for (i, method) in ["tasks/get", "tasks/update", "tasks/cancel"].into_iter().enumerate() {
        let caller = 10 + i as u32;
        let params = json!({"taskId": id, "inputResponses": {}});
        link.handle_input(now, call(B, method, params, true, caller));
        let out = drain(&mut link);
        assert!(to_edge(&out).is_empty(), "{method}: nothing reaches the edge");
        let (c, answer) = answers(&out).pop().unwrap();
        assert_eq!((c, answer["error"]["code"].as_i64()), (caller, Some(-32602)), "{method}");
    }
    // Nor can a forged or altered id, nor the edge's own.
    for forged in ["edge-1".to_string(), id.replace(".9.", ".8."), format!("{id}0"), String::new()] {
        link.handle_input(now, call(A, "tasks/get", json!({"taskId": forged}), true, 20));
        let (_, answer) = answers(&drain(&mut link)).pop().unwrap();
        assert_eq!(answer["error"]["code"], -32602, "{forged}");
    }
}

#[test]
fn a_client_past_its_bound_gets_an_ordinary_call_and_others_do_not_notice() {
    let now = Instant::now();
    let limits = Limits { max_tasks_per_client: 1, max_tasks: 2, ..Limits::default() };
    let mut link = link(9, limits);
    start(&mut link, now, A, "edge-1", 1);
    link.handle_input(now, call(A, "tools/call", json!({"name": "slow"}), true, 2));
    let sent = to_edge(&drain(&mut link));
    assert!(!tasks::declared(&sent[0]["params"]["_meta"][META_CAPABILITIES]), "A is at its bound");
    // The edge creates one anyway: cancelled there, refused here.
    edge_answers(&mut link, now, &sent[0], Ok(created("edge-2", 1000)));
    let out = drain(&mut link);
    let cancel = to_edge(&out);
    assert_eq!(
        (cancel[0]["method"].as_str(), cancel[0]["params"]["taskId"].as_str()),
        (Some("tasks/cancel"), Some("edge-2"))
    );
    assert!(tasks::declared(&cancel[0]["params"]["_meta"][META_CAPABILITIES]));
    assert_eq!(answers(&out)[0].1["error"]["code"], INTERNAL_ERROR);
    // B still may; then the server's bound holds for everyone.
    start(&mut link, now, B, "edge-3", 3);
    link.handle_input(now, call(B, "tools/call", json!({"name": "slow"}), true, 4));
    let sent = to_edge(&drain(&mut link));
    assert!(!tasks::declared(&sent[0]["params"]["_meta"][META_CAPABILITIES]), "the server is full");
}

#[test]
fn calls_that_race_past_the_bound_are_cancelled_at_the_edge() {
    let now = Instant::now();
    let mut link = link(9, Limits { max_tasks_per_client: 1, ..Limits::default() });
    link.handle_input(now, call(A, "tools/call", json!({"name": "slow"}), true, 1));
    link.handle_input(now, call(A, "tools/call", json!({"name": "slow"}), true, 2));
    let sent = to_edge(&drain(&mut link));
    assert!(sent.iter().all(|m| tasks::declared(&m["params"]["_meta"][META_CAPABILITIES])));
    edge_answers(&mut link, now, &sent[0], Ok(created("edge-1", 1000)));
    edge_answers(&mut link, now, &sent[1], Ok(created("edge-2", 1000)));
    let out = drain(&mut link);
    let got = answers(&out);
    assert_eq!(got[0].1["result"]["resultType"], "task");
    assert!(got[1].1["error"]["message"].as_str().unwrap().contains("as many tasks"), "busy: {got:?}");
    assert_eq!(to_edge(&out)[0]["params"]["taskId"], "edge-2");
    assert_eq!(link.tasks.len(), 1);
}

#[test]
fn only_a_declaring_2026_client_may_get_a_task() {
    let now = Instant::now();
    let mut link = link(9, Limits::default());
    link.handle_input(now, call(A, "tools/call", json!({"name": "slow"}), false, 1));
    let mut legacy = call(A, "tools/call", json!({"name": "slow"}), true, 2);
    if let Input::Call(c) = &mut legacy {
        c.caps.stateless = false;
    }
    link.handle_input(now, legacy);
    let sent = to_edge(&drain(&mut link));
    assert!(sent.iter().all(|m| !tasks::declared(&m["params"]["_meta"][META_CAPABILITIES])));
    for request in &sent {
        edge_answers(&mut link, now, request, Ok(created("sneaky", 1000)));
    }
    let out = drain(&mut link);
    assert!(answers(&out).iter().all(|(_, m)| m["error"]["code"] == INTERNAL_ERROR), "{out:?}");
    assert_eq!(to_edge(&out).len(), 2, "both cancelled at the edge");
    assert_eq!(link.tasks.len(), 0);
    // And an edge id the gateway cannot keep is refused.
    link.handle_input(now, call(A, "tools/call", json!({"name": "slow"}), true, 3));
    let sent = to_edge(&drain(&mut link));
    edge_answers(&mut link, now, &sent[0], Ok(created(&"x".repeat(MAX_EDGE_ID + 1), 1000)));
    assert_eq!(answers(&drain(&mut link))[0].1["error"]["code"], INTERNAL_ERROR);
}

#[test]
fn a_task_past_its_life_is_forgotten_and_cancelled_unless_it_ended() {
    let now = Instant::now();
    let mut link = link(9, Limits::default());
    let running = start(&mut link, now, A, "edge-1", 1);
    let ended = start(&mut link, now, A, "edge-2", 2);
    link.handle_input(now, call(A, "tasks/get", json!({"taskId": ended}), true, 3));
    let get = to_edge(&drain(&mut link));
    let done = json!({"resultType": "complete", "taskId": "edge-2", "status": "failed", "error": {"code": 1, "message": "x"}});
    edge_answers(&mut link, now, &get[0], Ok(done));
    drain(&mut link);
    link.handle_timeout(now + Duration::from_millis(60_001));
    let out = drain(&mut link);
    let cancels: Vec<_> = to_edge(&out).into_iter().filter(|m| m["method"] == "tasks/cancel").collect();
    assert_eq!(cancels.len(), 1, "{out:?}");
    assert_eq!(cancels[0]["params"]["taskId"], "edge-1");
    for id in [running, ended] {
        link.handle_input(now, call(A, "tasks/get", json!({"taskId": id}), true, 4));
        assert_eq!(answers(&drain(&mut link))[0].1["error"]["code"], -32602);
    }
    assert_eq!(link.tasks.len(), 0);
}

#[test]
fn a_task_that_can_no_longer_be_reached_has_failed() {
    let now = Instant::now();
    let mut old = link(9, Limits::default());
    let id = start(&mut old, now, A, "edge-1", 1);
    // The edge reconnected: a new link (same gateway key), another serial.
    let mut new = link(10, Limits::default());
    new.handle_input(now, call(A, "tasks/get", json!({"taskId": id}), true, 2));
    let out = drain(&mut new);
    assert!(to_edge(&out).is_empty());
    let got = &answers(&out)[0].1["result"];
    assert_eq!((got["status"].as_str(), got["taskId"].as_str()), (Some("failed"), Some(id.as_str())));
    assert!(got["error"]["message"].as_str().unwrap().contains("ended"), "{got}");
    new.handle_input(now, call(A, "tasks/cancel", json!({"taskId": id}), true, 3));
    assert_eq!(answers(&drain(&mut new))[0].1["result"], json!({"resultType": "complete"}));
    // The edge forgot it (its server restarted): failed too, and forgotten here.
    old.handle_input(now, call(A, "tasks/get", json!({"taskId": id}), true, 4));
    let get = to_edge(&drain(&mut old));
    edge_answers(&mut old, now, &get[0], Err(json!({"code": -32602, "message": "unknown task"})));
    let got = &answers(&drain(&mut old))[0].1["result"];
    assert_eq!(got["status"], "failed");
    assert_eq!(old.tasks.len(), 0);
}

#[test]
fn a_task_created_for_a_call_that_had_ended_is_cancelled_at_once() {
    let now = Instant::now();
    let mut link = link(9, Limits { max_tasks_per_client: 1, ..Limits::default() });
    link.handle_input(now, call(A, "tools/call", json!({"name": "slow"}), true, 1));
    let sent = to_edge(&drain(&mut link));
    link.handle_timeout(now + Duration::from_secs(31));
    assert_eq!(answers(&drain(&mut link))[0].1["error"]["code"], -32603, "timed out");
    edge_answers(&mut link, now, &sent[0], Ok(created("late", 60_000)));
    let cancel = to_edge(&drain(&mut link));
    assert_eq!(
        (cancel[0]["method"].as_str(), cancel[0]["params"]["taskId"].as_str()),
        (Some("tasks/cancel"), Some("late"))
    );
    assert_eq!(link.tasks.len(), 0, "nobody's task is not kept, and counts against nobody");
}

#[test]
fn an_edge_that_forgot_a_task_never_shows_its_own_id() {
    let now = Instant::now();
    let mut link = link(9, Limits::default());
    for (i, method) in ["tasks/update", "tasks/cancel"].into_iter().enumerate() {
        let id = start(&mut link, now, A, "edge-secret", 1);
        link.handle_input(now, call(A, method, json!({"taskId": id, "inputResponses": {}}), true, 2));
        let sent = to_edge(&drain(&mut link));
        let forgot = json!({"code": -32602, "message": "unknown task 'edge-secret'"});
        edge_answers(&mut link, now, &sent[0], Err(forgot));
        let out = drain(&mut link);
        assert_eq!(answers(&out)[0].1["result"], json!({"resultType": "complete"}), "{method}");
        let cancel = to_edge(&out);
        assert_eq!(cancel[0]["params"]["taskId"], "edge-secret", "cancelled at the edge in case it runs");
        assert_eq!(link.tasks.len(), 0, "{i}");
    }
    // Any other error names the task by the gateway's id.
    let id = start(&mut link, now, A, "edge-secret", 3);
    link.handle_input(now, call(A, "tasks/update", json!({"taskId": id, "inputResponses": {}}), true, 4));
    let sent = to_edge(&drain(&mut link));
    let error =
        json!({"code": -32603, "message": "task edge-secret broke", "data": {"taskId": "edge-secret"}});
    edge_answers(&mut link, now, &sent[0], Err(error));
    let got = answers(&drain(&mut link))[0].1.to_string();
    assert!(!got.contains("edge-secret") && got.contains(&id), "{got}");
}

#[test]
fn a_task_status_notification_is_never_broadcast() {
    let now = Instant::now();
    let mut link = link(9, Limits::default());
    start(&mut link, now, A, "edge-1", 1);
    let note = json!({"taskId": "edge-1", "status": "completed"});
    link.handle_edge(
        now,
        Message::Notification { method: "notifications/tasks/status".into(), params: Some(note) },
    );
    assert!(drain(&mut link).is_empty(), "another client's task, and the edge's id");
}

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Generated interleavings of calls that create tasks, polls and cancels by two clients (each
/// also presenting the other's ids), edge answers in any order (tasks, results, errors), time
/// passing and the link closing. After every step: every call is answered exactly once, a
/// client never gets an answer about another's task, the bounds hold, and the edge never hears
/// a gateway id.
#[test]
fn generated_interleavings_keep_every_invariant() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let limits = Limits {
            max_tasks: 5,
            max_tasks_per_client: 3,
            task_ttl: Duration::from_secs(20),
            ..Limits::default()
        };
        let mut link = link(9, limits);
        let mut now = Instant::now();
        let mut ids: Vec<(Holder, String)> = Vec::new();
        let mut open: HashMap<u32, (Holder, Option<String>)> = HashMap::new();
        let mut at_edge: Vec<Value> = Vec::new();
        let mut next = 1u32;
        for _ in 0..60 {
            match rng.below(10) {
                0..=2 => {
                    let holder = if rng.below(2) == 0 { A } else { B };
                    link.handle_input(now, call(holder, "tools/call", json!({"name": "slow"}), true, next));
                    open.insert(next, (holder, None));
                    next += 1;
                }
                3..=4 if !ids.is_empty() => {
                    let (owner, id) = ids[rng.below(ids.len() as u64) as usize].clone();
                    let holder = if rng.below(3) == 0 {
                        if owner == A {
                            B
                        } else {
                            A
                        }
                    } else {
                        owner
                    };
                    let method = ["tasks/get", "tasks/cancel", "tasks/update"][rng.below(3) as usize];
                    let params = json!({"taskId": id, "inputResponses": {}});
                    link.handle_input(now, call(holder, method, params, true, next));
                    open.insert(next, (holder, Some(id)));
                    next += 1;
                }
                5..=7 if !at_edge.is_empty() => {
                    let request = at_edge.swap_remove(rng.below(at_edge.len() as u64) as usize);
                    let edge_id = format!("e{}", rng.below(1000));
                    let outcome = match (request["method"].as_str(), rng.below(4)) {
                        (Some("tools/call"), 0 | 1) => Ok(created(&edge_id, 1000 * (1 + rng.below(30)))),
                        (Some("tasks/get"), 0) => Err(json!({"code": -32602, "message": "gone"})),
                        (Some("tasks/get"), _) => Ok(
                            json!({"resultType": "complete", "taskId": request["params"]["taskId"], "status": "working"}),
                        ),
                        (_, 2) => Err(json!({"code": -32603, "message": "boom"})),
                        _ => Ok(json!({"resultType": "complete", "content": []})),
                    };
                    edge_answers(&mut link, now, &request, outcome);
                }
                8 => {
                    now += Duration::from_millis(rng.below(15_000));
                    link.handle_timeout(now);
                }
                _ if rng.below(20) == 0 => link.close(now, "generated"),
                _ => {}
            }
            for action in drain(&mut link) {
                match action {
                    Action::ToEdge(m) if m.get("method").is_some() => {
                        let id = m["params"]["taskId"].as_str().unwrap_or_default();
                        assert!(!id.starts_with("mcpport."), "seed {seed}: the edge heard a gateway id: {m}");
                        at_edge.push(m);
                    }
                    Action::Answer { caller, message, .. } => {
                        let (holder, asked) = open
                            .remove(&caller)
                            .unwrap_or_else(|| panic!("seed {seed}: {caller} answered twice"));
                        let result = message.map(|m| m["result"].clone()).unwrap_or(Value::Null);
                        if let Some(id) = result["taskId"].as_str() {
                            assert!(
                                tasks::open_id(&limits.state_key, id, &holder).is_some(),
                                "seed {seed}: {caller} got another's task {id}"
                            );
                            if asked.is_none() {
                                ids.push((holder, id.to_string()));
                            }
                        }
                        if let Some(asked) = asked {
                            if tasks::open_id(&limits.state_key, &asked, &holder).is_none() {
                                assert!(
                                    result.is_null(),
                                    "seed {seed}: {caller} read another's task: {result}"
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            assert!(link.tasks.len() <= limits.max_tasks, "seed {seed}");
            for holder in [A, B] {
                assert!(
                    !link.tasks.full_for(&holder, usize::MAX, limits.max_tasks_per_client + 1),
                    "seed {seed}"
                );
            }
        }
        link.close(now, "end");
        for action in drain(&mut link) {
            if let Action::Answer { caller, .. } = action {
                assert!(open.remove(&caller).is_some(), "seed {seed}: {caller} answered twice");
            }
        }
        assert!(open.is_empty(), "seed {seed}: unanswered {open:?}");
    }
}
