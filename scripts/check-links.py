#!/usr/bin/env python3
"""Check every relative link in the repository's Markdown files.

A link `[text](path)` or `[text](path#anchor)` must name a file or directory of the repository
(relative to the Markdown file), never a place outside it; `#anchor` alone or after a Markdown
file must match one of that file's headings (GitHub's anchor rules). Links with a scheme
(`https:`, `mailto:`) are not checked. Exit status 1 on a broken link.
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def anchors(md: pathlib.Path) -> set:
    found = set()
    in_code = False
    for line in md.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = m.group(1).strip().lower()
            text = re.sub(r"[^\w\- ]", "", text)
            found.add(text.replace(" ", "-"))
    return found


def markdown_files() -> list:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [ROOT / f for f in listed]


def main() -> int:
    broken = []
    for md in markdown_files():
        in_code = False
        for number, line in enumerate(md.read_text().splitlines(), 1):
            if line.startswith("```"):
                in_code = not in_code
            if in_code:
                continue
            line = re.sub(r"`[^`]*`", "", line)
            for groups in LINK.findall(line):
                target = groups[0] or groups[1]
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue
                path, _, anchor = target.partition("#")
                where = f"{md.relative_to(ROOT)}:{number}: {target}"
                dest = (md.parent / path).resolve() if path else md
                try:
                    dest.relative_to(ROOT)
                except ValueError:
                    broken.append(f"{where} (outside the repository)")
                    continue
                if not dest.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    broken.append(f"{where} (no heading #{anchor})")
    for b in broken:
        print(b, file=sys.stderr)
    if broken:
        return 1
    print("links: every relative link in the Markdown files resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
