#!/usr/bin/env bash
# Interop tests (tests/interop/): real MCP peers from PyPI — the official MCP Python SDK client and
# the original Python mcpport 0.1.4 — against the real mcpport binary, all on 127.0.0.1.
# Usage: bash scripts/interop.sh [pytest args]. Virtualenvs live in .venv-interop/ and are reused
# once their packages are installed; delete that directory to start from scratch.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENVS="$REPO/.venv-interop"
PEER_REQS="$REPO/../shared/peer/requirements.txt"

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
venv "$VENVS/sdk" "mcp pytest" mcp pytest
venv "$VENVS/peer" "$(cat "$PEER_REQS")" -r "$PEER_REQS"
version() { "$1/bin/python" -m pip list 2>/dev/null | awk -v p="$2" '$1 == p {print p, $2}'; }
echo "interop: SDK client $(version "$VENVS/sdk" mcp), original $(version "$VENVS/peer" mcpport)"

export MCPPORT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/mcpport"
export MCPPORT_PEER="$VENVS/peer/bin/mcpport"
export PYTHONDONTWRITEBYTECODE=1
# SIGINT lets pytest stop its processes on the way out; SIGKILL 15 s later if even that hangs.
status=0
timeout -s INT -k 15 600 "$VENVS/sdk/bin/python" -m pytest -p no:cacheprovider --tb=short -rfE tests/interop "$@" || status=$?
if [[ $status -ne 0 ]]; then
    echo "interop: FAILED (exit status $status)"
fi
exit $status
