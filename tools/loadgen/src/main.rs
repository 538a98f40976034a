//! The load generator of scripts/bench.sh (synchronous threads, loopback only, every loop bounded
//! in count and time). Prints one JSON object per result on stdout; progress goes to stderr.
//!
//!   loadgen mesh --addr HOST:PORT --edges N [--tools K] [--tool-bytes B] [--edge-threads T]
//!                [--watchers W] [--sessions M --transport sse|http --calls C] [--watch-pid PID]
//!                [--prefix P] [--time-limit S]
//!       N fake edges register one after another (timed), W legacy SSE sessions opened before
//!       count the list_changed notifications they get, then M sessions open at once and each
//!       makes C checked calls, call k of session i going to edge (i + k) mod N. With
//!       --watch-pid, the RSS and thread count of that process (the gateway) per phase.
//!   loadgen compare --tool T --calls N --rounds R --warmup W --direct CMD TARGET...
//!       One session per target, sequential calls, the targets taking turns each round; the
//!       first target is the stdio server CMD called directly (the floor).
//!   loadgen load --tool T --sessions S --seconds D [--warmup W] TARGET
//!       S sessions at once for D seconds: calls/s and latency. TARGET may be stdio:CMD.
//!   loadgen wait-tool --tool T --timeout S TARGET
//!       Lists tools every 5 ms until T is listed (exit 0) or S seconds pass (exit 1).
//!
//! TARGET: sse:HOST:PORT/PATH or http:HOST:PORT/PATH.

mod client;
mod direct;
mod edges;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use client::{json_string, Session, Target};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    exit(2)
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("loadgen: {msg}");
}

/// `--key value` options and the remaining words.
struct Args {
    opts: BTreeMap<String, Vec<String>>,
    rest: Vec<String>,
}

impl Args {
    fn parse(args: &[String]) -> Args {
        let (mut opts, mut rest) = (BTreeMap::<String, Vec<String>>::new(), Vec::new());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(key) = a.strip_prefix("--") {
                let v = it.next().unwrap_or_else(|| fail(format!("--{key} needs a value")));
                opts.entry(key.to_string()).or_default().push(v.clone());
            } else {
                rest.push(a.clone());
            }
        }
        Args { opts, rest }
    }
    fn str(&self, key: &str) -> Option<String> {
        self.opts.get(key).and_then(|v| v.last().cloned())
    }
    fn need(&self, key: &str) -> String {
        self.str(key).unwrap_or_else(|| fail(format!("--{key} is required")))
    }
    fn num(&self, key: &str, default: usize) -> usize {
        self.str(key)
            .map_or(default, |v| v.parse().unwrap_or_else(|_| fail(format!("--{key}: bad number {v:?}"))))
    }
}

fn spawn<T: Send + 'static>(name: String, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    thread::Builder::new()
        .name(name)
        .stack_size(128 * 1024)
        .spawn(f)
        .unwrap_or_else(|e| fail(format!("cannot start a thread: {e}")))
}

// ---- figures ----

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Latency figures of a set of calls, as JSON members.
fn latency_json(mut us: Vec<u32>) -> String {
    us.sort_unstable();
    let mean = if us.is_empty() {
        0.0
    } else {
        us.iter().map(|&u| u as f64).sum::<f64>() / us.len() as f64 / 1000.0
    };
    format!(
        r#""p50_ms":{:.4},"p90_ms":{:.4},"p99_ms":{:.4},"max_ms":{:.4},"mean_ms":{mean:.4}"#,
        percentile(&us, 50.0),
        percentile(&us, 90.0),
        percentile(&us, 99.0),
        percentile(&us, 100.0)
    )
}

fn opt_json(s: Option<&String>) -> String {
    s.map(|e| json_string(e)).unwrap_or_else(|| "null".into())
}

// ---- /proc sampler ----

#[derive(Default, Clone, Copy)]
struct Peak {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    samples: u64,
}

/// Samples VmRSS, VmHWM and Threads of one process every 50 ms, keeping the maximum per phase.
struct Sampler {
    phase: Arc<Mutex<String>>,
    peaks: Arc<Mutex<Vec<(String, Peak)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pid: Option<u32>,
}

fn proc_status(pid: u32) -> Option<Peak> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut p = Peak { samples: 1, ..Peak::default() };
    for line in text.lines() {
        let (k, v) = line.split_once(':')?;
        let n = || v.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
        match k {
            "VmRSS" => p.rss_kib = n(),
            "VmHWM" => p.hwm_kib = n(),
            "Threads" => p.threads = n(),
            _ => {}
        }
    }
    Some(p)
}

impl Sampler {
    fn start(pid: Option<u32>) -> Sampler {
        let phase = Arc::new(Mutex::new("start".to_string()));
        let peaks = Arc::new(Mutex::new(Vec::<(String, Peak)>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = pid.map(|pid| {
            let (phase, peaks, stop) = (phase.clone(), peaks.clone(), stop.clone());
            spawn("sampler".into(), move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = proc_status(pid) {
                        let name = phase.lock().unwrap().clone();
                        let mut peaks = peaks.lock().unwrap();
                        if peaks.last().map(|(n, _)| n != &name).unwrap_or(true) {
                            peaks.push((name, Peak::default()));
                        }
                        let p = &mut peaks.last_mut().unwrap().1;
                        p.rss_kib = p.rss_kib.max(s.rss_kib);
                        p.hwm_kib = p.hwm_kib.max(s.hwm_kib);
                        p.threads = p.threads.max(s.threads);
                        p.samples += 1;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        });
        Sampler { phase, peaks, stop, handle, pid }
    }

    fn phase(&self, name: &str) {
        say(format!("phase {name}"));
        *self.phase.lock().unwrap() = name.to_string();
        // One sample at the switch, so short phases are seen too.
        if let Some(s) = self.pid.and_then(proc_status) {
            let mut peaks = self.peaks.lock().unwrap();
            peaks.push((name.to_string(), s));
        }
    }

    fn finish(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let peaks = self.peaks.lock().unwrap();
        let mut out = String::from("{");
        for (i, (name, p)) in peaks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{}:{{"rss_kib":{},"hwm_kib":{},"threads":{},"samples":{}}}"#,
                json_string(name),
                p.rss_kib,
                p.hwm_kib,
                p.threads,
                p.samples
            );
        }
        out.push('}');
        out
    }
}

// ---- mesh ----

/// SSE sessions that count the `list_changed` notifications they get.
struct Watchers {
    counts: Vec<Arc<AtomicU64>>,
    sockets: Vec<std::net::TcpStream>,
    handles: Vec<JoinHandle<()>>,
}

impl Watchers {
    fn open(addr: &str, n: usize) -> Watchers {
        let target = Target { kind: client::Kind::Sse, addr: addr.into(), path: "/sse".into() };
        let mut w = Watchers { counts: Vec::new(), sockets: Vec::new(), handles: Vec::new() };
        for i in 0..n {
            let s = Session::open(&target).unwrap_or_else(|e| fail(format!("watcher {i}: {e}")));
            let mut stream = s.into_stream().expect("an SSE session");
            w.sockets.push(stream.socket().unwrap_or_else(|e| fail(e)));
            let count = Arc::new(AtomicU64::new(0));
            w.counts.push(count.clone());
            w.handles.push(spawn(format!("watcher-{i}"), move || {
                while let Ok(ev) = stream.next_event() {
                    if ev.data.contains("list_changed") {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        w
    }

    fn total(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// Waits until no count moved for `quiet` (at most `limit`).
    fn settle(&self, quiet: Duration, limit: Duration) {
        let end = Instant::now() + limit;
        let mut last = self.total();
        let mut since = Instant::now();
        while Instant::now() < end && since.elapsed() < quiet {
            thread::sleep(Duration::from_millis(50));
            let now = self.total();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
    }

    fn close(self) {
        for s in &self.sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn mesh(a: &Args) {
    let addr = a.need("addr");
    let n_edges = a.num("edges", 1000);
    let n_sessions = a.num("sessions", 0);
    let calls = a.num("calls", 20);
    let prefix = a.str("prefix").unwrap_or_else(|| "e".into());
    let time_limit = Duration::from_secs(a.num("time-limit", 300) as u64);
    let deadline = Instant::now() + time_limit;
    let transport = a.str("transport").unwrap_or_else(|| "sse".into());
    let target = match transport.as_str() {
        "sse" => Target { kind: client::Kind::Sse, addr: addr.clone(), path: "/sse".into() },
        "http" => Target { kind: client::Kind::Http, addr: addr.clone(), path: "/mcp".into() },
        t => fail(format!("--transport {t}: sse or http")),
    };
    let pid = a.str("watch-pid").map(|p| p.parse::<u32>().unwrap_or_else(|_| fail("--watch-pid: a number")));
    let sampler = Sampler::start(pid);
    let offer = Arc::new(edges::Offer::new(a.num("tools", 1), a.num("tool-bytes", 200)));
    let stats = Arc::new(edges::Stats::default());
    let mut pool = edges::Pool::start(a.num("edge-threads", 2), offer.clone(), stats.clone())
        .unwrap_or_else(|e| fail(format!("cannot start the edge pollers: {e}")));
    thread::sleep(Duration::from_millis(300));

    sampler.phase("watchers");
    let watchers = Watchers::open(&addr, a.num("watchers", 0));

    sampler.phase("registering");
    let t0 = Instant::now();
    let (took, reg_errors) =
        edges::register_all(&addr, &prefix, n_edges, &offer, &stats, &mut pool, deadline);
    let reg_total = t0.elapsed();
    say(format!(
        "{} edges registered in {:.2} s, {} failed",
        took.len(),
        reg_total.as_secs_f64(),
        reg_errors.len()
    ));
    let tenth = (took.len() / 10).max(1);
    let mean_ms =
        |d: &[Duration]| d.iter().map(|x| x.as_secs_f64()).sum::<f64>() * 1000.0 / d.len().max(1) as f64;
    let first_tenth = mean_ms(&took[..tenth.min(took.len())]);
    let last_tenth = mean_ms(&took[took.len().saturating_sub(tenth)..]);
    let reg_us: Vec<u32> = took.iter().map(|&d| micros(d)).collect();
    watchers.settle(Duration::from_millis(500), Duration::from_secs(20));
    let lc = watchers.total();

    sampler.phase("registered");
    thread::sleep(Duration::from_secs(1));
    // The catalog, as a client sees it.
    let catalog_tools = match Session::open(&target) {
        Ok(mut s) => {
            let n = s.count_tools(n_edges * offer.tools / 100 + 10).map(|n| n as i64).unwrap_or(-1);
            s.close();
            n
        }
        Err(_) => -1,
    };

    let mut out = format!(
        r#"{{"scenario":"mesh","edges":{n_edges},"registered":{},"reg_errors":{},"first_reg_error":{},"reg_total_s":{:.4},"reg_first_tenth_ms":{first_tenth:.4},"reg_last_tenth_ms":{last_tenth:.4},{},"watchers":{},"list_changed_min":{},"list_changed_max":{},"catalog_tools":{catalog_tools}"#,
        took.len(),
        reg_errors.len(),
        opt_json(reg_errors.first()),
        reg_total.as_secs_f64(),
        latency_json(reg_us)
            .replace("\"p", "\"reg_p")
            .replace("\"max_ms", "\"reg_max_ms")
            .replace("\"mean_ms", "\"reg_mean_ms"),
        lc.len(),
        lc.iter().min().copied().unwrap_or(0),
        lc.iter().max().copied().unwrap_or(0),
    );

    if n_sessions > 0 && !took.is_empty() {
        let n_live = n_edges;
        sampler.phase("sessions-open");
        let opened = Arc::new(Barrier::new(n_sessions + 1));
        let go = Arc::new(Barrier::new(n_sessions + 1));
        let t_open = Instant::now();
        let mut handles = Vec::new();
        for i in 0..n_sessions {
            let (target, prefix, opened, go) = (target.clone(), prefix.clone(), opened.clone(), go.clone());
            handles.push(spawn(format!("session-{i}"), move || {
                let session = Session::open(&target);
                opened.wait();
                go.wait();
                let mut s = match session {
                    Ok(s) => s,
                    Err(e) => return (Vec::new(), 1u64, Some(format!("session {i}: cannot open: {e}")), 0),
                };
                let mut us = Vec::with_capacity(calls);
                let (mut errors, mut first) = (0u64, None);
                for k in 0..calls {
                    if Instant::now() > deadline {
                        break;
                    }
                    let edge = edges::edge_name(&prefix, (i + k) % n_live);
                    let text = format!("s{i}c{k}");
                    let expect = format!("{edge}:{text}");
                    let t = Instant::now();
                    let problem = s.call_checked(&format!("{edge}_echo"), &text, &expect);
                    us.push(micros(t.elapsed()));
                    if let Some(p) = problem {
                        errors += 1;
                        first.get_or_insert(format!("session {i} call {k}: {p}"));
                    }
                }
                let lc = s.list_changed;
                s.close();
                (us, errors, first, lc)
            }));
        }
        opened.wait();
        let open_s = t_open.elapsed().as_secs_f64();
        say(format!("{n_sessions} sessions opened in {open_s:.2} s"));
        thread::sleep(Duration::from_millis(500));
        sampler.phase("calls");
        let t_calls = Instant::now();
        go.wait();
        let (mut all, mut errors, mut first, mut failed_open) = (Vec::new(), 0u64, None::<String>, 0u64);
        for h in handles {
            let (us, e, f, _lc) =
                h.join().unwrap_or_else(|_| (Vec::new(), 1, Some("a session panicked".into()), 0));
            if us.is_empty() && e > 0 {
                failed_open += 1;
            }
            all.extend(us);
            errors += e;
            if first.is_none() {
                first = f;
            }
        }
        let wall = t_calls.elapsed().as_secs_f64();
        let n_calls = all.len();
        say(format!("{n_calls} calls in {wall:.2} s, {errors} errors"));
        let _ = write!(
            out,
            r#","transport":{},"sessions":{n_sessions},"sessions_failed":{failed_open},"open_s":{open_s:.3},"calls":{n_calls},"errors":{errors},"first_error":{},"calls_wall_s":{wall:.4},"calls_per_s":{:.1},{}"#,
            json_string(&transport),
            opt_json(first.as_ref()),
            n_calls as f64 / wall,
            latency_json(all)
        );
        sampler.phase("after-calls");
        thread::sleep(Duration::from_millis(500));
    }
    watchers.close();
    let _ = write!(
        out,
        r#","edge_calls":{},"edge_pings":{},"edges_dropped":{},"edge_unexpected":{}"#,
        stats.calls.load(Ordering::Relaxed),
        stats.pings.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.unexpected.load(Ordering::Relaxed)
    );
    pool.stop();
    let _ = write!(out, r#","phases":{}}}"#, sampler.finish());
    println!("{out}");
}

// ---- compare and load ----

/// A caller of one tool: a gateway session, or the stdio server itself.
enum Caller {
    Gateway(Box<Session>),
    Direct(Box<direct::Server>),
    Shared(direct::Caller),
}

impl Caller {
    fn call(&mut self, tool: &str, text: &str) -> Option<String> {
        match self {
            Caller::Gateway(s) => s.call_checked(tool, text, text),
            Caller::Direct(s) => s.call_checked("echo", text),
            Caller::Shared(c) => c.call_checked("echo", text),
        }
    }
}

fn open_caller(spec: &str) -> Caller {
    if let Some(cmd) = spec.strip_prefix("stdio:") {
        let s = direct::Server::start(cmd).unwrap_or_else(|e| fail(format!("{cmd}: {e}")));
        return Caller::Direct(Box::new(s));
    }
    let t = Target::parse(spec).unwrap_or_else(|e| fail(e));
    Caller::Gateway(Box::new(Session::open(&t).unwrap_or_else(|e| fail(format!("{spec}: {e}")))))
}

fn compare(a: &Args) {
    let tool = a.need("tool");
    let calls = a.num("calls", 2000);
    let rounds = a.num("rounds", 5).max(1);
    let warmup = a.num("warmup", 200);
    let mut specs = vec![format!("stdio:{}", a.need("direct"))];
    specs.extend(a.rest.iter().cloned());
    /// (spec, caller, latencies, errors, first error)
    type Row = (String, Caller, Vec<u32>, u64, Option<String>);
    let mut callers: Vec<Row> =
        specs.iter().map(|s| (s.clone(), open_caller(s), Vec::new(), 0, None)).collect();
    let per_round = calls.div_ceil(rounds);
    let mut seq = 0u64;
    for round in 0..=rounds {
        for (_, c, us, errors, first) in callers.iter_mut() {
            let n = if round == 0 { warmup } else { per_round };
            for _ in 0..n {
                seq += 1;
                let text = format!("compare call {seq}");
                let t = Instant::now();
                let problem = c.call(&tool, &text);
                if round > 0 {
                    us.push(micros(t.elapsed()));
                }
                if let Some(p) = problem {
                    *errors += 1;
                    first.get_or_insert(p);
                }
            }
        }
    }
    for (spec, _, us, errors, first) in callers {
        let label = if spec.starts_with("stdio:") { "direct".to_string() } else { spec.clone() };
        println!(
            r#"{{"scenario":"compare","target":{},"calls":{},"errors":{errors},"first_error":{},{}}}"#,
            json_string(&label),
            us.len(),
            opt_json(first.as_ref()),
            latency_json(us)
        );
    }
}

fn load(a: &Args) {
    let tool = a.need("tool");
    let sessions = a.num("sessions", 64).max(1);
    let seconds = a.num("seconds", 5) as u64;
    let warmup = a.num("warmup", 20);
    let spec = a.rest.first().cloned().unwrap_or_else(|| fail("load needs a TARGET"));
    let mut callers: Vec<Caller> = Vec::new();
    if let Some(cmd) = spec.strip_prefix("stdio:") {
        let mut s = direct::Server::start(cmd).unwrap_or_else(|e| fail(format!("{cmd}: {e}")));
        s.share().unwrap_or_else(|e| fail(e));
        for _ in 0..sessions {
            callers.push(Caller::Shared(s.caller()));
        }
        callers.push(Caller::Direct(Box::new(s))); // kept alive, never called
    } else {
        for _ in 0..sessions {
            callers.push(open_caller(&spec));
        }
    }
    let keep = if spec.starts_with("stdio:") { callers.pop() } else { None };
    let go = Arc::new(Barrier::new(sessions + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (i, mut c) in callers.into_iter().enumerate() {
        let (tool, go, stop) = (tool.clone(), go.clone(), stop.clone());
        handles.push(spawn(format!("load-{i}"), move || {
            for k in 0..warmup {
                c.call(&tool, &format!("warm {i} {k}"));
            }
            go.wait();
            let mut us = Vec::new();
            let (mut errors, mut first) = (0u64, None);
            let mut k = 0u64;
            // Bounded by time (stop) and, as a backstop, by count.
            while !stop.load(Ordering::Relaxed) && k < 10_000_000 {
                k += 1;
                let text = format!("load {i} {k}");
                let t = Instant::now();
                if let Some(p) = c.call(&tool, &text) {
                    errors += 1;
                    first.get_or_insert(p);
                }
                us.push(micros(t.elapsed()));
            }
            (us, errors, first)
        }));
    }
    go.wait();
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors, mut first) = (Vec::new(), 0u64, None::<String>);
    for h in handles {
        let (us, e, f) = h.join().unwrap_or_else(|_| (Vec::new(), 1, Some("a session panicked".into())));
        all.extend(us);
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    drop(keep);
    let label = if spec.starts_with("stdio:") { "direct".to_string() } else { spec.clone() };
    println!(
        r#"{{"scenario":"load","target":{},"sessions":{sessions},"calls":{},"errors":{errors},"first_error":{},"wall_s":{wall:.3},"calls_per_s":{:.1},{}}}"#,
        json_string(&label),
        all.len(),
        opt_json(first.as_ref()),
        all.len() as f64 / wall,
        latency_json(all)
    );
}

fn wait_tool(a: &Args) {
    let tool = a.need("tool");
    let limit = Duration::from_secs(a.num("timeout", 30) as u64);
    let spec = a.rest.first().cloned().unwrap_or_else(|| fail("wait-tool needs a TARGET"));
    let t = Target::parse(&spec).unwrap_or_else(|e| fail(e));
    let started = Instant::now();
    let mut s = loop {
        match Session::open(&t) {
            Ok(s) => break s,
            Err(e) if started.elapsed() > limit => fail(format!("{spec}: {e}")),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    };
    let needle = json_string(&tool);
    while started.elapsed() < limit {
        match s.call("tools/list", "{}") {
            Ok(a) if a.text.contains(&needle) => {
                println!(
                    r#"{{"scenario":"wait-tool","found":true,"ms":{:.1}}}"#,
                    started.elapsed().as_secs_f64() * 1e3
                );
                exit(0);
            }
            Ok(_) => {}
            Err(e) => fail(format!("tools/list: {e}")),
        }
        thread::sleep(Duration::from_millis(5));
    }
    eprintln!("loadgen: {tool} not listed within {limit:?}");
    exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = Args::parse(args.get(1..).unwrap_or_default());
    match args.first().map(String::as_str) {
        Some("mesh") => mesh(&parsed),
        Some("compare") => compare(&parsed),
        Some("load") => load(&parsed),
        Some("wait-tool") => wait_tool(&parsed),
        _ => fail("usage: loadgen mesh|compare|load ... (see the top of tools/loadgen/src/main.rs)"),
    }
}
