#!/usr/bin/env bash
# Interop tests (tests/interop/): real MCP peers from PyPI — the official MCP Python SDK client and
# the original Python mcpport 0.1.4 — and from npm — @modelcontextprotocol/server-everything (stdio)
# behind the gateway, the official TypeScript SDK client and the MCP Inspector CLI — against the
# real mcpport binary, all on 127.0.0.1.
# Usage: bash scripts/interop.sh [pytest args]. Needs python3, and node 20+ with npm. Virtualenvs
# live in .venv-interop/, the npm packages (pinned by tests/interop/package-lock.json) in
# .venv-interop/node/; both are reused once installed; delete that directory to start from scratch.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENVS="$REPO/.venv-interop"
PEER_REQS="$REPO/tests/interop/original-requirements.txt"

cargo build --release --quiet

# venv DIR STAMP PIP-ARGS...: keeps DIR if it was installed with the same STAMP, else installs afresh.
venv() {
    local dir=$1 stamp=$2
    shift 2
    if [[ -f $dir/.installed && "$(cat "$dir/.installed")" == "$stamp" ]]; then
        echo "interop: reusing $dir"
        return
    fi
    echo "interop: creating $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet "$@"
    printf '%s' "$stamp" >"$dir/.installed"
}
# mcp 2.3.0: the first SDK whose client speaks 2026-07-28 (test_modern_sdk.py needs it).
SDK_REQ="mcp==2.3.0"
venv "$VENVS/sdk" "$SDK_REQ pytest" "$SDK_REQ" pytest
venv "$VENVS/peer" "$(cat "$PEER_REQS")" -r "$PEER_REQS"
version() { "$1/bin/python" -m pip list 2>/dev/null | awk -v p="$2" '$1 == p {print p, $2}'; }
echo "interop: SDK client $(version "$VENVS/sdk" mcp), original $(version "$VENVS/peer" mcpport)"

# npm_packages DIR: installs tests/interop/package-lock.json into DIR with `npm ci` (no install
# scripts: none of the packages needs one); kept while the lock file and node are the same.
npm_packages() {
    local dir=$1 stamp
    stamp="$(cat tests/interop/package.json tests/interop/package-lock.json | sha256sum | cut -d' ' -f1) node $(node --version)"
    if [[ -f $dir/.installed && "$(cat "$dir/.installed")" == "$stamp" && -d $dir/node_modules ]]; then
        echo "interop: reusing $dir"
        return
    fi
    echo "interop: installing npm packages into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp tests/interop/package.json tests/interop/package-lock.json "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --update-notifier=false --loglevel=error)
    printf '%s' "$stamp" >"$dir/.installed"
}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "interop: node (20 or newer) and npm are needed for the npm peers" >&2
    exit 1
fi
npm_packages "$VENVS/node"
export MCPPORT_NODE_MODULES="$VENVS/node/node_modules"
npm_version() { node -p "require('$MCPPORT_NODE_MODULES/$1/package.json').version"; }
echo "interop: node $(node --version), server-everything $(npm_version @modelcontextprotocol/server-everything)," \
    "TypeScript SDK $(npm_version @modelcontextprotocol/sdk), Inspector $(npm_version @modelcontextprotocol/inspector)"

export MCPPORT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/mcpport"
export MCPPORT_PEER="$VENVS/peer/bin/mcpport"
export PYTHONDONTWRITEBYTECODE=1
# SIGINT lets pytest stop its processes on the way out; SIGKILL 15 s later if even that hangs.
status=0
timeout -s INT -k 15 600 "$VENVS/sdk/bin/python" -m pytest -p no:cacheprovider --tb=short -rfExX tests/interop "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "interop: FAILED (exit status $status)"
fi
exit $status
