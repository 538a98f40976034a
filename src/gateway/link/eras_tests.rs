//! The link's unit tests for edges of the 2026-07-28 era (`eras.rs`): the `server/discover`
//! probe and its fallback to `initialize`, requests dressed in `_meta`, what is never sent to
//! such an edge, its `input_required` results (honest or not, for clients of either era), and
//! the listen the link holds at it.

use super::*;
use crate::protocol::{META_CAPABILITIES, META_LOG_LEVEL, META_VERSION};

type L = Link<u32>;

pub(super) fn drain(link: &mut L) -> Vec<Action<u32>> {
    std::iter::from_fn(|| link.poll_action()).collect()
}

pub(super) fn requests(actions: &[Action<u32>]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToEdge(m) if m.get("method").is_some() => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn sent(actions: &[Action<u32>], method: &str) -> Value {
    requests(actions)
        .into_iter()
        .find(|m| m["method"] == method)
        .unwrap_or_else(|| panic!("{method} not sent: {actions:?}"))
}

fn answer(link: &mut L, now: Instant, id: &Value, outcome: Result<Value, Value>) {
    link.handle_edge(now, Message::Response { id: id.clone(), outcome });
}

/// A link whose server answered the probe with `discovery`.
fn probed(now: Instant, discovery: Result<Value, Value>) -> (L, Vec<Action<u32>>) {
    let mut link = L::new("m", 9, 500, Limits::default());
    link.start(now);
    let probe = sent(&drain(&mut link), "server/discover");
    assert_eq!(probe["params"]["_meta"][META_VERSION], "2026-07-28");
    assert!(probe["params"]["_meta"][META_CAPABILITIES].is_object());
    answer(&mut link, now, &probe["id"], discovery);
    let after = drain(&mut link);
    (link, after)
}

fn discovery() -> Value {
    json!({
        "resultType": "complete",
        "supportedVersions": ["2026-07-28"],
        "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}, "logging": {}},
        "instructions": "modern",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-edge", "version": "3"}},
    })
}

/// A modern edge, ready, with one tool listed.
fn modern(now: Instant) -> L {
    let (mut link, after) = probed(now, Ok(discovery()));
    assert_eq!(link.era, Era::Modern);
    let mut asks = requests(&after);
    assert!(asks.iter().all(|m| m["method"] != "notifications/initialized"), "no handshake to end");
    while let Some(ask) = asks.pop() {
        assert_eq!(ask["params"]["_meta"][META_VERSION], "2026-07-28", "lists are modern requests: {ask}");
        let key = match ask["method"].as_str().unwrap() {
            "subscriptions/listen" => continue,
            "tools/list" => "tools",
            "resources/list" => "resources",
            "resources/templates/list" => "resourceTemplates",
            m => panic!("unexpected {m}"),
        };
        let page = json!({key: [{"name": "t", "uri": "m://r"}], "resultType": "complete", "ttlMs": 1});
        answer(&mut link, now, &ask["id"], Ok(page));
        let more = drain(&mut link);
        if let Some(Action::Ready { initialize, lists }) =
            more.iter().find(|a| matches!(a, Action::Ready { .. }))
        {
            assert_eq!(initialize["protocolVersion"], "2026-07-28");
            assert_eq!(initialize["serverInfo"]["name"], "modern-edge");
            assert_eq!(initialize["instructions"], "modern");
            assert_eq!(lists.tools.len(), 1);
        }
        asks.extend(requests(&more));
    }
    assert_eq!(link.phase, Phase::Ready);
    link
}

/// A modern edge put straight in the ready phase (no handshake, no lists), with `limits`.
fn ready_modern(limits: Limits) -> L {
    let mut link = L::new("m", 9, 500, limits);
    link.era = Era::Modern;
    link.phase = Phase::Ready;
    link
}

fn legacy_call(session: &str, id: u64, params: Value, caller: u32) -> Call<u32> {
    Call {
        session: session.into(),
        holder: Holder::Token(0),
        aggregated: false,
        client_id: json!(id),
        method: "tools/call".into(),
        params,
        timeout: Duration::from_secs(5),
        caps: ClientCaps { sampling: true, elicitation: true, roots: true, stateless: false },
        client: ClientMeta {
            capabilities: json!({"sampling": {}, "elicitation": {}, "roots": {}}),
            info: json!({"name": "legacy-client", "version": "1"}),
            log_level: None,
        },
        input: ClientInput::default(),
        caller,
    }
}

fn stateless_call(id: u64, caps: ClientCaps, input: ClientInput, caller: u32) -> Call<u32> {
    let mut c = legacy_call(&format!("s{caller}"), id, json!({"name": "t"}), caller);
    c.caps = ClientCaps { stateless: true, ..caps };
    c.client.capabilities = json!({"elicitation": {}});
    c.input = input;
    c
}

fn input_required(state: &str) -> Value {
    json!({
        "resultType": "input_required",
        "inputRequests": {"name": {"method": "elicitation/create", "params": {"message": "Name?"}}},
        "requestState": state,
    })
}

fn only_answer(actions: &[Action<u32>], caller: u32) -> Value {
    match actions {
        [Action::Answer { caller: c, message: Some(m), .. }] if *c == caller => m.clone(),
        other => panic!("expected one answer to {caller}: {other:?}"),
    }
}

#[test]
fn a_server_whose_discovery_names_2026_is_a_modern_edge() {
    let now = Instant::now();
    let link = modern(now);
    assert!(link.is_idle());
}

#[test]
fn a_probe_that_is_refused_lies_or_stays_silent_falls_back_to_initialize() {
    let now = Instant::now();
    for bad in [
        Err(json!({"code": -32601, "message": "Method not found"})),
        Ok(json!({"supportedVersions": ["2025-11-25"], "capabilities": {}})),
        Ok(json!({"supportedVersions": ["2026-07-28"], "capabilities": "all of them"})),
        Ok(json!({"supportedVersions": vec!["2026-07-28"; 1000], "capabilities": {}})),
        Ok(json!(["garbage"])),
    ] {
        let (mut link, after) = probed(now, bad.clone());
        let init = sent(&after, "initialize");
        assert_eq!(link.era, Era::Legacy, "{bad:?}");
        let answer_init = json!({"protocolVersion": "2025-11-25", "capabilities": {}});
        answer(&mut link, now, &init["id"], Ok(answer_init));
        let done = drain(&mut link);
        assert!(done.iter().any(|a| matches!(a, Action::Ready { .. })), "{bad:?}: {done:?}");
        assert!(requests(&done).iter().any(|m| m["method"] == "notifications/initialized"));
    }
    // A server that never answers the probe: initialized after the rpc timeout.
    let mut link = L::new("m", 9, 500, Limits::default());
    link.start(now);
    let probe = sent(&drain(&mut link), "server/discover");
    link.handle_timeout(now + Limits::default().rpc_timeout + Duration::from_millis(1));
    let out = drain(&mut link);
    let cancel = requests(&out).into_iter().find(|m| m["method"] == "notifications/cancelled").unwrap();
    assert_eq!(cancel["params"]["requestId"], probe["id"]);
    sent(&out, "initialize");
    // Its late answer to the probe changes nothing.
    answer(&mut link, now, &probe["id"], Ok(discovery()));
    assert!(drain(&mut link).is_empty());
    assert_eq!(link.era, Era::Legacy);
}

#[test]
fn a_legacy_sessions_call_reaches_a_modern_edge_in_modern_meta_with_its_level() {
    let now = Instant::now();
    let mut link = modern(now);
    // logging/setLevel is the gateway's to keep: 2026-07-28 has none.
    let mut set = legacy_call("a", 1, json!({"level": "warning"}), 1);
    set.method = "logging/setLevel".into();
    link.handle_input(now, Input::Call(Box::new(set)));
    let done = drain(&mut link);
    assert!(only_answer(&done, 1)["result"].is_object());
    link.handle_input(now, Input::SetLevel { session: "b".into(), level: "debug".into() });
    assert!(drain(&mut link).is_empty(), "no logging/setLevel to a modern edge");
    let params = json!({"name": "t", "_meta": {"progressToken": "p"}});
    link.handle_input(now, Input::Call(Box::new(legacy_call("a", 2, params, 2))));
    let req = sent(&drain(&mut link), "tools/call");
    let meta = &req["params"]["_meta"];
    assert_eq!(meta[META_VERSION], "2026-07-28");
    assert_eq!(meta[META_CAPABILITIES]["elicitation"], json!({}));
    assert_eq!(meta[eras::META_CLIENT_INFO]["name"], "legacy-client");
    assert_eq!(meta[META_LOG_LEVEL], "warning");
    assert_eq!(meta["progressToken"], req["id"], "progress tokens are still the link's");
    // Notifications a legacy client sends have no 2026-07-28 counterpart.
    link.handle_input(now, Input::Notify { method: "notifications/roots/list_changed".into(), params: None });
    assert!(drain(&mut link).is_empty());
    let mut sub = legacy_call("a", 3, json!({"uri": "m://r"}), 3);
    sub.method = "resources/subscribe".into();
    link.handle_input(now, Input::Call(Box::new(sub)));
    assert!(only_answer(&drain(&mut link), 3)["result"].is_object(), "answered here: the listen follows");
    // The answer passes through.
    answer(&mut link, now, &req["id"], Ok(json!({"content": [], "resultType": "complete"})));
    assert_eq!(only_answer(&drain(&mut link), 2)["result"]["resultType"], "complete");
}

#[test]
fn a_modern_edges_input_required_passes_to_a_modern_client_and_its_state_goes_back() {
    let now = Instant::now();
    let mut link = modern(now);
    let caps = ClientCaps { elicitation: true, ..ClientCaps::default() };
    link.handle_input(now, Input::Call(Box::new(stateless_call(1, caps, ClientInput::default(), 1))));
    let req = sent(&drain(&mut link), "tools/call");
    answer(&mut link, now, &req["id"], Ok(input_required("edge-state-1")));
    let passed = only_answer(&drain(&mut link), 1);
    assert_eq!(passed["result"]["requestState"], "edge-state-1");
    assert_eq!(passed["result"]["inputRequests"]["name"]["method"], "elicitation/create");
    // The retry: a state the gateway cannot open is the edge's, and goes back with the answers.
    let mut responses = serde_json::Map::new();
    responses.insert("name".into(), json!({"action": "accept", "content": {"name": "Ada"}}));
    let foreign = ForeignState { state: "edge-state-1".into(), why: "not ours".into() };
    let input = ClientInput { responses, resume: None, foreign: Some(foreign) };
    link.handle_input(now, Input::Call(Box::new(stateless_call(2, caps, input, 2))));
    let retry = sent(&drain(&mut link), "tools/call");
    assert_ne!(retry["id"], req["id"], "a retry is a new request");
    assert_eq!(retry["params"]["requestState"], "edge-state-1");
    assert_eq!(retry["params"]["inputResponses"]["name"]["content"]["name"], "Ada");
    answer(&mut link, now, &retry["id"], Ok(json!({"content": [{"type": "text", "text": "Hello, Ada"}]})));
    assert!(only_answer(&drain(&mut link), 2)["result"]["content"].is_array());
    assert!(link.is_idle() || !link.orphans.is_empty());
}

#[test]
fn a_bogus_input_required_or_one_for_a_legacy_session_is_an_error_and_the_link_goes_on() {
    let now = Instant::now();
    let mut link = modern(now);
    let huge = input_required(&"x".repeat(eras::MAX_EDGE_STATE_BYTES + 1));
    let no_caps = ClientCaps::default();
    let mut shy = legacy_call("a", 3, json!({"name": "t"}), 3);
    shy.caps.elicitation = false;
    let mut listing = legacy_call("a", 5, json!({}), 5);
    listing.method = "tools/list".into();
    let cases = [
        (stateless_call(1, ClientCaps { elicitation: true, ..no_caps }, ClientInput::default(), 1), huge),
        (stateless_call(2, no_caps, ClientInput::default(), 2), input_required("s")),
        (shy, input_required("s")),
        (listing, input_required("s")),
    ];
    for (call, result) in cases {
        let caller = call.caller;
        let method = call.method.clone();
        link.handle_input(now, Input::Call(Box::new(call)));
        let req = sent(&drain(&mut link), &method);
        answer(&mut link, now, &req["id"], Ok(result));
        let error = only_answer(&drain(&mut link), caller);
        assert_eq!(error["error"]["code"], INTERNAL_ERROR, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("server m"), "{error}");
    }
    // A server request from a modern edge is refused; the link still serves.
    link.handle_edge(now, Message::Request { id: json!("q"), method: "roots/list".into(), params: None });
    let refused = drain(&mut link);
    assert!(matches!(&refused[..], [Action::ToEdge(m)] if m["error"]["code"] == METHOD_NOT_FOUND));
    link.handle_input(now, Input::Call(Box::new(legacy_call("a", 4, json!({"name": "t"}), 4))));
    let req = sent(&drain(&mut link), "tools/call");
    answer(&mut link, now, &req["id"], Ok(json!({"content": []})));
    assert!(only_answer(&drain(&mut link), 4)["result"].is_object());
}

#[test]
fn a_state_the_gateway_did_not_make_is_refused_for_a_legacy_edge() {
    let now = Instant::now();
    let mut link = L::new("pi", 7, 100, Limits::default());
    link.phase = Phase::Ready;
    let foreign = ForeignState { state: "forged".into(), why: "requestState: bad signature".into() };
    let input = ClientInput { foreign: Some(foreign), ..ClientInput::default() };
    let caps = ClientCaps { elicitation: true, ..ClientCaps::default() };
    link.handle_input(now, Input::Call(Box::new(stateless_call(1, caps, input, 1))));
    let refused = only_answer(&drain(&mut link), 1);
    assert_eq!(refused["error"]["code"], crate::jsonrpc::INVALID_PARAMS);
    assert!(link.is_idle());
}

/// The questions a legacy client was asked: (client-facing id, method), in order.
fn questions(actions: &[Action<u32>], caller: u32) -> Vec<(Value, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Related { caller: c, message } if *c == caller && message.get("id").is_some() => {
                Some((message["id"].clone(), message["method"].as_str().unwrap().to_string()))
            }
            _ => None,
        })
        .collect()
}

fn client_answer(link: &mut L, now: Instant, session: &str, id: &Value, outcome: Result<Value, Value>) {
    let (_, n) = parse_client_facing_id(id).unwrap();
    link.handle_input(now, Input::ClientAnswer { session: session.into(), n, outcome });
}

fn two_questions(state: &str) -> Value {
    json!({
        "resultType": "input_required",
        "inputRequests": {
            "who": {"method": "elicitation/create", "params": {"message": "Name?"}},
            "where": {"method": "roots/list"},
        },
        "requestState": state,
    })
}

#[test]
fn a_legacy_clients_call_is_asked_the_edges_questions_and_retried_with_the_answers() {
    let now = Instant::now();
    let mut link = modern(now);
    let params = json!({"name": "t", "arguments": {"x": 1}, "_meta": {"progressToken": "mine"}});
    link.handle_input(now, Input::Call(Box::new(legacy_call("a", 1, params, 1))));
    let first = sent(&drain(&mut link), "tools/call");
    answer(&mut link, now, &first["id"], Ok(two_questions("s1")));
    let asked = drain(&mut link);
    let qs = questions(&asked, 1);
    assert_eq!(qs.len(), 2, "{asked:?}");
    assert!(requests(&asked).is_empty(), "nothing goes to the edge while the client answers");
    assert!(qs.iter().all(|(id, _)| id.as_str().unwrap().starts_with("mcpport-9-")));
    // Another session's answer is not this one's; the right one, once both are in, retries.
    client_answer(&mut link, now, "b", &qs[0].0, Ok(json!({"action": "accept"})));
    assert!(drain(&mut link).is_empty());
    for (id, method) in &qs {
        let reply = if method == "roots/list" {
            json!({"roots": [{"uri": "file:///w"}]})
        } else {
            json!({"action": "accept", "content": {"name": "Ada"}})
        };
        client_answer(&mut link, now, "a", id, Ok(reply));
    }
    let retry = sent(&drain(&mut link), "tools/call");
    assert_ne!(retry["id"], first["id"], "a retry has a new id");
    assert_eq!(retry["params"]["requestState"], "s1");
    assert_eq!(retry["params"]["inputResponses"]["who"]["content"]["name"], "Ada");
    assert_eq!(retry["params"]["inputResponses"]["where"]["roots"][0]["uri"], "file:///w");
    assert_eq!(retry["params"]["arguments"], json!({"x": 1}));
    assert_eq!(retry["params"]["_meta"][META_VERSION], "2026-07-28");
    assert_eq!(retry["params"]["_meta"]["progressToken"], retry["id"], "progress follows the retry");
    // Progress on the retry reaches the client under its own token.
    let progress = json!({"progressToken": retry["id"], "progress": 1});
    link.handle_edge(
        now,
        Message::Notification { method: "notifications/progress".into(), params: Some(progress) },
    );
    assert!(
        matches!(&drain(&mut link)[..], [Action::Related { caller: 1, message }] if message["params"]["progressToken"] == "mine")
    );
    // A second round, then the answer.
    let one = json!({"resultType": "input_required", "requestState": "s2",
                     "inputRequests": {"again": {"method": "elicitation/create", "params": {"message": "Sure?"}}}});
    answer(&mut link, now, &retry["id"], Ok(one));
    let qs = questions(&drain(&mut link), 1);
    client_answer(&mut link, now, "a", &qs[0].0, Ok(json!({"action": "decline"})));
    let second = sent(&drain(&mut link), "tools/call");
    assert_eq!(second["params"]["requestState"], "s2");
    assert_eq!(second["params"]["inputResponses"], json!({"again": {"action": "decline"}}));
    answer(&mut link, now, &second["id"], Ok(json!({"content": [], "resultType": "complete"})));
    let done = only_answer(&drain(&mut link), 1);
    assert_eq!(done["id"], 1, "the client's own id");
    assert!(done["result"]["content"].is_array());
    assert!(link.is_idle());
}

#[test]
fn relayed_questions_are_bounded_in_rounds_and_time_and_end_with_the_call() {
    let now = Instant::now();
    let mut link = modern(now);
    // An edge that never stops asking: the call ends after MAX_ROUNDS rounds.
    link.handle_input(now, Input::Call(Box::new(legacy_call("a", 1, json!({"name": "t"}), 1))));
    let mut req = sent(&drain(&mut link), "tools/call");
    for round in 0..=relay::MAX_ROUNDS {
        answer(&mut link, now, &req["id"], Ok(input_required(&format!("s{round}"))));
        let out = drain(&mut link);
        if round == relay::MAX_ROUNDS {
            let error = only_answer(&out, 1);
            assert!(error["error"]["message"].as_str().unwrap().contains("rounds"), "{error}");
            break;
        }
        let qs = questions(&out, 1);
        client_answer(&mut link, now, "a", &qs[0].0, Ok(json!({"action": "accept"})));
        req = sent(&drain(&mut link), "tools/call");
    }
    assert!(link.is_idle());
    // A question nobody answers: withdrawn at the client timeout, and the call ends with an error.
    link.handle_input(now, Input::Call(Box::new(legacy_call("a", 2, json!({"name": "t"}), 2))));
    let req = sent(&drain(&mut link), "tools/call");
    answer(&mut link, now, &req["id"], Ok(input_required("s")));
    assert_eq!(questions(&drain(&mut link), 2).len(), 1);
    link.handle_timeout(now + Limits::default().client_timeout + Duration::from_millis(1));
    let out = drain(&mut link);
    assert!(requests(&out).is_empty(), "the edge has nothing to cancel: {out:?}");
    assert!(
        matches!(&out[..], [Action::Related { message, .. }, Action::Answer { caller: 2, message: Some(e), .. }]
        if message["method"] == "notifications/cancelled" && e["error"]["message"].as_str().unwrap().contains("did not answer"))
    );
    assert!(link.is_idle());
    // The client's error, its cancel, its session's end: each ends the call at once.
    for (caller, how) in [(3u32, "error"), (4, "cancel"), (5, "session")] {
        link.handle_input(
            now,
            Input::Call(Box::new(legacy_call("c", u64::from(caller), json!({"name": "t"}), caller))),
        );
        let req = sent(&drain(&mut link), "tools/call");
        answer(&mut link, now, &req["id"], Ok(two_questions("s")));
        let qs = questions(&drain(&mut link), caller);
        match how {
            "error" => {
                client_answer(&mut link, now, "c", &qs[0].0, Err(json!({"code": -1, "message": "no"})))
            }
            "cancel" => {
                link.handle_input(now, Input::Cancel { session: "c".into(), client_id: json!(caller) })
            }
            _ => link.handle_input(now, Input::SessionEnded { session: "c".into() }),
        }
        let out = drain(&mut link);
        assert!(requests(&out).is_empty(), "{how}: nothing for the edge: {out:?}");
        let withdrawn = out
            .iter()
            .filter(|a| matches!(a, Action::Related { message, .. } if message["method"] == "notifications/cancelled"))
            .count();
        assert_eq!(withdrawn, if how == "error" { 1 } else { 2 }, "{how}: open questions withdrawn: {out:?}");
        let ends: Vec<&Option<Value>> = out
            .iter()
            .filter_map(|a| match a {
                Action::Answer { caller: c, message, .. } if *c == caller => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(ends.len(), 1, "{how}: one end");
        assert_eq!(ends[0].is_some(), how == "error", "{how}: an error answer, or none when cancelled");
        // A late answer to a withdrawn question reaches nobody.
        client_answer(&mut link, now, "c", &qs[1].0, Ok(json!({"roots": []})));
        assert!(drain(&mut link).is_empty());
        assert!(link.is_idle(), "{how}");
    }
}

#[test]
fn relayed_questions_within_the_links_cap_on_server_requests() {
    let now = Instant::now();
    let mut link = ready_modern(Limits { max_server_requests: 3, ..Limits::default() });
    link.handle_input(now, Input::Call(Box::new(legacy_call("a", 1, json!({"name": "t"}), 1))));
    let req = sent(&drain(&mut link), "tools/call");
    answer(&mut link, now, &req["id"], Ok(two_questions("s")));
    assert_eq!(questions(&drain(&mut link), 1).len(), 2);
    link.handle_input(now, Input::Call(Box::new(legacy_call("b", 2, json!({"name": "t"}), 2))));
    let req = sent(&drain(&mut link), "tools/call");
    answer(&mut link, now, &req["id"], Ok(two_questions("s")));
    let refused = only_answer(&drain(&mut link), 2);
    assert!(refused["error"]["message"].as_str().unwrap().contains("too many questions"), "{refused}");
}

fn listens(actions: &[Action<u32>]) -> Vec<Value> {
    requests(actions).into_iter().filter(|m| m["method"] == "subscriptions/listen").collect()
}

fn subscribe(link: &mut L, now: Instant, session: &str, id: u64, method: &str, uri: &str) -> Value {
    let mut call = legacy_call(session, id, json!({"uri": uri}), id as u32);
    call.method = method.into();
    link.handle_input(now, Input::Call(Box::new(call)));
    only_answer(&drain(link), id as u32)
}

#[test]
fn the_link_listens_at_a_modern_edge_and_follows_the_subscriptions() {
    let now = Instant::now();
    let (mut link, after) = probed(now, Ok(discovery()));
    let mut asks = requests(&after);
    let mut opened = Vec::new();
    while let Some(ask) = asks.pop() {
        if ask["method"] == "subscriptions/listen" {
            opened.push(ask);
            continue;
        }
        let key = match ask["method"].as_str().unwrap() {
            "tools/list" => "tools",
            "resources/list" => "resources",
            _ => "resourceTemplates",
        };
        answer(&mut link, now, &ask["id"], Ok(json!({key: []})));
        asks.extend(requests(&drain(&mut link)));
    }
    // At Ready: the list changes the edge announces, no URIs yet, in a modern request.
    assert_eq!(opened.len(), 1, "{opened:?}");
    let first = opened.pop().unwrap();
    assert_eq!(first["params"]["notifications"], json!({"toolsListChanged": true}));
    assert_eq!(first["params"]["_meta"][META_VERSION], "2026-07-28");
    // Two subscribes within GATHER: answered at once, then one new listen naming both.
    assert!(subscribe(&mut link, now, "a", 1, "resources/subscribe", "m://r/1")["result"].is_object());
    assert!(subscribe(&mut link, now, "b", 2, "resources/subscribe", "m://r/2")["result"].is_object());
    assert!(drain(&mut link).is_empty());
    let later = now + GATHER;
    link.handle_timeout(later);
    let out = drain(&mut link);
    let cancel = requests(&out).into_iter().find(|m| m["method"] == "notifications/cancelled").unwrap();
    assert_eq!(cancel["params"]["requestId"], first["id"], "the old listen is cancelled");
    let second = listens(&out).pop().unwrap();
    assert_eq!(second["params"]["notifications"]["resourceSubscriptions"], json!(["m://r/1", "m://r/2"]));
    // What the edge sends on it: the acknowledgement is the link's; an update reaches its one
    // subscriber, untagged; a list change is a refresh and a broadcast.
    let sid = json!({"io.modelcontextprotocol/subscriptionId": second["id"]});
    let ack = json!({"notifications": second["params"]["notifications"], "_meta": sid});
    link.handle_edge(
        later,
        Message::Notification {
            method: "notifications/subscriptions/acknowledged".into(),
            params: Some(ack),
        },
    );
    assert!(drain(&mut link).is_empty());
    let update = json!({"uri": "m://r/2", "_meta": sid});
    link.handle_edge(
        later,
        Message::Notification { method: "notifications/resources/updated".into(), params: Some(update) },
    );
    let out = drain(&mut link);
    assert!(
        matches!(&out[..], [Action::ToSession { session, message }]
        if session == "b" && message["params"] == json!({"uri": "m://r/2"})),
        "{out:?}"
    );
    link.handle_edge(
        later,
        Message::Notification {
            method: "notifications/tools/list_changed".into(),
            params: Some(json!({"_meta": sid})),
        },
    );
    let out = drain(&mut link);
    assert_eq!(sent(&out, "tools/list")["params"]["_meta"][META_VERSION], "2026-07-28");
    assert!(out.iter().any(|a| matches!(a, Action::Broadcast(m) if m["method"] == "notifications/tools/list_changed" && m.get("params").is_none_or(|p| p.get("_meta").is_none()))), "{out:?}");
    // The session's end and the last unsubscribe narrow the filter again.
    link.handle_input(later, Input::SessionEnded { session: "a".into() });
    assert!(subscribe(&mut link, later, "b", 3, "resources/unsubscribe", "m://r/2")["result"].is_object());
    link.handle_timeout(later + GATHER);
    let third = listens(&drain(&mut link)).pop().unwrap();
    assert_eq!(third["params"]["notifications"], json!({"toolsListChanged": true}));
    // The edge ends its listen: nothing until the filter changes, then a new one.
    answer(&mut link, later, &third["id"], Ok(json!({"resultType": "complete"})));
    assert!(drain(&mut link).is_empty());
    assert!(subscribe(&mut link, later, "c", 4, "resources/subscribe", "m://r/3")["result"].is_object());
    link.handle_timeout(later + GATHER * 2);
    let out = drain(&mut link);
    assert!(
        requests(&out).iter().all(|m| m["method"] != "notifications/cancelled"),
        "nothing open to cancel"
    );
    assert_eq!(listens(&out).len(), 1);
}

#[test]
fn subscriptions_at_a_modern_edge_are_bounded_and_need_its_capability() {
    let now = Instant::now();
    let mut link = ready_modern(Limits { max_subscriptions: 2, ..Limits::default() });
    let refused = subscribe(&mut link, now, "a", 1, "resources/subscribe", "m://x");
    assert_eq!(refused["error"]["code"], METHOD_NOT_FOUND, "no subscribe capability: {refused}");
    link.announces = Announces::from_capabilities(&json!({"resources": {"subscribe": true}}));
    assert!(subscribe(&mut link, now, "a", 2, "resources/subscribe", "m://1")["result"].is_object());
    assert!(subscribe(&mut link, now, "a", 3, "resources/subscribe", "m://2")["result"].is_object());
    assert!(
        subscribe(&mut link, now, "b", 4, "resources/subscribe", "m://2")["result"].is_object(),
        "a known URI"
    );
    let busy = subscribe(&mut link, now, "a", 5, "resources/subscribe", "m://3");
    assert!(busy["error"]["message"].as_str().unwrap().contains("too many subscriptions"), "{busy}");
    link.handle_timeout(now + GATHER);
    let listen = listens(&drain(&mut link)).pop().unwrap();
    assert_eq!(listen["params"]["notifications"]["resourceSubscriptions"], json!(["m://1", "m://2"]));
}
