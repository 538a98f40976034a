#!/usr/bin/env bash
# The official MCP conformance suite (npm @modelcontextprotocol/conformance, server scenarios)
# against mcpport: a gateway on 127.0.0.1 (a port the OS picks), with our stdio fixture server
# (tests/conformance/fixture_server.py, official MCP Python SDK) registered as `test` through
# `mcpport register`. Two runs, each with its own gateway:
#   per-server  http://127.0.0.1:PORT/servers/test/mcp   the server as it is
#   aggregated  http://127.0.0.1:PORT/mcp                 the gateway with --aggregate-names bare,
#                                                        so that the names are the server's own
# Each run is the suite's active suite at its default spec version, or, with
# CONFORMANCE_REQUIREMENTS, the scenarios that revision requires (`--requirements REV`, at that
# revision's wire: 2026-07-28 is the stateless era), scored against the suite's own
# requirements/REV.yaml. Exit status: non-zero if a (scored) scenario fails on the per-server
# endpoint (the aggregated run is reported, not scored). scripts/conformance-all.sh runs every
# combination the project tracks.
#
# Usage: bash scripts/conformance.sh [suite server options, e.g. --scenario tools-list --verbose]
# Environment:
#   CONFORMANCE_VERSION       suite version from npm (default 0.1.16, npm's `latest`)
#   CONFORMANCE_REQUIREMENTS  a revision (2025-11-25, 2026-07-28): run and score its requirements
#                             (needs a 0.2 suite, e.g. CONFORMANCE_VERSION=0.2.0-alpha.12)
#   CONFORMANCE_RUNS          which runs: "per-server aggregated" (default), or one of them
#   CONFORMANCE_FIXTURE       the fixture's era: legacy (default: it answers initialize, and asks
#                             the legacy way) or modern (2026-07-28 only: it refuses initialize,
#                             so the gateway probes it with server/discover; input_required)
#   CONFORMANCE_SERVER        a stdio server command to register instead of the fixture (any
#                             server the suite's scenarios describe; CONFORMANCE_FIXTURE is then
#                             not used)
#   MCPPORT_BIN          use this mcpport binary instead of building target/release/mcpport
#
# Needs network access the first time: everything it installs goes under .conformance/ (node 22
# from the npm package `node`, the suite, a Python venv with `mcp`) and is reused afterwards;
# delete .conformance/ to start from scratch. Logs and results of the last run of each endpoint
# are in .conformance/runs/SUITE[-REQUIREMENTS]/ENDPOINT/ (gateway.log, register.log, suite.log,
# results/*/checks.json).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CONF="$REPO/.conformance"
SUITE_VERSION="${CONFORMANCE_VERSION:-0.1.16}"
RUNS="${CONFORMANCE_RUNS:-per-server aggregated}"
FIXTURE="$REPO/tests/conformance/fixture_server.py"
SUMMARY="$REPO/tests/conformance/summary.py"
SUITE_ARGS=("$@")
REQUIREMENTS="${CONFORMANCE_REQUIREMENTS:-}"
[[ -n $REQUIREMENTS ]] && SUITE_ARGS=(--requirements "$REQUIREMENTS" "${SUITE_ARGS[@]}")
FIXTURE_ERA="${CONFORMANCE_FIXTURE:-legacy}"
[[ $FIXTURE_ERA == legacy || $FIXTURE_ERA == modern ]] || die "CONFORMANCE_FIXTURE must be legacy or modern"
# Each combination keeps its own logs (a modern fixture's runs are labelled so).
LABEL="$SUITE_VERSION${REQUIREMENTS:+-$REQUIREMENTS}"
[[ $FIXTURE_ERA == modern ]] && LABEL="$LABEL-modern"

say() { echo "conformance: $*"; }
die() {
    echo "conformance: error: $*" >&2
    exit 2
}
started=$SECONDS

# ---- everything this script starts is stopped on the way out, by PID ----
PIDS=()
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_all() {
    local pid i
    # Newest first: `register` (which stops its server's process group), then the gateway.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        stop_pid "$pid"
    done
    PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build ----
if [[ -n ${MCPPORT_BIN:-} ]]; then
    [[ -x $MCPPORT_BIN ]] || die "MCPPORT_BIN=$MCPPORT_BIN is not an executable"
    say "using $MCPPORT_BIN"
else
    cargo build --release --quiet
    MCPPORT_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/mcpport"
fi

# ---- tools under .conformance/, each reused once installed with the same stamp ----
mkdir -p "$CONF"
fresh() { # fresh DIR STAMP: true when DIR must be (re)installed
    [[ -f $1/.installed && "$(cat "$1/.installed")" == "$2" ]] && return 1
    rm -rf "$1"
    mkdir -p "$1"
}

NODE_DIR="$CONF/node22"
if fresh "$NODE_DIR" "node@22"; then
    say "installing node 22 (npm package node@22) into $NODE_DIR"
    timeout 600 npm install --prefix "$NODE_DIR" --no-save --no-audit --no-fund --loglevel=error node@22
    printf '%s' "node@22" >"$NODE_DIR/.installed"
fi
NODE="$NODE_DIR/node_modules/.bin/node"
[[ "$("$NODE" --version)" == v22.* ]] || die "$NODE is not node 22 ($("$NODE" --version))"
export PATH="$NODE_DIR/node_modules/.bin:$PATH" # npm and the suite run on node 22

SUITE_DIR="$CONF/suite-$SUITE_VERSION"
if fresh "$SUITE_DIR" "$SUITE_VERSION"; then
    say "installing @modelcontextprotocol/conformance@$SUITE_VERSION into $SUITE_DIR"
    timeout 600 npm install --prefix "$SUITE_DIR" --no-audit --no-fund --loglevel=error \
        "@modelcontextprotocol/conformance@$SUITE_VERSION"
    printf '%s' "$SUITE_VERSION" >"$SUITE_DIR/.installed"
fi
# What `npx @modelcontextprotocol/conformance` runs, without npx's registry look-up each time.
SUITE_BIN="$SUITE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
[[ -f $SUITE_BIN ]] || die "the suite is not installed in $SUITE_DIR (delete it and retry)"
REQ_FILE=""
if [[ -n $REQUIREMENTS ]]; then
    REQ_FILE="$SUITE_DIR/node_modules/@modelcontextprotocol/conformance/requirements/$REQUIREMENTS.yaml"
    [[ -f $REQ_FILE ]] || die "suite $SUITE_VERSION has no requirements for $REQUIREMENTS"
fi

VENV="$CONF/venv"
VENV_REQ="mcp>=2,<3"
if fresh "$VENV" "$VENV_REQ"; then
    say "creating $VENV with $VENV_REQ"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$VENV_REQ"
    printf '%s' "$VENV_REQ" >"$VENV/.installed"
fi
PY="$VENV/bin/python"
say "node $("$NODE" --version), conformance $SUITE_VERSION," \
    "$("$PY" -m pip list --disable-pip-version-check 2>/dev/null | awk '$1 == "mcp" {print "mcp " $2}')," \
    "mcpport $("$MCPPORT_BIN" --version 2>&1 | awk '{print $2}'); build and setup took $((SECONDS - started)) s"
export PYTHONDONTWRITEBYTECODE=1

# ---- one run: gateway, fixture, suite ----
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    say "gave up after $limit s waiting for $what"
    return 1
}
alive() { kill -0 "$1" 2>/dev/null; }
registered() { # the gateway has the server, and has finished the handshake with it
    curl -s --max-time 2 "http://127.0.0.1:$PORT/health" | grep -q '"servers":1[,}]' \
        && grep -q 'server test (.*): registered from' "$OUT/gateway.log"
}

run() { # run NAME PATH [GATEWAY ARGS...]
    local name=$1 path=$2 t0=$SECONDS
    shift 2
    stop_all # whatever an earlier run that failed half-way left running
    OUT="$CONF/runs/$LABEL/$name"
    rm -rf "$OUT"
    mkdir -p "$OUT/results"

    "$MCPPORT_BIN" gateway --host 127.0.0.1 --port 0 "$@" 2>"$OUT/gateway.log" &
    local gateway=$!
    PIDS+=("$gateway")
    wait_for 10 "the gateway to listen" grep -q 'listening on http://127.0.0.1:[0-9]' "$OUT/gateway.log" \
        || { alive "$gateway" || say "the gateway exited"; say "see ${OUT#"$REPO"/}/gateway.log"; return 1; }
    PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$OUT/gateway.log" | head -n 1)

    local cmd=${CONFORMANCE_SERVER:-}
    if [[ -z $cmd ]]; then
        cmd="$(printf '%q ' "$PY" "$FIXTURE" "--$FIXTURE_ERA")"
        cmd=${cmd% }
    fi
    "$MCPPORT_BIN" register --stdio "$cmd" --gateway-url "ws://127.0.0.1:$PORT/mcp/register" \
        --server-name test 2>"$OUT/register.log" &
    PIDS+=("$!")
    wait_for 30 "the fixture to register" registered \
        || { say "see ${OUT#"$REPO"/}/register.log and gateway.log"; return 1; }

    local url="http://127.0.0.1:$PORT$path"
    echo "$url" >"$OUT/url"
    say "[$name] running the suite against $url"
    local status=0
    timeout -k 10 1200 "$NODE" "$SUITE_BIN" server --url "$url" -o "$OUT/results" "${SUITE_ARGS[@]}" \
        >"$OUT/suite.log" 2>&1 || status=$?
    [[ $status -eq 124 || $status -eq 137 ]] && say "[$name] the suite timed out"
    stop_all
    say "[$name] done in $((SECONDS - t0)) s (suite exit status $status); logs in ${OUT#"$REPO"/}/"
}

# ---- the runs ----
status=0
for name in $RUNS; do
    case $name in
        per-server) run per-server /servers/test/mcp || true ;;
        aggregated) run aggregated /mcp --aggregate-names bare || true ;;
        *) die "unknown run $name in CONFORMANCE_RUNS (per-server, aggregated)" ;;
    esac
done

echo
for name in $RUNS; do
    scored=""
    [[ $name == per-server ]] && scored=" (scored)"
    echo "== $name$scored, suite $LABEL: $(cat "$CONF/runs/$LABEL/$name/url" 2>/dev/null || echo "(did not start)")"
    if ! python3 "$SUMMARY" "$CONF/runs/$LABEL/$name/results" ${REQ_FILE:+"$REQ_FILE"}; then
        [[ $name == per-server ]] && status=1
    fi
    echo
done
say "total time $((SECONDS - started)) s"
if [[ $status -ne 0 ]]; then
    say "FAILED: scenarios failed on the per-server endpoint"
fi
exit $status
