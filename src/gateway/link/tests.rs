//! The link's unit tests (those for 2026-07-28 edges are in `link_eras_tests.rs`): the handshake
//! and its lists, calls and their answers, cancellation and timeouts, progress, server requests
//! routed only to the client that may answer them, a 2026-07-28 client's questions and retries,
//! log levels, subscriptions, list refreshes, hostile shapes and bounds, and property tests
//! driving the state machine through generated interleavings.

use super::*;
use state::StateKey;
use std::collections::HashSet;

type L = Link<u32>;

fn t0() -> Instant {
    Instant::now()
}

fn drain(link: &mut L) -> Vec<Action<u32>> {
    std::iter::from_fn(|| link.poll_action()).collect()
}

/// A ready link whose server has tools, resources (with subscribe) and logging.
fn ready(now: Instant) -> L {
    let mut link = L::new("pi", 7, 100, Limits::default());
    link.start(now);
    refuse_probe(&mut link, now);
    let init = drain(&mut link);
    let Action::ToEdge(req) = &init[0] else { panic!("{init:?}") };
    assert_eq!(req["method"], "initialize");
    let caps = json!({"tools": {}, "resources": {"subscribe": true}, "logging": {}});
    let answer = json!({"protocolVersion": "2025-11-25", "capabilities": caps});
    link.handle_edge(now, Message::Response { id: req["id"].clone(), outcome: Ok(answer) });
    for _ in 0..10 {
        let asks: Vec<Value> = drain(&mut link)
            .into_iter()
            .filter_map(|a| match a {
                Action::ToEdge(m) if m.get("id").is_some() => Some(m),
                _ => None,
            })
            .collect();
        if asks.is_empty() {
            break;
        }
        for ask in asks {
            let key = match ask["method"].as_str().unwrap() {
                "tools/list" => "tools",
                "resources/list" => "resources",
                "resources/templates/list" => "resourceTemplates",
                "logging/setLevel" => "x",
                m => panic!("unexpected {m}"),
            };
            link.handle_edge(now, Message::Response { id: ask["id"].clone(), outcome: Ok(json!({key: []})) });
        }
    }
    assert_eq!(link.phase, Phase::Ready);
    link
}

/// A legacy server's answer to the probe the link starts with: it does not know the method.
fn refuse_probe(link: &mut L, now: Instant) {
    let id = sent_id(&drain(link), "server/discover");
    let unknown = json!({"code": -32601, "message": "Method not found"});
    link.handle_edge(now, Message::Response { id, outcome: Err(unknown) });
}

fn call(session: &str, id: u64, method: &str, params: Value, caller: u32) -> Input<u32> {
    Input::Call(Box::new(Call {
        session: session.into(),
        holder: Holder::Token(0),
        aggregated: false,
        client_id: json!(id),
        method: method.into(),
        params,
        timeout: Duration::from_secs(5),
        caps: ClientCaps { sampling: true, elicitation: true, roots: true, stateless: false },
        client: ClientMeta::default(),
        input: ClientInput::default(),
        caller,
    }))
}

fn sent_id(actions: &[Action<u32>], method: &str) -> Value {
    actions
        .iter()
        .find_map(|a| match a {
            Action::ToEdge(m) if m["method"] == method && m.get("id").is_some() => Some(m["id"].clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {method} in {actions:?}"))
}

#[test]
fn handshake_lists_then_ready_and_a_failed_initialize_fails() {
    let now = t0();
    let mut link = ready(now);
    assert!(link.is_idle());
    let mut bad = L::new("x", 1, 1, Limits::default());
    bad.start(now);
    // Not a 2026-07-28 server (the probe refused), and a refused initialize: the link fails.
    refuse_probe(&mut bad, now);
    let a = drain(&mut bad);
    bad.handle_edge(
        now,
        Message::Response { id: sent_id(&a, "initialize"), outcome: Err(json!({"code": 1})) },
    );
    assert!(matches!(drain(&mut bad).last(), Some(Action::Fail { why }) if why.contains("initialize")));
    // Silence is a failure too: the probe and then initialize, each after the rpc timeout.
    let mut silent = L::new("y", 2, 1, Limits::default());
    silent.start(now);
    drain(&mut silent);
    silent.handle_timeout(now + Duration::from_secs(11));
    let retried = drain(&mut silent);
    assert!(!retried.iter().any(|a| matches!(a, Action::Fail { .. })), "{retried:?}");
    sent_id(&retried, "initialize");
    silent.handle_timeout(now + Duration::from_secs(22));
    assert!(drain(&mut silent).iter().any(|a| matches!(a, Action::Fail { .. })));
    link.close(now, "bye");
    assert!(link.is_idle());
}

#[test]
fn answers_reach_their_caller_with_the_client_id_and_progress_its_token() {
    let now = t0();
    let mut link = ready(now);
    let params = json!({"name": "sleep", "_meta": {"progressToken": "mine"}});
    link.handle_input(now, call("a", 1, "tools/call", params, 11));
    let sent = drain(&mut link);
    let id = sent_id(&sent, "tools/call");
    let Action::ToEdge(req) = &sent[0] else { panic!() };
    assert_eq!(req["params"]["_meta"]["progressToken"], id, "the token is the minted id");
    link.handle_edge(
        now,
        Message::Notification {
            method: "notifications/progress".into(),
            params: Some(json!({"progressToken": id, "progress": 1})),
        },
    );
    let progress = drain(&mut link);
    assert!(
        matches!(&progress[..], [Action::Related { caller: 11, message }] if message["params"]["progressToken"] == "mine")
    );
    link.handle_edge(now, Message::Response { id: id.clone(), outcome: Ok(json!({"ok": 1})) });
    let done = drain(&mut link);
    assert!(
        matches!(&done[..], [Action::Answer { caller: 11, message: Some(m), .. }] if m["id"] == 1 && m["result"]["ok"] == 1)
    );
    // A second answer to the same id (a confused edge) reaches nobody.
    link.handle_edge(now, Message::Response { id, outcome: Ok(json!({})) });
    assert!(drain(&mut link).is_empty());
    assert!(link.is_idle());
}

#[test]
fn cancel_ends_the_call_without_an_answer_and_tells_the_server() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, call("a", 1, "tools/call", json!({"name": "sleep"}), 1));
    let id = sent_id(&drain(&mut link), "tools/call");
    link.handle_input(now, Input::Cancel { session: "b".into(), client_id: json!(1) });
    assert!(drain(&mut link).is_empty(), "another session's cancel matches nothing");
    link.handle_input(now, Input::Cancel { session: "a".into(), client_id: json!(1) });
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::ToEdge(m) if m["params"]["requestId"] == id)));
    assert!(acts.iter().any(|a| matches!(a, Action::Answer { caller: 1, message: None, .. })));
    link.handle_edge(now, Message::Response { id, outcome: Ok(json!({})) });
    assert!(drain(&mut link).is_empty(), "nothing is answered after a cancel");
}

#[test]
fn timeouts_cancel_and_answer_with_an_error_and_progress_restarts_the_clock() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, call("a", 1, "tools/call", json!({"name": "t"}), 1));
    let id = sent_id(&drain(&mut link), "tools/call");
    let later = now + Duration::from_secs(4);
    let p = json!({"progressToken": id, "progress": 1});
    link.handle_edge(
        later,
        Message::Notification { method: "notifications/progress".into(), params: Some(p) },
    );
    link.handle_timeout(now + Duration::from_secs(6));
    assert!(drain(&mut link).iter().all(|a| !matches!(a, Action::Answer { .. })));
    assert_eq!(link.poll_timeout(), Some(later + Duration::from_secs(5)));
    link.handle_timeout(later + Duration::from_secs(5));
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::Answer { message: Some(m), .. } if m["error"]["message"].as_str().unwrap().contains("did not answer"))));
    assert!(!link.is_idle(), "the server may still be working on it");
    link.handle_timeout(later + Duration::from_secs(5) + ORPHAN_GRACE);
    assert!(link.is_idle());
}

#[test]
fn server_requests_go_to_the_one_session_in_flight_or_are_refused() {
    let now = t0();
    let mut link = ready(now);
    let ask = |link: &mut L, id: u64| {
        link.handle_edge(
            now,
            Message::Request {
                id: json!(format!("e{id}")),
                method: "elicitation/create".into(),
                params: Some(json!({})),
            },
        );
        drain(link)
    };
    // Nobody in flight: refused.
    assert!(matches!(&ask(&mut link, 1)[..], [Action::ToEdge(m)] if m["error"].is_object()));
    link.handle_input(now, call("a", 1, "tools/call", json!({"name": "x"}), 1));
    link.handle_input(now, call("a", 2, "tools/call", json!({"name": "y"}), 2));
    drain(&mut link);
    // One session (two calls): its newest call's stream gets it, under an id naming the link.
    let acts = ask(&mut link, 2);
    let Action::Related { caller: 2, message } = &acts[0] else { panic!("{acts:?}") };
    let client_id = message["id"].clone();
    assert_eq!(parse_client_facing_id(&client_id).map(|(s, _)| s), Some(7));
    // Another session in flight: the next request is refused, never guessed.
    link.handle_input(now, call("b", 1, "tools/call", json!({"name": "z"}), 3));
    drain(&mut link);
    let refused = ask(&mut link, 3);
    assert!(
        matches!(&refused[..], [Action::ToEdge(m)] if m["error"]["message"].as_str().unwrap().contains("more than one client"))
    );
    // Only the session that was asked may answer.
    let (_, n) = parse_client_facing_id(&client_id).unwrap();
    link.handle_input(now, Input::ClientAnswer { session: "b".into(), n, outcome: Ok(json!({})) });
    assert!(drain(&mut link).is_empty());
    link.handle_input(
        now,
        Input::ClientAnswer { session: "a".into(), n, outcome: Ok(json!({"action": "accept"})) },
    );
    assert!(
        matches!(&drain(&mut link)[..], [Action::ToEdge(m)] if m["id"] == "e2" && m["result"]["action"] == "accept")
    );
}

/// A 2026-07-28 call (stateless caps) with these capabilities and input.
fn modern_call(session: &str, id: u64, caps: ClientCaps, input: ClientInput, caller: u32) -> Input<u32> {
    let Input::Call(mut c) = call(session, id, "tools/call", json!({"name": "x"}), caller) else {
        unreachable!()
    };
    c.caps = ClientCaps { stateless: true, ..caps };
    c.input = input;
    Input::Call(c)
}

fn elicit(link: &mut L, now: Instant, edge_id: &str, key: &str) -> Vec<Action<u32>> {
    let params = json!({"message": "Name?", "_meta": {INPUT_KEY_META: key}});
    let method = "elicitation/create".into();
    link.handle_edge(now, Message::Request { id: json!(edge_id), method, params: Some(params) });
    drain(link)
}

fn all_caps() -> ClientCaps {
    ClientCaps { sampling: true, elicitation: true, roots: true, stateless: true }
}

/// The `input_required` result a caller got.
fn input_required(actions: &[Action<u32>], caller: u32) -> Value {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Answer { caller: c, message: Some(m), .. } if *c == caller => Some(m["result"].clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer for {caller} in {actions:?}"))
}

#[test]
fn a_modern_calls_question_becomes_input_required_and_the_retry_resumes_the_same_call() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, modern_call("s1", 1, all_caps(), ClientInput::default(), 10));
    let upstream = sent_id(&drain(&mut link), "tools/call");
    assert!(elicit(&mut link, now, "e1", "user_name").is_empty(), "gathered for a moment first");
    link.handle_timeout(now + GATHER);
    let acts = drain(&mut link);
    let result = input_required(&acts, 10);
    assert_eq!(result["resultType"], "input_required");
    assert_eq!(result["inputRequests"]["user_name"]["method"], "elicitation/create");
    assert!(result["inputRequests"]["user_name"]["params"].get("_meta").is_none(), "the key hint is ours");
    let state = result["requestState"].as_str().unwrap().to_string();
    let resume = state::open(&StateKey::default(), &state, "t0").unwrap();
    assert_eq!((resume.id, resume.round, resume.serial), (upstream.as_u64().unwrap(), 1, 7));
    // The ephemeral session of round 1 ends: the waiting call stays.
    link.handle_input(now, Input::SessionEnded { session: "s1".into() });
    assert!(drain(&mut link)
        .iter()
        .all(|a| !matches!(a, Action::ToEdge(m) if m["method"] == "notifications/cancelled")));
    // The retry brings the answer: the server gets it, and the call is the retry's.
    let mut responses = serde_json::Map::new();
    responses.insert("user_name".into(), json!({"action": "accept", "content": {"name": "Al"}}));
    let input = ClientInput { responses: responses.clone(), resume: Some(resume.clone()), foreign: None };
    link.handle_input(now, modern_call("s2", 2, all_caps(), input, 11));
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::ToEdge(m)] if m["id"] == "e1" && m["result"]["content"]["name"] == "Al"),
        "{acts:?}"
    );
    link.handle_edge(now, Message::Response { id: upstream, outcome: Ok(json!({"content": []})) });
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::Answer { caller: 11, message: Some(m), .. }] if m["id"] == 2),
        "{acts:?}"
    );
    // The same state again: used once, refused.
    let input = ClientInput { responses, resume: Some(resume), foreign: None };
    link.handle_input(now, modern_call("s3", 3, all_caps(), input, 12));
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::Answer { caller: 12, message: Some(m), .. }] if m["error"]["code"] == -32602),
        "{acts:?}"
    );
    assert!(link.is_idle(), "nothing left behind");
}

#[test]
fn answers_that_came_with_the_request_answer_at_once_and_missing_ones_are_asked() {
    let now = t0();
    let mut link = ready(now);
    let mut responses = serde_json::Map::new();
    responses.insert("a".into(), json!({"action": "accept", "content": {}}));
    responses.insert("b".into(), json!(12345)); // not an answer's shape: asked again
    let input = ClientInput { responses, resume: None, foreign: None };
    link.handle_input(now, modern_call("s1", 1, all_caps(), input, 10));
    drain(&mut link);
    let acts = elicit(&mut link, now, "e1", "a");
    assert!(matches!(&acts[..], [Action::ToEdge(m)] if m["id"] == "e1" && m["result"]["action"] == "accept"));
    assert!(elicit(&mut link, now, "e2", "b").is_empty());
    assert!(elicit(&mut link, now, "e3", "c").is_empty());
    link.handle_timeout(now + GATHER);
    let result = input_required(&drain(&mut link), 10);
    let keys: Vec<&String> = result["inputRequests"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["b", "c"], "questions that came together are asked together");
}

#[test]
fn a_missing_capability_ends_the_call_with_32021_and_the_server_finishes_it() {
    let now = t0();
    let mut link = ready(now);
    let caps = ClientCaps { elicitation: false, ..all_caps() };
    link.handle_input(now, modern_call("s1", 1, caps, ClientInput::default(), 10));
    drain(&mut link);
    let acts = elicit(&mut link, now, "e1", "k");
    let error = acts.iter().find_map(|a| match a {
        Action::Answer { caller: 10, message: Some(m), .. } => Some(m["error"].clone()),
        _ => None,
    });
    assert_eq!(error.unwrap()["data"]["requiredCapabilities"], json!({"elicitation": {}}));
    assert!(acts.iter().any(|a| matches!(a, Action::ToEdge(m) if m["id"] == "e1" && m["error"].is_object())));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::ToEdge(m) if m["method"] == "notifications/cancelled")),
        "the server ends the call itself: {acts:?}"
    );
}

#[test]
fn waiting_calls_are_bounded_in_questions_and_time() {
    let now = t0();
    let limits = Limits { client_timeout: Duration::from_secs(60), ..Limits::default() };
    let mut link = L::new("pi", 7, 100, limits);
    link.phase = Phase::Ready;
    link.handle_input(now, modern_call("s1", 1, all_caps(), ClientInput::default(), 10));
    drain(&mut link);
    for i in 0..MAX_INPUTS {
        assert!(elicit(&mut link, now, &format!("e{i}"), &format!("k{i}")).is_empty());
    }
    let over = elicit(&mut link, now, "e-over", "k-over");
    assert!(
        matches!(&over[..], [Action::ToEdge(m)] if m["id"] == "e-over" && m["error"].is_object()),
        "{over:?}"
    );
    link.handle_timeout(now + GATHER);
    let result = input_required(&drain(&mut link), 10);
    assert_eq!(result["inputRequests"].as_object().unwrap().len(), MAX_INPUTS);
    // Nobody comes back: after client_timeout the server is told to stop, its questions fail.
    link.handle_timeout(now + Duration::from_secs(61));
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::ToEdge(m) if m["method"] == "notifications/cancelled")));
    let failed = acts.iter().filter(|a| matches!(a, Action::ToEdge(m) if m["error"].is_object())).count();
    assert_eq!(failed, MAX_INPUTS);
    assert!(acts.iter().all(|a| !matches!(a, Action::Answer { .. })), "nobody to answer");
}

#[test]
fn property_modern_calls_end_once_and_each_state_resumes_at_most_once() {
    let cases: u64 = std::env::var("MCPPORT_LINK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for seed in 1..=cases {
        run_modern_case(seed);
    }
}

/// Random interleavings of 2026-07-28 calls, the edge's questions and answers, retries with
/// good, replayed and forged states, session ends and time: every caller gets exactly one
/// end, a state is accepted at most once, and nothing is left after close.
fn run_modern_case(seed: u64) {
    let mut rng = crate::fuzz::Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut next = move |n: u64| rng.below(n as usize) as u64;
    let mut now = t0();
    let limits = Limits { max_calls: 8, client_timeout: Duration::from_secs(20), ..Limits::default() };
    let mut link = L::new("pi", 3, 1 + next(1000), limits);
    link.phase = Phase::Ready;
    let mut ended: HashMap<u32, u32> = HashMap::new();
    let mut states: Vec<(Resume, bool)> = Vec::new();
    let mut upstream: Vec<Value> = Vec::new();
    let mut asks = 0u64;
    let mut next_caller = 1u32;
    let responses = |keys: u64| {
        let mut map = serde_json::Map::new();
        for k in 0..keys {
            map.insert(format!("k{k}"), json!({"action": "accept", "content": {}}));
        }
        map
    };
    for _ in 0..200 {
        let mut resumed: Option<(u32, usize)> = None;
        match next(8) {
            0 | 1 => {
                let caller = next_caller;
                next_caller += 1;
                let input = ClientInput { responses: responses(next(2)), resume: None, foreign: None };
                link.handle_input(now, modern_call(&format!("s{caller}"), 1, all_caps(), input, caller));
            }
            2 => {
                asks += 1;
                let key = format!("k{}", next(3));
                let params = json!({"message": "?", "_meta": {INPUT_KEY_META: key}});
                let method = "elicitation/create".into();
                link.handle_edge(
                    now,
                    Message::Request { id: json!(format!("q{asks}")), method, params: Some(params) },
                );
            }
            3 if !upstream.is_empty() => {
                let id = upstream[next(upstream.len() as u64) as usize].clone();
                link.handle_edge(now, Message::Response { id, outcome: Ok(json!({"content": []})) });
            }
            4 if !states.is_empty() => {
                let i = next(states.len() as u64) as usize;
                let caller = next_caller;
                next_caller += 1;
                let mut resume = states[i].0.clone();
                let forged = next(4) == 0;
                if forged {
                    resume.round += 1000;
                }
                let input = ClientInput { responses: responses(3), resume: Some(resume), foreign: None };
                link.handle_input(now, modern_call(&format!("s{caller}"), 1, all_caps(), input, caller));
                resumed = Some((caller, i));
                if forged {
                    // A round the call never reached is never accepted.
                    let acts: Vec<Action<u32>> = drain(&mut link);
                    assert!(
                        acts.iter().any(|a| matches!(a, Action::Answer { caller: c, message: Some(m), .. } if *c == caller && m["error"]["code"] == -32602)),
                        "seed {seed}: a forged round was accepted: {acts:?}"
                    );
                    ended.insert(caller, 1);
                    continue;
                }
            }
            5 if next_caller > 1 => {
                let s = format!("s{}", 1 + next(u64::from(next_caller - 1)));
                link.handle_input(now, Input::SessionEnded { session: s });
            }
            _ => {
                now += Duration::from_millis(next(8000));
                link.handle_timeout(now);
            }
        }
        let acts = drain(&mut link);
        let mut answered_now = HashSet::new();
        for a in &acts {
            match a {
                Action::ToEdge(m) if m["method"] == "tools/call" => upstream.push(m["id"].clone()),
                Action::Answer { caller, message, .. } => {
                    answered_now.insert(*caller);
                    let n = ended.entry(*caller).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "seed {seed}: caller {caller} ended twice");
                    let result = message.as_ref().map(|m| m["result"].clone()).unwrap_or(Value::Null);
                    if result["resultType"] == "input_required" {
                        let state = result["requestState"].as_str().unwrap();
                        states.push((state::open(&StateKey::default(), state, "t0").unwrap(), false));
                    }
                }
                _ => {}
            }
        }
        if let Some((caller, i)) = resumed {
            let accepted = !answered_now.contains(&caller)
                || acts.iter().any(|a| matches!(a, Action::Answer { caller: c, message: Some(m), .. } if *c == caller && m.get("result").is_some()));
            if accepted {
                assert!(!states[i].1, "seed {seed}: a state was accepted twice");
                states[i].1 = true;
            }
        }
    }
    link.close(now, "the end");
    for a in drain(&mut link) {
        if let Action::Answer { caller, .. } = a {
            *ended.entry(caller).or_default() += 1;
        }
    }
    // Calls that were waiting for input when the link closed had nobody to answer.
    for caller in 1..next_caller {
        assert!(ended.get(&caller).copied().unwrap_or(0) <= 1, "seed {seed}: caller {caller} ended twice");
    }
    assert!(link.is_idle(), "seed {seed}: nothing left after close");
}

#[test]
fn roots_asked_with_no_client_in_flight_are_none() {
    let now = t0();
    let mut link = ready(now);
    link.handle_edge(now, Message::Request { id: json!("r1"), method: "roots/list".into(), params: None });
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::ToEdge(m)] if m["id"] == "r1" && m["result"]["roots"] == json!([])),
        "{acts:?}"
    );
}

#[test]
fn the_servers_cancel_reaches_only_the_asked_client_under_its_id() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, call("a", 1, "tools/call", json!({"name": "x"}), 1));
    drain(&mut link);
    let req = Message::Request { id: json!(5), method: "roots/list".into(), params: None };
    link.handle_edge(now, req);
    let Action::Related { message, .. } = &drain(&mut link)[0] else { panic!() };
    let client_id = message["id"].clone();
    let cancel = Some(json!({"requestId": 5, "reason": "changed my mind"}));
    link.handle_edge(now, Message::Notification { method: "notifications/cancelled".into(), params: cancel });
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::Related { caller: 1, message }] if message["params"]["requestId"] == client_id)
    );
}

#[test]
fn log_levels_are_per_session_and_the_server_gets_the_most_verbose() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, Input::SetLevel { session: "b".into(), level: "debug".into() });
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::ToEdge(m) if m["params"]["level"] == "debug")));
    link.handle_input(now, Input::SetLevel { session: "a".into(), level: "error".into() });
    assert!(drain(&mut link).is_empty(), "the server already logs at debug");
    let log = |level: &str| Message::Notification {
        method: "notifications/message".into(),
        params: Some(json!({"level": level, "data": "x"})),
    };
    link.handle_edge(now, log("info"));
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::ToSession { session, message }] if session == "b" && message["params"]["logger"] == "pi")
    );
    link.handle_input(now, Input::SessionEnded { session: "b".into() });
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::ToEdge(m) if m["params"]["level"] == "error")));
}

#[test]
fn updates_reach_each_subscriber_once_at_a_boundary() {
    assert!(
        uri_covers("a://x", "a://x") && uri_covers("a://x", "a://x/y") && uri_covers("a://x/", "a://x/y")
    );
    assert!(!uri_covers("a://x", "a://xy") && !uri_covers("a://x/y", "a://x"));
    let now = t0();
    let mut link = ready(now);
    for (s, id, uri) in [("a", 1, "a://x"), ("b", 1, "a://xy"), ("a", 2, "a://x/y")] {
        link.handle_input(now, call(s, id, "resources/subscribe", json!({"uri": uri}), id as u32));
        let acts = drain(&mut link);
        let rid = sent_id(&acts, "resources/subscribe");
        link.handle_edge(now, Message::Response { id: rid, outcome: Ok(json!({})) });
        drain(&mut link);
    }
    let upd = |uri: &str| Message::Notification {
        method: "notifications/resources/updated".into(),
        params: Some(json!({"uri": uri})),
    };
    link.handle_edge(now, upd("a://x/y/z"));
    let to: Vec<String> = drain(&mut link)
        .into_iter()
        .map(|a| match a {
            Action::ToSession { session, .. } => session,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(to, ["a"]);
    link.handle_edge(now, upd("a://xy"));
    assert!(matches!(&drain(&mut link)[..], [Action::ToSession { session, .. }] if session == "b"));
    // A second subscriber to the same URI is answered locally; the last unsubscribe is sent.
    link.handle_input(now, call("c", 1, "resources/subscribe", json!({"uri": "a://xy"}), 9));
    assert!(matches!(&drain(&mut link)[..], [Action::Answer { caller: 9, .. }]));
    link.handle_input(now, Input::SessionEnded { session: "b".into() });
    assert!(drain(&mut link).is_empty(), "c still listens");
    link.handle_input(now, Input::SessionEnded { session: "c".into() });
    assert!(drain(&mut link)
        .iter()
        .any(|a| matches!(a, Action::ToEdge(m) if m["method"] == "resources/unsubscribe")));
}

#[test]
fn list_changed_storms_coalesce_into_one_refresh_at_a_time() {
    let now = t0();
    let mut link = ready(now);
    let changed =
        || Message::Notification { method: "notifications/tools/list_changed".into(), params: None };
    for _ in 0..3000 {
        link.handle_edge(now, changed());
    }
    let acts = drain(&mut link);
    let lists: Vec<&Value> = acts
        .iter()
        .filter_map(|a| match a {
            Action::ToEdge(m) if m["method"] == "tools/list" => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(lists.len(), 1, "one refresh in flight");
    link.handle_edge(
        now,
        Message::Response { id: lists[0]["id"].clone(), outcome: Ok(json!({"tools": [{"name": "a"}]})) },
    );
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::ListChanged { kind: ListKind::Tools, .. })));
    let again = sent_id(&acts, "tools/list");
    link.handle_edge(
        now,
        Message::Response { id: again, outcome: Ok(json!({"tools": [{"name": "a"}, {"name": "b"}, 3]})) },
    );
    let acts = drain(&mut link);
    assert!(acts.iter().any(|a| matches!(a, Action::ListChanged { items, .. } if items.len() == 2)));
    assert!(link.is_idle(), "and then it rests");
}

#[test]
fn an_answer_after_a_list_changed_waits_for_the_new_list() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, call("a", 1, "tools/call", json!({"name": "make"}), 1));
    let id = sent_id(&drain(&mut link), "tools/call");
    let changed =
        Message::Notification { method: "notifications/resources/list_changed".into(), params: None };
    link.handle_edge(now, changed);
    let acts = drain(&mut link);
    let (res, tpl) = (sent_id(&acts, "resources/list"), sent_id(&acts, "resources/templates/list"));
    link.handle_edge(now, Message::Response { id, outcome: Ok(json!({"made": "x://new"})) });
    assert!(drain(&mut link).is_empty(), "held while the resources are read again");
    link.handle_edge(
        now,
        Message::Response { id: res, outcome: Ok(json!({"resources": [{"uri": "x://new"}]})) },
    );
    let acts = drain(&mut link);
    assert!(matches!(&acts[..], [Action::ListChanged { .. }]), "{acts:?}");
    link.handle_edge(now, Message::Response { id: tpl, outcome: Ok(json!({"resourceTemplates": []})) });
    let acts = drain(&mut link);
    assert!(matches!(&acts[..], [Action::ListChanged { .. }, Action::Answer { caller: 1, .. }]), "{acts:?}");
}

#[test]
fn a_call_that_ended_here_still_clouds_attribution_until_the_server_answers_it() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, call("a", 1, "tools/call", json!({"name": "slow"}), 1));
    let a_id = sent_id(&drain(&mut link), "tools/call");
    link.handle_input(now, Input::Cancel { session: "a".into(), client_id: json!(1) });
    link.handle_input(now, call("b", 1, "tools/call", json!({"name": "x"}), 2));
    drain(&mut link);
    // The server, still busy with a's call, asks: it may be about a's data; b never sees it.
    link.handle_edge(
        now,
        Message::Request { id: json!(9), method: "sampling/createMessage".into(), params: None },
    );
    let acts = drain(&mut link);
    assert!(matches!(&acts[..], [Action::ToEdge(m)] if m["error"].is_object()), "{acts:?}");
    let log = Message::Notification {
        method: "notifications/message".into(),
        params: Some(json!({"level": "error"})),
    };
    link.handle_edge(now, log);
    assert!(drain(&mut link).is_empty(), "a log line is not attributed either");
    // Once the server answers a's call (late), b is alone again.
    link.handle_edge(now, Message::Response { id: a_id, outcome: Ok(json!({})) });
    link.handle_edge(
        now,
        Message::Request { id: json!(10), method: "sampling/createMessage".into(), params: None },
    );
    assert!(matches!(&drain(&mut link)[..], [Action::Related { caller: 2, .. }]));
}

/// A client that calls and cancels in a loop grows no table: calls that ended here are kept for
/// attribution up to `max_calls`, the oldest forgotten first, and each with its deadline.
#[test]
fn calls_that_ended_here_are_bounded_in_count() {
    let now = t0();
    let mut link = ready(now);
    link.limits.max_calls = 8;
    for i in 0..1000u64 {
        link.handle_input(now, call("loop", i, "tools/call", json!({"name": "slow"}), i as u32));
        link.handle_input(now, Input::Cancel { session: "loop".into(), client_id: json!(i) });
        drain(&mut link);
        assert!(link.orphans.len() <= 8, "{} orphans after {i} cancels", link.orphans.len());
    }
    assert_eq!(link.orphans.len(), 8);
    let orphan_deadlines = link.deadlines.iter().filter(|(_, s)| matches!(s, Slot::Orphan(_))).count();
    assert_eq!(orphan_deadlines, 8, "a forgotten orphan's deadline goes with it");
    // The newest are the ones kept: their late answers still end their clouding.
    let newest = *link.orphans.keys().next_back().unwrap();
    link.handle_edge(now, Message::Response { id: json!(newest), outcome: Ok(json!({})) });
    assert_eq!(link.orphans.len(), 7);
    // They expire on their own.
    link.handle_timeout(now + ORPHAN_GRACE + Duration::from_secs(1));
    assert!(link.is_idle(), "nothing left once they expire");
}

/// Pushing another session's call out of the orphan table does not make its server's questions
/// about that call the pusher's: while a forgotten call may still be at work, nothing is
/// attributed to anyone.
#[test]
fn a_session_cannot_push_another_out_of_the_orphans_to_inherit_its_server_requests() {
    let now = t0();
    let mut link = ready(now);
    link.limits.max_calls = 8;
    link.handle_input(now, call("victim", 1, "tools/call", json!({"name": "slow"}), 1));
    link.handle_input(now, Input::Cancel { session: "victim".into(), client_id: json!(1) });
    for i in 0..8u64 {
        link.handle_input(now, call("mallory", 100 + i, "tools/call", json!({"name": "x"}), 2));
        link.handle_input(now, Input::Cancel { session: "mallory".into(), client_id: json!(100 + i) });
    }
    assert!(link.orphans.values().all(|(s, _)| s == "mallory"), "the victim's call was pushed out");
    link.handle_input(now, call("mallory", 200, "tools/call", json!({"name": "x"}), 3));
    drain(&mut link);
    // The server, still at work on the victim's call, asks about it.
    let ask = Message::Request { id: json!(77), method: "sampling/createMessage".into(), params: None };
    link.handle_edge(now, ask);
    let acts = drain(&mut link);
    assert!(
        matches!(&acts[..], [Action::ToEdge(m)] if m["error"].is_object()),
        "refused, not Mallory's: {acts:?}"
    );
    // Once every forgotten call is past its grace, attribution is back.
    let later = now + ORPHAN_GRACE + Duration::from_secs(1);
    link.handle_timeout(later);
    link.handle_input(later, call("mallory", 300, "tools/call", json!({"name": "x"}), 4));
    drain(&mut link);
    let ask = Message::Request { id: json!(78), method: "sampling/createMessage".into(), params: None };
    link.handle_edge(later, ask);
    assert!(matches!(&drain(&mut link)[..], [Action::Related { caller: 4, .. }]));
}

#[test]
fn the_server_hears_the_most_verbose_level_through_the_per_server_view_too() {
    let now = t0();
    let mut link = ready(now);
    let set = |link: &mut L, s: &str, id: u64, level: &str| {
        link.handle_input(now, call(s, id, "logging/setLevel", json!({"level": level}), id as u32));
        let acts = drain(link);
        let sent = acts.iter().find_map(|a| match a {
            Action::ToEdge(m) if m["method"] == "logging/setLevel" => {
                Some((m["id"].clone(), m["params"]["level"].clone()))
            }
            _ => None,
        });
        if let Some((id, _)) = &sent {
            link.handle_edge(now, Message::Response { id: id.clone(), outcome: Ok(json!({})) });
            drain(link);
        }
        sent.map(|(_, level)| level)
    };
    assert_eq!(set(&mut link, "a", 1, "debug"), Some(json!("debug")));
    assert_eq!(set(&mut link, "b", 2, "warning"), None, "debug already covers warning");
    assert_eq!(set(&mut link, "a", 3, "error"), Some(json!("warning")), "b still wants warnings");
}

#[test]
fn a_refused_subscribe_leaves_nobody_subscribed_who_was_not_accepted() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, call("a", 1, "resources/subscribe", json!({"uri": "x://u"}), 1));
    let first = sent_id(&drain(&mut link), "resources/subscribe");
    link.handle_input(now, call("b", 1, "resources/subscribe", json!({"uri": "x://u"}), 2));
    let second = sent_id(&drain(&mut link), "resources/subscribe");
    let refuse = || Err(json!({"code": -32602, "message": "no"}));
    link.handle_edge(now, Message::Response { id: first, outcome: refuse() });
    link.handle_edge(now, Message::Response { id: second, outcome: refuse() });
    let acts = drain(&mut link);
    assert!(acts
        .iter()
        .all(|a| matches!(a, Action::Answer { message: Some(m), .. } if m["error"].is_object())));
    assert!(link.subscriptions.is_empty() && link.confirmed.is_empty());
    let upd = Message::Notification {
        method: "notifications/resources/updated".into(),
        params: Some(json!({"uri": "x://u"})),
    };
    link.handle_edge(now, upd);
    assert!(drain(&mut link).is_empty());
}

#[test]
fn hostile_shapes_from_the_edge_are_ignored_not_fatal() {
    let now = t0();
    let mut link = ready(now);
    link.handle_input(now, Input::SetLevel { session: "a".into(), level: "debug".into() });
    link.handle_input(
        now,
        call("a", 1, "tools/call", json!({"name": "t", "_meta": {"progressToken": 1}}), 1),
    );
    drain(&mut link);
    for method in [
        "notifications/message",
        "notifications/progress",
        "notifications/cancelled",
        "notifications/resources/updated",
    ] {
        for params in [json!(["x"]), json!("s"), json!(3)] {
            link.handle_edge(now, Message::Notification { method: method.into(), params: Some(params) });
        }
    }
    drain(&mut link);
    // An initialize result that is not an object fails the handshake instead of a thread.
    let mut bad = L::new("x", 1, 1, Limits::default());
    bad.start(now);
    refuse_probe(&mut bad, now);
    let id = sent_id(&drain(&mut bad), "initialize");
    bad.handle_edge(now, Message::Response { id, outcome: Ok(json!([1])) });
    assert!(matches!(drain(&mut bad).last(), Some(Action::Fail { .. })));
}

#[test]
fn caps_refuse_past_the_bound_and_duplicate_ids() {
    let now = t0();
    let limits = Limits { max_calls: 2, ..Limits::default() };
    let mut link = L::new("pi", 1, 1, limits);
    link.phase = Phase::Ready;
    for (id, caller) in [(1, 1), (1, 2), (2, 3), (3, 4)] {
        link.handle_input(now, call("a", id, "tools/call", json!({}), caller));
    }
    let refused: Vec<(u32, String)> = drain(&mut link)
        .into_iter()
        .filter_map(|a| match a {
            Action::Answer { caller, message: Some(m), .. } => {
                Some((caller, m["error"]["message"].to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].1.contains("already in flight") && refused[1].1.contains("--max-calls-per-server"));
}

/// Drives the link through generated interleavings of calls, answers (in any order, late,
/// duplicated), progress, cancellations, session ends, server requests, client answers and
/// timeouts, then closes it; checks that every call ends exactly once, that nothing reaches
/// a caller after its end, that a cancelled call is never answered, that server requests are
/// only ever routed to the one session in flight, and that the link holds nothing after.
#[test]
fn property_every_call_ends_exactly_once_and_nothing_crosses_callers() {
    let cases: u64 = std::env::var("MCPPORT_LINK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let retries: usize = (1..=cases).map(run_case).sum();
    assert!(retries > 0, "no case relayed a modern edge's questions and retried");
}

/// What the test knows of the calls it made, checked against every action the link takes.
#[derive(Default)]
struct Model {
    seed: u64,
    /// caller -> (session, client id)
    callers: HashMap<u32, (&'static str, u64)>,
    ended: HashSet<u32>,
    cancelled: HashSet<u32>,
    /// Ids the edge has been sent requests under.
    upstream: Vec<Value>,
    /// The edge's own requests: (edge id, the link's number for it once routed).
    edge_asks: Vec<(Value, Option<u64>)>,
    answered_edge: HashSet<String>,
    /// The edge speaks 2026-07-28: every request it gets is a modern one (never one the
    /// revision removed), and only its questions, relayed to a legacy call's own client,
    /// reach a client as requests.
    modern: bool,
    /// Callers that are 2026-07-28 requests (they are never asked anything).
    stateless: HashSet<u32>,
    /// The questions of a modern edge put to clients: (the link's number, its session).
    questions: Vec<(u64, &'static str)>,
    retries: usize,
}

/// Runs one case; how many retries with a client's answers went to a modern edge.
fn run_case(seed: u64) -> usize {
    let mut rng = crate::fuzz::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut next = move |n: u64| rng.below(n as usize) as u64;
    let mut now = t0();
    let limits = Limits { max_calls: 8, ..Limits::default() };
    let mut link = L::new("pi", 1, 1 + next(1000), limits);
    link.phase = Phase::Ready;
    link.logging = true;
    let modern = seed % 2 == 0;
    if modern {
        link.era = Era::Modern;
        link.announces = Announces::from_capabilities(
            &json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}}),
        );
    }
    let sessions = ["a", "b", "c"];
    let mut m = Model { seed, modern, ..Model::default() };
    let (mut next_caller, mut next_edge) = (1u32, 1u64);
    for _ in 0..200 {
        match next(10) {
            0..=2 => {
                let s = sessions[next(3) as usize];
                let id = next(20);
                let caller = next_caller;
                next_caller += 1;
                m.callers.insert(caller, (s, id));
                let params = json!({"name": "t", "uri": format!("r://{}", next(4)), "_meta": {"progressToken": caller}});
                // At a modern edge, some are subscriptions (the link's listen follows them).
                let method = match next(6) {
                    0 if modern => "resources/subscribe",
                    1 if modern => "resources/unsubscribe",
                    _ => "tools/call",
                };
                let mut input = call(s, id, method, params, caller);
                if let (true, Input::Call(c)) = (modern && next(2) == 0, &mut input) {
                    c.caps.stateless = true;
                    m.stateless.insert(caller);
                }
                link.handle_input(now, input);
            }
            3 if !m.upstream.is_empty() => {
                let id = m.upstream[next(m.upstream.len() as u64) as usize].clone();
                let result = match next(4) {
                    // A modern edge's question (or a legacy edge's odd result of that shape).
                    0 => json!({"resultType": "input_required", "requestState": "s",
                                "inputRequests": {"k": {"method": "roots/list", "params": {}}}}),
                    1 => json!({"resultType": "input_required", "inputRequests": "bogus"}),
                    _ => json!({"n": 1}),
                };
                link.handle_edge(now, Message::Response { id, outcome: Ok(result) });
            }
            4 if !m.upstream.is_empty() => {
                let token = m.upstream[next(m.upstream.len() as u64) as usize].clone();
                let p = json!({"progressToken": token, "progress": 1});
                let method = "notifications/progress".into();
                link.handle_edge(now, Message::Notification { method, params: Some(p) });
            }
            5 if !m.callers.is_empty() => {
                let s = sessions[next(3) as usize];
                let id = next(20);
                // Whichever call of this session holds that id now is the one cancelled.
                if let Some(live) = link.by_client.get(&(s.to_string(), json!(id).to_string())) {
                    if let Some(Pending::Client(c)) = link.requests.get(live) {
                        m.cancelled.extend(c.caller);
                    }
                }
                link.handle_input(now, Input::Cancel { session: s.into(), client_id: json!(id) });
            }
            6 => {
                let edge_id = json!(next_edge);
                next_edge += 1;
                m.edge_asks.push((edge_id.clone(), None));
                let method = ["sampling/createMessage", "roots/list", "elicitation/create"][next(3) as usize];
                link.handle_edge(now, Message::Request { id: edge_id, method: method.into(), params: None });
            }
            7 if modern && next(3) == 0 => {
                let s = sessions[next(3) as usize];
                link.handle_input(now, Input::SetLevel { session: s.into(), level: "debug".into() });
            }
            7 if modern && !m.questions.is_empty() => {
                // An answer, maybe from another session, maybe an error, maybe twice.
                let (n, asked) = m.questions[next(m.questions.len() as u64) as usize];
                let session = if next(4) == 0 { sessions[next(3) as usize] } else { asked };
                let outcome = if next(5) == 0 { Err(json!({"code": -1})) } else { Ok(json!({"roots": []})) };
                link.handle_input(now, Input::ClientAnswer { session: session.into(), n, outcome });
            }
            7 if !m.edge_asks.is_empty() => {
                let i = next(m.edge_asks.len() as u64) as usize;
                if let Some(n) = m.edge_asks[i].1 {
                    let session = sessions[next(3) as usize].into();
                    link.handle_input(now, Input::ClientAnswer { session, n, outcome: Ok(json!({})) });
                }
            }
            8 => {
                let s = sessions[next(3) as usize];
                link.handle_input(now, Input::SessionEnded { session: s.into() });
                for (caller, (cs, _)) in &m.callers {
                    if *cs == s && !m.ended.contains(caller) {
                        m.cancelled.insert(*caller);
                    }
                }
            }
            _ => {
                now += Duration::from_millis(next(3000));
                link.handle_timeout(now);
            }
        }
        m.check(&mut link);
    }
    if modern {
        // The listen ends up asking for exactly the URIs someone is subscribed to.
        now += GATHER;
        link.handle_timeout(now);
        m.check(&mut link);
        let wanted: Vec<&String> = link.subscriptions.keys().collect();
        let asked = &link.listening_filter()["resourceSubscriptions"];
        assert_eq!(asked.as_array().map_or(0, Vec::len), wanted.len(), "seed {seed}: {asked} for {wanted:?}");
    }
    link.close(now, "the end");
    m.check(&mut link);
    assert_eq!(m.ended.len(), m.callers.len(), "seed {seed}: every call ends");
    assert!(link.is_idle(), "seed {seed}: nothing left after close");
    m.retries
}

impl Model {
    /// Takes every action the link has queued and checks it against what the test knows.
    fn check(&mut self, link: &mut L) {
        let seed = self.seed;
        // Sessions whose work the server may be doing before these actions: only when that
        // is exactly one may a server request be routed, and only to it.
        let mut busy: HashSet<String> = link.orphans.values().map(|(s, _)| s.clone()).collect();
        busy.extend(link.requests.values().filter_map(|p| match p {
            Pending::Client(c) => Some(c.session.clone()),
            _ => None,
        }));
        while let Some(action) = link.poll_action() {
            match action {
                Action::ToEdge(msg) if msg.get("method").is_some() => {
                    if self.modern {
                        let removed = ["ping", "logging/setLevel", "notifications/roots/list_changed"];
                        assert!(!removed.contains(&msg["method"].as_str().unwrap()), "seed {seed}: {msg}");
                        if msg.get("id").is_some() {
                            let version = &msg["params"]["_meta"][crate::protocol::META_VERSION];
                            assert_eq!(version, "2026-07-28", "seed {seed}: not a modern request: {msg}");
                        }
                    }
                    if msg.get("id").is_some() {
                        assert!(!self.upstream.contains(&msg["id"]), "seed {seed}: an id used twice: {msg}");
                        self.upstream.push(msg["id"].clone());
                        self.retries += usize::from(msg["params"].get("inputResponses").is_some());
                    }
                }
                Action::ToEdge(msg) => {
                    let fresh = self.answered_edge.insert(msg["id"].to_string());
                    assert!(fresh, "seed {seed}: an edge request answered twice: {msg}");
                }
                Action::Answer { caller, message, .. } => self.ended(caller, message),
                Action::Related { caller, message } => {
                    assert!(
                        !self.modern || !self.ended.contains(&caller),
                        "seed {seed}: {message} after the end"
                    );
                    if message["method"] == "notifications/progress" {
                        assert!(!self.ended.contains(&caller), "seed {seed}: progress after the end");
                        let token = &message["params"]["progressToken"];
                        assert_eq!(token, &json!(caller), "seed {seed}: progress under another's token");
                    }
                    if message.get("id").is_some() && self.modern {
                        let (s, _) = self.callers[&caller];
                        assert!(
                            !self.stateless.contains(&caller),
                            "seed {seed}: a 2026-07-28 request was asked"
                        );
                        assert!(!self.ended.contains(&caller), "seed {seed}: asked after its end");
                        let (_, n) = parse_client_facing_id(&message["id"]).unwrap();
                        self.questions.push((n, s));
                    } else if message.get("id").is_some() {
                        let (s, _) = self.callers[&caller];
                        assert_eq!(busy.len(), 1, "seed {seed}: routed with {busy:?} busy");
                        assert!(busy.contains(s), "seed {seed}: routed to a session not in flight");
                        let (_, n) = parse_client_facing_id(&message["id"]).unwrap();
                        if let Some(ask) = self.edge_asks.iter_mut().rev().find(|a| a.1.is_none()) {
                            ask.1 = Some(n);
                        }
                    }
                }
                Action::ToSession { .. } | Action::Broadcast(_) => {}
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
    }

    fn ended(&mut self, caller: u32, message: Option<Value>) {
        let seed = self.seed;
        assert!(self.ended.insert(caller), "seed {seed}: caller {caller} ended twice");
        let (_, id) = self.callers[&caller];
        let cancelled = self.cancelled.contains(&caller);
        match message {
            Some(m) => {
                assert_eq!(m["id"], json!(id), "seed {seed}: answer carries the client's id");
                assert!(
                    !cancelled || m.get("error").is_some(),
                    "seed {seed}: a cancelled call was answered: {m}"
                );
            }
            None => assert!(cancelled, "seed {seed}: no answer for a call not cancelled"),
        }
    }
}
