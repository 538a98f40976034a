"""Summarizes one conformance run: a table of the scenarios the suite ran, from the checks.json
files it wrote (`-o DIR`: DIR/server-<scenario>-<timestamp>/checks.json), and the failed checks.

Usage: python3 summary.py RESULTS_DIR [REQUIREMENTS_YAML]. With a requirements file (the suite's
`requirements/<revision>.yaml`), the scenarios its `server:` list names are the scored ones: a
line says how many of them passed, and only they decide the exit status (a required scenario that
did not run counts as failed). Exit status 1 when a scored scenario failed or nothing ran.
Standard library only; scripts/conformance.sh runs it with the system python3.
"""

import json
import re
import sys
from pathlib import Path

TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def main() -> int:
    results = Path(sys.argv[1])
    scenarios = []
    for checks_file in sorted(results.glob("*/checks.json"), key=lambda p: p.stat().st_mtime):
        name = TIMESTAMP.sub("", checks_file.parent.name).removeprefix("server-")
        try:
            checks = json.loads(checks_file.read_text())
        except (OSError, ValueError) as e:
            checks = [{"id": name, "status": "FAILURE", "errorMessage": f"unreadable checks.json: {e}"}]
        scenarios.append((name, checks))
    if not scenarios:
        print(f"  no results in {results}: the suite did not run (see suite.log beside it)")
        return 1

    width = max(len(name) for name, _ in scenarios)
    required_set = set(required_server_scenarios(Path(sys.argv[2]))) if len(sys.argv) > 2 else None
    counts = {"PASS": 0, "FAIL": 0}
    failures = []
    for name, checks in scenarios:
        by_status = {}
        for c in checks:
            by_status[c.get("status")] = by_status.get(c.get("status"), 0) + 1
        failed = by_status.get("FAILURE", 0)
        verdict = "FAIL" if failed or not checks else "PASS"
        counts[verdict] += 1
        if required_set is not None and name not in required_set:
            verdict += " (not scored)"
        extra = "".join(
            f", {by_status[s]} {s.lower()}" for s in ("WARNING", "INFO", "SKIPPED") if by_status.get(s)
        )
        print(f"  {name:<{width}}  {verdict}  {by_status.get('SUCCESS', 0)} passed, {failed} failed{extra}")
        failures += [(name, c) for c in checks if c.get("status") == "FAILURE"]
    failed_names = {name for name, _ in failures} | {name for name, checks in scenarios if not checks}
    status = 1 if counts["FAIL"] else 0
    scored = None
    if len(sys.argv) > 2:
        revision = Path(sys.argv[2]).stem
        required = required_server_scenarios(Path(sys.argv[2]))
        ran = {name for name, _ in scenarios}
        passed = [n for n in required if n in ran and n not in failed_names]
        scored = set(required)
        print(f"  -- scored ({revision}): {len(passed)} of {len(required)} required scenarios passed")
        others = [name for name, _ in scenarios if name not in scored]
        if others:
            other_failed = sum(1 for n in others if n in failed_names)
            # Scenarios this revision does not require (extensions, other revisions): shown, never a
            # failure of the run.
            print(f"  -- not scored by {revision}: {len(others) - other_failed} of {len(others)} other scenarios "
                  f"passed (not required, not counted)")
        for n in required:
            if n not in ran:
                print(f"  MISSING {n}: required, but the suite did not run it")
        status = 0 if len(passed) == len(required) else 1
    else:
        print(f"  -- {counts['PASS']} scenarios passed, {counts['FAIL']} failed")
    for name, c in failures:
        message = (c.get("errorMessage") or "").strip().replace("\n", " ")
        if len(message) > 300:
            message = message[:300] + "…"
        label = "FAILED" if scored is None or name in scored else "NOT SCORED, failed"
        print(f"  {label} {name}: [{c.get('id')}] {message}")
    return status


def required_server_scenarios(path: Path) -> list[str]:
    """The `server:` list of a requirements file (a flat YAML list; no YAML library needed)."""
    names, inside = [], False
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.rstrip() == "server:"
            continue
        if inside and line.startswith("  - "):
            names.append(line[4:].strip())
    return names


if __name__ == "__main__":
    sys.exit(main())
