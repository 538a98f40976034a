#!/usr/bin/env bash
# Every install channel of mcpport, built into dist/ from the static binaries of
# scripts/build-static.sh (x86_64 and aarch64 musl, armv7 with glibc linked statically):
#
#   mcpport_VERSION-1_{amd64,arm64,armhf}.deb     Debian/Ubuntu: /usr/bin/mcpport, systemd units for
#                                                 the gateway and for an edge with --config, a
#                                                 system user, config in /etc/mcpport (conffiles)
#   mcpport-VERSION-py3-none-*.whl                 PyPI: `pipx install mcpport`, `uvx mcpport`
#                                                 (glibc and musl Linux; x86_64, aarch64, armv7l)
#   mcpport-VERSION-oci.tar (+ the layout dir)     an OCI image index for linux/amd64, arm64 and
#                                                 arm/v7, from scratch, built without a daemon
#   mcpport_VERSION-1_ARCH.ipk                     OpenWrt 24.10 (opkg), with procd init scripts
#                                                 and a UCI config
#   mcpport-VERSION-openwrt-TARGET.tar.gz          OpenWrt 25.12 (apk): the same files to unpack
#                                                 at / until an apk builder is at hand
#   mcpport-VERSION-TARGET.tar.gz                  release archives: binary, README, LICENSE,
#                                                 units and init scripts
#   SHA256SUMS                                     of all of the above
#
# Usage: bash scripts/package.sh        (MCPPORT_PACKAGE_PREBUILT=1: use the binaries already in
#                                        target/TARGET/release instead of building them)
# Needs: dpkg-deb, python3, tar, gzip (installed when missing, as build-static.sh does).
# scripts/test-packages.sh installs and runs what this makes.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
DIST="$REPO/dist"
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
say() { printf 'package: %s\n' "$*" >&2; }
started=$SECONDS

command -v dpkg-deb >/dev/null || { apt-get update -qq && apt-get install -y -qq dpkg-dev >/dev/null; }
[[ -n ${MCPPORT_PACKAGE_PREBUILT:-} ]] || bash scripts/build-static.sh "${TARGETS[@]}"
bin_of() { echo "${CARGO_TARGET_DIR:-$REPO/target}/$1/release/mcpport"; }
for t in "${TARGETS[@]}"; do
    [[ -x $(bin_of "$t") ]] || { say "no $(bin_of "$t"): run scripts/build-static.sh"; exit 1; }
done

rm -rf "$DIST"
mkdir -p "$DIST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Reproducible archives: every file at the same time, owned by root.
export SOURCE_DATE_EPOCH=1700000000
TAR=(tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$SOURCE_DATE_EPOCH)

# ---- Debian packages ----
deb() { # deb TARGET ARCH
    local target=$1 arch=$2 root="$work/deb-$2"
    install -D -m 0755 "$(bin_of "$target")" "$root/usr/bin/mcpport"
    install -D -m 0644 contrib/debian/mcpport-gateway.service "$root/usr/lib/systemd/system/mcpport-gateway.service"
    install -D -m 0644 contrib/debian/mcpport-edge.service "$root/usr/lib/systemd/system/mcpport-edge.service"
    for f in gateway.env edge.env servers.json; do
        install -D -m 0644 "contrib/debian/$f" "$root/etc/mcpport/$f"
    done
    install -D -m 0644 contrib/debian/copyright "$root/usr/share/doc/mcpport/copyright"
    install -D -m 0644 README.md "$root/usr/share/doc/mcpport/README.md"
    install -D -m 0644 contrib/debian/lintian-overrides "$root/usr/share/lintian/overrides/mcpport"
    printf 'mcpport (%s-1) unstable; urgency=medium\n\n  * Release %s.\n\n -- mcpport maintainers <maintainers@mcpport.invalid>  %s\n' \
        "$VERSION" "$VERSION" "$(date -u -R -d @$SOURCE_DATE_EPOCH)" | gzip -9n >"$root/usr/share/doc/mcpport/changelog.Debian.gz"
    chmod 0644 "$root/usr/share/doc/mcpport/changelog.Debian.gz"
    install -d "$root/DEBIAN"
    install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm "$root/DEBIAN/"
    printf '/etc/mcpport/gateway.env\n/etc/mcpport/edge.env\n/etc/mcpport/servers.json\n' >"$root/DEBIAN/conffiles"
    cat >"$root/DEBIAN/control" <<EOF
Package: mcpport
Version: $VERSION-1
Architecture: $arch
Maintainer: mcpport maintainers <maintainers@mcpport.invalid>
Depends: passwd
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Section: net
Priority: optional
Description: MCP gateway for servers that run where nobody can dial in
 mcpport is one static binary with two roles. The gateway runs on a reachable
 host and serves MCP clients over HTTP (Streamable HTTP, legacy SSE and the
 stateless 2026-07-28 revision). On an edge device, register fronts its local
 MCP servers (stdio or HTTP, from the mcpServers file users already have),
 dials out to the gateway and relays JSON-RPC both ways.
 .
 This package installs the binary, systemd units for the gateway
 (mcpport-gateway) and for an edge (mcpport-edge), enabled but not started,
 and their configuration in /etc/mcpport.
EOF
    find "$root" -type d -exec chmod 0755 {} +
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Zxz --build "$root" "$DIST/mcpport_${VERSION}-1_${arch}.deb" >/dev/null
}
deb x86_64-unknown-linux-musl amd64
deb aarch64-unknown-linux-musl arm64
deb armv7-unknown-linux-gnueabihf armhf
say "Debian packages: $(cd "$DIST" && ls ./*.deb | tr '\n' ' ')"

# ---- Python wheels ----
python3 scripts/package/build.py wheel "$DIST" "$VERSION" x86_64 "$(bin_of x86_64-unknown-linux-musl)" README.md >/dev/null
python3 scripts/package/build.py wheel "$DIST" "$VERSION" aarch64 "$(bin_of aarch64-unknown-linux-musl)" README.md >/dev/null
python3 scripts/package/build.py wheel "$DIST" "$VERSION" armv7l "$(bin_of armv7-unknown-linux-gnueabihf)" README.md >/dev/null
say "wheels: $(cd "$DIST" && ls ./*.whl | tr '\n' ' ')"

# ---- OCI image (the CA roots of this machine's ca-certificates) ----
ca=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca ]] || { apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null; }
python3 scripts/package/build.py oci "$DIST" "$VERSION" "$ca" \
    "amd64=$(bin_of x86_64-unknown-linux-musl)" "arm64=$(bin_of aarch64-unknown-linux-musl)" \
    "arm=$(bin_of armv7-unknown-linux-gnueabihf)" >/dev/null
say "OCI image: mcpport-$VERSION-oci.tar"

# ---- OpenWrt: .ipk for 24.10 (opkg), a tarball for 25.12 (apk) ----
# opkg installs a package only for an architecture the device lists; these are the usual ones
# (a static binary runs on every CPU of its family).
for arch in x86_64; do
    python3 scripts/package/build.py ipk "$DIST" "$VERSION" "$arch" "$(bin_of x86_64-unknown-linux-musl)" contrib >/dev/null
done
for arch in aarch64_generic aarch64_cortex-a53 aarch64_cortex-a72 aarch64_cortex-a76; do
    python3 scripts/package/build.py ipk "$DIST" "$VERSION" "$arch" "$(bin_of aarch64-unknown-linux-musl)" contrib >/dev/null
done
for arch in arm_cortex-a5_vfpv4 arm_cortex-a7_neon-vfpv4 arm_cortex-a8_vfpv3 arm_cortex-a9_vfpv3-d16 arm_cortex-a15_neon-vfpv4; do
    python3 scripts/package/build.py ipk "$DIST" "$VERSION" "$arch" "$(bin_of armv7-unknown-linux-gnueabihf)" contrib >/dev/null
done
openwrt_tarball() { # TARGET
    local root="$work/openwrt-$1"
    install -D -m 0755 "$(bin_of "$1")" "$root/usr/bin/mcpport"
    install -D -m 0755 contrib/openwrt/mcpport-gateway "$root/etc/init.d/mcpport-gateway"
    install -D -m 0755 contrib/openwrt/mcpport-edge "$root/etc/init.d/mcpport-edge"
    install -D -m 0600 contrib/openwrt/mcpport.config "$root/etc/config/mcpport"
    install -D -m 0600 contrib/debian/servers.json "$root/etc/mcpport/servers.json"
    "${TAR[@]}" -C "$root" -czf "$DIST/mcpport-$VERSION-openwrt-$1.tar.gz" usr etc
}
for t in "${TARGETS[@]}"; do openwrt_tarball "$t"; done
say "OpenWrt: $(cd "$DIST" && ls ./*.ipk ./*openwrt* | tr '\n' ' ')"

# ---- release archives ----
for t in "${TARGETS[@]}"; do
    dir="$work/mcpport-$VERSION-$t"
    install -D -m 0755 "$(bin_of "$t")" "$dir/mcpport"
    install -m 0644 README.md LICENSE "$dir/"
    install -d "$dir/systemd" "$dir/openwrt"
    install -m 0644 contrib/systemd/*.service "$dir/systemd/"
    install -m 0755 contrib/openwrt/mcpport-gateway contrib/openwrt/mcpport-edge contrib/openwrt/mcpport-register "$dir/openwrt/"
    install -m 0644 contrib/openwrt/mcpport.config "$dir/openwrt/"
    "${TAR[@]}" -C "$work" -czf "$DIST/mcpport-$VERSION-$t.tar.gz" "mcpport-$VERSION-$t"
done

(cd "$DIST" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | sort | xargs sha256sum >SHA256SUMS)
say "$(wc -l <"$DIST/SHA256SUMS") files in dist/, with SHA256SUMS, in $((SECONDS - started)) s"
