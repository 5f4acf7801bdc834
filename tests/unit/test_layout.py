"""The package layout's rules, read from the source (docs/architecture.md, "Packages and import arrows"):
no import cycle between our modules (function-level imports included: they only hide a cycle), the import
arrows run one way (pure core <- connectors <- dataflow, dashboard, verify <- stack <- cli), and the pure core
does no I/O."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from livedash.config import PROJECT_ROOT

PACKAGES = ("livedash", "dashboard", "dataflows")
# Layer of each module, by the longest prefix that names it; a module imports only its own layer or lower ones.
LAYERS = {
    "livedash.errors": 0,
    "livedash.wait": 0,
    "livedash.output": 0,
    "livedash.times": 0,
    "livedash.pipeline": 0,  # the pure core: contract, rows, windows, aggregates, dedup
    "livedash.config": 1,
    "livedash.kafka": 2,
    "livedash.pinot": 2,
    "livedash.prometheus": 2,  # scrapes over HTTP
    "livedash.dataflow": 3,
    "livedash.verify": 3,
    "livedash.generator": 3,
    "livedash.sample": 3,
    "livedash.apply": 3,
    "dashboard": 3,
    "livedash.stack": 4,
    "dataflows": 4,
    "livedash.cli": 5,
    "livedash": 0,  # the package's own __init__
}
# What the pure core must not import: anything that talks to a server, a process or a browser.
IO_LIBRARIES = ("confluent_kafka", "kafka", "requests", "bytewax", "streamlit", "pinotdb", "subprocess", "socket")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(path: Path) -> Iterator[str]:
    """Every module name an import statement anywhere in the file names (`from a import b` names a.b too:
    b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = {t for t in imported(path) if t in mods and t != name}
        # A package's __init__ is imported with any of its modules; only an explicit import counts as an edge.
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_our_modules() -> None:
    assert cycles(graph()) == []


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if not any(m == p or m.startswith(p + ".") for p in LAYERS)]
    assert unplaced == []


def test_imports_run_from_the_outer_layers_to_the_inner_ones_only() -> None:
    upward = sorted(f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, ts in graph().items() for t in ts
                    if layer(t) > layer(m))  # fmt: skip
    assert upward == []


def test_the_pure_core_does_no_io() -> None:
    core = {m: p for m, p in modules().items() if layer(m) == 0}
    assert "livedash.pipeline.contract" in core  # the walk saw the core
    io = sorted(f"{m} imports {t}" for m, p in core.items() for t in imported(p)
                if t.split(".")[0] in IO_LIBRARIES)  # fmt: skip
    assert io == []
