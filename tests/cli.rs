//! The command line: help for every subcommand, the version, and bad flags (exit status 2).

use std::process::Command;

use crate::util::BIN;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run mcpport");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let line = out.trim();
    let details = line.strip_prefix(&format!("mcpport {} (", env!("CARGO_PKG_VERSION"))).expect(line);
    let fields: Vec<&str> = details.trim_end_matches(')').split(", ").collect();
    assert_eq!(fields.len(), 3, "revision, target, profile: {line}");
    assert!(fields[0] == "unknown" || fields[0].chars().take(12).all(|c| c.is_ascii_hexdigit()), "{line}");
    assert!(fields[1].contains("-linux-"), "a target triple: {line}");
    assert!(["debug", "release"].contains(&fields[2]), "{line}");
    for (args, needle) in [
        (&["--help"][..], "Commands:"),
        (&["gateway", "--help"], "--timeout-run-tool"),
        (&["g", "-h"], "--sse-path"),
        (&["register", "--help"], "--gateway-url"),
        (&["demo", "--help"], "Ctrl-C"),
        (&["sample-server", "--help"], "system_info"),
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains(needle), "{args:?}: {out}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    for (args, needle) in [
        (&[][..], "a command is needed"),
        (&["fly"], "unknown command"),
        (&["gateway", "--port", "http"], "--port"),
        (&["gateway", "--nope"], "--nope"),
        (&["gateway", "--timeout-rpc", "0"], "--timeout-rpc"),
        (&["register"], "--stdio"),
        (&["register", "--stdio", "cat", "--server-name", "bad name"], "--server-name"),
        (&["register", "--stdio", "cat", "--gateway-url", "http://x"], "ws://"),
        (&["gateway", "--log-level", "LOUD"], "--log-level"),
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle) && err.contains("--help"), "{args:?}: {err}");
    }
}

/// What a newcomer mistypes gets a message that says how to do it right (issue 12).
#[test]
fn newcomer_mistakes_say_what_to_do() {
    for (args, needles) in [
        (&["gateway", "--port", "70000"][..], &["--port", "1-65535", "Try 'mcpport gateway --help'"][..]),
        (&["gateway", "--timeout-run-tool", "0"], &["more than 0 and at most 86400"]),
        (&["g", "--nope"], &["Try 'mcpport gateway --help'"]),
        (&["register", "--port", "x", "--stdio", "cat"], &["1-65535", "Try 'mcpport register --help'"]),
        (&["demo", "--port", "99999"], &["1-65535", "Try 'mcpport demo --help'"]),
        (
            &["register", "--stdio", "npx", "-y", "@scope/server"],
            &["'-y'", "quote the whole command", "--stdio \"npx ...\""],
        ),
        (&["register", "--stdio", "node", "server.js"], &["server.js", "quote the whole command"]),
        (&["fly"], &["Try 'mcpport --help'"]),
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
    }
    let (_, out, _) = run(&["gateway", "--help"]);
    assert!(out.contains("127.0.0.1:9108"), "{out}");
}
