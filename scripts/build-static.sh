#!/usr/bin/env bash
# Static release binaries of mcpport for routers and Raspberry Pis.
#
# Usage: bash scripts/build-static.sh [TARGET...]
#   TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-gnueabihf
#   (default: all three). Output: target/<TARGET>/release/mcpport (or $CARGO_TARGET_DIR/...),
#   built with `cargo build --release --locked --no-default-features` (no sample-server test tools) and the release profile in Cargo.toml.
#
# Fully static: the musl targets link Rust's self-contained musl; armv7 links glibc statically
# (`+crt-static`; the armv7 musl rust-std is not installable here, see
# docs/static-builds.md). Only /etc/hosts and DNS name lookups work there, not other
# NSS modules.
#
# Installs what it needs itself, and says nothing when it is already there: the rustup targets,
# and the Debian packages (apt-get; `apt-get update` runs once, only if a package is missing).
# Needs a Debian/Ubuntu x86_64 host. MCPPORT_NO_INSTALL=1 only checks and fails instead.
#
# MCPPORT_STATIC_FEATURES=test-tools builds with the sample server's test tools (what the
# integration tests need to run against a static binary, as CI's stack-page step does).
#
# Ends with a table (target, bytes, build time, `file` output) and fails if a binary is not
# statically linked or not stripped, or if the aarch64 binary is over its size budget
# (MCPPORT_AARCH64_BUDGET, default 2.25 MiB = 2359296 bytes: the router build, with every edge
# feature; what only a big gateway needs may be a Cargo feature it leaves out).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ALL_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
BUDGET_TARGET=aarch64-unknown-linux-musl
BUDGET_BYTES=${MCPPORT_AARCH64_BUDGET:-2359296}

say() { printf 'build-static: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    case " ${ALL_TARGETS[*]} " in
        *" $t "*) ;;
        *) die "unknown target '$t' (known: ${ALL_TARGETS[*]})" ;;
    esac
done

# ---- Debian packages -------------------------------------------------------------------------
packages=(file gcc libc6-dev)  # file: the checks below; gcc/libc6-dev: host linker, build scripts
for t in "${targets[@]}"; do
    case $t in
        # ring's C and assembly: the host gcc is fine for x86_64 musl (the objects only need
        # <string.h>/<assert.h> and end up linked with Rust's self-contained musl libc.a), so
        # Debian's musl-tools is not needed.
        x86_64-unknown-linux-musl) ;;
        aarch64-unknown-linux-musl) packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
        armv7-unknown-linux-gnueabihf) packages+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    esac
done

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
apt_install "${packages[@]}"

# ---- Rust targets ----------------------------------------------------------------------------
if command -v rustup >/dev/null; then
    have="$(rustup target list --installed)"
    missing=()
    for t in "${targets[@]}"; do grep -qx "$t" <<<"$have" || missing+=("$t"); done
    if [[ ${#missing[@]} -gt 0 ]]; then
        [[ ${MCPPORT_NO_INSTALL:-0} == 1 ]] && die "missing rust targets: ${missing[*]} (MCPPORT_NO_INSTALL=1)"
        say "rustup target add ${missing[*]}"
        rustup target add "${missing[@]}" >/dev/null
    fi
else
    sysroot="$(rustc --print sysroot)"
    for t in "${targets[@]}"; do
        [[ -d $sysroot/lib/rustlib/$t ]] || die "no rust-std for $t in $sysroot and no rustup to add it"
    done
fi

# ---- Cross compilers and linkers (only defaults: what the caller exported wins) ----------------
# cc-rs would look for <arch>-linux-musl-gcc, which Debian does not have.
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-gcc}"
export CC_aarch64_unknown_linux_musl="${CC_aarch64_unknown_linux_musl:-aarch64-linux-gnu-gcc}"
export CC_armv7_unknown_linux_gnueabihf="${CC_armv7_unknown_linux_gnueabihf:-arm-linux-gnueabihf-gcc}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-aarch64-linux-gnu-gcc}"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER="${CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER:-arm-linux-gnueabihf-gcc}"
# (x86_64 musl links with the default `cc`.)

# ---- Rust flags ------------------------------------------------------------------------------
# If CI exports RUSTFLAGS (or CARGO_ENCODED_RUSTFLAGS), cargo ignores target.<triple>.rustflags and
# CARGO_TARGET_<TRIPLE>_RUSTFLAGS, and armv7 would silently come out dynamic. So the flags go in
# CARGO_ENCODED_RUSTFLAGS (which beats both), keeping whatever the caller had and putting
# +crt-static last. With --target they apply to the target only, not to build scripts.
# --remap-path-prefix shortens the crates' source paths in panic messages to the same string on
# every machine, so the binary size does not depend on where $CARGO_HOME is.
US=$'\x1f'
base_flags=()
if [[ -n ${CARGO_ENCODED_RUSTFLAGS:-} ]]; then
    IFS="$US" read -r -a base_flags <<<"$CARGO_ENCODED_RUSTFLAGS"
elif [[ -n ${RUSTFLAGS:-} ]]; then
    read -r -a base_flags <<<"$RUSTFLAGS"
fi
[[ ${#base_flags[@]} -gt 0 ]] && say "keeping caller's rustflags: ${base_flags[*]}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
flags=("${base_flags[@]}" "--remap-path-prefix=$cargo_home=/cargo" -C target-feature=+crt-static)
unset RUSTFLAGS

# The musl targets link with the toolchain's own lld (rust-lld, through its gcc-ld wrapper, so gcc
# still drives the link) and identical code folding: lld packs the segments without GNU ld's
# 64 KiB alignment gaps and --icf=all merges identical functions (rustc marks every function
# unnamed_addr, so no Rust code may rely on their addresses), 55 KiB less on aarch64 for the same
# code (BENCHMARKS.md). armv7 keeps GNU ld, which links glibc statically as it expects.
host="$(rustc -vV | sed -n 's/^host: //p')"
gcc_ld="$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld"
lld_flags=()
if [[ -x $gcc_ld/ld.lld ]]; then
    lld_flags=(-C link-arg=-fuse-ld=lld -C "link-arg=-B$gcc_ld" -C link-arg=-Wl,--icf=all)
else
    say "no rust-lld in the toolchain ($gcc_ld): linking with GNU ld, which makes bigger binaries"
fi
encode() { local IFS="$US"; printf '%s' "$*"; }

target_dir="${CARGO_TARGET_DIR:-$REPO/target}"

# ---- Build -----------------------------------------------------------------------------------
declare -A secs
features=(--no-default-features)
[[ -n ${MCPPORT_STATIC_FEATURES:-} ]] && features+=(--features "$MCPPORT_STATIC_FEATURES")
for t in "${targets[@]}"; do
    say "cargo build --release --locked ${features[*]} --target $t"
    start=$EPOCHREALTIME
    case $t in
        *-musl) encoded="$(encode "${flags[@]}" "${lld_flags[@]}")" ;;
        *) encoded="$(encode "${flags[@]}")" ;;
    esac
    CARGO_ENCODED_RUSTFLAGS="$encoded" cargo build --release --locked "${features[@]}" --target "$t"
    secs[$t]=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
done

# ---- Report and checks -----------------------------------------------------------------------
fail=0
printf '\n%-32s %10s %8s  %s\n' TARGET BYTES BUILD_S FILE
for t in "${targets[@]}"; do
    bin="$target_dir/$t/release/mcpport"
    if [[ ! -f $bin ]]; then
        printf '%-32s %10s %8s  %s\n' "$t" - "${secs[$t]}" "missing: $bin"
        fail=1
        continue
    fi
    bytes=$(stat -c %s "$bin")
    desc="$(file -b "$bin")"
    printf '%-32s %10s %8s  %s\n' "$t" "$bytes" "${secs[$t]}" "$desc"
done
echo

for t in "${targets[@]}"; do
    bin="$target_dir/$t/release/mcpport"
    [[ -f $bin ]] || continue
    desc="$(file -b "$bin")"
    problems=()
    [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] || problems+=("not statically linked")
    [[ $desc == *", stripped"* ]] || problems+=("not stripped")
    # Belt and braces: no program interpreter and no shared libraries in the ELF headers.
    if command -v readelf >/dev/null; then
        readelf -lW "$bin" | grep -q 'INTERP' && problems+=("has a PT_INTERP (dynamic loader)")
        readelf -dW "$bin" | grep -q '(NEEDED)' && problems+=("needs shared libraries: $(readelf -dW "$bin" | grep '(NEEDED)' | sed 's/.*\[\(.*\)\]/\1/' | tr '\n' ' ')")
    fi
    if [[ ${#problems[@]} -eq 0 ]]; then
        echo "PASS $t: static and stripped"
    else
        echo "FAIL $t: ${problems[*]}"
        fail=1
    fi
done

for t in "${targets[@]}"; do
    [[ $t == "$BUDGET_TARGET" ]] || continue
    bin="$target_dir/$t/release/mcpport"
    [[ -f $bin ]] || continue
    bytes=$(stat -c %s "$bin")
    detail=$(awk -v b="$bytes" -v m="$BUDGET_BYTES" \
        'BEGIN { printf "%d bytes (%.2f MiB) vs budget %d bytes (%.2f MiB): %.1f%%, %d bytes %s", b, b/1048576, m, m/1048576, 100*b/m, (m>=b ? m-b : b-m), (m>=b ? "to spare" : "over") }')
    # File sizes move in 64 KiB steps on aarch64 (RELRO alignment); text+data is the finer measure.
    if command -v aarch64-linux-gnu-size >/dev/null; then
        detail+="; text+data $(aarch64-linux-gnu-size -B "$bin" | awk 'NR==2 { print $1 + $2 }') bytes"
    fi
    if [[ $bytes -le $BUDGET_BYTES ]]; then
        echo "PASS size budget $t: $detail"
    else
        echo "FAIL size budget $t: $detail"
        fail=1
    fi
done

exit $fail
