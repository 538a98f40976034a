//! A small `log` backend: one line per event on stderr, with a UTC timestamp, the level and the
//! module that logged it; or, with `--log-format json`, one JSON object per line for collectors.
//! Never log a token or an Authorization header through it (the callers' contract; see
//! ARCHITECTURE.md).
//!
//! What a peer sent can reach a line (a client's name, a server's name, a path), so a line can
//! never be forged or flooded: control characters are escaped (a newline in a client's name
//! does not start a line of its own), and a message is cut at `MAX_MESSAGE` bytes. Other crates
//! log only warnings and errors here: at debug and trace they would log what crosses the wire
//! (the WebSocket library logs whole frames and upgrade requests, headers and all).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger at `level`, as text or JSON lines. Safe to call more than once.
pub(crate) fn init(level: LevelFilter, json: bool) {
    JSON.store(json, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses the original's level names (DEBUG, INFO, WARNING, ERROR, CRITICAL) and `trace`/`off`,
/// in any case.
pub(crate) fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warn" | "warning" => LevelFilter::Warn,
        "error" | "critical" => LevelFilter::Error,
        "off" => LevelFilter::Off,
        _ => return None,
    })
}

/// The longest message written; the rest is cut, with a note of how much.
const MAX_MESSAGE: usize = 4096;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let ours = metadata.target().starts_with("mcpport");
        metadata.level() <= log::max_level() && (ours || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target().strip_prefix("mcpport::").unwrap_or(record.target());
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let now = timestamp(SystemTime::now());
        // Escaped first, then cut: what is cut is what is written (JSON doubles at most `\` and
        // `"`, so its cut is half as long).
        let msg = escape(&record.args().to_string()).into_owned();
        let line = if JSON.load(Ordering::Relaxed) {
            let msg = cut(msg, MAX_MESSAGE / 2);
            let fields = serde_json::json!({"ts": now, "level": level.trim(), "target": target, "msg": msg});
            format!("{fields}\n")
        } else {
            format!("{now} {level} {target}: {}\n", cut(msg, MAX_MESSAGE))
        };
        // One write call per line, so lines from different threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Cuts a message at `max` bytes (on a character boundary), saying how much was left.
fn cut(mut msg: String, max: usize) -> String {
    if msg.len() > max {
        let mut end = max;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let dropped = msg.len() - end;
        msg.truncate(end);
        msg.push_str(&format!("… ({dropped} more bytes)"));
    }
    msg
}

/// Escapes control characters, so that one event is one line whatever a peer put in it.
fn escape(msg: &str) -> std::borrow::Cow<'_, str> {
    if !msg.chars().any(char::is_control) {
        return msg.into();
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// RFC 3339 UTC time with milliseconds, from the civil-from-days algorithm (no date crate).
pub(crate) fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn peer_text_cannot_forge_or_flood_a_line() {
        assert_eq!(
            escape("evil\n2026-01-01T00:00:00Z INFO forged"),
            "evil\\n2026-01-01T00:00:00Z INFO forged"
        );
        assert_eq!(escape("a\u{1b}[31mred\u{7}"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
        let long = cut("é".repeat(4 * 1024 * 1024), MAX_MESSAGE);
        assert!(long.len() < MAX_MESSAGE + 64 && long.ends_with("more bytes)"), "{}", long.len());
    }

    #[test]
    fn other_crates_say_only_warnings_and_errors() {
        log::set_max_level(LevelFilter::Trace);
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(LOGGER.enabled(&meta("mcpport::gateway", Level::Trace)));
        assert!(!LOGGER.enabled(&meta("tungstenite::protocol", Level::Trace)));
        assert!(!LOGGER.enabled(&meta("rustls::conn", Level::Debug)));
        assert!(LOGGER.enabled(&meta("rustls::conn", Level::Warn)));
    }

    #[test]
    fn formats_utc_timestamps() {
        let at = |s: u64| timestamp(UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(at(1_795_993_199_000), "2026-11-29T22:59:59.000Z");
    }

    #[test]
    fn parses_the_originals_level_names() {
        assert_eq!(parse_level("WARNING"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("critical"), Some(LevelFilter::Error));
        assert_eq!(parse_level("Debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level("loud"), None);
    }
}
