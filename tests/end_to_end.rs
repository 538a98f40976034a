//! End to end: a gateway, `mcpport register` with the sample server as a real child process, and
//! an MCP client on the legacy SSE transport.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{alive, signal, Gateway, Watchdog};

#[test]
fn lists_and_calls_tools_with_results_untouched() {
    let _w = Watchdog::new("lists_and_calls_tools", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = gw.client();
    let init = c.initialize("2024-11-05");
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(init["result"]["capabilities"]["tools"]["listChanged"], true);
    assert!(init["result"]["instructions"].as_str().unwrap().contains("[pi]"));

    let names = c.tool_names();
    for want in
        ["list_servers", "pi_echo", "pi_system_info", "pi_sleep", "pi_fail", "pi_image", "pi_add_tool"]
    {
        assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
    }
    let echo = c.tool("pi_echo", json!({"text": "héllo\nworld"}));
    assert_eq!(
        echo["result"],
        json!({"content": [{"type": "text", "text": "héllo\nworld"}], "isError": false})
    );

    let info = c.tool("pi_system_info", json!({}));
    assert!(info["result"]["structuredContent"]["uptime_seconds"].as_f64().unwrap() > 0.0, "{info}");

    let media = c.tool("pi_image", json!({}));
    let content = &media["result"]["content"];
    assert_eq!(content[0]["type"], "image");
    assert_eq!(content[0]["mimeType"], "image/png");
    assert!(content[0]["data"].as_str().unwrap().starts_with("iVBORw0KGgo"));
    assert_eq!(content[1]["type"], "audio");
    assert_eq!(content[1]["mimeType"], "audio/wav");

    let fail = c.tool("pi_fail", json!({"message": "nope"}));
    assert_eq!(fail["result"]["isError"], true);
    assert_eq!(fail["result"]["content"][0]["text"], "nope");

    let unknown = c.tool("pi_nothing", json!({}));
    assert_eq!(unknown["error"]["code"], -32602);

    let servers = c.tool("list_servers", json!({}));
    let listed = &servers["result"]["structuredContent"]["servers"][0];
    assert_eq!(listed["name"], "pi");
    assert!(listed["tools"].as_array().unwrap().contains(&json!("pi_echo")));
    assert_eq!(c.call("ping", json!({}))["result"], json!({}));
}

#[test]
fn negotiates_every_protocol_version() {
    let _w = Watchdog::new("negotiates_every_protocol_version", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    for (asked, answered) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let mut c = gw.client();
        assert_eq!(c.initialize(asked)["result"]["protocolVersion"], answered, "asked {asked}");
    }
}

#[test]
fn list_changed_on_connect_disconnect_and_server_change() {
    let _w = Watchdog::new("list_changed", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let mut c = gw.client();
    c.initialize("2025-06-18");
    assert_eq!(c.tool_names(), ["list_servers"]);

    let started = Instant::now();
    let pi = gw.register("pi", &[]);
    assert!(c.notification("notifications/tools/list_changed", Duration::from_secs(10)).is_some());
    assert!(c.tool_names().contains(&"pi_echo".to_string()));
    eprintln!("tools visible {:?} after starting register", started.elapsed());

    // The server's own list_changed is relayed, and the new tool is listed and callable.
    let added = c.tool("pi_add_tool", json!({}));
    assert_eq!(added["result"]["content"][0]["text"], "added dynamic_1");
    assert!(c.notification("notifications/tools/list_changed", Duration::from_secs(10)).is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.tool_names().contains(&"pi_dynamic_1".to_string()) {
        assert!(Instant::now() < deadline, "pi_dynamic_1 never listed");
    }
    assert_eq!(c.tool("pi_dynamic_1", json!({}))["result"]["content"][0]["text"], "dynamic_1");

    drop(pi); // SIGTERM: register closes its link
    assert!(c.notification("notifications/tools/list_changed", Duration::from_secs(10)).is_some());
    assert_eq!(c.tool_names(), ["list_servers"]);
}

#[test]
fn a_vanishing_server_fails_its_calls_at_once() {
    let _w = Watchdog::new("a_vanishing_server", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let mut pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-03-26");
    let pid = c.sample_pid("pi_system_info");

    let id = c.send("tools/call", json!({"name": "pi_sleep", "arguments": {"seconds": 60}}));
    pi.wait_log("sleeping 60 s");
    let killed = Instant::now();
    signal(pid, libc::SIGKILL);
    let resp = c.response(id);
    let took = killed.elapsed();
    assert_eq!(resp["error"]["code"], -32603, "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("went away"), "{resp}");
    assert!(took < Duration::from_secs(5), "the error took {took:?}");
    eprintln!("error reached the client {took:?} after SIGKILL");

    // register exits with a clear message and a non-zero status.
    // (137 whether sh exec'd the server or waited for it and reported the kill itself.)
    assert_eq!(pi.wait_exit(Duration::from_secs(10)).code(), Some(137));
    assert!(pi.log_text().contains("register exits (--restart never)"), "{}", pi.log_text());
    assert_eq!(c.tool_names(), ["list_servers"]);
}

#[test]
fn tool_timeout_cancels_upstream_and_progress_keeps_calls_alive() {
    let _w = Watchdog::new("tool_timeout", Duration::from_secs(60));
    let gw = Gateway::start(&["--timeout-run-tool", "1.5"]);
    let pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");

    let started = Instant::now();
    let resp = c.tool("pi_sleep", json!({"seconds": 5}));
    assert!(resp["error"]["message"].as_str().unwrap().contains("did not answer within"), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(4));
    pi.wait_log("cancelled after"); // the sample server got notifications/cancelled and stopped

    // Progress every second restarts the 1.5 s timeout: a 3.5 s call with progress succeeds, and
    // the client sees its own token on the progress notifications.
    let params =
        json!({"name": "pi_sleep", "arguments": {"seconds": 3.5}, "_meta": {"progressToken": "mine"}});
    let ok = c.call("tools/call", params);
    assert_eq!(ok["result"]["isError"], false, "{ok}");
    let progress = c.notification("notifications/progress", Duration::from_secs(1)).expect("progress");
    assert_eq!(progress["params"]["progressToken"], "mine");
}

#[test]
fn register_stops_its_child_on_sigterm() {
    let _w = Watchdog::new("register_stops_its_child", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let mut pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    let pid = c.sample_pid("pi_system_info");
    assert!(alive(pid));
    signal(pi.pid(), libc::SIGTERM);
    assert_eq!(pi.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(!alive(pid), "the MCP server outlived register");
}

#[test]
fn register_fails_fast_when_the_gateway_is_unreachable() {
    let _w = Watchdog::new("register_fails_fast", Duration::from_secs(30));
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{free}/mcp/register");
    let args = ["register", "--stdio", "sleep 100", "--gateway-url", &url, "--require-gateway"];
    let mut p = crate::util::Proc::start(&args);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(p.log_text().contains("cannot reach the gateway"), "{}", p.log_text());
}

/// `--gateway-url ws://host:port` without the register path reaches the gateway's status page,
/// which refuses to upgrade: register says which URL to use and exits at once (status 1) rather
/// than retrying forever; the same for another path the gateway does not serve.
#[test]
fn a_gateway_url_without_the_register_path_is_named_and_register_stops() {
    let _w = Watchdog::new("gateway_url_path", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    for path in ["", "/", "/mcp"] {
        let url = format!("ws://127.0.0.1:{}{path}", gw.port);
        let mut p = crate::util::Proc::start(&["register", "--stdio", "sleep 100", "--gateway-url", &url]);
        assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(1), "{}", p.log_text());
        let want = format!("use --gateway-url ws://127.0.0.1:{}/mcp/register", gw.port);
        assert!(p.log_text().contains(&want), "{path:?}: {}", p.log_text());
    }
}

#[test]
fn demo_serves_the_sample_server_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let _w = Watchdog::new("demo", Duration::from_secs(30));
    let child = Command::new(crate::util::BIN)
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut demo = crate::util::KillOnDrop::new(child.unwrap());
    let (mut url, mut register_line) = (None, None);
    for line in BufReader::new(demo.0.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if let Some(u) = line.trim().strip_prefix("MCP endpoint (legacy SSE):") {
            url = Some(u.trim().to_string());
        }
        if line.contains(" register --stdio ") {
            register_line = Some(line.trim().to_string());
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    let url = url.expect("the demo printed its SSE URL");
    let port: u16 = url.trim_end_matches("/sse").rsplit(':').next().unwrap().parse().unwrap();
    let mut c = crate::util::SseClient::connect(port, "/sse", &[]);
    c.initialize("2025-06-18");
    let echo = c.tool("sample_echo", json!({"text": "demo"}));
    assert_eq!(echo["result"]["content"][0]["text"], "demo");
    // The register command it prints works as printed, with mcpport on the PATH or not.
    let printed = register_line.expect("the demo printed a register command");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {printed}"))
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut edge = crate::util::KillOnDrop::new(child.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::util::http(port, "GET", "/health", &[], b"").json()["servers"] != 2 {
        assert!(Instant::now() < deadline, "the printed command did not register: {printed}");
        assert!(edge.exited().is_none(), "the printed command failed: {printed}");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(edge.0.id(), libc::SIGTERM);
    edge.wait_exit(Duration::from_secs(10));
    let pid = c.sample_pid("sample_system_info");
    signal(demo.0.id(), libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = demo.exited() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!alive(pid), "the sample server outlived the demo");
}

#[test]
fn a_closed_legacy_session_cancels_its_calls_in_flight() {
    let _w = Watchdog::new("closed_session_cancels", Duration::from_secs(30));
    let gw = Gateway::start(&["--sse-keepalive", "0.5"]);
    let pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    c.send("tools/call", json!({"name": "pi_sleep", "arguments": {"seconds": 30}}));
    pi.wait_log("sleeping 30 s");
    let closed = Instant::now();
    drop(c); // the client goes away with the call still running
    pi.wait_log("cancelled after");
    assert!(closed.elapsed() < Duration::from_secs(5), "noticed after {:?}", closed.elapsed());
    gw.proc.wait_log("cancelled 1 requests still in flight");
}

/// `echo` with a wrong argument name is an error result that says `text` is required, not an
/// empty success.
#[test]
fn echo_without_text_is_an_error_that_names_the_argument() {
    let _w = Watchdog::new("echo_without_text", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    let answer = c.tool("pi_echo", json!({"message": "hello"}));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("\"text\"") && text.contains("required"), "{text}");
}

/// A server command that is not found (status 127) is an ERROR that says so, not just the
/// shell's complaint at INFO.
#[test]
fn a_server_command_not_found_is_an_error_that_says_so() {
    let _w = Watchdog::new("a_server_command_not_found_is_an_error_that_says_so", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let url = gw.ws_url();
    let mut reg = crate::util::Proc::start(&[
        "register",
        "--stdio",
        "mcpport-no-such-command sample-server",
        "--gateway-url",
        &url,
    ]);
    assert_eq!(reg.wait_exit(Duration::from_secs(15)).code(), Some(127));
    let line = reg.wait_log("exited with status 127");
    assert!(line.contains("ERROR") && line.contains("command was not found"), "{line}");
    assert!(line.contains("PATH") && line.contains("quote"), "{line}");
}
