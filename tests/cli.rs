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
    assert_eq!((code, out.trim()), (0, format!("mcpport {}", env!("CARGO_PKG_VERSION")).as_str()));
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
