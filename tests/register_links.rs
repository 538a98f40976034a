//! `register` across links and child restarts, against the real binary: an answer the child
//! gives after the gateway link it was asked on has ended never reaches anyone on a later link,
//! what a dead child wrote never ends the link of the child that replaced it, and a gateway that
//! stops reading costs register bounded memory.

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

/// A gateway that stops reading while the child writes as fast as it can: register stops reading
/// the child (its stdout is not polled while frames wait for the socket), so its memory stays
/// bounded, and it gives the silent link up by its ping timeout and dials again.
#[test]
fn a_gateway_that_stops_reading_costs_register_bounded_memory() {
    let _w = Watchdog::new("gateway_stops_reading", Duration::from_secs(90));
    let stdio = format!("{BIN} sample-server --test-tools");
    let (pi, mut ws, listener) = fake_gateway(&stdio, &["--ping-interval", "2", "--ping-timeout", "6"]);
    let send = |ws: &mut tungstenite::WebSocket<_>, v: serde_json::Value| {
        ws.send(tungstenite::Message::text(v.to_string())).unwrap();
    };
    send(&mut ws, json!({"status": "registered", "message": "ok"}));
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
    );
    let answer = read_json(&mut ws);
    assert_eq!(answer["id"], 1, "{answer}");
    send(&mut ws, json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    // 400 MiB of progress, and then this end reads nothing more.
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "flood", "arguments": {"count": 400, "bytes": 1_048_576}, "_meta": {"progressToken": "f"}}}),
    );
    let sampler = crate::util::Sampler::start(pi.pid());
    pi.wait_log("did not answer pings");
    let peak = sampler.peak_rss_mb();
    eprintln!("register behind a gateway that stopped reading: peak RSS {peak} MiB");
    assert!(peak < 64, "register's RSS reached {peak} MiB while its link was not read");
    drop(ws);
    let (_again, _) = listener.accept().unwrap();
}

/// A child that writes many small lines at once fills the link's outgoing frames from one read
/// of its stdout; that is not the gateway sending without reading, and the link stays up while
/// the gateway reads (and sends) as it should.
#[test]
fn a_burst_of_small_child_lines_is_not_blamed_on_the_gateway() {
    let _w = Watchdog::new("burst_of_small_lines", Duration::from_secs(60));
    let script = std::env::temp_dir().join(format!("mcpport-burst-{}.py", std::process::id()));
    let line = r#"{"jsonrpc":"2.0","method":"notifications/x"}"#;
    std::fs::write(&script, format!("import os\nwhile True:\n    os.write(1, b'{line}\\n' * 6000)\n"))
        .unwrap();
    let (pi, mut ws, _listener) = fake_gateway(&format!("exec python3 {}", script.display()), &[]);
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut closed = None;
    while Instant::now() < deadline && closed.is_none() {
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let _ = ws.send(tungstenite::Message::text(note));
        for _ in 0..2000 {
            match ws.read() {
                Ok(tungstenite::Message::Close(frame)) => {
                    closed = Some(format!("{frame:?}"));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    let _ = std::fs::remove_file(&script);
    assert!(closed.is_none(), "register closed the link: {closed:?}\n{}", pi.log_text());
}

/// A gateway that sends requests register answers itself (`initialize`, from the child's first
/// answer) and reads none of the answers loses the link once 4,096 of them wait.
#[test]
fn a_gateway_that_sends_without_reading_the_answers_loses_the_link() {
    let _w = Watchdog::new("sends_without_reading", Duration::from_secs(60));
    let (pi, mut ws, _listener) = fake_gateway(&format!("{BIN} sample-server"), &[]);
    let init = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        .to_string()
    };
    ws.send(tungstenite::Message::text(init(1))).unwrap();
    assert_eq!(read_json(&mut ws)["id"], 1);
    // Written raw and all at once, so register finds them waiting in one read.
    ws.get_ref().set_nonblocking(false).unwrap();
    for id in 2..30_000 {
        if ws.write(tungstenite::Message::text(init(id))).is_err() {
            break;
        }
    }
    let _ = ws.flush();
    pi.wait_log("without reading");
}

/// A child that closes its stdin can take no request: the link closes with that reason, the
/// child is stopped, and `--restart always` starts the next one.
#[test]
fn a_child_that_closes_its_stdin_is_stopped_and_restarted() {
    let _w = Watchdog::new("child_closes_stdin", Duration::from_secs(60));
    let gw = Gateway::start(&[]);
    let script = std::env::temp_dir().join(format!("mcpport-closein-{}.py", std::process::id()));
    std::fs::write(
        &script,
        r#"import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "closein", "version": "1"}}
    elif msg.get("method") == "tools/list":
        result = {"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}
    elif "id" in msg and "method" in msg:
        result = {}
    else:
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
    if msg.get("method") == "tools/list":
        os.close(0)
        time.sleep(60)
"#,
    )
    .unwrap();
    let stdio = format!("exec python3 {}", script.display());
    let url = gw.ws_url();
    let args = ["register", "--stdio", &stdio, "--gateway-url", &url, "--server-name", "pi"];
    let pi = Proc::start(&[&args[..], &["--restart", "always", "--reconnect-max", "1"]].concat());
    pi.wait_log("registered as");
    let mut client = gw.client();
    client.initialize("2025-06-18");
    let _ = client.tool("pi_t", json!({}));
    pi.wait_log("closed its stdin; stopping it");
    let started = || pi.log_text().matches("started MCP server").count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while started() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&script);
    assert!(started() >= 2, "the child was not restarted:\n{}", pi.log_text());
}

/// A gateway of the test's own on 127.0.0.1: register (with `stdio` as its child and `extra`
/// flags) dials it, and the test holds the accepted WebSocket, past the registration.
fn fake_gateway(
    stdio: &str,
    extra: &[&str],
) -> (Proc, tungstenite::WebSocket<std::net::TcpStream>, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}/mcp/register", listener.local_addr().unwrap().port());
    let args = ["register", "--stdio", stdio, "--gateway-url", &url, "--server-name", "pi"];
    let pi = Proc::start(&[&args[..], extra].concat());
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ws = tungstenite::accept(stream).unwrap();
    assert_eq!(read_json(&mut ws)["method"], "register");
    let registered = json!({"status": "registered", "message": "ok"}).to_string();
    ws.send(tungstenite::Message::text(registered)).unwrap();
    (pi, ws, listener)
}

/// The next text frame, as JSON.
fn read_json<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> serde_json::Value {
    loop {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            return serde_json::from_str(&t).unwrap();
        }
    }
}
