#!/usr/bin/env bash
# Installs and runs what scripts/package.sh put in dist/, as each channel's users would:
#
#   SHA256SUMS   every file matches
#   .deb         lintian (no errors); each package installed with dpkg into a fresh Debian root
#                made by mmdebstrap from the package registry (the foreign architectures added
#                to that root, their binary run under qemu): `mcpport --version`, the system user,
#                the token files, the units (systemd-analyze verify) enabled and not started;
#                both units' ExecStart run for real in the root as the mcpport user with the
#                configuration the package ships (the gateway answers /health, the edge's
#                sample server registers with it); then removal keeps the conffiles and purge
#                leaves the root as it was before the install
#   wheels       installed with pip in a clean venv and run; run through `uvx` from the file;
#                the other architectures' binaries run under qemu
#   OCI image    the index names linux/amd64, arm64 and arm/v7; each image unpacked with umoci
#                (which validates the layout) and its binary run from the root filesystem
#                (under qemu for arm64 and arm); config: non-root user, the CA roots there
#   .ipk         structure and control fields; the procd init scripts' command lines (from the
#                shipped UCI config, through stubs of rc.common's helpers) run against the
#                unpacked root; the 25.12 tarballs unpack to the same files
#   archives     binary, README, LICENSE, units and init scripts inside
#
# Usage: bash scripts/test-packages.sh   (after scripts/package.sh). Installs what it needs
# (mmdebstrap, lintian, umoci, qemu-user-static; uv from PyPI into a venv). Only loopback.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DIST="$REPO/dist"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
say() { printf 'test-packages: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
started=$SECONDS
[[ -f $DIST/SHA256SUMS ]] || fail "no dist/SHA256SUMS: run scripts/package.sh first"

need=()
for tool in mmdebstrap:mmdebstrap lintian:lintian umoci:umoci qemu-aarch64-static:qemu-user-static \
    systemd-analyze:systemd curl:curl; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [[ ${#need[@]} -gt 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# ---- SHA256SUMS ----
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match"
say "SHA256SUMS: $(wc -l <"$DIST/SHA256SUMS") files match"

qemu_for() { # the qemu that runs a binary of ARCH (nothing for this machine's own)
    case $1 in
        amd64 | x86_64) echo "" ;;
        arm64 | aarch64*) echo qemu-aarch64-static ;;
        armhf | arm*) echo qemu-arm-static ;;
    esac
}
check_version() { # check_version WHAT BINARY ARCH
    local out
    out=$($(qemu_for "$3") "$2" --version) || fail "$1: $2 --version failed"
    [[ $out == "mcpport $VERSION ("* ]] || fail "$1: --version said: $out"
    say "$1: $out"
}

# servers_on PORT N: waits up to 15 s for the gateway on PORT to list N servers.
servers_on() {
    local _
    for _ in $(seq 150); do
        grep -q "\"servers\":$2[,}]" <(curl -fsS "http://127.0.0.1:$1/health" 2>/dev/null) && return 0
        sleep 0.1
    done
    return 1
}
# listening_port LOG: waits up to 10 s for a gateway's "listening on" line in LOG; prints its port.
listening_port() {
    local _ port
    for _ in $(seq 100); do
        port=$(sed -n 's|.*listening on http://[0-9.]*:\([0-9]*\).*|\1|p' "$1" | head -n 1)
        [[ -n $port ]] && { echo "$port"; return 0; }
        sleep 0.1
    done
    return 1
}
# stop_started: stops every process this script started and still runs, by PID.
stop_started() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# ---- Debian packages ----
for deb in "$DIST"/*.deb; do
    lint=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'root privileges' || true)
    if grep -q '^E:' <<<"$lint"; then fail "lintian errors in $(basename "$deb"):"$'\n'"$lint"; fi
    contents=$(dpkg-deb -c "$deb")
    for path in ./usr/bin/mcpport ./usr/lib/systemd/system/mcpport-gateway.service \
        ./usr/lib/systemd/system/mcpport-edge.service ./etc/mcpport/servers.json; do
        grep -q " $path\$" <<<"$contents" || fail "$(basename "$deb") lacks $path"
    done
    [[ $(dpkg-deb -f "$deb" Package Version) == $'Package: mcpport\nVersion: '"$VERSION-1" ]] || fail "control fields"
    [[ $(dpkg-deb -f "$deb" Depends) == passwd ]] || fail "$(basename "$deb"): Depends (useradd is in passwd)"
    dpkg-deb -I "$deb" md5sums >/dev/null || fail "$(basename "$deb"): no md5sums"
done
say "Debian packages: lintian without errors, contents and control fields as expected"

root="$work/debian"
mmdebstrap --quiet --variant=minbase --include=systemd,init-system-helpers bookworm "$root" \
    || fail "mmdebstrap could not make a Debian root"
snapshot() { # the root's files, but for what dpkg and apt keep about themselves
    (cd "$root" && find . -xdev \( -path ./var/lib/dpkg -o -path ./var/log -o -path ./var/cache/debconf \
        -o -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run \) -prune -o -print | sort)
}
in_root() { chroot "$root" "$@"; }
snapshot >"$work/before"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
for deb in "$DIST"/*.deb; do
    arch=$(dpkg-deb -f "$deb" Architecture)
    name=$(basename "$deb")
    if [[ $arch != amd64 ]]; then in_root dpkg --add-architecture "$arch"; fi
    cp "$deb" "$root/tmp/$name"
    in_root dpkg -i "/tmp/$name" >/dev/null 2>&1 || fail "$name: dpkg -i failed"
    rm "$root/tmp/$name"
    check_version "$name in a Debian root" "$root/usr/bin/mcpport" "$arch"
    in_root getent passwd mcpport >/dev/null || fail "$name: no mcpport user"
    for f in auth-tokens register-tokens register-headers; do
        mode=$(in_root stat -c '%U:%G %a' "/etc/mcpport/$f")
        [[ $mode == "root:mcpport 640" ]] || fail "$name: /etc/mcpport/$f: $mode"
    done
    [[ -s $root/etc/mcpport/auth-tokens ]] || fail "$name: no client token made"
    for unit in mcpport-gateway mcpport-edge; do
        [[ -L $root/etc/systemd/system/multi-user.target.wants/$unit.service ]] || fail "$name: $unit is not enabled"
    done
    if [[ $arch == amd64 ]]; then
        # The units as systemd reads them; ExecStart's binary is the package's.
        SYSTEMD_LOG_LEVEL=warning in_root systemd-analyze verify \
            /usr/lib/systemd/system/mcpport-gateway.service /usr/lib/systemd/system/mcpport-edge.service \
            || fail "$name: systemd-analyze verify"
        # Both units' command lines, run for real as the unit's user with the shipped config;
        # the edge pointed at the gateway on loopback, with an edge token the gateway made.
        mapfile -t gw < <(python3 scripts/package/unit_cmd.py "$root" /usr/lib/systemd/system/mcpport-gateway.service | grep -v '^#')
        chroot --userspec=mcpport:mcpport "$root" "${gw[@]}" >"$work/gateway.log" 2>&1 &
        PIDS+=("$!")
        servers_on 8765 0 || fail "the gateway unit's command did not serve /health: $(cat "$work/gateway.log")"
        sed -i 's|^MCPPORT_GATEWAY_URL=.*|MCPPORT_GATEWAY_URL=ws://127.0.0.1:8765/mcp/register|' "$root/etc/mcpport/edge.env"
        printf 'Authorization: Bearer %s\n' "$(head -n 1 "$root/etc/mcpport/register-tokens")" >"$root/etc/mcpport/register-headers"
        mapfile -t edge < <(python3 scripts/package/unit_cmd.py "$root" /usr/lib/systemd/system/mcpport-edge.service)
        envs=()
        for line in "${edge[@]}"; do [[ $line == '#env '* ]] && envs+=("${line#\#env }"); done
        mapfile -t edge < <(printf '%s\n' "${edge[@]}" | grep -v '^#')
        chroot --userspec=mcpport:mcpport "$root" /usr/bin/env "${envs[@]}" "${edge[@]}" >"$work/edge.log" 2>&1 &
        PIDS+=("$!")
        servers_on 8765 1 || fail "the edge unit's command did not register the shipped sample server: $(tail -5 "$work/edge.log")"
        say "$name: the gateway unit serves /health, the edge unit registers servers.json's sample server"
        stop_started
        cp "$REPO/contrib/debian/edge.env" "$root/etc/mcpport/edge.env"
    fi
    in_root dpkg -r mcpport >/dev/null || fail "$name: dpkg -r failed"
    [[ ! -e $root/usr/bin/mcpport && -e $root/etc/mcpport/servers.json ]] || fail "$name: removal should keep only the conffiles"
    in_root dpkg -P mcpport >/dev/null || fail "$name: dpkg -P failed"
    if [[ $arch != amd64 ]]; then in_root dpkg --remove-architecture "$arch"; fi
    snapshot >"$work/after"
    left=$(comm -13 "$work/before" "$work/after" | grep -v '^./etc/resolv.conf$' || true)
    [[ -z $left ]] || fail "$name: purge left files behind:"$'\n'"$left"
    ! in_root getent passwd mcpport >/dev/null || fail "$name: purge left the mcpport user"
    say "$name: installed, run, removed and purged, nothing left"
done

# ---- Python wheels ----
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check uv
for whl in "$DIST"/*.whl; do
    case $whl in
        *_x86_64.whl) arch=x86_64 ;;
        *_aarch64.whl) arch=aarch64 ;;
        *_armv7l.whl) arch=armv7l ;;
        *) fail "$(basename "$whl"): which architecture?" ;;
    esac
    if [[ $arch == x86_64 ]]; then
        python3 -m venv "$work/clean"
        "$work/clean/bin/pip" install --quiet --disable-pip-version-check --no-index "$whl"
        check_version "pip install $(basename "$whl")" "$work/clean/bin/mcpport" x86_64
        out=$(UV_CACHE_DIR="$work/uv" "$work/venv/bin/uvx" --offline --from "$whl" mcpport --version) \
            || fail "uvx --from $(basename "$whl") failed"
        [[ $out == "mcpport $VERSION ("* ]] || fail "uvx: $out"
        say "uvx --from $(basename "$whl") mcpport --version: $out"
    else
        rm -rf "$work/unzipped" && mkdir "$work/unzipped"
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$work/unzipped"
        chmod +x "$work/unzipped/mcpport-$VERSION.data/scripts/mcpport"
        check_version "$(basename "$whl")" "$work/unzipped/mcpport-$VERSION.data/scripts/mcpport" "$arch"
    fi
done

# ---- OCI image ----
layout="$work/oci"
mkdir "$layout" && tar -xf "$DIST/mcpport-$VERSION-oci.tar" -C "$layout"
python3 - "$layout" "$VERSION" <<'EOF' || fail "the OCI index"
import json, sys
layout, version = sys.argv[1], sys.argv[2]
top = json.load(open(f"{layout}/index.json"))
assert len(top["manifests"]) == 1, "one image in the layout (podman load takes it whole)"
multi = top["manifests"][0]
assert multi["annotations"]["org.opencontainers.image.ref.name"] == version
assert multi["mediaType"] == "application/vnd.oci.image.index.v1+json"
index = json.load(open(f"{layout}/blobs/sha256/{multi['digest'].split(':')[1]}"))
platforms = sorted((m["platform"]["architecture"], m["platform"].get("variant", "")) for m in index["manifests"])
assert platforms == [("amd64", ""), ("arm", "v7"), ("arm64", "v8")], platforms
for m in index["manifests"]:
    manifest = json.load(open(f"{layout}/blobs/sha256/{m['digest'].split(':')[1]}"))
    config = json.load(open(f"{layout}/blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
    assert config["config"]["User"] not in ("", "0", "root", "0:0"), config["config"]["User"]
    assert config["config"]["Entrypoint"] == ["/usr/bin/mcpport"]
    assert "--auth-token-file" in config["config"]["Cmd"], "never an open gateway by default"
# For umoci, which unpacks a manifest: the same blobs, each platform under its own tag.
entries = []
for m in index["manifests"]:
    m = dict(m, annotations={"org.opencontainers.image.ref.name": f"{version}-{m['platform']['architecture']}"})
    entries.append(m)
json.dump(dict(top, manifests=entries), open(f"{layout}/index.json", "w"))
EOF
for arch in amd64 arm64 arm; do
    umoci unpack --image "$layout:$VERSION-$arch" "$work/bundle-$arch" >/dev/null || fail "umoci unpack $arch"
    rootfs="$work/bundle-$arch/rootfs"
    [[ -s $rootfs/etc/ssl/certs/ca-certificates.crt ]] || fail "OCI $arch: no CA roots"
    [[ $(find "$rootfs" -type f | wc -l) -le 4 ]] || fail "OCI $arch: more than the binary, CA roots, passwd and group"
    [[ $(stat -c '%u %a' "$rootfs/home/nonroot") == "65532 700" ]] || fail "OCI $arch: the user's home is not its own"
    check_version "OCI image $arch" "$rootfs/usr/bin/mcpport" "$arch"
done

# ---- OpenWrt ----
stub="$work/procd-stub.sh"
cat >"$stub" <<'EOF'
# rc.common's helpers, enough to run an init script's start_service: prints its command line.
UCI=${UCI:?}
config_load() { :; }
config_get() { # VAR SECTION OPTION [DEFAULT]
    local v
    v=$(awk -v s="$2" -v o="$3" '$1 == "config" { gsub(/\047/, "", $3); cur = $3 } $1 == "option" && cur == s && $2 == o { $1 = ""; $2 = ""; sub(/^ +/, ""); gsub(/\047/, ""); print }' "$UCI")
    eval "$1=\${v:-\$4}"
}
config_get_bool() { config_get "$@"; }
# One argument per line, so that an argument with spaces stays one.
procd_open_instance() { CMD=""; }
procd_set_param() {
    [ "$1" = command ] || return 0
    shift
    CMD=""
    for a in "$@"; do CMD="${CMD:+$CMD
}$a"; done
}
procd_append_param() {
    [ "$1" = command ] || return 0
    shift
    for a in "$@"; do CMD="$CMD
$a"; done
}
procd_close_instance() { printf '%s\n' "$CMD"; }
EOF
# run_init WHAT ARCH ROOT GATEWAY_UCI GATEWAY_SCRIPT EDGE_UCI EDGE_SCRIPT: runs the gateway init
# script's command line (on a free port) and then the edge's (its UCI's PORT replaced by that
# port), with ROOT's files for /etc/mcpport and /usr/bin/mcpport, and waits for the edge's
# server to register.
run_init() {
    local what=$1 arch=$2 root=$3 qemu args=() port=""
    qemu=$(command -v "$(qemu_for "$arch")" || true)
    mapfile -t args < <(UCI=$4 sh -c ". '$stub'; . '$5'; start_service")
    args=("${args[@]//\/etc\/mcpport/$root/etc/mcpport}")
    args=("${args[@]/#\/usr\/bin\/mcpport/$root/usr/bin/mcpport}")
    args=("${args[@]/#0.0.0.0/127.0.0.1}")
    args=("${args[@]/#8765/0}")
    # (The glibc armv7 gateway re-executes itself once, to turn glibc's per-thread caches off;
    # under qemu-user without binfmt_misc that exec fails, and it carries on without.)
    $qemu "${args[@]}" >"$work/init-gw.log" 2>&1 &
    PIDS+=("$!")
    port=$(listening_port "$work/init-gw.log") || fail "$what: the gateway init script's command did not listen: $(tail -3 "$work/init-gw.log")"
    sed -i "s|PORT|$port|" "$6"
    mapfile -t args < <(UCI=$6 sh -c ". '$stub'; . '$7'; start_service")
    [[ ${args[0]} == /usr/bin/mcpport && ${args[1]} == register ]] || fail "$what: $7 runs: ${args[*]}"
    local first=${args[0]}
    args=("${args[@]:1}")
    args=("${args[@]//\/etc\/mcpport/$root/etc/mcpport}")
    # The program, and any command line inside an argument (--stdio "/usr/bin/mcpport ...").
    args=("${args[@]//\/usr\/bin\/mcpport/${qemu:+$qemu }$root/usr/bin/mcpport}")
    $qemu "$root$first" "${args[@]}" >"$work/init-edge.log" 2>&1 &
    PIDS+=("$!")
    servers_on "$port" 1 \
        || fail "$what: $(basename "$7")'s command did not register its server: $(tail -3 "$work/init-edge.log")"
    stop_started
}

for ipk in "$DIST"/*.ipk; do
    name=$(basename "$ipk")
    dir="$work/ipk-$name" && mkdir -p "$dir/control" "$dir/data"
    tar -xzf "$ipk" -C "$dir"
    [[ $(cat "$dir/debian-binary") == 2.0 ]] || fail "$name: debian-binary"
    tar -xzf "$dir/control.tar.gz" -C "$dir/control" && tar -xzf "$dir/data.tar.gz" -C "$dir/data"
    arch=$(sed -n 's/^Architecture: //p' "$dir/control/control")
    [[ $name == "mcpport_${VERSION}-1_${arch}.ipk" ]] || fail "$name: Architecture $arch"
    for field in Package Version Architecture Maintainer License Description; do
        grep -q "^$field: " "$dir/control/control" || fail "$name: no $field"
    done
    grep -qx /etc/config/mcpport "$dir/control/conffiles" || fail "$name: conffiles"
    sh -n "$dir/control/postinst" && sh -n "$dir/control/prerm" && sh -n "$dir/control/postrm"
    for init in mcpport-gateway mcpport-edge; do
        script="$dir/data/etc/init.d/$init"
        sh -n "$script" && grep -q '^USE_PROCD=1' "$script" || fail "$name: $init is not a procd script"
    done
    # The init scripts' command lines, from the shipped UCI config (the gateway is off there: a
    # router is usually an edge), then with the gateway on; run against the unpacked root, the
    # edge registering the shipped servers.json with that gateway.
    uci="$dir/data/etc/config/mcpport"
    start_cmd() { UCI=$1 sh -c ". '$stub'; . '$2'; start_service"; }
    [[ -z $(start_cmd "$uci" "$dir/data/etc/init.d/mcpport-gateway") ]] || fail "$name: the shipped config starts a gateway"
    # The package makes the token files on a device (postinst); here, by hand.
    echo "edge-token-$arch" >"$dir/data/etc/mcpport/register-tokens"
    echo "client-token" >"$dir/data/etc/mcpport/auth-tokens"
    printf 'Authorization: Bearer edge-token-%s\n' "$arch" >"$dir/data/etc/mcpport/register-headers"
    sed "s/option enabled '0'/option enabled '1'/" "$uci" >"$work/uci-on"
    cmd=$(start_cmd "$work/uci-on" "$dir/data/etc/init.d/mcpport-gateway" | tr '\n' ' ')
    [[ $cmd == '/usr/bin/mcpport gateway --host 0.0.0.0 --port 8765 --auth-token-file /etc/mcpport/auth-tokens --register-token-file /etc/mcpport/register-tokens ' ]] \
        || fail "$name: the gateway runs: $cmd"
    # servers.json names /usr/bin/mcpport: the unpacked root's here, through qemu where needed.
    python3 - "$dir/data/etc/mcpport/servers.json" "$dir/data/usr/bin/mcpport" "$(command -v "$(qemu_for "$arch")" || true)" <<'PY'
import json, sys
path, binary, qemu = sys.argv[1:4]
servers = json.load(open(path))
entry = servers["mcpServers"]["sample"]
assert entry["command"] == "/usr/bin/mcpport", entry
entry.update({"command": qemu, "args": [binary] + entry["args"]} if qemu else {"command": binary})
json.dump(servers, open(path, "w"))
PY
    sed "s|wss://gateway.example.com:8765|ws://127.0.0.1:PORT|" "$uci" >"$work/uci-edge"
    run_init "$name" "$arch" "$dir/data" "$work/uci-on" "$dir/data/etc/init.d/mcpport-gateway" \
        "$work/uci-edge" "$dir/data/etc/init.d/mcpport-edge"
    say "$name: control fields, conffiles; its init scripts' gateway listens and edge registers"
    check_version "$name" "$dir/data/usr/bin/mcpport" "$arch"
done
for t in "$DIST"/mcpport-"$VERSION"-openwrt-*.tar.gz; do
    listing=$(tar -tzf "$t")
    for f in usr/bin/mcpport etc/init.d/mcpport-gateway etc/init.d/mcpport-edge etc/config/mcpport etc/mcpport/servers.json; do
        grep -qx "$f" <<<"$listing" || fail "$(basename "$t") lacks $f"
    done
done

# ---- release archives ----
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
    archive="$DIST/mcpport-$VERSION-$t.tar.gz"
    listing=$(tar -tzf "$archive")
    for f in mcpport README.md LICENSE systemd/mcpport-gateway.service systemd/mcpport-edge.service \
        openwrt/mcpport-gateway openwrt/mcpport-edge openwrt/mcpport.config; do
        grep -qx "mcpport-$VERSION-$t/$f" <<<"$listing" || fail "$(basename "$archive") lacks $f"
    done
done
# The archive's example units and init scripts, started for real from the x86_64 archive with
# the edits their comments ask for (the gateway URL, the credentials they load).
arch_dir="$work/archive" && mkdir -p "$arch_dir"
tar -xzf "$DIST/mcpport-$VERSION-x86_64-unknown-linux-musl.tar.gz" -C "$arch_dir"
pkg="$arch_dir/mcpport-$VERSION-x86_64-unknown-linux-musl"
creds="$arch_dir/credentials" && mkdir -p "$creds" "$arch_dir/etc/mcpport"
echo client-token >"$creds/auth-tokens"
echo edge-token >"$creds/register-tokens"
echo 'Authorization: Bearer edge-token' >"$creds/register-headers"
printf '{"mcpServers": {"sample": {"command": "%s", "args": ["sample-server"]}}}\n' "$pkg/mcpport" >"$arch_dir/etc/mcpport/servers.json"
unit_argv() { # unit_argv UNIT: its ExecStart, for this archive's binary and files
    mkdir -p "$arch_dir/root/lib/systemd/system"
    cp "$1" "$arch_dir/root/lib/systemd/system/"
    python3 scripts/package/unit_cmd.py "$arch_dir/root" "/lib/systemd/system/$(basename "$1")" \
        "CREDENTIALS_DIRECTORY=$creds" | grep -v '^#' \
        | sed "s|/usr/local/bin/mcpport|$pkg/mcpport|g; s|/etc/mcpport/|$arch_dir/etc/mcpport/|g; s|--port 8765|--port 0|; s|127.0.0.1:9108|127.0.0.1:0|"
}
mapfile -t argv < <(unit_argv "$pkg/systemd/mcpport-gateway.service")
"${argv[@]}" >"$work/archive-gw.log" 2>&1 &
PIDS+=("$!")
port=$(listening_port "$work/archive-gw.log") || fail "the archive's gateway unit did not listen: $(tail -3 "$work/archive-gw.log")"
for unit in mcpport-register mcpport-edge; do
    mapfile -t argv < <(unit_argv "$pkg/systemd/$unit.service" | sed "s|wss://gateway.example.com:8765|ws://127.0.0.1:$port|; s|^--port\$|--port|")
    # Health ports of the edge units: free ones.
    for i in "${!argv[@]}"; do [[ ${argv[i]} == 8766 ]] && argv[i]=0; done
    "${argv[@]}" >"$work/archive-$unit.log" 2>&1 &
    PIDS+=("$!")
    servers_on "$port" 1 || fail "the archive's $unit unit did not register: $(tail -3 "$work/archive-$unit.log")"
    kill "${PIDS[-1]}" && wait "${PIDS[-1]}" 2>/dev/null || true
    unset 'PIDS[-1]'
    servers_on "$port" 0 || fail "the archive's $unit unit's server did not leave"
done
stop_started
# The archive's OpenWrt scripts: the gateway's, then the register script's (its own UCI section).
owrt="$arch_dir/owrt" && mkdir -p "$owrt/usr/bin" "$owrt/etc/mcpport"
cp "$pkg/mcpport" "$owrt/usr/bin/mcpport"
cp "$creds/auth-tokens" "$creds/register-tokens" "$creds/register-headers" "$owrt/etc/mcpport/"
sed "s/option enabled '0'/option enabled '1'/" "$pkg/openwrt/mcpport.config" >"$work/uci-archive-gw"
printf "config register 'main'\n\toption stdio '/usr/bin/mcpport sample-server'\n\toption gateway_url 'ws://127.0.0.1:PORT/mcp/register'\n\toption server_name 'router'\n\toption header_file '/etc/mcpport/register-headers'\n" >"$work/uci-archive-reg"
run_init "the archive's openwrt/mcpport-register" x86_64 "$owrt" "$work/uci-archive-gw" "$pkg/openwrt/mcpport-gateway" \
    "$work/uci-archive-reg" "$pkg/openwrt/mcpport-register"
say "release archives: binary, README, LICENSE, units and init scripts in each; the units and init scripts run"
say "all packages checked in $((SECONDS - started)) s"
