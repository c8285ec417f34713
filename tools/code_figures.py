"""Structure figures of the repository: long files and functions, import circles, registries,
config groups, ``duplicates`` pairs and ``# fmt: skip`` markers (the before/after table of issue 19).

Run from the repository root: ``python tools/code_figures.py`` (``--list`` names the long files,
long functions and circles).
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
from pathlib import Path

CODE_DIRS = ("mega", "scripts", "tools", "benchmarks")


def python_files(root: Path) -> list[Path]:
    """Tracked and untracked Python files under the code folders (tests counted apart)."""
    return sorted(p for d in CODE_DIRS for p in (root / d).rglob("*.py") if "__pycache__" not in p.parts)


def long_functions(path: Path, limit: int) -> list[str]:
    """``file:name (lines)`` for every function longer than ``limit`` lines."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{path}:{node.name} ({n})")
    return out


def module_name(root: Path, path: Path) -> str:
    """Dotted module name of a file under ``mega/``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path, lazy: bool = False) -> dict[str, set[str]]:
    """Module -> modules of ``mega`` it imports at module level (type-checking blocks excluded);
    with ``lazy`` also the imports written inside functions."""
    files = {module_name(root, p): p for p in (root / "mega").rglob("*.py") if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        nodes = list(ast.walk(tree)) if lazy else tree.body
        for node in nodes:
            if id(node) in typing_only or isinstance(node, ast.If):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), ignoring package
    ``__init__`` edges from a submodule to its own parent package (Python loads the parent first)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def edges(v: str) -> set[str]:
        return {w for w in graph[v] if not v.startswith(w + ".")}

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list", action="store_true", help="name the long files, functions and circles")
    args = parser.parse_args()
    root = Path.cwd()
    files = python_files(root)
    long_files = [(p, len(p.read_text().splitlines())) for p in files]
    long_files = [(p, n) for p, n in long_files if n > 400]
    long_fns = [f for p in files for f in long_functions(p, 60)]
    graph = import_graph(root)
    circ = circles(graph)
    lazy_circ = circles(import_graph(root, lazy=True))
    registries = [
        f"{p}:{m.group(1)}"
        for p in (root / "mega").rglob("*.py")
        for m in re.finditer(r'Registry\("([^"]+)"\)', p.read_text())
        if p.name != "registry.py"
    ]
    groups = sorted(d.name for d in (root / "configs").iterdir() if d.is_dir())
    marker = "# fmt: " + "skip"  # (spelled in two so that this file does not count itself)
    skip = sum(
        p.read_text().count(marker)
        for d in ("mega", "scripts", "tools", "benchmarks", "tests")
        for p in (root / d).rglob("*.py")
    )
    dup = subprocess.run(["duplicates", "--seconds", "120"], capture_output=True, text=True).stdout
    first = dup.splitlines()[0] if dup else "?"
    scripts = sorted(p.name for p in (root / "scripts").glob("*.py"))
    tools = sorted(p.name for p in (root / "tools").glob("*.py")) if (root / "tools").exists() else []
    print(f"python files (mega, scripts, tools, benchmarks): {len(files)}")
    print(f"files over 400 lines: {len(long_files)}")
    print(f"functions over 60 lines: {len(long_fns)}")
    print(f"import circles (module level, mega): {len(circ)}")
    print(f"import circles (any import, also inside functions): {len(lazy_circ)}")
    print(f"registries: {len(registries)}")
    print(f"config groups: {len(groups)} ({', '.join(groups)})")
    print(f"duplicates: {first}")
    print(f"# fmt: skip markers: {skip}")
    print(f"scripts/: {len(scripts)}, tools/: {len(tools)}")
    if args.list:
        for p, n in long_files:
            print(f"  long file {p.relative_to(root)} ({n})")
        for f in long_fns:
            print(f"  long function {Path(f).relative_to(root) if f.startswith('/') else f}")
        for c in lazy_circ:
            print(f"  circle {' <-> '.join(c)}")
        for r in registries:
            print(f"  registry {Path(r).relative_to(root) if r.startswith('/') else r}")


if __name__ == "__main__":
    main()
