#!/usr/bin/env python3
"""Check the `lb` package's module layering (docs/ARCHITECTURE.md).

Reads every file under core/src, collects the modules each one names (`crate::…`, `super::…`,
`lb::…` paths), and fails when
  - two files import each other, directly or through a longer circle, or
  - a layer imports one it must not: `metrics` imports nothing else of `lb`; `state` and
    `config` import none of control/data/api; `control` imports neither `data` nor `api`; `api`
    does not import `data`.
Test files (`tests.rs`, `*/tests/*.rs`) are skipped. Prints what it found; exit status 1 on a
violation.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "core" / "src"
FORBIDDEN = {
    "metrics": {"state", "config", "control", "data", "api"},
    "state": {"control", "data", "api"},
    "config": {"control", "data", "api"},
    "control": {"data", "api"},
    "api": {"data"},
}


def module_of(path: pathlib.Path) -> tuple:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    if parts in (["main"], ["boot"]):
        return ("<bin>", parts[0])
    return tuple(parts)


def resolve(files: set, current: tuple, path: list) -> tuple:
    """The longest prefix of `path` that is a module file."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return ()


PATH = re.compile(r"\b(crate|super|lb)((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|lb)::((?:[a-z_][a-z0-9_]*::)*)\{([^;]*)\}", re.S)


def main() -> int:
    sources = {}
    for f in sorted(ROOT.rglob("*.rs")):
        if f.name == "tests.rs" or "tests" in f.relative_to(ROOT).parts[:-1]:
            continue
        sources[module_of(f)] = f.read_text()
    files = set(sources)
    edges = {m: set() for m in files}
    for module, text in sources.items():
        # Drop comments and strings' obvious cases: only lines of code count.
        code = "\n".join(l.split("//")[0] for l in text.splitlines())
        found = []
        for root, rest in PATH.findall(code):
            found.append((root, [p for p in rest.split("::") if p]))
        for root, prefix, group in USE_GROUP.findall(code):
            base = [p for p in prefix.split("::") if p]
            for item in re.split(r"[,\s]+", group):
                item = item.strip().split("::")[0]
                if re.fullmatch(r"[a-z_][a-z0-9_]*", item or "") and item != "self":
                    found.append((root, base + [item]))
        for root, path in found:
            if root in ("crate", "lb"):
                absolute = path
            else:
                # `super` is the parent of the module the file defines (for mod.rs too).
                absolute = list(module)[:-1] + path
            target = resolve(files, module, absolute)
            if target and target != module and module[: len(target)] != target:
                edges[module].add(target)
    problems = []
    for module, targets in edges.items():
        layer = module[0] if module else ""
        for t in targets:
            if t and t[0] in FORBIDDEN.get(layer, set()):
                problems.append(f"{'::'.join(module)} imports {'::'.join(t)} (layer rule)")
    # Circles: depth-first search for a back edge.
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            # A module may use its own children (parent modules re-export them).
            if t[: len(m)] == m:
                continue
            if state.get(t) == 1:
                circle = stack[stack.index(t):] + [t]
                problems.append("import circle: " + " -> ".join("::".join(c) for c in circle))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(files):
        if m not in state:
            visit(m)
    for m in sorted(edges):
        print(f"{'::'.join(m) or '<lib>'}: {', '.join(sorted('::'.join(t) for t in edges[m])) or '-'}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"layers: {len(files)} modules, no import circle, no layer violation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
