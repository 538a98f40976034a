//! `register` across links and child restarts, against the real binary: an answer the child
//! gives after the gateway link it was asked on has ended never reaches anyone on a later link,
//! and what a dead child wrote never ends the link of the child that replaced it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{signal, Gateway, Proc, Watchdog, BIN};

/// Client A calls a 4 s tool; the gateway dies (SIGKILL) and comes back on the same port; once
/// register is back, client B calls a 6 s tool on the same server. The child answers A's call
/// while B waits, under the id the child was given on the old link; that answer must be dropped,
/// whatever ids the new gateway mints, and B must get its own answer after its own 6 s.
#[test]
fn an_answer_from_an_ended_link_never_reaches_a_client_on_the_next() {
    let _w = Watchdog::new("answer_from_an_ended_link", Duration::from_secs(90));
    let mut gw = Gateway::start(&[]);
    let port = gw.port.to_string();
    let pi = gw.register("pi", &["--reconnect-max", "1"]);
    pi.wait_log("registered as");

    let mut a = gw.client();
    a.initialize("2025-06-18");
    let params = json!({"name": "pi_sleep", "arguments": {"seconds": 4}, "_meta": {"progressToken": "a"}});
    a.send("tools/call", params);
    // Progress (after a second) proves the call is at the child.
    assert!(a.notification("notifications/progress", Duration::from_secs(5)).is_some(), "no progress");
    signal(gw.proc.pid(), libc::SIGKILL);
    gw.proc.wait_exit(Duration::from_secs(10));
    drop(a);

    let gw2 = Gateway::start(&["--port", &port]);
    gw2.wait_servers(1, Duration::from_secs(15));
    let mut b = gw2.client();
    b.initialize("2025-06-18");
    let started = Instant::now();
    let resp = b.tool("pi_sleep", json!({"seconds": 6}));
    let took = started.elapsed();
    assert_eq!(resp["result"]["content"][0]["text"], "slept 6 s", "B got another call's answer: {resp}");
    assert!(took >= Duration::from_millis(5500), "B's 6 s call was answered after {took:?}");
}

/// A child that dies while no link is up, leaving lines behind in its stdout pipe (more than a
/// link's queue holds), is restarted; the first link of the new child must stay up: nothing
/// the dead child wrote, and not its end of output, may reach or close it.
#[test]
fn a_dead_childs_leftovers_never_end_the_next_childs_link() {
    let _w = Watchdog::new("dead_childs_leftovers", Duration::from_secs(90));
    let mut gw = Gateway::start(&[]);
    let port = gw.port.to_string();
    // The sample server, and after it ends, 400 notifications (about 40 KB: they fit in the pipe,
    // so the shell exits at once) before the shell exits with a failure.
    let note = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"left over by a dead server"}}"#;
    let stdio = format!("{BIN} sample-server --test-tools; i=0; while [ $i -lt 400 ]; do echo '{note}'; i=$((i+1)); done; exit 3");
    let url = gw.ws_url();
    let args = ["register", "--stdio", &stdio, "--gateway-url", &url, "--server-name", "pi"];
    let pi = Proc::start(&[&args[..], &["--restart", "always", "--reconnect-max", "1"]].concat());
    pi.wait_log("registered as");
    let first = {
        let mut c = gw.client();
        c.initialize("2025-06-18");
        c.sample_pid("pi_system_info")
    };

    // The link goes first; then the server, with its leftovers written while no link is up.
    signal(gw.proc.pid(), libc::SIGKILL);
    gw.proc.wait_exit(Duration::from_secs(10));
    pi.wait_log("reconnecting in");
    signal(first, libc::SIGKILL);
    pi.wait_log("restarting the MCP server in");
    pi.wait_log("started MCP server");
    std::thread::sleep(Duration::from_millis(500));

    let gw2 = Gateway::start(&["--port", &port]);
    gw2.wait_servers(1, Duration::from_secs(15));
    let mut c = gw2.client();
    c.initialize("2025-06-18");
    let second = c.sample_pid("pi_system_info");
    assert_ne!(first, second, "the server was restarted");
    // The new link stays up, with the tools listed.
    std::thread::sleep(Duration::from_secs(2));
    gw2.wait_servers(1, Duration::from_secs(1));
    assert!(c.tool_names().contains(&"pi_echo".to_string()));
    let log = pi.log_text();
    let after_restart = log.split("restarting the MCP server in").nth(1).unwrap_or_default();
    assert_eq!(after_restart.matches("connected to").count(), 1, "the new link was lost:\n{log}");
    assert!(!after_restart.contains("the link was closed"), "the new link was closed:\n{log}");
}
