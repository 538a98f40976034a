//! Fault injection, each a real process scenario: the gateway restarts, links go silent
//! (SIGSTOP), children crash, processes get SIGTERM, and fifty edges reconnect at once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{alive, http, signal, Gateway, Proc, Watchdog};

fn sample_pid(gw: &Gateway, tool: &str) -> u32 {
    let mut c = gw.client();
    c.initialize("2025-06-18");
    c.sample_pid(tool)
}

#[test]
fn a_restarted_gateway_gets_every_register_back_with_the_same_child() {
    let _w = Watchdog::new("restarted_gateway", Duration::from_secs(60));
    let mut gw = Gateway::start(&[]);
    let port = gw.port.to_string();
    let pi = gw.register("pi", &["--reconnect-max", "2"]);
    pi.wait_log("registered as");
    let pid = sample_pid(&gw, "pi_system_info");

    signal(gw.proc.pid(), libc::SIGTERM);
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(15)).code(), Some(0), "graceful exit");
    pi.wait_log("reconnecting in");

    let gw2 = Gateway::start(&["--port", &port]);
    gw2.wait_servers(1, Duration::from_secs(15));
    assert_eq!(sample_pid(&gw2, "pi_system_info"), pid, "the child kept running");
    pi.wait_log("answered the gateway's initialize from the MCP server's first answer");
}

#[test]
fn a_silent_gateway_is_detected_by_register() {
    let _w = Watchdog::new("silent_gateway", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let pi = gw.register("pi", &["--ping-interval", "1", "--ping-timeout", "3"]);
    pi.wait_log("registered as");
    signal(gw.proc.pid(), libc::SIGSTOP);
    let stopped = Instant::now();
    pi.wait_log("did not answer pings");
    let took = stopped.elapsed();
    signal(gw.proc.pid(), libc::SIGCONT);
    assert!(took < Duration::from_secs(6), "detected after {took:?}");
}

#[test]
fn a_silent_edge_is_dropped_by_the_gateway_and_clients_are_told() {
    let _w = Watchdog::new("silent_edge", Duration::from_secs(60));
    let gw = Gateway::start(&["--ping-interval", "1", "--ping-timeout", "3"]);
    let pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    signal(pi.pid(), libc::SIGSTOP);
    let stopped = Instant::now();
    assert!(c.notification("notifications/tools/list_changed", Duration::from_secs(8)).is_some());
    let took = stopped.elapsed();
    signal(pi.pid(), libc::SIGCONT);
    assert!(took < Duration::from_secs(6), "dropped after {took:?}");
    gw.proc.wait_log("no answer to pings");
}

#[test]
fn a_crashing_child_is_restarted_on_failure() {
    let _w = Watchdog::new("crashing_child", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let pi = gw.register("pi", &["--restart", "on-failure"]);
    pi.wait_log("registered as");
    let first = sample_pid(&gw, "pi_system_info");
    signal(first, libc::SIGKILL);
    pi.wait_log("restarting the MCP server in");
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        let mut c = gw.client();
        c.initialize("2025-06-18");
        let r = c.tool("pi_system_info", json!({}));
        if let Some(pid) = r["result"]["structuredContent"]["pid"].as_u64() {
            break pid as u32;
        }
        assert!(Instant::now() < deadline, "the server never came back: {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(first, second);
    assert!(alive(pi.pid()));
}

#[test]
fn sigterm_lets_calls_in_flight_finish_then_closes_everything() {
    let _w = Watchdog::new("sigterm_gateway", Duration::from_secs(60));
    let mut gw = Gateway::start(&[]);
    let pi = gw.register_ready("pi");
    let mut c = gw.client();
    c.initialize("2025-06-18");
    let id = c.send("tools/call", json!({"name": "pi_sleep", "arguments": {"seconds": 1.5}}));
    pi.wait_log("sleeping 1.5 s");
    signal(gw.proc.pid(), libc::SIGTERM);
    let resp = c.response(id);
    assert_eq!(resp["result"]["content"][0]["text"], "slept 1.5 s", "{resp}");
    assert!(c.wait_closed(Duration::from_secs(10)), "the SSE stream ended");
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(15)).code(), Some(0));
    pi.wait_log("1001");
}

#[test]
fn register_exits_cleanly_on_sigterm_and_sigint() {
    let _w = Watchdog::new("register_signals", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    for (name, sig) in [("term", libc::SIGTERM), ("int", libc::SIGINT)] {
        let mut p = gw.register_ready(name);
        let pid = sample_pid(&gw, &format!("{name}_system_info"));
        signal(p.pid(), sig);
        assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(0));
        assert!(!alive(pid), "the child of {name} is still running");
    }
}

#[test]
fn health_tells_the_truth() {
    let _w = Watchdog::new("health", Duration::from_secs(60));
    let mut gw = Gateway::start(&[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = port.to_string();
    let args = [
        "--port",
        &p,
        "--health-host",
        "127.0.0.1",
        "--health-endpoint",
        "/live",
        "--require-gateway",
        "--enable-cors",
    ];
    let pi = gw.register("pi", &args);
    pi.wait_log("registered as");
    let live = http(port, "GET", "/live", &[], b"");
    assert_eq!((live.status, live.body.as_str()), (200, "ok"));
    assert_eq!(live.header("Access-Control-Allow-Origin").as_deref(), Some("*"));
    assert_eq!(http(port, "GET", "/other", &[], b"").status, 404);

    signal(gw.proc.pid(), libc::SIGTERM);
    gw.proc.wait_exit(Duration::from_secs(15));
    pi.wait_log("reconnecting in");
    let down = http(port, "GET", "/live", &[], b"");
    assert_eq!(down.status, 503);
    assert!(down.body.contains("not connected to the gateway"), "{}", down.body);
}

#[test]
fn fifty_registers_come_back_after_a_gateway_restart() {
    const N: u64 = 50;
    let _w = Watchdog::new("restart_storm", Duration::from_secs(120));
    let mut gw = Gateway::start(&[]);
    let port = gw.port.to_string();
    let edges: Vec<Proc> =
        (0..N).map(|i| gw.register(&format!("edge{i}"), &["--reconnect-max", "2"])).collect();
    gw.wait_servers(N, Duration::from_secs(60));
    signal(gw.proc.pid(), libc::SIGTERM);
    gw.proc.wait_exit(Duration::from_secs(15));
    let restarted = Instant::now();
    let gw2 = Gateway::start(&["--port", &port]);
    gw2.wait_servers(N, Duration::from_secs(60));
    eprintln!("{N} registers back {:?} after the restart", restarted.elapsed());
    let mut c = gw2.client();
    c.initialize("2025-06-18");
    assert_eq!(c.tool("edge49_echo", json!({"text": "back"}))["result"]["content"][0]["text"], "back");
    drop(edges);
}

/// SIGINT or SIGTERM while register waits to reconnect (here to a port nobody listens on) ends
/// it at once, with no further attempt and with its usual last line.
#[test]
fn a_signal_during_the_reconnect_wait_ends_register_at_once() {
    let _w =
        Watchdog::new("a_signal_during_the_reconnect_wait_ends_register_at_once", Duration::from_secs(60));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{dead}/mcp/register");
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut reg =
            Proc::start(&["register", "--stdio", "cat", "--gateway-url", &url, "--reconnect-max", "30"]);
        assert_eq!(reg.wait_count("reconnecting in", 3, Duration::from_secs(20)), 3, "{}", reg.log_text());
        std::thread::sleep(Duration::from_millis(100));
        let sent = Instant::now();
        signal(reg.pid(), sig);
        assert!(reg.wait_exit(Duration::from_secs(5)).success(), "{}", reg.log_text());
        assert!(sent.elapsed() < Duration::from_secs(2), "took {:?}", sent.elapsed());
        let log = reg.log_text();
        assert_eq!(reg.count_log("reconnecting in"), 3, "another attempt after the signal:\n{log}");
        let last = log.lines().last().unwrap_or_default();
        assert!(last.contains("signal received") && last.contains("bye"), "last line {last:?}:\n{log}");
    }
}
