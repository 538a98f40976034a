//! What operators see: Prometheus metrics that move with traffic, the `/servers` listing, and
//! JSON log lines.

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{http, Gateway, SseClient, Watchdog};

/// The value of one sample line (`name{labels} value`) of a metrics text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn metrics_move_with_traffic() {
    let _w = Watchdog::new("metrics", Duration::from_secs(30));
    let gw =
        Gateway::start(&["--auth-token", "t0k", "--metrics-listen", "127.0.0.1:0", "--log-format", "json"]);
    let line = gw.proc.wait_log("metrics on http://");
    let port: u16 = line.split("127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    let pi = gw.register("pi", &["--header", "Authorization: Bearer t0k"]);
    pi.wait_log("registered as");
    assert_eq!(gw.http("GET", "/metrics", &[], b"").status, 401, "the main port's metrics need a token");

    let before = http(port, "GET", "/metrics", &[], b"").body;
    assert_eq!(sample(&before, "mcpport_servers_registered"), 1.0);
    let mut c = SseClient::connect(gw.port, "/sse", &[("Authorization", "Bearer t0k")]);
    c.initialize("2025-06-18");
    for _ in 0..3 {
        c.tool("pi_echo", json!({"text": "count me"}));
    }
    c.tool("pi_nothing", json!({}));
    let after = gw.http("GET", "/metrics", &[("Authorization", "Bearer t0k")], b"").body;
    assert_eq!(sample(&after, "mcpport_requests_total{method=\"tools/call\",server=\"pi\"}"), 3.0);
    assert_eq!(sample(&after, "mcpport_request_errors_total{method=\"tools/call\",server=\"gateway\"}"), 1.0);
    assert_eq!(sample(&after, "mcpport_tool_call_duration_seconds_count{server=\"pi\"}"), 3.0);
    assert_eq!(sample(&after, "mcpport_sessions_open{transport=\"legacy_sse\"}"), 1.0);
    assert!(sample(&after, "mcpport_client_bytes_total{direction=\"in\"}") > 0.0);
    assert!(
        sample(&after, "mcpport_edge_bytes_total{direction=\"out\"}")
            > sample(&before, "mcpport_edge_bytes_total{direction=\"out\"}")
    );
    assert_eq!(sample(&after, "mcpport_registrations_total"), 1.0);

    // Every log line is one JSON object, and none holds the token.
    let log = gw.proc.log_text();
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string(), "{l}");
    }
    assert!(!log.contains("t0k"));
}

#[test]
fn servers_lists_what_is_registered() {
    let _w = Watchdog::new("servers_listing", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let listing = gw.http("GET", "/servers", &[], b"").json();
    let pi = &listing["servers"][0];
    assert_eq!(pi["name"], "pi");
    assert_eq!(pi["ready"], true);
    assert_eq!(pi["counts"]["prompts"], 1);
    assert!(pi["counts"]["tools"].as_u64().unwrap() >= 9);
    assert!(pi["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(pi["connectedSince"].as_str().unwrap().ends_with('Z'));
    assert!(pi["lastSeen"].as_str().unwrap().ends_with('Z'));
}

/// A gateway binary with file capabilities (`setcap cap_net_bind_service`, to bind port 443
/// without root) runs in glibc's secure mode, where `GLIBC_TUNABLES` is erased: it must start
/// rather than re-execute itself forever to turn malloc's caches off. Needs root, `setcap` and
/// `setpriv`; skipped (with a note) where they are missing.
#[test]
fn a_gateway_with_file_capabilities_starts() {
    let _w = Watchdog::new("secure mode", Duration::from_secs(30));
    let dir = TempDir(std::env::temp_dir().join(format!("mcpport-secure-{}", std::process::id())));
    let bin = dir.0.join("mcpport");
    // Copied and capped by other processes: a file this process held open for writing could be
    // inherited by a child another test forks meanwhile, and exec would fail (ETXTBSY).
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        let quiet = std::process::Stdio::null;
        std::process::Command::new(program).args(args).stderr(quiet()).status().is_ok_and(|s| s.success())
    };
    let prepared = std::fs::create_dir_all(&dir.0)
        .and_then(|()| std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)))
        .is_ok()
        && run("cp", &[crate::util::bin().as_ref(), bin.as_os_str()])
        && run("setcap", &["cap_net_bind_service+ep".as_ref(), bin.as_os_str()]);
    if !prepared {
        return cannot_run("setting file capabilities needs root and setcap");
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    cmd.arg(&bin).args(["gateway", "--host", "127.0.0.1", "--port", "0"]);
    let gw = crate::util::Proc::start_command(cmd);
    gw.wait_log("listening on");
}

/// A test that cannot run on this machine: a note, or a failure where everything it needs must
/// be there (`MCPPORT_REQUIRE_ALL`, which CI sets: a skip there would hide what the test checks).
fn cannot_run(why: &str) {
    assert!(std::env::var_os("MCPPORT_REQUIRE_ALL").is_none(), "cannot run here: {why}");
    eprintln!("skipped: {why}");
}

/// A directory removed when the test ends, however it ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Started through the dynamic loader (`ld.so mcpport gateway`, as on a `noexec` mount), the
/// gateway must not re-execute /proc/self/exe, which is then the loader: it would take `gateway`
/// for the program to load and exit 127. Skipped where no known loader is installed.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn a_gateway_started_through_the_loader_starts() {
    let _w = Watchdog::new("through the loader", Duration::from_secs(30));
    let loaders = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux-armhf.so.3"];
    let Some(loader) = loaders.iter().find(|l| std::path::Path::new(l).exists()) else {
        return cannot_run("no glibc loader at a known path");
    };
    let mut cmd = std::process::Command::new(loader);
    cmd.arg(crate::util::bin()).args(["gateway", "--host", "127.0.0.1", "--port", "0"]);
    let gw = crate::util::Proc::start_command(cmd);
    gw.wait_log("listening on");
}

/// Each connection thread of `pid` waiting in a syscall, what it waits for, its resident stack
/// pages, and how many of those lie below the page its stack pointer is in; from `/proc`: the
/// stack pointer, the mapping holding it, and that mapping's present bits in `pagemap`.
///
/// The kernel merges a thread's stack mapping with an anonymous mapping just above it (a
/// buffer the allocator mapped there), so a mapping may hold more than one thread's stack: each
/// is counted only over the smallest mapping any connection thread's stack pointer lies in
/// (they are all spawned alike), from its low end, where the guard page below keeps it apart.
pub(crate) fn waiting_threads_stack_pages(pid: u32) -> Vec<(String, usize, usize)> {
    use std::io::{Read, Seek, SeekFrom};
    let maps: Vec<(u64, u64)> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .collect();
    let mut waiting = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let syscall = std::fs::read_to_string(dir.join("syscall")).unwrap_or_default();
        let fields: Vec<String> = syscall.split_whitespace().map(str::to_owned).collect();
        if !comm.starts_with("conn-") || fields.len() < 9 {
            continue;
        }
        let sp = u64::from_str_radix(fields[fields.len() - 2].trim_start_matches("0x"), 16).unwrap();
        let Some(&(low, high)) = maps.iter().find(|(a, b)| *a <= sp && sp < *b) else { continue };
        waiting.push((fields, sp, low, high));
    }
    let Some(region) = waiting.iter().map(|(_, _, low, high)| high - low).min() else { return Vec::new() };
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let mut out = Vec::new();
    for (fields, sp, low, _) in waiting {
        let pages = (region / 4096) as usize;
        let mut bits = vec![0u8; pages * 8];
        pagemap.seek(SeekFrom::Start(low / 4096 * 8)).unwrap();
        pagemap.read_exact(&mut bits).unwrap();
        let resident: Vec<bool> = bits.chunks(8).map(|e| e[7] & 0x80 != 0).collect();
        let sp_page = (((sp - low) / 4096) as usize).min(pages);
        let present = resident.iter().filter(|&&r| r).count();
        let below = resident[..sp_page].iter().filter(|&&r| r).count();
        // poll with one descriptor: a connection waiting for a request; with more: a link owner.
        let what = match (fields[0].as_str(), fields[2].as_str()) {
            ("7", "0x1") => "a connection waiting for a request",
            ("7", _) => "a link owner",
            ("202", _) => "a stream waiting for a message",
            _ => "another wait",
        };
        out.push((format!("{what} (syscall {})", fields[0]), present, below));
    }
    out
}

/// The most stack pages a connection thread of the binary under test may keep, resting and busy,
/// by what its `--version` says it is (the tests may run against another build than their own:
/// `MCPPORT_BIN`, the static musl one in CI). The optimized glibc build: two and three (the C
/// library's thread block and TLS take most of a page of their own). The optimized musl build:
/// three and five, its system-call wrappers and thread start laying the same frames out over more
/// pages (measured over repeated runs: 2-3 resting, 3-5 busy). Unoptimized, whose frames are
/// several times deeper: five and twelve, so plain `cargo test` still fails when resting stops
/// giving pages back.
fn page_bounds() -> (bool, usize, usize) {
    let out =
        std::process::Command::new(crate::util::bin()).arg("--version").output().expect("mcpport --version");
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    match (version.contains(", release)"), version.contains("-musl")) {
        (true, false) => (true, 2, 3),
        (true, true) => (true, 3, 5),
        (false, _) => (false, 5, 12),
    }
}

/// Samples the waiting threads' stack pages until `settled` holds for at least `min` threads, or
/// `limit` passes; the last sample.
pub(crate) fn sample_until(
    pid: u32,
    min: usize,
    limit: Duration,
    settled: impl Fn(&(String, usize, usize)) -> bool,
) -> Vec<(String, usize, usize)> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let threads = waiting_threads_stack_pages(pid);
        if (threads.len() >= min && threads.iter().all(&settled)) || std::time::Instant::now() >= deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A resting thread keeps no stack page below the one its wait runs in: resting discards them,
/// and nothing it does before blocking again (no allocation, no deeper frame) touches them. In
/// the release build a connection waiting for its next request and a legacy SSE stream waiting
/// for its next message, and a link owner waiting for its edge, keep two pages (the C library's
/// thread block, and the frames of the wait, request handling being out of line; ARCHITECTURE.md,
/// "What bounds what"); other builds as `page_bounds` says. CI runs this on the glibc and the
/// static musl release builds too.
#[test]
fn idle_connections_keep_two_stack_pages() {
    let _w = Watchdog::new("idle_stack_pages", Duration::from_secs(30));
    let (release, most, _) = page_bounds();
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut keep_alive = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let answer = post_on(&mut keep_alive, "/mcp", &[], &init);
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut stream = SseClient::connect(gw.port, "/sse", &[]);
    stream.initialize("2025-06-18");
    // A quiet thread rests a second after its last work: wait for that (a few seconds at most).
    let rested = |(_, pages, below): &(String, usize, usize)| *pages <= most && (!release || *below == 0);
    let threads = sample_until(gw.proc.pid(), 3, Duration::from_secs(5), rested);
    assert!(threads.len() >= 3, "the link, the keep-alive connection and the stream wait: {threads:?}");
    if release {
        let below: Vec<_> = threads.iter().filter(|(_, _, below)| *below > 0).collect();
        assert!(
            below.is_empty(),
            "resting threads keeping pages below their wait: {below:?} (all: {threads:?})"
        );
    }
    let heavy: Vec<_> = threads.iter().filter(|(_, pages, _)| *pages > most).collect();
    assert!(
        heavy.is_empty(),
        "idle threads keeping more than {most} stack pages: {heavy:?} (all: {threads:?})"
    );
}

/// One POST on a keep-alive connection, and its answer.
fn post_on(
    conn: &mut std::net::TcpStream,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> crate::util::HttpResponse {
    let mut headers = headers.to_vec();
    headers.extend([("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")]);
    let port = conn.peer_addr().unwrap().port();
    let text = crate::util::request_text(port, "POST", path, &headers, body.to_string().as_bytes(), true);
    std::io::Write::write_all(conn, &text).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    crate::util::read_one_response(&mut reader).unwrap()
}

/// The stack pages of at least `n` waiting threads, sampled for up to 600 ms until that many are
/// in their waits.
fn waiting_threads_stack_pages_of(pid: u32, n: usize) -> Vec<(String, usize, usize)> {
    sample_until(pid, n, Duration::from_millis(600), |_| true)
}

/// While calls go through, no connection thread keeps more than three stack pages (twelve
/// unoptimized): the link
/// owner relaying them, the legacy SSE stream writing their answers, the keep-alive connection
/// posting them, and a Streamable HTTP connection waiting for each answer (the hot paths' frames
/// are kept small, their rare branches out of line; ARCHITECTURE.md, "What bounds what"). Read
/// right after the calls, before a quiet thread gives pages back.
#[test]
fn busy_connections_keep_three_stack_pages() {
    let _w = Watchdog::new("busy_stack_pages", Duration::from_secs(30));
    let gw = Gateway::start(&[]);
    let _pi = gw.register_ready("pi");
    let mut stream = SseClient::connect(gw.port, "/sse", &[]);
    stream.initialize("2025-06-18");
    let mut legacy = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let mut modern = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let opened = post_on(&mut modern, "/mcp", &[], &init);
    let session = opened.header("Mcp-Session-Id").expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post_on(&mut modern, "/mcp", &[("Mcp-Session-Id", &session)], &initialized).status, 202);
    for id in 1..=20u64 {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "pi_echo", "arguments": {"text": format!("call {id}")}}});
        assert_eq!(post_on(&mut legacy, &stream.endpoint.clone(), &[], &call).status, 202);
        let answer = stream.response(id);
        assert_eq!(answer["result"]["content"][0]["text"], json!(format!("call {id}")), "{answer}");
        let answer = post_on(&mut modern, "/mcp", &[("Mcp-Session-Id", &session)], &call);
        assert!(answer.body.contains(&format!("call {id}")), "{answer:?}");
    }
    // A connection that has just written its answer may not be back in its wait yet (only a
    // thread in a syscall is read): sample until all four wait; a quiet thread rests only after a
    // second, far beyond this.
    let threads = waiting_threads_stack_pages_of(gw.proc.pid(), 4);
    assert!(threads.len() >= 4, "the link, two keep-alive connections and the stream wait: {threads:?}");
    let (_, _, most) = page_bounds();
    let heavy: Vec<_> = threads.iter().filter(|(_, pages, _)| *pages > most).collect();
    assert!(
        heavy.is_empty(),
        "busy threads keeping more than {most} stack pages: {heavy:?} (all: {threads:?})"
    );
}
