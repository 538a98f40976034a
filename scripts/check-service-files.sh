#!/usr/bin/env bash
# Checks the service examples in contrib/: `systemd-analyze verify` on the systemd units (with
# ExecStart pointed at the freshly built binary, since verify wants it to exist) and a shell
# syntax check of the OpenWrt procd script. Usage: bash scripts/check-service-files.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }
cargo build --release --quiet
bin="$(pwd)/${CARGO_TARGET_DIR:-target}/release/mcpport"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in contrib/systemd/*.service; do
    sed "s|/usr/local/bin/mcpport|$bin|g" "$unit" >"$tmp/$(basename "$unit")"
done
# The Debian package's own units (scripts/test-packages.sh also verifies them installed).
for unit in contrib/debian/*.service; do
    sed "s|/usr/bin/mcpport|$bin|g; s|EnvironmentFile=/etc/mcpport/|EnvironmentFile=-/etc/mcpport/|" "$unit" >"$tmp/debian-$(basename "$unit")"
done
systemd-analyze verify "$tmp"/*.service
echo "service files: systemd-analyze verify accepted $(ls "$tmp" | wc -l) units"
sh -n contrib/openwrt/mcpport-register
sh -n contrib/openwrt/mcpport-edge
sh -n contrib/openwrt/mcpport-gateway
sh -n contrib/debian/postinst && sh -n contrib/debian/prerm && sh -n contrib/debian/postrm
echo "service files: the procd scripts parse"
