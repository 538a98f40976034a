#!/usr/bin/env bash
# Every conformance combination mcpport tracks, one after the other, through
# scripts/conformance.sh (which installs what it needs under .conformance/):
#   0.1.16          the active suite at its default version (stateful, 2025-11-25 wire)
#   0.2.0-alpha.12  --requirements 2025-11-25 (the legacy era, scored)
#   0.2.0-alpha.12  --requirements 2026-07-28 (the stateless era, scored)
# each against /servers/test/mcp and /mcp, with the fixture in its legacy era (it answers
# initialize); then all three again with the fixture in its modern era (a 2026-07-28-only
# edge, rows labelled -modern: legacy clients reach it through the gateway's translation). The
# release binary is built once. Prints one line per combination and endpoint; exit status
# non-zero if any scored run failed on either endpoint, or if, with the modern fixture and the
# 2026-07-28 requirements, any of the not-scored scenarios (the tasks extension's, the pending
# ones) failed: that fixture offers everything they ask for.
#
# Usage: bash scripts/conformance-all.sh
# Environment: MCPPORT_BIN as for conformance.sh.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ -z ${MCPPORT_BIN:-} ]]; then
    cargo build --release --quiet
    export MCPPORT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/mcpport"
fi
# version:requirements:fixture era
PLAN=("0.1.16::legacy" "0.2.0-alpha.12:2025-11-25:legacy" "0.2.0-alpha.12:2026-07-28:legacy"
    "0.1.16::modern" "0.2.0-alpha.12:2025-11-25:modern" "0.2.0-alpha.12:2026-07-28:modern")
SUITES="$REPO/.conformance"
status=0
lines=()
for entry in "${PLAN[@]}"; do
    IFS=: read -r version reqs era <<<"$entry"
    label="$version${reqs:+-$reqs}"
    [[ $era == modern ]] && label="$label-modern"
    log="$SUITES/conformance-$label.log"
    mkdir -p "$SUITES"
    CONFORMANCE_VERSION=$version CONFORMANCE_REQUIREMENTS=$reqs CONFORMANCE_FIXTURE=$era \
        bash scripts/conformance.sh >"$log" 2>&1 || true
    req_file="$SUITES/suite-$version/node_modules/@modelcontextprotocol/conformance/requirements/$reqs.yaml"
    for endpoint in per-server aggregated; do
        out=0
        summary=$(python3 tests/conformance/summary.py "$SUITES/runs/$label/$endpoint/results" \
            ${reqs:+"$req_file"}) || out=$?
        [[ $out -eq 0 ]] || status=1
        if [[ $label == *-2026-07-28-modern ]] && ! grep -Eq 'not scored by [^:]*: ([0-9]+) of \1 other' <<<"$summary"; then
            status=1
        fi
        lines+=("$label $endpoint: $(grep -- '^  -- ' <<<"$summary" | sed 's/^  -- //' | paste -sd ';')")
    done
done
printf '%s\n' "${lines[@]}"
exit $status
