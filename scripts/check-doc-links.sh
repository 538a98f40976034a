#!/usr/bin/env bash
# Checks the links of the repository's Markdown files, offline: every relative link must point at
# a file or directory inside the repository, and every #anchor at a heading of the file it names
# (GitHub's rule for heading ids). Links in fenced code blocks and `code spans` are not links and
# are skipped, and so are links with a scheme (https:, mailto:). Also checks that README.md links
# every file in docs/, so none is left unreachable.
#
# Usage: bash scripts/check-doc-links.sh [FILE.md...]   (default: every Markdown file git tracks,
# or, outside a git checkout, every *.md below the repository but target/ and dot-directories).
# Needs bash and python3 (standard library only). Exit status 1 if a link is broken.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.md' ':!:**/node_modules/**')
    else
        mapfile -t files < <(find . -name '*.md' -not -path './target/*' -not -path '*/.*/*' \
            -not -path '*/node_modules/*' | sed 's|^\./||' | sort)
    fi
fi

command -v python3 >/dev/null || { echo "check-doc-links: python3 is needed" >&2; exit 1; }
exec python3 - "${files[@]}" <<'PY'
import os
import re
import sys
import unicodedata

repo = os.getcwd()
files = [f for f in sys.argv[1:] if os.path.isfile(f)]
errors = []


def prose(lines):
    """Yields (line number, line) for the lines outside fenced code blocks."""
    fence = None
    for n, line in enumerate(lines, 1):
        m = re.match(r"^ {0,3}(`{3,}|~{3,})(.*)$", line)
        if fence:
            # A fence closes with the same character, at least as long, and nothing after it.
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not m.group(2).strip():
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        yield n, line


def blank_code_spans(line):
    return re.sub(r"(`+)(.+?)\1", lambda c: " " * len(c.group(0)), line)


def slug(heading):
    """GitHub's id for a heading: inline markup dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "").strip().lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in " -_" or cat[0] in "LN" or cat == "Mn":
            out.append("-" if ch == " " else ch)
    return "".join(out)


anchors_cache = {}


def anchors(path):
    """The ids of a Markdown file's headings (repeats get -1, -2...), and its explicit anchors."""
    if path not in anchors_cache:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        seen, ids = {}, set()
        for _, line in prose(lines):
            h = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
            if h:
                base = slug(h.group(1))
                n = seen.get(base, 0)
                seen[base] = n + 1
                ids.add(base if n == 0 else f"{base}-{n}")
            ids.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', line))
        anchors_cache[path] = ids
    return anchors_cache[path]


INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")

linked = {}
for md in files:
    with open(md, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    targets = []
    for n, line in prose(lines):
        text = blank_code_spans(line)
        targets += [(n, m.group(1)) for m in INLINE.finditer(text)]
        m = REFDEF.match(text)
        if m:
            targets.append((n, m.group(1)))
    for n, target in targets:
        where = f"{md}:{n}: {target or '(empty)'}"
        if not target:
            errors.append(f"{where}: empty link")
            continue
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
            continue  # https:, mailto: and the like: not checked offline
        if target.startswith("/"):
            errors.append(f"{where}: absolute path; use a path relative to {md}")
            continue
        path, _, anchor = target.partition("#")
        path = path.split("?", 1)[0]
        resolved = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
        if os.path.relpath(os.path.join(repo, resolved), repo).startswith(".."):
            errors.append(f"{where}: points outside the repository")
            continue
        if not os.path.exists(resolved):
            errors.append(f"{where}: no such file {resolved}")
            continue
        linked.setdefault(md, set()).add(resolved)
        if anchor:
            if os.path.isdir(resolved) or not resolved.endswith(".md"):
                errors.append(f"{where}: an #anchor on something that is not a Markdown file")
            elif anchor not in anchors(resolved):
                errors.append(f"{where}: {resolved} has no heading with the id #{anchor}")

if "README.md" in files and os.path.isdir("docs"):
    for doc in sorted(os.listdir("docs")):
        path = os.path.join("docs", doc)
        if doc.endswith(".md") and path not in linked.get("README.md", set()):
            errors.append(f"README.md: does not link {path}")

for e in errors:
    print(f"check-doc-links: {e}", file=sys.stderr)
if errors:
    print(f"check-doc-links: {len(errors)} broken link(s) in {len(files)} file(s)", file=sys.stderr)
    sys.exit(1)
print(f"check-doc-links: {len(files)} file(s), every relative link resolves")
PY
