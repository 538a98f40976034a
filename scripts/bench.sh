#!/usr/bin/env bash
# Benchmark: our gateway + register against the original Python mcpport 0.1.4 (gateway + register),
# in the same run on this machine, everything on 127.0.0.1, and the scale scenarios of issue 11
# (thousands of edges and sessions, latency added over the direct floor, calls/s, idle RSS) for the
# glibc release build and the static x86_64 musl build. Writes BENCHMARKS.md (and prints it).
#
#   scripts/bench/bench.py   start-up, latency, throughput, CPU and RSS, ours vs the original, with
#                            the same client (scripts/bench/client.rs) for both
#   scripts/bench/scale.py   the scale scenarios, driving tools/loadgen (fake edges, sessions, the
#                            direct stdio floor)
#   scripts/bench/edges.py   one register fronting one server against ten (stdio, Streamable HTTP,
#                            legacy SSE), its idle RSS (issue 21)
#   scripts/bench/notes.md   the hand-written notes appended to BENCHMARKS.md (why a target is missed)
#
# Usage: bash scripts/bench.sh [bench.py options]   (bench.py --help; scale.py takes BENCH_SCALE_ARGS)
# Needs python3 and cargo; installs the rest itself (the musl target through build-static.sh, the
# original into .venv-interop/peer from tests/interop/original-requirements.txt). Not run by CI.
# BENCH_NO_MUSL=1 skips the static build, BENCH_OPT_LEVELS=1 also builds opt-level z and s variants
# and compares their CPU per call (about 4 more minutes), BENCH_KEEP=1 keeps the logs and raw JSON,
# BENCH_OUT=FILE writes elsewhere than BENCHMARKS.md. Takes about 10 minutes, 15 at most.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
PEER_VENV="$REPO/.venv-interop/peer"
PEER_REQS="$REPO/tests/interop/original-requirements.txt"
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

STARTED=$EPOCHREALTIME
echo "bench: building mcpport (release), the client and the load generator" >&2
cargo build --release --quiet
OURS="$TARGET/release/mcpport"
CLIENT="$TARGET/bench/benchclient"
if [[ ! -x $CLIENT || $REPO/scripts/bench/client.rs -nt $CLIENT ]]; then
    mkdir -p "$TARGET/bench"
    rustc -O --edition 2021 -o "$CLIENT" "$REPO/scripts/bench/client.rs"
fi
cargo build --profile bench-tools -p loadgen --quiet
LOADGEN="$TARGET/bench-tools/loadgen"
MUSL=
if [[ ${BENCH_NO_MUSL:-} != 1 ]]; then
    echo "bench: building the static x86_64 musl binary (scripts/build-static.sh)" >&2
    bash "$REPO/scripts/build-static.sh" x86_64-unknown-linux-musl >"$WORK/build-static.log" 2>&1 ||
        { tail -20 "$WORK/build-static.log" >&2; exit 1; }
    MUSL="$TARGET/x86_64-unknown-linux-musl/release/mcpport"
fi
OPT_BINS=()
if [[ ${BENCH_OPT_LEVELS:-} == 1 ]]; then
    for level in z s; do
        echo "bench: building an opt-level=$level variant" >&2
        CARGO_PROFILE_RELEASE_OPT_LEVEL=$level cargo build --release --quiet --target-dir "$TARGET/opt-$level"
        OPT_BINS+=("$level=$TARGET/opt-$level/release/mcpport")
    done
fi

# Thousands of edges: each link holds 3 descriptors in the gateway. Take what the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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

# In the background so that the traps run at once on INT/TERM; timeout bounds each driver.
export PYTHONDONTWRITEBYTECODE=1
timeout -k 10 300 python3 "$REPO/scripts/bench/bench.py" \
    --ours "$OURS" --peer "$PEER_VENV/bin/mcpport" --client "$CLIENT" \
    --work "$WORK" --pidfile "$PIDS" --cmdline "bash scripts/bench.sh${*:+ $*}" "$@" >"$WORK/compare.md" &
DRIVER=$!
wait "$DRIVER"
# shellcheck disable=SC2086  # BENCH_SCALE_ARGS is a list of options
timeout -k 10 720 python3 "$REPO/scripts/bench/scale.py" \
    --ours "$OURS" ${MUSL:+--musl "$MUSL"} --peer "$PEER_VENV/bin/mcpport" --loadgen "$LOADGEN" \
    --work "$WORK" --pidfile "$PIDS" ${OPT_BINS[@]:+--opt-bins "${OPT_BINS[@]}"} ${BENCH_SCALE_ARGS:-} \
    >"$WORK/scale.md" &
DRIVER=$!
wait "$DRIVER"
timeout -k 10 300 python3 "$REPO/scripts/bench/edges.py" \
    --ours "$OURS" ${MUSL:+--musl "$MUSL"} --work "$WORK" --pidfile "$PIDS" >"$WORK/edges.md" &
DRIVER=$!
wait "$DRIVER"
DRIVER=

OUT="${BENCH_OUT:-$REPO/BENCHMARKS.md}"
mem="$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
cpu="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
took=$(awk -v a="$STARTED" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
{
    echo "# Benchmarks"
    echo
    echo "Written by \`bash scripts/bench.sh${*:+ $*}\` (scripts/bench/); the notes at the end are scripts/bench/notes.md."
    echo "Regenerate rather than edit. Everything ran on 127.0.0.1."
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- . ':!BENCHMARKS.md' 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- machine: nproc $(nproc), $cpu, $mem memory, Linux $(uname -r), descriptor limit $(ulimit -n) (hard $(ulimit -Hn))"
    echo "- toolchain: $(rustc --version); mcpport $(stat -c %s "$OURS") bytes (glibc)${MUSL:+, $(stat -c %s "$MUSL") bytes (x86_64 musl, static)}"
    echo "- whole run: $took s"
    echo
    echo "## Scale (issue 11)"
    echo
    cat "$WORK/scale.md"
    echo
    echo "## Edges with many servers (issue 21)"
    echo
    cat "$WORK/edges.md"
    echo
    echo "## Against the original Python mcpport 0.1.4"
    echo
    # bench.py's "key: value" header lines as a list
    sed -E 's/^(command|date|machine|ours|client): +/- \1: /' "$WORK/compare.md"
    echo
    cat "$REPO/scripts/bench/notes.md"
} >"$OUT"
cat "$OUT"
echo "bench: wrote $OUT" >&2
