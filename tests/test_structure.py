"""The package's shape: no import cycles between modules, no private names taken from the CLI.

Reads the source with `ast` (nothing is imported). An edge A -> B means module A imports
module B at module level (including inside top-level `if` / `try` blocks, not inside
functions or classes, where an import runs only when called). `from P import x` is an
edge to the module P.x when there is one, else to P itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sinddm"


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name `from <node.module>` refers to, inside `module`."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, nodes) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for the import statements among `nodes`."""
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((_absolute(module, node), [a.name for a in node.names], node.lineno))
    return out


def _module_level(tree: ast.Module):
    """Statements that run on import: top level, and inside top-level if / try / with blocks."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody"):
                todo += getattr(node, field, [])
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]


def import_graph(function_local: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at module level; anywhere with `function_local`)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = ast.walk(tree) if function_local else _module_level(tree)
        for target, names, _ in _imports(module, nodes):
            if not target.startswith("sinddm"):
                continue
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if len(hits) < len(names) or not names:  # some names are attributes of `target` itself
                hits.append(target)
            graph[module].update(h for h in hits if h in MODULES and h != module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "sinddm.eval.metrics" in graph and "sinddm.cli" in graph
    assert "sinddm.eval.swd" in graph["sinddm.eval.metrics"]  # a relative import, resolved
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_even_through_function_local_imports():
    """No circle at all, function-local imports included (which covers the module-level graph, a
    subgraph: its cycles would fail at import). The parts are asserted first only to name the
    narrowest circle: sinddm.eval is layered, metrics < run, compare < suite < commands."""
    anywhere = import_graph(function_local=True)
    assert find_cycles(import_graph()) == []
    eval_graph = {m: {t for t in ts if t.startswith("sinddm.eval")}
                  for m, ts in anywhere.items() if m.startswith("sinddm.eval")}
    assert find_cycles(eval_graph) == []
    assert find_cycles(anywhere) == []


def test_the_library_never_imports_the_cli():
    """A library with a command line on top: only the CLI (and `python -m sinddm`) import sinddm.cli,
    and `python -m sinddm` takes none of the CLI's private helpers (anywhere in a module,
    function-local imports included)."""
    bad, private = [], []
    for module, path in MODULES.items():
        if module == "sinddm.cli" or module.startswith("sinddm.cli."):
            continue
        for target, names, line in _imports(module, ast.walk(ast.parse(path.read_text(), str(path)))):
            if target == "sinddm.cli" or target.startswith("sinddm.cli."):
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                private += [f"{where}: {n}" for n in names if n.startswith("_")]
                if module != "sinddm.__main__":
                    bad.append(where)
    assert private == []
    assert bad == []


def test_modules_stay_small():
    """About 400 lines at most (a little slack for a docstring or a table, none for a second job)."""
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > 450} == {}
