#!/usr/bin/env bash
# End-to-end smoke test of a static cross-built mcpport under qemu-user, on 127.0.0.1 only.
#
# Usage: bash scripts/qemu-smoke.sh [TARGET]
#   TARGET: aarch64-unknown-linux-musl (default), armv7-unknown-linux-gnueabihf, or
#   x86_64-unknown-linux-musl (runs natively, no qemu).
#
# Builds target/TARGET/release/mcpport with scripts/build-static.sh if it is missing
# (MCPPORT_REBUILD=1 builds it anyway), installs qemu-user-static with apt-get if needed, then:
#   1. BIN --version under qemu;
#   2. the emulated gateway (gateway --host 127.0.0.1 --port 0, port taken from its log);
#   3. the emulated register, whose stdio child (BIN sample-server) also runs under qemu, registered
#      as "pi"; waits for /health to say "servers":1;
#   4. from the host, as an MCP client over Streamable HTTP with curl: initialize (Mcp-Session-Id),
#      notifications/initialized, tools/list, tools/call pi_echo and pi_system_info;
#   5. SIGTERM to register and gateway: both must exit, and the child must be gone.
# Every wait is bounded (MCPPORT_SMOKE_TIMEOUT seconds, default 60: emulation is slow). Everything
# it started is stopped by PID on exit. Prints PASS/FAIL lines; exits 1 if any check failed.
# MCPPORT_SMOKE_KEEP=1 keeps the logs directory.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

TARGET=${1:-aarch64-unknown-linux-musl}
TIMEOUT=${MCPPORT_SMOKE_TIMEOUT:-60}
REQ_TIMEOUT=30
case $TARGET in
    aarch64-unknown-linux-musl) QEMU_NAME=qemu-aarch64-static ;;
    armv7-unknown-linux-gnueabihf) QEMU_NAME=qemu-arm-static ;;
    x86_64-unknown-linux-musl) QEMU_NAME= ;;
    *) echo "qemu-smoke: unknown target '$TARGET'" >&2; exit 2 ;;
esac
BIN="${CARGO_TARGET_DIR:-$REPO/target}/$TARGET/release/mcpport"

T0=$EPOCHREALTIME
FAILS=0
CHECKS=0
GW_PID=
REG_PID=
CHILD_PID=
SERVER_PID=
WORK=

elapsed() { awk -v a="${1:-$T0}" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
pass() { CHECKS=$((CHECKS + 1)); echo "PASS $*"; }
fail() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL $*"; }
# fatal MSG: a failure the rest cannot go on without.
fatal() { fail "$*"; exit 1; }
say() { echo "qemu-smoke: $*"; }

# ---- Tools -----------------------------------------------------------------------------------
die() { echo "qemu-smoke: error: $*" >&2; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need=()
[[ -n $QEMU_NAME ]] && need+=(qemu-user-static)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
[[ ${#need[@]} -gt 0 ]] && apt_install "${need[@]}"

RUN=()
if [[ -n $QEMU_NAME ]]; then
    qemu="$(command -v "$QEMU_NAME")" || { echo "qemu-smoke: $QEMU_NAME not found" >&2; exit 1; }
    RUN=("$qemu")
fi

if [[ ! -x $BIN || ${MCPPORT_REBUILD:-0} == 1 ]]; then
    say "building $TARGET"
    bash "$REPO/scripts/build-static.sh" "$TARGET"
fi
[[ -x $BIN ]] || { echo "qemu-smoke: no binary at $BIN" >&2; exit 1; }

# ---- Clean-up --------------------------------------------------------------------------------
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }
# wait_exit PID SECS: waits (bounded) for our background PID to exit; sets EXIT_STATUS.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    EXIT_STATUS=
    while alive "$pid" && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    EXIT_STATUS=0
    wait "$pid" 2>/dev/null || EXIT_STATUS=$?
    return 0
}
stop() {
    local pid=$1
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_exit "$pid" 15 || { kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop "$REG_PID"
    # register runs its child in a process group of its own and stops it itself; this is for
    # the case where register had to be killed before it could.
    for pid in $CHILD_PID $SERVER_PID; do
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    stop "$GW_PID"
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $rc -ne 0 || $FAILS -gt 0 ]]; then
            for f in "$WORK"/gateway.log "$WORK"/register.log; do
                [[ -f $f ]] || continue
                echo "---- last lines of $(basename "$f")"
                tail -n 25 "$f"
            done
        fi
        if [[ ${MCPPORT_SMOKE_KEEP:-0} == 1 ]]; then say "logs kept in $WORK"; else rm -rf "$WORK"; fi
    fi
    if [[ $rc -eq 0 && $FAILS -gt 0 ]]; then rc=1; fi
    if [[ $rc -eq 0 ]]; then
        echo "PASS smoke $TARGET: $CHECKS checks in $(elapsed) s"
    else
        echo "FAIL smoke $TARGET: $FAILS of $CHECKS checks failed, exit status $rc ($(elapsed) s)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcpport-qemu-smoke.XXXXXX")"

say "target $TARGET, binary $BIN ($(stat -c %s "$BIN") bytes), runner ${RUN[*]:-native}"

# ---- 1. --version ----------------------------------------------------------------------------
want_version="mcpport $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
t=$EPOCHREALTIME
got_version="$(timeout "$TIMEOUT" "${RUN[@]}" "$BIN" --version 2>&1)" || true
if [[ $got_version == "$want_version ("* ]]; then
    pass "--version: $got_version ($(elapsed "$t") s)"
else
    fail "--version: expected '$want_version', got '$got_version'"
fi

# ---- 2. gateway ------------------------------------------------------------------------------
t=$EPOCHREALTIME
"${RUN[@]}" "$BIN" gateway --host 127.0.0.1 --port 0 >"$WORK/gateway.log" 2>&1 </dev/null &
GW_PID=$!
PORT=
deadline=$((SECONDS + TIMEOUT))
while [[ -z $PORT ]]; do
    PORT="$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$WORK/gateway.log" | head -n 1 | sed 's/.*://')" || true
    [[ -n $PORT ]] && break
    alive "$GW_PID" || fatal "gateway exited before listening"
    ((SECONDS < deadline)) || fatal "gateway did not log 'listening on http://127.0.0.1:PORT' within $TIMEOUT s"
    sleep 0.1
done
BASE="http://127.0.0.1:$PORT"
pass "gateway (pid $GW_PID) listening on $BASE ($(elapsed "$t") s)"

# ---- 3. register + emulated sample server --------------------------------------------------------
t=$EPOCHREALTIME
child_cmd="$(printf '%q ' "${RUN[@]}" "$BIN" sample-server)"
"${RUN[@]}" "$BIN" register --stdio "${child_cmd% }" \
    --gateway-url "ws://127.0.0.1:$PORT/mcp/register" --server-name pi >"$WORK/register.log" 2>&1 </dev/null &
REG_PID=$!
health=
deadline=$((SECONDS + TIMEOUT))
while :; do
    health="$(curl -sS --max-time 5 "$BASE/health" 2>/dev/null)" || true
    [[ $health == *'"servers":1'* ]] && break
    alive "$REG_PID" || fatal "register exited before the gateway listed the server (health: $health)"
    alive "$GW_PID" || fatal "gateway exited while waiting for the registration"
    ((SECONDS < deadline)) || fatal "/health did not report \"servers\":1 within $TIMEOUT s (last: $health)"
    sleep 0.2
done
CHILD_PID="$(grep -o 'started MCP server "pi" (pid [0-9]*)' "$WORK/register.log" | head -n 1 | grep -o '[0-9]*)' | tr -d ')')" || true
pass "register (pid $REG_PID) connected, child pid ${CHILD_PID:-?}; /health: $health ($(elapsed "$t") s)"

# ---- 4. MCP client over Streamable HTTP ----------------------------------------------------------
SESSION=
PROTO=
# post NAME JSON: POSTs JSON to /mcp; body in $WORK/NAME.body, headers in $WORK/NAME.hdr; prints
# the HTTP status (000 if curl failed) and curl's time for the request in seconds.
post() {
    local name=$1 data=$2 h=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
    [[ -n $SESSION ]] && h+=(-H "Mcp-Session-Id: $SESSION")
    [[ -n $PROTO ]] && h+=(-H "MCP-Protocol-Version: $PROTO")
    curl -sS --max-time "$REQ_TIMEOUT" -o "$WORK/$name.body" -D "$WORK/$name.hdr" -w '%{http_code} %{time_total}' \
        -X POST "$BASE/mcp" "${h[@]}" --data-binary "$data" 2>"$WORK/$name.err" || echo 000 -
}
# jpy NAME ID EXPR: finds the JSON-RPC response with id ID in $WORK/NAME.body (a JSON body or an
# SSE stream of them), evaluates the Python expression EXPR on it (as m) and prints the value
# (strings bare, the rest as JSON). Status 1 if there is no such response or EXPR raises or is
# False/None.
jpy() {
    python3 - "$WORK/$1.body" "$2" "$3" <<'PY'
import json, sys
body = open(sys.argv[1], encoding="utf-8").read()
want, expr = json.loads(sys.argv[2]), sys.argv[3]
msgs = []
try:
    msgs.append(json.loads(body))
except ValueError:
    data = []
    for line in body.splitlines() + [""]:
        if line.startswith("data:"):
            v = line[5:]
            data.append(v[1:] if v.startswith(" ") else v)
        elif line == "" and data:
            msgs.append(json.loads("\n".join(data)))
            data = []
flat = [x for m in msgs for x in (m if isinstance(m, list) else [m])]
found = [m for m in flat if isinstance(m, dict) and m.get("id") == want and ("result" in m or "error" in m)]
if not found:
    sys.exit("no response with id %r in %s" % (want, body[:300]))
m = found[0]
try:
    v = eval(expr, {"json": json}, {"m": m})
except Exception as e:
    sys.exit("%s: %r on %s" % (expr, e, json.dumps(m)[:300]))
if v is False or v is None:
    sys.exit("%s is %r on %s" % (expr, v, json.dumps(m)[:300]))
print(v if isinstance(v, str) else json.dumps(v))
PY
}
body_of() { head -c 300 "$WORK/$1.body" 2>/dev/null; cat "$WORK/$1.err" 2>/dev/null; }

read -r code secs <<<"$(post initialize '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"qemu-smoke","version":"1"}}}')"
SESSION="$(tr -d '\r' <"$WORK/initialize.hdr" | awk 'tolower($1) == "mcp-session-id:" { print $2; exit }')"
if [[ $code == 200 && -n $SESSION ]] && PROTO="$(jpy initialize 1 'm["result"]["protocolVersion"]')"; then
    pass "initialize: HTTP 200, Mcp-Session-Id ${SESSION:0:8}…, protocol $PROTO (request $secs s)"
else
    PROTO=
    fatal "initialize: HTTP $code, session '${SESSION}': $(body_of initialize)"
fi

read -r code secs <<<"$(post initialized '{"jsonrpc":"2.0","method":"notifications/initialized"}')"
if [[ $code == 202 ]]; then
    pass "notifications/initialized: HTTP 202 (request $secs s)"
else
    fail "notifications/initialized: HTTP $code, expected 202: $(body_of initialized)"
fi

read -r code secs <<<"$(post list '{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}')"
if [[ $code == 200 ]] && names="$(jpy list 2 '" ".join(sorted(t["name"] for t in m["result"]["tools"]))')" \
    && [[ " $names " == *" pi_echo "* && " $names " == *" pi_system_info "* ]]; then
    pass "tools/list: $names (request $secs s)"
else
    fail "tools/list: HTTP $code, tools '${names:-}': $(body_of list)"
fi

text="hello from $TARGET"
read -r code secs <<<"$(post echo "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"pi_echo\",\"arguments\":{\"text\":\"$text\"}}}")"
if [[ $code == 200 ]] && got="$(jpy echo 3 'not m["result"].get("isError") and m["result"]["content"][0]["text"]')" \
    && [[ $got == "$text" ]]; then
    pass "tools/call pi_echo: '$got' (request $secs s)"
else
    fail "tools/call pi_echo: HTTP $code, got '${got:-}': $(body_of echo)"
fi

read -r code secs <<<"$(post sysinfo '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"pi_system_info","arguments":{}}}')"
check='(lambda r, s: not r.get("isError") and isinstance(s["pid"], int) and s["memory_total_kb"] > 0
        and s["uptime_seconds"] > 0 and len(s["load"]) == 3 and json.loads(r["content"][0]["text"]) == s
        and s)(m["result"], m["result"]["structuredContent"])'
if [[ $code == 200 ]] && info="$(jpy sysinfo 4 "$check")"; then
    pass "tools/call pi_system_info: $info (request $secs s)"
    # The answer must come from the process register started (`sh -c CMD`) or its child, and
    # that process must be running the target's code under qemu.
    SERVER_PID="$(jpy sysinfo 4 'str(m["result"]["structuredContent"]["pid"])')" || true
    server_ppid="$(ps -o ppid= -p "$SERVER_PID" 2>/dev/null | tr -d ' ')" || true
    server_exe="$(readlink "/proc/$SERVER_PID/exe" 2>/dev/null)" || true
    if [[ -z $CHILD_PID || ($SERVER_PID != "$CHILD_PID" && $server_ppid != "$CHILD_PID") ]]; then
        fail "pi_system_info answered from pid $SERVER_PID (parent ${server_ppid:-?}), not from register's child ${CHILD_PID:-?}"
    elif [[ -n $QEMU_NAME && $server_exe != *"/$QEMU_NAME" ]]; then
        fail "the sample server (pid $SERVER_PID) runs '$server_exe', not $QEMU_NAME"
    else
        pass "the sample server is pid $SERVER_PID under register's child $CHILD_PID, running ${server_exe:-?}"
    fi
else
    fail "tools/call pi_system_info: HTTP $code: $(body_of sysinfo)"
fi

# ---- 5. Shutdown ---------------------------------------------------------------------------------
t=$EPOCHREALTIME
kill -TERM "$REG_PID" 2>/dev/null || true
if wait_exit "$REG_PID" 20; then
    REG_PID=
    pass "register exited on SIGTERM with status $EXIT_STATUS ($(elapsed "$t") s)"
else
    fail "register still running 20 s after SIGTERM"
fi
running() { alive "$1" && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]; }
left=()
for pid in $CHILD_PID $SERVER_PID; do
    deadline=$((SECONDS + 15))
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    running "$pid" && left+=("$pid")
done
if [[ ${#left[@]} -eq 0 ]]; then
    pass "register's child ${CHILD_PID:-?} and the sample server ${SERVER_PID:-?} are gone"
else
    fail "still running after register exited: ${left[*]}"
fi
t=$EPOCHREALTIME
kill -TERM "$GW_PID" 2>/dev/null || true
if wait_exit "$GW_PID" 20; then
    GW_PID=
    if [[ $EXIT_STATUS == 0 ]]; then
        pass "gateway exited on SIGTERM with status 0 ($(elapsed "$t") s)"
    else
        fail "gateway exited on SIGTERM with status $EXIT_STATUS"
    fi
else
    fail "gateway still running 20 s after SIGTERM"
fi
