//! Protocol 2026-07-28 (stateless) on /mcp and /servers/NAME/mcp, in front of a legacy edge: no
//! session, `_meta` and standard headers checked, `server/discover`, decorated results, removed
//! methods, a missing capability, progress on the request's stream, cancellation by closing it,
//! and `subscriptions/listen`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{http, post_stream, Gateway, HttpResponse, SseReader, Watchdog};

const VERSION: &str = "2026-07-28";

pub(crate) fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
    })
}

/// The standard headers of a modern request.
fn headers(method: &str, params: &Value) -> Vec<(String, String)> {
    let mut h = vec![
        ("Accept".to_string(), "application/json, text/event-stream".to_string()),
        ("Content-Type".into(), "application/json".into()),
        ("MCP-Protocol-Version".into(), VERSION.into()),
        ("Mcp-Method".into(), method.into()),
    ];
    if let Some(name) = params["name"].as_str().or(params["uri"].as_str()) {
        h.push(("Mcp-Name".into(), name.into()));
    }
    h
}

/// One modern request with `_meta` added (unless `params` has its own) and conformant headers,
/// changed by `extra` (a header with an empty value is removed).
pub(crate) fn post(
    gw: &Gateway,
    path: &str,
    id: u64,
    method: &str,
    params: Value,
    extra: &[(&str, &str)],
) -> HttpResponse {
    post_to(gw.port, path, id, method, params, extra)
}

/// `post` to the gateway on `port`.
pub(crate) fn post_to(
    port: u16,
    path: &str,
    id: u64,
    method: &str,
    mut params: Value,
    extra: &[(&str, &str)],
) -> HttpResponse {
    if params.get("_meta").is_none() {
        params["_meta"] = meta(json!({}));
    }
    let mut h = headers(method, &params);
    for (k, v) in extra {
        h.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        if !v.is_empty() {
            h.push((k.to_string(), v.to_string()));
        }
    }
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    http(port, "POST", path, &h, body.to_string().as_bytes())
}

/// The answer to a request whose response may be JSON or an SSE stream.
pub(crate) fn answer(resp: &HttpResponse) -> Value {
    if resp.header("Content-Type").is_some_and(|t| t.contains("text/event-stream")) {
        let data: Vec<&str> = resp.body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        let msgs: Vec<Value> = data.iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
        return msgs.into_iter().rev().find(|m| m.get("id").is_some()).expect("an answer on the stream");
    }
    resp.json()
}

/// A modern request read as a stream, event by event.
pub(crate) fn stream(gw: &Gateway, path: &str, id: u64, method: &str, params: Value) -> SseReader {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    let h = headers(method, &params);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    post_stream(gw.port, path, &h, &body)
}

#[test]
fn stateless_requests_on_both_endpoints_see_what_legacy_clients_see() {
    let _w = Watchdog::new("stateless_both_endpoints", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    for (path, echo) in [("/mcp", "pi_echo"), ("/servers/pi/mcp", "echo")] {
        let resp = post(&gw, path, 1, "server/discover", json!({}), &[]);
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.header("Mcp-Session-Id"), None, "no session is minted");
        let d = resp.json()["result"].clone();
        assert!(d["supportedVersions"].as_array().unwrap().contains(&json!(VERSION)), "{d}");
        assert!(d["capabilities"]["tools"].is_object(), "{d}");
        assert_eq!(d["resultType"], "complete");
        assert!(d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"].is_string(), "{d}");
        assert!(d["ttlMs"].is_u64() && d["cacheScope"] == "public", "{d}");

        let list = answer(&post(&gw, path, 2, "tools/list", json!({}), &[]))["result"].clone();
        assert_eq!(list["resultType"], "complete");
        assert!(list["ttlMs"].is_u64() && list["cacheScope"].is_string(), "{list}");
        let names: Vec<&str> =
            list["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
        assert!(names.contains(&echo), "{names:?}");

        let params = json!({"name": echo, "arguments": {"text": "hi"}});
        let resp = post(&gw, path, 3, "tools/call", params, &[]);
        assert_eq!(resp.status, 200, "{resp:?}");
        let result = answer(&resp)["result"].clone();
        assert_eq!(result["content"][0]["text"], "hi", "{result}");
        assert_eq!(result["resultType"], "complete");
        assert!(result.get("ttlMs").is_none(), "tools/call is not cacheable: {result}");
    }
    // The legacy era still works on the same endpoint.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let h = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")];
    let resp = gw.http("POST", "/mcp", &h, init.to_string().as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("Mcp-Session-Id").is_some());
}

#[test]
fn invalid_modern_requests_get_the_revisions_errors_with_their_id() {
    let _w = Watchdog::new("modern_errors", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let check = |resp: HttpResponse, status: u16, code: i64, id: u64| {
        assert_eq!(resp.status, status, "{resp:?}");
        let body = resp.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["id"], id, "{body}");
        body
    };
    let no_meta = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": VERSION}});
    check(post(&gw, "/mcp", 11, "tools/list", no_meta, &[]), 400, -32602, 11);
    check(post(&gw, "/mcp", 12, "tools/list", json!({}), &[("Mcp-Method", "prompts/list")]), 400, -32020, 12);
    check(post(&gw, "/mcp", 13, "tools/list", json!({}), &[("Mcp-Method", "")]), 400, -32020, 13);
    let call = json!({"name": "pi_echo", "arguments": {"text": "x"}});
    check(post(&gw, "/mcp", 14, "tools/call", call.clone(), &[("Mcp-Name", "pi_other")]), 400, -32020, 14);
    // The base64 form of the right name is accepted.
    let ok = post(&gw, "/mcp", 15, "tools/call", call, &[("Mcp-Name", "=?base64?cGlfZWNobw==?=")]);
    assert_eq!(answer(&ok)["result"]["content"][0]["text"], "x", "{ok:?}");
    let old = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "v999", "io.modelcontextprotocol/clientCapabilities": {}}});
    let body = check(
        post(&gw, "/mcp", 16, "server/discover", old, &[("MCP-Protocol-Version", "v999")]),
        400,
        -32022,
        16,
    );
    assert_eq!(body["error"]["data"]["requested"], "v999");
    assert!(body["error"]["data"]["supported"].as_array().unwrap().contains(&json!(VERSION)), "{body}");
    for (n, removed) in
        ["initialize", "ping", "logging/setLevel", "resources/subscribe", "no/such"].iter().enumerate()
    {
        let id = 20 + n as u64;
        check(post(&gw, "/servers/pi/mcp", id, removed, json!({}), &[]), 404, -32601, id);
        check(post(&gw, "/mcp", id, removed, json!({}), &[]), 404, -32601, id);
    }
    // An unknown resource is -32602 in this revision (the edge said -32002).
    let read = json!({"uri": "sample://nowhere"});
    let body = answer(&post(&gw, "/servers/pi/mcp", 30, "resources/read", read, &[]));
    assert_eq!(body["error"]["code"], -32602, "{body}");
}

#[test]
fn a_server_request_the_client_cannot_take_ends_the_call_with_32021() {
    let _w = Watchdog::new("modern_missing_capability", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let params = json!({"name": "pi_ask_client", "arguments": {"method": "sampling/createMessage"}});
    let resp = post(&gw, "/mcp", 7, "tools/call", params, &[]);
    assert_eq!(resp.status, 400, "{resp:?}");
    let body = resp.json();
    assert_eq!(body["error"]["code"], -32021, "{body}");
    assert_eq!(body["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}), "{body}");
    assert_eq!(body["id"], 7);
}

#[test]
fn progress_rides_the_requests_stream_and_closing_it_cancels_upstream() {
    let _w = Watchdog::new("modern_progress_cancel", Duration::from_secs(40));
    let gw = Gateway::start(&["--sse-keepalive", "1"]);
    let pi = gw.register_ready("pi");
    let mut params = json!({"name": "sleep", "arguments": {"seconds": 1.5}});
    params["_meta"] = meta(json!({}));
    params["_meta"]["progressToken"] = json!("tok");
    let mut s = stream(&gw, "/servers/pi/mcp", 40, "tools/call", params.clone());
    let progress = s.next_message().expect("progress");
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    assert_eq!(progress["params"]["progressToken"], "tok");
    let end = s.next_message().expect("the answer");
    assert_eq!(end["result"]["content"][0]["text"], "slept 1.5 s", "{end}");
    assert_eq!(end["result"]["resultType"], "complete");

    // Closing the stream is the cancellation: the server hears of it.
    params["arguments"]["seconds"] = json!(30);
    let mut s = stream(&gw, "/servers/pi/mcp", 41, "tools/call", params);
    assert_eq!(s.next_message().expect("progress")["method"], "notifications/progress");
    drop(s);
    let started = Instant::now();
    pi.wait_log("cancelled after");
    assert!(started.elapsed() < Duration::from_secs(5), "cancelled at the next keep-alive at the latest");
}

#[test]
fn listen_acknowledges_then_delivers_only_what_was_asked_tagged() {
    let _w = Watchdog::new("modern_listen", Duration::from_secs(40));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    for path in ["/mcp", "/servers/pi/mcp"] {
        let mut p = json!({"_meta": meta(json!({})), "notifications": {"toolsListChanged": true, "resourceSubscriptions": ["sample://readme"]}});
        let mut tools = stream(&gw, path, 50, "subscriptions/listen", p.clone());
        let ack = tools.next_message().expect("the acknowledgement");
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
        assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 50);
        assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true, "{ack}");
        p["notifications"] = json!({"promptsListChanged": true});
        let mut prompts = stream(&gw, path, 51, "subscriptions/listen", p);
        assert_eq!(prompts.next_message().unwrap()["method"], "notifications/subscriptions/acknowledged");

        let tool = if path == "/mcp" { "pi_add_tool" } else { "add_tool" };
        answer(&post(&gw, path, 52, "tools/call", json!({"name": tool, "arguments": {}}), &[]));
        let changed = tools.next_message().expect("tools/list_changed");
        assert_eq!(changed["method"], "notifications/tools/list_changed", "{changed}");
        assert_eq!(changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 50);

        let ack_uris = &ack["params"]["notifications"]["resourceSubscriptions"];
        if ack_uris == &json!(["sample://readme"]) {
            let touch = if path == "/mcp" { "pi_touch" } else { "touch" };
            answer(&post(
                &gw,
                path,
                53,
                "tools/call",
                json!({"name": touch, "arguments": {"uri": "sample://readme"}}),
                &[],
            ));
            let updated = tools.next_message().expect("resources/updated");
            assert_eq!(updated["method"], "notifications/resources/updated", "{updated}");
            assert_eq!(updated["params"]["uri"], "sample://readme");
            assert_eq!(updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 50);
        } else {
            panic!("the sample server's resource was not subscribed: {ack}");
        }
        // The prompts-only stream saw none of it: its next event is a keep-alive or nothing.
        prompts.set_timeout(Duration::from_millis(500));
        assert_eq!(prompts.next_message(), None, "the filter holds on {path}");
    }
}

#[test]
fn a_legacy_edges_question_reaches_a_modern_client_as_input_required_and_the_retry_resumes() {
    let _w = Watchdog::new("modern_mrtr", Duration::from_secs(40));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let caps = json!({"elicitation": {}});
    for (path, tool) in [("/mcp", "pi_ask_client"), ("/servers/pi/mcp", "ask_client")] {
        let params =
            json!({"name": tool, "arguments": {"method": "elicitation/create"}, "_meta": meta(caps.clone())});
        let first = answer(&post(&gw, path, 60, "tools/call", params.clone(), &[]));
        let result = &first["result"];
        assert_eq!(result["resultType"], "input_required", "{first}");
        let (key, asked) = result["inputRequests"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(asked["method"], "elicitation/create");
        let state = result["requestState"].as_str().unwrap();

        // A changed state is refused; the call still waits for the real one.
        let mut forged = params.clone();
        forged["requestState"] = json!(format!("{state}x"));
        forged["inputResponses"] = json!({key: {"action": "decline"}});
        let refused = answer(&post(&gw, path, 61, "tools/call", forged, &[]));
        assert_eq!(refused["error"]["code"], -32602, "{refused}");

        let mut retry = params.clone();
        retry["requestState"] = json!(state);
        retry["inputResponses"] = json!({key: {"action": "accept", "content": {"name": "Ada"}}});
        let done = answer(&post(&gw, path, 62, "tools/call", retry.clone(), &[]));
        assert_eq!(done["result"]["resultType"], "complete", "{done}");
        let text = done["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("Ada") && text.contains("accept"), "the server got the answer: {text}");

        // Used once: the same state again is refused.
        let replay = answer(&post(&gw, path, 63, "tools/call", retry, &[]));
        assert_eq!(replay["error"]["code"], -32602, "{replay}");
    }
}

#[test]
fn listen_is_bounded_and_ends_gracefully_when_the_gateway_stops() {
    let _w = Watchdog::new("modern_listen_end", Duration::from_secs(40));
    let mut gw = Gateway::start(&["--shutdown-grace", "1"]);
    let _pi = gw.register_ready("pi");
    let uris: Vec<String> = (0..65).map(|i| format!("sample://x{i}")).collect();
    let too_many = json!({"_meta": meta(json!({})), "notifications": {"resourceSubscriptions": uris}});
    let resp = post(&gw, "/mcp", 70, "subscriptions/listen", too_many, &[]);
    assert_eq!(resp.json()["error"]["code"], -32602, "{resp:?}");

    let p = json!({"_meta": meta(json!({})), "notifications": {"toolsListChanged": true}});
    let mut s = stream(&gw, "/mcp", 71, "subscriptions/listen", p);
    assert_eq!(s.next_message().unwrap()["method"], "notifications/subscriptions/acknowledged");
    crate::util::signal(gw.proc.pid(), libc::SIGTERM);
    // A list change the stream asked for may come first (the registration's own, announced after
    // the listen began); nothing else may.
    let mut last = s.next_message().expect("a final result before the stream ends");
    for _ in 0..4 {
        if last["method"] != "notifications/tools/list_changed" {
            break;
        }
        assert_eq!(last["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 71, "{last}");
        last = s.next_message().expect("a final result before the stream ends");
    }
    assert_eq!(last["id"], 71, "{last}");
    assert_eq!(last["result"]["resultType"], "complete");
    assert_eq!(last["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 71);
    gw.proc.wait_exit(Duration::from_secs(10));
}
