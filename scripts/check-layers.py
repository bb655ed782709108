#!/usr/bin/env python3
"""Check that no crate of the workspace has an import circle, and the `lb` package's module
layering (docs/ARCHITECTURE.md).

For every crate of the workspace (the `members` of Cargo.toml; `--crate NAME`, repeatable, picks
some: a package name such as `lb`, `lb-balance`, `analysis`, or a member's folder), reads every
file under its `src/` (module = file path), collects the modules each one names (`crate::…`,
`super::…` paths, and the library's own name, e.g. `lb::…` or `analysis::…`, as the binary
names it), and fails when
  - two files import each other, directly or through a longer circle (a module may use its own
    children, which parent modules re-export), or
  - in `lb` only, a layer imports one it must not: `metrics` imports nothing else of `lb`;
    `state` and `config` import none of control/data/api; `control` imports neither `data` nor
    `api`; `api` does not import `data`.
The binary's files (`main.rs` and the modules it declares with `mod x;`) are modules of their
own (`<bin>::…`). Test files (`tests.rs`, `*/tests/*.rs`) are skipped. Prints each crate's
edges and what it found, per crate; exit status 1 on a violation in any crate checked, 2 on an
unknown `--crate`.
"""
import argparse
import pathlib
import re
import sys

WORKSPACE = pathlib.Path(__file__).resolve().parent.parent
# Layer rules, per package.
FORBIDDEN = {
    "lb": {
        "metrics": {"state", "config", "control", "data", "api"},
        "state": {"control", "data", "api"},
        "config": {"control", "data", "api"},
        "control": {"data", "api"},
        "api": {"data"},
    },
}
BIN = "<bin>"


def members() -> list:
    """The workspace members' folders, in Cargo.toml's order."""
    text = (WORKSPACE / "Cargo.toml").read_text()
    block = re.search(r"^members\s*=\s*\[(.*?)\]", text, re.S | re.M)
    return re.findall(r'"([^"]+)"', block.group(1)) if block else []


def package(folder: str) -> tuple:
    """(package name, library name) of the member in `folder`."""
    text = (WORKSPACE / folder / "Cargo.toml").read_text()
    name = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M).group(1)
    lib = re.search(r'^\[lib\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M)
    return name, lib.group(1) if lib else name.replace("-", "_")


def resolve(files: set, path: list) -> tuple:
    """The longest prefix of `path` that is a module file."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return ()


PATH = r"\b({roots})((?:::[a-z_][a-z0-9_]*)+)"
USE_GROUP = r"\buse\s+({roots})::((?:[a-z_][a-z0-9_]*::)*)\{{([^;]*)\}}"


def check_crate(name: str, lib: str, root: pathlib.Path) -> tuple:
    """(printed lines, problems, module count) of one crate's `src/`."""
    bin_modules = set()
    main = root / "main.rs"
    if main.exists():
        bin_modules = set(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;",
                                     main.read_text(), re.M))

    def module_of(path: pathlib.Path) -> tuple:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts == ["main"] or (len(parts) == 1 and parts[0] in bin_modules):
            return (BIN, parts[0])
        if parts[-1] in ("mod", "lib"):
            parts.pop()
        return tuple(parts)

    sources = {}
    for f in sorted(root.rglob("*.rs")):
        if f.name == "tests.rs" or "tests" in f.relative_to(root).parts[:-1]:
            continue
        sources[module_of(f)] = f.read_text()
    files = set(sources)
    roots = "crate|super|" + re.escape(lib)
    path_re = re.compile(PATH.format(roots=roots))
    group_re = re.compile(USE_GROUP.format(roots=roots), re.S)
    edges = {m: set() for m in files}
    for module, text in sources.items():
        # Drop comments and strings' obvious cases: only lines of code count.
        code = "\n".join(l.split("//")[0] for l in text.splitlines())
        found = []
        for start, rest in path_re.findall(code):
            found.append((start, [p for p in rest.split("::") if p]))
        for start, prefix, group in group_re.findall(code):
            base = [p for p in prefix.split("::") if p]
            for item in re.split(r"[,\s]+", group):
                item = item.strip().split("::")[0]
                if re.fullmatch(r"[a-z_][a-z0-9_]*", item or "") and item != "self":
                    found.append((start, base + [item]))
        in_bin = module[:1] == (BIN,)
        for start, path in found:
            if start == lib:
                absolute = path
            elif in_bin:
                # The binary's `crate` (and its top-level modules' `super`) is main.rs.
                absolute = [BIN] + path
            elif start == "crate":
                absolute = path
            else:
                # `super` is the parent of the module the file defines (for mod.rs too).
                absolute = list(module)[:-1] + path
            target = resolve(files, absolute)
            if target and target != module and module[: len(target)] != target:
                edges[module].add(target)
    problems = []
    rules = FORBIDDEN.get(name, {})
    for module, targets in edges.items():
        layer = module[0] if module else ""
        for t in targets:
            if t and t[0] in rules.get(layer, set()):
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
    lines = [
        f"{name}: {'::'.join(m) or '<lib>'}: {', '.join(sorted('::'.join(t) for t in edges[m])) or '-'}"
        for m in sorted(edges)
    ]
    return lines, problems, len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crate", action="append", default=[], metavar="NAME",
                        help="check only this crate (package name or member folder); repeatable")
    args = parser.parse_args()
    crates = []
    for folder in members():
        name, lib = package(folder)
        crates.append((name, folder, lib))
    if args.crate:
        known = {c for name, folder, _ in crates for c in (name, folder)}
        unknown = [c for c in args.crate if c not in known]
        if unknown:
            print(f"unknown crate: {', '.join(unknown)} (known: "
                  f"{', '.join(name for name, _, _ in crates)})", file=sys.stderr)
            return 2
        crates = [c for c in crates if c[0] in args.crate or c[1] in args.crate]
    failed = False
    summary = []
    for name, folder, lib in crates:
        root = WORKSPACE / folder / "src"
        if not root.is_dir():
            continue
        lines, problems, count = check_crate(name, lib, root)
        print("\n".join(lines))
        if problems:
            failed = True
            print("\n".join(f"{name}: {p}" for p in problems), file=sys.stderr)
            summary.append(f"{name} ({folder}/src): {count} modules, {len(problems)} problem(s)")
        else:
            rules = ", no layer violation" if name in FORBIDDEN else ""
            summary.append(f"{name} ({folder}/src): {count} modules, no import circle{rules}")
    print("\n".join(f"layers: {s}" for s in summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
