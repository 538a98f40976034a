#!/usr/bin/env bash
# The status page and CORS in a real browser: Debian's chromium, headless, driven over the
# DevTools protocol by tests/browser/driver.py (Python's standard library only). The driver starts
# a gateway, registers the built-in sample server, serves cross-origin pages, and checks that the
# page lists the live server, that a tool called from the page answers, that a page on an
# --allow-origin origin can use /mcp through CORS while a page on another origin cannot, and that
# with --auth-token the page asks for the token and then works. Everything it starts listens on
# 127.0.0.1 with a port the OS picks, and is stopped by PID.
#
# Usage: bash scripts/browser-test.sh
# Environment:
#   MCPPORT_BIN  use this mcpport binary instead of building target/release/mcpport
#   CHROMIUM     use this browser instead of Debian's chromium (installed when missing)
# Logs, the gateway's and Chromium's, and screenshots of the page are left in .browser-test/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="$REPO/.browser-test"

say() { echo "browser-test: $*"; }
die() {
    echo "browser-test: error: $*" >&2
    exit 2
}
# shellcheck source=lib.sh
source "$REPO/scripts/lib.sh"

if [[ -n ${MCPPORT_BIN:-} ]]; then
    [[ -x $MCPPORT_BIN ]] || die "MCPPORT_BIN=$MCPPORT_BIN is not an executable"
else
    cargo build --release --quiet
    MCPPORT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/mcpport"
fi
if [[ -z ${CHROMIUM:-} ]]; then
    apt_install chromium
    CHROMIUM=$(command -v chromium) || die "no chromium on the PATH after installing it"
fi
command -v python3 >/dev/null || apt_install python3
say "$("$CHROMIUM" --version 2>/dev/null | head -n 1), $("$MCPPORT_BIN" --version 2>&1)"

rm -rf "$OUT"
mkdir -p "$OUT"
# The driver has its own deadlines; this one is for a driver that hangs anyway.
status=0
timeout -k 10 300 python3 "$REPO/tests/browser/driver.py" "$MCPPORT_BIN" "$CHROMIUM" "$OUT" || status=$?
[[ $status -eq 124 || $status -eq 137 ]] && say "the driver timed out"
[[ $status -ne 0 ]] && say "FAILED; logs and screenshots in ${OUT#"$REPO"/}/"
exit $status
