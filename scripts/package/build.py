"""Packages that are archives of archives, written byte for byte from the static binaries of
scripts/build-static.sh (called by scripts/package.sh; standard library only, reproducible:
fixed times, owners and order):

  wheel DIST VERSION ARCH BINARY          a Python wheel carrying the binary as a script (what
                                          maturin's `bindings = "bin"` makes), tagged for glibc
                                          and musl Linux: `pip install`, `pipx install` and
                                          `uvx mcpport` run it as the original's command
  oci DIST VERSION CA_BUNDLE ARCH=BINARY... an OCI image layout (one image per architecture, one
                                          index), from scratch: the binary, CA roots, a non-root
                                          user; its default command serves the gateway
  ipk DIST VERSION ARCH BINARY FILES...   an OpenWrt 24.10 package (.ipk) with the init scripts
                                          and the UCI config
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path

EPOCH = 1_700_000_000  # every file's time: the same bytes from the same inputs
SUMMARY = "Reach MCP servers that run where nobody can dial in: an edge-registered MCP gateway in one static binary"


# ---- wheels ----

# Wheel platform tags per architecture: the binary is static, so one wheel serves glibc
# (manylinux) and musl (musllinux) systems alike.
WHEEL_PLATFORMS = {
    "x86_64": "manylinux_2_17_x86_64.manylinux2014_x86_64.musllinux_1_1_x86_64",
    "aarch64": "manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64",
    "armv7l": "manylinux_2_17_armv7l.manylinux2014_armv7l.musllinux_1_1_armv7l",
}


def wheel(dist: Path, version: str, arch: str, binary: Path, readme: Path) -> Path:
    tag = f"py3-none-{WHEEL_PLATFORMS[arch]}"
    name = f"mcpport-{version}-{tag}.whl"
    info = f"mcpport-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: mcpport\n"
        f"Version: {version}\n"
        f"Summary: {SUMMARY}\n"
        "License: MIT\n"
        "Requires-Python: >=3.8\n"
        "Classifier: License :: OSI Approved :: MIT License\n"
        "Classifier: Operating System :: POSIX :: Linux\n"
        "Classifier: Programming Language :: Rust\n"
        "Description-Content-Type: text/markdown\n\n"
    ) + readme.read_text()
    files = [
        (f"mcpport-{version}.data/scripts/mcpport", binary.read_bytes(), 0o755),
        (f"{info}/METADATA", metadata.encode(), 0o644),
        (f"{info}/WHEEL", wheel_file(WHEEL_PLATFORMS[arch]).encode(), 0o644),
    ]
    record = "".join(f"{path},sha256={b64(hashlib.sha256(data).digest())},{len(data)}\n" for path, data, _ in files)
    files.append((f"{info}/RECORD", (record + f"{info}/RECORD,,\n").encode(), 0o644))
    out = dist / name
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data, mode in files:
            entry = zipfile.ZipInfo(path, date_time=(2023, 11, 14, 22, 13, 20))
            entry.external_attr = (0o100000 | mode) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(entry, data)
    return out


def wheel_file(platforms: str) -> str:
    """The WHEEL file: one `Tag:` line per expanded tag, as the wheel spec asks."""
    tags = "".join(f"Tag: py3-none-{platform}\n" for platform in platforms.split("."))
    return f"Wheel-Version: 1.0\nGenerator: mcpport package.sh\nRoot-Is-Purelib: false\n{tags}"


def b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# ---- tar helpers ----

def tar_bytes(entries: list[tuple], gz: bool = True) -> bytes:
    """A tar of (path, data or None for a directory, mode[, owner id]), owned by root unless
    an owner is given, at EPOCH."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        for path, data, mode, *owner in entries:
            entry = tarfile.TarInfo(path)
            uid = owner[0] if owner else 0
            entry.mtime, entry.mode, entry.uid, entry.gid = EPOCH, mode, uid, uid
            entry.uname = entry.gname = "root" if uid == 0 else ""
            if data is None:
                entry.type = tarfile.DIRTYPE
                t.addfile(entry)
            else:
                entry.size = len(data)
                t.addfile(entry, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue()


# ---- OCI image ----

OCI_PLATFORMS = {
    "amd64": {"architecture": "amd64", "os": "linux"},
    "arm64": {"architecture": "arm64", "os": "linux", "variant": "v8"},
    "arm": {"architecture": "arm", "os": "linux", "variant": "v7"},
}
USER_ID = 65532  # "nonroot", as distroless images number it


def blob(blobs: dict[str, bytes], data: bytes, media_type: str) -> dict:
    """Adds `data` to the layout's blobs; its descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    blobs[f"blobs/sha256/{digest}"] = data
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def oci(dist: Path, version: str, ca_bundle: Path, images: dict[str, Path]) -> Path:
    # The layout is made in memory and written once, as the tar that ships (SHA256SUMS covers it).
    blobs: dict[str, bytes] = {}
    passwd = f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER_ID}:{USER_ID}:nonroot:/home/nonroot:/sbin/nologin\n"
    group = f"root:x:0:\nnonroot:x:{USER_ID}:\n"
    manifests = []
    for arch, binary in images.items():
        files = [
            ("etc", None, 0o755),
            ("etc/passwd", passwd.encode(), 0o644),
            ("etc/group", group.encode(), 0o644),
            ("etc/ssl", None, 0o755),
            ("etc/ssl/certs", None, 0o755),
            ("etc/ssl/certs/ca-certificates.crt", ca_bundle.read_bytes(), 0o644),
            ("home", None, 0o755),
            ("home/nonroot", None, 0o700, USER_ID),
            ("tmp", None, 0o1777),
            ("usr", None, 0o755),
            ("usr/bin", None, 0o755),
            ("usr/bin/mcpport", binary.read_bytes(), 0o755),
        ]
        raw = tar_bytes(files, gz=False)
        layer = gzip.compress(raw, mtime=0)
        layer_desc = blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar+gzip")
        config = {
            "created": "2023-11-14T22:13:20Z",
            **OCI_PLATFORMS[arch],
            "config": {
                "User": f"{USER_ID}:{USER_ID}",
                "Env": ["PATH=/usr/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "HOME=/home/nonroot"],
                "Entrypoint": ["/usr/bin/mcpport"],
                # Never an open gateway by default: client tokens come from a secret (one per
                # line), and without it the gateway does not start.
                "Cmd": ["gateway", "--host", "0.0.0.0", "--port", "8765", "--auth-token-file", "/run/secrets/mcpport-tokens"],
                "ExposedPorts": {"8765/tcp": {}},
                "WorkingDir": "/home/nonroot",
                "Labels": {
                    "org.opencontainers.image.title": "mcpport",
                    "org.opencontainers.image.description": SUMMARY,
                    "org.opencontainers.image.version": version,
                    "org.opencontainers.image.licenses": "MIT",
                },
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "scripts/package.sh"}],
        }
        config_desc = blob(blobs, json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        desc = blob(blobs, json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
        desc["platform"] = {k: v for k, v in OCI_PLATFORMS[arch].items()}
        desc["annotations"] = {"org.opencontainers.image.ref.name": f"{version}-{arch}"}
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    index_desc = blob(blobs, json.dumps(index, sort_keys=True).encode(), "application/vnd.oci.image.index.v1+json")
    # The layout's own index names one image, the multi-architecture index, under the version
    # tag (`podman load` and `skopeo copy --all` take it whole, each platform its own manifest).
    index_desc["annotations"] = {"org.opencontainers.image.ref.name": version}
    top = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [index_desc]}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), **blobs}
    files["index.json"] = json.dumps(top, sort_keys=True, indent=1).encode()
    dirs = [("blobs", None, 0o755), ("blobs/sha256", None, 0o755)]
    archive = dist / f"mcpport-{version}-oci.tar"
    archive.write_bytes(tar_bytes(dirs + [(path, files[path], 0o644) for path in sorted(files)], gz=False))
    return archive


# ---- OpenWrt ipk ----

def ipk(dist: Path, version: str, arch: str, binary: Path, contrib: Path) -> Path:
    control = (
        "Package: mcpport\n"
        f"Version: {version}-1\n"
        "Source: mcpport\n"
        "SourceName: mcpport\n"
        "License: MIT\n"
        "Section: net\n"
        "Maintainer: mcpport maintainers\n"
        f"Architecture: {arch}\n"
        f"Installed-Size: {binary.stat().st_size}\n"
        f"Description: {SUMMARY}\n"
    )
    conffiles = "/etc/config/mcpport\n/etc/mcpport/servers.json\n"
    postinst = (
        "#!/bin/sh\n"
        "# Tokens made once, on first install, in files only root reads.\n"
        '[ -n "$IPKG_INSTROOT" ] && exit 0\n'
        "umask 077\n"
        "for f in auth-tokens register-tokens; do\n"
        '    [ -e "/etc/mcpport/$f" ] || { head -c 32 /dev/urandom | hexdump -ve \'1/1 "%.2x"\'; echo; } > "/etc/mcpport/$f"\n'
        "done\n"
        "[ -e /etc/mcpport/register-headers ] || : > /etc/mcpport/register-headers\n"
        "exit 0\n"
    )
    prerm = (
        "#!/bin/sh\n"
        '[ -n "$IPKG_INSTROOT" ] && exit 0\n'
        "for s in mcpport-gateway mcpport-edge; do\n"
        '    /etc/init.d/$s stop 2>/dev/null; /etc/init.d/$s disable 2>/dev/null\n'
        "done\n"
        "exit 0\n"
    )
    postrm = (
        "#!/bin/sh\n"
        "# The token files the postinst made go with the package (opkg keeps changed conffiles).\n"
        '[ -n "$IPKG_INSTROOT" ] && exit 0\n'
        "rm -f /etc/mcpport/auth-tokens /etc/mcpport/register-tokens /etc/mcpport/register-headers\n"
        "rmdir /etc/mcpport 2>/dev/null\n"
        "exit 0\n"
    )
    control_tar = tar_bytes([
        ("./", None, 0o755),
        ("./control", control.encode(), 0o644),
        ("./conffiles", conffiles.encode(), 0o644),
        ("./postinst", postinst.encode(), 0o755),
        ("./prerm", prerm.encode(), 0o755),
        ("./postrm", postrm.encode(), 0o755),
    ])
    data_tar = tar_bytes([
        ("./", None, 0o755),
        ("./usr/", None, 0o755),
        ("./usr/bin/", None, 0o755),
        ("./usr/bin/mcpport", binary.read_bytes(), 0o755),
        ("./etc/", None, 0o755),
        ("./etc/init.d/", None, 0o755),
        ("./etc/init.d/mcpport-gateway", (contrib / "openwrt/mcpport-gateway").read_bytes(), 0o755),
        ("./etc/init.d/mcpport-edge", (contrib / "openwrt/mcpport-edge").read_bytes(), 0o755),
        ("./etc/config/", None, 0o755),
        ("./etc/config/mcpport", (contrib / "openwrt/mcpport.config").read_bytes(), 0o600),
        ("./etc/mcpport/", None, 0o700),
        ("./etc/mcpport/servers.json", (contrib / "debian/servers.json").read_bytes(), 0o600),
    ])
    outer = tar_bytes([
        ("./debian-binary", b"2.0\n", 0o644),
        ("./data.tar.gz", data_tar, 0o644),
        ("./control.tar.gz", control_tar, 0o644),
    ])
    out = dist / f"mcpport_{version}-1_{arch}.ipk"
    out.write_bytes(outer)
    return out


def main(argv: list[str]) -> None:
    kind, dist, version = argv[0], Path(argv[1]), argv[2]
    dist.mkdir(parents=True, exist_ok=True)
    if kind == "wheel":
        print(wheel(dist, version, argv[3], Path(argv[4]), Path(argv[5])))
    elif kind == "oci":
        images = dict(arg.split("=", 1) for arg in argv[4:])
        print(oci(dist, version, Path(argv[3]), {a: Path(b) for a, b in images.items()}))
    elif kind == "ipk":
        print(ipk(dist, version, argv[3], Path(argv[4]), Path(argv[5])))
    else:
        sys.exit(f"unknown kind {kind}")


if __name__ == "__main__":
    main(sys.argv[1:])
