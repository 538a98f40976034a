//! The link's unit tests for edges of the 2026-07-28 era (`eras.rs`): the probe after a refused
//! `initialize`, requests dressed in `_meta`, what is never sent to such an edge, and its
//! `input_required` results, honest or not.

use super::*;
use crate::protocol::{META_CAPABILITIES, META_LOG_LEVEL, META_VERSION};

type L = Link<u32>;

fn drain(link: &mut L) -> Vec<Action<u32>> {
    std::iter::from_fn(|| link.poll_action()).collect()
}

fn requests(actions: &[Action<u32>]) -> Vec<Value> {
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

/// A link whose server refused `initialize` and then answered the probe with `discovery`.
fn probed(now: Instant, discovery: Result<Value, Value>) -> (L, Vec<Action<u32>>) {
    let mut link = L::new("m", 9, 500, Limits::default());
    link.start(now);
    let init = sent(&drain(&mut link), "initialize");
    let refusal = json!({"code": -32022, "message": "unsupported", "data": {"supported": ["2026-07-28"]}});
    answer(&mut link, now, &init["id"], Err(refusal));
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

fn legacy_call(session: &str, id: u64, params: Value, caller: u32) -> Call<u32> {
    Call {
        session: session.into(),
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
fn a_server_that_refuses_initialize_and_names_2026_is_a_modern_edge() {
    let now = Instant::now();
    let link = modern(now);
    assert!(link.is_idle());
}

#[test]
fn a_probe_that_is_refused_lies_or_stays_silent_fails_the_link_saying_both() {
    let now = Instant::now();
    for bad in [
        Err(json!({"code": -32601, "message": "Method not found"})),
        Ok(json!({"supportedVersions": ["2025-11-25"], "capabilities": {}})),
        Ok(json!({"supportedVersions": ["2026-07-28"], "capabilities": "all of them"})),
        Ok(json!(["garbage"])),
    ] {
        let (link, after) = probed(now, bad.clone());
        let why = match after.last() {
            Some(Action::Fail { why }) => why.clone(),
            other => panic!("{bad:?}: {other:?}"),
        };
        assert!(why.contains("initialize") && why.contains("server/discover"), "{why}");
        assert_eq!(link.phase, Phase::Closed);
    }
    // A server that never answers the probe: bounded by the rpc timeout.
    let mut link = L::new("m", 9, 500, Limits::default());
    link.start(now);
    let init = sent(&drain(&mut link), "initialize");
    answer(&mut link, now, &init["id"], Err(json!({"code": -32600, "message": "no"})));
    sent(&drain(&mut link), "server/discover");
    link.handle_timeout(now + Limits::default().rpc_timeout + Duration::from_millis(1));
    assert!(drain(&mut link)
        .iter()
        .any(|a| matches!(a, Action::Fail { why } if why.contains("server/discover"))));
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
    // Notifications a legacy client sends have no 2026-07-28 counterpart; subscriptions neither.
    link.handle_input(now, Input::Notify { method: "notifications/roots/list_changed".into(), params: None });
    assert!(drain(&mut link).is_empty());
    let mut sub = legacy_call("a", 3, json!({"uri": "m://r"}), 3);
    sub.method = "resources/subscribe".into();
    link.handle_input(now, Input::Call(Box::new(sub)));
    assert_eq!(only_answer(&drain(&mut link), 3)["error"]["code"], METHOD_NOT_FOUND);
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
    let cases = [
        (stateless_call(1, ClientCaps { elicitation: true, ..no_caps }, ClientInput::default(), 1), huge),
        (stateless_call(2, no_caps, ClientInput::default(), 2), input_required("s")),
        (legacy_call("a", 3, json!({"name": "t"}), 3), input_required("s")),
    ];
    for (call, result) in cases {
        let caller = call.caller;
        link.handle_input(now, Input::Call(Box::new(call)));
        let req = sent(&drain(&mut link), "tools/call");
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
