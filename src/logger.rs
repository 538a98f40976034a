//! A small `log` backend: one line per event on stderr, with a UTC timestamp, the level and the
//! module that logged it; or, with `--log-format json`, one JSON object per line for collectors.
//! Never log a token or an Authorization header through it (the callers' contract; see
//! ARCHITECTURE.md).

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

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
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
        let line = if JSON.load(Ordering::Relaxed) {
            let fields = serde_json::json!({"ts": now, "level": level.trim(), "target": target, "msg": record.args().to_string()});
            format!("{fields}\n")
        } else {
            format!("{now} {level} {target}: {}\n", record.args())
        };
        // One write call per line, so lines from different threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
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
