//! The aggregated view beyond tools: prompts, resources and templates, subscriptions,
//! completions, logging, and paginated lists, with the sample server's test surface behind.

use std::time::Duration;

use serde_json::json;

use crate::util::{Gateway, Watchdog};

#[test]
fn prompts_resources_and_completions_are_routed() {
    let _w = Watchdog::new("prompts_resources_and_completions", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = gw.client();
    let init = c.initialize("2025-06-18");
    let caps = &init["result"]["capabilities"];
    assert!(
        caps["prompts"].is_object()
            && caps["resources"]["subscribe"] == true
            && caps["completions"].is_object()
    );

    let prompts = c.call("prompts/list", json!({}));
    assert_eq!(prompts["result"]["prompts"][0]["name"], "pi_greet");
    let got = c.call("prompts/get", json!({"name": "pi_greet", "arguments": {"name": "Ann"}}));
    assert_eq!(got["result"]["messages"][0]["content"]["text"], "Say hello to Ann.");
    assert_eq!(c.call("prompts/get", json!({"name": "greet"}))["error"]["code"], -32602);

    let resources = c.call("resources/list", json!({}));
    assert_eq!(resources["result"]["resources"][0]["uri"], "sample://readme");
    let templates = c.call("resources/templates/list", json!({}));
    assert_eq!(templates["result"]["resourceTemplates"][0]["uriTemplate"], "sample://echo/{text}");
    let readme = c.call("resources/read", json!({"uri": "sample://readme"}));
    assert!(readme["result"]["contents"][0]["text"].as_str().unwrap().contains("sample server"));
    let echoed = c.call("resources/read", json!({"uri": "sample://echo/hello"}));
    assert_eq!(echoed["result"]["contents"][0]["text"], "hello");
    assert_eq!(c.call("resources/read", json!({"uri": "nowhere://x"}))["error"]["code"], -32002);

    let completion = c.call(
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "pi_greet"}, "argument": {"name": "name", "value": "a"}}),
    );
    assert_eq!(completion["result"]["completion"]["values"], json!(["alice"]));
}

#[test]
fn resource_updates_reach_subscribers_only() {
    let _w = Watchdog::new("resource_updates", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let (mut a, mut b, mut outsider) = (gw.client(), gw.client(), gw.client());
    for c in [&mut a, &mut b, &mut outsider] {
        c.initialize("2025-06-18");
    }
    for c in [&mut a, &mut b] {
        assert_eq!(c.call("resources/subscribe", json!({"uri": "sample://readme"}))["result"], json!({}));
    }
    a.tool("pi_touch", json!({"uri": "sample://readme"}));
    let wait = Duration::from_secs(5);
    assert!(a.notification("notifications/resources/updated", wait).is_some());
    assert!(b.notification("notifications/resources/updated", wait).is_some());

    // b leaves; the server still has a subscriber (a), so it keeps announcing to a alone.
    b.call("resources/unsubscribe", json!({"uri": "sample://readme"}));
    let touched = a.tool("pi_touch", json!({"uri": "sample://readme"}));
    assert!(touched["result"]["content"][0]["text"].as_str().unwrap().contains("subscribed: true"));
    assert!(a.notification("notifications/resources/updated", wait).is_some());
    assert!(b.notification("notifications/resources/updated", Duration::from_millis(300)).is_none());
    assert!(outsider.notification("notifications/resources/updated", Duration::from_millis(300)).is_none());

    // The last subscriber leaving reaches the server.
    a.call("resources/unsubscribe", json!({"uri": "sample://readme"}));
    let touched = a.tool("pi_touch", json!({"uri": "sample://readme"}));
    assert!(
        touched["result"]["content"][0]["text"].as_str().unwrap().contains("subscribed: false"),
        "{touched}"
    );
}

#[test]
fn log_messages_follow_each_sessions_level() {
    let _w = Watchdog::new("log_messages", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let (mut loud, mut quiet) = (gw.client(), gw.client());
    loud.initialize("2025-06-18");
    quiet.initialize("2025-06-18");
    assert_eq!(loud.call("logging/setLevel", json!({"level": "warning"}))["result"], json!({}));
    assert_eq!(loud.call("logging/setLevel", json!({"level": "loud"}))["error"]["code"], -32602);
    loud.tool("pi_log", json!({"level": "info", "message": "chatter"}));
    loud.tool("pi_log", json!({"level": "error", "message": "disk full"}));
    let msg = loud.notification("notifications/message", Duration::from_secs(5)).expect("a log message");
    assert_eq!(msg["params"]["data"], "disk full", "the info message was filtered: {msg}");
    assert_eq!(msg["params"]["logger"], "pi/sample");
    assert!(quiet.notification("notifications/message", Duration::from_millis(300)).is_none());
}

#[test]
fn long_lists_are_paginated() {
    let _w = Watchdog::new("long_lists", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    for _ in 0..100 {
        c.tool("pi_add_tool", json!({}));
    }
    // 9 sample tools + list_servers + 100 added; the refreshes may still be landing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let names = loop {
        let names = all_tool_names(&mut c);
        if names.len() == 110 || std::time::Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(names.len(), 110);
    assert!(names.contains(&"pi_dynamic_100".to_string()));
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "no tool listed twice");
    assert_eq!(c.call("tools/list", json!({"cursor": "bogus"}))["error"]["code"], -32602);
}

/// Every page of tools/list, following nextCursor.
fn all_tool_names(c: &mut crate::util::SseClient) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let params = cursor.take().map_or(json!({}), |c| json!({"cursor": c}));
        let page = c.call("tools/list", params);
        let tools = page["result"]["tools"].as_array().unwrap();
        assert!(tools.len() <= 100, "a page holds at most 100 tools");
        names.extend(tools.iter().map(|t| t["name"].as_str().unwrap().to_string()));
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return names,
        }
    }
    panic!("more than 10 pages");
}

#[test]
fn subscriptions_are_counted_across_endpoints() {
    let _w = Watchdog::new("subscriptions_across_endpoints", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut direct = crate::util::SseClient::connect(gw.port, "/servers/pi/sse", &[]);
    direct.initialize("2025-06-18");
    let mut aggregated = gw.client();
    aggregated.initialize("2025-06-18");
    for c in [&mut direct, &mut aggregated] {
        assert_eq!(c.call("resources/subscribe", json!({"uri": "sample://readme"}))["result"], json!({}));
    }
    // The aggregated session leaving must not end the per-server session's subscription.
    aggregated.call("resources/unsubscribe", json!({"uri": "sample://readme"}));
    let touched = direct.tool("touch", json!({"uri": "sample://readme"}));
    assert!(
        touched["result"]["content"][0]["text"].as_str().unwrap().contains("subscribed: true"),
        "{touched}"
    );
    assert!(direct.notification("notifications/resources/updated", Duration::from_secs(5)).is_some());
    assert!(aggregated.notification("notifications/resources/updated", Duration::from_millis(300)).is_none());
}
