"""Prints the command line a systemd unit's ExecStart runs, as systemd would expand it from the
unit's Environment= and EnvironmentFile= (read inside ROOT), one argument per line: for
scripts/test-packages.sh, which runs it in an installed root where no systemd runs.

  python3 unit_cmd.py ROOT UNIT_PATH_IN_ROOT [NAME=VALUE...]

NAME=VALUE: what systemd itself would set (CREDENTIALS_DIRECTORY, say). The specifiers %l and %H
become this machine's short and full host names.

Expansion as systemd.service(5) says: `${VAR}` is one argument, `$VAR` alone splits on
whitespace; words are split shell-like (quotes group). Also prints `#user NAME` first when the
unit has User=.
"""

import re
import shlex
import socket
import sys
from pathlib import Path


def logical_lines(text: str) -> list[str]:
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [line for line in lines if line and not line.lstrip().startswith(("#", ";"))]


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        words = shlex.split(value) if value.strip() else [""]
        env[key.strip()] = " ".join(words)
    return env


def main(root: Path, unit: str, given: list[str]) -> None:
    settings: dict[str, list[str]] = {}
    for line in logical_lines((root / unit.lstrip("/")).read_text()):
        if "=" in line and not line.startswith("["):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    env: dict[str, str] = dict(g.split("=", 1) for g in given)
    for value in settings.get("Environment", []):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    for value in settings.get("EnvironmentFile", []):
        optional = value.startswith("-")
        path = root / value.lstrip("-").lstrip("/")
        if path.exists():
            env.update(env_file(path))
        elif not optional:
            sys.exit(f"{unit}: EnvironmentFile {value} does not exist in the installed root")
    host = socket.gethostname()
    exec_start = settings["ExecStart"][0].replace("%l", host.split(".")[0]).replace("%H", host)
    argv = []
    for word in shlex.split(exec_start):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole[1], "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m[1], ""), word))
    if "User" in settings:
        print(f"#user {settings['User'][0]}")
    for key, value in env.items():
        print(f"#env {key}={value}")
    print("\n".join(argv))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
