"""The package's shape, measured: long functions and modules that import each other.

    python scripts/structure.py            # report; exit 1 if a limit is broken
    python scripts/structure.py --max-lines 60

* **Long functions**: lines of code of every function and method in ``src/`` (from its ``def`` to
  its last line; blank lines, comment lines and the docstring not counted), listed above the limit.
* **Import circles**: module A imports module B (anywhere in A: at the top or inside a function)
  and B imports A. ``from P import name`` counts as importing ``P.name`` when that is a module, else
  ``P``; a package's own ``__init__`` being run first by Python is not counted as an import.
* **Longer cycles** (A -> B -> C -> A) are listed too, as strongly connected groups of modules.

The tests (``tests/test_structure.py``) hold the package to these limits.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "fairdistill"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}


def _code_lines(source: str) -> set[int]:
    """Line numbers that hold code (not blank, not only a comment)."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            continue
        if tok.type == tokenize.ENDMARKER:
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
    first = fn.body[0] if fn.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return set(range(first.lineno, first.end_lineno + 1))
    return set()


def _visit(node: ast.AST, prefix: str, module: str, code: set[int], out: list[tuple[int, str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            span = set(range(child.lineno, child.end_lineno + 1)) - _docstring_lines(child)
            out.append((len(span & code), f"{module}:{prefix}{child.name}"))
            _visit(child, f"{prefix}{child.name}.", module, code, out)
        elif isinstance(child, ast.ClassDef):
            _visit(child, f"{prefix}{child.name}.", module, code, out)
        else:
            _visit(child, prefix, module, code, out)


def function_lengths(src: Path = SRC) -> list[tuple[int, str]]:
    """(lines of code, 'module:qualified.name') of every function, longest first."""
    out: list[tuple[int, str]] = []
    for name, path in modules(src).items():
        source = path.read_text()
        _visit(ast.parse(source), "", name, _code_lines(source), out)
    return sorted(out, reverse=True)


def imports(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body)."""
    mods = modules(src)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    root = ".".join(base[: len(base) - node.level + 1])
                    origin = f"{root}.{node.module}" if node.module else root
                else:
                    origin = node.module or ""
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    targets.append(sub if sub in mods else origin)
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def mutual_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            strong(v)
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-lines", type=int, default=60)
    args = ap.parse_args()
    long = [(n, f) for n, f in function_lengths() if n > args.max_lines]
    graph = imports()
    pairs = mutual_imports(graph)
    groups = cycles(graph)
    print(f"functions over {args.max_lines} lines of code: {len(long)}")
    for n, f in long:
        print(f"  {n:4d}  {f}")
    print(f"modules that import each other: {len(pairs)}")
    for a, b in pairs:
        print(f"  {a} <-> {b}")
    print(f"import cycles (strongly connected groups): {len(groups)}")
    for g in groups:
        print("  " + " -> ".join(g))
    return 1 if long or pairs else 0


if __name__ == "__main__":
    raise SystemExit(main())
