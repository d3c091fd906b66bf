"""The package's shape, checked: imports between modules (lazy ones included), layers, the one
door to the CPU kernels, and where printing, flag parsing and long code live.

``python benchmarks/house.py`` prints the import graph (module -> modules it imports), the
module path of the quickstart (``--trace``) and every broken rule; tests/test_house.py asserts
the rules.
"""
from __future__ import annotations

import ast
import pathlib
import sys
from typing import Iterator

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PACKAGE = "deepae_jax"

# Lower layers first; a module may import its own layer or lower ones. A module's layer is that
# of the longest entry its dotted name (after the package's) starts with.
LAYERS = (
    ("settings", "run.files", "extras", "recipes"),  # flag machinery, file names, extras
    ("core",),
    ("kernels",),
    ("data",),
    ("devices",),
    ("baseline", "evaluation"),
    ("config",),
    ("run",),
    ("training",),
    ("inference", "recommend", "export"),
    ("api", "serve"),
    ("cli", "main", "__main__"),
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
KERNEL_DOORS = 1  # modules outside kernels/ that may import it


def modules(src: pathlib.Path = SRC) -> dict[str, pathlib.Path]:
    """{dotted module name: file} for every module of the package."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(module: str, path: pathlib.Path, known: dict[str, pathlib.Path]
            ) -> Iterator[tuple[str, int, bool]]:
    """(imported package module, line, lazy) for each import of the package in ``path``; lazy:
    inside a function."""
    tree = ast.parse(path.read_text())
    entry = main_block_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    lazy_lines = {n.lineno for f in ast.walk(tree)
                  if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        targets = []
        if getattr(node, "lineno", 0) in entry:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != module and target != PACKAGE:
                yield target, node.lineno, node.lineno in lazy_lines


def main_block_lines(tree: ast.Module) -> set[int]:
    """The lines of ``if __name__ == "__main__":`` blocks: a module's command-line alias (e.g.
    ``python -m deepae_jax.data.split``), which hands over to cli/ and is part of it."""
    lines = set()
    for node in tree.body:
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and isinstance(test, ast.Compare) and \
                getattr(test.left, "id", "") == "__name__":
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def graph(known: dict[str, pathlib.Path]) -> dict[str, dict[str, tuple[int, bool]]]:
    return {m: {t: (line, lazy) for t, line, lazy in imports(m, p, known)}
            for m, p in known.items()}


def layer(module: str) -> int:
    name = module[len(PACKAGE) + 1:] or "__init__"
    if name.endswith("__main__"):  # python -m PACKAGE.X: a command-line entry point
        return len(LAYERS) - 1
    best, found = -1, len(LAYERS)
    for i, entries in enumerate(LAYERS):
        for entry in entries:
            if (name == entry or name.startswith(entry + ".")) and len(entry) > best:
                best, found = len(entry), i
    return found


def cycles(g: dict[str, dict]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, {}):
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

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            visit(v)
    return out


def _is_package_init(module: str, known) -> bool:
    return known[module].name == "__init__.py"


def broken_rules(src: pathlib.Path = SRC) -> list[str]:
    """Every broken rule, one line each (empty: the house holds)."""
    known = modules(src)
    g = graph(known)
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(g)]
    for m, targets in g.items():
        for t, (line, lazy) in targets.items():
            if _is_package_init(t, known) and t in (f"{PACKAGE}.serve",):
                continue
            if layer(t) > layer(m) and not _is_package_init(m, known):
                problems.append(f"{m}:{line} imports {t}, a higher layer" +
                                (" (lazily)" if lazy else ""))
            if m.startswith(f"{PACKAGE}.core") and not t.startswith(f"{PACKAGE}.core"):
                problems.append(f"{m}:{line} imports {t}: core/ imports only core/")
    doors = sorted({m for m, targets in g.items() if not m.startswith(f"{PACKAGE}.kernels")
                    for t in targets if t.startswith(f"{PACKAGE}.kernels")})
    if len(doors) > KERNEL_DOORS:
        problems.append(f"{len(doors)} modules import kernels/ (at most {KERNEL_DOORS}): "
                        + ", ".join(doors))
    for m, path in known.items():
        problems += _code_rules(m, path)
    return problems


def _code_rules(module: str, path: pathlib.Path) -> list[str]:
    text = path.read_text()
    tree = ast.parse(text)
    out = []
    n_lines = len(text.splitlines())
    if n_lines > MAX_MODULE_LINES:
        out.append(f"{module}: {n_lines} lines (at most {MAX_MODULE_LINES})")
    cli = module.split(".")[1:2] in (["cli"], ["main"], ["__main__"]) or \
        module.endswith(".__main__")
    entry = main_block_lines(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in entry:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{module}.{node.name}: {length} lines (at most "
                           f"{MAX_FUNCTION_LINES})")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            if "argparse" in names:
                out.append(f"{module}:{node.lineno} imports argparse (flags come from the "
                           "settings dataclasses)")
        if not cli and isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "print" and not any(
                    k.arg == "file" for k in node.keywords):
                out.append(f"{module}:{node.lineno} prints (library code logs or returns)")
            if isinstance(f, ast.Attribute) and f.attr == "exit" and getattr(
                    f.value, "id", "") == "sys":
                out.append(f"{module}:{node.lineno} calls sys.exit (only cli/ exits)")
    for node in tree.body:  # module-level flag definitions
        call = node.value if isinstance(node, ast.Expr) else getattr(node, "value", None)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
                call.func.attr.startswith("DEFINE_"):
            out.append(f"{module}:{node.lineno} defines a module-global flag")
    return out


def main() -> None:
    known = modules()
    g = graph(known)
    short = lambda m: m[len(PACKAGE) + 1:] or PACKAGE  # noqa: E731
    for m in sorted(g):
        deps = " ".join(short(t) + ("*" if lazy else "") for t, (_, lazy) in sorted(g[m].items()))
        print(f"{short(m):32s} -> {deps}")
    print(f"\n{len(known)} modules; * = lazy import")
    problems = broken_rules()
    print(f"\n{len(problems)} broken rules" + (":" if problems else ""))
    for p in problems:
        print("  " + p)


if __name__ == "__main__":
    main()
