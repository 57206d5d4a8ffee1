"""The package's layout holds: imports run one way (no circles, nothing reaches up the stack), and every
module says what it owns. Read from the source with ``ast``; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own layer and the layers below; one layer holds one or more rooms
# that must not import each other (io and storage know nothing of each other).
LAYERS = [
    ["irn_batch.errors"],
    ["irn_batch.io", "irn_batch.storage"],
    ["irn_batch.settings", "irn_batch.model"],
    ["irn_batch.metrics"],
    ["irn_batch.rescale"],
    ["irn_batch.quality_floor"],
    ["irn_batch.evaluation", "irn_batch.cluster"],
    ["irn_batch.pipeline"],
    ["irn_batch.serve", "irn_batch.api"],
    ["training"],
    ["irn_batch.cli", "irn_batch.demo"],
]
FACES = {"irn_batch", "irn_batch.__main__"}  # the package face and `python -m irn_batch` sit above it all


def _modules() -> dict[str, Path]:
    out = {}
    for base in ("irn_batch", "training"):
        for path in sorted((ROOT / base).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports (at any depth of the file: lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                  else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> tuple[int, str]:
    """(layer index, room) of a module: the longest room name it falls under."""
    best = None
    for i, rooms in enumerate(LAYERS):
        for room in rooms:
            if (module == room or module.startswith(room + ".")) and (best is None or len(room) > len(best[1])):
                best = (i, room)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layout.py: place it")
    return best


def test_every_module_has_a_place():
    for name in MODULES:
        if name not in FACES:
            _room(name)


def test_imports_never_reach_up_or_across():
    bad = []
    for src, targets in GRAPH.items():
        if src in FACES:
            continue
        layer, room = _room(src)
        for dst in targets:
            if dst in FACES:
                bad.append(f"{src} imports the package face {dst}")
                continue
            d_layer, d_room = _room(dst)
            if d_layer > layer or (d_layer == layer and d_room != room):
                bad.append(f"{src} ({room}) imports {dst} ({d_room})")
    assert not bad, "\n".join(bad)


def test_no_circle_of_imports():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("circle of imports: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The checks above could fail: a planted circle and a planted upward import are found."""
    assert "irn_batch.storage.manifest" in GRAPH["irn_batch.pipeline.job"]  # an edge it must see
    planted = {"a": {"b"}, "b": {"a"}}
    seen = set()

    def reach(n):
        for m in planted[n]:
            if m not in seen:
                seen.add(m)
                reach(m)
    reach("a")
    assert "a" in seen  # a reaches itself: a circle
    assert _room("irn_batch.cli.main")[0] > _room("irn_batch.storage.fs")[0]


def test_every_module_opens_with_a_docstring_and_stays_readable():
    long = []
    for name, path in MODULES.items():
        text = path.read_text()
        tree = ast.parse(text)
        if path.name != "__main__.py":
            assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"
        if len(text.splitlines()) > 400:
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
    assert not long, "modules over 400 lines (split them by concept):\n" + "\n".join(long)
