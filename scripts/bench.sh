#!/usr/bin/env bash
# Benchmark: our gateway + register against the original Python mcpport 0.1.4 (gateway + register),
# in the same run on this machine, with the same client for both, everything on 127.0.0.1.
# Prints a Markdown table: start-up, tool-call latency and throughput over legacy SSE (and
# Streamable HTTP for ours), CPU per call, and RSS. See scripts/bench/bench.py for what is measured
# and how, and scripts/bench/client.rs for the client.
#
# Usage: bash scripts/bench.sh [--calls N] [--sessions N] [--conc-calls N] [...]  (bench.py --help)
# Needs python3 and rustc. The original runs from .venv-interop/peer (made by scripts/interop.sh,
# or here, from ../shared/peer/requirements.txt). BENCH_KEEP=1 keeps the logs and raw latencies.
# Takes about a minute.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
PEER_VENV="$REPO/.venv-interop/peer"
PEER_REQS="$REPO/../shared/peer/requirements.txt"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcpport-bench.XXXXXX")"
PIDS="$WORK/pids"
: >"$PIDS"
DRIVER=

# Whatever happens: stop the driver (it stops its processes), then kill by PID anything it
# recorded that is still the same process (same start time), then remove the work directory
# (kept after a failure, for its logs).
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $DRIVER ]] && kill -0 "$DRIVER" 2>/dev/null; then
        kill -TERM "$DRIVER" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$DRIVER" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DRIVER" 2>/dev/null || true
    fi
    local pid start _name now
    while read -r pid start _name; do
        now="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)" || continue
        if [[ -n $now && $now == "$start" ]]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$PIDS"
    if [[ ${BENCH_KEEP:-} == 1 || $status -ne 0 ]]; then
        echo "bench: logs and raw results kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "bench: building mcpport (release) and the client" >&2
cargo build --release --quiet
OURS="$TARGET/release/mcpport"
CLIENT="$TARGET/bench/benchclient"
if [[ ! -x $CLIENT || $REPO/scripts/bench/client.rs -nt $CLIENT ]]; then
    mkdir -p "$TARGET/bench"
    rustc -O --edition 2021 -o "$CLIENT" "$REPO/scripts/bench/client.rs"
fi

# The original, in the same virtualenv (and with the same stamp) as scripts/interop.sh.
if [[ -f $PEER_VENV/.installed && "$(cat "$PEER_VENV/.installed")" == "$(cat "$PEER_REQS")" ]]; then
    echo "bench: reusing $PEER_VENV" >&2
else
    echo "bench: creating $PEER_VENV" >&2
    rm -rf "$PEER_VENV"
    python3 -m venv "$PEER_VENV"
    "$PEER_VENV/bin/python" -m pip install --quiet -r "$PEER_REQS"
    printf '%s' "$(cat "$PEER_REQS")" >"$PEER_VENV/.installed"
fi

# In the background so that the traps run at once on INT/TERM; timeout bounds the whole run.
export PYTHONDONTWRITEBYTECODE=1
timeout -k 10 600 python3 "$REPO/scripts/bench/bench.py" \
    --ours "$OURS" --peer "$PEER_VENV/bin/mcpport" --client "$CLIENT" \
    --work "$WORK" --pidfile "$PIDS" --cmdline "bash scripts/bench.sh${*:+ $*}" "$@" &
DRIVER=$!
wait "$DRIVER"
