//! Many sessions calling at once across two registered servers: every answer reaches the caller
//! that asked, and none is lost.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{Gateway, Watchdog};

const SESSIONS: usize = 32;
const CALLS: usize = 50;
/// Requests a session keeps in flight at once.
const WINDOW: usize = 10;

#[test]
fn thirty_two_sessions_fifty_calls_each_across_two_servers() {
    let _w = Watchdog::new("thirty_two_sessions", Duration::from_secs(120));
    let gw = Gateway::start(&[]);
    let _a = gw.register_ready("alpha");
    let _b = gw.register_ready("beta");
    let started = Instant::now();
    let workers: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let port = gw.port;
            std::thread::spawn(move || {
                let mut c = crate::util::SseClient::connect(port, "/sse", &[]);
                c.initialize("2024-11-05");
                for batch in (0..CALLS).collect::<Vec<_>>().chunks(WINDOW) {
                    let sent: Vec<(u64, String)> = batch
                        .iter()
                        .map(|n| {
                            let server = if n % 2 == 0 { "alpha" } else { "beta" };
                            let text = format!("session {s} call {n} via {server}");
                            let id = c.send(
                                "tools/call",
                                json!({"name": format!("{server}_echo"), "arguments": {"text": text}}),
                            );
                            (id, text)
                        })
                        .collect();
                    for (id, text) in sent {
                        let resp = c.response(id);
                        assert_eq!(resp["result"]["content"][0]["text"], text, "session {s}: {resp}");
                    }
                }
                CALLS
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().expect("a session failed")).sum();
    assert_eq!(answered, SESSIONS * CALLS);
    eprintln!("{answered} calls over {SESSIONS} sessions in {:?}", started.elapsed());
}
